//! End-to-end tests: real nginx mail proxy → mailauthd → real Dovecot / a recording SMTP
//! backend, driven by real clients (curl, Python's imaplib/poplib/smtplib).
//!
//! ```text
//!  client ──IMAP/POP3/SMTP──▶ nginx (mail module) ──auth_http──▶ mailauthd ─▶ users file
//!                               │
//!                               └──proxied session──▶ Dovecot (IMAP, POP3)
//!                                                     recorder (SMTP + XCLIENT)
//! ```
//!
//! Each test asserts what the client saw and what the backend received. One shared setup
//! serves most tests ([`harness::shared`]); tests that need their own mailauthd config start
//! an extra front. Run only this suite with `cargo test --test e2e`; see README.md.

#![allow(
    unreachable_pub,
    reason = "a binary's modules share items with `pub`; nothing is exported"
)]

mod harness;

mod chain;
mod credentials;
mod digest;
mod failure_texts;
mod harness_selftest;
mod imap_login;
mod leftovers;
mod mx;
mod pop3_smtp;
mod reload;
mod reverse_dns;
mod routing;
mod tls;
