//! Credential sources: where users and their password hashes live. Each source keeps an
//! immutable snapshot behind an `ArcSwap`; a reload builds a whole new snapshot and swaps it
//! in only when it is good, so a request never sees a half-read file.
//!
//! A users file may be replaced by a rename (`mailauthd user`, `htpasswd`, most editors) or
//! rewritten in place (`>`, some editors). A rename is always read whole. An in-place rewrite
//! can be caught half-way, so a read counts only if the file's size and mtime are the same
//! before and after it (and, for a file changed in the last two seconds, again a moment
//! later); otherwise it is retried, and after a few tries left to the next poll. A file that
//! suddenly has no users while the table in use has some is taken as a rewrite caught
//! between truncation and writing: the last table stays until the file has looked the same
//! for one more poll (a SIGHUP reload takes it at once).

pub mod edit;
pub mod htpasswd;
pub mod http_basic;

use std::fs::Metadata;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use std::net::{IpAddr, SocketAddr};

use zeroize::Zeroizing;

use crate::config::{HtpasswdConfig, SourceConfig};
use crate::hash::StoredHash;
use crate::protocol::MailProtocol;
use crate::verify_pool::{PoolError, VerifyPool};
use htpasswd::{LineProblem, Severity, UserTable};

/// A password login as a source sees it.
pub struct Credentials<'a> {
    /// The login, decoded bytes.
    pub user: &'a [u8],
    /// The password, decoded bytes.
    pub pass: &'a Zeroizing<Vec<u8>>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The mail protocol.
    pub protocol: MailProtocol,
}

/// What a source says about a password login.
#[derive(Debug)]
pub enum PlainAnswer {
    /// The password is right and the user may log in.
    Accepted {
        /// A backend chosen by the source for this login, overriding `[route]`.
        backend: Option<SocketAddr>,
        /// The scheme and cost verified.
        scheme: Option<String>,
    },
    /// The user is known and the password is wrong: the next source may still accept it.
    Rejected {
        /// Why, e.g. `wrong-password`.
        reason: &'static str,
        /// The scheme and cost verified.
        scheme: Option<String>,
    },
    /// The user is known and may not log in (`nologin`, `allow_nets`): final, so an entry
    /// in a later source cannot re-enable a disabled account.
    Disabled {
        /// Why, e.g. `nologin`, `not-allowed-from-network`.
        reason: &'static str,
        /// The scheme and cost verified.
        scheme: Option<String>,
    },
    /// The source does not know the user.
    UnknownUser {
        /// A hash to verify anyway, so that an unknown user costs what a wrong password costs.
        dummy: Option<Arc<StoredHash>>,
    },
    /// The source cannot answer now (unreadable file, overloaded pool, upstream down).
    Unavailable {
        /// Why, e.g. `source-unavailable`, `overloaded`.
        reason: &'static str,
    },
}

/// Why a source could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a (re)load did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The file has not changed since the last load.
    Unchanged,
    /// A new table is in use.
    Loaded {
        /// Users in the new table.
        users: usize,
        /// Lines skipped (warnings, and errors on the first load).
        problems: Vec<LineProblem>,
    },
    /// The new file has broken lines; the last good table stays in use.
    KeptPrevious {
        /// Every problem of the new file.
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

/// Reads of a changing file before giving up until the next poll.
const READ_TRIES: usize = 5;
/// A file modified less than this long ago may still be in the middle of an in-place
/// rewrite (a writer paused at a line boundary leaves a file that parses, with users
/// missing): a poll leaves it for the next one, SIGHUP waits this long at most.
const QUIET: Duration = Duration::from_millis(300);

/// How much longer `stamp`'s file must stay unmodified to have been quiet for `quiet` (zero
/// if it has, or if its mtime is unknown or in the future).
fn quiet_in(stamp: &FileStamp, quiet: Duration) -> Duration {
    let age = stamp.modified.and_then(|m| SystemTime::now().duration_since(m).ok());
    age.map_or(Duration::ZERO, |age| quiet.saturating_sub(age))
}

/// How long a file that suddenly has no users must stay untouched before a poll takes it
/// (SIGHUP takes it at once).
const EMPTY_HOLD: Duration = Duration::from_secs(5);

/// The shortest pause before SIGHUP looks again at a file that changed under the read.
const SETTLE: Duration = Duration::from_millis(20);

/// Reads the whole file once it has been quiet for `quiet` and did not change during the
/// read: the quiet check is made on the opened file, and the stamps before and after the
/// read must agree, so a rewrite that starts at any point is noticed. `None`: it did not
/// hold still; a poll (`patient == false`) gives up at once and looks again next time,
/// SIGHUP waits up to `READ_TRIES` quiet periods.
fn read_settled(path: &Path, quiet: Duration, patient: bool) -> Result<Option<(FileStamp, Vec<u8>)>, std::io::Error> {
    use std::io::Read;
    for _ in 0..READ_TRIES {
        let mut file = std::fs::File::open(path)?;
        let before = FileStamp::of(&file.metadata()?);
        let wait = quiet_in(&before, quiet);
        if wait.is_zero() {
            let mut text = Vec::with_capacity(usize::try_from(before.len).unwrap_or(0));
            file.read_to_end(&mut text)?;
            let after = FileStamp::of(&file.metadata()?);
            if after == before && text.len() as u64 == before.len {
                return Ok(Some((before, text)));
            }
        }
        if !patient {
            return Ok(None);
        }
        std::thread::sleep(wait.max(SETTLE));
    }
    Ok(None)
}

/// File identity and version, to notice edits, atomic renames and truncations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    fn of(meta: &Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// An htpasswd users file with its current table.
#[derive(Debug)]
pub struct HtpasswdSource {
    /// Its configuration.
    pub config: HtpasswdConfig,
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

/// What the reloader remembers about the file between polls.
#[derive(Debug, Default)]
struct Stamps {
    /// The version the table in use (or the last rejected version) was read from.
    read: Option<FileStamp>,
    /// A version with no users, seen once and not taken yet.
    pending_empty: Option<FileStamp>,
}

impl HtpasswdSource {
    /// A source with no table yet; call [`HtpasswdSource::reload`] to load it.
    pub fn new(config: HtpasswdConfig) -> HtpasswdSource {
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
    pub fn table(&self) -> Arc<UserTable> {
        self.table.load_full()
    }

    /// Whether a table has ever been loaded. Until then every login it is asked about gets a
    /// temporary failure, not "invalid password".
    pub fn is_available(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The users file.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Re-reads the file if it changed (or always, with `force`).
    pub fn reload(&self, force: bool) -> ReloadOutcome {
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
        let (table, problems) = htpasswd::parse_users_owned(text, path);
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
    async fn check_plain(&self, creds: &Credentials<'_>, pool: &VerifyPool) -> PlainAnswer {
        if !self.is_available() {
            return PlainAnswer::Unavailable {
                reason: "source-unavailable",
            };
        }
        let table = self.table();
        let Some(user) = table.get(creds.user) else {
            return PlainAnswer::UnknownUser {
                dummy: table.dummy().cloned(),
            };
        };
        let scope = self.config.path.as_os_str().as_encoded_bytes();
        let verified = pool.verify_login(scope, creds.user, creds.pass, &user.hash).await;
        let scheme = Some(match verified {
            Ok(v) if v.cached => format!("{}+cached", user.hash.cost_label()),
            _ => user.hash.cost_label(),
        });
        match verified.map(|v| v.right) {
            // The password is verified first, so a disabled account costs the same, and the
            // refusal is final whatever the password: a later source must not re-enable it.
            Ok(_) if user.nologin => PlainAnswer::Disabled {
                reason: "nologin",
                scheme,
            },
            Ok(_) if !user.allowed_from(creds.client_ip) => PlainAnswer::Disabled {
                reason: "not-allowed-from-network",
                scheme,
            },
            Ok(true) => PlainAnswer::Accepted { backend: None, scheme },
            Ok(false) => PlainAnswer::Rejected {
                reason: "wrong-password",
                scheme,
            },
            Err(PoolError::Overloaded) => PlainAnswer::Unavailable { reason: "overloaded" },
            Err(PoolError::Stopped) => PlainAnswer::Unavailable {
                reason: "internal-error",
            },
        }
    }
}

/// One configured credential source.
#[derive(Debug)]
pub enum Source {
    /// An htpasswd users file.
    Htpasswd(HtpasswdSource),
    /// A URL protected by HTTP Basic auth.
    HttpBasic(Box<http_basic::HttpBasicSource>),
}

impl Source {
    /// Builds the source for a config entry (not loaded yet).
    pub fn new(config: &SourceConfig) -> Source {
        match config {
            SourceConfig::Htpasswd(c) => Source::Htpasswd(HtpasswdSource::new(c.clone())),
            SourceConfig::HttpBasic(c) => Source::HttpBasic(Box::new(http_basic::HttpBasicSource::new((**c).clone()))),
        }
    }

    /// Whether this source may accept logins of `protocol`.
    pub fn serves(&self, protocol: MailProtocol) -> bool {
        let protocols = match self {
            Source::Htpasswd(s) => &s.config.protocols,
            Source::HttpBasic(s) => &s.config.protocols,
        };
        protocols.as_ref().is_none_or(|list| list.contains(&protocol))
    }

    /// Whether the source can answer now: a loaded table, a closed breaker.
    pub fn is_available(&self) -> bool {
        match self {
            Source::Htpasswd(s) => s.is_available(),
            Source::HttpBasic(s) => s.is_available(),
        }
    }

    /// Checks a password login against this source.
    pub async fn check_plain(&self, creds: &Credentials<'_>, pool: &VerifyPool) -> PlainAnswer {
        match self {
            Source::Htpasswd(file) => file.check_plain(creds, pool).await,
            Source::HttpBasic(upstream) => upstream.check_plain(creds).await,
        }
    }

    /// A short name for logs, e.g. `htpasswd:/etc/mail/users`.
    pub fn name(&self) -> String {
        match self {
            Source::Htpasswd(s) => format!("htpasswd:{}", s.path().display()),
            Source::HttpBasic(s) => s.name().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
