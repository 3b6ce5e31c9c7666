//! A throw-away redis-server on a loopback port, without persistence, killed on drop; a
//! replica of one, a sentinel watching one, and a Redis Cluster of several.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Running;
use super::{READY_DEADLINE, free_port, wait_until};

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
        Redis::start_with(&[])
    }

    /// Starts redis-server on a free port with `extra` arguments (`--replicaof ...`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Redis::try_start(free_port(), None, extra) {
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
        Redis::try_start(port, None, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// redis-server speaking TLS only, with the certificate and key in `certs`
    /// (`server.pem`, `server.key`), listening once its port accepts connections (the inline
    /// [`Redis::command`] does not speak TLS).
    pub fn start_tls(certs: &std::path::Path) -> Redis {
        Redis::launch_tls(certs, None, &[])
    }

    /// A sentinel speaking TLS only, watching `primary` (TLS only too) as `mymaster` with a
    /// quorum of 1; it checks the primary's certificate against `certs/ca.pem`.
    pub fn sentinel_tls(primary: &Redis, certs: &std::path::Path) -> Redis {
        let conf = format!(
            "sentinel monitor mymaster 127.0.0.1 {} 1\ntls-replication yes\ntls-ca-cert-file {}\n",
            primary.port,
            certs.join("ca.pem").display()
        );
        Redis::launch_tls(certs, Some(&conf), &[])
    }

    fn launch_tls(certs: &std::path::Path, sentinel_conf: Option<&str>, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let mut cmd = match sentinel_conf {
            Some(conf) => {
                let path = dir.path().join("sentinel.conf");
                std::fs::write(&path, conf).expect("sentinel config");
                let mut cmd = Command::new("redis-sentinel");
                cmd.arg(path);
                cmd
            }
            None => {
                let mut cmd = Command::new("redis-server");
                cmd.args(["--save", "", "--appendonly", "no"]);
                cmd
            }
        };
        cmd.args(["--port", "0", "--tls-port"])
            .arg(port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--set-proc-title",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(certs.join("server.pem"))
            .arg("--tls-key-file")
            .arg(certs.join("server.key"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Running::start("redis-server (Debian package redis-server)", cmd);
        let mut redis = Redis { process, port, dir };
        wait_until(READY_DEADLINE, "redis-server to listen with TLS", || {
            assert!(redis.process.exited().is_none(), "redis-server exited: {}", redis.log());
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        redis
    }

    /// A replica of `primary`, once it has synchronised.
    pub fn replica_of(primary: &Redis) -> Redis {
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        wait_until(READY_DEADLINE, "the replica to synchronise", || {
            replica.command("INFO replication").contains("master_link_status:up")
        });
        replica
    }

    /// A sentinel watching `primary` as `mymaster` with a quorum of 2; short timeouts so
    /// that a failover takes a few seconds.
    pub fn sentinel(primary: &Redis) -> Redis {
        Redis::sentinel_with(primary, 2, "")
    }

    /// A sentinel watching `primary` as `mymaster` with `quorum`, `extra` lines appended to
    /// its config (`requirepass`, `sentinel auth-pass`).
    pub fn sentinel_with(primary: &Redis, quorum: u32, extra: &str) -> Redis {
        let conf = format!(
            "sentinel monitor mymaster 127.0.0.1 {} {quorum}\n\
             sentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 2000\n\
             sentinel parallel-syncs mymaster 1\n{extra}",
            primary.port
        );
        let mut last_error = String::new();
        for _ in 0..5 {
            match Redis::try_start(free_port(), Some(&conf), &[]) {
                Ok(redis) => return redis,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
    }

    /// Starts redis-server on `port`; as a sentinel with `sentinel_conf` (its config file
    /// must be writable: a sentinel records what it learns there).
    fn try_start(port: u16, sentinel_conf: Option<&str>, extra: &[&str]) -> Result<Redis, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = match sentinel_conf {
            Some(conf) => {
                let path = dir.path().join("sentinel.conf");
                std::fs::write(&path, conf).map_err(|e| e.to_string())?;
                let mut cmd = Command::new("redis-sentinel");
                cmd.arg(path);
                cmd
            }
            None => {
                let mut cmd = Command::new("redis-server");
                cmd.args(["--save", "", "--appendonly", "no"]);
                cmd
            }
        };
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            // Redis writes its title over the memory that /proc/<pid>/environ shows, which
            // would hide the run marker from the leak check.
            "--set-proc-title",
            "no",
            "--dir",
        ])
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let name = match sentinel_conf {
            Some(_) => "redis-sentinel (Debian package redis-sentinel)",
            None => "redis-server (Debian package redis-server)",
        };
        let process = Running::start(name, cmd);
        let mut redis = Redis { process, port, dir };
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = redis.process.exited() {
                return Err(format!("redis-server exited with {status}: {}", redis.log()));
            }
            // A server with a password answers, but refuses PING without it.
            let answer = redis.command("PING");
            if answer.contains("PONG") || answer.contains("NOAUTH") {
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

/// A Redis Cluster of three primaries (no replicas), every slot assigned.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut create = Running::start("redis-cli (Debian package redis-tools)", cmd);
        let status = create
            .wait_exit(READY_DEADLINE)
            .expect("redis-cli --cluster create to finish");
        assert!(status.success(), "redis-cli --cluster create: {status}");
        for node in &nodes {
            wait_until(READY_DEADLINE, "the cluster to be ok on every node", || {
                node.command("CLUSTER INFO").contains("cluster_state:ok")
            });
        }
        Cluster { nodes }
    }

    /// The same over TLS only (the cluster bus too), with the certificates in `certs`.
    pub fn start_tls(certs: &std::path::Path) -> Cluster {
        let ca = certs.join("ca.pem");
        let ca = ca.to_str().expect("a UTF-8 path");
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::launch_tls(
                    certs,
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--tls-cluster",
                        "yes",
                        "--tls-ca-cert-file",
                        ca,
                    ],
                )
            })
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--tls", "--cacert", ca, "--cluster", "create"]);
        for node in &nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut create = Running::start("redis-cli (Debian package redis-tools)", cmd);
        let status = create
            .wait_exit(READY_DEADLINE)
            .expect("redis-cli --cluster create to finish");
        assert!(status.success(), "redis-cli --tls --cluster create: {status}");
        Cluster { nodes }
    }

    /// The TOML list of seed nodes for `[state] cluster`.
    pub fn toml_nodes(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("\"127.0.0.1:{}\"", n.port)).collect();
        format!("[{}]", nodes.join(", "))
    }

    /// The node that holds `key`'s slot: the one that does not redirect (MOVED) a read.
    pub fn node_of(&self, key: &str) -> &Redis {
        self.nodes
            .iter()
            .find(|n| n.command(&format!("EXISTS {key}")).starts_with(':'))
            .expect("a node for the slot")
    }
}
