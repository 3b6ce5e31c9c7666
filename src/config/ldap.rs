//! Validation of `kind = "ldap"` sources: the server URL and TLS, the search (base, filter,
//! service account) or the direct DN, how a password is verified, the pool, the breaker,
//! the status filter and the routing attributes.

use std::time::Duration;

use toml::Spanned;

use super::Checker;
use super::source::RawSource;
use crate::login::MailProtocol;
use crate::secret::Secret;

/// The fields an `ldap` source may have besides `kind` and `protocols`.
pub(super) const FIELDS: &[&str] = &[
    "url",
    "timeout",
    "starttls",
    "base",
    "filter",
    "bind_dn",
    "bind_password",
    "bind_password_file",
    "user_dn",
    "verify",
    "pool_size",
    "host_attribute",
    "port_attribute",
    "destuser_attribute",
    "password_attribute",
    "disabled_filter",
    "ca_file",
    "breaker_failures",
    "breaker_cooldown",
];

/// Default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `pool_size`.
const DEFAULT_POOL_SIZE: usize = 8;
/// Default `breaker_failures`.
const DEFAULT_BREAKER_FAILURES: usize = 5;
/// Default `breaker_cooldown`.
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(10);
/// Default `filter`.
const DEFAULT_FILTER: &str = "(uid=%u)";
/// Default `password_attribute`.
const DEFAULT_PASSWORD_ATTRIBUTE: &str = "userPassword";

/// How an `ldap` source checks a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LdapVerify {
    /// Bind as the entry with the password: the server checks it.
    Bind,
    /// Read the entry's password attribute and verify it here with mailauthd's schemes.
    PasswordAttribute,
}

/// How an `ldap` source finds the entry of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LdapLookup {
    /// Search `base` with `filter` (`%u`, `%n`, `%d` filled in, escaped per RFC 4515), as
    /// the service account when one is set (anonymously otherwise).
    Search {
        /// The search base DN.
        base: String,
        /// The filter template.
        filter: String,
    },
    /// The DN template (`%u`, `%n`, `%d` escaped per RFC 4514): bind to it, no search.
    Dn(String),
}

/// An LDAP directory (`kind = "ldap"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// CA certificates (DER) that TLS servers are checked against (`None`: the system's).
    pub ca_certs: Option<Vec<Vec<u8>>>,
    /// How the entry of a login is found.
    pub lookup: LdapLookup,
    /// The service account that searches (`None`: anonymous searches).
    pub bind_dn: Option<String>,
    /// The service account's password.
    pub bind_password: Secret,
    /// Bind as the entry, or verify its password attribute here.
    pub verify: LdapVerify,
    /// The attribute holding the stored hash, for `verify = "password-attribute"`.
    pub password_attribute: String,
    /// An entry that also matches this filter is disabled (final).
    pub disabled_filter: Option<String>,
    /// The attribute naming the login's backend host (an IP literal).
    pub host_attribute: Option<String>,
    /// The attribute naming the login's backend port.
    pub port_attribute: Option<String>,
    /// The attribute naming the user the backend sees (the reply's `Auth-User`).
    pub destuser_attribute: Option<String>,
    /// The deadline of one login's whole exchange with the server.
    pub timeout: Duration,
    /// Connections kept open; a login waits for one up to `timeout`.
    pub pool_size: usize,
    /// Consecutive failed exchanges that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker answers without asking.
    pub breaker_cooldown: Duration,
    /// The protocols whose logins this source may accept (`None` = all).
    pub protocols: Option<Vec<MailProtocol>>,
}

/// Validates one `ldap` entry; problems go to `c`.
pub(super) fn validate(
    raw: &RawSource,
    protocols: Option<Vec<MailProtocol>>,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker<'_>,
) -> Option<LdapConfig> {
    let span = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
    let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());

    let url = match &raw.url {
        None => {
            c.problem(
                Some(raw.kind.span()),
                &key("url"),
                "an ldap source needs url = \"ldap://host:389\" (or ldaps://)".to_owned(),
            );
            None
        }
        Some(v) => {
            let u = v.get_ref();
            let host_part = u.strip_prefix("ldap://").or_else(|| u.strip_prefix("ldaps://"));
            match host_part {
                Some(rest)
                    if !rest.is_empty() && !rest.contains('@') && rest.trim_end_matches('/').find('/').is_none() =>
                {
                    Some(u.trim_end_matches('/').to_owned())
                }
                _ => {
                    c.problem(
                        Some(v.span()),
                        &key("url"),
                        format!("{u:?} is not ldap://host[:port] or ldaps://host[:port]"),
                    );
                    None
                }
            }
        }
    };
    let starttls = raw.starttls.as_ref().is_some_and(|s| *s.get_ref());
    if starttls && url.as_deref().is_some_and(|u| u.starts_with("ldaps://")) {
        c.problem(
            raw.starttls.as_ref().map(Spanned::span),
            &key("starttls"),
            "StartTLS upgrades an ldap:// connection; an ldaps:// URL is TLS already".to_owned(),
        );
    }

    let plain = url.as_deref().is_some_and(|u| u.starts_with("ldap://")) && !starttls;
    if plain && raw.ca_file.is_some() {
        c.problem(
            raw.ca_file.as_ref().map(Spanned::span),
            &key("ca_file"),
            "has no effect on a plain ldap:// connection; use ldaps:// or starttls = true".to_owned(),
        );
    }
    let ca_certs = raw.ca_file.as_ref().and_then(|v| {
        let path = c.base_dir.join(v.get_ref());
        match read_ca_file(&path) {
            Ok(certs) => Some(certs),
            Err(msg) => {
                c.problem(Some(v.span()), &key("ca_file"), format!("{}: {msg}", path.display()));
                None
            }
        }
    });

    let lookup = match (&raw.user_dn, &raw.base) {
        (Some(dn), None) => {
            if raw.filter.is_some() {
                c.problem(
                    span(&raw.filter),
                    &key("filter"),
                    "user_dn binds directly without a search; remove filter (or user_dn)".to_owned(),
                );
            }
            check_template(dn, &key("user_dn"), c);
            Some(LdapLookup::Dn(dn.get_ref().clone()))
        }
        (None, Some(base)) => {
            let filter = text(&raw.filter).unwrap_or_else(|| DEFAULT_FILTER.to_owned());
            if let Some(f) = &raw.filter {
                check_template(f, &key("filter"), c);
                if !is_balanced_filter(f.get_ref()) {
                    c.problem(
                        Some(f.span()),
                        &key("filter"),
                        "is not one parenthesised LDAP filter, e.g. \"(uid=%u)\"".to_owned(),
                    );
                }
            }
            Some(LdapLookup::Search {
                base: base.get_ref().clone(),
                filter,
            })
        }
        (Some(dn), Some(_)) => {
            c.problem(
                Some(dn.span()),
                &key("user_dn"),
                "set either base (search, then bind) or user_dn (bind directly), not both".to_owned(),
            );
            None
        }
        (None, None) => {
            c.problem(
                Some(raw.kind.span()),
                &key("base"),
                "an ldap source needs base = \"ou=people,dc=example,dc=org\" (or user_dn)".to_owned(),
            );
            None
        }
    };

    let bind_password = match (&raw.bind_password, &raw.bind_password_file) {
        (Some(p), None) => Secret::new(p.get_ref().clone()),
        (None, Some(f)) => {
            let path = c.base_dir.join(f.get_ref());
            match std::fs::read_to_string(&path) {
                // One trailing line break is the editor's, not the password's.
                Ok(text) => Secret::new(
                    text.strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text)
                        .to_owned(),
                ),
                Err(e) => {
                    c.problem(
                        Some(f.span()),
                        &key("bind_password_file"),
                        format!("{}: {e}", path.display()),
                    );
                    Secret::default()
                }
            }
        }
        (Some(_), Some(f)) => {
            c.problem(
                Some(f.span()),
                &key("bind_password_file"),
                "set bind_password or bind_password_file, not both".to_owned(),
            );
            Secret::default()
        }
        (None, None) => Secret::default(),
    };
    let bind_dn = text(&raw.bind_dn);
    if bind_dn.is_none() && (raw.bind_password.is_some() || raw.bind_password_file.is_some()) {
        c.problem(
            span(&raw.bind_password).or(span(&raw.bind_password_file)),
            &key("bind_dn"),
            "a bind password without bind_dn; add bind_dn = \"cn=reader,dc=example,dc=org\"".to_owned(),
        );
    }

    let verify = match raw.verify.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("bind", _)) => LdapVerify::Bind,
        Some(("password-attribute", _)) => LdapVerify::PasswordAttribute,
        Some((other, s)) => {
            c.problem(
                Some(s),
                &key("verify"),
                format!("{other:?} is not \"bind\" or \"password-attribute\""),
            );
            LdapVerify::Bind
        }
    };
    if verify == LdapVerify::PasswordAttribute && matches!(lookup, Some(LdapLookup::Dn(_))) {
        c.problem(
            span(&raw.verify),
            &key("verify"),
            "password-attribute reads the entry with a search; set base and filter instead of user_dn".to_owned(),
        );
    }
    let password_attribute = match &raw.password_attribute {
        Some(a) => attribute(a, &key("password_attribute"), c).unwrap_or_default(),
        None => DEFAULT_PASSWORD_ATTRIBUTE.to_owned(),
    };

    let disabled_filter = raw.disabled_filter.as_ref().map(|f| {
        check_template(f, &key("disabled_filter"), c);
        if !is_balanced_filter(f.get_ref()) {
            c.problem(
                Some(f.span()),
                &key("disabled_filter"),
                "is not one parenthesised LDAP filter, e.g. \"(accountStatus=disabled)\"".to_owned(),
            );
        }
        f.get_ref().clone()
    });
    let host_attribute = raw
        .host_attribute
        .as_ref()
        .and_then(|a| attribute(a, &key("host_attribute"), c));
    let port_attribute = raw
        .port_attribute
        .as_ref()
        .and_then(|a| attribute(a, &key("port_attribute"), c));
    let destuser_attribute = raw
        .destuser_attribute
        .as_ref()
        .and_then(|a| attribute(a, &key("destuser_attribute"), c));
    if port_attribute.is_some() && host_attribute.is_none() {
        c.problem(
            span(&raw.port_attribute),
            &key("port_attribute"),
            "a port without host_attribute names no backend; add host_attribute".to_owned(),
        );
    }

    let timeout = c.duration(&raw.timeout, &key("timeout"), DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        c.problem(
            raw.timeout.as_ref().map(Spanned::span),
            &key("timeout"),
            "must be more than 0 and at most 60s".to_owned(),
        );
    }
    let pool_size = c.count(&raw.pool_size, &key("pool_size"), 1..=1024, DEFAULT_POOL_SIZE);
    let breaker_failures = c.count(
        &raw.breaker_failures,
        &key("breaker_failures"),
        1..=10_000,
        DEFAULT_BREAKER_FAILURES,
    );
    let breaker_cooldown = c.duration(
        &raw.breaker_cooldown,
        &key("breaker_cooldown"),
        DEFAULT_BREAKER_COOLDOWN,
    );
    if breaker_cooldown.is_zero() {
        c.problem(
            raw.breaker_cooldown.as_ref().map(Spanned::span),
            &key("breaker_cooldown"),
            "must be more than 0".to_owned(),
        );
    }

    Some(LdapConfig {
        url: url?,
        starttls,
        ca_certs,
        lookup: lookup?,
        bind_dn,
        bind_password,
        verify,
        password_attribute,
        disabled_filter,
        host_attribute,
        port_attribute,
        destuser_attribute,
        timeout,
        pool_size,
        breaker_failures: u32::try_from(breaker_failures).unwrap_or(u32::MAX),
        breaker_cooldown,
        protocols,
    })
}

/// Reports a `%` that is not `%u`, `%n`, `%d` or `%%`.
fn check_template(value: &Spanned<String>, key: &str, c: &mut Checker<'_>) {
    let mut chars = value.get_ref().chars();
    while let Some(ch) = chars.next() {
        if ch == '%' && !matches!(chars.next(), Some('u' | 'n' | 'd' | '%')) {
            c.problem(
                Some(value.span()),
                key,
                "% must be followed by u (login), n (local part), d (domain) or % (a percent sign)".to_owned(),
            );
            return;
        }
    }
}

/// Whether `filter` is one parenthesised expression with balanced parentheses.
fn is_balanced_filter(filter: &str) -> bool {
    if !filter.starts_with('(') || !filter.ends_with(')') {
        return false;
    }
    let mut depth = 0usize;
    for (i, b) in filter.bytes().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 && i + 1 != filter.len() {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// An attribute description: a letter, then letters, digits, `-` (or an OID), options after `;`.
fn attribute(value: &Spanned<String>, key: &str, c: &mut Checker<'_>) -> Option<String> {
    let v = value.get_ref();
    let ok = v.split(';').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    if ok {
        Some(v.clone())
    } else {
        c.problem(Some(value.span()), key, format!("{v:?} is not an attribute name"));
        None
    }
}

/// Reads the PEM certificates of a CA file.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{Config, ConfigError, ConfigOrigin, SourceConfig};
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            ConfigOrigin::File(PathBuf::from("/etc/mailauthd.toml")),
            Path::new("/etc"),
        )
    }

    fn only_source(text: &str) -> LdapConfig {
        let config = load(text).unwrap_or_else(|e| panic!("{e}"));
        match config.sources.as_slice() {
            [SourceConfig::Ldap(l)] => (**l).clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_issue_example_is_read() {
        let l = only_source(
            "[[source]]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\nbase = \"ou=people,dc=example,dc=org\"\n\
             filter = \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))\"\nbind_dn = \"cn=reader,dc=example,dc=org\"\n\
             bind_password = \"s3cret\"\ntimeout = \"2s\"\npool_size = 8\nhost_attribute = \"host\"\n\
             disabled_filter = \"(accountStatus=disabled)\"\n",
        );
        assert_eq!(l.url, "ldap://127.0.0.1:389");
        assert_eq!(
            l.lookup,
            LdapLookup::Search {
                base: "ou=people,dc=example,dc=org".to_owned(),
                filter: "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))".to_owned(),
            }
        );
        assert_eq!(l.bind_dn.as_deref(), Some("cn=reader,dc=example,dc=org"));
        assert_eq!(l.bind_password.expose(), "s3cret");
        assert_eq!(l.verify, LdapVerify::Bind);
        assert_eq!(l.pool_size, 8);
        assert_eq!(l.host_attribute.as_deref(), Some("host"));
        assert_eq!(l.disabled_filter.as_deref(), Some("(accountStatus=disabled)"));
        assert!(!format!("{l:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = load(
            "[[source]]\nkind = \"ldap\"\nurl = \"http://x/\"\nbase = \"dc=x\"\nfilter = \"uid=%x\"\n\
             bind_password = \"p\"\nverify = \"compare\"\ntimeout = \"0s\"\npool_size = 0\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source[0].url",
                "source[0].filter",
                "source[0].filter",
                "source[0].bind_dn",
                "source[0].verify",
                "source[0].timeout",
                "source[0].pool_size",
            ],
            "{err}"
        );
    }

    #[test]
    fn base_and_user_dn_exclude_each_other() {
        let err = load("[[source]]\nkind = \"ldap\"\nurl = \"ldap://h\"\nbase = \"dc=x\"\nuser_dn = \"uid=%n,dc=x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/mailauthd.toml:5: source[0].user_dn: set either base"),
            "{err}"
        );
        let l = only_source("[[source]]\nkind = \"ldap\"\nurl = \"ldaps://h:636\"\nuser_dn = \"uid=%n,dc=x\"\n");
        assert_eq!(l.lookup, LdapLookup::Dn("uid=%n,dc=x".to_owned()));
    }

    #[test]
    fn a_ca_file_needs_tls_and_certificates() {
        let err =
            load("[[source]]\nkind = \"ldap\"\nurl = \"ldap://h\"\nbase = \"dc=x\"\nca_file = \"/nonexistent.pem\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("/etc/mailauthd.toml:5: source[0].ca_file: has no effect on a plain ldap://"),
            "{err}"
        );
        assert!(err.contains("source[0].ca_file: /nonexistent.pem:"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = load(&format!(
            "[[source]]\nkind = \"ldap\"\nurl = \"ldaps://h\"\nbase = \"dc=x\"\nca_file = \"{}\"\n",
            empty.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn filters_are_checked_for_balance() {
        assert!(is_balanced_filter("(uid=%u)"));
        assert!(is_balanced_filter("(&(a=b)(|(c=d)(e=f)))"));
        assert!(!is_balanced_filter("(a=b)(c=d)"));
        assert!(!is_balanced_filter("(a=b"));
        assert!(!is_balanced_filter("a=b"));
    }
}
