//! A small harness for the policy tests: the `mailauthd` binary and `redis-server` started
//! on free loopback ports, readiness polled with a deadline, every process killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long a started process may take to become ready.
pub const READY: Duration = Duration::from_secs(20);

/// alice's password is `alice-secret` (`htpasswd -nbB -C 5 alice alice-secret`).
pub const USERS: &str = "alice:$2y$05$vOWyQ9VVho2diiZalDXgruhaqYC06gmQrxopqmJXvzVpmLnjGNT9S\nbob:{PLAIN}bob-password\n";

/// The admin token of every test daemon.
pub const TOKEN: &str = "test-token-0123456789";

pub use crate::common::{free_port, wait_until};

/// A password login as nginx sends it (user and password without characters to escape).
pub fn plain(user: &str, pass: &str, client_ip: &str, attempt: u32) -> Vec<u8> {
    format!(
        "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: {user}\r\nAuth-Pass: {pass}\r\n\
         Auth-Protocol: imap\r\nAuth-Login-Attempt: {attempt}\r\nClient-IP: {client_ip}\r\n\r\n"
    )
    .into_bytes()
}

/// An APOP login with a (wrong) digest.
pub fn apop(user: &str, client_ip: &str) -> Vec<u8> {
    format!(
        "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: apop\r\nAuth-User: {user}\r\n\
         Auth-Pass: 00000000000000000000000000000000\r\nAuth-Salt: <1.2@mail>\r\nAuth-Protocol: pop3\r\n\
         Auth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\n\r\n"
    )
    .into_bytes()
}

/// The reply as text.
pub fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to mailauthd");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The value of header `name` in a reply.
pub fn header(reply: &str, name: &str) -> Option<String> {
    reply.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// A running mailauthd with its own temp dir and admin endpoint.
pub struct Daemon {
    child: Child,
    /// The auth_http address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon with [`USERS`] and `config_body` after the listen/admin/source lines.
    pub fn start(config_body: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("users.htpasswd"), USERS).expect("write users");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = format!(
            "listen = \"{addr}\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n\
             [admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n{config_body}"
        );
        let config_path = dir.path().join("mailauthd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("mailauthd.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mailauthd"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mailauthd");
        let mut daemon = Daemon {
            child,
            addr,
            admin,
            dir,
        };
        wait_until(READY, "mailauthd to listen", || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("mailauthd exited with {status}:\n{}", daemon.log());
            }
            daemon.log().contains("listening on")
        });
        daemon
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mailauthd.toml")
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailauthd.log")).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mailauthd.log")
    }

    /// Sends one raw request.
    pub fn ask(&self, request: &[u8]) -> String {
        ask(self.addr, request)
    }

    /// A plain IMAP login, attempt 1.
    pub fn login(&self, user: &str, pass: &str, client_ip: &str) -> String {
        self.ask(&plain(user, pass, client_ip, 1))
    }

    /// Runs `mailauthd bans --config <this daemon's config> <args>`.
    pub fn bans_cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailauthd"))
            .args(["bans", "--config"])
            .arg(self.config_path())
            .args(args)
            .env_remove("MAILAUTHD_ADMIN_TOKEN")
            .output()
            .expect("run mailauthd cli")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away redis-server on a loopback port, without persistence.
pub struct Redis {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts redis-server on a free port.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts redis-server on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (Debian package redis-server)");
        let redis = Redis { child, port };
        wait_until(READY, "redis-server to answer PING", || {
            redis.command("PING").contains("PONG")
        });
        redis
    }

    /// The URL for `[state] redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one inline command and returns the raw answer ("" if it cannot connect).
    pub fn command(&self, line: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Redis {
    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open, nothing
    /// is answered, as with a Redis that hangs.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
