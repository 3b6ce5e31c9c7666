//! Live reload of users files under load: renames and in-place rewrites, SIGHUP, broken
//! files.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Daemon, bcrypt4, http_get, is_accepted, wait_until};

const SOURCE: &str = "[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n";

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
    // Two bcrypt users (verified on the pool) and two cheap ones.
    let stable = vec![
        bcrypt4("stable-0"),
        bcrypt4("stable-1"),
        "{PLAIN}stable-2".to_owned(),
        "{PLAIN}stable-3".to_owned(),
    ];
    let version0 = String::from_utf8(version(0, &stable)).unwrap();
    let daemon = Arc::new(Daemon::start(
        // Each round checks that the old password fails: the brute-force policy would ban
        // `rot` after a few of those.
        &format!("reload_interval = \"100ms\"\n[policy]\nenabled = false\n{SOURCE}"),
        &version0,
    ));
    let path = daemon.path("users.htpasswd");

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
                    let reply = daemon.login("imap", &format!("stable{user}"), &format!("stable-{user}"));
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !is_accepted(&reply) {
                        failures.push(String::from_utf8_lossy(&reply).into_owned());
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
            daemon.accepted("rot", &format!("v{k}"))
        });
        slowest = slowest.max(written.elapsed());
        assert!(daemon.invalid("rot", &format!("v{}", k - 1)));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let requests = requests.load(Ordering::Relaxed);
    eprintln!("{requests} logins during 100 rewrites; slowest rewrite to take effect: {slowest:?}");
    assert!(requests > 100, "the load did not run");
    if !failures.is_empty() {
        // What the daemon said: its refusals of the steady users, and every reload.
        let log = daemon.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| (l.contains("login refused") && l.contains("user=\"stable")) || l.contains("mailauthd::daemon"))
            .collect();
        let _ = std::fs::write(
            std::env::temp_dir().join("mailauthd-reload-failure.log"),
            lines.join("\n"),
        );
        eprintln!(
            "daemon log (refusals and reloads) in {}",
            std::env::temp_dir().join("mailauthd-reload-failure.log").display()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} logins failed, first: {:?}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn default_poll_takes_a_change_within_two_seconds() {
    let daemon = Daemon::start(SOURCE, "a:{PLAIN}old\n");
    let path = daemon.path("users.htpasswd");
    assert!(daemon.accepted("a", "old"));
    write_by_rename(&path, b"a:{PLAIN}renamed\n");
    wait_until(Duration::from_secs(2), "the renamed file", || {
        daemon.accepted("a", "renamed")
    });
    write_in_place(&path, b"a:{PLAIN}in-place\n");
    wait_until(Duration::from_secs(2), "the file rewritten in place", || {
        daemon.accepted("a", "in-place")
    });
}

#[test]
fn sighup_reloads_when_polling_is_off() {
    let daemon = Daemon::start(&format!("reload_interval = \"0s\"\n{SOURCE}"), "a:{PLAIN}old\n");
    let path = daemon.path("users.htpasswd");
    write_by_rename(&path, b"a:{PLAIN}new\n");
    daemon.signal("HUP");
    wait_until(Duration::from_secs(2), "SIGHUP to reload", || {
        daemon.accepted("a", "new")
    });
    assert!(daemon.invalid("a", "old"));
}

#[test]
fn a_change_takes_effect_without_its_broken_lines_and_the_source_says_degraded() {
    let daemon = Daemon::start(
        &format!("reload_interval = \"100ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{SOURCE}"),
        "alice:{PLAIN}a1\nmallory:{PLAIN}m1\n",
    );
    let path = daemon.path("users.htpasswd");
    assert!(daemon.accepted("mallory", "m1"));
    let (status, body) = http_get(daemon.admin(), "/readyz");
    assert_eq!((status, body.lines().next()), (200, Some("ready")), "{body}");

    // v2: mallory revoked, alice's password changed, a bcrypt hash cut short by a paste and
    // a line with no `:`. Taken without a restart, without the two broken lines.
    write_by_rename(&path, b"alice:{PLAIN}a2\ncarol:$2y$10$abc\nno colon here\n");
    wait_until(Duration::from_secs(5), "v2 to take effect", || {
        daemon.accepted("alice", "a2")
    });
    assert!(daemon.invalid("alice", "a1"));
    assert!(daemon.invalid("mallory", "m1"));
    let log = daemon.log();
    assert!(log.contains("users.htpasswd:2: "), "{log}");
    assert!(log.contains("users.htpasswd:3: no `:` after the user name"), "{log}");
    assert!(!log.contains("keeping the last good"), "{log}");

    // Still ready (HTTP 200), but degraded, and why.
    let (status, body) = http_get(daemon.admin(), "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready, degraded"), "{body}");
    assert!(
        body.contains("users=1 degraded: 2 broken line(s) skipped") && body.contains("(line 2, 3)"),
        "{body}"
    );
    let (_, metrics) = http_get(daemon.admin(), "/metrics");
    let source = format!("htpasswd:{}", path.display());
    for (series, expected) in [
        (format!("mailauthd_source_broken_lines{{source=\"{source}\"}} "), "2"),
        (format!("mailauthd_source_users{{source=\"{source}\"}} "), "1"),
        (
            format!("mailauthd_source_errors_total{{source=\"{source}\",reason=\"broken-lines\"}} "),
            "1",
        ),
    ] {
        let line = metrics.lines().find(|l| l.starts_with(&series));
        assert_eq!(line.map(|l| &l[series.len()..]), Some(expected), "{series}\n{metrics}");
    }

    // A restart applies the same table.
    let restarted = Daemon::start(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{SOURCE}"),
        &std::fs::read_to_string(&path).unwrap(),
    );
    assert!(restarted.accepted("alice", "a2"));
    assert!(restarted.invalid("alice", "a1"));
    assert!(restarted.invalid("mallory", "m1"));
    let (status, again) = http_get(restarted.admin(), "/readyz");
    assert_eq!(status, 200);
    assert!(again.contains("users=1 degraded: 2 broken line(s) skipped"), "{again}");

    // Fixed: whole again.
    write_by_rename(&path, b"alice:{PLAIN}a2\ncarol:{PLAIN}c1\n");
    wait_until(Duration::from_secs(5), "the fixed file", || {
        daemon.accepted("carol", "c1")
    });
    let (_, body) = http_get(daemon.admin(), "/readyz");
    assert!(body.starts_with("ready\n") && body.contains("users=2\n"), "{body}");
}

#[test]
fn an_emptied_file_keeps_the_last_good_table_for_a_while() {
    let daemon = Daemon::start(&format!("reload_interval = \"100ms\"\n{SOURCE}"), "a:{PLAIN}fixed\n");
    let path = daemon.path("users.htpasswd");

    // Emptied: kept while it may be a rewrite caught after the truncation (5 s left alone),
    // then taken (the admin meant it).
    write_in_place(&path, b"");
    let emptied = Instant::now();
    wait_until(Duration::from_secs(5), "the emptied file to be noticed", || {
        daemon.log().contains("users file has no users any more")
    });
    assert!(daemon.accepted("a", "fixed"), "the emptied file was taken at once");
    wait_until(Duration::from_secs(10), "the empty file to be taken", || {
        daemon.invalid("a", "fixed")
    });
    assert!(
        emptied.elapsed() >= Duration::from_secs(4),
        "taken after {:?}",
        emptied.elapsed()
    );
}
