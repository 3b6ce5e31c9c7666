//! Scenario 3: POP3 USER/PASS then STAT and RETR from Dovecot; SMTP submission AUTH PLAIN
//! then MAIL/RCPT/DATA reaching the recording backend with `XCLIENT ... LOGIN=<user>`; and
//! the same paths with curl.

use crate::harness::clients::{How, attempt, curl, pop3, smtp};
use crate::harness::dovecot::SUBJECT;
use crate::harness::expect::*;
use crate::harness::{shared, users};

#[test]
fn pop3_user_pass_stat() {
    let env = shared();
    let u = users::POP3_STAT;
    let r = pop3(env.front.nginx.ports.pop3, vec![attempt(How::UserPass, u.name, u.pass)]);
    logged_in(&r, 0);
    assert_eq!(r["stat"][0], 1, "one message: {r:#}");
    let retr = r["retr"].to_string();
    assert!(retr.contains(SUBJECT), "{r:#}");
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(logins[0].contains("pop3-login") && logins[0].contains("method=PLAIN"));
}

#[test]
fn smtp_submission_reaches_backend_with_xclient_login() {
    let env = shared();
    let u = users::SMTP_SUBMIT;
    let r = smtp(
        env.front.nginx.ports.smtp,
        vec![attempt(How::Plain, u.name, u.pass)],
        Some((
            "submit-from@example.test",
            "friend@elsewhere.test",
            "Subject: submission e2e\r\n\r\nline one\r\n",
        )),
    );
    logged_in(&r, 0);
    starts(&r, "mail", "250");
    starts(&r, "rcpt", "250");
    starts(&r, "data", "250");
    let s = one_session(&env.backends.recorder, "FROM:<submit-from@example.test>");
    let lines = s.text();
    assert!(
        lines[0].to_ascii_uppercase().starts_with("EHLO "),
        "nginx greets first: {lines:?}"
    );
    let x = xclient_login(&s, u.name);
    assert!(x.contains("ADDR=127.0.0.1"), "{x}");
    let pos = |p: &str| {
        lines
            .iter()
            .position(|l| l.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("no {p:?} in {lines:?}"))
    };
    let (xc, mail, rcpt, data) = (
        pos("XCLIENT"),
        pos("MAIL FROM:"),
        pos("RCPT TO:<friend@elsewhere.test>"),
        pos("DATA"),
    );
    assert!(xc < mail && mail < rcpt && rcpt < data, "{lines:?}");
    assert!(lines.iter().any(|l| l == "Subject: submission e2e"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "."), "{lines:?}");
    // The client's AUTH never reaches the backend: nginx authenticated it.
    assert!(
        !lines.iter().any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "{lines:?}"
    );
}

/// curl: IMAP (SASL LOGIN) fetch, POP3 (SASL PLAIN) RETR, SMTP AUTH LOGIN + send, for one
/// user. The methods are named because curl would otherwise pick CRAM-MD5, which a bcrypt
/// user cannot use.
#[test]
fn curl_imap_pop3_smtp() {
    let env = shared();
    let u = users::CURL_USER;
    let cred = format!("{}:{}", u.name, u.pass);
    let p = &env.front.nginx.ports;

    let o = curl(&[
        "--user",
        &cred,
        "--login-options",
        "AUTH=LOGIN",
        &format!("imap://127.0.0.1:{}/INBOX/;UID=1", p.imap),
    ]);
    assert!(
        o.status.success() && o.stdout.contains(SUBJECT),
        "imap: {}{}",
        o.stdout,
        o.stderr
    );

    let o = curl(&[
        "--user",
        &cred,
        "--login-options",
        "AUTH=PLAIN",
        &format!("pop3://127.0.0.1:{}/1", p.pop3),
    ]);
    assert!(
        o.status.success() && o.stdout.contains(SUBJECT),
        "pop3: {}{}",
        o.stdout,
        o.stderr
    );
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(logins.len(), 2, "{logins:?}");

    let mail = env.path().join("curl-mail.txt");
    std::fs::write(&mail, "Subject: sent by curl\r\n\r\nhi\r\n").unwrap();
    let o = curl(&[
        "--user",
        &cred,
        "--login-options",
        "AUTH=LOGIN",
        "--mail-from",
        "curl-from@example.test",
        "--mail-rcpt",
        "curl-to@elsewhere.test",
        "--upload-file",
        mail.to_str().unwrap(),
        &format!("smtp://127.0.0.1:{}", p.smtp),
    ]);
    assert!(o.status.success(), "smtp: {}{}", o.stdout, o.stderr);
    let s = one_session(&env.backends.recorder, "FROM:<curl-from@example.test>");
    xclient_login(&s, u.name);
    assert!(s.text().iter().any(|l| l == "Subject: sent by curl"), "{:?}", s.text());
}
