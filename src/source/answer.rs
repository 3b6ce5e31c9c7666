//! The vocabulary every credential source shares: the login as a source sees it, what a
//! source answers, what a (re)load did, and how a source reports its state. A leaf: it
//! imports no backend, so every backend folder and the dispatch in `source/mod.rs` build on
//! it without loops.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::hash::StoredHash;
use crate::reason::Reason;

/// A password login as a source sees it.
pub(crate) struct Credentials<'a> {
    /// The login, decoded bytes.
    pub user: &'a [u8],
    /// The password, decoded bytes.
    pub pass: &'a Zeroizing<Vec<u8>>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
}

/// Which challenge-response a digest login used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestKind {
    /// POP3 APOP: hex MD5(salt ‖ password).
    Apop,
    /// SASL CRAM-MD5: hex HMAC-MD5(password, salt).
    CramMd5,
}

/// An APOP or CRAM-MD5 login as a source sees it.
pub(crate) struct DigestCredentials<'a> {
    /// The login, decoded bytes.
    pub user: &'a [u8],
    /// APOP or CRAM-MD5.
    pub kind: DigestKind,
    /// The challenge nginx sent the client (`Auth-Salt`).
    pub salt: &'a [u8],
    /// The client's answer (`Auth-Pass`).
    pub response: &'a [u8],
    /// The client's address.
    pub client_ip: Option<IpAddr>,
}

/// The scheme and cost a login was verified with, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemeUsed {
    /// The scheme and cost, e.g. `bcrypt-10`.
    pub label: String,
    /// The answer came from the verified-login cache, without hashing.
    pub cached: bool,
}

impl SchemeUsed {
    /// A verification of `hash`, hashed now.
    pub(crate) fn of(hash: &StoredHash) -> SchemeUsed {
        SchemeUsed {
            label: hash.cost_label(),
            cached: false,
        }
    }
}

impl fmt::Display for SchemeUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)?;
        if self.cached {
            f.write_str("+cached")?;
        }
        Ok(())
    }
}

/// The routing facts a source gave with its answer (Dovecot passwd-file proxy fields, an
/// upstream's routing headers): they take precedence over `[route.domains]` and `[route]`.
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct SourceRoute {
    /// The backend host (`host=`, an upstream's server header): an IP address.
    pub host: Option<IpAddr>,
    /// The backend port (`port=`); with no host, the port on the backend chosen by the
    /// other rules.
    pub port: Option<u16>,
    /// The name the backend sees (`destuser=`): the reply's `Auth-User`.
    pub destuser: Option<String>,
    /// The password the backend gets (`pass=`): the reply's `Auth-Pass`.
    pub pass: Option<Zeroizing<Vec<u8>>>,
    /// Why a proxy field could not be used (a `host=` name, which is never resolved per
    /// login; a bad `port=`): the login gets a temporary failure rather than another backend.
    pub unusable: Option<String>,
}

impl SourceRoute {
    /// A backend named by an address (an upstream's routing headers).
    pub(crate) fn at(addr: SocketAddr) -> SourceRoute {
        SourceRoute {
            host: Some(addr.ip()),
            port: Some(addr.port()),
            ..SourceRoute::default()
        }
    }
}

impl fmt::Debug for SourceRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRoute")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("destuser", &self.destuser)
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .field("unusable", &self.unusable)
            .finish()
    }
}

/// What a source says about a password login.
#[derive(Debug)]
pub(crate) enum PlainAnswer {
    /// The password is right and the user may log in.
    Accepted {
        /// The routing facts the source gave for this login.
        route: SourceRoute,
        /// The scheme and cost verified.
        scheme: Option<SchemeUsed>,
    },
    /// The user is known and the password is wrong: the next source may still accept it.
    Rejected {
        /// Why, e.g. [`Reason::WrongPassword`].
        reason: Reason,
        /// The scheme and cost verified.
        scheme: Option<SchemeUsed>,
    },
    /// The user is known and may not log in (`nologin`, `allow_nets`): final, so an entry
    /// in a later source cannot re-enable a disabled account.
    Disabled {
        /// Why, e.g. [`Reason::Nologin`].
        reason: Reason,
        /// The scheme and cost verified.
        scheme: Option<SchemeUsed>,
    },
    /// The source does not know the user.
    UnknownUser {
        /// A hash to verify anyway, so that an unknown user costs what a wrong password costs.
        dummy: Option<Arc<StoredHash>>,
    },
    /// The source cannot answer now (unreadable file, overloaded pool, upstream down).
    Unavailable {
        /// Why, e.g. [`Reason::SourceUnavailable`].
        reason: Reason,
    },
}

/// What a source says about an APOP or CRAM-MD5 login.
#[derive(Debug)]
pub(crate) enum DigestAnswer {
    /// The digest is right and the user may log in.
    Accepted {
        /// The stored cleartext, which nginx needs to log in to an IMAP or POP3 backend
        /// (`None` when the source keeps none, e.g. Dovecot's `{CRAM-MD5}`).
        cleartext: Option<Zeroizing<Vec<u8>>>,
        /// The scheme the digest was checked against.
        scheme: SchemeUsed,
        /// The routing facts the source gave for this login.
        route: SourceRoute,
    },
    /// The user is known and the digest is wrong: the next source may still accept it.
    Rejected,
    /// The user is known and may not log in: final, as for passwords.
    Disabled {
        /// Why.
        reason: Reason,
    },
    /// The source does not know the user, or cannot check a digest at all (an upstream
    /// sees only cleartext passwords).
    UnknownUser,
    /// The source cannot answer now.
    Unavailable {
        /// Why.
        reason: Reason,
    },
}

/// What a source says about a user named by SASL EXTERNAL, whose identity nginx's client
/// certificate check or the client's network vouches for: no password is checked.
#[derive(Debug)]
pub(crate) enum ExternalAnswer {
    /// The user exists and may log in.
    Found {
        /// The stored cleartext, which nginx needs to log in to an IMAP or POP3 backend.
        cleartext: Option<Zeroizing<Vec<u8>>>,
        /// The user's `cert_fingerprint=`, lower-case hex without `:`.
        cert_fingerprint: Option<String>,
        /// Where the user's logins go, when the source says (`host=`, `port=`, ...).
        route: SourceRoute,
    },
    /// The user is known and may not log in: final, as for passwords.
    Disabled {
        /// Why.
        reason: Reason,
    },
    /// The source does not know the user, or cannot look one up without a password (an
    /// upstream).
    UnknownUser,
    /// The source cannot answer now.
    Unavailable {
        /// Why.
        reason: Reason,
    },
}

/// How serious a problem with a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// The line is skipped (an unsupported scheme, a duplicate user) or a part of it is not
    /// used (an unknown extra field); the rest of the file is fine.
    Warning,
    /// The line is broken (no hash, a malformed hash): it is skipped, and the source reports
    /// itself degraded until the file is fixed.
    Error,
}

/// A problem with one line of a users file. Never contains a hash or a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineProblem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Why a source could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The users file is a FIFO, a device, a folder or a socket: reading it could block the
    /// reloader for good or never end.
    #[error("users file {path} is not a regular file (it is a {kind}); point `path` at a file")]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead, e.g. `FIFO`.
        kind: &'static str,
    },
    /// The users file is larger than a users file may be.
    #[error("users file {path} is {len} bytes, over the cap of {cap} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The cap.
        cap: u64,
    },
}

/// What a (re)load did.
#[derive(Debug)]
pub(crate) enum ReloadOutcome {
    /// Nothing new: the file has not changed, or the source has nothing to load.
    Unchanged,
    /// A new table is in use: every user of the file but those on broken lines, on the
    /// first load and on a reload alike.
    Loaded {
        /// Users in the new table.
        users: usize,
        /// Every problem of the file: warnings, and the broken lines that were skipped.
        problems: Vec<LineProblem>,
    },
    /// The file could not be read; the last good table (if any) stays in use.
    Failed(SourceError),
    /// The file changed while it was read, every try; the last table stays, the next poll
    /// tries again.
    Unsettled,
    /// The file has no users any more while the table in use has some; the last table stays
    /// until the file is unchanged at the next poll.
    SuspiciousEmpty {
        /// Users in the table kept.
        kept_users: usize,
    },
}

/// What `check-config` prints about one source, and how many errors it found.
#[derive(Debug, Default)]
pub(crate) struct CheckReport {
    /// Lines to print, in order.
    pub lines: Vec<String>,
    /// Problems that make the config unusable.
    pub errors: usize,
}

impl ReloadOutcome {
    /// Whether a new file was read and put in use, so that what is in use may have changed.
    pub(crate) fn read_new_file(&self) -> bool {
        matches!(self, ReloadOutcome::Loaded { .. })
    }

    /// For a table taken, how many broken lines it skipped (`None`: no table was taken).
    pub(crate) fn broken_lines(&self) -> Option<usize> {
        match self {
            ReloadOutcome::Loaded { problems, .. } => {
                Some(problems.iter().filter(|p| p.severity == Severity::Error).count())
            }
            _ => None,
        }
    }

    /// The `result`/`reason` of `mailauthd_reloads_total`, and the users now loaded:
    /// `None` for nothing to count, `Ok(users)` for a table taken, `Err(reason)` otherwise.
    pub(crate) fn metric(&self) -> Option<Result<usize, &'static str>> {
        match self {
            ReloadOutcome::Unchanged => None,
            ReloadOutcome::Loaded { users, .. } => Some(Ok(*users)),
            ReloadOutcome::Failed(_) => Some(Err("unreadable")),
            ReloadOutcome::Unsettled => Some(Err("unsettled")),
            ReloadOutcome::SuspiciousEmpty { .. } => Some(Err("emptied")),
        }
    }

    /// Logs what the (re)load of source `name` did: every skipped line with its file:line.
    /// `has_table`: whether the source still has a table in use after a failure.
    pub(crate) fn log(&self, name: &str, has_table: bool) {
        match self {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Loaded { users, problems } => {
                for p in problems {
                    match p.severity {
                        Severity::Error => tracing::error!("{p}; line skipped"),
                        Severity::Warning => tracing::warn!("{p}"),
                    }
                }
                tracing::info!(source = %name, users, skipped_lines = problems.len(), "users loaded");
                if let Some(broken) = self.broken_lines().filter(|&n| n > 0) {
                    tracing::warn!(source = %name, broken_lines = broken, "users file has broken lines; the rest of it is in use, the source is degraded until they are fixed");
                }
            }
            ReloadOutcome::Unsettled => {
                tracing::warn!(source = %name, "users file kept changing while it was read; keeping the last version, retrying at the next poll");
            }
            ReloadOutcome::SuspiciousEmpty { kept_users } => {
                tracing::warn!(source = %name, kept_users, "users file has no users any more; keeping the last version until the file has been left alone for 5 s (SIGHUP takes it at once)");
            }
            ReloadOutcome::Failed(e) if has_table => {
                tracing::error!(source = %name, "{e}; keeping the last good version");
            }
            ReloadOutcome::Failed(e) => {
                tracing::error!(source = %name, "{e}; logins it would decide get a temporary failure until it can be read");
            }
        }
    }

    /// What `check-config` says about the first load of source `name`.
    pub(crate) fn check_report(&self, name: &str) -> CheckReport {
        let mut report = CheckReport::default();
        match self {
            ReloadOutcome::Loaded { users, problems } => {
                for p in problems {
                    let level = match p.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    };
                    report.errors += usize::from(p.severity == Severity::Error);
                    report.lines.push(format!("{level}: {p}"));
                }
                report.lines.push(format!("{name}: {users} user(s)"));
                if let Some(broken) = self.broken_lines().filter(|&n| n > 0) {
                    report.lines.push(format!(
                        "{name}: degraded: {broken} broken line(s) skipped; the daemon would serve the other users"
                    ));
                }
            }
            ReloadOutcome::Failed(e) => {
                report.errors += 1;
                report.lines.push(format!("error: {e}"));
            }
            ReloadOutcome::Unsettled => {
                report.errors += 1;
                report.lines.push(format!(
                    "error: {name}: the file kept changing while it was read; run again"
                ));
            }
            ReloadOutcome::Unchanged | ReloadOutcome::SuspiciousEmpty { .. } => {}
        }
        report
    }
}

/// A source's state, for `/readyz` and the "in use" log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceStatus {
    /// The source's name, e.g. `htpasswd:/etc/mail/users`.
    pub name: String,
    /// Whether it can answer logins now.
    pub ready: bool,
    /// Users loaded, when the source is a loaded file.
    pub users: Option<usize>,
    /// Its state for `/readyz`: `users=N`, `unavailable`, `breaker=closed`, `breaker=open`.
    pub detail: String,
    /// Why a ready source answers with less than its latest data (broken lines skipped, the
    /// last good table kept), for `/readyz`; `None` when it is whole.
    pub degraded: Option<String>,
    /// Its state for the "in use" log line: the user count, `unavailable` or `upstream`.
    pub summary: String,
}
