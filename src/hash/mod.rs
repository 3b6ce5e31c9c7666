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
//! (`{SHA}`, `{SSHA512}`, `{PLAIN-MD4}`, …), [`cram`] (APOP and CRAM-MD5),
//! [`scram`] (`{SCRAM-SHA-1}`, `{SCRAM-SHA-256}`) and [`otp`] (`{OTP}`).
//!
//! Dovecot's `{SCHEME}` prefixes are read as its `password-scheme.c` reads
//! them: the name in any case, an optional `.b64`, `.base64` or `.hex`
//! encoding suffix (any case), and every scheme `doveadm pw -l` lists whose
//! check needs only the password. `{DIGEST-MD5}` (a digest of user, realm and
//! password) and the schemes Dovecot 2.3.14 removed are refused with the
//! reason.

mod bcrypt;
mod cram;
mod crypt;
mod digest;
mod md4;
mod md5crypt;
mod new;
mod otp;
mod phc;
mod scram;
#[cfg(test)]
mod tests;

pub(crate) use new::{NewScheme, hash_password};

use std::borrow::Cow;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crypt::Crypt;
use digest::{Encoding, Salted};
use md5crypt::Md5Crypt;
use otp::Otp;
use phc::{Phc, Prf};
use scram::Scram;

/// The longest password checked, in bytes; a longer one is a wrong password,
/// decided without hashing. libxcrypt's crypt(3) refuses passphrases of 512
/// bytes or more, and the work of md5-crypt and sha-crypt grows with the
/// length (sha-crypt's quadratically), so without a cap one long password
/// could hold a verification thread for seconds. The cap holds for every
/// scheme, so a password works or fails the same whatever it is stored as.
pub(crate) const MAX_PASSWORD_BYTES: usize = 511;

/// Why a stored hash could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    /// Neither a `{SCHEME}` nor a `$id$` prefix, and not a 13-character DES
    /// hash. Never taken as a plaintext password: nginx hands such a value to
    /// crypt(3), which fails.
    #[error("no scheme prefix")]
    Unprefixed,
    /// A prefix naming no scheme mailauthd knows, as written: `{FOO}`,
    /// `{SHA256.zip}`, `$9$`. A name that does not look like a scheme name
    /// (it may be a password typed into the wrong field) is shown as `{…}`,
    /// and a long one is cut after 24 characters; the text after the prefix
    /// is never included.
    #[error("unknown scheme {0}")]
    UnknownScheme(String),
    /// A known scheme that mailauthd does not verify.
    #[error("unsupported scheme {scheme}: {reason}")]
    Unsupported {
        /// The scheme's prefix, e.g. `{DIGEST-MD5}`.
        scheme: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
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
    /// Dovecot `{PLAIN-TRUNC}N-text`: when `text` is N bytes long
    /// (`Some(N)`), it is a password cut to N bytes and a password matches if
    /// its first N bytes do; otherwise (`None`) it is the whole password. The
    /// digest compared is SHA-256, as for [`Algo::Clear`].
    PlainTrunc(Option<usize>),
    Digest(Salted),
    /// Dovecot `{CRAM-MD5}`: the digest is the 32-byte HMAC-MD5 state.
    CramMd5,
    Md5Crypt(Md5Crypt),
    Crypt(Crypt),
    Phc(Phc),
    Scram(Scram),
    Otp(Otp),
}

/// A stored password hash, parsed and ready to verify.
#[derive(Clone)]
pub(crate) struct StoredHash {
    algo: Algo,
    expected: Zeroizing<Vec<u8>>,
    /// The stored text, for [`StoredHash::fingerprint`] (it may hold a cleartext: zeroized).
    text: Zeroizing<String>,
    /// SHA-256 of `text`, worked out when first asked for: cheap schemes are verified
    /// without the verified-login cache and never need it.
    fingerprint: std::sync::OnceLock<[u8; 32]>,
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
        Ok(StoredHash {
            algo,
            expected: Zeroizing::new(expected),
            text: Zeroizing::new(stored.to_owned()),
            fingerprint: std::sync::OnceLock::new(),
        })
    }

    fn compute(&self, password: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match &self.algo {
            Algo::Clear(_) | Algo::PlainTrunc(None) => Sha256::digest(password).to_vec(),
            Algo::PlainTrunc(Some(n)) => Sha256::digest(&password[..password.len().min(*n)]).to_vec(),
            Algo::Digest(d) => d.compute(password),
            Algo::CramMd5 => cram::cram_states(password),
            Algo::Md5Crypt(m) => m.compute(password),
            Algo::Crypt(c) => c.compute(password),
            Algo::Phc(p) => p.compute(password, self.expected.len()),
            Algo::Scram(s) => s.compute(password),
            Algo::Otp(o) => o.compute(password),
        })
    }

    /// Checks `password` against the hash; the final digests are compared in
    /// constant time. A password longer than [`MAX_PASSWORD_BYTES`] is wrong,
    /// and nothing is computed for it.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        self.compute(password).as_slice().ct_eq(&self.expected).into()
    }

    /// A hash of the same scheme and cost params over a random password nobody
    /// knows: unknown users are verified against it so they cost the same time
    /// as a wrong password.
    pub(crate) fn dummy_like(&self) -> StoredHash {
        let random: [u8; 32] = rand::random();
        let password = Zeroizing::new(hex::encode(random).into_bytes());
        let mut dummy = self.clone();
        match dummy.algo {
            Algo::Clear(_) => dummy.algo = Algo::Clear(password.clone()),
            // A short truncation length could let a random password share the
            // right one's first bytes: a random digest has no password at all.
            Algo::PlainTrunc(_) => dummy.algo = Algo::PlainTrunc(None),
            _ => {}
        }
        dummy.expected = match dummy.algo {
            Algo::PlainTrunc(_) => Zeroizing::new(random.to_vec()),
            _ => dummy.compute(&password),
        };
        dummy.text = Zeroizing::new(String::new());
        dummy.fingerprint = std::sync::OnceLock::from(<[u8; 32]>::from(Sha256::digest(&dummy.expected)));
        dummy
    }

    /// Short scheme name: `plain`, `sha1`, `ssha`, `apr1`, `des-crypt`,
    /// `md5-crypt`, `sha512-crypt`, `bcrypt`, `yescrypt`, `argon2id`,
    /// `scram-sha-256`, `otp`, ...
    pub(crate) fn scheme_name(&self) -> &'static str {
        match &self.algo {
            Algo::Clear(_) => "plain",
            Algo::PlainTrunc(_) => "plain-trunc",
            Algo::Digest(d) => d.name,
            Algo::CramMd5 => "cram-md5",
            Algo::Md5Crypt(m) if m.magic == "$apr1$" => "apr1",
            Algo::Md5Crypt(_) => "md5-crypt",
            Algo::Crypt(c) => c.name(),
            Algo::Phc(p) => p.name(),
            Algo::Scram(s) => s.name(),
            Algo::Otp(_) => "otp",
        }
    }

    /// Scheme with its cost parameters, e.g. `bcrypt-10`, `sha512-crypt-5000`,
    /// `argon2id-m65536-t3-p1`, `scram-sha-256-4096`, `otp-sha1-1024`: two
    /// hashes with the same label cost the same to verify.
    pub(crate) fn cost_label(&self) -> String {
        match &self.algo {
            Algo::Crypt(c) => c.cost_label(),
            Algo::Phc(p) => p.cost_label(self.expected.len()),
            Algo::Scram(s) => s.cost_label(),
            Algo::Otp(o) => o.cost_label(),
            _ => self.scheme_name().to_owned(),
        }
    }

    /// Where the verification may run.
    pub(crate) fn weight(&self) -> Weight {
        match &self.algo {
            Algo::Clear(_) | Algo::PlainTrunc(_) | Algo::Digest(_) | Algo::CramMd5 | Algo::Crypt(Crypt::Des { .. }) => {
                Weight::Cheap
            }
            Algo::Crypt(Crypt::Yescrypt { .. } | Crypt::Scrypt { .. })
            | Algo::Phc(Phc::Argon2 { .. } | Phc::Scrypt { .. }) => Weight::MemoryHard,
            // SCRAM is PBKDF2 (4096 rounds and up); OTP hashes once per sequence step.
            Algo::Md5Crypt(_) | Algo::Crypt(_) | Algo::Phc(_) | Algo::Scram(_) | Algo::Otp(_) => Weight::Slow,
        }
    }

    /// The stored cleartext, for schemes that keep one (`{PLAIN}`, `{CLEAR}`,
    /// `{PLAIN.b64}`, ...). `{PLAIN-TRUNC}` has none: its text may be a cut
    /// password.
    pub(crate) fn cleartext(&self) -> Option<&[u8]> {
        match &self.algo {
            Algo::Clear(c) => Some(c),
            _ => None,
        }
    }

    /// SHA-256 of the stored text: changes whenever the stored hash changes.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        *self
            .fingerprint
            .get_or_init(|| Sha256::digest(self.text.as_bytes()).into())
    }

    /// APOP (RFC 1939): `digest_hex` == lowercase hex MD5(salt ‖ cleartext),
    /// compared case-insensitively; false when no cleartext is stored.
    pub(crate) fn verify_apop(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        match &self.algo {
            Algo::Clear(c) if answer_fits(c, digest_hex) => cram::hex_matches(&cram::apop(c, salt), digest_hex),
            _ => false,
        }
    }

    /// CRAM-MD5 (RFC 2195): `digest_hex` == hex HMAC-MD5(key = cleartext,
    /// msg = salt), from a stored cleartext or Dovecot's `{CRAM-MD5}` state;
    /// false for every other scheme.
    pub(crate) fn verify_cram_md5(&self, salt: &[u8], digest_hex: &[u8]) -> bool {
        let mac = match &self.algo {
            Algo::Clear(c) if answer_fits(c, digest_hex) => cram::cram_from_cleartext(c, salt),
            Algo::CramMd5 if answer_fits(b"", digest_hex) => cram::cram_from_states(&self.expected, salt),
            _ => return false,
        };
        cram::hex_matches(&mac, digest_hex)
    }
}

/// Whether a challenge-response check is worth computing: the answer is an
/// MD5 in hex (32 characters), and the cleartext is within
/// [`MAX_PASSWORD_BYTES`] like any password (a longer one is refused at load).
fn answer_fits(clear: &[u8], digest_hex: &[u8]) -> bool {
    digest_hex.len() == 32 && clear.len() <= MAX_PASSWORD_BYTES
}

/// How an unknown prefix is named in an error: as written when it looks like
/// a scheme name (cut after 24 characters), else as `open…close`. Anything
/// else may be part of a password typed into the wrong field: it is never
/// repeated.
fn shown_prefix(open: char, name: &str, close: char) -> String {
    const MAX: usize = 24;
    let scheme_like = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !scheme_like {
        format!("{open}…{close}")
    } else if name.len() > MAX {
        // Scheme-like names are ASCII, so the cut is on a character boundary.
        format!("{open}{}…{close}", &name[..MAX])
    } else {
        format!("{open}{name}{close}")
    }
}

/// What a Dovecot scheme name (upper case, without its encoding suffix) stands for.
enum Scheme {
    /// `{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}`, `{PLAINTEXT}`.
    Clear,
    /// `{PLAIN-TRUNC}`.
    PlainTrunc,
    /// A plain or salted digest ([`Salted::lookup`]).
    Digest(&'static str, digest::Alg, bool),
    /// `{MD5}`: md5-crypt when the text starts with `$1$`, else an MD5 digest.
    Md5,
    /// `{CRAM-MD5}` and its alias `{HMAC-MD5}`.
    CramMd5,
    /// `{CRYPT}`, `{DES-CRYPT}`, `{SHA256-CRYPT}`, `{SHA512-CRYPT}`: Dovecot
    /// hands the text to crypt(3) whatever the name says.
    Crypt(&'static str),
    /// `{MD5-CRYPT}`: Dovecot's own md5-crypt, `$1$` only.
    Md5Crypt,
    /// `{BLF-CRYPT}`: Dovecot's own bcrypt.
    BlfCrypt,
    /// `{ARGON2I}`, `{ARGON2ID}`: libsodium verifies either variant.
    Argon2(&'static str),
    /// `{PBKDF2}`.
    Pbkdf2,
    /// `{SCRAM-SHA-1}` (false), `{SCRAM-SHA-256}` (true).
    Scram(bool),
    /// `{OTP}`.
    Otp,
    /// Known, but not verified.
    Unsupported(&'static str, &'static str),
}

/// Why the schemes Dovecot 2.3.14 dropped are refused.
const REMOVED: &str = "removed from Dovecot in 2.3.14 as too weak; set a new password with a current scheme";

impl Scheme {
    /// The scheme named in errors about its text.
    fn name(&self) -> &'static str {
        match self {
            Scheme::Clear => "plain",
            Scheme::PlainTrunc => "plain-trunc",
            Scheme::Digest(name, ..) | Scheme::Crypt(name) | Scheme::Argon2(name) => name,
            Scheme::Md5 => "md5",
            Scheme::CramMd5 => "cram-md5",
            Scheme::Md5Crypt => "md5-crypt",
            Scheme::BlfCrypt => "blf-crypt",
            Scheme::Pbkdf2 => "pbkdf2-sha1",
            Scheme::Scram(false) => "scram-sha-1",
            Scheme::Scram(true) => "scram-sha-256",
            Scheme::Otp => "otp",
            Scheme::Unsupported(..) => "unsupported",
        }
    }

    fn lookup(upper: &str) -> Option<Scheme> {
        if let Some((name, alg, salted)) = Salted::lookup(upper) {
            return Some(Scheme::Digest(name, alg, salted));
        }
        Some(match upper {
            "PLAIN" | "CLEAR" | "CLEARTEXT" | "PLAINTEXT" => Scheme::Clear,
            "PLAIN-TRUNC" => Scheme::PlainTrunc,
            "MD5" => Scheme::Md5,
            "CRAM-MD5" | "HMAC-MD5" => Scheme::CramMd5,
            "CRYPT" => Scheme::Crypt("crypt"),
            "DES-CRYPT" => Scheme::Crypt("des-crypt"),
            "SHA256-CRYPT" => Scheme::Crypt("sha256-crypt"),
            "SHA512-CRYPT" => Scheme::Crypt("sha512-crypt"),
            "MD5-CRYPT" => Scheme::Md5Crypt,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "ARGON2I" => Scheme::Argon2("argon2i"),
            "ARGON2ID" => Scheme::Argon2("argon2id"),
            "PBKDF2" => Scheme::Pbkdf2,
            "SCRAM-SHA-1" => Scheme::Scram(false),
            "SCRAM-SHA-256" => Scheme::Scram(true),
            "OTP" => Scheme::Otp,
            "DIGEST-MD5" => Scheme::Unsupported(
                "{DIGEST-MD5}",
                "the stored value is MD5 of user name, realm and password, and is not \
                 checked from the password alone; store the password with another scheme",
            ),
            "NTLM" => Scheme::Unsupported("{NTLM}", REMOVED),
            "LANMAN" => Scheme::Unsupported("{LANMAN}", REMOVED),
            "RPA" => Scheme::Unsupported("{RPA}", REMOVED),
            "SKEY" => Scheme::Unsupported("{SKEY}", REMOVED),
            _ => return None,
        })
    }
}

/// `{SCHEME[.enc]}rest`: Dovecot, OpenLDAP and htpasswd `{SHA}` prefixes.
fn parse_braced(stored: &str) -> Result<(Algo, Vec<u8>), HashError> {
    // Dovecot too takes a value without a closing brace as having no scheme.
    let Some(end) = stored.find('}') else {
        return Err(HashError::Unprefixed);
    };
    let (name, body) = (&stored[1..end], &stored[end + 1..]);
    let unknown = || HashError::UnknownScheme(shown_prefix('{', name, '}'));
    // As Dovecot's password_scheme_lookup: the name ends at the first dot, and
    // an encoding it does not know makes the whole scheme unknown.
    let (base, enc) = match name.split_once('.') {
        None => (name, None),
        Some((base, enc)) => match enc.to_ascii_lowercase().as_str() {
            "b64" | "base64" => (base, Some(Encoding::B64)),
            "hex" => (base, Some(Encoding::Hex)),
            _ => return Err(unknown()),
        },
    };
    let scheme = Scheme::lookup(&base.to_ascii_uppercase()).ok_or_else(unknown)?;
    // Digests decode their own text (they guess its encoding); for every other
    // scheme an encoding suffix wraps the text the scheme reads.
    let name = scheme.name();
    let decoded = match enc {
        Some(enc) if !matches!(scheme, Scheme::Digest(..) | Scheme::CramMd5) => {
            let what = if enc == Encoding::Hex { "hex" } else { "base64" };
            let raw = enc
                .decode(body)
                .ok_or_else(|| malformed(name)(format!("the text is not valid {what}")))?;
            Cow::Owned(raw)
        }
        _ => Cow::Borrowed(body.as_bytes()),
    };
    let text = || std::str::from_utf8(&decoded).map_err(|_| malformed(name)("the decoded text is not UTF-8".into()));
    match scheme {
        Scheme::Clear => {
            let clear = decoded.into_owned();
            if clear.len() > MAX_PASSWORD_BYTES {
                return Err(too_long("plain"));
            }
            let digest = Sha256::digest(&clear).to_vec();
            Ok((Algo::Clear(Zeroizing::new(clear)), digest))
        }
        Scheme::PlainTrunc => parse_plain_trunc(&decoded),
        Scheme::Digest(name, alg, salted) => {
            let (d, digest) = Salted::parse(name, alg, salted, enc, body).map_err(malformed(name))?;
            Ok((Algo::Digest(d), digest))
        }
        Scheme::Md5 => {
            let text = text()?;
            if text.starts_with("$1$") {
                crypt_under(
                    "md5",
                    "{MD5}",
                    text,
                    |a| matches!(a, Algo::Md5Crypt(m) if m.magic == "$1$"),
                )
            } else {
                let (d, digest) = Salted::parse("md5", digest::Alg::Md5, false, None, text).map_err(|_| {
                    malformed("md5")("neither an md5-crypt ($1$) string nor a 16-byte digest in hex or base64".into())
                })?;
                Ok((Algo::Digest(d), digest))
            }
        }
        Scheme::CramMd5 => {
            let states = digest::decode_fixed(body, 32, enc).filter(|s| s.len() == 32);
            let states = states.ok_or_else(|| malformed("cram-md5")("not 32 bytes".into()))?;
            Ok((Algo::CramMd5, states))
        }
        Scheme::Crypt(name) => crypt_under(name, "crypt(3)", text()?, |a| {
            matches!(a, Algo::Crypt(_)) || matches!(a, Algo::Md5Crypt(m) if m.magic == "$1$")
        }),
        Scheme::Md5Crypt => crypt_under(
            "md5-crypt",
            "{MD5-CRYPT}",
            text()?,
            |a| matches!(a, Algo::Md5Crypt(m) if m.magic == "$1$"),
        ),
        Scheme::BlfCrypt => crypt_under("blf-crypt", "{BLF-CRYPT}", text()?, |a| {
            matches!(a, Algo::Crypt(Crypt::Bcrypt { .. }))
        }),
        Scheme::Argon2(name) => crypt_under(name, "libsodium", text()?, |a| {
            matches!(a, Algo::Phc(Phc::Argon2 { .. }))
        }),
        Scheme::Pbkdf2 => {
            let (p, digest) = Phc::parse_dovecot_pbkdf2(text()?).map_err(malformed("pbkdf2-sha1"))?;
            Ok((Algo::Phc(p), digest))
        }
        Scheme::Scram(sha256) => {
            let (s, digest) = Scram::parse(sha256, text()?).map_err(malformed(name))?;
            Ok((Algo::Scram(s), digest))
        }
        Scheme::Otp => {
            let (o, digest) = Otp::parse(text()?).map_err(malformed("otp"))?;
            Ok((Algo::Otp(o), digest))
        }
        Scheme::Unsupported(scheme, reason) => Err(HashError::Unsupported { scheme, reason }),
    }
}

/// The error for a stored cleartext no accepted password can match.
fn too_long(scheme: &'static str) -> HashError {
    malformed(scheme)(format!(
        "the cleartext is longer than {MAX_PASSWORD_BYTES} bytes, the longest password checked"
    ))
}

/// Dovecot's `{PLAIN-TRUNC}` text: `N-text`, N in decimal (`plain_trunc_verify`).
fn parse_plain_trunc(raw: &[u8]) -> Result<(Algo, Vec<u8>), HashError> {
    let bad = malformed("plain-trunc");
    let digits = raw.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some((b'-', clear)) = raw[digits..].split_first() else {
        return Err(bad("expected LENGTH-TEXT".into()));
    };
    // No digits read as 0. A length that overflows cannot be the text's, so
    // the text is then the whole password.
    let len: Option<usize> = match digits {
        0 => Some(0),
        _ => std::str::from_utf8(&raw[..digits]).ok().and_then(|d| d.parse().ok()),
    };
    let trunc = match len {
        // Dovecot would compare no bytes at all: every password would match.
        Some(0) if clear.is_empty() => {
            return Err(bad("an empty text cut to 0 bytes would accept every password".into()));
        }
        Some(n) if n == clear.len() => Some(n),
        _ => None,
    };
    if clear.len() > MAX_PASSWORD_BYTES {
        return Err(too_long("plain-trunc"));
    }
    let digest = Sha256::digest(clear).to_vec();
    Ok((Algo::PlainTrunc(trunc), digest))
}

/// A crypt-style string under a Dovecot prefix, refused unless `fits`: the
/// scheme the prefix names would not verify it (`verifier` names that scheme).
fn crypt_under(
    scheme: &'static str,
    verifier: &str,
    text: &str,
    fits: impl Fn(&Algo) -> bool,
) -> Result<(Algo, Vec<u8>), HashError> {
    let (algo, digest) = match parse_crypt(text) {
        Ok(parsed) => parsed,
        Err(e @ HashError::Malformed { .. }) => return Err(e),
        Err(_) => return Err(malformed(scheme)(format!("not a hash that {verifier} verifies"))),
    };
    if !fits(&algo) {
        let held = StoredHash {
            algo,
            expected: Zeroizing::new(Vec::new()),
            text: Zeroizing::new(String::new()),
            fingerprint: std::sync::OnceLock::new(),
        }
        .scheme_name();
        return Err(malformed(scheme)(format!("{verifier} does not verify {held} hashes")));
    }
    Ok((algo, digest))
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
        return Err(HashError::Unprefixed);
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
        "2a" => crypt(Crypt::parse_bcrypt(bcrypt::Variant::A, rest), "bcrypt"),
        "2b" | "2y" => crypt(Crypt::parse_bcrypt(bcrypt::Variant::B, rest), "bcrypt"),
        "y" => crypt(Crypt::parse_yescrypt(rest), "yescrypt"),
        "7" => crypt(Crypt::parse_scrypt(rest), "scrypt"),
        "argon2id" => phc(Phc::parse_argon2(true, rest), "argon2id"),
        "argon2i" => phc(Phc::parse_argon2(false, rest), "argon2i"),
        "scrypt" => phc(Phc::parse_scrypt(rest), "scrypt"),
        "pbkdf2" => phc(Phc::parse_pbkdf2(Prf::Sha1, rest), "pbkdf2-sha1"),
        "pbkdf2-sha256" => phc(Phc::parse_pbkdf2(Prf::Sha256, rest), "pbkdf2-sha256"),
        "pbkdf2-sha512" => phc(Phc::parse_pbkdf2(Prf::Sha512, rest), "pbkdf2-sha512"),
        // A real id is closed by a second `$`; without one there is no prefix.
        _ if after.contains('$') => Err(HashError::UnknownScheme(shown_prefix('$', id, '$'))),
        _ => Err(HashError::Unprefixed),
    }
}
