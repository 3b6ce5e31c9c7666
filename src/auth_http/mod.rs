//! nginx's `auth_http` wire format: request bytes → [`AuthRequest`], [`Verdict`] → reply
//! bytes. No I/O. This is the one module that knows header names.
//!
//! The request parser is hand-written on purpose: nginx sends DEL (0x7F) raw inside
//! `Auth-Pass`, which `httparse` (and so hyper) rejects; a rejected request would reach
//! nginx as a reply without `Auth-Server` and the user would see an internal error
//! (protocol.md §1.5 point 5).

use std::fmt;
use std::net::IpAddr;

use zeroize::Zeroizing;

use crate::login::{AuthMethod, ClientAddr, MailProtocol};

mod reply;
mod request;
#[cfg(test)]
mod tests;

pub(crate) use reply::{Accept, Refusal, RefuseKind, Verdict, can_echo_password, can_echo_user, render_reply};
pub(crate) use request::{find_header_end, parse_request, percent_decode, protocol_hint};

/// The largest request header block accepted (protocol.md §1.1 asks for at least 32 KiB).
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// At most this many headers that this module does not interpret (`auth_http_header`
/// lines) are kept per request; more are read and dropped.
pub(crate) const MAX_EXTRA_HEADERS: usize = 32;

/// At most this many bytes of such headers (names and values) are kept per request.
pub(crate) const MAX_EXTRA_HEADER_BYTES: usize = 4096;

/// nginx reads the reply into one 1024-byte buffer (protocol.md §2.1); every reply stays
/// below this.
pub(crate) const MAX_REPLY_BYTES: usize = 1024;

/// The longest cleartext echoed back as `Auth-Pass`; keeps every reply under
/// [`MAX_REPLY_BYTES`].
pub(crate) const MAX_ECHOED_PASSWORD: usize = 512;

/// The longest login sent back as `Auth-User`; with the longest `Auth-Pass` the reply
/// still stays under [`MAX_REPLY_BYTES`].
pub(crate) const MAX_ECHOED_USER: usize = 255;

/// TLS facts nginx passes about the client connection (`Auth-SSL*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsInfo {
    /// `Auth-SSL: on` was sent: the client connection is TLS.
    pub on: bool,
    /// `Auth-SSL-Protocol`, e.g. `TLSv1.3`.
    pub protocol: Option<String>,
    /// `Auth-SSL-Cipher`.
    pub cipher: Option<String>,
    /// `Auth-SSL-Verify`: `SUCCESS`, `NONE` or `FAILED:<reason>`.
    pub verify: Option<String>,
    /// `Auth-SSL-Subject` (RFC 2253 DN).
    pub subject: Option<String>,
    /// `Auth-SSL-Issuer`.
    pub issuer: Option<String>,
    /// `Auth-SSL-Serial` (upper-case hex).
    pub serial: Option<String>,
    /// `Auth-SSL-Fingerprint` (SHA-1, lower-case hex).
    pub fingerprint: Option<String>,
    /// `Auth-SSL-Cert`, %-decoded PEM.
    pub cert: Option<Vec<u8>>,
}

/// The PROXY protocol addresses nginx saw (`Proxy-Protocol-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProxyInfo {
    /// `Proxy-Protocol-Addr`.
    pub addr: Option<String>,
    /// `Proxy-Protocol-Port`.
    pub port: Option<u16>,
    /// `Proxy-Protocol-Server-Addr`.
    pub server_addr: Option<String>,
    /// `Proxy-Protocol-Server-Port`.
    pub server_port: Option<u16>,
}

/// One authentication request from nginx, decoded. Some facts (TLS, PROXY protocol, the
/// SMTP envelope, extra headers) are parsed and tested but not used by any rule yet.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "facts parsed for the connection rules (TLS, client certificates, the real client)"
    )
)]
pub(crate) struct AuthRequest {
    /// The request URI, byte for byte (any URI is accepted).
    pub uri: String,
    /// `Auth-Method`.
    pub method: AuthMethod,
    /// `Auth-Protocol`.
    pub protocol: MailProtocol,
    /// `Auth-User`, %-decoded bytes; always empty for `none`.
    pub user: Vec<u8>,
    /// `Auth-Pass`, %-decoded bytes (for apop/cram-md5 the client's digest); always empty
    /// for `none`.
    pub pass: Zeroizing<Vec<u8>>,
    /// `Auth-Salt`, raw.
    pub salt: Option<Vec<u8>>,
    /// `Auth-Login-Attempt` (1 when absent).
    pub login_attempt: u32,
    /// `Client-IP`, normalised; `None` only when the header is absent (nginx always sends it).
    pub client: Option<ClientAddr>,
    /// `Client-Host`, raw, or `[TEMPUNAVAIL]` in place of a value that is not a host name.
    pub client_host: Option<Vec<u8>>,
    /// `Auth-SMTP-Helo`, raw.
    pub smtp_helo: Option<Vec<u8>>,
    /// `Auth-SMTP-From`, the raw `MAIL FROM` command line.
    pub smtp_from: Option<Vec<u8>>,
    /// `Auth-SMTP-To`, the raw `RCPT TO` command line.
    pub smtp_to: Option<Vec<u8>>,
    /// Present when the client connection is TLS (`Auth-SSL: on`). Boxed, as `proxy`: the
    /// request is moved a few times on its way, and a login without them should not copy
    /// their room.
    pub tls: Option<Box<TlsInfo>>,
    /// PROXY protocol facts, when the listener uses it.
    pub proxy: Option<Box<ProxyInfo>>,
    /// Headers this module does not interpret (`auth_http_header` ones), raw; at most
    /// [`MAX_EXTRA_HEADERS`] of them, in at most [`MAX_EXTRA_HEADER_BYTES`].
    pub extra_headers: Vec<(String, Vec<u8>)>,
}

impl AuthRequest {
    /// The client's address; `None` for a unix-socket client or without `Client-IP`.
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client.and_then(ClientAddr::ip)
    }

    /// The value of an `auth_http_header` line nginx added (matched case-insensitively);
    /// `None` when absent or sent more than once (one of them would be an injected line).
    pub(crate) fn extra_header(&self, name: &str) -> Option<&[u8]> {
        let mut found = self.extra_headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next()?;
        found.next().is_none().then_some(first.1.as_slice())
    }

    /// Whether the client connection is TLS (`Auth-SSL: on`, also after STARTTLS).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.on)
    }
}

impl fmt::Debug for AuthRequest {
    // Hand-written so that `Auth-Pass` can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("uri", &self.uri)
            .field("method", &self.method)
            .field("protocol", &self.protocol)
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("pass", &"<redacted>")
            .field("login_attempt", &self.login_attempt)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be read as an nginx auth request. Never carries header values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The first line is not `<METHOD> <URI> HTTP/<version>`.
    #[error("request line is not an HTTP request line")]
    BadRequestLine,
    /// The header block exceeds [`MAX_REQUEST_BYTES`].
    #[error("request header block is larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    /// The connection ended, or the deadline passed, before the blank line.
    #[error("request ended before the blank line that closes the header block")]
    Incomplete,
    /// A header line is not `Name: value`.
    #[error("header line {line} is not `Name: value`")]
    BadHeaderLine {
        /// 1-based line number in the request.
        line: usize,
    },
    /// A header nginx sends at most once came twice (an injected line, CVE-2026-28753).
    #[error("header {0} is repeated")]
    RepeatedHeader(&'static str),
    /// A header every auth request carries is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header's value cannot be understood.
    #[error("header {header} has an invalid value ({reason})")]
    BadValue {
        /// The header name.
        header: &'static str,
        /// What is wrong with it (never the value itself).
        reason: &'static str,
    },
}
