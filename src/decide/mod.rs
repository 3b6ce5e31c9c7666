//! Turns an [`AuthRequest`] into a [`Decision`]: which sources to ask, what each method
//! needs, which backend a login goes to, and whether nginx should keep the session
//! (`Auth-Wait`, decided in [`Authenticator::auth_wait`] alone). It decides only: the parts
//! it works with are built by `daemon`.

mod log_line;
mod rcpt;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use zeroize::Zeroizing;

pub(crate) use log_line::log_decision;

use crate::auth_http::{Accept, AuthRequest, Refusal, RefuseKind, Verdict, can_echo_password};
use crate::config::Config;
use crate::hash::StoredHash;
use crate::login::{AuthMethod, MailProtocol};
use crate::metrics::Metrics;
use crate::policy::{Check, Policy, Recorded, Scope};
use crate::reason::Reason;
use crate::source::{Credentials, DigestAnswer, DigestCredentials, DigestKind, PlainAnswer, SchemeUsed, Source};
use crate::verify::{PoolError, Verifier};
use rcpt::recipient_domain;

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
}

impl Decision {
    /// A temporary failure decided outside the sources, e.g. [`Reason::Deadline`].
    pub(crate) fn temporary(reason: Reason) -> Decision {
        refuse(RefuseKind::Temporary, reason)
    }

    /// The result as logs and metrics name it: `ok`, `invalid`, `tempfail`, `banned`,
    /// `relay-denied` or `bad-request`.
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
}

impl Authenticator {
    /// Decides one login. Password and digest logins pass the brute-force policy first: a
    /// banned client is refused before anything is hashed.
    pub(crate) async fn decide(&self, req: &AuthRequest) -> Decision {
        let counted = matches!(req.method, AuthMethod::Plain | AuthMethod::Apop | AuthMethod::CramMd5);
        let gate = match counted.then_some(self.policy.check(req.client, &req.user).await) {
            Some(Check::Allowed(gate)) => Some(gate),
            Some(Check::Banned(scope, still_counted)) => {
                // Refused without hashing, yet still a guess for the scopes not banned: an
                // address that keeps guessing one user reaches its network's limit.
                if let Some(gate) = still_counted {
                    self.policy.failed(&gate, &req.pass).await;
                }
                return banned(scope);
            }
            Some(Check::Unavailable) => return Decision::temporary(Reason::PolicyUnavailable),
            Some(Check::Exempt) | None => None,
        };
        let mut decision = match req.method {
            AuthMethod::Plain => self.decide_plain(req).await,
            AuthMethod::Apop | AuthMethod::CramMd5 => self.decide_digest(req).await,
            AuthMethod::None => self.decide_smtp_none(req),
            AuthMethod::External => refuse(RefuseKind::InvalidCredentials, Reason::ExternalNotSupported),
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
                    recorded = self.policy.failed(&gate, &req.pass).await;
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
    /// reached a ban ends the session; a ban or a malformed request never waits.
    fn auth_wait(&self, req: &AuthRequest, kind: RefuseKind, recorded: Option<&Recorded>) -> Option<u32> {
        let auth = &self.config.auth;
        let first = (req.method == AuthMethod::Plain && auth.wait_secs > 0 && req.login_attempt < auth.max_attempts)
            .then_some(auth.wait_secs)?;
        match (kind, recorded) {
            (RefuseKind::InvalidCredentials, Some(recorded)) => self.policy.wait_after(first, recorded),
            (RefuseKind::InvalidCredentials | RefuseKind::Temporary, _) => Some(first),
            (RefuseKind::Banned | RefuseKind::RelayDenied | RefuseKind::BadRequest, _) => None,
        }
    }

    /// Accepts to `backend` when a source chose one, else to the protocol's `[route]`.
    fn accept_to(
        &self,
        protocol: MailProtocol,
        backend: Option<SocketAddr>,
        pass: Option<Zeroizing<Vec<u8>>>,
    ) -> Verdict {
        let addr = backend.unwrap_or(self.config.routes.for_protocol(protocol).addr);
        Verdict::Accept(Accept {
            server: addr.ip(),
            port: addr.port(),
            pass,
        })
    }

    /// A password login: the sources are asked in order and the first that accepts decides
    /// (like Dovecot's passdb chain). A source that does not know the user, or rejects the
    /// password, passes to the next; an account a source disables (`nologin`, `allow_nets`)
    /// is refused at once, so an entry in a later source cannot re-enable it. If none accepts
    /// and any source could not answer, the answer is temporary: a source that is down must
    /// not look like a wrong password.
    async fn decide_plain(&self, req: &AuthRequest) -> Decision {
        let creds = Credentials {
            user: &req.user,
            pass: &req.pass,
            client_ip: req.client_ip(),
        };
        let mut temporary = None;
        let mut rejected = None;
        let mut scheme = None;
        let mut dummy: Option<Arc<StoredHash>> = None;
        for source in self.sources.iter().filter(|s| s.serves(req.protocol)) {
            match source.check_plain(&creds, &self.verifier).await {
                PlainAnswer::Accepted { backend, scheme } => {
                    return Decision {
                        verdict: self.accept_to(req.protocol, backend, None),
                        reason: Reason::Ok,
                        scheme,
                        source: Some(source.name()),
                    };
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
        }
    }

    /// APOP and CRAM-MD5: the digest is checked by the sources in order, as passwords are;
    /// nginx then needs the stored cleartext as `Auth-Pass` to log in to an IMAP or POP3
    /// backend.
    async fn decide_digest(&self, req: &AuthRequest) -> Decision {
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
        for source in self.sources.iter().filter(|s| s.serves(req.protocol)) {
            match source.check_digest(&creds).await {
                DigestAnswer::Accepted { cleartext, scheme } => {
                    let pass = cleartext.filter(|c| can_echo_password(c));
                    if pass.is_none() && req.protocol != MailProtocol::Smtp {
                        // nginx must log in to the backend with a password it does not have.
                        // The client's digest was right: this is the server's shortcoming,
                        // and must neither read as a wrong password nor count towards a ban.
                        return Decision::temporary(Reason::NoCleartextForBackend);
                    }
                    return Decision {
                        verdict: self.accept_to(req.protocol, None, pass),
                        reason: Reason::Ok,
                        scheme: Some(scheme),
                        source: Some(source.name()),
                    };
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
        let domain = req.smtp_to.as_deref().and_then(recipient_domain);
        match domain {
            Some(d) if self.config.smtp.local_domains.contains(&d) => Decision {
                verdict: self.accept_to(MailProtocol::Smtp, None, None),
                reason: Reason::LocalRecipient,
                scheme: None,
                source: None,
            },
            _ => refuse(RefuseKind::RelayDenied, Reason::RelayDenied),
        }
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
    }
}
