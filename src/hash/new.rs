//! Writing new hashes for `mailauthd user add --scheme`.

use base64::Engine as _;

use super::HashError;
use super::digest::B64;
use super::md5crypt::{ITOA64, encode64};

/// Schemes `mailauthd user add --scheme` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewScheme {
    /// bcrypt with this cost (4..=16, the most the daemon accepts), written as `$2y$`.
    Bcrypt {
        /// log2 of the number of rounds.
        cost: u32,
    },
    /// `$6$rounds=100000$`: about 20× glibc's default of 5000 rounds.
    Sha512Crypt,
    /// yescrypt with libxcrypt's default parameters (`$y$j9T$`).
    Yescrypt,
    /// Argon2id with Dovecot's defaults: 64 MiB, t=3, p=1.
    Argon2id,
}

/// Rounds written for [`NewScheme::Sha512Crypt`].
const SHA512_ROUNDS: u32 = 100_000;

impl std::str::FromStr for NewScheme {
    type Err = HashError;

    /// `bcrypt` (cost 12), `bcrypt-10`, `sha512-crypt`, `yescrypt`, `argon2id`.
    fn from_str(s: &str) -> Result<Self, HashError> {
        let bad_cost = || HashError::Malformed {
            scheme: "bcrypt",
            reason: "cost must be a number in 4..=16, e.g. bcrypt-12".into(),
        };
        match s {
            "bcrypt" => Ok(NewScheme::Bcrypt { cost: 12 }),
            "sha512-crypt" => Ok(NewScheme::Sha512Crypt),
            "yescrypt" => Ok(NewScheme::Yescrypt),
            "argon2id" => Ok(NewScheme::Argon2id),
            _ => match s.strip_prefix("bcrypt-") {
                Some(c) => match c.parse() {
                    Ok(cost @ 4..=super::crypt::MAX_BCRYPT_COST) => Ok(NewScheme::Bcrypt { cost }),
                    _ => Err(bad_cost()),
                },
                None => Err(HashError::UnknownScheme(s.chars().take(32).collect())),
            },
        }
    }
}

fn failed(scheme: &'static str) -> impl FnOnce(String) -> HashError {
    move |reason| HashError::Malformed { scheme, reason }
}

/// Hashes a new password (bcrypt output uses the `$2y$` prefix so nginx,
/// Apache and Dovecot all read it).
pub(crate) fn hash_password(scheme: &NewScheme, password: &[u8]) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::random();
    match *scheme {
        NewScheme::Bcrypt { cost } => bcrypt::hash_with_salt(password, cost, salt)
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .map_err(|e| failed("bcrypt")(e.to_string())),
        NewScheme::Sha512Crypt => {
            let salt: String = salt.iter().map(|b| ITOA64[usize::from(b & 63)] as char).collect();
            let params = sha_crypt::Params::new(SHA512_ROUNDS).map_err(|e| failed("sha512-crypt")(e.to_string()))?;
            let raw = sha_crypt::sha512_crypt(password, salt.as_bytes(), params);
            let digest = super::crypt::encode_sha(&raw, 63, 22);
            Ok(format!(
                "$6$rounds={SHA512_ROUNDS}${salt}${}",
                String::from_utf8_lossy(&digest)
            ))
        }
        NewScheme::Yescrypt => {
            let params = yescrypt::Params::default();
            let mut out = [0u8; 32];
            yescrypt::yescrypt(password, &salt, &params, &mut out).map_err(|e| failed("yescrypt")(e.to_string()))?;
            let enc = |b: &[u8]| String::from_utf8_lossy(&encode64(b)).into_owned();
            Ok(format!("$y${params}${}${}", enc(&salt), enc(&out)))
        }
        NewScheme::Argon2id => {
            let (m, t, p) = (65536, 3, 1);
            let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| failed("argon2id")(e.to_string()))?;
            let mut out = [0u8; 32];
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(password, &salt, &mut out)
                .map_err(|e| failed("argon2id")(e.to_string()))?;
            Ok(format!(
                "$argon2id$v=19$m={m},t={t},p={p}${}${}",
                B64.encode(salt),
                B64.encode(out)
            ))
        }
    }
}
