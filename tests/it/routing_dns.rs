//! Backend names re-resolved on their DNS TTL through the real daemon: `[route.health]
//! nameservers` points at a DNS responder the test runs on a loopback UDP port (RFC 1035
//! §4.1), which answers the backend's A record with a TTL of 1 s and then changes the
//! address, answers SERVFAIL, and stops answering.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Daemon, header, http_get, spawn, wait_for};

const NAME: &str = "store.routing.test";
const TYPE_A: u16 = 1;

/// What the responder does with a question for [`NAME`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An A record with this address and a TTL of 1 s (AAAA: no records, NOERROR).
    Answer(Ipv4Addr),
    /// RCODE 2, SERVFAIL.
    ServFail,
    /// No reply at all, as a stopped server.
    Silent,
}

/// A DNS responder on a loopback UDP port; stopped when dropped.
struct Dns {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    /// Questions for [`NAME`] received so far.
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    fn start(mode: Mode) -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS responder");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let asked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, a, s) = (mode.clone(), asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let now = *m.lock().unwrap();
                if let Some(reply) = reply(&buf[..n], now, &a) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns {
            port,
            mode,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The question's name (lower case, dotted) and the offset after it.
fn qname(msg: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), at));
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).into_owned());
        at += len;
    }
}

/// The reply to `query` (RFC 1035 §4.1.1 header, the question echoed, §4.1.3 records).
fn reply(query: &[u8], mode: Mode, asked: &AtomicUsize) -> Option<Vec<u8>> {
    let (name, end) = qname(query)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let (rcode, record) = if name == NAME {
        asked.fetch_add(1, Ordering::SeqCst);
        match mode {
            Mode::Silent => return None,
            Mode::ServFail => (2, None),
            Mode::Answer(ip) => (0, (qtype == TYPE_A).then_some(ip)),
        }
    } else {
        (3, None) // NXDOMAIN
    };
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]); // ID
    out.push(0x84 | (query[2] & 0x01)); // QR, AA, RD as asked
    out.push(0x80 | rcode); // RA, RCODE
    out.extend_from_slice(&[0, 1, 0, u8::from(record.is_some()), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let Some(ip) = record {
        out.extend_from_slice(&[0xC0, 12]); // the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 1]); // IN, TTL 1 s
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

fn backend_of(daemon: &Daemon, user: &str) -> String {
    let reply = daemon.login("imap", user, "pw");
    match (header(&reply, "Auth-Server"), header(&reply, "Auth-Port")) {
        (Some(s), Some(p)) => format!("{s}:{p}"),
        _ => format!("refused: {}", String::from_utf8_lossy(&reply)),
    }
}

const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const THIRD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

#[test]
fn a_name_moves_on_its_ttl_and_keeps_its_last_address_when_dns_fails() {
    let dns = Dns::start(Mode::Answer(FIRST));
    // dns_refresh is far above the TTL: a move within seconds is the TTL's doing.
    let config = format!(
        "[route]\nimap = \"{NAME}:1143\"\n[route.health]\ndns_refresh = \"60s\"\nnameservers = [\"127.0.0.1:{}\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n",
        dns.port
    );
    let daemon = Daemon::builder(&config).users("u@example.org:{PLAIN}pw\n").start();
    assert_eq!(backend_of(&daemon, "u@example.org"), "127.0.0.2:1143");

    // The address changes: logins follow within about the TTL (1 s), without a restart.
    let log_from = daemon.log_lines().len();
    dns.set(Mode::Answer(SECOND));
    let changed = Instant::now();
    wait_for("logins on the new address", || {
        (backend_of(&daemon, "u@example.org") == "127.0.0.3:1143").then_some(())
    });
    let took = changed.elapsed();
    eprintln!("logins moved {took:?} after the address changed (TTL 1 s)");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    daemon.wait_for_log(log_from, "backend name resolves to new addresses");

    // Never per login: 200 logins in about a second cost no more questions than the TTL
    // asks for (one A and one AAAA per refresh, at most two refreshes here).
    let (asked, started) = (dns.asked(), Instant::now());
    for _ in 0..200 {
        assert_eq!(backend_of(&daemon, "u@example.org"), "127.0.0.3:1143");
    }
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let during = dns.asked() - asked;
    eprintln!("200 logins in {:?}: {during} DNS question(s)", started.elapsed());
    assert!(during <= 6, "{during} questions for 200 logins");

    // SERVFAIL: the last address stays in use, and the log and /readyz say so.
    let log_from = daemon.log_lines().len();
    dns.set(Mode::ServFail);
    daemon.wait_for_log(log_from, "keeping its last addresses");
    let (_, ready) = http_get(daemon.admin(), "/readyz");
    assert!(
        ready.contains(&format!(
            "backend route.imap {NAME}:1143 stale addresses: cannot resolve {NAME}"
        )),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("backend route.imap {NAME}:1143 127.0.0.3:1143")),
        "{ready}"
    );
    assert_eq!(backend_of(&daemon, "u@example.org"), "127.0.0.3:1143");

    // Answers again, with another address: used, and no longer stale.
    let log_from = daemon.log_lines().len();
    dns.set(Mode::Answer(THIRD));
    wait_for("logins on the third address", || {
        (backend_of(&daemon, "u@example.org") == "127.0.0.4:1143").then_some(())
    });
    daemon.wait_for_log(log_from, "backend name resolves again");
    let (_, ready) = http_get(daemon.admin(), "/readyz");
    assert!(!ready.contains("stale addresses"), "{ready}");

    // The server stops answering: the same, once the question times out.
    let log_from = daemon.log_lines().len();
    dns.set(Mode::Silent);
    daemon.wait_for_log(log_from, "keeping its last addresses");
    let (_, ready) = http_get(daemon.admin(), "/readyz");
    assert!(ready.contains("stale addresses"), "{ready}");
    assert_eq!(backend_of(&daemon, "u@example.org"), "127.0.0.4:1143");
}

fn check_config(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(dir.path().join("users"), "u:{PLAIN}pw\n").unwrap();
    std::fs::write(
        &config,
        format!("{body}[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailauthd"));
    cmd.args(["check-config", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn::spawn(cmd).expect("run check-config").wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text.replace(&config.display().to_string(), "m.toml"),
    )
}

#[test]
fn check_config_resolves_names_through_the_nameservers_and_checks_them() {
    let dns = Dns::start(Mode::Answer(FIRST));
    let body = |servers: &str| format!("[route]\nimap = \"{NAME}:143\"\n[route.health]\nnameservers = {servers}\n");
    let (code, out) = check_config(&body(&format!("[\"127.0.0.1:{}\"]", dns.port)));
    assert_eq!(code, 0, "{out}");
    assert!(dns.asked() > 0, "the responder was not asked");

    // Without the responder's answer the name does not resolve, and the key says where.
    dns.set(Mode::ServFail);
    let (code, out) = check_config(&body(&format!("[\"127.0.0.1:{}\"]", dns.port)));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("m.toml:2: route.imap: \"{NAME}:143\": cannot resolve host")),
        "{out}"
    );

    // A literal backend, so only the key under test is wrong.
    let literal =
        |servers: &str| format!("[route]\nimap = \"127.0.0.1:143\"\n[route.health]\nnameservers = {servers}\n");
    let (code, out) = check_config(&literal("[\"dns.example:53\"]"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("m.toml:4: route.health.nameservers: \"dns.example:53\" is not an IP address"),
        "{out}"
    );
    let (code, out) = check_config(&literal("[]"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("m.toml:4: route.health.nameservers: an empty list"),
        "{out}"
    );
}
