//! The admin listener (`[admin] listen`), separate from the auth_http one: health and
//! readiness for supervisors and load balancers, Prometheus metrics, and the operator
//! endpoints. Endpoints that change state need `Authorization: Bearer <[admin] token>`.
//!
//! - `GET /healthz`: 200 while the process answers.
//! - `GET /readyz`: 200 when every source has a users table in use, 503 while one has never
//!   loaded. A ready source may be degraded: its file's broken lines were skipped, or its
//!   file could not be read whole and the last good table stays in use. It stays ready
//!   (logins keep working), and the body says `degraded` and why. The body lists each
//!   source.
//! - `GET /metrics`: OpenMetrics text (`crate::metrics`).
//!
//! The listener is bounded as the auth listener is: at most 64 connections at once, a
//! 16 KiB request header sent within 3 s, 30 s per connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::decide::Authenticator;
use crate::source::{Source, SourceStatus};

/// What the admin endpoints work on.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// The authenticator whose sources and state are reported.
    pub auth: Arc<Authenticator>,
    /// The bearer token for endpoints that change state (`None`: those endpoints are off).
    pub token: Option<crate::secret::Secret>,
}

/// A reply body.
pub(crate) type Body = Full<Bytes>;

/// Builds a plain-text reply.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Whether the request carries the configured bearer token (compared in constant time).
pub(crate) fn authorized<B>(state: &AdminState, req: &Request<B>) -> bool {
    let Some(token) = &state.token else { return false };
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    given.ct_eq(token.expose().as_bytes()).into()
}

/// The `/readyz` reply: the verdict, then one line per source.
fn readiness(auth: &Authenticator) -> Response<Body> {
    let statuses: Vec<SourceStatus> = auth.sources.iter().map(Source::status).collect();
    let mut body = String::new();
    let status = if statuses.iter().all(|s| s.ready) {
        if statuses.iter().any(|s| s.degraded.is_some()) {
            body.push_str("ready, degraded: a source skipped broken lines or keeps its last good table\n");
        } else {
            body.push_str("ready\n");
        }
        StatusCode::OK
    } else {
        body.push_str("not ready: a source has no users loaded or its upstream is failing\n");
        StatusCode::SERVICE_UNAVAILABLE
    };
    for source in &statuses {
        body.push_str(&format!("{} {}\n", source.name, source.detail));
    }
    // Backends are listed, not judged: a store that is down does not make this daemon unready.
    for line in auth.router.status_lines() {
        body.push_str(&line);
        body.push('\n');
    }
    if let Some(state) = auth.policy.state_status() {
        // Not a readiness condition: `on_redis_error` says what happens without Redis.
        let reachable = match state.reachable {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not yet tried",
        };
        body.push_str(&format!(
            "state mode={} primary={} reachable={reachable} failovers={} bans_subscription={}\n",
            state.mode.as_str(),
            state.primary.as_deref().unwrap_or("-"),
            state.failovers,
            state.listening.as_str(),
        ));
    }
    text(status, body)
}

async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readiness(&state.auth),
        (&Method::GET, "/metrics") => {
            if let Some(s) = state.auth.policy.state_status() {
                state.auth.metrics.shared_state(
                    s.mode.as_str(),
                    s.primary.as_deref().unwrap_or(""),
                    s.reachable == Some(true),
                    s.failovers,
                    s.listening == crate::policy::redis::Listening::Subscribed,
                );
            }
            let mut resp = text(StatusCode::OK, state.auth.metrics.render());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            resp
        }
        (&Method::GET, "/bans") => bans(&state, &req, false).await,
        (&Method::DELETE, "/bans") | (&Method::POST, "/bans/clear") => bans(&state, &req, true).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

/// `GET /bans` lists the bans in force, one per line; `DELETE /bans` (or `POST /bans/clear`)
/// lifts those selected by `?ip=` and/or `?user=` (all without either). Both need the token:
/// the list names users and addresses.
async fn bans<B>(state: &AdminState, req: &Request<B>, clear: bool) -> Response<Body> {
    if state.token.is_none() {
        return text(StatusCode::FORBIDDEN, "set [admin] token to use /bans\n");
    }
    if !authorized(state, req) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    let policy = &state.auth.policy;
    if !clear {
        return match policy.bans().await {
            Ok(list) => text(
                StatusCode::OK,
                list.iter().map(|b| format!("{b}\n")).collect::<String>(),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        };
    }
    let (mut ip, mut user) = (None, None);
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            crate::auth_http::percent_decode(value.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned());
        match (name, value) {
            ("ip", Some(v)) => match v.parse::<std::net::IpAddr>() {
                Ok(addr) => ip = Some(addr),
                Err(_) => return text(StatusCode::BAD_REQUEST, "ip= is not an IP address\n"),
            },
            ("user", Some(v)) => user = Some(v),
            _ => return text(StatusCode::BAD_REQUEST, "use ?ip=ADDRESS and/or ?user=NAME\n"),
        }
    }
    let filter = policy.filter(ip, user.as_deref());
    match policy.clear(&filter).await {
        Ok(n) => {
            let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
            let user = filter.user.as_deref().unwrap_or("-");
            tracing::info!(target: "mailauthd::policy", ip, user, cleared = n, "bans lifted by admin");
            text(StatusCode::OK, format!("cleared {n} ban(s)\n"))
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// Admin connections served at once. Its clients are a supervisor, a scraper and an
/// operator: a few at a time. Past it a connection is answered 503 and closed at once, so
/// idle connections can hold neither descriptors the auth listener needs nor a queue of
/// accepted connections in front of `/healthz`.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send its request header (its clients send it at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// The most a connection buffers: its request header (no endpoint takes a body). hyper's
/// default is ~400 KB.
const MAX_BUF: usize = 16 * 1024;

/// The longest a connection lives, answer included (a `/bans` listing from Redis may take
/// up to 10 s; a client that does not read its answer is not waited for past this).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// The answer past [`MAX_CONNECTIONS`].
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub(crate) async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut busy_logged = false;
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Non-blocking: the few bytes fit the socket buffer, and a client that does not
            // read them is not waited for.
            let _ = stream.try_write(BUSY);
            if !busy_logged {
                tracing::warn!("admin listener busy: {MAX_CONNECTIONS} connections open; answering 503 to more");
                busy_logged = true;
            }
            continue;
        };
        busy_logged = false;
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("admin connection: {e}"),
                Err(_) => tracing::debug!("admin connection: closed after {}s", CONNECTION_DEADLINE.as_secs()),
            }
            drop(permit);
        });
    }
    connections.shutdown().await;
}
