use std::net::IpAddr;

use super::*;
use crate::login::{AuthMethod, ClientAddr, MailProtocol};

/// The length of a complete header block in `buf`.
fn header_block_len(buf: &[u8]) -> Option<usize> {
    find_header_end(buf, &mut 0)
}

fn parse(bytes: &[u8]) -> AuthRequest {
    let len = header_block_len(bytes).expect("complete header block");
    parse_request(&bytes[..len]).expect("valid request")
}

#[test]
fn v2_literal_password_with_del_and_crlf_decodes_to_bytes() {
    let req = parse(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: \xC3\xBC@x\r\nAuth-Pass: t%09ab%0D%0Ax\x7F+=&?#\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(req.user, "ü@x".as_bytes());
    assert_eq!(req.pass.as_slice(), b"t\tab\r\nx\x7F+=&?#");
    assert_eq!(req.method, AuthMethod::Plain);
    assert_eq!(req.protocol, MailProtocol::Imap);
    assert_eq!(req.uri, "/ok");
}

#[test]
fn plus_is_not_a_space_and_escaped_percent_stays_literal() {
    // V4: the user typed a literal `%20`, nginx sent `%2520`.
    let req = parse(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user+tag@x\r\nAuth-Pass: p%2520%20w+=\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\n\r\n");
    assert_eq!(req.user, b"user+tag@x");
    assert_eq!(req.pass.as_slice(), b"p%20 w+=");
    assert_eq!(req.client_host.as_deref(), Some(&b"[UNAVAILABLE]"[..]));
}

#[test]
fn lf_only_lines_and_empty_values_are_accepted() {
    let req = parse(b"GET / HTTP/1.0\nHost: localhost\nAuth-Method: none\nAuth-User: \nAuth-Pass: \nAuth-Protocol: smtp\nAuth-Login-Attempt: 1\nClient-IP: ::1\nAuth-SMTP-Helo: \nAuth-SMTP-From: MAIL FROM:<a%b@x>  SIZE=1\nAuth-SMTP-To: RCPT TO:<c@x>\n\n");
    assert_eq!(req.method, AuthMethod::None);
    assert!(req.user.is_empty());
    assert_eq!(req.client, Some(ClientAddr::Ip("::1".parse().unwrap())));
    // Auth-SMTP-* are not escaped by nginx: `%` stays literal.
    assert_eq!(req.smtp_from.as_deref(), Some(&b"MAIL FROM:<a%b@x>  SIZE=1"[..]));
    assert_eq!(req.smtp_helo.as_deref(), Some(&b""[..]));
}

#[test]
fn tls_proxy_and_custom_headers_are_kept() {
    let req = parse(b"GET /mail/auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: u\r\nAuth-Pass: p\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 2\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Verify: FAILED:self-signed certificate\r\nAuth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0A\r\nProxy-Protocol-Addr: 192.0.2.1\r\nProxy-Protocol-Port: 123\r\nX-Auth-Key: secret string\r\n\r\n");
    let tls = req.tls.as_ref().unwrap();
    assert_eq!(tls.verify.as_deref(), Some("FAILED:self-signed certificate"));
    assert_eq!(tls.cert.as_deref(), Some(&b"-----BEGIN CERTIFICATE-----\n"[..]));
    let proxy = req.proxy.as_ref().unwrap();
    assert_eq!(proxy.port, Some(123));
    assert_eq!(req.login_attempt, 2);
    assert_eq!(
        req.extra_headers,
        vec![("X-Auth-Key".to_owned(), b"secret string".to_vec())]
    );
}

#[test]
fn header_block_len_needs_the_blank_line() {
    assert_eq!(header_block_len(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
    assert_eq!(header_block_len(b"GET / HTTP/1.0\r\n\r\nbody"), Some(18));
    assert_eq!(header_block_len(b"GET / HTTP/1.0\n\nbody"), Some(16));
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"\x00\xff garbage\r\n\r\n", ProtocolError::BadRequestLine),
        (b"GET /\r\n\r\n", ProtocolError::BadRequestLine),
        (
            b"GET / HTTP/1.0\r\nAuth-Protocol: imap\r\n\r\n",
            ProtocolError::MissingHeader("Auth-Method"),
        ),
        (
            b"GET / HTTP/1.0\r\nAuth-Method: login\r\nAuth-Protocol: imap\r\n\r\n",
            ProtocolError::BadValue {
                header: "Auth-Method",
                reason: "not plain, apop, cram-md5, external, none, xoauth2 or oauthbearer",
            },
        ),
        (
            b"GET / HTTP/1.0\r\nAuth-Method: plain\r\nAuth-Protocol: imap\r\nAuth-Pass: 100%\r\n\r\n",
            ProtocolError::BadValue {
                header: "Auth-Pass",
                reason: "a % not followed by two hex digits",
            },
        ),
        (
            b"GET / HTTP/1.0\r\nno colon here\r\n\r\n",
            ProtocolError::BadHeaderLine { line: 2 },
        ),
    ];
    for (bytes, want) in cases {
        let len = header_block_len(bytes).unwrap();
        assert_eq!(parse_request(&bytes[..len]).err().as_ref(), Some(want), "{bytes:?}");
    }
}

#[test]
fn percent_decode_reads_both_hex_cases() {
    assert_eq!(percent_decode(b"%4a%4A%2b+").unwrap(), b"JJ++");
    assert_eq!(percent_decode(b"%4"), None);
    assert_eq!(percent_decode(b"%zz"), None);
}

#[test]
fn replies_have_status_line_and_never_wait() {
    let ok = Verdict::Accept(Accept {
        server: "::1".parse().unwrap(),
        port: 143,
        pass: None,
    });
    assert_eq!(
        render_reply(&ok, Some(MailProtocol::Imap)),
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: ::1\r\nAuth-Port: 143\r\n\r\n"
    );
    let refused = Verdict::Refuse(Refusal {
        kind: RefuseKind::InvalidCredentials,
        wait: Some(3),
    });
    assert_eq!(
        render_reply(&refused, Some(MailProtocol::Smtp)),
        &b"HTTP/1.0 200 OK\r\nAuth-Status: Authentication credentials invalid\r\nAuth-Error-Code: 535 5.7.8\r\nAuth-Wait: 3\r\n\r\n"[..]
    );
}

fn assert_reply_is_well_formed(reply: &[u8]) {
    assert!(reply.len() < MAX_REPLY_BYTES, "{} bytes", reply.len());
    assert!(reply.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(reply.ends_with(b"\r\n\r\n"));
    let body = &reply[17..reply.len() - 2];
    let mut saw_status = false;
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("CRLF line end");
        assert!(!line.contains(&b'\r'));
        let colon = line.iter().position(|&b| b == b':').expect("colon");
        let (name, value) = (&line[..colon], &line[colon + 2..]);
        assert!(name[0].is_ascii_alphanumeric());
        assert!(name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'));
        assert!(can_echo_password(value), "{:?}", String::from_utf8_lossy(line));
        if name == b"Auth-Status" {
            saw_status = true;
            assert_ne!(value, b"WAIT");
        }
    }
    assert!(saw_status);
}

#[test]
fn every_reply_is_well_formed_and_the_longest_fits_in_1024_bytes() {
    let kinds = [
        RefuseKind::InvalidCredentials,
        RefuseKind::Temporary,
        RefuseKind::Banned,
        RefuseKind::RelayDenied,
        RefuseKind::BadRequest,
    ];
    let protocols = [
        None,
        Some(MailProtocol::Imap),
        Some(MailProtocol::Pop3),
        Some(MailProtocol::Smtp),
    ];
    for kind in kinds {
        for protocol in protocols {
            let verdict = Verdict::Refuse(Refusal {
                kind,
                wait: Some(u32::MAX),
            });
            assert_reply_is_well_formed(&render_reply(&verdict, protocol));
        }
    }
    // The longest success: the longest IPv6 text, a five-digit port, the longest cleartext.
    let longest = Verdict::Accept(Accept {
        server: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        port: 65535,
        pass: Some(Zeroizing::new(vec![b'x'; MAX_ECHOED_PASSWORD])),
    });
    let reply = render_reply(&longest, Some(MailProtocol::Pop3));
    assert_reply_is_well_formed(&reply);
    assert!(reply.windows(11).any(|w| w == b"Auth-Pass: "));
}

#[test]
fn unsendable_passwords_are_never_written() {
    for pass in [&b" lead"[..], b"trail ", b"cr\rlf", b"nul\0", b""] {
        let verdict = Verdict::Accept(Accept {
            server: "127.0.0.1".parse().unwrap(),
            port: 110,
            pass: Some(Zeroizing::new(pass.to_vec())),
        });
        let reply = render_reply(&verdict, Some(MailProtocol::Pop3));
        assert!(!reply.windows(9).any(|w| w == b"Auth-Pass"));
    }
}

/// V4 (protocol.md §6) with `client_ip` as its `Client-IP` and `tail` before the blank line.
fn v4_with(client_ip: &str, tail: &str) -> Vec<u8> {
    format!(
        "GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user+tag@x\r\nAuth-Pass: p%2520%20w+=\r\n\
         Auth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\nClient-Host: [UNAVAILABLE]\r\n{tail}\r\n"
    )
    .into_bytes()
}

fn parse_err(bytes: &[u8]) -> Option<ProtocolError> {
    let len = header_block_len(bytes).expect("complete header block");
    parse_request(&bytes[..len]).err()
}

#[test]
fn a_dual_stack_listener_s_mapped_address_is_the_ipv4_client() {
    // Captured from nginx 1.22.1 with `listen [::]:143 ipv6only=off;` (protocol.md §1.3).
    let req = parse(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user\r\nAuth-Pass: pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: ::ffff:192.0.2.7\r\n\r\n");
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(req.client, Some(ClientAddr::Ip(v4)));
    assert_eq!(req.client_ip(), Some(v4));
    assert_eq!(req.client.unwrap().to_string(), "192.0.2.7");
    // Upper-case hex, as a hand-written request may have it, is the same client.
    let req = parse(&v4_with("::FFFF:192.0.2.7", ""));
    assert_eq!(req.client_ip(), Some(v4));
    // Other IPv6 forms stay IPv6: `::1` and the IPv4-compatible `::192.0.2.7` are not mapped.
    for other in ["::1", "2001:db8::7", "::192.0.2.7", "64:ff9b::c000:207"] {
        let req = parse(&v4_with(other, ""));
        assert_eq!(req.client_ip(), Some(other.parse().unwrap()), "{other}");
        assert!(req.client_ip().unwrap().is_ipv6(), "{other}");
    }
}

#[test]
fn a_unix_socket_listener_s_client_has_no_address() {
    // Captured from nginx 1.22.1 with `listen unix:/path;` (protocol.md §1.3).
    let req = parse(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user\r\nAuth-Pass: pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: unix:\r\n\r\n");
    assert_eq!(req.client, Some(ClientAddr::Unix));
    assert_eq!(req.client_ip(), None);
    assert_eq!(req.client.unwrap().to_string(), "unix:");
    // Only nginx's exact form: anything else is not a client address.
    for bad in ["unix:/run/mail.sock", "UNIX:", "unix", "[::1]", "192.0.2.7:143"] {
        assert_eq!(
            parse_err(&v4_with(bad, "")),
            Some(ProtocolError::BadValue {
                header: "Client-IP",
                reason: "not an IP address or unix:",
            }),
            "{bad}"
        );
    }
}

#[test]
fn freenginx_oauth_methods_are_known() {
    for (name, method) in [
        ("xoauth2", AuthMethod::XOAuth2),
        ("oauthbearer", AuthMethod::OAuthBearer),
    ] {
        let bytes = format!(
            "GET / HTTP/1.0\r\nAuth-Method: {name}\r\nAuth-User: u\r\nAuth-Pass: token\r\nAuth-Protocol: imap\r\nClient-IP: 192.0.2.7\r\n\r\n"
        );
        let req = parse(bytes.as_bytes());
        assert_eq!(req.method, method);
        assert_eq!(req.method.as_str(), name);
    }
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        if let Some(len) = header_block_len(&bytes) {
            let _ = parse_request(&bytes[..len]);
        }
    }
}
