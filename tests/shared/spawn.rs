//! How both test binaries (`tests/it`, `tests/e2e`) start the processes they run, so that
//! none of them outlives the test binary, even when it is interrupted or dies.
//!
//! Drop guards stop what a test started when the test ends, also while a failing test
//! unwinds. They cannot help when no destructor runs: a shared daemon kept in a static, a
//! test binary stopped with Ctrl-C (SIGINT) or killed. For those, every child is started with
//! `PR_SET_PDEATHSIG` = SIGKILL, so the kernel kills it when its parent goes away.
//!
//! The kernel sends that signal when the *thread* that forked the child exits, not the
//! process. Each test runs on a thread of its own that ends with the test, so a daemon
//! started by the first test that needs a shared setup would be killed when that test
//! returned. Every spawn therefore runs on one spawner thread that is never stopped: it
//! lives exactly as long as the test binary.
//!
//! Every child also carries `MAILAUTHD_TEST_RUN=<marker>` in its environment, one marker per
//! run of the test binary (taken from the environment when set, so a test that runs the
//! binary again can choose it). [`carrying`] finds the processes that still carry a marker.
//! A marker is a process id, a time and a counter: not found in a command line by accident.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that carries the run marker.
pub const MARKER_VAR: &str = "MAILAUTHD_TEST_RUN";

/// The marker of this run: `MAILAUTHD_TEST_RUN` when set, otherwise a new one.
pub fn run_marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        std::env::var(MARKER_VAR)
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(new_marker)
    })
}

/// A marker no other run uses: this process id, the time, and a counter.
pub fn new_marker() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Starts `cmd` with the run marker (unless `cmd` sets one itself) and with SIGKILL as its
/// parent-death signal, from the spawner thread.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    if !cmd.get_envs().any(|(key, _)| key == MARKER_VAR) {
        cmd.env(MARKER_VAR, run_marker());
    }
    let parent = libc::pid_t::try_from(std::process::id()).map_err(io::Error::other)?;
    // SAFETY: the closure runs in the forked child before exec; it calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then the signal will never
            // come, and the child must not start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // The sender stays in the static, so this loop never ends and the thread lives
        // until the process exits.
        std::thread::Builder::new()
            .name("spawner".to_owned())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let gone = || io::Error::other("the spawner thread is gone");
    let (tx, rx) = mpsc::channel();
    spawner.send((cmd, tx)).map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// The processes that carry `marker`: `MAILAUTHD_TEST_RUN=<marker>` in their environment,
/// or the marker in their command line. A server that writes its process title over its
/// environment (Dovecot does) hides the variable; such a server gets the marker into its
/// title instead (Dovecot's `instance_name`).
pub fn carrying(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_VAR}={marker}");
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // A zombie's environ and cmdline read empty; another user's environ is not
            // readable.
            let in_environ = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()));
            in_environ
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .collect()
}

/// Polls for up to `deadline` until no process carries `marker` (SIGKILL is delivered
/// asynchronously). Those still carrying it then are described (pid and command line) and
/// killed, so that a failed check does not leave them running; returns the descriptions.
pub fn survivors_after(marker: &str, deadline: Duration) -> Vec<String> {
    let end = Instant::now() + deadline;
    loop {
        let pids = carrying(marker);
        if pids.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= end {
            let described = pids.iter().map(|pid| describe(*pid)).collect();
            for pid in pids {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill(2) has no memory-safety preconditions; the process
                    // carries this check's own marker.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            return described;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pid (command line)`, for messages.
pub fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    format!("{pid} ({})", words.join(" "))
}
