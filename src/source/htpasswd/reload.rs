//! When a users file is read again, and how a read is made safe against a file that is
//! being rewritten.
//!
//! A users file may be replaced by a rename (`mailauthd user`, `htpasswd`, most editors) or
//! rewritten in place (`>`, some editors). A rename is always read whole. An in-place rewrite
//! can be caught half-way, so a read counts only if the file's size and mtime are the same
//! before and after it, and the opened file has been left alone for a quiet period;
//! otherwise it is retried, and after a few tries left to the next poll. A file that
//! suddenly has no users while the table in use has some is taken as a rewrite caught
//! between truncation and writing: the last table stays until the file has looked the same
//! for one more poll and been left alone for [`EMPTY_HOLD`] (a SIGHUP reload takes it at once).

use std::fs::Metadata;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::source::answer::SourceError;

/// Reads of a changing file before giving up until the next poll.
const READ_TRIES: usize = 5;
/// A file modified less than this long ago may still be in the middle of an in-place
/// rewrite (a writer paused at a line boundary leaves a file that parses, with users
/// missing): a poll leaves it for the next one, SIGHUP waits this long at most.
pub(super) const QUIET: Duration = Duration::from_millis(300);

/// How much longer `stamp`'s file must stay unmodified to have been quiet for `quiet` (zero
/// if it has, or if its mtime is unknown or in the future).
pub(super) fn quiet_in(stamp: &FileStamp, quiet: Duration) -> Duration {
    let age = stamp.modified.and_then(|m| SystemTime::now().duration_since(m).ok());
    age.map_or(Duration::ZERO, |age| quiet.saturating_sub(age))
}

/// How long a file that suddenly has no users must stay untouched before a poll takes it
/// (SIGHUP takes it at once).
pub(super) const EMPTY_HOLD: Duration = Duration::from_secs(5);

/// The shortest pause before SIGHUP looks again at a file that changed under the read.
const SETTLE: Duration = Duration::from_millis(20);

/// The largest users file read: a million users with bcrypt hashes are about 70 MB, so a
/// file over 1 GiB is a mistake (a log, a disk image), and reading it whole would hold that
/// much memory per reload.
pub(super) const MAX_FILE_BYTES: u64 = 1 << 30;

/// What a file that is not a regular file is, for the error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "folder"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Opens `path` for reading, refusing anything but a regular file of at most
/// [`MAX_FILE_BYTES`]. The file is opened with `O_NONBLOCK` and its type read from the opened
/// descriptor, so a FIFO (which would block the open until a writer comes) or a file swapped
/// for one between a `stat` and the open is refused without waiting.
fn open_regular(path: &Path) -> Result<(std::fs::File, Metadata), SourceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| SourceError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(SourceError::NotAFile {
            path: path.to_owned(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
            cap: MAX_FILE_BYTES,
        });
    }
    Ok((file, meta))
}

/// Reads the whole file once it has been quiet for `quiet` and did not change during the
/// read: the quiet check is made on the opened file, and the stamps before and after the
/// read must agree, so a rewrite that starts at any point is noticed. `None`: it did not
/// hold still; a poll (`patient == false`) gives up at once and looks again next time,
/// SIGHUP waits up to `READ_TRIES` quiet periods. A path that is not a regular file, or a
/// file over [`MAX_FILE_BYTES`], is an error.
pub(super) fn read_settled(
    path: &Path,
    quiet: Duration,
    patient: bool,
) -> Result<Option<(FileStamp, Vec<u8>)>, SourceError> {
    use std::io::Read;
    for _ in 0..READ_TRIES {
        let (file, meta) = open_regular(path)?;
        let before = FileStamp::of(&meta);
        let wait = quiet_in(&before, quiet);
        if wait.is_zero() {
            let mut text = Vec::with_capacity(usize::try_from(before.len).unwrap_or(0));
            // Never past the cap, even if the file grows during the read (the stamps then
            // differ and the read is not used).
            let io = |source| SourceError::Read {
                path: path.to_owned(),
                source,
            };
            (&file).take(MAX_FILE_BYTES + 1).read_to_end(&mut text).map_err(io)?;
            let after = FileStamp::of(&file.metadata().map_err(io)?);
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
pub(super) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    pub(super) fn of(meta: &Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// What the reloader remembers about the file between polls.
#[derive(Debug, Default)]
pub(super) struct Stamps {
    /// The version the table in use (or the last rejected version) was read from.
    pub read: Option<FileStamp>,
    /// A version with no users, seen once and not taken yet.
    pub pending_empty: Option<FileStamp>,
}
