//! The brute-force defence: failures counted per client network, per user and per
//! (user, network) in sliding windows; bans with a TTL; escalating `Auth-Wait`.
//!
//! The policy is asked before any password is hashed ([`Policy::check`]) and told the
//! outcome afterwards ([`Policy::failed`], [`Policy::succeeded`]). It never sees a password
//! in the clear beyond computing a keyed, truncated HMAC of it, which makes a repeated
//! identical wrong password count once (a phone retrying a stale password is not an attack).
//! Counters live in this process ([`local`]) or in Redis ([`redis`]), shared by every
//! instance; time comes from a [`Clock`] so the rules can be tested exactly.

pub(crate) mod local;
pub(crate) mod redis;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{OnRedisError, PolicySettings, StateSettings};
use crate::login::ClientAddr;

/// What a counter or a ban is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// A client network (an IPv4 /32 or IPv6 /64 by default).
    Net,
    /// A user, from any network.
    User,
    /// A user from one network.
    Pair,
}

/// The scopes in the order stores report them.
pub(crate) const SCOPES: [Scope; 3] = [Scope::Net, Scope::User, Scope::Pair];

impl Scope {
    /// A short stable name for logs and the admin listing.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Net => "net",
            Scope::User => "user",
            Scope::Pair => "pair",
        }
    }

    /// The one-letter code used inside store keys.
    fn code(self) -> char {
        match self {
            Scope::Net => 'n',
            Scope::User => 'u',
            Scope::Pair => 'p',
        }
    }

    fn from_code(code: char) -> Option<Scope> {
        SCOPES.into_iter().find(|s| s.code() == code)
    }

    fn index(self) -> usize {
        match self {
            Scope::Net => 0,
            Scope::User => 1,
            Scope::Pair => 2,
        }
    }
}

/// Who one login is counted against: its client network and its (normalised) user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The client network, e.g. `192.0.2.7/32`, `unix` for a unix-socket client, or
    /// `unknown` without a `Client-IP`.
    pub net: String,
    /// The user name: lower-case, and hashed when very long so keys stay small.
    pub user: String,
    /// The counter key of each scope, built once: a login reads them up to a dozen times.
    keys: [String; 3],
}

/// User names longer than this are counted under a hash of the name.
const MAX_USER_KEY: usize = 128;

impl Subject {
    /// The subject of a login from `net` as `user` (both already normalised).
    pub(crate) fn new(net: String, user: String) -> Subject {
        // Concatenated, not `format!`ed: three keys per login.
        let key = |parts: &[&str]| {
            let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
            parts.iter().for_each(|p| key.push_str(p));
            key
        };
        let keys = [key(&["n:", &net]), key(&["u:", &user]), key(&["p:", &net, "|", &user])];
        Subject { net, user, keys }
    }

    /// The counter key of `scope`, as `<code>:<id>`. A pair is `<net>|<user>`: the network
    /// never contains `|`, so the first `|` splits it.
    pub(crate) fn key(&self, scope: Scope) -> &str {
        &self.keys[scope.index()]
    }
}

/// The network `client` belongs to with the configured prefix lengths.
pub(crate) fn network(client: Option<ClientAddr>, ipv4_prefix: u8, ipv6_prefix: u8) -> String {
    let ip = match client {
        Some(ClientAddr::Ip(ip)) => ip,
        Some(ClientAddr::Unix) => return "unix".to_owned(),
        None => return "unknown".to_owned(),
    };
    // An IPv4-mapped IPv6 address is the IPv4 client it stands for.
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { ipv4_prefix } else { ipv6_prefix };
    match ipnet::IpNet::new(ip, prefix) {
        // `IpNet`'s own text, `<network>/<prefix>`, without its formatting machinery.
        Ok(net) => {
            let mut text = crate::login::ip_text(net.network());
            text.push('/');
            text.push_str(itoa::Buffer::new().format(prefix));
            text
        }
        Err(_) => ip.to_string(),
    }
}

/// The user part of the keys: lower-case printable text, or a hash for very long names.
pub(crate) fn user_key(user: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(user)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .to_lowercase();
    if text.len() <= MAX_USER_KEY {
        return text;
    }
    // The lower-cased text, so that case games on long names share one counter.
    format!("#{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// A ban as the admin endpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanEntry {
    /// What is banned.
    pub scope: Scope,
    /// The network, for net and pair bans.
    pub net: Option<String>,
    /// The user, for user and pair bans.
    pub user: Option<String>,
    /// Time left.
    pub remaining: Duration,
}

impl BanEntry {
    /// Reads a ban back from its counter key (see [`Subject::key`]).
    pub(crate) fn from_key(key: &str, remaining: Duration) -> Option<BanEntry> {
        let mut chars = key.chars();
        let scope = Scope::from_code(chars.next()?)?;
        let id = key.get(2..)?;
        let (net, user) = match scope {
            Scope::Net => (Some(id.to_owned()), None),
            Scope::User => (None, Some(id.to_owned())),
            Scope::Pair => {
                let (net, user) = id.split_once('|')?;
                (Some(net.to_owned()), Some(user.to_owned()))
            }
        };
        Some(BanEntry {
            scope,
            net,
            user,
            remaining,
        })
    }
}

/// One line of the admin listing: `pair net=192.0.2.7/32 user="alice" ttl=540s`. The user
/// name is the client's text, so it is quoted and escaped as in the log lines: a name with
/// spaces or `=` cannot forge a field; `-` (unquoted) means no user.
impl fmt::Display for BanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} net={} user=",
            self.scope.as_str(),
            self.net.as_deref().unwrap_or("-"),
        )?;
        match &self.user {
            Some(user) => write!(f, "{user:?}")?,
            None => f.write_str("-")?,
        }
        write!(f, " ttl={}s", self.remaining.as_secs())
    }
}

/// Which bans to lift. A given field must match: `net` clears net and pair bans of that
/// network, `user` clears user and pair bans of that user, both clear that pair's ban; an
/// empty filter clears every ban.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BanFilter {
    /// A network as [`network`] writes it.
    pub net: Option<String>,
    /// A user as [`user_key`] writes it.
    pub user: Option<String>,
}

impl BanFilter {
    /// Whether `ban` is one to lift.
    pub(crate) fn matches(&self, ban: &BanEntry) -> bool {
        let net_ok = self.net.as_ref().is_none_or(|n| ban.net.as_ref() == Some(n));
        let user_ok = self.user.as_ref().is_none_or(|u| ban.user.as_ref() == Some(u));
        net_ok && user_ok
    }
}

/// Limits and lifetimes for one recorded failure, as the stores apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Failures that ban, per scope in [`SCOPES`] order (0: never).
    pub failures: [u32; 3],
    /// How long a failure counts, in ms.
    pub window_ms: u64,
    /// How long a ban lasts, in ms.
    pub ban_ms: u64,
}

/// What a store knows about a subject before the password is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lookup {
    /// Ban expiry (ms since the epoch) per scope in [`SCOPES`] order.
    pub bans: [Option<u64>; 3],
    /// A login succeeded from this network lately.
    pub net_trusted: bool,
    /// This user logged in from this network lately.
    pub pair_known: bool,
    /// When this process last remembered a success of the network and of the pair (ms since
    /// the epoch), for [`local::LocalStore::succeed`] not to read them again; the shared
    /// store leaves them `None`.
    pub remembered: [Option<u64>; 2],
}

/// What recording one failure did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Distinct failures now in each window, in [`SCOPES`] order.
    pub counts: [u32; 3],
    /// The scope this failure banned, if it reached a limit.
    pub banned: Option<Scope>,
}

impl Recorded {
    /// Distinct failures now in the window of `scope`.
    pub(crate) fn count(&self, scope: Scope) -> u32 {
        self.counts[scope.index()]
    }
}

/// Why an admin operation on the policy state failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyError {
    /// Redis did not answer (in time).
    #[error("redis is unreachable: {0}")]
    Redis(String),
    /// Redis answered this operation with an error; it is still reachable.
    #[error("redis refused the operation: {0}")]
    Command(String),
}

/// What [`Policy::check`] says about a login before its password is checked.
#[derive(Debug)]
pub(crate) enum Check {
    /// The client network is allow-listed (or the policy is off): nothing is counted.
    Exempt,
    /// The login may be checked; report its outcome with this gate.
    Allowed(Gate),
    /// Refuse at once, without checking the password. A refusal by a pair or user ban
    /// comes with a gate: report it with [`Policy::failed`] (without hashing anything), so
    /// that guesses stopped by a narrower ban still count for the scopes not banned, and one
    /// address cannot guess one user for ever without reaching its network's limit.
    Banned(Scope, Option<Gate>),
    /// The shared state is unreachable and `on_redis_error = "tempfail"`.
    Unavailable,
}

/// A login that passed [`Policy::check`], to report its outcome.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// Who the login is counted against.
    pub subject: Subject,
    net_trusted: bool,
    /// [`Lookup::remembered`] of the check.
    remembered: [Option<u64>; 2],
    /// The scopes (in [`SCOPES`] order) with a ban in force: not counted again, so that a
    /// ban is neither extended nor re-counted while it lasts.
    banned: [bool; 3],
    /// Whether the network scope counts this login: not for a unix-socket client, whose
    /// real address is unknown (one local webmail must not ban everybody behind it).
    net_counted: bool,
}

/// The brute-force policy with its state store(s).
pub(crate) struct Policy {
    settings: PolicySettings,
    key: Vec<u8>,
    clock: Arc<dyn Clock>,
    local: local::LocalStore,
    shared: Option<Arc<redis::RedisStore>>,
    /// Bans heard of (published by any instance, this one included), by scope key, with
    /// their expiry: a banned client is refused without asking Redis, and still refused
    /// while Redis is unreachable.
    heard: moka::sync::Cache<String, u64>,
    on_error: OnRedisError,
}

impl std::fmt::Debug for Policy {
    // By hand, so that the HMAC key never shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("settings", &self.settings)
            .field("key", &"<redacted>")
            .field("redis", &self.shared.is_some())
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A policy with the given settings; Redis (when configured) is connected lazily.
    pub(crate) fn new(settings: &PolicySettings, state: &StateSettings, clock: Arc<dyn Clock>) -> Policy {
        let key = match &settings.hmac_key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let shared = redis::RedisStore::new(state).map(Arc::new);
        Policy {
            settings: settings.clone(),
            key,
            clock,
            local: local::LocalStore::new(settings),
            shared,
            heard: moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ban)
                .build(),
            on_error: state.on_redis_error,
        }
    }

    /// Starts listening for bans published by every instance (with shared state only; in
    /// a Tokio runtime).
    pub(crate) fn listen(&self) {
        let Some(shared) = self.shared.clone() else { return };
        let heard = self.heard.clone();
        let clock = self.clock.clone();
        tokio::spawn(shared.listen(move |event| match event {
            redis::BanEvent::Banned { subject, until } => {
                if until > clock.unix_ms() {
                    let later = heard.get(&subject).is_none_or(|known| known < until);
                    if later {
                        heard.insert(subject, until);
                    }
                }
            }
            redis::BanEvent::Lifted { subject } => heard.invalidate(&subject),
            // Bans still in force are heard again from Redis's answers.
            redis::BanEvent::Missed => heard.invalidate_all(),
        }));
    }

    /// The shared state's mode, primary, failovers and subscription (`None`: no Redis).
    pub(crate) fn state_status(&self) -> Option<redis::StoreStatus> {
        self.shared.as_ref().map(|s| s.status())
    }

    /// The bans heard of for `subject`, per scope in [`SCOPES`] order, still in force.
    fn heard_bans(&self, subject: &Subject, now: u64) -> [Option<u64>; 3] {
        // Only a shared store's bans are heard of; without one there is nothing to look up.
        if self.shared.is_none() {
            return [None; 3];
        }
        SCOPES.map(|scope| self.heard.get(subject.key(scope)).filter(|until| *until > now))
    }

    /// Once Redis answers again, the bans made in this process meanwhile are written to it
    /// (in the background: no login waits for them).
    fn write_back(&self) {
        if let Some(shared) = &self.shared
            && shared.has_unwritten()
        {
            let shared = shared.clone();
            let now = self.clock.unix_ms();
            tokio::spawn(async move {
                let _ = shared.write_unwritten(now).await;
            });
        }
    }

    /// The in-process store (used alone without Redis, and as the fallback).
    #[cfg(test)]
    pub(crate) fn local(&self) -> &local::LocalStore {
        &self.local
    }

    /// The client network of `client` with the configured prefix lengths.
    pub(crate) fn network(&self, client: Option<ClientAddr>) -> String {
        network(client, self.settings.ipv4_prefix, self.settings.ipv6_prefix)
    }

    /// Whether `ip` is never limited.
    pub(crate) fn is_allowed(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| {
            let ip = ip.to_canonical();
            self.settings.allow.iter().any(|n| n.contains(&ip))
        })
    }

    fn limits(&self, net_trusted: bool) -> Limits {
        let s = &self.settings;
        let net = if net_trusted {
            s.net_failures_trusted.max(s.net_failures)
        } else {
            s.net_failures
        };
        Limits {
            failures: [net, s.user_failures, s.pair_failures],
            window_ms: millis(s.window),
            ban_ms: millis(s.ban),
        }
    }

    /// The limits for a failure reported on `gate`: a scope already banned counts nothing
    /// (a limit of 0).
    fn gate_limits(&self, gate: &Gate) -> Limits {
        let mut limits = self.limits(gate.net_trusted);
        for (limit, banned) in limits.failures.iter_mut().zip(gate.banned) {
            if banned {
                *limit = 0;
            }
        }
        if !gate.net_counted {
            // A limit of 0 counts nothing, in either store.
            limits.failures[Scope::Net.index()] = 0;
        }
        limits
    }

    /// The keyed, truncated HMAC that identifies a password attempt (per user, so one
    /// password sprayed over many users counts once per user).
    pub(crate) fn tag(&self, subject: &Subject, secret: &[u8]) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(subject.user.as_bytes());
        mac.update(&[0]);
        mac.update(secret);
        let full = mac.finalize().into_bytes();
        hex::encode(&full[..8])
    }

    /// Decides, before any hashing, whether a login from `client` as `user` may be checked.
    pub(crate) async fn check(&self, client: Option<ClientAddr>, user: &[u8]) -> Check {
        if !self.settings.enabled || self.is_allowed(client.and_then(ClientAddr::ip)) {
            return Check::Exempt;
        }
        let net_counted = client != Some(ClientAddr::Unix);
        let subject = Subject::new(self.network(client), user_key(user));
        let now = self.clock.unix_ms();
        let heard = self.heard_bans(&subject, now);
        if net_counted && heard[Scope::Net.index()].is_some() {
            // Heard of: refused without a Redis round trip, reachable or not.
            return Check::Banned(Scope::Net, None);
        }
        // The shared store's futures are boxed here and below: a Redis round trip's state is
        // about 1 KB, which every login's future would carry, with or without Redis.
        let mut lookup = match &self.shared {
            Some(shared) => match Box::pin(shared.lookup(&subject, now)).await {
                Ok(l) => {
                    self.write_back();
                    // Kept too: refused from here while Redis cannot be reached.
                    for (scope, until) in SCOPES.iter().zip(l.bans) {
                        if let Some(until) = until
                            && heard[scope.index()].is_none()
                        {
                            self.heard.insert(subject.key(*scope).to_owned(), until);
                        }
                    }
                    l
                }
                Err(_) if self.on_error == OnRedisError::Local => self.local.lookup(&subject, now),
                // A ban heard of still refuses; anything else waits for Redis.
                Err(_) if heard.iter().any(Option::is_some) => Lookup {
                    bans: heard,
                    ..Lookup::default()
                },
                Err(_) => return Check::Unavailable,
            },
            None => self.local.lookup(&subject, now),
        };
        for (ban, heard) in lookup.bans.iter_mut().zip(heard) {
            *ban = (*ban).max(heard);
        }
        let live = |scope: Scope| lookup.bans[scope.index()].is_some_and(|until| until > now);
        if net_counted && live(Scope::Net) {
            // Nothing wider to count for: the whole network is refused already.
            return Check::Banned(Scope::Net, None);
        }
        let gate = Gate {
            subject,
            net_trusted: lookup.net_trusted,
            remembered: lookup.remembered,
            banned: SCOPES.map(live),
            net_counted,
        };
        if live(Scope::Pair) {
            return Check::Banned(Scope::Pair, Some(gate));
        }
        // A user under a distributed attack stays reachable from networks where they logged
        // in lately; otherwise anyone could lock any user out by failing on purpose.
        if live(Scope::User) && !lookup.pair_known {
            return Check::Banned(Scope::User, Some(gate));
        }
        Check::Allowed(gate)
    }

    /// Records a wrong password (or digest) for a login that passed [`Policy::check`], or a
    /// guess that a pair or user ban refused (in the scopes not banned). Only the keyed tag
    /// of `secret` is kept, so a repeated guess counts once. `None` when the shared state is
    /// unreachable and nothing could be recorded.
    pub(crate) async fn failed(&self, gate: &Gate, secret: &[u8]) -> Option<Recorded> {
        let now = self.clock.unix_ms();
        let tag = self.tag(&gate.subject, secret);
        let limits = self.gate_limits(gate);
        let until = now.saturating_add(limits.ban_ms);
        let recorded = match &self.shared {
            Some(shared) => match Box::pin(shared.fail(&gate.subject, &tag, &limits, now)).await {
                Ok(r) => {
                    if let Some(scope) = r.banned {
                        // Heard at once here; the others hear it on the channel.
                        self.heard.insert(gate.subject.key(scope).to_owned(), until);
                    }
                    self.write_back();
                    r
                }
                Err(_) if self.on_error == OnRedisError::Local => {
                    let r = self.local.fail(&gate.subject, &tag, &limits, now);
                    if let Some(scope) = r.banned {
                        // Written to Redis when it is back, so that every instance has it.
                        shared.keep_unwritten(gate.subject.key(scope).to_owned(), until);
                    }
                    r
                }
                Err(_) => return None,
            },
            None => self.local.fail(&gate.subject, &tag, &limits, now),
        };
        if let Some(scope) = recorded.banned {
            let key = gate.subject.key(scope);
            tracing::warn!(target: "mailauthd::policy", scope = scope.as_str(), key, ban_secs = self.settings.ban.as_secs(), "ban");
        }
        Some(recorded)
    }

    /// Records a successful login: the (user, network) failures are forgotten, and the
    /// network and the pair are remembered as recently successful.
    pub(crate) async fn succeeded(&self, gate: &Gate) {
        let now = self.clock.unix_ms();
        let memory = millis(self.settings.success_memory);
        if let Some(shared) = &self.shared
            && Box::pin(shared.succeed(&gate.subject, memory, now)).await.is_ok()
        {
            return;
        }
        self.local.succeed(&gate.subject, gate.remembered, now);
    }

    /// Every ban in force, from the store in use.
    pub(crate) async fn bans(&self) -> Result<Vec<BanEntry>, PolicyError> {
        let now = self.clock.unix_ms();
        match &self.shared {
            Some(shared) => match shared.bans(now).await {
                Ok(bans) => Ok(bans),
                // Only an unreachable Redis falls back: an error it answered is reported.
                Err(PolicyError::Redis(_)) if self.on_error == OnRedisError::Local => Ok(self.local.bans(now)),
                Err(e) => Err(e),
            },
            None => Ok(self.local.bans(now)),
        }
    }

    /// Lifts the bans `filter` selects, with their failure counts, everywhere; returns how
    /// many bans were lifted.
    pub(crate) async fn clear(&self, filter: &BanFilter) -> Result<usize, PolicyError> {
        let now = self.clock.unix_ms();
        let mut cleared = self.local.clear(filter, now);
        // The bans heard of go too (the other instances hear of the lifting on the channel).
        let heard: Vec<String> = self
            .heard
            .iter()
            .filter(|(key, _)| BanEntry::from_key(key, Duration::ZERO).is_some_and(|b| filter.matches(&b)))
            .map(|(key, _)| (*key).clone())
            .collect();
        for key in heard {
            self.heard.invalidate(&key);
        }
        if let Some(shared) = &self.shared {
            for subject in shared.clear(filter, now).await? {
                self.heard.invalidate(&subject);
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    /// A [`BanFilter`] from an IP address and a user name as an admin types them.
    pub(crate) fn filter(&self, ip: Option<IpAddr>, user: Option<&str>) -> BanFilter {
        BanFilter {
            net: ip.map(|ip| self.network(Some(ClientAddr::from_ip(ip)))),
            user: user.map(|u| user_key(u.as_bytes())),
        }
    }
}

impl Policy {
    /// `Auth-Wait` after a failure that was recorded as `recorded`, for a login whose
    /// configured first wait is `first`: `None` when the failure banned (the session ends),
    /// else `first` doubled for each earlier failure of the client's network or of this
    /// user from it, at most `wait_max`.
    pub(crate) fn wait_after(&self, first: u32, recorded: &Recorded) -> Option<u32> {
        if recorded.banned.is_some() {
            return None;
        }
        let failures = recorded.count(Scope::Net).max(recorded.count(Scope::Pair));
        Some(escalated_wait(first, self.settings.wait_max_secs, failures))
    }
}

/// `Auth-Wait` after the `failures`-th failure: `first`, doubled each time, at most `max`.
pub(crate) fn escalated_wait(first: u32, max: u32, failures: u32) -> u32 {
    if first == 0 {
        return 0;
    }
    let doublings = failures.saturating_sub(1).min(31);
    first.saturating_mul(1 << doublings).min(max.max(first))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
