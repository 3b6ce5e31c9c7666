//! Safe edits of a users file, for `mailauthd user`: the line transformations (pure, on
//! bytes) and the one way they reach the disk — an advisory lock, a temp file in the same
//! folder, fsync, rename over the original, fsync of the folder.
//!
//! A reader (the daemon, nginx, Dovecot) therefore always sees either the whole old file or
//! the whole new one, even if the editing process is killed at any point. Only the edited
//! user's line changes: comments, blank lines, unknown lines, line endings and the order of
//! the other lines are kept byte for byte.
//!
//! A process killed between creating its temp file and renaming it leaves a file named
//! `.<name>.mailauthd-<random>.tmp` beside the users file; the next edit of that file
//! removes such leftovers while it holds the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lines::{is_blank_or_comment, raw_lines, split_user_line};
use crate::login::printable;

/// How long an edit waits for another edit of the same file to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Mode of a users file created by `add` (before the umask): nginx's and Dovecot's group may
/// read it, nobody else.
const NEW_FILE_MODE: u32 = 0o640;
/// Longest user name accepted, as htpasswd(1).
const MAX_USER_LEN: usize = 255;

/// Why an edit did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    /// `add` of a user the file already has.
    #[error("user {0} already exists; use `mailauthd user passwd` to change the password")]
    UserExists(String),
    /// `passwd`, `del` or `verify` of a user the file does not have.
    #[error("user {0} does not exist; use `mailauthd user add` to create it")]
    UserAbsent(String),
    /// A user name that cannot be written to a users file.
    #[error("invalid user name {name}: {reason}")]
    BadUserName {
        /// The name, control bytes escaped.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `del` of the file's first user when the line after it starts with a byte order
    /// mark: at the start of the file the mark is the file's own, not part of the name, so
    /// the deletion would rename that user.
    #[error(
        "cannot delete user {0}: the line after it starts with a byte order mark (U+FEFF), which at the \
         start of the file would stop being part of that user's name; remove the stray mark first"
    )]
    BomWouldLead(String),
    /// A passwd-file extra field that cannot be written (`--field`).
    #[error("invalid field {field}: {reason}")]
    BadField {
        /// The field's key (a value may be a password: never shown).
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `read`, `lock`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The users file is a symlink to a file that does not exist. Creating the file there
    /// and renaming the new version over the link would replace the link with a plain file
    /// that the daemon reads while nginx or Dovecot still read the (missing) target.
    #[error(
        "{} is a symlink to {}, which does not exist; create that file (or fix the link) first",
        path.display(),
        target.display()
    )]
    DanglingLink {
        /// The users file as given.
        path: PathBuf,
        /// Where the link points.
        target: PathBuf,
    },
    /// Another edit held the lock for too long.
    #[error("{} is locked by another edit for more than {}s; try again", path.display(), LOCK_WAIT.as_secs())]
    Locked {
        /// The users file.
        path: PathBuf,
    },
    /// The new file could not be given the original's owner.
    #[error(
        "cannot keep the owner {uid}:{gid} of {}: {source}; run as root or as that user",
        path.display()
    )]
    KeepOwner {
        /// The users file.
        path: PathBuf,
        /// Owner of the original.
        uid: u32,
        /// Group of the original.
        gid: u32,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl EditError {
    /// Whether the edit was refused because of the file's content (the user exists, or does
    /// not), rather than failing.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, EditError::UserExists(_) | EditError::UserAbsent(_))
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EditError + 'a {
    move |source| EditError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Checks that `user` can be written as the first field of a line.
pub(crate) fn check_user_name(user: &str) -> Result<(), EditError> {
    let bad = |reason| {
        Err(EditError::BadUserName {
            name: printable(user.as_bytes()),
            reason,
        })
    };
    if user.is_empty() {
        return bad("it is empty");
    }
    if user.len() > MAX_USER_LEN {
        return bad("it is longer than 255 bytes");
    }
    if user.contains(':') {
        return bad("it contains `:`, the field separator");
    }
    if user.starts_with('#') {
        return bad("a line starting with `#` is a comment");
    }
    if user.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if user.starts_with(char::is_whitespace) || user.ends_with(char::is_whitespace) {
        return bad("it starts or ends with white space");
    }
    Ok(())
}

/// One user line of a users file, as byte ranges into the file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserLine {
    /// 1-based line number.
    pub line: usize,
    /// The whole line, with its terminator (`\n` or `\r\n`) when it has one.
    pub whole: Range<usize>,
    /// The user name.
    pub name: Range<usize>,
    /// The hash: from after the first `:` to the next `:` or the end of the line.
    pub hash: Range<usize>,
}

/// Every `user:hash...` line of `text`, in order (comments, blank lines and lines without
/// `:` are not user lines).
pub(crate) fn user_lines(text: &[u8]) -> Vec<UserLine> {
    raw_lines(text)
        .filter_map(|raw| {
            let content = &text[raw.content.clone()];
            if is_blank_or_comment(content) {
                return None;
            }
            let fields = split_user_line(content)?;
            let start = raw.content.start;
            let hash_start = start + fields.name.len() + 1;
            Some(UserLine {
                line: raw.number,
                whole: raw.whole,
                name: start..start + fields.name.len(),
                hash: hash_start..hash_start + fields.hash.len(),
            })
        })
        .collect()
}

/// The line that decides for `user` (the first one, as nginx and the daemon read the file).
pub(crate) fn find_user(text: &[u8], user: &str) -> Option<UserLine> {
    user_lines(text)
        .into_iter()
        .find(|l| &text[l.name.clone()] == user.as_bytes())
}

/// The users of `text` in file order, each with its deciding line (later duplicates, which
/// every reader ignores, are left out).
pub(crate) fn list_users(text: &[u8]) -> Vec<UserLine> {
    let mut seen = std::collections::HashSet::new();
    user_lines(text)
        .into_iter()
        .filter(|l| seen.insert(&text[l.name.clone()]))
        .collect()
}

/// `text` with `user:hash` appended. Refused if the user exists. The line ending follows the
/// file's first line; a file that does not end in a newline gets one first.
#[cfg(test)]
pub(crate) fn add_user(text: &[u8], user: &str, hash: &str) -> Result<Vec<u8>, EditError> {
    add_user_with_fields(text, user, hash, &[])
}

/// Checks a Dovecot passwd-file extra field (`key=value` or a bare `key`, e.g. `host=10.0.0.2`,
/// `proxy`): one word, no `#` start, no control bytes.
pub(crate) fn check_field(field: &str) -> Result<(), EditError> {
    let key = field.split('=').next().unwrap_or("");
    let bad = |reason| {
        Err(EditError::BadField {
            field: printable(key.as_bytes()),
            reason,
        })
    };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return bad("the key must be letters, digits, '_' or '-'");
    }
    if field.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return bad("a field cannot hold spaces or control characters");
    }
    Ok(())
}

/// [`add_user`] with Dovecot passwd-file extra fields after the hash
/// (`user:hash::::::field field`), e.g. the proxy fields `host=` and `port=`.
pub(crate) fn add_user_with_fields(
    text: &[u8],
    user: &str,
    hash: &str,
    fields: &[String],
) -> Result<Vec<u8>, EditError> {
    check_user_name(user)?;
    for f in fields {
        check_field(f)?;
    }
    let hash = if fields.is_empty() {
        hash.to_owned()
    } else {
        // uid, gid, gecos, home and shell stay empty; the extra fields are the eighth.
        format!("{hash}::::::{}", fields.join(" "))
    };
    let hash = hash.as_str();
    if find_user(text, user).is_some() {
        return Err(EditError::UserExists(printable(user.as_bytes())));
    }
    let crlf = text
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|i| i > 0 && text[i - 1] == b'\r');
    let newline: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::with_capacity(text.len() + user.len() + hash.len() + 4);
    out.extend_from_slice(text);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(user.as_bytes());
    out.push(b':');
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(newline);
    Ok(out)
}

/// The Dovecot proxy fields of a user line (`host=`, `port=`, `destuser=`, `proxy`,
/// `proxy_maybe`; `pass=` as `pass=<set>`, never its value), for `mailauthd user list`.
pub(crate) fn routing_fields(text: &[u8], line: &UserLine) -> Vec<String> {
    let rest = &text[line.hash.end..line.whole.end];
    let rest = rest.strip_prefix(b":").map(|r| r.trim_ascii_end());
    super::table::parse_extra_fields(rest)
        .into_iter()
        .filter_map(|f| match f.key.as_str() {
            "pass" => Some("pass=<set>".to_owned()),
            "host" | "port" | "destuser" | "proxy" | "proxy_maybe" => Some(f.to_string()),
            _ => None,
        })
        .collect()
}

/// `text` with the hash of `user`'s deciding line replaced; everything after the hash on
/// that line (passwd-file fields, an nginx comment, `\r`) is kept.
pub(crate) fn set_password(text: &[u8], user: &str, hash: &str) -> Result<Vec<u8>, EditError> {
    let line = find_user(text, user).ok_or_else(|| EditError::UserAbsent(printable(user.as_bytes())))?;
    let mut out = Vec::with_capacity(text.len() + hash.len());
    out.extend_from_slice(&text[..line.hash.start]);
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(&text[line.hash.end..]);
    Ok(out)
}

/// `text` without any line of `user`. Every line goes, not only the first: removing the
/// first would bring an older duplicate line (and its password) back to life.
pub(crate) fn delete_user(text: &[u8], user: &str) -> Result<(Vec<u8>, usize), EditError> {
    let lines: Vec<UserLine> = user_lines(text)
        .into_iter()
        .filter(|l| &text[l.name.clone()] == user.as_bytes())
        .collect();
    if lines.is_empty() {
        return Err(EditError::UserAbsent(printable(user.as_bytes())));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut from = 0;
    for line in &lines {
        out.extend_from_slice(&text[from..line.whole.start]);
        from = line.whole.end;
    }
    out.extend_from_slice(&text[from..]);
    // Every other user keeps its name: the one way a deletion can change one is by bringing
    // a line that starts with a byte order mark to the start of the file.
    let names = |t: &[u8]| -> Vec<Vec<u8>> {
        user_lines(t)
            .into_iter()
            .map(|l| t[l.name].to_vec())
            .filter(|n| n.as_slice() != user.as_bytes())
            .collect()
    };
    if names(&out) != names(text) {
        return Err(EditError::BomWouldLead(printable(user.as_bytes())));
    }
    Ok((out, lines.len()))
}

/// Reads a users file (a missing file reads as empty when `missing_ok`, unless the path is
/// a symlink to nothing, which [`edit_file`] refuses too).
pub(crate) fn read_file(path: &Path, missing_ok: bool) -> Result<Vec<u8>, EditError> {
    match std::fs::read(path) {
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(target) => Err(EditError::DanglingLink {
                path: path.to_owned(),
                target,
            }),
            Err(_) => Ok(Vec::new()),
        },
        other => other.map_err(io("read", path)),
    }
}

/// The prefix and suffix of our temp files beside `file_name`.
fn temp_affixes(file_name: &str) -> (String, &'static str) {
    (format!(".{file_name}.mailauthd-"), ".tmp")
}

/// Applies `change` to the users file at `path` atomically. `change` gets the current text
/// and returns the new text and a value handed back to the caller; when it returns an error
/// the file is left alone. With `create`, a missing file is created (empty) first.
pub(crate) fn edit_file<T>(
    path: &Path,
    create: bool,
    change: impl FnOnce(&[u8]) -> Result<(Vec<u8>, T), EditError>,
) -> Result<T, EditError> {
    // The rename would replace a symlink with a regular file; edit what it points to. A
    // link to nothing is refused rather than followed half-way (the file created at its
    // target, then the link replaced by the rename).
    let path = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            if let Ok(target) = std::fs::read_link(path) {
                return Err(EditError::DanglingLink {
                    path: path.to_owned(),
                    target,
                });
            }
            path.to_owned()
        }
        Err(e) => return Err(io("open", path)(e)),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut file = lock(&path, create)?;
    remove_stale_temp_files(&dir, &file_name);

    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(io("read", &path))?;
    let meta = file.metadata().map_err(io("read", &path))?;
    let (new_text, value) = change(&text)?;

    let (prefix, suffix) = temp_affixes(&file_name);
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .tempfile_in(&dir)
        .map_err(io("create a temporary file in", &dir))?;
    let temp_path = temp.path().to_owned();
    temp.write_all(&new_text).map_err(io("write", &temp_path))?;
    let temp_meta = temp.as_file().metadata().map_err(io("write", &temp_path))?;
    if (temp_meta.uid(), temp_meta.gid()) != (meta.uid(), meta.gid()) {
        std::os::unix::fs::fchown(temp.as_file(), Some(meta.uid()), Some(meta.gid())).map_err(|source| {
            EditError::KeepOwner {
                path: path.clone(),
                uid: meta.uid(),
                gid: meta.gid(),
                source,
            }
        })?;
    }
    // After the chown, which may clear set-id bits.
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io("set the mode of", &temp_path))?;
    temp.as_file().sync_all().map_err(io("sync", &temp_path))?;
    temp.persist(&path).map_err(|e| io("replace", &path)(e.error))?;
    // The rename is durable only once the folder is synced.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the folder", &dir))?;
    drop(file);
    Ok(value)
}

/// Opens and locks the users file.
///
/// The lock is taken on the users file itself, not on a sidecar `PATH.lock`: no extra file
/// is left next to the users file, and a reader needs no knowledge of it. Because every
/// edit renames a new inode over the path, a waiter may get the lock on an inode that is no
/// longer the file; so after locking, the path is stat'ed again and, if it now names another
/// inode, the lock is dropped and taken again on the new one. Only one editor at a time can
/// hold the lock on the inode the path names, which is what makes the edit exclusive.
fn lock(path: &Path, create: bool) -> Result<File, EditError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = match File::open(path) {
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(NEW_FILE_MODE)
                .open(path),
            other => other,
        }
        .map_err(io("open", path))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(EditError::Locked { path: path.to_owned() });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
            }
        }
        let locked = file.metadata().map_err(io("read", path))?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => return Ok(file),
            // Replaced (or removed) while we waited: lock whatever the path names now.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", path)(e)),
        }
        if Instant::now() >= deadline {
            return Err(EditError::Locked { path: path.to_owned() });
        }
    }
}

/// Removes temp files a killed edit left beside the users file. Only called while holding
/// the lock, so no live edit is writing one.
fn remove_stale_temp_files(dir: &Path, file_name: &str) {
    let (prefix, suffix) = temp_affixes(file_name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(suffix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
