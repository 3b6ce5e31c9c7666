//! Shared harness for the integration tests: the real `mailauthd` binary started on a free
//! loopback port with a config and users file in a temp dir, raw nginx-shaped requests,
//! readiness polled with a deadline, the process killed on drop. The admin listener, when
//! configured on port 0, is found through the daemon's log.

#![allow(dead_code, reason = "each test module uses a different part of the harness")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started process may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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

/// Escapes like nginx's `NGX_ESCAPE_MAIL_AUTH`: controls, space and `%` become `%XX`.
pub fn nginx_escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        if b <= 0x20 || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// An auth request as nginx sends it for a password login.
pub fn plain_request(protocol: &str, user: &[u8], pass: &[u8], client_ip: &str, attempt: u32) -> Vec<u8> {
    let mut req = b"GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: ".to_vec();
    req.extend_from_slice(&nginx_escape(user));
    req.extend_from_slice(b"\r\nAuth-Pass: ");
    req.extend_from_slice(&nginx_escape(pass));
    req.extend_from_slice(
        format!("\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: {attempt}\r\nClient-IP: {client_ip}\r\n")
            .as_bytes(),
    );
    if protocol == "smtp" {
        req.extend_from_slice(b"Client-Host: [UNAVAILABLE]\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Sends `request` on a new connection and reads the reply until the server closes.
pub fn ask(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to mailauthd");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    reply
}

/// The value of header `name` in a reply, if present.
pub fn header(reply: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
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

/// `GET path` over HTTP/1.0 (the admin listener); returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = ask(
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

/// The address logged after `marker` (`admin endpoints on 127.0.0.1:1234`), text or JSON.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A running mailauthd with its own temp dir.
pub struct Daemon {
    child: Child,
    /// The auth_http address.
    pub addr: SocketAddr,
    /// The admin address, when the config has `[admin] listen`.
    pub admin: Option<SocketAddr>,
    /// The temp dir holding the config, users file and log.
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes `users.htpasswd` and a config (`listen` on a free port, then `config_body`)
    /// and starts the daemon. `config_body` may use `users.htpasswd` as a relative path.
    pub fn start(config_body: &str, users: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("users.htpasswd"), users).expect("write users");
        Daemon::start_in(dir, config_body)
    }

    /// Starts the daemon with a config written into an existing temp dir.
    pub fn start_in(dir: tempfile::TempDir, config_body: &str) -> Daemon {
        Daemon::start_with(dir, config_body, &[], &[])
    }

    /// As [`Daemon::start_in`], with command-line arguments before `serve` (e.g.
    /// `--log-format json`) and extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with(dir: tempfile::TempDir, config_body: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = format!("listen = \"{addr}\"\n{config_body}");
        let config_path = dir.path().join("mailauthd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("mailauthd.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mailauthd"))
            .args(args)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("MAILAUTHD_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mailauthd");
        let mut daemon = Daemon {
            child,
            addr,
            admin: None,
            dir,
        };
        let wants_admin = config_body.contains("[admin]");
        daemon.admin = wait_for("mailauthd to listen", || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("mailauthd exited with {status}:\n{}", daemon.log());
            }
            let log = daemon.log();
            if !log.contains("listening on") {
                return None;
            }
            let admin = log.lines().find_map(|l| address_after(l, "admin endpoints on "));
            if wants_admin && admin.is_none() {
                return None;
            }
            Some(admin)
        });
        daemon
    }

    /// Path of a file in the daemon's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailauthd.log")).unwrap_or_default()
    }

    /// The log, one entry per line.
    pub fn log_lines(&self) -> Vec<String> {
        self.log().lines().map(str::to_owned).collect()
    }

    /// Waits until a log line at or after index `from` contains `needle`; returns its index.
    pub fn wait_for_log(&self, from: usize, needle: &str) -> usize {
        wait_for(&format!("a log line with {needle:?}"), || {
            self.log_lines()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i)
        })
    }

    /// The admin address; panics when the config has no `[admin]`.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("the config has [admin] listen")
    }

    /// Sends a password login from `client_ip`; returns the `Auth-Status` value.
    pub fn auth_status(&self, protocol: &str, user: &str, pass: &str, client_ip: &str) -> String {
        let reply = self.ask(&plain_request(protocol, user.as_bytes(), pass.as_bytes(), client_ip, 1));
        header(&reply, "Auth-Status").unwrap_or_else(|| panic!("no Auth-Status in {reply:?}"))
    }

    /// Stops the daemon (SIGTERM), checks that it exited 0, and returns its whole log.
    pub fn stop_and_log(mut self) -> Vec<String> {
        self.signal("TERM");
        let status = wait_for("mailauthd to exit", || self.child.try_wait().ok().flatten());
        assert!(status.success(), "mailauthd exited with {status}");
        self.log_lines()
    }

    /// Sends one raw request.
    pub fn ask(&self, request: &[u8]) -> Vec<u8> {
        ask(self.addr, request)
    }

    /// Sends a password login and returns the reply.
    pub fn login(&self, protocol: &str, user: &str, pass: &str) -> Vec<u8> {
        self.ask(&plain_request(
            protocol,
            user.as_bytes(),
            pass.as_bytes(),
            "127.0.0.1",
            1,
        ))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{signal} failed");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if start.elapsed() > READY_DEADLINE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `contents` to `path` through a temp file and a rename, as editors and
/// `mailauthd user` do.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
