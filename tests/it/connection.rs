//! The `[nginx]` shared secret through the real binary: refused requests are answered as a
//! temporary failure, logged once per address, counted in `/metrics`, and never reach the
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
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("shared secret header")).collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(warnings[0].contains("192.0.2.66") && warnings[1].contains("198.51.100.3"));
    assert!(!log.contains(SECRET) && !log.contains("not-the-secret"), "{log}");
    let refused = log.lines().filter(|l| l.contains("reason=\"bad-secret\"")).count();
    assert_eq!(refused, 7, "{log}");
}
