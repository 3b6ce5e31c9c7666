//! The `http-basic` source: asks a URL protected by HTTP Basic auth (nginx `auth_basic`, an
//! `auth_request` service, Apache, an SSO gateway) whether a login's credentials are good.
//!
//! - `Authorization: Basic base64(user ":" password)` is built from the decoded bytes, so
//!   spaces, `%`, `:` in the password and UTF-8 reach the upstream as the client typed them.
//! - 2xx accepts, 401 and 403 reject. Every other answer (3xx, other 4xx, 5xx) and every
//!   transport failure (refused, reset, timeout) is a temporary failure: an upstream that
//!   cannot answer must never look like a wrong password.
//! - One pooled keep-alive client, redirects off (a 302 stays a 302), no proxy from the
//!   environment. One resend only: when the upstream closes a kept-alive connection under a
//!   question before the answer's status line and headers (it timed the connection out as
//!   the request went out), the question goes out once more on a fresh connection, within
//!   the same timeout, and `mailauthd_upstream_resends_total` counts it. Never once the
//!   status line and headers have arrived.
//! - An upstream that checks nothing (a 2xx to any credentials) would accept every password.
//!   At start, on each breaker probe, and every `breaker_cooldown` while it is found so, it
//!   is asked about a random user and password: a 2xx makes the source unusable (a
//!   temporary failure for its logins, not ready in `/readyz`, logged) until it refuses one.
//!   Until it has refused one, its logins fail as that question did.
//! - Transport errors are logged (debug) without the URL: its query string may hold a key.
//! - At most `max_in_flight` questions at once. A login over the bound waits up to
//!   [`QUEUE_WAIT`] for a slot and then gets a temporary failure: a short wait absorbs a
//!   burst, a long one would only pile logins up behind a slow upstream.
//! - A circuit breaker: after `breaker_failures` failed questions in a row the source stops
//!   asking for `breaker_cooldown` and answers temporary failure at once; then one login
//!   probes, and its answer closes or re-opens the breaker. Changes are logged once each.
//! - A 2xx answer may name the backend (`X-Mail-Server` / `X-Mail-Port`); without the server
//!   header `[route]` applies; a server without a port, a bad port or an unresolvable name
//!   is a temporary failure (never a reply nginx would reject).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub(super) mod breaker;
mod canary;
pub(super) mod response;
mod transport;

use breaker::{Admit, Breaker, BreakerState, Transition};
use canary::{Canary, Change, Outcome, Verdict};
use response::{Upstream, basic_authorization, map_response};
use transport::{closed_before_answer, describe, resolve, transport_reason};

use super::answer::{Credentials, PlainAnswer, SourceRoute, SourceStatus};
use crate::config::{BasicMethod, HttpBasicConfig};
use crate::login::MailProtocol;
use crate::metrics::Metrics;
use crate::reason::Reason;

/// How long a login waits for a free slot when `max_in_flight` questions are out.
pub(super) const QUEUE_WAIT: Duration = Duration::from_millis(100);

/// How much of a response body is read so that its connection can go back to the pool;
/// a longer body is dropped with its connection.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// Idle pooled connections are closed before nginx's default `keepalive_timeout` (75 s)
/// would close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// A URL protected by HTTP Basic auth, with its in-flight bound and breaker.
#[derive(Debug)]
pub(crate) struct HttpBasicSource {
    asker: Arc<Asker>,
    slots: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

/// The two clients of one upstream.
#[derive(Debug)]
struct Clients {
    /// Keeps connections alive between questions.
    pooled: reqwest::Client,
    /// Keeps none: a question sent again goes out on a connection opened for it.
    fresh: reqwest::Client,
}

/// What asks the upstream: its configuration, its clients and whether it checks anything.
/// Shared with the background check of [`HttpBasicSource::recheck`].
#[derive(Debug)]
struct Asker {
    config: HttpBasicConfig,
    clients: Option<Clients>,
    name: String,
    metrics: Arc<Metrics>,
    canary: Mutex<Canary>,
    /// Held while a random login is out, so that one goes out at a time.
    canary_gate: tokio::sync::Mutex<()>,
}

/// Whether the upstream's answers may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vetted {
    /// It refused a random login: ask it.
    Trusted,
    /// It accepted a random login: do not ask it.
    Unusable,
    /// It could not be asked about a random login: the login fails as the question would.
    Failed(Reason),
}

/// Builds a client with redirects, retries and proxies off; `pooled: false` keeps no idle
/// connection.
fn build_client(config: &HttpBasicConfig, pooled: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .no_proxy()
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(if pooled { config.max_in_flight } else { 0 })
        .tcp_nodelay(true)
        .user_agent(concat!("mailauthd/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl HttpBasicSource {
    /// Builds the clients; `metrics` counts questions sent again. A client that cannot be
    /// built (no TLS backend) is logged, and the source then answers every login with a
    /// temporary failure.
    pub(crate) fn new(config: HttpBasicConfig, metrics: Arc<Metrics>) -> HttpBasicSource {
        // Without the query string: it may hold an API key, and the name reaches logs,
        // metric labels and /readyz.
        let mut shown = config.url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let name = format!("http-basic:{shown}");
        let clients = match (build_client(&config, true), build_client(&config, false)) {
            (Ok(pooled), Ok(fresh)) => Some(Clients { pooled, fresh }),
            (Err(e), _) | (_, Err(e)) => {
                let e = describe(e);
                tracing::error!(source = %name, "cannot build the HTTP client: {e}; logins it would decide get a temporary failure");
                None
            }
        };
        metrics.upstream_in_use(&name);
        let breaker = Breaker::new(config.breaker_failures, config.breaker_cooldown, config.timeout);
        HttpBasicSource {
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            breaker: Mutex::new(breaker),
            asker: Arc::new(Asker {
                canary: Mutex::new(Canary::new(config.breaker_cooldown)),
                canary_gate: tokio::sync::Mutex::new(()),
                clients,
                config,
                name,
                metrics,
            }),
        }
    }

    /// A short name for logs: `http-basic:<url>`.
    pub(crate) fn name(&self) -> &str {
        &self.asker.name
    }

    /// The protocols this source serves (`None`: all).
    pub(crate) fn protocols(&self) -> Option<&[MailProtocol]> {
        self.asker.config.protocols.as_deref()
    }

    /// The state of this source for `/readyz` and the "in use" line.
    pub(crate) fn status(&self) -> SourceStatus {
        let accepts_anything = self.asker.verdict() == Verdict::AcceptsAnything;
        let breaker_closed = self.is_available();
        let detail = if accepts_anything {
            "unusable: it accepted a random user and password (it checks nothing)"
        } else if breaker_closed {
            "breaker=closed"
        } else {
            "breaker=open"
        };
        SourceStatus {
            name: self.asker.name.clone(),
            ready: breaker_closed && !accepts_anything,
            users: None,
            detail: detail.to_owned(),
            summary: "upstream".to_owned(),
            degraded: None,
        }
    }

    /// Whether the breaker is closed (logins are being asked about).
    pub(crate) fn is_available(&self) -> bool {
        self.asker.clients.is_some() && self.breaker_state() == BreakerState::Closed
    }

    /// The breaker's current state.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner()).state()
    }

    /// Asks the upstream about a random login in the background when that is due (at start,
    /// and every `breaker_cooldown` while it accepts them), so that `/readyz` tells before a
    /// login does, and tells when it is fixed. Without a runtime (`check-config`) nothing is asked.
    pub(crate) fn recheck(&self) {
        if self.asker.clients.is_none() || !self.asker.canary_due_unprompted() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // One is out already: its answer will do.
        if self.asker.canary_gate.try_lock().is_err() {
            return;
        }
        let asker = self.asker.clone();
        runtime.spawn(async move {
            let deadline = Instant::now() + asker.config.timeout;
            asker.vet(false, deadline).await
        });
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
        let name = &self.asker.name;
        let cooldown = humantime::format_duration(self.asker.config.breaker_cooldown);
        match change {
            Some(Transition::Opened(failures)) => tracing::warn!(
                source = %name,
                "upstream failed {failures} time(s) in a row; breaker open: logins it would decide get a temporary failure for {cooldown}"
            ),
            Some(Transition::Reopened) => {
                tracing::warn!(source = %name, "upstream still failing; breaker stays open for {cooldown}")
            }
            Some(Transition::Closed) => tracing::info!(source = %name, "upstream answers again; breaker closed"),
            None => {}
        }
    }

    /// Asks the upstream about a password login.
    pub(crate) async fn check_plain(&self, creds: &Credentials<'_>) -> PlainAnswer {
        if self.asker.clients.is_none() {
            return PlainAnswer::Unavailable {
                reason: Reason::SourceUnavailable,
            };
        }
        if creds.user.is_empty() {
            return PlainAnswer::Rejected {
                reason: Reason::EmptyUser,
                scheme: None,
            };
        }
        let Some(authorization) = basic_authorization(creds.user, creds.pass) else {
            return PlainAnswer::Rejected {
                reason: Reason::ColonInUser,
                scheme: None,
            };
        };
        let slot = match tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => {
                return PlainAnswer::Unavailable {
                    reason: Reason::UpstreamBusy,
                };
            }
        };
        let admit = self.admit();
        if admit == Admit::Refuse {
            return PlainAnswer::Unavailable {
                reason: Reason::BreakerOpen,
            };
        }
        let deadline = Instant::now() + self.asker.config.timeout;
        // A probe also asks again whether the upstream checks anything.
        match self.asker.vet(admit == Admit::Probe, deadline).await {
            Vetted::Trusted => {}
            Vetted::Unusable => {
                // The upstream answered, so a probe closes the breaker; the source stays
                // unusable on its own account.
                if admit == Admit::Probe {
                    self.record(true);
                }
                return PlainAnswer::Unavailable {
                    reason: Reason::UpstreamAcceptsAnything,
                };
            }
            Vetted::Failed(reason) => {
                self.record(false);
                return PlainAnswer::Unavailable { reason };
            }
        }
        let outcome = tokio::time::timeout_at(deadline, self.asker.ask(&authorization, creds.client_ip)).await;
        drop(slot);
        let upstream = match outcome {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                let reason = transport_reason(&e);
                let e = describe(e);
                tracing::debug!(source = %self.asker.name, reason = reason.as_str(), "upstream question failed: {e}");
                Upstream::Failed(reason)
            }
            Err(_) => Upstream::Failed(Reason::UpstreamTimeout),
        };
        self.record(!matches!(upstream, Upstream::Failed(_)));
        match upstream {
            Upstream::Accepted(None) => PlainAnswer::Accepted {
                route: SourceRoute::default(),
                scheme: None,
            },
            Upstream::Accepted(Some(target)) => match resolve(target, deadline).await {
                Ok(addr) => PlainAnswer::Accepted {
                    route: SourceRoute::at(addr),
                    scheme: None,
                },
                Err(reason) => {
                    tracing::warn!(source = %self.asker.name, reason = reason.as_str(), "the upstream accepted a login but named a backend that cannot be used");
                    PlainAnswer::Unavailable { reason }
                }
            },
            Upstream::Rejected => PlainAnswer::Rejected {
                reason: Reason::UpstreamRejected,
                scheme: None,
            },
            Upstream::Failed(reason) => PlainAnswer::Unavailable { reason },
            Upstream::BadRoute(reason) => {
                tracing::warn!(source = %self.asker.name, reason = reason.as_str(), "the upstream accepted a login but named a backend that cannot be used");
                PlainAnswer::Unavailable { reason }
            }
        }
    }
}

impl Asker {
    fn canary(&self) -> std::sync::MutexGuard<'_, Canary> {
        self.canary.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn verdict(&self) -> Verdict {
        self.canary().verdict()
    }

    fn canary_due(&self) -> bool {
        self.canary().due(Instant::now())
    }

    fn canary_due_unprompted(&self) -> bool {
        self.canary().due_unprompted(Instant::now())
    }

    /// What the last random login says about using the upstream now.
    fn vetted(&self) -> Vetted {
        let canary = self.canary();
        match canary.verdict() {
            Verdict::Checks => Vetted::Trusted,
            Verdict::AcceptsAnything => Vetted::Unusable,
            Verdict::Unchecked => Vetted::Failed(canary.last_failure()),
        }
    }

    /// Whether the upstream's answers may be used, asking it about a random login first when
    /// that is due or `force`d (a breaker probe), before `deadline`. One random login is out
    /// at a time; the others wait for its answer.
    async fn vet(&self, force: bool, deadline: Instant) -> Vetted {
        if !force && !self.canary_due() {
            return self.vetted();
        }
        let Ok(_gate) = tokio::time::timeout_at(deadline, self.canary_gate.lock()).await else {
            return Vetted::Failed(Reason::UpstreamTimeout);
        };
        // Asked by another login while this one waited.
        if !force && !self.canary_due() {
            return self.vetted();
        }
        let outcome = match tokio::time::timeout_at(deadline, self.ask_random()).await {
            Ok(Ok(Upstream::Accepted(_) | Upstream::BadRoute(_))) => Outcome::Accepted,
            Ok(Ok(Upstream::Rejected)) => Outcome::Refused,
            Ok(Ok(Upstream::Failed(reason))) => Outcome::Failed(reason),
            Ok(Err(e)) => {
                let reason = transport_reason(&e);
                let e = describe(e);
                tracing::debug!(source = %self.name, reason = reason.as_str(), "question about a random login failed: {e}");
                Outcome::Failed(reason)
            }
            Err(_) => Outcome::Failed(Reason::UpstreamTimeout),
        };
        let change = self.canary().record(outcome, Instant::now());
        let name = &self.name;
        match change {
            Some(Change::Checks) => {
                tracing::info!(source = %name, "the upstream refuses a random user and password: its answers are used")
            }
            Some(Change::Fixed) => {
                tracing::warn!(source = %name, "the upstream refuses a random user and password again: its answers are used again")
            }
            Some(Change::AcceptsAnything) => {
                let again = humantime::format_duration(self.config.breaker_cooldown);
                tracing::error!(
                    source = %name,
                    reason = Reason::UpstreamAcceptsAnything.as_str(),
                    "the upstream accepted a random user and password: it checks nothing and would accept any password; logins it would decide get a temporary failure until it refuses such a login (asked again every {again})"
                );
            }
            None => {}
        }
        match (outcome, self.vetted()) {
            // Whatever was found before, this question failed as the login's would.
            (Outcome::Failed(reason), Vetted::Trusted) => Vetted::Failed(reason),
            (_, vetted) => vetted,
        }
    }

    /// Asks about a user and password nobody has: an upstream that checks refuses them.
    async fn ask_random(&self) -> Result<Upstream, reqwest::Error> {
        let user = format!("mailauthd-check-{}", hex::encode(rand::random::<[u8; 12]>()));
        let pass = Zeroizing::new(hex::encode(rand::random::<[u8; 24]>()).into_bytes());
        let Some(authorization) = basic_authorization(user.as_bytes(), &pass) else {
            return Ok(Upstream::Failed(Reason::InternalError));
        };
        self.ask(&authorization, None).await
    }

    /// Asks the upstream once; when it closed the connection under the question before the
    /// answer's head (a kept-alive connection closed as the request went out), asks once
    /// more on a fresh connection. A Basic-auth GET or HEAD changes nothing upstream, so
    /// sending it twice is safe; the caller's deadline bounds both.
    async fn ask(&self, authorization: &HeaderValue, client_ip: Option<IpAddr>) -> Result<Upstream, reqwest::Error> {
        let Some(clients) = &self.clients else {
            return Ok(Upstream::Failed(Reason::SourceUnavailable));
        };
        match self.ask_with(&clients.pooled, authorization, client_ip).await {
            Err(e) if closed_before_answer(&e) => {
                self.metrics.upstream_resent(&self.name);
                let e = describe(e);
                tracing::debug!(source = %self.name, "the upstream closed the connection before answering; asking once more on a fresh connection: {e}");
                self.ask_with(&clients.fresh, authorization, client_ip).await
            }
            other => other,
        }
    }

    async fn ask_with(
        &self,
        client: &reqwest::Client,
        authorization: &HeaderValue,
        client_ip: Option<IpAddr>,
    ) -> Result<Upstream, reqwest::Error> {
        let method = match self.config.method {
            BasicMethod::Get => Method::GET,
            BasicMethod::Head => Method::HEAD,
        };
        let mut request = client.request(method, self.config.url.clone());
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if let (Some(name), Some(ip)) = (&self.config.forward_client_ip, client_ip)
            && let Ok(value) = HeaderValue::from_str(&ip.to_string())
        {
            request = request.header(name, value);
        }
        let mut response = request.header(AUTHORIZATION, authorization.clone()).send().await?;
        let upstream = map_response(
            response.status(),
            response.headers(),
            self.config.route_headers.as_ref(),
        );
        // Reading a short body to its end lets the connection go back to the pool. A body
        // that fails is not an error: the answer is in the status line.
        let mut drained = 0;
        while drained <= MAX_DRAINED_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(upstream)
    }
}

#[cfg(test)]
mod tests;
