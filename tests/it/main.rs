//! Integration tests: the `mailauthd` binary run as a subprocess on loopback, one module per
//! area.

mod common;
mod passwd_file;
mod reload;
mod user_cmd;
