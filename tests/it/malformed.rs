//! Malformed input: every request gets an answer or a close within the deadline, never a
//! panic, and the daemon keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Daemon, header};

const BAD_REQUEST_STATUS: &str = "Temporary authentication failure, try again later";

fn daemon() -> Daemon {
    Daemon::start(
        "read_timeout = \"1s\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        "alice:{PLAIN}secret\n",
    )
}

fn still_serving(d: &Daemon) {
    let reply = d.login("imap", "alice", "secret");
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// Sends `bytes`, half-closes, and reads what comes back within `limit`.
fn send_and_read(d: &Daemon, bytes: &[u8], half_close: bool, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    // A large request may be cut short by the server's answer and close: that is fine.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    (reply, started.elapsed())
}

#[test]
fn garbage_gets_an_answer() {
    let d = daemon();
    for bytes in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"\r\n\r\n",
        b"GET / HTTP/1.0\r\nAuth-Method: plain\r\n\r\n",
    ] {
        let (reply, _) = send_and_read(&d, bytes, false, Duration::from_secs(5));
        assert!(
            reply.starts_with(b"HTTP/1.0 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BAD_REQUEST_STATUS));
        assert_eq!(header(&reply, "Auth-Wait"), None);
    }
    still_serving(&d);
}

#[test]
fn a_request_without_the_blank_line_is_answered_when_the_client_stops_sending() {
    let d = daemon();
    let (reply, _) = send_and_read(
        &d,
        b"GET / HTTP/1.0\r\nAuth-Method: plain\r\nAuth-Protocol: imap\r\n",
        true,
        Duration::from_secs(5),
    );
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BAD_REQUEST_STATUS));
    // Without the half-close, the read deadline (1 s) ends it.
    let (reply, took) = send_and_read(&d, b"GET / HTTP/1.0\r\nHost: x\r\n", false, Duration::from_secs(5));
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BAD_REQUEST_STATUS));
    assert!(took < Duration::from_secs(4), "{took:?}");
    still_serving(&d);
}

#[test]
fn one_mebibyte_of_headers_is_refused_and_the_daemon_keeps_serving() {
    let d = daemon();
    let mut big = b"GET / HTTP/1.0\r\n".to_vec();
    while big.len() < 1 << 20 {
        big.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    big.extend_from_slice(b"\r\n");
    let (reply, _) = send_and_read(&d, &big, false, Duration::from_secs(5));
    // The answer may be lost to a reset if the server closes while we still write; what
    // matters is that the server did not hang or crash.
    if !reply.is_empty() {
        assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BAD_REQUEST_STATUS));
    }
    still_serving(&d);
}

#[test]
fn a_32_kib_request_is_read_whole() {
    let d = daemon();
    let mut req = crate::common::plain_request("imap", b"alice", b"secret", "127.0.0.1", 1);
    req.truncate(req.len() - 2);
    while req.len() < 32 * 1024 {
        req.extend_from_slice(b"X-Auth-Filler: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n");
    }
    req.extend_from_slice(b"\r\n");
    assert_eq!(header(&d.ask(&req), "Auth-Status").as_deref(), Some("OK"));
}

#[test]
fn a_slow_sender_within_the_deadline_is_served_and_a_silent_one_is_closed() {
    let d = daemon();
    let req = crate::common::plain_request("imap", b"alice", b"secret", "127.0.0.1", 1);
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for chunk in req.chunks(req.len() / 4 + 1) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"));

    let started = Instant::now();
    let mut silent = TcpStream::connect(d.addr()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    still_serving(&d);
}

#[test]
fn an_early_close_does_not_disturb_the_daemon() {
    let d = daemon();
    for _ in 0..20 {
        let mut s = TcpStream::connect(d.addr()).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\nAuth-Me");
        drop(s);
    }
    still_serving(&d);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let d = daemon();
    still_serving(&d);
    assert!(d.stop(), "mailauthd did not exit 0 on SIGTERM");
}

#[test]
fn a_decision_that_outlives_the_deadline_gets_a_temporary_failure() {
    // bcrypt cost 14 takes about a second; the deadline is 300 ms.
    let slow = bcrypt::hash("right", 14).unwrap();
    let d = Daemon::start(
        "read_timeout = \"300ms\"\n[policy]\nenabled = false\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        &format!("slow:{slow}\n"),
    );
    let started = Instant::now();
    let reply = d.login("imap", "slow", "right");
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("[UNAVAILABLE] Temporary authentication failure, try again later"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "answered after {:?}",
        started.elapsed()
    );
    crate::common::wait_until(Duration::from_secs(5), "the decision line", || {
        d.log().contains("reason=\"deadline\"")
    });
}

#[test]
fn a_repeated_header_is_a_bad_request_naming_it_never_the_last_copy_winning() {
    let d = Daemon::start(
        "[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        "alice:{PLAIN}secret\nbob:{PLAIN}bobpw\n",
    );
    // CVE-2026-28753: a PTR answer injects `Auth-User`/`Auth-Pass` through `Client-Host`.
    let injected = b"GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice\r\nAuth-Pass: wrong\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\nClient-Host: evil.example\r\nAuth-User: bob\r\nAuth-Pass: bobpw\r\n\r\n";
    let reply = d.ask(injected);
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("Temporary authentication failure, try again later"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // An SMTP request still gets SMTP's temporary code.
    assert_eq!(header(&reply, "Auth-Error-Code").as_deref(), Some("454 4.7.0"));
    assert_eq!(header(&reply, "Auth-Server"), None);
    d.wait_for_log(0, "reason=header Auth-User is repeated");

    // IMAP: a second Client-IP. IMAP's temporary text, and no SMTP code.
    let mut second_ip = crate::common::plain_request("imap", b"alice", b"secret", "192.0.2.7", 1);
    second_ip.truncate(second_ip.len() - 2);
    second_ip.extend_from_slice(b"Client-IP: 127.0.0.1\r\n\r\n");
    let reply = d.ask(&second_ip);
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("[UNAVAILABLE] Temporary authentication failure, try again later")
    );
    assert_eq!(header(&reply, "Auth-Error-Code"), None);
    assert_eq!(header(&reply, "Auth-Wait"), None);
    d.wait_for_log(0, "reason=header Client-IP is repeated");
    still_serving(&d);
}

#[test]
fn garbage_without_a_protocol_gets_no_smtp_code() {
    let d = daemon();
    let (reply, _) = send_and_read(
        &d,
        b"GET / HTTP/1.0\r\nAuth-Method: plain\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BAD_REQUEST_STATUS));
    assert_eq!(header(&reply, "Auth-Error-Code"), None);
}

#[test]
fn oauth_methods_get_the_ordinary_refusal() {
    let d = daemon();
    for (method, protocol, status, code) in [
        (
            "xoauth2",
            "imap",
            "[AUTHENTICATIONFAILED] Invalid login or password",
            None,
        ),
        ("oauthbearer", "pop3", "[AUTH] Invalid login or password", None),
        (
            "xoauth2",
            "smtp",
            "Authentication credentials invalid",
            Some("535 5.7.8"),
        ),
    ] {
        let req = format!(
            "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: {method}\r\nAuth-User: alice\r\nAuth-Pass: secret\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\n\r\n"
        );
        let reply = d.ask(req.as_bytes());
        assert_eq!(
            header(&reply, "Auth-Status").as_deref(),
            Some(status),
            "{method} {protocol}"
        );
        assert_eq!(
            header(&reply, "Auth-Error-Code").as_deref(),
            code,
            "{method} {protocol}"
        );
        assert_eq!(header(&reply, "Auth-Wait"), None, "{method} {protocol}");
    }
    d.wait_for_log(0, "reason=\"method-not-supported\"");
}

#[test]
fn none_never_logs_the_user_it_was_sent() {
    let d = Daemon::start(
        "[smtp]\nlocal_domains = [\"example.org\"]\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        "stale:{PLAIN}pw\n",
    );
    // V11 (nginx 1.22.1): stale credentials from an earlier failed AUTH in the session.
    let v11 = b"GET /fail HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: none\r\nAuth-User: stale\r\nAuth-Pass: pw\r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 2\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: c\r\nAuth-SMTP-From: MAIL FROM:<a@x>\r\nAuth-SMTP-To: RCPT TO:<b@example.org>\r\n\r\n";
    let reply = d.ask(v11);
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"));
    assert_eq!(header(&reply, "Auth-Pass"), None);
    let line = d.wait_for_log(0, "reason=\"local-recipient\"");
    let line = &d.log_lines()[line];
    assert!(line.contains(" user=\"\" "), "{line}");
    assert!(!d.log().contains("stale"), "{}", d.log());
}

#[test]
fn a_60_kb_request_of_tiny_headers_is_answered() {
    let d = daemon();
    let mut req = crate::common::plain_request("imap", b"alice", b"secret", "127.0.0.1", 1);
    req.truncate(req.len() - 2);
    while req.len() < 60 * 1024 {
        req.extend_from_slice(b"X:1\r\n");
    }
    req.extend_from_slice(b"\r\n");
    assert_eq!(header(&d.ask(&req), "Auth-Status").as_deref(), Some("OK"));
    still_serving(&d);
}
