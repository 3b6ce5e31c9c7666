//! The vocabulary of a mail login, shared by every layer: which mail protocol, which
//! authentication method, where the client connected from. The auth_http wire module parses
//! nginx's names into these; config and sources name protocols with them without knowing
//! nginx's header format.

use std::fmt;
use std::net::IpAddr;

/// The mail protocol of the login (`Auth-Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MailProtocol {
    /// IMAP.
    Imap,
    /// POP3.
    Pop3,
    /// SMTP (submission or inbound).
    Smtp,
}

impl MailProtocol {
    /// The name nginx sends in `Auth-Protocol`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MailProtocol::Imap => "imap",
            MailProtocol::Pop3 => "pop3",
            MailProtocol::Smtp => "smtp",
        }
    }

    /// Parses an `Auth-Protocol` value.
    pub(crate) fn parse(value: &str) -> Option<MailProtocol> {
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
pub(crate) enum AuthMethod {
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
    /// SASL XOAUTH2 (freenginx only): known, not supported yet.
    XOAuth2,
    /// SASL OAUTHBEARER (RFC 7628, freenginx only): known, not supported yet.
    OAuthBearer,
}

impl AuthMethod {
    /// The name nginx sends in `Auth-Method`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Plain => "plain",
            AuthMethod::Apop => "apop",
            AuthMethod::CramMd5 => "cram-md5",
            AuthMethod::External => "external",
            AuthMethod::None => "none",
            AuthMethod::XOAuth2 => "xoauth2",
            AuthMethod::OAuthBearer => "oauthbearer",
        }
    }

    /// Parses an `Auth-Method` value.
    pub(crate) fn parse(value: &str) -> Option<AuthMethod> {
        match value {
            "plain" => Some(AuthMethod::Plain),
            "apop" => Some(AuthMethod::Apop),
            "cram-md5" => Some(AuthMethod::CramMd5),
            "external" => Some(AuthMethod::External),
            "none" => Some(AuthMethod::None),
            "xoauth2" => Some(AuthMethod::XOAuth2),
            "oauthbearer" => Some(AuthMethod::OAuthBearer),
            _ => None,
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the client connected from (`Client-IP`), normalised once where the request is
/// read, so that every rule, key and log line sees the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientAddr {
    /// A TCP client. Never an IPv4-mapped IPv6 address: a dual-stack listener's
    /// `::ffff:192.0.2.7` is stored as `192.0.2.7` (see [`ClientAddr::from_ip`]).
    Ip(IpAddr),
    /// A client of a unix-socket mail listener: nginx knows no address for it. It matches
    /// no network (`allow_nets`, `[policy] allow`) and is not counted per network.
    Unix,
}

impl ClientAddr {
    /// The client at `ip`, an IPv4-mapped IPv6 address taken as the IPv4 client it stands
    /// for (as Dovecot does).
    pub(crate) fn from_ip(ip: IpAddr) -> ClientAddr {
        ClientAddr::Ip(ip.to_canonical())
    }

    /// The client's address; `None` for a unix-socket client.
    pub(crate) fn ip(self) -> Option<IpAddr> {
        match self {
            ClientAddr::Ip(ip) => Some(ip),
            ClientAddr::Unix => None,
        }
    }
}

impl fmt::Display for ClientAddr {
    /// The address, or `unix:` as nginx writes a unix-socket client.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Ip(IpAddr::V4(v4)) => f.write_str(Ipv4Text::new(*v4).as_str()),
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Unix => f.write_str("unix:"),
        }
    }
}

/// An IPv4 address in dotted-decimal text, written without the formatting machinery:
/// every login writes two or three (its network key, its log line), and `Display` for
/// `Ipv4Addr` costs several times this. The text is the same (a test compares them).
pub(crate) struct Ipv4Text {
    buf: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    /// The text of `ip`.
    pub(crate) fn new(ip: std::net::Ipv4Addr) -> Ipv4Text {
        let mut text = Ipv4Text { buf: [0; 15], len: 0 };
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            if octet >= 100 {
                text.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                text.push(b'0' + octet / 10 % 10);
            }
            text.push(b'0' + octet % 10);
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and dots were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// The text of an IP address (`Display`'s), IPv4 the short way.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => Ipv4Text::new(v4).as_str().to_owned(),
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// A login name as it may appear in a message or a log line: control bytes escaped, so a
/// name cannot forge a line or a field.
pub(crate) fn printable(name: &[u8]) -> String {
    String::from_utf8_lossy(name).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{ClientAddr, Ipv4Text, ip_text};

    #[test]
    fn ipv4_text_is_displays() {
        let mut octets = vec![0u8, 1, 9, 10, 11, 99, 100, 101, 109, 110, 199, 200, 249, 250, 255];
        octets.extend((0..=255).step_by(7));
        for &a in &octets {
            for &b in &octets {
                let ip = Ipv4Addr::new(a, b, b.wrapping_add(a), 255 - a);
                assert_eq!(Ipv4Text::new(ip).as_str(), ip.to_string());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        assert_eq!(ip_text(v6), "2001:db8::7");
        assert_eq!(ClientAddr::Ip(v6).to_string(), "2001:db8::7");
        assert_eq!(
            ClientAddr::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))).to_string(),
            "203.0.113.9"
        );
        assert_eq!(ClientAddr::Unix.to_string(), "unix:");
    }
}
