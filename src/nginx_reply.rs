//! How nginx's mail module reads an `auth_http` reply (protocol.md §2), written from that
//! description and not from `auth_http::render_reply`: the model every rendered reply is
//! checked against, by the round-trip property test below and by the fuzz targets.
//!
//! Only in test and fuzz builds.

use std::net::IpAddr;

use crate::auth_http::MAX_REPLY_BYTES;

/// What nginx makes of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NginxOutcome {
    /// `Auth-Status: OK` (or none at all): the login goes to this backend.
    Success {
        /// `Auth-Server`.
        server: IpAddr,
        /// `Auth-Port`.
        port: u16,
        /// `Auth-Pass`, raw, when present.
        pass: Option<Vec<u8>>,
    },
    /// Any other `Auth-Status`: an error message for the client.
    Error {
        /// The `Auth-Status` text.
        text: Vec<u8>,
        /// `Auth-Wait`, when it is digits only and at least 1.
        wait: Option<u32>,
        /// `Auth-Error-Code` (used for SMTP only).
        code: Option<Vec<u8>>,
    },
    /// `Auth-Status: WAIT`: nginx asks again (mailauthd must never send it).
    Wait,
    /// nginx logs an error and the client gets an internal error.
    Invalid(&'static str),
}

/// Reads `reply` the way nginx does.
pub(crate) fn read(reply: &[u8]) -> NginxOutcome {
    // One fixed buffer of 1024 bytes: the blank line must be inside it.
    if reply.len() >= MAX_REPLY_BYTES {
        return NginxOutcome::Invalid("reply does not fit nginx's 1024-byte buffer");
    }
    let mut rest = reply;
    if rest.starts_with(b"HTTP/") {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return NginxOutcome::Invalid("status line without end");
        };
        let line = &rest[..lf];
        if line[..line.len().saturating_sub(1)].contains(&b'\r') {
            return NginxOutcome::Invalid("CR not followed by LF in the status line");
        }
        rest = &rest[lf + 1..];
    }
    let mut status_error: Option<Vec<u8>> = None;
    let mut wait_status = false;
    let mut server = None;
    let mut port = None;
    let mut pass = None;
    let mut wait = None;
    let mut code = None;
    loop {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return NginxOutcome::Invalid("header block without its blank line");
        };
        let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
        rest = &rest[lf + 1..];
        if line.is_empty() {
            break;
        }
        if line.contains(&b'\r') {
            return NginxOutcome::Invalid("CR inside a header line");
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            // A line without a colon is a header with an empty value.
            None => (line, &b""[..]),
        };
        let name_ok = name.first().is_some_and(u8::is_ascii_alphanumeric)
            && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            return NginxOutcome::Invalid("invalid header name");
        }
        // Spaces only, never tabs.
        let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
        let end = value.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
        let value = &value[start..end];
        match name.to_ascii_lowercase().as_slice() {
            b"auth-status" => match value {
                b"OK" => {}
                b"WAIT" => wait_status = true,
                text => {
                    status_error.get_or_insert_with(|| text.to_vec());
                }
            },
            b"auth-server" => server = Some(value.to_vec()),
            b"auth-port" => port = Some(value.to_vec()),
            b"auth-pass" => pass = Some(value.to_vec()),
            b"auth-wait" => wait = Some(value.to_vec()),
            b"auth-error-code" => code = Some(value.to_vec()),
            _ => {}
        }
    }
    let wait = wait
        .filter(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(&w).ok()?.parse::<u32>().ok())
        .filter(|w| *w >= 1);
    if let Some(text) = status_error {
        return NginxOutcome::Error { text, wait, code };
    }
    if wait_status {
        return NginxOutcome::Wait;
    }
    let server = server
        .filter(|s| !s.is_empty())
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<IpAddr>().ok());
    let port = port
        .filter(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        .and_then(|p| std::str::from_utf8(&p).ok()?.parse::<u16>().ok())
        .filter(|p| *p >= 1);
    match (server, port) {
        (Some(server), Some(port)) => NginxOutcome::Success { server, port, pass },
        _ => NginxOutcome::Invalid("did not send server or port"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;
    use zeroize::Zeroizing;

    use super::*;
    use crate::auth_http::{Accept, Refusal, RefuseKind, Verdict, render_reply};
    use crate::login::MailProtocol;

    #[test]
    fn the_model_reads_the_captured_replies_as_nginx_did() {
        // protocol.md §2.2–2.4, each captured against nginx 1.22.1.
        assert_eq!(
            read(
                b"HTTP/1.1 500 Internal Server Error\r\nAuth-Status: OK\r\nAuth-Server: ::1\r\nAuth-Port: 143\r\n\r\n"
            ),
            NginxOutcome::Success {
                server: Ipv6Addr::LOCALHOST.into(),
                port: 143,
                pass: None
            }
        );
        assert_eq!(
            read(b"Auth-Server: 127.0.0.1\nAuth-Port: 143\n\n"),
            NginxOutcome::Success {
                server: Ipv4Addr::LOCALHOST.into(),
                port: 143,
                pass: None
            }
        );
        assert!(matches!(read(b"Auth-Status:\tOK\r\n\r\n"), NginxOutcome::Error { .. }));
        assert!(matches!(read(b"Auth-Status: ok\r\n\r\n"), NginxOutcome::Error { .. }));
        assert_eq!(
            read(b"X_Foo: 1\r\nAuth-Status: OK\r\n\r\n"),
            NginxOutcome::Invalid("invalid header name")
        );
        assert_eq!(
            read(b"Auth-Status: OK\r\nAuth-Server: localhost\r\nAuth-Port: 143\r\n\r\n"),
            NginxOutcome::Invalid("did not send server or port")
        );
        assert_eq!(
            read(b"Auth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 0\r\n\r\n"),
            NginxOutcome::Invalid("did not send server or port")
        );
        let long = [&b"Auth-Status: "[..], &[b'x'; 1100], b"\r\n\r\n"].concat();
        assert!(matches!(read(&long), NginxOutcome::Invalid(_)));
    }

    fn protocol() -> impl Strategy<Value = Option<MailProtocol>> {
        prop_oneof![
            Just(None),
            Just(Some(MailProtocol::Imap)),
            Just(Some(MailProtocol::Pop3)),
            Just(Some(MailProtocol::Smtp)),
        ]
    }

    fn kind() -> impl Strategy<Value = RefuseKind> {
        prop_oneof![
            Just(RefuseKind::InvalidCredentials),
            Just(RefuseKind::Temporary),
            Just(RefuseKind::Banned),
            Just(RefuseKind::RelayDenied),
            Just(RefuseKind::BadRequest),
            Just(RefuseKind::PrivacyRequired),
            Just(RefuseKind::NoReverseDns),
            Just(RefuseKind::ReverseDnsTempfail),
        ]
    }

    /// Bytes biased towards the ones a reply header cannot carry.
    fn password() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n'), Just(0u8), Just(b':'), any::<u8>()],
            0..600,
        )
    }

    proptest! {
        #[test]
        fn an_accept_reads_back_as_that_backend_and_password(
            server in any::<IpAddr>(),
            port in 1u16..,
            pass in prop::option::of(password()),
            protocol in protocol(),
        ) {
            let verdict = Verdict::Accept(Accept { server, port, user: None, pass: pass.clone().map(Zeroizing::new) });
            let reply = render_reply(&verdict, protocol);
            // nginx trims spaces at both ends and a value ends at CR or LF; it has one
            // 1024-byte buffer (protocol.md §2.1, §2.3).
            let echoable = |p: &Vec<u8>| {
                !p.is_empty()
                    && p.len() <= 512
                    && p[0] != b' '
                    && p[p.len() - 1] != b' '
                    && !p.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
            };
            prop_assert_eq!(
                read(&reply),
                NginxOutcome::Success { server, port, pass: pass.filter(echoable) }
            );
        }

        #[test]
        fn a_refusal_reads_back_as_an_error_with_its_wait(
            kind in kind(),
            wait in prop::option::of(any::<u32>()),
            protocol in protocol(),
        ) {
            let reply = render_reply(&Verdict::Refuse(Refusal { kind, wait }), protocol);
            let NginxOutcome::Error { text, wait: read_wait, code } = read(&reply) else {
                return Err(TestCaseError::fail(format!("not an error: {:?}", String::from_utf8_lossy(&reply))));
            };
            prop_assert!(!text.is_empty());
            prop_assert_eq!(read_wait, wait.filter(|w| *w >= 1));
            // SMTP reply codes (RFC 5321 §4.2.1): 4xx asks the client to retry, 5xx not.
            if protocol == Some(MailProtocol::Smtp) {
                let code = code.expect("an SMTP refusal names its reply code");
                let first = code.first().copied();
                match kind {
                    RefuseKind::Temporary
                    | RefuseKind::Banned
                    | RefuseKind::BadRequest
                    | RefuseKind::ReverseDnsTempfail => prop_assert_eq!(first, Some(b'4')),
                    RefuseKind::InvalidCredentials
                    | RefuseKind::RelayDenied
                    | RefuseKind::PrivacyRequired
                    | RefuseKind::NoReverseDns => prop_assert_eq!(first, Some(b'5')),
                }
            }
        }
    }
}
