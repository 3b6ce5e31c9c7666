//! Request bytes → [`AuthRequest`]: finding the end of the header block, the request line,
//! nginx's %-escaping and one typed field per header.

use super::{AuthRequest, MAX_EXTRA_HEADER_BYTES, MAX_EXTRA_HEADERS, ProtocolError, ProxyInfo, TlsInfo};
use crate::login::{AuthMethod, ClientAddr, MailProtocol};

use zeroize::Zeroizing;

/// Returns the length of the header block (including the closing blank line) once `buf`
/// holds a complete one; accepts CRLF and bare-LF line ends. For a buffer that grows: `resume` is where the first
/// incomplete line starts, kept between calls so that every byte is scanned once.
pub(crate) fn find_header_end(buf: &[u8], resume: &mut usize) -> Option<usize> {
    let mut start = (*resume).min(buf.len());
    while let Some(pos) = memchr::memchr(b'\n', &buf[start..]) {
        let end = start + pos + 1;
        if matches!(&buf[start..end], b"\n" | b"\r\n") {
            return Some(end);
        }
        start = end;
    }
    *resume = start;
    None
}

/// Parses one complete header block (as delimited by [`find_header_end`]).
pub(crate) fn parse_request(block: &[u8]) -> Result<AuthRequest, ProtocolError> {
    let mut lines = header_lines(block);
    let request_line = lines.next().ok_or(ProtocolError::BadRequestLine)?;
    let uri = parse_request_line(request_line)?;

    let mut builder = Builder::default();
    for (index, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        let (name, value) = split_header(line).ok_or(ProtocolError::BadHeaderLine { line: index + 2 })?;
        builder.set(name, value)?;
    }
    builder.finish(uri)
}

/// The lines of a header block without their line ends, from the request line on. (Found
/// with `memchr`, which looks at several bytes at once: this runs over every request.)
fn header_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(block);
    std::iter::from_fn(move || {
        let text = rest?;
        let line = match memchr::memchr(b'\n', text) {
            Some(end) => {
                rest = Some(&text[end + 1..]);
                &text[..end]
            }
            None => {
                rest = None;
                text
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
    .skip_while(|l| l.is_empty())
}

/// Splits `Name: value` into the name (a token of letters, digits, `-` and `_`) and the
/// value without its edge spaces.
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    let name = &line[..colon];
    let is_token = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    is_token.then(|| (name, trim_spaces(&line[colon + 1..])))
}

/// The mail protocol of a request that could not be parsed, when its one `Auth-Protocol`
/// line can still be read: so that the temporary failure it gets carries an SMTP reply code
/// only for SMTP (protocol.md §2.6).
pub(crate) fn protocol_hint(block: &[u8]) -> Option<MailProtocol> {
    let mut found = None;
    for line in header_lines(block).skip(1).take_while(|l| !l.is_empty()) {
        if let Some((name, value)) = split_header(line)
            && name.eq_ignore_ascii_case(b"Auth-Protocol")
        {
            if found.is_some() {
                // Two of them: neither can be trusted.
                return None;
            }
            found = Some(std::str::from_utf8(value).ok().and_then(MailProtocol::parse)?);
        }
    }
    found
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
pub(crate) fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
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

/// The headers nginx itself sends, each at most once (protocol.md §1.3). `Host` is not one:
/// an `auth_http_header Host ...` line makes nginx send a second one, legitimately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Method,
    Protocol,
    User,
    Pass,
    Salt,
    LoginAttempt,
    ClientIp,
    ClientHost,
    SmtpHelo,
    SmtpFrom,
    SmtpTo,
    Ssl,
    SslProtocol,
    SslCipher,
    SslVerify,
    SslSubject,
    SslIssuer,
    SslSerial,
    SslFingerprint,
    SslCert,
    ProxyAddr,
    ProxyPort,
    ProxyServerAddr,
    ProxyServerPort,
}

/// Each field, in the order of [`Field`], with the name nginx writes it with; names are
/// matched case-insensitively ([`field`]).
const FIELDS: [(&str, Field); 24] = [
    ("Auth-Method", Field::Method),
    ("Auth-Protocol", Field::Protocol),
    ("Auth-User", Field::User),
    ("Auth-Pass", Field::Pass),
    ("Auth-Salt", Field::Salt),
    ("Auth-Login-Attempt", Field::LoginAttempt),
    ("Client-IP", Field::ClientIp),
    ("Client-Host", Field::ClientHost),
    ("Auth-SMTP-Helo", Field::SmtpHelo),
    ("Auth-SMTP-From", Field::SmtpFrom),
    ("Auth-SMTP-To", Field::SmtpTo),
    ("Auth-SSL", Field::Ssl),
    ("Auth-SSL-Protocol", Field::SslProtocol),
    ("Auth-SSL-Cipher", Field::SslCipher),
    ("Auth-SSL-Verify", Field::SslVerify),
    ("Auth-SSL-Subject", Field::SslSubject),
    ("Auth-SSL-Issuer", Field::SslIssuer),
    ("Auth-SSL-Serial", Field::SslSerial),
    ("Auth-SSL-Fingerprint", Field::SslFingerprint),
    ("Auth-SSL-Cert", Field::SslCert),
    ("Proxy-Protocol-Addr", Field::ProxyAddr),
    ("Proxy-Protocol-Port", Field::ProxyPort),
    ("Proxy-Protocol-Server-Addr", Field::ProxyServerAddr),
    ("Proxy-Protocol-Server-Port", Field::ProxyServerPort),
];

/// The longest name in [`FIELDS`].
const LONGEST_FIELD_NAME: usize = "Proxy-Protocol-Server-Addr".len();

/// The field a header name stands for, and the name as nginx writes it. Every header of
/// every request is looked up here: the name is lower-cased once and matched by length and
/// bytes, rather than compared case-insensitively with each name in turn.
fn field(name: &[u8]) -> Option<(&'static str, Field)> {
    let mut lower = [0u8; LONGEST_FIELD_NAME];
    let lower = lower.get_mut(..name.len())?;
    for (l, b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    let field = match &*lower {
        b"auth-method" => Field::Method,
        b"auth-protocol" => Field::Protocol,
        b"auth-user" => Field::User,
        b"auth-pass" => Field::Pass,
        b"auth-salt" => Field::Salt,
        b"auth-login-attempt" => Field::LoginAttempt,
        b"client-ip" => Field::ClientIp,
        b"client-host" => Field::ClientHost,
        b"auth-smtp-helo" => Field::SmtpHelo,
        b"auth-smtp-from" => Field::SmtpFrom,
        b"auth-smtp-to" => Field::SmtpTo,
        b"auth-ssl" => Field::Ssl,
        b"auth-ssl-protocol" => Field::SslProtocol,
        b"auth-ssl-cipher" => Field::SslCipher,
        b"auth-ssl-verify" => Field::SslVerify,
        b"auth-ssl-subject" => Field::SslSubject,
        b"auth-ssl-issuer" => Field::SslIssuer,
        b"auth-ssl-serial" => Field::SslSerial,
        b"auth-ssl-fingerprint" => Field::SslFingerprint,
        b"auth-ssl-cert" => Field::SslCert,
        b"proxy-protocol-addr" => Field::ProxyAddr,
        b"proxy-protocol-port" => Field::ProxyPort,
        b"proxy-protocol-server-addr" => Field::ProxyServerAddr,
        b"proxy-protocol-server-port" => Field::ProxyServerPort,
        _ => return None,
    };
    Some(FIELDS[field as usize])
}

/// Accumulates one request's headers. Borrows the block, so `Auth-User` and `Auth-Pass` are
/// decoded once, in [`Builder::finish`], only when the method uses them.
#[derive(Default)]
struct Builder<'a> {
    /// The fields seen so far, one bit per [`Field`].
    seen: u32,
    method: Option<AuthMethod>,
    protocol: Option<MailProtocol>,
    user: Option<&'a [u8]>,
    pass: Option<&'a [u8]>,
    salt: Option<Vec<u8>>,
    login_attempt: Option<u32>,
    client: Option<ClientAddr>,
    client_host: Option<Vec<u8>>,
    smtp_helo: Option<Vec<u8>>,
    smtp_from: Option<Vec<u8>>,
    smtp_to: Option<Vec<u8>>,
    tls: Option<Box<TlsInfo>>,
    proxy: Option<Box<ProxyInfo>>,
    extra_headers: Vec<(String, Vec<u8>)>,
    /// Bytes held by `extra_headers` (names and values).
    extra_bytes: usize,
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

fn decoded(value: &[u8], header: &'static str) -> Result<Vec<u8>, ProtocolError> {
    percent_decode(value).ok_or(ProtocolError::BadValue {
        header,
        reason: "a % not followed by two hex digits",
    })
}

impl<'a> Builder<'a> {
    fn set(&mut self, name: &'a [u8], value: &'a [u8]) -> Result<(), ProtocolError> {
        // nginx always sends these names in this capitalisation; matching case-insensitively
        // costs nothing and makes hand-written requests (curl, tests) work too.
        let Some((header, field)) = field(name) else {
            // `Host` tells nothing (nginx sends the `auth_http` URL's host).
            if !name.eq_ignore_ascii_case(b"Host") {
                self.keep_extra(name, value);
            }
            return Ok(());
        };
        // nginx sends each of these once. A second copy is injected (a PTR answer with CRLF
        // in `Client-Host`, CVE-2026-28753) or garbled; letting either copy win would let the
        // injected one decide.
        let bit = 1u32 << field as u32;
        if self.seen & bit != 0 {
            return Err(ProtocolError::RepeatedHeader(header));
        }
        self.seen |= bit;
        match field {
            Field::Method => {
                let v = ascii(value, header)?;
                self.method = Some(AuthMethod::parse(v).ok_or(ProtocolError::BadValue {
                    header,
                    reason: "not plain, apop, cram-md5, external, none, xoauth2 or oauthbearer",
                })?);
            }
            Field::Protocol => {
                let v = ascii(value, header)?;
                self.protocol = Some(MailProtocol::parse(v).ok_or(ProtocolError::BadValue {
                    header,
                    reason: "not imap, pop3 or smtp",
                })?);
            }
            Field::User => self.user = Some(value),
            Field::Pass => self.pass = Some(value),
            Field::Salt => self.salt = Some(value.to_vec()),
            Field::LoginAttempt => {
                let v = ascii(value, header)?;
                self.login_attempt = Some(v.parse().map_err(|_| ProtocolError::BadValue {
                    header,
                    reason: "not a decimal number",
                })?);
            }
            Field::ClientIp => self.client = Some(client_addr(value)?),
            Field::ClientHost => self.client_host = Some(client_host(value)),
            Field::SmtpHelo => self.smtp_helo = Some(value.to_vec()),
            Field::SmtpFrom => self.smtp_from = Some(value.to_vec()),
            Field::SmtpTo => self.smtp_to = Some(value.to_vec()),
            Field::Ssl => {
                if value == b"on" {
                    self.tls_mut().on = true;
                }
            }
            Field::SslProtocol => self.tls_mut().protocol = Some(text(value)),
            Field::SslCipher => self.tls_mut().cipher = Some(text(value)),
            Field::SslVerify => self.tls_mut().verify = Some(text(value)),
            Field::SslSubject => self.tls_mut().subject = Some(text(value)),
            Field::SslIssuer => self.tls_mut().issuer = Some(text(value)),
            Field::SslSerial => self.tls_mut().serial = Some(text(value)),
            Field::SslFingerprint => self.tls_mut().fingerprint = Some(text(value)),
            Field::SslCert => self.tls_mut().cert = Some(decoded(value, header)?),
            Field::ProxyAddr => self.proxy_mut().addr = Some(text(value)),
            Field::ProxyPort => self.proxy_mut().port = port(value, header)?,
            Field::ProxyServerAddr => self.proxy_mut().server_addr = Some(text(value)),
            Field::ProxyServerPort => self.proxy_mut().server_port = port(value, header)?,
        }
        Ok(())
    }

    /// Keeps an `auth_http_header` line, within [`MAX_EXTRA_HEADERS`] and
    /// [`MAX_EXTRA_HEADER_BYTES`]: nginx sends the few an operator configured, so a request
    /// of thousands of tiny headers is bounded here rather than held line by line.
    fn keep_extra(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len();
        if self.extra_headers.len() >= MAX_EXTRA_HEADERS || self.extra_bytes + size > MAX_EXTRA_HEADER_BYTES {
            return;
        }
        self.extra_bytes += size;
        // Header names are ASCII tokens (checked by `split_header`).
        self.extra_headers.push((text(name), value.to_vec()));
    }

    fn tls_mut(&mut self) -> &mut TlsInfo {
        self.tls.get_or_insert_with(Box::default)
    }

    fn proxy_mut(&mut self) -> &mut ProxyInfo {
        self.proxy.get_or_insert_with(Box::default)
    }

    fn finish(self, uri: String) -> Result<AuthRequest, ProtocolError> {
        let method = self.method.ok_or(ProtocolError::MissingHeader("Auth-Method"))?;
        let protocol = self.protocol.ok_or(ProtocolError::MissingHeader("Auth-Protocol"))?;
        // With `none`, unpatched nginx may fill Auth-User/Auth-Pass with stale credentials
        // or leaked worker memory (CVE-2025-53859): they are not even decoded, so nothing
        // can use or log them.
        let (user, pass) = if method == AuthMethod::None {
            (Vec::new(), Zeroizing::default())
        } else {
            let user = self.user.map(|u| decoded(u, "Auth-User")).transpose()?;
            let pass = self.pass.map(|p| decoded(p, "Auth-Pass")).transpose()?;
            (user.unwrap_or_default(), Zeroizing::new(pass.unwrap_or_default()))
        };
        Ok(AuthRequest {
            uri,
            method,
            protocol,
            user,
            pass,
            salt: self.salt,
            login_attempt: self.login_attempt.unwrap_or(1),
            client: self.client,
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

/// `Client-IP`: an address, normalised by [`ClientAddr::from_ip`], or nginx's `unix:` for a
/// unix-socket mail listener.
fn client_addr(value: &[u8]) -> Result<ClientAddr, ProtocolError> {
    if value == b"unix:" {
        return Ok(ClientAddr::Unix);
    }
    let v = ascii(value, "Client-IP")?;
    v.parse().map(ClientAddr::from_ip).map_err(|_| ProtocolError::BadValue {
        header: "Client-IP",
        reason: "not an IP address or unix:",
    })
}

/// nginx's "the name could not be looked up now".
const TEMPUNAVAIL: &[u8] = b"[TEMPUNAVAIL]";

/// `Client-Host`: a PTR name of RFC 1034 characters (letters, digits, `-`, `.`; at most
/// 255 bytes) or one of nginx's `[UNAVAILABLE]` / `[TEMPUNAVAIL]`. Anything else is taken as
/// `[TEMPUNAVAIL]`, as nginx ≥ 1.29.7 / 1.28.3 sends it (CVE-2026-28753).
fn client_host(value: &[u8]) -> Vec<u8> {
    let is_name = !value.is_empty()
        && value.len() <= 255
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if is_name || value == b"[UNAVAILABLE]" || value == TEMPUNAVAIL {
        value.to_vec()
    } else {
        TEMPUNAVAIL.to_vec()
    }
}

fn port(value: &[u8], header: &'static str) -> Result<Option<u16>, ProtocolError> {
    let v = ascii(value, header)?;
    v.parse().map(Some).map_err(|_| ProtocolError::BadValue {
        header,
        reason: "not a port number",
    })
}

#[cfg(test)]
mod tests {
    use super::{FIELDS, field};

    #[test]
    fn every_field_is_found_by_its_name_in_any_case_and_nothing_else_is() {
        for (i, (name, f)) in FIELDS.into_iter().enumerate() {
            assert_eq!(f as usize, i, "{name} is out of order");
            for spelled in [name.to_owned(), name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
                assert_eq!(field(spelled.as_bytes()), Some((name, f)), "{spelled}");
            }
        }
        for other in [
            &b"Host"[..],
            b"",
            b"Auth-Use",
            b"Auth-Users",
            b"Auth-SSL-Certificate",
            b"Proxy-Protocol-Server-Addr-",
            b"X-Auth-User",
        ] {
            assert_eq!(field(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
