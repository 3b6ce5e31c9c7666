//! Dovecot's `{SCRAM-SHA-1}` and `{SCRAM-SHA-256}` entries (RFC 5802, RFC 7677):
//! `ITERATIONS,SALT,STOREDKEY,SERVERKEY`, the last three in base64.
//!
//! A password is checked as Dovecot's `scram_verify` does: SaltedPassword =
//! PBKDF2-HMAC-H(password, salt, iterations), ClientKey = HMAC-H(SaltedPassword,
//! "Client Key"), and H(ClientKey) must equal StoredKey. The ServerKey is
//! only checked for its length.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::digest::B64;
use super::phc::MAX_PBKDF2_ROUNDS;

/// Dovecot refuses fewer iterations (`SCRAM_MIN_ITERATE_COUNT`, RFC 5802's 4096).
const MIN_ITERATIONS: u32 = 4096;

/// A parsed SCRAM entry, without its StoredKey.
#[derive(Clone)]
pub(super) struct Scram {
    sha256: bool,
    iterations: u32,
    salt: Vec<u8>,
}

impl Scram {
    /// Parses the text after `{SCRAM-SHA-1}` (`sha256 == false`) or
    /// `{SCRAM-SHA-256}`; returns the entry and its StoredKey.
    pub(super) fn parse(sha256: bool, text: &str) -> Result<(Self, Vec<u8>), String> {
        let [iterations, salt, stored, server] = text.split(',').collect::<Vec<_>>()[..] else {
            return Err("expected ITERATIONS,SALT,STOREDKEY,SERVERKEY".into());
        };
        let iterations: u32 = match iterations.parse() {
            Ok(n) if iterations.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("iteration count is not a number".into()),
        };
        if iterations < MIN_ITERATIONS {
            return Err(format!("iteration count below {MIN_ITERATIONS}"));
        }
        // As for PBKDF2: a hash taking seconds per login is refused at load.
        if iterations > MAX_PBKDF2_ROUNDS {
            return Err(format!(
                "{iterations} iterations would take seconds per login; at most {MAX_PBKDF2_ROUNDS}"
            ));
        }
        let salt = B64.decode(salt).map_err(|_| "salt is not valid base64")?;
        let len = if sha256 { 32 } else { 20 };
        let key = |field: &str, what: &str| {
            B64.decode(field)
                .ok()
                .filter(|k| k.len() == len)
                .ok_or_else(|| format!("{what} is not {len} bytes of base64"))
        };
        let stored = key(stored, "StoredKey")?;
        key(server, "ServerKey")?;
        Ok((
            Scram {
                sha256,
                iterations,
                salt,
            },
            stored,
        ))
    }

    /// `scram-sha-1` or `scram-sha-256`.
    pub(super) fn name(&self) -> &'static str {
        if self.sha256 { "scram-sha-256" } else { "scram-sha-1" }
    }

    /// Scheme with its iteration count.
    pub(super) fn cost_label(&self) -> String {
        format!("{}-{}", self.name(), self.iterations)
    }

    /// The StoredKey for `pw`; empty (never matching) if HMAC refuses the key.
    pub(super) fn compute(&self, pw: &[u8]) -> Vec<u8> {
        if self.sha256 {
            let mut salted = Zeroizing::new([0u8; 32]);
            pbkdf2::pbkdf2_hmac::<Sha256>(pw, &self.salt, self.iterations, salted.as_mut());
            match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(salted.as_ref()) {
                Ok(mac) => Sha256::digest(mac.chain_update(b"Client Key").finalize().into_bytes()).to_vec(),
                Err(_) => Vec::new(),
            }
        } else {
            let mut salted = Zeroizing::new([0u8; 20]);
            pbkdf2::pbkdf2_hmac::<Sha1>(pw, &self.salt, self.iterations, salted.as_mut());
            match <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(salted.as_ref()) {
                Ok(mac) => Sha1::digest(mac.chain_update(b"Client Key").finalize().into_bytes()).to_vec(),
                Err(_) => Vec::new(),
            }
        }
    }
}
