//! Fuzz target `percent_decode`: see `mailauthd::fuzz::percent_decode` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::percent_decode(data));
