//! LDAP logins per second, cold and cached, in both verification modes: four mailauthd
//! instances on one OpenLDAP slapd, all running at once and measured in turn, round after
//! round. Run it with `bench/ldap`. Loopback only; every load loop is bounded in count and
//! time.
//!
//! Options: `--rounds N` (3), `--secs S` per run (3), `--concurrency C` (16), `--users N`
//! (5000), `--mailauthd PATH`, `--out FILE.md`: the section between the ldap-bench markers
//! in that file is replaced (appended when the file has none).
//!
//! Needs: slapd, ldap-utils (ldapadd).

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

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use load::{Bounds, Expect, Stats, nginx_request};
use servers::{Guard, addr, cpu_secs, free_port, start_mailauthd, temp_dir, wait_for};

const BEGIN: &str = sections::SECTIONS[1].0;
const END: &str = sections::SECTIONS[1].1;
const SUFFIX: &str = "dc=example,dc=org";
const PEOPLE: &str = "ou=people,dc=example,dc=org";
const READER_DN: &str = "cn=reader,dc=example,dc=org";
const READER_PW: &str = "reader-pw";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PW: &str = "admin-pw";
/// Every user's password (the same `{SSHA}` hash, made once by slappasswd).
const USER_PW: &str = "user-pw";

struct Options {
    rounds: usize,
    secs: u64,
    concurrency: usize,
    users: u64,
    mailauthd: PathBuf,
    out: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        secs: 3,
        concurrency: 16,
        users: 5000,
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
            "--users" => o.users = value().parse().expect("--users N"),
            "--mailauthd" => o.mailauthd = PathBuf::from(value()),
            "--out" => o.out = Some(PathBuf::from(value())),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn slappasswd(password: &str) -> String {
    let out = Command::new("slappasswd")
        .args(["-h", "{SSHA}", "-s", password])
        .output()
        .expect("slappasswd (apt-get install slapd)");
    assert!(out.status.success(), "slappasswd failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// slapd on a free loopback port with a throw-away MDB database, its log level at 0 as a
/// busy production directory runs it, loaded with `users` people by `ldapadd`.
fn slapd(dir: &Path, users: u64) -> (Guard, u16) {
    let home = dir.join("slapd");
    std::fs::create_dir_all(home.join("db")).expect("slapd dir");
    let d = home.display();
    let config = format!(
        "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
         pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
         database mdb\nmaxsize 1073741824\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PW}\n\
         directory {d}/db\nindex objectClass eq\nindex uid,mail eq\n\
         access to attrs=userPassword by self read by dn.exact=\"{READER_DN}\" read by anonymous auth by * none\n\
         access to * by * read\n"
    );
    std::fs::write(home.join("slapd.conf"), config).expect("slapd.conf");
    let port = free_port();
    // `-d 0`: in the foreground (so the guard can stop it), logging nothing.
    let child = Command::new("slapd")
        .args(["-d", "0", "-f"])
        .arg(home.join("slapd.conf"))
        .args(["-h", &format!("ldap://127.0.0.1:{port}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start slapd (apt-get install slapd)");
    let guard = Guard { child };
    wait_for("slapd to listen", || TcpStream::connect(("127.0.0.1", port)).is_ok());

    let hash = slappasswd(USER_PW);
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\n\
         userPassword: {}\n\ndn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n",
        slappasswd(READER_PW)
    );
    for n in 0..users {
        ldif.push_str(&format!(
            "dn: uid=u{n},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: u{n}\ncn: U{n}\nsn: U\n\
             mail: u{n}@example.org\nuserPassword: {hash}\n\n"
        ));
    }
    let mut add = Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PW,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ldapadd (apt-get install ldap-utils)");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(ldif.as_bytes())
        .expect("write ldif");
    assert!(add.wait().expect("ldapadd").success(), "ldapadd failed");
    (guard, port)
}

/// The four ways of asking the directory that are measured.
const MODES: [(&str, &str, &str); 4] = [
    (
        "bind, cold",
        "verify = \"bind\"",
        "every login: a search as the service account, a bind as the user, a rebind as the service account",
    ),
    (
        "bind, cached",
        "verify = \"bind\"",
        "the user's bind remembered by the verified-login cache: one search per login",
    ),
    (
        "password-attribute, cold",
        "verify = \"password-attribute\"",
        "a search that reads `userPassword`, its `{SSHA}` verified by mailauthd on every login",
    ),
    (
        "password-attribute, cached",
        "verify = \"password-attribute\"",
        "a search, then the verified-login cache instead of the hash",
    ),
];

struct Instance {
    mode: &'static str,
    port: u16,
    guard: Guard,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Login `n` of a run: the users in turn, so a cold run meets each user as often as the
/// others and a cached one finds every user in the cache after the warm-up.
fn workload(users: u64) -> load::Workload {
    Arc::new(move |n| nginx_request(&format!("u{}", n % users), USER_PW, Expect::Ok))
}

fn main() {
    let opts = options();
    let dir = temp_dir();
    let (slapd, ldap_port) = slapd(&dir, opts.users);
    let instances: Vec<Instance> = MODES
        .iter()
        .map(|(mode, verify, _)| {
            let port = free_port();
            let cache = if mode.ends_with("cold") { "0s" } else { "1h" };
            let config = format!(
                "listen = \"127.0.0.1:{port}\"\n\n[cache]\nttl = \"{cache}\"\n\n\
                 [[source]]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:{ldap_port}\"\nbase = \"{PEOPLE}\"\n\
                 filter = \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))\"\n\
                 bind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\n{verify}\ntimeout = \"2s\"\npool_size = 8\n\n\
                 [route]\nimap = \"127.0.0.1:143\"\n"
            );
            let name = mode.replace([',', ' '], "-");
            let guard = start_mailauthd(&opts.mailauthd, &dir, &name, &config);
            wait_for("mailauthd to listen", || TcpStream::connect(addr(port)).is_ok());
            Instance { mode, port, guard }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Warm-up: every user logs in once on every instance (and fills the caches).
    for instance in &instances {
        let stats = runtime.block_on(load::run(
            addr(instance.port),
            workload(opts.users),
            Bounds {
                duration: Duration::from_secs(120),
                max_requests: opts.users,
                concurrency: opts.concurrency,
            },
            None,
        ));
        assert_eq!(
            stats.ok, opts.users,
            "{}: the warm-up logins were not all accepted ({} errors)",
            instance.mode, stats.errors
        );
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bounds = Bounds {
        duration: Duration::from_secs(opts.secs),
        max_requests: 10_000_000,
        concurrency: opts.concurrency,
    };
    // results[mode][round]: the run and the CPU microseconds per login of mailauthd and slapd.
    let mut results: Vec<Vec<(Stats, f64, f64)>> = vec![Vec::new(); instances.len()];
    for _ in 0..opts.rounds {
        for (m, instance) in instances.iter().enumerate() {
            let (ours, theirs) = (cpu_secs(instance.guard.pid()), cpu_secs(slapd.pid()));
            let stats = runtime.block_on(load::run(addr(instance.port), workload(opts.users), bounds, None));
            let per = |before: f64, pid: u32| (cpu_secs(pid) - before) * 1e6 / stats.ok.max(1) as f64;
            let cpu = (per(ours, instance.guard.pid()), per(theirs, slapd.pid()));
            eprintln!(
                "{:<28} {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms cpu mailauthd {:>6.1} us slapd {:>6.1} us errors {}",
                instance.mode,
                stats.rate(),
                stats.percentile_ms(0.5),
                stats.percentile_ms(0.99),
                cpu.0,
                cpu.1,
                stats.errors
            );
            results[m].push((stats, cpu.0, cpu.1));
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut md = format!("{BEGIN}\n## LDAP: logins per second, cold and cached\n\n");
    md.push_str(&format!(
        "Accepted logins per second through one mailauthd per mode, all four running at once on \
         one slapd and measured in turn. Generated by `examples/ldapbench` (`bench/ldap`) — do not \
         edit by hand.\n\n\
         - Load (/proc/loadavg) before: `{}`, after: `{}`\n\
         - Each figure is the median of {} rounds of {} s at {} concurrent requests, one new TCP \
         connection per request like nginx; {} users logging in in turn (each seen once per {} \
         logins), looked up by `(|(uid=%u)(mail=%u))` with equality indexes, `pool_size = 8`. \
         {} on loopback, log level 0, `{{SSHA}}` passwords from slappasswd. CPU is per accepted \
         login, from /proc.\n\n",
        load_before.trim(),
        load_after.trim(),
        opts.rounds,
        opts.secs,
        opts.concurrency,
        opts.users,
        opts.users,
        slapd_version(),
    ));
    md.push_str("| mode | logins/s | p50 ms | p99 ms | mailauthd CPU µs/login | slapd CPU µs/login | errors |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for (m, instance) in instances.iter().enumerate() {
        let runs = &results[m];
        let rate = median(runs.iter().map(|r| r.0.rate()).collect());
        let p50 = median(runs.iter().map(|r| r.0.percentile_ms(0.5)).collect());
        let p99 = median(runs.iter().map(|r| r.0.percentile_ms(0.99)).collect());
        let ours = median(runs.iter().map(|r| r.1).collect());
        let theirs = median(runs.iter().map(|r| r.2).collect());
        let errors: u64 = runs.iter().map(|r| r.0.errors).sum();
        md.push_str(&format!(
            "| {} | {rate:.0} | {p50:.2} | {p99:.2} | {ours:.0} | {theirs:.0} | {errors} |\n",
            instance.mode
        ));
    }
    md.push('\n');
    for (mode, _, what) in MODES {
        md.push_str(&format!("- `{mode}`: {what}.\n"));
    }
    md.push_str(&format!("{END}\n"));
    println!("{md}");
    if let Some(out) = &opts.out {
        sections::write_section(out, BEGIN, END, &md);
    }
    drop(instances);
    drop(slapd);
    let _ = std::fs::remove_dir_all(&dir);
}

fn slapd_version() -> String {
    Command::new("slapd")
        .arg("-VV")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stderr);
            text.split_whitespace()
                .skip_while(|w| *w != "slapd")
                .nth(1)
                .map_or_else(|| "OpenLDAP slapd".to_owned(), |v| format!("OpenLDAP slapd {v}"))
        })
        .unwrap_or_default()
}
