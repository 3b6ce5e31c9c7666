use super::*;
use crate::config::HtpasswdConfig;

/// A source without the quiet period, so each test can reload right after writing.
fn source(dir: &Path) -> HtpasswdSource {
    HtpasswdSource::new(HtpasswdConfig {
        path: dir.join("users"),
        protocols: None,
    })
    .with_quiet(Duration::ZERO)
}

#[test]
fn a_just_modified_file_waits_for_the_quiet_period_and_sighup_waits_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = Duration::from_millis(200);
    let src = source(dir.path()).with_quiet(quiet);
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    let written = std::time::Instant::now();
    // A poll right after the write leaves it, and the first load has not happened yet.
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
    assert!(!src.is_available());
    // SIGHUP waits out the rest of the quiet period, then loads.
    assert!(matches!(src.reload(true), ReloadOutcome::Loaded { users: 1, .. }));
    // File times come from the kernel's coarse clock, a few ms behind the precise one.
    assert!(
        written.elapsed() + Duration::from_millis(10) >= quiet,
        "{:?}",
        written.elapsed()
    );
    std::fs::write(src.path(), "a:{PLAIN}y\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
    assert!(src.table().get(b"a").unwrap().hash.verify(b"x"));
    std::thread::sleep(quiet);
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 1, .. }));
    assert!(src.table().get(b"a").unwrap().hash.verify(b"y"));
}

#[test]
fn a_file_emptied_is_taken_only_once_it_holds_still() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\nb:{PLAIN}y\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 2, .. }));
    std::fs::write(src.path(), "").unwrap();
    assert!(matches!(
        src.reload(false),
        ReloadOutcome::SuspiciousEmpty { kept_users: 2 }
    ));
    assert_eq!(src.table().len(), 2);
    // Unchanged at the next poll: the admin meant it.
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 0, .. }));
    assert!(src.table().is_empty());
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
}

#[test]
fn an_emptied_file_that_fills_again_never_empties_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(false);
    std::fs::write(src.path(), "# only a comment\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::SuspiciousEmpty { .. }));
    std::fs::write(src.path(), "a:{PLAIN}new\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 1, .. }));
    assert!(src.table().get(b"a").unwrap().hash.verify(b"new"));
}

#[test]
fn sighup_takes_an_empty_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(false);
    std::fs::write(src.path(), "").unwrap();
    assert!(matches!(src.reload(true), ReloadOutcome::Loaded { users: 0, .. }));
}

#[test]
fn broken_lines_keep_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(false);
    std::fs::write(src.path(), "a:{PLAIN}y\nbroken\nodd:{NOPE}z\n").unwrap();
    let ReloadOutcome::KeptPrevious { problems } = src.reload(false) else {
        panic!("a broken file was taken");
    };
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].line, 2);
    assert!(src.table().get(b"a").unwrap().hash.verify(b"x"));
    // Not re-read (nor re-logged) until it changes again.
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
}

#[test]
fn a_file_caught_mid_write_is_never_taken_half_read() {
    let dir = tempfile::tempdir().unwrap();
    // A quiet period longer than the writer's mid-line pause, shorter than its pause
    // between lines.
    let src = source(dir.path()).with_quiet(Duration::from_millis(20));
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(true);
    let path = src.path().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            // Half a line, a short pause (shorter than the quiet period), the other half, a
            // long pause: a read in the short pause ends mid-line and must not be taken.
            for i in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                f.write_all(format!("u{i}:{{PLA").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                f.write_all(b"IN}p\n").unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let mut loaded = 0;
    for _ in 0..30 {
        match src.reload(true) {
            ReloadOutcome::Loaded { problems, .. } => {
                assert!(problems.is_empty(), "half-read file taken: {problems:?}");
                loaded += 1;
            }
            ReloadOutcome::Unsettled => {}
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(7));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(loaded > 0, "never settled");
}

#[test]
fn an_emptied_file_is_taken_only_after_it_held_still_for_the_hold() {
    let dir = tempfile::tempdir().unwrap();
    let hold = Duration::from_millis(300);
    let src = source(dir.path()).with_empty_hold(hold);
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 1, .. }));
    std::fs::write(src.path(), "").unwrap();
    assert!(matches!(
        src.reload(false),
        ReloadOutcome::SuspiciousEmpty { kept_users: 1 }
    ));
    // Seen twice, but not yet left alone for the hold: still kept, and said only once.
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
    assert_eq!(src.table().len(), 1);
    std::thread::sleep(hold);
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 0, .. }));
}

/// The htpasswd source through a verifier with the verified-login cache.
mod through_the_cache {
    use std::io::Write;

    use zeroize::Zeroizing;

    use super::*;
    use crate::config::CacheSettings;
    use crate::metrics::Metrics;
    use crate::verify::{LoginCache, Verifier, VerifyPool};

    /// bcrypt cost 4 of `x`.
    const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

    fn users_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();
        file
    }

    fn source(file: &tempfile::NamedTempFile) -> HtpasswdSource {
        let s = HtpasswdSource::new(HtpasswdConfig {
            path: file.path().to_owned(),
            protocols: None,
        });
        s.reload(true);
        s
    }

    fn cached_verifier() -> Verifier {
        Verifier::new(
            VerifyPool::new(1, 4),
            LoginCache::new(CacheSettings::default()),
            Arc::new(Metrics::new()),
        )
    }

    async fn check(source: &HtpasswdSource, verifier: &Verifier, user: &[u8], pass: &[u8]) -> PlainAnswer {
        let pass = Zeroizing::new(pass.to_vec());
        let creds = Credentials {
            user,
            pass: &pass,
            client_ip: None,
        };
        source.check_plain(&creds, verifier).await
    }

    fn cached(answer: &PlainAnswer) -> bool {
        match answer {
            PlainAnswer::Accepted { scheme, .. } | PlainAnswer::Rejected { scheme, .. } => {
                scheme.as_ref().is_some_and(|s| s.cached)
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_repeated_wrong_password_is_still_refused_and_a_right_one_accepted() {
        let file = users_file(&format!("bob:{BCRYPT_X}\n"));
        let source = source(&file);
        let pool = cached_verifier();
        for round in 0..3 {
            let answer = check(&source, &pool, b"bob", b"wrong").await;
            assert!(
                matches!(
                    answer,
                    PlainAnswer::Rejected {
                        reason: Reason::WrongPassword,
                        ..
                    }
                ),
                "round {round}: {answer:?}"
            );
            assert_eq!(cached(&answer), round > 0, "round {round}");
            let answer = check(&source, &pool, b"bob", b"x").await;
            assert!(
                matches!(answer, PlainAnswer::Accepted { .. }),
                "round {round}: {answer:?}"
            );
            assert_eq!(cached(&answer), round > 0, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_password_change_in_the_file_is_never_answered_from_the_cache() {
        let file = users_file(&format!("bob:{BCRYPT_X}\n"));
        let source = source(&file);
        let pool = cached_verifier();
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
        source.reload(true);
        let answer = check(&source, &pool, b"bob", b"x").await;
        assert!(
            matches!(
                answer,
                PlainAnswer::Rejected {
                    reason: Reason::WrongPassword,
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
        let pool = cached_verifier();
        let cached = |answer: PlainAnswer| cached(&answer);
        assert!(!cached(check(&a, &pool, b"bob", b"x").await));
        assert!(!cached(check(&b, &pool, b"bob", b"x").await));
        assert!(cached(check(&a, &pool, b"bob", b"x").await));
        assert!(cached(check(&b, &pool, b"bob", b"x").await));
    }
}
