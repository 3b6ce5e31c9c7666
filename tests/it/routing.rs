//! Routing through the real daemon: two IMAP backends that greet as RFC 9051 says, health
//! checks that take one out and bring it back, `/metrics` and `/readyz` naming each backend,
//! every backend down as a temporary failure, and `mailauthd test` naming the backend and
//! why.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Daemon, header, http_get, spawn, wait_for};

/// An IMAP server that only greets (`* OK`, RFC 9051 §7.1.1) and closes; dropped, it stops
/// listening, so a connect is refused as for a stopped store.
struct Greeter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Greeter {
    fn start(addr: &str) -> Greeter {
        let listener = TcpListener::bind(addr).expect("bind greeter");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1] ready\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Greeter {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const INTERVAL_MS: u64 = 300;

fn backend_of(daemon: &Daemon, user: &str) -> Result<String, String> {
    let reply = daemon.login("imap", user, "pw");
    match (header(&reply, "Auth-Server"), header(&reply, "Auth-Port")) {
        (Some(s), Some(p)) => Ok(format!("{s}:{p}")),
        _ => Err(header(&reply, "Auth-Status").unwrap_or_default()),
    }
}

fn placement(daemon: &Daemon, users: &[String]) -> BTreeMap<String, Result<String, String>> {
    users.iter().map(|u| (u.clone(), backend_of(daemon, u))).collect()
}

fn metric(daemon: &Daemon, series: &str) -> Option<String> {
    let (_, body) = http_get(daemon.admin(), "/metrics");
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_owned)
    })
}

#[test]
fn a_stopped_backend_loses_only_its_users_within_one_interval_and_all_down_is_temporary() {
    let a = Greeter::start("127.0.0.1:0");
    let b = Greeter::start("127.0.0.1:0");
    let (a_addr, b_addr) = (a.addr, b.addr);
    let users: Vec<String> = (0..40).map(|i| format!("u{i}@example.org")).collect();
    let file: String = users.iter().map(|u| format!("{u}:{{PLAIN}}pw\n")).collect();
    let config = format!(
        "[route]\nimap = [\"{a_addr}\", \"{b_addr}\"]\n[route.health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"200ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"
    );
    let daemon = Daemon::builder(&config).users(&file).start();
    let up = |addr: SocketAddr| format!("mailauthd_backend_up{{protocol=\"imap\",backend=\"{addr}\"}}");
    wait_for("both backends checked", || {
        (metric(&daemon, &up(a_addr)).as_deref() == Some("1") && metric(&daemon, &up(b_addr)).as_deref() == Some("1"))
            .then_some(())
    });
    let before = placement(&daemon, &users);
    let on_a: Vec<&String> = before
        .iter()
        .filter(|(_, b)| **b == Ok(a_addr.to_string()))
        .map(|(u, _)| u)
        .collect();
    assert!(on_a.len() > 5 && on_a.len() < 35, "unbalanced: {before:?}");
    assert_eq!(before, placement(&daemon, &users), "the choice is sticky");

    // A stops: within one interval (plus the check's timeout) its users go to B, and only
    // they move.
    let log_from = daemon.log_lines().len();
    let stopped = Instant::now();
    drop(a);
    wait_for("A's users moved", || {
        (backend_of(&daemon, on_a[0]) == Ok(b_addr.to_string())).then_some(())
    });
    let took = stopped.elapsed();
    eprintln!(
        "{} of {} users were on the stopped backend; they moved after {took:?}",
        on_a.len(),
        users.len()
    );
    assert!(took < Duration::from_millis(INTERVAL_MS + 200 + 300), "took {took:?}");
    let after = placement(&daemon, &users);
    for (u, was) in &before {
        let now = &after[u];
        if on_a.contains(&u) {
            assert_eq!(*now, Ok(b_addr.to_string()), "{u}");
        } else {
            assert_eq!(now, was, "{u} moved although its backend stayed up");
        }
    }
    daemon.wait_for_log(log_from, "backend is down");
    assert_eq!(metric(&daemon, &up(a_addr)).as_deref(), Some("0"));
    let (_, ready) = http_get(daemon.admin(), "/readyz");
    assert!(
        ready.contains(&format!("backend route.imap {a_addr} {a_addr} down")),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("backend route.imap {b_addr} {b_addr} up")),
        "{ready}"
    );
    // The change is logged once, not at every check.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    assert_eq!(
        daemon.log_lines()[log_from..]
            .iter()
            .filter(|l| l.contains("backend is down"))
            .count(),
        1
    );

    // Both down: a temporary failure, with its reason in the log line.
    drop(b);
    wait_for("every backend down", || {
        (backend_of(&daemon, &users[0])
            == Err("[UNAVAILABLE] Temporary authentication failure, try again later".into()))
        .then_some(())
    });
    assert!(daemon.log().contains("reason=\"backends-down\""));

    // A comes back on its address: its users return to it.
    let _a = Greeter::start(&a_addr.to_string());
    wait_for("A back", || {
        (backend_of(&daemon, on_a[0]) == Ok(a_addr.to_string())).then_some(())
    });
    for u in &on_a {
        assert_eq!(backend_of(&daemon, u), Ok(a_addr.to_string()));
    }
}

#[test]
fn mailauthd_test_names_the_backend_its_rule_and_health() {
    let store = Greeter::start("127.0.0.1:0");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users"),
        "a@example.org:{PLAIN}pw\nb@example.org:{PLAIN}pw::::::proxy host=192.0.2.9 port=1143\n",
    )
    .unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(
        &config,
        format!(
            "[route]\nimap = \"127.0.0.1:1\"\n[route.domains.\"example.org\"]\nimap = [\"{}\", \"{closed}\"]\n\
             [route.health]\ninterval = \"5s\"\ntimeout = \"500ms\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n",
            store.addr
        ),
    )
    .unwrap();
    let test = |user: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailauthd"));
        cmd.args(["test", "--config", config.to_str().unwrap(), "--user", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn::spawn(cmd).expect("run mailauthd test");
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (reply, why) = test("a@example.org");
    assert!(
        reply.contains(&format!(
            "Auth-Server: 127.0.0.1\r\nAuth-Port: {}\r\n",
            store.addr.port()
        )),
        "{reply}"
    );
    assert!(
        why.contains(&format!(
            "backend: {} by route.domains.\"example.org\" (health up; 1 of 2 backend(s) up)",
            store.addr
        )),
        "{why}"
    );
    let (reply, why) = test("b@example.org");
    assert!(
        reply.contains("Auth-Server: 192.0.2.9\r\nAuth-Port: 1143\r\n"),
        "{reply}"
    );
    assert!(
        why.contains("backend: 192.0.2.9:1143 by source (health unchecked"),
        "{why}"
    );
}
