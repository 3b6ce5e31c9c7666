//! Scenario 1: IMAP LOGIN through nginx: a good password reaches Dovecot and SELECT works;
//! a wrong one is refused after the Auth-Wait and can be retried on the same connection;
//! past `max_attempts` (3 in the suite) nginx closes the connection.

use crate::harness::clients::{How, attempt, imap};
use crate::harness::dovecot::SUBJECT;
use crate::harness::expect::*;
use crate::harness::{shared, users};

#[test]
fn good_password_selects_inbox() {
    let env = shared();
    let u = users::IMAP_GOOD;
    let r = imap(env.front.nginx.ports.imap, vec![attempt(How::Quoted, u.name, u.pass)]);
    logged_in(&r, 0);
    starts(&r, "select", "OK");
    assert!(r["fetch"].as_str().unwrap_or("").contains(SUBJECT), "{r:#}");
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(
        logins[0].contains("imap-login") && logins[0].contains("method=PLAIN"),
        "{logins:?}"
    );
}

#[test]
fn wrong_password_then_retry_on_same_connection() {
    let env = shared();
    let u = users::IMAP_RETRY;
    let r = imap(
        env.front.nginx.ports.imap,
        vec![
            attempt(How::Quoted, u.name, "not-the-password"),
            attempt(How::Quoted, u.name, u.pass),
        ],
    );
    refused(&r, 0, IMAP_INVALID);
    assert!(secs(&r, 0) >= WAITED, "the refusal should come after Auth-Wait: {r:#}");
    logged_in(&r, 1);
    starts(&r, "select", "OK");
    // Only the good attempt reached the backend.
    assert_eq!(env.backends.dovecot.logins(u.name).len(), 1);
    assert!(env.backends.dovecot.auth_failures(u.name).is_empty());
}

#[test]
fn attempt_cap_closes_connection() {
    let env = shared();
    let u = users::IMAP_CAP;
    let wrong = |n: u32| attempt(How::Quoted, u.name, &format!("wrong-{n}"));
    let r = imap(env.front.nginx.ports.imap, vec![wrong(1), wrong(2), wrong(3), wrong(4)]);
    for i in 0..2 {
        refused(&r, i, IMAP_INVALID);
        assert!(
            secs(&r, i) >= WAITED,
            "attempt {i} is below the cap: Auth-Wait expected: {r:#}"
        );
    }
    // Attempt 3 = max_attempts: refused without Auth-Wait, so nginx closes the connection.
    refused(&r, 2, IMAP_INVALID);
    assert!(secs(&r, 2) < WAITED, "no Auth-Wait from max_attempts on: {r:#}");
    assert_eq!(r["attempts"][3]["closed"], true, "{r:#}");
    closed(&r);
    assert!(env.backends.dovecot.logins(u.name).is_empty());
}
