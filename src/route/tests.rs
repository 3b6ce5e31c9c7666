//! Routing rules: precedence, rendezvous stickiness, health, name re-resolution with a stub
//! resolver, and the greeting checks against listeners that speak each protocol's greeting.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dns::{Resolve, Resolved};
use super::*;
use crate::config::{Config, ConfigOrigin};

fn router(text: &str) -> Router {
    let config = Config::from_toml(text, ConfigOrigin::BuiltIn, Path::new(".")).unwrap();
    Router::new(&config.routes)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn to(r: Routed) -> Choice {
    match r {
        Routed::To(c) => c,
        other => panic!("not routed: {other:?}"),
    }
}

const CONTRACT: &str = r#"
    [route]
    imap = "10.0.0.1:143"
    pop3 = ["10.0.0.1:110", "10.0.0.2:110"]
    [route.domains."Example.org"]
    imap = ["10.0.1.1:143", "10.0.1.2:143"]
    [route.health]
    interval = "5s"
    timeout = "2s"
"#;

#[test]
fn a_source_route_beats_the_domain_which_beats_the_protocol() {
    let r = router(CONTRACT);
    let none = SourceRoute::default();
    // The protocol's [route].
    let c = to(r.choose(MailProtocol::Imap, b"bob@other.net", &none));
    assert_eq!(
        (c.addr, c.rule.clone()),
        (addr("10.0.0.1:143"), Rule::Protocol(MailProtocol::Imap))
    );
    // The domain after the last '@', in any case; a domain without a POP3 route uses [route].
    let c = to(r.choose(MailProtocol::Imap, b"a@b@EXAMPLE.ORG", &none));
    assert_eq!(c.rule, Rule::Domain("example.org".to_owned()));
    assert!(["10.0.1.1:143", "10.0.1.2:143"].contains(&c.addr.to_string().as_str()));
    let c = to(r.choose(MailProtocol::Pop3, b"a@example.org", &none));
    assert_eq!(c.rule, Rule::Protocol(MailProtocol::Pop3));
    // A source's host= wins over both; without port= it takes the rule's port.
    let source = SourceRoute {
        host: Some("192.0.2.5".parse().unwrap()),
        ..SourceRoute::default()
    };
    let c = to(r.choose(MailProtocol::Imap, b"a@example.org", &source));
    assert_eq!((c.addr, c.rule), (addr("192.0.2.5:143"), Rule::Source));
    // port= alone moves only the port of the backend the rules chose.
    let port_only = SourceRoute {
        port: Some(1143),
        ..SourceRoute::default()
    };
    let c = to(r.choose(MailProtocol::Imap, b"bob@other.net", &port_only));
    assert_eq!(c.addr, addr("10.0.0.1:1143"));
    // An unusable field refuses rather than routes elsewhere.
    let bad = SourceRoute {
        unusable: Some("host=\"store\" is not an IP address".to_owned()),
        ..SourceRoute::default()
    };
    assert!(matches!(r.choose(MailProtocol::Imap, b"a", &bad), Routed::Unusable(_)));
}

#[test]
fn removing_one_of_five_backends_moves_only_its_own_users() {
    let backends: Vec<SocketAddr> = (1..=5).map(|i| addr(&format!("10.0.0.{i}:143"))).collect();
    let users: Vec<String> = (0..20_000).map(|i| format!("user{i}@example.org")).collect();
    let before: Vec<SocketAddr> = users
        .iter()
        .map(|u| rendezvous(u.as_bytes(), &backends).unwrap())
        .collect();
    // Balanced: each backend holds a fifth, within 2 points.
    for b in &backends {
        let share = before.iter().filter(|a| *a == b).count() as f64 / users.len() as f64;
        assert!((0.18..0.22).contains(&share), "{b}: {share}");
    }
    let gone = backends[2];
    let rest: Vec<SocketAddr> = backends.iter().copied().filter(|a| *a != gone).collect();
    let mut moved = 0;
    for (u, was) in users.iter().zip(&before) {
        let now = rendezvous(u.as_bytes(), &rest).unwrap();
        if now != *was {
            moved += 1;
            assert_eq!(*was, gone, "{u} moved from a backend that stayed");
        }
    }
    let own = before.iter().filter(|a| **a == gone).count();
    eprintln!("removing 1 of 5 backends moved {moved} of {} users", users.len());
    // Every user of the removed backend moved, and nobody else: 1/5 of the users.
    assert_eq!(moved, own);
    assert!((0.18..0.22).contains(&(moved as f64 / users.len() as f64)), "{moved}");
    // The order the backends are listed in changes nothing.
    let mut reversed = backends.clone();
    reversed.reverse();
    assert!(
        users
            .iter()
            .all(|u| rendezvous(u.as_bytes(), &reversed) == rendezvous(u.as_bytes(), &backends))
    );
}

#[test]
fn a_backend_down_moves_its_users_only_and_all_down_is_known_before_choosing() {
    let r = router(CONTRACT);
    let none = SourceRoute::default();
    let users: Vec<String> = (0..200).map(|i| format!("u{i}@example.org")).collect();
    let before: Vec<SocketAddr> = users
        .iter()
        .map(|u| to(r.choose(MailProtocol::Imap, u.as_bytes(), &none)).addr)
        .collect();
    let down = addr("10.0.1.1:143");
    assert!(before.contains(&down) && before.contains(&addr("10.0.1.2:143")));
    r.set_health(MailProtocol::Imap, addr("10.0.1.2:143"), true);
    assert_eq!(r.set_health(MailProtocol::Imap, down, false), Some(Health::Unchecked));
    assert_eq!(
        r.set_health(MailProtocol::Imap, down, false),
        None,
        "a change is reported once"
    );
    for (u, was) in users.iter().zip(&before) {
        let c = to(r.choose(MailProtocol::Imap, u.as_bytes(), &none));
        assert_eq!((c.health, c.up, c.backends), (Health::Up, 1, 2));
        if *was != down {
            assert_eq!(c.addr, *was, "{u} moved");
        }
        assert_ne!(c.addr, down);
    }
    // Health is per protocol: the same address for POP3 is not affected.
    assert_eq!(r.health_of(MailProtocol::Pop3, down), Health::Unchecked);
    r.set_health(MailProtocol::Imap, addr("10.0.1.2:143"), false);
    assert_eq!(
        r.choose(MailProtocol::Imap, b"u1@example.org", &none),
        Routed::AllDown(Rule::Domain("example.org".to_owned()))
    );
    // Back up: everyone returns to where they were.
    r.set_health(MailProtocol::Imap, down, true);
    r.set_health(MailProtocol::Imap, addr("10.0.1.2:143"), true);
    for (u, was) in users.iter().zip(&before) {
        assert_eq!(to(r.choose(MailProtocol::Imap, u.as_bytes(), &none)).addr, *was);
    }
    let lines = r.status_lines().join("\n");
    assert!(
        lines.contains("backend route.domains.\"example.org\" 10.0.1.1:143 10.0.1.1:143 up"),
        "{lines}"
    );
}

#[test]
fn without_checks_every_backend_counts_as_up() {
    let r = router("[route]\nimap = [\"10.0.0.1:143\", \"10.0.0.2:143\"]\n");
    r.set_health(MailProtocol::Imap, addr("10.0.0.1:143"), false);
    r.set_health(MailProtocol::Imap, addr("10.0.0.2:143"), false);
    let c = to(r.choose(MailProtocol::Imap, b"x", &SourceRoute::default()));
    assert_eq!(c.health, Health::Unchecked);
}

/// A resolver that answers from a script and counts its calls.
struct Stub {
    answers: Mutex<Vec<Result<Resolved, String>>>,
    calls: Mutex<Vec<String>>,
}

impl Resolve for Stub {
    fn resolve(&self, host: &str, port: u16) -> Result<Resolved, String> {
        self.calls.lock().unwrap().push(format!("{host}:{port}"));
        self.answers.lock().unwrap().remove(0)
    }
}

#[test]
fn names_are_re_resolved_on_their_ttl_and_keep_their_addresses_when_resolution_fails() {
    // `localhost` resolves from /etc/hosts when the config loads.
    let r = router("[route]\nsmtp = [\"localhost:25\", \"10.0.0.9:25\"]\n[route.health]\ndns_refresh = \"60s\"\n");
    let smtp = |r: &Router| {
        let mut a: Vec<SocketAddr> = r
            .backends()
            .into_iter()
            .filter(|(p, _)| *p == MailProtocol::Smtp)
            .map(|(_, a)| a)
            .collect();
        a.sort();
        a
    };
    assert!(smtp(&r).iter().any(|a| a.ip().is_loopback()));
    let new = vec![addr("192.0.2.1:25"), addr("192.0.2.2:25")];
    let stub = Stub {
        answers: Mutex::new(vec![
            Ok(Resolved {
                addrs: new.clone(),
                ttl: Some(Duration::from_secs(10)),
            }),
            Err("no such host".to_owned()),
            Ok(Resolved {
                addrs: vec![addr("192.0.2.3:25")],
                ttl: Some(Duration::from_secs(3600)),
            }),
            Ok(Resolved {
                addrs: vec![addr("192.0.2.3:25")],
                ttl: Some(Duration::ZERO),
            }),
        ]),
        calls: Mutex::new(Vec::new()),
    };
    let t0 = Instant::now();
    // Due at start: resolved, the next due after its TTL.
    assert_eq!(r.refresh_names(&stub, t0), Duration::from_secs(10));
    assert_eq!(
        stub.calls.lock().unwrap().as_slice(),
        ["localhost:25"],
        "an IP literal is never resolved"
    );
    assert_eq!(smtp(&r), vec![addr("10.0.0.9:25"), new[0], new[1]]);
    // Not due yet: nothing resolved.
    assert_eq!(
        r.refresh_names(&stub, t0 + Duration::from_secs(4)),
        Duration::from_secs(6)
    );
    assert_eq!(stub.calls.lock().unwrap().len(), 1);
    // Due, and failing: the last addresses stay, /readyz says so, retried in 5 s.
    assert_eq!(
        r.refresh_names(&stub, t0 + Duration::from_secs(10)),
        Duration::from_secs(5)
    );
    assert_eq!(smtp(&r), vec![addr("10.0.0.9:25"), new[0], new[1]]);
    assert!(
        r.status_lines()
            .iter()
            .any(|l| l.contains("localhost:25 stale addresses: cannot resolve localhost: no such host"))
    );
    // Resolving again: the new address, and a TTL of an hour is bounded by dns_refresh.
    assert_eq!(
        r.refresh_names(&stub, t0 + Duration::from_secs(15)),
        Duration::from_secs(60)
    );
    assert_eq!(smtp(&r), vec![addr("10.0.0.9:25"), addr("192.0.2.3:25")]);
    assert!(!r.status_lines().iter().any(|l| l.contains("stale")));
    // A TTL of 0 does not spin: at least a second.
    assert_eq!(
        r.refresh_names(&stub, t0 + Duration::from_secs(75)),
        Duration::from_secs(1)
    );
}

/// A listener that greets every connection with `greeting`.
async fn greeter(greeting: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(greeting).await;
        }
    });
    a
}

#[tokio::test]
async fn a_check_wants_the_protocols_own_greeting() {
    let t = Duration::from_secs(2);
    // RFC 9051 §7.1.1, RFC 1939 §4, RFC 5321 §4.2.
    let imap = greeter(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n").await;
    let pop3 = greeter(b"+OK Dovecot ready.\r\n").await;
    let smtp = greeter(b"220 mx.example.org ESMTP\r\n").await;
    let busy = greeter(b"554 5.3.2 no service\r\n").await;
    assert_eq!(health::check(MailProtocol::Imap, imap, t).await, Ok(()));
    assert_eq!(health::check(MailProtocol::Pop3, pop3, t).await, Ok(()));
    assert_eq!(health::check(MailProtocol::Smtp, smtp, t).await, Ok(()));
    assert!(health::check(MailProtocol::Imap, pop3, t).await.is_err());
    let e = health::check(MailProtocol::Smtp, busy, t).await.unwrap_err();
    assert!(e.contains("554 5.3.2"), "{e}");
    // A port nobody listens on (the listener is dropped first).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(
        health::check(MailProtocol::Imap, closed, t)
            .await
            .unwrap_err()
            .contains("connect")
    );
    // A listener that never greets fails within the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = std::time::Instant::now();
    let e = health::check(
        MailProtocol::Imap,
        silent.local_addr().unwrap(),
        Duration::from_millis(200),
    )
    .await;
    assert!(e.unwrap_err().contains("no greeting"));
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// The backend a user sticks to is the one earlier releases chose: the hash of each
/// address's text, computed without building the text, is the same.
#[test]
fn rendezvous_keeps_the_mapping_of_the_address_text_hash() {
    fn text_hash(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let backends: Vec<SocketAddr> = [
        "192.0.2.1:143",
        "192.0.2.2:143",
        "[2001:db8::7]:993",
        "198.51.100.9:1143",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    for n in 0..500 {
        let user = format!("user{n}@example.org");
        let k = text_hash(user.as_bytes());
        let expected = backends
            .iter()
            .max_by_key(|a| (super::mix(k ^ text_hash(a.to_string().as_bytes()).rotate_left(29)), **a))
            .copied();
        assert_eq!(rendezvous(user.as_bytes(), &backends), expected, "{user}");
    }
}
