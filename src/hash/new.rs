//! Writing new hashes for `mailauthd user add --scheme` (bcrypt only for now).

use super::HashError;

/// Schemes `mailauthd user add --scheme` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewScheme {
    /// bcrypt with this cost (4..=31), written as `$2y$`.
    Bcrypt {
        /// log2 of the number of rounds.
        cost: u32,
    },
    /// `$6$` sha512-crypt.
    Sha512Crypt,
    /// yescrypt.
    Yescrypt,
    /// Argon2id.
    Argon2id,
}

impl std::str::FromStr for NewScheme {
    type Err = HashError;

    /// `bcrypt` (cost 12), `bcrypt-10`, `sha512-crypt`, `yescrypt`, `argon2id`.
    fn from_str(s: &str) -> Result<Self, HashError> {
        match s {
            "bcrypt" => Ok(NewScheme::Bcrypt { cost: 12 }),
            "sha512-crypt" => Ok(NewScheme::Sha512Crypt),
            "yescrypt" => Ok(NewScheme::Yescrypt),
            "argon2id" => Ok(NewScheme::Argon2id),
            _ => match s.strip_prefix("bcrypt-").map(str::parse) {
                Some(Ok(cost @ 4..=31)) => Ok(NewScheme::Bcrypt { cost }),
                _ => Err(HashError::UnknownScheme(s.chars().take(32).collect())),
            },
        }
    }
}

/// Hashes a new password.
pub fn hash_password(scheme: &NewScheme, password: &[u8]) -> Result<String, HashError> {
    match *scheme {
        NewScheme::Bcrypt { cost } => bcrypt::hash_with_salt(password, cost, rand::random())
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .map_err(|e| HashError::Malformed {
                scheme: "bcrypt",
                reason: e.to_string(),
            }),
        _ => Err(HashError::UnknownScheme("not yet".to_owned())),
    }
}
