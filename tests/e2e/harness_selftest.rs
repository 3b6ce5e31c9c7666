//! The harness pieces on their own, without nginx or mailauthd in the path: if one of these
//! fails, the scenario failures are about the harness, not the daemon.

use crate::harness::clients::{How, attempt, imap, pop3, smtp};
use crate::harness::dovecot::{Dovecot, SUBJECT};
use crate::harness::nginx::{self, Nginx};
use crate::harness::recorder::Recorder;
use crate::harness::{prereq, users};

fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("mailauthd-e2e-self-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Dovecot serves IMAP (SELECT + FETCH) and POP3 (STAT) straight to imaplib/poplib, with
/// the odd password, and logs the exact user name.
#[test]
fn dovecot_serves_imap_and_pop3_directly() {
    prereq::check();
    let dir = tempdir();
    let d = Dovecot::start(dir.path(), &[users::ODD_IMAP_QUOTED, users::ODD_POP3]);
    let u = users::ODD_IMAP_QUOTED;
    let r = imap(d.imap_port, vec![attempt(How::Quoted, u.name, u.pass)]);
    assert_eq!(r["attempts"][0]["ok"], true, "{r}");
    assert!(r["select"].as_str().unwrap().starts_with("OK"), "{r}");
    assert!(r["fetch"].as_str().unwrap().contains(SUBJECT), "{r}");
    let p = users::ODD_POP3;
    let r = pop3(d.pop3_port, vec![attempt(How::UserPass, p.name, p.pass)]);
    assert_eq!(r["attempts"][0]["ok"], true, "{r}");
    assert_eq!(r["stat"][0], 1, "{r}");
    assert_eq!(d.logins(u.name).len(), 1, "{}", d.log_text());
    assert_eq!(d.logins(p.name).len(), 1, "{}", d.log_text());
    let r = imap(d.imap_port, vec![attempt(How::Quoted, u.name, "wrong")]);
    assert_eq!(r["attempts"][0]["ok"], false, "{r}");
}

/// The recorder speaks enough ESMTP for smtplib, and records every line.
#[test]
fn recorder_speaks_smtp() {
    let rec = Recorder::start();
    let r = smtp(
        rec.port,
        vec![],
        Some(("from@selftest.test", "to@example.test", "Subject: x\r\n\r\nbody\r\n")),
    );
    assert!(r["data"].as_str().unwrap().starts_with("250"), "{r}");
    let s = rec.sessions_with("MAIL FROM:<from@selftest.test>");
    assert_eq!(s.len(), 1);
    let lines = s[0].text();
    assert!(
        lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("RCPT TO:<to@example.test>")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "body"), "{lines:?}");
    assert!(lines.last().unwrap().eq_ignore_ascii_case("QUIT"), "{lines:?}");
}

/// Both nginx configs pass `nginx -t` and nginx listens on every port.
#[test]
fn nginx_configs_start() {
    prereq::check();
    let dir = tempdir();
    let a = Nginx::start(&dir.path().join("std"), |d, p| nginx::standard_conf(d, 1, p));
    let b = Nginx::start(&dir.path().join("chain"), |d, p| nginx::chain_conf(d, 1, p));
    drop((a, b));
}
