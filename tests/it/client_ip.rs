//! Every `Client-IP` form nginx sends (protocol.md §1.3): a dual-stack listener's
//! IPv4-mapped address is the IPv4 client everywhere, and a unix-socket listener's `unix:`
//! is a client with no address.

use crate::common::{Daemon, header, plain_request};

const INVALID: &str = "[AUTHENTICATIONFAILED] Invalid login or password";

/// `dave` may log in only from 192.0.2.0/24 (a Dovecot passwd-file line); `erin` from
/// anywhere. With `doveadm auth test -x rip=...` on Dovecot 2.3.19.1 and this passwd-file,
/// dave's right password succeeds from `::ffff:192.0.2.7` and `192.0.2.7`, and fails from
/// `::ffff:198.51.100.7` and without an address.
const USERS: &str = "dave:{PLAIN}d:1000:1000::/home/dave::allow_nets=192.0.2.0/24\nerin:{PLAIN}e\n";

fn daemon(policy: &str) -> Daemon {
    Daemon::start(
        &format!("{policy}\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"),
        USERS,
    )
}

#[test]
fn a_mapped_address_is_its_ipv4_client_for_allow_nets_logs_and_the_policy() {
    let d = daemon("[policy]\nnet_failures = 3\npair_failures = 10\n");
    assert_eq!(d.auth_status("imap", "dave", "d", "::ffff:192.0.2.7"), "OK");
    assert_eq!(d.auth_status("imap", "dave", "d", "::ffff:198.51.100.7"), INVALID);
    d.wait_for_log(0, "reason=\"not-allowed-from-network\"");
    let log = d.log();
    assert!(log.contains("login accepted client_ip=\"192.0.2.7\""), "{log}");
    assert!(log.contains("login refused client_ip=\"198.51.100.7\""), "{log}");
    assert!(!log.contains("::ffff:"), "{log}");

    // Three wrong passwords from the mapped form ban the IPv4 network itself.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(d.auth_status("imap", user, "x", "::ffff:203.0.113.5"), INVALID);
    }
    let banned = "[UNAVAILABLE] Too many failed logins, try again later";
    assert_eq!(d.auth_status("imap", "erin", "e", "203.0.113.5"), banned);
    assert_eq!(d.auth_status("imap", "erin", "e", "::ffff:203.0.113.5"), banned);
    assert_eq!(d.auth_status("imap", "erin", "e", "203.0.113.6"), "OK");
}

#[test]
fn a_unix_socket_client_is_decided_in_no_network_and_never_banned_as_a_network() {
    let d = daemon("[policy]\nnet_failures = 2\npair_failures = 3\n");
    let unix = "unix:";
    assert_eq!(d.auth_status("imap", "erin", "e", unix), "OK");
    assert_eq!(d.auth_status("imap", "erin", "wrong", unix), INVALID);
    // allow_nets holds no unix client: refused even with the right password.
    assert_eq!(d.auth_status("imap", "dave", "d", unix), INVALID);
    d.wait_for_log(0, "reason=\"not-allowed-from-network\"");
    assert!(d.log().contains("login accepted client_ip=\"unix:\""), "{}", d.log());

    // Past net_failures from the socket: nobody else behind it is banned...
    for user in ["u1", "u2", "u3"] {
        assert_eq!(d.auth_status("imap", user, "x", unix), INVALID);
    }
    assert_eq!(d.auth_status("imap", "erin", "e", unix), "OK");
    // ...while the pair scope still applies to a user guessed at from it.
    for pass in ["a", "b", "c"] {
        assert_eq!(
            d.auth_status("pop3", "erin", pass, unix),
            "[AUTH] Invalid login or password"
        );
    }
    let reply = d.ask(&plain_request("pop3", b"erin", b"e", unix, 1));
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("[LOGIN-DELAY] Too many failed logins, try again later")
    );
}
