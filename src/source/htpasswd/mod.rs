//! The htpasswd source: a users file in nginx's `auth_basic_user_file` syntax (also Apache
//! htpasswd's, and the start of Dovecot's passwd-file), kept as an immutable table behind an
//! `ArcSwap`. A reload builds a whole new table and swaps it in only when it is good
//! ([`reload`] says when a file is read), so a request never sees a half-read file.
//!
//! - `lines.rs`: the one reader of the line syntax, shared by the table and the editor.
//! - `table.rs` (+ `index.rs`): the users of one file, ready for lookups.
//! - `reload.rs`: when a changed file is read, and how a read survives a rewrite.
//! - `edit.rs`: `mailauthd user`'s atomic, locked edits of a file.

pub(crate) mod edit;
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
    Credentials, DigestAnswer, DigestCredentials, DigestKind, PlainAnswer, ReloadOutcome, SchemeUsed, Severity,
    SourceError, SourceStatus,
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
    // The kind of the last read failure, so a file that stays missing is reported once,
    // not on every poll.
    last_error: Mutex<Option<std::io::ErrorKind>>,
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
        let path = &self.config.path;
        let failed = |source| {
            ReloadOutcome::Failed(SourceError::Read {
                path: path.clone(),
                source,
            })
        };
        let mut stamps = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        let current = match std::fs::metadata(path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(source) => {
                stamps.read = None;
                let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
                if !force && *last_error == Some(source.kind()) {
                    return ReloadOutcome::Unchanged;
                }
                *last_error = Some(source.kind());
                return failed(source);
            }
        };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !force && stamps.read.as_ref() == Some(&current) && self.is_available() {
            return ReloadOutcome::Unchanged;
        }
        let (read_stamp, text) = match read_settled(path, self.quiet, force) {
            Ok(Some(v)) => v,
            // A poll that finds the file still being written looks again next time; that is
            // not worth a word. SIGHUP waited, and says so.
            Ok(None) if !force => return ReloadOutcome::Unchanged,
            Ok(None) => return ReloadOutcome::Unsettled,
            Err(source) => return failed(source),
        };
        let (table, problems) = parse_users_owned(text, path);
        let has_errors = problems.iter().any(|p| p.severity == Severity::Error);
        if has_errors && self.is_available() {
            stamps.read = Some(read_stamp);
            return ReloadOutcome::KeptPrevious { problems };
        }
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
        if self.is_available() {
            let users = self.table().len();
            SourceStatus {
                name,
                ready: true,
                users: Some(users),
                detail: format!("users={users}"),
                summary: users.to_string(),
            }
        } else {
            SourceStatus {
                name,
                ready: false,
                users: None,
                detail: "unavailable".to_owned(),
                summary: "unavailable".to_owned(),
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
            Ok(true) => PlainAnswer::Accepted { backend: None, scheme },
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
        }
    }
}
