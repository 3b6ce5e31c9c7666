//! The daemon's log on stderr: its text format, and the per-login lines written in
//! batches. One line per login is the log's bulk, so both are about what that line costs.

mod batch;
mod format;

pub(crate) use batch::{BatchedStderr, flush_thread, on_worker_park};
pub(crate) use format::{DECISION_TARGET, TextFormat};
