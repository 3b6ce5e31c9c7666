//! The policy in the running daemon with in-process state.

use std::time::{Duration, Instant};

use super::start;
use crate::common::{Daemon, apop_request, header, plain_request, wait_until};

const BANNED_IMAP: &str = "[UNAVAILABLE] Too many failed logins, try again later";
const INVALID_IMAP: &str = "[AUTHENTICATIONFAILED] Invalid login or password";

/// The decision log lines of one client address.
fn decisions<'a>(log: &'a str, client_ip: &str) -> Vec<&'a str> {
    let needle = format!("client_ip=\"{client_ip}\"");
    log.lines()
        .filter(|l| l.contains("mailauthd::auth") && l.contains(&needle))
        .collect()
}

#[test]
fn twenty_wrong_logins_from_one_ip_ban_it_and_bans_are_answered_without_hashing() {
    // The defaults: 20 distinct failures from one network ban it.
    let d = start("");
    let attacker = "192.0.2.66";
    let mut waits = Vec::new();
    for i in 0..20 {
        // A password sprayer: a new user each time, so no (user, network) limit is reached.
        let reply = d.login_from(&format!("user{i}"), "Winter2026", attacker);
        assert_eq!(
            header(&reply, "Auth-Status").as_deref(),
            Some(INVALID_IMAP),
            "{i}: {reply}"
        );
        waits.push(header(&reply, "Auth-Wait"));
    }
    let waits: Vec<Option<&str>> = waits.iter().map(Option::as_deref).collect();
    assert_eq!(&waits[..5], [Some("3"), Some("6"), Some("12"), Some("15"), Some("15")]);
    assert_eq!(waits[19], None, "the failure that bans ends the session");

    // Even the right password is refused now, at once, with no hash verified.
    let reply = d.login_from("alice", "alice-secret", attacker);
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BANNED_IMAP), "{reply}");
    assert_eq!(header(&reply, "Auth-Wait"), None);
    let reply = d.ask_text(&apop_request("bob", attacker));
    assert_eq!(
        header(&reply, "Auth-Status").as_deref(),
        Some("[LOGIN-DELAY] Too many failed logins, try again later")
    );

    // Another client logs in.
    let reply = d.login_from("alice", "alice-secret", "198.51.100.20");
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"), "{reply}");

    let log = d.log();
    let lines = decisions(&log, attacker);
    assert_eq!(lines.len(), 22, "{log}");
    for line in &lines[20..] {
        assert!(
            line.contains("result=\"banned\"") && line.contains("reason=\"banned\""),
            "{line}"
        );
        assert!(
            line.contains("scheme=\"-\"") && line.contains("source=\"policy:net\""),
            "{line}"
        );
    }
    // Before the ban every failure was verified (against the dummy hash for unknown users).
    assert!(lines[..20].iter().all(|l| !l.contains("scheme=\"-\"")), "{log}");
    assert!(log.contains("scope=\"net\" key=\"n:192.0.2.66/32\""), "{log}");
    assert!(
        !log.contains("Winter2026") && !log.contains("alice-secret"),
        "a password was logged"
    );

    // The fail2ban filter shipped in contrib/ finds the 22 refusals of the attacker, and
    // only those.
    let filter = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/fail2ban/filter.d/mailauthd.conf");
    let out = std::process::Command::new("fail2ban-regex")
        .args(["--print-no-missed", "--print-all-matched"])
        .arg(d.log_path())
        .arg(filter)
        .output()
        .expect("run fail2ban-regex (Debian package fail2ban)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Failregex: 22 total"), "{report}");
    assert_eq!(report.matches("client_ip=\"192.0.2.66\"").count(), 22, "{report}");
    assert!(!report.contains("198.51.100.20"), "{report}");
}

#[test]
fn a_banned_pair_is_refused_with_the_right_password_until_the_ban_expires() {
    let d = start("[policy]\npair_failures = 3\nban = \"2s\"\n");
    let ip = "203.0.113.9";
    for pass in ["a", "b", "c"] {
        assert!(d.login_from("alice", pass, ip).contains(INVALID_IMAP));
    }
    let banned_at = Instant::now();
    assert!(d.login_from("alice", "alice-secret", ip).contains(BANNED_IMAP));
    // The same user from elsewhere and another user from here are not affected.
    assert!(
        d.login_from("alice", "alice-secret", "203.0.113.10")
            .contains("Auth-Status: OK")
    );
    assert!(d.login_from("bob", "bob-password", ip).contains("Auth-Status: OK"));
    let mut refused = 0;
    wait_until(Duration::from_secs(15), "the ban to expire", || {
        let ok = d.login_from("alice", "alice-secret", ip).contains("Auth-Status: OK");
        refused += usize::from(!ok);
        ok
    });
    let lasted = banned_at.elapsed();
    assert!(lasted >= Duration::from_millis(1500), "the ban ended after {lasted:?}");
    assert!(refused > 0);
}

#[test]
fn auth_wait_escalates_for_plain_logins_only_and_never_past_the_attempt_cap() {
    let d = start("[auth]\nwait = \"2s\"\nmax_attempts = 4\n");
    let ip = "192.0.2.80";
    let wait = |pass: &str, attempt: u32| {
        header(
            &d.ask(&plain_request("imap", b"bob", pass.as_bytes(), ip, attempt)),
            "Auth-Wait",
        )
    };
    assert_eq!(wait("guess1", 1).as_deref(), Some("2"));
    assert_eq!(wait("guess2", 2).as_deref(), Some("4"));
    assert_eq!(wait("guess3", 3).as_deref(), Some("8"));
    // A repeated wrong password does not escalate.
    assert_eq!(wait("guess1", 3).as_deref(), Some("8"));
    // At the attempt cap nginx closes the session: no Auth-Wait, however many failures.
    assert_eq!(wait("guess4", 4), None);
    let reply = d.ask_text(&apop_request("bob", "192.0.2.81"));
    assert!(reply.contains("[AUTH] Invalid login or password"), "{reply}");
    assert_eq!(header(&reply, "Auth-Wait"), None, "no Auth-Wait for apop");
}

#[test]
fn bans_are_listed_and_lifted_with_the_cli() {
    let d = start("[policy]\npair_failures = 2\n");
    for pass in ["a", "b"] {
        d.login_from("alice", pass, "192.0.2.33");
    }
    assert!(
        d.login_from("alice", "alice-secret", "192.0.2.33")
            .contains(BANNED_IMAP)
    );

    let admin = d.admin().to_string();
    let out = d.bans_cli(&["--admin", &admin, "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with("pair net=192.0.2.33/32 user=\"alice\" ttl="),
        "{stdout}"
    );

    let out = d.bans_cli(&["clear", "--user", "bob"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 0 ban(s)\n");
    let out = d.bans_cli(&["clear", "--ip", "192.0.2.33", "--user", "Alice"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 1 ban(s)\n", "{out:?}");
    assert!(
        d.login_from("alice", "alice-secret", "192.0.2.33")
            .contains("Auth-Status: OK")
    );
    assert!(d.log().contains("bans lifted by admin"));

    let wrong = d.bans_cli(&["--token", "not-the-token-at-all", "list"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"), "{wrong:?}");
}

#[test]
fn temporary_failures_do_not_count() {
    // A second source whose file is missing: a user the first source does not know cannot
    // be refused for good, every failure is temporary, and none may count towards a ban
    // (with net_failures = 1, one counted failure would ban the address alice uses below).
    let d = start(
        "[policy]\npair_failures = 1\nnet_failures = 1\n[[source]]\nkind = \"htpasswd\"\npath = \"missing.htpasswd\"\n",
    );
    let ip = "192.0.2.44";
    for pass in ["a", "b", "c"] {
        let reply = d.login_from("carol", pass, ip);
        assert!(
            reply.contains("[UNAVAILABLE] Temporary authentication failure"),
            "{reply}"
        );
    }
    assert!(d.login_from("alice", "alice-secret", ip).contains("Auth-Status: OK"));
    let out = d.bans_cli(&["list"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
}

/// With the default limits, 50 distinct wrong passwords from `attacker` for one user: the
/// pair ban (5) stops the hashing, yet every further distinct guess still counts for the
/// network, whose limit (20) then bans it for every user; `elsewhere` is not affected.
pub(super) fn guessing_one_user_bans_the_address_for_every_user(d: &Daemon, attacker: &str, elsewhere: &str) {
    for i in 0..50 {
        let reply = d.login_from("alice", &format!("guess-{i}"), attacker);
        let expected = if i < 5 { INVALID_IMAP } else { BANNED_IMAP };
        assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(expected), "{i}: {reply}");
    }
    let reply = d.login_from("bob", "bob-password", attacker);
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some(BANNED_IMAP), "{reply}");
    let reply = d.login_from("bob", "bob-password", elsewhere);
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"), "{reply}");
    // alice's own count (20 of 50) did not ban her: she logs in from elsewhere.
    let reply = d.login_from("alice", "alice-secret", elsewhere);
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"), "{reply}");

    let log = d.log();
    let lines = decisions(&log, attacker);
    assert_eq!(lines.len(), 51, "{log}");
    // Hashing stopped at the pair ban: only the first five were verified.
    assert!(lines[..5].iter().all(|l| l.contains("result=\"invalid\"")), "{log}");
    assert!(
        lines[5..20]
            .iter()
            .all(|l| l.contains("source=\"policy:pair\"") && l.contains("scheme=\"-\"")),
        "{log}"
    );
    assert!(lines[20..].iter().all(|l| l.contains("source=\"policy:net\"")), "{log}");
    assert!(log.contains(&format!("scope=\"net\" key=\"n:{attacker}/32\"")), "{log}");
}

#[test]
fn fifty_guesses_at_one_user_ban_the_address_for_every_user() {
    let d = start("");
    guessing_one_user_bans_the_address_for_every_user(&d, "192.0.2.90", "198.51.100.90");
    // Repeating one wrong password while banned counts once: with a pair ban at 2 and a
    // network ban at 4, the same third guess sent ten times leaves the network unbanned.
    let d = start("[policy]\npair_failures = 2\nnet_failures = 4\n");
    let ip = "192.0.2.91";
    for pass in ["a", "b"] {
        assert!(d.login_from("alice", pass, ip).contains(INVALID_IMAP));
    }
    for _ in 0..10 {
        assert!(d.login_from("alice", "c", ip).contains(BANNED_IMAP));
    }
    // (Asked through the listing: a login of bob's would make the network trusted.)
    let out = d.bans_cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.starts_with("pair ") && listed.lines().count() == 1, "{listed}");
    assert!(d.login_from("alice", "d", ip).contains(BANNED_IMAP));
    assert!(d.login_from("bob", "bob-password", ip).contains(BANNED_IMAP));
}

#[test]
fn a_login_name_is_quoted_in_the_ban_list_and_cut_in_the_log() {
    let d = start("[policy]\npair_failures = 1\n");
    // The harness %-escapes the name as nginx does; decoded it reads `x ttl=999999s user=root`.
    assert!(
        d.login_from("x ttl=999999s user=root", "a", "192.0.2.35")
            .contains(INVALID_IMAP)
    );
    let out = d.bans_cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.starts_with("pair net=192.0.2.35/32 user=\"x ttl=999999s user=root\" ttl="),
        "{listed}"
    );
    assert_eq!(
        listed.matches(" ttl=").count(),
        2,
        "the name's own text is inside the quotes"
    );

    // A 4 KB name: the log line shows 256 bytes of it and how much was left out.
    let long = "n".repeat(4096);
    assert!(d.login_from(&long, "a", "192.0.2.36").contains(INVALID_IMAP));
    let log = d.log();
    let lines = decisions(&log, "192.0.2.36");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!("user=\"{}…(+3840 bytes)\"", "n".repeat(256))),
        "{}",
        lines[0]
    );
    assert!(lines[0].len() < 1024, "a {}-byte log line", lines[0].len());
}
