//! Plain and salted message digests as written by htpasswd (`{SHA}`),
//! OpenLDAP and Dovecot: `{SHA}`, `{SSHA}`, `{SHA256}`, `{SSHA256}`,
//! `{SHA512}`, `{SSHA512}`, `{PLAIN-MD5}`, `{LDAP-MD5}`, `{SMD5}`, and the
//! Dovecot `.b64` / `.hex` encoding suffixes.

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
    /// As is (`{PLAIN}`).
    Raw,
    /// Base64.
    B64,
    /// Hexadecimal, either case.
    Hex,
}

impl Encoding {
    /// Decodes `text`; `None` if it is not valid in this encoding.
    pub(super) fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Raw => Some(text.as_bytes().to_vec()),
            Encoding::B64 => B64.decode(text).ok(),
            Encoding::Hex => hex::decode(text).ok(),
        }
    }
}

/// A digest function.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Alg {
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
            Alg::Md5 => 16,
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
    /// Looks up a Dovecot/LDAP digest scheme by its upper-case name: the
    /// short name, the digest, whether it is salted and its default encoding.
    pub(super) fn lookup(scheme: &str) -> Option<(&'static str, Alg, bool, Encoding)> {
        use {Alg::*, Encoding::*};
        Some(match scheme {
            "SHA" | "SHA1" => ("sha1", Sha1, false, B64),
            "SSHA" => ("ssha", Sha1, true, B64),
            "SHA256" => ("sha256", Sha256, false, B64),
            "SSHA256" => ("ssha256", Sha256, true, B64),
            "SHA512" => ("sha512", Sha512, false, B64),
            "SSHA512" => ("ssha512", Sha512, true, B64),
            "PLAIN-MD5" => ("md5", Md5, false, Hex),
            "LDAP-MD5" => ("md5", Md5, false, B64),
            "SMD5" => ("smd5", Md5, true, B64),
            _ => return None,
        })
    }

    /// Parses the text after the prefix; returns the scheme and the digest.
    pub(super) fn parse(
        name: &'static str,
        alg: Alg,
        salted: bool,
        enc: Encoding,
        explicit: bool,
        text: &str,
    ) -> Result<(Self, Vec<u8>), String> {
        // Dovecot also reads an unsalted digest in hex when the scheme's
        // default is base64 and the length is exactly twice the digest size.
        let enc = if !explicit && !salted && text.len() == 2 * alg.len() && hex::decode(text).is_ok() {
            Encoding::Hex
        } else {
            enc
        };
        let raw = enc.decode(text).ok_or_else(|| format!("digest is not valid {enc:?}"))?;
        let n = alg.len();
        if raw.len() < n || (!salted && raw.len() != n) {
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
