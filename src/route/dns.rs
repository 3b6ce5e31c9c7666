//! Re-resolution of backend names: every A/AAAA address of a name is a backend. A name is
//! resolved again when the TTL of its answer runs out (at most `[route.health] dns_refresh`,
//! at least 1 s); an answer that tells no TTL (a name only `getaddrinfo` knows) is used for
//! `dns_refresh`. A name that stops resolving keeps its last addresses and says so (log,
//! `/readyz`). Resolution runs on a task of its own, never in a login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Router;

/// What one resolution found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The addresses, with the port of the backend.
    pub addrs: Vec<SocketAddr>,
    /// How long they may be used, when the resolver says.
    pub ttl: Option<Duration>,
}

/// A name resolver.
pub(crate) trait Resolve: Send + Sync {
    /// Resolves `host` to addresses on `port` (blocking).
    fn resolve(&self, host: &str, port: u16) -> Result<Resolved, String>;
}

/// The DNS resolver ([`crate::config::lookup`]): `/etc/hosts`, then the configured
/// nameservers (or the system's), and it tells each answer's TTL.
#[derive(Debug)]
pub(crate) struct DnsResolver {
    nameservers: Vec<SocketAddr>,
}

impl DnsResolver {
    /// A resolver asking `nameservers` (empty: those of `/etc/resolv.conf`).
    pub(crate) fn new(nameservers: &[SocketAddr]) -> DnsResolver {
        DnsResolver {
            nameservers: nameservers.to_vec(),
        }
    }
}

impl Resolve for DnsResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Resolved, String> {
        let (addrs, ttl) = crate::config::lookup(host, port, &self.nameservers)?;
        Ok(Resolved { addrs, ttl })
    }
}

/// The shortest wait between two resolutions of a name (a TTL of 0 must not spin).
const MIN_REFRESH: Duration = Duration::from_secs(1);

impl Router {
    /// Resolves every name that is due at `now`; returns how long until the next is due.
    pub(crate) fn refresh_names(&self, resolver: &dyn Resolve, now: Instant) -> Duration {
        let most = self.settings.dns_refresh;
        let mut next = most;
        for pool in &self.pools {
            for m in pool.members.iter().filter(|m| !m.target.literal) {
                let mut due = m.due.lock().unwrap_or_else(|e| e.into_inner());
                if *due <= now {
                    let mut stale = m.stale.lock().unwrap_or_else(|e| e.into_inner());
                    let wait = match resolver.resolve(&m.target.host, m.target.port) {
                        Ok(mut r) if !r.addrs.is_empty() => {
                            r.addrs.sort();
                            r.addrs.dedup();
                            if **m.addrs.load() != r.addrs {
                                tracing::info!(backend = %m.target.spec, addrs = ?r.addrs, "backend name resolves to new addresses");
                                m.addrs.store(Arc::new(r.addrs));
                            }
                            if stale.take().is_some() {
                                tracing::info!(backend = %m.target.spec, "backend name resolves again");
                            }
                            r.ttl.unwrap_or(most).clamp(MIN_REFRESH, most)
                        }
                        outcome => {
                            let why = match outcome {
                                Err(e) => format!("cannot resolve {}: {e}", m.target.host),
                                Ok(_) => format!("{} has no address", m.target.host),
                            };
                            if stale.is_none() {
                                tracing::warn!(backend = %m.target.spec, kept = ?**m.addrs.load(), "{why}; keeping its last addresses");
                            }
                            *stale = Some(why);
                            // Retried sooner than a good answer would be, so a short outage
                            // of the resolver is over soon.
                            most.min(Duration::from_secs(5))
                        }
                    };
                    *due = now + wait;
                }
                next = next.min(due.saturating_duration_since(now));
            }
        }
        next.max(MIN_REFRESH)
    }
}

/// Re-resolves the names of `router` as they fall due, until the task is aborted.
pub(crate) async fn run(router: Arc<Router>, resolver: Arc<dyn Resolve>) {
    loop {
        let (r, res) = (router.clone(), resolver.clone());
        let wait = tokio::task::spawn_blocking(move || r.refresh_names(&*res, Instant::now()))
            .await
            .unwrap_or(MIN_REFRESH);
        tokio::time::sleep(wait).await;
    }
}
