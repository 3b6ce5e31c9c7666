//! Scenario 4: APOP and CRAM-MD5 with real digests computed by the clients. A `{PLAIN}`
//! user logs in (so mailauthd answered with `Auth-Pass`, which nginx then used to log in to
//! Dovecot); a bcrypt user is refused, without Auth-Wait, so nginx closes the connection.

use crate::harness::clients::{How, attempt, curl, imap, pop3, smtp};
use crate::harness::dovecot::SUBJECT;
use crate::harness::expect::*;
use crate::harness::users::{self, User};
use crate::harness::{Env, shared};

/// Dovecot saw one PLAIN login with the cleartext nginx got as `Auth-Pass`.
fn backend_login(env: &Env, u: User, proto: &str) {
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert!(logins[0].contains(&format!("{proto}-login")), "{logins:?}");
    assert!(env.backends.dovecot.auth_failures(u.name).is_empty());
}

#[test]
fn imap_cram_md5() {
    let env = shared();
    let u = users::CRAM_IMAP;
    let r = imap(env.front.nginx.ports.imap, vec![attempt(How::Cram, u.name, u.pass)]);
    logged_in(&r, 0);
    starts(&r, "select", "OK");
    backend_login(&env, u, "imap");
}

#[test]
fn pop3_apop() {
    let env = shared();
    let u = users::APOP_POP3;
    let r = pop3(env.front.nginx.ports.pop3, vec![attempt(How::Apop, u.name, u.pass)]);
    // poplib.apop read the salt from nginx's greeting.
    assert!(r["greeting"].as_str().unwrap_or("").contains("@mail.test>"), "{r:#}");
    logged_in(&r, 0);
    assert_eq!(r["stat"][0], 1, "{r:#}");
    backend_login(&env, u, "pop3");
}

#[test]
fn pop3_cram_md5() {
    let env = shared();
    let u = users::CRAM_POP3;
    let r = pop3(env.front.nginx.ports.pop3, vec![attempt(How::Cram, u.name, u.pass)]);
    logged_in(&r, 0);
    assert_eq!(r["stat"][0], 1, "{r:#}");
    backend_login(&env, u, "pop3");
}

#[test]
fn smtp_cram_md5() {
    let env = shared();
    let u = users::CRAM_SMTP;
    let r = smtp(
        env.front.nginx.ports.smtp,
        vec![attempt(How::Cram, u.name, u.pass)],
        Some((
            "cram-from@example.test",
            "x@elsewhere.test",
            "Subject: cram\r\n\r\nx\r\n",
        )),
    );
    logged_in(&r, 0);
    starts(&r, "data", "250");
    let s = one_session(&env.backends.recorder, "FROM:<cram-from@example.test>");
    xclient_login(&s, u.name);
}

/// curl computes the CRAM-MD5 digest itself.
#[test]
fn curl_imap_cram_md5() {
    let env = shared();
    let u = users::CRAM_CURL;
    let url = format!("imap://127.0.0.1:{}/INBOX/;UID=1", env.front.nginx.ports.imap);
    let o = curl(&[
        "--user",
        &format!("{}:{}", u.name, u.pass),
        "--login-options",
        "AUTH=CRAM-MD5",
        &url,
    ]);
    assert!(
        o.status.success() && o.stdout.contains(SUBJECT),
        "{}{}",
        o.stdout,
        o.stderr
    );
    backend_login(&env, u, "imap");
}

/// A bcrypt user cannot use APOP/CRAM-MD5 even with the right password: each is refused at
/// once (no Auth-Wait) and nginx closes the connection. The same password works as plain.
#[test]
fn hashed_user_refused() {
    let env = shared();
    let u = users::DIGEST_HASHED;
    let p = &env.front.nginx.ports;
    let check = |r: &serde_json::Value, text: &str| {
        refused(r, 0, text);
        assert!(secs(r, 0) < WAITED, "no Auth-Wait for digests: {r:#}");
        closed(r);
    };
    check(&imap(p.imap, vec![attempt(How::Cram, u.name, u.pass)]), IMAP_INVALID);
    check(&pop3(p.pop3, vec![attempt(How::Apop, u.name, u.pass)]), POP3_INVALID);
    check(&pop3(p.pop3, vec![attempt(How::Cram, u.name, u.pass)]), POP3_INVALID);
    check(
        &smtp(p.smtp, vec![attempt(How::Cram, u.name, u.pass)], None),
        SMTP_INVALID,
    );
    assert!(env.backends.dovecot.logins(u.name).is_empty());
    let r = imap(p.imap, vec![attempt(How::Quoted, u.name, u.pass)]);
    logged_in(&r, 0);
    assert_eq!(env.backends.dovecot.logins(u.name).len(), 1);
}
