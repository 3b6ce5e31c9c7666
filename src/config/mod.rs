//! The configuration file: TOML read into a raw form (`deny_unknown_fields`), then
//! validated into [`Config`]. Validation collects every problem, each naming its key and
//! `file:line`, so one `check-config` run shows all of them.
//!
//! This module holds the top level (listener, timeouts, threads), the loading and the
//! `Checker` that collects the problems; each section is validated in its own file:
//! `sections.rs` (`[auth]`, `[smtp]`, `[admin]`, `[cache]`), `route.rs` (`[route]`),
//! `policy.rs` (`[policy]`, `[state]`), `source.rs` (`[[source]]`), `http_basic.rs`
//! (`kind = "http-basic"` sources) and `connection.rs` (`[nginx]`, `[tls]`, `[external]`,
//! `[client]`, `[listener.NAME]`) and `ldap.rs` (`kind = "ldap"` sources). Their public types
//! are re-exported here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod connection;
mod exposure;
mod http_basic;
mod ldap;
mod policy;
mod route;
mod sections;
mod source;
#[cfg(test)]
mod tests;

pub(crate) use connection::{
    CertificateUser, ExternalSettings, LISTENER_HEADER, ListenerSettings, NginxSecret, TlsSettings, TlsVersion,
    in_networks,
};
pub(crate) use ldap::{LdapConfig, LdapLookup, LdapVerify};
pub(crate) use policy::{OnRedisError, PolicySettings, StateSettings};
pub(crate) use route::lookup;
pub(crate) use route::{BackendSettings, HealthSettings, RouteList, Routes, Target};
pub(crate) use sections::{AdminSettings, AuthSettings, CacheSettings, SmtpSettings};
pub(crate) use source::{BasicMethod, HtpasswdConfig, HttpBasicConfig, RouteHeaders, SourceConfig};

use connection::{
    RawClient, RawExternal, RawListener, RawNginx, RawTls, validate_client, validate_external, validate_listeners,
    validate_nginx, validate_tls,
};
use policy::{RawPolicy, RawState, validate_policy, validate_state};
use route::{RawBackend, RawRoute, validate_backend, validate_route};
use sections::{RawAdmin, RawAuth, RawCache, RawSmtp, validate_admin, validate_auth, validate_cache, validate_smtp};
use source::{RawSource, validate_sources};

/// The address the auth_http server listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    /// A TCP address, e.g. `127.0.0.1:14380`.
    Tcp(SocketAddr),
    /// A unix-domain socket path (`unix:/run/mailauthd.sock`).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigOrigin {
    /// The built-in default (no `--config`).
    BuiltIn,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::BuiltIn => f.write_str("built-in default config"),
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// Where it came from.
    pub origin: ConfigOrigin,
    /// The auth_http listener.
    pub listen: ListenAddr,
    /// How long a connection may take to send its request.
    pub read_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How often users files are checked for changes (0 = only on SIGHUP).
    pub reload_interval: Duration,
    /// Threads that serve connections (the async runtime's workers).
    pub workers: usize,
    /// Threads that verify slow password hashes.
    pub verify_threads: usize,
    /// Verifications that may wait for a thread; past that a login gets a temporary failure.
    pub verify_queue: usize,
    /// Of the verification threads, how many may run a memory-hard scheme at once.
    pub verify_memory_hard_threads: usize,
    /// The verified-login cache.
    pub cache: CacheSettings,
    /// Failed-login answers.
    pub auth: AuthSettings,
    /// SMTP without AUTH.
    pub smtp: SmtpSettings,
    /// The admin listener.
    pub admin: AdminSettings,
    /// Backends.
    pub routes: Routes,
    /// Credential sources, tried in order.
    pub sources: Vec<SourceConfig>,
    /// The brute-force defence.
    pub policy: PolicySettings,
    /// Where the policy's counters live.
    pub state: StateSettings,
    /// The shared secret nginx sends (`[nginx]`).
    pub nginx_secret: Option<NginxSecret>,
    /// TLS for cleartext logins (`[tls]`).
    pub tls: TlsSettings,
    /// SASL EXTERNAL (`[external]`; `None`: refused).
    pub external: Option<ExternalSettings>,
    /// Load balancers whose `Proxy-Protocol-Addr` is the client (`[client] real_ip_from`).
    pub real_ip_from: Vec<ipnet::IpNet>,
    /// Per-listener overrides (`[listener.NAME]`).
    pub listeners: BTreeMap<String, ListenerSettings>,
    /// What nginx logs in to a backend with (`[backend]`).
    pub backend: BackendSettings,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// `file:line`, when known.
    pub location: Option<String>,
    /// The key, e.g. `route.imap`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed.
    #[error("{} problem(s) in {origin}:\n{}", problems.len(), list(problems))]
    Invalid {
        /// The config's origin.
        origin: ConfigOrigin,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest `Auth-Wait` (`auth.wait`, `policy.wait_max`).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The address the daemon listens on by default.
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 14380);

fn default_listen() -> ListenAddr {
    ListenAddr::Tcp(DEFAULT_LISTEN)
}
/// The users file the built-in default config reads, in the working directory.
pub(crate) const DEFAULT_USERS_FILE: &str = "users.htpasswd";

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    reload_interval: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    verify_threads: Option<Spanned<i64>>,
    verify_queue: Option<Spanned<i64>>,
    verify_memory_hard_threads: Option<Spanned<i64>>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    admin: RawAdmin,
    route: Option<Spanned<RawRoute>>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    state: RawState,
    #[serde(default, rename = "source")]
    sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    nginx: RawNginx,
    #[serde(default)]
    tls: RawTls,
    external: Option<RawExternal>,
    #[serde(default)]
    client: RawClient,
    #[serde(default, rename = "listener")]
    listeners: BTreeMap<String, RawListener>,
    #[serde(default)]
    backend: RawBackend,
}

/// Collects problems while validating.
struct Checker<'a> {
    origin: &'a ConfigOrigin,
    text: &'a str,
    base_dir: PathBuf,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn location(&self, span: std::ops::Range<usize>) -> Option<String> {
        match self.origin {
            ConfigOrigin::File(path) => {
                let line = self.text[..span.start.min(self.text.len())].matches('\n').count() + 1;
                Some(format!("{}:{line}", path.display()))
            }
            ConfigOrigin::BuiltIn => None,
        }
    }

    fn problem(&mut self, span: Option<std::ops::Range<usize>>, key: &str, message: String) {
        let location = span.and_then(|s| self.location(s));
        self.problems.push(Problem {
            location,
            key: key.to_owned(),
            message,
        });
    }

    fn duration(&mut self, value: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        // Waits are what nginx holds a session for; everything else is a timeout or a
        // lifetime. Past these bounds a value is a typo, and would overflow clocks or make
        // the cache refuse to start.
        let max = if key.ends_with("wait") || key.ends_with("wait_max") {
            MAX_WAIT
        } else {
            MAX_DURATION
        };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if d > max => {
                let msg = format!(
                    "{:?} is too long; at most {}",
                    value.get_ref(),
                    humantime::format_duration(max)
                );
                self.problem(Some(value.span()), key, msg);
                default
            }
            Ok(d) => d,
            Err(e) => {
                let msg = format!(
                    "{:?} is not a duration ({e}); write e.g. \"10s\" or \"500ms\"",
                    value.get_ref()
                );
                self.problem(Some(value.span()), key, msg);
                default
            }
        }
    }

    fn count(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: usize,
    ) -> usize {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if range.contains(&n) {
            usize::try_from(n).unwrap_or(default)
        } else {
            let msg = format!("{n} is out of range; use {} to {}", range.start(), range.end());
            self.problem(Some(value.span()), key, msg);
            default
        }
    }
}

/// Parses a `listen` value: `host:port`, `[v6]:port` or `unix:/path`.
pub(crate) fn parse_listen(value: &str, base_dir: &Path) -> Result<ListenAddr, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path, e.g. \"unix:/run/mailauthd.sock\"".to_owned());
        }
        return Ok(ListenAddr::Unix(base_dir.join(path)));
    }
    value
        .parse()
        .map(ListenAddr::Tcp)
        .map_err(|_| format!("{value:?} is not ip:port or unix:/path; write e.g. \"127.0.0.1:14380\""))
}

impl Config {
    /// The configuration used without `--config`: listen on 127.0.0.1:14380, users in
    /// `users.htpasswd` in the working directory, backends on 127.0.0.1 ports 143/110/25.
    pub(crate) fn builtin() -> Config {
        // The built-in text is fixed and valid; a failure here is a bug caught by the tests.
        Config::from_toml("", ConfigOrigin::BuiltIn, Path::new(".")).unwrap_or_else(|e| panic!("built-in config: {e}"))
    }

    /// Reads and validates a config file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Config::from_toml(&text, ConfigOrigin::File(path.to_owned()), &base_dir)
    }

    /// Validates config text; relative paths are resolved against `base_dir`.
    pub(crate) fn from_toml(text: &str, origin: ConfigOrigin, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut checker = Checker {
            origin: &origin,
            text,
            base_dir: base_dir.to_owned(),
            problems: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let message = e.message().to_owned();
                checker.problem(e.span(), "", message);
                return Err(ConfigError::Invalid {
                    origin: origin.clone(),
                    problems: checker.problems,
                });
            }
        };
        let config = validate(raw, &mut checker, &origin);
        if checker.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.clone(),
                problems: checker.problems,
            })
        }
    }

    /// The files of all htpasswd sources, for logs.
    pub(crate) fn users_files(&self) -> Vec<&Path> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::Htpasswd(h) => Some(h.path.as_path()),
                SourceConfig::HttpBasic(_) | SourceConfig::Ldap(_) => None,
            })
            .collect()
    }
}

/// Validates the top-level keys, then each section; problems are listed in that order.
fn validate(raw: RawConfig, c: &mut Checker<'_>, origin: &ConfigOrigin) -> Config {
    let listen = match &raw.listen {
        None => default_listen(),
        Some(v) => parse_listen(v.get_ref(), &c.base_dir).unwrap_or_else(|msg| {
            c.problem(Some(v.span()), "listen", msg);
            default_listen()
        }),
    };
    let read_timeout = c.duration(&raw.read_timeout, "read_timeout", Duration::from_secs(10));
    if read_timeout.is_zero() {
        c.problem(
            raw.read_timeout.as_ref().map(Spanned::span),
            "read_timeout",
            "must be more than 0".to_owned(),
        );
    }
    let max_connections = c.count(&raw.max_connections, "max_connections", 1..=1_000_000, 4096);
    let reload_interval = c.duration(&raw.reload_interval, "reload_interval", Duration::from_secs(1));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    // One new connection per login costs ~50 µs of CPU, mostly in the kernel: one worker
    // serves ~20k logins/s, and more workers than half the cores mostly add cross-thread
    // wake-ups (measured in BENCHMARKS.md), leaving the rest to hashing and to nginx.
    let workers = c.count(&raw.workers, "workers", 1..=1024, (cores / 2).max(1));
    let verify_threads = c.count(&raw.verify_threads, "verify_threads", 1..=1024, cores);
    let verify_queue = c.count(&raw.verify_queue, "verify_queue", 1..=1_000_000, 256);
    let verify_memory_hard_threads = c.count(
        &raw.verify_memory_hard_threads,
        "verify_memory_hard_threads",
        1..=1024,
        verify_threads.min(4),
    );
    let cache = validate_cache(&raw.cache, c);
    let auth = validate_auth(&raw.auth, c);
    let smtp = validate_smtp(&raw.smtp, c);
    let admin = validate_admin(&raw.admin, c);

    let policy = validate_policy(&raw.policy, c);
    let state = validate_state(&raw.state, c);

    let routes = validate_route(raw.route, c);
    let sources = validate_sources(&raw.sources, origin, c);
    let nginx_secret = validate_nginx(&raw.nginx, c);
    let tls = validate_tls(&raw.tls, c);
    let external = validate_external(raw.external.as_ref(), c);
    let real_ip_from = validate_client(&raw.client, c);
    let listeners = validate_listeners(&raw.listeners, sources.len(), c);
    let backend = validate_backend(&raw.backend, c);

    Config {
        origin: origin.clone(),
        listen,
        read_timeout,
        max_connections,
        reload_interval,
        workers,
        verify_threads,
        verify_queue,
        verify_memory_hard_threads,
        cache,
        auth,
        smtp,
        admin,
        routes,
        sources,
        policy,
        state,
        nginx_secret,
        tls,
        external,
        real_ip_from,
        listeners,
        backend,
    }
}
