//! The check that nothing a test binary starts outlives it: the binary runs itself on one
//! test that starts daemons, with a run marker of its own (see `spawn.rs`) and its own temp
//! folder; once that child run has ended, no process may still carry the marker.
//!
//! Two endings are checked. A run that ends normally must also leave its temp folder empty
//! (Drop guards and exit hooks). A run interrupted as with Ctrl-C runs no destructor and no
//! exit hook: only the parent-death signal stops its daemons, and its temp folder is left
//! (the check removes it).

use super::spawn::{carrying, new_marker, spawn, survivors_after};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in a child run that is to be interrupted: its test holds once its daemons run.
pub const HOLD_VAR: &str = "MAILAUTHD_LEAK_CHECK_HOLD";

/// The line a held child test prints once its daemons run.
pub const READY: &str = "leak-check: daemons running";

/// How long a killed process may take to disappear.
const KILL_DELIVERY: Duration = Duration::from_secs(10);

/// How long a child run may take to start its daemons.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Called by the child-side test once its daemons run: when the leak check holds it, says
/// so and waits (at most two minutes) to be interrupted; otherwise returns at once.
pub fn hold_if_asked() {
    if std::env::var_os(HOLD_VAR).is_none() {
        return;
    }
    println!("{READY}");
    std::thread::sleep(START_DEADLINE);
}

/// A temp folder for a child run, which Dovecot's unprivileged processes can traverse.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mailauthd-leak-check-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// This test binary, limited to `test`, with `marker` and `tmp` as its temp folder.
fn self_run(test: &str, marker: &str, tmp: &Path) -> Command {
    let exe = std::env::current_exe().expect("the path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(super::spawn::MARKER_VAR, marker)
        .env("TMPDIR", tmp)
        // The e2e suite keeps its temp folder when this is set.
        .env_remove("E2E_KEEP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The child must die of SIGINT as a test binary does at Ctrl-C. A runner may have
    // started the tests with SIGINT ignored (a background job of a non-interactive shell
    // ignores it), and an ignored signal stays ignored across exec: put it back.
    // SAFETY: signal(2) is async-signal-safe, as the code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    cmd
}

/// Runs `test` in a child run of this binary to its end: it must pass, and afterwards no
/// process may carry its marker and its temp folder must be empty.
pub fn check_after_exit(test: &str) {
    let tmp = scratch();
    let marker = new_marker();
    let out = spawn(self_run(test, &marker, tmp.path()))
        .expect("run the test binary")
        .wait_with_output()
        .expect("wait for the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child run of {test} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let survivors = survivors_after(&marker, KILL_DELIVERY);
    assert!(
        survivors.is_empty(),
        "still running after the test binary exited: {survivors:#?}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .expect("read the temp folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(
        left.is_empty(),
        "left in the temp folder after the test binary exited: {left:?}"
    );
}

/// Runs `test` in a child run of this binary that holds once its daemons run, checks that at
/// least `started` processes carry its marker, interrupts it (SIGINT, as Ctrl-C does), and
/// then no process may carry the marker.
pub fn check_after_interrupt(test: &str, started: usize) {
    let tmp = scratch();
    let marker = new_marker();
    let mut cmd = self_run(test, &marker, tmp.path());
    cmd.env(HOLD_VAR, "1");
    let mut child = spawn(cmd).expect("run the test binary");
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test NAME ... ` without a newline before the test's output.
            if line.ends_with(READY) {
                let _ = ready_tx.send(());
            }
            seen.push(line);
        }
        seen.join("\n")
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let ready = ready_rx.recv_timeout(START_DEADLINE).is_ok();
    let running: Vec<u32> = carrying(&marker).into_iter().filter(|pid| *pid != child.id()).collect();
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = child.wait().expect("wait for the test binary");
    let output = format!(
        "{}\n{}",
        stdout_reader.join().unwrap_or_default(),
        stderr_reader.join().unwrap_or_default()
    );
    let survivors = survivors_after(&marker, KILL_DELIVERY);
    assert!(
        ready,
        "the child run of {test} did not get its daemons running:\n{output}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "the child run ended otherwise ({status}):\n{output}"
    );
    assert!(
        running.len() >= started,
        "{} process(es) carried the marker, expected at least {started}:\n{output}",
        running.len()
    );
    assert!(
        survivors.is_empty(),
        "still running after the test binary was interrupted: {survivors:#?}"
    );
}
