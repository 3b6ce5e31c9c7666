//! The `ldap` source against a real OpenLDAP slapd (started per test on loopback, loaded
//! with `ldapadd`, hashes made by `slappasswd`): bind and password-attribute verification,
//! escaping, outcomes, routing attributes, the cache, TLS with a test CA, `check-config`,
//! and a slapd that is stopped or frozen.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::slapd::{PEOPLE, READER_DN, READER_PW, Slapd};
use crate::common::{Daemon, bin, header, http_get, is_accepted, is_invalid, plain_request, wait_until};

const IMAP_TEMP: &str = "[UNAVAILABLE] Temporary authentication failure, try again later";
const FILTER: &str = "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))";

/// A config with one ldap source at `url` and `extra` keys in it.
fn config(url: &str, extra: &str) -> String {
    format!(
        "reload_interval = \"0s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[source]]\nkind = \"ldap\"\nurl = \"{url}\"\nbase = \"{PEOPLE}\"\nfilter = \"{FILTER}\"\n\
         bind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\n{extra}\n"
    )
}

fn status(d: &Daemon, user: &[u8], pass: &str) -> String {
    let reply = d.ask(&plain_request("imap", user, pass.as_bytes(), "192.0.2.77", 1));
    header(&reply, "Auth-Status").unwrap_or_default()
}

/// The `reason` of the last decision line for `user`.
fn last_reason(d: &Daemon, user: &str) -> String {
    let needle = format!("user=\"{user}\"");
    wait_until(Duration::from_secs(5), "the decision line", || {
        d.log().contains(&needle)
    });
    let log = d.log();
    let line = log.lines().rev().find(|l| l.contains(&needle)).unwrap_or_default();
    line.split("reason=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let (_, body) = http_get(d.admin(), "/metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn bind_mode_answers_as_the_directory_does() {
    let slapd = Slapd::start();
    let d = Daemon::builder(&config(
        &slapd.url(),
        "host_attribute = \"host\"\nport_attribute = \"ipServicePort\"\ndisabled_filter = \"(employeeType=disabled)\"",
    ))
    .start();

    // Right, by uid and by mail; routed by the entry's attributes.
    let reply = d.login("imap", "alice", "alice-pw");
    assert!(is_accepted(&reply), "{}", String::from_utf8_lossy(&reply));
    assert!(d.accepted("alice@example.org", "alice-pw"));
    let routed = d.login("imap", "bob", "bob-pw");
    assert_eq!(header(&routed, "Auth-Server").as_deref(), Some("192.0.2.30"));
    assert_eq!(header(&routed, "Auth-Port").as_deref(), Some("1143"));

    // Wrong and unknown: refused as invalid credentials, with their own reasons.
    assert!(d.invalid("alice", "nope"));
    assert_eq!(last_reason(&d, "alice"), "wrong-password");
    assert!(d.invalid("zed", "alice-pw"));
    assert_eq!(last_reason(&d, "zed"), "unknown-user");
    // An unknown user costs a bind too (to a DN nobody has), as a wrong password does.
    wait_until(Duration::from_secs(5), "the dummy bind in slapd's log", || {
        slapd.log().contains("BIND dn=\"cn=mailauthd-nobody-")
    });
    // An empty password would be an unauthenticated bind, which slapd accepts.
    assert!(d.invalid("alice@example.org", ""));

    // Injection: with alice's right password, none of these finds an entry.
    for login in [&b"*"[..], b"al*", b"alice)(uid=*", b"alice\0", b"*)(|(uid=*", b"\\2a"] {
        let s = status(&d, login, "alice-pw");
        assert!(
            s.contains("Invalid login or password"),
            "{:?}: {s}",
            String::from_utf8_lossy(login)
        );
    }

    // Two entries share a mail address: refused as temporary and logged, never the first.
    assert_eq!(status(&d, b"shared@example.org", "dup-pw"), IMAP_TEMP);
    assert_eq!(last_reason(&d, "shared@example.org"), "ldap-ambiguous");
    assert!(d.log().contains("more than one entry"));

    // Disabled: final, even with the right password; a wrong one is still wrong.
    assert!(d.invalid("carol", "carol-pw"));
    assert_eq!(last_reason(&d, "carol"), "ldap-disabled");
    assert!(d.invalid("carol", "bad"));
    assert_eq!(last_reason(&d, "carol"), "wrong-password");
    let (code, ready) = http_get(d.admin(), "/readyz");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("breaker=closed"), "{ready}");
}

#[test]
fn bind_logins_are_cached_and_a_changed_password_is_taken() {
    let slapd = Slapd::start();
    let d = Daemon::builder(&config(&slapd.url(), "")).start();
    let alice = format!("uid=alice,{PEOPLE}");
    assert!(d.accepted("alice", "alice-pw"));
    let hits = metric(&d, "mailauthd_cache_hits_total");
    for _ in 0..5 {
        assert!(d.accepted("alice", "alice-pw"));
    }
    assert_eq!(metric(&d, "mailauthd_cache_hits_total"), hits + 5);
    // slapd's own log: one bind as alice for six logins.
    wait_until(Duration::from_secs(5), "slapd's log", || slapd.binds_to(&alice) >= 1);
    assert_eq!(slapd.binds_to(&alice), 1, "{}", slapd.log());
    // The directory's answer changes: the old password stays remembered for the cache
    // period, the new one is asked about (no negative entry held it back).
    let new_hash = crate::common::slapd::slappasswd("{SSHA}", "alice-new");
    slapd.ldap_tool(
        "ldapmodify",
        &format!("dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: userPassword\nuserPassword: {new_hash}\n"),
    );
    assert!(d.accepted("alice", "alice-new"));
    assert!(d.accepted("alice", "alice-pw"));
    assert!(d.invalid("alice", "other"));
}

#[test]
fn password_attribute_mode_verifies_slappasswd_hashes() {
    let slapd = Slapd::start();
    let d = Daemon::builder(&config(&slapd.url(), "verify = \"password-attribute\"")).start();
    assert!(d.accepted("alice", "alice-pw"));
    assert!(d.accepted("erin", "erin-pw"));
    assert!(d.invalid("erin", "erin-pw "));
    assert_eq!(last_reason(&d, "erin"), "wrong-password");
    assert!(d.invalid("nobody", "x"));
    assert_eq!(last_reason(&d, "nobody"), "unknown-user");
    let log = d.log();
    let accepted = log.lines().find(|l| l.contains("user=\"erin\"")).unwrap_or_default();
    assert!(accepted.contains("scheme=\"sha512-crypt"), "{accepted}");
}

/// A digest login as nginx sends it.
fn digest_request(method: &str, protocol: &str, user: &str, salt: &str, digest: &str) -> Vec<u8> {
    format!(
        "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: {method}\r\nAuth-User: {user}\r\n\
         Auth-Pass: {digest}\r\nAuth-Salt: {salt}\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\n\
         Client-IP: 192.0.2.77\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn password_attribute_mode_answers_apop_and_cram_md5_for_cleartext_entries() {
    // RFC 1939 section 7 and RFC 2195 section 2 examples.
    const APOP_SALT: &str = "<1896.697170952@dbc.mtview.ca.us>";
    const APOP_DIGEST: &str = "c4c9334bac560ecc979e58001b3e22fb";
    const CRAM_SALT: &str = "<1896.697170952@postoffice.reston.mci.net>";
    const CRAM_DIGEST: &str = "b913a602c7eda7a495b4e6e7334d3890";
    let slapd = Slapd::start();
    let d = Daemon::builder(&config(&slapd.url(), "verify = \"password-attribute\"")).start();
    let apop = d.ask(&digest_request("apop", "pop3", "mrose", APOP_SALT, APOP_DIGEST));
    assert!(is_accepted(&apop), "{}", String::from_utf8_lossy(&apop));
    assert_eq!(header(&apop, "Auth-Pass").as_deref(), Some("tanstaaf"));
    let cram = d.ask(&digest_request("cram-md5", "imap", "tim", CRAM_SALT, CRAM_DIGEST));
    assert!(is_accepted(&cram), "{}", String::from_utf8_lossy(&cram));
    assert_eq!(header(&cram, "Auth-Pass").as_deref(), Some("tanstaaftanstaaf"));
    let wrong = d.ask(&digest_request("apop", "pop3", "mrose", APOP_SALT, CRAM_DIGEST));
    assert!(!is_accepted(&wrong), "{}", String::from_utf8_lossy(&wrong));
    assert_eq!(last_reason(&d, "mrose"), "wrong-digest");

    // Bind mode cannot check a digest: the directory never shows the password.
    let bind = Daemon::builder(&config(&slapd.url(), "")).start();
    let apop = bind.ask(&digest_request("apop", "pop3", "mrose", APOP_SALT, APOP_DIGEST));
    assert!(!is_accepted(&apop), "{}", String::from_utf8_lossy(&apop));
}

#[test]
fn user_dn_binds_directly() {
    let slapd = Slapd::start();
    let config = format!(
        "reload_interval = \"0s\"\n[[source]]\nkind = \"ldap\"\nurl = \"{}\"\nuser_dn = \"uid=%n,{PEOPLE}\"\n",
        slapd.url()
    );
    let d = Daemon::builder(&config).start();
    assert!(d.accepted("alice", "alice-pw"));
    assert!(d.accepted("alice@anything", "alice-pw"));
    assert!(d.invalid("alice", "wrong"));
    // An escaped `,` keeps the DN in one RDN: no entry, the bind fails.
    assert!(d.invalid("alice,ou=people", "alice-pw"));
}

#[test]
fn a_stopped_slapd_is_a_temporary_failure_until_it_returns() {
    let mut slapd = Slapd::start();
    let d = Daemon::builder(&config(
        &slapd.url(),
        "timeout = \"1s\"\nbreaker_failures = 2\nbreaker_cooldown = \"500ms\"",
    ))
    .start();
    assert!(d.accepted("alice", "alice-pw"));
    slapd.kill();
    for _ in 0..3 {
        assert_eq!(status(&d, b"alice", "alice-pw"), IMAP_TEMP);
        assert_eq!(status(&d, b"alice", "wrong"), IMAP_TEMP);
    }
    let (code, ready) = http_get(d.admin(), "/readyz");
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("breaker=open"), "{ready}");
    slapd.run();
    wait_until(Duration::from_secs(10), "slapd to be used again", || {
        d.accepted("alice", "alice-pw")
    });
    // The temporary failures were not counted by the brute-force policy: the first wrong
    // password after them gets the plain Auth-Wait, as a first failure does (two different
    // wrong passwords counted would have escalated it, as the next one shows).
    let wrong = d.ask(&plain_request("imap", b"alice", b"wrong", "192.0.2.77", 1));
    assert!(is_invalid(&wrong), "{}", String::from_utf8_lossy(&wrong));
    assert_eq!(header(&wrong, "Auth-Wait").as_deref(), Some("3"));
    let again = d.ask(&plain_request("imap", b"alice", b"wrong-2", "192.0.2.77", 1));
    let escalated: u32 = header(&again, "Auth-Wait").and_then(|w| w.parse().ok()).unwrap_or(0);
    assert!(escalated > 3, "{}", String::from_utf8_lossy(&again));
    assert_eq!(http_get(d.admin(), "/readyz").0, 200);
}

#[test]
fn a_frozen_slapd_costs_at_most_the_timeout() {
    let slapd = Slapd::start();
    let d = Daemon::builder(&config(
        &slapd.url(),
        "timeout = \"700ms\"\npool_size = 1\nbreaker_failures = 100",
    ))
    .start();
    assert!(d.accepted("alice", "alice-pw"));
    slapd.signal("STOP");
    for user in [&b"alice"[..], b"bob", b"nobody"] {
        let started = Instant::now();
        assert_eq!(status(&d, user, "alice-pw"), IMAP_TEMP);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
    assert_eq!(last_reason(&d, "nobody"), "ldap-timeout");
    // Two at once with one connection: both are answered within the timeout.
    std::thread::scope(|scope| {
        let logins: Vec<_> = [&b"carol"[..], b"erin"]
            .into_iter()
            .map(|user| {
                let d = &d;
                scope.spawn(move || {
                    let started = Instant::now();
                    (status(d, user, "pw"), started.elapsed())
                })
            })
            .collect();
        for login in logins {
            let (status, took) = login.join().expect("login thread");
            assert_eq!(status, IMAP_TEMP);
            assert!(took < Duration::from_millis(1500), "{took:?}");
        }
    });
    // The second waits for the connection until its deadline, or gets it as the first one
    // gives up and then waits on the server: busy or timeout, never longer.
    for user in ["carol", "erin"] {
        let reason = last_reason(&d, user);
        assert!(["ldap-busy", "ldap-timeout"].contains(&reason.as_str()), "{reason}");
    }
    slapd.signal("CONT");
    wait_until(Duration::from_secs(15), "slapd to answer again", || {
        d.accepted("alice", "alice-pw")
    });
}

#[test]
fn starttls_and_ldaps_check_the_server_against_ca_file() {
    let slapd = Slapd::start_tls();
    let ca = slapd.ca_file();
    let ca = ca.display();
    let starttls = Daemon::builder(&config(&slapd.url(), &format!("starttls = true\nca_file = \"{ca}\""))).start();
    assert!(starttls.accepted("alice", "alice-pw"));
    assert!(starttls.invalid("alice", "wrong"));
    // slapd's own log: the StartTLS extended operation, then TLS on that connection.
    let tls_established = |slapd: &Slapd| slapd.log().matches("TLS established").count();
    wait_until(Duration::from_secs(5), "TLS in slapd's log", || {
        tls_established(&slapd) >= 1
    });
    assert!(
        slapd.log().contains("EXT oid=1.3.6.1.4.1.1466.20037"),
        "{}",
        slapd.log()
    );
    let before = tls_established(&slapd);
    let ldaps = Daemon::builder(&config(&slapd.ldaps_url(), &format!("ca_file = \"{ca}\""))).start();
    assert!(ldaps.accepted("alice", "alice-pw"));
    wait_until(Duration::from_secs(5), "LDAPS in slapd's log", || {
        tls_established(&slapd) > before
    });
    // Another CA: the server is not trusted, nothing is sent, the login is a temporary failure.
    let other = tempfile::tempdir().expect("dir");
    let other_ca = other.path().join("other.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(other.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .args(["-days", "2", "-subj", "/CN=another CA"])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let untrusted = Daemon::builder(&config(
        &slapd.ldaps_url(),
        &format!("ca_file = \"{}\"", other_ca.display()),
    ))
    .start();
    assert_eq!(status(&untrusted, b"alice", "alice-pw"), IMAP_TEMP);
}

#[test]
fn check_config_binds_and_searches_once() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |body: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, body).expect("write");
        let out = Command::new(bin())
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let good = config(&slapd.url(), "");
    let (code, out) = run(&good);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("service bind and search OK"), "{out}");

    let (code, out) = run(&good.replace(READER_PW, "not-the-password"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refused bind_dn / bind_password"), "{out}");
    assert!(!out.contains("not-the-password"), "{out}");

    let (code, out) = run(&good.replace("ou=people,", "ou=nobody,"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the search failed"), "{out}");

    let (code, out) = run(&good.replace(FILTER, "(objectClass=inetOrgPerson)"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("finds entries for a made-up login"), "{out}");
}

#[test]
fn destuser_attribute_names_the_user_the_backend_sees() {
    let slapd = Slapd::start();
    // The common setup: people log in by mail address, the mail store knows them by uid.
    let d = Daemon::builder(&config(
        &slapd.url(),
        "host_attribute = \"host\"\nport_attribute = \"ipServicePort\"\ndestuser_attribute = \"uid\"",
    ))
    .start();
    let alice = d.login("imap", "alice@example.org", "alice-pw");
    assert!(is_accepted(&alice), "{}", String::from_utf8_lossy(&alice));
    assert_eq!(header(&alice, "Auth-User").as_deref(), Some("alice"));
    let bob = d.login("imap", "bob@example.org", "bob-pw");
    assert_eq!(header(&bob, "Auth-User").as_deref(), Some("bob"));
    assert_eq!(header(&bob, "Auth-Server").as_deref(), Some("192.0.2.30"));
    assert_eq!(header(&bob, "Auth-Port").as_deref(), Some("1143"));
    // A wrong password is refused before any attribute is used.
    assert!(d.invalid("bob@example.org", "nope"));

    // An entry without the attribute: nginx logs in to the backend with the login itself.
    let absent = Daemon::builder(&config(&slapd.url(), "destuser_attribute = \"employeeType\"")).start();
    let alice = absent.login("imap", "alice", "alice-pw");
    assert!(is_accepted(&alice), "{}", String::from_utf8_lossy(&alice));
    assert_eq!(header(&alice, "Auth-User"), None);

    // A value nginx cannot send as one IMAP word ("M Rose") is a temporary failure, for a
    // password login and for APOP alike; "Tim" is used as it is.
    let cn = Daemon::builder(&config(
        &slapd.url(),
        "verify = \"password-attribute\"\ndestuser_attribute = \"cn\"",
    ))
    .start();
    assert_eq!(status(&cn, b"mrose", "tanstaaf"), IMAP_TEMP);
    assert_eq!(last_reason(&cn, "mrose"), "source-route-unusable");
    assert!(
        cn.log()
            .contains("destuser attribute is empty, not UTF-8 or has spaces")
    );
    let apop = cn.ask(&digest_request(
        "apop",
        "pop3",
        "mrose",
        "<1896.697170952@dbc.mtview.ca.us>",
        "c4c9334bac560ecc979e58001b3e22fb",
    ));
    assert!(!is_accepted(&apop), "{}", String::from_utf8_lossy(&apop));
    let tim = cn.login("imap", "tim", "tanstaaftanstaaf");
    assert!(is_accepted(&tim), "{}", String::from_utf8_lossy(&tim));
    assert_eq!(header(&tim, "Auth-User").as_deref(), Some("Tim"));
}
