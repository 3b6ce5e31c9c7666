//! [`Verdict`] → reply bytes: the `Auth-Status` texts per protocol, `Auth-Server`/`Auth-Port`
//! for an accepted login, and the size bound nginx's 1024-byte reply buffer sets.

use std::fmt;
use std::net::IpAddr;

use zeroize::Zeroizing;

use super::{MAX_ECHOED_PASSWORD, MAX_ECHOED_USER};
use crate::login::MailProtocol;

/// What mailauthd answers.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let the login pass, to this backend.
    Accept(Accept),
    /// Refuse the login.
    Refuse(Refusal),
}

/// A successful login and where nginx should send it.
pub(crate) struct Accept {
    /// Backend address (`Auth-Server`, always an IP literal).
    pub server: IpAddr,
    /// Backend port (`Auth-Port`).
    pub port: u16,
    /// The login nginx uses on the backend (`Auth-User`), when it is not the client's
    /// (`destuser=`, a master user).
    pub user: Option<Vec<u8>>,
    /// The password nginx logs in to the backend with (`Auth-Pass`), when it has none of
    /// its own (apop, cram-md5).
    pub pass: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accept")
            .field("server", &self.server)
            .field("port", &self.port)
            .field(
                "user",
                &self.user.as_ref().map(|u| String::from_utf8_lossy(u).into_owned()),
            )
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a login is refused; selects the text each protocol's client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefuseKind {
    /// Wrong user or password.
    InvalidCredentials,
    /// mailauthd or a source cannot decide right now; the client should retry later.
    Temporary,
    /// Too many failures from this client or for this user.
    Banned,
    /// SMTP without AUTH to a domain that is not local.
    RelayDenied,
    /// The request was not a valid nginx auth request.
    BadRequest,
    /// A cleartext password over a connection without TLS (or with too old a TLS).
    PrivacyRequired,
    /// An inbound MX client whose address has no forward-confirmed PTR name
    /// (`Client-Host: [UNAVAILABLE]`).
    NoReverseDns,
    /// An inbound MX client whose PTR lookup failed for now (`Client-Host: [TEMPUNAVAIL]`).
    ReverseDnsTempfail,
}

impl RefuseKind {
    /// A short stable name for logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefuseKind::InvalidCredentials => "invalid",
            RefuseKind::Temporary => "tempfail",
            RefuseKind::Banned => "banned",
            RefuseKind::RelayDenied => "relay-denied",
            RefuseKind::BadRequest => "bad-request",
            RefuseKind::PrivacyRequired => "tls-required",
            RefuseKind::NoReverseDns => "relay-denied",
            RefuseKind::ReverseDnsTempfail => "tempfail",
        }
    }
}

/// A refused login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Why.
    pub kind: RefuseKind,
    /// `Auth-Wait` seconds: nginx keeps the session and lets the client try again.
    pub wait: Option<u32>,
}

/// `Auth-Status` text and, for SMTP only, `Auth-Error-Code` for a refusal. Without a known
/// protocol (a request that could not be read) there is no code: nginx uses it only for SMTP
/// (protocol.md §2.6), and an IMAP or POP3 reply must not carry one.
pub(super) fn refusal_text(kind: RefuseKind, protocol: Option<MailProtocol>) -> (&'static str, Option<&'static str>) {
    use MailProtocol::{Imap, Pop3, Smtp};
    use RefuseKind::*;
    match (kind, protocol) {
        (InvalidCredentials, Some(Imap)) => ("[AUTHENTICATIONFAILED] Invalid login or password", None),
        (InvalidCredentials, Some(Pop3)) => ("[AUTH] Invalid login or password", None),
        (InvalidCredentials, Some(Smtp)) => ("Authentication credentials invalid", Some("535 5.7.8")),
        (InvalidCredentials, None) => ("Invalid login or password", None),
        (Temporary, Some(Imap)) => ("[UNAVAILABLE] Temporary authentication failure, try again later", None),
        (Temporary, Some(Pop3)) => ("[SYS/TEMP] Temporary authentication failure, try again later", None),
        (Temporary, Some(Smtp)) => ("Temporary authentication failure, try again later", Some("454 4.7.0")),
        (Temporary | BadRequest, None) => ("Temporary authentication failure, try again later", None),
        (Banned, Some(Imap)) => ("[UNAVAILABLE] Too many failed logins, try again later", None),
        (Banned, Some(Pop3)) => ("[LOGIN-DELAY] Too many failed logins, try again later", None),
        (Banned, Some(Smtp)) => ("Too many failed logins, try again later", Some("454 4.7.0")),
        (Banned, None) => ("Too many failed logins, try again later", None),
        (RelayDenied, Some(Smtp)) => ("Relay access denied", Some("550 5.7.1")),
        (RelayDenied, None) => ("Relay access denied", None),
        (RelayDenied, Some(Imap | Pop3)) => refusal_text(InvalidCredentials, protocol),
        (BadRequest, Some(_)) => refusal_text(Temporary, protocol),
        // RFC 5530 for IMAP, RFC 4954 §6 for SMTP; POP3 has no code for it.
        (PrivacyRequired, Some(Imap)) => ("[PRIVACYREQUIRED] Use TLS (STARTTLS) for a cleartext login", None),
        (PrivacyRequired, Some(Smtp)) => (
            "Encryption required for requested authentication mechanism",
            Some("538 5.7.11"),
        ),
        (PrivacyRequired, Some(Pop3) | None) => ("Use TLS (STLS) for a cleartext login", None),
        // RFC 7372 §3.3 (5.7.25, reverse DNS validation failed); the text names what nginx sent.
        (NoReverseDns, Some(Smtp)) => (
            "Client host rejected: no reverse DNS name ([UNAVAILABLE])",
            Some("550 5.7.25"),
        ),
        (ReverseDnsTempfail, Some(Smtp)) => (
            "Client host rejected: reverse DNS lookup failed for now ([TEMPUNAVAIL]), try again later",
            Some("450 4.7.25"),
        ),
        (NoReverseDns | ReverseDnsTempfail, None) => ("Client host rejected", None),
        (NoReverseDns, Some(Imap | Pop3)) => refusal_text(InvalidCredentials, protocol),
        (ReverseDnsTempfail, Some(Imap | Pop3)) => refusal_text(Temporary, protocol),
    }
}

/// Whether a stored cleartext can be echoed to nginx as `Auth-Pass`: short enough to keep
/// the reply under [`super::MAX_REPLY_BYTES`], and a valid reply header value (nginx trims edge
/// spaces and cannot carry CR, LF or NUL; protocol.md §2.3, §2.7).
pub(crate) fn can_echo_password(value: &[u8]) -> bool {
    value.len() <= MAX_ECHOED_PASSWORD
        && !value.is_empty()
        && value.first() != Some(&b' ')
        && value.last() != Some(&b' ')
        && !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// Whether a login can be sent to nginx as `Auth-User`: a header value as for the password,
/// and at most [`MAX_ECHOED_USER`] bytes.
pub(crate) fn can_echo_user(value: &[u8]) -> bool {
    value.len() <= MAX_ECHOED_USER && can_echo_password(value)
}

/// Renders the reply nginx reads. Always `HTTP/1.0 200 OK`, always an `Auth-Status`, never
/// `WAIT`, always below [`super::MAX_REPLY_BYTES`].
pub(crate) fn render_reply(verdict: &Verdict, protocol: Option<MailProtocol>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.0 200 OK\r\n");
    match verdict {
        Verdict::Accept(accept) => {
            out.extend_from_slice(b"Auth-Status: OK\r\nAuth-Server: ");
            // Display's text of an IpAddr: a bare IPv6 literal, which is what nginx wants.
            out.extend_from_slice(crate::login::ip_text(accept.server).as_bytes());
            out.extend_from_slice(b"\r\nAuth-Port: ");
            out.extend_from_slice(itoa::Buffer::new().format(accept.port).as_bytes());
            out.extend_from_slice(b"\r\n");
            // Same rules as the password: raw, no edge spaces, no line breaks.
            if let Some(user) = accept.user.as_ref().filter(|u| can_echo_user(u)) {
                out.extend_from_slice(b"Auth-User: ");
                out.extend_from_slice(user);
                out.extend_from_slice(b"\r\n");
            }
            if let Some(pass) = accept.pass.as_ref().filter(|p| can_echo_password(p)) {
                out.extend_from_slice(b"Auth-Pass: ");
                out.extend_from_slice(pass);
                out.extend_from_slice(b"\r\n");
            }
        }
        Verdict::Refuse(refusal) => {
            let (status, code) = refusal_text(refusal.kind, protocol);
            out.extend_from_slice(b"Auth-Status: ");
            out.extend_from_slice(status.as_bytes());
            out.extend_from_slice(b"\r\n");
            if let Some(code) = code {
                out.extend_from_slice(b"Auth-Error-Code: ");
                out.extend_from_slice(code.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            if let Some(wait) = refusal.wait.filter(|w| *w > 0) {
                out.extend_from_slice(b"Auth-Wait: ");
                out.extend_from_slice(itoa::Buffer::new().format(wait).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    debug_assert!(out.len() < super::MAX_REPLY_BYTES, "reply of {} bytes", out.len());
    out
}
