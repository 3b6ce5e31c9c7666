//! A throw-away redis-server on a loopback port, without persistence, killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Running;
use super::{READY_DEADLINE, free_port};

/// A running redis-server.
pub struct Redis {
    process: Running,
    /// Its port.
    pub port: u16,
    /// Holds its log.
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server on a free port. Redis cannot report a port it picked, so the port
    /// is picked free beforehand and may be taken in between: then Redis fails to bind
    /// (EADDRINUSE) and a new port is tried.
    pub fn start() -> Redis {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Redis::try_start(free_port()) {
                Ok(redis) => return redis,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
    }

    /// Starts redis-server on `port` (e.g. again where a stopped one was) and waits until it
    /// answers PING.
    pub fn start_on(port: u16) -> Redis {
        Redis::try_start(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(port: u16) -> Result<Redis, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            // Redis writes its title over the memory that /proc/<pid>/environ shows, which
            // would hide the run marker from the leak check.
            "--set-proc-title",
            "no",
            "--logfile",
        ])
        .arg(dir.path().join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let process = Running::start("redis-server (Debian package redis-server)", cmd);
        let mut redis = Redis { process, port, dir };
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = redis.process.exited() {
                return Err(format!("redis-server exited with {status}: {}", redis.log()));
            }
            if redis.command("PING").contains("PONG") {
                return Ok(redis);
            }
            if Instant::now() > end {
                return Err(format!("redis-server did not answer PING in time: {}", redis.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
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

    /// Freezes (`STOP`) or thaws (`CONT`) the server: connections stay open, nothing is
    /// answered, as with a Redis that hangs.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }
}
