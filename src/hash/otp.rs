//! Dovecot's `{OTP}` entry, `ALGO SEQ SEED HASH` (RFC 2289 one-time
//! passwords): HASH is the 64-bit OTP value after SEQ rounds, so checking a
//! pass phrase needs only the pass phrase.
//!
//! Dovecot recomputes the entry from the pass phrase and compares the whole
//! text case-insensitively (`otp_verify`, `src/lib-otp/otp-hash.c`), so only
//! the text it writes can ever match: lowercase algorithm, the sequence in
//! plain decimal, single spaces, 16 hex digits. Anything else is refused at
//! load.

use md5::Md5;
use sha1::{Digest as _, Sha1};

use super::md4::md4;

/// The highest sequence accepted: each step is one hash of 8 bytes (about
/// 75 ns: 1024 steps take 75 µs), so a million steps take about 0.1 s per
/// login. RFC 2289 tools start at a few hundred.
const MAX_SEQUENCE: u32 = 1_000_000;

/// The digest an OTP entry folds to 64 bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OtpAlg {
    Md4,
    Md5,
    Sha1,
}

/// A parsed `{OTP}` entry, without its hash.
#[derive(Clone)]
pub(super) struct Otp {
    alg: OtpAlg,
    seq: u32,
    /// Lowercase, as RFC 2289 (and Dovecot) hash it.
    seed: String,
}

impl Otp {
    /// Parses `ALGO SEQ SEED HASH`; returns the entry and the 8-byte hash.
    pub(super) fn parse(text: &str) -> Result<(Self, Vec<u8>), String> {
        let [alg, seq, seed, hash] = text.split(' ').collect::<Vec<_>>()[..] else {
            return Err("expected ALGO SEQ SEED HASH separated by single spaces".into());
        };
        let alg = match alg {
            "md4" => OtpAlg::Md4,
            "md5" => OtpAlg::Md5,
            "sha1" => OtpAlg::Sha1,
            _ => return Err("algorithm is not md4, md5 or sha1 (lowercase)".into()),
        };
        let canonical =
            !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) && (seq == "0" || !seq.starts_with('0'));
        let seq: u32 = match seq.parse() {
            Ok(n) if canonical => n,
            _ => return Err("sequence is not a plain decimal number".into()),
        };
        if seq > MAX_SEQUENCE {
            return Err(format!("sequence {seq} is above {MAX_SEQUENCE}"));
        }
        if !(1..=16).contains(&seed.len()) || !seed.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("seed is not 1 to 16 letters and digits".into());
        }
        let hash = hex::decode(hash).ok().filter(|h| h.len() == 8);
        let hash = hash.ok_or("hash is not 16 hex digits")?;
        let seed = seed.to_ascii_lowercase();
        Ok((Otp { alg, seq, seed }, hash))
    }

    /// Scheme with its digest and sequence: the cost grows with the sequence.
    pub(super) fn cost_label(&self) -> String {
        let alg = match self.alg {
            OtpAlg::Md4 => "md4",
            OtpAlg::Md5 => "md5",
            OtpAlg::Sha1 => "sha1",
        };
        format!("otp-{alg}-{}", self.seq)
    }

    /// The 8-byte OTP value of `pw`: fold(H(seed ‖ pw)), then SEQ times fold(H(value)).
    pub(super) fn compute(&self, pw: &[u8]) -> Vec<u8> {
        let mut input = zeroize::Zeroizing::new(self.seed.as_bytes().to_vec());
        input.extend_from_slice(pw);
        let mut value = self.fold(&input);
        for _ in 0..self.seq {
            value = self.fold(&value);
        }
        value.to_vec()
    }

    /// One RFC 2289 step: the digest XOR-folded to 64 bits.
    fn fold(&self, data: &[u8]) -> [u8; 8] {
        let mut out = [0u8; 8];
        match self.alg {
            OtpAlg::Md4 | OtpAlg::Md5 => {
                let d: [u8; 16] = if self.alg == OtpAlg::Md4 {
                    md4(data)
                } else {
                    Md5::digest(data).into()
                };
                for (i, o) in out.iter_mut().enumerate() {
                    *o = d[i] ^ d[i + 8];
                }
            }
            OtpAlg::Sha1 => {
                // RFC 2289 appendix A folds SHA-1 as five 32-bit words and
                // writes each result word with its bytes reversed.
                let d = Sha1::digest(data);
                for i in 0..4 {
                    out[3 - i] = d[i] ^ d[i + 8] ^ d[i + 16];
                    out[7 - i] = d[i + 4] ^ d[i + 12];
                }
            }
        }
        out
    }
}
