//! Nothing a test starts outlives the test binary: not the daemon shared by the vectors
//! (a static, never dropped), not a per-test nginx or Redis, whether the binary exits or is
//! interrupted. The binary runs itself on [`shared_and_per_test_daemons_carry_the_run_marker`]
//! and looks for survivors (see `tests/shared/leak_check.rs`).

use crate::common::leak_check::{check_after_exit, check_after_interrupt, hold_if_asked};
use crate::common::spawn::{MARKER_VAR, run_marker};
use crate::common::{Nginx, Redis};

const CHILD_TEST: &str = "leftovers::shared_and_per_test_daemons_carry_the_run_marker";

/// Whether process `pid` has this run's marker in its environment.
fn carries_marker(pid: u32) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read the environment of a child");
    let wanted = format!("{MARKER_VAR}={}", run_marker());
    environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
}

/// The test the leak checks run in a child test binary; on its own it checks that every
/// process the harness starts carries the run marker, and that the shared daemon's folder
/// is in the temp folder (which the leak check gives the child run).
#[test]
fn shared_and_per_test_daemons_carry_the_run_marker() {
    let shared = crate::vectors::daemon();
    assert!(carries_marker(shared.pid()), "the shared daemon lacks the run marker");
    assert!(
        shared.dir.path().starts_with(std::env::temp_dir()),
        "{} is not in the temp folder",
        shared.dir.path().display()
    );
    let redis = Redis::start();
    assert!(carries_marker(redis.pid()), "redis-server lacks the run marker");
    let nginx = Nginx::start("", "location / { return 204; }");
    assert!(carries_marker(nginx.pid()), "nginx lacks the run marker");
    // The leak check that interrupts the run finds these three by their marker.
    hold_if_asked();
}

#[test]
fn nothing_outlives_a_test_binary_that_exits() {
    check_after_exit(CHILD_TEST);
}

#[test]
fn nothing_outlives_a_test_binary_that_is_interrupted() {
    // The shared daemon, Redis and nginx.
    check_after_interrupt(CHILD_TEST, 3);
}
