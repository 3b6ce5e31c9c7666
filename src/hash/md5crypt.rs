//! MD5-crypt (`$1$`, Poul-Henning Kamp's FreeBSD scheme) and Apache's `$apr1$`
//! variant, plus the crypt(3) base64 alphabet (`./0-9A-Za-z`, least significant
//! six bits first) that md5-crypt, sha-crypt, yescrypt and `$7$` scrypt share.
//!
//! Own code over `md-5`: the only crate with md5-crypt (pwhash) is unmaintained
//! and has no `$apr1$`.

use md5::{Digest, Md5};

/// The crypt(3) base64 alphabet.
pub(super) const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Value of one crypt(3) base64 character.
pub(super) fn atoi64(c: u8) -> Option<u32> {
    ITOA64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// True if every byte is in the crypt(3) base64 alphabet.
pub(super) fn is_crypt64(s: &str) -> bool {
    s.bytes().all(|c| atoi64(c).is_some())
}

/// Appends `n` characters encoding the low bits of `w`, least significant first.
pub(super) fn push64(out: &mut Vec<u8>, mut w: u32, n: usize) {
    for _ in 0..n {
        out.push(ITOA64[(w & 0x3f) as usize]);
        w >>= 6;
    }
}

/// Encodes bytes in order, three at a time, little-endian (yescrypt, `$7$`).
pub(super) fn encode64(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let w = chunk.iter().rev().fold(0u32, |w, &b| (w << 8) | u32::from(b));
        push64(&mut out, w, chunk.len() + 1);
    }
    out
}

/// Inverse of [`encode64`]; `None` on a character outside the alphabet or a
/// length no encoding produces.
pub(super) fn decode64(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut w = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            w |= atoi64(c)? << (6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((w >> (8 * i)) as u8);
        }
    }
    Some(out)
}

/// Parsed `$1$salt$hash` or `$apr1$salt$hash`.
#[derive(Clone)]
pub(super) struct Md5Crypt {
    /// `$1$` or `$apr1$`.
    pub(super) magic: &'static str,
    salt: Vec<u8>,
}

impl Md5Crypt {
    /// Parses everything after the magic; returns the scheme and the 22-char
    /// digest text to compare against.
    pub(super) fn parse(magic: &'static str, rest: &str) -> Result<(Self, Vec<u8>), String> {
        let (salt, digest) = rest.split_once('$').ok_or("missing '$' after the salt")?;
        if salt.len() > 8 || !is_crypt64(salt) {
            return Err("salt is not 0-8 crypt base64 characters".into());
        }
        if digest.len() != 22 || !is_crypt64(digest) {
            return Err("digest is not 22 crypt base64 characters".into());
        }
        let salt = salt.as_bytes().to_vec();
        Ok((Md5Crypt { magic, salt }, digest.as_bytes().to_vec()))
    }

    /// The 22-char digest text for `password`.
    pub(super) fn compute(&self, password: &[u8]) -> Vec<u8> {
        md5_crypt(self.magic.as_bytes(), &self.salt, password)
    }
}

fn md5_crypt(magic: &[u8], salt: &[u8], pw: &[u8]) -> Vec<u8> {
    let alt = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut ctx = Md5::new().chain_update(pw).chain_update(magic).chain_update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    // A quirk of the original C: for each bit of the length, a NUL byte or the
    // first password byte (not the "alternate" digest byte).
    let mut len = pw.len();
    while len > 0 {
        ctx.update(if len & 1 == 1 { &[0u8][..] } else { &pw[..1] });
        len >>= 1;
    }
    let mut digest = ctx.finalize();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 == 1 {
            c.update(pw);
        } else {
            c.update(digest);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(pw);
        }
        if i & 1 == 1 {
            c.update(digest);
        } else {
            c.update(pw);
        }
        digest = c.finalize();
    }
    let d = |i: usize| u32::from(digest[i]);
    let mut out = Vec::with_capacity(22);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push64(&mut out, (d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    push64(&mut out, d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt64_round_trip() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = String::from_utf8(encode64(&bytes)).unwrap();
            assert_eq!(decode64(&text).unwrap(), bytes);
        }
    }

    #[test]
    fn apr1_known_answer() {
        // htpasswd -nbm -> $apr1$pkRUDDzu$TbvvnwB7TU60ILke.MjM8/ for "secret"
        let (h, digest) = Md5Crypt::parse("$apr1$", "pkRUDDzu$TbvvnwB7TU60ILke.MjM8/").unwrap();
        assert_eq!(h.compute(b"secret"), digest);
        assert_ne!(h.compute(b"Secret"), digest);
    }
}
