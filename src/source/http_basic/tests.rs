use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};

use super::response::{RouteTarget, parse_route};
use super::*;
use crate::config::BasicMethod;
use crate::config::RouteHeaders;
use crate::reason::Reason;
use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use reqwest::header::HeaderName;
use std::net::SocketAddr;
use upstream::{ALICE, Act, BOB, OK, REFUSED, Upstream as TestUpstream};

fn route() -> RouteHeaders {
    RouteHeaders {
        server: HeaderName::from_static("x-mail-server"),
        port: HeaderName::from_static("x-mail-port"),
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    map
}

#[test]
fn basic_authorization_encodes_the_decoded_bytes() {
    // RFC 7617's example.
    let h = basic_authorization(b"Aladdin", b"open sesame").unwrap();
    assert_eq!(h.as_bytes(), b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    assert!(h.is_sensitive());
    // `:` in the password is fine (the first colon splits), and bytes go through unchanged.
    let h = basic_authorization("ü@x".as_bytes(), b"p%ss: w\x00rd").unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode("ü@x:p%ss: w\u{0}rd");
    assert_eq!(h.as_bytes(), format!("Basic {encoded}").as_bytes());
    assert_eq!(basic_authorization(b"", b"").unwrap().as_bytes(), b"Basic Og==");
}

#[test]
fn a_user_with_a_colon_cannot_be_expressed() {
    assert!(basic_authorization(b"a:b", b"pw").is_none());
}

#[test]
fn statuses_map_to_answers() {
    let none = HeaderMap::new();
    let r = route();
    assert_eq!(map_response(StatusCode::OK, &none, Some(&r)), Upstream::Accepted(None));
    assert_eq!(
        map_response(StatusCode::NO_CONTENT, &none, None),
        Upstream::Accepted(None)
    );
    assert_eq!(
        map_response(StatusCode::UNAUTHORIZED, &none, Some(&r)),
        Upstream::Rejected
    );
    assert_eq!(map_response(StatusCode::FORBIDDEN, &none, Some(&r)), Upstream::Rejected);
    assert_eq!(
        map_response(StatusCode::FOUND, &none, Some(&r)),
        Upstream::Failed(Reason::UpstreamRedirect)
    );
    assert_eq!(
        map_response(StatusCode::NOT_FOUND, &none, Some(&r)),
        Upstream::Failed(Reason::Upstream4xx)
    );
    assert_eq!(
        map_response(StatusCode::TOO_MANY_REQUESTS, &none, Some(&r)),
        Upstream::Failed(Reason::Upstream4xx)
    );
    assert_eq!(
        map_response(StatusCode::INTERNAL_SERVER_ERROR, &none, Some(&r)),
        Upstream::Failed(Reason::Upstream5xx)
    );
    assert_eq!(
        map_response(StatusCode::BAD_GATEWAY, &none, Some(&r)),
        Upstream::Failed(Reason::Upstream5xx)
    );
    assert_eq!(
        map_response(StatusCode::CONTINUE, &none, Some(&r)),
        Upstream::Failed(Reason::UpstreamBadStatus)
    );
}

#[test]
fn a_2xx_may_route_the_login() {
    let r = route();
    let both = headers(&[("x-mail-server", "10.0.0.7"), ("x-mail-port", "1143")]);
    assert_eq!(
        map_response(StatusCode::OK, &both, Some(&r)),
        Upstream::Accepted(Some(RouteTarget::Addr("10.0.0.7:1143".parse().unwrap())))
    );
    // Routing off: the headers are ignored.
    assert_eq!(map_response(StatusCode::OK, &both, None), Upstream::Accepted(None));
    // Routing headers on a refusal mean nothing.
    assert_eq!(
        map_response(StatusCode::UNAUTHORIZED, &both, Some(&r)),
        Upstream::Rejected
    );
    let half = headers(&[("x-mail-server", "10.0.0.7")]);
    assert_eq!(
        map_response(StatusCode::OK, &half, Some(&r)),
        Upstream::BadRoute(Reason::UpstreamRouteIncomplete)
    );
    let port_only = headers(&[("x-mail-port", "143")]);
    assert_eq!(
        map_response(StatusCode::OK, &port_only, Some(&r)),
        Upstream::Accepted(None)
    );
    let bad = headers(&[("x-mail-server", "10.0.0.7"), ("x-mail-port", "0")]);
    assert_eq!(
        map_response(StatusCode::OK, &bad, Some(&r)),
        Upstream::BadRoute(Reason::UpstreamRouteBadPort)
    );
}

#[test]
fn route_values_are_validated() {
    let addr = |s: &str| RouteTarget::Addr(s.parse().unwrap());
    assert_eq!(parse_route(b"192.0.2.1", b"143"), Ok(addr("192.0.2.1:143")));
    assert_eq!(parse_route(b"::1", b"993"), Ok(addr("[::1]:993")));
    assert_eq!(parse_route(b"[2001:db8::2]", b"65535"), Ok(addr("[2001:db8::2]:65535")));
    assert_eq!(
        parse_route(b"Mail-1.Example.test", b"110"),
        Ok(RouteTarget::Host("mail-1.example.test".to_owned(), 110))
    );
    for port in [&b"0"[..], b"65536", b"-1", b"+143", b"14 3", b"", b"0x8f"] {
        assert_eq!(
            parse_route(b"192.0.2.1", port),
            Err(Reason::UpstreamRouteBadPort),
            "{port:?}"
        );
    }
    for server in [&b""[..], b"bad host", b"a..b", b"x_y", b"\xff", b"[::1"] {
        assert_eq!(
            parse_route(server, b"143"),
            Err(Reason::UpstreamRouteBadServer),
            "{server:?}"
        );
    }
}

#[tokio::test]
async fn an_ip_literal_is_used_as_is_and_a_name_is_resolved() {
    let deadline = Instant::now() + Duration::from_secs(2);
    let addr: SocketAddr = "192.0.2.9:25".parse().unwrap();
    assert_eq!(resolve(RouteTarget::Addr(addr), deadline).await, Ok(addr));
    let resolved = resolve(RouteTarget::Host("localhost".to_owned(), 143), deadline)
        .await
        .unwrap();
    assert!(resolved.ip().is_loopback(), "{resolved}");
    assert_eq!(resolved.port(), 143);
    assert_eq!(
        resolve(RouteTarget::Host("no-such-host.invalid".to_owned(), 143), deadline).await,
        Err(Reason::UpstreamRouteUnresolvable)
    );
}

#[test]
fn the_breaker_opens_after_n_failures_in_a_row() {
    let t0 = Instant::now();
    let mut b = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(2));
    assert_eq!(b.admit(t0), Admit::Ask);
    assert_eq!(b.record(false, t0), None);
    assert_eq!(b.record(false, t0), None);
    // A success in between starts the count again.
    assert_eq!(b.record(true, t0), None);
    assert_eq!(b.record(false, t0), None);
    assert_eq!(b.record(false, t0), None);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.record(false, t0), Some(Transition::Opened(3)));
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: t0 + Duration::from_secs(10)
        }
    );
    assert_eq!(b.admit(t0 + Duration::from_secs(9)), Admit::Refuse);
    // Answers to questions sent before it opened do not log again.
    assert_eq!(b.record(false, t0 + Duration::from_secs(1)), None);
}

#[test]
fn one_probe_after_the_cooldown_closes_or_reopens_it() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut b = Breaker::new(1, s(10), s(2));
    assert_eq!(b.record(false, t0), Some(Transition::Opened(1)));
    assert_eq!(b.admit(t0 + s(10)), Admit::Probe);
    // While the probe is out, everyone else is answered at once.
    assert_eq!(b.admit(t0 + s(11)), Admit::Refuse);
    assert_eq!(b.record(false, t0 + s(11)), Some(Transition::Reopened));
    assert_eq!(b.admit(t0 + s(20)), Admit::Refuse);
    assert_eq!(b.admit(t0 + s(21)), Admit::Probe);
    assert_eq!(b.record(true, t0 + s(21)), Some(Transition::Closed));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.admit(t0 + s(21)), Admit::Ask);
}

#[test]
fn a_probe_that_never_reports_is_replaced() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut b = Breaker::new(1, s(10), s(2));
    b.record(false, t0);
    assert_eq!(b.admit(t0 + s(10)), Admit::Probe);
    assert_eq!(b.admit(t0 + s(11)), Admit::Refuse);
    assert_eq!(b.admit(t0 + s(12)), Admit::Probe);
}

/// A loopback upstream on std::net, one thread per connection, that does what `act` says
/// with each request: `act(n, authorization)` gets the request's position on its
/// connection (0 for the first) and its `Authorization` value.
mod upstream {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// What the upstream does with one request.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Act {
        /// Writes this whole response and waits for the next request on the connection.
        Answer(&'static str),
        /// Closes the connection without a byte of answer.
        Close,
        /// Waits, then closes the connection without a byte of answer.
        CloseAfter(Duration),
        /// Waits, then answers as [`Act::Answer`].
        AnswerAfter(Duration, &'static str),
        /// Writes these bytes (an answer cut short) and closes the connection.
        CutShort(&'static str),
    }

    /// 204 with keep-alive.
    pub(super) const OK: &str = "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n";
    /// 401 with keep-alive, as nginx's `auth_basic` sends it.
    pub(super) const REFUSED: &str = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\n\
        Content-Length: 0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n";
    /// `Basic base64("alice:pw")` (`printf alice:pw | base64`).
    pub(super) const ALICE: &str = "Basic YWxpY2U6cHc=";
    /// `Basic base64("bob:pw")`.
    pub(super) const BOB: &str = "Basic Ym9iOnB3";

    type Actor = dyn Fn(usize, &str) -> Act + Send + Sync;

    /// The running upstream and what it counted.
    pub(super) struct Upstream {
        pub(super) addr: SocketAddr,
        answered: Arc<AtomicUsize>,
        unanswered: Arc<AtomicUsize>,
    }

    impl Upstream {
        pub(super) fn start(act: impl Fn(usize, &str) -> Act + Send + Sync + 'static) -> Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let act: Arc<Actor> = Arc::new(act);
            let answered = Arc::new(AtomicUsize::new(0));
            let unanswered = Arc::new(AtomicUsize::new(0));
            let (a, u) = (answered.clone(), unanswered.clone());
            // The thread ends with the test process.
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (act, a, u) = (act.clone(), a.clone(), u.clone());
                    std::thread::spawn(move || serve(stream, &*act, &a, &u));
                }
            });
            Upstream {
                addr,
                answered,
                unanswered,
            }
        }

        pub(super) fn url(&self) -> String {
            format!("http://{}/auth?key=SECRET-KEY", self.addr)
        }

        /// Requests answered (fully or cut short).
        pub(super) fn answered(&self) -> usize {
            self.answered.load(Ordering::SeqCst)
        }

        /// Requests read and closed without a byte of answer.
        pub(super) fn unanswered(&self) -> usize {
            self.unanswered.load(Ordering::SeqCst)
        }
    }

    fn serve(mut stream: TcpStream, act: &Actor, answered: &AtomicUsize, unanswered: &AtomicUsize) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        for n in 0.. {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let authorization = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default();
            match act(n, &authorization) {
                Act::Answer(reply) => {
                    answered.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(reply.as_bytes());
                }
                Act::AnswerAfter(wait, reply) => {
                    std::thread::sleep(wait);
                    answered.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(reply.as_bytes());
                }
                Act::Close => {
                    unanswered.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Act::CloseAfter(wait) => {
                    std::thread::sleep(wait);
                    unanswered.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Act::CutShort(bytes) => {
                    answered.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(bytes.as_bytes());
                    return;
                }
            }
        }
    }
}

/// A source without routing whose breaker never opens, and whose cooldown (the delay
/// before an upstream found to accept anything is asked again) is 300 ms.
fn config_for(url: &str, timeout: Duration) -> HttpBasicConfig {
    HttpBasicConfig {
        url: url.parse().unwrap(),
        timeout,
        method: BasicMethod::Get,
        forward_client_ip: None,
        max_in_flight: 4,
        headers: Vec::new(),
        route_headers: None,
        breaker_failures: 1000,
        breaker_cooldown: Duration::from_millis(300),
        protocols: None,
    }
}

fn source_for(url: &str, timeout: Duration, metrics: &Arc<Metrics>) -> HttpBasicSource {
    HttpBasicSource::new(config_for(url, timeout), metrics.clone())
}

async fn login(source: &HttpBasicSource, user: &str) -> PlainAnswer {
    let pass = Zeroizing::new(b"pw".to_vec());
    let creds = Credentials {
        user: user.as_bytes(),
        pass: &pass,
        client_ip: None,
    };
    source.check_plain(&creds).await
}

/// `mailauthd_upstream_resends_total` for `source`.
fn resends(metrics: &Metrics, source: &HttpBasicSource) -> u64 {
    let series = format!("mailauthd_upstream_resends_total{{source=\"{}\"}} ", source.name());
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// The first request on a connection is answered (204 for alice, 401 for anyone else);
/// the next one on it is read and the connection closed without answering.
fn one_answer_per_connection(n: usize, authorization: &str) -> Act {
    match (n, authorization) {
        (0, ALICE) => Act::Answer(OK),
        (0, _) => Act::Answer(REFUSED),
        _ => Act::Close,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_closed_under_the_question_is_asked_again_once() {
    let upstream = TestUpstream::start(one_answer_per_connection);
    let metrics = Arc::new(Metrics::new());
    let source = source_for(&upstream.url(), Duration::from_secs(2), &metrics);
    assert_eq!(resends(&metrics, &source), 0);
    for i in 0..20 {
        let answer = if i % 5 == 4 {
            login(&source, "bob").await
        } else {
            login(&source, "alice").await
        };
        match answer {
            PlainAnswer::Accepted { .. } if i % 5 != 4 => {}
            PlainAnswer::Rejected {
                reason: Reason::UpstreamRejected,
                ..
            } if i % 5 == 4 => {}
            other => panic!("login {i}: {other:?}"),
        }
        // Let the connection go back to the pool, as between real logins.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every question the upstream dropped was sent once more, and only those.
    let dropped = upstream.unanswered();
    assert!(dropped >= 5, "the pooled connection was reused {dropped} time(s)");
    assert_eq!(resends(&metrics, &source), u64::try_from(dropped).unwrap());
    // 20 logins and the random login, each answered once.
    assert_eq!(upstream.answered(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_again_once_an_answer_started() {
    let upstream = TestUpstream::start(|_, authorization| match authorization {
        // A 200 whose body is cut short: the status line came, so it stands.
        ALICE => Act::CutShort("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
        BOB => Act::CutShort("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        _ => Act::Answer(REFUSED),
    });
    let metrics = Arc::new(Metrics::new());
    let source = source_for(&upstream.url(), Duration::from_secs(2), &metrics);
    assert!(matches!(login(&source, "alice").await, PlainAnswer::Accepted { .. }));
    assert!(matches!(
        login(&source, "bob").await,
        PlainAnswer::Unavailable {
            reason: Reason::Upstream5xx
        }
    ));
    assert_eq!(upstream.answered(), 3);
    assert_eq!(resends(&metrics, &source), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_never_outlasts_the_timeout() {
    // alice's question is dropped after 400 ms on a reused connection, and answered after
    // 400 ms on a fresh one: 800 ms in all, past the 600 ms timeout.
    let upstream = TestUpstream::start(|n, authorization| match (n, authorization) {
        (0, ALICE) => Act::AnswerAfter(Duration::from_millis(400), OK),
        (_, ALICE) => Act::CloseAfter(Duration::from_millis(400)),
        _ => Act::Answer(REFUSED),
    });
    let metrics = Arc::new(Metrics::new());
    let timeout = Duration::from_millis(600);
    let source = source_for(&upstream.url(), timeout, &metrics);
    // The random login opens the connection alice's question will reuse.
    assert_eq!(source.asker.vet(false, Instant::now() + timeout).await, Vetted::Trusted);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let answer = login(&source, "alice").await;
    let took = started.elapsed();
    assert!(
        matches!(
            answer,
            PlainAnswer::Unavailable {
                reason: Reason::UpstreamTimeout
            }
        ),
        "{answer:?}"
    );
    // Uncapped, the answer would come at 800 ms and accept the login.
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(resends(&metrics, &source), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_accepts_anything_is_unusable_until_it_refuses_a_random_login() {
    let checks = Arc::new(AtomicBool::new(false));
    let flag = checks.clone();
    let upstream = TestUpstream::start(move |_, authorization| {
        if authorization == ALICE || !flag.load(Ordering::SeqCst) {
            Act::Answer(OK)
        } else {
            Act::Answer(REFUSED)
        }
    });
    let metrics = Arc::new(Metrics::new());
    let source = source_for(&upstream.url(), Duration::from_secs(2), &metrics);
    for user in ["alice", "bob", "alice"] {
        let answer = login(&source, user).await;
        assert!(
            matches!(
                answer,
                PlainAnswer::Unavailable {
                    reason: Reason::UpstreamAcceptsAnything
                }
            ),
            "{user}: {answer:?}"
        );
    }
    // Asked once about a random login, never about the users.
    assert_eq!(upstream.answered(), 1);
    let status = source.status();
    assert!(!status.ready);
    assert!(status.detail.contains("random user and password"), "{}", status.detail);

    // Fixed: asked again after the cooldown (300 ms), it refuses, and logins are asked.
    checks.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(login(&source, "alice").await, PlainAnswer::Accepted { .. }));
    assert!(matches!(login(&source, "bob").await, PlainAnswer::Rejected { .. }));
    assert!(source.status().ready);
    assert_eq!(upstream.answered(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_told_without_the_url() {
    // Nothing listens there: the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/auth?key=SECRET-KEY");
    let client = build_client(&config_for(&url, Duration::from_secs(2)), true).unwrap();
    let e = client.get(&url).send().await.unwrap_err();
    assert!(e.to_string().contains("SECRET-KEY"), "reqwest names the URL: {e}");
    assert!(!closed_before_answer(&e), "a refused connection is not sent again");
    let told = describe(e);
    assert!(!told.contains("SECRET-KEY") && !told.contains("/auth"), "{told}");
    assert!(told.contains("onnect"), "{told}");
}
