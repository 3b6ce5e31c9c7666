//! The request vectors V1–V14 of protocol.md §6, captured from a real nginx, replayed byte
//! for byte against the running daemon.

use std::sync::OnceLock;

use crate::common::{Daemon, header};

const OK_IMAP: &[u8] = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\n\r\n";
const OK_POP3: &[u8] = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1110\r\n\r\n";
const OK_SMTP: &[u8] = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1025\r\n\r\n";

fn bcrypt(pass: &[u8]) -> String {
    bcrypt::hash(pass, 4).expect("bcrypt")
}

/// One daemon for all vectors, shared for the whole run (see [`Daemon::shared`]). The same
/// login (`a b@x`) has a different password per protocol in the vectors, so each protocol
/// gets its own users file (`protocols = [...]`).
pub(crate) fn daemon() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    Daemon::shared(&DAEMON, || {
        let dir = tempfile::tempdir().expect("temp dir");
        let imap = [
            format!("a b@x:{}", bcrypt(b"p%ss:word")),
            format!("\u{fc}@x:{}", bcrypt(b"t\tab\r\nx\x7f+=&?#")),
            "user:{PLAIN}pass".to_owned(),
            "test@example.com:{PLAIN}s3".to_owned(),
        ];
        let pop3 = [
            format!("a b@x:{}", bcrypt(b"p%ss word ")),
            "user:{PLAIN}pass".to_owned(),
        ];
        let smtp = [
            format!("user+tag@x:{}", bcrypt(b"p%20 w+=")),
            "us er:{PLAIN}pw".to_owned(),
            "stale:{PLAIN}pw".to_owned(),
            "test@example.com:{PLAIN}secret".to_owned(),
        ];
        for (name, lines) in [("imap", &imap[..]), ("pop3", &pop3[..]), ("smtp", &smtp[..])] {
            std::fs::write(dir.path().join(format!("{name}.htpasswd")), lines.join("\n") + "\n").expect("users");
        }
        let config = r#"
[auth]
wait = "3s"
max_attempts = 10
# One daemon serves every vector from 127.0.0.1: the fixed Auth-Wait is checked here, the
# policy's bans and escalation in tests/it/policy.
[policy]
enabled = false
[smtp]
local_domains = ["x", "example.com"]
[route]
imap = "127.0.0.1:1143"
pop3 = "127.0.0.1:1110"
smtp = "127.0.0.1:1025"
[[source]]
kind = "htpasswd"
path = "imap.htpasswd"
protocols = ["imap"]
[[source]]
kind = "htpasswd"
path = "pop3.htpasswd"
protocols = ["pop3"]
[[source]]
kind = "htpasswd"
path = "smtp.htpasswd"
protocols = ["smtp"]
"#;
        Daemon::start_in(dir, config)
    })
}

#[test]
fn v1_imap_login_with_space_and_percent() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: a%20b@x\r\nAuth-Pass: p%25ss:word\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(reply, OK_IMAP, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn v2_imap_literals_with_utf8_tab_crlf_and_raw_del() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: \xC3\xBC@x\r\nAuth-Pass: t%09ab%0D%0Ax\x7F+=&?#\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(reply, OK_IMAP, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn v3_pop3_user_pass_with_inner_and_trailing_spaces() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: a%20b@x\r\nAuth-Pass: p%25ss%20word%20\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(reply, OK_POP3, "{}", String::from_utf8_lossy(&reply));
    // Without the trailing space it is another password.
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: a%20b@x\r\nAuth-Pass: p%25ss%20word\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: [AUTH] Invalid login or password\r\nAuth-Wait: 3\r\n\r\n"
    );
}

#[test]
fn v4_smtp_auth_plain_keeps_plus_and_a_typed_percent_20() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user+tag@x\r\nAuth-Pass: p%2520%20w+=\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\n\r\n");
    assert_eq!(reply, OK_SMTP, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn v5_smtp_auth_login_user_with_space() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: us%20er\r\nAuth-Pass: pw\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\n\r\n");
    assert_eq!(reply, OK_SMTP, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn v6_smtp_none_to_a_local_domain_is_routed_without_auth_user() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: none\r\nAuth-User: \r\nAuth-Pass: \r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: \r\nAuth-SMTP-From: MAIL FROM:<a%b@x>  SIZE=1\r\nAuth-SMTP-To: RCPT TO:<c@x>\r\n\r\n");
    assert_eq!(reply, OK_SMTP, "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn v7_imap_cram_md5_wrong_digest_is_refused_without_wait() {
    let reply = daemon().ask(b"GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: cram-md5\r\nAuth-User: user\r\nAuth-Pass: 00000000000000000000000000000000\r\nAuth-Salt: <1769972746.1795886215@mail.test>\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: [AUTHENTICATIONFAILED] Invalid login or password\r\n\r\n"
    );
}

#[test]
fn v7_imap_cram_md5_right_digest_returns_the_cleartext() {
    use hmac::{KeyInit, Mac};
    let salt = b"<1769972746.1795886215@mail.test>";
    let mut mac = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(b"pass").unwrap();
    mac.update(salt);
    let digest = hex::encode(mac.finalize().into_bytes());
    let req = format!(
        "GET /ok HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: cram-md5\r\nAuth-User: user\r\nAuth-Pass: {digest}\r\nAuth-Salt: <1769972746.1795886215@mail.test>\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"
    );
    let reply = daemon().ask(req.as_bytes());
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\nAuth-Pass: pass\r\n\r\n"
    );
}

#[test]
fn v8_pop3_apop_wrong_and_right_digest() {
    let reply = daemon().ask(b"GET /okpass HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: apop\r\nAuth-User: user\r\nAuth-Pass: 00000000000000000000000000000000\r\nAuth-Salt: <2003949832.1795886220@mail.test>\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: [AUTH] Invalid login or password\r\n\r\n"
    );
    use md5::Digest;
    let digest = hex::encode(md5::Md5::digest(b"<2003949832.1795886220@mail.test>pass")).to_ascii_uppercase();
    let req = format!(
        "GET /okpass HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: apop\r\nAuth-User: user\r\nAuth-Pass: {digest}\r\nAuth-Salt: <2003949832.1795886220@mail.test>\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"
    );
    let reply = daemon().ask(req.as_bytes());
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1110\r\nAuth-Pass: pass\r\n\r\n"
    );
}

#[test]
fn v9_v10_external_is_refused_without_wait() {
    for req in [
        &b"GET /okpass HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: ext%20user\r\nAuth-Pass: \r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"[..],
        b"GET /mail/auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: test@example.com\r\nAuth-Pass: \r\nAuth-Salt: <925541779.1795885879@vm>\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n",
    ] {
        let reply = daemon().ask(req);
        assert_ne!(header(&reply, "Auth-Status").as_deref(), Some("OK"));
        assert_eq!(header(&reply, "Auth-Wait"), None);
    }
}

#[test]
fn v11_stale_credentials_with_none_grant_nothing() {
    // `stale` / `pw` is a valid login, but with `none` the credentials are ignored: the
    // foreign recipient is refused and no Auth-User ever goes back.
    let reply = daemon().ask(b"GET /fail HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: none\r\nAuth-User: stale\r\nAuth-Pass: pw\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 2\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: c\r\nAuth-SMTP-From: MAIL FROM:<a@x>\r\nAuth-SMTP-To: RCPT TO:<b@y>\r\n\r\n");
    assert_eq!(
        reply,
        b"HTTP/1.0 200 OK\r\nAuth-Status: Relay access denied\r\nAuth-Error-Code: 550 5.7.1\r\n\r\n"
    );
    let reply = daemon().ask(b"GET /fail HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: none\r\nAuth-User: u\r\nAuth-Pass: \r\nAuth-Salt: <1.2@mail.test>\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 2\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: c\r\nAuth-SMTP-From: MAIL FROM:<a@x>\r\nAuth-SMTP-To: RCPT TO:<b@X>\r\n\r\n");
    assert_eq!(reply, OK_SMTP);
}

#[test]
fn v12_query_string_and_auth_http_headers() {
    let reply = daemon().ask(b"GET /ok?a=1&b=%20c HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: user\r\nAuth-Pass: pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nX-Auth-Key: secret string\r\nX-Second: two\r\n\r\n");
    assert_eq!(reply, OK_IMAP);
    let reply = daemon().ask(b"GET / HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: user\r\nAuth-Pass: pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(reply, OK_IMAP);
}

#[test]
fn v13_proxy_protocol_headers() {
    let reply = daemon().ask(b"GET /mail/auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: test@example.com\r\nAuth-Pass: secret\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\nClient-Host: [UNAVAILABLE]\r\nProxy-Protocol-Addr: 192.0.2.1\r\nProxy-Protocol-Port: 123\r\nProxy-Protocol-Server-Addr: 192.0.2.2\r\nProxy-Protocol-Server-Port: 5678\r\nX-Type: proxy\r\n\r\n");
    assert_eq!(reply, OK_SMTP);
}

#[test]
fn v14_tls_client_certificate_headers() {
    let reply = daemon().ask(b"GET /mail/auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: test@example.com\r\nAuth-Pass: s3\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-RSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: FAILED:self-signed certificate\r\nAuth-SSL-Subject: CN=1.example.com\r\nAuth-SSL-Issuer: CN=1.example.com\r\nAuth-SSL-Serial: 6A34EA302630A66119DD7199B23E2BBA5A7D8001\r\nAuth-SSL-Fingerprint: 19b24a1fd43df28bfd9b313093d7bb862b34fa70\r\nAuth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0AMIICtzCCAZ8CFGo06jAm%0A-----END%20CERTIFICATE-----%0A\r\n\r\n");
    assert_eq!(reply, OK_IMAP);
}

#[test]
fn failure_texts_per_protocol_and_no_wait_at_the_attempt_cap() {
    let d = daemon();
    let cases = [
        ("imap", "[AUTHENTICATIONFAILED] Invalid login or password", None),
        ("pop3", "[AUTH] Invalid login or password", None),
        ("smtp", "Authentication credentials invalid", Some("535 5.7.8")),
    ];
    for (protocol, status, code) in cases {
        let reply = d.ask(&crate::common::plain_request(
            protocol,
            b"user",
            b"wrong",
            "127.0.0.1",
            9,
        ));
        assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(status));
        assert_eq!(header(&reply, "Auth-Error-Code").as_deref(), code);
        assert_eq!(header(&reply, "Auth-Wait").as_deref(), Some("3"));
        let reply = d.ask(&crate::common::plain_request(
            protocol,
            b"user",
            b"wrong",
            "127.0.0.1",
            10,
        ));
        assert_eq!(header(&reply, "Auth-Wait"), None, "attempt 10 reached the cap");
    }
}

#[test]
fn an_unknown_user_is_verified_with_the_schemes_and_costs_of_known_users() {
    // The smtp file holds one bcrypt-4 user and three {PLAIN} ones: an unknown name costs a
    // verification of one of those, chosen by a keyed hash of the name (so over many names
    // both appear, and one name always costs the same).
    let d = daemon();
    let known = |user: &[u8]| d.ask(&crate::common::plain_request("smtp", user, b"wrong", "127.0.0.1", 1));
    known(b"user+tag@x");
    let names: Vec<String> = (0..40).map(|n| format!("nobody{n}@x")).collect();
    for _ in 0..2 {
        for name in &names {
            known(name.as_bytes());
        }
    }
    let log = d.log();
    let schemes_of = |user: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(&format!("user=\"{user}\"")))
            .map(|line| {
                assert!(
                    line.contains("reason=\"unknown-user\"") || user == "user+tag@x",
                    "{line}"
                );
                let scheme = line.split("scheme=\"").nth(1).and_then(|s| s.split('"').next());
                scheme.expect("scheme field").to_owned()
            })
            .collect()
    };
    assert_eq!(schemes_of("user+tag@x").last().map(String::as_str), Some("bcrypt-4"));
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        let schemes = schemes_of(name);
        assert_eq!(schemes.len(), 2, "{name}: {schemes:?}");
        assert_eq!(schemes[0], schemes[1], "{name} must always cost the same");
        seen.insert(schemes[0].clone());
    }
    let expected: std::collections::BTreeSet<String> = ["bcrypt-4", "plain"].map(String::from).into();
    assert_eq!(seen, expected, "unknown names follow the file's own mix of schemes");
}
