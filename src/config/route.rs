//! The `[route]` section (backends per protocol, per domain in `[route.domains."..."]`, their
//! health checks in `[route.health]`) and `[backend]` (the credentials nginx logs in to a
//! backend with). Every backend is resolved once here, so `check-config` reports a name that
//! does not resolve; the daemon re-resolves names while it runs (`crate::route`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::login::MailProtocol;
use crate::secret::Secret;

/// One backend as written: an IP literal (one address) or a host name (every A/AAAA
/// address of it is a backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` as written in the config.
    pub spec: String,
    /// The host part, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Whether `host` is an IP literal (never re-resolved).
    pub literal: bool,
    /// The addresses it resolved to when the config was loaded (at least one).
    pub addrs: Vec<SocketAddr>,
}

/// The backends of one rule: a protocol's `[route]` entry or a domain's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteList {
    /// The backends, in the order written.
    pub targets: Vec<Target>,
    /// The first backend's first address (what a one-backend route sends every login to).
    pub addr: SocketAddr,
    /// The backends as written, joined with `,`.
    pub spec: String,
}

/// The routes of one domain (`[route.domains."example.org"]`); a protocol left out uses
/// `[route]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DomainRoutes {
    /// IMAP backends.
    pub imap: Option<RouteList>,
    /// POP3 backends.
    pub pop3: Option<RouteList>,
    /// SMTP backends.
    pub smtp: Option<RouteList>,
}

impl DomainRoutes {
    /// The backends for `protocol`, when the domain names some.
    pub(crate) fn for_protocol(&self, protocol: MailProtocol) -> Option<&RouteList> {
        match protocol {
            MailProtocol::Imap => self.imap.as_ref(),
            MailProtocol::Pop3 => self.pop3.as_ref(),
            MailProtocol::Smtp => self.smtp.as_ref(),
        }
    }
}

/// `[route.health]`: backend checks and name re-resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthSettings {
    /// How often each backend is checked (0: never; every backend counts as up).
    pub interval: Duration,
    /// How long a check may take: connect plus greeting.
    pub timeout: Duration,
    /// How often a name is re-resolved when the resolver does not tell its TTL, and the
    /// longest a TTL is trusted.
    pub dns_refresh: Duration,
}

/// The backend for each protocol (`[route]`), per domain, and how they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routes {
    /// IMAP backends.
    pub imap: RouteList,
    /// POP3 backends.
    pub pop3: RouteList,
    /// SMTP backends.
    pub smtp: RouteList,
    /// Per-domain routes, keyed by the lower-case domain.
    pub domains: BTreeMap<String, DomainRoutes>,
    /// Health checks and name re-resolution.
    pub health: HealthSettings,
    /// `[route.health] nameservers`: the DNS servers backend names are asked of (empty: the
    /// system's, from `/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

impl Routes {
    /// The backends for `protocol`.
    pub(crate) fn for_protocol(&self, protocol: MailProtocol) -> &RouteList {
        match protocol {
            MailProtocol::Imap => &self.imap,
            MailProtocol::Pop3 => &self.pop3,
            MailProtocol::Smtp => &self.smtp,
        }
    }
}

/// A Dovecot master user (`[backend]`): nginx logs in to the backend as
/// `<user><separator><master_user>` with the master password when it has no password of the
/// user's to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MasterUser {
    /// The master user's name.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// What stands between the user and the master user (Dovecot's
    /// `auth_master_user_separator`).
    pub separator: String,
}

/// `[route]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    imap: Option<Spanned<OneOrMany>>,
    pop3: Option<Spanned<OneOrMany>>,
    smtp: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    domains: BTreeMap<String, Spanned<RawDomain>>,
    #[serde(default)]
    health: RawHealth,
}

/// A backend or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[route.domains."..."]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    imap: Option<Spanned<OneOrMany>>,
    pop3: Option<Spanned<OneOrMany>>,
    smtp: Option<Spanned<OneOrMany>>,
}

/// `[route.health]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    dns_refresh: Option<Spanned<String>>,
    nameservers: Option<Spanned<Vec<String>>>,
}

/// `[backend]`: what nginx logs in to a backend with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BackendSettings {
    /// The Dovecot master user, for logins nginx has no password of the user's for.
    pub master: Option<MasterUser>,
    /// nginx runs `proxy_smtp_auth on`: SMTP backends get credentials as IMAP and POP3 do
    /// (without it, nginx names the login in XCLIENT, where a master user must not appear).
    pub smtp_proxy_auth: bool,
}

/// `[backend]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    master_user: Option<Spanned<String>>,
    master_password: Option<Spanned<String>>,
    master_separator: Option<Spanned<String>>,
    smtp_proxy_auth: Option<bool>,
}

/// Validates `[route]`; a missing protocol gets its port on 127.0.0.1.
pub(super) fn validate_route(raw: Option<Spanned<RawRoute>>, c: &mut Checker<'_>) -> Routes {
    let route = raw.map(Spanned::into_inner).unwrap_or_default();
    let nameservers = validate_nameservers(&route.health, c);
    let mut domains = BTreeMap::new();
    for (name, domain) in &route.domains {
        let key = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if key.is_empty() || key.contains(['@', ' ', '<', '>', ':']) {
            c.problem(
                Some(domain.span()),
                "route.domains",
                format!("{name:?} is not a domain name"),
            );
            continue;
        }
        let d = domain.get_ref();
        let list = |c: &mut Checker<'_>, v: &Option<Spanned<OneOrMany>>, p: &str| {
            v.as_ref()
                .map(|v| route_list(c, Some(v), &format!("route.domains.{name:?}.{p}"), "", &nameservers))
        };
        let routes = DomainRoutes {
            imap: list(c, &d.imap, "imap"),
            pop3: list(c, &d.pop3, "pop3"),
            smtp: list(c, &d.smtp, "smtp"),
        };
        if routes == DomainRoutes::default() {
            c.problem(
                Some(domain.span()),
                "route.domains",
                format!("{name:?} names no backend; give imap, pop3 or smtp"),
            );
        }
        if domains.insert(key, routes).is_some() {
            c.problem(
                Some(domain.span()),
                "route.domains",
                format!("{name:?} is given twice (domains are compared in lower case)"),
            );
        }
    }
    Routes {
        imap: route_list(c, route.imap.as_ref(), "route.imap", "127.0.0.1:143", &nameservers),
        pop3: route_list(c, route.pop3.as_ref(), "route.pop3", "127.0.0.1:110", &nameservers),
        smtp: route_list(c, route.smtp.as_ref(), "route.smtp", "127.0.0.1:25", &nameservers),
        domains,
        health: validate_health(&route.health, c),
        nameservers,
    }
}

/// `nameservers`: `ip` or `ip:port` (port 53 when left out), at least one when given.
fn validate_nameservers(raw: &RawHealth, c: &mut Checker<'_>) -> Vec<SocketAddr> {
    let Some(list) = &raw.nameservers else {
        return Vec::new();
    };
    let key = "route.health.nameservers";
    if list.get_ref().is_empty() {
        c.problem(
            Some(list.span()),
            key,
            "an empty list; leave the key out to use /etc/resolv.conf".to_owned(),
        );
    }
    let mut servers = Vec::new();
    for spec in list.get_ref() {
        let parsed = spec
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| spec.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Some(a) if a.port() != 0 => servers.push(a),
            _ => c.problem(
                Some(list.span()),
                key,
                format!(
                    "{spec:?} is not an IP address with an optional port, e.g. \"192.0.2.53\" or \"127.0.0.1:5353\""
                ),
            ),
        }
    }
    servers
}

fn validate_health(raw: &RawHealth, c: &mut Checker<'_>) -> HealthSettings {
    let interval = c.duration(&raw.interval, "route.health.interval", Duration::ZERO);
    let timeout = c.duration(&raw.timeout, "route.health.timeout", Duration::from_secs(2));
    let dns_refresh = c.duration(&raw.dns_refresh, "route.health.dns_refresh", Duration::from_secs(60));
    if timeout.is_zero() || (!interval.is_zero() && timeout > interval) {
        c.problem(
            raw.timeout.as_ref().map(Spanned::span),
            "route.health.timeout",
            "must be more than 0 and at most route.health.interval".to_owned(),
        );
    }
    if dns_refresh < Duration::from_secs(1) {
        c.problem(
            raw.dns_refresh.as_ref().map(Spanned::span),
            "route.health.dns_refresh",
            "must be at least 1s".to_owned(),
        );
    }
    HealthSettings {
        interval,
        timeout,
        dns_refresh,
    }
}

/// One rule's backends; on a problem, a placeholder address stands in so validation goes on.
fn route_list(
    c: &mut Checker<'_>,
    value: Option<&Spanned<OneOrMany>>,
    key: &str,
    default: &str,
    nameservers: &[SocketAddr],
) -> RouteList {
    let (specs, span) = match value {
        Some(v) => match v.get_ref() {
            OneOrMany::One(s) => (vec![s.clone()], Some(v.span())),
            OneOrMany::Many(list) => (list.clone(), Some(v.span())),
        },
        None => (vec![default.to_owned()], None),
    };
    if specs.is_empty() {
        c.problem(span.clone(), key, "an empty list; give at least one backend".to_owned());
    }
    let placeholder = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut targets: Vec<Target> = Vec::new();
    for spec in &specs {
        match resolve_target(spec, nameservers) {
            Ok(t) if targets.iter().any(|o| o.spec == t.spec) => {
                c.problem(span.clone(), key, format!("{spec:?} is listed twice"));
            }
            Ok(t) => targets.push(t),
            Err(message) => c.problem(span.clone(), key, message),
        }
    }
    RouteList {
        addr: targets.first().map_or(placeholder, |t| t.addrs[0]),
        spec: specs.join(","),
        targets,
    }
}

/// Splits `host:port` (or `[v6]:port`) and resolves it; IP literals pass through.
fn resolve_target(spec: &str, nameservers: &[SocketAddr]) -> Result<Target, String> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{spec:?}: port 0 is not a valid backend port"));
        }
        return Ok(Target {
            spec: spec.to_owned(),
            host: addr.ip().to_string(),
            port: addr.port(),
            literal: true,
            addrs: vec![addr],
        });
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(format!("{spec:?} is not host:port; write e.g. \"127.0.0.1:143\""));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{spec:?}: {port:?} is not a port from 1 to 65535")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match lookup(host, port, nameservers) {
        Ok((addrs, _)) if addrs.is_empty() => Err(format!("{spec:?}: host {host:?} has no address")),
        Ok((addrs, _)) => Ok(Target {
            spec: spec.to_owned(),
            host: host.to_owned(),
            port,
            literal: false,
            addrs,
        }),
        Err(e) => Err(format!("{spec:?}: cannot resolve host {host:?} ({e})")),
    }
}

/// How long one DNS question may take before it counts as unanswered.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `host` to its A and AAAA addresses on `port`, sorted, without repeats, with how
/// long the answer may be used when the resolver tells it. The DNS is asked through
/// hickory-resolver (`/etc/hosts` first, then `nameservers`, or `/etc/resolv.conf`'s when
/// empty); with the system's servers, a name DNS cannot answer is asked of `getaddrinfo`
/// too (nsswitch sources beyond files and DNS), which tells no TTL. Blocking: the lookup
/// runs on a thread and runtime of its own, so it is safe in and out of the daemon's runtime.
pub(crate) fn lookup(
    host: &str,
    port: u16,
    nameservers: &[SocketAddr],
) -> Result<(Vec<SocketAddr>, Option<Duration>), String> {
    // Fuzz builds never ask a resolver: the fuzzer's host names must not leave the machine.
    if cfg!(fuzzing) {
        return Err("not resolved in fuzz builds".to_owned());
    }
    let found = std::thread::scope(|s| {
        s.spawn(|| dns_lookup(host, port, nameservers))
            .join()
            .unwrap_or_else(|_| Err("the resolver thread failed".to_owned()))
    });
    let (mut addrs, ttl) = match found {
        Ok((addrs, ttl)) => (addrs, Some(ttl)),
        Err(e) if !nameservers.is_empty() => return Err(e),
        Err(e) => match (host, port).to_socket_addrs() {
            Ok(addrs) => (addrs.collect(), None),
            Err(system) => return Err(format!("{e}; getaddrinfo: {system}")),
        },
    };
    addrs.sort();
    addrs.dedup();
    Ok((addrs, ttl))
}

/// One hickory-resolver lookup on a current-thread runtime; no cache outlives it, so every
/// call asks the servers (or `/etc/hosts`) afresh.
fn dns_lookup(host: &str, port: u16, nameservers: &[SocketAddr]) -> Result<(Vec<SocketAddr>, Duration), String> {
    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
    runtime.block_on(async {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = DNS_TIMEOUT;
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        let answer = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let ttl = answer
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        Ok((answer.iter().map(|ip| SocketAddr::new(ip, port)).collect(), ttl))
    })
}

/// Validates `[backend]`.
pub(super) fn validate_backend(raw: &RawBackend, c: &mut Checker<'_>) -> BackendSettings {
    BackendSettings {
        master: validate_master(raw, c),
        smtp_proxy_auth: raw.smtp_proxy_auth.unwrap_or(false),
    }
}

/// A master user needs its password (16+ characters) and the reverse.
fn validate_master(raw: &RawBackend, c: &mut Checker<'_>) -> Option<MasterUser> {
    let separator = raw
        .master_separator
        .as_ref()
        .map_or_else(|| "*".to_owned(), |s| s.get_ref().clone());
    if separator.is_empty() || separator.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
        c.problem(
            raw.master_separator.as_ref().map(Spanned::span),
            "backend.master_separator",
            "must be one or more printable characters without spaces, e.g. \"*\"".to_owned(),
        );
    }
    match (&raw.master_user, &raw.master_password) {
        (None, None) => None,
        (Some(user), Some(password)) => {
            let u = user.get_ref();
            if u.is_empty() || u.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
                c.problem(
                    Some(user.span()),
                    "backend.master_user",
                    "must be a name without spaces".to_owned(),
                );
            }
            let p = password.get_ref();
            // The password itself is never repeated in a message.
            if p.len() < 16 || p.len() > 256 || p.starts_with(' ') || p.ends_with(' ') || p.contains(['\r', '\n', '\0'])
            {
                c.problem(
                    Some(password.span()),
                    "backend.master_password",
                    "use 16 to 256 characters, without line breaks or spaces at either end".to_owned(),
                );
            }
            Some(MasterUser {
                user: u.clone(),
                password: Secret::new(p.clone()),
                separator,
            })
        }
        (Some(user), None) => {
            c.problem(
                Some(user.span()),
                "backend.master_password",
                "missing: a master user needs its password".to_owned(),
            );
            None
        }
        (None, Some(password)) => {
            c.problem(
                Some(password.span()),
                "backend.master_user",
                "missing: a master password needs its user".to_owned(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_resolve_as_getaddrinfo_resolves_them_and_tell_a_ttl() {
        // The reference is the system's own resolver (glibc reading /etc/hosts).
        let mut system: Vec<SocketAddr> = ("localhost", 25).to_socket_addrs().unwrap().collect();
        system.sort();
        system.dedup();
        let (addrs, ttl) = lookup("localhost", 25, &[]).unwrap();
        let v4 = |list: &[SocketAddr]| list.iter().filter(|a| a.is_ipv4()).copied().collect::<Vec<_>>();
        assert_eq!(v4(&addrs), v4(&system));
        assert!(
            ttl.is_some(),
            "an answer from /etc/hosts comes through hickory, with a TTL"
        );
    }
}
