//! A bounded pool of kept-open LDAP connections. One pool serves both the searches and the
//! users' binds: a connection a user bound on is rebound as the service account before its
//! next search. One pool keeps the connections to the server at `pool_size` whatever the
//! mix of logins, and a cached login (no user bind) leaves its connection bound as the
//! service account.
//!
//! A connection goes back to the pool only when its lease says the exchange ended cleanly
//! ([`Lease::keep`]): one cut by the deadline, or whose server failed, is closed.

use std::sync::{Arc, Mutex};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::reason::Reason;

/// Who a pooled connection is bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BoundAs {
    /// Nobody yet (a fresh connection is anonymous).
    Fresh,
    /// The service account (or anonymous, without one).
    Service,
    /// A user, after a password bind.
    User,
}

/// One open connection.
pub(super) struct Conn {
    /// The operation handle.
    pub(super) ldap: Ldap,
    /// Who it is bound as.
    pub(super) bound: BoundAs,
}

/// How to open a connection.
#[derive(Clone)]
pub(super) struct Target {
    /// `ldap://` or `ldaps://` URL.
    pub(super) url: String,
    /// StartTLS on an `ldap://` URL.
    pub(super) starttls: bool,
    /// The TLS client configuration (`None`: the library's, with the system's CAs).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

/// The pool.
pub(super) struct Pool {
    target: Target,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("url", &self.target.url)
            .field("free", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

/// A connection taken from the pool for one login.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    keep: bool,
    _slot: SemaphorePermit<'a>,
}

impl Pool {
    /// A pool of at most `size` connections to `target`.
    pub(super) fn new(target: Target, size: usize) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    /// Takes a connection, waiting for a free slot and connecting before `deadline`.
    pub(super) async fn get(&self, deadline: Instant) -> Result<Lease<'_>, Reason> {
        let slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(Reason::InternalError),
            Err(_) => return Err(Reason::LdapBusy),
        };
        let reused = loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match next {
                Some(mut conn) => {
                    if !conn.ldap.is_closed() {
                        break Some(conn);
                    }
                }
                None => break None,
            }
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.connect(deadline).await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            keep: false,
            _slot: slot,
        })
    }

    /// Opens a connection before `deadline`.
    pub(super) async fn connect(&self, deadline: Instant) -> Result<Conn, Reason> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(left)
            .set_starttls(self.target.starttls);
        if let Some(tls) = &self.target.tls {
            settings = settings.set_config(tls.clone());
        }
        let opened = tokio::time::timeout_at(deadline, LdapConnAsync::with_settings(settings, &self.target.url)).await;
        match opened {
            Ok(Ok((conn, ldap))) => {
                ldap3::drive!(conn);
                Ok(Conn {
                    ldap,
                    bound: BoundAs::Fresh,
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(url = %self.target.url, "LDAP connection failed: {e}");
                Err(match e {
                    ldap3::LdapError::Timeout { .. } => Reason::LdapTimeout,
                    _ => Reason::LdapUnreachable,
                })
            }
            Err(_) => Err(Reason::LdapTimeout),
        }
    }
}

impl Lease<'_> {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut Conn {
        // Only `drop` takes the connection out.
        self.conn
            .get_or_insert_with(|| unreachable!("a lease holds its connection until dropped"))
    }

    /// The exchange ended cleanly: the connection may serve another login.
    pub(super) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep
        {
            self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
    }
}
