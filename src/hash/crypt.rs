//! crypt(3) strings as found in htpasswd files and `/etc/shadow`: DES,
//! `$5$`/`$6$` sha-crypt, bcrypt `$2a$ $2b$ $2y$`, yescrypt `$y$` and libxcrypt
//! scrypt `$7$` (md5-crypt lives in [`super::md5crypt`]).
//!
//! Each scheme is parsed into its parameters plus the digest text; verifying
//! recomputes the digest text and the caller compares it in constant time.

use base64::Engine as _;

use super::md5crypt::{decode64, encode64, is_crypt64, push64};

// Hashes that take seconds per login are refused at load: each attempt on such a
// user would hold a verification thread that long, an easy way to starve every login.
/// The highest bcrypt cost accepted (16: about 4 s on one core).
pub(super) const MAX_BCRYPT_COST: u32 = 16;
/// The most sha-crypt rounds accepted (`$6$` 5000 rounds: about 1.4 ms).
pub(super) const MAX_SHA_CRYPT_ROUNDS: u32 = 5_000_000;

/// Refuse memory-hard parameters above this, so one bad line in a users file
/// cannot make every login allocate gigabytes.
pub(super) const MAX_MEMORY: u64 = 1 << 30;

/// A parsed crypt(3) hash, without its digest.
#[derive(Clone)]
pub(super) enum Crypt {
    /// Traditional 13-char DES crypt; two salt characters.
    Des { salt: String },
    /// `$5$` (`sha512 == false`) or `$6$`.
    Sha { sha512: bool, rounds: u32, salt: Vec<u8> },
    /// bcrypt with its variant, cost and raw 16-byte salt.
    Bcrypt {
        variant: super::bcrypt::Variant,
        cost: u32,
        salt: [u8; 16],
    },
    /// yescrypt `$y$`; `text` is the encoded parameter field, e.g. `j9T`.
    Yescrypt {
        params: yescrypt::Params,
        text: String,
        salt: Vec<u8>,
    },
    /// libxcrypt scrypt `$7$`.
    Scrypt {
        params: scrypt::Params,
        r: u32,
        p: u32,
        salt: Vec<u8>,
    },
}

type Parsed = Result<(Crypt, Vec<u8>), String>;

impl Crypt {
    /// Parses a DES hash: 2 salt characters, 11 digest characters.
    pub(super) fn parse_des(s: &str) -> Parsed {
        if s.len() != 13 || !is_crypt64(s) {
            return Err("not 13 crypt base64 characters".into());
        }
        Ok((
            Crypt::Des {
                salt: s[..2].to_owned(),
            },
            s.as_bytes()[2..].to_vec(),
        ))
    }

    /// Parses what follows `$5$` or `$6$`: `[rounds=N$]salt$digest`.
    pub(super) fn parse_sha(sha512: bool, rest: &str) -> Parsed {
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            Some(r) => {
                let (n, rest) = r.split_once('$').ok_or("missing '$' after rounds")?;
                let n: u32 = n.parse().map_err(|_| "rounds is not a number")?;
                (n, rest)
            }
            None => (5000, rest),
        };
        // glibc clamps rounds into this range and writes the clamped value, so a
        // hash outside it can never have come from a real crypt(3).
        if !(1000..=999_999_999).contains(&rounds) {
            return Err("rounds outside 1000..=999999999".into());
        }
        if rounds > MAX_SHA_CRYPT_ROUNDS {
            return Err(format!(
                "{rounds} rounds would take seconds per login; at most {MAX_SHA_CRYPT_ROUNDS}"
            ));
        }
        let (salt, digest) = rest.split_once('$').ok_or("missing '$' after the salt")?;
        if salt.len() > 16 || salt.contains('$') {
            return Err("salt longer than 16 characters".into());
        }
        let want = if sha512 { 86 } else { 43 };
        if digest.len() != want || !is_crypt64(digest) {
            return Err(format!("digest is not {want} crypt base64 characters"));
        }
        let salt = salt.as_bytes().to_vec();
        Ok((Crypt::Sha { sha512, rounds, salt }, digest.as_bytes().to_vec()))
    }

    /// Parses what follows `$2a$`/`$2b$`/`$2y$`: `NN$` + 22 salt + 31 digest chars.
    pub(super) fn parse_bcrypt(variant: super::bcrypt::Variant, rest: &str) -> Parsed {
        let (cost, rest) = rest.split_once('$').ok_or("missing '$' after the cost")?;
        let cost: u32 = match cost.len() {
            2 => cost.parse().map_err(|_| "cost is not a number")?,
            _ => return Err("cost is not two digits".into()),
        };
        if !(4..=31).contains(&cost) {
            return Err(format!("cost {cost} outside 4..=31"));
        }
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "cost {cost} would take seconds per login; at most {MAX_BCRYPT_COST}"
            ));
        }
        if rest.len() != 53 || !rest.is_ascii() {
            return Err("salt and digest are not 53 characters".into());
        }
        let mut salt = [0u8; 16];
        let mut digest = [0u8; 23];
        let bad = |_| "bad bcrypt base64".to_owned();
        bcrypt::BASE_64.decode_slice(&rest[..22], &mut salt).map_err(bad)?;
        bcrypt::BASE_64.decode_slice(&rest[22..], &mut digest).map_err(bad)?;
        Ok((Crypt::Bcrypt { variant, cost, salt }, digest.to_vec()))
    }

    /// Parses what follows `$y$`: `params$salt$digest`.
    pub(super) fn parse_yescrypt(rest: &str) -> Parsed {
        let mut parts = rest.split('$');
        let (Some(text), Some(salt), Some(digest), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected params$salt$digest".into());
        };
        let params: yescrypt::Params = text.parse().map_err(|_| "bad parameter field")?;
        let salt = decode64(salt).ok_or("bad salt encoding")?;
        if digest.len() != 43 || !is_crypt64(digest) {
            return Err("digest is not 43 crypt base64 characters".into());
        }
        let text = text.to_owned();
        Ok((Crypt::Yescrypt { params, text, salt }, digest.as_bytes().to_vec()))
    }

    /// Parses what follows `$7$`: `N` (1 char) `r` `p` (5 chars each) salt `$` digest.
    pub(super) fn parse_scrypt(rest: &str) -> Parsed {
        let (head, digest) = rest.split_once('$').ok_or("missing '$' after the salt")?;
        if head.len() < 11 || !head.is_ascii() || !is_crypt64(&head[..11]) {
            return Err("parameter field is not 11 crypt base64 characters".into());
        }
        let num = |s: &str| decode64_u32(s.as_bytes());
        let log_n = num(&head[..1]);
        let (r, p) = (num(&head[1..6]), num(&head[6..11]));
        check_scrypt_cost(log_n, r, p)?;
        let params = scrypt::Params::new(log_n as u8, r, p).map_err(|_| "invalid scrypt parameters")?;
        if digest.len() != 43 || !is_crypt64(digest) {
            return Err("digest is not 43 crypt base64 characters".into());
        }
        let salt = head.as_bytes()[11..].to_vec();
        Ok((Crypt::Scrypt { params, r, p, salt }, digest.as_bytes().to_vec()))
    }

    /// Short scheme name.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Crypt::Des { .. } => "des-crypt",
            Crypt::Sha { sha512: false, .. } => "sha256-crypt",
            Crypt::Sha { sha512: true, .. } => "sha512-crypt",
            Crypt::Bcrypt { .. } => "bcrypt",
            Crypt::Yescrypt { .. } => "yescrypt",
            Crypt::Scrypt { .. } => "scrypt",
        }
    }

    /// Scheme name with the parameters that decide the cost.
    pub(super) fn cost_label(&self) -> String {
        match self {
            Crypt::Des { .. } => self.name().to_owned(),
            Crypt::Sha { rounds, .. } => format!("{}-{rounds}", self.name()),
            Crypt::Bcrypt { cost, .. } => format!("bcrypt-{cost}"),
            Crypt::Yescrypt { text, .. } => format!("yescrypt-{text}"),
            Crypt::Scrypt { params, r, p, .. } => format!("scrypt-ln{}-r{r}-p{p}", params.log_n()),
        }
    }

    /// The digest text (bcrypt: raw 23 bytes) for `pw`; empty if the
    /// algorithm refuses the input, which then never matches.
    pub(super) fn compute(&self, pw: &[u8]) -> Vec<u8> {
        match self {
            #[allow(deprecated, reason = "verifying existing DES hashes is the point")]
            Crypt::Des { salt } => match pwhash::unix_crypt::hash_with(salt, pw) {
                Ok(h) => h.as_bytes()[2..].to_vec(),
                Err(_) => Vec::new(),
            },
            Crypt::Sha { sha512, rounds, salt } => {
                let Ok(params) = sha_crypt::Params::new(*rounds) else {
                    return Vec::new();
                };
                if *sha512 {
                    encode_sha(&sha_crypt::sha512_crypt(pw, salt, params), 63, 22)
                } else {
                    encode_sha(&sha_crypt::sha256_crypt(pw, salt, params), 30, 21)
                }
            }
            Crypt::Bcrypt { variant, cost, salt } => super::bcrypt::bcrypt(*variant, *cost, salt, pw).to_vec(),
            Crypt::Yescrypt { params, salt, .. } => {
                let mut out = [0u8; 32];
                match yescrypt::yescrypt(pw, salt, params, &mut out) {
                    Ok(()) => encode64(&out),
                    Err(_) => Vec::new(),
                }
            }
            Crypt::Scrypt { params, salt, .. } => {
                let mut out = [0u8; 32];
                match scrypt::scrypt(pw, salt, params, &mut out) {
                    Ok(()) => encode64(&out),
                    Err(_) => Vec::new(),
                }
            }
        }
    }
}

/// Refuses scrypt parameters needing more than [`MAX_MEMORY`] (128·r·(N + p) bytes: the
/// table and the p blocks) or more mixing than 4 × [`MAX_MEMORY`] bytes (128·r·N·p). Checked
/// here in full width: the scrypt crate multiplies r·p in `u32`, which a line of a users file
/// must not overflow (a panic, or a wrapped check and a huge allocation).
pub(super) fn check_scrypt_cost(log_n: u32, r: u32, p: u32) -> Result<(), String> {
    if log_n == 0 || log_n >= 40 {
        return Err("scrypt N is not a power of two from 2 to 2^39".into());
    }
    let (n, r, p) = (1u128 << log_n, u128::from(r), u128::from(p));
    if 128 * r * (n + p) > u128::from(MAX_MEMORY) || 128 * r * n * p > 4 * u128::from(MAX_MEMORY) {
        return Err("scrypt parameters need more than 1 GiB or seconds per login".into());
    }
    Ok(())
}

fn decode64_u32(s: &[u8]) -> u32 {
    s.iter()
        .enumerate()
        .fold(0, |w, (i, &c)| w | super::md5crypt::atoi64(c).unwrap_or(0) << (6 * i))
}

/// Drepper's sha-crypt output order: byte groups `(f, f+n/3, f+2n/3) mod n`
/// with `f` stepping by `step`, then the leftover byte(s).
pub(super) fn encode_sha(d: &[u8], n: usize, step: usize) -> Vec<u8> {
    let third = n / 3;
    let mut out = Vec::with_capacity(86);
    for i in 0..third {
        let f = (i * step) % n;
        let w = (u32::from(d[f]) << 16) | (u32::from(d[(f + third) % n]) << 8) | u32::from(d[(f + 2 * third) % n]);
        push64(&mut out, w, 4);
    }
    if n == 63 {
        push64(&mut out, u32::from(d[63]), 2);
    } else {
        push64(&mut out, (u32::from(d[31]) << 8) | u32::from(d[30]), 3);
    }
    out
}
