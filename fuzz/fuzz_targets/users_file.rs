//! Fuzz target `users_file`: see `mailauthd::fuzz::users_file` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::users_file(data));
