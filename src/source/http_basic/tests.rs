use super::*;
use crate::reason::Reason;
use reqwest::header::HeaderName;

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
