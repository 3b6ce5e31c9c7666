//! A real Dovecot (IMAP + POP3) run from a generated config in the temp dir: passwd-file
//! passdb/userdb with every suite user, one maildir per user holding one message, all logs
//! (with `auth_verbose`, `auth_debug`, `mail_debug`) in one file the tests read.

use super::process::{Proc, free_ports, loopback, read_lossy};
use super::users::User;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Subject of the one message in every mailbox.
pub const SUBJECT: &str = "hello from the e2e suite";

pub struct Dovecot {
    #[allow(dead_code, reason = "held for its Drop guard, which stops the process")]
    pub proc: Proc,
    pub imap_port: u16,
    pub pop3_port: u16,
    pub log: PathBuf,
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = read_lossy(Path::new("/etc/passwd"));
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// The name of `gid` in /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let group = read_lossy(Path::new("/etc/group"));
    group.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(gid)).then(|| f[0].to_string())
    })
}

/// uid/gid that owns the mail and the name of the user Dovecot's own processes run as:
/// the current user, or `nobody` for the mail when running as root (Dovecot refuses mail
/// access as uid 0).
fn mail_owner(dir: &Path) -> (u32, u32, Option<String>) {
    let md = std::fs::metadata(dir).expect("stat temp dir");
    if md.uid() != 0 {
        let me = user_name(md.uid())
            .unwrap_or_else(|| panic!("uid {} has no /etc/passwd entry; Dovecot needs a user name", md.uid()));
        return (md.uid(), md.gid(), Some(me));
    }
    let passwd = read_lossy(Path::new("/etc/passwd"));
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "nobody" {
            return (f[2].parse().unwrap(), f[3].parse().unwrap(), None);
        }
    }
    (65534, 65534, None)
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("read_dir") {
            chown_tree(&e.expect("dir entry").path(), uid, gid);
        }
    }
}

/// The passwd-file line Dovecot gets for `name`/`pass` (cleartext, so Dovecot checks the exact
/// bytes nginx hands on).
pub fn passwd_line(name: &str, pass: &str, uid: u32, gid: u32, home: &Path) -> String {
    format!("{name}:{{PLAIN}}{pass}:{uid}:{gid}::{}::\n", home.display())
}

/// What makes one Dovecot instance differ from another: its folder, the subject of the
/// message in every mailbox (so a test sees which store a session reached), and a master
/// user (`auth_master_user_separator = *`) that may log in as anyone.
pub struct Store<'a> {
    pub name: &'a str,
    pub subject: &'a str,
    pub master: Option<(&'a str, &'a str)>,
}

impl Dovecot {
    /// The shared setup's Dovecot.
    pub fn start(dir: &Path, users: &[User]) -> Dovecot {
        Dovecot::start_store(
            dir,
            users,
            &Store {
                name: "dovecot",
                subject: SUBJECT,
                master: None,
            },
        )
    }

    /// A Dovecot of its own in `dir/<store.name>`, e.g. one of two stores behind one nginx.
    pub fn start_store(dir: &Path, users: &[User], store: &Store<'_>) -> Dovecot {
        let dir = dir.join(store.name);
        let subject = store.subject;
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let (uid, gid, unprivileged) = mail_owner(&dir);
        let mut passwd = String::new();
        for (i, u) in users.iter().enumerate() {
            let home = dir.join("mail").join(i.to_string());
            let new = home.join("Maildir/new");
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(home.join("Maildir").join(sub)).expect("mkdir maildir");
            }
            let msg = format!(
                "From: sender@example.test\r\nTo: {}\r\nSubject: {subject}\r\n\r\nHello {}.\r\n",
                u.name, u.name
            );
            std::fs::write(new.join("1700000000.M1P1.e2e"), msg).expect("write message");
            passwd.push_str(&passwd_line(u.name, u.pass, uid, gid, &home));
        }
        std::fs::write(dir.join("passwd"), passwd).expect("write passwd-file");
        // The master passdb comes first; `pass = yes` then looks the user up in the
        // ordinary passdb, so only existing users can be logged in as.
        let master_conf = match store.master {
            None => String::new(),
            Some((name, pass)) => {
                std::fs::write(dir.join("master-users"), format!("{name}:{{PLAIN}}{pass}\n")).expect("write master");
                format!(
                    "auth_master_user_separator = *\npassdb {{\n  driver = passwd-file\n  master = yes\n  pass = yes\n  args = {}/master-users\n}}\n",
                    dir.display()
                )
            }
        };
        if unprivileged.is_none() {
            chown_tree(&dir.join("mail"), uid, gid);
        }
        // As a normal user, every service runs as that user and nothing chroots.
        let users_conf = match &unprivileged {
            None => String::new(),
            Some(me) => {
                let group = group_name(gid).unwrap_or_else(|| me.clone());
                format!(
                    "default_internal_user = {me}\ndefault_internal_group = {group}\n\
                     default_login_user = {me}\n\
                     service auth-worker {{\n  user = {me}\n}}\n"
                )
            }
        };
        // Dovecot cannot report ports it picked, so they are picked free beforehand and one
        // may be taken in between: then Dovecot fails to bind, and new ports are tried.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Dovecot::try_start(&dir, &format!("{users_conf}{master_conf}")) {
                Ok(dovecot) => return dovecot,
                Err(e) if attempts < 5 && e.contains("Address already in use") => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// One start on newly picked ports, with the users and mail already in `dir`.
    fn try_start(dir: &Path, users_conf: &str) -> Result<Dovecot, String> {
        let ports = free_ports(2);
        let (imap_port, pop3_port) = (ports[0], ports[1]);
        let log = dir.join("dovecot.log");
        // A failed attempt's lines would be read as this attempt's.
        let _ = std::fs::remove_file(&log);
        let d = dir.display();
        let marker = super::spawn::run_marker();
        let conf = format!(
            r#"# generated by the mailauthd e2e suite
protocols = imap pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
# Dovecot writes its process titles over its environment, which hides the run marker
# there; in the instance name it is in every title (dovecot-<instance>/imap-login, ...),
# so the leak check finds a Dovecot that outlives the test binary by its processes.
instance_name = mailauthd-e2e-{marker}-{imap_port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# keep user names byte for byte: no character filter, no lower-casing
auth_username_chars =
auth_username_format = %u
auth_verbose = yes
auth_debug = yes
mail_debug = yes
first_valid_uid = 1
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
{users_conf}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"#
        );
        // The master's title is its command line: with the marker in the config's name, the
        // leak check finds the master too.
        let conf_path = dir.join(format!("dovecot-{marker}.conf"));
        std::fs::write(&conf_path, conf).expect("write dovecot.conf");
        let mut cmd = Command::new(super::prereq::dovecot());
        cmd.arg("-F").arg("-c").arg(&conf_path);
        let mut proc = Proc::spawn("dovecot", cmd, &dir.join("dovecot.stderr"));
        proc.log = log.clone();
        for port in [imap_port, pop3_port] {
            proc.try_wait_port(loopback(port), Duration::from_secs(20))?;
            wait_greeting(port);
        }
        Ok(Dovecot {
            proc,
            imap_port,
            pop3_port,
            log,
        })
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Dovecot's `Login: user=<NAME>, method=...` lines for exactly this user name.
    pub fn logins(&self, user: &str) -> Vec<String> {
        let needle = format!("Login: user=<{user}>,");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Dovecot's failed password checks for this user (nginx should never cause one).
    pub fn auth_failures(&self, user: &str) -> Vec<String> {
        let needle = format!("({user},");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("Password mismatch"))
            .map(str::to_string)
            .collect()
    }
}

/// A listening port is not enough: wait until the login process greets.
fn wait_greeting(port: u16) {
    super::process::poll("dovecot greeting", Duration::from_secs(20), || {
        let s = TcpStream::connect(loopback(port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        (line.starts_with("* OK") || line.starts_with("+OK")).then_some(())
    });
}
