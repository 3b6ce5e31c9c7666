//! Where password hashes are verified. Cheap schemes run inline; slow and memory-hard ones
//! run on a fixed set of dedicated threads fed by a bounded queue, so bcrypt never blocks
//! the async workers and a burst can neither pile up latency nor exhaust memory: when the
//! queue is full the login gets a temporary failure at once. Memory-hard schemes (argon2,
//! scrypt, yescrypt) run on at most `memory_hard_threads` of those threads at a time, so a
//! burst of them cannot take more than that many times their memory. With a
//! [`LoginCache`], [`VerifyPool::verify_login`] answers repeated logins without hashing.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::cache::{LoginCache, Lookup};
use crate::hash::{StoredHash, Weight};
use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send>;

/// Why a verification could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every thread is busy and the queue is full.
    #[error("verification queue is full")]
    Overloaded,
    /// The pool has stopped.
    #[error("verification pool has stopped")]
    Stopped,
}

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matches the stored hash.
    pub right: bool,
    /// The answer came from the verified-login cache, without hashing.
    pub cached: bool,
}

/// A bounded pool of verification threads.
#[derive(Debug, Clone)]
pub struct VerifyPool {
    jobs: Sender<Job>,
    hard_jobs: Sender<Job>,
    cache: Option<LoginCache>,
    metrics: Arc<Metrics>,
}

impl VerifyPool {
    /// Starts `threads` verification threads with room for `queue` waiting jobs; every
    /// thread may run memory-hard jobs.
    pub fn new(threads: usize, queue: usize) -> VerifyPool {
        VerifyPool::with_limits(threads, queue, threads, Arc::new(Metrics::new()))
    }

    /// Starts `threads` verification threads with room for `queue` waiting slow jobs and
    /// `queue` waiting memory-hard jobs, of which at most `memory_hard_threads` run at once;
    /// verification times and queue depth go to `metrics`.
    pub fn with_limits(threads: usize, queue: usize, memory_hard_threads: usize, metrics: Arc<Metrics>) -> VerifyPool {
        let threads = threads.max(1);
        let memory_hard_threads = memory_hard_threads.clamp(1, threads);
        let (jobs, receiver) = crossbeam_channel::bounded::<Job>(queue);
        let (hard_jobs, hard_receiver) = crossbeam_channel::bounded::<Job>(queue);
        for index in 0..threads {
            let receiver = receiver.clone();
            // Only the first `memory_hard_threads` threads take memory-hard jobs: that is
            // the bound on their memory.
            let hard = (index < memory_hard_threads).then(|| hard_receiver.clone());
            let metrics = metrics.clone();
            let spawned = thread::Builder::new()
                .name(format!("verify-{index}"))
                .spawn(move || work(&receiver, hard.as_ref(), &metrics));
            if let Err(e) = spawned {
                tracing::error!("cannot start verification thread {index}: {e}");
            }
        }
        VerifyPool {
            jobs,
            hard_jobs,
            cache: None,
            metrics,
        }
    }

    /// Consults and fills `cache` in [`VerifyPool::verify_login`] (`None`: no cache).
    #[must_use]
    pub fn with_cache(mut self, cache: Option<LoginCache>) -> VerifyPool {
        self.cache = cache;
        self
    }

    /// The verified-login cache, if on.
    pub fn cache(&self) -> Option<&LoginCache> {
        self.cache.as_ref()
    }

    /// Checks `password` of `user` in `scope` (a source name) against `hash`, through the
    /// verified-login cache when it is on. Cheap schemes skip the cache: hashing them costs
    /// less than the cache key.
    pub async fn verify_login(
        &self,
        scope: &[u8],
        user: &[u8],
        password: &Zeroizing<Vec<u8>>,
        hash: &Arc<StoredHash>,
    ) -> Result<Verified, PoolError> {
        let cache = self.cache.as_ref().filter(|_| hash.weight() != Weight::Cheap);
        let key = cache.map(|c| c.key(scope, user, password, &hash.fingerprint()));
        if let (Some(cache), Some(key)) = (cache, &key) {
            match cache.lookup(key) {
                Lookup::Right => {
                    return Ok(Verified {
                        right: true,
                        cached: true,
                    });
                }
                Lookup::Wrong => {
                    return Ok(Verified {
                        right: false,
                        cached: true,
                    });
                }
                Lookup::Miss => {}
            }
        }
        let pass = password.clone();
        let right = self.run(hash.clone(), move |h| h.verify(&pass)).await?;
        if let (Some(cache), Some(key)) = (cache, key) {
            cache.remember(key, right);
        }
        Ok(Verified { right, cached: false })
    }

    /// Runs `check` against `hash`: inline for cheap schemes, on the pool otherwise.
    pub async fn run<T, F>(&self, hash: Arc<StoredHash>, check: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&StoredHash) -> T + Send + 'static,
    {
        let metrics = self.metrics.clone();
        let timed = move |hash: &StoredHash| {
            let started = Instant::now();
            let answer = check(hash);
            metrics.hash_verified(hash.scheme_name(), started.elapsed());
            answer
        };
        if hash.weight() == Weight::Cheap {
            return Ok(timed(&hash));
        }
        let memory_hard = hash.weight() == Weight::MemoryHard;
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A login whose decision ran out of time (or whose client hung up) no longer
            // waits for this result: skip the hash instead of spending a thread on it.
            if reply.is_closed() {
                return;
            }
            let _ = reply.send(timed(&hash));
        });
        let queue = if memory_hard { &self.hard_jobs } else { &self.jobs };
        match queue.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth(queue.len());
                result.await.map_err(|_| PoolError::Stopped)
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.pool_rejected();
                Err(PoolError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => Err(PoolError::Stopped),
        }
    }
}

/// Makes the calling thread yield the CPU to the connection workers: when every core is
/// busy hashing, a cheap login must still be answered at once (measured in BENCHMARKS.md).
fn lower_priority() {
    // SAFETY: nice(2) takes no pointers; on Linux it changes only the calling thread. A
    // failure (e.g. already at the lowest priority) leaves the priority as it was, which is
    // harmless.
    let _ = unsafe { libc::nice(10) };
}

/// One verification thread: runs jobs until the pool is dropped.
fn work(jobs: &Receiver<Job>, hard_jobs: Option<&Receiver<Job>>, metrics: &Metrics) {
    lower_priority();
    let Some(hard_jobs) = hard_jobs else {
        while let Ok(job) = jobs.recv() {
            metrics.queue_depth(jobs.len());
            job();
        }
        return;
    };
    loop {
        let job = crossbeam_channel::select! {
            recv(jobs) -> job => job,
            recv(hard_jobs) -> job => job,
        };
        match job {
            Ok(job) => {
                metrics.queue_depth(jobs.len() + hard_jobs.len());
                job();
            }
            // Both senders live in the same `VerifyPool`: one gone means both are.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bcrypt cost 4 of the password `x`.
    const BCRYPT_X: &str = "$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa";

    #[tokio::test]
    async fn slow_hashes_leave_the_calling_thread_and_cheap_ones_do_not() {
        let pool = VerifyPool::new(1, 4);
        let caller = thread::current().id();
        let bcrypt =
            Arc::new(StoredHash::parse("$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa").unwrap());
        let ran_on = pool.run(bcrypt, |_| thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
        let plain = Arc::new(StoredHash::parse("{PLAIN}x").unwrap());
        let ran_on = pool.run(plain, |_| thread::current().id()).await.unwrap();
        assert_eq!(ran_on, caller);
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_at_once() {
        let pool = VerifyPool::new(1, 1);
        let bcrypt =
            Arc::new(StoredHash::parse("$2y$04$O6DT3ix3vJYqErk9nUYi3ev6Eq.5BQxKMKwhdBgCz4SjMGvJQGjqa").unwrap());
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
        use crate::cache::{CacheSettings, LoginCache};
        let pool = VerifyPool::new(2, 3).with_cache(LoginCache::new(CacheSettings::default()));
        let bcrypt = Arc::new(StoredHash::parse(BCRYPT_X).unwrap());
        // Learn the right password of the bcrypt user while the pool is free.
        let pass = Zeroizing::new(b"x".to_vec());
        let first = pool.verify_login(b"src", b"bob", &pass, &bcrypt).await.unwrap();
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
        let got = poll_once(pool.verify_login(b"src", b"alice", &right, &plain)).expect("cheap hash waited");
        assert_eq!(
            got,
            Ok(Verified {
                right: true,
                cached: false
            })
        );
        let got = poll_once(pool.verify_login(b"src", b"alice", &wrong, &plain)).expect("cheap hash waited");
        assert_eq!(
            got,
            Ok(Verified {
                right: false,
                cached: false
            })
        );
        let got = poll_once(pool.verify_login(b"src", b"bob", &pass, &bcrypt)).expect("cache hit waited");
        assert_eq!(
            got,
            Ok(Verified {
                right: true,
                cached: true
            })
        );
        // A slow hash that is not cached is refused at once, not queued.
        let other = Zeroizing::new(b"other".to_vec());
        let got = poll_once(pool.verify_login(b"src", b"bob", &other, &bcrypt)).expect("overload waited");
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
}
