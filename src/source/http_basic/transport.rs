//! Transport failures talking to the upstream: which may be asked again, how they are told
//! in the log (never with the URL), their stable reasons; and the resolution of a backend
//! name an upstream answered with.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::response::RouteTarget;
use crate::reason::Reason;

/// Whether a question failed because its connection was closed before any response head
/// arrived: hyper's "connection closed before message completed", a reset or a broken pipe
/// while sending, or a request its connection dropped. A timeout, a refused connection, or
/// anything after a status line was read is never such a failure.
pub(super) fn closed_before_answer(e: &reqwest::Error) -> bool {
    if !e.is_request() || e.is_timeout() || e.is_connect() {
        return false;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// A transport error for the log: its causes, and never the URL, whose query string may
/// hold a key.
pub(super) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

/// A stable reason for a transport failure.
pub(super) fn transport_reason(e: &reqwest::Error) -> Reason {
    if e.is_timeout() {
        Reason::UpstreamTimeout
    } else if e.is_connect() {
        Reason::UpstreamUnreachable
    } else {
        Reason::UpstreamError
    }
}

/// Turns a routing target into an address; a host name is resolved before `deadline`.
pub(super) async fn resolve(target: RouteTarget, deadline: Instant) -> Result<SocketAddr, Reason> {
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
