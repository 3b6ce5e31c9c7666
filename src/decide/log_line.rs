//! The one log line per decision, in the fixed field order that the fail2ban filter
//! (`contrib/fail2ban/`) and log readers anchor on.

use std::time::Duration;

use super::Decision;
use crate::auth_http::{AuthRequest, Verdict};
use crate::login::AuthMethod;

/// The most of a login name one log line holds, in bytes of its logged (escaped) form.
const MAX_LOGGED_NAME: usize = 256;

/// A login name as the log line shows it: control and non-UTF-8 bytes escaped (so a name
/// cannot forge a line or a field), and cut after [`MAX_LOGGED_NAME`] bytes at a character
/// boundary, with `…(+N bytes)` saying how many bytes of the name were left out. A 4 KB
/// name must not make a 24 KB line for each of its failures.
fn logged_name(name: &[u8]) -> String {
    // Most names are short printable ASCII, shown as they are.
    if name.len() <= MAX_LOGGED_NAME
        && name.iter().all(|b| shown_as_is(*b))
        && let Ok(ascii) = std::str::from_utf8(name)
    {
        return ascii.to_owned();
    }
    escaped_name(name)
}

/// Whether `char::escape_debug` leaves this byte's character as it is.
fn shown_as_is(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && !matches!(b, b'\\' | b'"' | b'\'')
}

/// [`logged_name`] by escaping every character.
fn escaped_name(name: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for chunk in name.utf8_chunks() {
        let valid = chunk
            .valid()
            .chars()
            .map(|c| (c.escape_debug().to_string(), c.len_utf8()));
        // Each run of bytes that is not UTF-8 is shown as one U+FFFD, as `from_utf8_lossy` does.
        let invalid = (!chunk.invalid().is_empty()).then(|| ('\u{fffd}'.to_string(), chunk.invalid().len()));
        for (text, raw) in valid.chain(invalid) {
            if out.len() + text.len() > MAX_LOGGED_NAME {
                out.push_str(&format!("…(+{} bytes)", name.len() - shown));
                return out;
            }
            out.push_str(&text);
            shown += raw;
        }
    }
    out
}

/// Writes the one log line per decision. The password never appears, at any level.
///
/// The fields come in a fixed order, `client_ip` first and everything the client chooses
/// (the user name) after the fixed-vocabulary ones, so that a text-format line reads
/// `login refused client_ip="203.0.113.9" result="invalid" reason="wrong-password" ...` and
/// a log filter (fail2ban, `contrib/fail2ban/`) can anchor on the start of the line.
pub(crate) fn log_decision(req: &AuthRequest, decision: &Decision, took: Duration) {
    let result = decision.result();
    let micros = took.as_micros() as u64;
    // With `none` the user bytes may be stale credentials or leaked worker memory
    // (CVE-2025-53859): never logged, whoever built the request.
    let user = if req.method == AuthMethod::None {
        String::new()
    } else {
        logged_name(&req.user)
    };
    // `unix:` for a unix-socket client, as nginx writes it.
    let client_ip = req.client.map(|c| c.to_string()).unwrap_or_default();
    let scheme = decision
        .scheme
        .as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    let source = decision.source.as_deref().unwrap_or("-");
    if let Verdict::Accept(accept) = &decision.verdict {
        // Where nginx was sent: the one thing an operator of several stores asks first.
        let backend = match accept.server {
            std::net::IpAddr::V4(v4) => {
                let mut text = crate::login::Ipv4Text::new(v4).as_str().to_owned();
                text.push(':');
                text.push_str(itoa::Buffer::new().format(accept.port));
                text
            }
            v6 => std::net::SocketAddr::new(v6, accept.port).to_string(),
        };
        tracing::info!(target: crate::logging::DECISION_TARGET, client_ip, result, reason = decision.reason.as_str(), protocol = %req.protocol, method = %req.method, user, scheme = scheme.as_str(), source, backend, micros, "login accepted");
    } else {
        tracing::warn!(target: crate::logging::DECISION_TARGET, client_ip, result, reason = decision.reason.as_str(), protocol = %req.protocol, method = %req.method, user, scheme = scheme.as_str(), source, micros, "login refused");
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_LOGGED_NAME, escaped_name, logged_name, shown_as_is};

    #[test]
    fn the_short_way_shows_what_escaping_would() {
        for b in 0..=u8::MAX {
            let escaped = escaped_name(&[b]);
            assert_eq!(shown_as_is(b), escaped.as_bytes() == [b], "byte {b:#x}: {escaped:?}");
        }
        for name in ["alice@example.org", "a b", "x!#$%&()*+,-./:;<=>?[]^_`{|}~"] {
            assert_eq!(logged_name(name.as_bytes()), escaped_name(name.as_bytes()));
        }
    }

    #[test]
    fn a_long_name_is_cut_and_marked() {
        assert_eq!(logged_name(b"alice@example.org"), "alice@example.org");
        let exact = vec![b'a'; MAX_LOGGED_NAME];
        assert_eq!(logged_name(&exact), "a".repeat(256));
        let long = vec![b'a'; 4096];
        assert_eq!(logged_name(&long), format!("{}…(+3840 bytes)", "a".repeat(256)));
    }

    #[test]
    fn the_cut_counts_the_escaped_form_and_never_splits_a_character_or_an_escape() {
        // "é" is 2 bytes: 'a' + 127 of them fill 255 bytes, the 128th would pass 256.
        let name = format!("a{}", "é".repeat(200));
        assert_eq!(
            logged_name(name.as_bytes()),
            format!("a{}…(+146 bytes)", "é".repeat(127))
        );
        // A control byte is logged as the 5 bytes `\u{1}`: 51 of them fit in 256.
        let controls = vec![1u8; 100];
        assert_eq!(logged_name(&controls), format!("{}…(+49 bytes)", r"\u{1}".repeat(51)));
        assert_eq!(logged_name(b"a\nb\xff"), "a\\nb\u{fffd}");
    }
}
