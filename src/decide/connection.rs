//! The rules on what nginx tells about the connection: the shared secret, TLS for
//! cleartext logins, SASL EXTERNAL, the real client behind a load balancer, an inbound MX's
//! reverse DNS and the per-listener overrides.

use std::collections::HashSet;
use std::sync::Mutex;

use subtle::ConstantTimeEq;

use super::{Authenticator, Decision, refuse};
use crate::auth_http::{AuthRequest, RefuseKind, TlsInfo};
use crate::config::{
    CertificateUser, Config, ExternalSettings, LISTENER_HEADER, ListenerSettings, TlsVersion, in_networks,
};
use crate::login::{AuthMethod, ClientAddr};
use crate::reason::Reason;
use crate::source::ExternalAnswer;

/// How many addresses a wrong-secret warning is remembered for; past that, new addresses
/// are counted in the metric but no longer logged, so a flood cannot fill the log.
const MAX_LOGGED_SECRET_ADDRESSES: usize = 1024;

/// The addresses whose missing or wrong secret has been logged already.
#[derive(Debug, Default)]
pub(crate) struct LoggedOnce(Mutex<HashSet<String>>);

impl LoggedOnce {
    /// Whether `key` is new (and now remembered), while there is room.
    fn first(&self, key: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.len() < MAX_LOGGED_SECRET_ADDRESSES && seen.insert(key.to_owned())
    }
}

/// With `[client] real_ip_from`: when `Client-IP` is one of the load balancers and nginx
/// passed a `Proxy-Protocol-Addr`, that address is the client for every rule, counter and
/// log line. Done once, where the request is read.
pub(crate) fn use_real_client(config: &Config, req: &mut AuthRequest) {
    if !in_networks(&config.real_ip_from, req.client_ip()) {
        return;
    }
    let real = req
        .proxy
        .as_ref()
        .and_then(|p| p.addr.as_deref())
        .and_then(|a| a.parse::<std::net::IpAddr>().ok());
    if let Some(ip) = real {
        req.client = Some(ClientAddr::from_ip(ip));
    }
}

impl Authenticator {
    /// The `[nginx]` shared secret: a request without it, or with another value, is not
    /// from nginx and gets a temporary failure before the policy or a source sees it. The
    /// comparison takes the same time wherever the values differ.
    pub(super) fn secret_refusal(&self, req: &AuthRequest) -> Option<Decision> {
        let secret = self.config.nginx_secret.as_ref()?;
        let sent = req.extra_header(&secret.header);
        let right = sent.is_some_and(|v| bool::from(v.ct_eq(secret.value.expose().as_bytes())));
        if right {
            return None;
        }
        self.metrics.bad_secret();
        Some(Decision::temporary(Reason::BadSecret))
    }

    /// Logs a request refused for its shared secret, once per connecting address (`peer`,
    /// the TCP peer: a sender that is not nginx chooses its `Client-IP`).
    pub(crate) fn report_bad_secret(&self, peer: &str, req: &AuthRequest) {
        let Some(secret) = self.config.nginx_secret.as_ref() else {
            return;
        };
        if !self.secret_logged.first(peer) {
            return;
        }
        let why = if req.extra_header(&secret.header).is_some() {
            "a wrong value"
        } else {
            "no value (or a repeated header)"
        };
        let client = req.client.map(|c| c.to_string()).unwrap_or_default();
        tracing::warn!(
            target: "mailauthd::auth",
            peer,
            client_ip = client.as_str(),
            header = secret.header.as_str(),
            "request refused: the shared secret header has {why}; it is not from the configured nginx (logged once per connecting address)"
        );
    }

    /// The `[listener.NAME]` the request names in `X-Mail-Listener`, if one is configured.
    pub(super) fn listener(&self, req: &AuthRequest) -> Option<&ListenerSettings> {
        let name = req.extra_header(LISTENER_HEADER)?;
        let name = std::str::from_utf8(name).ok()?;
        self.config.listeners.get(name)
    }

    /// A method the request's listener does not allow: refused as an invalid login, before
    /// the policy (the client did not guess anything).
    pub(super) fn method_refusal(&self, req: &AuthRequest, listener: Option<&ListenerSettings>) -> Option<Decision> {
        let methods = listener?.methods.as_ref()?;
        (!methods.contains(&req.method))
            .then(|| refuse(RefuseKind::InvalidCredentials, Reason::MethodNotAllowedOnListener))
    }

    /// A cleartext password for a protocol that needs TLS, over a connection without it (or
    /// with an older TLS than `min_protocol`), from outside the exempt networks: refused
    /// before any hashing, without counting as a failure. APOP and CRAM-MD5 never send the
    /// password and are not affected.
    pub(super) fn tls_refusal(&self, req: &AuthRequest, listener: Option<&ListenerSettings>) -> Option<Decision> {
        let tls = &self.config.tls;
        let required_for = listener
            .and_then(|l| l.tls_required_for.as_ref())
            .unwrap_or(&tls.required_for);
        if req.method != AuthMethod::Plain
            || !required_for.contains(&req.protocol)
            || in_networks(&tls.exempt_networks, req.client_ip())
        {
            return None;
        }
        if !req.is_tls() {
            return Some(refuse(RefuseKind::PrivacyRequired, Reason::TlsRequired));
        }
        let min = tls.min_protocol?;
        // A version nginx did not name (before 1.21.2) or that is unknown is not known to
        // be new enough.
        let used = req
            .tls
            .as_ref()
            .and_then(|t| t.protocol.as_deref())
            .and_then(TlsVersion::parse);
        (used.is_none_or(|v| v < min)).then(|| refuse(RefuseKind::PrivacyRequired, Reason::TlsTooOld))
    }

    /// SASL EXTERNAL: the identity comes from a client certificate nginx verified, or from a
    /// trusted network. The user must exist in a source and not be disabled; nginx then needs
    /// the stored cleartext to log in to an IMAP or POP3 backend.
    pub(super) fn decide_external(&self, req: &AuthRequest, sources: &[usize]) -> Decision {
        let Some(external) = &self.config.external else {
            return refuse(RefuseKind::InvalidCredentials, Reason::ExternalNotSupported);
        };
        let trusted = in_networks(&external.trusted_networks, req.client_ip());
        let certificate = if trusted {
            None
        } else {
            match verified_certificate(req) {
                Ok(tls) => Some(tls),
                Err(reason) => return refuse(RefuseKind::InvalidCredentials, reason),
            }
        };
        let Some(user) = external_user(req, certificate, external) else {
            return refuse(RefuseKind::InvalidCredentials, Reason::CertificateMismatch);
        };
        let mut temporary = None;
        for source in sources.iter().filter_map(|&i| self.sources.get(i)) {
            match source.lookup_for_external(&user, req.client_ip()) {
                ExternalAnswer::Found {
                    cleartext,
                    cert_fingerprint,
                    route,
                } => {
                    if let Some(tls) = certificate
                        && external.certificate_user == CertificateUser::Fingerprint
                        && !fingerprint_matches(tls, cert_fingerprint.as_deref())
                    {
                        return Decision {
                            source: Some(source.name()),
                            ..refuse(RefuseKind::InvalidCredentials, Reason::CertificateMismatch)
                        };
                    }
                    // The client proved who it is; nginx still needs a password for an
                    // IMAP or POP3 backend: the stored cleartext, else the `[backend]`
                    // master user, else a temporary failure (the server's shortcoming).
                    return self.accept(req, &route, cleartext, None, Some(source.name()));
                }
                ExternalAnswer::Disabled { reason } => {
                    return Decision {
                        source: Some(source.name()),
                        ..refuse(RefuseKind::InvalidCredentials, reason)
                    };
                }
                ExternalAnswer::UnknownUser => {}
                ExternalAnswer::Unavailable { reason } => temporary = temporary.or(Some(reason)),
            }
        }
        match temporary {
            Some(reason) => Decision::temporary(reason),
            None => refuse(RefuseKind::InvalidCredentials, Reason::UnknownUser),
        }
    }

    /// An inbound MX with `reverse_dns = "require"`: nginx's `Client-Host` must be a
    /// forward-confirmed PTR name, not `[UNAVAILABLE]` nor `[TEMPUNAVAIL]`.
    pub(super) fn reverse_dns_refusal(&self, req: &AuthRequest) -> Option<Decision> {
        if !self.config.smtp.require_reverse_dns {
            return None;
        }
        match req.client_host.as_deref() {
            Some(b"[TEMPUNAVAIL]") => Some(refuse(RefuseKind::ReverseDnsTempfail, Reason::ReverseDnsTempfail)),
            // nginx always sends Client-Host for SMTP; without one there is no name either.
            Some(b"[UNAVAILABLE]") | None => Some(refuse(RefuseKind::NoReverseDns, Reason::NoReverseDns)),
            Some(_) => None,
        }
    }
}

/// The TLS facts of a request whose client certificate nginx verified, or why not.
fn verified_certificate(req: &AuthRequest) -> Result<&TlsInfo, Reason> {
    let tls = req
        .tls
        .as_ref()
        .filter(|t| t.on)
        .ok_or(Reason::CertificateNotVerified)?;
    match tls.verify.as_deref() {
        Some("SUCCESS") => Ok(tls),
        _ => Err(Reason::CertificateNotVerified),
    }
}

/// The login name EXTERNAL stands for: the authorization identity the client sent, which a
/// certificate must name (`subject-cn`, `subject-email`); when the client sent none, the
/// name the certificate gives. `None` when they disagree or there is no name at all.
fn external_user(req: &AuthRequest, certificate: Option<&TlsInfo>, external: &ExternalSettings) -> Option<Vec<u8>> {
    let asked = (!req.user.is_empty()).then(|| req.user.clone());
    let Some(tls) = certificate else {
        // A trusted network: the client names itself.
        return asked;
    };
    let named = match external.certificate_user {
        CertificateUser::SubjectCn => dn_value(tls.subject.as_deref()?, "CN"),
        CertificateUser::SubjectEmail => dn_value(tls.subject.as_deref()?, "emailAddress"),
        // The fingerprint is matched against the user's own field, once the user is found.
        CertificateUser::Fingerprint => return asked,
    }?;
    match asked {
        None => Some(named.into_bytes()),
        Some(asked) => (asked.eq_ignore_ascii_case(named.as_bytes())).then_some(asked),
    }
}

/// Whether the verified certificate's SHA-1 fingerprint is the user's `cert_fingerprint=`.
fn fingerprint_matches(tls: &TlsInfo, stored: Option<&str>) -> bool {
    match (tls.fingerprint.as_deref(), stored) {
        (Some(sent), Some(stored)) if !stored.is_empty() => {
            bool::from(sent.to_ascii_lowercase().as_bytes().ct_eq(stored.as_bytes()))
        }
        _ => false,
    }
}

/// The value of attribute `key` in a distinguished name as nginx passes it: RFC 2253
/// (`CN=alice,O=Example`, most specific first, `\,` escapes) or the old `/O=Example/CN=alice`
/// form. `None` when the attribute is absent or given twice (ambiguous).
fn dn_value(dn: &str, key: &str) -> Option<String> {
    let (separator, parts) = if let Some(rest) = dn.strip_prefix('/') {
        ('/', rest)
    } else {
        (',', dn)
    };
    let mut found = None;
    let mut current = String::new();
    let mut chars = parts.chars();
    let mut fields = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c == separator || c == '+' => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    for field in fields {
        if let Some((k, v)) = field.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            if found.is_some() {
                return None;
            }
            found = Some(v.trim().to_owned());
        }
    }
    found.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
