//! Fuzz target `http_basic_answer`: see `mailauthd::fuzz::http_basic_answer` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::http_basic_answer(data));
