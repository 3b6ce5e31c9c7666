//! Shared harness: the real `mailauthd` binary started with a config in a temporary
//! folder, on ports the kernel picks (`127.0.0.1:0`, read back from its log), stopped by
//! a Drop guard; raw HTTP/1.0 requests shaped like nginx's.

#![allow(dead_code, reason = "each test module uses a different part of the harness")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long anything may take to become true before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailauthd")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after [`DEADLINE`].
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The auth_http address.
    pub addr: SocketAddr,
    /// The admin address, when `[admin] listen` is set.
    pub admin: Option<SocketAddr>,
}

/// The address logged after `marker` (`listening on 127.0.0.1:1234`), in text or JSON logs.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Daemon {
    /// Writes `config` to `dir/mailauthd.toml` and runs `mailauthd <args> serve --config it`
    /// with `env` added, then waits for the listener (and the admin listener when configured).
    pub fn start(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let path = dir.join("mailauthd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start mailauthd");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            })
        };
        let mut daemon = Daemon {
            child,
            log,
            reader: Some(reader),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
        };
        let wants_admin = config.contains("[admin]");
        let (addr, admin) = wait_until("mailauthd to listen", || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("mailauthd exited with {status}:\n{}", daemon.logs().join("\n"));
            }
            let logs = daemon.logs();
            let addr = logs.iter().find_map(|l| address_after(l, "listening on "))?;
            let admin = logs.iter().find_map(|l| address_after(l, "admin endpoints on "));
            if wants_admin && admin.is_none() {
                return None;
            }
            Some((addr, admin))
        });
        daemon.addr = addr;
        daemon.admin = admin;
        daemon
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (at or after line `from`); returns its index.
    pub fn wait_for_log(&self, from: usize, needle: &str) -> usize {
        wait_until(&format!("a log line with {needle:?}"), || {
            self.logs()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i)
        })
    }

    /// Sends `signal` (e.g. `HUP`, `TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then waits (bounded) for a clean exit and returns the whole log.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        let status = wait_until("mailauthd to exit", || self.child.try_wait().ok().flatten());
        assert!(status.success(), "mailauthd exited with {status}");
        // The process is gone, so the pipe is at EOF and the reader thread ends.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.logs()
    }

    /// The admin address; panics when the config has no `[admin]`.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("config has [admin] listen")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes, reads until the server closes; returns the reply.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    reply
}

/// `GET path` over HTTP/1.0; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    let reply = String::from_utf8(reply).expect("utf-8 reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Percent-escapes like nginx does for Auth-User / Auth-Pass (everything but unreserved).
pub fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A password login request as nginx sends it.
pub fn login_request(protocol: &str, user: &str, pass: &str, client_ip: &str) -> Vec<u8> {
    format!(
        "GET /check HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: {}\r\nAuth-Pass: {}\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\n\r\n",
        escape(user),
        escape(pass)
    )
    .into_bytes()
}

/// Sends a password login; returns the `Auth-Status` value.
pub fn login(addr: SocketAddr, protocol: &str, user: &str, pass: &str, client_ip: &str) -> String {
    let reply = String::from_utf8_lossy(&exchange(addr, &login_request(protocol, user, pass, client_ip))).into_owned();
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Auth-Status: "))
        .unwrap_or_else(|| panic!("no Auth-Status in {reply:?}"))
        .to_owned()
}

/// A config for `dir` with a users file and both listeners on kernel-chosen ports.
pub fn config_with(users_file: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nreload_interval = \"100ms\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[source]]\nkind = \"htpasswd\"\npath = \"{users_file}\"\n"
    )
}

/// A fresh temporary folder.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The crate's root folder.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `program` can be run (found on PATH).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
