//! Fuzz target `ldap_entry`: see `mailauthd::fuzz::ldap_entry` and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailauthd::fuzz::ldap_entry(data));
