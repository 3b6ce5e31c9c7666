//! mailauthd: the auth_http server for nginx's mail proxy.
//!
//! nginx asks, for every IMAP, POP3 or SMTP login, "may this login pass, and to which
//! backend?". One request on its way through the crate:
//!
//! ```text
//!  nginx ──TCP/unix──▶ server ──bytes──▶ protocol ──AuthRequest──▶ decide
//!                        ▲                                          │
//!                        │                      policy (bans, counts: before any hashing)
//!                        │                               source/* (users, hashes)
//!                        │                                          │
//!                        │                               verify_pool ─▶ hash
//!                        │                                          │
//!                      bytes ◀── protocol::render_reply ◀── Verdict ┘
//! ```
//!
//! `daemon` wires these together for `mailauthd serve`; `cli` is the command line.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod hash;
pub mod metrics;
pub mod nginx_config;
pub mod policy;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod source;
pub mod verify_pool;
