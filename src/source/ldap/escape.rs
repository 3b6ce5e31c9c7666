//! Filling a login into the `filter`, `disabled_filter` and `user_dn` templates: `%u` (the
//! login), `%n` (its local part, before the last `@`), `%d` (its domain, after it; empty
//! without one) and `%%`. Each value is escaped for where it goes, so that no login can
//! change the shape of a filter (RFC 4515) or of a DN (RFC 4514).

/// Which escaping a template needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A search filter: RFC 4515 assertion values.
    Filter,
    /// A distinguished name: RFC 4514 attribute values.
    Dn,
}

/// Fills `login` into `template`. `None` when the login is not UTF-8 (LDAP strings are, so
/// such a login names no entry).
pub(super) fn expand(template: &str, login: &[u8], target: Target) -> Option<String> {
    let login = std::str::from_utf8(login).ok()?;
    let (local, domain) = match login.rfind('@') {
        Some(at) => (&login[..at], &login[at + 1..]),
        None => (login, ""),
    };
    let escape = match target {
        Target::Filter => escape_filter_value,
        Target::Dn => escape_dn_value,
    };
    let mut out = String::with_capacity(template.len() + login.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&escape(login)),
            Some('n') => out.push_str(&escape(local)),
            Some('d') => out.push_str(&escape(domain)),
            Some('%') => out.push('%'),
            // The config check refuses any other `%`; kept literally should one get here.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    Some(out)
}

/// RFC 4515 section 3: `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
/// Other control characters are escaped too; they are legal but unreadable in logs.
pub(super) fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0'..='\x1f' | '\x7f' => {
                out.push_str(&format!("\\{:02x}", c as u32));
            }
            _ => out.push(c),
        }
    }
    out
}

/// RFC 4514 section 2.4: `"`, `+`, `,`, `;`, `<`, `>`, `\` get a backslash; so do a leading
/// space or `#` and a trailing space; NUL and other control characters become `\XX`. `=`
/// is escaped too (RFC 4514 allows it), which some servers require.
pub(super) fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_escape_the_rfc_4515_characters() {
        // RFC 4515 section 4 examples: "(cn=*\2A*)" holds a literal asterisk, "\5c" a backslash.
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("al*"), "al\\2a");
        assert_eq!(escape_filter_value("alice)(uid=*"), "alice\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\0b"), "a\\00b");
        assert_eq!(escape_filter_value("C:\\MyFile"), "C:\\5cMyFile");
        assert_eq!(escape_filter_value("Lučić"), "Lučić");
    }

    #[test]
    fn dn_values_escape_the_rfc_4514_characters() {
        // RFC 4514 section 4 examples: "CN=James \"Jim\" Smith\, III" and "CN=Before\0DAfter".
        assert_eq!(
            escape_dn_value("James \"Jim\" Smith, III"),
            "James \\\"Jim\\\" Smith\\, III"
        );
        assert_eq!(escape_dn_value("Before\rAfter"), "Before\\0DAfter");
        assert_eq!(escape_dn_value(" lead"), "\\ lead");
        assert_eq!(escape_dn_value("trail "), "trail\\ ");
        assert_eq!(escape_dn_value("#hash"), "\\#hash");
        assert_eq!(escape_dn_value("a#b"), "a#b");
        assert_eq!(escape_dn_value("x,ou=admins"), "x\\,ou\\=admins");
        assert_eq!(escape_dn_value("a+b;c<d>e\\f"), "a\\+b\\;c\\<d\\>e\\\\f");
        assert_eq!(escape_dn_value("n\0"), "n\\00");
    }

    #[test]
    fn templates_take_the_login_its_local_part_and_domain() {
        let f = "(|(uid=%u)(&(uid=%n)(domain=%d)))";
        assert_eq!(
            expand(f, b"al*@ex.org", Target::Filter).as_deref(),
            Some("(|(uid=al\\2a@ex.org)(&(uid=al\\2a)(domain=ex.org)))")
        );
        assert_eq!(
            expand(f, b"alice", Target::Filter).as_deref(),
            Some("(|(uid=alice)(&(uid=alice)(domain=)))")
        );
        // The last `@` splits, as Dovecot's %n / %d do.
        assert_eq!(
            expand("uid=%n,dc=%d", b"a@b@c", Target::Dn).as_deref(),
            Some("uid=a@b,dc=c")
        );
        assert_eq!(expand("(x=100%%)", b"a", Target::Filter).as_deref(), Some("(x=100%)"));
        assert_eq!(expand("(uid=%u)", b"\xff", Target::Filter), None);
    }
}
