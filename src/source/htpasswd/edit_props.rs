//! Property tests of `mailauthd user`'s edits against the loader: after an edit, only the
//! edited user reads differently and every other byte of the file is where it was. The
//! expected file and users come from a model written here from the file syntax (README,
//! "Sources"): lines split at `\n`, `#` comments, the first line of a name decides.

use std::path::Path;

use proptest::prelude::*;

use super::edit::{add_user, delete_user, set_password};
use super::table::parse_users;

/// The names the generated files use: few, so that duplicates are common.
const NAMES: [&str; 4] = ["alice", "bob", "carol", "d@x.org"];

/// What the model says a name's deciding line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deciding {
    /// A `{PLAIN}` password.
    Password(String),
    /// A line the loader skips (its hash does not parse).
    Broken,
}

/// One line of a generated file: its bytes without the terminator.
fn line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(NAMES.to_vec());
    let pw = "[a-z0-9 %]{1,8}";
    prop_oneof![
        4 => (name.clone(), pw).prop_map(|(n, p)| format!("{n}:{{PLAIN}}{p}")),
        1 => (name.clone(), pw).prop_map(|(n, p)| format!("{n}:{{PLAIN}}{p}:1000:1000::/home/{n}::quota=1")),
        1 => name.clone().prop_map(|n| format!("{n}:$2y$10$cut-short")),
        1 => name.prop_map(|n| format!("#{n}:{{PLAIN}}commented")),
        1 => Just(String::new()),
        1 => Just("a line without a colon".to_owned()),
    ]
}

/// A whole file: lines, CRLF or LF, with or without the final newline, maybe a BOM.
fn file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(line(), 0..12),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(lines, crlf, final_newline, bom)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = lines.join(nl);
            if final_newline && !lines.is_empty() {
                text.push_str(nl);
            }
            let mut bytes = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            bytes.extend_from_slice(text.as_bytes());
            bytes
        })
}

/// The lines of `text` with their terminators, and each one's user name (none for
/// comments, blank lines and lines without `:`).
fn model_lines(text: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    text.split_inclusive(|&b| b == b'\n')
        .enumerate()
        .map(|(i, whole)| {
            let mut content = whole.strip_suffix(b"\n").unwrap_or(whole);
            content = content.strip_suffix(b"\r").unwrap_or(content);
            if i == 0 {
                content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
            }
            let name = match content.iter().position(|&b| b == b':') {
                Some(colon) if !content.starts_with(b"#") => Some(&content[..colon]),
                _ => None,
            };
            (whole, name)
        })
        .collect()
}

/// Each name's deciding line, by the model.
fn model_users(text: &[u8]) -> Vec<(String, Deciding)> {
    let mut users: Vec<(String, Deciding)> = Vec::new();
    for (whole, name) in model_lines(text) {
        let Some(name) = name else { continue };
        let name = String::from_utf8_lossy(name).into_owned();
        if users.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let content = String::from_utf8_lossy(whole);
        let hash = content
            .trim_end_matches(['\r', '\n'])
            .split(':')
            .nth(1)
            .unwrap_or_default();
        let deciding = match hash.strip_prefix("{PLAIN}") {
            Some(pw) => Deciding::Password(pw.to_owned()),
            None => Deciding::Broken,
        };
        users.push((name, deciding));
    }
    users
}

/// Checks that the loader holds exactly what the model says for every name of `NAMES`
/// (and the extra `also`), and for nothing else.
fn assert_loads_as_model(text: &[u8], also: &str) -> Result<(), TestCaseError> {
    let (table, _) = parse_users(text, Path::new("users"));
    let model = model_users(text);
    for name in NAMES.iter().copied().chain([also]) {
        let expected = model.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone());
        let user = table.get(name.as_bytes());
        match expected {
            Some(Deciding::Password(pw)) => {
                let user = user.ok_or_else(|| TestCaseError::fail(format!("{name} missing")))?;
                prop_assert!(user.hash.verify(pw.as_bytes()), "{name}: {pw:?} does not verify");
                prop_assert!(!user.hash.verify(b"not-the-password"), "{name}");
            }
            Some(Deciding::Broken) | None => prop_assert!(user.is_none(), "{name} loaded from a later line"),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_loader_takes_the_first_line_of_each_name(text in file()) {
        assert_loads_as_model(&text, "nobody")?;
    }

    #[test]
    fn a_password_change_rewrites_that_hash_and_no_other_byte(text in file(), pick in any::<prop::sample::Index>()) {
        let model = model_users(&text);
        prop_assume!(!model.is_empty());
        let (user, _) = &model[pick.index(model.len())];
        let edited = set_password(&text, user, "{PLAIN}changed").expect("the user exists");
        // The model's deciding line for `user`, and where its hash starts and ends.
        let mut offset = 0;
        let mut span = None;
        for (whole, name) in model_lines(&text) {
            if span.is_none() && name == Some(user.as_bytes()) {
                let start = offset + whole.iter().position(|&b| b == b':').expect("a user line") + 1;
                let len = whole[start - offset..].iter().position(|&b| matches!(b, b':' | b'\r' | b'\n')).unwrap_or(whole.len() - (start - offset));
                span = Some(start..start + len);
            }
            offset += whole.len();
        }
        let span = span.expect("a deciding line");
        let expected = [&text[..span.start], b"{PLAIN}changed", &text[span.end..]].concat();
        prop_assert_eq!(&edited, &expected);
        assert_loads_as_model(&edited, "nobody")?;
        let (table, _) = parse_users(&edited, Path::new("users"));
        prop_assert!(table.get(user.as_bytes()).expect("edited user").hash.verify(b"changed"));
    }

    #[test]
    fn deleting_a_user_removes_its_lines_and_no_other_byte(text in file(), pick in any::<prop::sample::Index>()) {
        let model = model_users(&text);
        prop_assume!(!model.is_empty());
        let (user, _) = &model[pick.index(model.len())];
        let (edited, removed) = delete_user(&text, user).expect("the user exists");
        let lines = model_lines(&text);
        let expected: Vec<u8> = lines
            .iter()
            .filter(|(_, name)| *name != Some(user.as_bytes()))
            .flat_map(|(whole, _)| whole.iter().copied())
            .collect();
        prop_assert_eq!(removed, lines.len() - lines.iter().filter(|(_, n)| *n != Some(user.as_bytes())).count());
        // A BOM belongs to line 1: deleting that line takes it along.
        prop_assert_eq!(&edited, &expected);
        assert_loads_as_model(&edited, "nobody")?;
    }

    #[test]
    fn adding_a_user_appends_one_line_and_changes_no_other_byte(text in file()) {
        let edited = add_user(&text, "newcomer", "{PLAIN}hello").expect("a new name");
        // The new line ends like the file's first line.
        let crlf = text.iter().position(|&b| b == b'\n').is_some_and(|i| i > 0 && text[i - 1] == b'\r');
        let nl: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut expected = text.clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.extend_from_slice(nl);
        }
        expected.extend_from_slice(b"newcomer:{PLAIN}hello");
        expected.extend_from_slice(nl);
        prop_assert_eq!(&edited, &expected);
        assert_loads_as_model(&edited, "newcomer")?;
    }
}
