//! The one line per login, written in batches: a runtime worker keeps its decision lines in
//! a buffer and writes them with one `write(2)` when it goes idle or the buffer fills,
//! instead of one system call per login. Under load that is one write for dozens of
//! logins; on an idle daemon each line is written as soon as its connection is done.
//!
//! Every other line is written at once, after the lines waiting before it on the same
//! thread, so each thread's lines keep their order. A worker's waiting lines are written
//! when it stops, so a stopped daemon has written them all (a killed one may lose the
//! lines of its last few milliseconds).

use std::cell::{Cell, RefCell};
use std::io::{self, Write};

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use super::format::DECISION_TARGET;

/// A batch is written once it holds this much (about 60 lines; less in the unit test,
/// whose lines go to the test's stderr).
const FLUSH_AT: usize = if cfg!(test) { 64 } else { 16 * 1024 };

thread_local! {
    /// Decision lines written on this thread and not yet on stderr.
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread batches: set once it has gone idle through
    /// [`on_worker_park`], which proves it will come back to write its batch.
    static BATCHING: Cell<bool> = const { Cell::new(false) };
}

/// stderr, with the decision lines of runtime workers batched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchedStderr;

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { batched: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            batched: meta.target() == DECISION_TARGET && BATCHING.with(Cell::get),
        }
    }
}

/// Writes one formatted line: into this thread's batch, or to stderr at once.
#[derive(Debug)]
pub(crate) struct LineWriter {
    batched: bool,
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.batched {
            let full = PENDING.with_borrow_mut(|pending| {
                pending.extend_from_slice(line);
                pending.len() >= FLUSH_AT
            });
            if full {
                flush_thread();
            }
        } else {
            flush_thread();
            io::stderr().write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes this thread's waiting lines, if any, in one write.
pub(crate) fn flush_thread() {
    PENDING.with_borrow_mut(|pending| {
        if !pending.is_empty() {
            // As for any log line, a failed write to stderr has nowhere to be reported.
            let _ = io::stderr().write_all(pending);
            pending.clear();
        }
    });
}

/// For the runtime's `on_thread_park`: a worker about to go idle writes its batch, and
/// from then on batches.
pub(crate) fn on_worker_park() {
    BATCHING.with(|batching| batching.set(true));
    flush_thread();
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::MakeWriter;

    use super::{BatchedStderr, PENDING, on_worker_park};
    use crate::logging::DECISION_TARGET;

    fn pending() -> usize {
        PENDING.with_borrow(Vec::len)
    }

    #[test]
    fn decision_lines_wait_for_the_worker_to_go_idle_and_other_lines_write_them_first() {
        use std::io::Write;
        let make = BatchedStderr;
        let decision = tracing::Metadata::new(
            "decision",
            DECISION_TARGET,
            tracing::Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        // A thread that has never gone idle writes at once.
        make.make_writer_for(&decision).write_all(b"first\n").unwrap();
        assert_eq!(pending(), 0);
        on_worker_park();
        make.make_writer_for(&decision).write_all(b"batched\n").unwrap();
        make.make_writer_for(&decision).write_all(b"batched\n").unwrap();
        assert_eq!(pending(), 16);
        // Any other line writes the batch before itself.
        make.make_writer().write_all(b"other\n").unwrap();
        assert_eq!(pending(), 0);
        make.make_writer_for(&decision).write_all(&[b'-'; 70]).unwrap();
        assert_eq!(pending(), 0, "a full batch is written at once");
        make.make_writer_for(&decision).write_all(b"last\n").unwrap();
        on_worker_park();
        assert_eq!(pending(), 0);
    }

    struct Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static CALLSITE: Callsite = Callsite;
}
