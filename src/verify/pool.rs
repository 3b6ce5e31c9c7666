//! Where password hashes are verified. Cheap schemes run inline; slow and memory-hard ones
//! run on a fixed set of dedicated threads fed by a bounded queue, so bcrypt never blocks
//! the async workers and a burst can neither pile up latency nor exhaust memory: when the
//! queue is full the login gets a temporary failure at once. Memory-hard schemes (argon2,
//! scrypt, yescrypt) run on at most `memory_hard_threads` of those threads at a time, so a
//! burst of them cannot take more than that many times their memory.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::hash::{StoredHash, Weight};
use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send>;

/// Why a verification could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolError {
    /// Every thread is busy and the queue is full.
    #[error("verification queue is full")]
    Overloaded,
    /// The pool has stopped.
    #[error("verification pool has stopped")]
    Stopped,
}

/// A bounded pool of verification threads.
#[derive(Debug, Clone)]
pub(crate) struct VerifyPool {
    jobs: Sender<Job>,
    hard_jobs: Sender<Job>,
    metrics: Arc<Metrics>,
}

impl VerifyPool {
    /// Starts `threads` verification threads with room for `queue` waiting jobs; every
    /// thread may run memory-hard jobs.
    #[cfg(test)]
    pub(crate) fn new(threads: usize, queue: usize) -> VerifyPool {
        VerifyPool::with_limits(threads, queue, threads, Arc::new(Metrics::new()))
    }

    /// Starts `threads` verification threads with room for `queue` waiting slow jobs and
    /// `queue` waiting memory-hard jobs, of which at most `memory_hard_threads` run at once;
    /// verification times and queue depth go to `metrics`.
    pub(crate) fn with_limits(
        threads: usize,
        queue: usize,
        memory_hard_threads: usize,
        metrics: Arc<Metrics>,
    ) -> VerifyPool {
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
            metrics,
        }
    }

    /// Runs `check` against `hash`: inline for cheap schemes, on the pool otherwise.
    pub(crate) async fn run<T, F>(&self, hash: Arc<StoredHash>, check: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&StoredHash) -> T + Send + 'static,
    {
        if hash.weight() == Weight::Cheap {
            return Ok(self.run_inline(&hash, check));
        }
        let metrics = self.metrics.clone();
        let memory_hard = hash.weight() == Weight::MemoryHard;
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A login whose decision ran out of time (or whose client hung up) no longer
            // waits for this result: skip the hash instead of spending a thread on it.
            if reply.is_closed() {
                return;
            }
            let _ = reply.send(timed(&metrics, &hash, check));
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

    /// Runs `check` against `hash` on the calling thread, timed like the pool's jobs: for
    /// cheap schemes, which cost less than handing them to a thread.
    pub(crate) fn run_inline<T>(&self, hash: &StoredHash, check: impl FnOnce(&StoredHash) -> T) -> T {
        timed(&self.metrics, hash, check)
    }
}

/// Runs `check` against `hash` and records how long it took, inline or on a pool thread.
fn timed<T>(metrics: &Metrics, hash: &StoredHash, check: impl FnOnce(&StoredHash) -> T) -> T {
    let started = Instant::now();
    let answer = check(hash);
    metrics.hash_verified(hash.scheme_name(), started.elapsed());
    answer
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
mod tests;
