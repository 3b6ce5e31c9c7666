//! Refused logins per second with the brute-force state in the process, in one Redis, behind
//! Redis Sentinel and on a Redis Cluster, side by side in one run (the four mailauthd
//! instances run at once and are measured in turn, round after round), and the latency a
//! Redis round trip adds. Run it with `bench/state`. Loopback only; every load loop is
//! bounded in count and time.
//!
//! Options: `--rounds N` (3), `--secs S` per run (3), `--concurrency C` (16),
//! `--mailauthd PATH`, `--out FILE.md`: the section between the state-bench markers in that
//! file is replaced (appended when the file has none).
//!
//! Needs: redis-server, redis-sentinel, redis-tools (redis-cli).

#![allow(
    unreachable_pub,
    reason = "a binary's modules share items with `pub`; nothing is exported"
)]

#[allow(dead_code, reason = "shared with examples/loadgen, which uses all of it")]
#[path = "../loadgen/load.rs"]
mod load;
#[allow(dead_code, reason = "shared with examples/loadgen, which uses all of it")]
#[path = "../loadgen/sections.rs"]
mod sections;
#[allow(dead_code, reason = "shared with examples/loadgen, which uses all of it")]
#[path = "../loadgen/servers.rs"]
mod servers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use load::{Bounds, Expect, Request, Stats};
use servers::{Guard, addr, free_port, mailauthd_config, start_mailauthd, temp_dir, wait_for};

/// The markers around the section this writes.
const BEGIN: &str = sections::SECTIONS[0].0;
const END: &str = sections::SECTIONS[0].1;

struct Options {
    rounds: usize,
    secs: u64,
    concurrency: usize,
    mailauthd: PathBuf,
    out: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        secs: 3,
        concurrency: 16,
        mailauthd: PathBuf::from("target/release/mailauthd"),
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--secs" => o.secs = value().parse().expect("--secs S"),
            "--concurrency" => o.concurrency = value().parse().expect("--concurrency C"),
            "--mailauthd" => o.mailauthd = PathBuf::from(value()),
            "--out" => o.out = Some(PathBuf::from(value())),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// One inline command to a Redis on `port`; the raw answer ("" when it cannot connect).
fn ask_redis(port: u16, line: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = [0u8; 8192];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A redis-server (or, with `sentinel_conf`, a sentinel) on a free port, without persistence.
fn redis(dir: &Path, sentinel_conf: Option<&str>, extra: &[&str]) -> (Guard, u16) {
    let port = free_port();
    let home = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&home).expect("redis dir");
    let mut cmd = match sentinel_conf {
        Some(conf) => {
            let path = home.join("sentinel.conf");
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
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&home)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .expect("cannot start redis (apt-get install redis-server redis-sentinel)");
    let guard = Guard { child };
    wait_for("redis to answer", || ask_redis(port, "PING").contains("PONG"));
    (guard, port)
}

/// Servers and the `[state]` of each mode.
struct Backends {
    _servers: Vec<Guard>,
    states: Vec<(&'static str, String)>,
}

fn backends(dir: &Path) -> Backends {
    let mut servers = Vec::new();
    let mut states = vec![("local", String::new())];

    let (single, port) = redis(dir, None, &[]);
    servers.push(single);
    states.push(("redis", format!("[state]\nredis = \"redis://127.0.0.1:{port}/0\"\n")));

    let (primary, primary_port) = redis(dir, None, &[]);
    let (replica, replica_port) = redis(dir, None, &["--replicaof", "127.0.0.1", &primary_port.to_string()]);
    servers.extend([primary, replica]);
    wait_for("the replica", || {
        ask_redis(replica_port, "INFO replication").contains("master_link_status:up")
    });
    let conf = format!(
        "sentinel monitor mymaster 127.0.0.1 {primary_port} 2\nsentinel down-after-milliseconds mymaster 5000\n"
    );
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let (sentinel, port) = redis(dir, Some(&conf), &[]);
        servers.push(sentinel);
        sentinels.push(port);
    }
    for port in &sentinels {
        wait_for("the sentinels' quorum", || {
            ask_redis(*port, "SENTINEL CKQUORUM mymaster").starts_with("+OK 3 usable")
        });
    }
    let list: Vec<String> = sentinels.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    states.push((
        "sentinel",
        format!(
            "[state]\nsentinels = [{}]\nsentinel_master = \"mymaster\"\n",
            list.join(", ")
        ),
    ));

    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (node, port) = redis(dir, None, &["--cluster-enabled", "yes"]);
        servers.push(node);
        nodes.push(port);
    }
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cannot run redis-cli (apt-get install redis-tools)");
    assert!(status.success(), "redis-cli --cluster create failed");
    for port in &nodes {
        wait_for("the cluster", || {
            ask_redis(*port, "CLUSTER INFO").contains("cluster_state:ok")
        });
    }
    let list: Vec<String> = nodes.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    states.push(("cluster", format!("[state]\ncluster = [{}]\n", list.join(", "))));
    Backends {
        _servers: servers,
        states,
    }
}

/// nginx's request for a `plain` IMAP login from `client`.
fn request(user: &str, pass: &str, client: &str) -> Request {
    let bytes = format!(
        "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: {user}\r\n\
         Auth-Pass: {pass}\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client}\r\n\r\n"
    )
    .into_bytes();
    Request {
        bytes,
        expect: Expect::Refused,
    }
}

/// The scenarios: what is sent, and what it costs in Redis.
const SCENARIOS: [(&str, &str); 2] = [
    (
        "wrong password",
        "the same wrong password again and again from one address: a lookup (MGET) and a failure \
         recorded (one script call per scope), counted once since it repeats",
    ),
    (
        "banned network",
        "logins from a banned network: refused from the bans the instance heard of, no Redis round trip",
    ),
];

struct Instance {
    mode: &'static str,
    port: u16,
    _guard: Guard,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let opts = options();
    let dir = temp_dir();
    let users = dir.join("users.htpasswd");
    std::fs::write(&users, "plain:{PLAIN}right-password\n").expect("users file");
    let backends = backends(&dir);
    let instances: Vec<Instance> = backends
        .states
        .iter()
        .map(|(mode, state)| {
            let port = free_port();
            let config = format!(
                "{}\n[policy]\nnet_failures = 5\nhmac_key = \"bench-key-0123456789abcdef\"\n{state}",
                mailauthd_config(&users, port)
            );
            let guard = start_mailauthd(&opts.mailauthd, &dir, mode, &config);
            wait_for("mailauthd to listen", || TcpStream::connect(addr(port)).is_ok());
            Instance {
                mode,
                port,
                _guard: guard,
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Ban 192.0.2.1 on each instance: five distinct wrong passwords.
    for instance in &instances {
        for i in 0..5 {
            let reply = runtime.block_on(load::run(
                addr(instance.port),
                Arc::new(move |_| request(&format!("guess{i}"), "x", "192.0.2.1")),
                Bounds {
                    duration: Duration::from_secs(5),
                    max_requests: 1,
                    concurrency: 1,
                },
                None,
            ));
            assert_eq!(reply.ok, 1, "{}: a guess was not refused", instance.mode);
        }
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bounds = Bounds {
        duration: Duration::from_secs(opts.secs),
        max_requests: 10_000_000,
        concurrency: opts.concurrency,
    };
    // (scenario, mode) -> per-round stats
    let mut results: Vec<Vec<Vec<Stats>>> = vec![vec![Vec::new(); instances.len()]; SCENARIOS.len()];
    for _ in 0..opts.rounds {
        for (s, (scenario, _)) in SCENARIOS.iter().enumerate() {
            for (m, instance) in instances.iter().enumerate() {
                let workload: load::Workload = match *scenario {
                    "wrong password" => Arc::new(|_| request("plain", "wrong-password", "127.0.0.1")),
                    _ => Arc::new(|_| request("plain", "right-password", "192.0.2.1")),
                };
                let stats = runtime.block_on(load::run(addr(instance.port), workload, bounds, None));
                results[s][m].push(stats);
            }
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut md = String::new();
    md.push_str(&format!(
        "{BEGIN}\n## Shared state: local, one Redis, Sentinel, Cluster\n\n"
    ));
    md.push_str(&format!(
        "Refused logins per second through one mailauthd per mode, all four running at once and \
         measured in turn. Generated by `examples/statebench` (`bench/state`) — do not edit by hand.\n\n\
         - Load (/proc/loadavg) before: `{}`, after: `{}`\n\
         - Each figure is the median of {} rounds of {} s at {} concurrent requests, one new TCP \
         connection per request like nginx. Redis {} on loopback: one server; a primary, a replica \
         and three sentinels; a 3-primary Cluster.\n\n",
        load_before.trim(),
        load_after.trim(),
        opts.rounds,
        opts.secs,
        opts.concurrency,
        shell_version(),
    ));
    md.push_str("| scenario | mode | refused/s | p50 ms | p99 ms | p50 added vs local | errors |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for (s, (scenario, _)) in SCENARIOS.iter().enumerate() {
        let p50s: Vec<f64> = results[s]
            .iter()
            .map(|runs| median(runs.iter().map(|r| r.percentile_ms(0.5)).collect()))
            .collect();
        for (m, instance) in instances.iter().enumerate() {
            let runs = &results[s][m];
            let rate = median(runs.iter().map(Stats::rate).collect());
            let p99 = median(runs.iter().map(|r| r.percentile_ms(0.99)).collect());
            let errors: u64 = runs.iter().map(|r| r.errors).sum();
            let added = if m == 0 {
                "—".to_owned()
            } else {
                format!("{:+.2} ms", p50s[m] - p50s[0])
            };
            md.push_str(&format!(
                "| {scenario} | {} | {rate:.0} | {:.2} | {p99:.2} | {added} | {errors} |\n",
                instance.mode, p50s[m]
            ));
        }
    }
    md.push('\n');
    for (scenario, what) in SCENARIOS {
        md.push_str(&format!("- `{scenario}`: {what}.\n"));
    }
    md.push_str(&format!("{END}\n"));
    println!("{md}");
    if let Some(out) = &opts.out {
        sections::write_section(out, BEGIN, END, &md);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn shell_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}
