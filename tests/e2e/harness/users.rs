//! Every account the suite uses, one table, so the shared Dovecot passwd-file and the shared
//! mailauthd users file are written once at start-up. Each test owns its own users (their
//! names say which), so tests can run in parallel and their log lines never mix.

/// How mailauthd stores the password in its users file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stored {
    /// `{PLAIN}cleartext`: the only scheme APOP/CRAM-MD5 can verify.
    Plain,
    /// bcrypt cost 5 (`$2y$`, as `htpasswd -nbB -C 5` writes it).
    Bcrypt,
}

#[derive(Clone, Copy, Debug)]
pub struct User {
    pub name: &'static str,
    pub pass: &'static str,
    pub stored: Stored,
}

const fn u(name: &'static str, pass: &'static str, stored: Stored) -> User {
    User { name, pass, stored }
}

/// Space, `%` (also as `%20`), `"`, `\`, `+` and UTF-8: all bytes nginx escapes or that
/// naive decoders mangle (protocol.md 1.5). No `:` (the users file's separator).
pub const ODD_PASS: &str = "p w%20\"q\\+=é€";

use Stored::*;

// Scenario 1: IMAP LOGIN.
pub const IMAP_GOOD: User = u("imap-good@example.test", "imap-good-pw", Bcrypt);
pub const IMAP_RETRY: User = u("imap-retry@example.test", "retry-pw", Bcrypt);
pub const IMAP_CAP: User = u("imap-cap@example.test", "cap-pw", Plain);
// Scenario 2: odd credentials, one user per client path; two names contain a space.
pub const ODD_IMAP_QUOTED: User = u("odd imap quoted@example.test", ODD_PASS, Bcrypt);
pub const ODD_IMAP_LITERAL: User = u("odd-imap-literal@example.test", ODD_PASS, Plain);
pub const ODD_POP3: User = u("odd pop3@example.test", ODD_PASS, Bcrypt);
pub const ODD_SMTP_PLAIN: User = u("odd smtp plain@example.test", ODD_PASS, Bcrypt);
pub const ODD_SMTP_LOGIN: User = u("odd-smtp-login@example.test", ODD_PASS, Plain);
pub const ODD_CURL: User = u("odd-curl@example.test", ODD_PASS, Bcrypt);
// Scenario 3: POP3 STAT, SMTP submission.
pub const POP3_STAT: User = u("pop3-stat@example.test", "pop3-pw", Bcrypt);
pub const SMTP_SUBMIT: User = u("smtp-submit@example.test", "submit-pw", Bcrypt);
pub const CURL_USER: User = u("curl-user@example.test", "curl-pw", Bcrypt);
// Scenario 4: APOP / CRAM-MD5 for {PLAIN} users, refusal for a hashed one.
pub const CRAM_IMAP: User = u("cram-imap@example.test", "cram imap pw", Plain);
pub const APOP_POP3: User = u("apop-pop3@example.test", "apop-pw", Plain);
pub const CRAM_POP3: User = u("cram-pop3@example.test", "cram-pop3-pw", Plain);
pub const CRAM_SMTP: User = u("cram-smtp@example.test", "cram-smtp-pw", Plain);
pub const CRAM_CURL: User = u("cram-curl@example.test", "cram-curl-pw", Plain);
pub const DIGEST_HASHED: User = u("digest-hashed@example.test", "hashed-pw", Bcrypt);
// Scenario 6: failure texts.
pub const FAIL_TEXTS: User = u("fail-texts@example.test", "right-pw", Bcrypt);
// Scenario 8: the nginx-only chain's mail config.
pub const CHAIN_USER: User = u("chain-user@example.test", "chain-pw", Bcrypt);

// Scenario 9: TLS for cleartext logins, SASL EXTERNAL with client certificates.
pub const TLS_PLAIN: User = u("tls-plain@example.test", "tls-plain-pw", Bcrypt);
pub const TLS_EXT: User = u("tls-ext@example.test", "tls-ext-pw", Plain);

/// Every user of the shared setup (Dovecot and the shared mailauthd both know all of them).
pub const ALL: &[User] = &[
    IMAP_GOOD,
    IMAP_RETRY,
    IMAP_CAP,
    ODD_IMAP_QUOTED,
    ODD_IMAP_LITERAL,
    ODD_POP3,
    ODD_SMTP_PLAIN,
    ODD_SMTP_LOGIN,
    ODD_CURL,
    POP3_STAT,
    SMTP_SUBMIT,
    CURL_USER,
    CRAM_IMAP,
    APOP_POP3,
    CRAM_POP3,
    CRAM_SMTP,
    CRAM_CURL,
    DIGEST_HASHED,
    FAIL_TEXTS,
    CHAIN_USER,
    TLS_PLAIN,
    TLS_EXT,
];

/// One users-file line in nginx `auth_basic_user_file` syntax.
pub fn htpasswd_line(name: &str, pass: &str, stored: Stored) -> String {
    match stored {
        Plain => format!("{name}:{{PLAIN}}{pass}\n"),
        Bcrypt => {
            let h = bcrypt::hash_with_result(pass, 5).expect("bcrypt");
            format!("{name}:{}\n", h.format_for_version(bcrypt::Version::TwoY))
        }
    }
}

/// A whole users file for `users`.
pub fn htpasswd(users: &[User]) -> String {
    users.iter().map(|u| htpasswd_line(u.name, u.pass, u.stored)).collect()
}

// Scenario 7: reload. Not in the shared setup: each reload test has its own mailauthd and
// users file; the SMTP recorder is their backend, so Dovecot's passwd-file never changes.
pub const RELOAD_CHANGED: User = u("reload-changed@example.test", "old-password", Plain);
pub const RELOAD_STEADY: User = u("reload-steady@example.test", "steady-pw", Bcrypt);
pub const RELOAD_NEW_PASS: &str = "new-password";
