//! `mailauthd test`: decides one login as the server would, with the password read from
//! stdin, and prints the reply nginx would get, then (on stderr) the reason and the backend
//! chosen with the rule and health state that chose it. Exit 0 if accepted, 1 if refused.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::auth_http::{self, AuthRequest, Verdict};
use crate::config::Config;
use crate::login::{AuthMethod, ClientAddr, MailProtocol};

/// The login to decide, as flags.
#[derive(Debug, clap::Args)]
pub struct TestLogin {
    /// Login name.
    #[arg(long)]
    user: String,
    /// Mail protocol.
    #[arg(long, default_value = "imap", value_parser = parse_protocol)]
    protocol: MailProtocol,
    /// Auth method (plain, apop, cram-md5, external, none).
    #[arg(long, default_value = "plain", value_parser = parse_method)]
    method: AuthMethod,
    /// Client address.
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: IpAddr,
    /// `Auth-Salt` for apop / cram-md5 (stdin then holds the client's digest).
    #[arg(long)]
    salt: Option<String>,
    /// `Auth-SMTP-To` for method none, e.g. "RCPT TO:<a@example.org>".
    #[arg(long)]
    smtp_to: Option<String>,
    /// `Auth-Login-Attempt`.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// The client connection is TLS (`Auth-SSL: on`, `Auth-SSL-Protocol: TLSv1.3`).
    #[arg(long)]
    tls: bool,
    /// `Client-Host` for SMTP: a name, `[UNAVAILABLE]` or `[TEMPUNAVAIL]`.
    #[arg(long)]
    client_host: Option<String>,
}

fn parse_protocol(s: &str) -> Result<MailProtocol, String> {
    MailProtocol::parse(s).ok_or_else(|| format!("{s:?} is not imap, pop3 or smtp"))
}

fn parse_method(s: &str) -> Result<AuthMethod, String> {
    AuthMethod::parse(s).ok_or_else(|| format!("{s:?} is not plain, apop, cram-md5, external or none"))
}

/// Reads the password from stdin, decides `login` under `config` and prints the reply.
pub(super) fn run(config: Config, login: TestLogin) -> anyhow::Result<ExitCode> {
    let mut pass = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut pass)
        .context("cannot read the password from stdin")?;
    while matches!(pass.last(), Some(b'\n' | b'\r')) {
        pass.pop();
    }
    let req = AuthRequest {
        uri: "/".to_owned(),
        method: login.method,
        protocol: login.protocol,
        user: login.user.into_bytes(),
        pass,
        salt: login.salt.map(String::into_bytes),
        login_attempt: login.attempt,
        client: Some(ClientAddr::from_ip(login.client_ip)),
        client_host: login.client_host.map(String::into_bytes),
        smtp_helo: None,
        smtp_from: None,
        smtp_to: login.smtp_to.map(String::into_bytes),
        tls: login.tls.then(|| {
            Box::new(auth_http::TlsInfo {
                on: true,
                protocol: Some("TLSv1.3".to_owned()),
                ..Default::default()
            })
        }),
        proxy: None,
        extra_headers: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let decision = runtime.block_on(crate::daemon::decide_once(config, &req));
    let reply = auth_http::render_reply(&decision.verdict, Some(req.protocol));
    std::io::stdout().write_all(&reply).context("cannot write to stdout")?;
    eprintln!("reason: {}", decision.reason);
    if let Some(routed) = &decision.route {
        eprintln!("backend: {routed}");
    }
    match decision.verdict {
        Verdict::Accept(_) => Ok(ExitCode::SUCCESS),
        Verdict::Refuse(_) => Ok(ExitCode::from(1)),
    }
}
