//! In-process tests of the decision rules: the passdb chain across sources, the digest path,
//! and `Auth-Wait`. The parts are built by `daemon::assemble` from a config text, as `serve`
//! builds them; requests are nginx-shaped bytes parsed by the wire module.

use std::path::Path;

use super::*;
use crate::auth_http::parse_request;
use crate::config::ConfigOrigin;

/// bcrypt cost 4 of `x`.
const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

/// Two users files, `a` then `b`, in a temp folder; the brute-force policy off.
fn authenticator(dir: &Path, a: &str, b: &str) -> Authenticator {
    std::fs::write(dir.join("a"), a).unwrap();
    std::fs::write(dir.join("b"), b).unwrap();
    let text = r#"
        [auth]
        wait = "3s"
        max_attempts = 3
        [policy]
        enabled = false
        [smtp]
        local_domains = ["example.org"]
        [route]
        imap = "192.0.2.1:143"
        pop3 = "192.0.2.1:110"
        smtp = "192.0.2.1:25"
        [[source]]
        kind = "htpasswd"
        path = "a"
        [[source]]
        kind = "htpasswd"
        path = "b"
    "#;
    let config = Config::from_toml(text, ConfigOrigin::File(dir.join("t.toml")), dir).unwrap();
    let auth = crate::daemon::assemble(Arc::new(config));
    crate::daemon::reload_sources(&auth, true);
    auth
}

fn request(method: &str, protocol: &str, user: &str, pass: &str, extra: &str) -> AuthRequest {
    let text = format!(
        "GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: {method}\r\nAuth-User: {user}\r\nAuth-Pass: {pass}\r\n\
         Auth-Protocol: {protocol}\r\n{extra}Client-IP: 192.0.2.9\r\n\r\n"
    );
    parse_request(text.as_bytes()).unwrap()
}

fn plain(user: &str, pass: &str) -> AuthRequest {
    request("plain", "imap", user, pass, "Auth-Login-Attempt: 1\r\n")
}

/// The RFC 1939 §7 APOP example: its salt, and the digest of the password `tanstaaf`.
const APOP_SALT: &str = "<1896.697170952@dbc.mtview.ca.us>";
const APOP_DIGEST: &str = "c4c9334bac560ecc979e58001b3e22fb";
/// The RFC 2195 §2 CRAM-MD5 example: the challenge, and the digest of `tanstaaftanstaaf`.
const CRAM_SALT: &str = "<1896.697170952@postoffice.reston.mci.net>";
const CRAM_DIGEST: &str = "b913a602c7eda7a495b4e6e7334d3890";

fn accepted_by(d: &Decision) -> Option<&str> {
    matches!(d.verdict, Verdict::Accept(_)).then(|| d.source.as_deref().unwrap_or(""))
}

fn wait(d: &Decision) -> Option<u32> {
    match &d.verdict {
        Verdict::Refuse(r) => r.wait,
        Verdict::Accept(_) => panic!("accepted: {d:?}"),
    }
}

#[tokio::test]
async fn a_password_rejected_by_one_source_is_accepted_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), "bob:{PLAIN}old\n", &format!("bob:{BCRYPT_X}\n"));
    let d = auth.decide(&plain("bob", "x")).await;
    assert!(accepted_by(&d).is_some_and(|s| s.ends_with("/b")), "{d:?}");
    assert_eq!(d.reason, Reason::Ok);
    let d = auth.decide(&plain("bob", "old")).await;
    assert!(accepted_by(&d).is_some_and(|s| s.ends_with("/a")), "{d:?}");
    // Wrong in both: the first source that knew the user is named.
    let d = auth.decide(&plain("bob", "neither")).await;
    assert_eq!(d.reason, Reason::WrongPassword);
    assert!(d.source.as_deref().is_some_and(|s| s.ends_with("/a")), "{d:?}");
    assert_eq!(wait(&d), Some(3));
}

#[tokio::test]
async fn a_disabled_account_is_final_even_if_a_later_source_has_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let a = "carol:{PLAIN}c:1000:1000::/home/carol::nologin\n\
             dave:{PLAIN}d:1000:1000::/home/dave::allow_nets=198.51.100.0/24\n";
    let b = "carol:{PLAIN}c\ndave:{PLAIN}d\n";
    let auth = authenticator(dir.path(), a, b);
    let d = auth.decide(&plain("carol", "c")).await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::Nologin), "{d:?}");
    let d = auth.decide(&plain("dave", "d")).await;
    assert_eq!(
        (d.result(), d.reason),
        ("invalid", Reason::NotAllowedFromNetwork),
        "{d:?}"
    );
}

#[tokio::test]
async fn an_unknown_user_costs_a_dummy_of_the_known_users_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), &format!("bob:{BCRYPT_X}\n"), "");
    let d = auth.decide(&plain("nobody", "x")).await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::UnknownUser));
    assert_eq!(d.scheme.map(|s| s.label).as_deref(), Some("bcrypt-4"));
}

#[tokio::test]
async fn a_source_that_cannot_answer_makes_an_unknown_user_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), "bob:{PLAIN}x\n").unwrap();
    let fresh = authenticator_without_b(dir.path());
    let d = fresh.decide(&plain("nobody", "x")).await;
    assert_eq!((d.result(), d.reason), ("tempfail", Reason::SourceUnavailable), "{d:?}");
    // A user the readable source accepts is still accepted.
    assert!(accepted_by(&fresh.decide(&plain("bob", "x")).await).is_some());
}

/// As [`authenticator`], with `b` missing when the sources are first loaded.
fn authenticator_without_b(dir: &Path) -> Authenticator {
    let text = "[policy]\nenabled = false\n[[source]]\nkind = \"htpasswd\"\npath = \"a\"\n\
                [[source]]\nkind = \"htpasswd\"\npath = \"b\"\n";
    let config = Config::from_toml(text, ConfigOrigin::File(dir.join("t.toml")), dir).unwrap();
    let auth = crate::daemon::assemble(Arc::new(config));
    crate::daemon::reload_sources(&auth, true);
    auth
}

#[tokio::test]
async fn apop_and_cram_md5_follow_the_chain_and_echo_the_cleartext() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(
        dir.path(),
        "mrose:{PLAIN}wrong\n",
        "mrose:{PLAIN}tanstaaf\ntim:{PLAIN}tanstaaftanstaaf\n",
    );
    let salt = format!("Auth-Salt: {APOP_SALT}\r\n");
    let d = auth.decide(&request("apop", "pop3", "mrose", APOP_DIGEST, &salt)).await;
    assert!(accepted_by(&d).is_some_and(|s| s.ends_with("/b")), "{d:?}");
    let Verdict::Accept(accept) = &d.verdict else {
        unreachable!()
    };
    assert_eq!(accept.pass.as_deref().map(Vec::as_slice), Some(&b"tanstaaf"[..]));
    assert_eq!(
        wait(
            &auth
                .decide(&request("apop", "pop3", "mrose", &"0".repeat(32), &salt))
                .await
        ),
        None
    );

    let salt = format!("Auth-Salt: {CRAM_SALT}\r\n");
    let d = auth
        .decide(&request("cram-md5", "imap", "tim", CRAM_DIGEST, &salt))
        .await;
    assert!(accepted_by(&d).is_some(), "{d:?}");
    let d = auth
        .decide(&request("cram-md5", "imap", "tim", &"0".repeat(32), &salt))
        .await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::WrongDigest));
    let d = auth.decide(&request("apop", "pop3", "mrose", APOP_DIGEST, "")).await;
    assert_eq!(d.reason, Reason::NoSalt);
}

#[tokio::test]
async fn a_digest_without_a_sendable_cleartext_is_a_temporary_failure_for_imap_only() {
    let dir = tempfile::tempdir().unwrap();
    // Dovecot's {CRAM-MD5} of `tanstaaftanstaaf`, made with
    // `doveadm pw -s CRAM-MD5 -p tanstaaftanstaaf`.
    let stored = "{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b";
    let auth = authenticator(dir.path(), &format!("tim:{stored}\n"), "");
    let salt = format!("Auth-Salt: {CRAM_SALT}\r\n");
    let imap = auth
        .decide(&request("cram-md5", "imap", "tim", CRAM_DIGEST, &salt))
        .await;
    let smtp = auth
        .decide(&request("cram-md5", "smtp", "tim", CRAM_DIGEST, &salt))
        .await;
    // The digest is right, but IMAP needs a password for the backend that nobody stored:
    // a temporary failure, not a wrong password. SMTP needs none.
    assert_eq!(
        (imap.result(), imap.reason),
        ("tempfail", Reason::NoCleartextForBackend)
    );
    assert!(accepted_by(&smtp).is_some(), "{smtp:?}");
    let Verdict::Accept(accept) = &smtp.verdict else {
        unreachable!()
    };
    assert!(accept.pass.is_none());
    let wrong = auth
        .decide(&request("cram-md5", "smtp", "tim", &"0".repeat(32), &salt))
        .await;
    assert_eq!(wrong.reason, Reason::WrongDigest);
}

#[tokio::test]
async fn a_password_of_512_bytes_or_more_is_wrong_without_hashing() {
    let dir = tempfile::tempdir().unwrap();
    // libxcrypt's limit: a passphrase of 512 bytes or more is refused. 511 still passes.
    let long = "p".repeat(511);
    let auth = authenticator(dir.path(), &format!("bob:{{PLAIN}}{long}\n"), "");
    assert!(accepted_by(&auth.decide(&plain("bob", &long)).await).is_some());
    for user in ["bob", "nobody"] {
        let d = auth.decide(&plain(user, &format!("{long}p"))).await;
        assert_eq!((d.result(), d.reason), ("invalid", Reason::PasswordTooLong));
        assert_eq!(d.scheme, None, "nothing was hashed");
        assert_eq!(wait(&d), Some(3));
    }
}

#[tokio::test]
async fn auth_wait_stops_at_the_attempt_cap() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), "bob:{PLAIN}x\n", "");
    for (attempt, expected) in [(1, Some(3)), (2, Some(3)), (3, None)] {
        let req = request(
            "plain",
            "imap",
            "bob",
            "bad",
            &format!("Auth-Login-Attempt: {attempt}\r\n"),
        );
        assert_eq!(wait(&auth.decide(&req).await), expected, "attempt {attempt}");
    }
}

#[tokio::test]
async fn an_inbound_mx_is_routed_for_local_domains_only() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), "", "");
    let to = |rcpt: &str| {
        format!("Auth-SMTP-To: RCPT TO:<{rcpt}>\r\nAuth-SMTP-Helo: mx\r\nAuth-SMTP-From: MAIL FROM:<a@b>\r\n")
    };
    let d = auth
        .decide(&request("none", "smtp", "", "", &to("u@example.org")))
        .await;
    assert_eq!(d.reason, Reason::LocalRecipient);
    let Verdict::Accept(accept) = &d.verdict else {
        unreachable!()
    };
    assert_eq!((accept.server.to_string(), accept.port), ("192.0.2.1".to_owned(), 25));
    let d = auth
        .decide(&request("none", "smtp", "", "", &to("u@elsewhere.net")))
        .await;
    assert_eq!((d.result(), d.reason), ("relay-denied", Reason::RelayDenied));
}

#[tokio::test]
async fn oauth_methods_get_the_ordinary_refusal_without_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), "bob:{PLAIN}token\n", "");
    for method in ["xoauth2", "oauthbearer"] {
        let d = auth
            .decide(&request(method, "imap", "bob", "token", "Auth-Login-Attempt: 1\r\n"))
            .await;
        assert_eq!(
            (d.result(), d.reason),
            ("invalid", Reason::MethodNotSupported),
            "{method}"
        );
        assert_eq!(wait(&d), None, "{method}");
        assert_eq!(
            crate::auth_http::render_reply(&d.verdict, Some(MailProtocol::Imap)),
            &b"HTTP/1.0 200 OK\r\nAuth-Status: [AUTHENTICATIONFAILED] Invalid login or password\r\n\r\n"[..]
        );
    }
}

/// A password login from `client_ip`, byte for byte as nginx sends it.
fn plain_from(user: &str, pass: &str, client_ip: &str) -> AuthRequest {
    let text = format!(
        "GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: plain\r\nAuth-User: {user}\r\nAuth-Pass: {pass}\r\n\
         Auth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\n\r\n"
    );
    parse_request(text.as_bytes()).unwrap()
}

#[tokio::test]
async fn allow_nets_sees_the_ipv4_client_of_a_mapped_address_and_no_unix_client() {
    let dir = tempfile::tempdir().unwrap();
    let a = "dave:{PLAIN}d:1000:1000::/home/dave::allow_nets=192.0.2.0/24\nerin:{PLAIN}e\n";
    let auth = authenticator(dir.path(), a, "");
    let d = auth.decide(&plain_from("dave", "d", "::ffff:192.0.2.7")).await;
    assert_eq!(d.reason, Reason::Ok, "{d:?}");
    let d = auth.decide(&plain_from("dave", "d", "::ffff:198.51.100.7")).await;
    assert_eq!(d.reason, Reason::NotAllowedFromNetwork, "{d:?}");
    // A unix-socket client has no address: its password is decided, and it is in no network.
    let d = auth.decide(&plain_from("erin", "e", "unix:")).await;
    assert_eq!(d.reason, Reason::Ok, "{d:?}");
    let d = auth.decide(&plain_from("erin", "wrong", "unix:")).await;
    assert_eq!(d.reason, Reason::WrongPassword, "{d:?}");
    let d = auth.decide(&plain_from("dave", "d", "unix:")).await;
    assert_eq!(d.reason, Reason::NotAllowedFromNetwork, "{d:?}");
}

/// One users file and `extra` config (routes, `[backend]`); the brute-force policy off.
fn routed(dir: &Path, users: &str, extra: &str) -> Authenticator {
    std::fs::write(dir.join("a"), users).unwrap();
    let text = format!("[policy]\nenabled = false\n{extra}\n[[source]]\nkind = \"htpasswd\"\npath = \"a\"\n");
    let config = Config::from_toml(&text, ConfigOrigin::File(dir.join("t.toml")), dir).unwrap();
    let auth = crate::daemon::assemble(Arc::new(config));
    crate::daemon::reload_sources(&auth, true);
    auth
}

/// Server, port, Auth-User and Auth-Pass of an accepted login.
fn sent(d: &Decision) -> (String, Option<String>, Option<String>) {
    let Verdict::Accept(a) = &d.verdict else {
        panic!("refused: {d:?}")
    };
    (
        std::net::SocketAddr::new(a.server, a.port).to_string(),
        a.user.as_ref().map(|u| String::from_utf8_lossy(u).into_owned()),
        a.pass.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
    )
}

const ROUTES: &str = "[route]\nimap = \"192.0.2.1:143\"\n[route.domains.\"example.org\"]\nimap = \"192.0.2.2:143\"\n";
const MASTER: &str = "[backend]\nmaster_user = \"proxy\"\nmaster_password = \"master-secret-0123456789\"\n";
/// Dovecot's {CRAM-MD5} of `tanstaaftanstaaf` (`doveadm pw -s CRAM-MD5 -p tanstaaftanstaaf`).
const CRAM_STATE: &str = "{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b";

#[tokio::test]
async fn users_file_fields_route_before_domains_and_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let users = "a@example.org:{PLAIN}pw\n\
                 b@example.org:{PLAIN}pw:::::: proxy host=198.51.100.7 port=1143\n\
                 c@other.net:{PLAIN}pw\n\
                 d@example.org:{PLAIN}pw:::::: proxy_maybe destuser=dee pass=backend-pass\n\
                 e@example.org:{PLAIN}pw:::::: host=store1\n";
    let auth = routed(dir.path(), users, ROUTES);
    let d = auth.decide(&plain("a@example.org", "pw")).await;
    assert_eq!(sent(&d), ("192.0.2.2:143".into(), None, None));
    let d = auth.decide(&plain("b@example.org", "pw")).await;
    assert_eq!(sent(&d), ("198.51.100.7:1143".into(), None, None));
    let Some(crate::route::Routed::To(choice)) = d.route else {
        panic!("{d:?}")
    };
    assert_eq!(choice.rule, crate::route::Rule::Source);
    let d = auth.decide(&plain("c@other.net", "pw")).await;
    assert_eq!(sent(&d), ("192.0.2.1:143".into(), None, None));
    // destuser= and pass=: the backend sees that name and password.
    let d = auth.decide(&plain("d@example.org", "pw")).await;
    assert_eq!(
        sent(&d),
        ("192.0.2.2:143".into(), Some("dee".into()), Some("backend-pass".into()))
    );
    // A host= name is never resolved per login: a temporary failure, not another backend.
    let d = auth.decide(&plain("e@example.org", "pw")).await;
    assert_eq!((d.result(), d.reason), ("tempfail", Reason::SourceRouteUnusable));
    // A wrong password is still a wrong password, whatever the fields say.
    let d = auth.decide(&plain("b@example.org", "nope")).await;
    assert_eq!(d.reason, Reason::WrongPassword);
}

#[tokio::test]
async fn a_master_user_logs_in_for_a_cram_md5_state_and_a_destuser() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("tim:{CRAM_STATE}\nann:{{PLAIN}}pw:::::: destuser=ann2\nbob:{{PLAIN}}tanstaaftanstaaf\n");
    let salt = format!("Auth-Salt: {CRAM_SALT}\r\n");
    let cram = |user: &str| request("cram-md5", "imap", user, CRAM_DIGEST, &salt);
    let auth = routed(dir.path(), &users, MASTER);
    let secret = Some("master-secret-0123456789".to_owned());
    assert_eq!(
        sent(&auth.decide(&cram("tim")).await),
        ("127.0.0.1:143".into(), Some("tim*proxy".into()), secret.clone())
    );
    // A stored cleartext is still sent as itself; a plain login keeps the client's password.
    assert_eq!(
        sent(&auth.decide(&cram("bob")).await),
        ("127.0.0.1:143".into(), None, Some("tanstaaftanstaaf".into()))
    );
    assert_eq!(sent(&auth.decide(&plain("bob", "tanstaaftanstaaf")).await).1, None);
    // A destuser= goes through the master user: the backend may not know the password
    // under the other name.
    assert_eq!(
        sent(&auth.decide(&plain("ann", "pw")).await),
        ("127.0.0.1:143".into(), Some("ann2*proxy".into()), secret)
    );
    // SMTP without `smtp_proxy_auth`: nginx names the login in XCLIENT, never the master.
    let smtp = auth
        .decide(&request("cram-md5", "smtp", "tim", CRAM_DIGEST, &salt))
        .await;
    assert_eq!(sent(&smtp), ("127.0.0.1:25".into(), None, None));
    // Without a master user: today's temporary failure for IMAP, the destuser alone for plain.
    let dir = tempfile::tempdir().unwrap();
    let auth = routed(dir.path(), &users, "");
    let d = auth.decide(&cram("tim")).await;
    assert_eq!(d.reason, Reason::NoCleartextForBackend);
    assert_eq!(sent(&auth.decide(&plain("ann", "pw")).await).1, Some("ann2".into()));
    // With `smtp_proxy_auth`, SMTP follows the IMAP rules.
    let dir = tempfile::tempdir().unwrap();
    let auth = routed(dir.path(), &users, &format!("{MASTER}smtp_proxy_auth = true\n"));
    let smtp = auth
        .decide(&request("cram-md5", "smtp", "tim", CRAM_DIGEST, &salt))
        .await;
    assert_eq!(sent(&smtp).1, Some("tim*proxy".into()));
}

#[tokio::test]
async fn all_backends_down_is_a_temporary_failure_before_any_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let auth = routed(
        dir.path(),
        &format!("bob:{BCRYPT_X}\n"),
        "[route]\nimap = [\"192.0.2.1:143\", \"192.0.2.2:143\"]\n[route.health]\ninterval = \"5s\"\n",
    );
    for a in ["192.0.2.1:143", "192.0.2.2:143"] {
        auth.router.set_health(MailProtocol::Imap, a.parse().unwrap(), false);
    }
    let d = auth.decide(&plain("bob", "x")).await;
    assert_eq!(
        (d.result(), d.reason, d.scheme),
        ("tempfail", Reason::BackendsDown, None)
    );
    // Not hashed: the verification cache saw nothing.
    let m = auth.metrics.render();
    assert!(m.contains("mailauthd_cache_misses_total 0"), "{m}");
    auth.router
        .set_health(MailProtocol::Imap, "192.0.2.2:143".parse().unwrap(), true);
    assert_eq!(sent(&auth.decide(&plain("bob", "x")).await).0, "192.0.2.2:143");
    assert!(auth.metrics.render().contains("mailauthd_cache_misses_total 1"));
}
