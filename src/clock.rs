//! Where the crate reads the time, so expiry and lockout rules can be tested exactly and
//! instantly. Two readings, because two kinds of time are needed: a monotonic [`Instant`] for
//! what lives in this process (the verified-login cache), and wall-clock milliseconds for
//! what is shared with other instances through Redis (brute-force windows and bans), which
//! only a synchronised wall clock can order across machines.

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The current monotonic instant.
    fn now(&self) -> Instant;
    /// The current time in milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; both readings move together.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    start: Instant,
    start_ms: u64,
    elapsed_ms: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    /// A clock whose wall reading shows `start_ms`.
    pub(crate) fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            start_ms,
            elapsed_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.elapsed_ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    fn elapsed(&self) -> u64 {
        self.elapsed_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new(1_700_000_000_000)
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.elapsed())
    }

    fn unix_ms(&self) -> u64 {
        self.start_ms + self.elapsed()
    }
}
