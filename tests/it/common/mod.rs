//! The one harness of the integration tests: the real `mailauthd` binary ([`Daemon`]) on
//! `127.0.0.1:0` (the bound addresses read from its log), nginx and Redis where a test needs
//! them, raw nginx-shaped requests, and readiness polled with a deadline.
//!
//! Nothing a test starts outlives the test binary: every process is started through
//! [`spawn::spawn`] (parent-death signal, run marker) and held by a guard that kills it on
//! drop; a daemon shared by many tests is stopped and its folder removed by an exit hook
//! ([`Daemon::shared`]). `leftovers.rs` checks all of it.

#![allow(dead_code, reason = "each test module uses a different part of the harness")]

mod daemon;
#[path = "../../shared/leak_check.rs"]
pub mod leak_check;
mod nginx;
mod ports;
mod process;
mod redis;
pub mod slapd;
#[path = "../../shared/spawn.rs"]
pub mod spawn;
mod wire;

pub use daemon::Daemon;
pub use nginx::Nginx;
pub use ports::{ClosedPort, free_port};
pub use redis::{Cluster, Redis};
pub use wire::{apop_request, ask, bcrypt4, header, http_get, is_accepted, is_invalid, nginx_escape, plain_request};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started process may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `ready` every 20 ms until it is true or `deadline` has passed.
pub fn wait_until(deadline: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 20 ms until it gives a value, or panics after [`READY_DEADLINE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < READY_DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailauthd")
}

/// The crate's root folder.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
