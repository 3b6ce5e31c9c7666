//! Scenario 6: what each protocol's client sees on a refusal, and on a temporary failure
//! (users file missing at start), which must not read as "invalid password".

use crate::harness::clients::{How, attempt, imap, pop3, smtp};
use crate::harness::expect::*;
use crate::harness::{shared, users};

#[test]
fn wrong_password_texts() {
    let env = shared();
    let u = users::FAIL_TEXTS;
    let p = &env.front.nginx.ports;
    for name in [u.name, "nobody-here@example.test"] {
        let r = imap(p.imap, vec![attempt(How::Quoted, name, "bad")]);
        refused(&r, 0, IMAP_INVALID);
        still_open(&r);
        let r = pop3(p.pop3, vec![attempt(How::UserPass, name, "bad")]);
        refused(&r, 0, POP3_INVALID);
        still_open(&r);
        let r = smtp(p.smtp, vec![attempt(How::Plain, name, "bad")], None);
        refused(&r, 0, SMTP_INVALID);
        still_open(&r);
    }
    assert!(env.backends.dovecot.logins(u.name).is_empty());
}

#[test]
fn temporary_failure_texts() {
    let env = shared();
    let front = env.extra_front("temp-failure", &env.options(None));
    let u = users::FAIL_TEXTS;
    let p = &front.nginx.ports;
    let temp = |r: &serde_json::Value, prefix: &str| {
        let resp = r["attempts"][0]["resp"].as_str().unwrap_or("");
        assert_eq!(r["attempts"][0]["ok"], false, "{r:#}");
        assert!(resp.starts_with(prefix), "want {prefix:?}: {r:#}");
        assert!(
            !resp.to_lowercase().contains("invalid"),
            "temporary, not invalid: {r:#}"
        );
    };
    temp(
        &imap(p.imap, vec![attempt(How::Quoted, u.name, u.pass)]),
        "NO [UNAVAILABLE]",
    );
    temp(
        &pop3(p.pop3, vec![attempt(How::UserPass, u.name, u.pass)]),
        "-ERR [SYS/TEMP]",
    );
    temp(
        &smtp(p.smtp, vec![attempt(How::Plain, u.name, u.pass)], None),
        "454 4.7.0",
    );
    let log = front.mailauthd.log_text();
    assert!(
        log.contains("missing-dir"),
        "mailauthd should name the users file: {log}"
    );
}
