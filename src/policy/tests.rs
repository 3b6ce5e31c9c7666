//! The policy rules with a manual clock: exact windows, bans and their expiry,
//! de-duplication, escalation, allow-list, successes, memory bound.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::{Config, ConfigOrigin};
use crate::login::ClientAddr;

const T0: u64 = 1_800_000_000_000;

fn policy_with(text: &str) -> (Policy, Arc<ManualClock>) {
    let config = Config::from_toml(text, ConfigOrigin::BuiltIn, Path::new(".")).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    (Policy::new(&config.policy, &config.state, clock.clone()), clock)
}

fn ip(s: &str) -> Option<ClientAddr> {
    Some(ClientAddr::from_ip(s.parse().unwrap()))
}

async fn gate(p: &Policy, addr: &str, user: &str) -> Gate {
    match p.check(ip(addr), user.as_bytes()).await {
        Check::Allowed(g) => g,
        other => panic!("{user} from {addr}: expected allowed, got {other:?}"),
    }
}

async fn fail(p: &Policy, addr: &str, user: &str, pass: &str) -> Recorded {
    let g = gate(p, addr, user).await;
    p.failed(&g, pass.as_bytes()).await.unwrap()
}

async fn banned(p: &Policy, addr: &str, user: &str) -> Option<Scope> {
    match p.check(ip(addr), user.as_bytes()).await {
        Check::Banned(s, _) => Some(s),
        Check::Allowed(_) => None,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_limit_th_distinct_failure_inside_the_window_bans_the_pair() {
    let (p, clock) = policy_with("[policy]\npair_failures = 3\nwindow = \"60s\"\nban = \"10m\"\n");
    assert_eq!(fail(&p, "192.0.2.1", "alice", "a").await.counts, [1, 1, 1]);
    clock.advance(Duration::from_secs(30));
    assert_eq!(fail(&p, "192.0.2.1", "alice", "b").await.banned, None);
    // 59.999 s after the first failure it still counts: the third bans.
    clock.advance(Duration::from_millis(29_999));
    let r = fail(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!((r.counts[2], r.banned), (3, Some(Scope::Pair)));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, Some(Scope::Pair));
    // Only this pair: the user from elsewhere and others from here are not affected.
    assert_eq!(banned(&p, "198.51.100.1", "alice").await, None);
    assert_eq!(banned(&p, "192.0.2.1", "bob").await, None);
}

/// A guess refused by a ban, reported as the decider reports it.
async fn guess_while_banned(p: &Policy, addr: &str, user: &str, pass: &str) -> (Scope, Option<Recorded>) {
    match p.check(ip(addr), user.as_bytes()).await {
        Check::Banned(scope, Some(gate)) => (scope, p.failed(&gate, pass.as_bytes()).await),
        Check::Banned(scope, None) => (scope, None),
        other => panic!("{user} from {addr}: expected banned, got {other:?}"),
    }
}

/// Time left of the one pair ban.
async fn pair_ttl(p: &Policy) -> Option<Duration> {
    let bans = p.bans().await.unwrap();
    bans.iter().find(|b| b.scope == Scope::Pair).map(|b| b.remaining)
}

#[tokio::test]
async fn guesses_refused_by_a_pair_ban_still_count_for_the_network_and_the_user() {
    let (p, clock) = policy_with("[policy]\npair_failures = 2\nnet_failures = 4\nuser_failures = 100\nban = \"10m\"\n");
    fail(&p, "192.0.2.1", "alice", "a").await;
    let r = fail(&p, "192.0.2.1", "alice", "b").await;
    assert_eq!((r.counts, r.banned), ([2, 2, 2], Some(Scope::Pair)));
    clock.advance(Duration::from_secs(60));
    // Refused by the pair ban, and counted for the network and the user only: the pair's
    // ban is neither counted again nor extended.
    let (scope, r) = guess_while_banned(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!(
        (scope, r.map(|r| (r.counts, r.banned))),
        (Scope::Pair, Some(([3, 3, 0], None)))
    );
    // The same guess again counts once.
    let (_, r) = guess_while_banned(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!(r.map(|r| r.counts), Some([3, 3, 0]));
    assert_eq!(pair_ttl(&p).await, Some(Duration::from_secs(540)));
    // The fourth distinct guess of this network bans it: another user from here is
    // refused, from elsewhere not.
    let (_, r) = guess_while_banned(&p, "192.0.2.1", "alice", "d").await;
    assert_eq!(r.map(|r| r.banned), Some(Some(Scope::Net)));
    assert_eq!(guess_while_banned(&p, "192.0.2.1", "bob", "x").await.0, Scope::Net);
    assert!(
        guess_while_banned(&p, "192.0.2.1", "bob", "x").await.1.is_none(),
        "a net ban counts nothing more"
    );
    assert_eq!(banned(&p, "198.51.100.1", "bob").await, None);
    assert_eq!(pair_ttl(&p).await, Some(Duration::from_secs(540)));
}

#[tokio::test]
async fn guesses_refused_by_a_user_ban_still_count_for_the_network() {
    let (p, _clock) = policy_with("[policy]\npair_failures = 0\nuser_failures = 2\nnet_failures = 3\n");
    fail(&p, "192.0.2.1", "alice", "a").await;
    assert_eq!(fail(&p, "192.0.2.2", "alice", "b").await.banned, Some(Scope::User));
    let (scope, r) = guess_while_banned(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!((scope, r.map(|r| r.counts)), (Scope::User, Some([2, 0, 0])));
    let (_, r) = guess_while_banned(&p, "192.0.2.1", "alice", "d").await;
    assert_eq!(r.map(|r| r.banned), Some(Some(Scope::Net)));
    assert_eq!(banned(&p, "192.0.2.1", "bob").await, Some(Scope::Net));
}

#[tokio::test]
async fn a_failure_exactly_one_window_old_no_longer_counts() {
    let (p, clock) = policy_with("[policy]\npair_failures = 3\nwindow = \"60s\"\n");
    fail(&p, "192.0.2.1", "alice", "a").await;
    clock.advance(Duration::from_secs(30));
    fail(&p, "192.0.2.1", "alice", "b").await;
    clock.advance(Duration::from_secs(30));
    let r = fail(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!((r.counts[2], r.banned), (2, None));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, None);
}

#[tokio::test]
async fn a_ban_lasts_exactly_its_ttl_and_then_counting_starts_afresh() {
    let (p, clock) = policy_with("[policy]\nnet_failures = 2\nban = \"5m\"\n");
    fail(&p, "192.0.2.9", "u1", "x").await;
    assert_eq!(fail(&p, "192.0.2.9", "u2", "x").await.banned, Some(Scope::Net));
    clock.advance(Duration::from_millis(5 * 60_000 - 1));
    assert_eq!(banned(&p, "192.0.2.9", "anyone").await, Some(Scope::Net));
    clock.advance(Duration::from_millis(1));
    assert_eq!(banned(&p, "192.0.2.9", "anyone").await, None);
    assert_eq!(fail(&p, "192.0.2.9", "u3", "x").await.counts[0], 1);
}

#[tokio::test]
async fn a_repeated_identical_password_counts_once() {
    let (p, _clock) = policy_with("[policy]\npair_failures = 3\nnet_failures = 3\nuser_failures = 3\n");
    for _ in 0..20 {
        let r = fail(&p, "192.0.2.1", "alice", "old-password").await;
        assert_eq!((r.counts, r.banned), ([1, 1, 1], None));
    }
    // The same password for another user is another guess for the network.
    assert_eq!(fail(&p, "192.0.2.1", "bob", "old-password").await.counts, [2, 1, 1]);
    // The user is not case-distinct: ALICE is alice.
    assert_eq!(fail(&p, "192.0.2.1", "ALICE", "old-password").await.counts, [2, 1, 1]);
}

#[test]
fn the_tag_is_keyed_truncated_and_never_the_password() {
    let key = "[policy]\nhmac_key = \"0123456789abcdef-deployment\"\n";
    let (a, _) = policy_with(key);
    let (b, _) = policy_with(key);
    let (random, _) = policy_with("");
    let subject = Subject::new("192.0.2.1/32".to_owned(), "alice".to_owned());
    let tag = a.tag(&subject, b"hunter2");
    assert_eq!(tag.len(), 16);
    assert!(!tag.contains("hunter2"));
    assert_eq!(tag, b.tag(&subject, b"hunter2"), "same key, same tag: instances agree");
    assert_ne!(tag, random.tag(&subject, b"hunter2"), "another key, another tag");
    assert_ne!(tag, a.tag(&subject, b"hunter3"));
}

#[test]
fn auth_wait_doubles_up_to_the_cap() {
    let waits: Vec<u32> = (1..=6).map(|n| escalated_wait(2, 15, n)).collect();
    assert_eq!(waits, [2, 4, 8, 15, 15, 15]);
    assert_eq!(escalated_wait(3, 15, 1), 3);
    assert_eq!(escalated_wait(0, 15, 4), 0, "no wait configured, none escalated");
    assert_eq!(escalated_wait(5, 15, u32::MAX), 15);
}

#[tokio::test]
async fn allow_listed_networks_are_never_counted_or_banned() {
    let (p, _clock) = policy_with("[policy]\nnet_failures = 1\nallow = [\"10.1.0.0/16\", \"2001:db8::1\"]\n");
    for addr in ["10.1.2.3", "10.1.255.1", "2001:db8::1", "::ffff:10.1.0.7"] {
        assert!(matches!(p.check(ip(addr), b"alice").await, Check::Exempt), "{addr}");
    }
    assert!(matches!(p.check(ip("10.2.0.1"), b"alice").await, Check::Allowed(_)));
    assert!(matches!(p.check(ip("2001:db8::2"), b"alice").await, Check::Allowed(_)));
}

#[tokio::test]
async fn a_success_clears_the_pairs_failures_only() {
    let (p, _clock) = policy_with("[policy]\npair_failures = 3\nnet_failures = 100\nuser_failures = 100\n");
    fail(&p, "192.0.2.1", "alice", "a").await;
    fail(&p, "192.0.2.1", "alice", "b").await;
    let g = gate(&p, "192.0.2.1", "alice").await;
    p.succeeded(&g).await;
    let r = fail(&p, "192.0.2.1", "alice", "c").await;
    assert_eq!(r.counts, [3, 3, 1], "net and user windows keep their failures");
    assert_eq!(fail(&p, "192.0.2.1", "alice", "d").await.banned, None);
}

#[tokio::test]
async fn a_success_gives_the_network_a_larger_allowance_not_an_exemption() {
    let text = "[policy]\nnet_failures = 3\nnet_failures_trusted = 5\npair_failures = 0\nuser_failures = 0\n";
    let (p, _clock) = policy_with(text);
    for (i, user) in ["u1", "u2"].iter().enumerate() {
        assert_eq!(fail(&p, "192.0.2.1", user, "x").await.counts[0], i as u32 + 1);
    }
    assert_eq!(fail(&p, "192.0.2.1", "u3", "x").await.banned, Some(Scope::Net));

    // Behind a NAT: one valid login does not unlock guessing other users' passwords.
    let (p, _clock) = policy_with(text);
    let g = gate(&p, "198.51.100.7", "alice").await;
    p.succeeded(&g).await;
    for user in ["u1", "u2", "u3", "u4"] {
        assert_eq!(fail(&p, "198.51.100.7", user, "x").await.banned, None, "{user}");
    }
    assert_eq!(fail(&p, "198.51.100.7", "u5", "x").await.banned, Some(Scope::Net));
    assert_eq!(banned(&p, "198.51.100.7", "alice").await, Some(Scope::Net));
}

#[tokio::test]
async fn a_user_ban_spares_networks_the_user_logged_in_from() {
    let (p, _clock) = policy_with("[policy]\nuser_failures = 3\npair_failures = 0\nnet_failures = 0\n");
    let home = gate(&p, "203.0.113.5", "alice").await;
    p.succeeded(&home).await;
    for (i, addr) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
        let r = fail(&p, addr, "alice", &format!("guess{i}")).await;
        assert_eq!(r.banned, (i == 2).then_some(Scope::User));
    }
    assert_eq!(banned(&p, "192.0.2.200", "alice").await, Some(Scope::User));
    assert_eq!(banned(&p, "203.0.113.5", "alice").await, None);
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_and_prefixes_are_configurable() {
    let (p, _clock) = policy_with("[policy]\nnet_failures = 2\n");
    fail(&p, "2001:db8:1:2::1", "u1", "x").await;
    assert_eq!(
        fail(&p, "2001:db8:1:2:ffff::9", "u2", "x").await.banned,
        Some(Scope::Net)
    );
    assert_eq!(banned(&p, "2001:db8:1:2::77", "u3").await, Some(Scope::Net));
    assert_eq!(banned(&p, "2001:db8:1:3::1", "u3").await, None);

    let (p, _clock) = policy_with("[policy]\nnet_failures = 2\nipv4_prefix = 24\n");
    fail(&p, "192.0.2.1", "u1", "x").await;
    fail(&p, "192.0.2.200", "u2", "x").await;
    assert_eq!(banned(&p, "192.0.2.99", "u3").await, Some(Scope::Net));
    assert_eq!(p.network(ip("::ffff:192.0.2.5")), "192.0.2.0/24");
}

#[tokio::test]
async fn bans_are_listed_and_cleared_by_ip_or_user() {
    let (p, clock) = policy_with("[policy]\nnet_failures = 2\npair_failures = 1\nban = \"10m\"\n");
    fail(&p, "192.0.2.1", "alice", "x").await;
    fail(&p, "192.0.2.1", "bob", "x").await;
    fail(&p, "198.51.100.1", "carol", "x").await;
    clock.advance(Duration::from_secs(60));
    let list: Vec<String> = p.bans().await.unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(
        list,
        [
            "net net=192.0.2.1/32 user=- ttl=540s",
            "pair net=192.0.2.1/32 user=\"alice\" ttl=540s",
            "pair net=192.0.2.1/32 user=\"bob\" ttl=540s",
            "pair net=198.51.100.1/32 user=\"carol\" ttl=540s",
        ]
    );
    assert_eq!(p.clear(&p.filter(None, Some("Bob"))).await.unwrap(), 1);
    assert_eq!(
        p.clear(&p.filter(ip("192.0.2.1").and_then(ClientAddr::ip), None))
            .await
            .unwrap(),
        2
    );
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, None);
    assert_eq!(p.bans().await.unwrap().len(), 1);
    assert_eq!(p.clear(&BanFilter::default()).await.unwrap(), 1);
    assert!(p.bans().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_disabled_policy_exempts_everyone() {
    let (p, _clock) = policy_with("[policy]\nenabled = false\n");
    assert!(matches!(p.check(ip("192.0.2.1"), b"a").await, Check::Exempt));
}

#[tokio::test]
async fn a_flood_of_distinct_networks_and_users_stays_within_max_entries() {
    // Each failure touches three windows (net, user, pair); with limits of 1 every one of
    // them also becomes a ban, the worst case for the tables.
    let (p, _clock) =
        policy_with("[policy]\nmax_entries = 1000\nnet_failures = 1\nuser_failures = 1\npair_failures = 1\n");
    let subjects = 30_000u32;
    for i in 0..subjects {
        let subject = Subject::new(
            format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255),
            format!("user{i}"),
        );
        let limits = p.limits(false);
        p.local().fail(&subject, "t", &limits, T0);
        p.local().succeed(&subject, [None; 2], T0);
    }
    let held = p.local().entry_count();
    assert!(held <= 3 * 1000, "{held} entries held for {subjects} subjects");
    assert!(held > 0);
}

#[test]
fn a_listed_user_name_cannot_forge_a_field() {
    let ban = BanEntry {
        scope: Scope::Pair,
        net: Some("192.0.2.1/32".to_owned()),
        user: Some(user_key(b"x ttl=999999s user=\"root\" \\")),
        remaining: Duration::from_secs(60),
    };
    assert_eq!(
        ban.to_string(),
        r#"pair net=192.0.2.1/32 user="x ttl=999999s user=\"root\" \\" ttl=60s"#
    );
    let net = BanEntry::from_key("n:192.0.2.1/32", Duration::from_secs(5)).unwrap();
    assert_eq!(net.to_string(), "net net=192.0.2.1/32 user=- ttl=5s");
}

#[test]
fn long_user_names_are_counted_under_a_hash() {
    let long = vec![b'a'; 10_000];
    let key = user_key(&long);
    assert!(key.starts_with('#') && key.len() == 65, "{key}");
    assert_eq!(user_key(b"Alice@Example.ORG"), "alice@example.org");
    assert_eq!(user_key(b"a\nb"), "a?b");
}

#[tokio::test]
async fn a_unix_socket_client_is_counted_per_user_and_pair_but_not_per_network() {
    let (p, _clock) = policy_with(
        "[policy]\nnet_failures = 2\npair_failures = 3\nuser_failures = 4\nallow = [\"0.0.0.0/0\", \"::/0\"]\n",
    );
    let unix = Some(ClientAddr::Unix);
    let check = |user: &'static str| p.check(unix, user.as_bytes());
    // It matches no network, not even an `allow` of everything.
    let Check::Allowed(alice) = check("alice").await else {
        panic!("a unix client is not exempt");
    };
    assert_eq!(alice.subject.net, "unix");
    let r = p.failed(&alice, b"a").await.unwrap();
    assert_eq!(r.counts, [0, 1, 1], "no network count");
    p.failed(&alice, b"b").await.unwrap();
    assert_eq!(p.failed(&alice, b"c").await.unwrap().banned, Some(Scope::Pair));
    assert!(matches!(check("alice").await, Check::Banned(Scope::Pair, _)));
    // Six failures from the socket: past net_failures, yet other users still log in there.
    let Check::Allowed(bob) = check("bob").await else {
        panic!("bob refused");
    };
    p.failed(&bob, b"a").await.unwrap();
    p.failed(&bob, b"b").await.unwrap();
    p.failed(&bob, b"c").await.unwrap();
    assert!(matches!(check("carol").await, Check::Allowed(_)));
    assert!(p.local().bans(T0).iter().all(|b| b.scope != Scope::Net));
}

#[tokio::test]
async fn bans_heard_of_refuse_while_redis_is_unreachable_even_in_tempfail_mode() {
    // Nothing listens on port 1: every Redis operation fails at once.
    let (p, clock) = policy_with(
        "[state]\nsentinels = [\"127.0.0.1:1\"]\nsentinel_master = \"mymaster\"\non_redis_error = \"tempfail\"\n",
    );
    let now = clock.unix_ms();
    p.heard.insert("n:192.0.2.1/32".to_owned(), now + 60_000);
    p.heard.insert("p:192.0.2.2/32|alice".to_owned(), now + 60_000);
    assert!(matches!(
        p.check(ip("192.0.2.1"), b"bob").await,
        Check::Banned(Scope::Net, None)
    ));
    assert!(matches!(
        p.check(ip("192.0.2.2"), b"alice").await,
        Check::Banned(Scope::Pair, Some(_))
    ));
    // Not heard of: nothing to decide on without Redis.
    assert!(matches!(p.check(ip("192.0.2.2"), b"bob").await, Check::Unavailable));
    // A ban that ended no longer refuses.
    clock.advance(Duration::from_secs(61));
    assert!(matches!(p.check(ip("192.0.2.1"), b"bob").await, Check::Unavailable));
    // A lifting heard of forgets it.
    p.heard.invalidate("p:192.0.2.2/32|alice");
    assert!(matches!(p.check(ip("192.0.2.2"), b"alice").await, Check::Unavailable));
}

#[tokio::test]
async fn a_failure_or_a_ban_is_seen_while_it_lasts_and_uncounted_when_it_goes() {
    // Logins skip the windows and bans tables while those hold nothing: every entry must
    // be counted while it is there, and the counts must come back to zero after it.
    let (p, clock) = policy_with("[policy]\npair_failures = 2\nwindow = \"60s\"\nban = \"10m\"\n");
    assert_eq!(p.local().held(), (0, 0));
    assert_eq!(fail(&p, "192.0.2.1", "alice", "a").await.counts, [1, 1, 1]);
    assert_eq!(p.local().held(), (3, 0));
    // The success forgets the pair's window (the network's and the user's stay).
    let g = gate(&p, "192.0.2.1", "alice").await;
    p.succeeded(&g).await;
    assert_eq!(p.local().held(), (2, 0));
    assert_eq!(fail(&p, "192.0.2.1", "alice", "b").await.counts[2], 1);
    assert_eq!(fail(&p, "192.0.2.1", "alice", "c").await.banned, Some(Scope::Pair));
    assert_eq!(p.local().held(), (2, 1));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, Some(Scope::Pair));
    // Lifted by hand: gone from the count, and the pair logs in again.
    let all = BanFilter { net: None, user: None };
    assert_eq!(p.clear(&all).await.unwrap(), 1);
    assert_eq!(p.local().held(), (2, 0));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, None);
    // Banned again, then expired: the windows idle out and the ban runs out.
    fail(&p, "192.0.2.1", "alice", "d").await;
    assert_eq!(fail(&p, "192.0.2.1", "alice", "e").await.banned, Some(Scope::Pair));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, Some(Scope::Pair));
    clock.advance(Duration::from_secs(601));
    assert_eq!(banned(&p, "192.0.2.1", "alice").await, None);
}
