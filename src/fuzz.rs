//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (which
//! `cargo fuzz` passes). Each takes the fuzzer's bytes, runs one parser on them, and panics
//! when an invariant breaks: the panic is the finding. FUZZING.md lists the targets and what
//! each checks.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::auth_http::{self, Accept, Refusal, RefuseKind, Verdict};
use crate::config::{Config, ConfigOrigin};
use crate::hash::{StoredHash, Weight};
use crate::login::AuthMethod;
use crate::nginx_reply::{self, NginxOutcome};
use crate::source::htpasswd::{self, edit};

/// The fixture file of hashes made by the reference tools (`tests/fixtures/README.md`).
const FIXTURES: &str = include_str!("../tests/fixtures/hashes.txt");

/// The auth_http request parser, then the replies built from what it decided: each must
/// read back in nginx's model as what was meant, under 1024 bytes.
pub fn auth_request(data: &[u8]) {
    // As the listener does: the block up to the blank line, if there is one.
    if let Some(len) = auth_http::find_header_end(data, &mut 0) {
        let _ = auth_http::parse_request(&data[..len]);
    }
    let (protocol, verdicts) = match auth_http::parse_request(data) {
        Ok(req) => {
            let server = req.client_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let port = u16::try_from(req.login_attempt).ok().filter(|p| *p > 0).unwrap_or(143);
            let kind = match req.method {
                AuthMethod::Plain => RefuseKind::InvalidCredentials,
                AuthMethod::Apop | AuthMethod::CramMd5 => RefuseKind::Banned,
                AuthMethod::External => RefuseKind::Temporary,
                AuthMethod::XOAuth2 | AuthMethod::OAuthBearer => RefuseKind::PrivacyRequired,
                AuthMethod::None => RefuseKind::RelayDenied,
            };
            let accept = Accept {
                server,
                port,
                // The client's own login echoed back as the backend's name.
                user: Some(req.user.clone()),
                // The client's own bytes echoed back: the hardest value a reply carries.
                pass: Some(Zeroizing::new(req.pass.to_vec())),
            };
            let refusal = Refusal {
                kind,
                wait: Some(req.login_attempt),
            };
            (
                Some(req.protocol),
                vec![Verdict::Accept(accept), Verdict::Refuse(refusal)],
            )
        }
        Err(_) => (
            None,
            vec![Verdict::Refuse(Refusal {
                kind: RefuseKind::BadRequest,
                wait: None,
            })],
        ),
    };
    for verdict in &verdicts {
        let reply = auth_http::render_reply(verdict, protocol);
        let outcome = nginx_reply::read(&reply);
        match (verdict, &outcome) {
            (Verdict::Accept(a), NginxOutcome::Success { server, port, pass }) => {
                assert_eq!((a.server, a.port), (*server, *port), "backend changed on the way");
                if let Some(read) = pass {
                    assert_eq!(
                        Some(read.as_slice()),
                        a.pass.as_ref().map(|p| p.as_slice()),
                        "Auth-Pass changed"
                    );
                }
            }
            (Verdict::Refuse(r), NginxOutcome::Error { wait, .. }) => {
                assert_eq!(*wait, r.wait.filter(|w| *w >= 1), "Auth-Wait changed");
            }
            _ => panic!("{verdict:?} read by nginx as {outcome:?}"),
        }
    }
}

/// The %-decoder against a naive one written from protocol.md §1.5.
pub fn percent_decode(data: &[u8]) {
    let naive = || -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = data.iter();
        while let Some(&b) = bytes.next() {
            if b == b'%' {
                let hi = char::from(*bytes.next()?).to_digit(16)?;
                let lo = char::from(*bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            } else {
                out.push(b);
            }
        }
        Some(out)
    };
    assert_eq!(auth_http::percent_decode(data), naive());
}

/// A stored-hash string of any scheme: parsing never panics, and a parsed hash answers its
/// own questions. Only cheap schemes are verified here (a fuzzed bcrypt cost of 16 takes
/// seconds, which the parser allows on purpose); `hash_fixtures` verifies the slow ones.
pub fn stored_hash(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hash) = StoredHash::parse(text) else {
        return;
    };
    let _ = (hash.scheme_name(), hash.cost_label(), format!("{hash:?}"));
    assert!(
        !format!("{hash:?}").contains(text) || text.len() < 4,
        "Debug shows the stored hash"
    );
    if hash.weight() == Weight::Cheap {
        let candidate = text.as_bytes();
        let _ = hash.verify(candidate);
        let _ = hash.verify_apop(b"<1.2@host>", candidate);
        let _ = hash.verify_cram_md5(b"<1.2@host>", candidate);
        let dummy = hash.dummy_like();
        assert_eq!(dummy.cost_label(), hash.cost_label());
        if let Some(clear) = hash.cleartext() {
            assert!(
                hash.verify(&clear.to_vec()),
                "a stored cleartext does not verify itself"
            );
            assert!(!dummy.verify(&clear.to_vec()), "the dummy accepts the real password");
        }
    }
}

/// Differential: every fixture made by a reference tool (htpasswd, openssl, mkpasswd,
/// doveadm, passlib) against a candidate password built from the input. The tool's answer is
/// known: the fixture's cleartext verifies, a candidate that differs from it within what
/// the scheme reads (DES: 8 bytes, bcrypt: 72) does not, and a candidate with a NUL is
/// accepted only if it is the cleartext as a C string.
pub fn hash_fixtures(data: &[u8]) {
    let fixtures: Vec<(&str, &str, &str)> = FIXTURES
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        // The tools' default costs take up to a second per verification.
        .filter(|(label, ..)| !label.ends_with("-default"))
        .collect();
    let [pick, mode, rest @ ..] = data else {
        return;
    };
    let (label, clear, stored) = fixtures[usize::from(*pick) % fixtures.len()];
    let Ok(hash) = StoredHash::parse(stored) else {
        assert!(
            label.starts_with("refuse-"),
            "{label}: a reference tool's hash does not parse"
        );
        return;
    };
    assert!(!label.starts_with("refuse-"), "{label}: parsed, must be refused");
    let clear = clear.as_bytes();
    let candidate: Vec<u8> = match mode % 4 {
        0 => clear.to_vec(),
        1 => [clear, rest].concat(),
        2 => [rest, clear].concat(),
        _ => rest.to_vec(),
    };
    let reads = match hash.scheme_name() {
        "des-crypt" => 8,
        "bcrypt" => 72,
        "plain-trunc" => plain_trunc_kept(stored),
        _ => usize::MAX,
    };
    // DES keeps only 7 bits of each byte: a high-bit candidate has no simple model.
    if hash.scheme_name() == "des-crypt" && candidate.iter().take(8).any(|b| *b >= 0x80) {
        return;
    }
    let got = hash.verify(&candidate);
    if candidate.contains(&0) {
        // For crypt(3), htpasswd, openssl and doveadm a password ends at its first NUL.
        // mailauthd hashes every byte, so it may refuse what they accept, never the reverse.
        // (It accepts trailing NULs where the scheme keys an HMAC with the password, PBKDF2,
        // scrypt, {CRAM-MD5}, as passlib does: HMAC pads a short key with zeros, RFC 2104 §2.)
        let c_string = |p: &[u8]| -> Vec<u8> {
            let p = p.split(|&b| b == 0).next().unwrap_or_default();
            p[..p.len().min(reads)].to_vec()
        };
        assert!(
            !got || c_string(&candidate) == c_string(clear),
            "{label}: accepted a password the reference tool refuses"
        );
    } else {
        let expected = candidate[..candidate.len().min(reads)] == clear[..clear.len().min(reads)];
        assert_eq!(got, expected, "{label}: verify disagrees with the reference tool");
    }
}

/// How many leading bytes of a password Dovecot compares for a `{PLAIN-TRUNC}N-text` entry:
/// N when the text is exactly N bytes (a cut password, so `doveadm pw -t
/// '{PLAIN-TRUNC}13-correct horse' -p 'correct horseXYZ'` verifies), else all of them.
fn plain_trunc_kept(stored: &str) -> usize {
    use base64::Engine as _;
    let Some((prefix, body)) = stored.split_once('}') else {
        return usize::MAX;
    };
    let raw = if prefix.to_ascii_lowercase().ends_with(".b64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let Some(dash) = raw.iter().position(|&b| b == b'-') else {
        return usize::MAX;
    };
    let n = std::str::from_utf8(&raw[..dash])
        .ok()
        .and_then(|n| n.parse::<usize>().ok());
    match n {
        Some(n) if raw.len() - dash - 1 == n => n,
        _ => usize::MAX,
    }
}

/// The users-file loader on any bytes, and `mailauthd user`'s edits on the result: the first
/// line of each user decides, and an edit changes that user's hash and no other byte or user.
///
/// Files with an expensive hash are skipped: loading computes one dummy hash per cost found
/// in the file (seconds for a bcrypt cost of 16 or an argon2 default), by design; the
/// `stored_hash` and `hash_fixtures` targets cover those schemes.
pub fn users_file(data: &[u8]) {
    let expensive = edit::list_users(data).iter().any(|l| {
        let Some(hash) = std::str::from_utf8(&data[l.hash.clone()])
            .ok()
            .and_then(|h| StoredHash::parse(h).ok())
        else {
            return false;
        };
        match hash.weight() {
            Weight::Cheap => false,
            Weight::MemoryHard => {
                // e.g. argon2id-m65536-t3-p4, scrypt-ln16-r8-p1, yescrypt-j9T
                let label = hash.cost_label();
                let field = |key: &str| {
                    label
                        .split('-')
                        .find_map(|p| p.strip_prefix(key)?.parse::<u32>().ok())
                        .unwrap_or(u32::MAX)
                };
                if label.starts_with("argon2") {
                    field("m") > 8192 || field("t") > 4
                } else if label.starts_with("scrypt") {
                    field("ln") > 12 || field("r") > 8 || field("p") > 2
                } else {
                    label != "yescrypt-j75"
                }
            }
            Weight::Slow => {
                let label = hash.cost_label();
                let cost = label.rsplit('-').find_map(|part| part.parse::<u32>().ok());
                match cost {
                    None => false, // md5-crypt, apr1: ~100 µs
                    Some(c) if label.starts_with("bcrypt") => c > 6,
                    Some(rounds) => rounds > 20_000,
                }
            }
        }
    });
    if expensive {
        return;
    }
    let deciding = edit::list_users(data);
    let names: Vec<Vec<u8>> = deciding.iter().map(|l| data[l.name.clone()].to_vec()).collect();
    let (users, before, problems) = htpasswd::fuzz_lookup(data, &names);
    let lines = data.split(|&b| b == b'\n').count();
    for p in &problems {
        assert!((1..=lines).contains(&p.line), "problem on line {} of {lines}", p.line);
    }
    assert!(users <= deciding.len(), "more users than names");
    let fingerprints = |hashes: &[Option<Arc<StoredHash>>]| -> Vec<Option<[u8; 32]>> {
        hashes.iter().map(|h| h.as_ref().map(|h| h.fingerprint())).collect()
    };
    let before_fp = fingerprints(&before);
    for (line, got) in deciding.iter().zip(&before_fp) {
        let name = &data[line.name.clone()];
        let expected = std::str::from_utf8(&data[line.hash.clone()])
            .ok()
            .filter(|_| !name.is_empty())
            .and_then(|h| StoredHash::parse(h).ok())
            .map(|h| h.fingerprint());
        assert_eq!(
            *got,
            expected,
            "user {:?}: the table does not hold what line {} says",
            String::from_utf8_lossy(name),
            line.line
        );
    }

    // One edit, on the user the first byte picks.
    let Some(&pick) = data.first() else { return };
    let Some(target) = deciding.get(usize::from(pick) % deciding.len().max(1)) else {
        return;
    };
    let Ok(user) = std::str::from_utf8(&data[target.name.clone()]) else {
        return;
    };
    if user.is_empty() {
        return;
    }
    let new_hash = "{PLAIN}fuzz-new-password";
    let Ok(edited) = edit::set_password(data, user, new_hash) else {
        panic!("set_password refused a user list_users found");
    };
    assert_eq!(
        &edited[..target.hash.start],
        &data[..target.hash.start],
        "bytes before the hash changed"
    );
    assert_eq!(
        &edited[target.hash.start + new_hash.len()..],
        &data[target.hash.end..],
        "bytes after the hash changed"
    );
    let (_, after, _) = htpasswd::fuzz_lookup(&edited, &names);
    let after_fp = fingerprints(&after);
    for (i, name) in names.iter().enumerate() {
        if name.as_slice() == user.as_bytes() {
            let hash = after[i].as_ref().expect("the edited user is in the table");
            assert!(hash.verify(b"fuzz-new-password"), "the new password does not verify");
        } else {
            assert_eq!(
                after_fp[i],
                before_fp[i],
                "user {:?} changed",
                String::from_utf8_lossy(name)
            );
        }
    }

    if let Ok((deleted, _)) = edit::delete_user(data, user) {
        let (_, after, _) = htpasswd::fuzz_lookup(&deleted, &names);
        let after_fp = fingerprints(&after);
        for (i, name) in names.iter().enumerate() {
            if name.as_slice() == user.as_bytes() {
                assert!(after[i].is_none(), "a deleted user is still there");
            } else {
                assert_eq!(
                    after_fp[i],
                    before_fp[i],
                    "deleting {user:?} changed {:?}",
                    String::from_utf8_lossy(name)
                );
            }
        }
    }
}

/// The TOML config: any text gives a config or a list of problems, never a panic, and the
/// problems never repeat a value that could be a secret from the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = ConfigOrigin::File("/fuzz/mailauthd.toml".into());
    match Config::from_toml(text, origin, Path::new("/fuzz")) {
        Ok(config) => {
            let _ = config.users_files();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An http-basic upstream's answer: a status (first two bytes) and header lines (the rest,
/// `Name: value` per line), mapped with and without routing headers; and the routing
/// header values alone.
pub fn http_basic_answer(data: &[u8]) {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    crate::source::fuzz_http_basic_answer(u16::from_be_bytes([*hi, *lo]), rest);
}

/// An LDAP entry's attribute values and a login's filter and DN escapes: see
/// `source::ldap::fuzz_entry` and FUZZING.md.
pub fn ldap_entry(data: &[u8]) {
    crate::source::fuzz_ldap_entry(data);
}
