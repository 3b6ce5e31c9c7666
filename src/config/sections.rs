//! The small sections: `[auth]` (answers to failed logins), `[smtp]` (SMTP without AUTH),
//! `[admin]` (the admin listener) and `[cache]` (the verified-login cache).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;

/// Answers to failed logins (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthSettings {
    /// `Auth-Wait` seconds after a failed `plain` login (0 = never).
    pub wait_secs: u32,
    /// From this `Auth-Login-Attempt` on, no `Auth-Wait`: nginx closes the connection.
    pub max_attempts: u32,
}

/// SMTP without AUTH (`[smtp]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SmtpSettings {
    /// Domains an inbound MX accepts mail for (lower case).
    pub local_domains: BTreeSet<String>,
    /// `reverse_dns = "require"`: refuse clients without a forward-confirmed PTR name.
    pub require_reverse_dns: bool,
    /// `Auth-Wait` seconds after a refused `RCPT` (0: nginx closes the session).
    pub relay_refusal_wait_secs: u32,
}

/// The admin listener (`[admin]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AdminSettings {
    /// Where health, metrics and operator endpoints listen (`None`: off).
    pub listen: Option<SocketAddr>,
    /// Bearer token for endpoints that change state (`None`: those endpoints are off).
    pub token: Option<crate::secret::Secret>,
}

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    wait: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
}

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    ttl: Option<Spanned<String>>,
    negative_ttl: Option<Spanned<String>>,
    max_entries: Option<Spanned<i64>>,
}

/// `[smtp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    #[serde(default)]
    local_domains: Vec<Spanned<String>>,
    reverse_dns: Option<Spanned<String>>,
    relay_refusal_wait: Option<Spanned<String>>,
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
}

/// Validates `[auth]`.
pub(super) fn validate_auth(raw: &RawAuth, c: &mut Checker<'_>) -> AuthSettings {
    let wait = c.duration(&raw.wait, "auth.wait", Duration::from_secs(3));
    if wait.subsec_nanos() != 0 {
        c.problem(
            raw.wait.as_ref().map(Spanned::span),
            "auth.wait",
            "nginx takes whole seconds".to_owned(),
        );
    }
    AuthSettings {
        wait_secs: u32::try_from(wait.as_secs()).unwrap_or(u32::MAX),
        max_attempts: c.count(&raw.max_attempts, "auth.max_attempts", 1..=1000, 10) as u32,
    }
}

/// Validates `[smtp]`: the local domains, lower-cased without a trailing dot.
pub(super) fn validate_smtp(raw: &RawSmtp, c: &mut Checker<'_>) -> SmtpSettings {
    let mut local_domains = BTreeSet::new();
    for domain in &raw.local_domains {
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
    let require_reverse_dns = match raw.reverse_dns.as_ref() {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "off" => false,
            "require" => true,
            other => {
                let msg = format!("{other:?} is not \"off\" or \"require\"");
                c.problem(Some(v.span()), "smtp.reverse_dns", msg);
                false
            }
        },
    };
    let wait = c.duration(&raw.relay_refusal_wait, "smtp.relay_refusal_wait", Duration::ZERO);
    if wait.subsec_nanos() != 0 {
        let span = raw.relay_refusal_wait.as_ref().map(Spanned::span);
        c.problem(span, "smtp.relay_refusal_wait", "nginx takes whole seconds".to_owned());
    }
    SmtpSettings {
        local_domains,
        require_reverse_dns,
        relay_refusal_wait_secs: u32::try_from(wait.as_secs()).unwrap_or(u32::MAX),
    }
}

/// Validates `[cache]`.
pub(super) fn validate_cache(raw: &RawCache, c: &mut Checker<'_>) -> CacheSettings {
    let default = CacheSettings::default();
    CacheSettings {
        ttl: c.duration(&raw.ttl, "cache.ttl", default.ttl),
        negative_ttl: c.duration(&raw.negative_ttl, "cache.negative_ttl", default.negative_ttl),
        max_entries: c.count(&raw.max_entries, "cache.max_entries", 0..=100_000_000, 100_000) as u64,
    }
}

/// Validates `[admin]`.
pub(super) fn validate_admin(raw: &RawAdmin, c: &mut Checker<'_>) -> AdminSettings {
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
    AdminSettings {
        listen,
        token: token.map(crate::secret::Secret::new),
    }
}

/// Verified-login cache settings (`[cache]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// How long a verified password is remembered (0 = no cache at all).
    pub ttl: Duration,
    /// How long a wrong password is remembered (0 = no negative cache).
    pub negative_ttl: Duration,
    /// Entries kept at most; the least useful are evicted first.
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100_000,
        }
    }
}
