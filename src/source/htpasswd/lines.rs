//! The one reader of the users-file line syntax, shared by the loader (`table.rs`) and the
//! editor (`edit.rs`) so that both agree on what a user line is: nginx's
//! `auth_basic_user_file` rules (`user:hash[:anything]`, `#` comments, blank lines, CRLF
//! tolerated), which are also the start of a Dovecot passwd-file line.

use std::ops::Range;

/// The UTF-8 byte-order mark some Windows editors put at the start of a text file.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line of a users file, as byte ranges into the file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLine {
    /// 1-based line number.
    pub number: usize,
    /// The whole line, with its terminator (`\n` or `\r\n`) when it has one.
    pub whole: Range<usize>,
    /// The line without its terminator (nor, on line 1, a UTF-8 byte-order mark).
    pub content: Range<usize>,
}

/// Every line of `text`, in order. A final line without `\n` is a line; the empty rest after
/// a final `\n` is not. A byte-order mark at the start of the text is not part of line 1's
/// content (it stays in its `whole`), so the first user's name is read without it.
pub(crate) fn raw_lines(text: &[u8]) -> impl Iterator<Item = RawLine> + '_ {
    let mut start = 0;
    let mut number = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        number += 1;
        let end = text[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| start + i + 1);
        let mut content_end = end;
        if text[start..content_end].ends_with(b"\n") {
            content_end -= 1;
        }
        if text[start..content_end].ends_with(b"\r") {
            content_end -= 1;
        }
        let content_start = if start == 0 && text[..content_end].starts_with(BOM) {
            BOM.len()
        } else {
            start
        };
        let line = RawLine {
            number,
            whole: start..end,
            content: content_start..content_end,
        };
        start = end;
        Some(line)
    })
}

/// Whether a line's content holds no user: blank, or a `#` comment.
pub(crate) fn is_blank_or_comment(content: &[u8]) -> bool {
    content.is_empty() || content.starts_with(b"#")
}

/// A user line split at its first two colons: the name, the stored hash, and the rest after
/// the second colon (an nginx comment or Dovecot's passwd-file fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserFields<'a> {
    /// The user name.
    pub name: &'a [u8],
    /// The stored hash.
    pub hash: &'a [u8],
    /// Everything after the second colon, when there is one.
    pub rest: Option<&'a [u8]>,
}

/// Splits a non-comment line's content; `None` when it has no `:` at all.
pub(crate) fn split_user_line(content: &[u8]) -> Option<UserFields<'_>> {
    let mut fields = content.splitn(3, |&b| b == b':');
    let name = fields.next()?;
    let hash = fields.next()?;
    Some(UserFields {
        name,
        hash,
        rest: fields.next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_terminators_and_number() {
        let text = b"a:x\r\n#c\n\nb:y";
        let lines: Vec<RawLine> = raw_lines(text).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(&text[lines[0].content.clone()], b"a:x");
        assert_eq!(&text[lines[0].whole.clone()], b"a:x\r\n");
        assert!(is_blank_or_comment(&text[lines[1].content.clone()]));
        assert!(is_blank_or_comment(&text[lines[2].content.clone()]));
        assert_eq!(lines[3].number, 4);
        assert_eq!(&text[lines[3].whole.clone()], b"b:y");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let text = b"\xEF\xBB\xBFalice:{PLAIN}a\n\xEF\xBB\xBFbob:{PLAIN}b\n";
        let lines: Vec<RawLine> = raw_lines(text).collect();
        assert_eq!(&text[lines[0].content.clone()], b"alice:{PLAIN}a");
        assert_eq!(lines[0].whole, 0..18);
        // Only at the start of the file: elsewhere it is part of the line.
        assert_eq!(&text[lines[1].content.clone()], b"\xEF\xBB\xBFbob:{PLAIN}b");
    }

    #[test]
    fn a_user_line_splits_at_its_first_two_colons() {
        let f = split_user_line(b"u:{PLAIN}p:1000:1000::/home/u::nologin").unwrap();
        assert_eq!((f.name, f.hash), (&b"u"[..], &b"{PLAIN}p"[..]));
        assert_eq!(f.rest, Some(&b"1000:1000::/home/u::nologin"[..]));
        assert_eq!(split_user_line(b"no colon"), None);
    }
}
