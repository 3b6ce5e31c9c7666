//! The brute-force policy through the real daemon: bans, escalation, the admin CLI, and
//! shared state in a real Redis.

mod daemon;
mod harness;
mod redis;
