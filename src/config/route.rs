//! The `[route]` section: the backend mail server for each protocol, resolved to an IP
//! address when the config is loaded.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::login::MailProtocol;

/// A backend mail server: as written, and resolved to an IP address (nginx accepts only IP
/// literals in `Auth-Server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    /// `host:port` as written in the config.
    pub spec: String,
    /// The resolved address.
    pub addr: SocketAddr,
}

/// The backend for each protocol (`[route]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routes {
    /// IMAP backend.
    pub imap: Backend,
    /// POP3 backend.
    pub pop3: Backend,
    /// SMTP backend.
    pub smtp: Backend,
}

impl Routes {
    /// The backend for `protocol`.
    pub(crate) fn for_protocol(&self, protocol: MailProtocol) -> &Backend {
        match protocol {
            MailProtocol::Imap => &self.imap,
            MailProtocol::Pop3 => &self.pop3,
            MailProtocol::Smtp => &self.smtp,
        }
    }
}

/// `[route]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    imap: Option<Spanned<String>>,
    pop3: Option<Spanned<String>>,
    smtp: Option<Spanned<String>>,
}

/// Validates `[route]`; a missing protocol gets its port on 127.0.0.1.
pub(super) fn validate_route(raw: Option<Spanned<RawRoute>>, c: &mut Checker<'_>) -> Routes {
    let route = raw.map(Spanned::into_inner).unwrap_or_default();
    Routes {
        imap: backend(c, &route.imap, "route.imap", "127.0.0.1:143"),
        pop3: backend(c, &route.pop3, "route.pop3", "127.0.0.1:110"),
        smtp: backend(c, &route.smtp, "route.smtp", "127.0.0.1:25"),
    }
}

/// One backend; on a problem, a placeholder address stands in so validation goes on.
fn backend(c: &mut Checker<'_>, value: &Option<Spanned<String>>, key: &str, default: &str) -> Backend {
    let (spec, span) = match value {
        Some(v) => (v.get_ref().clone(), Some(v.span())),
        None => (default.to_owned(), None),
    };
    match resolve_backend(&spec) {
        Ok(addr) => Backend { spec, addr },
        Err(message) => {
            c.problem(span, key, message);
            Backend {
                spec,
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            }
        }
    }
}

/// Resolves `host:port` (or `[v6]:port`) to one address; IP literals pass through.
fn resolve_backend(spec: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{spec:?}: port 0 is not a valid backend port"));
        }
        return Ok(addr);
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(format!("{spec:?} is not host:port; write e.g. \"127.0.0.1:143\""));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{spec:?}: {port:?} is not a port from 1 to 65535")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match lookup(host, port) {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{spec:?}: host {host:?} has no address")),
        Err(e) => Err(format!("{spec:?}: cannot resolve host {host:?} ({e})")),
    }
}

/// Asks the system resolver for a host name's addresses.
#[cfg(not(fuzzing))]
fn lookup(host: &str, port: u16) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()
}

/// Fuzz builds never ask the resolver: the fuzzer's host names must not leave the machine.
#[cfg(fuzzing)]
fn lookup(_host: &str, _port: u16) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    Err(std::io::Error::other("not resolved in fuzz builds"))
}
