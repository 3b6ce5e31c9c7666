//! Where password hashes are verified. Cheap schemes run inline; slow and memory-hard ones
//! run on a fixed set of dedicated threads fed by a bounded queue, so bcrypt never blocks
//! the async workers and a burst can neither pile up latency nor exhaust memory: when the
//! queue is full the login gets a temporary failure at once.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

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

/// A bounded pool of verification threads.
#[derive(Debug, Clone)]
pub struct VerifyPool {
    jobs: Sender<Job>,
    metrics: Arc<Metrics>,
}

impl VerifyPool {
    /// Starts `threads` verification threads with room for `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> VerifyPool {
        VerifyPool::with_metrics(threads, queue, Arc::new(Metrics::new()))
    }

    /// As [`VerifyPool::new`], recording verification times and queue depth in `metrics`.
    pub fn with_metrics(threads: usize, queue: usize, metrics: Arc<Metrics>) -> VerifyPool {
        let (jobs, receiver) = crossbeam_channel::bounded::<Job>(queue);
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            let metrics = metrics.clone();
            let spawned = thread::Builder::new().name(format!("verify-{index}")).spawn(move || {
                while let Ok(job) = receiver.recv() {
                    metrics.queue_depth(receiver.len());
                    job();
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start verification thread {index}: {e}");
            }
        }
        VerifyPool { jobs, metrics }
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
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver may be gone if the client hung up; nothing to do then.
            let _ = reply.send(timed(&hash));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth(self.jobs.len());
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
