//! The brute-force policy through the real daemon: bans, escalation, the admin CLI, and
//! shared state in a real Redis.

mod daemon;
mod redis;
mod sentinel;

use crate::common::Daemon;

/// alice's password is `alice-secret` (`htpasswd -nbB -C 5 alice alice-secret`).
const USERS: &str = "alice:$2y$05$vOWyQ9VVho2diiZalDXgruhaqYC06gmQrxopqmJXvzVpmLnjGNT9S\nbob:{PLAIN}bob-password\n";

/// The admin token of every policy test daemon.
const TOKEN: &str = "test-token-0123456789";

/// mailauthd with [`USERS`] as its source, an admin listener with [`TOKEN`], and
/// `config_body` after them.
fn start(config_body: &str) -> Daemon {
    Daemon::builder(&format!(
        "[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{config_body}"
    ))
    .users(USERS)
    .start()
}
