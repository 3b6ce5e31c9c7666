use super::*;

const FILE: &[u8] = b"# users\r\n\nalice:{PLAIN}a:1000:1000::/home/alice::nologin\nunknown line\nbob:{PLAIN}b # nginx comment\r\n#carol:{PLAIN}c\ncarol:{PLAIN}c\nalice:{PLAIN}old\ndave:{PLAIN}d";

fn s(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[test]
fn user_lines_skip_comments_blanks_and_lines_without_colon() {
    let names: Vec<&str> = user_lines(FILE).iter().map(|l| s(&FILE[l.name.clone()])).collect();
    assert_eq!(names, ["alice", "bob", "carol", "alice", "dave"]);
    let bob = find_user(FILE, "bob").unwrap();
    assert_eq!(bob.line, 5);
    assert_eq!(s(&FILE[bob.hash.clone()]), "{PLAIN}b # nginx comment");
    let alice = find_user(FILE, "alice").unwrap();
    assert_eq!(s(&FILE[alice.hash.clone()]), "{PLAIN}a");
    assert!(find_user(FILE, "#carol").is_none());
    let listed: Vec<&str> = list_users(FILE).iter().map(|l| s(&FILE[l.name.clone()])).collect();
    assert_eq!(listed, ["alice", "bob", "carol", "dave"]);
}

#[test]
fn passwd_changes_only_the_hash_of_the_first_line() {
    let out = set_password(FILE, "alice", "$2y$04$new").unwrap();
    let want = s(FILE).replacen("alice:{PLAIN}a:", "alice:$2y$04$new:", 1);
    assert_eq!(s(&out), want);
    // The hash runs to the end of the line, before a CRLF.
    let out = set_password(b"x:{PLAIN}1\r\ny:{PLAIN}2\r\n", "x", "H").unwrap();
    assert_eq!(out, b"x:H\r\ny:{PLAIN}2\r\n");
    let out = set_password(FILE, "dave", "H").unwrap();
    assert!(out.ends_with(b"\ndave:H"));
    assert!(matches!(set_password(FILE, "zed", "H"), Err(EditError::UserAbsent(_))));
}

#[test]
fn add_appends_with_a_newline_first_when_missing() {
    let out = add_user(FILE, "erin", "H").unwrap();
    assert_eq!(&out[..FILE.len()], FILE);
    // The file's first line ends in CRLF, so the new line does too.
    assert_eq!(&out[FILE.len()..], b"\r\nerin:H\r\n");
    assert_eq!(add_user(b"a:b\n", "c", "H").unwrap(), b"a:b\nc:H\n");
    assert_eq!(add_user(b"", "c", "H").unwrap(), b"c:H\n");
    assert!(matches!(add_user(FILE, "carol", "H"), Err(EditError::UserExists(_))));
    assert!(matches!(add_user(FILE, "a:b", "H"), Err(EditError::BadUserName { .. })));
    assert!(matches!(add_user(FILE, "#x", "H"), Err(EditError::BadUserName { .. })));
    assert!(matches!(
        add_user(FILE, "a\nb", "H"),
        Err(EditError::BadUserName { .. })
    ));
    assert!(matches!(add_user(FILE, "", "H"), Err(EditError::BadUserName { .. })));
}

#[test]
fn del_removes_every_line_of_the_user() {
    let (out, n) = delete_user(FILE, "alice").unwrap();
    assert_eq!(n, 2);
    let want = s(FILE)
        .replace("alice:{PLAIN}a:1000:1000::/home/alice::nologin\n", "")
        .replace("alice:{PLAIN}old\n", "");
    assert_eq!(s(&out), want);
    let (out, _) = delete_user(FILE, "dave").unwrap();
    assert!(out.ends_with(b"alice:{PLAIN}old\n"));
    let (out, _) = delete_user(FILE, "bob").unwrap();
    assert!(!s(&out).contains("nginx comment"));
    assert!(s(&out).contains("unknown line\n#carol"));
    assert!(matches!(delete_user(FILE, "zed"), Err(EditError::UserAbsent(_))));
}

#[test]
fn edit_file_replaces_atomically_and_keeps_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, FILE).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    // A leftover of a killed edit is removed by the next one.
    std::fs::write(dir.path().join(".users.mailauthd-abc123.tmp"), b"junk").unwrap();
    edit_file(&path, false, |t| Ok((set_password(t, "bob", "H")?, ()))).unwrap();
    let after = std::fs::metadata(&path).unwrap();
    assert_ne!(before.ino(), after.ino(), "the file is replaced, not rewritten");
    assert_eq!(after.mode() & 0o7777, 0o604);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["users"]);
    // A refused change leaves the file alone.
    let err = edit_file(&path, false, |t| Ok((add_user(t, "bob", "H")?, ()))).unwrap_err();
    assert!(err.is_refusal());
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), after.ino());
}

#[test]
fn edit_file_follows_symlinks_and_creates_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::write(&real, b"a:{PLAIN}x\n").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    edit_file(&link, false, |t| Ok((add_user(t, "b", "H")?, ()))).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"a:{PLAIN}x\nb:H\n");

    // A link to nothing is refused, and left as it is: no file at its target, still a link.
    let dangling = dir.path().join("dangling");
    let target = dir.path().join("missing");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let refused = edit_file(&dangling, true, |t| Ok((add_user(t, "b", "H")?, ()))).unwrap_err();
    assert!(matches!(refused, EditError::DanglingLink { .. }), "{refused:?}");
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    assert!(!target.exists());

    let new = dir.path().join("new");
    assert!(edit_file(&new, false, |t| Ok((add_user(t, "b", "H")?, ()))).is_err());
    edit_file(&new, true, |t| Ok((add_user(t, "b", "H")?, ()))).unwrap();
    assert_eq!(std::fs::read(&new).unwrap(), b"b:H\n");
}

#[test]
fn concurrent_edits_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, b"# head\n").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    let user = format!("u{i}-{j}");
                    edit_file(&path, false, |t| Ok((add_user(t, &user, "H")?, ()))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = std::fs::read(&path).unwrap();
    assert!(text.starts_with(b"# head\n"));
    assert_eq!(list_users(&text).len(), 80);
}

#[test]
fn fields_are_written_after_the_passwd_file_columns_and_listed_without_a_password() {
    let fields = ["proxy".to_owned(), "host=10.0.0.2".to_owned(), "pass=secret".to_owned()];
    let out = add_user_with_fields(b"a:b\n", "c", "H", &fields).unwrap();
    assert_eq!(out, b"a:b\nc:H::::::proxy host=10.0.0.2 pass=secret\n");
    // passwd keeps them.
    let out = set_password(&out, "c", "H2").unwrap();
    assert_eq!(out, b"a:b\nc:H2::::::proxy host=10.0.0.2 pass=secret\n");
    let line = find_user(&out, "c").unwrap();
    assert_eq!(routing_fields(&out, &line), ["proxy", "host=10.0.0.2", "pass=<set>"]);
    assert!(routing_fields(&out, &find_user(&out, "a").unwrap()).is_empty());
    for bad in ["host=a b", "", "=x", "k\u{7}=v", "#x"] {
        let err = add_user_with_fields(b"", "c", "H", &[bad.to_owned()]).unwrap_err();
        assert!(matches!(err, EditError::BadField { .. }), "{bad}");
    }
}

/// Found by the `users_file` fuzz target: deleting the first user brought a line that
/// starts with a byte order mark to the start of the file, where the loader takes the mark
/// as the file's own, so `\u{feff}red` became `red`.
#[test]
fn a_deletion_never_moves_a_stray_byte_order_mark_to_the_start() {
    let stray = b"local:{PLAIN}a\n\xEF\xBB\xBFred:{PLAIN}b\n";
    assert!(matches!(delete_user(stray, "local"), Err(EditError::BomWouldLead(_))));
    let message = delete_user(stray, "local").unwrap_err().to_string();
    assert!(message.contains("byte order mark (U+FEFF)"), "{message}");
    // Any other deletion in that file is fine, and so is one that keeps a first line.
    let (out, _) = delete_user(stray, "\u{feff}red").unwrap();
    assert_eq!(out, b"local:{PLAIN}a\n");
    let (out, _) = delete_user(b"a:{PLAIN}a\nlocal:{PLAIN}a\n\xEF\xBB\xBFred:{PLAIN}b\n", "local").unwrap();
    assert_eq!(out, b"a:{PLAIN}a\n\xEF\xBB\xBFred:{PLAIN}b\n");
    // With the file's own mark first, whatever the deletion does, `\u{feff}red` keeps its name.
    let owned = b"\xEF\xBB\xBFlocal:{PLAIN}a\n\xEF\xBB\xBFred:{PLAIN}b\n";
    if let Ok((out, _)) = delete_user(owned, "local") {
        let names: Vec<&str> = user_lines(&out).iter().map(|l| s(&out[l.name.clone()])).collect();
        assert_eq!(names, ["\u{feff}red"]);
    }
}
