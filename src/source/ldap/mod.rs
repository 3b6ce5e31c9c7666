//! The `ldap` source: asks an LDAP directory (OpenLDAP, Active Directory, 389-ds) directly.
//!
//! - The entry of a login is found by a search (`base`, `filter`, as the service account
//!   `bind_dn`, or anonymously), or named by `user_dn`. Every `%u`/`%n`/`%d` is escaped for
//!   filters (RFC 4515) and DNs (RFC 4514) in [`escape`]; a login that is not UTF-8 names
//!   nobody. A search that finds more than one entry is refused and logged (an ambiguous
//!   filter), never "the first one".
//! - `verify = "bind"` binds as the entry with the password; `"password-attribute"` reads
//!   the stored hash (`userPassword`) and verifies it with mailauthd's own schemes.
//! - Outcomes: no entry → unknown user (in bind mode a bind to a DN nobody has with the
//!   password, so the time does not tell; in password-attribute mode a dummy verification);
//!   invalidCredentials → wrong password; `disabled_filter` matching a verified entry →
//!   disabled (final); everything else (refused, reset, timeout, busy, unavailable, a
//!   search error, the service account's bind refused) → temporary failure, never counted
//!   by the brute-force policy.
//! - A bounded pool of kept-open connections ([`pool`]), the http-basic source's circuit
//!   breaker and `/readyz` report, and one deadline (`timeout`) for a login's whole
//!   exchange: a server that hangs costs at most `timeout`.
//! - Bind-verified logins are remembered in the verified-login cache under the entry's DN;
//!   password-attribute logins go through it like any stored hash.
//! - `host_attribute` / `port_attribute` name the backend of a login (an IP literal, with
//!   the port in its own attribute or as `ip:port`); an entry without them leaves `[route]`.
//!   `destuser_attribute` names the user the backend sees (the reply's `Auth-User`).
//! - APOP and CRAM-MD5 are checked in password-attribute mode against entries whose stored
//!   secret allows it (`{PLAIN}`, `{CLEARTEXT}`; CRAM-MD5 also `{CRAM-MD5}`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ldap3::{Scope, SearchEntry, SearchOptions};
use tokio::time::Instant;

mod escape;
mod pool;

use super::answer::{
    CheckReport, Credentials, DigestAnswer, DigestCredentials, DigestKind, PlainAnswer, SchemeUsed, SourceRoute,
    SourceStatus,
};
use super::http_basic::breaker::{Admit, Breaker, BreakerState, Transition};
use crate::config::{LdapConfig, LdapLookup, LdapVerify};
use crate::hash::StoredHash;
use crate::login::MailProtocol;
use crate::reason::Reason;
use crate::verify::Verifier;
use escape::{Target as Escape, expand};
use pool::{BoundAs, Conn, Pool, Target};

/// LDAP result codes this source tells apart (RFC 4511 appendix A).
mod rc {
    /// success
    pub(super) const SUCCESS: u32 = 0;
    /// sizeLimitExceeded: more entries than asked for (an ambiguous filter).
    pub(super) const SIZE_LIMIT_EXCEEDED: u32 = 4;
    /// invalidCredentials
    pub(super) const INVALID_CREDENTIALS: u32 = 49;
}

/// A login's answer, or a temporary failure that counts against the breaker.
type Step<T> = Result<T, Reason>;

/// An LDAP directory with its connection pool and breaker.
#[derive(Debug)]
pub(crate) struct LdapSource {
    config: LdapConfig,
    name: String,
    pool: Pool,
    breaker: Mutex<Breaker>,
    /// A hash like the last one read, verified for unknown users in password-attribute mode.
    dummy: Mutex<Option<Arc<StoredHash>>>,
}

/// The entry found for a login.
struct Entry {
    dn: String,
    attrs: SearchEntry,
}

impl LdapSource {
    /// Builds the source; nothing is connected until a login or `check-config` asks.
    pub(crate) fn new(config: LdapConfig) -> LdapSource {
        let name = format!("ldap:{}", config.url);
        let tls = config.ca_certs.as_ref().map(|certs| tls_config(certs, &name));
        let target = Target {
            url: config.url.clone(),
            starttls: config.starttls,
            tls: tls.flatten(),
        };
        // ldap3 builds its own TLS configuration (the system's CAs) from rustls' process
        // default provider; there must be exactly one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        LdapSource {
            pool: Pool::new(target, config.pool_size),
            breaker: Mutex::new(Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
                config.timeout,
            )),
            dummy: Mutex::new(None),
            name,
            config,
        }
    }

    /// A short name for logs: `ldap:<url>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The protocols this source serves (`None`: all).
    pub(crate) fn protocols(&self) -> Option<&[MailProtocol]> {
        self.config.protocols.as_deref()
    }

    /// The state of this source for `/readyz` and the "in use" line.
    pub(crate) fn status(&self) -> SourceStatus {
        let closed = self.breaker.lock().unwrap_or_else(|e| e.into_inner()).state() == BreakerState::Closed;
        SourceStatus {
            name: self.name.clone(),
            ready: closed,
            users: None,
            detail: if closed { "breaker=closed" } else { "breaker=open" }.to_owned(),
            summary: "directory".to_owned(),
            degraded: None,
        }
    }

    /// For `check-config`: binds as the service account and runs the filter once for a
    /// made-up user, so that a wrong URL, base, filter or password shows at start.
    pub(crate) fn check(&self) -> CheckReport {
        let mut report = CheckReport::default();
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            Err("not contacted from inside the server".to_owned())
        } else {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(self.probe()),
                Err(e) => Err(format!("cannot start a runtime: {e}")),
            }
        };
        match result {
            Ok(line) => report.lines.push(format!("{}: {line}", self.name)),
            Err(e) => {
                report.errors += 1;
                report.lines.push(format!("error: {}: {e}", self.name));
            }
        }
        report
    }

    async fn probe(&self) -> Result<String, String> {
        let deadline = Instant::now() + self.config.timeout;
        let work = async {
            let mut conn = self
                .pool
                .connect(deadline)
                .await
                .map_err(|r| format!("cannot connect ({r})"))?;
            self.bind_service(&mut conn).await.map_err(|r| match r {
                Reason::LdapServiceBind => "the server refused bind_dn / bind_password".to_owned(),
                other => format!("service bind failed ({other})"),
            })?;
            let LdapLookup::Search { .. } = &self.config.lookup else {
                return Ok("connected; user_dn binds directly, no search to try".to_owned());
            };
            let made_up = format!("mailauthd-check-{}", hex::encode(rand::random::<[u8; 8]>()));
            match self.search_user(&mut conn, made_up.as_bytes()).await {
                Ok(Found::None) => Ok("service bind and search OK".to_owned()),
                Ok(_) => Err(
                    "the filter finds entries for a made-up login; it does not use %u, %n or %d as it should"
                        .to_owned(),
                ),
                Err(r) => Err(format!("the search failed ({r}); check base and filter")),
            }
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.config.timeout)
            )),
        }
    }

    /// Checks a password login against the directory.
    pub(crate) async fn check_plain(&self, creds: &Credentials<'_>, verifier: &Verifier) -> PlainAnswer {
        if self.admit() == Admit::Refuse {
            return PlainAnswer::Unavailable {
                reason: Reason::BreakerOpen,
            };
        }
        let deadline = Instant::now() + self.config.timeout;
        let answer = match tokio::time::timeout_at(deadline, self.login(creds, verifier, deadline)).await {
            Ok(answer) => answer,
            Err(_) => Err(Reason::LdapTimeout),
        };
        self.record(answer.is_ok());
        match answer {
            Ok(answer) => answer,
            Err(reason) => {
                tracing::debug!(source = %self.name, reason = reason.as_str(), "LDAP exchange failed");
                PlainAnswer::Unavailable { reason }
            }
        }
    }

    /// Checks an APOP or CRAM-MD5 login: only in password-attribute mode, against an entry
    /// whose stored secret allows it (`{PLAIN}`, `{CLEARTEXT}`; CRAM-MD5 also `{CRAM-MD5}`).
    pub(crate) async fn check_digest(&self, creds: &DigestCredentials<'_>) -> DigestAnswer {
        if self.config.verify != LdapVerify::PasswordAttribute {
            // A bind needs the password itself, which a digest login never shows.
            return DigestAnswer::UnknownUser;
        }
        if self.admit() == Admit::Refuse {
            return DigestAnswer::Unavailable {
                reason: Reason::BreakerOpen,
            };
        }
        let deadline = Instant::now() + self.config.timeout;
        let answer = match tokio::time::timeout_at(deadline, self.digest_login(creds, deadline)).await {
            Ok(answer) => answer,
            Err(_) => Err(Reason::LdapTimeout),
        };
        self.record(answer.is_ok());
        answer.unwrap_or_else(|reason| DigestAnswer::Unavailable { reason })
    }

    async fn digest_login(&self, creds: &DigestCredentials<'_>, deadline: Instant) -> Step<DigestAnswer> {
        let mut lease = self.pool.get(deadline).await?;
        let conn = lease.conn();
        self.bind_service(conn).await?;
        let entry = match self.search_user(conn, creds.user).await? {
            Found::None => {
                lease.keep();
                return Ok(DigestAnswer::UnknownUser);
            }
            Found::Many => {
                lease.keep();
                tracing::error!(source = %self.name, reason = Reason::LdapAmbiguous.as_str(), "the filter found more than one entry for a login; refused (make the filter match one entry per login)");
                return Ok(DigestAnswer::Unavailable {
                    reason: Reason::LdapAmbiguous,
                });
            }
            Found::One(entry) => entry,
        };
        let Some(hash) = self.stored_hash(&entry) else {
            lease.keep();
            return Ok(DigestAnswer::UnknownUser);
        };
        let matches = match creds.kind {
            DigestKind::Apop => hash.verify_apop(creds.salt, creds.response),
            DigestKind::CramMd5 => hash.verify_cram_md5(creds.salt, creds.response),
        };
        if !matches {
            lease.keep();
            return Ok(DigestAnswer::Rejected);
        }
        if let Some(filter) = &self.config.disabled_filter
            && self.matches(conn, &entry.dn, filter, creds.user).await?
        {
            lease.keep();
            return Ok(DigestAnswer::Disabled {
                reason: Reason::LdapDisabled,
            });
        }
        lease.keep();
        let route = match self.route(&entry.attrs) {
            Ok(route) => route,
            Err(reason) => return Ok(DigestAnswer::Unavailable { reason }),
        };
        Ok(DigestAnswer::Accepted {
            cleartext: hash.cleartext().map(|c| zeroize::Zeroizing::new(c.to_vec())),
            scheme: SchemeUsed::of(&hash),
            route,
        })
    }

    /// The entry's stored hash, parsed; `None` (logged) when it has none mailauthd can use.
    fn stored_hash(&self, entry: &Entry) -> Option<StoredHash> {
        let stored = attribute_bytes(&entry.attrs, &self.config.password_attribute);
        let hash = stored
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| StoredHash::parse(s).ok());
        if hash.is_none() {
            tracing::warn!(source = %self.name, attribute = %self.config.password_attribute, "an entry has no password hash mailauthd can verify; treated as unknown");
        }
        hash
    }

    fn admit(&self) -> Admit {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
    }

    fn record(&self, answered: bool) {
        let change = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(answered, Instant::now());
        let cooldown = humantime::format_duration(self.config.breaker_cooldown);
        let name = &self.name;
        match change {
            Some(Transition::Opened(failures)) => tracing::warn!(
                source = %name,
                "LDAP server failed {failures} time(s) in a row; breaker open: logins it would decide get a temporary failure for {cooldown}"
            ),
            Some(Transition::Reopened) => {
                tracing::warn!(source = %name, "LDAP server still failing; breaker stays open for {cooldown}")
            }
            Some(Transition::Closed) => tracing::info!(source = %name, "LDAP server answers again; breaker closed"),
            None => {}
        }
    }

    async fn login(&self, creds: &Credentials<'_>, verifier: &Verifier, deadline: Instant) -> Step<PlainAnswer> {
        let mut lease = self.pool.get(deadline).await?;
        let conn = lease.conn();
        let entry = match &self.config.lookup {
            LdapLookup::Search { .. } => {
                self.bind_service(conn).await?;
                match self.search_user(conn, creds.user).await? {
                    Found::None => {
                        let answer = self.unknown(conn, creds).await?;
                        lease.keep();
                        return Ok(answer);
                    }
                    Found::Many => {
                        lease.keep();
                        tracing::error!(source = %self.name, reason = Reason::LdapAmbiguous.as_str(), "the filter found more than one entry for a login; refused (make the filter match one entry per login)");
                        return Ok(PlainAnswer::Unavailable {
                            reason: Reason::LdapAmbiguous,
                        });
                    }
                    Found::One(entry) => Some(entry),
                }
            }
            LdapLookup::Dn(_) => None,
        };
        let dn = match (&entry, &self.config.lookup) {
            (Some(e), _) => e.dn.clone(),
            (None, LdapLookup::Dn(template)) => match expand(template, creds.user, Escape::Dn) {
                Some(dn) => dn,
                None => {
                    lease.keep();
                    return Ok(PlainAnswer::UnknownUser { dummy: None });
                }
            },
            (None, LdapLookup::Search { .. }) => return Err(Reason::InternalError),
        };

        let (right, scheme) = match self.config.verify {
            LdapVerify::Bind => (self.verify_bind(conn, &dn, creds, verifier).await?, None),
            LdapVerify::PasswordAttribute => {
                let Some(entry) = &entry else {
                    return Err(Reason::InternalError);
                };
                match self.verify_attribute(entry, creds, verifier).await? {
                    Some(verified) => verified,
                    None => {
                        lease.keep();
                        return Ok(PlainAnswer::UnknownUser { dummy: None });
                    }
                }
            }
        };
        if !right {
            lease.keep();
            return Ok(PlainAnswer::Rejected {
                reason: Reason::WrongPassword,
                scheme,
            });
        }

        // The entry's own attributes: read as the user just bound, or as the service account.
        let attrs = match entry {
            Some(e) => Some(e.attrs),
            None if self.needs_attributes() => Some(self.read_entry(conn, &dn).await?),
            None => None,
        };
        if let Some(filter) = &self.config.disabled_filter
            && self.matches(conn, &dn, filter, creds.user).await?
        {
            lease.keep();
            return Ok(PlainAnswer::Disabled {
                reason: Reason::LdapDisabled,
                scheme,
            });
        }
        lease.keep();
        let route = match attrs.as_ref().map(|a| self.route(a)) {
            Some(Err(reason)) => return Ok(PlainAnswer::Unavailable { reason }),
            Some(Ok(route)) => route,
            None => SourceRoute::default(),
        };
        Ok(PlainAnswer::Accepted { route, scheme })
    }

    fn needs_attributes(&self) -> bool {
        self.config.host_attribute.is_some() || self.config.destuser_attribute.is_some()
    }

    /// The attributes a search asks for.
    fn wanted(&self) -> Vec<&str> {
        let mut attrs = vec!["1.1"];
        if self.config.verify == LdapVerify::PasswordAttribute {
            attrs.push(&self.config.password_attribute);
        }
        attrs.extend(self.config.host_attribute.as_deref());
        attrs.extend(self.config.port_attribute.as_deref());
        attrs.extend(self.config.destuser_attribute.as_deref());
        if attrs.len() > 1 {
            attrs.remove(0);
        }
        attrs
    }

    /// Binds `conn` as the service account (anonymous without one) unless it is already.
    async fn bind_service(&self, conn: &mut Conn) -> Step<()> {
        let (dn, password) = match &self.config.bind_dn {
            Some(dn) => (dn.as_str(), self.config.bind_password.expose()),
            // A fresh connection is anonymous; one a user bound on is made anonymous again.
            None if conn.bound == BoundAs::User => ("", ""),
            None => {
                conn.bound = BoundAs::Service;
                return Ok(());
            }
        };
        if conn.bound == BoundAs::Service {
            return Ok(());
        }
        let result = conn.ldap.simple_bind(dn, password).await.map_err(transport)?;
        match result.rc {
            rc::SUCCESS => {
                conn.bound = BoundAs::Service;
                Ok(())
            }
            rc::INVALID_CREDENTIALS => {
                tracing::error!(source = %self.name, reason = Reason::LdapServiceBind.as_str(), "the LDAP server refused the service account's bind (bind_dn / bind_password)");
                Err(Reason::LdapServiceBind)
            }
            code => {
                tracing::warn!(source = %self.name, code, "the service account's bind failed: {}", result.text);
                Err(Reason::LdapError)
            }
        }
    }

    /// Searches `base` with the filter filled with `login`, asking for two entries at most.
    async fn search_user(&self, conn: &mut Conn, login: &[u8]) -> Step<Found> {
        let LdapLookup::Search { base, filter } = &self.config.lookup else {
            return Err(Reason::InternalError);
        };
        let Some(filter) = expand(filter, login, Escape::Filter) else {
            return Ok(Found::None);
        };
        let result = conn
            .ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(base, Scope::Subtree, &filter, self.wanted())
            .await
            .map_err(transport)?;
        let ldap3::SearchResult(entries, status) = result;
        if entries.len() > 1 || status.rc == rc::SIZE_LIMIT_EXCEEDED {
            return Ok(Found::Many);
        }
        if status.rc != rc::SUCCESS {
            tracing::warn!(source = %self.name, code = status.rc, "the LDAP search failed: {}", status.text);
            return Err(Reason::LdapError);
        }
        match entries.into_iter().next() {
            None => Ok(Found::None),
            Some(raw) => {
                let attrs = construct(raw)?;
                Ok(Found::One(Entry {
                    dn: attrs.dn.clone(),
                    attrs,
                }))
            }
        }
    }

    /// The unknown-user answer: in bind mode a bind to a DN nobody has, so that an unknown
    /// user costs what a wrong password costs.
    async fn unknown(&self, conn: &mut Conn, creds: &Credentials<'_>) -> Step<PlainAnswer> {
        let dummy = match self.config.verify {
            LdapVerify::PasswordAttribute => self.dummy.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            LdapVerify::Bind => {
                if let (LdapLookup::Search { base, .. }, Ok(pass)) =
                    (&self.config.lookup, std::str::from_utf8(creds.pass))
                    && !pass.is_empty()
                {
                    let nobody = format!("cn=mailauthd-nobody-{},{base}", hex::encode(rand::random::<[u8; 8]>()));
                    conn.bound = BoundAs::User;
                    // Any answer will do: only its time matters.
                    let _ = conn.ldap.simple_bind(&nobody, pass).await.map_err(transport)?;
                }
                None
            }
        };
        Ok(PlainAnswer::UnknownUser { dummy })
    }

    /// Binds as `dn` with the password (or finds it in the cache).
    async fn verify_bind(&self, conn: &mut Conn, dn: &str, creds: &Credentials<'_>, verifier: &Verifier) -> Step<bool> {
        // An empty password is an unauthenticated bind, which servers accept for any DN
        // (RFC 4513 section 5.1.2); a password that is not UTF-8 cannot be sent.
        let Ok(pass) = std::str::from_utf8(creds.pass) else {
            return Ok(false);
        };
        if pass.is_empty() {
            return Ok(false);
        }
        if verifier.recall_remote(self.name.as_bytes(), dn.as_bytes(), creds.pass) {
            // What is read next (disabled_filter, routing) is read as the service account,
            // never as whoever bound on this connection before.
            self.bind_service(conn).await?;
            return Ok(true);
        }
        conn.bound = BoundAs::User;
        let result = conn.ldap.simple_bind(dn, pass).await.map_err(transport)?;
        match result.rc {
            rc::SUCCESS => {
                verifier.remember_remote(self.name.as_bytes(), dn.as_bytes(), creds.pass);
                Ok(true)
            }
            rc::INVALID_CREDENTIALS => Ok(false),
            code => {
                tracing::warn!(source = %self.name, code, "the user's bind failed: {}", result.text);
                Err(Reason::LdapError)
            }
        }
    }

    /// Verifies the password against the entry's stored hash. `None`: the entry has no
    /// usable hash (logged), so it is as good as unknown.
    async fn verify_attribute(
        &self,
        entry: &Entry,
        creds: &Credentials<'_>,
        verifier: &Verifier,
    ) -> Step<Option<(bool, Option<SchemeUsed>)>> {
        let Some(hash) = self.stored_hash(entry) else {
            return Ok(None);
        };
        let hash = Arc::new(hash);
        *self.dummy.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hash.dummy_like()));
        let verified = verifier
            .verify_login(self.name.as_bytes(), entry.dn.as_bytes(), creds.pass, &hash)
            .await
            .map_err(|_| Reason::Overloaded)?;
        let scheme = SchemeUsed {
            label: hash.cost_label(),
            cached: verified.cached,
        };
        Ok(Some((verified.right, Some(scheme))))
    }

    /// Reads the routing attributes of `dn` (user_dn mode).
    async fn read_entry(&self, conn: &mut Conn, dn: &str) -> Step<SearchEntry> {
        let result = conn
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", self.wanted())
            .await
            .map_err(transport)?;
        let ldap3::SearchResult(entries, status) = result;
        if status.rc != rc::SUCCESS {
            tracing::warn!(source = %self.name, code = status.rc, "reading the entry failed: {}", status.text);
            return Err(Reason::LdapError);
        }
        match entries.into_iter().next() {
            Some(raw) => construct(raw),
            None => Err(Reason::LdapError),
        }
    }

    /// Whether the entry `dn` matches `filter` (filled with the login).
    async fn matches(&self, conn: &mut Conn, dn: &str, filter: &str, login: &[u8]) -> Step<bool> {
        let Some(filter) = expand(filter, login, Escape::Filter) else {
            return Ok(false);
        };
        let result = conn
            .ldap
            .search(dn, Scope::Base, &filter, vec!["1.1"])
            .await
            .map_err(transport)?;
        let ldap3::SearchResult(entries, status) = result;
        if status.rc != rc::SUCCESS {
            tracing::warn!(source = %self.name, code = status.rc, "the disabled_filter search failed: {}", status.text);
            return Err(Reason::LdapError);
        }
        Ok(!entries.is_empty())
    }

    /// The routing facts the entry's attributes give: its backend (`host_attribute`,
    /// `port_attribute`) and the user the backend sees (`destuser_attribute`). A value that
    /// cannot be used is a temporary failure, never another backend or another user.
    fn route(&self, attrs: &SearchEntry) -> Result<SourceRoute, Reason> {
        let mut route = self.backend(attrs)?.map(SourceRoute::at).unwrap_or_default();
        if let Some(name) = &self.config.destuser_attribute
            && let Some(value) = attribute_bytes(attrs, name).into_iter().next()
        {
            // As a passwd-file `destuser=`: nginx sends it as one header value and the
            // backend as one IMAP/POP3 word.
            match String::from_utf8(value) {
                Ok(user) if !user.is_empty() && !user.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                    route.destuser = Some(user);
                }
                _ => {
                    tracing::warn!(source = %self.name, attribute = %name, "an entry's destuser attribute is empty, not UTF-8 or has spaces; temporary failure");
                    return Err(Reason::SourceRouteUnusable);
                }
            }
        }
        Ok(route)
    }

    /// The backend the entry names, if it names one.
    fn backend(&self, attrs: &SearchEntry) -> Result<Option<SocketAddr>, Reason> {
        let Some(host_attr) = &self.config.host_attribute else {
            return Ok(None);
        };
        let Some(host) = attribute_bytes(attrs, host_attr).into_iter().next() else {
            return Ok(None);
        };
        let host = String::from_utf8_lossy(&host).trim().to_owned();
        let port = self
            .config
            .port_attribute
            .as_ref()
            .and_then(|p| attribute_bytes(attrs, p).into_iter().next())
            .map(|p| {
                String::from_utf8_lossy(&p)
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
            });
        let parsed = match port {
            Some(Some(port)) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port)),
            Some(None) => None,
            // `ip:port` in the host attribute; port 0 names no backend (found by the
            // ldap_entry fuzz target).
            None => host.parse::<SocketAddr>().ok().filter(|a| a.port() > 0),
        };
        match parsed {
            Some(addr) => Ok(Some(addr)),
            None => {
                tracing::warn!(source = %self.name, "an entry names a backend that is not an IP address and port; temporary failure");
                Err(Reason::UpstreamRouteBadServer)
            }
        }
    }
}

/// What a search found.
enum Found {
    None,
    One(Entry),
    Many,
}

/// The values of attribute `name` (case-insensitive), text or binary.
fn attribute_bytes(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let text = entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()));
    let binary = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter().cloned());
    text.chain(binary).collect()
}

/// Parses a search result entry; ldap3 panics on one it cannot parse, which is the server's
/// fault and answered as a server error.
fn construct(raw: ldap3::ResultEntry) -> Step<SearchEntry> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
        .map_err(|_| Reason::LdapError)
}

/// A failed operation: the connection is gone or timed out.
fn transport(e: ldap3::LdapError) -> Reason {
    tracing::debug!("LDAP operation failed: {e}");
    match e {
        ldap3::LdapError::Timeout { .. } => Reason::LdapTimeout,
        _ => Reason::LdapUnreachable,
    }
}

/// A TLS client configuration trusting `certs` only; `None` (logged) when none is usable.
fn tls_config(certs: &[Vec<u8>], name: &str) -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(rustls::pki_types::CertificateDer::from(cert.clone())) {
            tracing::warn!(source = %name, "a ca_file certificate is not usable: {e}");
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => Some(Arc::new(builder.with_root_certificates(roots).with_no_client_auth())),
        Err(e) => {
            tracing::error!(source = %name, "cannot build the TLS configuration: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ldap3::SearchEntry;

    use super::LdapSource;
    use crate::config::{Config, ConfigOrigin, SourceConfig};

    fn source() -> LdapSource {
        let text = "[[source]]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:1\"\nbase = \"dc=example,dc=org\"\n\
                    filter = \"(uid=%u)\"\nhost_attribute = \"host\"\nport_attribute = \"ipServicePort\"\n";
        let config =
            Config::from_toml(text, ConfigOrigin::File("/t/m.toml".into()), std::path::Path::new("/t")).unwrap();
        match config.sources.first() {
            Some(SourceConfig::Ldap(l)) => LdapSource::new((**l).clone()),
            other => panic!("{other:?}"),
        }
    }

    fn entry(values: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "uid=u,dc=example,dc=org".to_owned(),
            attrs: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn a_backend_needs_an_ip_and_a_port_from_1() {
        let s = source();
        let routed = s.route(&entry(&[("host", "192.0.2.40:1143")])).unwrap();
        assert_eq!(
            (routed.host, routed.port),
            (Some("192.0.2.40".parse().unwrap()), Some(1143))
        );
        let split = s
            .route(&entry(&[("host", "[2001:db8::7]"), ("ipServicePort", "993")]))
            .unwrap();
        assert_eq!(split.port, Some(993));
        assert_eq!(s.route(&entry(&[])).unwrap(), Default::default());
        // `[2::3]:0` was routed to port 0 until the ldap_entry fuzz target found it.
        for bad in [
            &[("host", "[2::3]:0")][..],
            &[("host", "192.0.2.40"), ("ipServicePort", "0")],
            &[("host", "mail.example.org:143")],
            &[("host", "192.0.2.40")],
        ] {
            assert!(s.route(&entry(bad)).is_err(), "{bad:?}");
        }
    }
}

/// The `ldap_entry` fuzz target (see FUZZING.md): `data` split at `0xff` bytes into a login,
/// then the values of an entry's `host`, `ipServicePort`, `uid` and `userPassword`
/// attributes. The login's filter and DN escapes must read back as the login with no special
/// character left bare; the attributes must give a usable route (an IP host, a port from 1,
/// a one-word backend user) or a temporary failure, and a stored hash or nothing.
#[cfg(fuzzing)]
pub(crate) fn fuzz_entry(data: &[u8]) {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    static SOURCE: OnceLock<LdapSource> = OnceLock::new();
    let mut parts = data.split(|&b| b == 0xff);
    let login = parts.next().unwrap_or_default();
    if let Ok(text) = std::str::from_utf8(login) {
        let filter = escape::escape_filter_value(text);
        assert_eq!(
            unescape_filter(&filter).as_deref(),
            Some(text),
            "filter escape of {text:?}: {filter:?}"
        );
        assert_eq!(
            escape::expand("(uid=%u)", login, Escape::Filter),
            Some(format!("(uid={filter})"))
        );
        let dn = escape::escape_dn_value(text);
        assert_eq!(unescape_dn(&dn).as_deref(), Some(text), "DN escape of {text:?}: {dn:?}");
    }

    let source = SOURCE.get_or_init(|| {
        let text = "[[source]]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:1\"\nbase = \"ou=people,dc=example,dc=org\"\n\
                    filter = \"(uid=%u)\"\nverify = \"password-attribute\"\nhost_attribute = \"host\"\n\
                    port_attribute = \"ipServicePort\"\ndestuser_attribute = \"uid\"\n";
        let origin = crate::config::ConfigOrigin::File("/fuzz/mailauthd.toml".into());
        let config = crate::config::Config::from_toml(text, origin, std::path::Path::new("/fuzz"))
            .unwrap_or_else(|e| panic!("the fuzz target's own config: {e}"));
        match config.sources.first() {
            Some(crate::config::SourceConfig::Ldap(l)) => LdapSource::new((**l).clone()),
            other => panic!("not an ldap source: {other:?}"),
        }
    });
    let mut entry = SearchEntry {
        dn: "uid=fuzz,ou=people,dc=example,dc=org".to_owned(),
        attrs: HashMap::new(),
        bin_attrs: HashMap::new(),
    };
    for (name, value) in ["host", "ipServicePort", "uid", "userPassword"].into_iter().zip(parts) {
        match std::str::from_utf8(value) {
            Ok(v) => {
                entry.attrs.insert(name.to_owned(), vec![v.to_owned()]);
            }
            Err(_) => {
                entry.bin_attrs.insert(name.to_owned(), vec![value.to_vec()]);
            }
        }
    }
    if let Ok(route) = source.route(&entry) {
        if route.host.is_some() {
            assert!(route.port.is_some_and(|p| p > 0), "{route:?}");
        }
        if let Some(user) = &route.destuser {
            assert!(
                !user.is_empty() && !user.contains(|c: char| c.is_whitespace() || c.is_control()),
                "{route:?}"
            );
        }
        assert!(route.pass.is_none() && route.unusable.is_none(), "{route:?}");
    }
    let found = Entry {
        dn: entry.dn.clone(),
        attrs: entry,
    };
    if let Some(hash) = source.stored_hash(&found)
        && hash.weight() == crate::hash::Weight::Cheap
    {
        let _ = hash.verify(b"fuzz");
    }
}

/// RFC 4515 unescaping for the fuzz check: `\XX` is the byte 0xXX; a bare special
/// character or a bad escape is `None`.
#[cfg(fuzzing)]
fn unescape_filter(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'*' | b'(' | b')' | 0 => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 4514 unescaping for the fuzz check: `\` then a special character or two hex digits;
/// a bare special character (or a bare leading `#` or space, trailing space) is `None`.
#[cfg(fuzzing)]
fn unescape_dn(escaped: &str) -> Option<String> {
    const SPECIAL: &[u8] = b"\"+,;<>\\= #";
    let bytes = escaped.as_bytes();
    if bytes.first().is_some_and(|b| *b == b'#' || *b == b' ')
        || bytes.last() == Some(&b' ') && !escaped.ends_with("\\ ")
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                if SPECIAL.contains(&next) {
                    out.push(next);
                    i += 2;
                } else {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                }
            }
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'=' | 0 => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
