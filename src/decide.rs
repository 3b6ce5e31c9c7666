//! Turns an [`AuthRequest`] into a [`Verdict`]: which sources to ask, what each method
//! needs, which backend a login goes to, and whether nginx should keep the session
//! (`Auth-Wait`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::cache::LoginCache;
use crate::config::Config;
use crate::hash::StoredHash;
use crate::metrics::Metrics;
use crate::policy::{Check, Gate, Policy, Scope, SystemClock, escalated_wait};
use crate::protocol::{
    Accept, AuthMethod, AuthRequest, MAX_ECHOED_PASSWORD, MailProtocol, Refusal, RefuseKind, Verdict, is_sendable_value,
};
use crate::source::htpasswd::printable;
use crate::source::{Credentials, PlainAnswer, Source};
use crate::verify_pool::{PoolError, VerifyPool};

/// A verdict with what the log line needs to say about it.
#[derive(Debug)]
pub struct Decision {
    /// The answer for nginx.
    pub verdict: Verdict,
    /// A stable machine-readable reason, e.g. `wrong-password`, `unknown-user`.
    pub reason: &'static str,
    /// The hash scheme and cost that was verified (also for unknown users: the dummy's).
    pub scheme: Option<String>,
    /// The source that decided, when one did.
    pub source: Option<String>,
}

impl Decision {
    /// A temporary failure decided outside the sources, e.g. `deadline`.
    pub fn temporary(reason: &'static str) -> Decision {
        refuse(RefuseKind::Temporary, None, reason)
    }

    /// The result as logs and metrics name it: `ok`, `invalid`, `tempfail`, `banned`,
    /// `relay-denied` or `bad-request`.
    pub fn result(&self) -> &'static str {
        match &self.verdict {
            Verdict::Accept(_) => "ok",
            Verdict::Refuse(r) => r.kind.as_str(),
        }
    }
}

/// Everything needed to decide logins: configuration, sources and the verification pool.
#[derive(Debug)]
pub struct Authenticator {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Credential sources, asked in order.
    pub sources: Vec<Source>,
    /// Counters and histograms, shared with the admin listener.
    pub metrics: Arc<Metrics>,
    /// The brute-force defence, asked before any password is hashed.
    pub policy: Policy,
    pool: VerifyPool,
}

impl Authenticator {
    /// Builds the sources of `config` (not loaded yet) and starts the verification pool.
    pub fn new(config: Arc<Config>) -> Authenticator {
        let sources = config.sources.iter().map(Source::new).collect();
        let metrics = Arc::new(Metrics::new());
        let pool = VerifyPool::with_limits(
            config.verify_threads,
            config.verify_queue,
            config.verify_memory_hard_threads,
            metrics.clone(),
        )
        .with_cache(LoginCache::new(config.cache));
        let policy = Policy::new(&config.policy, &config.state, Arc::new(SystemClock));
        Authenticator {
            config,
            sources,
            metrics,
            policy,
            pool,
        }
    }

    /// Decides one login. Password and digest logins pass the brute-force policy first: a
    /// banned client is refused before anything is hashed.
    pub async fn decide(&self, req: &AuthRequest) -> Decision {
        let counted = matches!(req.method, AuthMethod::Plain | AuthMethod::Apop | AuthMethod::CramMd5);
        let gate = match counted.then_some(self.policy.check(req.client_ip, &req.user).await) {
            Some(Check::Allowed(gate)) => Some(gate),
            Some(Check::Banned(scope)) => return banned(scope),
            Some(Check::Unavailable) => return refuse(RefuseKind::Temporary, None, "policy-unavailable"),
            Some(Check::Exempt) | None => None,
        };
        let mut decision = match req.method {
            AuthMethod::Plain => self.decide_plain(req).await,
            AuthMethod::Apop | AuthMethod::CramMd5 => self.decide_digest(req),
            AuthMethod::None => self.decide_smtp_none(req),
            AuthMethod::External => refuse(RefuseKind::InvalidCredentials, None, "external-not-supported"),
        };
        if let Some(gate) = gate {
            self.settle(req, &gate, &mut decision).await;
        }
        decision
    }

    /// Tells the policy how a login ended and escalates its `Auth-Wait`. Only a refused
    /// password counts (whatever the reason, so that the count does not tell whether the
    /// password was right); temporary failures are not the client's doing.
    async fn settle(&self, req: &AuthRequest, gate: &Gate, decision: &mut Decision) {
        match &mut decision.verdict {
            Verdict::Accept(_) => self.policy.succeeded(gate).await,
            Verdict::Refuse(refusal) if refusal.kind == RefuseKind::InvalidCredentials => {
                let Some(recorded) = self.policy.failed(gate, &req.pass).await else {
                    return;
                };
                // `wait` is set only for plain logins below the attempt cap; a ban just
                // reached ends the session instead.
                refusal.wait = match (refusal.wait, recorded.banned) {
                    (Some(first), None) => {
                        let failures = recorded.counts[0].max(recorded.counts[2]);
                        Some(escalated_wait(first, self.policy.settings().wait_max_secs, failures))
                    }
                    _ => None,
                };
            }
            Verdict::Refuse(_) => {}
        }
    }

    fn accept(&self, protocol: MailProtocol, pass: Option<Zeroizing<Vec<u8>>>) -> Verdict {
        self.accept_to(protocol, None, pass)
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

    /// `Auth-Wait` for a failed `plain` login, while below the attempt cap.
    fn wait_for(&self, req: &AuthRequest) -> Option<u32> {
        let auth = &self.config.auth;
        (req.method == AuthMethod::Plain && auth.wait_secs > 0 && req.login_attempt < auth.max_attempts)
            .then_some(auth.wait_secs)
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
            client_ip: req.client_ip,
            protocol: req.protocol,
        };
        let mut temporary = None;
        let mut rejected = None;
        let mut scheme = None;
        let mut dummy: Option<Arc<StoredHash>> = None;
        for source in self.sources.iter().filter(|s| s.serves(req.protocol)) {
            match source.check_plain(&creds, &self.pool).await {
                PlainAnswer::Accepted { backend, scheme } => {
                    return Decision {
                        verdict: self.accept_to(req.protocol, backend, None),
                        reason: "ok",
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
                    self.metrics.source_error(&source.name(), reason);
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
            scheme = Some(dummy.cost_label());
            if let Err(PoolError::Overloaded) = self.pool.verify_login(b"dummy", &req.user, &req.pass, &dummy).await {
                temporary = temporary.or(Some("overloaded"));
            }
        }
        let wait = self.wait_for(req);
        let (kind, reason, source) = match (temporary, rejected) {
            (Some(reason), _) => (RefuseKind::Temporary, reason, None),
            (None, Some((reason, source))) => (RefuseKind::InvalidCredentials, reason, Some(source)),
            (None, None) => (RefuseKind::InvalidCredentials, "unknown-user", None),
        };
        Decision {
            verdict: Verdict::Refuse(Refusal { kind, wait }),
            reason,
            scheme,
            source,
        }
    }

    /// APOP and CRAM-MD5: the digest is checked against a stored cleartext, which nginx then
    /// needs as `Auth-Pass` to log in to an IMAP or POP3 backend.
    fn decide_digest(&self, req: &AuthRequest) -> Decision {
        let Some(salt) = &req.salt else {
            return refuse(RefuseKind::InvalidCredentials, None, "no-salt");
        };
        let mut temporary = false;
        for source in self.sources.iter().filter(|s| s.serves(req.protocol)) {
            // An upstream sees only cleartext passwords: it cannot check a digest.
            let Source::Htpasswd(file) = source else {
                continue;
            };
            if !file.is_available() {
                temporary = true;
                continue;
            }
            let table = file.table();
            let Some(user) = table.get(&req.user) else {
                continue;
            };
            if user.nologin || !user.allowed_from(req.client_ip) {
                // Final, as for passwords: a later source must not re-enable the account.
                return refuse(RefuseKind::InvalidCredentials, None, "nologin");
            }
            let matches = match req.method {
                AuthMethod::Apop => user.hash.verify_apop(salt, &req.pass),
                _ => user.hash.verify_cram_md5(salt, &req.pass),
            };
            if !matches {
                // As for passwords: a later source may still hold the right secret.
                continue;
            }
            let pass = user
                .hash
                .cleartext()
                .filter(|c| c.len() <= MAX_ECHOED_PASSWORD && is_sendable_value(c));
            if pass.is_none() && req.protocol != MailProtocol::Smtp {
                // nginx must log in to the backend with a password it does not have.
                // The client's digest was right: this is the server's shortcoming, and must
                // neither read as a wrong password nor count towards a ban.
                return refuse(RefuseKind::Temporary, None, "no-cleartext-for-backend");
            }
            return Decision {
                verdict: self.accept(req.protocol, pass.map(|p| Zeroizing::new(p.to_vec()))),
                reason: "ok",
                scheme: Some(user.hash.cost_label()),
                source: Some(source.name()),
            };
        }
        if temporary {
            return refuse(RefuseKind::Temporary, None, "source-unavailable");
        }
        refuse(RefuseKind::InvalidCredentials, None, "wrong-digest")
    }

    /// SMTP without AUTH (an inbound MX): accept mail for local domains only. Auth-User and
    /// Auth-Pass are ignored (nginx 1.22 sends stale ones) and never sent back.
    fn decide_smtp_none(&self, req: &AuthRequest) -> Decision {
        if req.protocol != MailProtocol::Smtp {
            return refuse(RefuseKind::BadRequest, None, "none-outside-smtp");
        }
        let domain = req.smtp_to.as_deref().and_then(recipient_domain);
        match domain {
            Some(d) if self.config.smtp.local_domains.contains(&d) => Decision {
                verdict: self.accept(MailProtocol::Smtp, None),
                reason: "local-recipient",
                scheme: None,
                source: None,
            },
            _ => refuse(RefuseKind::RelayDenied, None, "relay-denied"),
        }
    }
}

/// A banned client: refused at once, with the policy as the deciding "source".
fn banned(scope: Scope) -> Decision {
    Decision {
        verdict: Verdict::Refuse(Refusal {
            kind: RefuseKind::Banned,
            wait: None,
        }),
        reason: "banned",
        scheme: None,
        source: Some(format!("policy:{}", scope.as_str())),
    }
}

fn refuse(kind: RefuseKind, wait: Option<u32>, reason: &'static str) -> Decision {
    Decision {
        verdict: Verdict::Refuse(Refusal { kind, wait }),
        reason,
        scheme: None,
        source: None,
    }
}

/// The lower-case domain of the address in a raw `RCPT TO:<user@domain> ...` line.
pub fn recipient_domain(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let (_, rest) = line.split_once(':')?;
    let rest = rest.trim_start();
    let address = match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>')?.0,
        None => rest.split_ascii_whitespace().next()?,
    };
    // A source route (`<@relay:user@domain>`) ends at the last colon.
    let address = address.rsplit_once(':').map_or(address, |(_, a)| a);
    let (local, domain) = address.rsplit_once('@')?;
    // `a@evil.example@local.test` is not an address at local.test; a quoted local part
    // (`"a@b"@local.test`) may hold an `@`.
    if local.contains('@') && !(local.starts_with('"') && local.ends_with('"')) {
        return None;
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Writes the one log line per decision. The password never appears, at any level.
///
/// The fields come in a fixed order, `client_ip` first and everything the client chooses
/// (the user name) after the fixed-vocabulary ones, so that a text-format line reads
/// `login refused client_ip="203.0.113.9" result="invalid" reason="wrong-password" ...` and
/// a log filter (fail2ban, `contrib/fail2ban/`) can anchor on the start of the line.
pub fn log_decision(req: &AuthRequest, decision: &Decision, started: Instant) {
    let result = decision.result();
    let micros = started.elapsed().as_micros() as u64;
    let user = printable(&req.user);
    let client_ip = req.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let scheme = decision.scheme.as_deref().unwrap_or("-");
    let source = decision.source.as_deref().unwrap_or("-");
    if matches!(decision.verdict, Verdict::Accept(_)) {
        tracing::info!(target: "mailauthd::auth", client_ip, result, reason = decision.reason, protocol = %req.protocol, method = %req.method, user, scheme, source, micros, "login accepted");
    } else {
        tracing::warn!(target: "mailauthd::auth", client_ip, result, reason = decision.reason, protocol = %req.protocol, method = %req.method, user, scheme, source, micros, "login refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_domain_reads_raw_rcpt_lines() {
        assert_eq!(
            recipient_domain(b"RCPT TO:<c@Example.TEST>").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            recipient_domain(b"RCPT TO: <a@x.org.> NOTIFY=NEVER").as_deref(),
            Some("x.org")
        );
        assert_eq!(
            recipient_domain(b"RCPT TO:<@relay.net:u@y.net>").as_deref(),
            Some("y.net")
        );
        assert_eq!(recipient_domain(b"RCPT TO:b@z.net").as_deref(), Some("z.net"));
        assert_eq!(recipient_domain(b"RCPT TO:<postmaster>"), None);
        assert_eq!(recipient_domain(b"RCPT TO:<a@evil.example@local.test>"), None);
        assert_eq!(
            recipient_domain(b"RCPT TO:<\"a@b\"@local.test>").as_deref(),
            Some("local.test")
        );
        assert_eq!(recipient_domain(b"garbage"), None);
    }
}
