//! `mailauthd user`: exit codes, byte-for-byte preservation, crash safety under SIGKILL, and
//! interop with nginx's `auth_basic` and Apache's `htpasswd`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::Nginx;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailauthd")
}

/// Runs `mailauthd user ARGS` with `stdin` as its input.
fn user(args: &[&str], file: &Path, stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .arg("user")
        .args(args)
        .arg("--file")
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads stdin closes the pipe early.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn htpasswd_verifies(file: &Path, user: &str, pass: &str) -> bool {
    Command::new("htpasswd")
        .arg("-vb")
        .arg(file)
        .args([user, pass])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn commands_keep_every_other_byte_and_report_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let original = "# mail users\r\n\r\nold:{PLAIN}x:1000:1000::/home/old::nologin\r\nnot a user line\n#carol:{PLAIN}c\nzed:{PLAIN}z";
    std::fs::write(&file, original).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    // add: appended after a newline the file lacked; everything before untouched.
    let out = user(
        &["add", "alice", "--password-stdin", "--scheme", "bcrypt-5"],
        &file,
        "pw one\n",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(&format!("{original}\r\nalice:$2y$05$")), "{text:?}");
    // The file's first line ends in CRLF, so the new one does too.
    assert!(text.ends_with("\r\n"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);

    // add of an existing user: refused (1), file untouched.
    let out = user(&["add", "alice", "--password-stdin"], &file, "other\n");
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // passwd keeps the passwd-file fields after the hash.
    let out = user(
        &["passwd", "old", "--password-stdin", "--scheme", "bcrypt-4"],
        &file,
        "new pw\r\n",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let after = std::fs::read_to_string(&file).unwrap();
    let old_line = after.split('\n').find(|l| l.starts_with("old:")).unwrap();
    assert!(old_line.starts_with("old:$2y$04$"));
    assert!(old_line.ends_with(":1000:1000::/home/old::nologin\r"), "{old_line:?}");
    assert_eq!(
        after.replace(old_line, "X"),
        text.replace("old:{PLAIN}x:1000:1000::/home/old::nologin\r", "X")
    );

    // verify: 0 right, 1 wrong, 1 absent.
    assert_eq!(
        code(&user(&["verify", "old", "--password-stdin"], &file, "new pw\n")),
        0
    );
    assert_eq!(code(&user(&["verify", "old", "--password-stdin"], &file, "x\n")), 1);
    assert_eq!(code(&user(&["verify", "nobody", "--password-stdin"], &file, "x\n")), 1);
    assert_eq!(code(&user(&["passwd", "nobody", "--password-stdin"], &file, "x\n")), 1);
    assert_eq!(code(&user(&["del", "nobody"], &file, "")), 1);

    // list: names and schemes, never a hash.
    let out = user(&["list"], &file, "");
    assert_eq!(code(&out), 0);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed, "old\tbcrypt-4\nzed\tplain\nalice\tbcrypt-5\n");

    // del removes the line and nothing else.
    assert_eq!(code(&user(&["del", "zed"], &file, "")), 0);
    let deleted = std::fs::read_to_string(&file).unwrap();
    assert_eq!(deleted, after.replace("zed:{PLAIN}z\r\n", ""));

    // Errors (2): no password, an empty one, a bad name, a bad scheme, a missing file.
    assert_eq!(code(&user(&["add", "bob", "--password-stdin"], &file, "\n")), 2);
    assert_eq!(code(&user(&["add", "a:b", "--password-stdin"], &file, "pw\n")), 2);
    assert_eq!(
        code(&user(
            &["add", "bob", "--password-stdin", "--scheme", "md5"],
            &file,
            "pw\n"
        )),
        2
    );
    let no_tty = Command::new(bin())
        .args(["user", "add", "bob", "--file"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&no_tty), 2);
    assert_eq!(code(&user(&["list"], &dir.path().join("missing"), "")), 2);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), deleted);
}

#[test]
fn a_live_symlink_is_followed_and_a_dangling_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::write(&real, "old:{PLAIN}x\n").unwrap();
    let link = dir.path().join("users");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // Live: the target is edited, the link stays a link.
    let out = user(
        &["add", "alice", "--password-stdin", "--scheme", "bcrypt-4"],
        &link,
        "pw\n",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(htpasswd_verifies(&real, "alice", "pw"));

    // Dangling: refused (2) before any password is read, nothing created, the link kept.
    let target = dir.path().join("gone");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let out = user(&["add", "bob", "--password-stdin"], &dangling, "pw\n");
    assert_eq!(code(&out), 2, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("is a symlink to {}, which does not exist", target.display())),
        "{err}"
    );
    assert!(!target.exists(), "a file was created at the link's target");
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
}

#[test]
fn default_scheme_is_bcrypt_cost_12_readable_by_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new-file");
    let out = user(&["add", "alice", "--password-stdin"], &file, "s3cret:with colon\n");
    assert_eq!(code(&out), 0, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$2y$12$") && text.ends_with('\n'), "{text:?}");
    assert!(htpasswd_verifies(&file, "alice", "s3cret:with colon"));
    assert!(!htpasswd_verifies(&file, "alice", "s3cret"));
}

#[test]
fn every_scheme_verifies_and_crypt_ones_are_read_by_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    for (scheme, prefix, htpasswd_reads) in [
        ("sha512-crypt", "$6$", true),
        ("yescrypt", "$y$", true),
        ("argon2id", "$argon2id$", false),
        ("bcrypt-6", "$2y$06$", true),
    ] {
        let name = format!("user-{scheme}");
        let pass = format!("pw for {scheme}");
        let out = user(&["add", &name, "--password-stdin", "--scheme", scheme], &file, &pass);
        assert_eq!(code(&out), 0, "{scheme}: {out:?}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("\n{name}:{prefix}")) || text.starts_with(&format!("{name}:{prefix}")),
            "{scheme}: {text}"
        );
        assert_eq!(
            code(&user(&["verify", &name, "--password-stdin"], &file, &pass)),
            0,
            "{scheme}"
        );
        assert_eq!(
            code(&user(&["verify", &name, "--password-stdin"], &file, "nope")),
            1,
            "{scheme}"
        );
        if htpasswd_reads {
            assert!(htpasswd_verifies(&file, &name, &pass), "htpasswd rejects {scheme}");
        }
    }
    let listed = String::from_utf8(user(&["list"], &file, "").stdout).unwrap();
    assert!(!listed.contains('$'), "a hash was listed: {listed}");
    assert_eq!(listed.lines().count(), 4, "{listed}");
}

/// Kills `mailauthd user passwd` at random moments while it edits a 100k-user file: the file
/// is always exactly the old or the new version.
#[test]
fn sigkill_during_an_edit_leaves_the_old_or_the_new_file() {
    const USERS: usize = 100_000;
    const TARGET: &str = "u50000";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let hash = "$2y$04$Fzl4EomCkTfkbZ8ZIyNfq.ljp6d60mu5dM7nrKNAEfgxOkqkBT4xy";
    let mut text = String::from("# 100k users\n");
    for i in 0..USERS {
        if i % 1000 == 0 {
            text.push_str(&format!("# block {i}\n"));
        }
        text.push_str(&format!("u{i}:{hash}:{i}:{i}::/home/u{i}::\n"));
    }
    std::fs::write(&file, &text).unwrap();

    let spawn = || -> Child {
        let mut child = Command::new(bin())
            .args([
                "user",
                "passwd",
                TARGET,
                "--password-stdin",
                "--scheme",
                "bcrypt-4",
                "--file",
            ])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        child
    };
    // How long an uninterrupted edit takes, to spread the kills over it.
    let started = Instant::now();
    assert!(spawn().wait().unwrap().success());
    let full = started.elapsed();

    let mut previous = std::fs::read(&file).unwrap();
    let (mut kept_old, mut became_new, mut leftovers) = (0, 0, 0);
    let mut rng: u64 = 0x5eed_1234_abcd_ef01;
    for round in 0..30 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let fraction = (rng % 1000) as f64 / 1000.0;
        let mut child = spawn();
        if round % 3 == 0 {
            // Aim at the short window between creating the temp file and renaming it: wait
            // for the temp file to appear, then up to 20 ms more.
            let deadline = Instant::now() + full * 3;
            while temp_files(dir.path()).is_empty() && Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20).mul_f64(fraction));
        } else {
            std::thread::sleep(full.mul_f64(fraction * 1.2));
        }
        let _ = child.kill();
        let _ = child.wait();
        let now = std::fs::read(&file).unwrap();
        if now == previous {
            kept_old += 1;
        } else {
            assert_only_target_hash_changed(&previous, &now, TARGET);
            became_new += 1;
        }
        leftovers += temp_files(dir.path()).len();
        previous = now;
    }
    eprintln!(
        "edit of {USERS} users takes {full:?}; 30 kills: {kept_old} old, {became_new} new, {leftovers} stale temp files seen"
    );
    assert!(kept_old > 0, "no kill landed before the rename");
    assert!(leftovers > 0, "no kill landed while the temp file was being written");
    // The next edit removes what killed ones left.
    assert!(spawn().wait().unwrap().success());
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    assert_only_target_hash_changed(&previous, &std::fs::read(&file).unwrap(), TARGET);
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "users")
        .collect()
}

fn assert_only_target_hash_changed(old: &[u8], new: &[u8], target: &str) {
    let old = std::str::from_utf8(old).unwrap();
    let new = std::str::from_utf8(new).unwrap();
    let old_lines: Vec<&str> = old.split('\n').collect();
    let new_lines: Vec<&str> = new.split('\n').collect();
    assert_eq!(old_lines.len(), new_lines.len(), "line count changed");
    for (o, n) in old_lines.iter().zip(&new_lines) {
        if o.starts_with(&format!("{target}:")) {
            let (o_rest, n_rest) = (&o[o.len() - 22..], &n[n.len() - 22..]);
            assert!(n.starts_with(&format!("{target}:$2y$04$")), "{n:?}");
            assert_eq!(n.len(), o.len(), "{n:?}");
            assert_eq!(o_rest, n_rest, "the fields after the hash changed");
        } else {
            assert_eq!(o, n, "a line other than {target}'s changed");
        }
    }
}

/// nginx with `auth_basic` over `users`, serving a static page from `dir`.
fn auth_basic_nginx(dir: &Path, users: &Path) -> Nginx {
    // A static file, not `return`: `return` answers before the access phase, so it would
    // skip auth_basic.
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "welcome\n").unwrap();
    Nginx::start(
        "",
        &format!(
            "    location / {{\n      auth_basic \"mail\";\n      auth_basic_user_file {};\n      root {}/www;\n    }}\n",
            users.display(),
            dir.display()
        ),
    )
}

/// The status code of `GET /` with Basic credentials.
fn basic_get(nginx: &Nginx, user: &str, pass: &str) -> u16 {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut stream = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET / HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic {token}\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_user_added_logs_in_through_nginx_auth_basic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    // A Dovecot passwd-file line: nginx reads the hash up to the next colon.
    std::fs::write(&file, "# shared by nginx, Dovecot and mailauthd\n").unwrap();
    assert_eq!(
        code(&user(&["add", "alice", "--password-stdin"], &file, "alice pw\n")),
        0
    );
    assert_eq!(
        code(&user(
            &["add", "bob", "--password-stdin", "--scheme", "bcrypt-5"],
            &file,
            "bob pw\n"
        )),
        0
    );
    let with_fields = std::fs::read_to_string(&file).unwrap();
    let bob_line = with_fields.lines().find(|l| l.starts_with("bob:")).unwrap().to_owned();
    std::fs::write(
        &file,
        with_fields.replace(&bob_line, &format!("{bob_line}:1000:1000::/home/bob::")),
    )
    .unwrap();

    let nginx = auth_basic_nginx(dir.path(), &file);
    assert_eq!(basic_get(&nginx, "alice", "alice pw"), 200);
    assert_eq!(basic_get(&nginx, "alice", "wrong"), 401);
    assert_eq!(basic_get(&nginx, "bob", "bob pw"), 200);

    // A password changed by `passwd` takes effect in nginx (it reads the file per request).
    assert_eq!(
        code(&user(&["passwd", "alice", "--password-stdin"], &file, "new alice\n")),
        0
    );
    assert_eq!(basic_get(&nginx, "alice", "new alice"), 200);
    assert_eq!(basic_get(&nginx, "alice", "alice pw"), 401);
    assert!(htpasswd_verifies(&file, "alice", "new alice"));
    assert_eq!(code(&user(&["del", "alice"], &file, "")), 0);
    assert_eq!(basic_get(&nginx, "alice", "new alice"), 401);
    assert_eq!(basic_get(&nginx, "bob", "bob pw"), 200);
}

#[test]
fn add_writes_proxy_fields_passwd_keeps_them_and_list_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let add = user(
        &[
            "add",
            "bob@example.org",
            "--scheme",
            "bcrypt-4",
            "--password-stdin",
            "--field",
            "proxy",
            "--field",
            "host=10.0.0.2",
            "--field",
            "pass=backend-secret",
        ],
        &file,
        "pw\n",
    );
    assert_eq!(code(&add), 0, "{add:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.ends_with("::::::proxy host=10.0.0.2 pass=backend-secret\n"),
        "{text}"
    );
    let passwd = user(
        &["passwd", "bob@example.org", "--scheme", "bcrypt-4", "--password-stdin"],
        &file,
        "pw2\n",
    );
    assert_eq!(code(&passwd), 0);
    let listed = String::from_utf8(user(&["list"], &file, "").stdout).unwrap();
    assert_eq!(listed, "bob@example.org\tbcrypt-4\tproxy host=10.0.0.2 pass=<set>\n");
    // A field that would break the line is refused before anything is written.
    let bad = user(
        &["add", "eve", "--password-stdin", "--field", "host=a b"],
        &file,
        "pw\n",
    );
    assert_eq!(code(&bad), 2, "{bad:?}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("eve"));
}
