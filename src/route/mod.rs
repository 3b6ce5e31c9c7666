//! Which backend a login goes to. The order of precedence: a route the accepting source gave
//! (users-file proxy fields, an upstream's routing headers) > `[route.domains]` (the part of
//! the login after its last `@`) > `[route]` per protocol.
//!
//! A rule with several backends picks one by rendezvous hashing of the login over the
//! healthy ones, so a user's sessions land on one store and a backend going away moves only
//! its own users. Health ([`health`]) and names ([`dns`]) are kept fresh by tasks that
//! `daemon::serve` starts, never by a login: a login reads the state they left.

pub(crate) mod dns;
pub(crate) mod health;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{HealthSettings, RouteList, Routes, Target};
use crate::login::MailProtocol;
use crate::source::SourceRoute;

/// A backend's state as the last check left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not checked (checks are off, or the first check has not finished): counts as up.
    Unchecked,
    /// The last check passed.
    Up,
    /// The last check failed: no login goes there until a check passes again.
    Down,
}

impl Health {
    /// The state's name in `/readyz`, `mailauthd test` and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The rule a backend was chosen by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The accepting source named it (`host=`, an upstream's routing headers).
    Source,
    /// `[route.domains."<domain>"]`.
    Domain(String),
    /// `[route]` for the protocol.
    Protocol(MailProtocol),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Source => f.write_str("source"),
            Rule::Domain(d) => write!(f, "route.domains.{d:?}"),
            Rule::Protocol(p) => write!(f, "route.{}", p.as_str()),
        }
    }
}

/// The backend chosen for a login, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Where nginx sends the login.
    pub addr: SocketAddr,
    /// The rule that chose it.
    pub rule: Rule,
    /// Its health.
    pub health: Health,
    /// Addresses the rule has now.
    pub backends: usize,
    /// Of those, how many count as up.
    pub up: usize,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {} (health {}; {} of {} backend(s) up)",
            self.addr,
            self.rule,
            self.health.as_str(),
            self.up,
            self.backends
        )
    }
}

/// What the router answers for one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routed {
    /// A backend.
    To(Choice),
    /// Every backend of the rule is down: a temporary failure, decided before any hashing.
    AllDown(Rule),
    /// The source's routing facts cannot be used (why): a temporary failure rather than
    /// another backend.
    Unusable(String),
}

impl fmt::Display for Routed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routed::To(choice) => choice.fmt(f),
            Routed::AllDown(rule) => write!(f, "none: every backend of {rule} is down"),
            Routed::Unusable(why) => write!(f, "none: the source's route cannot be used: {why}"),
        }
    }
}

/// One configured backend and the addresses it has now (a name's change when it is
/// re-resolved).
#[derive(Debug)]
struct Member {
    target: Target,
    addrs: ArcSwap<Vec<SocketAddr>>,
    /// Why the last resolution failed, while the last addresses are kept.
    stale: Mutex<Option<String>>,
    /// When the name is due for resolution again.
    due: Mutex<Instant>,
}

/// The backends of one rule.
#[derive(Debug)]
struct Pool {
    rule: Rule,
    protocol: MailProtocol,
    members: Vec<Member>,
}

impl Pool {
    fn new(rule: Rule, protocol: MailProtocol, list: &RouteList, now: Instant) -> Pool {
        let members = list
            .targets
            .iter()
            .map(|t| Member {
                target: t.clone(),
                addrs: ArcSwap::from_pointee(t.addrs.clone()),
                stale: Mutex::new(None),
                due: Mutex::new(now),
            })
            .collect();
        Pool {
            rule,
            protocol,
            members,
        }
    }

    /// Every address of the pool now, without repeats.
    fn addrs(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        for m in &self.members {
            for a in m.addrs.load().iter() {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
        all
    }
}

/// Owns every rule's backends, their health and their names' addresses.
#[derive(Debug)]
pub(crate) struct Router {
    pools: Vec<Pool>,
    /// `(protocol, domain)` → index into `pools`; `None` is the protocol's `[route]`.
    index: HashMap<(MailProtocol, Option<String>), usize>,
    health: RwLock<HashMap<(MailProtocol, SocketAddr), Health>>,
    settings: HealthSettings,
}

const PROTOCOLS: [MailProtocol; 3] = [MailProtocol::Imap, MailProtocol::Pop3, MailProtocol::Smtp];

impl Router {
    /// The rules of `routes`, every backend unchecked.
    pub(crate) fn new(routes: &Routes) -> Router {
        let now = Instant::now();
        let mut pools = Vec::new();
        let mut index = HashMap::new();
        for protocol in PROTOCOLS {
            index.insert((protocol, None), pools.len());
            pools.push(Pool::new(
                Rule::Protocol(protocol),
                protocol,
                routes.for_protocol(protocol),
                now,
            ));
            for (domain, d) in &routes.domains {
                if let Some(list) = d.for_protocol(protocol) {
                    index.insert((protocol, Some(domain.clone())), pools.len());
                    pools.push(Pool::new(Rule::Domain(domain.clone()), protocol, list, now));
                }
            }
        }
        Router {
            pools,
            index,
            health: RwLock::new(HashMap::new()),
            settings: routes.health,
        }
    }

    /// The health of `addr` for `protocol`.
    pub(crate) fn health_of(&self, protocol: MailProtocol, addr: SocketAddr) -> Health {
        if self.settings.interval.is_zero() {
            return Health::Unchecked;
        }
        let table = self.health.read().unwrap_or_else(|e| e.into_inner());
        table.get(&(protocol, addr)).copied().unwrap_or(Health::Unchecked)
    }

    /// The pool for a login of `protocol` by `user`: its domain's, else the protocol's.
    fn pool_for(&self, protocol: MailProtocol, user: &[u8]) -> &Pool {
        // The pools are laid out protocol by protocol, each protocol's own first: with no
        // domain rules, the protocol's pool is found without a lookup.
        if self.pools.len() == PROTOCOLS.len() {
            return &self.pools[PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0)];
        }
        let domain = user
            .iter()
            .rposition(|&b| b == b'@')
            .and_then(|at| std::str::from_utf8(&user[at + 1..]).ok())
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        let i = domain
            .and_then(|d| self.index.get(&(protocol, Some(d))))
            .or_else(|| self.index.get(&(protocol, None)))
            .copied()
            .unwrap_or(0);
        &self.pools[i]
    }

    /// Chooses the backend for a login of `protocol` by `user`, whose accepting source gave
    /// `source` (empty when it gave nothing).
    pub(crate) fn choose(&self, protocol: MailProtocol, user: &[u8], source: &SourceRoute) -> Routed {
        if let Some(why) = &source.unusable {
            return Routed::Unusable(why.clone());
        }
        let pool = self.pool_for(protocol, user);
        if let Some(host) = source.host {
            // A host without a port gets the port of the protocol's own backends.
            let port = source
                .port
                .unwrap_or_else(|| pool.members.first().map_or(0, |m| m.target.port));
            return Routed::To(Choice {
                addr: SocketAddr::new(host, port),
                rule: Rule::Source,
                health: Health::Unchecked,
                backends: 1,
                up: 1,
            });
        }
        let addrs = pool.addrs();
        let up: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.health_of(protocol, *a) != Health::Down)
            .collect();
        // Decided before any hashing: with nowhere to go, the answer is known.
        let Some(mut addr) = rendezvous(user, &up) else {
            return Routed::AllDown(pool.rule.clone());
        };
        let health = self.health_of(protocol, addr);
        if let Some(port) = source.port {
            addr.set_port(port);
        }
        Routed::To(Choice {
            addr,
            rule: pool.rule.clone(),
            health,
            backends: addrs.len(),
            up: up.len(),
        })
    }

    /// Every `(protocol, address)` to check now.
    pub(crate) fn backends(&self) -> Vec<(MailProtocol, SocketAddr)> {
        let mut all = Vec::new();
        for pool in &self.pools {
            for addr in pool.addrs() {
                if !all.contains(&(pool.protocol, addr)) {
                    all.push((pool.protocol, addr));
                }
            }
        }
        all
    }

    /// Records a check's result; returns the state before when it changed.
    pub(crate) fn set_health(&self, protocol: MailProtocol, addr: SocketAddr, up: bool) -> Option<Health> {
        let new = if up { Health::Up } else { Health::Down };
        let mut table = self.health.write().unwrap_or_else(|e| e.into_inner());
        let old = table.insert((protocol, addr), new).unwrap_or(Health::Unchecked);
        (old != new).then_some(old)
    }

    /// The health settings in force.
    pub(crate) fn settings(&self) -> HealthSettings {
        self.settings
    }

    /// One line per backend (rules, address, health) and per name that keeps stale
    /// addresses, for `/readyz`.
    pub(crate) fn status_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for pool in &self.pools {
            for m in &pool.members {
                for addr in m.addrs.load().iter() {
                    lines.push(format!(
                        "backend {} {} {} {}",
                        pool.rule,
                        m.target.spec,
                        addr,
                        self.health_of(pool.protocol, *addr).as_str()
                    ));
                }
                if let Some(why) = m.stale.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                    lines.push(format!(
                        "backend {} {} stale addresses: {why}",
                        pool.rule, m.target.spec
                    ));
                }
            }
        }
        lines
    }
}

/// The rendezvous (highest random weight) choice of `key` among `addrs`: each address gets
/// a score from a hash of the key and the address, the highest wins. Removing an address
/// moves only the keys it won. The hash is fixed (FNV-1a, then a 64-bit finalizer), so every
/// instance of mailauthd in front of the same stores chooses alike.
pub(crate) fn rendezvous(key: &[u8], addrs: &[SocketAddr]) -> Option<SocketAddr> {
    if let [only] = addrs {
        return Some(*only);
    }
    let k = fnv1a(FNV_OFFSET, key);
    addrs
        .iter()
        .max_by_key(|a| (mix(k ^ addr_hash(a).rotate_left(29)), **a))
        .copied()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(start: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(start, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// FNV-1a of an address's text (`192.0.2.7:143`), written straight into the hash.
fn addr_hash(addr: &SocketAddr) -> u64 {
    struct Fnv(u64);
    impl std::fmt::Write for Fnv {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 = fnv1a(self.0, s.as_bytes());
            Ok(())
        }
    }
    let mut h = Fnv(FNV_OFFSET);
    let _ = std::fmt::Write::write_fmt(&mut h, format_args!("{addr}"));
    h.0
}

/// MurmurHash3's 64-bit finalizer: every input bit moves every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
