//! Dovecot passwd-file lines through the daemon: `nologin` and `allow_nets=` refuse, unknown
//! extra fields do not drop the user; several files, the first that accepts wins.

use std::time::Duration;

use crate::common::{Daemon, bcrypt4, is_accepted, is_invalid, wait_until};

#[test]
fn nologin_and_allow_nets_refuse_through_the_daemon() {
    let alice = bcrypt4("secret");
    let daemon = Daemon::start(
        "[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        &format!(
            "# passwd-file\n\
             alice:{alice}:1000:1000::/home/alice::nologin\n\
             bob:{{PLAIN}}secret:1001:1001::/home/bob:/bin/false:allow_nets=192.0.2.0/24,::1\n\
             carol:{{PLAIN}}secret:::::: quota_rule=*:storage=1G userdb_mail=maildir:~/Mail\n\
             dave:{{PLAIN}}secret:nginx comment\n"
        ),
    );

    // nologin: the right password is refused, as an invalid login (not a temporary failure).
    assert!(daemon.invalid("alice", "secret"));
    assert!(daemon.invalid("alice", "wrong"));

    assert!(is_accepted(&daemon.login_from("bob", "secret", "192.0.2.7")));
    assert!(is_accepted(&daemon.login_from("bob", "secret", "::1")));
    assert!(is_invalid(&daemon.login_from("bob", "secret", "198.51.100.1")));

    // Unknown extra fields are reported with file:line but keep the user.
    assert!(daemon.accepted("carol", "secret"));
    assert!(daemon.accepted("dave", "secret"));
    wait_until(Duration::from_secs(5), "the log to name the unknown field", || {
        let log = daemon.log();
        log.contains("users.htpasswd:4: unknown extra field \"quota_rule\"")
            && log.contains("users.htpasswd:4: unknown extra field \"userdb_mail\"")
    });
    let log = daemon.log();
    assert!(
        log.contains("reason=\"nologin\"") || log.contains("reason=nologin"),
        "{log}"
    );
    assert!(!log.contains("secret"), "a password reached the log: {log}");
}

#[test]
fn two_files_the_first_that_accepts_wins_and_a_disabled_account_stays_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, secondary) = (dir.path().join("primary"), dir.path().join("secondary"));
    std::fs::write(&primary, "alice:{PLAIN}one\ndave:{PLAIN}dd:::::: nologin\n").unwrap();
    std::fs::write(&secondary, "alice:{PLAIN}two\nbob:{PLAIN}bb\ndave:{PLAIN}dd\n").unwrap();
    let daemon = Daemon::start_in(
        dir,
        "reload_interval = \"100ms\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"primary\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"secondary\"\n",
    );
    assert!(daemon.accepted("alice", "one"));
    // A password the first file rejects passes to the second (a passdb chain).
    assert!(daemon.accepted("alice", "two"));
    assert!(daemon.invalid("alice", "three"));
    // bob is only in the second file.
    assert!(daemon.accepted("bob", "bb"));
    // A nologin in the first file is not undone by an entry in the second, whatever the
    // password.
    assert!(daemon.invalid("dave", "dd"));
    assert!(daemon.invalid("dave", "wrong"));
    assert!(daemon.invalid("zed", "x"));

    // Both files are watched.
    std::fs::write(&secondary, "bob:{PLAIN}new\n").unwrap();
    wait_until(Duration::from_secs(2), "the second file's new password", || {
        daemon.accepted("bob", "new")
    });
    assert!(daemon.invalid("bob", "bb"));
    std::fs::write(&primary, "dave:{PLAIN}dd\n").unwrap();
    wait_until(Duration::from_secs(2), "the first file's change", || {
        daemon.accepted("dave", "dd")
    });
    // alice left the first file (and the second): unknown now.
    assert!(daemon.invalid("alice", "one"));
    assert!(daemon.invalid("alice", "two"));
}
