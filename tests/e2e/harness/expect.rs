//! Assertions shared by the scenario modules, each printing the whole transcript on failure.

use super::recorder::Session;
use serde_json::Value;

/// The texts mailauthd answers with.
pub const IMAP_INVALID: &str = "NO [AUTHENTICATIONFAILED] Invalid login or password";
pub const POP3_INVALID: &str = "-ERR [AUTH] Invalid login or password";
pub const SMTP_INVALID: &str = "535 5.7.8 Authentication credentials invalid";

/// Auth-Wait is 1 s in the suite; allow for timer slack below it.
pub const WAITED: f64 = 0.9;

/// `v["attempts"][i]` logged in.
pub fn logged_in(v: &Value, i: usize) {
    assert_eq!(v["attempts"][i]["ok"], true, "attempt {i} did not log in: {v:#}");
}

/// `v["attempts"][i]` was refused with exactly `text` (and the connection stayed up).
pub fn refused(v: &Value, i: usize, text: &str) {
    let a = &v["attempts"][i];
    assert_eq!(a["ok"], false, "attempt {i} should have failed: {v:#}");
    assert_eq!(a["resp"].as_str(), Some(text), "attempt {i}: {v:#}");
}

pub fn secs(v: &Value, i: usize) -> f64 {
    v["attempts"][i]["secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no secs in {v:#}"))
}

/// The client found the connection closed after its last step.
pub fn closed(v: &Value) {
    assert_eq!(v["closed"], true, "nginx should have closed the connection: {v:#}");
}

pub fn still_open(v: &Value) {
    assert_eq!(v["closed"], false, "nginx should have kept the connection: {v:#}");
}

/// `v[key]` is a string starting with `prefix`.
pub fn starts(v: &Value, key: &str, prefix: &str) {
    let s = v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v:#}"));
    assert!(s.starts_with(prefix), "{key} should start with {prefix:?}: {v:#}");
}

/// xtext (RFC 1891) as nginx ≥ 1.29.2 writes `XCLIENT LOGIN=`.
fn xtext(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
                (b as char).to_string()
            } else {
                format!("+{b:02X}")
            }
        })
        .collect()
}

/// The session's `XCLIENT` line names exactly `user`: raw as Debian's nginx 1.22 sends it
/// (protocol.md 1.8), or xtext as newer nginx does. Returns the line.
pub fn xclient_login(s: &Session, user: &str) -> String {
    let line = s
        .line("XCLIENT ")
        .unwrap_or_else(|| panic!("no XCLIENT: {:#?}", s.text()));
    let raw = format!(" LOGIN={user} NAME=");
    let enc = format!(" LOGIN={} NAME=", xtext(user));
    assert!(
        line.contains(&raw) || line.contains(&enc),
        "XCLIENT should carry LOGIN={user:?}: {line:?}"
    );
    line
}

/// The one recorder session that carried `needle`.
pub fn one_session(rec: &super::recorder::Recorder, needle: &str) -> Session {
    let s = rec.sessions_with(needle);
    assert_eq!(s.len(), 1, "want one backend session with {needle:?}, got {s:#?}");
    s.into_iter().next().unwrap()
}
