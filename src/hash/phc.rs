//! PHC-style strings (`$argon2id$…`, `$argon2i$…`, `$scrypt$…`,
//! `$pbkdf2-sha256$…`), passlib's modular-crypt PBKDF2 (`$pbkdf2-sha256$29000$…`)
//! and Dovecot's `{PBKDF2}$1$salt$rounds$hex` (PBKDF2-HMAC-SHA1).

use base64::Engine as _;

use super::crypt::{MAX_MEMORY, check_scrypt_cost};
use super::digest::B64;

/// The most PBKDF2 rounds accepted (600000, the current PHC advice for SHA-256, takes
/// about 50 ms).
pub(super) const MAX_PBKDF2_ROUNDS: u32 = 10_000_000;

/// A parsed PHC-family hash, without its digest.
#[derive(Clone)]
pub(super) enum Phc {
    /// Argon2i or Argon2id.
    Argon2 {
        id: bool,
        version: argon2::Version,
        m: u32,
        t: u32,
        p: u32,
        salt: Vec<u8>,
    },
    /// scrypt in PHC form.
    Scrypt {
        params: scrypt::Params,
        r: u32,
        p: u32,
        salt: Vec<u8>,
    },
    /// PBKDF2 over HMAC with this digest.
    Pbkdf2 { alg: Prf, rounds: u32, salt: Vec<u8> },
}

/// The PBKDF2 pseudo-random function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Prf {
    /// HMAC-SHA1 (Dovecot, passlib `$pbkdf2$`).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

type Parsed = Result<(Phc, Vec<u8>), String>;

/// Splits `a=1,b=2` into pairs of name and number.
fn params(field: &str) -> Result<Vec<(&str, u32)>, String> {
    field
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or("parameter without '='")?;
            let v = v.parse().map_err(|_| format!("parameter {k} is not a number"))?;
            Ok((k, v))
        })
        .collect()
}

fn b64(field: &str, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(field).map_err(|_| format!("{what} is not valid base64"))
}

impl Phc {
    /// Parses `$argon2id$…` / `$argon2i$…` after the identifier's `$`.
    pub(super) fn parse_argon2(id: bool, rest: &str) -> Parsed {
        let mut parts: Vec<&str> = rest.split('$').collect();
        let version = match parts.first().and_then(|v| v.strip_prefix("v=")) {
            Some("19") => argon2::Version::V0x13,
            Some("16") => argon2::Version::V0x10,
            Some(_) => return Err("unsupported argon2 version".into()),
            None => {
                parts.insert(0, "");
                argon2::Version::V0x10
            }
        };
        let [_, fields, salt, digest] = parts[..] else {
            return Err("expected [v=N$]m=..,t=..,p=..$salt$digest".into());
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for (k, v) in params(fields)? {
            match k {
                "m" => m = Some(v),
                "t" => t = Some(v),
                "p" => p = Some(v),
                _ => return Err(format!("unsupported argon2 parameter {k}")),
            }
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err("argon2 needs m, t and p".into());
        };
        if u64::from(m) * 1024 > MAX_MEMORY {
            return Err("argon2 memory above 1 GiB".into());
        }
        let digest = b64(digest, "digest")?;
        argon2::Params::new(m, t, p, Some(digest.len())).map_err(|e| format!("argon2: {e}"))?;
        let salt = b64(salt, "salt")?;
        if salt.len() < argon2::MIN_SALT_LEN {
            return Err("argon2 salt shorter than 8 bytes".into());
        }
        Ok((
            Phc::Argon2 {
                id,
                version,
                m,
                t,
                p,
                salt,
            },
            digest,
        ))
    }

    /// Parses `$scrypt$ln=N,r=R,p=P$salt$digest` after `$scrypt$`.
    pub(super) fn parse_scrypt(rest: &str) -> Parsed {
        let [fields, salt, digest] = rest.split('$').collect::<Vec<_>>()[..] else {
            return Err("expected ln=..,r=..,p=..$salt$digest".into());
        };
        let (mut ln, mut r, mut p) = (None, None, None);
        for (k, v) in params(fields)? {
            match k {
                "ln" => ln = Some(v),
                "r" => r = Some(v),
                "p" => p = Some(v),
                _ => return Err(format!("unsupported scrypt parameter {k}")),
            }
        }
        let (Some(ln), Some(r), Some(p)) = (ln, r, p) else {
            return Err("scrypt needs ln, r and p".into());
        };
        check_scrypt_cost(ln, r, p)?;
        let digest = b64(digest, "digest")?;
        let params = scrypt::Params::new_with_output_len(ln as u8, r, p, digest.len())
            .map_err(|_| "invalid scrypt parameters")?;
        Ok((
            Phc::Scrypt {
                params,
                r,
                p,
                salt: b64(salt, "salt")?,
            },
            digest,
        ))
    }

    /// Parses passlib's `ROUNDS$salt$digest` (adapted base64: `.` for `+`) or
    /// the PHC `i=ROUNDS[,l=LEN]$salt$digest`, after `$pbkdf2[-shaN]$`.
    pub(super) fn parse_pbkdf2(alg: Prf, rest: &str) -> Parsed {
        let [fields, salt, digest] = rest.split('$').collect::<Vec<_>>()[..] else {
            return Err("expected rounds$salt$digest".into());
        };
        let (rounds, salt, digest) = if fields.starts_with("i=") {
            let mut rounds = None;
            let mut len = None;
            for (k, v) in params(fields)? {
                match k {
                    "i" => rounds = Some(v),
                    "l" => len = Some(v as usize),
                    _ => return Err(format!("unsupported pbkdf2 parameter {k}")),
                }
            }
            let digest = b64(digest, "digest")?;
            if len.is_some_and(|l| l != digest.len()) {
                return Err("digest length differs from l=".into());
            }
            (rounds.ok_or("pbkdf2 needs i")?, b64(salt, "salt")?, digest)
        } else {
            let ab64 = |s: &str, what| b64(&s.replace('.', "+"), what);
            let rounds = fields.parse().map_err(|_| "rounds is not a number")?;
            (rounds, ab64(salt, "salt")?, ab64(digest, "digest")?)
        };
        Self::pbkdf2(alg, rounds, salt, digest)
    }

    /// Parses Dovecot's `{PBKDF2}` body: `$1$salt$rounds$hexdigest`; the salt
    /// text itself (not decoded) is the PBKDF2 salt.
    pub(super) fn parse_dovecot_pbkdf2(s: &str) -> Parsed {
        let [_, salt, rounds, digest] = s
            .strip_prefix("$1$")
            .map(|r| {
                let mut v = vec![""];
                v.extend(r.split('$'));
                v
            })
            .unwrap_or_default()[..]
        else {
            return Err("expected $1$salt$rounds$hexdigest".into());
        };
        let rounds = rounds.parse().map_err(|_| "rounds is not a number")?;
        let digest = hex::decode(digest).map_err(|_| "digest is not hex")?;
        Self::pbkdf2(Prf::Sha1, rounds, salt.as_bytes().to_vec(), digest)
    }

    fn pbkdf2(alg: Prf, rounds: u32, salt: Vec<u8>, digest: Vec<u8>) -> Parsed {
        if rounds == 0 {
            return Err("zero rounds".into());
        }
        // As for bcrypt and sha-crypt: a hash taking seconds per login is refused at load.
        if rounds > MAX_PBKDF2_ROUNDS {
            return Err(format!(
                "{rounds} rounds would take seconds per login; at most {MAX_PBKDF2_ROUNDS}"
            ));
        }
        if digest.is_empty() || digest.len() > 64 {
            return Err("digest length outside 1..=64 bytes".into());
        }
        Ok((Phc::Pbkdf2 { alg, rounds, salt }, digest))
    }

    /// Short scheme name.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phc::Argon2 { id: true, .. } => "argon2id",
            Phc::Argon2 { id: false, .. } => "argon2i",
            Phc::Scrypt { .. } => "scrypt",
            Phc::Pbkdf2 { alg: Prf::Sha1, .. } => "pbkdf2-sha1",
            Phc::Pbkdf2 { alg: Prf::Sha256, .. } => "pbkdf2-sha256",
            Phc::Pbkdf2 { alg: Prf::Sha512, .. } => "pbkdf2-sha512",
        }
    }

    /// Scheme name with the parameters that decide the cost; `out_len` is the
    /// stored digest length (PBKDF2 runs once per block of output).
    pub(super) fn cost_label(&self, out_len: usize) -> String {
        match self {
            Phc::Argon2 { m, t, p, .. } => format!("{}-m{m}-t{t}-p{p}", self.name()),
            Phc::Scrypt { params, r, p, .. } => format!("scrypt-ln{}-r{r}-p{p}", params.log_n()),
            Phc::Pbkdf2 { alg, rounds, .. } => {
                let block = match alg {
                    Prf::Sha1 => 20,
                    Prf::Sha256 => 32,
                    Prf::Sha512 => 64,
                };
                format!("{}-{rounds}-x{}", self.name(), out_len.div_ceil(block))
            }
        }
    }

    /// The raw digest of `pw`, `out_len` bytes; empty if the algorithm
    /// refuses the input, which then never matches.
    pub(super) fn compute(&self, pw: &[u8], out_len: usize) -> Vec<u8> {
        let mut out = vec![0u8; out_len];
        let ok = match self {
            Phc::Argon2 {
                id,
                version,
                m,
                t,
                p,
                salt,
            } => {
                let alg = if *id {
                    argon2::Algorithm::Argon2id
                } else {
                    argon2::Algorithm::Argon2i
                };
                argon2::Params::new(*m, *t, *p, Some(out_len))
                    .map(|params| argon2::Argon2::new(alg, *version, params))
                    .and_then(|a| a.hash_password_into(pw, salt, &mut out))
                    .is_ok()
            }
            Phc::Scrypt { params, salt, .. } => scrypt::scrypt(pw, salt, params, &mut out).is_ok(),
            Phc::Pbkdf2 { alg, rounds, salt } => {
                match alg {
                    Prf::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pw, salt, *rounds, &mut out),
                    Prf::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pw, salt, *rounds, &mut out),
                    Prf::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(pw, salt, *rounds, &mut out),
                }
                true
            }
        };
        if ok { out } else { Vec::new() }
    }
}
