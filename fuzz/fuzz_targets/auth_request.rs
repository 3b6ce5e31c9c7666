//! Fuzz target `auth_request`: see `mailauthd::fuzz::auth_request` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::auth_request(data));
