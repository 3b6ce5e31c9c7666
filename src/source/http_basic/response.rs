//! What an upstream's answer means, and the question's `Authorization` header: no I/O.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use crate::config::RouteHeaders;
use crate::reason::Reason;

/// What the upstream's answer means, before any routing lookup.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::source) enum Upstream {
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
pub(in crate::source) enum RouteTarget {
    /// An IP literal: used as is.
    Addr(SocketAddr),
    /// A host name, resolved per login.
    Host(String, u16),
}

/// Maps a status and headers to an answer (no I/O).
pub(in crate::source) fn map_response(
    status: StatusCode,
    headers: &HeaderMap,
    route: Option<&RouteHeaders>,
) -> Upstream {
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
pub(in crate::source) fn parse_route(server: &[u8], port: &[u8]) -> Result<RouteTarget, Reason> {
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
pub(in crate::source) fn basic_authorization(user: &[u8], pass: &[u8]) -> Option<HeaderValue> {
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
