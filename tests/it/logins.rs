//! Login helpers for the users-file tests: IMAP password logins from a chosen client address
//! and what their replies say.

use crate::common::{Daemon, header, plain_request};

/// Decides an IMAP `plain` login from `client_ip`.
pub fn login_from(daemon: &Daemon, user: &str, pass: &str, client_ip: &str) -> Vec<u8> {
    daemon.ask(&plain_request("imap", user.as_bytes(), pass.as_bytes(), client_ip, 1))
}

/// Whether an IMAP `plain` login from 127.0.0.1 is accepted.
pub fn accepted(daemon: &Daemon, user: &str, pass: &str) -> bool {
    is_accepted(&daemon.login("imap", user, pass))
}

/// Whether an IMAP `plain` login from 127.0.0.1 is refused as invalid (not temporarily).
pub fn invalid(daemon: &Daemon, user: &str, pass: &str) -> bool {
    is_invalid(&daemon.login("imap", user, pass))
}

/// `Auth-Status: OK`.
pub fn is_accepted(reply: &[u8]) -> bool {
    header(reply, "Auth-Status").as_deref() == Some("OK")
}

/// Refused as a wrong login, not as a temporary failure.
pub fn is_invalid(reply: &[u8]) -> bool {
    header(reply, "Auth-Status").is_some_and(|s| s.contains("Invalid login or password"))
}

/// A bcrypt hash at the lowest cost, for fast tests.
pub fn bcrypt4(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}
