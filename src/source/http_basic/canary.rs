//! Whether an upstream checks anything: it is asked, now and then, about a random user and
//! password. A 2xx there means it accepts every password (a URL with no `auth_basic`, an
//! `auth_request` service that forgot its check), so none of its answers is trusted until it
//! refuses such a login again. Time is an input, so the state machine is tested without
//! waiting.

use std::time::Duration;

use tokio::time::Instant;

use crate::reason::Reason;

/// What the upstream said to the last random login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not asked yet, or its last answer said nothing (transport failure, 5xx, 3xx).
    Unchecked,
    /// It refused a random login (401 or 403): its answers are trusted.
    Checks,
    /// It accepted a random login (2xx): the source is unusable.
    AcceptsAnything,
}

/// What one random login came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 401 or 403.
    Refused,
    /// 2xx.
    Accepted,
    /// Anything else; the reason is that of a login that met the same answer.
    Failed(Reason),
}

/// A change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// The first refusal, or a refusal after an inconclusive answer: in use.
    Checks,
    /// It accepted a random login: unusable from now on.
    AcceptsAnything,
    /// It refuses random logins again after accepting one.
    Fixed,
}

/// The last verdict and when it was reached.
#[derive(Debug)]
pub(super) struct Canary {
    verdict: Verdict,
    checked: Option<Instant>,
    last_failure: Reason,
    recheck_after: Duration,
}

impl Canary {
    /// Not checked yet; an upstream found to accept anything is asked again once
    /// `recheck_after` has passed.
    pub(super) fn new(recheck_after: Duration) -> Canary {
        Canary {
            verdict: Verdict::Unchecked,
            checked: None,
            last_failure: Reason::UpstreamError,
            recheck_after,
        }
    }

    /// The current verdict.
    pub(super) fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Why the last random login said nothing (meaningful while [`Verdict::Unchecked`]).
    pub(super) fn last_failure(&self) -> Reason {
        self.last_failure
    }

    /// Whether a random login is due at `now`: never asked, or nothing learnt from the last
    /// answer, or found to accept anything long enough ago. An upstream that checks is asked
    /// again only on a breaker probe (the caller's choice).
    pub(super) fn due(&self, now: Instant) -> bool {
        match self.verdict {
            Verdict::Unchecked => true,
            Verdict::Checks => false,
            Verdict::AcceptsAnything => self
                .checked
                .is_none_or(|at| now.saturating_duration_since(at) >= self.recheck_after),
        }
    }

    /// Whether a random login is due at `now` without a login asking for it: never asked
    /// (at start), or found to accept anything long enough ago. An upstream whose last
    /// answer said nothing is left to the logins, which the breaker paces.
    pub(super) fn due_unprompted(&self, now: Instant) -> bool {
        match self.verdict {
            Verdict::Unchecked => self.checked.is_none(),
            Verdict::Checks | Verdict::AcceptsAnything => self.due(now),
        }
    }

    /// Records what a random login came back with at `now`; returns the change, if any.
    /// An inconclusive answer leaves an upstream found to check or to accept anything as
    /// it was found: it says nothing about whether the upstream checks.
    pub(super) fn record(&mut self, outcome: Outcome, now: Instant) -> Option<Change> {
        self.checked = Some(now);
        let before = self.verdict;
        match outcome {
            Outcome::Refused => self.verdict = Verdict::Checks,
            Outcome::Accepted => self.verdict = Verdict::AcceptsAnything,
            Outcome::Failed(reason) => {
                self.last_failure = reason;
                return None;
            }
        }
        match (before, self.verdict) {
            (Verdict::AcceptsAnything, Verdict::Checks) => Some(Change::Fixed),
            (Verdict::Unchecked, Verdict::Checks) => Some(Change::Checks),
            (Verdict::Unchecked | Verdict::Checks, Verdict::AcceptsAnything) => Some(Change::AcceptsAnything),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECHECK: Duration = Duration::from_secs(10);

    #[test]
    fn an_unchecked_upstream_is_due_until_it_answers_one_way_or_the_other() {
        let t0 = Instant::now();
        let mut c = Canary::new(RECHECK);
        assert_eq!(c.verdict(), Verdict::Unchecked);
        assert!(c.due(t0));
        assert!(c.due_unprompted(t0));
        assert_eq!(c.record(Outcome::Failed(Reason::Upstream5xx), t0), None);
        assert_eq!(c.verdict(), Verdict::Unchecked);
        assert_eq!(c.last_failure(), Reason::Upstream5xx);
        // Logins ask again; nothing else does (the breaker paces logins, not the reloader).
        assert!(c.due(t0));
        assert!(!c.due_unprompted(t0 + RECHECK * 100));
        assert_eq!(c.record(Outcome::Refused, t0), Some(Change::Checks));
        assert!(!c.due(t0 + RECHECK * 100));
        assert_eq!(c.record(Outcome::Refused, t0), None);
    }

    #[test]
    fn accepting_anything_is_rechecked_after_the_delay_and_can_be_fixed() {
        let t0 = Instant::now();
        let mut c = Canary::new(RECHECK);
        assert_eq!(c.record(Outcome::Accepted, t0), Some(Change::AcceptsAnything));
        assert_eq!(c.verdict(), Verdict::AcceptsAnything);
        assert!(!c.due(t0 + RECHECK - Duration::from_millis(1)));
        assert!(!c.due_unprompted(t0 + RECHECK - Duration::from_millis(1)));
        assert!(c.due(t0 + RECHECK));
        assert!(c.due_unprompted(t0 + RECHECK));
        // Still accepting: stays unusable, logged once.
        assert_eq!(c.record(Outcome::Accepted, t0 + RECHECK), None);
        assert!(!c.due(t0 + RECHECK + Duration::from_secs(1)));
        // Down at the recheck: still unusable, whatever the reason.
        assert_eq!(
            c.record(Outcome::Failed(Reason::UpstreamTimeout), t0 + RECHECK * 2),
            None
        );
        assert_eq!(c.verdict(), Verdict::AcceptsAnything);
        assert_eq!(c.record(Outcome::Refused, t0 + RECHECK * 3), Some(Change::Fixed));
        assert_eq!(c.verdict(), Verdict::Checks);
    }

    #[test]
    fn a_checking_upstream_that_starts_accepting_anything_is_unusable() {
        let t0 = Instant::now();
        let mut c = Canary::new(RECHECK);
        c.record(Outcome::Refused, t0);
        assert_eq!(c.record(Outcome::Accepted, t0), Some(Change::AcceptsAnything));
        assert!(!c.due(t0));
        assert!(c.due(t0 + RECHECK));
    }
}
