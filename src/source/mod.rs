//! Credential sources: where users and their password hashes live. Each source keeps an
//! immutable snapshot behind an `ArcSwap`; a reload builds a whole new snapshot and swaps it
//! in only when it is good, so a request never sees a half-read file.

pub mod htpasswd;
pub mod http_basic;

use std::fs::Metadata;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

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
    /// The user is known, and the password is wrong or the user may not log in.
    Rejected {
        /// Why, e.g. `wrong-password`, `nologin`.
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
    stamp: Mutex<Option<FileStamp>>,
    // The kind of the last read failure, so a file that stays missing is reported once,
    // not on every poll.
    last_error: Mutex<Option<std::io::ErrorKind>>,
}

impl HtpasswdSource {
    /// A source with no table yet; call [`HtpasswdSource::reload`] to load it.
    pub fn new(config: HtpasswdConfig) -> HtpasswdSource {
        HtpasswdSource {
            config,
            table: ArcSwap::from_pointee(UserTable::empty()),
            loaded: AtomicBool::new(false),
            stamp: Mutex::new(None),
            last_error: Mutex::new(None),
        }
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
        let read = || -> Result<(FileStamp, Vec<u8>), std::io::Error> {
            let before = FileStamp::of(&std::fs::metadata(path)?);
            let text = std::fs::read(path)?;
            Ok((before, text))
        };
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        let current = match std::fs::metadata(path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(source) => {
                *stamp = None;
                let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
                if !force && *last_error == Some(source.kind()) {
                    return ReloadOutcome::Unchanged;
                }
                *last_error = Some(source.kind());
                return ReloadOutcome::Failed(SourceError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !force && stamp.as_ref() == Some(&current) && self.is_available() {
            return ReloadOutcome::Unchanged;
        }
        let (read_stamp, text) = match read() {
            Ok(v) => v,
            Err(source) => {
                return ReloadOutcome::Failed(SourceError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        let (table, problems) = htpasswd::parse_users(&text, path);
        *stamp = Some(read_stamp);
        let has_errors = problems.iter().any(|p| p.severity == Severity::Error);
        if has_errors && self.is_available() {
            return ReloadOutcome::KeptPrevious { problems };
        }
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
        let scheme = Some(user.hash.cost_label());
        let pass = creds.pass.clone();
        match pool.run(user.hash.clone(), move |h| h.verify(&pass)).await {
            // The password is checked first so that the answer does not tell whether it was
            // right for a user who may not log in.
            Ok(true) if user.nologin => PlainAnswer::Rejected {
                reason: "nologin",
                scheme,
            },
            Ok(true) if !user.allowed_from(creds.client_ip) => PlainAnswer::Rejected {
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
