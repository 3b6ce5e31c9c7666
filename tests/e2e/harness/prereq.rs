//! The programs the suite needs from the system. A missing one fails the run with the
//! install command; the suite never skips silently.

use std::path::{Path, PathBuf};

pub const INSTALL: &str = "apt-get install nginx libnginx-mod-mail dovecot-imapd dovecot-pop3d curl python3";
pub const MAIL_MODULE: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";

/// `name` from PATH, or from the sbin folders a normal user's PATH often lacks.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn need(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| missing(&format!("`{name}` is not installed")))
}

fn missing(what: &str) -> ! {
    panic!("e2e prerequisites missing: {what}. Install them with:\n    {INSTALL}")
}

pub fn nginx() -> PathBuf {
    need("nginx")
}
pub fn dovecot() -> PathBuf {
    need("dovecot")
}
pub fn curl() -> PathBuf {
    need("curl")
}
pub fn python3() -> PathBuf {
    need("python3")
}

/// Checks everything at once so one run names every missing piece.
pub fn check() {
    let mut gone = Vec::new();
    for bin in ["nginx", "dovecot", "curl", "python3"] {
        if find(bin).is_none() {
            gone.push(format!("`{bin}`"));
        }
    }
    if !Path::new(MAIL_MODULE).is_file() {
        gone.push(format!("{MAIL_MODULE} (libnginx-mod-mail)"));
    }
    for (file, pkg) in [("imap", "dovecot-imapd"), ("pop3", "dovecot-pop3d")] {
        if !Path::new("/usr/lib/dovecot").join(file).is_file() {
            gone.push(format!("/usr/lib/dovecot/{file} ({pkg})"));
        }
    }
    if !gone.is_empty() {
        missing(&gone.join(", "));
    }
}
