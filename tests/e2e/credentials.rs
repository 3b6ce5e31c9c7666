//! Scenario 2: passwords with space, `%`, `%20`, `"`, `\`, `+`, `=` and UTF-8, and user
//! names with a space, through every client path nginx offers. All log in, and the backend
//! got exactly the user's bytes: Dovecot checks the password against its own passwd-file and
//! logs the user name; the SMTP recorder shows `XCLIENT ... LOGIN=`.

use crate::harness::clients::{How, attempt, curl, imap, pop3, smtp};
use crate::harness::dovecot::SUBJECT;
use crate::harness::expect::*;
use crate::harness::users::{self, User};
use crate::harness::{Env, shared};

fn dovecot_got(env: &Env, u: User, proto: &str) {
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(
        logins.len(),
        1,
        "Dovecot should log one login for {:?}: {logins:?}",
        u.name
    );
    assert!(logins[0].contains(&format!("{proto}-login")), "{logins:?}");
    assert!(env.backends.dovecot.auth_failures(u.name).is_empty());
}

#[test]
fn imap_quoted_strings() {
    let env = shared();
    let u = users::ODD_IMAP_QUOTED;
    let r = imap(env.front.nginx.ports.imap, vec![attempt(How::Quoted, u.name, u.pass)]);
    logged_in(&r, 0);
    starts(&r, "select", "OK");
    dovecot_got(&env, u, "imap");
}

#[test]
fn imap_literals() {
    let env = shared();
    let u = users::ODD_IMAP_LITERAL;
    let r = imap(env.front.nginx.ports.imap, vec![attempt(How::Literal, u.name, u.pass)]);
    logged_in(&r, 0);
    starts(&r, "select", "OK");
    assert!(r["fetch"].as_str().unwrap_or("").contains(SUBJECT), "{r:#}");
    dovecot_got(&env, u, "imap");
}

#[test]
fn pop3_user_pass() {
    let env = shared();
    let u = users::ODD_POP3;
    let r = pop3(env.front.nginx.ports.pop3, vec![attempt(How::UserPass, u.name, u.pass)]);
    logged_in(&r, 0);
    assert_eq!(r["stat"][0], 1, "{r:#}");
    dovecot_got(&env, u, "pop3");
}

fn smtp_odd(u: User, how: How) {
    let env = shared();
    let from = format!("sender-{}@example.test", u.name.replace(' ', "-"));
    let body = format!("Subject: odd {:?}\r\n\r\nhello\r\n", how);
    let r = smtp(
        env.front.nginx.ports.smtp,
        vec![attempt(how, u.name, u.pass)],
        Some((&from, "rcpt@example.test", &body)),
    );
    logged_in(&r, 0);
    starts(&r, "data", "250");
    let s = one_session(&env.backends.recorder, &format!("FROM:<{from}>"));
    xclient_login(&s, u.name);
}

#[test]
fn smtp_auth_plain() {
    smtp_odd(users::ODD_SMTP_PLAIN, How::Plain);
}

#[test]
fn smtp_auth_login() {
    smtp_odd(users::ODD_SMTP_LOGIN, How::Login);
}

/// curl's IMAP SASL PLAIN with the same password, fetching the message by UID.
#[test]
fn curl_imap_sasl_plain() {
    let env = shared();
    let u = users::ODD_CURL;
    let url = format!("imap://127.0.0.1:{}/INBOX/;UID=1", env.front.nginx.ports.imap);
    let o = curl(&[
        "--user",
        &format!("{}:{}", u.name, u.pass),
        "--login-options",
        "AUTH=PLAIN",
        &url,
    ]);
    assert!(o.status.success(), "curl failed: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains(SUBJECT), "{}", o.stdout);
    dovecot_got(&env, u, "imap");
}
