//! The `[[source]]` entries: the credential sources, tried in order. One flat raw entry for
//! every kind, checked against the fields its `kind` allows; `kind = "htpasswd"` is
//! validated here, `kind = "http-basic"` in `http_basic.rs`, `kind = "ldap"` in `ldap.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, ConfigOrigin, DEFAULT_USERS_FILE, http_basic, ldap};
use crate::login::MailProtocol;

/// One credential source (`[[source]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceConfig {
    /// An htpasswd / passwd-file users file.
    Htpasswd(HtpasswdConfig),
    /// A URL protected by HTTP Basic auth that checks the credentials.
    HttpBasic(Box<HttpBasicConfig>),
    /// An LDAP directory.
    Ldap(Box<ldap::LdapConfig>),
}

/// The HTTP method an `http-basic` source asks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BasicMethod {
    /// `GET` (the default).
    Get,
    /// `HEAD`: no response body to read.
    Head,
}

/// An HTTP Basic-auth upstream (`kind = "http-basic"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpBasicConfig {
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
pub(crate) struct RouteHeaders {
    /// The backend address (an IP literal or a host name, resolved per login).
    pub server: reqwest::header::HeaderName,
    /// The backend port.
    pub port: reqwest::header::HeaderName,
}

/// An htpasswd users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HtpasswdConfig {
    /// The file (relative paths resolved against the config's folder).
    pub path: PathBuf,
    /// The protocols whose logins this source may accept (`None` = all).
    pub protocols: Option<Vec<MailProtocol>>,
}

/// One `[[source]]` entry as written.
// One flat struct for every source kind: an internally tagged enum would lose the spans
// that give each problem its line number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) kind: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) protocols: Option<Spanned<Vec<String>>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) forward_client_ip: Option<Spanned<String>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    pub(super) headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub(super) server_header: Option<Spanned<String>>,
    pub(super) port_header: Option<Spanned<String>>,
    pub(super) breaker_failures: Option<Spanned<i64>>,
    pub(super) breaker_cooldown: Option<Spanned<String>>,
    pub(super) starttls: Option<Spanned<bool>>,
    pub(super) base: Option<Spanned<String>>,
    pub(super) filter: Option<Spanned<String>>,
    pub(super) bind_dn: Option<Spanned<String>>,
    pub(super) bind_password: Option<Spanned<String>>,
    pub(super) bind_password_file: Option<Spanned<String>>,
    pub(super) user_dn: Option<Spanned<String>>,
    pub(super) verify: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<i64>>,
    pub(super) host_attribute: Option<Spanned<String>>,
    pub(super) port_attribute: Option<Spanned<String>>,
    pub(super) destuser_attribute: Option<Spanned<String>>,
    pub(super) password_attribute: Option<Spanned<String>>,
    pub(super) disabled_filter: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
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
            ("starttls", span(&self.starttls)),
            ("base", span(&self.base)),
            ("filter", span(&self.filter)),
            ("bind_dn", span(&self.bind_dn)),
            ("bind_password", span(&self.bind_password)),
            ("bind_password_file", span(&self.bind_password_file)),
            ("user_dn", span(&self.user_dn)),
            ("verify", span(&self.verify)),
            ("pool_size", span(&self.pool_size)),
            ("host_attribute", span(&self.host_attribute)),
            ("port_attribute", span(&self.port_attribute)),
            ("password_attribute", span(&self.password_attribute)),
            ("disabled_filter", span(&self.disabled_filter)),
            ("ca_file", span(&self.ca_file)),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|s| (name, s)))
        .collect()
    }
}

/// Validates every `[[source]]` entry. With none, the built-in config reads
/// [`DEFAULT_USERS_FILE`] and a config file is an error.
pub(super) fn validate_sources(
    raw: &[Spanned<RawSource>],
    origin: &ConfigOrigin,
    c: &mut Checker<'_>,
) -> Vec<SourceConfig> {
    let mut sources = Vec::new();
    if raw.is_empty() {
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
    for (index, source) in raw.iter().enumerate() {
        if let Some(s) = validate_source(source, index, c) {
            sources.push(s);
        }
    }
    sources
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
        "ldap" => ldap::FIELDS,
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
        "ldap" => ldap::validate(raw, protocols, &key, c).map(|l| SourceConfig::Ldap(Box::new(l))),
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
                format!("unknown source kind {other:?}; known: \"htpasswd\", \"http-basic\", \"ldap\""),
            );
            None
        }
    }
}
