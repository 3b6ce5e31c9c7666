//! The connection rules decided in process: the shared secret, TLS for cleartext logins,
//! EXTERNAL, the real client, an inbound MX's reverse DNS and per-listener overrides. The
//! parts are built by `daemon::assemble` from config text; requests are nginx-shaped bytes
//! (header order and values as protocol.md §1.3 and §6 V9, V13, V14 captured them).

use std::path::Path;
use std::sync::Arc;

use super::{dn_value, use_real_client};
use crate::auth_http::{AuthRequest, parse_request, render_reply};
use crate::config::{Config, ConfigOrigin};
use crate::decide::{Authenticator, Decision};
use crate::login::MailProtocol;
use crate::reason::Reason;

/// bcrypt cost 4 of `x`.
const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

/// One users file `a` with `users`, the config `extra` after it.
fn authenticator(dir: &Path, users: &str, extra: &str) -> Authenticator {
    std::fs::write(dir.join("a"), users).unwrap();
    let text = format!(
        "[route]\nimap = \"192.0.2.1:143\"\npop3 = \"192.0.2.1:110\"\nsmtp = \"192.0.2.1:25\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"a\"\n{extra}"
    );
    let config = Config::from_toml(&text, ConfigOrigin::File(dir.join("t.toml")), dir).unwrap();
    let auth = crate::daemon::assemble(Arc::new(config));
    crate::daemon::reload_sources(&auth, true);
    auth
}

/// A request as nginx orders it: `Client-IP`, then `tail` (TLS, proxy and custom headers).
fn request(method: &str, protocol: &str, user: &str, pass: &str, client: &str, tail: &str) -> AuthRequest {
    let text = format!(
        "GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: {method}\r\nAuth-User: {user}\r\nAuth-Pass: {pass}\r\n\
         Auth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client}\r\n{tail}\r\n"
    );
    parse_request(text.as_bytes()).unwrap()
}

/// The reply bytes nginx would read.
fn reply(d: &Decision, protocol: MailProtocol) -> String {
    String::from_utf8(render_reply(&d.verdict, Some(protocol))).unwrap()
}

const TLS13: &str = "Auth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.3\r\nAuth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\n";

#[tokio::test]
async fn the_shared_secret_must_be_sent_and_right() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"0123456789abcdef-key\"\n";
    let auth = authenticator(dir.path(), "bob:{PLAIN}pw\n", extra);
    let ok = request(
        "plain",
        "imap",
        "bob",
        "pw",
        "192.0.2.9",
        "X-Auth-Key: 0123456789abcdef-key\r\n",
    );
    assert_eq!(auth.decide(&ok).await.result(), "ok");
    // Header names are case-insensitive, as nginx and HTTP have them.
    let lower = request(
        "plain",
        "imap",
        "bob",
        "pw",
        "192.0.2.9",
        "x-auth-key: 0123456789abcdef-key\r\n",
    );
    assert_eq!(auth.decide(&lower).await.result(), "ok");
    for tail in [
        "",
        "X-Auth-Key: 0123456789abcdef-kez\r\n",
        "X-Auth-Key: 0123456789abcdef-key0\r\n",
        "X-Auth-Key: 0123456789abcdef-key\r\nX-Auth-Key: 0123456789abcdef-key\r\n",
    ] {
        let d = auth
            .decide(&request("plain", "imap", "bob", "pw", "192.0.2.9", tail))
            .await;
        assert_eq!((d.result(), d.reason), ("tempfail", Reason::BadSecret), "{tail:?}");
        assert!(reply(&d, MailProtocol::Imap).contains("[UNAVAILABLE]"));
        assert!(!reply(&d, MailProtocol::Imap).contains("Auth-Wait"), "{tail:?}");
    }
    assert!(
        auth.metrics
            .render()
            .contains("mailauthd_bad_secret_requests_total 4\n")
    );
}

#[tokio::test]
async fn a_cleartext_login_without_tls_is_refused_before_hashing_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[auth]\nwait = \"3s\"\n[policy]\npair_failures = 2\n\
                 [tls]\nrequired_for = [\"imap\", \"pop3\", \"smtp\"]\nexempt_networks = [\"127.0.0.0/8\"]\n";
    let auth = authenticator(dir.path(), &format!("bob:{BCRYPT_X}\nmrose:{{PLAIN}}tanstaaf\n"), extra);
    for (protocol, text) in [
        (MailProtocol::Imap, "Auth-Status: [PRIVACYREQUIRED] "),
        (
            MailProtocol::Pop3,
            "Auth-Status: Use TLS (STLS) for a cleartext login\r\n",
        ),
        (MailProtocol::Smtp, "Auth-Error-Code: 538 5.7.11\r\n"),
    ] {
        // Many times: a refusal for want of TLS is not a guess, so no ban ever follows.
        for _ in 0..4 {
            let d = auth
                .decide(&request("plain", protocol.as_str(), "bob", "x", "192.0.2.9", ""))
                .await;
            assert_eq!((d.result(), d.reason), ("tls-required", Reason::TlsRequired));
            assert_eq!(d.scheme, None, "nothing was hashed");
            let r = reply(&d, protocol);
            assert!(r.contains(text), "{r}");
            assert!(!r.contains("Auth-Wait"), "{r}");
        }
        let d = auth
            .decide(&request("plain", protocol.as_str(), "bob", "x", "192.0.2.9", TLS13))
            .await;
        assert_eq!(d.result(), "ok", "{protocol}: after STARTTLS");
    }
    // The exempt network (a webmail on the same host) logs in in cleartext.
    let d = auth
        .decide(&request("plain", "imap", "bob", "x", "127.0.0.1", ""))
        .await;
    assert_eq!(d.result(), "ok");
    // APOP never sends the password: not affected (RFC 1939 §7 example).
    let apop = request(
        "apop",
        "pop3",
        "mrose",
        "c4c9334bac560ecc979e58001b3e22fb",
        "192.0.2.9",
        "Auth-Salt: <1896.697170952@dbc.mtview.ca.us>\r\n",
    );
    assert_eq!(auth.decide(&apop).await.result(), "ok");
}

#[tokio::test]
async fn min_protocol_refuses_older_tls_like_cleartext() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[tls]\nrequired_for = [\"imap\"]\nmin_protocol = \"TLSv1.2\"\n";
    let auth = authenticator(dir.path(), "bob:{PLAIN}pw\n", extra);
    let with = |version: &str| {
        let tail = format!("Auth-SSL: on\r\nAuth-SSL-Protocol: {version}\r\n");
        request("plain", "imap", "bob", "pw", "192.0.2.9", &tail)
    };
    for (version, result) in [
        ("TLSv1", "tls-required"),
        ("TLSv1.1", "tls-required"),
        ("TLSv1.2", "ok"),
        ("TLSv1.3", "ok"),
    ] {
        let d = auth.decide(&with(version)).await;
        assert_eq!(d.result(), result, "{version}");
        if result != "ok" {
            assert_eq!(d.reason, Reason::TlsTooOld);
        }
    }
    // nginx before 1.21.2 names no version: not known to be new enough.
    let d = auth
        .decide(&request("plain", "imap", "bob", "pw", "192.0.2.9", "Auth-SSL: on\r\n"))
        .await;
    assert_eq!(d.reason, Reason::TlsTooOld);
    // POP3 is not listed.
    let d = auth
        .decide(&request("plain", "pop3", "bob", "pw", "192.0.2.9", ""))
        .await;
    assert_eq!(d.result(), "ok");
}

/// A verified client certificate as nginx passes it (protocol.md §6 V14, `SUCCESS`).
fn cert(subject: &str, fingerprint: &str) -> String {
    format!(
        "{TLS13}Auth-SSL-Verify: SUCCESS\r\nAuth-SSL-Subject: {subject}\r\nAuth-SSL-Issuer: CN=Test CA\r\n\
         Auth-SSL-Serial: 1000\r\nAuth-SSL-Fingerprint: {fingerprint}\r\n"
    )
}

const FP: &str = "19b24a1fd43df28bfd9b313093d7bb862b34fa70";

#[tokio::test]
async fn external_needs_the_section_a_verified_certificate_naming_the_user_and_a_known_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("alice:{{PLAIN}}alice-pw\nbob:{BCRYPT_X}\ncarol:{{PLAIN}}c:::::: nologin\n");
    let off = authenticator(dir.path(), &users, "");
    let d = off
        .decide(&request(
            "external",
            "imap",
            "alice",
            "",
            "192.0.2.9",
            &cert("CN=alice", FP),
        ))
        .await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::ExternalNotSupported));

    let auth = authenticator(dir.path(), &users, "[external]\ncertificate_user = \"subject-cn\"\n");
    let ext = |user: &str, protocol: &str, tail: &str| request("external", protocol, user, "", "192.0.2.9", tail);
    let d = auth
        .decide(&ext("alice", "imap", &cert("CN=alice,O=Example", FP)))
        .await;
    assert_eq!(d.result(), "ok", "{d:?}");
    assert!(reply(&d, MailProtocol::Imap).contains("Auth-Pass: alice-pw\r\n"));
    // No authorization identity: the certificate names the user.
    let d = auth.decide(&ext("", "pop3", &cert("CN=alice", FP))).await;
    assert!(
        reply(&d, MailProtocol::Pop3).contains("Auth-Pass: alice-pw\r\n"),
        "{d:?}"
    );
    // Someone else's name, a certificate nginx could not verify, no certificate at all.
    for (tail, reason) in [
        (cert("CN=mallory", FP), Reason::CertificateMismatch),
        (
            format!("{TLS13}Auth-SSL-Verify: FAILED:self-signed certificate\r\nAuth-SSL-Subject: CN=alice\r\n"),
            Reason::CertificateNotVerified,
        ),
        (
            format!("{TLS13}Auth-SSL-Verify: NONE\r\n"),
            Reason::CertificateNotVerified,
        ),
        (String::new(), Reason::CertificateNotVerified),
    ] {
        let d = auth.decide(&ext("alice", "imap", &tail)).await;
        assert_eq!((d.result(), d.reason), ("invalid", reason), "{tail:?}");
    }
    // A user no source knows, a disabled one.
    let d = auth.decide(&ext("dave", "imap", &cert("CN=dave", FP))).await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::UnknownUser));
    let d = auth.decide(&ext("carol", "imap", &cert("CN=carol", FP))).await;
    assert_eq!((d.result(), d.reason), ("invalid", Reason::Nologin));
    // A bcrypt user has no cleartext for the IMAP backend: a temporary failure that says
    // why; SMTP needs none.
    let d = auth.decide(&ext("bob", "imap", &cert("CN=bob", FP))).await;
    assert_eq!((d.result(), d.reason), ("tempfail", Reason::NoCleartextForBackend));
    let d = auth.decide(&ext("bob", "smtp", &cert("CN=bob", FP))).await;
    assert_eq!(d.result(), "ok");
    assert!(!reply(&d, MailProtocol::Smtp).contains("Auth-Pass"));
}

#[tokio::test]
async fn external_by_fingerprint_email_or_trusted_network() {
    let dir = tempfile::tempdir().unwrap();
    let users = "alice:{PLAIN}pw:::::: cert_fingerprint=19:B2:4A:1F:D4:3D:F2:8B:FD:9B:31:30:93:D7:BB:86:2B:34:FA:70\n\
                 bob:{PLAIN}pw\n";
    let auth = authenticator(dir.path(), users, "[external]\ncertificate_user = \"fingerprint\"\n");
    let ext = |user: &str, tail: &str| request("external", "imap", user, "", "192.0.2.9", tail);
    assert_eq!(auth.decide(&ext("alice", &cert("CN=whoever", FP))).await.result(), "ok");
    let other = "0000000000000000000000000000000000000000";
    let d = auth.decide(&ext("alice", &cert("CN=alice", other))).await;
    assert_eq!(d.reason, Reason::CertificateMismatch);
    // A user without cert_fingerprint= has no certificate.
    let d = auth.decide(&ext("bob", &cert("CN=bob", FP))).await;
    assert_eq!(d.reason, Reason::CertificateMismatch);

    let auth = authenticator(dir.path(), users, "[external]\ncertificate_user = \"subject-email\"\n");
    let d = auth
        .decide(&ext("bob", &cert("emailAddress=bob,CN=Bob Example,O=Example", FP)))
        .await;
    assert_eq!(d.result(), "ok");
    let d = auth.decide(&ext("bob", &cert("CN=bob", FP))).await;
    assert_eq!(d.reason, Reason::CertificateMismatch);

    let extra = "[external]\ntrusted_networks = [\"10.1.0.0/16\"]\n";
    let auth = authenticator(dir.path(), users, extra);
    let relay = request("external", "smtp", "bob", "", "10.1.2.3", "");
    assert_eq!(auth.decide(&relay).await.result(), "ok");
    let outside = request("external", "smtp", "bob", "", "10.2.2.3", "");
    assert_eq!(auth.decide(&outside).await.reason, Reason::CertificateNotVerified);
}

#[tokio::test]
async fn a_refused_external_counts_like_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[external]\n[policy]\npair_failures = 2\n";
    let auth = authenticator(dir.path(), "alice:{PLAIN}pw\n", extra);
    for fp in [
        "1111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222",
    ] {
        let d = auth
            .decide(&request(
                "external",
                "imap",
                "alice",
                "",
                "192.0.2.9",
                &cert("CN=mallory", fp),
            ))
            .await;
        assert_eq!(d.reason, Reason::CertificateMismatch);
    }
    let d = auth
        .decide(&request(
            "external",
            "imap",
            "alice",
            "",
            "192.0.2.9",
            &cert("CN=alice", FP),
        ))
        .await;
    assert_eq!(d.result(), "banned");
}

#[tokio::test]
async fn real_ip_from_makes_the_proxy_protocol_address_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let users = "bob:{PLAIN}pw:::::: allow_nets=192.0.2.1/32\n";
    let auth = authenticator(dir.path(), users, "[client]\nreal_ip_from = [\"127.0.0.1\"]\n");
    // Header values as protocol.md §6 V13 captured them.
    let proxy = "Proxy-Protocol-Addr: 192.0.2.1\r\nProxy-Protocol-Port: 123\r\n\
                 Proxy-Protocol-Server-Addr: 192.0.2.2\r\nProxy-Protocol-Server-Port: 5678\r\n";
    let mut req = request("plain", "smtp", "bob", "pw", "127.0.0.1", proxy);
    use_real_client(&auth.config, &mut req);
    assert_eq!(req.client.unwrap().to_string(), "192.0.2.1");
    assert_eq!(auth.decide(&req).await.result(), "ok");
    // From an address that is not a listed balancer the header is not believed.
    let mut req = request("plain", "smtp", "bob", "pw", "198.51.100.7", proxy);
    use_real_client(&auth.config, &mut req);
    assert_eq!(req.client.unwrap().to_string(), "198.51.100.7");
    assert_eq!(auth.decide(&req).await.reason, Reason::NotAllowedFromNetwork);
}

/// An inbound MX request (protocol.md §6 V5 shape) with `Client-Host: host`.
fn mx(host: &str, rcpt: &str) -> AuthRequest {
    request(
        "none",
        "smtp",
        "",
        "",
        "192.0.2.9",
        &format!(
            "Client-Host: {host}\r\nAuth-SMTP-Helo: c\r\nAuth-SMTP-From: MAIL FROM:<a@x>\r\nAuth-SMTP-To: RCPT TO:<{rcpt}>\r\n"
        ),
    )
}

#[tokio::test]
async fn reverse_dns_required_tells_unavailable_from_tempunavail() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[smtp]\nlocal_domains = [\"example.org\"]\nreverse_dns = \"require\"\n";
    let auth = authenticator(dir.path(), "bob:{PLAIN}pw\n", extra);
    let d = auth.decide(&mx("[UNAVAILABLE]", "b@example.org")).await;
    assert_eq!(d.reason, Reason::NoReverseDns);
    let r = reply(&d, MailProtocol::Smtp);
    assert!(
        r.contains("Auth-Error-Code: 550 5.7.25\r\n") && r.contains("[UNAVAILABLE]"),
        "{r}"
    );
    let d = auth.decide(&mx("[TEMPUNAVAIL]", "b@example.org")).await;
    assert_eq!((d.result(), d.reason), ("tempfail", Reason::ReverseDnsTempfail));
    let r = reply(&d, MailProtocol::Smtp);
    assert!(
        r.contains("Auth-Error-Code: 450 4.7.25\r\n") && r.contains("[TEMPUNAVAIL]"),
        "{r}"
    );
    assert!(!r.contains("Auth-Wait"));
    assert_eq!(
        auth.decide(&mx("mail.example.net", "b@example.org")).await.result(),
        "ok"
    );
    assert_eq!(
        auth.decide(&mx("mail.example.net", "b@example.com")).await.result(),
        "relay-denied"
    );
}

#[tokio::test]
async fn relay_refusal_wait_keeps_the_smtp_session_only_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path(), "", "[smtp]\nlocal_domains = [\"example.org\"]\n");
    let r = reply(&auth.decide(&mx("[UNAVAILABLE]", "b@x.net")).await, MailProtocol::Smtp);
    assert!(r.contains("550 5.7.1") && !r.contains("Auth-Wait"), "{r}");
    let extra = "[smtp]\nlocal_domains = [\"example.org\"]\nrelay_refusal_wait = \"2s\"\n";
    let auth = authenticator(dir.path(), "", extra);
    let r = reply(&auth.decide(&mx("[UNAVAILABLE]", "b@x.net")).await, MailProtocol::Smtp);
    assert!(r.contains("550 5.7.1") && r.contains("Auth-Wait: 2\r\n"), "{r}");
    assert!(
        auth.config
            .exposure_warnings()
            .iter()
            .any(|w| w.contains("CVE-2025-53859"))
    );
}

#[tokio::test]
async fn a_listener_section_overrides_tls_methods_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b"), "carol:{PLAIN}pw\n").unwrap();
    let extra = "[[source]]\nkind = \"htpasswd\"\npath = \"b\"\n\
                 [tls]\nrequired_for = []\n\
                 [listener.submission]\ntls_required_for = [\"smtp\"]\nmethods = [\"plain\"]\nsources = [2]\n";
    let auth = authenticator(dir.path(), "bob:{PLAIN}pw\n", extra);
    let at = |user: &str, method: &str, tail: &str| {
        request(
            method,
            "smtp",
            user,
            "pw",
            "192.0.2.9",
            &format!("{tail}X-Mail-Listener: submission\r\n"),
        )
    };
    // Without the header: the global rules, every source.
    assert_eq!(
        auth.decide(&request("plain", "smtp", "bob", "pw", "192.0.2.9", ""))
            .await
            .result(),
        "ok"
    );
    assert_eq!(auth.decide(&at("carol", "plain", "")).await.reason, Reason::TlsRequired);
    assert_eq!(auth.decide(&at("carol", "plain", TLS13)).await.result(), "ok");
    assert_eq!(
        auth.decide(&at("bob", "plain", TLS13)).await.reason,
        Reason::UnknownUser
    );
    let d = auth.decide(&at("carol", "cram-md5", "Auth-Salt: <1.2@x>\r\n")).await;
    assert_eq!(d.reason, Reason::MethodNotAllowedOnListener);
}

#[test]
fn dn_values_in_both_forms() {
    assert_eq!(dn_value("CN=alice,O=Example", "CN").as_deref(), Some("alice"));
    assert_eq!(
        dn_value("emailAddress=a@x.org,CN=a\\, b,O=Ex", "CN").as_deref(),
        Some("a, b")
    );
    assert_eq!(
        dn_value("emailAddress=a@x.org,CN=a,O=Ex", "emailaddress").as_deref(),
        Some("a@x.org")
    );
    assert_eq!(dn_value("/O=Example/CN=bob", "CN").as_deref(), Some("bob"));
    assert_eq!(dn_value("CN=a,CN=b", "CN"), None);
    assert_eq!(dn_value("O=Example", "CN"), None);
}
