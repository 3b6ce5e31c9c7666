//! Requests as nginx sends them, one exchange per connection, and what the replies say.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Escapes like nginx's `NGX_ESCAPE_MAIL_AUTH`: controls, space and `%` become `%XX`.
pub fn nginx_escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        if b <= 0x20 || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// An auth request as nginx sends it for a password login.
pub fn plain_request(protocol: &str, user: &[u8], pass: &[u8], client_ip: &str, attempt: u32) -> Vec<u8> {
    let mut req = b"GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: ".to_vec();
    req.extend_from_slice(&nginx_escape(user));
    req.extend_from_slice(b"\r\nAuth-Pass: ");
    req.extend_from_slice(&nginx_escape(pass));
    req.extend_from_slice(
        format!("\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: {attempt}\r\nClient-IP: {client_ip}\r\n")
            .as_bytes(),
    );
    if protocol == "smtp" {
        req.extend_from_slice(b"Client-Host: [UNAVAILABLE]\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// A POP3 APOP login with a (wrong) digest.
pub fn apop_request(user: &str, client_ip: &str) -> Vec<u8> {
    format!(
        "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: apop\r\nAuth-User: {user}\r\n\
         Auth-Pass: 00000000000000000000000000000000\r\nAuth-Salt: <1.2@mail>\r\nAuth-Protocol: pop3\r\n\
         Auth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` on a new connection and reads the reply until the server closes.
pub fn ask(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    exchange(TcpStream::connect(addr).expect("connect to mailauthd"), request)
}

/// Writes `request` on `stream` and reads until the server closes (30 s at most).
pub(super) fn exchange<S: Read + Write + Timeout>(mut stream: S, request: &[u8]) -> Vec<u8> {
    stream.read_timeout(Duration::from_secs(30));
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    reply
}

/// A stream whose reads can time out.
pub(super) trait Timeout {
    /// Sets the read timeout.
    fn read_timeout(&self, limit: Duration);
}

impl Timeout for TcpStream {
    fn read_timeout(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).expect("timeout");
    }
}

impl Timeout for std::os::unix::net::UnixStream {
    fn read_timeout(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).expect("timeout");
    }
}

/// The value of header `name` in a reply (bytes or text), if present.
pub fn header<R: AsRef<[u8]> + ?Sized>(reply: &R, name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(reply.as_ref());
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// `Auth-Status: OK`.
pub fn is_accepted<R: AsRef<[u8]> + ?Sized>(reply: &R) -> bool {
    header(reply, "Auth-Status").as_deref() == Some("OK")
}

/// Refused as a wrong login, not as a temporary failure.
pub fn is_invalid<R: AsRef<[u8]> + ?Sized>(reply: &R) -> bool {
    header(reply, "Auth-Status").is_some_and(|s| s.contains("Invalid login or password"))
}

/// A bcrypt hash at the lowest cost, for fast tests.
pub fn bcrypt4(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// `GET path` over HTTP/1.0 (the admin listener); returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = ask(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    let reply = String::from_utf8(reply).expect("utf-8 reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}
