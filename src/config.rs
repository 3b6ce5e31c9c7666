//! The configuration file: TOML read into a raw form (`deny_unknown_fields`), then
//! validated into [`Config`]. Validation collects every problem, each naming its key and
//! `file:line`, so one `check-config` run shows all of them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cache::CacheSettings;
use crate::protocol::MailProtocol;

mod http_basic;

/// The address the auth_http server listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
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
pub enum ConfigOrigin {
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

/// A backend mail server: as written, and resolved to an IP address (nginx accepts only IP
/// literals in `Auth-Server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `host:port` as written in the config.
    pub spec: String,
    /// The resolved address.
    pub addr: SocketAddr,
}

/// The backend for each protocol (`[route]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// IMAP backend.
    pub imap: Backend,
    /// POP3 backend.
    pub pop3: Backend,
    /// SMTP backend.
    pub smtp: Backend,
}

impl Routes {
    /// The backend for `protocol`.
    pub fn for_protocol(&self, protocol: MailProtocol) -> &Backend {
        match protocol {
            MailProtocol::Imap => &self.imap,
            MailProtocol::Pop3 => &self.pop3,
            MailProtocol::Smtp => &self.smtp,
        }
    }
}

/// Answers to failed logins (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `Auth-Wait` seconds after a failed `plain` login (0 = never).
    pub wait_secs: u32,
    /// From this `Auth-Login-Attempt` on, no `Auth-Wait`: nginx closes the connection.
    pub max_attempts: u32,
}

/// SMTP without AUTH (`[smtp]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Domains an inbound MX accepts mail for (lower case).
    pub local_domains: BTreeSet<String>,
}

/// The admin listener (`[admin]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where health, metrics and operator endpoints listen (`None`: off).
    pub listen: Option<SocketAddr>,
    /// Bearer token for endpoints that change state (`None`: those endpoints are off).
    pub token: Option<String>,
}

/// One credential source (`[[source]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// An htpasswd / passwd-file users file.
    Htpasswd(HtpasswdConfig),
    /// A URL protected by HTTP Basic auth that checks the credentials.
    HttpBasic(Box<HttpBasicConfig>),
}

/// The HTTP method an `http-basic` source asks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicMethod {
    /// `GET` (the default).
    Get,
    /// `HEAD`: no response body to read.
    Head,
}

/// An HTTP Basic-auth upstream (`kind = "http-basic"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBasicConfig {
    /// The protected URL (`http` or `https`, no user info).
    pub url: reqwest::Url,
    /// Connect plus response deadline for one question.
    pub timeout: Duration,
    /// The request method.
    pub method: BasicMethod,
    /// A header that carries the mail client's address to the upstream (`None`: not sent).
    pub forward_client_ip: Option<reqwest::header::HeaderName>,
    /// Questions in flight at once; more wait briefly, then get a temporary failure.
    pub max_in_flight: usize,
    /// Extra request headers, sent verbatim.
    pub headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    /// The response headers naming a backend for the login (`None`: routing from the answer
    /// is off and `[route]` applies).
    pub route_headers: Option<RouteHeaders>,
    /// Consecutive failed questions that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker answers without asking.
    pub breaker_cooldown: Duration,
    /// The protocols whose logins this source may accept (`None` = all).
    pub protocols: Option<Vec<MailProtocol>>,
}

/// Names of the response headers that route a login (`X-Mail-Server`, `X-Mail-Port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHeaders {
    /// The backend address (an IP literal or a host name, resolved per login).
    pub server: reqwest::header::HeaderName,
    /// The backend port.
    pub port: reqwest::header::HeaderName,
}

/// An htpasswd users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtpasswdConfig {
    /// The file (relative paths resolved against the config's folder).
    pub path: PathBuf,
    /// The protocols whose logins this source may accept (`None` = all).
    pub protocols: Option<Vec<MailProtocol>>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
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
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
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
pub enum ConfigError {
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

/// The port the daemon listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:14380";
/// The users file the built-in default config reads, in the working directory.
pub const DEFAULT_USERS_FILE: &str = "users.htpasswd";

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    wait: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<Spanned<String>>,
    negative_ttl: Option<Spanned<String>>,
    max_entries: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    #[serde(default)]
    local_domains: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    imap: Option<Spanned<String>>,
    pop3: Option<Spanned<String>>,
    smtp: Option<Spanned<String>>,
}

// One flat struct for every source kind: an internally tagged enum would lose the spans
// that give each problem its line number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    protocols: Option<Spanned<Vec<String>>>,
    url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    forward_client_ip: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<i64>>,
    headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    server_header: Option<Spanned<String>>,
    port_header: Option<Spanned<String>>,
    breaker_failures: Option<Spanned<i64>>,
    breaker_cooldown: Option<Spanned<String>>,
}

impl RawSource {
    /// The fields present in this entry besides `kind` and `protocols`, with their spans.
    fn kind_fields(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        fn span<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("path", span(&self.path)),
            ("url", span(&self.url)),
            ("timeout", span(&self.timeout)),
            ("method", span(&self.method)),
            ("forward_client_ip", span(&self.forward_client_ip)),
            ("max_in_flight", span(&self.max_in_flight)),
            ("headers", span(&self.headers)),
            ("server_header", span(&self.server_header)),
            ("port_header", span(&self.port_header)),
            ("breaker_failures", span(&self.breaker_failures)),
            ("breaker_cooldown", span(&self.breaker_cooldown)),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|s| (name, s)))
        .collect()
    }
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
        match humantime::parse_duration(value.get_ref()) {
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

    fn backend(&mut self, value: &Option<Spanned<String>>, key: &str, default: &str) -> Backend {
        let (spec, span) = match value {
            Some(v) => (v.get_ref().clone(), Some(v.span())),
            None => (default.to_owned(), None),
        };
        match resolve_backend(&spec) {
            Ok(addr) => Backend { spec, addr },
            Err(message) => {
                self.problem(span, key, message);
                Backend {
                    spec,
                    addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                }
            }
        }
    }
}

/// Resolves `host:port` (or `[v6]:port`) to one address; IP literals pass through.
fn resolve_backend(spec: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{spec:?}: port 0 is not a valid backend port"));
        }
        return Ok(addr);
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(format!("{spec:?} is not host:port; write e.g. \"127.0.0.1:143\""));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{spec:?}: {port:?} is not a port from 1 to 65535")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{spec:?}: host {host:?} has no address")),
        Err(e) => Err(format!("{spec:?}: cannot resolve host {host:?} ({e})")),
    }
}

/// Parses a `listen` value: `host:port`, `[v6]:port` or `unix:/path`.
pub fn parse_listen(value: &str, base_dir: &Path) -> Result<ListenAddr, String> {
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
    pub fn builtin() -> Config {
        // The built-in text is fixed and valid; a failure here is a bug caught by the tests.
        Config::from_toml("", ConfigOrigin::BuiltIn, Path::new(".")).unwrap_or_else(|e| panic!("built-in config: {e}"))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Config::from_toml(&text, ConfigOrigin::File(path.to_owned()), &base_dir)
    }

    /// Validates config text; relative paths are resolved against `base_dir`.
    pub fn from_toml(text: &str, origin: ConfigOrigin, base_dir: &Path) -> Result<Config, ConfigError> {
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
    pub fn users_files(&self) -> Vec<&Path> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::Htpasswd(h) => Some(h.path.as_path()),
                SourceConfig::HttpBasic(_) => None,
            })
            .collect()
    }
}

fn validate(raw: RawConfig, c: &mut Checker<'_>, origin: &ConfigOrigin) -> Config {
    let listen = match &raw.listen {
        None => ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 14380))),
        Some(v) => parse_listen(v.get_ref(), &c.base_dir).unwrap_or_else(|msg| {
            c.problem(Some(v.span()), "listen", msg);
            ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 14380)))
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

    let wait = c.duration(&raw.auth.wait, "auth.wait", Duration::from_secs(3));
    if wait.subsec_nanos() != 0 {
        c.problem(
            raw.auth.wait.as_ref().map(Spanned::span),
            "auth.wait",
            "nginx takes whole seconds".to_owned(),
        );
    }
    let auth = AuthSettings {
        wait_secs: u32::try_from(wait.as_secs()).unwrap_or(u32::MAX),
        max_attempts: c.count(&raw.auth.max_attempts, "auth.max_attempts", 1..=1000, 10) as u32,
    };

    let mut local_domains = BTreeSet::new();
    for domain in &raw.smtp.local_domains {
        let d = domain.get_ref().trim().trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() || d.contains(['@', ' ', '<', '>']) {
            c.problem(
                Some(domain.span()),
                "smtp.local_domains",
                format!("{:?} is not a domain name", domain.get_ref()),
            );
        } else {
            local_domains.insert(d);
        }
    }

    let admin = validate_admin(&raw.admin, c);

    let policy = validate_policy(&raw.policy, c);
    let state = validate_state(&raw.state, c);

    let route = raw.route.map(Spanned::into_inner).unwrap_or_default();
    let routes = Routes {
        imap: c.backend(&route.imap, "route.imap", "127.0.0.1:143"),
        pop3: c.backend(&route.pop3, "route.pop3", "127.0.0.1:110"),
        smtp: c.backend(&route.smtp, "route.smtp", "127.0.0.1:25"),
    };

    let mut sources = Vec::new();
    if raw.sources.is_empty() {
        if *origin == ConfigOrigin::BuiltIn {
            sources.push(SourceConfig::Htpasswd(HtpasswdConfig {
                path: c.base_dir.join(DEFAULT_USERS_FILE),
                protocols: None,
            }));
        } else {
            c.problem(
                None,
                "source",
                "no [[source]] configured; add one, e.g. kind = \"htpasswd\", path = \"users.htpasswd\"".to_owned(),
            );
        }
    }
    for (index, source) in raw.sources.iter().enumerate() {
        if let Some(s) = validate_source(source, index, c) {
            sources.push(s);
        }
    }

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
        smtp: SmtpSettings { local_domains },
        admin,
        routes,
        sources,
        policy,
        state,
    }
}

fn validate_cache(raw: &RawCache, c: &mut Checker<'_>) -> CacheSettings {
    let default = CacheSettings::default();
    CacheSettings {
        ttl: c.duration(&raw.ttl, "cache.ttl", default.ttl),
        negative_ttl: c.duration(&raw.negative_ttl, "cache.negative_ttl", default.negative_ttl),
        max_entries: c.count(&raw.max_entries, "cache.max_entries", 0..=100_000_000, 100_000) as u64,
    }
}

fn validate_admin(raw: &RawAdmin, c: &mut Checker<'_>) -> AdminSettings {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|v| match v.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let msg = format!("{:?} is not ip:port; write e.g. \"127.0.0.1:14381\"", v.get_ref());
                c.problem(Some(v.span()), "admin.listen", msg);
                None
            }
        });
    let token = raw.token.as_ref().and_then(|t| {
        if t.get_ref().len() < 16 {
            // The token itself is never repeated in a message.
            c.problem(
                Some(t.span()),
                "admin.token",
                "too short; use at least 16 random characters".to_owned(),
            );
            None
        } else {
            Some(t.get_ref().clone())
        }
    });
    AdminSettings { listen, token }
}

fn validate_protocols(
    value: &Option<Spanned<Vec<String>>>,
    key: &str,
    c: &mut Checker<'_>,
) -> Option<Vec<MailProtocol>> {
    let value = value.as_ref()?;
    let mut out = Vec::new();
    for name in value.get_ref() {
        match MailProtocol::parse(name) {
            Some(p) => out.push(p),
            None => c.problem(Some(value.span()), key, format!("{name:?} is not imap, pop3 or smtp")),
        }
    }
    Some(out)
}

fn validate_source(source: &Spanned<RawSource>, index: usize, c: &mut Checker<'_>) -> Option<SourceConfig> {
    let raw = source.get_ref();
    let key = |field: &str| format!("source[{index}].{field}");
    let protocols = validate_protocols(&raw.protocols, &key("protocols"), c);
    let kind = raw.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "htpasswd" => &["path"],
        "http-basic" => http_basic::FIELDS,
        _ => &[],
    };
    if !allowed.is_empty() {
        for (field, span) in raw.kind_fields() {
            if !allowed.contains(&field) {
                c.problem(
                    Some(span),
                    &key(field),
                    format!("not allowed for kind = {kind:?}; remove it"),
                );
            }
        }
    }
    match kind {
        "http-basic" => http_basic::validate(raw, protocols, &key, c).map(|h| SourceConfig::HttpBasic(Box::new(h))),
        "htpasswd" => {
            let Some(path) = &raw.path else {
                c.problem(
                    Some(source.span()),
                    &key("path"),
                    "an htpasswd source needs path = \"...\"".to_owned(),
                );
                return None;
            };
            let path = c.base_dir.join(path.get_ref());
            Some(SourceConfig::Htpasswd(HtpasswdConfig { path, protocols }))
        }
        other => {
            c.problem(
                Some(raw.kind.span()),
                &key("kind"),
                format!("unknown source kind {other:?}; known: \"htpasswd\", \"http-basic\""),
            );
            None
        }
    }
}

/// The brute-force defence (`[policy]`). Counts are of distinct wrong passwords within
/// `window`; a limit of 0 turns that scope off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
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
    pub hmac_key: Option<String>,
}

/// What to do when Redis cannot be reached (`[state] on_redis_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Count in this process until Redis is back.
    Local,
    /// Answer password logins with a temporary failure until Redis is back.
    Tempfail,
}

/// Shared policy state (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` (`None`: counters in this process only).
    pub redis: Option<String>,
    /// What to do while Redis cannot be reached.
    pub on_redis_error: OnRedisError,
    /// How long one Redis operation may take before it counts as a failure.
    pub redis_timeout: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    redis: Option<Spanned<String>>,
    on_redis_error: Option<Spanned<String>>,
    redis_timeout: Option<Spanned<String>>,
    key_prefix: Option<Spanned<String>>,
}

fn validate_policy(raw: &RawPolicy, c: &mut Checker<'_>) -> PolicySettings {
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
        hmac_key,
    }
}

fn validate_state(raw: &RawState, c: &mut Checker<'_>) -> StateSettings {
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
        Some(p) if !p.get_ref().is_empty() && p.get_ref().chars().all(|ch| ch.is_ascii_graphic()) => {
            p.get_ref().clone()
        }
        Some(p) => {
            c.problem(
                Some(p.span()),
                "state.key_prefix",
                "use printable ASCII without spaces, e.g. \"mailauthd\"".to_owned(),
            );
            "mailauthd".to_owned()
        }
    };
    StateSettings {
        redis,
        on_redis_error,
        redis_timeout,
        key_prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_file_text(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            ConfigOrigin::File(PathBuf::from("/etc/mailauthd.toml")),
            Path::new("/etc"),
        )
    }

    #[test]
    fn builtin_default_matches_the_documented_values() {
        let c = Config::builtin();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.routes.imap.addr, "127.0.0.1:143".parse().unwrap());
        assert_eq!(c.routes.pop3.addr.port(), 110);
        assert_eq!(c.routes.smtp.addr.port(), 25);
        assert_eq!(c.users_files(), vec![Path::new("./users.htpasswd")]);
        assert_eq!(
            c.auth,
            AuthSettings {
                wait_secs: 3,
                max_attempts: 10
            }
        );
    }

    #[test]
    fn the_contract_example_validates_with_paths_relative_to_the_config() {
        let c = from_file_text(
            "listen = \"unix:/run/mailauthd.sock\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n\
             [route]\nimap = \"127.0.0.1:143\"\npop3 = \"localhost:110\"\nsmtp = \"[::1]:25\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, ListenAddr::Unix("/run/mailauthd.sock".into()));
        assert_eq!(c.users_files(), vec![Path::new("/etc/users.htpasswd")]);
        assert!(c.routes.pop3.addr.ip().is_loopback());
        assert_eq!(c.routes.smtp.addr, "[::1]:25".parse().unwrap());
    }

    #[test]
    fn every_problem_is_reported_with_key_and_line() {
        let err = from_file_text(
            "listen = \"nowhere\"\nread_timeout = \"soon\"\n[auth]\nmax_attempts = 0\n[route]\nimap = \"127.0.0.1\"\n\
             [[source]]\nkind = \"ldap\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let text = err.to_string();
        assert_eq!(problems.len(), 5, "{text}");
        assert!(text.contains("/etc/mailauthd.toml:1: listen:"), "{text}");
        assert!(text.contains("/etc/mailauthd.toml:2: read_timeout:"), "{text}");
        assert!(text.contains("/etc/mailauthd.toml:4: auth.max_attempts:"), "{text}");
        assert!(text.contains("/etc/mailauthd.toml:6: route.imap:"), "{text}");
        assert!(
            text.contains("/etc/mailauthd.toml:8: source[0].kind: unknown source kind \"ldap\""),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = from_file_text("listen = \"127.0.0.1:1\"\n\n[auth]\nwiat = \"3s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/mailauthd.toml:4:"), "{err}");
        assert!(err.contains("wiat"), "{err}");
    }

    #[test]
    fn cache_settings_have_defaults_and_are_checked() {
        let c = Config::builtin();
        assert_eq!(c.cache, CacheSettings::default());
        assert_eq!(c.cache.ttl, Duration::from_secs(300));
        let c = from_file_text(
            "[cache]\nttl = \"0s\"\nnegative_ttl = \"5s\"\nmax_entries = 10\n[[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
        )
        .unwrap();
        assert_eq!(
            c.cache,
            CacheSettings {
                ttl: Duration::ZERO,
                negative_ttl: Duration::from_secs(5),
                max_entries: 10
            }
        );
        let err = from_file_text(
            "[cache]\nttl = \"soon\"\nmax_entries = -1\n[[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/mailauthd.toml:2: cache.ttl:"), "{err}");
        assert!(err.contains("/etc/mailauthd.toml:3: cache.max_entries:"), "{err}");
    }

    #[test]
    fn a_file_config_needs_a_source() {
        let err = from_file_text("").unwrap_err().to_string();
        assert!(err.contains("no [[source]] configured"), "{err}");
    }

    #[test]
    fn the_example_config_documents_the_policy_and_state_defaults() {
        let example = Config::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/mailauthd.toml"
        )))
        .unwrap();
        let builtin = Config::builtin();
        assert_eq!(example.policy, builtin.policy);
        assert_eq!(example.state, builtin.state);
        assert_eq!(builtin.policy.pair_failures, 5);
        assert_eq!(builtin.policy.net_failures, 20);
        assert_eq!(builtin.policy.window, Duration::from_secs(900));
        assert_eq!(builtin.state.on_redis_error, OnRedisError::Local);
        assert_eq!(builtin.state.redis, None);
    }

    #[test]
    fn bad_policy_and_state_values_are_reported_with_their_keys() {
        let err = Config::from_toml(
            "[policy]\nwindow = \"0s\"\nipv6_prefix = 200\nallow = [\"10.0.0.0/33\"]\nhmac_key = \"tiny-key\"\n\
             [state]\nredis = \"http://x\"\non_redis_error = \"ignore\"\n",
            ConfigOrigin::BuiltIn,
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        for key in [
            "policy.window",
            "policy.ipv6_prefix",
            "policy.allow",
            "policy.hmac_key",
            "state.redis",
            "state.on_redis_error",
        ] {
            assert!(err.contains(&format!("{key}:")), "{key} missing in {err}");
        }
        assert!(!err.contains("tiny-key"), "the key is never repeated: {err}");
    }
}
