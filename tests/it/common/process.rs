//! A started process held by a guard that kills it on drop, signals by name, and hooks run
//! when the test binary exits.

use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

/// A process started through [`super::spawn::spawn`]; killed (SIGKILL) and reaped on drop,
/// also while a failing test unwinds.
pub struct Running {
    child: Child,
    name: String,
}

impl Running {
    /// Starts `cmd`; panics with `name` and the error if it cannot.
    pub fn start(name: &str, cmd: Command) -> Running {
        let child = super::spawn::spawn(cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running::adopt(name, child)
    }

    /// Guards `child`, started through [`super::spawn::spawn`].
    pub fn adopt(name: &str, child: Child) -> Running {
        Running {
            child,
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` (`HUP`, `TERM`, `STOP`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let number = match signal {
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            "TERM" => libc::SIGTERM,
            "KILL" => libc::SIGKILL,
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            other => panic!("no signal named {other}"),
        };
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child,
        // so it cannot name another process.
        let rc = unsafe { libc::kill(pid, number) };
        assert_eq!(rc, 0, "kill -{signal} {} failed", self.name);
    }

    /// Waits up to `deadline` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Hook = Box<dyn FnOnce() + Send>;

static EXIT_HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Runs `hook` when the test binary exits normally (every test done, passed or failed).
/// Hooks must not panic: they run inside `atexit(3)`, where a panic aborts.
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function that takes no arguments.
        let rc = unsafe { libc::atexit(run_exit_hooks) };
        assert_eq!(rc, 0, "atexit failed");
    });
    EXIT_HOOKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Box::new(hook));
}

extern "C" fn run_exit_hooks() {
    let hooks = std::mem::take(&mut *EXIT_HOOKS.lock().unwrap_or_else(PoisonError::into_inner));
    for hook in hooks.into_iter().rev() {
        hook();
    }
}
