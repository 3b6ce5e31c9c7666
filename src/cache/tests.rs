use std::sync::Arc;
use std::time::Duration;

use super::*;

const FP_A: [u8; 32] = [1; 32];
const FP_B: [u8; 32] = [2; 32];

fn cache_on(clock: &Arc<ManualClock>) -> LoginCache {
    let clock: Arc<dyn Clock> = clock.clone();
    LoginCache::with_clock(CacheSettings::default(), clock).expect("cache is on")
}

#[test]
fn a_verified_password_is_remembered_until_its_ttl_and_not_a_moment_longer() {
    let clock = Arc::new(ManualClock::new());
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
    let clock = Arc::new(ManualClock::new());
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
    let clock = Arc::new(ManualClock::new());
    let cache = cache_on(&clock);
    cache.remember(cache.key(b"s", b"alice", b"pw", &FP_A), true);
    assert_eq!(cache.lookup(&cache.key(b"s", b"alice", b"pw", &FP_B)), Lookup::Miss);
}

#[test]
fn every_field_is_part_of_the_key_and_fields_cannot_be_shifted() {
    let clock = Arc::new(ManualClock::new());
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
    let clock = Arc::new(ManualClock::new());
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

mod through_a_source {
    use std::io::Write;

    use zeroize::Zeroizing;

    use super::*;
    use crate::config::HtpasswdConfig;
    use crate::protocol::MailProtocol;
    use crate::source::{Credentials, HtpasswdSource, PlainAnswer, Source};
    use crate::verify_pool::VerifyPool;

    /// bcrypt cost 4 of `x`.
    const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

    fn users_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();
        file
    }

    fn source(file: &tempfile::NamedTempFile) -> Source {
        let s = HtpasswdSource::new(HtpasswdConfig {
            path: file.path().to_owned(),
            protocols: None,
        });
        s.reload(true);
        Source::Htpasswd(s)
    }

    async fn check(source: &Source, pool: &VerifyPool, user: &[u8], pass: &[u8]) -> PlainAnswer {
        let pass = Zeroizing::new(pass.to_vec());
        let creds = Credentials {
            user,
            pass: &pass,
            client_ip: None,
            protocol: MailProtocol::Imap,
        };
        source.check_plain(&creds, pool).await
    }

    fn scheme_of(answer: &PlainAnswer) -> &str {
        match answer {
            PlainAnswer::Accepted { scheme, .. } | PlainAnswer::Rejected { scheme, .. } => {
                scheme.as_deref().unwrap_or("")
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_repeated_wrong_password_is_still_refused_and_a_right_one_accepted() {
        let file = users_file(&format!("bob:{BCRYPT_X}\n"));
        let source = source(&file);
        let pool = VerifyPool::new(1, 4).with_cache(LoginCache::new(CacheSettings::default()));
        for round in 0..3 {
            let answer = check(&source, &pool, b"bob", b"wrong").await;
            assert!(
                matches!(
                    answer,
                    PlainAnswer::Rejected {
                        reason: "wrong-password",
                        ..
                    }
                ),
                "round {round}: {answer:?}"
            );
            assert_eq!(scheme_of(&answer).ends_with("+cached"), round > 0, "round {round}");
            let answer = check(&source, &pool, b"bob", b"x").await;
            assert!(
                matches!(answer, PlainAnswer::Accepted { .. }),
                "round {round}: {answer:?}"
            );
            assert_eq!(scheme_of(&answer).ends_with("+cached"), round > 0, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_password_change_in_the_file_is_never_answered_from_the_cache() {
        let file = users_file(&format!("bob:{BCRYPT_X}\n"));
        let source = source(&file);
        let pool = VerifyPool::new(1, 4).with_cache(LoginCache::new(CacheSettings::default()));
        assert!(matches!(
            check(&source, &pool, b"bob", b"x").await,
            PlainAnswer::Accepted { .. }
        ));
        assert!(matches!(
            check(&source, &pool, b"bob", b"x").await,
            PlainAnswer::Accepted { .. }
        ));
        // Same user, new password: the old one must stop working at once.
        std::fs::write(file.path(), "bob:{PLAIN}new\n").unwrap();
        let Source::Htpasswd(s) = &source else {
            unreachable!("built as an htpasswd source")
        };
        s.reload(true);
        let answer = check(&source, &pool, b"bob", b"x").await;
        assert!(
            matches!(
                answer,
                PlainAnswer::Rejected {
                    reason: "wrong-password",
                    ..
                }
            ),
            "{answer:?}"
        );
        assert!(matches!(
            check(&source, &pool, b"bob", b"new").await,
            PlainAnswer::Accepted { .. }
        ));
    }

    #[tokio::test]
    async fn two_sources_never_share_entries() {
        let file_a = users_file(&format!("bob:{BCRYPT_X}\n"));
        let file_b = users_file(&format!("bob:{BCRYPT_X}\n"));
        let (a, b) = (source(&file_a), source(&file_b));
        let pool = VerifyPool::new(1, 4).with_cache(LoginCache::new(CacheSettings::default()));
        let cached = |answer: PlainAnswer| scheme_of(&answer).ends_with("+cached");
        assert!(!cached(check(&a, &pool, b"bob", b"x").await));
        assert!(!cached(check(&b, &pool, b"bob", b"x").await));
        assert!(cached(check(&a, &pool, b"bob", b"x").await));
        assert!(cached(check(&b, &pool, b"bob", b"x").await));
    }
}
