use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::CacheSettings;

const FP_A: [u8; 32] = [1; 32];
const FP_B: [u8; 32] = [2; 32];

fn cache_on(clock: &Arc<ManualClock>) -> LoginCache {
    let clock: Arc<dyn Clock> = clock.clone();
    LoginCache::with_clock(CacheSettings::default(), clock).expect("cache is on")
}

#[test]
fn a_verified_password_is_remembered_until_its_ttl_and_not_a_moment_longer() {
    let clock = Arc::new(ManualClock::default());
    let cache = cache_on(&clock);
    let key = cache.key(b"htpasswd:/u", b"alice", b"pw", &FP_A);
    assert_eq!(cache.lookup(&key), Lookup::Miss);
    cache.remember(key, true);
    assert_eq!(cache.lookup(&key), Lookup::Right);
    clock.advance(Duration::from_secs(299));
    assert_eq!(cache.lookup(&key), Lookup::Right);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.lookup(&key), Lookup::Miss);
}

#[test]
fn a_wrong_password_is_remembered_as_wrong_for_the_negative_ttl() {
    let clock = Arc::new(ManualClock::default());
    let cache = cache_on(&clock);
    let key = cache.key(b"s", b"alice", b"guess", &FP_A);
    cache.remember(key, false);
    assert_eq!(cache.lookup(&key), Lookup::Wrong);
    clock.advance(Duration::from_secs(29));
    assert_eq!(cache.lookup(&key), Lookup::Wrong);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.lookup(&key), Lookup::Miss);
}

#[test]
fn a_changed_stored_hash_never_hits() {
    let clock = Arc::new(ManualClock::default());
    let cache = cache_on(&clock);
    cache.remember(cache.key(b"s", b"alice", b"pw", &FP_A), true);
    assert_eq!(cache.lookup(&cache.key(b"s", b"alice", b"pw", &FP_B)), Lookup::Miss);
}

#[test]
fn every_field_is_part_of_the_key_and_fields_cannot_be_shifted() {
    let clock = Arc::new(ManualClock::default());
    let cache = cache_on(&clock);
    let base = cache.key(b"s", b"alice", b"pw", &FP_A);
    let others = [
        cache.key(b"t", b"alice", b"pw", &FP_A),
        cache.key(b"s", b"alicf", b"pw", &FP_A),
        cache.key(b"s", b"alice", b"pW", &FP_A),
        // The same bytes split differently between the fields.
        cache.key(b"s", b"alic", b"epw", &FP_A),
        cache.key(b"sa", b"lice", b"pw", &FP_A),
        cache.key(b"s", b"alice\0", b"pw", &FP_A),
        cache.key(b"s", b"alice", b"\0pw", &FP_A),
    ];
    for other in others {
        assert_ne!(base, other);
    }
    assert_eq!(base, cache.key(b"s", b"alice", b"pw", &FP_A));
}

#[test]
fn two_processes_never_share_keys() {
    let a = LoginCache::new(CacheSettings::default()).unwrap();
    let b = LoginCache::new(CacheSettings::default()).unwrap();
    assert_ne!(a.key(b"s", b"u", b"p", &FP_A), b.key(b"s", b"u", b"p", &FP_A));
}

#[test]
fn ttl_zero_turns_the_cache_off_and_negative_ttl_zero_only_the_negative_part() {
    let off = CacheSettings {
        ttl: Duration::ZERO,
        ..CacheSettings::default()
    };
    assert!(LoginCache::new(off).is_none());
    let clock = Arc::new(ManualClock::default());
    let settings = CacheSettings {
        negative_ttl: Duration::ZERO,
        ..CacheSettings::default()
    };
    let cache = LoginCache::with_clock(settings, clock).unwrap();
    let wrong = cache.key(b"s", b"u", b"bad", &FP_A);
    cache.remember(wrong, false);
    assert_eq!(cache.lookup(&wrong), Lookup::Miss);
    let right = cache.key(b"s", b"u", b"good", &FP_A);
    cache.remember(right, true);
    assert_eq!(cache.lookup(&right), Lookup::Right);
}

#[test]
fn the_size_bound_holds() {
    let settings = CacheSettings {
        max_entries: 100,
        ..CacheSettings::default()
    };
    let cache = LoginCache::new(settings).unwrap();
    for n in 0..1000u32 {
        cache.remember(cache.key(b"s", &n.to_le_bytes(), b"p", &FP_A), true);
    }
    assert!(cache.len() <= 100, "{} entries", cache.len());
}
