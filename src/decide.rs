//! Turns an [`AuthRequest`] into a [`Verdict`]: which sources to ask, what each method
//! needs, which backend a login goes to, and whether nginx should keep the session
//! (`Auth-Wait`).

use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::config::Config;
use crate::hash::StoredHash;
use crate::protocol::{
    Accept, AuthMethod, AuthRequest, MAX_ECHOED_PASSWORD, MailProtocol, Refusal, RefuseKind,
    Verdict, is_sendable_value,
};
use crate::source::Source;
use crate::source::htpasswd::printable;
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

/// Everything needed to decide logins: configuration, sources and the verification pool.
#[derive(Debug)]
pub struct Authenticator {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Credential sources, asked in order.
    pub sources: Vec<Source>,
    pool: VerifyPool,
}

/// What happened while asking the sources about a plain login.
#[derive(Default)]
struct Tally {
    known: bool,
    temporary: Option<&'static str>,
    scheme: Option<String>,
}

impl Authenticator {
    /// Builds the sources of `config` (not loaded yet) and starts the verification pool.
    pub fn new(config: Arc<Config>) -> Authenticator {
        let sources = config.sources.iter().map(Source::new).collect();
        let pool = VerifyPool::new(config.verify_threads, config.verify_queue);
        Authenticator {
            config,
            sources,
            pool,
        }
    }

    /// Decides one login.
    pub async fn decide(&self, req: &AuthRequest) -> Decision {
        match req.method {
            AuthMethod::Plain => self.decide_plain(req).await,
            AuthMethod::Apop | AuthMethod::CramMd5 => self.decide_digest(req),
            AuthMethod::None => self.decide_smtp_none(req),
            AuthMethod::External => refuse(
                RefuseKind::InvalidCredentials,
                None,
                "external-not-supported",
            ),
        }
    }

    fn accept(&self, protocol: MailProtocol, pass: Option<Zeroizing<Vec<u8>>>) -> Verdict {
        let backend = self.config.routes.for_protocol(protocol);
        Verdict::Accept(Accept {
            server: backend.addr.ip(),
            port: backend.addr.port(),
            pass,
        })
    }

    /// `Auth-Wait` for a failed `plain` login, while below the attempt cap.
    fn wait_for(&self, req: &AuthRequest) -> Option<u32> {
        let auth = &self.config.auth;
        (req.method == AuthMethod::Plain
            && auth.wait_secs > 0
            && req.login_attempt < auth.max_attempts)
            .then_some(auth.wait_secs)
    }

    async fn decide_plain(&self, req: &AuthRequest) -> Decision {
        let mut tally = Tally::default();
        let mut dummy: Option<Arc<StoredHash>> = None;
        for source in self.sources.iter().filter(|s| s.serves(req.protocol)) {
            let Source::Htpasswd(file) = source;
            if !file.is_available() {
                tally.temporary = Some("source-unavailable");
                continue;
            }
            let table = file.table();
            let Some(user) = table.get(&req.user) else {
                dummy = dummy.or_else(|| table.dummy().cloned());
                continue;
            };
            tally.known = true;
            tally.scheme = Some(user.hash.cost_label());
            let pass = req.pass.clone();
            match self
                .pool
                .run(user.hash.clone(), move |h| h.verify(&pass))
                .await
            {
                Ok(true) if user.nologin => {
                    return self.refuse_plain(
                        req,
                        RefuseKind::InvalidCredentials,
                        "nologin",
                        tally,
                        source,
                    );
                }
                Ok(true) if !user.allowed_from(req.client_ip) => {
                    return self.refuse_plain(
                        req,
                        RefuseKind::InvalidCredentials,
                        "not-allowed-from-network",
                        tally,
                        source,
                    );
                }
                Ok(true) => {
                    return Decision {
                        verdict: self.accept(req.protocol, None),
                        reason: "ok",
                        scheme: tally.scheme,
                        source: Some(source.name()),
                    };
                }
                Ok(false) => {}
                Err(PoolError::Overloaded) => tally.temporary = Some("overloaded"),
                Err(PoolError::Stopped) => tally.temporary = Some("internal-error"),
            }
        }
        if !tally.known
            && let Some(dummy) = dummy
        {
            // An unknown user costs what a wrong password costs: verify against a hash of the
            // same scheme and cost, and throw the result away.
            tally.scheme = Some(dummy.cost_label());
            let pass = req.pass.clone();
            if let Err(PoolError::Overloaded) = self.pool.run(dummy, move |h| h.verify(&pass)).await
            {
                tally.temporary = Some("overloaded");
            }
        }
        let wait = self.wait_for(req);
        let (kind, reason) = match tally.temporary {
            Some(reason) => (RefuseKind::Temporary, reason),
            None if tally.known => (RefuseKind::InvalidCredentials, "wrong-password"),
            None => (RefuseKind::InvalidCredentials, "unknown-user"),
        };
        Decision {
            verdict: Verdict::Refuse(Refusal { kind, wait }),
            reason,
            scheme: tally.scheme,
            source: None,
        }
    }

    fn refuse_plain(
        &self,
        req: &AuthRequest,
        kind: RefuseKind,
        reason: &'static str,
        tally: Tally,
        source: &Source,
    ) -> Decision {
        Decision {
            verdict: Verdict::Refuse(Refusal {
                kind,
                wait: self.wait_for(req),
            }),
            reason,
            scheme: tally.scheme,
            source: Some(source.name()),
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
            let Source::Htpasswd(file) = source;
            if !file.is_available() {
                temporary = true;
                continue;
            }
            let table = file.table();
            let Some(user) = table.get(&req.user) else {
                continue;
            };
            let matches = match req.method {
                AuthMethod::Apop => user.hash.verify_apop(salt, &req.pass),
                _ => user.hash.verify_cram_md5(salt, &req.pass),
            };
            if !matches {
                continue;
            }
            if user.nologin || !user.allowed_from(req.client_ip) {
                return refuse(RefuseKind::InvalidCredentials, None, "nologin");
            }
            let pass = user
                .hash
                .cleartext()
                .filter(|c| c.len() <= MAX_ECHOED_PASSWORD && is_sendable_value(c));
            if pass.is_none() && req.protocol != MailProtocol::Smtp {
                // nginx must log in to the backend with a password it does not have.
                return refuse(
                    RefuseKind::InvalidCredentials,
                    None,
                    "no-cleartext-for-backend",
                );
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
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Writes the one log line per decision. The password never appears, at any level.
pub fn log_decision(req: &AuthRequest, decision: &Decision, started: Instant) {
    let result = match &decision.verdict {
        Verdict::Accept(_) => "ok",
        Verdict::Refuse(r) => r.kind.as_str(),
    };
    let micros = started.elapsed().as_micros() as u64;
    let user = printable(&req.user);
    let client_ip = req.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let scheme = decision.scheme.as_deref().unwrap_or("-");
    let source = decision.source.as_deref().unwrap_or("-");
    if matches!(decision.verdict, Verdict::Accept(_)) {
        tracing::info!(target: "mailauthd::auth", result, reason = decision.reason, user, protocol = %req.protocol, method = %req.method, client_ip, scheme, source, micros, "login accepted");
    } else {
        tracing::warn!(target: "mailauthd::auth", result, reason = decision.reason, user, protocol = %req.protocol, method = %req.method, client_ip, scheme, source, micros, "login refused");
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
        assert_eq!(
            recipient_domain(b"RCPT TO:b@z.net").as_deref(),
            Some("z.net")
        );
        assert_eq!(recipient_domain(b"RCPT TO:<postmaster>"), None);
        assert_eq!(recipient_domain(b"garbage"), None);
    }
}
