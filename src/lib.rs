//! mailauthd: the auth_http server for nginx's mail proxy.
//!
//! nginx asks, for every IMAP, POP3 or SMTP login, "may this login pass, and to which
//! backend?". One request on its way through the crate (ARCHITECTURE.md draws the layers):
//!
//! ```text
//!  nginx ──TCP/unix──▶ server ──bytes──▶ auth_http ──AuthRequest──▶ decide
//!                        ▲                                           │
//!                        │                       policy (bans, counts: before any hashing)
//!                        │                                source/* (users, hashes)
//!                        │                                           │
//!                        │                                verify (cache, pool) ─▶ hash
//!                        │                                           │
//!                      bytes ◀── auth_http::render_reply ◀── Verdict ┘
//! ```
//!
//! `daemon` builds these parts and runs them for `mailauthd serve`; `cli` is the command
//! line, the only public module (fuzz builds add `fuzz`, the fuzz targets' entry points).

mod admin;
mod auth_http;
pub mod cli;
mod clock;
mod config;
mod daemon;
mod decide;
#[cfg(fuzzing)]
pub mod fuzz;
mod hash;
mod logging;
mod login;
mod metrics;
mod nginx_config;
#[cfg(any(test, fuzzing))]
mod nginx_reply;
mod policy;
mod reason;
mod route;
mod secret;
mod server;
mod source;
mod verify;
