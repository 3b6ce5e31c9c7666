use super::*;
use crate::config::CacheSettings;
use crate::verify::{LoginCache, Verified, Verifier};
use zeroize::Zeroizing;

/// bcrypt cost 4 of the password `x`.
const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

#[tokio::test]
async fn slow_hashes_leave_the_calling_thread_and_cheap_ones_do_not() {
    let pool = VerifyPool::new(1, 4);
    let caller = thread::current().id();
    let bcrypt = Arc::new(StoredHash::parse("$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa").unwrap());
    let ran_on = pool.run(bcrypt, |_| thread::current().id()).await.unwrap();
    assert_ne!(ran_on, caller);
    let plain = Arc::new(StoredHash::parse("{PLAIN}x").unwrap());
    let ran_on = pool.run(plain, |_| thread::current().id()).await.unwrap();
    assert_eq!(ran_on, caller);
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_at_once() {
    let pool = VerifyPool::new(1, 1);
    let bcrypt = Arc::new(StoredHash::parse("$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa").unwrap());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let pool = pool.clone();
        let hash = bcrypt.clone();
        tokio::spawn(async move {
            pool.run(hash, move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
            })
            .await
        })
    };
    // Wait (bounded) until the only thread is busy.
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(std::time::Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // One more fills the queue; the next is refused without waiting.
    let queued = tokio::spawn({
        let pool = pool.clone();
        let hash = bcrypt.clone();
        async move { pool.run(hash, |h| h.verify(b"x")).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(pool.run(bcrypt, |_| ()).await, Err(PoolError::Overloaded));
    release_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    assert_eq!(queued.await.unwrap(), Ok(true));
}

/// Polls `future` once: `Some` if it finished without waiting for anything.
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A caller's pending verification, kept alive so that its job is not skipped.
type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PoolError>> + Send + 'a>>;

/// Fills every thread and the whole queue of `pool` with jobs that wait for the returned
/// sender. The callers' futures are returned: a job whose caller is gone is skipped.
fn saturate(pool: &VerifyPool, threads: usize, queue: usize) -> (std::sync::mpsc::Sender<()>, Vec<Pending<'_>>) {
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let bcrypt = Arc::new(StoredHash::parse(BCRYPT_X).unwrap());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    for n in 0..threads + queue {
        let (started, release) = (started_tx.clone(), release_rx.clone());
        let mut job: Pending<'_> = Box::pin(pool.run(bcrypt.clone(), move |_| {
            let _ = started.send(());
            let _ = release.lock().unwrap().recv();
        }));
        assert!(poll_once(job.as_mut()).is_none(), "job {n} was not accepted");
        pending.push(job);
        if n + 1 == threads {
            // Every thread holds a job, so the next ones stay in the queue.
            for _ in 0..threads {
                started_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            }
        }
    }
    (release_tx, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_hashes_and_cache_hits_never_wait_behind_a_saturated_pool() {
    let pool = VerifyPool::new(2, 3);
    let verifier = Verifier::new(
        pool.clone(),
        LoginCache::new(CacheSettings::default()),
        Arc::new(Metrics::new()),
    );
    let bcrypt = Arc::new(StoredHash::parse(BCRYPT_X).unwrap());
    // Learn the right password of the bcrypt user while the pool is free.
    let pass = Zeroizing::new(b"x".to_vec());
    let first = verifier.verify_login(b"src", b"bob", &pass, &bcrypt).await.unwrap();
    assert_eq!(
        first,
        Verified {
            right: true,
            cached: false
        }
    );

    let (release, _pending) = saturate(&pool, 2, 3);
    let plain = Arc::new(StoredHash::parse("{PLAIN}secret").unwrap());
    let right = Zeroizing::new(b"secret".to_vec());
    let wrong = Zeroizing::new(b"Secret".to_vec());
    // Each finishes on the first poll: nothing to wait for.
    let got = poll_once(verifier.verify_login(b"src", b"alice", &right, &plain)).expect("cheap hash waited");
    assert_eq!(
        got,
        Ok(Verified {
            right: true,
            cached: false
        })
    );
    let got = poll_once(verifier.verify_login(b"src", b"alice", &wrong, &plain)).expect("cheap hash waited");
    assert_eq!(
        got,
        Ok(Verified {
            right: false,
            cached: false
        })
    );
    let got = poll_once(verifier.verify_login(b"src", b"bob", &pass, &bcrypt)).expect("cache hit waited");
    assert_eq!(
        got,
        Ok(Verified {
            right: true,
            cached: true
        })
    );
    // A slow hash that is not cached is refused at once, not queued.
    let other = Zeroizing::new(b"other".to_vec());
    let got = poll_once(verifier.verify_login(b"src", b"bob", &other, &bcrypt)).expect("overload waited");
    assert_eq!(got, Err(PoolError::Overloaded));

    for _ in 0..5 {
        release.send(()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_gave_up_is_skipped() {
    let pool = VerifyPool::new(1, 4);
    let (release, pending) = saturate(&pool, 1, 0);
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bcrypt = Arc::new(StoredHash::parse(BCRYPT_X).unwrap());
    let flag = ran.clone();
    let mut late = Box::pin(pool.run(bcrypt.clone(), move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst)
    }));
    assert!(poll_once(late.as_mut()).is_none());
    drop(late);
    release.send(()).unwrap();
    drop(pending);
    // A job queued after the skipped one runs, so the skipped one had its turn.
    assert_eq!(pool.run(bcrypt, |h| h.verify(b"x")).await, Ok(true));
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "the abandoned job was hashed"
    );
}
