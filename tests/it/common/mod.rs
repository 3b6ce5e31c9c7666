//! Helpers shared by the integration tests: the daemon as a subprocess, a real nginx, a stub
//! upstream, raw nginx-shaped requests. Every process is killed by a Drop guard; readiness
//! is polled against a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long anything may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A file under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// Polls `ready` every 20 ms until it holds; panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Lines a child process wrote to stderr, collected by a thread.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Log {
    fn collect(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let log = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                log.lines.lock().unwrap().push(line);
                log.changed.notify_all();
            }
        });
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {needle:?} in:\n{}", lines.join("\n"));
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// The `mailauthd` daemon, killed on drop.
pub struct Daemon {
    child: Child,
    /// Its auth_http address.
    pub addr: SocketAddr,
    /// Its admin address, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    /// Its stderr.
    pub log: Arc<Log>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `mailauthd serve` with `config` (which should listen on `127.0.0.1:0`) and
    /// waits until it listens.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mailauthd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailauthd"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mailauthd");
        let log = Arc::new(Log::default());
        log.collect(child.stderr.take().expect("stderr"));
        let mut daemon = Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            log,
            _dir: dir,
        };
        let line = daemon.log.wait_for("listening on ", READY_DEADLINE);
        daemon.addr = after(&line, "listening on ").parse().expect("listen address");
        if config.contains("[admin]") {
            let line = daemon.log.wait_for("admin endpoints on ", READY_DEADLINE);
            daemon.admin = Some(after(&line, "admin endpoints on ").parse().expect("admin address"));
        }
        daemon
    }

    /// Sends one raw request and reads the reply.
    pub fn ask(&self, request: &[u8]) -> Reply {
        ask(self.addr, request)
    }

    /// The status of `GET path` on the admin listener.
    pub fn admin_status(&self, path: &str) -> u16 {
        let addr = self.admin.expect("no [admin] listener");
        let reply = ask(addr, format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes());
        reply.text[9..12].parse().expect("status code")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    rest.split_whitespace().next().unwrap_or(rest)
}

/// A reply from the daemon.
#[derive(Debug)]
pub struct Reply {
    /// The reply, as text (lossy).
    pub text: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Reply {
    /// The value of header `name` (first match, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// `Auth-Status`.
    pub fn status(&self) -> &str {
        self.header("Auth-Status")
            .unwrap_or_else(|| panic!("no Auth-Status in {:?}", self.text))
    }
}

/// Sends `request` on a new connection, as nginx does, and reads until the server closes.
pub fn ask(addr: SocketAddr, request: &[u8]) -> Reply {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request).expect("write request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    Reply {
        text: String::from_utf8_lossy(&reply).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// nginx's `Auth-User` / `Auth-Pass` escaping: controls, space and `%` as `%XX`.
pub fn nginx_escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b <= 0x20 || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// An nginx `Auth-Method: plain` request.
pub fn plain(protocol: &str, user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut r = b"GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: ".to_vec();
    r.extend_from_slice(&nginx_escape(user));
    r.extend_from_slice(b"\r\nAuth-Pass: ");
    r.extend_from_slice(&nginx_escape(pass));
    r.extend_from_slice(
        format!("\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.77\r\n").as_bytes(),
    );
    if protocol == "smtp" {
        r.extend_from_slice(b"Client-Host: [UNAVAILABLE]\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// A real nginx (Debian's), in its own prefix directory, killed on drop.
pub struct Nginx {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// Its prefix directory (config, logs).
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `server_body` inside `server { listen ...; }`. `{dir}` in the body is
    /// replaced by the prefix directory.
    pub fn start(server_body: &str) -> Nginx {
        // The port is picked free and may be taken in between: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Nginx::try_start(server_body) {
                Ok(n) => return n,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(server_body: &str) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let port = free_port();
        let body = server_body.replace("{dir}", &d);
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  log_format conn '$connection $connection_requests $status';\n  access_log {d}/access.log conn;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n{body}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nginx (apt-get install nginx): {e}"))?;
        let mut nginx = Nginx { child, port, dir };
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited with {status}: {log}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > end {
                return Err("nginx did not listen in time".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access log: one `connection-number requests-on-it status` line per request.
    pub fn access_log(&self) -> Vec<(u64, u64, u16)> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(' ').map(str::parse::<u64>);
                Some((f.next()?.ok()?, f.next()?.ok()?, u16::try_from(f.next()?.ok()?).ok()?))
            })
            .collect()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stub upstream on a loopback port: it counts connections and either holds each one
/// without answering (`status` 0) or answers every request with `status`.
pub struct Stub {
    /// Its address.
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// Starts a stub that never answers.
    pub fn hanging() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let stub = Stub {
            addr,
            status: Arc::new(AtomicU16::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (status, accepted, stop) = (stub.status.clone(), stub.accepted.clone(), stub.stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst);
                if code == 0 {
                    // Held open, never answered, until the stub is dropped.
                    held.push(stream);
                } else {
                    std::thread::spawn(move || answer(stream, code));
                }
            }
        });
        stub
    }

    /// From now on, answer every request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `http://<addr>/auth`.
    pub fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }
}

fn answer(mut stream: TcpStream, code: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ =
        stream.write_all(format!("HTTP/1.1 {code} Stub\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the held connections.
        let _ = TcpStream::connect(self.addr);
    }
}
