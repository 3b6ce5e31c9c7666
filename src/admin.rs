//! The admin listener (`[admin] listen`), separate from the auth_http one: health and
//! readiness for supervisors and load balancers, and the operator endpoints. Endpoints
//! that change state need `Authorization: Bearer <[admin] token>`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::decide::Authenticator;
use crate::source::Source;

/// What the admin endpoints work on.
#[derive(Debug)]
pub struct AdminState {
    /// The authenticator whose sources and state are reported.
    pub auth: Arc<Authenticator>,
    /// The bearer token for endpoints that change state (`None`: those endpoints are off).
    pub token: Option<String>,
}

/// A reply body.
pub type Body = Full<Bytes>;

/// Builds a plain-text reply.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Whether the request carries the configured bearer token (compared in constant time).
pub fn authorized<B>(state: &AdminState, req: &Request<B>) -> bool {
    let Some(token) = &state.token else { return false };
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

/// Whether every source can answer: htpasswd tables loaded, http-basic breakers closed.
pub fn ready(auth: &Authenticator) -> bool {
    auth.sources.iter().all(Source::is_available)
}

async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if ready(&state.auth) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: a source has no users loaded or its upstream is failing\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
    connections.shutdown().await;
}
