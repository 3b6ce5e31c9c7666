//! The `http-basic` source against a real nginx `auth_basic` upstream and stub upstreams
//! that fail in each way, and chained with an htpasswd source.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{ClosedPort, Daemon, Nginx, wait_until};
use support::{OneAnswerPerConnection, Reply, Stub, admin_status, log_count, login, wait_log};

const IMAP_TEMP: &str = "[UNAVAILABLE] Temporary authentication failure, try again later";
const POP3_TEMP: &str = "[SYS/TEMP] Temporary authentication failure, try again later";
const SMTP_TEMP: &str = "Temporary authentication failure, try again later";
const IMAP_INVALID: &str = "[AUTHENTICATIONFAILED] Invalid login or password";
const POP3_INVALID: &str = "[AUTH] Invalid login or password";
const SMTP_INVALID: &str = "Authentication credentials invalid";

/// The users of `tests/fixtures/http-basic/upstream.htpasswd` and their passwords.
const UPSTREAM_USERS: &[(&str, &str)] = &[
    ("space", "correct horse battery"),
    ("percent", "100%sure"),
    ("colon", "pass:word:"),
    ("ütf8-ñame@exämple.org", "pässwörd ✓ 20%"),
    ("bcrypt", "b c%d:é"),
    ("tab", "t\tab"),
    ("shared", "upstream-pw"),
];

/// nginx with `auth_basic` over the fixture users: the `/auth` location of the nginx-only
/// chain, a routing variant, and locations that fail.
fn upstream() -> Nginx {
    let users = fixture("upstream.htpasswd");
    let guard = format!("auth_basic \"mail\"; auth_basic_user_file {};", users.display());
    // `return` would run before auth_basic (rewrite phase); try_files runs after it.
    let ok = "try_files /nonexistent =204;";
    // Per-user routing as the README shows it: users the map does not name get no server
    // header (nginx drops empty values), so `[route]` applies to them.
    let map = "map $remote_user $mail_server { default \"\"; space 192.0.2.20; }";
    Nginx::start(
        map,
        &format!(
            "location = /auth {{ {guard} {ok} }}\n\
         location = /routed {{ {guard} add_header X-Mail-Server 192.0.2.10 always; add_header X-Mail-Port 1143 always; {ok} }}\n\
         location = /routed-name {{ {guard} add_header X-Mail-Server localhost always; add_header X-Mail-Port 10143 always; {ok} }}\n\
         location = /routed-bad {{ {guard} add_header X-Mail-Server 192.0.2.10 always; add_header X-Mail-Port 70000 always; {ok} }}\n\
         location = /routed-map {{ {guard} add_header X-Mail-Server $mail_server; add_header X-Mail-Port 2143; {ok} }}\n\
         location = /fail500 {{ return 500; }}\n\
         location = /redirect {{ return 302 /x; }}\n"
        ),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/http-basic")
        .join(name)
}

/// Starts the daemon with fixed routes, an admin listener and the given `[[source]]`
/// entries; returns it and its admin address.
fn start(sources: &str) -> (Daemon, SocketAddr) {
    let config = format!(
        "reload_interval = \"0s\"\n\
         [auth]\nwait = \"3s\"\n\
         [route]\nimap = \"127.0.0.1:143\"\npop3 = \"127.0.0.1:110\"\nsmtp = \"127.0.0.1:25\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{sources}"
    );
    let d = Daemon::start(&config, "");
    wait_log(&d, "admin endpoints on");
    let admin = d.admin();
    (d, admin)
}

fn http_basic(url: &str, extra: &str) -> String {
    format!("[[source]]\nkind = \"http-basic\"\nurl = \"{url}\"\n{extra}\n")
}

fn local_htpasswd() -> String {
    format!(
        "[[source]]\nkind = \"htpasswd\"\npath = \"{}\"\n",
        fixture("local.htpasswd").display()
    )
}

fn assert_ok(d: &Daemon, protocol: &str, user: &str, pass: &str, port: &str) {
    let r = login(d, protocol, user, pass);
    assert_eq!(r.status(), "OK", "{user:?} over {protocol}: {}", r.text());
    assert_eq!(r.header("Auth-Server").as_deref(), Some("127.0.0.1"), "{}", r.text());
    assert_eq!(r.header("Auth-Port").as_deref(), Some(port), "{}", r.text());
}

fn assert_invalid(d: &Daemon, user: &str, pass: &str) {
    let r = login(d, "imap", user, pass);
    assert_eq!(r.status(), IMAP_INVALID, "{user:?}: {}", r.text());
}

/// Every protocol gets its temporary text, with the plain `Auth-Wait`, within `limit`.
fn assert_temporary(d: &Daemon, user: &str, pass: &str, limit: Duration) {
    for (protocol, text) in [("imap", IMAP_TEMP), ("pop3", POP3_TEMP), ("smtp", SMTP_TEMP)] {
        let r = login(d, protocol, user, pass);
        assert_eq!(r.status(), text, "{user:?} over {protocol}: {}", r.text());
        assert_eq!(r.header("Auth-Wait").as_deref(), Some("3"), "{}", r.text());
        if protocol == "smtp" {
            assert_eq!(
                r.header("Auth-Error-Code").as_deref(),
                Some("454 4.7.0"),
                "{}",
                r.text()
            );
        }
        assert!(r.elapsed < limit, "{protocol} answered after {:?}", r.elapsed);
    }
}

/// Asks nginx directly with `Authorization: Basic base64(user:pass)`.
fn basic_status(nginx: &Nginx, user: &[u8], pass: &[u8]) -> u16 {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode([user, b":", pass].concat());
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).expect("connect nginx");
    write!(
        s,
        "GET /auth HTTP/1.0\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply[9..12].parse().expect("status")
}

#[test]
fn users_log_in_with_any_password_bytes_through_nginx_auth_basic() {
    let nginx = upstream();
    let (d, _) = start(&http_basic(&nginx.url("/auth"), ""));
    for (user, pass) in UPSTREAM_USERS {
        assert_ok(&d, "imap", user, pass, "143");
        assert_invalid(&d, user, &format!("{pass}x"));
        assert_invalid(&d, user, "");
    }
    assert_ok(&d, "pop3", "percent", "100%sure", "110");
    assert_ok(&d, "smtp", "tab", "t\tab", "25");
    assert_invalid(&d, "nobody", "correct horse battery");
    let r = login(&d, "pop3", "space", "wrong");
    assert_eq!(r.status(), POP3_INVALID, "{}", r.text());
    let r = login(&d, "smtp", "space", "wrong");
    assert_eq!(r.status(), SMTP_INVALID, "{}", r.text());
    assert_eq!(
        r.header("Auth-Error-Code").as_deref(),
        Some("535 5.7.8"),
        "{}",
        r.text()
    );
    wait_log(&d, "upstream-rejected");

    // One pooled keep-alive connection carried the sequential questions.
    let asked = UPSTREAM_USERS.len() * 3 + 5;
    wait_until(Duration::from_secs(5), "nginx's access log", || {
        nginx.access_log().len() >= asked
    });
    let log = nginx.access_log();
    let connections: std::collections::BTreeSet<u64> = log.iter().map(|(c, _, _)| *c).collect();
    assert!(
        connections.len() < 4,
        "{} requests on {} connections",
        log.len(),
        connections.len()
    );

    // The nginx-only chain sends the escaped values, which never match a password with a
    // space or a `%`; the decoded ones do.
    assert_eq!(basic_status(&nginx, b"space", b"correct%20horse%20battery"), 401);
    assert_eq!(basic_status(&nginx, b"percent", b"100%25sure"), 401);
    assert_eq!(basic_status(&nginx, b"space", b"correct horse battery"), 204);
}

#[test]
fn a_user_with_a_colon_and_digest_logins_are_refused_without_asking() {
    // The upstream is down: had it been asked, the answer would be a temporary failure.
    let closed = ClosedPort::new();
    let down = closed.url("/auth");
    let (d, _) = start(&http_basic(&down, ""));
    assert_invalid(&d, "a:b", "pw");
    wait_log(&d, "colon-in-user");
    let cram = b"GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: cram-md5\r\nAuth-User: space\r\n\
        Auth-Pass: 0123456789abcdef0123456789abcdef\r\nAuth-Salt: <1.2@mail.test>\r\nAuth-Protocol: imap\r\n\
        Auth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n";
    let r = Reply {
        bytes: d.ask(cram),
        elapsed: Duration::ZERO,
    };
    assert_eq!(r.status(), IMAP_INVALID, "{}", r.text());
    // Refusals escalate Auth-Wait (the brute-force policy); a temporary failure does not:
    // an upstream that is down is not the client's doing.
    // (The policy counts a repeated wrong password once: two different ones.)
    login(&d, "imap", "a:b", "pw1");
    let r = login(&d, "imap", "a:b", "pw2");
    let escalated: u32 = r.header("Auth-Wait").and_then(|w| w.parse().ok()).unwrap_or(0);
    assert!(escalated > 3, "{}\n{}", r.text(), d.log());
    assert_temporary(&d, "space", "correct horse battery", Duration::from_secs(5));
}

#[test]
fn upstream_failures_are_temporary_never_a_wrong_password() {
    let nginx = upstream();
    let hanging = Stub::hanging();
    let closed = ClosedPort::new();
    let never_open = "timeout = \"500ms\"\nbreaker_failures = 1000";
    let cases = [
        (closed.url("/auth"), "upstream-unreachable"),
        (hanging.url(), "upstream-timeout"),
        (nginx.url("/fail500"), "upstream-5xx"),
        (nginx.url("/redirect"), "upstream-redirect"),
    ];
    for (url, reason) in cases {
        let (d, _) = start(&http_basic(&url, never_open));
        // Within the timeout plus the time a process takes to answer on a busy machine.
        assert_temporary(&d, "space", "correct horse battery", Duration::from_millis(500 + 1500));
        wait_log(&d, reason);
    }
    assert!(hanging.accepted() >= 3, "the hanging stub was not asked");
}

#[test]
fn the_breaker_opens_answers_at_once_and_closes_again() {
    let stub = Stub::hanging();
    let user = ("space", "correct horse battery");
    // It refuses the random login asked at start, then hangs.
    stub.check(user.0, user.1, 204);
    let source = http_basic(
        &stub.url(),
        "timeout = \"300ms\"\nbreaker_failures = 2\nbreaker_cooldown = \"1s\"",
    );
    let (d, admin) = start(&source);
    wait_log(&d, "the upstream refuses a random user and password");
    assert_eq!(stub.accepted(), 1);
    stub.answer_with(0);
    assert_eq!(admin_status(admin, "/readyz"), 200);

    for _ in 0..2 {
        let r = login(&d, "imap", user.0, user.1);
        assert_eq!(r.status(), IMAP_TEMP, "{}", r.text());
    }
    assert_eq!(stub.accepted(), 3);
    wait_log(&d, "breaker open:");
    assert_eq!(admin_status(admin, "/readyz"), 503);

    // Open: answered without asking.
    let r = login(&d, "imap", user.0, user.1);
    assert_eq!(r.status(), IMAP_TEMP, "{}", r.text());
    wait_log(&d, "breaker-open");
    assert_eq!(stub.accepted(), 3);

    // After the cooldown one login probes (a random login first, which hangs), so it opens
    // again without asking about the user.
    wait_until(Duration::from_secs(10), "the probe", || {
        let r = login(&d, "imap", user.0, user.1);
        assert_eq!(r.status(), IMAP_TEMP, "{}", r.text());
        stub.accepted() == 4
    });
    wait_log(&d, "breaker stays open");

    // The upstream recovers: the next probe closes the breaker.
    stub.check(user.0, user.1, 204);
    wait_until(Duration::from_secs(10), "the breaker to close", || {
        login(&d, "imap", user.0, user.1).status() == "OK"
    });
    wait_log(&d, "breaker closed");
    assert_eq!(admin_status(admin, "/readyz"), 200);
    assert_ok(&d, "imap", user.0, user.1, "143");
    assert_invalid(&d, user.0, "wrong");
    // State changes are logged once each, not per request.
    assert_eq!(log_count(&d, "breaker open:"), 1, "{}", d.log());
    assert_eq!(log_count(&d, "breaker closed"), 1, "{}", d.log());
}

#[test]
fn logins_over_the_in_flight_bound_get_a_temporary_failure() {
    let stub = Stub::hanging();
    stub.check("space", "correct horse battery", 204);
    let source = http_basic(
        &stub.url(),
        "timeout = \"1s\"\nmax_in_flight = 1\nbreaker_failures = 1000",
    );
    let (d, _) = start(&source);
    wait_log(&d, "the upstream refuses a random user and password");
    stub.answer_with(0);
    std::thread::scope(|s| {
        let first = s.spawn(|| login(&d, "imap", "space", "correct horse battery"));
        wait_until(Duration::from_secs(5), "the first question", || stub.accepted() == 2);
        let second = login(&d, "imap", "percent", "100%sure");
        assert_eq!(second.status(), IMAP_TEMP, "{}", second.text());
        wait_log(&d, "upstream-busy");
        let first = first.join().expect("first login");
        assert_eq!(first.status(), IMAP_TEMP, "{}", first.text());
    });
    assert_eq!(stub.accepted(), 2, "the login over the bound was sent");
}

#[test]
fn chain_htpasswd_first_then_the_upstream() {
    let nginx = upstream();
    let (d, _) = start(&format!("{}{}", local_htpasswd(), http_basic(&nginx.url("/auth"), "")));
    assert_ok(&d, "imap", "local", "local pw", "143");
    // Known only upstream.
    assert_ok(&d, "imap", "space", "correct horse battery", "143");
    // Known to both with different passwords: each source's password works.
    assert_ok(&d, "imap", "shared", "local-pw", "143");
    assert_ok(&d, "imap", "shared", "upstream-pw", "143");
    assert_invalid(&d, "shared", "neither");
    assert_invalid(&d, "local", "wrong");
    assert_invalid(&d, "nobody", "x");
    let accepted_by = |user: &str| wait_log(&d, &format!("user=\"{user}\"")).contains("source=\"http-basic:");
    assert!(!accepted_by("local"), "{}", d.log());
    assert!(accepted_by("space"), "{}", d.log());
}

#[test]
fn chain_with_the_upstream_down_is_temporary_for_users_not_in_the_file() {
    let closed = ClosedPort::new();
    let down = closed.url("/auth");
    let (d, _) = start(&format!(
        "{}{}",
        local_htpasswd(),
        http_basic(&down, "breaker_failures = 1000")
    ));
    // The first source accepts: the upstream is not needed.
    assert_ok(&d, "imap", "local", "local pw", "143");
    assert_ok(&d, "smtp", "shared", "local-pw", "25");
    // Not in the file, upstream down: a temporary failure, not "wrong password".
    assert_temporary(&d, "space", "correct horse battery", Duration::from_secs(5));
    // Nobody accepted and a source was down: temporary too (no lock-out while it is down).
    assert_temporary(&d, "local", "wrong", Duration::from_secs(5));
}

#[test]
fn protocols_restrict_what_an_upstream_may_accept() {
    let nginx = upstream();
    let (d, _) = start(&format!(
        "{}{}",
        local_htpasswd(),
        http_basic(&nginx.url("/auth"), "protocols = [\"smtp\"]")
    ));
    assert_invalid(&d, "space", "correct horse battery");
    let r = login(&d, "pop3", "space", "correct horse battery");
    assert_eq!(r.status(), POP3_INVALID, "{}", r.text());
    assert_ok(&d, "smtp", "space", "correct horse battery", "25");
    assert_ok(&d, "imap", "local", "local pw", "143");
}

#[test]
fn the_upstream_answer_routes_the_login() {
    let nginx = upstream();
    let user = ("ütf8-ñame@exämple.org", "pässwörd ✓ 20%");
    for method in ["GET", "HEAD"] {
        let (d, _) = start(&http_basic(&nginx.url("/routed"), &format!("method = \"{method}\"")));
        let r = login(&d, "imap", user.0, user.1);
        assert_eq!(r.status(), "OK", "{method}: {}", r.text());
        assert_eq!(r.header("Auth-Server").as_deref(), Some("192.0.2.10"), "{}", r.text());
        assert_eq!(r.header("Auth-Port").as_deref(), Some("1143"), "{}", r.text());
        // nginx adds the headers to its 401 too (`always`): still a refusal.
        assert_invalid(&d, user.0, "wrong");
    }

    // Routed per user by a map; the others go to `[route]`.
    let (d, _) = start(&http_basic(&nginx.url("/routed-map"), ""));
    let r = login(&d, "imap", "space", "correct horse battery");
    assert_eq!(r.status(), "OK", "{}", r.text());
    assert_eq!(r.header("Auth-Server").as_deref(), Some("192.0.2.20"), "{}", r.text());
    assert_eq!(r.header("Auth-Port").as_deref(), Some("2143"), "{}", r.text());
    assert_ok(&d, "imap", "percent", "100%sure", "143");

    // A host name is resolved: nginx takes only IP literals.
    let (d, _) = start(&http_basic(&nginx.url("/routed-name"), ""));
    let r = login(&d, "pop3", user.0, user.1);
    assert_eq!(r.status(), "OK", "{}", r.text());
    let server = r.header("Auth-Server").unwrap_or_default();
    assert!(server == "127.0.0.1" || server == "::1", "{}", r.text());
    assert_eq!(r.header("Auth-Port").as_deref(), Some("10143"), "{}", r.text());

    // A port nginx would refuse: a temporary failure, not a broken reply.
    let (d, _) = start(&http_basic(&nginx.url("/routed-bad"), ""));
    assert_temporary(&d, user.0, user.1, Duration::from_secs(5));
    wait_log(&d, "upstream-route-bad-port");

    // Routing off: `[route]` applies.
    let (d, _) = start(&http_basic(
        &nginx.url("/routed"),
        "server_header = \"\"\nport_header = \"\"",
    ));
    assert_ok(&d, "smtp", user.0, user.1, "25");
}

/// `mailauthd_upstream_resends_total` of the source at `url` (its name drops the query).
fn resends(admin: SocketAddr, url: &str) -> u64 {
    let shown = url.split('?').next().unwrap_or(url);
    let (status, text) = crate::common::http_get(admin, "/metrics");
    assert_eq!(status, 200, "{text}");
    let series = format!("mailauthd_upstream_resends_total{{source=\"http-basic:{shown}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a count")
}

#[test]
fn a_kept_alive_connection_closed_under_a_login_is_asked_again_on_a_fresh_one() {
    let user = ("space", "correct horse battery");
    let upstream = OneAnswerPerConnection::start(user.0, user.1);
    let url = upstream.url("k");
    let (d, admin) = start(&http_basic(&url, "breaker_failures = 1000"));
    wait_log(&d, "the upstream refuses a random user and password");
    assert_eq!(resends(admin, &url), 0);
    for i in 0..30 {
        if i % 6 == 5 {
            assert_invalid(&d, user.0, "wrong");
        } else {
            assert_ok(&d, "imap", user.0, user.1, "143");
        }
    }
    // Every question the upstream dropped went out once more, and only those: 30 logins and
    // the random login, each answered once.
    let dropped = upstream.unanswered();
    assert!(dropped >= 10, "a kept-alive connection was reused {dropped} time(s)");
    assert_eq!(resends(admin, &url), u64::try_from(dropped).expect("count"));
    assert_eq!(upstream.answered(), 31);
    assert_eq!(log_count(&d, "upstream-error"), 0, "{}", d.log());
}

#[test]
fn an_upstream_that_accepts_anything_is_not_used_until_it_checks() {
    let stub = Stub::hanging();
    stub.answer_with(200);
    let (d, admin) = start(&http_basic(&stub.url(), "breaker_cooldown = \"1s\""));
    wait_log(&d, "the upstream accepted a random user and password");
    let (status, body) = crate::common::http_get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!(
            "http-basic:{} unusable: it accepted a random user and password",
            stub.url()
        )),
        "{body}"
    );
    // Not even the right password: the upstream's 200 means nothing.
    assert_temporary(&d, "space", "correct horse battery", Duration::from_secs(5));
    assert_temporary(&d, "space", "wrong", Duration::from_secs(5));
    let refused = wait_log(&d, "login refused");
    assert!(refused.contains("reason=\"upstream-accepts-anything\""), "{refused}");
    assert_eq!(
        log_count(&d, "the upstream accepted a random user and password"),
        1,
        "{}",
        d.log()
    );

    // Fixed: it is asked again after the cooldown, and used again.
    stub.check("space", "correct horse battery", 204);
    wait_until(Duration::from_secs(10), "the upstream to be used again", || {
        login(&d, "imap", "space", "correct horse battery").status() == "OK"
    });
    wait_log(&d, "refuses a random user and password again");
    assert_invalid(&d, "space", "wrong");
    assert_eq!(admin_status(admin, "/readyz"), 200);
}

#[test]
fn debug_logs_of_transport_errors_never_show_the_query_string() {
    let upstream = OneAnswerPerConnection::start("space", "correct horse battery");
    let closed = ClosedPort::new();
    let down = closed.url("/auth?key=DOWN-SECRET");
    let sources = format!(
        "{}{}",
        http_basic(&upstream.url("UP-SECRET"), "breaker_failures = 1000"),
        http_basic(&down, "breaker_failures = 1000\nprotocols = [\"pop3\"]"),
    );
    let config = format!(
        "reload_interval = \"0s\"\n[route]\nimap = \"127.0.0.1:143\"\npop3 = \"127.0.0.1:110\"\n\
         smtp = \"127.0.0.1:25\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{sources}"
    );
    let d = Daemon::builder(&config).env("RUST_LOG", "debug").start();
    wait_log(&d, "the upstream refuses a random user and password");
    for _ in 0..3 {
        assert_ok(&d, "imap", "space", "correct horse battery", "143");
    }
    // Dropped on both connections: the login's question fails.
    let r = login(&d, "imap", "vanish", "pw");
    assert_eq!(r.status(), IMAP_TEMP, "{}", r.text());
    // The second source is down: its random login fails.
    let r = login(&d, "pop3", "space", "x");
    assert_eq!(r.status(), POP3_TEMP, "{}", r.text());
    let resent = wait_log(&d, "asking once more on a fresh connection");
    assert!(
        resent.contains("connection closed before message completed"),
        "{resent}"
    );
    let failed = wait_log(&d, "upstream question failed");
    assert!(failed.contains("reason=\"upstream-error\""), "{failed}");
    let down_line = wait_log(&d, "question about a random login failed");
    assert!(down_line.contains("Connection refused"), "{down_line}");
    let log = d.log();
    for secret in ["UP-SECRET", "DOWN-SECRET", "key="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
