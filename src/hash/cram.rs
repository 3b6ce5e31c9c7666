//! Challenge-response checks that need the password (or an equivalent) on the
//! server: APOP (RFC 1939) and CRAM-MD5 (RFC 2195), from a stored cleartext
//! or from Dovecot's `{CRAM-MD5}`, which stores the HMAC-MD5 state after the
//! key block instead of the password.
//!
//! Resuming MD5 from a stored state needs the raw compression function;
//! `md5::block_api::compress` exposes it, so no MD5 core of our own.

use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Dovecot's `{CRAM-MD5}` value for `key`: the MD5 states after the outer
/// (`opad`) and inner (`ipad`) key blocks, each as four little-endian words.
pub(super) fn cram_states(key: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..16].copy_from_slice(&Md5::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut out = Vec::with_capacity(32);
    for pad in [0x5c, 0x36] {
        let mut state = IV;
        let padded = block.map(|b| b ^ pad);
        md5::block_api::compress(&mut state, &[padded]);
        out.extend(state.iter().flat_map(|w| w.to_le_bytes()));
    }
    block.fill(0);
    out
}

/// MD5 of `msg`, resumed from `state` (the 32 bytes' half) after one 64-byte block.
fn resume(state: &[u8], msg: &[u8]) -> [u8; 16] {
    let mut s = [0u32; 4];
    for (w, b) in s.iter_mut().zip(state.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let mut data = msg.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    let bits = ((64 + msg.len()) as u64).wrapping_mul(8);
    data.extend_from_slice(&bits.to_le_bytes());
    let blocks: Vec<[u8; 64]> = data.chunks_exact(64).map(|c| c.try_into().unwrap_or([0; 64])).collect();
    md5::block_api::compress(&mut s, &blocks);
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(s) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// HMAC-MD5 of `challenge` from stored states (as made by [`cram_states`]).
pub(super) fn cram_from_states(states: &[u8], challenge: &[u8]) -> [u8; 16] {
    let inner = resume(&states[16..32], challenge);
    resume(&states[..16], &inner)
}

/// HMAC-MD5 of `challenge` keyed with the cleartext.
pub(super) fn cram_from_cleartext(clear: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut mac = <hmac::Hmac<Md5> as KeyInit>::new_from_slice(clear)
        .unwrap_or_else(|_| <hmac::Hmac<Md5> as KeyInit>::new(&Default::default()));
    mac.update(challenge);
    mac.finalize().into_bytes().into()
}

/// APOP digest: MD5 of the greeting's timestamp followed by the cleartext.
pub(super) fn apop(clear: &[u8], salt: &[u8]) -> [u8; 16] {
    Md5::new().chain_update(salt).chain_update(clear).finalize().into()
}

/// Compares a client's hex digest (either case) with `expected`.
pub(super) fn hex_matches(expected: &[u8; 16], digest_hex: &[u8]) -> bool {
    let lower: Vec<u8> = digest_hex.iter().map(u8::to_ascii_lowercase).collect();
    hex::encode(expected).as_bytes().ct_eq(&lower).into()
}
