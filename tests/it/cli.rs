//! The admin-facing commands (`check-config`, `test`) and the unix-socket listener.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{Daemon, header, plain_request};

fn mailauthd(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailauthd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailauthd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"nowhere\"\n[auth]\nwait = \"later\"\n[route]\npop3 = \"127.0.0.1:99999\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n").unwrap();
    let (code, out, err) = mailauthd(&["check-config", "--config", config.to_str().unwrap()], b"");
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    let file = config.display().to_string();
    for expected in [
        format!("{file}:1: listen:"),
        format!("{file}:3: auth.wait:"),
        format!("{file}:5: route.pop3:"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn check_config_loads_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "ok:{PLAIN}x\nplain:secret-value\nbroken\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n").unwrap();
    let (code, out, err) = mailauthd(&["check-config", "--config", config.to_str().unwrap()], b"");
    assert_eq!(code, 1, "a broken line is an error: {out}{err}");
    assert!(out.contains("users:2: hash has no known scheme prefix"), "{out}");
    assert!(out.contains("users:3: no `:` after the user name"), "{out}");
    assert!(out.contains("1 user(s)"), "{out}");
    assert!(
        out.contains("users: degraded: 1 broken line(s) skipped; the daemon would serve the other users"),
        "{out}"
    );
    assert!(!out.contains("secret-value"), "a stored value leaked: {out}");
}

#[test]
fn check_config_warns_about_a_byte_order_mark_and_loads_the_first_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "\u{feff}alice:{PLAIN}a1\nbob:{PLAIN}b1\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[[source]]\nkind = \"htpasswd\"\npath = \"users\"\n").unwrap();
    let (code, out, err) = mailauthd(&["check-config", "--config", config.to_str().unwrap()], b"");
    assert_eq!(code, 0, "a byte-order mark is a warning: {out}{err}");
    let expected = format!(
        "warning: {}:1: the file starts with a UTF-8 byte-order mark",
        users.display()
    );
    assert!(out.contains(&expected), "{out}");
    assert!(out.contains("2 user(s)") && !out.contains("degraded"), "{out}");
    let args = ["test", "--config", config.to_str().unwrap(), "--user", "alice"];
    let (code, out, err) = mailauthd(&args, b"a1\n");
    assert_eq!(code, 0, "the first user did not load: {out}{err}");
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let (code, out, err) = mailauthd(&["--version"], b"");
    assert_eq!(code, 0, "{err}");
    // The commit as git names it; a source tree without git builds as "unknown".
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = std::env::var("MAILAUTHD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or(git)
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        out,
        format!("mailauthd {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_example_config_is_valid_and_its_users_log_in() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mailauthd.toml");
    let (code, out, err) = mailauthd(&["check-config", "--config", config], b"");
    assert_eq!(code, 0, "{out}{err}");
    for (user, protocol) in [("alice", "imap"), ("bob", "pop3"), ("carol", "smtp"), ("dave", "imap")] {
        let pass = format!("{user}-password\n");
        let args = ["test", "--config", config, "--user", user, "--protocol", protocol];
        let (code, out, err) = mailauthd(&args, pass.as_bytes());
        assert_eq!(code, 0, "{user}: {out}{err}");
        assert!(out.starts_with("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"), "{out}");
    }
    let args = ["test", "--config", config, "--user", "alice", "--protocol", "smtp"];
    let (code, out, err) = mailauthd(&args, b"Tr0ub4dor-guess\n");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("Auth-Error-Code: 535 5.7.8\r\n"), "{out}");
    assert!(!format!("{out}{err}").contains("Tr0ub4dor"), "the password was echoed");
}

#[test]
fn serves_on_a_unix_socket_and_removes_it_on_exit() {
    let mut daemon = Daemon::builder("[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n")
        .listen("unix:auth.sock")
        .users("alice:{PLAIN}secret\n")
        .start();
    let socket = daemon.path("auth.sock");
    assert_eq!(daemon.socket(), socket, "the socket is not where the config puts it");
    let reply = daemon.ask(&plain_request("imap", b"alice", b"secret", "127.0.0.1", 1));
    assert_eq!(header(&reply, "Auth-Status").as_deref(), Some("OK"));
    let status = daemon.terminate().expect("mailauthd to exit on SIGTERM");
    assert!(status.success());
    assert!(!socket.exists(), "the socket file was left behind");
}
