//! Tests over the fixture file made by the real tools (see
//! `tests/fixtures/README.md`), the RFC examples, refusals and a fuzz of `parse`.

use super::*;

const FIXTURES: &str = include_str!("../../tests/fixtures/hashes.txt");

/// `(label, cleartext, stored)` for every fixture line.
fn fixtures() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    FIXTURES.lines().filter(|l| !l.is_empty()).map(|l| {
        let mut f = l.splitn(3, '\t');
        (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
    })
}

fn check_fixture(label: &str, pw: &str, stored: &str) {
    if label.starts_with("refuse-") {
        assert!(
            matches!(StoredHash::parse(stored), Err(HashError::UnknownScheme(_))),
            "{label}: must be refused"
        );
        return;
    }
    let h = StoredHash::parse(stored).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(h.verify(pw.as_bytes()), "{label}: right password refused");
    // Prepended, not appended: DES reads only the first 8 bytes.
    assert!(
        !h.verify(format!("x{pw}").as_bytes()),
        "{label}: wrong password accepted"
    );
    assert!(!h.verify(b""), "{label}: empty password accepted");
    let dummy = h.dummy_like();
    assert_eq!(dummy.cost_label(), h.cost_label(), "{label}");
    assert_eq!(dummy.weight(), h.weight(), "{label}");
    assert!(!dummy.verify(pw.as_bytes()), "{label}: dummy accepts the password");
    assert!(!format!("{h:?}").contains(stored), "{label}: Debug shows the hash");
    // The CRAM-MD5 state must answer like HMAC-MD5 keyed with the cleartext.
    if h.scheme_name() == "cram-md5" {
        let clear = StoredHash::parse(&format!("{{PLAIN}}{pw}")).unwrap();
        let mac = cram::cram_from_cleartext(pw.as_bytes(), b"<1.2@host>");
        let mac = hex::encode(mac);
        assert!(clear.verify_cram_md5(b"<1.2@host>", mac.as_bytes()), "{label}");
        assert!(h.verify_cram_md5(b"<1.2@host>", mac.as_bytes()), "{label}: cram state");
        assert!(!dummy.verify_cram_md5(b"<1.2@host>", mac.as_bytes()), "{label}");
    }
}

#[test]
fn every_fixture_verifies() {
    let mut n = 0;
    for (label, pw, stored) in fixtures().filter(|(l, ..)| !l.ends_with("-default")) {
        check_fixture(label, pw, stored);
        n += 1;
    }
    assert!(n > 90, "only {n} fixtures");
}

/// The default-cost memory-hard fixtures take seconds each in a debug build.
#[test]
#[ignore = "slow in debug builds; run with --release -- --ignored"]
fn every_default_cost_fixture_verifies() {
    for (label, pw, stored) in fixtures().filter(|(l, ..)| l.ends_with("-default")) {
        check_fixture(label, pw, stored);
    }
}

#[test]
fn labels_and_weights() {
    let cases = [
        ("{PLAIN}x", "plain", "plain", Weight::Cheap),
        (
            "$2y$05$KbYDxzdXdwci/kcNN3lHEOOKrHkn1BC9EdXGelWkEC7bHSu8ggLb.",
            "bcrypt",
            "bcrypt-5",
            Weight::Slow,
        ),
        ("$apr1$pkRUDDzu$TbvvnwB7TU60ILke.MjM8/", "apr1", "apr1", Weight::Slow),
        ("ZhAYMH0XOhAKo", "des-crypt", "des-crypt", Weight::Cheap),
        (
            "$y$j75$igLx4clbJ7M3LOAgO9fFE/$VfJThtEJs09oNyLoMLisiDNon8ZBSVeu6RY5do3Ksy9",
            "yescrypt",
            "yescrypt-j75",
            Weight::MemoryHard,
        ),
        (
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$3xrmWzJoIkBVTlQhXvxcZw$N3BJPfIxcI+MUQT/i4OZAWKT3osskKA",
            "argon2id",
            "argon2id-m65536-t3-p1",
            Weight::MemoryHard,
        ),
        (
            "$5$rounds=1000$Q5KDIlE37EBH84qN$p0erOnFRGmqMq9nIJX6WuSvSTuA2o.C4vuCfXh4ojo6",
            "sha256-crypt",
            "sha256-crypt-1000",
            Weight::Slow,
        ),
        (
            "$7$BU..../....MY92a9ymVppaIYfWwh6xi/$HrbpGJk5wzViQmBXBL3ATMqJp7bnjhLdD2YMLL7HQm8",
            "scrypt",
            "scrypt-ln13-r32-p1",
            Weight::MemoryHard,
        ),
        ("{SSHA}vuQYri/SHtl8RiQ1N0/Dn+ZzeshTyd7g", "ssha", "ssha", Weight::Cheap),
    ];
    for (stored, name, label, weight) in cases {
        let h = StoredHash::parse(stored).unwrap();
        assert_eq!(
            (h.scheme_name(), h.cost_label().as_str(), h.weight()),
            (name, label, weight)
        );
    }
}

#[test]
fn unknown_and_unprefixed_are_refused() {
    for (stored, prefix) in [
        ("{FOO}bar", "{FOO}"),
        ("{SHA256.zip}abc", "{SHA256.zip}"),
        ("$9$abc$def", "$9$"),
        ("correct horse", "unprefixed"),
        ("secret", "unprefixed"),
        ("5en6G6MezRroT3XKqkdPOmY/BfQ=", "unprefixed"),
        ("", "unprefixed"),
        ("{nobrace", "{"),
    ] {
        match StoredHash::parse(stored) {
            Err(HashError::UnknownScheme(p)) => assert_eq!(p, prefix, "{stored}"),
            other => panic!("{stored}: {other:?}"),
        }
    }
}

#[test]
fn malformed_is_an_error_without_the_hash() {
    for stored in [
        "$2y$99$KbYDxzdXdwci/kcNN3lHEOOKrHkn1BC9EdXGelWkEC7bHSu8ggLb.",
        "$2y$05$KbYDxzdXdwci/kcNN3lHEOOKrHkn1BC9EdXGelWkEC7bHSu8ggLb",
        "{SHA}not!base64",
        "{SHA}c2hvcnQ=",
        "{SSHA}",
        "{CRAM-MD5}abcd",
        "$apr1$toolongsalt$TbvvnwB7TU60ILke.MjM8/",
        "$6$rounds=10$salt$x",
        "$6$salt$tooshort",
        "$y$!!!$salt$hash",
        "$7$BU..../....MY92a9ymVppaIYfWwh6xi/$short",
        "$7$zU..../....salt$HrbpGJk5wzViQmBXBL3ATMqJp7bnjhLdD2YMLL7HQm8",
        "$argon2id$v=19$m=4194304,t=3,p=1$3xrmWzJoIkBVTlQhXvxcZw$N3BJPfIxcI+MUQT/i4OZAWKT3osskKA",
        "$argon2id$v=19$m=65536,t=3$3xrmWzJoIkBVTlQhXvxcZw$N3BJPfIxcI+MUQT/i4OZAWKT3osskKA",
        "$pbkdf2-sha256$0$mFPK2buXspaydm5tDcG41w$.wlv/QX9xHdR1uEeSikrSCoXS9oQ.8Eo09roTDnXgVE",
        "{SHA512-CRYPT}$5$7g6QlH2iWd6Etfuy$lmB4hN4CkenejETG7DLBTaFCyt8xKfN6YYlvzM8tk0C",
        "{BLF-CRYPT.b64}$2y$05$nImjpymHYhNeqIjQ70UjKuaQduczjGtS.ji39hK.YXjSM78ct0mZq",
        "{PBKDF2}$1$salt$many$c58419f2",
        // Valid, but seconds per login: refused at load.
        "$2y$17$KbYDxzdXdwci/kcNN3lHEOOKrHkn1BC9EdXGelWkEC7bHSu8ggLb.",
        "$6$rounds=6000000$salt$x",
        "$pbkdf2-sha256$20000000$mFPK2buXspaydm5tDcG41w$.wlv/QX9xHdR1uEeSikrSCoXS9oQ.8Eo09roTDnXgVE",
    ] {
        match StoredHash::parse(stored) {
            Err(e @ HashError::Malformed { .. }) => {
                let msg = e.to_string();
                let tail = stored.rsplit('$').next().unwrap_or(stored);
                assert!(tail.len() < 8 || !msg.contains(tail), "{msg}");
            }
            other => panic!("{stored}: {other:?}"),
        }
    }
}

#[test]
fn apop_and_cram_rfc_examples() {
    // RFC 1939 section 7 and RFC 2195 section 2.
    let pop = StoredHash::parse("{PLAIN}tanstaaf").unwrap();
    let ts = b"<1896.697170952@dbc.mtview.ca.us>";
    assert!(pop.verify_apop(ts, b"c4c9334bac560ecc979e58001b3e22fb"));
    assert!(pop.verify_apop(ts, b"C4C9334BAC560ECC979E58001B3E22FB"));
    assert!(!pop.verify_apop(ts, b"c4c9334bac560ecc979e58001b3e22fc"));
    assert!(!pop.verify_apop(ts, b"c4c9334b"));
    let ch = b"<1896.697170952@postoffice.reston.mci.net>";
    let want = b"b913a602c7eda7a495b4e6e7334d3890";
    let clear = StoredHash::parse("{CLEAR}tanstaaftanstaaf").unwrap();
    assert!(clear.verify_cram_md5(ch, want));
    // doveadm pw -s CRAM-MD5 -p tanstaaftanstaaf
    let dove = "{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b";
    let dove = StoredHash::parse(dove).unwrap();
    assert!(dove.verify_cram_md5(ch, want));
    assert!(!dove.verify_cram_md5(b"<other@host>", want));
    assert!(!dove.verify_apop(ch, want), "no cleartext for APOP");
    let bcrypt = StoredHash::parse("$2y$05$KbYDxzdXdwci/kcNN3lHEOOKrHkn1BC9EdXGelWkEC7bHSu8ggLb.");
    assert!(!bcrypt.unwrap().verify_cram_md5(ch, want));
}

#[test]
fn cleartext_encodings() {
    let b64 = StoredHash::parse("{plain.B64}Y29ycmVjdCBob3JzZQ==").unwrap();
    assert_eq!(b64.cleartext(), Some(&b"correct horse"[..]));
    let hex = StoredHash::parse("{CLEAR.hex}636f7272656374").unwrap();
    assert_eq!(hex.cleartext(), Some(&b"correct"[..]));
    assert!(StoredHash::parse("{SHA}x").is_err());
    assert_eq!(
        StoredHash::parse("$1$nb1otMBn$jD9yQyLzemy52q8mfRhIe.")
            .unwrap()
            .cleartext(),
        None
    );
    let dummy = b64.dummy_like();
    assert_ne!(dummy.cleartext(), b64.cleartext());
    assert_ne!(dummy.fingerprint(), b64.fingerprint());
}

#[test]
fn new_hashes_round_trip() {
    for (scheme, label) in [
        ("bcrypt-4", "bcrypt-4"),
        ("sha512-crypt", "sha512-crypt-100000"),
        ("yescrypt", "yescrypt-j9T"),
        ("argon2id", "argon2id-m65536-t3-p1"),
    ] {
        let scheme: NewScheme = scheme.parse().unwrap();
        let stored = hash_password(&scheme, "pässwörd ✓".as_bytes()).unwrap();
        let h = StoredHash::parse(&stored).unwrap();
        assert_eq!(h.cost_label(), label);
        assert!(h.verify("pässwörd ✓".as_bytes()));
        assert!(!h.verify(b"password"));
    }
    let bcrypt = hash_password(&NewScheme::Bcrypt { cost: 4 }, b"x").unwrap();
    assert!(bcrypt.starts_with("$2y$04$"));
    assert_eq!("bcrypt".parse::<NewScheme>().unwrap(), NewScheme::Bcrypt { cost: 12 });
    assert!("bcrypt-99".parse::<NewScheme>().is_err());
    assert!(
        "bcrypt-17".parse::<NewScheme>().is_err(),
        "a cost the daemon would refuse"
    );
    assert!("md5".parse::<NewScheme>().is_err());
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC*") {
        let _ = StoredHash::parse(&s);
    }

    #[test]
    fn parse_never_panics_after_a_known_prefix(
        prefix in proptest::sample::select(vec![
            "$1$", "$apr1$", "$5$", "$6$rounds=", "$2y$", "$2b$05$", "$y$", "$7$", "$argon2id$",
            "$argon2i$v=19$", "$scrypt$", "$pbkdf2-sha256$", "$pbkdf2-sha512$i=", "{SHA}",
            "{SSHA512}", "{CRAM-MD5}", "{PLAIN.b64}", "{PBKDF2}$1$", "{CRYPT}", "{MD5}",
            "{SHA256.hex}", "{ARGON2ID}$argon2id$v=19$",
        ]),
        tail in "[./0-9A-Za-z$=,+]{0,90}",
    ) {
        let _ = StoredHash::parse(&format!("{prefix}{tail}"));
    }
}

/// Prints the verify time per fixture, for the table in
/// `tests/fixtures/README.md`: `cargo test --release hash::tests::verify_time -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check; run in --release"]
fn verify_time() {
    let mut seen = std::collections::BTreeSet::new();
    for (label, pw, stored) in fixtures().filter(|(l, ..)| !l.starts_with("refuse-")) {
        let h = StoredHash::parse(stored).unwrap();
        if !seen.insert(h.cost_label()) {
            continue;
        }
        let runs = match h.weight() {
            Weight::Cheap => 2000,
            _ => 5,
        };
        let start = std::time::Instant::now();
        for _ in 0..runs {
            assert!(h.verify(pw.as_bytes()));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
        let prefix: String = stored.chars().take(stored.find('$').map_or(12, |_| 14)).collect();
        println!("| {} | `{prefix}` | {label} | {us:.1} µs |", h.cost_label());
    }
}

/// Found by the `stored_hash` fuzz target (FUZZING.md): `$7$` with r = 32 and
/// p = 528220161 made the scrypt crate's `r * p` (in u32) overflow: a panic with overflow
/// checks, a wrapped check and an allocation of 128·r·p bytes without. Both forms of scrypt
/// hash are refused as malformed before the crate sees them, with r·p in full width.
#[test]
fn scrypt_parameters_that_overflow_or_would_stall_a_login_are_refused() {
    let refused = |stored: &str| {
        let e = StoredHash::parse(stored).err();
        assert!(
            matches!(e, Some(HashError::Malformed { scheme: "scrypt", .. })),
            "{stored}: {e:?}"
        );
    };
    let digest43 = "SQpFzZft5LrgDPWt3a1VZ/tbsEzAGQF6JPKcN69U7ac";
    // The fuzzer's input, as found (log2 N = 14, r = 32, p = 528220161).
    refused(&format!(
        "$7$CU..../..TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT..SQpFzZft5LrgDPWt3a1VZ/${digest43}"
    ));
    // r·p = 2^32: wraps to 0 in u32.
    let digest = "TyrpjT6gNJMxHEm6tiLxgt9DCT5Dxk2rHkOb5ZeUlNI";
    refused(&format!("$scrypt$ln=1,r=65536,p=65536$c2FsdHNhbHQ${digest}"));
    // Within the crate's bound, but p blocks of 128·r bytes each: 64 GiB.
    refused(&format!("$scrypt$ln=1,r=1,p=536870911$c2FsdHNhbHQ${digest}"));
    // 512 MiB of table, mixed 4096 times: hours per login.
    refused(&format!("$scrypt$ln=22,r=1,p=4096$c2FsdHNhbHQ${digest}"));
    // passlib's default cost (ln=16, r=8, p=1) still parses.
    assert!(StoredHash::parse(&format!("$scrypt$ln=16,r=8,p=1$c2FsdHNhbHQ${digest}")).is_ok());
}
