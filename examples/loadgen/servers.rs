//! The three servers under test: mailauthd, the nginx-only chain (set_misc + auth_basic) and the static
//! nginx ceiling. Every process is killed by a Drop guard.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    pub child: Child,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first so nginx's master takes its workers down with it.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// The nginx config: the chain on `chain_port` (its `/check`, `/auth`, `/pass` and `/fail` locations) and the static
/// ceiling on `ceiling_port`, one nginx with 2 workers like the default `auto` here.
pub fn nginx_config(dir: &Path, users: &Path, chain_port: u16, ceiling_port: u16) -> String {
    let modules = "/usr/lib/nginx/modules";
    format!(
        r#"load_module {modules}/ndk_http_module.so;
load_module {modules}/ngx_http_set_misc_module.so;
user root;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # The nginx-only chain (set_misc + auth_basic + error_page).
    server {{
        listen 127.0.0.1:{chain_port} backlog=4096;
        location /check {{
            set_encode_base64 $mail_basic "$http_auth_user:$http_auth_pass";
            proxy_set_header Authorization "Basic $mail_basic";
            proxy_pass http://127.0.0.1:{chain_port}/auth;
        }}
        location /auth {{
            auth_basic "mail";
            auth_basic_user_file {users};
            error_page 401 =200 /fail;
            proxy_pass http://127.0.0.1:{chain_port}/pass;
        }}
        location /pass {{
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port 143;
            return 200;
        }}
        location = /fail {{
            add_header Auth-Status "Invalid login or password";
            add_header Auth-Wait 3;
            return 200;
        }}
    }}
    # The ceiling: the OK headers, nothing checked.
    server {{
        listen 127.0.0.1:{ceiling_port} backlog=4096;
        location /check {{
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port 143;
            return 200;
        }}
    }}
}}
"#,
        dir = dir.display(),
        users = users.display(),
    )
}

pub fn start_nginx(dir: &Path, config: &str) -> Guard {
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).expect("write nginx.conf");
    let child = Command::new("nginx")
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &path.display().to_string(),
            "-g",
            "daemon off;",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start nginx (apt-get install nginx libnginx-mod-http-ndk libnginx-mod-http-set-misc)");
    Guard { child }
}

pub fn mailauthd_config(users: &Path, port: u16) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\nreload_interval = \"0s\"\n\n[[source]]\nkind = \"htpasswd\"\npath = \"{}\"\n\n\
         [route]\nimap = \"127.0.0.1:143\"\npop3 = \"127.0.0.1:110\"\nsmtp = \"127.0.0.1:25\"\n",
        users.display()
    )
}

/// Starts mailauthd with its log going to `log` (its default level: one line per login).
pub fn start_mailauthd(binary: &Path, dir: &Path, name: &str, config: &str) -> Guard {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write mailauthd config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("create log");
    let child = Command::new(binary)
        .args(["serve", "--config", &path.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Guard { child }
}

/// Resident set size and its peak of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mailauthd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// CPU time (user + system) used so far by `pid` and its child processes (nginx's
/// workers), in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let (user, system) = cpu_split_secs(pid);
    user + system
}

/// User and system CPU time used so far by `pid` and its child processes, in seconds.
pub fn cpu_split_secs(pid: u32) -> (f64, f64) {
    let ticks_of = |pid: &str| -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (field(11), field(12))
    };
    let pid = pid.to_string();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let (user, system) = std::iter::once(pid.as_str())
        .chain(children.split_whitespace())
        .map(ticks_of)
        .fold((0, 0), |(u, s), (du, ds)| (u + du, s + ds));
    // Linux reports these in USER_HZ, 100 on every common platform.
    (user as f64 / 100.0, system as f64 / 100.0)
}

/// Waits (at most 5 s) until `pid` and its children use no CPU for 100 ms.
pub async fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = cpu_secs(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cpu_secs(pid);
        if now - last < 0.005 {
            return;
        }
        last = now;
    }
}

/// Waits (at most 30 s, then panics naming `what`) until `ready` says yes.
#[allow(dead_code, reason = "used by bench/state and bench/ldap, not by bench/run")]
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
