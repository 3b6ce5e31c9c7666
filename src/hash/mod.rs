//! Stored password hashes: parsed once when a users file is loaded, verified in
//! constant time. Knows nothing of files, users or nginx.
//!
//! (Placeholder with the interface the rest of the crate builds on; the full
//! scheme list lives in the scheme modules.)

mod new;
pub use new::{NewScheme, hash_password};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Why a stored hash could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The prefix names no scheme mailauthd can verify.
    #[error("unknown password scheme {0:?}")]
    UnknownScheme(String),
    /// The prefix is known but the rest does not parse.
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        /// Scheme name, e.g. `bcrypt`.
        scheme: &'static str,
        /// What is wrong, never the hash itself.
        reason: String,
    },
}

/// How expensive a verification is; decides where it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weight {
    /// Microseconds: may run inline.
    Cheap,
    /// Milliseconds of CPU (bcrypt, sha-crypt with many rounds, ...).
    Slow,
    /// Large memory per verification (argon2, scrypt, yescrypt).
    MemoryHard,
}

enum Kind {
    Plain(Zeroizing<Vec<u8>>),
    Bcrypt(String),
}

/// A stored password hash, parsed and ready to verify.
pub struct StoredHash {
    kind: Kind,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.cost_label())
            .finish_non_exhaustive()
    }
}

impl StoredHash {
    /// Parses a stored hash as found in an htpasswd or passwd-file line.
    pub fn parse(stored: &str) -> Result<StoredHash, HashError> {
        let fingerprint: [u8; 32] = Sha256::digest(stored.as_bytes()).into();
        let kind = if let Some(rest) = stored.strip_prefix("{PLAIN}") {
            Kind::Plain(Zeroizing::new(rest.as_bytes().to_vec()))
        } else if stored.starts_with("$2") {
            Kind::Bcrypt(stored.to_owned())
        } else {
            return Err(HashError::UnknownScheme(scheme_prefix(stored)));
        };
        Ok(StoredHash { kind, fingerprint })
    }

    /// Checks `password` against the hash in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            Kind::Plain(p) => p.as_slice().ct_eq(password).into(),
            Kind::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        }
    }

    /// Short scheme name, e.g. `plain`, `bcrypt`.
    pub fn scheme_name(&self) -> &'static str {
        match self.kind {
            Kind::Plain(_) => "plain",
            Kind::Bcrypt(_) => "bcrypt",
        }
    }

    /// Scheme with its cost parameters, e.g. `bcrypt-10`.
    pub fn cost_label(&self) -> String {
        match &self.kind {
            Kind::Plain(_) => "plain".to_owned(),
            Kind::Bcrypt(h) => format!("bcrypt-{}", h.get(4..6).unwrap_or("?")),
        }
    }

    /// A hash of the same scheme and cost over a random password nobody knows.
    pub fn dummy_like(&self) -> StoredHash {
        let secret: [u8; 16] = rand::random();
        let stored = match &self.kind {
            Kind::Plain(_) => format!("{{PLAIN}}{}", hex::encode(secret)),
            Kind::Bcrypt(h) => {
                let cost = h.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(10);
                bcrypt::hash(secret, cost).unwrap_or_default()
            }
        };
        StoredHash::parse(&stored).unwrap_or_else(|_| StoredHash {
            kind: Kind::Plain(Zeroizing::new(secret.to_vec())),
            fingerprint: [0; 32],
        })
    }

    /// APOP digest check against the stored cleartext.
    pub fn verify_apop(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        use md5::{Digest as _, Md5};
        let Some(clear) = self.cleartext() else {
            return false;
        };
        let mut h = Md5::new();
        h.update(salt);
        h.update(clear);
        let want = hex::encode(h.finalize());
        want.as_bytes().ct_eq(&digest_hex.to_ascii_lowercase()).into()
    }

    /// CRAM-MD5 digest check against the stored cleartext.
    pub fn verify_cram_md5(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        use hmac::{Hmac, KeyInit, Mac};
        let Some(clear) = self.cleartext() else {
            return false;
        };
        let Ok(mut mac) = <Hmac<md5::Md5> as KeyInit>::new_from_slice(clear) else {
            return false;
        };
        mac.update(salt);
        let want = hex::encode(mac.finalize().into_bytes());
        want.as_bytes().ct_eq(&digest_hex.to_ascii_lowercase()).into()
    }

    /// Where the verification may run.
    pub fn weight(&self) -> Weight {
        match self.kind {
            Kind::Plain(_) => Weight::Cheap,
            Kind::Bcrypt(_) => Weight::Slow,
        }
    }

    /// The stored cleartext, for schemes that keep one (`{PLAIN}`).
    pub fn cleartext(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Plain(p) => Some(p),
            Kind::Bcrypt(_) => None,
        }
    }

    /// SHA-256 of the stored text: changes whenever the stored hash changes.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

fn scheme_prefix(stored: &str) -> String {
    stored
        .chars()
        .take_while(|c| *c != '$' || stored.starts_with('$'))
        .take(12)
        .collect()
}
