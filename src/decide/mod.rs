//! Turns an [`AuthRequest`] into a [`Decision`]: which sources to ask, what each method
//! needs, which backend a login goes to, and whether nginx should keep the session
//! (`Auth-Wait`, decided in [`Authenticator::auth_wait`] alone). It decides only: the parts
//! it works with are built by `daemon`.

mod connection;
mod log_line;
mod rcpt;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use zeroize::Zeroizing;

pub(crate) use connection::use_real_client;
pub(crate) use log_line::log_decision;

use crate::auth_http::{Accept, AuthRequest, Refusal, RefuseKind, Verdict, can_echo_password, can_echo_user};
use crate::config::Config;
use crate::hash::{MAX_PASSWORD_BYTES, StoredHash};
use crate::login::{AuthMethod, MailProtocol};
use crate::metrics::Metrics;
use crate::policy::{Check, Policy, Recorded, Scope};
use crate::reason::Reason;
use crate::route::{Routed, Router};
use crate::source::{
    Credentials, DigestAnswer, DigestCredentials, DigestKind, PlainAnswer, SchemeUsed, Source, SourceRoute,
};
use crate::verify::{PoolError, Verifier};
use rcpt::recipient_domain;

/// The `Auth-User` and `Auth-Pass` nginx logs in to the backend with (`None` each: the
/// client's own).
type BackendLogin = (Option<Vec<u8>>, Option<Zeroizing<Vec<u8>>>);

/// A verdict with what the log line needs to say about it.
#[derive(Debug)]
pub(crate) struct Decision {
    /// The answer for nginx.
    pub verdict: Verdict,
    /// Why, in the stable words of logs and metrics.
    pub reason: Reason,
    /// The hash scheme and cost that was verified (also for unknown users: the dummy's).
    pub scheme: Option<SchemeUsed>,
    /// The source that decided, when one did.
    pub source: Option<String>,
    /// Where the routing rules sent the login (a backend and why, or why none), when they
    /// were asked.
    pub route: Option<Routed>,
}

impl Decision {
    /// A temporary failure decided outside the sources, e.g. [`Reason::Deadline`].
    pub(crate) fn temporary(reason: Reason) -> Decision {
        refuse(RefuseKind::Temporary, reason)
    }

    /// A temporary failure because the routing rules found no backend.
    fn routed(reason: Reason, routed: Routed) -> Decision {
        Decision {
            route: Some(routed),
            ..Decision::temporary(reason)
        }
    }

    /// The result as logs and metrics name it: `ok`, `invalid`, `tempfail`, `banned`,
    /// `relay-denied`, `tls-required` or `bad-request`.
    pub(crate) fn result(&self) -> &'static str {
        match &self.verdict {
            Verdict::Accept(_) => "ok",
            Verdict::Refuse(r) => r.kind.as_str(),
        }
    }
}

/// Everything needed to decide logins: configuration, sources, the brute-force policy and
/// the verifier.
#[derive(Debug)]
pub(crate) struct Authenticator {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Credential sources, asked in order.
    pub sources: Vec<Source>,
    /// Counters and histograms, shared with the admin listener.
    pub metrics: Arc<Metrics>,
    /// The brute-force defence, asked before any password is hashed.
    pub policy: Policy,
    /// The verified-login cache in front of the verification pool.
    pub verifier: Verifier,
    /// Addresses whose missing or wrong `[nginx]` secret was logged already.
    pub secret_logged: connection::LoggedOnce,
    /// The backends, their health and their names' addresses.
    pub router: Arc<Router>,
}

impl Authenticator {
    /// Decides one login. Password and digest logins pass the brute-force policy first: a
    /// banned client is refused before anything is hashed.
    pub(crate) async fn decide(&self, req: &AuthRequest) -> Decision {
        // Not from nginx: nothing of it reaches the policy or a source.
        if let Some(refused) = self.secret_refusal(req) {
            return refused;
        }
        let listener = self.listener(req);
        // Rules of the connection, not guesses: decided before the policy, never counted.
        if let Some(refused) = self
            .method_refusal(req, listener)
            .or_else(|| self.tls_refusal(req, listener))
        {
            return refused;
        }
        // With every backend of the login's route down there is nowhere to send it: a
        // temporary failure at once, before the policy counts or anything is hashed.
        if req.method != AuthMethod::None
            && let down @ Routed::AllDown(_) = self.router.choose(req.protocol, &req.user, &SourceRoute::default())
        {
            tracing::debug!("{down}");
            return Decision::routed(Reason::BackendsDown, down);
        }
        let sources: Vec<usize> = match listener.and_then(|l| l.sources.as_ref()) {
            Some(positions) => positions.clone(),
            None => (0..self.sources.len()).collect(),
        };
        let sources: Vec<usize> = sources
            .into_iter()
            .filter(|&i| self.sources.get(i).is_some_and(|s| s.serves(req.protocol)))
            .collect();
        // An EXTERNAL refused for its certificate counts like a wrong password.
        let external = req.method == AuthMethod::External && self.config.external.is_some();
        let counted = external || matches!(req.method, AuthMethod::Plain | AuthMethod::Apop | AuthMethod::CramMd5);
        let gate = match counted.then_some(self.policy.check(req.client, &req.user).await) {
            Some(Check::Allowed(gate)) => Some(gate),
            Some(Check::Banned(scope, still_counted)) => {
                // Refused without hashing, yet still a guess for the scopes not banned: an
                // address that keeps guessing one user reaches its network's limit.
                if let Some(gate) = still_counted {
                    self.policy.failed(&gate, guess(req)).await;
                }
                return banned(scope);
            }
            Some(Check::Unavailable) => return Decision::temporary(Reason::PolicyUnavailable),
            Some(Check::Exempt) | None => None,
        };
        let mut decision = match req.method {
            AuthMethod::Plain => self.decide_plain(req, &sources).await,
            AuthMethod::Apop | AuthMethod::CramMd5 => self.decide_digest(req, &sources).await,
            AuthMethod::None => self.decide_smtp_none(req),
            AuthMethod::External => self.decide_external(req, &sources),
            // Known methods (freenginx) that no source can check yet: the ordinary refusal, so
            // the client neither sees a server fault nor retries for ever.
            AuthMethod::XOAuth2 | AuthMethod::OAuthBearer => {
                refuse(RefuseKind::InvalidCredentials, Reason::MethodNotSupported)
            }
        };
        // Only a refused password counts (whatever the reason, so that the count does not
        // tell whether the password was right); temporary failures are not the client's doing.
        let mut recorded = None;
        if let Some(gate) = gate {
            match &decision.verdict {
                Verdict::Accept(_) => self.policy.succeeded(&gate).await,
                Verdict::Refuse(r) if r.kind == RefuseKind::InvalidCredentials => {
                    recorded = self.policy.failed(&gate, guess(req)).await;
                }
                Verdict::Refuse(_) => {}
            }
        }
        if let Verdict::Refuse(refusal) = &mut decision.verdict {
            refusal.wait = self.auth_wait(req, refusal.kind, recorded.as_ref());
        }
        decision
    }

    /// `Auth-Wait` for a refused login: the one place it is decided. nginx keeps the
    /// session only for `plain` logins below `[auth] max_attempts` (protocol.md §2.4; never
    /// for apop/cram-md5, CVE-2026-27651). A counted failure escalates the wait, one that
    /// reached a ban ends the session; a ban or a malformed request never waits. An inbound
    /// MX's refused `RCPT` waits only with `[smtp] relay_refusal_wait`.
    fn auth_wait(&self, req: &AuthRequest, kind: RefuseKind, recorded: Option<&Recorded>) -> Option<u32> {
        let auth = &self.config.auth;
        if req.method == AuthMethod::None {
            // Off by default: nginx before 1.29.1 / 1.28.1 leaks worker memory into the next
            // request of such a session (CVE-2025-53859).
            let wait = self.config.smtp.relay_refusal_wait_secs;
            return (kind == RefuseKind::RelayDenied && wait > 0 && req.login_attempt < auth.max_attempts)
                .then_some(wait);
        }
        let first = (req.method == AuthMethod::Plain && auth.wait_secs > 0 && req.login_attempt < auth.max_attempts)
            .then_some(auth.wait_secs)?;
        match (kind, recorded) {
            (RefuseKind::InvalidCredentials, Some(recorded)) => self.policy.wait_after(first, recorded),
            (RefuseKind::InvalidCredentials | RefuseKind::Temporary, _) => Some(first),
            (
                RefuseKind::Banned
                | RefuseKind::RelayDenied
                | RefuseKind::BadRequest
                | RefuseKind::PrivacyRequired
                | RefuseKind::NoReverseDns
                | RefuseKind::ReverseDnsTempfail,
                _,
            ) => None,
        }
    }

    /// Accepts a login that `source` let pass, to the backend the routing rules choose,
    /// with the credentials nginx logs in to it with; `cleartext` is the stored password
    /// of a digest login, when the source keeps one. Every backend of the route down, or
    /// no credentials nginx can use on the backend, is a temporary failure: the client's
    /// secret was right, so this must neither read as a wrong password nor count.
    fn accept(
        &self,
        req: &AuthRequest,
        route: &SourceRoute,
        cleartext: Option<Zeroizing<Vec<u8>>>,
        scheme: Option<SchemeUsed>,
        source: Option<String>,
    ) -> Decision {
        let choice = match self.router.choose(req.protocol, &req.user, route) {
            Routed::To(choice) => choice,
            down @ Routed::AllDown(_) => {
                tracing::debug!("{down}");
                return Decision::routed(Reason::BackendsDown, down);
            }
            Routed::Unusable(why) => {
                tracing::warn!(
                    source = source.as_deref().unwrap_or("-"),
                    "cannot route the login: {why}"
                );
                return Decision::routed(Reason::SourceRouteUnusable, Routed::Unusable(why));
            }
        };
        let Some((user, pass)) = self.backend_login(req, route, cleartext) else {
            return Decision::temporary(Reason::NoCleartextForBackend);
        };
        Decision {
            verdict: Verdict::Accept(Accept {
                server: choice.addr.ip(),
                port: choice.addr.port(),
                user,
                pass,
            }),
            reason: Reason::Ok,
            scheme,
            source,
            route: Some(Routed::To(choice)),
        }
    }

    /// The `Auth-User` and `Auth-Pass` nginx logs in to the backend with (`None` each: the
    /// client's own), or `None` when nginx needs a password nobody can give it.
    ///
    /// A `pass=` field is sent as is. Otherwise a plain login keeps the client's password
    /// (under the `destuser=` name, if any); a digest login sends the stored cleartext. When
    /// there is no cleartext to send (`{CRAM-MD5}`), or a `destuser=` renames a digest
    /// login, the `[backend]` master user logs in as `<user><sep><master>`; with a master
    /// user, a `destuser=` plain login goes through it too, as the backend may not know the
    /// client's password under the other name. SMTP gets backend credentials only with
    /// `[backend] smtp_proxy_auth`: without it nginx sends the login in XCLIENT, where a
    /// master user's name must never appear.
    fn backend_login(
        &self,
        req: &AuthRequest,
        route: &SourceRoute,
        cleartext: Option<Zeroizing<Vec<u8>>>,
    ) -> Option<BackendLogin> {
        let destuser = route.destuser.as_ref().map(|d| d.as_bytes().to_vec());
        if let Some(pass) = &route.pass {
            return Some((destuser, Some(pass.clone())));
        }
        // Digest and EXTERNAL logins carry no password nginx could pass on.
        let digest = matches!(
            req.method,
            AuthMethod::Apop | AuthMethod::CramMd5 | AuthMethod::External
        );
        let smtp_plain = req.protocol == MailProtocol::Smtp && !self.config.backend.smtp_proxy_auth;
        let cleartext = cleartext.filter(|c| can_echo_password(c));
        let master = self.config.backend.master.as_ref().filter(|_| !smtp_plain);
        match (digest, &destuser, cleartext, master) {
            (false, None, _, _) => Some((None, None)),
            (true, None, Some(clear), _) => Some((None, Some(clear))),
            (_, _, _, Some(master)) => {
                let mut user = destuser.unwrap_or_else(|| req.user.clone());
                user.extend_from_slice(master.separator.as_bytes());
                user.extend_from_slice(master.user.as_bytes());
                let pass = Zeroizing::new(master.password.expose().as_bytes().to_vec());
                can_echo_user(&user).then_some((Some(user), Some(pass)))
            }
            // The client's password goes on under the other name.
            (false, Some(_), _, None) => Some((destuser, None)),
            // An MTA behind XCLIENT needs no password.
            (true, _, clear, None) if smtp_plain => Some((destuser, clear)),
            (true, _, _, None) => None,
        }
    }

    /// A password login: the sources are asked in order and the first that accepts decides
    /// (like Dovecot's passdb chain). A source that does not know the user, or rejects the
    /// password, passes to the next; an account a source disables (`nologin`, `allow_nets`)
    /// is refused at once, so an entry in a later source cannot re-enable it. If none accepts
    /// and any source could not answer, the answer is temporary: a source that is down must
    /// not look like a wrong password.
    async fn decide_plain(&self, req: &AuthRequest, sources: &[usize]) -> Decision {
        if req.pass.len() > MAX_PASSWORD_BYTES {
            // No stored hash can match it; some schemes' cost grows with the password's
            // length, so it is refused before any source or hash sees it, for known and
            // unknown users alike.
            return refuse(RefuseKind::InvalidCredentials, Reason::PasswordTooLong);
        }
        let creds = Credentials {
            user: &req.user,
            pass: &req.pass,
            client_ip: req.client_ip(),
        };
        let mut temporary = None;
        let mut rejected = None;
        let mut scheme = None;
        let mut dummy: Option<Arc<StoredHash>> = None;
        for source in sources.iter().filter_map(|&i| self.sources.get(i)) {
            match source.check_plain(&creds, &self.verifier).await {
                PlainAnswer::Accepted { route, scheme } => {
                    return self.accept(req, &route, None, scheme, Some(source.name()));
                }
                PlainAnswer::Rejected { reason, scheme: s } => {
                    rejected = rejected.or(Some((reason, source.name())));
                    scheme = scheme.or(s);
                }
                PlainAnswer::Disabled { reason, scheme: s } => {
                    rejected = Some((reason, source.name()));
                    scheme = s;
                    break;
                }
                PlainAnswer::UnknownUser { dummy: d } => dummy = dummy.or(d),
                PlainAnswer::Unavailable { reason } => {
                    self.metrics.source_error(&source.name(), reason.as_str());
                    temporary = temporary.or(Some(reason));
                }
            }
        }
        if rejected.is_none()
            && let Some(dummy) = dummy
        {
            // An unknown user costs what a wrong password costs: verify against a hash of the
            // same scheme and cost, and throw the result away.
            // Through the cache like a known user's wrong password, so that repeating a guess
            // is as fast for an unknown user as for a known one.
            scheme = Some(SchemeUsed::of(&dummy));
            if let Err(PoolError::Overloaded) = self.verifier.verify_login(b"dummy", &req.user, &req.pass, &dummy).await
            {
                temporary = temporary.or(Some(Reason::Overloaded));
            }
        }
        let (kind, reason, source) = match (temporary, rejected) {
            (Some(reason), _) => (RefuseKind::Temporary, reason, None),
            (None, Some((reason, source))) => (RefuseKind::InvalidCredentials, reason, Some(source)),
            (None, None) => (RefuseKind::InvalidCredentials, Reason::UnknownUser, None),
        };
        Decision {
            verdict: Verdict::Refuse(Refusal { kind, wait: None }),
            reason,
            scheme,
            source,
            route: None,
        }
    }

    /// APOP and CRAM-MD5: the digest is checked by the sources in order, as passwords are;
    /// nginx then needs the stored cleartext as `Auth-Pass` to log in to an IMAP or POP3
    /// backend.
    async fn decide_digest(&self, req: &AuthRequest, sources: &[usize]) -> Decision {
        let Some(salt) = &req.salt else {
            return refuse(RefuseKind::InvalidCredentials, Reason::NoSalt);
        };
        let creds = DigestCredentials {
            user: &req.user,
            kind: if req.method == AuthMethod::Apop {
                DigestKind::Apop
            } else {
                DigestKind::CramMd5
            },
            salt,
            response: &req.pass,
            client_ip: req.client_ip(),
        };
        let mut temporary = None;
        for source in sources.iter().filter_map(|&i| self.sources.get(i)) {
            match source.check_digest(&creds).await {
                DigestAnswer::Accepted {
                    cleartext,
                    scheme,
                    route,
                } => {
                    return self.accept(req, &route, cleartext, Some(scheme), Some(source.name()));
                }
                // Final, as for passwords: a later source must not re-enable the account.
                DigestAnswer::Disabled { reason } => {
                    return refuse(RefuseKind::InvalidCredentials, reason);
                }
                // As for passwords: a later source may still hold the right secret.
                DigestAnswer::Rejected | DigestAnswer::UnknownUser => {}
                DigestAnswer::Unavailable { reason } => temporary = temporary.or(Some(reason)),
            }
        }
        match temporary {
            Some(reason) => Decision::temporary(reason),
            None => refuse(RefuseKind::InvalidCredentials, Reason::WrongDigest),
        }
    }

    /// SMTP without AUTH (an inbound MX): accept mail for local domains only. Auth-User and
    /// Auth-Pass are ignored (nginx 1.22 sends stale ones) and never sent back.
    fn decide_smtp_none(&self, req: &AuthRequest) -> Decision {
        if req.protocol != MailProtocol::Smtp {
            return refuse(RefuseKind::BadRequest, Reason::NoneOutsideSmtp);
        }
        if let Some(refused) = self.reverse_dns_refusal(req) {
            return refused;
        }
        let domain = req.smtp_to.as_deref().and_then(recipient_domain);
        match domain {
            // The recipient's domain routes, not the (stale) login's; and never an Auth-User.
            Some(d) if self.config.smtp.local_domains.contains(&d) => {
                match self
                    .router
                    .choose(MailProtocol::Smtp, format!("@{d}").as_bytes(), &SourceRoute::default())
                {
                    Routed::To(choice) => Decision {
                        verdict: Verdict::Accept(Accept {
                            server: choice.addr.ip(),
                            port: choice.addr.port(),
                            user: None,
                            pass: None,
                        }),
                        reason: Reason::LocalRecipient,
                        scheme: None,
                        source: None,
                        route: Some(Routed::To(choice)),
                    },
                    other => Decision::routed(Reason::BackendsDown, other),
                }
            }
            _ => refuse(RefuseKind::RelayDenied, Reason::RelayDenied),
        }
    }
}

/// What a failed login tried, for the policy's "the same guess counts once": the password or
/// digest, or for EXTERNAL the certificate's fingerprint (another certificate is another
/// guess).
fn guess(req: &AuthRequest) -> &[u8] {
    match (req.method, req.tls.as_ref().and_then(|t| t.fingerprint.as_deref())) {
        (AuthMethod::External, Some(fingerprint)) => fingerprint.as_bytes(),
        _ => &req.pass,
    }
}

/// A banned client: refused at once, with the policy as the deciding "source".
fn banned(scope: Scope) -> Decision {
    Decision {
        source: Some(format!("policy:{}", scope.as_str())),
        ..refuse(RefuseKind::Banned, Reason::Banned)
    }
}

/// A refusal decided without a source; `Auth-Wait` is added by [`Authenticator::decide`].
fn refuse(kind: RefuseKind, reason: Reason) -> Decision {
    Decision {
        verdict: Verdict::Refuse(Refusal { kind, wait: None }),
        reason,
        scheme: None,
        source: None,
        route: None,
    }
}
