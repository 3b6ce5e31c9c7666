//! Dovecot passwd-file lines through the daemon: `nologin` and `allow_nets=` refuse, unknown
//! extra fields do not drop the user; several files, first match wins.

use crate::common::{Daemon, bcrypt4, wait_until};
use std::time::Duration;

#[test]
fn nologin_and_allow_nets_refuse_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let alice = bcrypt4("secret");
    std::fs::write(
        dir.path().join("users"),
        format!(
            "# passwd-file\n\
             alice:{alice}:1000:1000::/home/alice::nologin\n\
             bob:{{PLAIN}}secret:1001:1001::/home/bob:/bin/false:allow_nets=192.0.2.0/24,::1\n\
             carol:{{PLAIN}}secret:::::: quota_rule=*:storage=1G userdb_mail=maildir:~/Mail\n\
             dave:{{PLAIN}}secret:nginx comment\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), "[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n");

    // nologin: the right password is refused, as an invalid login (not a temporary failure).
    let reply = daemon.login("alice", "secret");
    assert!(reply.invalid(), "{reply:?}");
    assert!(daemon.login("alice", "wrong").invalid());

    assert!(daemon.login_from("bob", "secret", "192.0.2.7").accepted());
    assert!(daemon.login_from("bob", "secret", "::1").accepted());
    let outside = daemon.login_from("bob", "secret", "198.51.100.1");
    assert!(outside.invalid(), "{outside:?}");

    // Unknown extra fields are reported with file:line but keep the user.
    assert!(daemon.login("carol", "secret").accepted());
    assert!(daemon.login("dave", "secret").accepted());
    wait_until(Duration::from_secs(5), "the log to name the unknown field", || {
        let log = daemon.log_text();
        log.contains("users:4: unknown extra field \"quota_rule\"")
            && log.contains("users:4: unknown extra field \"userdb_mail\"")
    });
    let log = daemon.log_text();
    assert!(
        log.contains("reason=\"nologin\"") || log.contains("reason=nologin"),
        "{log}"
    );
    assert!(!log.contains("secret"), "a password reached the log: {log}");
}

#[test]
fn two_files_first_match_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("primary"),
        "alice:{PLAIN}one\ndave:{PLAIN}dd:::::: nologin\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secondary"),
        "alice:{PLAIN}two\nbob:{PLAIN}bb\ndave:{PLAIN}dd\n",
    )
    .unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "reload_interval = \"100ms\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"primary\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"secondary\"\n",
    );
    assert!(daemon.login("alice", "one").accepted());
    // alice is decided by the first file: the second file's password does not open it.
    assert!(daemon.login("alice", "two").invalid());
    // bob is only in the second file.
    assert!(daemon.login("bob", "bb").accepted());
    // A nologin in the first file is not undone by an entry in the second.
    assert!(daemon.login("dave", "dd").invalid());
    assert!(daemon.login("zed", "x").invalid());

    // Both files are watched.
    std::fs::write(dir.path().join("secondary"), "bob:{PLAIN}new\n").unwrap();
    wait_until(Duration::from_secs(2), "the second file's new password", || {
        daemon.login("bob", "new").accepted()
    });
    assert!(daemon.login("bob", "bb").invalid());
    std::fs::write(dir.path().join("primary"), "dave:{PLAIN}dd\n").unwrap();
    wait_until(Duration::from_secs(2), "the first file's change", || {
        daemon.login("dave", "dd").accepted()
    });
    // alice left the first file (and the second): unknown now.
    assert!(daemon.login("alice", "one").invalid());
}
