//! The verifier's single flight: identical concurrent logins hash once; different passwords
//! never share an answer.

use super::*;
use crate::config::CacheSettings;

/// bcrypt cost 10 of `x` (`htpasswd -nbB -C 10 u x`): tens of milliseconds, long enough for
/// the concurrent callers to find the first one's flight.
fn bcrypt_x() -> Arc<StoredHash> {
    Arc::new(StoredHash::parse(&bcrypt::hash("x", 10).unwrap()).unwrap())
}

fn verifier(cache: bool) -> (Verifier, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let cache = if cache {
        LoginCache::new(CacheSettings::default())
    } else {
        None
    };
    let pool = VerifyPool::with_limits(2, 64, 2, metrics.clone());
    (Verifier::new(pool, cache, metrics.clone()), metrics)
}

fn sample(metrics: &Metrics, name: &str) -> String {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

async fn together(verifier: &Verifier, hash: &Arc<StoredHash>, passwords: &[&str]) -> Vec<Verified> {
    let calls = passwords.iter().map(|p| {
        let (verifier, hash) = (verifier.clone(), hash.clone());
        let pass = Zeroizing::new(p.as_bytes().to_vec());
        tokio::spawn(async move { verifier.verify_login(b"s", b"u", &pass, &hash).await })
    });
    let mut out = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        out.push(call.await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_identical_cold_logins_hash_once() {
    for cache in [true, false] {
        let (verifier, metrics) = verifier(cache);
        let answers = together(&verifier, &bcrypt_x(), &["x"; 16]).await;
        assert!(answers.iter().all(|v| v.right && !v.cached), "{answers:?}");
        assert_eq!(
            sample(
                &metrics,
                r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#
            ),
            "1",
            "cache {cache}"
        );
        assert_eq!(sample(&metrics, "mailauthd_verifications_shared_total"), "15");
        assert_eq!(
            verifier.flights.len(),
            0,
            "the table empties once everyone has the answer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_passwords_never_share_an_answer() {
    let (verifier, metrics) = verifier(false);
    let answers = together(&verifier, &bcrypt_x(), &["x", "y", "x", "y"]).await;
    let rights: Vec<bool> = answers.iter().map(|v| v.right).collect();
    assert_eq!(rights, [true, false, true, false]);
    assert_eq!(
        sample(
            &metrics,
            r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#
        ),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_leaves_the_work_to_the_next() {
    let (verifier, metrics) = verifier(false);
    let hash = bcrypt_x();
    let pass = Zeroizing::new(b"x".to_vec());
    // The first caller is dropped while its hash runs; a second identical one still gets
    // an answer, from its own (re-run) verification.
    let first = verifier.verify_login(b"s", b"u", &pass, &hash);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1), first).await;
    let second = verifier.verify_login(b"s", b"u", &pass, &hash).await.unwrap();
    assert!(second.right);
    assert_eq!(verifier.flights.len(), 0);
    assert_eq!(sample(&metrics, "mailauthd_verifications_shared_total"), "0");
}
