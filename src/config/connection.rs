//! What nginx tells about the connection, and the rules built on it: `[nginx]` (the shared
//! secret), `[tls]` (TLS for cleartext logins), `[external]` (SASL EXTERNAL), `[client]`
//! (the real client behind a load balancer) and `[listener.NAME]` (per-listener overrides).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::login::{AuthMethod, MailProtocol};
use crate::secret::Secret;

/// The shortest shared secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// The header an nginx `server {}` names its listener in (`auth_http_header X-Mail-Listener
/// submission;`).
pub(crate) const LISTENER_HEADER: &str = "X-Mail-Listener";

/// The shared secret nginx sends with every request (`[nginx]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NginxSecret {
    /// The header that carries it, e.g. `X-Auth-Key`.
    pub header: String,
    /// Its value.
    pub value: Secret,
}

/// A TLS protocol version as nginx names it in `Auth-SSL-Protocol`, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    /// `SSLv3`.
    Ssl3,
    /// `TLSv1`.
    Tls1,
    /// `TLSv1.1`.
    Tls11,
    /// `TLSv1.2`.
    Tls12,
    /// `TLSv1.3`.
    Tls13,
}

impl TlsVersion {
    /// Parses OpenSSL's name (`SSL_get_version`), as nginx passes it.
    pub(crate) fn parse(value: &str) -> Option<TlsVersion> {
        match value {
            "SSLv3" => Some(TlsVersion::Ssl3),
            "TLSv1" => Some(TlsVersion::Tls1),
            "TLSv1.1" => Some(TlsVersion::Tls11),
            "TLSv1.2" => Some(TlsVersion::Tls12),
            "TLSv1.3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// TLS for cleartext password logins (`[tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// Protocols whose `plain` logins need `Auth-SSL: on`.
    pub required_for: Vec<MailProtocol>,
    /// Clients that may log in in cleartext anyway.
    pub exempt_networks: Vec<IpNet>,
    /// The oldest TLS version a `plain` login of a listed protocol may use.
    pub min_protocol: Option<TlsVersion>,
}

/// Which part of a verified client certificate names the user (`external.certificate_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertificateUser {
    /// The subject's common name (`CN=`).
    SubjectCn,
    /// The subject's `emailAddress=`.
    SubjectEmail,
    /// The certificate's SHA-1 fingerprint, matched against the user's `cert_fingerprint=`.
    Fingerprint,
}

/// SASL EXTERNAL (`[external]`); without the section it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalSettings {
    /// What in the certificate names the user.
    pub certificate_user: CertificateUser,
    /// Networks whose EXTERNAL needs no certificate.
    pub trusted_networks: Vec<IpNet>,
}

/// Per-listener overrides (`[listener.NAME]`), for requests whose `X-Mail-Listener` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListenerSettings {
    /// Replaces `tls.required_for`.
    pub tls_required_for: Option<Vec<MailProtocol>>,
    /// The only methods accepted.
    pub methods: Option<Vec<AuthMethod>>,
    /// The sources asked, as 0-based positions in `[[source]]` (written 1-based).
    pub sources: Option<Vec<usize>>,
}

/// `[nginx]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNginx {
    secret_header: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(default)]
    required_for: Vec<Spanned<String>>,
    #[serde(default)]
    exempt_networks: Vec<Spanned<String>>,
    min_protocol: Option<Spanned<String>>,
}

/// `[external]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExternal {
    certificate_user: Option<Spanned<String>>,
    #[serde(default)]
    trusted_networks: Vec<Spanned<String>>,
}

/// `[client]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    #[serde(default)]
    real_ip_from: Vec<Spanned<String>>,
}

/// `[listener.NAME]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    tls_required_for: Option<Vec<Spanned<String>>>,
    methods: Option<Vec<Spanned<String>>>,
    sources: Option<Vec<Spanned<i64>>>,
}

/// Validates `[nginx]`: both keys or neither; a header name of token characters; a secret
/// of at least 16 characters (never repeated in a message).
pub(super) fn validate_nginx(raw: &RawNginx, c: &mut Checker<'_>) -> Option<NginxSecret> {
    match (&raw.secret_header, &raw.secret) {
        (None, None) => None,
        (Some(h), None) => {
            c.problem(
                Some(h.span()),
                "nginx.secret",
                "missing: secret_header needs a secret".to_owned(),
            );
            None
        }
        (None, Some(s)) => {
            c.problem(
                Some(s.span()),
                "nginx.secret_header",
                "missing: name the header nginx sends the secret in, e.g. \"X-Auth-Key\"".to_owned(),
            );
            None
        }
        (Some(h), Some(s)) => {
            let header = h.get_ref();
            let token = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            // A header nginx writes itself could be mistaken for, or shadowed by, its own.
            let lower = header.to_ascii_lowercase();
            let ours = lower == "host"
                || ["auth-", "client-", "proxy-protocol-"]
                    .iter()
                    .any(|p| lower.starts_with(p));
            if !token || ours {
                let why = if ours {
                    "is a header nginx itself sends"
                } else {
                    "is not a header name (letters, digits, - and _)"
                };
                c.problem(Some(h.span()), "nginx.secret_header", format!("{header:?} {why}"));
                return None;
            }
            let value = s.get_ref();
            // nginx trims a header value's edge spaces, and the secret goes between quotes in
            // an `auth_http_header` line.
            let unfit = value.bytes().any(|b| b.is_ascii_control() || b == b'"' || b == b'\\') || value.trim() != value;
            if value.len() < MIN_SECRET_LEN || unfit {
                c.problem(
                    Some(s.span()),
                    "nginx.secret",
                    format!(
                        "use at least {MIN_SECRET_LEN} characters, without control characters, quotes, \
                         backslashes or spaces at either end"
                    ),
                );
                return None;
            }
            Some(NginxSecret {
                header: header.clone(),
                value: Secret::new(value.clone()),
            })
        }
    }
}

/// Validates `[tls]`.
pub(super) fn validate_tls(raw: &RawTls, c: &mut Checker<'_>) -> TlsSettings {
    let min_protocol = raw.min_protocol.as_ref().and_then(|v| {
        let parsed = TlsVersion::parse(v.get_ref());
        if parsed.is_none() {
            c.problem(
                Some(v.span()),
                "tls.min_protocol",
                format!(
                    "{:?} is not one of \"TLSv1\", \"TLSv1.1\", \"TLSv1.2\", \"TLSv1.3\"",
                    v.get_ref()
                ),
            );
        }
        parsed
    });
    TlsSettings {
        required_for: protocols(&raw.required_for, "tls.required_for", c),
        exempt_networks: networks(&raw.exempt_networks, "tls.exempt_networks", c),
        min_protocol,
    }
}

/// Validates `[external]`, present or not.
pub(super) fn validate_external(raw: Option<&RawExternal>, c: &mut Checker<'_>) -> Option<ExternalSettings> {
    let raw = raw?;
    let certificate_user = match raw.certificate_user.as_ref() {
        None => CertificateUser::SubjectCn,
        Some(v) => match v.get_ref().as_str() {
            "subject-cn" => CertificateUser::SubjectCn,
            "subject-email" => CertificateUser::SubjectEmail,
            "fingerprint" => CertificateUser::Fingerprint,
            other => {
                c.problem(
                    Some(v.span()),
                    "external.certificate_user",
                    format!("{other:?} is not one of \"subject-cn\", \"subject-email\", \"fingerprint\""),
                );
                CertificateUser::SubjectCn
            }
        },
    };
    Some(ExternalSettings {
        certificate_user,
        trusted_networks: networks(&raw.trusted_networks, "external.trusted_networks", c),
    })
}

/// Validates `[client]`: the load balancers' addresses.
pub(super) fn validate_client(raw: &RawClient, c: &mut Checker<'_>) -> Vec<IpNet> {
    networks(&raw.real_ip_from, "client.real_ip_from", c)
}

/// Validates every `[listener.NAME]`; `sources` counts the `[[source]]` entries.
pub(super) fn validate_listeners(
    raw: &BTreeMap<String, RawListener>,
    sources: usize,
    c: &mut Checker<'_>,
) -> BTreeMap<String, ListenerSettings> {
    let mut out = BTreeMap::new();
    for (name, l) in raw {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            c.problem(None, &format!("listener.{name}"), "is not a listener name".to_owned());
            continue;
        }
        let key = |k: &str| format!("listener.{name}.{k}");
        let tls_required_for = l
            .tls_required_for
            .as_ref()
            .map(|v| protocols(v, &key("tls_required_for"), c));
        let methods = l.methods.as_ref().map(|v| {
            let mut methods = Vec::new();
            for m in v {
                match AuthMethod::parse(m.get_ref()) {
                    Some(method) => methods.push(method),
                    None => c.problem(
                        Some(m.span()),
                        &key("methods"),
                        format!(
                            "{:?} is not one of \"plain\", \"apop\", \"cram-md5\", \"external\", \"none\"",
                            m.get_ref()
                        ),
                    ),
                }
            }
            methods
        });
        let positions = l.sources.as_ref().map(|v| {
            let mut positions = Vec::new();
            for s in v {
                let n = *s.get_ref();
                match usize::try_from(n) {
                    Ok(p) if (1..=sources).contains(&p) => positions.push(p - 1),
                    _ => c.problem(
                        Some(s.span()),
                        &key("sources"),
                        format!("{n} is not a [[source]] position; there are {sources} (counted from 1)"),
                    ),
                }
            }
            positions
        });
        out.insert(
            name.clone(),
            ListenerSettings {
                tls_required_for,
                methods,
                sources: positions,
            },
        );
    }
    out
}

/// A list of mail protocol names.
fn protocols(raw: &[Spanned<String>], key: &str, c: &mut Checker<'_>) -> Vec<MailProtocol> {
    let mut out = Vec::new();
    for p in raw {
        match MailProtocol::parse(p.get_ref()) {
            Some(protocol) if !out.contains(&protocol) => out.push(protocol),
            Some(_) => {}
            None => c.problem(
                Some(p.span()),
                key,
                format!("{:?} is not one of \"imap\", \"pop3\", \"smtp\"", p.get_ref()),
            ),
        }
    }
    out
}

/// A list of addresses or CIDR networks.
fn networks(raw: &[Spanned<String>], key: &str, c: &mut Checker<'_>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for net in raw {
        let text = net.get_ref().trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => out.push(n.trunc()),
            Err(_) => c.problem(
                Some(net.span()),
                key,
                format!("{:?} is not an address or CIDR network", net.get_ref()),
            ),
        }
    }
    out
}

/// Whether `ip` is in one of `nets`; an IPv4-mapped address matches as its IPv4 address.
pub(crate) fn in_networks(nets: &[IpNet], ip: Option<std::net::IpAddr>) -> bool {
    ip.is_some_and(|ip| {
        let ip = ip.to_canonical();
        nets.iter().any(|n| n.contains(&ip))
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::config::{CertificateUser, Config, ConfigError, ConfigOrigin, TlsVersion};
    use crate::login::{AuthMethod, MailProtocol};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            ConfigOrigin::File(PathBuf::from("/etc/m.toml")),
            Path::new("/etc"),
        )
    }

    #[test]
    fn the_issue_contract_validates() {
        let c = load(
            "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"16+ characters!!\"\n\
             [tls]\nrequired_for = [\"imap\", \"pop3\", \"smtp\"]\nexempt_networks = [\"127.0.0.0/8\"]\n\
             min_protocol = \"TLSv1.2\"\n\
             [external]\ncertificate_user = \"subject-cn\"\ntrusted_networks = []\n\
             [smtp]\nreverse_dns = \"off\"\nrelay_refusal_wait = \"0s\"\n\
             [client]\nreal_ip_from = []\n\
             [[source]]\nkind = \"htpasswd\"\npath = \"u\"\n\
             [listener.submission]\ntls_required_for = [\"smtp\"]\nmethods = [\"plain\", \"external\"]\nsources = [1]\n",
        )
        .unwrap();
        let secret = c.nginx_secret.as_ref().unwrap();
        assert_eq!(secret.header, "X-Auth-Key");
        assert_eq!(format!("{c:?}").matches("16+ characters").count(), 0, "never in Debug");
        assert_eq!(c.tls.required_for.len(), 3);
        assert_eq!(c.tls.min_protocol, Some(TlsVersion::Tls12));
        assert_eq!(
            c.external.as_ref().unwrap().certificate_user,
            CertificateUser::SubjectCn
        );
        let l = &c.listeners["submission"];
        assert_eq!(l.tls_required_for.as_deref(), Some(&[MailProtocol::Smtp][..]));
        assert_eq!(
            l.methods.as_deref(),
            Some(&[AuthMethod::Plain, AuthMethod::External][..])
        );
        assert_eq!(l.sources.as_deref(), Some(&[0][..]));
        // Without the sections: no secret, no TLS rule, EXTERNAL refused.
        let c = Config::builtin();
        assert!(c.nginx_secret.is_none() && c.tls.required_for.is_empty() && c.external.is_none());
        assert!(!c.smtp.require_reverse_dns && c.smtp.relay_refusal_wait_secs == 0);
    }

    #[test]
    fn each_bad_value_names_its_key_and_line() {
        let err = load(
            "[nginx]\nsecret_header = \"Auth-User\"\nsecret = \"short\"\n\
             [tls]\nrequired_for = [\"imaps\"]\nexempt_networks = [\"10.0.0.0/33\"]\nmin_protocol = \"TLSv1.4\"\n\
             [external]\ncertificate_user = \"subject\"\n\
             [smtp]\nreverse_dns = \"yes\"\nrelay_refusal_wait = \"1.5s\"\n\
             [client]\nreal_ip_from = [\"lb\"]\n\
             [listener.x]\nmethods = [\"login\"]\nsources = [1]\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "/etc/m.toml:2: nginx.secret_header: \"Auth-User\" is a header nginx itself sends",
            "/etc/m.toml:5: tls.required_for:",
            "/etc/m.toml:6: tls.exempt_networks:",
            "/etc/m.toml:7: tls.min_protocol:",
            "/etc/m.toml:9: external.certificate_user:",
            "/etc/m.toml:11: smtp.reverse_dns:",
            "/etc/m.toml:12: smtp.relay_refusal_wait: nginx takes whole seconds",
            "/etc/m.toml:14: client.real_ip_from:",
            "/etc/m.toml:16: listener.x.methods:",
            "/etc/m.toml:17: listener.x.sources: 1 is not a [[source]] position; there are 0",
        ] {
            assert!(err.contains(expected), "{expected}\nin\n{err}");
        }
        // The secret is too short (checked once the header is right), never quoted.
        let err = load("[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nginx.secret: use at least 16") && !err.contains("\"short\""),
            "{err}"
        );
        let err = load("[nginx]\nsecret = \"0123456789abcdef\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nginx.secret_header: missing"), "{err}");
        let err = load("[tls]\nrequire_for = []\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `require_for`"), "{err}");
    }
}
