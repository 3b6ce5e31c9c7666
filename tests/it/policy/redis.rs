//! Shared state in a real Redis: two daemons, one set of counters and bans; Redis killed
//! and restarted under them.

use std::time::Duration;

use super::daemon::guessing_one_user_bans_the_address_for_every_user;
use super::start;
use crate::common::{Redis, header, wait_until};

const BANNED_IMAP: &str = "[UNAVAILABLE] Too many failed logins, try again later";
const TEMPFAIL_IMAP: &str = "[UNAVAILABLE] Temporary authentication failure, try again later";

fn status(reply: &str) -> String {
    header(reply, "Auth-Status").unwrap_or_default()
}

fn shared(redis: &Redis, extra: &str) -> String {
    format!(
        "[policy]\nnet_failures = 4\nhmac_key = \"shared-key-for-the-whole-deployment\"\n{extra}\n\
         [state]\nredis = \"{}\"\n",
        redis.url()
    )
}

#[test]
fn failures_spread_over_two_instances_trigger_one_ban_seen_by_both() {
    let redis = Redis::start();
    let one = start(&shared(&redis, ""));
    let two = start(&shared(&redis, ""));
    let ip = "192.0.2.50";
    // The same wrong password for the same user on both instances counts once.
    one.login_from("u1", "same", ip);
    two.login_from("u1", "same", ip);
    one.login_from("u2", "x", ip);
    two.login_from("u3", "x", ip);
    assert_eq!(status(&one.login_from("alice", "alice-secret", "192.0.2.51")), "OK");
    // The fourth distinct failure, on instance two, bans the network for both.
    assert_eq!(
        status(&two.login_from("u4", "x", ip)),
        "[AUTHENTICATIONFAILED] Invalid login or password"
    );
    assert_eq!(status(&one.login_from("alice", "alice-secret", ip)), BANNED_IMAP);
    assert_eq!(status(&two.login_from("alice", "alice-secret", ip)), BANNED_IMAP);

    let ttl = redis.command("PTTL mailauthd:{n:192.0.2.50/32}:b");
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().expect("a ttl");
    assert!(ttl > 0 && ttl <= 15 * 60 * 1000, "the ban key expires by itself: {ttl}");

    // Either instance lists the ban and lifts it for both.
    let out = one.bans_cli(&["list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("net net=192.0.2.50/32 user=- ttl="),
        "{out:?}"
    );
    let out = two.bans_cli(&["clear", "--ip", "192.0.2.50"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 1 ban(s)\n", "{out:?}");
    assert_eq!(status(&one.login_from("alice", "alice-secret", ip)), "OK");
}

#[test]
fn redis_going_away_falls_back_as_configured_and_is_used_again_when_it_returns() {
    let redis = Redis::start();
    let port = redis.port;
    let local = start(&shared(&redis, "pair_failures = 2"));
    let strict = start(&format!(
        "{}on_redis_error = \"tempfail\"\nredis_timeout = \"200ms\"\n",
        shared(&redis, "")
    ));
    assert_eq!(status(&local.login_from("alice", "alice-secret", "192.0.2.60")), "OK");
    assert_eq!(status(&strict.login_from("alice", "alice-secret", "192.0.2.60")), "OK");

    drop(redis);

    // "local": decided and counted in the process; its own bans still work.
    local.login_from("bob", "wrong1", "192.0.2.61");
    local.login_from("bob", "wrong2", "192.0.2.61");
    assert_eq!(
        status(&local.login_from("bob", "bob-password", "192.0.2.61")),
        BANNED_IMAP
    );
    assert_eq!(status(&local.login_from("alice", "alice-secret", "192.0.2.60")), "OK");
    // "tempfail": nothing is decided without the shared state.
    for _ in 0..3 {
        assert_eq!(
            status(&strict.login_from("alice", "alice-secret", "192.0.2.60")),
            TEMPFAIL_IMAP
        );
    }
    for d in [&local, &strict] {
        let log = d.log();
        assert_eq!(log.matches("redis is unreachable").count(), 1, "logged once:\n{log}");
    }
    assert!(local.log().contains("counting in this process until it is back"));
    assert!(strict.log().contains("password logins get a temporary failure"));

    let redis = Redis::start_on(port);
    wait_until(
        Duration::from_secs(15),
        "the tempfail instance to use Redis again",
        || status(&strict.login_from("alice", "alice-secret", "192.0.2.60")) == "OK",
    );
    wait_until(Duration::from_secs(15), "the local instance to use Redis again", || {
        local.login_from("carol", "guess", "192.0.2.62");
        local.log().contains("redis is reachable again")
    });
    assert!(strict.log().contains("redis is reachable again"));
    // Back on Redis: the local instance's failures are in the shared counters again.
    assert_eq!(redis.command("EXISTS mailauthd:{u:carol}:f").trim(), ":1");
}

#[test]
fn a_hanging_redis_costs_at_most_the_timeout_and_is_used_again_when_it_answers() {
    let redis = Redis::start();
    let d = start(&format!("{}redis_timeout = \"200ms\"\n", shared(&redis, "")));
    assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.70")), "OK");
    redis.signal("STOP");
    // Without the timeout this login would wait for Redis for ever (the client gives up
    // after 30 s and the test fails); with it, it is decided in the process.
    assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.70")), "OK");
    assert_eq!(
        status(&d.login_from("bob", "wrong", "192.0.2.70")),
        "[AUTHENTICATIONFAILED] Invalid login or password"
    );
    assert_eq!(d.log().matches("redis is unreachable (").count(), 1, "{}", d.log());
    redis.signal("CONT");
    wait_until(Duration::from_secs(15), "mailauthd to use Redis again", || {
        d.login_from("dave", "guess", "192.0.2.71");
        d.log().contains("redis is reachable again")
    });
    assert_eq!(redis.command("EXISTS mailauthd:{u:dave}:f").trim(), ":1");
}

#[test]
fn fifty_guesses_at_one_user_ban_the_address_for_every_user_in_redis() {
    let redis = Redis::start();
    // "tempfail": the bans must come from Redis, not from a fallback in the process.
    let d = start(&format!(
        "[state]\nredis = \"{}\"\non_redis_error = \"tempfail\"\n",
        redis.url()
    ));
    guessing_one_user_bans_the_address_for_every_user(&d, "192.0.2.92", "198.51.100.92");
    assert_eq!(redis.command("EXISTS mailauthd:{n:192.0.2.92/32}:b").trim(), ":1");
    assert_eq!(redis.command("EXISTS mailauthd:{p:192.0.2.92/32|alice}:b").trim(), ":1");
}

#[test]
fn listing_and_clearing_no_bans_answers_200_and_leaves_redis_in_use() {
    let redis = Redis::start();
    let d = start(&format!(
        "[state]\nredis = \"{}\"\non_redis_error = \"tempfail\"\n",
        redis.url()
    ));
    assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.95")), "OK");
    // No ban in force: an empty list, over HTTP and through the CLI, and nothing to clear.
    let reply = String::from_utf8_lossy(&crate::common::ask(
        d.admin(),
        format!("GET /bans HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n", super::TOKEN).as_bytes(),
    ))
    .into_owned();
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    assert!(reply.ends_with("\r\n\r\n"), "an empty body: {reply}");
    let out = d.bans_cli(&["list"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let out = d.bans_cli(&["clear"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 0 ban(s)\n", "{out:?}");
    // Redis was not marked down: a login right after is decided, not a temporary failure.
    assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.95")), "OK");
    assert_eq!(status(&d.login_from("bob", "bob-password", "192.0.2.96")), "OK");
    let log = d.log();
    assert!(
        !log.contains("redis is unreachable") && !log.contains("redis answered an error"),
        "{log}"
    );

    // An error reply (a failure window that is not a sorted set: WRONGTYPE) fails that one
    // operation; it is logged, and Redis stays in use for the next login.
    assert_eq!(redis.command("SET mailauthd:{u:carol}:f not-a-window").trim(), "+OK");
    assert_eq!(
        status(&d.login_from("carol", "guess", "192.0.2.97")),
        "[AUTHENTICATIONFAILED] Invalid login or password"
    );
    assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.95")), "OK");
    let log = d.log();
    assert_eq!(log.matches("redis answered an error").count(), 1, "{log}");
    assert!(
        log.contains("WRONGTYPE") && !log.contains("redis is unreachable"),
        "{log}"
    );
}
