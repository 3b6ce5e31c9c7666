//! Scenario 5: inbound MX (`smtp_auth none`): RCPT to a local domain is let through to the
//! backend with XCLIENT and no LOGIN=; RCPT to a foreign domain gets `550 5.7.1`.

use crate::harness::clients::smtp;
use crate::harness::expect::*;
use crate::harness::shared;

#[test]
fn local_domain_reaches_backend_without_login() {
    let env = shared();
    let r = smtp(
        env.front.nginx.ports.mx,
        vec![],
        Some((
            "mx-local-from@sender.test",
            "postmaster@example.test",
            "Subject: inbound e2e\r\n\r\nhi\r\n",
        )),
    );
    starts(&r, "mail", "250");
    starts(&r, "rcpt", "250");
    starts(&r, "data", "250");
    let s = one_session(&env.backends.recorder, "FROM:<mx-local-from@sender.test>");
    let lines = s.text();
    let x = s.line("XCLIENT ").unwrap_or_else(|| panic!("no XCLIENT: {lines:?}"));
    assert!(x.contains("ADDR=127.0.0.1"), "{x}");
    assert!(
        !x.contains("LOGIN="),
        "an unauthenticated MX session must not carry LOGIN=: {x}"
    );
    assert!(s.line("RCPT TO:<postmaster@example.test>").is_some(), "{lines:?}");
    assert!(lines.iter().any(|l| l == "Subject: inbound e2e"), "{lines:?}");
}

#[test]
fn foreign_domain_relay_denied() {
    let env = shared();
    let r = smtp(
        env.front.nginx.ports.mx,
        vec![],
        Some((
            "mx-foreign-from@sender.test",
            "someone@foreign.test",
            "Subject: relay\r\n\r\nx\r\n",
        )),
    );
    starts(&r, "mail", "250");
    starts(&r, "rcpt", "550 5.7.1");
    assert!(
        env.backends
            .recorder
            .sessions_with("mx-foreign-from@sender.test")
            .is_empty()
    );
}
