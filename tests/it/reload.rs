//! Live reload of users files under load: renames and in-place rewrites, SIGHUP, broken
//! files.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Daemon, bcrypt4, wait_until};

const SOURCE: &str = "[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n";

/// Version `k` of the users file: filler first, then the users the test logs in (so a file
/// read half-way would lose them), `rot` with password `v{k}`.
fn version(k: usize, stable: &[String]) -> Vec<u8> {
    let mut text = String::from("# users file, rewritten by the test\n");
    for i in 0..300 {
        text.push_str(&format!("filler{i}:{{PLAIN}}f{i}-{k}\n"));
    }
    for (i, hash) in stable.iter().enumerate() {
        text.push_str(&format!("stable{i}:{hash}\n"));
    }
    text.push_str(&format!("rot:{{PLAIN}}v{k}\n"));
    text.into_bytes()
}

fn write_by_rename(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Truncates and rewrites the same inode, in 4 KiB writes, as `>` or an editor would.
fn write_in_place(path: &Path, text: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    for chunk in text.chunks(4096) {
        file.write_all(chunk).unwrap();
    }
}

#[test]
fn rewrites_under_load_never_fail_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    // Two bcrypt users (verified on the pool) and two cheap ones.
    let stable = vec![
        bcrypt4("stable-0"),
        bcrypt4("stable-1"),
        "{PLAIN}stable-2".to_owned(),
        "{PLAIN}stable-3".to_owned(),
    ];
    std::fs::write(&path, version(0, &stable)).unwrap();
    let daemon = Arc::new(Daemon::start(
        dir.path(),
        &format!("reload_interval = \"100ms\"\n{SOURCE}"),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (daemon, stop, requests) = (daemon.clone(), stop.clone(), requests.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut failures = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline || n >= 200_000 {
                        break;
                    }
                    let user = (t + n) % 4;
                    let reply = daemon.login(&format!("stable{user}"), &format!("stable-{user}"));
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !reply.accepted() {
                        failures.push(reply.0);
                    }
                }
                failures
            })
        })
        .collect();

    let mut slowest = Duration::ZERO;
    for k in 1..=100 {
        let text = version(k, &stable);
        let written = Instant::now();
        if k % 2 == 0 {
            write_by_rename(&path, &text);
        } else {
            write_in_place(&path, &text);
        }
        wait_until(Duration::from_secs(2), &format!("version {k} to take effect"), || {
            daemon.login("rot", &format!("v{k}")).accepted()
        });
        slowest = slowest.max(written.elapsed());
        assert!(daemon.login("rot", &format!("v{}", k - 1)).invalid());
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let requests = requests.load(Ordering::Relaxed);
    eprintln!("{requests} logins during 100 rewrites; slowest rewrite to take effect: {slowest:?}");
    assert!(requests > 100, "the load did not run");
    assert!(
        failures.is_empty(),
        "{} of {requests} logins failed, first: {:?}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn default_poll_takes_a_change_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, "a:{PLAIN}old\n").unwrap();
    let daemon = Daemon::start(dir.path(), SOURCE);
    assert!(daemon.login("a", "old").accepted());
    write_by_rename(&path, b"a:{PLAIN}renamed\n");
    wait_until(Duration::from_secs(2), "the renamed file", || {
        daemon.login("a", "renamed").accepted()
    });
    write_in_place(&path, b"a:{PLAIN}in-place\n");
    wait_until(Duration::from_secs(2), "the file rewritten in place", || {
        daemon.login("a", "in-place").accepted()
    });
}

#[test]
fn sighup_reloads_when_polling_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, "a:{PLAIN}old\n").unwrap();
    let daemon = Daemon::start(dir.path(), &format!("reload_interval = \"0s\"\n{SOURCE}"));
    write_by_rename(&path, b"a:{PLAIN}new\n");
    daemon.signal("HUP");
    wait_until(Duration::from_secs(2), "SIGHUP to reload", || {
        daemon.login("a", "new").accepted()
    });
    assert!(daemon.login("a", "old").invalid());
}

#[test]
fn a_broken_or_emptied_file_keeps_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, "a:{PLAIN}old\n").unwrap();
    let daemon = Daemon::start(dir.path(), &format!("reload_interval = \"100ms\"\n{SOURCE}"));
    write_by_rename(&path, b"a:{PLAIN}new\nbroken line\n");
    wait_until(Duration::from_secs(5), "the broken file to be reported", || {
        daemon.log_text().contains("keeping the last good version")
    });
    let log = daemon.log_text();
    assert!(log.contains("users:2: no `:` after the user name"), "{log}");
    assert!(daemon.login("a", "old").accepted());
    assert!(daemon.login("a", "new").invalid());

    // Fixed: taken.
    write_by_rename(&path, b"a:{PLAIN}fixed\n");
    wait_until(Duration::from_secs(2), "the fixed file", || {
        daemon.login("a", "fixed").accepted()
    });

    // Emptied: kept for one more poll, then taken (the admin meant it).
    write_in_place(&path, b"");
    wait_until(Duration::from_secs(5), "the emptied file to be noticed", || {
        daemon.log_text().contains("users file has no users any more")
    });
    wait_until(Duration::from_secs(2), "the empty file to be taken", || {
        daemon.login("a", "fixed").invalid()
    });
}
