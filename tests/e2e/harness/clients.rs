//! Real mail clients as subprocesses: Python's imaplib/poplib/smtplib (via `clients.py`) and
//! curl. Each call has a deadline and returns what the client saw.

use super::process::{Output, run};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const CLIENTS_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients.py");
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// How a client presents its credentials.
#[derive(Clone, Copy, Debug)]
pub enum How {
    /// IMAP `LOGIN "user" "pass"` (imaplib, with `\` and `"` escaped).
    Quoted,
    /// IMAP `LOGIN {n}` literals for both arguments.
    Literal,
    /// SASL CRAM-MD5 (IMAP, POP3, SMTP), digest computed by the client.
    Cram,
    /// POP3 `USER` / `PASS`.
    UserPass,
    /// POP3 `APOP user md5(salt pass)`.
    Apop,
    /// SMTP `AUTH PLAIN` with initial response.
    Plain,
    /// SMTP `AUTH LOGIN`.
    Login,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Quoted => "quoted",
            How::Literal => "literal",
            How::Cram => "cram",
            How::UserPass => "userpass",
            How::Apop => "apop",
            How::Plain => "plain",
            How::Login => "login",
        }
    }
}

/// One login attempt in a client session.
pub fn attempt(how: How, user: &str, pass: &str) -> Value {
    json!({"how": how.name(), "user": user, "pass": pass})
}

/// Runs `clients.py` with `spec`; panics (with the client's stderr) unless it printed JSON.
pub fn python(spec: Value) -> Value {
    let mut cmd = Command::new(super::prereq::python3());
    cmd.arg(CLIENTS_PY).arg(spec.to_string());
    let o = run(cmd, CLIENT_DEADLINE);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "clients.py gave no JSON ({e}) for {spec}\nstatus: {}\nstdout: {}\nstderr: {}",
            o.status, o.stdout, o.stderr
        )
    })
}

pub fn imap(port: u16, attempts: Vec<Value>) -> Value {
    python(json!({"proto": "imap", "port": port, "attempts": attempts}))
}

pub fn pop3(port: u16, attempts: Vec<Value>) -> Value {
    python(json!({"proto": "pop3", "port": port, "attempts": attempts}))
}

/// An SMTP session: the AUTH attempts, then (if one succeeded, or there were none) one message.
pub fn smtp(port: u16, attempts: Vec<Value>, mail: Option<(&str, &str, &str)>) -> Value {
    let mut spec = json!({"proto": "smtp", "port": port, "attempts": attempts});
    if let Some((from, to, body)) = mail {
        spec["mail_from"] = json!(from);
        spec["rcpt_to"] = json!(to);
        spec["body"] = json!(body);
    }
    python(spec)
}

/// curl with a 30 s cap of its own and our deadline around it.
pub fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new(super::prereq::curl());
    cmd.args(["--silent", "--show-error", "--max-time", "30"]).args(args);
    run(cmd, CLIENT_DEADLINE)
}
