//! Integration tests: the `mailauthd` binary run as a subprocess against real components
//! (nginx, test listeners), spoken to with nginx-shaped requests as raw bytes.

mod common;
mod http_basic;
