//! Request bytes → [`AuthRequest`]: finding the end of the header block, the request line,
//! nginx's %-escaping and one typed field per header.

use super::{AuthRequest, ProtocolError, ProxyInfo, TlsInfo};
use crate::login::{AuthMethod, ClientAddr, MailProtocol};

use zeroize::Zeroizing;

/// Returns the length of the header block (including the closing blank line) once `buf`
/// holds a complete one; accepts CRLF and bare-LF line ends. For a buffer that grows: `resume` is where the first
/// incomplete line starts, kept between calls so that every byte is scanned once.
pub(crate) fn find_header_end(buf: &[u8], resume: &mut usize) -> Option<usize> {
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
pub(crate) fn parse_request(block: &[u8]) -> Result<AuthRequest, ProtocolError> {
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

#[derive(Default)]
struct Builder {
    method: Option<AuthMethod>,
    protocol: Option<MailProtocol>,
    user: Option<Vec<u8>>,
    pass: Option<Zeroizing<Vec<u8>>>,
    salt: Option<Vec<u8>>,
    login_attempt: Option<u32>,
    client: Option<ClientAddr>,
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
                    reason: "not plain, apop, cram-md5, external, none, xoauth2 or oauthbearer",
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
            "client-ip" => self.client = Some(client_addr(value)?),
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

fn port(value: &[u8], header: &'static str) -> Result<Option<u16>, ProtocolError> {
    let v = ascii(value, header)?;
    v.parse().map(Some).map_err(|_| ProtocolError::BadValue {
        header,
        reason: "not a port number",
    })
}
