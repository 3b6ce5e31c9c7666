//! Fuzz target `hash_fixtures`: see `mailauthd::fuzz::hash_fixtures` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::hash_fixtures(data));
