//! Child processes the suite starts, and how they are stopped.
//!
//! Every daemon (nginx, Dovecot, mailauthd) is a [`Proc`]: a guard that sends SIGTERM, waits
//! a bounded time, then SIGKILLs and reaps it when dropped, including while a failing test
//! unwinds. Short-lived clients go through [`run`], which kills them at a deadline. Both
//! start their process through [`super::spawn::spawn`]: it dies with the test binary even
//! when no destructor runs (Ctrl-C), and carries the run marker the leak check looks for.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Sends `sig` to one process id.
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A daemon started by the suite, with stdout and stderr going to one log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with both output streams appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let shown = format!("{cmd:?}");
        let child = super::spawn::spawn(cmd).unwrap_or_else(|e| panic!("cannot start {name} ({shown}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file so far (lossy UTF-8).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the log tail if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.exited() {
            panic!(
                "{} exited early ({st}); its log:\n{}",
                self.name,
                tail(&self.log_text(), 60)
            );
        }
    }

    /// Waits until `addr` accepts TCP connections, failing fast if the process dies.
    pub fn wait_port(&mut self, addr: SocketAddr, deadline: Duration) {
        if let Err(e) = self.try_wait_port(addr, deadline) {
            panic!("{e}");
        }
    }

    /// Waits until `addr` accepts TCP connections; an error (with the log tail) if the
    /// process exits first or the deadline passes.
    pub fn try_wait_port(&mut self, addr: SocketAddr, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.exited() {
                return Err(format!(
                    "{} exited early ({st}); its log:\n{}",
                    self.name,
                    tail(&self.log_text(), 60)
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{} did not listen on {addr} within {deadline:?}; its log:\n{}",
                    self.name,
                    tail(&self.log_text(), 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; always reaps.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        signal(self.pid(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Output of a finished client process.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a client to completion, killing it if it takes longer than `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = super::spawn::spawn(cmd).unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&t1.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t2.join().unwrap_or_default()).into_owned();
    Output { status, stdout, stderr }
}

/// `n` distinct free loopback ports (all bound at once, then released), for servers that
/// cannot bind port 0 and report it (nginx, Dovecot). Another process may bind one before
/// the server does: their starters retry with new ports when the bind fails (EADDRINUSE).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `deadline`.
pub fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
