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

/// The largest request header block accepted (protocol.md §1.1 asks for at least 32 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// nginx reads the reply into one 1024-byte buffer (protocol.md §2.1); every reply stays
/// below this.
pub const MAX_REPLY_BYTES: usize = 1024;

/// The longest cleartext echoed back as `Auth-Pass`; keeps every reply under
/// [`MAX_REPLY_BYTES`].
pub const MAX_ECHOED_PASSWORD: usize = 512;

/// The mail protocol of the login (`Auth-Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailProtocol {
    /// IMAP.
    Imap,
    /// POP3.
    Pop3,
    /// SMTP (submission or inbound).
    Smtp,
}

impl MailProtocol {
    /// The name nginx sends in `Auth-Protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            MailProtocol::Imap => "imap",
            MailProtocol::Pop3 => "pop3",
            MailProtocol::Smtp => "smtp",
        }
    }

    /// Parses an `Auth-Protocol` value.
    pub fn parse(value: &str) -> Option<MailProtocol> {
        match value {
            "imap" => Some(MailProtocol::Imap),
            "pop3" => Some(MailProtocol::Pop3),
            "smtp" => Some(MailProtocol::Smtp),
            _ => None,
        }
    }
}

impl fmt::Display for MailProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client authenticated (`Auth-Method`, protocol.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A cleartext password: IMAP LOGIN, POP3 USER/PASS, SASL PLAIN and LOGIN.
    Plain,
    /// POP3 APOP: `Auth-Pass` is hex MD5(salt ‖ password).
    Apop,
    /// SASL CRAM-MD5: `Auth-Pass` is hex HMAC-MD5(password, salt).
    CramMd5,
    /// SASL EXTERNAL (a TLS client certificate).
    External,
    /// SMTP without AUTH (`smtp_auth none`, an inbound MX).
    None,
}

impl AuthMethod {
    /// The name nginx sends in `Auth-Method`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Plain => "plain",
            AuthMethod::Apop => "apop",
            AuthMethod::CramMd5 => "cram-md5",
            AuthMethod::External => "external",
            AuthMethod::None => "none",
        }
    }

    /// Parses an `Auth-Method` value.
    pub fn parse(value: &str) -> Option<AuthMethod> {
        match value {
            "plain" => Some(AuthMethod::Plain),
            "apop" => Some(AuthMethod::Apop),
            "cram-md5" => Some(AuthMethod::CramMd5),
            "external" => Some(AuthMethod::External),
            "none" => Some(AuthMethod::None),
            _ => None,
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS facts nginx passes about the client connection (`Auth-SSL*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
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
pub struct ProxyInfo {
    /// `Proxy-Protocol-Addr`.
    pub addr: Option<String>,
    /// `Proxy-Protocol-Port`.
    pub port: Option<u16>,
    /// `Proxy-Protocol-Server-Addr`.
    pub server_addr: Option<String>,
    /// `Proxy-Protocol-Server-Port`.
    pub server_port: Option<u16>,
}

/// One authentication request from nginx, decoded.
pub struct AuthRequest {
    /// The request URI, byte for byte (any URI is accepted).
    pub uri: String,
    /// `Auth-Method`.
    pub method: AuthMethod,
    /// `Auth-Protocol`.
    pub protocol: MailProtocol,
    /// `Auth-User`, %-decoded bytes.
    pub user: Vec<u8>,
    /// `Auth-Pass`, %-decoded bytes (for apop/cram-md5 the client's digest).
    pub pass: Zeroizing<Vec<u8>>,
    /// `Auth-Salt`, raw.
    pub salt: Option<Vec<u8>>,
    /// `Auth-Login-Attempt` (1 when absent).
    pub login_attempt: u32,
    /// `Client-IP`.
    pub client_ip: Option<IpAddr>,
    /// `Client-Host`, raw.
    pub client_host: Option<Vec<u8>>,
    /// `Auth-SMTP-Helo`, raw.
    pub smtp_helo: Option<Vec<u8>>,
    /// `Auth-SMTP-From`, the raw `MAIL FROM` command line.
    pub smtp_from: Option<Vec<u8>>,
    /// `Auth-SMTP-To`, the raw `RCPT TO` command line.
    pub smtp_to: Option<Vec<u8>>,
    /// Present when the client connection is TLS (`Auth-SSL: on`).
    pub tls: Option<TlsInfo>,
    /// PROXY protocol facts, when the listener uses it.
    pub proxy: Option<ProxyInfo>,
    /// Headers this module does not interpret (`auth_http_header` ones), raw.
    pub extra_headers: Vec<(String, Vec<u8>)>,
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
            .field("client_ip", &self.client_ip)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be read as an nginx auth request. Never carries header values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
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

/// Returns the length of the header block (including the closing blank line) once `buf`
/// holds a complete one. Accepts CRLF and bare-LF line ends.
pub fn header_block_len(buf: &[u8]) -> Option<usize> {
    find_header_end(buf, &mut 0)
}

/// Like [`header_block_len`] for a buffer that grows: `resume` is where the first
/// incomplete line starts, kept between calls so that every byte is scanned once.
pub fn find_header_end(buf: &[u8], resume: &mut usize) -> Option<usize> {
    let mut start = (*resume).min(buf.len());
    while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
        let end = start + pos + 1;
        if matches!(&buf[start..end], b"\n" | b"\r\n") {
            return Some(end);
        }
        start = end;
    }
    *resume = start;
    None
}

/// Parses one complete header block (as delimited by [`header_block_len`]).
pub fn parse_request(block: &[u8]) -> Result<AuthRequest, ProtocolError> {
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or(ProtocolError::BadRequestLine)?;
    let uri = parse_request_line(request_line)?;

    let mut builder = Builder::default();
    for (index, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ProtocolError::BadHeaderLine { line: index + 2 })?;
        let name = &line[..colon];
        if name.is_empty()
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ProtocolError::BadHeaderLine { line: index + 2 });
        }
        let value = trim_spaces(&line[colon + 1..]);
        // Header names are ASCII by the check above.
        let name = String::from_utf8_lossy(name);
        builder.set(&name, value)?;
    }
    builder.finish(uri)
}

fn parse_request_line(line: &[u8]) -> Result<String, ProtocolError> {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next().ok_or(ProtocolError::BadRequestLine)?;
    let uri = parts.next().ok_or(ProtocolError::BadRequestLine)?;
    let version = parts.next().ok_or(ProtocolError::BadRequestLine)?;
    if parts.next().is_some() || !method.iter().all(u8::is_ascii_uppercase) || !version.starts_with(b"HTTP/") {
        return Err(ProtocolError::BadRequestLine);
    }
    Ok(String::from_utf8_lossy(uri).into_owned())
}

/// Strips spaces and tabs at both ends (HTTP's optional white space).
fn trim_spaces(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Decodes nginx's `NGX_ESCAPE_MAIL_AUTH` escaping (protocol.md §1.5): `%XY` becomes the byte
/// 0xXY, everything else (including `+`) stays as it is. A `%` without two hex digits cannot
/// come from nginx and makes the value invalid.
pub fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hi = hex_digit(*value.get(i + 1)?)?;
            let lo = hex_digit(*value.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Default)]
struct Builder {
    method: Option<AuthMethod>,
    protocol: Option<MailProtocol>,
    user: Option<Vec<u8>>,
    pass: Option<Zeroizing<Vec<u8>>>,
    salt: Option<Vec<u8>>,
    login_attempt: Option<u32>,
    client_ip: Option<IpAddr>,
    client_host: Option<Vec<u8>>,
    smtp_helo: Option<Vec<u8>>,
    smtp_from: Option<Vec<u8>>,
    smtp_to: Option<Vec<u8>>,
    tls: Option<TlsInfo>,
    proxy: Option<ProxyInfo>,
    extra_headers: Vec<(String, Vec<u8>)>,
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn ascii<'a>(value: &'a [u8], header: &'static str) -> Result<&'a str, ProtocolError> {
    std::str::from_utf8(value).map_err(|_| ProtocolError::BadValue {
        header,
        reason: "not ASCII",
    })
}

impl Builder {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), ProtocolError> {
        // nginx always sends these names in this capitalisation; matching case-insensitively
        // costs nothing and makes hand-written requests (curl, tests) work too.
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "host" => {}
            "auth-method" => {
                let v = ascii(value, "Auth-Method")?;
                self.method = Some(AuthMethod::parse(v).ok_or(ProtocolError::BadValue {
                    header: "Auth-Method",
                    reason: "not plain, apop, cram-md5, external or none",
                })?);
            }
            "auth-protocol" => {
                let v = ascii(value, "Auth-Protocol")?;
                self.protocol = Some(MailProtocol::parse(v).ok_or(ProtocolError::BadValue {
                    header: "Auth-Protocol",
                    reason: "not imap, pop3 or smtp",
                })?);
            }
            "auth-user" => {
                self.user = Some(percent_decode(value).ok_or(ProtocolError::BadValue {
                    header: "Auth-User",
                    reason: "a % not followed by two hex digits",
                })?);
            }
            "auth-pass" => {
                let decoded = percent_decode(value).ok_or(ProtocolError::BadValue {
                    header: "Auth-Pass",
                    reason: "a % not followed by two hex digits",
                })?;
                self.pass = Some(Zeroizing::new(decoded));
            }
            "auth-salt" => self.salt = Some(value.to_vec()),
            "auth-login-attempt" => {
                let v = ascii(value, "Auth-Login-Attempt")?;
                self.login_attempt = Some(v.parse().map_err(|_| ProtocolError::BadValue {
                    header: "Auth-Login-Attempt",
                    reason: "not a decimal number",
                })?);
            }
            "client-ip" => {
                let v = ascii(value, "Client-IP")?;
                self.client_ip = Some(v.parse().map_err(|_| ProtocolError::BadValue {
                    header: "Client-IP",
                    reason: "not an IP address",
                })?);
            }
            "client-host" => self.client_host = Some(value.to_vec()),
            "auth-smtp-helo" => self.smtp_helo = Some(value.to_vec()),
            "auth-smtp-from" => self.smtp_from = Some(value.to_vec()),
            "auth-smtp-to" => self.smtp_to = Some(value.to_vec()),
            "auth-ssl" => {
                if value == b"on" {
                    self.tls.get_or_insert_with(TlsInfo::default);
                }
            }
            "auth-ssl-protocol" => self.tls_mut().protocol = Some(text(value)),
            "auth-ssl-cipher" => self.tls_mut().cipher = Some(text(value)),
            "auth-ssl-verify" => self.tls_mut().verify = Some(text(value)),
            "auth-ssl-subject" => self.tls_mut().subject = Some(text(value)),
            "auth-ssl-issuer" => self.tls_mut().issuer = Some(text(value)),
            "auth-ssl-serial" => self.tls_mut().serial = Some(text(value)),
            "auth-ssl-fingerprint" => self.tls_mut().fingerprint = Some(text(value)),
            "auth-ssl-cert" => {
                self.tls_mut().cert = Some(percent_decode(value).ok_or(ProtocolError::BadValue {
                    header: "Auth-SSL-Cert",
                    reason: "a % not followed by two hex digits",
                })?);
            }
            "proxy-protocol-addr" => self.proxy_mut().addr = Some(text(value)),
            "proxy-protocol-port" => self.proxy_mut().port = port(value, "Proxy-Protocol-Port")?,
            "proxy-protocol-server-addr" => self.proxy_mut().server_addr = Some(text(value)),
            "proxy-protocol-server-port" => {
                self.proxy_mut().server_port = port(value, "Proxy-Protocol-Server-Port")?;
            }
            _ => self.extra_headers.push((name.to_owned(), value.to_vec())),
        }
        Ok(())
    }

    fn tls_mut(&mut self) -> &mut TlsInfo {
        self.tls.get_or_insert_with(TlsInfo::default)
    }

    fn proxy_mut(&mut self) -> &mut ProxyInfo {
        self.proxy.get_or_insert_with(ProxyInfo::default)
    }

    fn finish(self, uri: String) -> Result<AuthRequest, ProtocolError> {
        Ok(AuthRequest {
            uri,
            method: self.method.ok_or(ProtocolError::MissingHeader("Auth-Method"))?,
            protocol: self.protocol.ok_or(ProtocolError::MissingHeader("Auth-Protocol"))?,
            user: self.user.unwrap_or_default(),
            pass: self.pass.unwrap_or_default(),
            salt: self.salt,
            login_attempt: self.login_attempt.unwrap_or(1),
            client_ip: self.client_ip,
            client_host: self.client_host,
            smtp_helo: self.smtp_helo,
            smtp_from: self.smtp_from,
            smtp_to: self.smtp_to,
            tls: self.tls,
            proxy: self.proxy,
            extra_headers: self.extra_headers,
        })
    }
}

fn port(value: &[u8], header: &'static str) -> Result<Option<u16>, ProtocolError> {
    let v = ascii(value, header)?;
    v.parse().map(Some).map_err(|_| ProtocolError::BadValue {
        header,
        reason: "not a port number",
    })
}

/// What mailauthd answers.
#[derive(Debug)]
pub enum Verdict {
    /// Let the login pass, to this backend.
    Accept(Accept),
    /// Refuse the login.
    Refuse(Refusal),
}

/// A successful login and where nginx should send it.
pub struct Accept {
    /// Backend address (`Auth-Server`, always an IP literal).
    pub server: IpAddr,
    /// Backend port (`Auth-Port`).
    pub port: u16,
    /// The password nginx logs in to the backend with (`Auth-Pass`), when it has none of
    /// its own (apop, cram-md5).
    pub pass: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accept")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a login is refused; selects the text each protocol's client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseKind {
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
}

impl RefuseKind {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseKind::InvalidCredentials => "invalid",
            RefuseKind::Temporary => "tempfail",
            RefuseKind::Banned => "banned",
            RefuseKind::RelayDenied => "relay-denied",
            RefuseKind::BadRequest => "bad-request",
        }
    }
}

/// A refused login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub kind: RefuseKind,
    /// `Auth-Wait` seconds: nginx keeps the session and lets the client try again.
    pub wait: Option<u32>,
}

/// `Auth-Status` text and, for SMTP, `Auth-Error-Code` for a refusal.
pub fn refusal_text(kind: RefuseKind, protocol: Option<MailProtocol>) -> (&'static str, Option<&'static str>) {
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
        (Temporary | BadRequest, None) => ("Temporary authentication failure, try again later", Some("451 4.3.0")),
        (Banned, Some(Imap)) => ("[UNAVAILABLE] Too many failed logins, try again later", None),
        (Banned, Some(Pop3)) => ("[LOGIN-DELAY] Too many failed logins, try again later", None),
        (Banned, Some(Smtp)) => ("Too many failed logins, try again later", Some("454 4.7.0")),
        (Banned, None) => ("Too many failed logins, try again later", None),
        (RelayDenied, Some(Smtp) | None) => ("Relay access denied", Some("550 5.7.1")),
        (RelayDenied, Some(Imap | Pop3)) => refusal_text(InvalidCredentials, protocol),
        (BadRequest, Some(_)) => refusal_text(Temporary, protocol),
    }
}

/// Whether `value` can be sent as a reply header value: nginx trims edge spaces and cannot
/// carry CR, LF or NUL (protocol.md §2.3, §2.7).
pub fn is_sendable_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.first() != Some(&b' ')
        && value.last() != Some(&b' ')
        && !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// Renders the reply nginx reads. Always `HTTP/1.0 200 OK`, always an `Auth-Status`, never
/// `WAIT`, always below [`MAX_REPLY_BYTES`].
pub fn render_reply(verdict: &Verdict, protocol: Option<MailProtocol>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.0 200 OK\r\n");
    match verdict {
        Verdict::Accept(accept) => {
            out.extend_from_slice(b"Auth-Status: OK\r\nAuth-Server: ");
            // Display of IpAddr gives a bare IPv6 literal, which is what nginx wants.
            out.extend_from_slice(accept.server.to_string().as_bytes());
            out.extend_from_slice(b"\r\nAuth-Port: ");
            out.extend_from_slice(accept.port.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            if let Some(pass) = &accept.pass
                && pass.len() <= MAX_ECHOED_PASSWORD
                && is_sendable_value(pass)
            {
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
                out.extend_from_slice(wait.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests;
