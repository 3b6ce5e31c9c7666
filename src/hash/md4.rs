//! MD4 (RFC 1320), for Dovecot's `{PLAIN-MD4}` and `md4` one-time passwords.
//!
//! Own code: no crate in the dependency set provides MD4, and the inputs are
//! short (a password, or an 8-byte OTP value), so one plain function will do.

const K2: u32 = 0x5a82_7999;
const K3: u32 = 0x6ed9_eba1;

/// The MD4 digest of `data`.
pub(super) fn md4(data: &[u8]) -> [u8; 16] {
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = zeroize::Zeroizing::new(data.to_vec());
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

fn compress(state: &mut [u32; 4], block: &[u8]) {
    let mut x = [0u32; 16];
    for (w, b) in x.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    let f = |x: u32, y: u32, z: u32| (x & y) | (!x & z);
    let g = |x: u32, y: u32, z: u32| (x & y) | (x & z) | (y & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let step = |v: u32, mix: u32, word: u32, s: u32| v.wrapping_add(mix).wrapping_add(word).rotate_left(s);
    // Round 1: words in order, shifts 3 7 11 19.
    for i in (0..16).step_by(4) {
        a = step(a, f(b, c, d), x[i], 3);
        d = step(d, f(a, b, c), x[i + 1], 7);
        c = step(c, f(d, a, b), x[i + 2], 11);
        b = step(b, f(c, d, a), x[i + 3], 19);
    }
    // Round 2: words by column, shifts 3 5 9 13.
    for i in 0..4 {
        a = step(a, g(b, c, d), x[i].wrapping_add(K2), 3);
        d = step(d, g(a, b, c), x[i + 4].wrapping_add(K2), 5);
        c = step(c, g(d, a, b), x[i + 8].wrapping_add(K2), 9);
        b = step(b, g(c, d, a), x[i + 12].wrapping_add(K2), 13);
    }
    // Round 3: words in bit-reversed order, shifts 3 9 11 15.
    for i in [0, 2, 1, 3] {
        a = step(a, h(b, c, d), x[i].wrapping_add(K3), 3);
        d = step(d, h(a, b, c), x[i + 8].wrapping_add(K3), 9);
        c = step(c, h(d, a, b), x[i + 4].wrapping_add(K3), 11);
        b = step(b, h(c, d, a), x[i + 12].wrapping_add(K3), 15);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::md4;

    /// RFC 1320 appendix A.5; each value also checked with
    /// `printf %s TEXT | openssl dgst -md4 -provider legacy -provider default`.
    #[test]
    fn rfc1320_test_suite() {
        let long = "1234567890".repeat(8);
        for (text, want) in [
            ("", "31d6cfe0d16ae931b73c59d7e0c089c0"),
            ("a", "bde52cb31de33e46245e05fbdbd6fb24"),
            ("abc", "a448017aaf21d8525fc10ae87aa6729d"),
            ("message digest", "d9130a8164549fe818874806e1c7014b"),
            ("abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "043f8582f241db351ce627e153e7f0e4",
            ),
            (long.as_str(), "e33b4ddc9c38f2199c3e7b164fcc0536"),
        ] {
            assert_eq!(hex::encode(md4(text.as_bytes())), want, "{text:?}");
        }
    }

    /// Lengths around the padding boundary (55, 56, 63, 64 bytes), against openssl.
    #[test]
    fn padding_boundaries() {
        for (len, want) in [
            (55, "c889c81dd86c4d2e025778944ea02881"),
            (56, "d5f9a9e9257077a5f08b0b92f348b0ad"),
            (63, "7ea3da77432d44c323671097d1348fc8"),
            (64, "52f5076fabd22680234a3fa9f9dc5732"),
        ] {
            assert_eq!(hex::encode(md4(&vec![b'a'; len])), want, "{len}");
        }
    }
}
