//! The daemon under test: `mailauthd serve` with a config and users file in its own temp
//! dir, listening on `127.0.0.1:0` (or a unix socket); the bound addresses are read from its
//! log (`listening on ...`, `admin endpoints on ...`), so no port is picked in advance.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{Running, at_exit};
use super::wire::{exchange, header, is_accepted, is_invalid, plain_request};
use super::{READY_DEADLINE, bin, wait_for};

/// Where the daemon answers auth requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix-domain socket.
    Unix(PathBuf),
}

/// What to start: a config body, a users file, command-line arguments and environment.
pub struct Builder {
    config: String,
    users: Option<String>,
    dir: Option<tempfile::TempDir>,
    listen: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Builder {
    /// Writes `text` to `users.htpasswd` in the daemon's dir.
    pub fn users(mut self, text: &str) -> Builder {
        self.users = Some(text.to_owned());
        self
    }

    /// Uses `dir` (with files the test wrote) as the daemon's dir.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Builder {
        self.dir = Some(dir);
        self
    }

    /// The `listen` value; `127.0.0.1:0` unless set (e.g. `unix:auth.sock`).
    pub fn listen(mut self, listen: &str) -> Builder {
        self.listen = listen.to_owned();
        self
    }

    /// Command-line arguments before `serve` (e.g. `--log-format json`).
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An environment variable (e.g. `RUST_LOG`), set after the harness's own.
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the files, starts the daemon and waits until it listens (and, when the config
    /// has `[admin]`, until the admin listener is bound).
    pub fn start(self) -> Daemon {
        let dir = self.dir.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        if let Some(users) = &self.users {
            std::fs::write(dir.path().join("users.htpasswd"), users).expect("write users");
        }
        let config = format!("listen = \"{}\"\n{}", self.listen, self.config);
        let config_path = dir.path().join("mailauthd.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let log_path = dir.path().join("mailauthd.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(bin());
        cmd.args(&self.args)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("MAILAUTHD_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = Running::start("mailauthd", cmd);
        let wants_admin = self.config.contains("[admin]");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let (endpoint, admin) = wait_for("mailauthd to listen", || {
            if let Some(status) = process.exited() {
                panic!("mailauthd exited with {status}:\n{}", read_log());
            }
            let log = read_log();
            let endpoint = log.lines().find_map(|l| endpoint_after(l, dir.path()))?;
            let admin = log.lines().find_map(|l| address_after(l, "admin endpoints on "));
            if wants_admin && admin.is_none() {
                return None;
            }
            Some((endpoint, admin))
        });
        // The commands that talk to a running daemon (`mailauthd bans`) read its admin
        // address from a config: they get one that names the bound addresses, as an
        // operator's config names fixed ones.
        let bound = with_bound_addresses(&config, &endpoint, admin);
        std::fs::write(dir.path().join(CLI_CONFIG), bound).expect("write the CLI's config");
        Daemon {
            process,
            endpoint,
            admin,
            dir,
        }
    }
}

/// The config the CLI commands get, in the daemon's dir (so relative paths stay the same).
const CLI_CONFIG: &str = "mailauthd-cli.toml";

/// `config` with `listen = "127.0.0.1:0"` replaced by the bound address: at the top for the
/// auth listener, under `[admin]` for the admin listener.
fn with_bound_addresses(config: &str, endpoint: &Endpoint, admin: Option<SocketAddr>) -> String {
    let mut section = String::new();
    let mut out = String::new();
    for line in config.lines() {
        if line.starts_with('[') {
            section = line.trim().to_owned();
        }
        let bound = match (section.as_str(), endpoint, admin) {
            ("", Endpoint::Tcp(addr), _) => Some(*addr),
            ("[admin]", _, Some(addr)) => Some(addr),
            _ => None,
        };
        match bound {
            Some(addr) if line.trim() == "listen = \"127.0.0.1:0\"" => {
                out.push_str(&format!("listen = \"{addr}\"\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The word after `marker` in a log line, text or JSON.
fn word_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The address logged after `marker` (`admin endpoints on 127.0.0.1:1234`).
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    word_after(line, marker)?.parse().ok()
}

/// The auth listener in a `listening on 127.0.0.1:1234` (or `unix:/path`) line; a relative
/// socket path is taken relative to `dir`.
fn endpoint_after(line: &str, dir: &Path) -> Option<Endpoint> {
    let word = word_after(line, "listening on ")?;
    match word.strip_prefix("unix:") {
        Some(path) => Some(Endpoint::Unix(dir.join(path))),
        None => word.parse().ok().map(Endpoint::Tcp),
    }
}

/// A running mailauthd with its own temp dir; killed on drop.
pub struct Daemon {
    process: Running,
    endpoint: Endpoint,
    admin: Option<SocketAddr>,
    /// The temp dir holding the config, users file and log.
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// A daemon with `config_body` after its `listen` line; see [`Builder`].
    pub fn builder(config_body: &str) -> Builder {
        Builder {
            config: config_body.to_owned(),
            users: None,
            dir: None,
            listen: "127.0.0.1:0".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Writes `users.htpasswd` and a config (`listen`, then `config_body`) and starts the
    /// daemon. `config_body` may use `users.htpasswd` as a relative path.
    pub fn start(config_body: &str, users: &str) -> Daemon {
        Daemon::builder(config_body).users(users).start()
    }

    /// Starts the daemon with a config written into an existing temp dir.
    pub fn start_in(dir: tempfile::TempDir, config_body: &str) -> Daemon {
        Daemon::builder(config_body).in_dir(dir).start()
    }

    /// The daemon in `slot`, started by `start` on first use and shared by every test for
    /// the rest of the run. A static is never dropped: an exit hook kills the daemon and
    /// removes its dir when the test binary exits (and its parent-death signal kills it when
    /// the binary is interrupted, which runs no hook).
    pub fn shared(slot: &'static OnceLock<Daemon>, start: impl FnOnce() -> Daemon) -> &'static Daemon {
        slot.get_or_init(|| {
            let daemon = start();
            let pid = libc::pid_t::try_from(daemon.pid()).expect("a pid");
            let dir = daemon.dir.path().to_owned();
            at_exit(move || {
                // SAFETY: kill(2) and waitpid(2) have no memory-safety preconditions; the
                // pid is our child, never reaped before (its `Child` is in the static).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                let _ = std::fs::remove_dir_all(&dir);
            });
            daemon
        })
    }

    /// Where it answers auth requests.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The auth_http TCP address; panics when it listens on a unix socket.
    pub fn addr(&self) -> SocketAddr {
        match &self.endpoint {
            Endpoint::Tcp(addr) => *addr,
            Endpoint::Unix(path) => panic!("mailauthd listens on {}", path.display()),
        }
    }

    /// The auth_http socket path; panics when it listens on TCP.
    pub fn socket(&self) -> &Path {
        match &self.endpoint {
            Endpoint::Unix(path) => path,
            Endpoint::Tcp(addr) => panic!("mailauthd listens on {addr}"),
        }
    }

    /// The admin address; panics when the config has no `[admin]`.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("the config has [admin] listen")
    }

    /// Path of a file in the daemon's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.path("mailauthd.toml")
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.path("mailauthd.log")
    }

    /// Everything the daemon logged so far. A worker writes its per-login lines when it
    /// goes idle, just after the reply: the file is read until two reads 20 ms apart agree.
    pub fn log(&self) -> String {
        settled(|| std::fs::read_to_string(self.log_path()).unwrap_or_default())
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

    /// Sends one raw request on a new connection; returns the reply.
    pub fn ask(&self, request: &[u8]) -> Vec<u8> {
        match &self.endpoint {
            Endpoint::Tcp(addr) => exchange(TcpStream::connect(addr).expect("connect to mailauthd"), request),
            Endpoint::Unix(path) => exchange(UnixStream::connect(path).expect("connect to mailauthd"), request),
        }
    }

    /// Sends one raw request; returns the reply as text.
    pub fn ask_text(&self, request: &[u8]) -> String {
        String::from_utf8_lossy(&self.ask(request)).into_owned()
    }

    /// Sends a password login from 127.0.0.1 and returns the reply.
    pub fn login(&self, protocol: &str, user: &str, pass: &str) -> Vec<u8> {
        self.ask(&plain_request(
            protocol,
            user.as_bytes(),
            pass.as_bytes(),
            "127.0.0.1",
            1,
        ))
    }

    /// Sends an IMAP password login (attempt 1) from `client_ip`; returns the reply as text.
    pub fn login_from(&self, user: &str, pass: &str, client_ip: &str) -> String {
        self.ask_text(&plain_request("imap", user.as_bytes(), pass.as_bytes(), client_ip, 1))
    }

    /// Sends a password login from `client_ip`; returns the `Auth-Status` value.
    pub fn auth_status(&self, protocol: &str, user: &str, pass: &str, client_ip: &str) -> String {
        let reply = self.ask(&plain_request(protocol, user.as_bytes(), pass.as_bytes(), client_ip, 1));
        header(&reply, "Auth-Status").unwrap_or_else(|| panic!("no Auth-Status in {reply:?}"))
    }

    /// Whether an IMAP password login from 127.0.0.1 is accepted.
    pub fn accepted(&self, user: &str, pass: &str) -> bool {
        is_accepted(&self.login("imap", user, pass))
    }

    /// Whether an IMAP password login from 127.0.0.1 is refused as invalid (not
    /// temporarily).
    pub fn invalid(&self, user: &str, pass: &str) -> bool {
        is_invalid(&self.login("imap", user, pass))
    }

    /// Runs `mailauthd bans --config <this daemon's config, with the bound addresses> <args>`.
    pub fn bans_cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(["bans", "--config"])
            .arg(self.path(CLI_CONFIG))
            .args(args)
            .env_remove("MAILAUTHD_ADMIN_TOKEN")
            .output()
            .expect("run mailauthd cli")
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the daemon.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; `None` if it did not exit. The dir
    /// stays until the daemon is dropped.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal("TERM");
        self.process.wait_exit(READY_DEADLINE)
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.terminate().is_some_and(|s| s.success())
    }

    /// Stops the daemon (SIGTERM), checks that it exited 0, and returns its whole log.
    pub fn stop_and_log(mut self) -> Vec<String> {
        let status = self.terminate().expect("mailauthd to exit");
        assert!(status.success(), "mailauthd exited with {status}");
        self.log_lines()
    }
}

/// `read()` once two calls 20 ms apart return the same (at most about a second).
pub fn settled(read: impl Fn() -> String) -> String {
    let mut text = read();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let again = read();
        if again == text {
            break;
        }
        text = again;
    }
    text
}
