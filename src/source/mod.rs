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
        match self {
            Source::Htpasswd(s) => s.check_plain(creds, verifier).await,
            Source::HttpBasic(s) => s.check_plain(creds).await,
            Source::Ldap(s) => s.check_plain(creds, verifier).await,
        }
    }

    /// Checks an APOP or CRAM-MD5 login against this source.
    pub(crate) async fn check_digest(&self, creds: &DigestCredentials<'_>) -> DigestAnswer {
        match self {
            Source::Htpasswd(s) => s.check_digest(creds),
            // An upstream sees only cleartext passwords: it cannot check a digest.
            Source::HttpBasic(_) => DigestAnswer::UnknownUser,
            Source::Ldap(s) => s.check_digest(creds).await,
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
