//! A users file that goes missing: the last good table stays in use, and the failure is
//! logged once, not on every poll.

use std::time::Duration;

use crate::common::{Daemon, header, wait_until};

#[test]
fn a_missing_users_file_is_reported_once_and_its_return_is_noticed() {
    let d = Daemon::start(
        "reload_interval = \"100ms\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        "alice:{PLAIN}secret\n",
    );
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

    std::fs::write(d.path("users.htpasswd"), "alice:{PLAIN}new-secret\n").unwrap();
    wait_until(Duration::from_secs(10), "the new password", || {
        header(&d.login("imap", "alice", "new-secret"), "Auth-Status").as_deref() == Some("OK")
    });
}
