//! Plain and salted message digests as written by htpasswd (`{SHA}`),
//! OpenLDAP and Dovecot: `{SHA}`, `{SHA1}`, `{SSHA}`, `{SHA256}`, `{SSHA256}`,
//! `{SHA512}`, `{SSHA512}`, `{PLAIN-MD4}`, `{PLAIN-MD5}`, `{LDAP-MD5}`,
//! `{SMD5}`, and the encodings Dovecot reads them in.
//!
//! Encodings follow Dovecot's `password_decode`: an explicit `.b64`,
//! `.base64` or `.hex` suffix is obeyed; without one, an unsalted digest is
//! read as hex when its text is exactly twice the digest size (and as base64
//! if that fails), otherwise as base64, whatever the scheme's default; a salted
//! one is read as base64.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// Standard base64 that accepts the text with or without `=` padding.
pub(super) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_encode_padding(false),
);

/// How the bytes after a `{SCHEME}` prefix are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Encoding {
    /// Base64.
    B64,
    /// Hexadecimal, either case.
    Hex,
}

impl Encoding {
    /// Decodes `text`; `None` if it is not valid in this encoding.
    pub(super) fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::B64 => B64.decode(text).ok(),
            Encoding::Hex => hex::decode(text).ok(),
        }
    }
}

/// A digest function.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Alg {
    /// MD4 (16 bytes).
    Md4,
    /// MD5 (16 bytes).
    Md5,
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl Alg {
    /// Output length in bytes.
    pub(super) fn len(self) -> usize {
        match self {
            Alg::Md4 | Alg::Md5 => 16,
            Alg::Sha1 => 20,
            Alg::Sha256 => 32,
            Alg::Sha512 => 64,
        }
    }

    /// Digest of the concatenation of `parts`.
    pub(super) fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Alg::Md4 => super::md4::md4(&zeroize::Zeroizing::new(parts.concat())).to_vec(),
            Alg::Md5 => run::<Md5>(parts),
            Alg::Sha1 => run::<Sha1>(parts),
            Alg::Sha256 => run::<Sha256>(parts),
            Alg::Sha512 => run::<Sha512>(parts),
        }
    }
}

/// `digest(password ‖ salt)`; unsalted schemes have an empty salt.
#[derive(Clone)]
pub(super) struct Salted {
    /// Scheme name, e.g. `ssha256`.
    pub(super) name: &'static str,
    alg: Alg,
    salt: Vec<u8>,
}

impl Salted {
    /// Looks up a digest scheme by its upper-case name: the short name, the
    /// digest and whether a salt follows the digest.
    pub(super) fn lookup(scheme: &str) -> Option<(&'static str, Alg, bool)> {
        use Alg::*;
        Some(match scheme {
            "SHA" | "SHA1" => ("sha1", Sha1, false),
            "SSHA" => ("ssha", Sha1, true),
            "SHA256" => ("sha256", Sha256, false),
            "SSHA256" => ("ssha256", Sha256, true),
            "SHA512" => ("sha512", Sha512, false),
            "SSHA512" => ("ssha512", Sha512, true),
            "PLAIN-MD4" => ("md4", Md4, false),
            "PLAIN-MD5" | "LDAP-MD5" => ("md5", Md5, false),
            "SMD5" => ("smd5", Md5, true),
            _ => return None,
        })
    }

    /// Parses the text after the prefix, in the encoding the suffix names
    /// (`None`: none named); returns the scheme and the digest.
    pub(super) fn parse(
        name: &'static str,
        alg: Alg,
        salted: bool,
        enc: Option<Encoding>,
        text: &str,
    ) -> Result<(Self, Vec<u8>), String> {
        let n = alg.len();
        let raw = if salted {
            enc.unwrap_or(Encoding::B64).decode(text)
        } else {
            decode_fixed(text, n, enc)
        };
        let raw = raw.ok_or_else(|| format!("digest is not valid {:?}", enc.unwrap_or(Encoding::B64)))?;
        // Dovecot wants at least one byte of salt ("SSHA password is too short").
        if (salted && raw.len() <= n) || (!salted && raw.len() != n) {
            return Err(format!(
                "digest is {} bytes, expected {n}{}",
                raw.len(),
                if salted { "+salt" } else { "" }
            ));
        }
        let (digest, salt) = raw.split_at(n);
        Ok((
            Salted {
                name,
                alg,
                salt: salt.to_vec(),
            },
            digest.to_vec(),
        ))
    }

    /// The digest of `pw` with this salt.
    pub(super) fn compute(&self, pw: &[u8]) -> Vec<u8> {
        self.alg.hash(&[pw, &self.salt])
    }
}

/// Decodes a fixed-size value (`n` bytes) as Dovecot does: in the named
/// encoding if there is one; otherwise hex when the text is `2n` long and
/// hex-decodes, else base64.
pub(super) fn decode_fixed(text: &str, n: usize, enc: Option<Encoding>) -> Option<Vec<u8>> {
    match enc {
        Some(enc) => enc.decode(text),
        None if text.len() == 2 * n => Encoding::Hex.decode(text).or_else(|| Encoding::B64.decode(text)),
        None => Encoding::B64.decode(text),
    }
}
