//! Side-by-side benchmark of mailauthd, the nginx-only chain and a static nginx reply.
//! Run it with `bench/run` (its header explains the options). Loopback only; every load loop is bounded
//! in count and time.
//!
//! Options: `--rounds N` (3), `--secs S` per run (3), `--concurrency C` (16),
//! `--million` / `--no-million` (the 1M- and 10M-user file load tests, on by default), `--mailauthd PATH`,
//! `--out FILE.md`, `--svg FILE.svg`, `--only TEXT` (scenarios whose label contains TEXT; `=LABEL`: that scenario alone).

#![allow(
    unreachable_pub,
    reason = "a binary's modules share items with `pub`; nothing is exported"
)]

mod load;
mod report;
#[allow(dead_code, reason = "write_section is for the benches that own a section")]
mod sections;
mod servers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use load::{Bounds, Expect, Stats, Workload, Zipf, nginx_request};
use report::{Row, Server};

const COLD_USERS: u64 = 4000;
const MIXED_USERS: usize = 10_000;
/// The sizes of the large users files: their load time and memory should grow linearly.
const LARGE_FILES: [usize; 2] = [1_000_000, 10_000_000];

struct Options {
    rounds: usize,
    secs: f64,
    concurrency: usize,
    million: bool,
    mailauthd: PathBuf,
    out: Option<PathBuf>,
    svg: Option<PathBuf>,
    only: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        secs: 3.0,
        concurrency: 16,
        million: true,
        mailauthd: PathBuf::from("target/release/mailauthd"),
        out: None,
        svg: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--secs" => o.secs = value().parse().expect("--secs S"),
            "--concurrency" => o.concurrency = value().parse().expect("--concurrency C"),
            "--million" => o.million = true,
            "--no-million" => o.million = false,
            "--mailauthd" => o.mailauthd = PathBuf::from(value()),
            "--out" => o.out = Some(PathBuf::from(value())),
            "--svg" => o.svg = Some(PathBuf::from(value())),
            "--only" => o.only = Some(value()),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// The hashes the users files are made of, made by Apache's htpasswd like an admin would.
struct Hashes {
    plain: String,
    sha: String,
    apr1: String,
    bcrypt: String,
    bcrypt_cold: String,
}

fn htpasswd(flags: &[&str], pass: &str) -> String {
    let out = Command::new("htpasswd")
        .args(flags)
        .args(["-n", "-b", "u", pass])
        .output()
        .expect("htpasswd (apt-get install apache2-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("u:").expect("htpasswd output").to_owned()
}

fn make_hashes() -> Hashes {
    Hashes {
        plain: "{PLAIN}pw-plain".to_owned(),
        sha: htpasswd(&["-s"], "pw-sha"),
        apr1: htpasswd(&["-m"], "pw-apr1"),
        bcrypt: htpasswd(&["-B", "-C", "10"], "pw-bcrypt"),
        bcrypt_cold: htpasswd(&["-B", "-C", "10"], "pw-cold"),
    }
}

/// Mixed user `m{rank}`: scheme and password by rank modulo 4.
fn mixed_user(rank: usize) -> (String, &'static str) {
    let pass = ["pw-plain", "pw-sha", "pw-apr1", "pw-bcrypt"][rank % 4];
    (format!("m{rank}"), pass)
}

/// The users file: the four hot users first (nginx scans the file to the first match on
/// every request), then 10k mixed users, then the cold bcrypt users.
fn users_file(h: &Hashes) -> String {
    let mut text = format!(
        "plain:{}\nsha:{}\napr1:{}\nbcrypt:{}\n",
        h.plain, h.sha, h.apr1, h.bcrypt
    );
    for rank in 0..MIXED_USERS {
        let hash = [&h.plain, &h.sha, &h.apr1, &h.bcrypt][rank % 4];
        text.push_str(&format!("m{rank}:{hash}\n"));
    }
    for n in 0..COLD_USERS {
        text.push_str(&format!("cold{n}:{}\n", h.bcrypt_cold));
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Scenario {
    Plain,
    Sha,
    Apr1,
    BcryptRepeated,
    BcryptCold,
    WrongPassword,
    UnknownUser,
    ShaDuringBcrypt,
    MixedZipf,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::Plain,
        Scenario::Sha,
        Scenario::Apr1,
        Scenario::BcryptRepeated,
        Scenario::BcryptCold,
        Scenario::WrongPassword,
        Scenario::UnknownUser,
        Scenario::ShaDuringBcrypt,
        Scenario::MixedZipf,
    ];

    fn label(self) -> &'static str {
        match self {
            Scenario::Plain => "{PLAIN}",
            Scenario::Sha => "{SHA}",
            Scenario::Apr1 => "$apr1$",
            Scenario::BcryptRepeated => "bcrypt-10 repeated",
            Scenario::BcryptCold => "bcrypt-10 cold",
            Scenario::WrongPassword => "wrong password",
            Scenario::UnknownUser => "unknown user",
            Scenario::ShaDuringBcrypt => "{SHA} during bcrypt",
            Scenario::MixedZipf => "mixed 10k Zipf",
        }
    }
}

fn fixed(user: &'static str, pass: &'static str, expect: Expect) -> Workload {
    let request = nginx_request(user, pass, expect).bytes;
    Arc::new(move |_| load::Request {
        bytes: request.clone(),
        expect,
    })
}

fn cold(counter: Arc<AtomicU64>, expect: Expect) -> Workload {
    Arc::new(move |_| {
        let n = counter.fetch_add(1, Ordering::Relaxed) % COLD_USERS;
        nginx_request(&format!("cold{n}"), "pw-cold", expect)
    })
}

fn ok_or_any(server: Server) -> Expect {
    if server == Server::Ceiling {
        Expect::Any
    } else {
        Expect::Ok
    }
}

fn refused_or_any(server: Server) -> Expect {
    if server == Server::Ceiling {
        Expect::Any
    } else {
        Expect::Refused
    }
}

struct Bench {
    opts: Options,
    zipf: Arc<Zipf>,
    // Per server, so that mailauthd sees each cold user once.
    cold: BTreeMap<Server, Arc<AtomicU64>>,
    pids: BTreeMap<Server, u32>,
}

impl Bench {
    fn bounds(&self, concurrency: usize) -> Bounds {
        Bounds {
            duration: Duration::from_secs_f64(self.opts.secs),
            max_requests: 2_000_000,
            concurrency,
        }
    }

    async fn run(&self, scenario: Scenario, server: Server, addr: std::net::SocketAddr) -> Stats {
        let ok = ok_or_any(server);
        // Work left over from the previous run (queued cold bcrypt logins) must not be
        // billed to this one.
        servers::settle(self.pids[&server]).await;
        let (user_before, system_before) = servers::cpu_split_secs(self.pids[&server]);
        let mut stats = self.run_load(scenario, server, addr, ok).await;
        let (user, system) = servers::cpu_split_secs(self.pids[&server]);
        let per_request = |secs: f64| secs * 1e6 / stats.ok.max(1) as f64;
        stats.cpu_user_us_per_request = per_request(user - user_before);
        stats.cpu_us_per_request = per_request(user - user_before + system - system_before);
        stats
    }

    async fn run_load(&self, scenario: Scenario, server: Server, addr: std::net::SocketAddr, ok: Expect) -> Stats {
        let workload = match scenario {
            Scenario::Plain => fixed("plain", "pw-plain", ok),
            Scenario::Sha | Scenario::ShaDuringBcrypt => fixed("sha", "pw-sha", ok),
            Scenario::Apr1 => fixed("apr1", "pw-apr1", ok),
            Scenario::BcryptRepeated => fixed("bcrypt", "pw-bcrypt", ok),
            Scenario::BcryptCold => cold(self.cold[&server].clone(), ok),
            Scenario::WrongPassword => fixed("bcrypt", "not-the-password", refused_or_any(server)),
            Scenario::UnknownUser => fixed("nobody", "pw-guess", refused_or_any(server)),
            Scenario::MixedZipf => {
                let zipf = self.zipf.clone();
                Arc::new(move |n| {
                    let (user, pass) = mixed_user(zipf.rank(n));
                    nginx_request(&user, pass, ok)
                })
            }
        };
        if scenario != Scenario::ShaDuringBcrypt {
            return load::run(addr, workload, self.bounds(self.opts.concurrency), None).await;
        }
        // Cold bcrypt logins keep every verification thread busy (and the queue non-empty)
        // while a few {SHA} logins are measured.
        let stop = Arc::new(AtomicBool::new(false));
        let background = tokio::spawn(load::run(
            addr,
            cold(self.cold[&server].clone(), ok),
            self.bounds(self.opts.concurrency),
            Some(stop.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = load::run(addr, workload, self.bounds(4), None).await;
        stop.store(true, Ordering::Relaxed);
        let _ = background.await;
        stats
    }
}

async fn wait_ready(addr: std::net::SocketAddr, user: &str, pass: &str, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let workload = fixed(leak(user), leak(pass), Expect::Ok);
    while started.elapsed() < deadline {
        let bounds = Bounds {
            duration: Duration::from_secs(5),
            max_requests: 1,
            concurrency: 1,
        };
        if load::run(addr, workload.clone(), bounds, None).await.ok == 1 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn bcrypt_verify_ms(hash: &str) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let _ = bcrypt::verify("pw-cold", hash);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn shell(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Load time and memory of mailauthd with a file of `users` users, and what one login costs
/// the chain with the same file.
async fn large_file(opts: &Options, dir: &Path, h: &Hashes, users: usize) -> report::LargeFile {
    let path = dir.join("large.htpasswd");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create the large file"));
    let hashes = [&h.plain, &h.sha, &h.apr1, &h.bcrypt];
    for n in 0..users {
        writeln!(file, "u{n}:{}", hashes[n % 4]).expect("write the large file");
    }
    drop(file);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // The last user is a {PLAIN} one, so the probe itself costs nothing.
    let last = format!("u{}", users - 4);
    let port = servers::free_port();
    let guard = servers::start_mailauthd(&opts.mailauthd, dir, "large", &servers::mailauthd_config(&path, port));
    let ready = wait_ready(servers::addr(port), &last, "pw-plain", Duration::from_secs(300)).await;
    let (rss, peak) = servers::rss_kib(guard.pid());
    drop(guard);

    let (chain_port, ceiling_port) = (servers::free_port(), servers::free_port());
    let ndir = dir.join("nginx-large");
    std::fs::create_dir_all(&ndir).expect("nginx dir");
    let nginx = servers::start_nginx(&ndir, &servers::nginx_config(&ndir, &path, chain_port, ceiling_port));
    let mut chain_ms = None;
    if wait_ready(servers::addr(ceiling_port), "x", "y", Duration::from_secs(10))
        .await
        .is_some()
    {
        let bounds = Bounds {
            duration: Duration::from_secs(10),
            max_requests: 20,
            concurrency: 1,
        };
        let stats = load::run(
            servers::addr(chain_port),
            fixed(leak(&last), "pw-plain", Expect::Ok),
            bounds,
            None,
        )
        .await;
        chain_ms = (stats.ok > 0).then(|| stats.percentile_ms(0.5));
    }
    drop(nginx);
    let _ = std::fs::remove_file(&path);
    report::LargeFile {
        users,
        file_mb: size as f64 / 1e6,
        load: ready,
        rss_mb: rss as f64 / 1024.0,
        peak_mb: peak as f64 / 1024.0,
        chain_login_ms: chain_ms,
    }
}

fn main() {
    let opts = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(opts));
}

async fn bench(opts: Options) {
    let load_before = shell("cat /proc/loadavg");
    let dir = servers::temp_dir();
    eprintln!("bench: working in {}", dir.display());
    let hashes = make_hashes();
    let users = dir.join("users.htpasswd");
    std::fs::write(&users, users_file(&hashes)).expect("write users file");

    let (chain_port, ceiling_port, mailauthd_port) = (servers::free_port(), servers::free_port(), servers::free_port());
    let nginx = servers::start_nginx(&dir, &servers::nginx_config(&dir, &users, chain_port, ceiling_port));
    let mailauthd = servers::start_mailauthd(
        &opts.mailauthd,
        &dir,
        "mailauthd",
        &servers::mailauthd_config(&users, mailauthd_port),
    );
    let ports = [
        (Server::Mailauthd, mailauthd_port),
        (Server::Chain, chain_port),
        (Server::Ceiling, ceiling_port),
    ];
    for (server, port) in ports {
        if wait_ready(servers::addr(port), "plain", "pw-plain", Duration::from_secs(30))
            .await
            .is_none()
        {
            panic!("{server:?} on port {port} did not answer a login within 30 s");
        }
    }
    let hash_ms = bcrypt_verify_ms(&hashes.bcrypt_cold);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("bench: bcrypt-10 verify {hash_ms:.1} ms; {cores} cores");

    let bench = Bench {
        zipf: Arc::new(Zipf::new(MIXED_USERS, 1.0)),
        cold: ports.iter().map(|(s, _)| (*s, Arc::new(AtomicU64::new(0)))).collect(),
        // The chain and the ceiling share one nginx, and run one at a time.
        pids: [
            (Server::Mailauthd, mailauthd.pid()),
            (Server::Chain, nginx.pid()),
            (Server::Ceiling, nginx.pid()),
        ]
        .into_iter()
        .collect(),
        opts,
    };
    // Interleaved: every round runs every scenario on the three servers in turn.
    let mut runs: BTreeMap<(Scenario, Server), Vec<Stats>> = BTreeMap::new();
    for round in 0..bench.opts.rounds {
        let chosen = |s: &Scenario| {
            bench
                .opts
                .only
                .as_ref()
                .is_none_or(|only| match only.strip_prefix('=') {
                    Some(exact) => s.label() == exact,
                    None => s.label().contains(only.as_str()),
                })
        };
        for scenario in Scenario::ALL.into_iter().filter(chosen) {
            for (server, port) in ports {
                let stats = bench.run(scenario, server, servers::addr(port)).await;
                eprintln!(
                    "round {} {:<22} {:<10} {:>9.0}/s p50 {:>8.2} ms p99 {:>8.2} ms cpu {:>7.1} us/req (user {:>7.1}) errors {}",
                    round + 1,
                    scenario.label(),
                    server.name(),
                    stats.rate(),
                    stats.percentile_ms(0.5),
                    stats.percentile_ms(0.99),
                    stats.cpu_us_per_request,
                    stats.cpu_user_us_per_request,
                    stats.errors
                );
                runs.entry((scenario, server)).or_default().push(stats);
            }
        }
    }
    let (rss, peak) = servers::rss_kib(mailauthd.pid());
    let cold_seen = bench.cold[&Server::Mailauthd].load(Ordering::Relaxed);
    drop(mailauthd);
    drop(nginx);

    let mut files = Vec::new();
    if bench.opts.million {
        for users in LARGE_FILES {
            files.push(large_file(&bench.opts, &dir, &hashes, users).await);
        }
    }

    let rows: Vec<Row> = Scenario::ALL
        .iter()
        .map(|&scenario| {
            Row::from_runs(scenario.label(), |server| {
                runs.remove(&(scenario, server)).unwrap_or_default()
            })
        })
        .collect();
    let context = report::Context {
        command: std::env::var("BENCH_COMMAND").map_or_else(|_| "bench/run".to_owned(), |c| c.trim().to_owned()),
        machine: format!(
            "{} ({} cores), {}, {}",
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            cores,
            shell("uname -sr"),
            shell("nginx -v 2>&1")
        ),
        rustc: shell("rustc -V"),
        load_before,
        load_after: shell("cat /proc/loadavg"),
        rounds: bench.opts.rounds,
        secs: bench.opts.secs,
        concurrency: bench.opts.concurrency,
        hash_ms,
        cores,
        mailauthd_rss_mb: rss as f64 / 1024.0,
        mailauthd_peak_mb: peak as f64 / 1024.0,
        cold_users_used: cold_seen,
        cold_users: COLD_USERS,
    };
    let markdown = report::markdown(&context, &rows, &files);
    println!("{markdown}");
    if let Some(out) = &bench.opts.out {
        // The shared-state and LDAP sections (`bench/state`, `bench/ldap`) are written by
        // other runs: kept as they are.
        let kept = sections::owned_sections(&std::fs::read_to_string(out).unwrap_or_default());
        std::fs::write(out, format!("{markdown}{kept}")).expect("write report");
    }
    if let Some(svg) = &bench.opts.svg {
        std::fs::write(svg, report::svg(&rows)).expect("write chart");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
