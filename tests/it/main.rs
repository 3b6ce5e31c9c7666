//! Integration tests: the real `mailauthd` binary and the real peers it is deployed with.

mod common;
mod ops;
