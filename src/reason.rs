//! Why a login ended as it did: one enum whose names are the stable `reason="..."` strings of
//! the decision log line, the `reason` label of `mailauthd_source_errors_total`, and what the
//! fail2ban filter and dashboards match on. Renaming a variant's string is a breaking change
//! for every log reader; add new variants instead.

use std::fmt;

/// The reason of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// Accepted: the password or digest is right.
    Ok,
    /// Accepted without authentication: an inbound MX delivering to a local domain.
    LocalRecipient,

    /// A source knows the user and the password is wrong.
    WrongPassword,
    /// The APOP / CRAM-MD5 digest matches no source.
    WrongDigest,
    /// A password of more than [`crate::hash::MAX_PASSWORD_BYTES`] bytes, refused as wrong
    /// without asking any source or hashing (libxcrypt refuses such passphrases too).
    PasswordTooLong,
    /// No source knows the user.
    UnknownUser,
    /// The account carries Dovecot's `nologin`.
    Nologin,
    /// The account's `allow_nets` does not hold the client's address.
    NotAllowedFromNetwork,
    /// An APOP / CRAM-MD5 request without `Auth-Salt`.
    NoSalt,
    /// SASL EXTERNAL, which no configuration accepts yet.
    ExternalNotSupported,
    /// `Auth-Method: none` outside SMTP.
    NoneOutsideSmtp,
    /// An inbound MX asked to relay to a domain that is not local.
    RelayDenied,
    /// The client is banned by the brute-force policy.
    Banned,
    /// The http-basic upstream refused the credentials (401, 403).
    UpstreamRejected,
    /// An empty login, which an http-basic upstream cannot be asked about.
    EmptyUser,
    /// A login with `:`, which HTTP Basic auth cannot express.
    ColonInUser,

    /// The brute-force policy's state could not be reached (`on_redis_error = "tempfail"`).
    PolicyUnavailable,
    /// A source has no users table yet, or no HTTP client.
    SourceUnavailable,
    /// The verification queue is full.
    Overloaded,
    /// The verification pool has stopped.
    InternalError,
    /// The decision did not finish before the request deadline.
    Deadline,
    /// A right digest for a user whose cleartext cannot be sent to the backend.
    NoCleartextForBackend,
    /// Every http-basic in-flight slot stayed taken.
    UpstreamBusy,
    /// The http-basic breaker is open.
    BreakerOpen,
    /// The http-basic upstream did not answer in time.
    UpstreamTimeout,
    /// The http-basic upstream could not be connected to.
    UpstreamUnreachable,
    /// Another transport failure talking to the http-basic upstream.
    UpstreamError,
    /// The upstream answered 3xx.
    UpstreamRedirect,
    /// The upstream answered a 4xx other than 401 and 403.
    Upstream4xx,
    /// The upstream answered 5xx.
    Upstream5xx,
    /// The upstream answered a status outside 200..=599.
    UpstreamBadStatus,
    /// The upstream named a server without a port.
    UpstreamRouteIncomplete,
    /// The upstream named a port that is not a port number.
    UpstreamRouteBadPort,
    /// The upstream named a server that is neither an address nor a host name.
    UpstreamRouteBadServer,
    /// The upstream named a host name that does not resolve.
    UpstreamRouteUnresolvable,
    /// The upstream answered 2xx to a random user and password: it checks nothing, so none
    /// of its answers is trusted until it refuses such a login again.
    UpstreamAcceptsAnything,
    /// A method nginx knows and mailauthd does not support yet (`xoauth2`, `oauthbearer`).
    MethodNotSupported,
    /// The request lacks the `[nginx]` shared secret, or carries another one: not nginx.
    BadSecret,
    /// A cleartext password without TLS (`[tls] required_for`).
    TlsRequired,
    /// A cleartext password over a TLS version older than `[tls] min_protocol`.
    TlsTooOld,
    /// EXTERNAL without a certificate nginx verified (`Auth-SSL-Verify` not `SUCCESS`).
    CertificateNotVerified,
    /// EXTERNAL with a verified certificate that does not name the user.
    CertificateMismatch,
    /// An inbound MX client without a forward-confirmed PTR name (`[UNAVAILABLE]`).
    NoReverseDns,
    /// An inbound MX client whose PTR lookup failed for now (`[TEMPUNAVAIL]`).
    ReverseDnsTempfail,
    /// A method the request's `[listener.NAME]` does not allow.
    MethodNotAllowedOnListener,
    /// Every backend of the login's route is down.
    BackendsDown,
    /// The accepting source's routing facts cannot be used (a `host=` name, a bad `port=`).
    SourceRouteUnusable,
    /// The LDAP server could not be reached, or closed the connection.
    LdapUnreachable,
    /// The LDAP server did not answer within the source's `timeout`.
    LdapTimeout,
    /// Every pooled LDAP connection stayed taken for the source's `timeout`.
    LdapBusy,
    /// The LDAP server answered an operation with an error (busy, unavailable, no such
    /// base, a bad filter, ...).
    LdapError,
    /// The LDAP service account's own bind was refused.
    LdapServiceBind,
    /// The LDAP search found more than one entry for a login: an ambiguous filter.
    LdapAmbiguous,
    /// The LDAP entry matches the source's `disabled_filter`.
    LdapDisabled,
}

impl Reason {
    /// The stable name in logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            Ok => "ok",
            LocalRecipient => "local-recipient",
            WrongPassword => "wrong-password",
            WrongDigest => "wrong-digest",
            PasswordTooLong => "password-too-long",
            UnknownUser => "unknown-user",
            Nologin => "nologin",
            NotAllowedFromNetwork => "not-allowed-from-network",
            NoSalt => "no-salt",
            ExternalNotSupported => "external-not-supported",
            NoneOutsideSmtp => "none-outside-smtp",
            RelayDenied => "relay-denied",
            Banned => "banned",
            UpstreamRejected => "upstream-rejected",
            EmptyUser => "empty-user",
            ColonInUser => "colon-in-user",
            PolicyUnavailable => "policy-unavailable",
            SourceUnavailable => "source-unavailable",
            Overloaded => "overloaded",
            InternalError => "internal-error",
            Deadline => "deadline",
            NoCleartextForBackend => "no-cleartext-for-backend",
            UpstreamBusy => "upstream-busy",
            BreakerOpen => "breaker-open",
            UpstreamTimeout => "upstream-timeout",
            UpstreamUnreachable => "upstream-unreachable",
            UpstreamError => "upstream-error",
            UpstreamRedirect => "upstream-redirect",
            Upstream4xx => "upstream-4xx",
            Upstream5xx => "upstream-5xx",
            UpstreamBadStatus => "upstream-bad-status",
            UpstreamRouteIncomplete => "upstream-route-incomplete",
            UpstreamRouteBadPort => "upstream-route-bad-port",
            UpstreamRouteBadServer => "upstream-route-bad-server",
            UpstreamRouteUnresolvable => "upstream-route-unresolvable",
            UpstreamAcceptsAnything => "upstream-accepts-anything",
            MethodNotSupported => "method-not-supported",
            BadSecret => "bad-secret",
            TlsRequired => "tls-required",
            TlsTooOld => "tls-too-old",
            CertificateNotVerified => "certificate-not-verified",
            CertificateMismatch => "certificate-mismatch",
            NoReverseDns => "no-reverse-dns",
            ReverseDnsTempfail => "reverse-dns-tempfail",
            MethodNotAllowedOnListener => "method-not-allowed-on-listener",
            BackendsDown => "backends-down",
            SourceRouteUnusable => "source-route-unusable",
            LdapUnreachable => "ldap-unreachable",
            LdapTimeout => "ldap-timeout",
            LdapBusy => "ldap-busy",
            LdapError => "ldap-error",
            LdapServiceBind => "ldap-service-bind-failed",
            LdapAmbiguous => "ldap-ambiguous",
            LdapDisabled => "ldap-disabled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
