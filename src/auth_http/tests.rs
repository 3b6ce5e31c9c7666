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
        user: None,
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
        user: Some(vec![b'u'; MAX_ECHOED_USER]),
        pass: Some(Zeroizing::new(vec![b'x'; MAX_ECHOED_PASSWORD])),
    });
    let reply = render_reply(&longest, Some(MailProtocol::Pop3));
    assert_reply_is_well_formed(&reply);
    assert!(reply.windows(11).any(|w| w == b"Auth-Pass: "));
    assert!(reply.windows(11).any(|w| w == b"Auth-User: "));
}

#[test]
fn unsendable_passwords_are_never_written() {
    for pass in [&b" lead"[..], b"trail ", b"cr\rlf", b"nul\0", b""] {
        let verdict = Verdict::Accept(Accept {
            server: "127.0.0.1".parse().unwrap(),
            port: 110,
            user: None,
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

/// Every header nginx sends once, with a value it could send.
const ONCE: [(&str, &str); 24] = [
    ("Auth-Method", "plain"),
    ("Auth-User", "bob"),
    ("Auth-Pass", "x"),
    ("Auth-Salt", "<1.2@x>"),
    ("Auth-Protocol", "smtp"),
    ("Auth-Login-Attempt", "1"),
    ("Client-IP", "192.0.2.66"),
    ("Client-Host", "mx.example.net"),
    ("Auth-SMTP-Helo", "x"),
    ("Auth-SMTP-From", "MAIL FROM:<a@x>"),
    ("Auth-SMTP-To", "RCPT TO:<b@x>"),
    ("Auth-SSL", "on"),
    ("Auth-SSL-Protocol", "TLSv1.3"),
    ("Auth-SSL-Cipher", "TLS_AES_256_GCM_SHA384"),
    ("Auth-SSL-Verify", "NONE"),
    ("Auth-SSL-Subject", "CN=a"),
    ("Auth-SSL-Issuer", "CN=a"),
    ("Auth-SSL-Serial", "01"),
    ("Auth-SSL-Fingerprint", "00"),
    ("Auth-SSL-Cert", "x"),
    ("Proxy-Protocol-Addr", "192.0.2.1"),
    ("Proxy-Protocol-Port", "123"),
    ("Proxy-Protocol-Server-Addr", "192.0.2.2"),
    ("Proxy-Protocol-Server-Port", "5678"),
];

#[test]
fn a_header_nginx_sends_once_never_comes_twice() {
    for (name, value) in ONCE {
        let line = format!("{name}: {value}\r\n");
        // Once is fine (V4 already carries some of them: those are the repeats).
        let once = v4_with("127.0.0.1", &line);
        let sent_by_v4 = [
            "Auth-Method",
            "Auth-User",
            "Auth-Pass",
            "Auth-Protocol",
            "Auth-Login-Attempt",
            "Client-IP",
            "Client-Host",
        ];
        let want = Some(ProtocolError::RepeatedHeader(name));
        if sent_by_v4.contains(&name) {
            assert_eq!(parse_err(&once), want, "{name}");
        } else {
            assert_eq!(parse_err(&once), None, "{name}");
            assert_eq!(
                parse_err(&v4_with("127.0.0.1", &format!("{line}{line}"))),
                want,
                "{name}"
            );
        }
        // In any capitalisation.
        let lower = format!("{}: {value}\r\n{line}", name.to_ascii_lowercase());
        assert_eq!(parse_err(&v4_with("127.0.0.1", &lower)), want, "{name}");
    }
}

#[test]
fn a_ptr_name_that_injects_a_second_user_is_refused_not_obeyed() {
    // CVE-2026-28753: a PTR answer `evil.example\r\nAuth-User: bob` on unpatched nginx.
    let bytes = b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice\r\nAuth-Pass: pw\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\nClient-Host: evil.example\r\nAuth-User: bob\r\n\r\n";
    let err = parse_err(bytes).expect("refused");
    assert_eq!(err, ProtocolError::RepeatedHeader("Auth-User"));
    assert_eq!(err.to_string(), "header Auth-User is repeated");
    // The refusal is still an SMTP one: its one Auth-Protocol line is readable.
    assert_eq!(protocol_hint(bytes), Some(MailProtocol::Smtp));
    // Two different protocols: neither is believed.
    let two = v4_with("127.0.0.1", "Auth-Protocol: imap\r\n");
    assert_eq!(protocol_hint(&two), None);
    assert_eq!(
        protocol_hint(b"GET / HTTP/1.0\r\nAuth-Protocol: pop3\r\nAuth-Method: x\r\n\r\n"),
        Some(MailProtocol::Pop3)
    );
    assert_eq!(protocol_hint(b"GET / HTTP/1.0\r\nAuth-Protocol: nntp\r\n\r\n"), None);
}

#[test]
fn headers_an_operator_may_repeat_are_not_refused() {
    // `auth_http_header` lines are the operator's; `Host` may be one of them.
    let req = parse(&v4_with(
        "127.0.0.1",
        "Host: auth.example\r\nX-Type: a\r\nX-Type: b\r\n",
    ));
    assert_eq!(
        req.extra_headers,
        vec![
            ("X-Type".to_owned(), b"a".to_vec()),
            ("X-Type".to_owned(), b"b".to_vec())
        ]
    );
}

#[test]
fn a_client_host_that_is_not_a_host_name_is_tempunavail() {
    let host = |value: &[u8]| {
        let mut bytes = v4_with("127.0.0.1", "");
        let at = bytes.windows(13).position(|w| w == b"[UNAVAILABLE]").unwrap();
        bytes.splice(at..at + 13, value.iter().copied());
        parse(&bytes).client_host.unwrap()
    };
    for kept in [
        &b"[UNAVAILABLE]"[..],
        b"[TEMPUNAVAIL]",
        b"mx-1.Example.org",
        b"a",
        b"192-0-2-7.example.net.",
    ] {
        assert_eq!(host(kept), kept, "{}", String::from_utf8_lossy(kept));
    }
    let too_long = vec![b'a'; 256];
    for bad in [
        &b"evil_host.example"[..],
        b"a b.example",
        b"x\x7f.example",
        b"\xc3\xbc.example",
        b"[UNAVAILABLE",
        b"[unavailable]",
        b"evil.example;Auth-User:bob",
        &too_long,
    ] {
        assert_eq!(host(bad), b"[TEMPUNAVAIL]", "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn none_never_carries_the_user_or_password_it_was_sent() {
    // V11: nginx 1.22.1 sends stale credentials with `none` (protocol.md §1.8).
    let req = parse(b"GET /fail HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: none\r\nAuth-User: stale\r\nAuth-Pass: pw\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 2\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: c\r\nAuth-SMTP-From: MAIL FROM:<a@x>\r\nAuth-SMTP-To: RCPT TO:<b@y>\r\n\r\n");
    assert_eq!(req.method, AuthMethod::None);
    assert!(req.user.is_empty());
    assert!(req.pass.is_empty());
    assert!(!format!("{req:?}").contains("stale"));
    assert_eq!(req.smtp_to.as_deref(), Some(&b"RCPT TO:<b@y>"[..]));
    // Leaked memory (CVE-2025-53859) is not even decoded: a bad escape there is no error.
    let leaked =
        b"GET / HTTP/1.0\r\nAuth-Method: none\r\nAuth-User: \xff%z\r\nAuth-Pass: %\r\nAuth-Protocol: smtp\r\n\r\n";
    let req = parse(leaked);
    assert!(req.user.is_empty() && req.pass.is_empty());
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

#[test]
fn auth_error_code_is_sent_only_in_smtp_replies() {
    let kinds = [
        RefuseKind::InvalidCredentials,
        RefuseKind::Temporary,
        RefuseKind::Banned,
        RefuseKind::RelayDenied,
        RefuseKind::BadRequest,
    ];
    let has_code = |reply: &[u8]| reply.windows(16).any(|w| w == b"Auth-Error-Code:");
    for kind in kinds {
        let verdict = Verdict::Refuse(Refusal { kind, wait: None });
        for protocol in [None, Some(MailProtocol::Imap), Some(MailProtocol::Pop3)] {
            assert!(!has_code(&render_reply(&verdict, protocol)), "{kind:?} {protocol:?}");
        }
        assert!(has_code(&render_reply(&verdict, Some(MailProtocol::Smtp))), "{kind:?}");
    }
    // A malformed IMAP request gets IMAP's temporary text, with no code.
    let bad = Verdict::Refuse(Refusal {
        kind: RefuseKind::BadRequest,
        wait: None,
    });
    assert_eq!(
        render_reply(&bad, Some(MailProtocol::Imap)),
        &b"HTTP/1.0 200 OK\r\nAuth-Status: [UNAVAILABLE] Temporary authentication failure, try again later\r\n\r\n"[..]
    );
}

#[test]
fn a_60_kb_request_of_tiny_headers_keeps_a_bounded_few() {
    // 12,000 five-byte header lines: 60 KB, under MAX_REQUEST_BYTES.
    let tiny = "X:1\r\n".repeat(12_000);
    let bytes = v4_with("127.0.0.1", &tiny);
    assert!(
        bytes.len() > 60_000 && bytes.len() < MAX_REQUEST_BYTES,
        "{}",
        bytes.len()
    );
    let req = parse(&bytes);
    assert_eq!(req.user, b"user+tag@x");
    assert_eq!(req.extra_headers.len(), MAX_EXTRA_HEADERS);
    assert!(req.extra_headers.capacity() <= MAX_EXTRA_HEADERS);
    // Fewer, longer ones: bounded by bytes instead.
    let long = format!("X-Long: {}\r\n", "v".repeat(1000)).repeat(50);
    let req = parse(&v4_with("127.0.0.1", &long));
    let held: usize = req.extra_headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(held <= MAX_EXTRA_HEADER_BYTES, "{held}");
    assert_eq!(req.extra_headers.len(), MAX_EXTRA_HEADER_BYTES / 1006);
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        if let Some(len) = header_block_len(&bytes) {
            let _ = parse_request(&bytes[..len]);
        }
    }
}
