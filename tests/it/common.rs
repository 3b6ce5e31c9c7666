//! Harness shared by the integration tests: start the daemon binary with a config in a temp
//! dir on a free loopback port, wait for it with a deadline, send raw nginx-shaped requests,
//! kill it on drop.

#![allow(dead_code, reason = "each test module uses a different part of the harness")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `mailauthd` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailauthd")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `ready` until it is true or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `mailauthd serve`, killed on drop.
pub struct Daemon {
    child: Child,
    /// The auth_http listener.
    pub addr: SocketAddr,
    /// The daemon's stderr (its log).
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon in `dir` with `config` (TOML without `listen`, which is added) and
    /// waits until it accepts connections (sources are loaded before it listens).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let config_path = dir.join("mailauthd.toml");
        std::fs::write(&config_path, format!("listen = \"{addr}\"\n{config}")).unwrap();
        let log = dir.join("mailauthd.log");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, addr, log };
        wait_until(Duration::from_secs(10), "mailauthd to listen", || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("mailauthd exited with {status}: {}", daemon.log_text());
            }
            TcpStream::connect(addr).is_ok()
        });
        daemon
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (e.g. `HUP`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one raw request and returns the whole reply.
    pub fn request(&self, raw: &[u8]) -> String {
        request(self.addr, raw)
    }

    /// Decides a `plain` IMAP login from `client_ip`.
    pub fn login_from(&self, user: &str, pass: &str, client_ip: &str) -> Reply {
        Reply(self.request(&plain_request(user, pass, client_ip)))
    }

    /// Decides a `plain` IMAP login from 127.0.0.1.
    pub fn login(&self, user: &str, pass: &str) -> Reply {
        self.login_from(user, pass, "127.0.0.1")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one raw request to `addr` and returns the whole reply.
pub fn request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(raw).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// nginx's %-escaping of `Auth-User` / `Auth-Pass` (enough of it for tests).
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

/// The request nginx sends for an IMAP `LOGIN user pass` from `client_ip`.
pub fn plain_request(user: &str, pass: &str, client_ip: &str) -> Vec<u8> {
    format!(
        "GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: {}\r\nAuth-Pass: {}\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\n\r\n",
        escape(user),
        escape(pass)
    )
    .into_bytes()
}

/// A reply of the daemon.
#[derive(Debug)]
pub struct Reply(pub String);

impl Reply {
    /// `Auth-Status: OK`.
    pub fn accepted(&self) -> bool {
        self.0.contains("\r\nAuth-Status: OK\r\n")
    }

    /// Refused as a wrong login (not a temporary failure).
    pub fn invalid(&self) -> bool {
        self.0.contains("Invalid login or password")
    }
}

/// A bcrypt hash at the lowest cost, for fast tests.
pub fn bcrypt4(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}
