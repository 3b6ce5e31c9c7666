//! A circuit breaker for one upstream: counts failed questions in a row, stops asking for a
//! cooldown once there are too many, then lets one login probe. Time is an input, so the
//! state machine is tested without waiting.

use std::time::Duration;

use tokio::time::Instant;

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Questions go to the upstream.
    Closed,
    /// No question goes out until the instant given.
    Open {
        /// When a probe may go out.
        until: Instant,
    },
    /// One probe is out; everything else is answered at once.
    HalfOpen {
        /// When the probe went out.
        since: Instant,
    },
}

/// What the breaker lets a login do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::source) enum Admit {
    /// Ask the upstream.
    Ask,
    /// Ask the upstream as the probe of a half-open breaker.
    Probe,
    /// Do not ask: temporary failure at once.
    Refuse,
}

/// A change of the breaker's state, to be logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::source) enum Transition {
    /// Closed → open after this many failures in a row.
    Opened(u32),
    /// The probe failed: open for another cooldown.
    Reopened,
    /// An answer came back: closed.
    Closed,
}

/// Counts failed questions in a row and decides whether to ask. Time is an input, so the
/// state machine is tested without waiting.
#[derive(Debug)]
pub(in crate::source) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row for `cooldown`. A
    /// probe that has not reported back after `probe_timeout` is given up and another
    /// login may probe.
    pub(in crate::source) fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// The current state.
    pub(in crate::source) fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a login at `now` may ask the upstream.
    pub(in crate::source) fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Ask,
            BreakerState::Open { until } if now < until => Admit::Refuse,
            BreakerState::HalfOpen { since } if now.saturating_duration_since(since) < self.probe_timeout => {
                Admit::Refuse
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { since: now };
                Admit::Probe
            }
        }
    }

    /// Records the outcome of a question; returns the state change, if any.
    pub(in crate::source) fn record(&mut self, answered: bool, now: Instant) -> Option<Transition> {
        if answered {
            self.failures = 0;
            if self.state == BreakerState::Closed {
                return None;
            }
            self.state = BreakerState::Closed;
            return Some(Transition::Closed);
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            BreakerState::Closed if self.failures >= self.threshold => {
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
                Some(Transition::Opened(self.failures))
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
                Some(Transition::Reopened)
            }
            // A question sent before the breaker opened: already counted as open.
            BreakerState::Closed | BreakerState::Open { .. } => None,
        }
    }
}
