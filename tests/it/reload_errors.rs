//! A users file that cannot be read as a whole (missing, a FIFO): the last good table stays
//! in use, `/readyz` says so, and the failure is logged once, not on every poll.

use std::time::Duration;

use crate::common::{Daemon, header, http_get, wait_until};

const CONFIG: &str = "reload_interval = \"100ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                      [[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n";

#[test]
fn a_missing_users_file_is_reported_once_and_its_return_is_noticed() {
    let d = Daemon::start(CONFIG, "alice:{PLAIN}secret\n");
    std::fs::remove_file(d.path("users.htpasswd")).unwrap();
    wait_until(Duration::from_secs(10), "the read failure in the log", || {
        d.log().contains("cannot read users file")
    });
    // Ten more polls of the missing file.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.log().matches("cannot read users file").count(), 1, "{}", d.log());
    assert_eq!(
        header(&d.login("imap", "alice", "secret"), "Auth-Status").as_deref(),
        Some("OK")
    );
    let (status, body) = http_get(d.admin(), "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready, degraded"), "{body}");
    assert!(
        body.contains("users=1 degraded: keeping the last good table: cannot read users file"),
        "{body}"
    );

    std::fs::write(d.path("users.htpasswd"), "alice:{PLAIN}new-secret\n").unwrap();
    wait_until(Duration::from_secs(10), "the new password", || {
        header(&d.login("imap", "alice", "new-secret"), "Auth-Status").as_deref() == Some("OK")
    });
}

#[test]
fn a_fifo_in_place_of_the_users_file_is_refused_and_never_blocks_a_reload() {
    let d = Daemon::start(CONFIG, "alice:{PLAIN}secret\n");
    let path = d.path("users.htpasswd");
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    wait_until(Duration::from_secs(10), "the FIFO to be refused", || {
        d.log().contains("is not a regular file (it is a FIFO)")
    });
    // Polls report it once; SIGHUP reads it again and says so again: a reloader blocked in
    // the FIFO's open would never get that far.
    let before = d.log().matches("(it is a FIFO)").count();
    d.signal("HUP");
    wait_until(Duration::from_secs(10), "SIGHUP's reload to report the FIFO", || {
        d.log().matches("(it is a FIFO)").count() > before
    });
    assert_eq!(
        header(&d.login("imap", "alice", "secret"), "Auth-Status").as_deref(),
        Some("OK")
    );
    let (status, body) = http_get(d.admin(), "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("keeping the last good table: users file"), "{body}");
    assert!(body.contains("is not a regular file (it is a FIFO)"), "{body}");
    // SIGTERM still ends the daemon.
    assert!(d.stop(), "the daemon did not stop cleanly");
}
