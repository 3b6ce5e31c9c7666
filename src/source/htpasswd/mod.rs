//! The htpasswd source: a users file in nginx's `auth_basic_user_file` syntax (also Apache
//! htpasswd's, and the start of Dovecot's passwd-file), kept as an immutable table behind an
//! `ArcSwap`. A reload builds a whole new table and swaps it in whole ([`reload`] says when a
//! file is read), so a request never sees a half-read file.
//!
//! The reload rule, the same at start and on every reload: a file that can be read whole is
//! put in use without its broken lines (each reported with file:line; the source then says
//! it is degraded), so removing a user or changing a password never waits for the rest of
//! the file to be fixed. The last table stays in use only when the file cannot be read as a
//! whole: missing, unreadable, not a regular file, too large, changing during every read, or
//! suddenly without users (see [`reload`]); the source then says so, and why.
//!
//! - `lines.rs`: the one reader of the line syntax, shared by the table and the editor.
//! - `table.rs` (+ `index.rs`): the users of one file, ready for lookups.
//! - `reload.rs`: when a changed file is read, and how a read survives a rewrite.
//! - `edit.rs`: `mailauthd user`'s atomic, locked edits of a file.

pub(crate) mod edit;
#[cfg(test)]
mod edit_props;
mod index;
mod lines;
mod reload;
mod table;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use super::answer::{
    Credentials, DigestAnswer, DigestCredentials, DigestKind, ExternalAnswer, LineProblem, PlainAnswer, ReloadOutcome,
    SchemeUsed, Severity, SourceError, SourceStatus,
};
use crate::config::HtpasswdConfig;
use crate::login::MailProtocol;
use crate::reason::Reason;
use crate::verify::{PoolError, Verifier};
use reload::{EMPTY_HOLD, FileStamp, QUIET, Stamps, quiet_in, read_settled};
use table::{UserTable, parse_users_owned};

/// An htpasswd users file with its current table.
#[derive(Debug)]
pub(crate) struct HtpasswdSource {
    /// Its configuration.
    config: HtpasswdConfig,
    table: ArcSwap<UserTable>,
    loaded: AtomicBool,
    stamp: Mutex<Stamps>,
    // The last read failure, so a file that stays missing (or unreadable) is reported once,
    // not on every poll.
    last_error: Mutex<Option<String>>,
    // Why what is in use is less than the file's latest version, for `/readyz`.
    health: Mutex<Health>,
    // How long a modified file must stay untouched before a poll reads it (`QUIET`).
    quiet: Duration,
    // How long an emptied file must stay untouched before a poll takes it (`EMPTY_HOLD`).
    empty_hold: Duration,
}

impl HtpasswdSource {
    /// A source with no table yet; call [`HtpasswdSource::reload`] to load it.
    pub(crate) fn new(config: HtpasswdConfig) -> HtpasswdSource {
        HtpasswdSource {
            config,
            table: ArcSwap::from_pointee(UserTable::empty()),
            loaded: AtomicBool::new(false),
            stamp: Mutex::new(Stamps::default()),
            last_error: Mutex::new(None),
            health: Mutex::new(Health::default()),
            quiet: QUIET,
            empty_hold: EMPTY_HOLD,
        }
    }

    /// The same source with another quiet period, for tests of what happens after it.
    #[cfg(test)]
    fn with_quiet(mut self, quiet: Duration) -> HtpasswdSource {
        self.quiet = quiet;
        self.empty_hold = self.empty_hold.min(quiet);
        self
    }

    /// The same source with another hold for emptied files.
    #[cfg(test)]
    fn with_empty_hold(mut self, hold: Duration) -> HtpasswdSource {
        self.empty_hold = hold;
        self
    }

    /// The table in use.
    pub(crate) fn table(&self) -> Arc<UserTable> {
        self.table.load_full()
    }

    /// Whether a table has ever been loaded. Until then every login it is asked about gets a
    /// temporary failure, not "invalid password".
    pub(crate) fn is_available(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The users file.
    pub(crate) fn path(&self) -> &Path {
        &self.config.path
    }

    /// Re-reads the file if it changed (or always, with `force`).
    pub(crate) fn reload(&self, force: bool) -> ReloadOutcome {
        let outcome = self.reload_inner(force);
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match &outcome {
            ReloadOutcome::Loaded { problems, .. } => {
                *health = Health::from_problems(problems);
            }
            ReloadOutcome::Failed(e) => health.kept = Some(e.to_string()),
            ReloadOutcome::Unsettled => {
                health.kept = Some("the file kept changing while it was read".to_owned());
            }
            ReloadOutcome::SuspiciousEmpty { .. } => {
                health.kept = Some(format!(
                    "the file has no users any more; taken once it has been left alone for {} s",
                    self.empty_hold.as_secs()
                ));
            }
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    /// A read failure: reported once while it stays the same (every time with `force`).
    fn failed(&self, error: SourceError, force: bool) -> ReloadOutcome {
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let message = error.to_string();
        if !force && last_error.as_deref() == Some(message.as_str()) {
            return ReloadOutcome::Unchanged;
        }
        *last_error = Some(message);
        ReloadOutcome::Failed(error)
    }

    fn reload_inner(&self, force: bool) -> ReloadOutcome {
        let path = &self.config.path;
        let mut stamps = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        let current = match std::fs::metadata(path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(source) => {
                stamps.read = None;
                let error = SourceError::Read {
                    path: path.clone(),
                    source,
                };
                return self.failed(error, force);
            }
        };
        if !force && stamps.read.as_ref() == Some(&current) && self.is_available() {
            return ReloadOutcome::Unchanged;
        }
        let (read_stamp, text) = match read_settled(path, self.quiet, force) {
            Ok(Some(v)) => v,
            // A poll that finds the file still being written looks again next time; that is
            // not worth a word. SIGHUP waited, and says so.
            Ok(None) if !force => return ReloadOutcome::Unchanged,
            Ok(None) => return ReloadOutcome::Unsettled,
            Err(error) => return self.failed(error, force),
        };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Broken lines are skipped, not a reason to keep the last table: the rest of the
        // file is what the admin wrote, and nginx and Dovecot read it the same way.
        let (table, problems) = parse_users_owned(text, path);
        let kept_users = self.table.load().len();
        // An emptied file is taken once it has been seen twice and left alone for
        // `empty_hold`: a rewrite whose writer stalls after truncating must not lock everyone
        // out. `read` is left alone so that the next poll reads the file again.
        let first_sight = stamps.pending_empty.as_ref() != Some(&read_stamp);
        if table.is_empty()
            && kept_users > 0
            && !force
            && (first_sight || !quiet_in(&read_stamp, self.empty_hold).is_zero())
        {
            stamps.pending_empty = Some(read_stamp);
            return if first_sight {
                ReloadOutcome::SuspiciousEmpty { kept_users }
            } else {
                ReloadOutcome::Unchanged
            };
        }
        stamps.read = Some(read_stamp);
        stamps.pending_empty = None;
        let users = table.len();
        self.table.store(Arc::new(table));
        self.loaded.store(true, Ordering::Release);
        ReloadOutcome::Loaded { users, problems }
    }
}

/// Why a source answers with less than its file's latest version.
#[derive(Debug, Default)]
struct Health {
    /// Broken lines skipped in the table in use: how many, and the first few numbers.
    broken: usize,
    first_broken: Vec<usize>,
    /// Why the last table is kept instead of the file's latest version.
    kept: Option<String>,
}

impl Health {
    /// Line numbers named in `/readyz`; the log has them all.
    const SHOWN_LINES: usize = 5;

    /// The health of a table just loaded with `problems`.
    fn from_problems(problems: &[LineProblem]) -> Health {
        let broken = problems.iter().filter(|p| p.severity == Severity::Error);
        Health {
            first_broken: broken.clone().take(Self::SHOWN_LINES).map(|p| p.line).collect(),
            broken: broken.count(),
            kept: None,
        }
    }

    /// One sentence on what is wrong, or `None` when nothing is.
    fn describe(&self, path: &Path) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(why) = &self.kept {
            parts.push(format!("keeping the last good table: {why}"));
        }
        if self.broken > 0 {
            let lines: Vec<String> = self.first_broken.iter().map(ToString::to_string).collect();
            let more = if self.broken > self.first_broken.len() {
                ", ..."
            } else {
                ""
            };
            parts.push(format!(
                "{} broken line(s) skipped in {} (line {}{more})",
                self.broken,
                path.display(),
                lines.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl HtpasswdSource {
    /// A short name for logs: `htpasswd:<path>`.
    pub(crate) fn name(&self) -> String {
        format!("htpasswd:{}", self.path().display())
    }

    /// The protocols this source serves (`None`: all).
    pub(crate) fn protocols(&self) -> Option<&[MailProtocol]> {
        self.config.protocols.as_deref()
    }

    /// The state of this source for `/readyz` and the "in use" line.
    pub(crate) fn status(&self) -> SourceStatus {
        let name = self.name();
        let trouble = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .describe(self.path());
        if self.is_available() {
            let users = self.table().len();
            let detail = match &trouble {
                Some(why) => format!("users={users} degraded: {why}"),
                None => format!("users={users}"),
            };
            SourceStatus {
                name,
                ready: true,
                users: Some(users),
                detail,
                summary: users.to_string(),
                degraded: trouble,
            }
        } else {
            // Never loaded: there is no table to keep, only the reason.
            let detail = match self.last_error.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                Some(why) => format!("unavailable: {why}"),
                None => "unavailable".to_owned(),
            };
            SourceStatus {
                name,
                ready: false,
                users: None,
                detail,
                summary: "unavailable".to_owned(),
                degraded: None,
            }
        }
    }

    /// Checks a password login. The password is verified before the account's own rules,
    /// so a disabled account costs the same, and its refusal is final whatever the
    /// password: a later source must not re-enable it.
    pub(crate) async fn check_plain(&self, creds: &Credentials<'_>, verifier: &Verifier) -> PlainAnswer {
        if !self.is_available() {
            return PlainAnswer::Unavailable {
                reason: Reason::SourceUnavailable,
            };
        }
        let table = self.table();
        let Some(user) = table.get(creds.user) else {
            return PlainAnswer::UnknownUser {
                dummy: table.dummy_for(creds.user),
            };
        };
        let scope = self.config.path.as_os_str().as_encoded_bytes();
        let verified = verifier.verify_login(scope, creds.user, creds.pass, &user.hash).await;
        let scheme = Some(SchemeUsed {
            label: user.hash.cost_label(),
            cached: verified.is_ok_and(|v| v.cached),
        });
        match verified.map(|v| v.right) {
            Ok(_) if let Some(reason) = user.refusal(creds.client_ip) => PlainAnswer::Disabled { reason, scheme },
            Ok(true) => PlainAnswer::Accepted {
                route: user.route.clone(),
                scheme,
            },
            Ok(false) => PlainAnswer::Rejected {
                reason: Reason::WrongPassword,
                scheme,
            },
            Err(PoolError::Overloaded) => PlainAnswer::Unavailable {
                reason: Reason::Overloaded,
            },
            Err(PoolError::Stopped) => PlainAnswer::Unavailable {
                reason: Reason::InternalError,
            },
        }
    }

    /// Checks an APOP or CRAM-MD5 digest against the stored secret (a cleartext, or
    /// Dovecot's `{CRAM-MD5}` states).
    pub(crate) fn check_digest(&self, creds: &DigestCredentials<'_>) -> DigestAnswer {
        if !self.is_available() {
            return DigestAnswer::Unavailable {
                reason: Reason::SourceUnavailable,
            };
        }
        let table = self.table();
        let Some(user) = table.get(creds.user) else {
            return DigestAnswer::UnknownUser;
        };
        if let Some(reason) = user.refusal(creds.client_ip) {
            return DigestAnswer::Disabled { reason };
        }
        let matches = match creds.kind {
            DigestKind::Apop => user.hash.verify_apop(creds.salt, creds.response),
            DigestKind::CramMd5 => user.hash.verify_cram_md5(creds.salt, creds.response),
        };
        if !matches {
            return DigestAnswer::Rejected;
        }
        DigestAnswer::Accepted {
            cleartext: user.hash.cleartext().map(|c| Zeroizing::new(c.to_vec())),
            scheme: SchemeUsed::of(&user.hash),
            route: user.route.clone(),
        }
    }

    /// Looks up a user named by SASL EXTERNAL (no password is checked): see
    /// [`crate::source::Source::lookup_for_external`].
    pub(crate) fn lookup_for_external(&self, user: &[u8], client_ip: Option<std::net::IpAddr>) -> ExternalAnswer {
        if !self.is_available() {
            return ExternalAnswer::Unavailable {
                reason: Reason::SourceUnavailable,
            };
        }
        let Some(found) = self.table().get(user) else {
            return ExternalAnswer::UnknownUser;
        };
        if let Some(reason) = found.refusal(client_ip) {
            return ExternalAnswer::Disabled { reason };
        }
        ExternalAnswer::Found {
            cleartext: found.hash.cleartext().map(|c| Zeroizing::new(c.to_vec())),
            cert_fingerprint: found.cert_fingerprint(),
            route: found.route.clone(),
        }
    }
}

/// For the fuzz targets: loads `text` as a users file and looks each of `names` up. Returns
/// the number of users loaded, each name's hash (`None`: not in the table) and the problems.
#[cfg(fuzzing)]
pub(crate) fn fuzz_lookup(
    text: &[u8],
    names: &[Vec<u8>],
) -> (
    usize,
    Vec<Option<Arc<crate::hash::StoredHash>>>,
    Vec<super::answer::LineProblem>,
) {
    let (table, problems) = parse_users_owned(text.to_vec(), Path::new("fuzz.htpasswd"));
    let hashes = names
        .iter()
        .map(|n| table.get(n).map(|u| Arc::clone(&u.hash)))
        .collect();
    (table.len(), hashes, problems)
}
