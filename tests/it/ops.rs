//! Operations: metrics scraped after real logins, health and readiness across a broken
//! reload, text and JSON logs, the fail2ban filter run by fail2ban-regex, systemd
//! readiness and unit file, the nginx config accepted by `nginx -t`, man page and
//! completions.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    Daemon, READY_DEADLINE as DEADLINE, bin, crate_dir, have, http_get, nginx_escape, wait_for, wait_until,
};

const ALICE_PW: &str = "Al1ce-S3cret pw%";
const BOB_PW: &str = "B0b-Pla1n-S3cret";
const IMAP_FAILED: &str = "[AUTHENTICATIONFAILED] Invalid login or password";

/// alice with a bcrypt (cost 4) hash, bob with `{PLAIN}`.
fn write_users(dir: &Path) -> String {
    let hash = bcrypt::hash(ALICE_PW, 4).expect("bcrypt");
    let text = format!("alice:{hash}\nbob:{{PLAIN}}{BOB_PW}\n");
    std::fs::write(dir.join("users.htpasswd"), &text).expect("write users");
    hash
}

/// A config with both listeners (both on port 0), a fast poll and
/// `users.htpasswd` as the only source; `extra` goes before `[admin]`.
fn ops_config(extra: &str) -> String {
    format!(
        "reload_interval = \"100ms\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"
    )
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `/metrics` parsed: series (name with labels) → value.
fn scrape(daemon: &Daemon) -> HashMap<String, f64> {
    let (status, body) = http_get(daemon.admin(), "/metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {l:?}"));
            (
                series.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("bad value {l:?}")),
            )
        })
        .collect()
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", metrics.keys().collect::<BTreeSet<_>>()))
}

fn relay_request(client_ip: &str) -> Vec<u8> {
    format!(
        "GET /check HTTP/1.0\r\nHost: localhost\r\nAuth-Method: none\r\nAuth-User: \r\nAuth-Pass: \r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\nClient-IP: {client_ip}\r\nClient-Host: [UNAVAILABLE]\r\nAuth-SMTP-Helo: x\r\nAuth-SMTP-From: MAIL FROM:<a@elsewhere.net>\r\nAuth-SMTP-To: RCPT TO:<b@elsewhere.net>\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn metrics_count_real_logins() {
    let dir = temp_dir();
    write_users(dir.path());
    let daemon = Daemon::start_in(dir, &ops_config(""));
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
    assert_eq!(daemon.auth_status("imap", "alice", "wrong", "192.0.2.1"), IMAP_FAILED);
    assert_eq!(daemon.auth_status("imap", "nobody", "wrong", "192.0.2.1"), IMAP_FAILED);
    assert_eq!(daemon.auth_status("pop3", "bob", BOB_PW, "192.0.2.1"), "OK");
    daemon.ask(&relay_request("192.0.2.1"));
    daemon.ask(b"GET /check HTTP/1.0\r\nHost: localhost\r\n\r\n");

    let m = scrape(&daemon);
    let requests = |labels: &str| value(&m, &format!("mailauthd_requests_total{{{labels}}}"));
    assert_eq!(requests(r#"protocol="imap",method="plain",result="ok""#), 1.0);
    assert_eq!(requests(r#"protocol="imap",method="plain",result="invalid""#), 2.0);
    assert_eq!(requests(r#"protocol="pop3",method="plain",result="ok""#), 1.0);
    assert_eq!(requests(r#"protocol="smtp",method="none",result="relay-denied""#), 1.0);
    assert_eq!(
        requests(r#"protocol="unknown",method="unknown",result="bad-request""#),
        1.0
    );
    assert_eq!(value(&m, "mailauthd_decision_duration_seconds_count"), 6.0);
    assert_eq!(
        value(&m, r#"mailauthd_decision_duration_seconds_bucket{le="+Inf"}"#),
        6.0
    );
    // alice twice, bob once, and the unknown user against a dummy of the file's own mix,
    // picked by its name: bcrypt or plain, as its decision line says.
    let log = daemon.log();
    let nobody = log
        .lines()
        .find(|l| l.contains("user=\"nobody\""))
        .unwrap_or_else(|| panic!("no decision for nobody:\n{log}"));
    let dummy_bcrypt = if nobody.contains("scheme=\"bcrypt-4\"") {
        1.0
    } else {
        assert!(nobody.contains("scheme=\"plain\""), "{nobody}");
        0.0
    };
    let bcrypt = value(&m, r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#);
    let plain = value(&m, r#"mailauthd_hash_verify_duration_seconds_count{scheme="plain"}"#);
    assert_eq!((bcrypt, plain), (2.0 + dummy_bcrypt, 2.0 - dummy_bcrypt));
    let source = format!("htpasswd:{}", daemon.path("users.htpasswd").display());
    assert_eq!(
        value(&m, &format!(r#"mailauthd_source_users{{source="{source}"}}"#)),
        2.0
    );
    assert_eq!(value(&m, r#"mailauthd_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(value(&m, r#"mailauthd_reloads_total{result="failed"}"#), 0.0);
    let errors = format!(r#"mailauthd_source_errors_total{{source="{source}",reason="unreadable"}}"#);
    assert_eq!(value(&m, &errors), 0.0);
    assert!(value(&m, "mailauthd_last_reload_timestamp_seconds") > 1.0e9);
    assert_eq!(value(&m, "mailauthd_verify_queue_depth"), 0.0);
    assert_eq!(value(&m, "mailauthd_verify_rejections_total"), 0.0);
    // The two bcrypt checks of alice and a bcrypt dummy each missed the verified-login
    // cache (a `{PLAIN}` check never asks it); nothing was answered from it yet.
    assert_eq!(value(&m, "mailauthd_cache_hits_total"), 0.0);
    assert_eq!(value(&m, "mailauthd_cache_misses_total"), 2.0 + dummy_bcrypt);
    // alice's right password again: answered from the cache, without hashing.
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
    let again = scrape(&daemon);
    assert_eq!(value(&again, "mailauthd_cache_hits_total"), 1.0);
    assert_eq!(value(&again, "mailauthd_cache_misses_total"), 2.0 + dummy_bcrypt);
    assert_eq!(
        value(
            &again,
            &format!("mailauthd_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &again,
            r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#
        ),
        bcrypt
    );

    // Every metric the Grafana dashboard queries exists.
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_dir().join("contrib/grafana/mailauthd.json")).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("mailauthd_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(name);
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    // Families are declared even before their first sample (`# TYPE name kind`).
    let (_, body) = http_get(daemon.admin(), "/metrics");
    let families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    for name in used {
        let known = families.iter().any(|f| {
            ["", "_total", "_bucket", "_count", "_sum", "_info"]
                .iter()
                .any(|suffix| name == format!("{f}{suffix}"))
        });
        assert!(known, "the dashboard queries {name}, which /metrics does not declare");
    }
}

#[test]
fn readiness_survives_a_broken_reload_and_waits_for_a_first_load() {
    let dir = temp_dir();
    write_users(dir.path());
    let daemon = Daemon::start_in(dir, &ops_config(""));
    let admin = daemon.admin();
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("ready\n") && body.contains("users.htpasswd users=2"),
        "{body}"
    );
    let started = daemon.log_lines().len();
    let in_use = daemon.wait_for_log(0, "in use");
    let line = &daemon.log_lines()[in_use];
    assert!(
        line.contains("users=2") && line.contains("routes=imap=127.0.0.1:143"),
        "{line}"
    );

    // The users file disappears and a reload is forced: the last good table stays.
    std::fs::remove_file(daemon.path("users.htpasswd")).unwrap();
    daemon.signal("HUP");
    let hup = daemon.wait_for_log(started, "SIGHUP");
    daemon.wait_for_log(hup, "keeping the last good version");
    let line = &daemon.log_lines()[daemon.wait_for_log(hup, "in use")];
    assert!(line.contains("users=2"), "{line}");
    assert_eq!(http_get(admin, "/readyz").0, 200);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
    let m = scrape(&daemon);
    assert!(value(&m, r#"mailauthd_reloads_total{result="failed"}"#) >= 1.0);
    let source = format!("htpasswd:{}", daemon.path("users.htpasswd").display());
    assert!(
        value(
            &m,
            &format!(r#"mailauthd_source_errors_total{{source="{source}",reason="unreadable"}}"#)
        ) >= 1.0
    );
    assert_eq!(
        value(&m, &format!(r#"mailauthd_source_users{{source="{source}"}}"#)),
        2.0
    );
    drop(daemon);

    // A source that never loaded: alive, not ready, logins get a temporary failure.
    let dir = temp_dir();
    let daemon = Daemon::start_in(dir, &ops_config(""));
    let admin = daemon.admin();
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("users.htpasswd unavailable"), "{body}");
    assert_ne!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
    let m = scrape(&daemon);
    assert!(
        value(
            &m,
            r#"mailauthd_requests_total{protocol="imap",method="plain",result="tempfail"}"#
        ) == 1.0
    );
    // The file appears; the poll (100 ms here) loads it.
    write_users(daemon.dir.path());
    wait_for("/readyz to turn 200", || {
        (http_get(admin, "/readyz").0 == 200).then_some(())
    });
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
}

#[test]
fn fail2ban_filter_matches_refused_logins_only() {
    assert!(
        have("fail2ban-regex"),
        "fail2ban-regex is needed (Debian package fail2ban)"
    );
    let dir = temp_dir();
    write_users(dir.path());
    // A second source, for SMTP only, that cannot be read: SMTP logins it would decide get a
    // temporary failure.
    let config = ops_config("[smtp]\nlocal_domains = [\"example.org\"]\n")
        + "\n[[source]]\nkind = \"htpasswd\"\npath = \"missing.htpasswd\"\nprotocols = [\"smtp\"]\n";
    let daemon = Daemon::start_in(dir, &config);
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.10"), "OK");
    assert_eq!(daemon.auth_status("imap", "alice", "wrong", "192.0.2.1"), IMAP_FAILED);
    assert_ne!(daemon.auth_status("pop3", "nobody", "wrong", "2001:db8::2"), "OK");
    // A user name that tries to forge the address the filter reads.
    let forged = "x\" client_ip=\"192.0.2.99\" result=\"invalid\" reason=\"wrong-password\"";
    assert_eq!(daemon.auth_status("imap", forged, "wrong", "192.0.2.3"), IMAP_FAILED);
    let tempfail = daemon.auth_status("smtp", "nobody", "wrong", "192.0.2.11");
    assert!(
        tempfail.contains("Temporary") || tempfail.contains("temporar"),
        "{tempfail}"
    );
    daemon.ask(&relay_request("192.0.2.12"));
    daemon.ask(b"GET /check HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let logs = daemon.stop_and_log();
    // The lines that must not match are there.
    for needle in [
        "login accepted",
        "result=\"tempfail\"",
        "result=\"relay-denied\"",
        "malformed auth request",
        "listening on",
    ] {
        assert!(
            logs.iter().any(|l| l.contains(needle)),
            "no {needle:?} line in {logs:#?}"
        );
    }
    let keep = temp_dir();
    let log_file = keep.path().join("mailauthd.log");
    std::fs::write(&log_file, logs.join("\n") + "\n").unwrap();
    let filter = crate_dir().join("contrib/fail2ban/filter.d/mailauthd.conf");
    let out = Command::new("fail2ban-regex")
        .arg("-o")
        .arg("ip")
        .arg(&log_file)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        ips,
        ["192.0.2.1", "2001:db8::2", "192.0.2.3"],
        "log:\n{}",
        logs.join("\n")
    );
    // The same file through the summary: only those 3 lines matched, every date was read.
    let out = Command::new("fail2ban-regex")
        .arg(&log_file)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let summary = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "Lines: {} lines, 0 ignored, 3 matched, {} missed",
        logs.len(),
        logs.len() - 3
    );
    assert!(summary.contains(&expected), "{summary}");
    assert!(
        summary.contains(&format!("[{}] Year-Month-DayT24hour", logs.len())),
        "{summary}"
    );
}

#[test]
fn json_log_lines_are_objects_with_the_decision_fields() {
    let dir = temp_dir();
    write_users(dir.path());
    let daemon = Daemon::builder(&ops_config(""))
        .in_dir(dir)
        .args(&["--log-format", "json"])
        .start();
    assert_eq!(daemon.auth_status("imap", "alice", "wrong", "192.0.2.5"), IMAP_FAILED);
    assert_eq!(daemon.auth_status("pop3", "bob", BOB_PW, "192.0.2.6"), "OK");
    let logs = daemon.stop_and_log();
    let lines: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(serde_json::Value::is_object));
    let find = |message: &str| {
        lines
            .iter()
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {logs:#?}"))
    };
    let refused = find("login refused");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["target"], "mailauthd::auth");
    let f = &refused["fields"];
    assert_eq!(f["client_ip"], "192.0.2.5");
    assert_eq!(f["result"], "invalid");
    assert_eq!(f["reason"], "wrong-password");
    assert_eq!(f["user"], "alice");
    assert_eq!(f["protocol"], "imap");
    assert_eq!(f["method"], "plain");
    assert!(f["scheme"].as_str().unwrap().starts_with("bcrypt"), "{f}");
    let accepted = &find("login accepted")["fields"];
    assert_eq!(accepted["client_ip"], "192.0.2.6");
    assert_eq!(accepted["result"], "ok");
    assert_eq!(accepted["user"], "bob");
    assert_eq!(accepted["backend"], "127.0.0.1:110");
    assert!(accepted["micros"].is_u64());
}

#[test]
fn no_password_in_a_trace_level_log() {
    let dir = temp_dir();
    let hash = write_users(dir.path());
    let daemon = Daemon::builder(&ops_config(""))
        .in_dir(dir)
        .env("RUST_LOG", "trace")
        .start();
    let wrong = "Wr0ng-S3cret-Guess";
    assert_eq!(daemon.auth_status("imap", "alice", ALICE_PW, "192.0.2.1"), "OK");
    assert_eq!(daemon.auth_status("imap", "alice", wrong, "192.0.2.1"), IMAP_FAILED);
    assert_eq!(daemon.auth_status("pop3", "bob", BOB_PW, "192.0.2.1"), "OK");
    assert_ne!(daemon.auth_status("pop3", "bob", wrong, "192.0.2.1"), "OK");
    let _ = http_get(daemon.admin(), "/metrics");
    let logs = daemon.stop_and_log().join("\n");
    // The run did log at trace level, and did log the decisions.
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "{logs}");
    assert_eq!(logs.matches("login accepted").count(), 2, "{logs}");
    for secret in [ALICE_PW, BOB_PW, wrong, hash.as_str()] {
        let escaped = String::from_utf8(nginx_escape(secret.as_bytes())).unwrap();
        for form in [secret.to_owned(), escaped] {
            assert!(!logs.contains(&form), "{form:?} is in the log:\n{logs}");
        }
    }
    // The fragment before the space and `%` of alice's password, too.
    assert!(!logs.contains("Al1ce-S3cret"));
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = temp_dir();
    write_users(dir.path());
    let sockets = temp_dir();
    let socket_path = sockets.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification before the deadline");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let daemon = Daemon::builder(&ops_config(""))
        .in_dir(dir)
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .start();
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // READY=1 comes after the listener is bound and the users are loaded.
    assert_eq!(http_get(daemon.admin(), "/readyz").0, 200);
    daemon.signal("HUP");
    let reloading = recv();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    daemon.signal("TERM");
    let stopping = recv();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !have("systemd-analyze") {
        println!("note: systemd-analyze is not installed; the unit file was not verified");
        return;
    }
    let dir = temp_dir();
    let unit = std::fs::read_to_string(crate_dir().join("contrib/mailauthd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let path = dir.path().join("mailauthd.service");
    std::fs::write(&path, unit.replace("/usr/bin/mailauthd", bin())).unwrap();
    // `Documentation=man:mailauthd(1)` names a page only the package installs (and
    // scripts/test-package verifies the installed unit with it).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// `mailauthd nginx-config` for `config`, checked with `nginx -t`; returns the block.
fn nginx_accepts(config: &str) -> String {
    nginx_accepts_with(config, false)
}

/// As [`nginx_accepts`]; with `client_ca`, the test certificate is also the client CA.
fn nginx_accepts_with(config: &str, client_ca: bool) -> String {
    assert!(
        have("nginx"),
        "nginx is needed (Debian packages nginx, libnginx-mod-mail)"
    );
    assert!(have("openssl"), "openssl is needed to make a test certificate");
    let dir = temp_dir();
    let d = dir.path();
    std::fs::write(d.join("mailauthd.toml"), config).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mail.test",
        ])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    let out = Command::new(bin())
        .arg("nginx-config")
        .arg("--config")
        .arg(d.join("mailauthd.toml"))
        .arg("--server-name")
        .arg("mail.test")
        .arg("--tls-cert")
        .arg(d.join("cert.pem"))
        .arg("--tls-key")
        .arg(d.join("key.pem"))
        .args(client_ca.then_some("--tls-client-ca"))
        .args(client_ca.then(|| d.join("cert.pem")))
        .output()
        .expect("run mailauthd nginx-config");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let block = String::from_utf8(out.stdout).unwrap();
    let test = |block: &str| {
        std::fs::write(d.join("mail.conf"), block).unwrap();
        let main = format!(
            "load_module /usr/lib/nginx/modules/ngx_mail_module.so;\nerror_log {0}/error.log;\npid {0}/nginx.pid;\nevents {{}}\ninclude {0}/mail.conf;\n",
            d.display()
        );
        std::fs::write(d.join("nginx.conf"), main).unwrap();
        Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .output()
            .expect("run nginx -t")
    };
    let out = test(&block);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("test is successful"),
        "{stderr}\n{block}"
    );
    // The check can fail: the same block with one directive misspelt is refused.
    let broken = test(&block.replacen("smtp_auth none;", "smtp_auth nothing;", 1));
    assert!(!broken.status.success());
    block
}

#[test]
fn nginx_accepts_the_generated_mail_block() {
    let block = nginx_accepts(
        "listen = \"127.0.0.1:14399\"\n[smtp]\nlocal_domains = [\"example.org\"]\n[route]\nimap = \"127.0.0.1:10143\"\npop3 = \"127.0.0.1:10110\"\nsmtp = \"127.0.0.1:10025\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n",
    );
    assert!(block.contains("    auth_http 127.0.0.1:14399/check;\n"), "{block}");
    assert!(block.contains("    server_name mail.test;\n"));
    for listen in ["143", "993 ssl", "110", "995 ssl", "587", "465 ssl", "25"] {
        assert!(
            block.contains(&format!("        listen {listen};\n")),
            "no listen {listen}"
        );
    }
    assert!(block.contains("smtp_auth none;") && block.contains("xclient on;"));
    assert!(block.contains("smtp -> 127.0.0.1:10025"));
    assert!(!block.contains("WARNING"));

    let block = nginx_accepts(
        "listen = \"unix:/run/mailauthd/auth.sock\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n",
    );
    assert!(
        block.contains("    auth_http unix:/run/mailauthd/auth.sock:/check;\n"),
        "{block}"
    );
    // The default routes share ports with nginx's listeners: the block says so.
    assert!(block.contains("WARNING: the backend 127.0.0.1:143 uses port 143"));
}

#[test]
fn nginx_accepts_the_secret_tls_and_external_lines() {
    let config = "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"0123456789abcdef-key\"\n\
                  [tls]\nrequired_for = [\"imap\"]\nmin_protocol = \"TLSv1.3\"\n[external]\n\
                  [smtp]\nreverse_dns = \"require\"\n[client]\nreal_ip_from = [\"10.0.0.1\"]\n\
                  [[source]]\nkind = \"htpasswd\"\npath = \"users\"\n[listener.submission]\nmethods = [\"plain\"]\n";
    let block = nginx_accepts_with(config, true);
    assert!(
        block.contains("    auth_http_header X-Auth-Key \"0123456789abcdef-key\";\n"),
        "{block}"
    );
    assert!(block.contains("    ssl_protocols TLSv1.3;\n"));
    assert!(block.contains("    ssl_verify_client optional;\n"));
    assert!(block.contains("imap_auth login plain external;"));
    assert!(block.contains("    resolver 127.0.0.1;\n"));
    assert!(block.contains("proxy_protocol"));
    // The submission server names its listener and repeats the secret: nginx does not
    // merge a server's auth_http_header lines with those of mail {}.
    let submission = block.split("listen 587;").nth(1).unwrap().split('}').next().unwrap();
    assert!(
        submission.contains("auth_http_header X-Mail-Listener submission;"),
        "{submission}"
    );
    assert!(submission.contains("auth_http_header X-Auth-Key "), "{submission}");
    // Without --tls-client-ca the verify lines are comments, and nginx still accepts it.
    let block = nginx_accepts(config);
    assert!(block.contains("    # ssl_verify_client optional;\n"), "{block}");
}

#[test]
fn man_page_and_completions_are_generated() {
    let out = Command::new(bin()).arg("man").output().unwrap();
    assert!(out.status.success());
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(man.contains(".TH mailauthd 1"), "{man}");
    assert!(man.contains(".SH NAME") && man.contains("nginx\\-config"), "{man}");

    let out = Command::new(bin()).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let bash = String::from_utf8(out.stdout).unwrap();
    assert!(bash.contains("_mailauthd()") && bash.contains("nginx-config"), "{bash}");
    // bash itself parses it.
    let dir = temp_dir();
    std::fs::write(dir.path().join("mailauthd.bash"), &bash).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("mailauthd.bash"))
        .status()
        .unwrap();
    assert!(status.success());

    for (shell, marker) in [("zsh", "#compdef mailauthd"), ("fish", "complete -c mailauthd")] {
        let out = Command::new(bin()).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(marker), "{shell}");
    }
    // The packaging commands stay out of --help.
    let help = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("nginx-config") && !help.contains("completions"), "{help}");
}

#[test]
fn the_deb_metadata_names_files_that_exist_or_that_scripts_package_writes() {
    let root = crate_dir();
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let script = std::fs::read_to_string(root.join("scripts/package")).unwrap();
    let assets = deb["assets"].as_array().unwrap();
    let mut destinations = Vec::new();
    for asset in assets {
        let source = asset[0].as_str().unwrap();
        destinations.push(asset[1].as_str().unwrap().to_owned());
        if let Some(generated) = source.strip_prefix("target/assets/") {
            assert!(
                script.contains(&format!("$assets/{generated}")),
                "scripts/package does not write {source}"
            );
        } else if source != "target/release/mailauthd" {
            assert!(root.join(source).is_file(), "{source} is missing");
        }
    }
    for wanted in [
        "usr/bin/",
        "lib/systemd/system/mailauthd.service",
        "etc/mailauthd/mailauthd.toml",
        "usr/share/man/man1/mailauthd.1.gz",
        "usr/share/bash-completion/completions/mailauthd",
    ] {
        assert!(destinations.iter().any(|d| d == wanted), "the .deb lacks {wanted}");
    }
    let scripts = root.join(deb["maintainer-scripts"].as_str().unwrap());
    for file in [root.join("scripts/package"), scripts.join("postinst")] {
        let status = Command::new("sh").arg("-n").arg(&file).status().unwrap();
        assert!(status.success(), "{} is not valid sh", file.display());
    }
}

/// `GET path` on a fresh connection: the status code, or `None` when the connection was
/// refused, reset or closed without an answer.
fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    String::from_utf8_lossy(&reply).split_whitespace().nth(1)?.parse().ok()
}

/// Descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn idle_admin_connections_are_bounded_and_logins_and_healthz_still_answer() {
    let dir = temp_dir();
    write_users(dir.path());
    let daemon = Daemon::start_in(dir, &ops_config(""));
    let admin = daemon.admin();
    let before = open_fds(daemon.pid());
    // 300 connections that never send a request, all held open by this test.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect to the admin listener"))
        .collect();
    // The daemon accepts them (a 503 past the cap) within a moment; it must not hold a
    // descriptor for each.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let held = open_fds(daemon.pid()).saturating_sub(before);
    assert!(held <= 70, "{held} descriptors held for 300 idle admin connections");
    // Logins are answered at once.
    let started = std::time::Instant::now();
    assert_eq!(daemon.auth_status("imap", "bob", BOB_PW, "192.0.2.40"), "OK");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // /healthz answers while the idle connections are still open (the header timeout frees
    // the slots the idle ones took), long before the 30 s a client would wait.
    let started = std::time::Instant::now();
    wait_for("/healthz to answer 200", || {
        (try_get(admin, "/healthz") == Some(200)).then_some(())
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(daemon.log().contains("admin listener busy"), "{}", daemon.log());
    drop(idle);

    // A request header past 16 KiB is refused, not buffered (hyper's default was ~400 KB).
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let big = format!("GET /healthz HTTP/1.0\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = stream.write_all(big.as_bytes());
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains(" 200 "), "{reply}");
    assert_eq!(try_get(admin, "/healthz"), Some(200));
}

/// `mailauthd check-config` on `config` (with a users file beside it): exit code and stdout.
fn check_config(config: &str) -> (i32, String) {
    let dir = temp_dir();
    write_users(dir.path());
    let path = dir.path().join("mailauthd.toml");
    std::fs::write(
        &path,
        format!("{config}\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n"),
    )
    .expect("write config");
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_warns_about_listeners_off_loopback() {
    let (code, out) = check_config("listen = \"0.0.0.0:14380\"\n[admin]\nlisten = \"0.0.0.0:14381\"\n");
    assert_eq!(code, 0, "a warning, not an error: {out}");
    assert!(
        out.contains("warning: listen = \"0.0.0.0:14380\" is not a loopback address: the listener trusts Client-IP"),
        "{out}"
    );
    assert!(out.contains("keep it on loopback or a unix socket"), "{out}");
    assert!(
        out.contains("warning: admin.listen = \"0.0.0.0:14381\" is not a loopback address: /metrics and /readyz"),
        "{out}"
    );
    for quiet in [
        "listen = \"127.0.0.1:14380\"\n[admin]\nlisten = \"[::1]:14381\"\n",
        "listen = \"unix:/run/mailauthd/auth.sock\"\n",
    ] {
        let (code, out) = check_config(quiet);
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("loopback"), "{quiet}: {out}");
    }
}

#[test]
fn a_full_verification_pool_is_counted_exactly() {
    // One verification thread and room for one waiting job: of eight bcrypt-12 logins sent
    // at once (each takes a few hundred ms to hash), at most two are taken and the rest are
    // refused at once as overloaded. Every such refusal is counted, and only those.
    let dir = temp_dir();
    let hash = bcrypt::hash("slow", 12).expect("bcrypt");
    std::fs::write(dir.path().join("users.htpasswd"), format!("carol:{hash}\n")).expect("users");
    let daemon = Daemon::start_in(
        dir,
        &ops_config("verify_threads = 1\nverify_queue = 1\n[cache]\nttl = \"0s\"\n[policy]\nenabled = false"),
    );
    let replies: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let daemon = &daemon;
                scope.spawn(move || daemon.auth_status("imap", "carol", &format!("guess{n}"), "192.0.2.8"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("login thread")).collect()
    });
    let overloaded = replies.iter().filter(|r| r.contains("Temporary")).count();
    let refused = replies.iter().filter(|r| *r == IMAP_FAILED).count();
    assert_eq!(overloaded + refused, 8, "{replies:?}");
    assert!(overloaded >= 1 && refused >= 1, "{replies:?}");
    // Each verification is counted by the pool thread that ran it; give the last one a
    // moment (on a loaded machine the reply can overtake the scrape's view of it).
    let verified = r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#;
    wait_until(Duration::from_secs(5), "every verification counted", || {
        value(&scrape(&daemon), verified) >= refused as f64
    });
    let m = scrape(&daemon);
    assert_eq!(value(&m, "mailauthd_verify_rejections_total"), overloaded as f64);
    assert_eq!(value(&m, verified), refused as f64);
    assert_eq!(value(&m, "mailauthd_verify_queue_depth"), 0.0, "every job has run");
    let source = format!("htpasswd:{}", daemon.path("users.htpasswd").display());
    assert_eq!(
        value(
            &m,
            &format!(r#"mailauthd_source_errors_total{{source="{source}",reason="overloaded"}}"#)
        ),
        overloaded as f64
    );
}

#[test]
fn sixteen_identical_cold_logins_cost_one_verification() {
    // A phone reconnecting several IMAP folders at once: sixteen identical logins arrive
    // together, the first hashes (bcrypt cost 12: a few hundred ms), the others wait for it.
    let dir = temp_dir();
    let hash = bcrypt::hash("folders", 12).expect("bcrypt");
    std::fs::write(dir.path().join("users.htpasswd"), format!("dana:{hash}\n")).expect("users");
    let daemon = Daemon::start_in(dir, &ops_config("[policy]\nenabled = false"));
    let replies: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let daemon = &daemon;
                scope.spawn(move || daemon.auth_status("imap", "dana", "folders", "192.0.2.16"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("login thread")).collect()
    });
    assert!(replies.iter().all(|r| r == "OK"), "{replies:?}");
    let m = scrape(&daemon);
    let hashed = value(&m, r#"mailauthd_hash_verify_duration_seconds_count{scheme="bcrypt"}"#);
    let shared = value(&m, "mailauthd_verifications_shared_total");
    let cached = value(&m, "mailauthd_cache_hits_total");
    // Every login is answered once: by its own hash, by the one in flight, or (if it came
    // after the first finished) from the cache.
    assert_eq!(
        hashed + shared + cached,
        16.0,
        "hashed {hashed} shared {shared} cached {cached}"
    );
    assert_eq!(hashed, 1.0, "shared {shared} cached {cached}");
}
