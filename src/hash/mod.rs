//! Stored password hashes: parsed once when a users file is loaded, verified in
//! constant time. Knows nothing of files, users or nginx.
//!
//! [`StoredHash::parse`] reads every format nginx (`auth_basic_user_file`),
//! Apache htpasswd, `/etc/shadow` (libxcrypt), passlib and Dovecot write, and
//! validates it completely, so [`StoredHash::verify`] cannot fail on format.
//! Unknown and unprefixed non-DES strings are refused, never compared as
//! plaintext. Every family computes a digest from the candidate password and
//! the comparison with the stored digest is done here, with `subtle`.
//!
//! Families: [`md5crypt`] (`$1$`, `$apr1$`), [`crypt`] (DES, sha-crypt,
//! bcrypt, yescrypt, `$7$`), [`phc`] (argon2, scrypt, PBKDF2), [`digest`]
//! (`{SHA}`, `{SSHA512}`, …), [`cram`] (APOP and CRAM-MD5).

mod cram;
mod crypt;
mod digest;
mod md5crypt;
mod new;
mod phc;
#[cfg(test)]
mod tests;

pub(crate) use new::{NewScheme, hash_password};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crypt::Crypt;
use digest::{Encoding, Salted};
use md5crypt::Md5Crypt;
use phc::{Phc, Prf};

/// Why a stored hash could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
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
pub(crate) enum Weight {
    /// Microseconds: may run inline (plain, digests, DES).
    Cheap,
    /// Milliseconds of CPU (bcrypt, sha-crypt, PBKDF2). md5-crypt and apr1
    /// (~100 µs in release builds) are here too: too slow for an async worker.
    Slow,
    /// Large memory per verification (argon2, scrypt, yescrypt).
    MemoryHard,
}

#[derive(Clone)]
enum Algo {
    /// Stored cleartext; the digest compared is its SHA-256, so the
    /// comparison does not reveal the cleartext's length.
    Clear(Zeroizing<Vec<u8>>),
    Digest(Salted),
    /// Dovecot `{CRAM-MD5}`: the digest is the 32-byte HMAC-MD5 state.
    CramMd5,
    Md5Crypt(Md5Crypt),
    Crypt(Crypt),
    Phc(Phc),
}

/// A stored password hash, parsed and ready to verify.
#[derive(Clone)]
pub(crate) struct StoredHash {
    algo: Algo,
    expected: Zeroizing<Vec<u8>>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.cost_label())
            .finish_non_exhaustive()
    }
}

fn malformed(scheme: &'static str) -> impl FnOnce(String) -> HashError {
    move |reason| HashError::Malformed { scheme, reason }
}

impl StoredHash {
    /// Parses a stored hash as found in an htpasswd, shadow or passwd-file line.
    pub(crate) fn parse(stored: &str) -> Result<StoredHash, HashError> {
        let (algo, expected) = if stored.starts_with('{') {
            parse_braced(stored)?
        } else {
            parse_crypt(stored)?
        };
        let fingerprint = Sha256::digest(stored.as_bytes()).into();
        Ok(StoredHash {
            algo,
            expected: Zeroizing::new(expected),
            fingerprint,
        })
    }

    fn compute(&self, password: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match &self.algo {
            Algo::Clear(_) => Sha256::digest(password).to_vec(),
            Algo::Digest(d) => d.compute(password),
            Algo::CramMd5 => cram::cram_states(password),
            Algo::Md5Crypt(m) => m.compute(password),
            Algo::Crypt(c) => c.compute(password),
            Algo::Phc(p) => p.compute(password, self.expected.len()),
        })
    }

    /// Checks `password` against the hash; the final digests are compared in
    /// constant time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        self.compute(password).as_slice().ct_eq(&self.expected).into()
    }

    /// A hash of the same scheme and cost params over a random password nobody
    /// knows: unknown users are verified against it so they cost the same time
    /// as a wrong password.
    pub(crate) fn dummy_like(&self) -> StoredHash {
        let random: [u8; 32] = rand::random();
        let password = Zeroizing::new(hex::encode(random).into_bytes());
        let mut dummy = self.clone();
        if let Algo::Clear(_) = dummy.algo {
            dummy.algo = Algo::Clear(password.clone());
        }
        dummy.expected = dummy.compute(&password);
        dummy.fingerprint = Sha256::digest(&dummy.expected).into();
        dummy
    }

    /// Short scheme name: `plain`, `sha1`, `ssha`, `apr1`, `des-crypt`,
    /// `md5-crypt`, `sha512-crypt`, `bcrypt`, `yescrypt`, `argon2id`, ...
    pub(crate) fn scheme_name(&self) -> &'static str {
        match &self.algo {
            Algo::Clear(_) => "plain",
            Algo::Digest(d) => d.name,
            Algo::CramMd5 => "cram-md5",
            Algo::Md5Crypt(m) if m.magic == "$apr1$" => "apr1",
            Algo::Md5Crypt(_) => "md5-crypt",
            Algo::Crypt(c) => c.name(),
            Algo::Phc(p) => p.name(),
        }
    }

    /// Scheme with its cost parameters, e.g. `bcrypt-10`, `sha512-crypt-5000`,
    /// `argon2id-m65536-t3-p1`: two hashes with the same label cost the same to
    /// verify.
    pub(crate) fn cost_label(&self) -> String {
        match &self.algo {
            Algo::Crypt(c) => c.cost_label(),
            Algo::Phc(p) => p.cost_label(self.expected.len()),
            _ => self.scheme_name().to_owned(),
        }
    }

    /// Where the verification may run.
    pub(crate) fn weight(&self) -> Weight {
        match &self.algo {
            Algo::Clear(_) | Algo::Digest(_) | Algo::CramMd5 | Algo::Crypt(Crypt::Des { .. }) => Weight::Cheap,
            Algo::Crypt(Crypt::Yescrypt { .. } | Crypt::Scrypt { .. })
            | Algo::Phc(Phc::Argon2 { .. } | Phc::Scrypt { .. }) => Weight::MemoryHard,
            Algo::Md5Crypt(_) | Algo::Crypt(_) | Algo::Phc(_) => Weight::Slow,
        }
    }

    /// The stored cleartext, for schemes that keep one (`{PLAIN}`, `{CLEAR}`,
    /// `{PLAIN.b64}`, ...).
    pub(crate) fn cleartext(&self) -> Option<&[u8]> {
        match &self.algo {
            Algo::Clear(c) => Some(c),
            _ => None,
        }
    }

    /// SHA-256 of the stored text: changes whenever the stored hash changes.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// APOP (RFC 1939): `digest_hex` == lowercase hex MD5(salt ‖ cleartext),
    /// compared case-insensitively; false when no cleartext is stored.
    pub(crate) fn verify_apop(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        match &self.algo {
            Algo::Clear(c) => cram::hex_matches(&cram::apop(c, salt), digest_hex),
            _ => false,
        }
    }

    /// CRAM-MD5 (RFC 2195): `digest_hex` == hex HMAC-MD5(key = cleartext,
    /// msg = salt), from a stored cleartext or Dovecot's `{CRAM-MD5}` state;
    /// false for every other scheme.
    pub(crate) fn verify_cram_md5(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        let mac = match &self.algo {
            Algo::Clear(c) => cram::cram_from_cleartext(c, salt),
            Algo::CramMd5 => cram::cram_from_states(&self.expected, salt),
            _ => return false,
        };
        cram::hex_matches(&mac, digest_hex)
    }
}

/// Whether an unknown prefix looks like a scheme name, and so may be named in a warning.
/// Anything else may be part of a password typed into the wrong field: it is never repeated.
fn looks_like_scheme(name: &str) -> bool {
    (1..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `{SCHEME[.enc]}rest`: Dovecot, OpenLDAP and htpasswd `{SHA}` prefixes.
fn parse_braced(stored: &str) -> Result<(Algo, Vec<u8>), HashError> {
    let Some(end) = stored.find('}') else {
        return Err(HashError::UnknownScheme("{".into()));
    };
    let (label, rest) = stored.split_at(end + 1);
    let upper = label[1..end].to_ascii_uppercase();
    let unknown = || {
        HashError::UnknownScheme(if looks_like_scheme(&label[1..end]) {
            label.to_owned()
        } else {
            String::new()
        })
    };
    let (base, enc) = match upper.rsplit_once('.') {
        Some((base, "B64")) => (base, Some(Encoding::B64)),
        Some((base, "HEX")) => (base, Some(Encoding::Hex)),
        Some(_) => return Err(unknown()),
        None => (upper.as_str(), None),
    };
    match base {
        "PLAIN" | "CLEAR" | "CLEARTEXT" | "PLAINTEXT" => {
            let clear = enc
                .unwrap_or(Encoding::Raw)
                .decode(rest)
                .ok_or_else(|| malformed("plain")("cleartext is not valid in its encoding".into()))?;
            let digest = Sha256::digest(&clear).to_vec();
            return Ok((Algo::Clear(Zeroizing::new(clear)), digest));
        }
        "CRAM-MD5" => {
            let states = enc.unwrap_or(Encoding::Hex).decode(rest).filter(|s| s.len() == 32);
            let states = states.ok_or_else(|| malformed("cram-md5")("not 32 bytes".into()))?;
            return Ok((Algo::CramMd5, states));
        }
        _ => {}
    }
    if let Some((name, alg, salted, default)) = Salted::lookup(base) {
        let (d, digest) =
            Salted::parse(name, alg, salted, enc.unwrap_or(default), enc.is_some(), rest).map_err(malformed(name))?;
        return Ok((Algo::Digest(d), digest));
    }
    // The crypt-style schemes: the text after the prefix is a crypt(3) string.
    let want: Option<&[&str]> = match base {
        "CRYPT" => None,
        "DES-CRYPT" => Some(&["des-crypt"]),
        "MD5" | "MD5-CRYPT" => Some(&["md5-crypt"]),
        "SHA256-CRYPT" => Some(&["sha256-crypt"]),
        "SHA512-CRYPT" => Some(&["sha512-crypt"]),
        "BLF-CRYPT" => Some(&["bcrypt"]),
        "ARGON2I" => Some(&["argon2i"]),
        "ARGON2ID" => Some(&["argon2id"]),
        "PBKDF2" => {
            let (p, digest) = Phc::parse_dovecot_pbkdf2(rest).map_err(malformed("pbkdf2-sha1"))?;
            return Ok((Algo::Phc(p), digest));
        }
        _ => return Err(unknown()),
    };
    if enc.is_some() {
        return Err(malformed("crypt")("encoding suffix on a crypt scheme".into()));
    }
    let (algo, digest) = parse_crypt(rest)?;
    let name = StoredHash {
        algo: algo.clone(),
        expected: Zeroizing::new(Vec::new()),
        fingerprint: [0; 32],
    }
    .scheme_name();
    match want {
        Some(w) if !w.contains(&name) => Err(malformed(name)(format!("{label} holds a {name} hash"))),
        _ => Ok((algo, digest)),
    }
}

/// A crypt(3)/PHC string: `$id$...`, or 13 characters of traditional DES.
fn parse_crypt(s: &str) -> Result<(Algo, Vec<u8>), HashError> {
    let Some(after) = s.strip_prefix('$') else {
        if s.len() == 13 && md5crypt::is_crypt64(s) {
            let (c, d) = Crypt::parse_des(s).map_err(malformed("des-crypt"))?;
            return Ok((Algo::Crypt(c), d));
        }
        // nginx would hand this to crypt(3), which fails; treating it as
        // plaintext (as some servers do) would accept the hash as a password.
        return Err(HashError::UnknownScheme("unprefixed".into()));
    };
    let (id, rest) = after.split_once('$').unwrap_or((after, ""));
    let crypt =
        |r: Result<(Crypt, Vec<u8>), String>, name| r.map(|(c, d)| (Algo::Crypt(c), d)).map_err(malformed(name));
    let phc = |r: Result<(Phc, Vec<u8>), String>, name| r.map(|(p, d)| (Algo::Phc(p), d)).map_err(malformed(name));
    match id {
        "1" | "apr1" => {
            let (magic, name) = if id == "1" {
                ("$1$", "md5-crypt")
            } else {
                ("$apr1$", "apr1")
            };
            Md5Crypt::parse(magic, rest)
                .map(|(m, d)| (Algo::Md5Crypt(m), d))
                .map_err(malformed(name))
        }
        "5" => crypt(Crypt::parse_sha(false, rest), "sha256-crypt"),
        "6" => crypt(Crypt::parse_sha(true, rest), "sha512-crypt"),
        "2a" | "2b" | "2y" => crypt(Crypt::parse_bcrypt(rest), "bcrypt"),
        "y" => crypt(Crypt::parse_yescrypt(rest), "yescrypt"),
        "7" => crypt(Crypt::parse_scrypt(rest), "scrypt"),
        "argon2id" => phc(Phc::parse_argon2(true, rest), "argon2id"),
        "argon2i" => phc(Phc::parse_argon2(false, rest), "argon2i"),
        "scrypt" => phc(Phc::parse_scrypt(rest), "scrypt"),
        "pbkdf2" => phc(Phc::parse_pbkdf2(Prf::Sha1, rest), "pbkdf2-sha1"),
        "pbkdf2-sha256" => phc(Phc::parse_pbkdf2(Prf::Sha256, rest), "pbkdf2-sha256"),
        "pbkdf2-sha512" => phc(Phc::parse_pbkdf2(Prf::Sha512, rest), "pbkdf2-sha512"),
        // A real id is closed by a second `$`; without one the text may be a password.
        _ if after.contains('$') && looks_like_scheme(id) => Err(HashError::UnknownScheme(format!("${id}$"))),
        _ => Err(HashError::UnknownScheme(String::new())),
    }
}
