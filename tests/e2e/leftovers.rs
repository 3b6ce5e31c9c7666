//! Nothing the suite starts outlives the test binary: not the shared setup (a static, torn
//! down by an exit hook), whether the binary exits or is interrupted. The binary runs itself
//! on [`shared_setup_carries_the_run_marker`] and looks for survivors (see
//! `tests/shared/leak_check.rs`).

use crate::harness::leak_check::{check_after_exit, check_after_interrupt, hold_if_asked};
use crate::harness::shared;
use crate::harness::spawn::{carrying, run_marker};

const CHILD_TEST: &str = "leftovers::shared_setup_carries_the_run_marker";

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The test the leak checks run in a child test binary; on its own it checks that the
/// shared setup's processes carry the run marker (Dovecot's in its processes' titles) and
/// that its folder is in the temp folder (which the leak check gives the child run).
#[test]
fn shared_setup_carries_the_run_marker() {
    let env = shared();
    let carrying = carrying(run_marker());
    for (name, pid) in [
        ("nginx", env.front.nginx.proc.pid()),
        ("mailauthd", env.front.mailauthd.proc.pid()),
    ] {
        assert!(carrying.contains(&pid), "{name} lacks the run marker");
    }
    let dovecot = env.backends.dovecot.proc.pid();
    assert!(carrying.contains(&dovecot), "Dovecot lacks the run marker");
    assert!(
        carrying.iter().any(|pid| parent_of(*pid) == Some(dovecot)),
        "no process Dovecot runs carries the run marker"
    );
    assert!(
        env.path().starts_with(std::env::temp_dir()),
        "{} is not in the temp folder",
        env.path().display()
    );
    hold_if_asked();
}

#[test]
fn nothing_outlives_a_test_binary_that_exits() {
    check_after_exit(CHILD_TEST);
}

#[test]
fn nothing_outlives_a_test_binary_that_is_interrupted() {
    // nginx, mailauthd, Dovecot's master and at least one of the processes it runs (log,
    // config, anvil, ...).
    check_after_interrupt(CHILD_TEST, 4);
}
