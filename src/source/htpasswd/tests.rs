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
fn a_file_with_broken_lines_is_taken_without_them_and_the_source_says_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "alice:{PLAIN}a1\nmallory:{PLAIN}m1\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 2, .. }));
    assert_eq!(src.status().degraded, None);
    assert_eq!(src.status().detail, "users=2");
    // v2, written by rename: mallory gone, alice's password changed, a bcrypt hash cut short
    // by a paste and a line without `:`.
    let new = dir.path().join("users.new");
    std::fs::write(&new, "alice:{PLAIN}a2\ncarol:$2y$10$abc\nno colon here\n").unwrap();
    std::fs::rename(&new, src.path()).unwrap();
    let outcome = src.reload(false);
    let ReloadOutcome::Loaded { users: 1, problems } = &outcome else {
        panic!("the new file was not taken: {outcome:?}");
    };
    assert_eq!(outcome.broken_lines(), Some(2));
    let lines: Vec<(usize, Severity)> = problems.iter().map(|p| (p.line, p.severity)).collect();
    assert_eq!(lines, [(2, Severity::Error), (3, Severity::Error)]);
    let table = src.table();
    assert!(table.get(b"mallory").is_none());
    assert!(table.get(b"carol").is_none());
    let alice = table.get(b"alice").unwrap();
    assert!(alice.hash.verify(b"a2") && !alice.hash.verify(b"a1"));
    // Ready, degraded, and why.
    let status = src.status();
    assert!(status.ready);
    let why = status.degraded.clone().unwrap();
    assert!(
        why.contains("2 broken line(s) skipped") && why.contains("line 2, 3"),
        "{why}"
    );
    assert_eq!(status.detail, format!("users=1 degraded: {why}"));
    // A restart (a first load) takes the same table.
    let fresh = source(dir.path());
    assert!(matches!(fresh.reload(true), ReloadOutcome::Loaded { users: 1, .. }));
    assert!(fresh.table().get(b"alice").unwrap().hash.verify(b"a2"));
    assert!(fresh.table().get(b"mallory").is_none());
    assert_eq!(fresh.status().degraded, status.degraded);
    // Not re-read (nor re-logged) until it changes again; fixed, it is whole again.
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
    std::fs::write(src.path(), "alice:{PLAIN}a2\ncarol:{PLAIN}c1\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 2, .. }));
    assert_eq!(src.status().degraded, None);
}

#[test]
fn a_file_that_cannot_be_read_keeps_the_last_table_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(false);
    std::fs::remove_file(src.path()).unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Failed(_)));
    // Reported once while it stays missing.
    assert!(matches!(src.reload(false), ReloadOutcome::Unchanged));
    let status = src.status();
    assert!(status.ready);
    let why = status.degraded.unwrap();
    assert!(
        why.starts_with("keeping the last good table: cannot read users file"),
        "{why}"
    );
    assert!(src.table().get(b"a").unwrap().hash.verify(b"x"));
    std::fs::write(src.path(), "a:{PLAIN}y\n").unwrap();
    assert!(matches!(src.reload(false), ReloadOutcome::Loaded { users: 1, .. }));
    assert_eq!(src.status().degraded, None);
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let made = std::process::Command::new("mkfifo").arg(src.path()).status().unwrap();
    assert!(made.success());
    // Nobody ever writes to the FIFO: a blocking open would hang this test.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = src.path().to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(source(path.parent().unwrap()).reload(true));
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reload blocked on a FIFO");
    let ReloadOutcome::Failed(e) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(matches!(e, SourceError::NotAFile { kind: "FIFO", .. }), "{e:?}");
    assert!(e.to_string().contains("is not a regular file (it is a FIFO)"), "{e}");
    // A folder too.
    let folder = tempfile::tempdir().unwrap();
    let src = HtpasswdSource::new(HtpasswdConfig {
        path: folder.path().to_owned(),
        protocols: None,
    });
    assert!(matches!(
        src.reload(true),
        ReloadOutcome::Failed(SourceError::NotAFile { kind: "folder", .. })
    ));
    assert!(!src.status().ready);
    assert!(
        src.status().detail.starts_with("unavailable: users file"),
        "{:?}",
        src.status()
    );
}

#[test]
fn a_file_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    std::fs::write(src.path(), "a:{PLAIN}x\n").unwrap();
    src.reload(false);
    // Sparse: no disk space, and nothing read (reading it would take a while).
    let file = std::fs::OpenOptions::new().write(true).open(src.path()).unwrap();
    file.set_len(reload::MAX_FILE_BYTES + 1).unwrap();
    let outcome = src.reload(true);
    let ReloadOutcome::Failed(SourceError::TooLarge { len, cap, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!((len, cap), ((1 << 30) + 1, 1 << 30));
    assert!(src.table().get(b"a").unwrap().hash.verify(b"x"));
    assert!(
        src.status()
            .degraded
            .unwrap()
            .contains("over the cap of 1073741824 bytes")
    );
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
