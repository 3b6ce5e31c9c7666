//! The recipient domain of an inbound MX's `RCPT TO` line (`Auth-SMTP-To`), as nginx passes
//! it: the raw command line, parsed here to decide whether a domain is local.

/// The lower-case domain of the address in a raw `RCPT TO:<user@domain> ...` line.
pub(crate) fn recipient_domain(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let (_, rest) = line.split_once(':')?;
    let rest = rest.trim_start();
    let address = match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>')?.0,
        None => rest.split_ascii_whitespace().next()?,
    };
    // A source route (`<@relay:user@domain>`) ends at the last colon.
    let address = address.rsplit_once(':').map_or(address, |(_, a)| a);
    let (local, domain) = address.rsplit_once('@')?;
    // `a@evil.example@local.test` is not an address at local.test; a quoted local part
    // (`"a@b"@local.test`) may hold an `@`.
    if local.contains('@') && !(local.starts_with('"') && local.ends_with('"')) {
        return None;
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_domain_reads_raw_rcpt_lines() {
        assert_eq!(
            recipient_domain(b"RCPT TO:<c@Example.TEST>").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            recipient_domain(b"RCPT TO: <a@x.org.> NOTIFY=NEVER").as_deref(),
            Some("x.org")
        );
        assert_eq!(
            recipient_domain(b"RCPT TO:<@relay.net:u@y.net>").as_deref(),
            Some("y.net")
        );
        assert_eq!(recipient_domain(b"RCPT TO:b@z.net").as_deref(), Some("z.net"));
        assert_eq!(recipient_domain(b"RCPT TO:<postmaster>"), None);
        assert_eq!(recipient_domain(b"RCPT TO:<a@evil.example@local.test>"), None);
        assert_eq!(
            recipient_domain(b"RCPT TO:<\"a@b\"@local.test>").as_deref(),
            Some("local.test")
        );
        assert_eq!(recipient_domain(b"garbage"), None);
    }
}
