//! The `http-basic` source: asks a URL protected by HTTP Basic auth (nginx `auth_basic`, an
//! `auth_request` service, Apache, an SSO gateway) whether a login's credentials are good.
//!
//! - `Authorization: Basic base64(user ":" password)` is built from the decoded bytes, so
//!   spaces, `%`, `:` in the password and UTF-8 reach the upstream as the client typed them.
//! - 2xx accepts, 401 and 403 reject. Every other answer (3xx, other 4xx, 5xx) and every
//!   transport failure (refused, reset, timeout) is a temporary failure: an upstream that
//!   cannot answer must never look like a wrong password.
//! - One pooled keep-alive client, redirects off (a 302 stays a 302), no retries, no proxy
//!   from the environment.
//! - At most `max_in_flight` questions at once. A login over the bound waits up to
//!   [`QUEUE_WAIT`] for a slot and then gets a temporary failure: a short wait absorbs a
//!   burst, a long one would only pile logins up behind a slow upstream.
//! - A circuit breaker: after `breaker_failures` failed questions in a row the source stops
//!   asking for `breaker_cooldown` and answers temporary failure at once; then one login
//!   probes, and its answer closes or re-opens the breaker. Changes are logged once each.
//! - A 2xx answer may name the backend (`X-Mail-Server` / `X-Mail-Port`); without the server
//!   header `[route]` applies; a server without a port, a bad port or an unresolvable name
//!   is a temporary failure (never a reply nginx would reject).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use zeroize::Zeroizing;

mod breaker;

use breaker::{Admit, Breaker, BreakerState, Transition};

use super::answer::{Credentials, PlainAnswer, SourceStatus};
use crate::config::{BasicMethod, HttpBasicConfig, RouteHeaders};
use crate::login::MailProtocol;
use crate::reason::Reason;

/// How long a login waits for a free slot when `max_in_flight` questions are out.
pub(super) const QUEUE_WAIT: Duration = Duration::from_millis(100);

/// How much of a response body is read so that its connection can go back to the pool;
/// a longer body is dropped with its connection.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// Idle pooled connections are closed before nginx's default `keepalive_timeout` (75 s)
/// would close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// What the upstream's answer means, before any routing lookup.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Upstream {
    /// 2xx, with the backend the response named (if routing is on and it named one).
    Accepted(Option<RouteTarget>),
    /// 401 or 403.
    Rejected,
    /// The upstream answered, but not with a usable answer; the reason is for the log line.
    Failed(Reason),
    /// The upstream accepted and named a backend that cannot be used.
    BadRoute(Reason),
}

/// A backend named by the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RouteTarget {
    /// An IP literal: used as is.
    Addr(SocketAddr),
    /// A host name, resolved per login.
    Host(String, u16),
}

/// Maps a status and headers to an answer (no I/O).
pub(super) fn map_response(status: StatusCode, headers: &HeaderMap, route: Option<&RouteHeaders>) -> Upstream {
    if status.is_success() {
        let Some(route) = route else {
            return Upstream::Accepted(None);
        };
        // No server header: `[route]` applies, whatever the port header says (nginx drops a
        // header whose value is empty, so a `map` that names servers for some users only
        // leaves the port alone for the others).
        return match (headers.get(&route.server), headers.get(&route.port)) {
            (None, _) => Upstream::Accepted(None),
            (Some(server), Some(port)) => match parse_route(server.as_bytes(), port.as_bytes()) {
                Ok(target) => Upstream::Accepted(Some(target)),
                Err(reason) => Upstream::BadRoute(reason),
            },
            (Some(_), None) => Upstream::BadRoute(Reason::UpstreamRouteIncomplete),
        };
    }
    match status.as_u16() {
        401 | 403 => Upstream::Rejected,
        300..=399 => Upstream::Failed(Reason::UpstreamRedirect),
        400..=499 => Upstream::Failed(Reason::Upstream4xx),
        500..=599 => Upstream::Failed(Reason::Upstream5xx),
        _ => Upstream::Failed(Reason::UpstreamBadStatus),
    }
}

/// Reads a backend from the routing headers' values: an IPv4 or IPv6 literal (brackets
/// allowed) or a host name, and a port from 1 to 65535.
pub(super) fn parse_route(server: &[u8], port: &[u8]) -> Result<RouteTarget, Reason> {
    let port = std::str::from_utf8(port)
        .ok()
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .ok_or(Reason::UpstreamRouteBadPort)?;
    let server = std::str::from_utf8(server)
        .map(str::trim)
        .map_err(|_| Reason::UpstreamRouteBadServer)?;
    let bare = server
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(RouteTarget::Addr(SocketAddr::new(ip, port)));
    }
    let is_host_name = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if is_host_name {
        Ok(RouteTarget::Host(bare.to_ascii_lowercase(), port))
    } else {
        Err(Reason::UpstreamRouteBadServer)
    }
}

/// The `Authorization` header for a login: `Basic base64(user ":" pass)` over the decoded
/// bytes. `None` when the user name holds a `:`, which Basic auth cannot express.
pub(super) fn basic_authorization(user: &[u8], pass: &[u8]) -> Option<HeaderValue> {
    if user.contains(&b':') {
        return None;
    }
    let mut joined = Zeroizing::new(Vec::with_capacity(user.len() + 1 + pass.len()));
    joined.extend_from_slice(user);
    joined.push(b':');
    joined.extend_from_slice(pass);
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&joined[..]));
    let mut value = Zeroizing::new(Vec::with_capacity(6 + encoded.len()));
    value.extend_from_slice(b"Basic ");
    value.extend_from_slice(encoded.as_bytes());
    // Base64 output is always a valid header value. The header's own copy cannot be
    // zeroized; it is marked sensitive so that it is never printed.
    let mut header = HeaderValue::from_bytes(&value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// A URL protected by HTTP Basic auth, with its client, in-flight bound and breaker.
#[derive(Debug)]
pub(crate) struct HttpBasicSource {
    /// Its configuration.
    config: HttpBasicConfig,
    client: Option<reqwest::Client>,
    slots: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
    name: String,
}

impl HttpBasicSource {
    /// Builds the client. A client that cannot be built (no TLS backend) is logged, and the
    /// source then answers every login with a temporary failure.
    pub(crate) fn new(config: HttpBasicConfig) -> HttpBasicSource {
        // Without the query string: it may hold an API key, and the name reaches logs,
        // metric labels and /readyz.
        let mut shown = config.url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let name = format!("http-basic:{shown}");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            .user_agent(concat!("mailauthd/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(source = %name, "cannot build the HTTP client: {e}; logins it would decide get a temporary failure");
                None
            }
        };
        let breaker = Breaker::new(config.breaker_failures, config.breaker_cooldown, config.timeout);
        HttpBasicSource {
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            breaker: Mutex::new(breaker),
            client,
            config,
            name,
        }
    }

    /// A short name for logs: `http-basic:<url>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The protocols this source serves (`None`: all).
    pub(crate) fn protocols(&self) -> Option<&[MailProtocol]> {
        self.config.protocols.as_deref()
    }

    /// The state of this source for `/readyz` and the "in use" line.
    pub(crate) fn status(&self) -> SourceStatus {
        let ready = self.is_available();
        SourceStatus {
            name: self.name.clone(),
            ready,
            users: None,
            detail: if ready { "breaker=closed" } else { "breaker=open" }.to_owned(),
            summary: "upstream".to_owned(),
            degraded: None,
        }
    }

    /// Whether the breaker is closed (logins are being asked about).
    pub(crate) fn is_available(&self) -> bool {
        self.client.is_some() && self.breaker_state() == BreakerState::Closed
    }

    /// The breaker's current state.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner()).state()
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
        match change {
            Some(Transition::Opened(failures)) => tracing::warn!(
                source = %self.name,
                "upstream failed {failures} time(s) in a row; breaker open: logins it would decide get a temporary failure for {cooldown}"
            ),
            Some(Transition::Reopened) => {
                tracing::warn!(source = %self.name, "upstream still failing; breaker stays open for {cooldown}")
            }
            Some(Transition::Closed) => tracing::info!(source = %self.name, "upstream answers again; breaker closed"),
            None => {}
        }
    }

    /// Asks the upstream about a password login.
    pub(crate) async fn check_plain(&self, creds: &Credentials<'_>) -> PlainAnswer {
        let Some(client) = &self.client else {
            return PlainAnswer::Unavailable {
                reason: Reason::SourceUnavailable,
            };
        };
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
        if self.admit() == Admit::Refuse {
            return PlainAnswer::Unavailable {
                reason: Reason::BreakerOpen,
            };
        }
        let deadline = Instant::now() + self.config.timeout;
        let outcome = tokio::time::timeout_at(deadline, self.ask(client, authorization, creds)).await;
        drop(slot);
        let upstream = match outcome {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                let reason = transport_reason(&e);
                tracing::debug!(source = %self.name, reason = reason.as_str(), "upstream question failed: {e}");
                Upstream::Failed(reason)
            }
            Err(_) => Upstream::Failed(Reason::UpstreamTimeout),
        };
        self.record(!matches!(upstream, Upstream::Failed(_)));
        match upstream {
            Upstream::Accepted(None) => PlainAnswer::Accepted {
                backend: None,
                scheme: None,
            },
            Upstream::Accepted(Some(target)) => match resolve(target, deadline).await {
                Ok(addr) => PlainAnswer::Accepted {
                    backend: Some(addr),
                    scheme: None,
                },
                Err(reason) => {
                    tracing::warn!(source = %self.name, reason = reason.as_str(), "the upstream accepted a login but named a backend that cannot be used");
                    PlainAnswer::Unavailable { reason }
                }
            },
            Upstream::Rejected => PlainAnswer::Rejected {
                reason: Reason::UpstreamRejected,
                scheme: None,
            },
            Upstream::Failed(reason) => PlainAnswer::Unavailable { reason },
            Upstream::BadRoute(reason) => {
                tracing::warn!(source = %self.name, reason = reason.as_str(), "the upstream accepted a login but named a backend that cannot be used");
                PlainAnswer::Unavailable { reason }
            }
        }
    }

    async fn ask(
        &self,
        client: &reqwest::Client,
        authorization: HeaderValue,
        creds: &Credentials<'_>,
    ) -> Result<Upstream, reqwest::Error> {
        let method = match self.config.method {
            BasicMethod::Get => Method::GET,
            BasicMethod::Head => Method::HEAD,
        };
        let mut request = client.request(method, self.config.url.clone());
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if let (Some(name), Some(ip)) = (&self.config.forward_client_ip, creds.client_ip)
            && let Ok(value) = HeaderValue::from_str(&ip.to_string())
        {
            request = request.header(name, value);
        }
        let mut response = request.header(AUTHORIZATION, authorization).send().await?;
        let upstream = map_response(
            response.status(),
            response.headers(),
            self.config.route_headers.as_ref(),
        );
        // Reading a short body to its end lets the connection go back to the pool.
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

/// A stable reason for a transport failure.
fn transport_reason(e: &reqwest::Error) -> Reason {
    if e.is_timeout() {
        Reason::UpstreamTimeout
    } else if e.is_connect() {
        Reason::UpstreamUnreachable
    } else {
        Reason::UpstreamError
    }
}

/// Turns a routing target into an address; a host name is resolved before `deadline`.
async fn resolve(target: RouteTarget, deadline: Instant) -> Result<SocketAddr, Reason> {
    match target {
        RouteTarget::Addr(addr) => Ok(addr),
        RouteTarget::Host(host, port) => {
            // nginx accepts only IP literals in Auth-Server, so the name is resolved here.
            let lookup = tokio::net::lookup_host((host.as_str(), port));
            match tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(500)), lookup).await {
                Ok(Ok(mut addrs)) => addrs.next().ok_or(Reason::UpstreamRouteUnresolvable),
                Ok(Err(_)) | Err(_) => Err(Reason::UpstreamRouteUnresolvable),
            }
        }
    }
}

#[cfg(test)]
mod tests;
