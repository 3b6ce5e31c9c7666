//! A real nginx (Debian's) as an HTTP server, in its own prefix directory, killed on drop.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Running;
use super::{READY_DEADLINE, free_port};

/// nginx on a loopback port (`daemon off`, `master_process off`: one process).
pub struct Nginx {
    process: Running,
    /// Its loopback port.
    pub port: u16,
    /// Its prefix directory (config, logs).
    pub dir: tempfile::TempDir,
}

/// Why a start failed.
enum StartError {
    /// Another process took the port first: worth another try with a new one.
    PortTaken(String),
    /// Anything else.
    Other(String),
}

impl Nginx {
    /// Starts nginx with `http_body` in `http {}` and `server_body` inside
    /// `server { listen ...; }`. `{dir}` in the bodies is replaced by the prefix directory.
    pub fn start(http_body: &str, server_body: &str) -> Nginx {
        // nginx cannot report a port it picked, so the port is picked free beforehand and
        // may be taken in between: then nginx fails to bind, and a new port is tried.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Nginx::try_start(http_body, server_body) {
                Ok(n) => return n,
                Err(StartError::PortTaken(e)) => last_error = e,
                Err(StartError::Other(e)) => panic!("nginx did not start: {e}"),
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(http_body: &str, server_body: &str) -> Result<Nginx, StartError> {
        let other = |e: std::io::Error| StartError::Other(e.to_string());
        let dir = tempfile::tempdir().map_err(other)?;
        let d = dir.path().display().to_string();
        let port = free_port();
        let body = server_body.replace("{dir}", &d);
        let http_body = http_body.replace("{dir}", &d);
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  log_format conn '$connection $connection_requests $status';\n  access_log {d}/access.log conn;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               {http_body}\n  server {{\n    listen 127.0.0.1:{port};\n{body}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(other)?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = super::spawn::spawn(cmd)
            .map_err(|e| StartError::Other(format!("cannot run nginx (apt-get install nginx): {e}")))?;
        let mut process = Running::adopt("nginx", child);
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = process.exited() {
                let log = error_log(dir.path());
                let message = format!("nginx exited with {status}: {log}");
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken(message)
                } else {
                    StartError::Other(message)
                });
            }
            // nginx writes its pid file only once its sockets are bound, so a connection
            // that succeeds after that reaches this nginx, not a process that took the port.
            if dir.path().join("nginx.pid").exists() && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Nginx { process, port, dir });
            }
            if Instant::now() > end {
                return Err(StartError::Other(format!(
                    "nginx did not listen in time: {}",
                    error_log(dir.path())
                )));
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn error_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}
