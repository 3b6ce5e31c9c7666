//! Integration tests: the real `mailauthd` binary, spoken to as nginx speaks to it.

mod policy;
