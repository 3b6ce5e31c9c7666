//! The `[nginx]` shared secret through the real binary: refused requests are answered as a
//! temporary failure, logged once per connecting address, counted in `/metrics`, and never reach the
//! policy (no ban however many arrive).

use crate::common::{Daemon, http_get, plain_request};

const SECRET: &str = "s3cret-shared-with-nginx";

/// A password login with `extra` header lines before the blank line.
fn with_header(user: &str, pass: &str, client_ip: &str, extra: &str) -> Vec<u8> {
    let mut req = plain_request("imap", user.as_bytes(), pass.as_bytes(), client_ip, 1);
    req.truncate(req.len() - 2);
    req.extend_from_slice(extra.as_bytes());
    req.extend_from_slice(b"\r\n");
    req
}

#[test]
fn the_shared_secret_is_checked_logged_once_per_address_and_counted() {
    let config = format!(
        "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"{SECRET}\"\n[policy]\npair_failures = 2\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"
    );
    let daemon = Daemon::start(&config, "alice:{PLAIN}alice-pw\n");
    let right = format!("X-Auth-Key: {SECRET}\r\n");
    let reply = daemon.ask_text(&with_header("alice", "alice-pw", "192.0.2.7", &right));
    assert!(reply.contains("Auth-Status: OK\r\n"), "{reply}");

    // Wrong, missing: a temporary failure, five times from one address, twice from another.
    for (ip, extra) in [
        ("192.0.2.66", "X-Auth-Key: not-the-secret-at-all\r\n"),
        ("192.0.2.66", ""),
        ("192.0.2.66", "X-Auth-Key: not-the-secret-at-all\r\n"),
        ("192.0.2.66", ""),
        ("192.0.2.66", ""),
        ("198.51.100.3", ""),
        ("198.51.100.3", ""),
    ] {
        let reply = daemon.ask_text(&with_header("alice", "guess", ip, extra));
        assert!(reply.contains("Auth-Status: [UNAVAILABLE] "), "{reply}");
        assert!(!reply.contains("Auth-Wait"), "{reply}");
    }
    // The guesses never reached the policy: the right password from that address passes.
    let reply = daemon.ask_text(&with_header("alice", "alice-pw", "192.0.2.66", &right));
    assert!(reply.contains("Auth-Status: OK\r\n"), "{reply}");

    let (_, metrics) = http_get(daemon.admin(), "/metrics");
    assert!(metrics.contains("mailauthd_bad_secret_requests_total 7\n"), "{metrics}");
    let log = daemon.log();
    // Once per connecting address (every request here comes from 127.0.0.1), whatever
    // Client-IP the sender claims.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("shared secret header")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("peer=\"127.0.0.1\"") && warnings[0].contains("192.0.2.66"),
        "{log}"
    );
    assert!(!log.contains(SECRET) && !log.contains("not-the-secret"), "{log}");
    let refused = log.lines().filter(|l| l.contains("reason=\"bad-secret\"")).count();
    assert_eq!(refused, 7, "{log}");
}

/// Requests captured from Debian's nginx 1.22.1 (1.22.1-9+deb12u11) with
/// `ssl_verify_client optional_no_ca`, `auth_http_header X-Auth-Key "e2e-shared-secret-0123"`,
/// `imap_auth plain login external` and `smtp_auth plain login external`, a CA and client
/// certificates made with `openssl req`/`openssl x509 -req` (EC P-256), and Python's ssl
/// clients: IMAPS `AUTHENTICATE EXTERNAL` with a certificate from the CA
/// (`/O=Example/CN=alice@example.org`, serial 4097; `openssl x509 -noout -fingerprint -sha1`
/// gives `96:A2:89:B9:7E:E5:14:3A:FB:05:C3:D3:4B:22:A2:12:EF:26:60:3B`), with a self-signed
/// one, without one; IMAP LOGIN before and after STARTTLS; SMTP `AUTH EXTERNAL` after
/// STARTTLS.
mod captured {
    pub const EXTERNAL_GOOD: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: alice@example.org\r\nAuth-Pass: \r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-ECDSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: SUCCESS\r\nAuth-SSL-Subject: CN=alice@example.org,O=Example\r\nAuth-SSL-Issuer: CN=mailauthd e2e CA\r\nAuth-SSL-Serial: 1001\r\nAuth-SSL-Fingerprint: 96a289b97ee5143afb05c3d34b22a212ef26603b\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
    pub const EXTERNAL_SELF_SIGNED: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: alice@example.org\r\nAuth-Pass: \r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-ECDSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: FAILED:self-signed certificate\r\nAuth-SSL-Subject: CN=alice@example.org\r\nAuth-SSL-Issuer: CN=alice@example.org\r\nAuth-SSL-Serial: 3CFF729282E27278717A1E76C2894387668803FC\r\nAuth-SSL-Fingerprint: 98c7db07414f2bee33728da728b9463b281d5bc0\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
    pub const EXTERNAL_NO_CERT: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: alice@example.org\r\nAuth-Pass: \r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-ECDSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: NONE\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
    pub const LOGIN_CLEARTEXT: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice@example.org\r\nAuth-Pass: pw\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
    pub const LOGIN_AFTER_STARTTLS: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice@example.org\r\nAuth-Pass: pw\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-ECDSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: NONE\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
    pub const SMTP_EXTERNAL: &[u8] = b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: external\r\nAuth-User: alice@example.org\r\nAuth-Pass: \r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.2\r\nAuth-SSL-Cipher: ECDHE-ECDSA-AES256-GCM-SHA384\r\nAuth-SSL-Verify: SUCCESS\r\nAuth-SSL-Subject: CN=alice@example.org,O=Example\r\nAuth-SSL-Issuer: CN=mailauthd e2e CA\r\nAuth-SSL-Serial: 1001\r\nAuth-SSL-Fingerprint: 96a289b97ee5143afb05c3d34b22a212ef26603b\r\nX-Auth-Key: e2e-shared-secret-0123\r\n\r\n";
}

/// A daemon for the captured requests: their secret, TLS required, EXTERNAL by `by`.
fn captured_daemon(by: &str, users: &str) -> Daemon {
    let config = format!(
        "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"e2e-shared-secret-0123\"\n\
         [tls]\nrequired_for = [\"imap\", \"smtp\"]\nmin_protocol = \"TLSv1.2\"\n\
         [external]\ncertificate_user = \"{by}\"\n[policy]\nenabled = false\n\
         [route]\nimap = \"127.0.0.1:1143\"\nsmtp = \"127.0.0.1:1025\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"
    );
    Daemon::start(&config, users)
}

#[test]
fn captured_nginx_tls_requests_by_subject_cn() {
    let daemon = captured_daemon("subject-cn", "alice@example.org:{PLAIN}pw\n");
    let reply = daemon.ask_text(captured::EXTERNAL_GOOD);
    assert_eq!(
        reply,
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\nAuth-Pass: pw\r\n\r\n"
    );
    // SMTP too gets the cleartext, for `proxy_smtp_auth on` (protocol.md §7 point 6).
    let reply = daemon.ask_text(captured::SMTP_EXTERNAL);
    assert_eq!(
        reply,
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1025\r\nAuth-Pass: pw\r\n\r\n"
    );
    for refused in [captured::EXTERNAL_SELF_SIGNED, captured::EXTERNAL_NO_CERT] {
        let reply = daemon.ask_text(refused);
        assert!(
            reply.contains("Auth-Status: [AUTHENTICATIONFAILED] Invalid login or password\r\n"),
            "{reply}"
        );
    }
    let reply = daemon.ask_text(captured::LOGIN_CLEARTEXT);
    assert_eq!(
        reply,
        "HTTP/1.0 200 OK\r\nAuth-Status: [PRIVACYREQUIRED] Use TLS (STARTTLS) for a cleartext login\r\n\r\n"
    );
    let reply = daemon.ask_text(captured::LOGIN_AFTER_STARTTLS);
    assert!(reply.contains("Auth-Status: OK\r\n"), "{reply}");
    let log = daemon.log();
    assert_eq!(log.matches("reason=\"certificate-not-verified\"").count(), 2, "{log}");
}

#[test]
fn captured_nginx_tls_requests_by_fingerprint() {
    // The field as `openssl x509 -noout -fingerprint -sha1` prints it.
    let users = "alice@example.org:{PLAIN}pw:::::: cert_fingerprint=96:A2:89:B9:7E:E5:14:3A:FB:05:C3:D3:4B:22:A2:12:EF:26:60:3B\n";
    let daemon = captured_daemon("fingerprint", users);
    assert!(daemon.ask_text(captured::EXTERNAL_GOOD).contains("Auth-Status: OK\r\n"));
    // Another certificate with the same name is not the one on file.
    let mut forged = captured::EXTERNAL_GOOD.to_vec();
    let at = forged.windows(4).position(|w| w == b"96a2").unwrap();
    forged[at..at + 4].copy_from_slice(b"96a3");
    let reply = daemon.ask_text(&forged);
    assert!(reply.contains("[AUTHENTICATIONFAILED]"), "{reply}");
    assert!(daemon.log().contains("reason=\"certificate-mismatch\""));
}

/// Runs `mailauthd args` (through the shared spawn helper) with `stdin`: exit code and stdout+stderr.
fn cli(args: &[&str], stdin: &[u8]) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::common::bin());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::common::spawn::spawn(cmd).expect("run mailauthd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_test_command_and_check_config_know_the_connection_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}a1\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"0123456789abcdef-key\"\n\
         [tls]\nrequired_for = [\"imap\"]\n[smtp]\nlocal_domains = [\"example.org\"]\n\
         reverse_dns = \"require\"\nrelay_refusal_wait = \"2s\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"users\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // `mailauthd test` is not nginx: no secret is asked for; TLS is what --tls says.
    let (code, out) = cli(&["test", "--config", config, "--user", "alice"], b"a1\n");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[PRIVACYREQUIRED]") && out.contains("reason: tls-required"),
        "{out}"
    );
    let (code, out) = cli(&["test", "--config", config, "--user", "alice", "--tls"], b"a1\n");
    assert_eq!(code, 0, "{out}");
    let mx = [
        "test",
        "--config",
        config,
        "--user",
        "",
        "--protocol",
        "smtp",
        "--method",
        "none",
        "--smtp-to",
        "RCPT TO:<a@example.org>",
        "--client-host",
        "[TEMPUNAVAIL]",
    ];
    let (code, out) = cli(&mx, b"");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Auth-Error-Code: 450 4.7.25\r\n"), "{out}");
    // check-config accepts it, and says which nginx makes relay_refusal_wait safe.
    let (code, out) = cli(&["check-config", "--config", config], b"");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: smtp.relay_refusal_wait") && out.contains("1.29.1") && out.contains("CVE-2025-53859"),
        "{out}"
    );
}
