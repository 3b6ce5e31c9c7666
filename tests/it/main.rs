//! Integration tests: the real `mailauthd` binary, spoken to as nginx speaks to it.

#![allow(
    unreachable_pub,
    reason = "a binary's modules share items with `pub`; nothing is exported"
)]

mod cli;
mod client_ip;
mod common;
mod connection;
mod http_basic;
mod ldap;
mod leftovers;
mod malformed;
mod ops;
mod passwd_file;
mod policy;
mod reload;
mod reload_errors;
mod routing;
mod routing_dns;
mod user_cmd;
mod vectors;
