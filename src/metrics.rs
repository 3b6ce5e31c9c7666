//! Prometheus metrics: one [`Metrics`] per daemon, shared through the [`Authenticator`]
//! (`crate::decide::Authenticator::metrics`), rendered as OpenMetrics text by the admin
//! listener's `GET /metrics`. Every metric name starts with `mailauthd_`; labels carry
//! protocol, method, result, hash scheme and source names, never a user or an address, so
//! the number of series stays small and fixed.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `mailauthd_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    method: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SchemeLabels {
    scheme: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceErrorLabels {
    source: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Labels of `mailauthd_backend_up`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    protocol: &'static str,
    backend: String,
}

/// Labels of `mailauthd_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    mode: &'static str,
    primary: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Seconds, from 100 µs (a `{PLAIN}` login) to 10 s (a queue of argon2 hashes).
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// The daemon's metrics: a registry and a typed handle on each family. Recording is a few
/// atomic operations (plus a read lock on a labelled family), cheap beside a decision.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decision_seconds: Histogram,
    verify_seconds: HistogramFamily<SchemeLabels>,
    cache_hits: Counter,
    cache_misses: Counter,
    verifications_shared: Counter,
    queue_depth: Gauge,
    pool_rejections: Counter,
    source_errors: Family<SourceErrorLabels, Counter>,
    source_users: Family<SourceLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    last_reload: Gauge<f64, AtomicU64>,
    source_broken_lines: Family<SourceLabels, Gauge>,
    upstream_resends: Family<SourceLabels, Counter>,
    bad_secret: Counter,
    backend_up: Family<BackendLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    state_failovers: Gauge,
    state_subscribed: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered (and empty).
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailauthd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Auth requests answered, by mail protocol, auth method and result (ok, invalid, tempfail, banned, relay-denied, bad-request)",
            requests.clone(),
        );
        let decision_seconds = seconds_histogram();
        registry.register_with_unit(
            "decision_duration",
            "Time from accepting an auth connection to its decision",
            Unit::Seconds,
            decision_seconds.clone(),
        );
        let verify_seconds: HistogramFamily<SchemeLabels> = Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "hash_verify_duration",
            "Time spent verifying one password hash, by scheme (queue wait excluded)",
            Unit::Seconds,
            verify_seconds.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Logins answered from the verification cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Logins the verification cache could not answer",
            cache_misses.clone(),
        );
        let verifications_shared = Counter::default();
        registry.register(
            "verifications_shared",
            "Logins answered by an identical login's verification that was already running",
            verifications_shared.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "verify_queue_depth",
            "Slow hash verifications waiting for a thread",
            queue_depth.clone(),
        );
        let pool_rejections = Counter::default();
        registry.register(
            "verify_rejections",
            "Verifications refused because the queue was full (answered as temporary failures)",
            pool_rejections.clone(),
        );
        let source_errors = Family::<SourceErrorLabels, Counter>::default();
        registry.register(
            "source_errors",
            "Source failures: unreadable or broken users files on reload, unavailable answers to logins",
            source_errors.clone(),
        );
        let source_users = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "source_users",
            "Users in the table each source has in use",
            source_users.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reloads",
            "Source reloads that put a new table in use (ok) or kept the last one (failed)",
            reloads.clone(),
        );
        let last_reload = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_reload_timestamp",
            "Unix time of the last reload that put a new table in use",
            Unit::Seconds,
            last_reload.clone(),
        );
        let source_broken_lines = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "source_broken_lines",
            "Broken lines skipped in the users file each source has in use (above 0: degraded)",
            source_broken_lines.clone(),
        );
        let upstream_resends = Family::<SourceLabels, Counter>::default();
        registry.register(
            "upstream_resends",
            "Questions sent again on a fresh connection because the upstream closed a kept-alive one before answering",
            upstream_resends.clone(),
        );
        let bad_secret = Counter::default();
        registry.register(
            "bad_secret_requests",
            "Requests refused because the [nginx] shared secret was missing or wrong",
            bad_secret.clone(),
        );
        let backend_up = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_up",
            "Whether the last health check of each backend passed (1) or failed (0)",
            backend_up.clone(),
        );
        let state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "state",
            "The shared policy state: its mode and the server in use, 1 while Redis answers, else 0",
            state.clone(),
        );
        let state_failovers = Gauge::default();
        registry.register(
            "state_failovers_seen",
            "Changes of Redis primary seen since the start",
            state_failovers.clone(),
        );
        let state_subscribed = Gauge::default();
        registry.register(
            "state_bans_subscribed",
            "1 while subscribed to the bans every instance publishes, else 0",
            state_subscribed.clone(),
        );
        registry.register(
            "build",
            "The running version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            requests,
            decision_seconds,
            verify_seconds,
            cache_hits,
            cache_misses,
            verifications_shared,
            queue_depth,
            pool_rejections,
            source_errors,
            source_users,
            reloads,
            last_reload,
            source_broken_lines,
            upstream_resends,
            bad_secret,
            backend_up,
            state,
            state_failovers,
            state_subscribed,
        }
    }

    /// The shared policy state as `/metrics` shows it (set before each rendering).
    pub(crate) fn shared_state(
        &self,
        mode: &'static str,
        primary: &str,
        reachable: bool,
        failovers: u64,
        subscribed: bool,
    ) {
        // One series: the one of the primary in use now.
        self.state.clear();
        self.state
            .get_or_create(&StateLabels {
                mode,
                primary: primary.to_owned(),
            })
            .set(i64::from(reachable));
        self.state_failovers.set(i64::try_from(failovers).unwrap_or(i64::MAX));
        self.state_subscribed.set(i64::from(subscribed));
    }

    /// Records one answered request and how long its decision took.
    pub(crate) fn decision(&self, protocol: &'static str, method: &'static str, result: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                method,
                result,
            })
            .inc();
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// Records the time one hash verification took.
    pub(crate) fn hash_verified(&self, scheme: &'static str, took: Duration) {
        self.verify_seconds
            .get_or_create(&SchemeLabels { scheme })
            .observe(took.as_secs_f64());
    }

    /// A login answered from the verification cache.
    pub(crate) fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// A login the verification cache could not answer.
    pub(crate) fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// A login answered by an identical login's verification instead of hashing.
    pub(crate) fn verification_shared(&self) {
        self.verifications_shared.inc();
    }

    /// The verification queue now holds `depth` jobs.
    pub(crate) fn queue_depth(&self, depth: usize) {
        self.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A verification refused because the queue was full.
    pub(crate) fn pool_rejected(&self) {
        self.pool_rejections.inc();
    }

    /// A source failed: `reason` is a short stable word (`unreadable`, `broken-lines`,
    /// `unsettled` (changed during every read), `emptied` (no users any more, held back),
    /// `source-unavailable`, `overloaded`, ...).
    pub(crate) fn source_error(&self, source: &str, reason: &'static str) {
        self.source_errors
            .get_or_create(&SourceErrorLabels {
                source: source.to_owned(),
                reason,
            })
            .inc();
    }

    /// A reload of `source` put a table of `users` users in use.
    pub(crate) fn reload_ok(&self, source: &str, users: usize) {
        // Series that exist from the first load at 0, so that rate() and alerts on them
        // work before the first failure.
        for reason in ["unreadable", "broken-lines", "unsettled", "emptied"] {
            let _ = self.source_errors.get_or_create(&SourceErrorLabels {
                source: source.to_owned(),
                reason,
            });
        }
        let _ = self.reloads.get_or_create(&ResultLabels { result: "failed" });
        self.source_users
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .set(i64::try_from(users).unwrap_or(i64::MAX));
        self.reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_reload.set(now.as_secs_f64());
    }

    /// A reload of `source` failed (`reason` as for [`Metrics::source_error`]); the last
    /// good table, if any, stays in use.
    pub(crate) fn reload_failed(&self, source: &str, reason: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result: "failed" }).inc();
        self.source_error(source, reason);
    }

    /// A reload of `source` put in use a table that skipped `broken` broken lines: the gauge
    /// says how many, and a table taken with any counts as a `broken-lines` source error.
    pub(crate) fn broken_lines(&self, source: &str, broken: usize) {
        self.source_broken_lines
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .set(i64::try_from(broken).unwrap_or(i64::MAX));
        if broken > 0 {
            self.source_error(source, "broken-lines");
        }
    }

    /// An upstream source is in use: its resend series exists from now on, at 0.
    pub(crate) fn upstream_in_use(&self, source: &str) {
        let _ = self.upstream_resends.get_or_create(&SourceLabels {
            source: source.to_owned(),
        });
    }

    /// A question to `source` was sent again on a fresh connection.
    pub(crate) fn upstream_resent(&self, source: &str) {
        self.upstream_resends
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }

    /// A request came without the `[nginx]` shared secret, or with another one.
    pub(crate) fn bad_secret(&self) {
        self.bad_secret.inc();
    }

    /// The last health check of `backend` for `protocol` passed (`up`) or failed.
    pub(crate) fn backend_up(&self, protocol: &'static str, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabels {
                protocol,
                backend: backend.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The metrics as OpenMetrics text ([`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; an encoder error would be a bug in a label type.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
    }

    #[test]
    fn recorded_values_appear_in_the_text() {
        let m = Metrics::new();
        m.decision("imap", "plain", "ok", Duration::from_millis(2));
        m.decision("imap", "plain", "ok", Duration::from_millis(3));
        m.decision("pop3", "plain", "invalid", Duration::from_millis(3));
        m.hash_verified("bcrypt", Duration::from_millis(40));
        m.cache_hit();
        m.cache_miss();
        m.cache_miss();
        m.queue_depth(7);
        m.pool_rejected();
        m.reload_ok("htpasswd:/u", 12);
        m.reload_failed("htpasswd:/u", "unreadable");
        m.broken_lines("htpasswd:/u", 0);
        m.broken_lines("htpasswd:/u", 2);
        m.upstream_in_use("http-basic:http://a/");
        m.upstream_in_use("http-basic:http://b/");
        m.upstream_resent("http-basic:http://b/");
        m.upstream_resent("http-basic:http://b/");
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_requests_total{protocol="imap",method="plain",result="ok"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_requests_total{protocol="pop3",method="plain",result="invalid"}"#
            ),
            Some("1")
        );
        assert_eq!(sample(&text, "mailauthd_decision_duration_seconds_count"), Some("3"));
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_hash_verify_duration_seconds_bucket{le="0.05",scheme="bcrypt"}"#
            ),
            Some("1")
        );
        assert_eq!(sample(&text, "mailauthd_cache_hits_total"), Some("1"));
        assert_eq!(sample(&text, "mailauthd_cache_misses_total"), Some("2"));
        assert_eq!(sample(&text, "mailauthd_verify_queue_depth"), Some("7"));
        assert_eq!(sample(&text, "mailauthd_verify_rejections_total"), Some("1"));
        assert_eq!(
            sample(&text, r#"mailauthd_source_users{source="htpasswd:/u"}"#),
            Some("12")
        );
        assert_eq!(sample(&text, r#"mailauthd_reloads_total{result="ok"}"#), Some("1"));
        assert_eq!(sample(&text, r#"mailauthd_reloads_total{result="failed"}"#), Some("1"));
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_source_errors_total{source="htpasswd:/u",reason="unreadable"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"mailauthd_source_broken_lines{source="htpasswd:/u"}"#),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_source_errors_total{source="htpasswd:/u",reason="broken-lines"}"#
            ),
            Some("1")
        );
        let last: f64 = sample(&text, "mailauthd_last_reload_timestamp_seconds")
            .unwrap()
            .parse()
            .unwrap();
        assert!(last > 1.0e9, "{last}");
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_upstream_resends_total{source="http-basic:http://a/"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"mailauthd_upstream_resends_total{source="http-basic:http://b/"}"#
            ),
            Some("2")
        );
        assert!(text.contains(r#"mailauthd_build_info{version=""#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_shared_state_shows_only_the_primary_in_use() {
        let m = Metrics::new();
        m.shared_state("sentinel", "127.0.0.1:6379", true, 0, true);
        m.shared_state("sentinel", "127.0.0.1:6380", false, 1, false);
        let text = m.render();
        assert_eq!(
            sample(&text, r#"mailauthd_state{mode="sentinel",primary="127.0.0.1:6380"}"#),
            Some("0")
        );
        assert!(!text.contains("127.0.0.1:6379"), "{text}");
        assert_eq!(sample(&text, "mailauthd_state_failovers_seen"), Some("1"));
        assert_eq!(sample(&text, "mailauthd_state_bans_subscribed"), Some("0"));
    }
}
