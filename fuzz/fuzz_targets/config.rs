//! Fuzz target `config`: see `mailauthd::fuzz::config` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::config(data));
