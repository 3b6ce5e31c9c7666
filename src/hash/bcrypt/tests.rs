//! bcrypt against the reference tools: libxcrypt's crypt(3) (the 8-bit and 72-byte edge
//! cases, with the values it printed), the hashes `htpasswd -B` and `mkpasswd` wrote
//! (`tests/fixtures/hashes.txt`), and the `bcrypt` crate on random inputs.

use base64::Engine as _;
use proptest::prelude::*;

use super::{Variant, bcrypt};

/// Splits `$2?$NN$salt22digest31` into its variant, cost, raw salt and 23 digest bytes.
fn split(stored: &str) -> (Variant, u32, [u8; 16], [u8; 23]) {
    let variant = match &stored[..4] {
        "$2a$" => Variant::A,
        "$2b$" | "$2y$" => Variant::B,
        other => panic!("not bcrypt: {other}"),
    };
    let cost = stored[4..6].parse().unwrap();
    let (mut salt, mut digest) = ([0u8; 16], [0u8; 23]);
    ::bcrypt::BASE_64.decode_slice(&stored[7..29], &mut salt).unwrap();
    ::bcrypt::BASE_64.decode_slice(&stored[29..], &mut digest).unwrap();
    (variant, cost, salt, digest)
}

fn check(stored: &str, password: &[u8]) {
    let (variant, cost, salt, digest) = split(stored);
    assert_eq!(bcrypt(variant, cost, &salt, password), digest, "{stored}");
}

// Printed by libxcrypt 4.4.33's crypt(3) (Debian libcrypt1) for these passwords and the
// setting `$2?$05$/OK.fbVrR/bpIqNJ5ianF.`.
const LIBXCRYPT: &[(&str, &[u8])] = &[
    // The countermeasure case: $2a$ differs from $2b$/$2y$.
    (
        "$2a$05$/OK.fbVrR/bpIqNJ5ianF.nqd1wy.pTMdcvrRWxyiGL2eMz.2a85.",
        b"\xff\xff\xa3",
    ),
    (
        "$2b$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
        b"\xff\xff\xa3",
    ),
    (
        "$2y$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
        b"\xff\xff\xa3",
    ),
    // A high byte whose sign extension would change the key: all three agree.
    ("$2a$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq", b"\xa3"),
    ("$2b$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq", b"\xa3"),
    ("$2y$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq", b"\xa3"),
    (
        "$2a$05$/OK.fbVrR/bpIqNJ5ianF.ZC1JEJ8Z4gPfpe1JOr/oyPXTWl9EFd.",
        b"\xff\xa334\xff\xff\xff\xa3345",
    ),
    (
        "$2b$05$/OK.fbVrR/bpIqNJ5ianF.o./n25XVfn6oAPaUvHe.Csk4zRfsYPi",
        b"\xff\xa334\xff\xff\xff\xa3345",
    ),
    (
        "$2a$05$/OK.fbVrR/bpIqNJ5ianF.6IflQkJytoRVc1yuaNtHfiuq.FRlSIS",
        b"\xa3ab",
    ),
    (
        "$2y$05$/OK.fbVrR/bpIqNJ5ianF.E737eUK7jOqGXQUPcu5iAm8pR815Cru",
        "ё".as_bytes(),
    ),
    (
        "$2a$05$/OK.fbVrR/bpIqNJ5ianF.E737eUK7jOqGXQUPcu5iAm8pR815Cru",
        "ё".as_bytes(),
    ),
];

#[test]
fn libxcrypt_eight_bit_cases() {
    for (stored, password) in LIBXCRYPT {
        check(stored, password);
    }
}

// Printed by libxcrypt 4.4.33's crypt(3) for 71, 72 and 73 bytes of "0123456789" repeated,
// setting `$2b$05$CCCCCCCCCCCCCCCCCCCCC.`: 71 bytes still key the NUL, 72 do not, the 73rd
// byte is ignored.
const LENGTHS: &[(&str, usize)] = &[
    ("$2b$05$CCCCCCCCCCCCCCCCCCCCC.5B4/p8O91LtaDgj9FaU1bYBHGkpNWLm", 71),
    ("$2b$05$CCCCCCCCCCCCCCCCCCCCC.XxrQqgBi/5Sxuq9soXzDtjIZ7w5pMfK", 72),
    ("$2b$05$CCCCCCCCCCCCCCCCCCCCC.XxrQqgBi/5Sxuq9soXzDtjIZ7w5pMfK", 73),
];

#[test]
fn the_72_byte_limit() {
    let digits: Vec<u8> = b"0123456789".iter().copied().cycle().take(80).collect();
    for (stored, n) in LENGTHS {
        check(stored, &digits[..*n]);
    }
    let (_, cost, salt, _) = split(LENGTHS[0].0);
    let at = |n: usize| bcrypt(Variant::B, cost, &salt, &digits[..n]);
    assert_ne!(at(71), at(72));
    assert_eq!(at(72), at(73));
}

#[test]
fn htpasswd_and_mkpasswd_fixtures() {
    let fixtures = include_str!("../../../tests/fixtures/hashes.txt");
    let mut n = 0;
    for line in fixtures.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(label), Some(pw), Some(stored)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let stored = stored.trim_start_matches("{CRYPT}").trim_start_matches("{BLF-CRYPT}");
        if !stored.starts_with("$2") || label.ends_with("-default") {
            continue;
        }
        check(stored, pw.as_bytes());
        let (variant, cost, salt, digest) = split(stored);
        assert_ne!(
            bcrypt(variant, cost, &salt, format!("{pw}x").as_bytes()),
            digest,
            "{label}"
        );
        n += 1;
    }
    assert!(n >= 8, "only {n} bcrypt fixtures");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any password (empty, 8-bit, past 72 bytes) and salt: the crate's digest, for $2b$, and
    /// for $2a$ whenever the countermeasure does not apply (never without a byte ≥ 0x80).
    #[test]
    fn same_as_the_bcrypt_crate(
        password in proptest::collection::vec(any::<u8>(), 0..90),
        salt in any::<[u8; 16]>(),
    ) {
        // The crate takes the C string with its NUL, at most 72 bytes, like crypt(3).
        let n = password.len().min(72);
        let mut c = password[..n].to_vec();
        if n < 72 {
            c.push(0);
        }
        let want = ::bcrypt::bcrypt(4, salt, &c);
        prop_assert_eq!(&bcrypt(Variant::B, 4, &salt, &password)[..], &want[..23]);
        if super::key_words(&password).1 {
            prop_assert!(password.iter().any(|&b| b >= 0x80));
        } else {
            prop_assert_eq!(&bcrypt(Variant::A, 4, &salt, &password)[..], &want[..23]);
        }
    }
}

/// Side by side in one run, interleaved: libxcrypt's `crypt_r` (through `bench/xcrypt.c`,
/// compiled here with `cc`) and this module's verify of the same `$2y$10$` hash, then the
/// `bcrypt` crate's. Prints per-hash medians and the ratios. Run it in release mode:
/// `cargo test --release --lib hash::bcrypt::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it by name in release mode on a quiet machine"]
fn bench() {
    use std::process::Command;
    use std::time::Instant;

    const STORED: &str = "$2y$10$TbyYEqmUalK5KjbYP8i0KuSeyzKWurIG/DtWNOuTf.C/wMEhbYFgW";
    const PASSWORD: &str = "correct horse";
    let rounds: usize = std::env::var("BCRYPT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let per_round = 3;

    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("xcrypt");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/xcrypt.c");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(src)
        .arg("-lcrypt")
        .status()
        .unwrap();
    assert!(ok.success(), "cc failed (needs libcrypt-dev)");

    let (variant, cost, salt, digest) = split(STORED);
    let mut c_string = PASSWORD.as_bytes().to_vec();
    c_string.push(0);
    let (mut ours, mut crate_, mut xcrypt) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let out = Command::new(&exe)
            .args([STORED, PASSWORD, &per_round.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "crypt_r did not verify the hash");
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            xcrypt.push(line.parse::<f64>().unwrap() / 1e6);
        }
        for _ in 0..per_round {
            let t = Instant::now();
            assert_eq!(bcrypt(variant, cost, &salt, PASSWORD.as_bytes()), digest);
            ours.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            assert_eq!(::bcrypt::bcrypt(cost, salt, &c_string)[..23], digest);
            crate_.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (x, o, c) = (median(&mut xcrypt), median(&mut ours), median(&mut crate_));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bcrypt-10, {} hashes each, interleaved; load {}",
        rounds * per_round,
        load.trim()
    );
    println!("libxcrypt crypt_r : {x:.2} ms per hash (median)");
    println!(
        "mailauthd         : {o:.2} ms per hash (median), {:.3}x libxcrypt's time",
        o / x
    );
    println!(
        "bcrypt crate      : {c:.2} ms per hash (median), {:.3}x libxcrypt's time",
        c / x
    );
}
