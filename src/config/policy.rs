//! The `[policy]` section (the brute-force defence: windows, limits, bans, allowed
//! networks) and the `[state]` section (where the policy's counters live: in this process
//! or in Redis).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;

/// The brute-force defence (`[policy]`). Counts are of distinct wrong passwords within
/// `window`; a limit of 0 turns that scope off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicySettings {
    /// Whether logins are counted and limited at all.
    pub enabled: bool,
    /// IPv4 prefix length that makes one client network.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length that makes one client network.
    pub ipv6_prefix: u8,
    /// How long a failure counts.
    pub window: Duration,
    /// Failures from one network that ban it.
    pub net_failures: u32,
    /// The same for a network with a recent successful login.
    pub net_failures_trusted: u32,
    /// Failures for one user, from anywhere, that ban the user (except from networks where
    /// the user logged in recently).
    pub user_failures: u32,
    /// Failures for one user from one network that ban that pair.
    pub pair_failures: u32,
    /// How long a ban lasts.
    pub ban: Duration,
    /// How long a successful login makes its network trusted and its (user, network) known.
    pub success_memory: Duration,
    /// The longest escalated `Auth-Wait`, in seconds (the first is `[auth] wait`).
    pub wait_max_secs: u32,
    /// Client networks never counted or limited.
    pub allow: Vec<ipnet::IpNet>,
    /// Entries each in-process table holds at most (failure windows, bans, successes).
    pub max_entries: u64,
    /// Key of the HMAC that tells repeated passwords apart (`None`: random per process).
    pub hmac_key: Option<crate::secret::Secret>,
}

/// What to do when Redis cannot be reached (`[state] on_redis_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRedisError {
    /// Count in this process until Redis is back.
    Local,
    /// Answer password logins with a temporary failure until Redis is back.
    Tempfail,
}

/// Shared policy state (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateSettings {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` (`None`: counters in this process only).
    pub redis: Option<crate::secret::Secret>,
    /// What to do while Redis cannot be reached.
    pub on_redis_error: OnRedisError,
    /// How long one Redis operation may take before it counts as a failure.
    pub redis_timeout: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Sentinel addresses (`host:port`): the primary is asked of them (empty: no Sentinel).
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub sentinel_master: String,
    /// Redis Cluster seed nodes (`host:port`; empty: no Cluster).
    pub cluster: Vec<String>,
    /// Password for the Redis servers (Sentinel's primary, every Cluster node).
    pub redis_password: Option<crate::secret::Secret>,
    /// Password for the sentinels themselves.
    pub sentinel_password: Option<crate::secret::Secret>,
    /// CA certificates (PEM) that a `rediss://` server's certificate must chain to
    /// (`None`: the system's roots).
    pub ca: Option<Vec<u8>>,
    /// Whether the sentinels, their primary and Cluster nodes are spoken to over TLS.
    pub tls: bool,
}

/// `[policy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    enabled: Option<bool>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    net_failures: Option<Spanned<i64>>,
    net_failures_trusted: Option<Spanned<i64>>,
    user_failures: Option<Spanned<i64>>,
    pair_failures: Option<Spanned<i64>>,
    ban: Option<Spanned<String>>,
    success_memory: Option<Spanned<String>>,
    wait_max: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    max_entries: Option<Spanned<i64>>,
    hmac_key: Option<Spanned<String>>,
}

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    redis: Option<Spanned<String>>,
    on_redis_error: Option<Spanned<String>>,
    redis_timeout: Option<Spanned<String>>,
    key_prefix: Option<Spanned<String>>,
    #[serde(default)]
    sentinels: Vec<Spanned<String>>,
    sentinel_master: Option<Spanned<String>>,
    #[serde(default)]
    cluster: Vec<Spanned<String>>,
    redis_password: Option<Spanned<String>>,
    redis_password_file: Option<Spanned<String>>,
    sentinel_password: Option<Spanned<String>>,
    sentinel_password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    tls: Option<bool>,
}

/// Validates `[policy]`; problems go to `c`, defaults stand in for bad values.
pub(super) fn validate_policy(raw: &RawPolicy, c: &mut Checker<'_>) -> PolicySettings {
    let limit = |c: &mut Checker<'_>, v: &Option<Spanned<i64>>, key: &str, default: usize| {
        c.count(v, key, 0..=1_000_000, default) as u32
    };
    let positive = |c: &mut Checker<'_>, v: &Option<Spanned<String>>, key: &str, default: Duration| {
        let d = c.duration(v, key, default);
        if d.is_zero() {
            c.problem(v.as_ref().map(Spanned::span), key, "must be more than 0".to_owned());
            return default;
        }
        d
    };
    let window = positive(c, &raw.window, "policy.window", Duration::from_secs(15 * 60));
    let ban = positive(c, &raw.ban, "policy.ban", Duration::from_secs(15 * 60));
    let success_memory = positive(
        c,
        &raw.success_memory,
        "policy.success_memory",
        Duration::from_secs(7 * 24 * 3600),
    );
    let wait_max = c.duration(&raw.wait_max, "policy.wait_max", Duration::from_secs(15));
    if wait_max.subsec_nanos() != 0 {
        c.problem(
            raw.wait_max.as_ref().map(Spanned::span),
            "policy.wait_max",
            "nginx takes whole seconds".to_owned(),
        );
    }
    let mut allow = Vec::new();
    for net in &raw.allow {
        let text = net.get_ref().trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => allow.push(n.trunc()),
            Err(_) => c.problem(
                Some(net.span()),
                "policy.allow",
                format!("{text:?} is not a network; write e.g. \"192.0.2.0/24\" or \"2001:db8::/48\""),
            ),
        }
    }
    let hmac_key = raw.hmac_key.as_ref().and_then(|k| {
        if k.get_ref().len() < 16 {
            // The key itself is never repeated in a message.
            c.problem(
                Some(k.span()),
                "policy.hmac_key",
                "too short; use at least 16 random characters".to_owned(),
            );
            None
        } else {
            Some(k.get_ref().clone())
        }
    });
    PolicySettings {
        enabled: raw.enabled.unwrap_or(true),
        ipv4_prefix: c.count(&raw.ipv4_prefix, "policy.ipv4_prefix", 8..=32, 32) as u8,
        ipv6_prefix: c.count(&raw.ipv6_prefix, "policy.ipv6_prefix", 16..=128, 64) as u8,
        window,
        net_failures: limit(c, &raw.net_failures, "policy.net_failures", 20),
        net_failures_trusted: limit(c, &raw.net_failures_trusted, "policy.net_failures_trusted", 100),
        user_failures: limit(c, &raw.user_failures, "policy.user_failures", 50),
        pair_failures: limit(c, &raw.pair_failures, "policy.pair_failures", 5),
        ban,
        success_memory,
        wait_max_secs: u32::try_from(wait_max.as_secs()).unwrap_or(u32::MAX),
        allow,
        max_entries: c.count(&raw.max_entries, "policy.max_entries", 100..=100_000_000, 100_000) as u64,
        hmac_key: hmac_key.map(crate::secret::Secret::new),
    }
}

/// Validates `[state]`; problems go to `c`, defaults stand in for bad values.
pub(super) fn validate_state(raw: &RawState, c: &mut Checker<'_>) -> StateSettings {
    let redis = raw.redis.as_ref().and_then(|url| {
        let text = url.get_ref();
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| text.starts_with(s));
        if scheme_ok && redis::Client::open(text.as_str()).is_ok() {
            Some(text.clone())
        } else {
            // The URL may hold a password: it is not repeated.
            c.problem(
                Some(url.span()),
                "state.redis",
                "not a Redis URL; write e.g. \"redis://127.0.0.1:6379/0\"".to_owned(),
            );
            None
        }
    });
    let on_redis_error = match raw.on_redis_error.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("local", _)) => OnRedisError::Local,
        Some(("tempfail", _)) => OnRedisError::Tempfail,
        Some((other, span)) => {
            c.problem(
                Some(span),
                "state.on_redis_error",
                format!("{other:?} is not \"local\" or \"tempfail\""),
            );
            OnRedisError::Local
        }
    };
    let redis_timeout = c.duration(&raw.redis_timeout, "state.redis_timeout", Duration::from_millis(250));
    if redis_timeout.is_zero() {
        c.problem(
            raw.redis_timeout.as_ref().map(Spanned::span),
            "state.redis_timeout",
            "must be more than 0".to_owned(),
        );
    }
    let key_prefix = match &raw.key_prefix {
        None => "mailauthd".to_owned(),
        // No braces: they would make a Redis Cluster hash tag of the prefix.
        Some(p)
            if !p.get_ref().is_empty()
                && p.get_ref()
                    .chars()
                    .all(|ch| ch.is_ascii_graphic() && ch != '{' && ch != '}') =>
        {
            p.get_ref().clone()
        }
        Some(p) => {
            c.problem(
                Some(p.span()),
                "state.key_prefix",
                "use printable ASCII without spaces or braces, e.g. \"mailauthd\"".to_owned(),
            );
            "mailauthd".to_owned()
        }
    };
    let sentinels = node_list(&raw.sentinels, "state.sentinels", c);
    let cluster = node_list(&raw.cluster, "state.cluster", c);
    let modes = [raw.redis.is_some(), !raw.sentinels.is_empty(), !raw.cluster.is_empty()];
    if modes.iter().filter(|m| **m).count() > 1 {
        let span = raw.sentinels.first().or(raw.cluster.first()).map(Spanned::span);
        c.problem(span, "state", "set only one of redis, sentinels and cluster".to_owned());
    }
    let sentinel_master = match &raw.sentinel_master {
        Some(m) if !m.get_ref().is_empty() && m.get_ref().chars().all(|ch| ch.is_ascii_graphic()) => {
            m.get_ref().clone()
        }
        Some(m) => {
            c.problem(
                Some(m.span()),
                "state.sentinel_master",
                "use the name the sentinels monitor, e.g. \"mymaster\"".to_owned(),
            );
            String::new()
        }
        None => {
            if !sentinels.is_empty() {
                c.problem(
                    raw.sentinels.first().map(Spanned::span),
                    "state.sentinel_master",
                    "sentinels need sentinel_master, the name they monitor the primary under".to_owned(),
                );
            }
            String::new()
        }
    };
    let redis_password = password(&raw.redis_password, &raw.redis_password_file, "state.redis_password", c);
    let sentinel_password = password(
        &raw.sentinel_password,
        &raw.sentinel_password_file,
        "state.sentinel_password",
        c,
    );
    let ca = raw.ca_file.as_ref().and_then(|f| {
        if !redis.as_ref().is_some_and(|url| url.starts_with("rediss://")) && raw.tls != Some(true) {
            c.problem(
                Some(f.span()),
                "state.ca_file",
                "applies to a rediss:// server URL, or with tls = true".to_owned(),
            );
            return None;
        }
        let path = c.base_dir.join(f.get_ref());
        match std::fs::read(&path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                c.problem(
                    Some(f.span()),
                    "state.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                );
                None
            }
            Err(e) => {
                c.problem(
                    Some(f.span()),
                    "state.ca_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    });
    StateSettings {
        redis: redis.map(crate::secret::Secret::new),
        on_redis_error,
        redis_timeout,
        key_prefix,
        sentinels,
        sentinel_master,
        cluster,
        redis_password,
        sentinel_password,
        ca,
        tls: raw.tls.unwrap_or(false) && (!raw.sentinels.is_empty() || !raw.cluster.is_empty()),
    }
}

/// `host:port` entries of `key`, each checked.
fn node_list(raw: &[Spanned<String>], key: &str, c: &mut Checker<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for node in raw {
        let text = node.get_ref().trim();
        let ok = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if ok {
            out.push(text.to_owned());
        } else {
            c.problem(
                Some(node.span()),
                key,
                format!("{text:?} is not host:port; write e.g. \"127.0.0.1:26379\""),
            );
        }
    }
    out
}

/// A password given inline (`key`) or in a file (`key_file`, its first line); never both.
fn password(
    inline: &Option<Spanned<String>>,
    file: &Option<Spanned<String>>,
    key: &str,
    c: &mut Checker<'_>,
) -> Option<crate::secret::Secret> {
    match (inline, file) {
        (Some(p), Some(_)) => {
            c.problem(Some(p.span()), key, format!("set {key} or {key}_file, not both"));
            None
        }
        (Some(p), None) => Some(crate::secret::Secret::new(p.get_ref().clone())),
        (None, Some(f)) => {
            let path = c.base_dir.join(f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(crate::secret::Secret::new(
                    text.lines().next().unwrap_or_default().to_owned(),
                )),
                Err(e) => {
                    c.problem(
                        Some(f.span()),
                        &format!("{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    }
}
