//! Credential sources: where users and their password hashes live. This file is the
//! dispatch only; each backend has its own folder, and [`answer`] holds the vocabulary they
//! share. Nothing outside `source/` matches on a backend: a new backend is one folder and one
//! arm of [`Source`].
//!
//! - [`htpasswd`]: a users file (nginx / Apache htpasswd, Dovecot passwd-file), its reload
//!   and `mailauthd user`'s edits.
//! - [`http_basic`]: a URL protected by HTTP Basic auth.
//! - [`ldap`]: an LDAP directory.

pub(crate) mod answer;
pub(crate) mod htpasswd;
mod http_basic;
mod ldap;

pub(crate) use answer::{
    CheckReport, Credentials, DigestAnswer, DigestCredentials, DigestKind, ExternalAnswer, PlainAnswer, ReloadOutcome,
    SchemeUsed, SourceRoute, SourceStatus,
};

use std::sync::Arc;

use crate::config::SourceConfig;
use crate::login::MailProtocol;
use crate::metrics::Metrics;
use crate::verify::Verifier;
use htpasswd::HtpasswdSource;
use http_basic::HttpBasicSource;
use ldap::LdapSource;

/// One configured credential source.
#[derive(Debug)]
pub(crate) enum Source {
    /// An htpasswd users file.
    Htpasswd(Box<HtpasswdSource>),
    /// A URL protected by HTTP Basic auth.
    HttpBasic(Box<HttpBasicSource>),
    /// An LDAP directory.
    Ldap(Box<LdapSource>),
}

impl Source {
    /// Builds the source for a config entry (not loaded yet: call [`Source::reload`]); an
    /// upstream counts its resends in `metrics`.
    pub(crate) fn new(config: &SourceConfig, metrics: &Arc<Metrics>) -> Source {
        match config {
            SourceConfig::Htpasswd(c) => Source::Htpasswd(Box::new(HtpasswdSource::new(c.clone()))),
            SourceConfig::HttpBasic(c) => {
                Source::HttpBasic(Box::new(HttpBasicSource::new((**c).clone(), metrics.clone())))
            }
            SourceConfig::Ldap(c) => Source::Ldap(Box::new(LdapSource::new((**c).clone()))),
        }
    }

    /// A short name for logs, metrics and `/readyz`, e.g. `htpasswd:/etc/mail/users`.
    pub(crate) fn name(&self) -> String {
        match self {
            Source::Htpasswd(s) => s.name(),
            Source::HttpBasic(s) => s.name().to_owned(),
            Source::Ldap(s) => s.name().to_owned(),
        }
    }

    /// Whether this source may accept logins of `protocol`.
    pub(crate) fn serves(&self, protocol: MailProtocol) -> bool {
        let protocols = match self {
            Source::Htpasswd(s) => s.protocols(),
            Source::HttpBasic(s) => s.protocols(),
            Source::Ldap(s) => s.protocols(),
        };
        protocols.is_none_or(|list| list.contains(&protocol))
    }

    /// The source's state now: whether it can answer, and one word on why.
    pub(crate) fn status(&self) -> SourceStatus {
        match self {
            Source::Htpasswd(s) => s.status(),
            Source::HttpBasic(s) => s.status(),
            Source::Ldap(s) => s.status(),
        }
    }

    /// Re-reads what the source loads if it changed (always, with `force`). An upstream has
    /// nothing to load; it checks in the background, when due, that it refuses a random login.
    pub(crate) fn reload(&self, force: bool) -> ReloadOutcome {
        match self {
            Source::Htpasswd(s) => s.reload(force),
            Source::HttpBasic(s) => {
                s.recheck();
                ReloadOutcome::Unchanged
            }
            // A directory is asked per login: nothing to load.
            Source::Ldap(_) => ReloadOutcome::Unchanged,
        }
    }

    /// Loads the source once for `check-config` and says what it found.
    pub(crate) fn check(&self) -> CheckReport {
        match self {
            Source::Htpasswd(s) => s.reload(true).check_report(&s.name()),
            // An upstream is not contacted here: its answers depend on the credentials.
            Source::HttpBasic(s) => CheckReport {
                lines: vec![format!("{}: not contacted", s.name())],
                errors: 0,
            },
            Source::Ldap(s) => s.check(),
        }
    }

    /// Checks a password login against this source.
    pub(crate) async fn check_plain(&self, creds: &Credentials<'_>, verifier: &Verifier) -> PlainAnswer {
        // The network sources' futures are boxed: they are several KB (an LDAP connection
        // being set up), and every login's future would otherwise be as large as the
        // largest of them, to be allocated and copied for every login.
        match self {
            Source::Htpasswd(s) => s.check_plain(creds, verifier).await,
            Source::HttpBasic(s) => Box::pin(s.check_plain(creds)).await,
            Source::Ldap(s) => Box::pin(s.check_plain(creds, verifier)).await,
        }
    }

    /// Checks an APOP or CRAM-MD5 login against this source.
    pub(crate) async fn check_digest(&self, creds: &DigestCredentials<'_>) -> DigestAnswer {
        match self {
            Source::Htpasswd(s) => s.check_digest(creds),
            // An upstream sees only cleartext passwords: it cannot check a digest.
            Source::HttpBasic(_) => DigestAnswer::UnknownUser,
            // Boxed, as in `check_plain`.
            Source::Ldap(s) => Box::pin(s.check_digest(creds)).await,
        }
    }

    /// Looks up a user whose identity SASL EXTERNAL vouches for, without a password check:
    /// whether it exists, may log in from `client_ip`, and its sendable cleartext.
    pub(crate) fn lookup_for_external(&self, user: &[u8], client_ip: Option<std::net::IpAddr>) -> ExternalAnswer {
        match self {
            Source::Htpasswd(s) => s.lookup_for_external(user, client_ip),
            // An upstream answers only about a user and a password; an LDAP directory is
            // asked with a bind, which needs the password.
            Source::HttpBasic(_) | Source::Ldap(_) => ExternalAnswer::UnknownUser,
        }
    }
}

/// The `ldap_entry` fuzz target: see [`ldap::fuzz_entry`].
#[cfg(fuzzing)]
pub(crate) fn fuzz_ldap_entry(data: &[u8]) {
    ldap::fuzz_entry(data);
}

/// For the fuzz targets: an http-basic upstream's answer (a status and `Name: value` lines)
/// mapped with and without routing headers; panics when the mapping breaks its contract
/// (2xx accepts, 401/403 reject, everything else is a temporary failure; a named backend
/// is a usable address).
#[cfg(fuzzing)]
pub(crate) fn fuzz_http_basic_answer(status: u16, lines: &[u8]) {
    use http_basic::response::{RouteTarget, Upstream, map_response, parse_route};
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

    let Ok(status) = reqwest::StatusCode::from_u16(status) else {
        return;
    };
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        values.push(value);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let route = crate::config::RouteHeaders {
        server: HeaderName::from_static("x-mail-server"),
        port: HeaderName::from_static("x-mail-port"),
    };
    let check_target = |target: &RouteTarget| match target {
        RouteTarget::Addr(addr) => assert_ne!(addr.port(), 0, "port 0 routed"),
        RouteTarget::Host(name, port) => {
            assert_ne!(*port, 0, "port 0 routed");
            assert!(!name.is_empty() && name.len() <= 253, "host name {name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
                "host name {name:?}"
            );
        }
    };
    let plain = map_response(status, &headers, None);
    let routed = map_response(status, &headers, Some(&route));
    match status.as_u16() {
        200..=299 => {
            assert_eq!(plain, Upstream::Accepted(None));
            match &routed {
                Upstream::Accepted(Some(target)) => check_target(target),
                Upstream::Accepted(None) | Upstream::BadRoute(_) => {}
                other => panic!("2xx mapped to {other:?}"),
            }
        }
        401 | 403 => assert_eq!((&plain, &routed), (&Upstream::Rejected, &Upstream::Rejected)),
        _ => {
            assert!(matches!(plain, Upstream::Failed(_)), "{status} mapped to {plain:?}");
            assert_eq!(plain, routed);
        }
    }
    if let [server, port, ..] = values[..] {
        if let Ok(target) = parse_route(server, port) {
            check_target(&target);
        }
    }
}
