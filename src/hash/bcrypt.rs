//! bcrypt (`$2a$`, `$2b$`, `$2y$`): the EksBlowfish key schedule and the 64-fold encryption
//! of "OrpheanBeholderScryDoubt", as libxcrypt's crypt(3) computes them.
//!
//! Why our own code and not the `bcrypt` crate's:
//! - Speed. bcrypt is the common cold login (`htpasswd -B` and `mailauthd user add` write
//!   it), and nearly all its time is the 2^cost · 1042 Blowfish encryptions of the key
//!   schedule. The crate's Blowfish (`blowfish` 0.10) re-reads the key bytes with a wrap check
//!   per byte on every expansion and runs the 16 rounds through a generic block cipher; here
//!   the key and salt are turned into 32-bit words once, the rounds are unrolled with the
//!   P-array indices fixed and each P word XORed in off the rounds' critical path, as
//!   libxcrypt's crypt_blowfish does (see `Blowfish::encrypt`). The
//!   side-by-side bench (`cargo test --release --lib hash::bcrypt::tests::bench -- --ignored
//!   --nocapture`) times it against libxcrypt's `crypt_r` in one run.
//! - `$2a$` as libxcrypt has it. For `$2a$`, crypt_blowfish (and so libxcrypt, nginx's and
//!   Dovecot's crypt(3)) flips bit 16 of the first key word of the initial expansion when a
//!   password has a byte ≥ 0x80 that the old sign-extension bug (`$2x$`) would have expanded
//!   to the same key: such a password's `$2a$` hash differs from its `$2b$`/`$2y$` hash. The
//!   crate treats `$2a$` as `$2b$` and would refuse those `$2a$` hashes.
//!
//! It is differential-tested against the crate on random inputs and against hashes written by
//! `htpasswd -B`, `mkpasswd` and libxcrypt's crypt(3) (`tests.rs`). No `unsafe`: every S-box
//! index is a byte, which the compiler proves in bounds.

mod pi;
#[cfg(test)]
mod tests;

use zeroize::Zeroize as _;

/// The `$2?$` variant of a bcrypt hash; only `$2a$` computes differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variant {
    /// `$2a$`: with libxcrypt's sign-extension countermeasure.
    A,
    /// `$2b$` and `$2y$`: the same computation.
    B,
}

/// The Blowfish state while it is being keyed.
struct Blowfish {
    p: [u32; 18],
    s: [[u32; 256]; 4],
}

impl Drop for Blowfish {
    // The state is derived from the password; leave nothing of it in freed memory.
    fn drop(&mut self) {
        self.p.zeroize();
        self.s.iter_mut().for_each(|b| b.zeroize());
    }
}

impl Blowfish {
    /// Blowfish's F function.
    #[inline(always)]
    fn f(&self, x: u32) -> u32 {
        let a = self.s[0][(x >> 24) as usize];
        let b = self.s[1][((x >> 16) & 0xff) as usize];
        let c = self.s[2][((x >> 8) & 0xff) as usize];
        let d = self.s[3][(x & 0xff) as usize];
        (a.wrapping_add(b) ^ c).wrapping_add(d)
    }

    /// Encrypts one block (left, right) in 16 rounds.
    #[inline(always)]
    fn encrypt(&self, l: u32, r: u32) -> (u32, u32) {
        let p = &self.p;
        let mut l = l ^ p[0];
        // Each half keeps its next P word already applied (`rp`, `lp`), so a round's critical
        // path is the F function and one XOR. Written plainly, LLVM reassociates
        // `r ^ p ^ F(l)` into `r ^ (p ^ F(l))` and puts a second XOR on that path (8 % of
        // bcrypt's time here); `black_box` keeps the pre-XORed value as computed.
        let mut rp = r ^ p[1];
        macro_rules! two_rounds {
            ($i:expr) => {
                let r = rp ^ self.f(l);
                let lp = std::hint::black_box(l ^ p[$i + 1]);
                let f = self.f(r);
                rp = std::hint::black_box(r ^ p[$i + 2]);
                l = lp ^ f;
            };
        }
        two_rounds!(1);
        two_rounds!(3);
        two_rounds!(5);
        two_rounds!(7);
        two_rounds!(9);
        two_rounds!(11);
        two_rounds!(13);
        two_rounds!(15);
        // rp is the last right half with P[17] applied; l has had P[16].
        (rp, l)
    }

    /// Replaces P and then every S-box entry, pairwise, by the chained encryption of
    /// (l, r) ^ `mix(pair index)`: the body shared by both kinds of expansion.
    #[inline(always)]
    fn rekey(&mut self, mut mix: impl FnMut(usize) -> (u32, u32)) {
        let (mut l, mut r) = (0u32, 0u32);
        for i in 0..9 {
            let (ml, mr) = mix(i);
            (l, r) = self.encrypt(l ^ ml, r ^ mr);
            self.p[2 * i] = l;
            self.p[2 * i + 1] = r;
        }
        for b in 0..4 {
            for j in 0..128 {
                let (ml, mr) = mix(9 + b * 128 + j);
                (l, r) = self.encrypt(l ^ ml, r ^ mr);
                self.s[b][2 * j] = l;
                self.s[b][2 * j + 1] = r;
            }
        }
    }

    /// The plain expansion of the cost loop: P ^= `key`, then rekey from a zero block.
    #[inline(always)]
    fn expand(&mut self, key: &[u32; 18]) {
        for (p, k) in self.p.iter_mut().zip(key) {
            *p ^= k;
        }
        self.rekey(|_| (0, 0));
    }
}

/// The password as Blowfish key words: its bytes, a NUL terminator, then again from the start
/// until 72 bytes (18 big-endian words) are filled; bytes past 72 are ignored. Also returns
/// whether `$2a$`'s countermeasure applies (see the module notes).
fn key_words(password: &[u8]) -> ([u32; 18], bool) {
    let n = password.len().min(72);
    let mut cycle = zeroize::Zeroizing::new([0u8; 73]);
    cycle[..n].copy_from_slice(&password[..n]);
    // The C string ends with a NUL, which is part of the key unless 72 bytes come first.
    let len = (n + 1).min(72);
    let mut words = [0u32; 18];
    // What the sign-extending ($2x$) expansion would have differed by, and whether a byte
    // ≥ 0x80 stood where its sign extension reaches into the word (not its first byte).
    let (mut diff, mut high_inside) = (0u32, false);
    for (i, word) in words.iter_mut().enumerate() {
        let (mut good, mut bugged) = (0u32, 0u32);
        for j in 0..4 {
            let byte = cycle[(i * 4 + j) % len];
            good = (good << 8) | u32::from(byte);
            bugged = (bugged << 8) | (byte as i8 as i32 as u32);
            high_inside |= j > 0 && byte >= 0x80;
        }
        diff |= good ^ bugged;
        *word = good;
    }
    (words, high_inside && diff == 0)
}

/// The 23 bytes bcrypt encodes after the salt (the 24th is never written), for `password` at
/// `cost` (4..=31) with the raw 16-byte `salt`.
pub(super) fn bcrypt(variant: Variant, cost: u32, salt: &[u8; 16], password: &[u8]) -> [u8; 23] {
    let (mut key, countermeasure) = key_words(password);
    let salt4: [u32; 4] =
        std::array::from_fn(|i| u32::from_be_bytes([salt[4 * i], salt[4 * i + 1], salt[4 * i + 2], salt[4 * i + 3]]));
    let salt18: [u32; 18] = std::array::from_fn(|i| salt4[i % 4]);

    let mut bf = Blowfish { p: pi::P, s: pi::S };
    // The salted first expansion; the countermeasure touches only its first key word.
    for (p, k) in bf.p.iter_mut().zip(&key) {
        *p ^= k;
    }
    if variant == Variant::A && countermeasure {
        bf.p[0] ^= 0x1_0000;
    }
    bf.rekey(|pair| {
        if pair % 2 == 0 {
            (salt4[0], salt4[1])
        } else {
            (salt4[2], salt4[3])
        }
    });
    for _ in 0..1u64 << cost {
        bf.expand(&key);
        bf.expand(&salt18);
    }
    key.zeroize();

    // "OrpheanBeholderScryDoubt", as three blocks.
    let mut text = [
        0x4f72_7068,
        0x6561_6e42,
        0x6568_6f6c,
        0x6465_7253,
        0x6372_7944,
        0x6f75_6274u32,
    ];
    for block in text.chunks_exact_mut(2) {
        let (mut l, mut r) = (block[0], block[1]);
        for _ in 0..64 {
            (l, r) = bf.encrypt(l, r);
        }
        block[0] = l;
        block[1] = r;
    }
    let mut out = [0u8; 23];
    for (chunk, word) in out.chunks_mut(4).zip(text) {
        chunk.copy_from_slice(&word.to_be_bytes()[..chunk.len()]);
    }
    out
}
