//! Fuzz target `stored_hash`: see `mailauthd::fuzz::stored_hash` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::stored_hash(data));
