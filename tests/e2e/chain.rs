//! Scenario 8: the nginx-only chain's own mail config (`auth_http
//! 127.0.0.1:<port>/check`, default auth methods) works unchanged against mailauthd.

use crate::harness::clients::{How, attempt, imap, pop3, smtp};
use crate::harness::expect::*;
use crate::harness::nginx::{Nginx, chain_conf};
use crate::harness::{shared, users};

#[test]
fn chain_mail_config_against_mailauthd() {
    let env = shared();
    let port = env.front.mailauthd.port;
    let ngx = Nginx::start(&env.path().join("chain-nginx"), |d, p| chain_conf(d, port, p));
    let u = users::CHAIN_USER;
    let p = &ngx.ports;

    let r = imap(
        p.imap,
        vec![
            attempt(How::Quoted, u.name, "wrong"),
            attempt(How::Quoted, u.name, u.pass),
        ],
    );
    refused(&r, 0, IMAP_INVALID);
    logged_in(&r, 1);
    starts(&r, "select", "OK");

    let r = pop3(p.pop3, vec![attempt(How::UserPass, u.name, u.pass)]);
    logged_in(&r, 0);
    assert_eq!(r["stat"][0], 1, "{r:#}");
    assert_eq!(env.backends.dovecot.logins(u.name).len(), 2);

    let r = smtp(
        p.smtp,
        vec![attempt(How::Login, u.name, u.pass)],
        Some((
            "chain-from@example.test",
            "x@elsewhere.test",
            "Subject: chain\r\n\r\nx\r\n",
        )),
    );
    logged_in(&r, 0);
    starts(&r, "data", "250");
    xclient_login(
        &one_session(&env.backends.recorder, "FROM:<chain-from@example.test>"),
        u.name,
    );

    let log = ngx.error_log_text();
    assert!(log.contains("/check") || !log.contains("auth http server"), "{log}");
}
