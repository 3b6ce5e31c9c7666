//! `mailauthd bans list|clear`: the operator's side of the admin `/bans` endpoint, spoken
//! over plain HTTP/1.0 to `[admin] listen` with the `[admin] token`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;

/// What to do with the bans.
#[derive(Debug, clap::Subcommand)]
pub enum BansAction {
    /// Print every ban in force: scope, network, user, time left.
    List,
    /// Lift bans (and their failure counts); without --ip or --user, all of them.
    Clear {
        /// Lift the bans of this address's network (net and user-from-network bans).
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Lift the bans of this user (user and user-from-network bans).
        #[arg(long)]
        user: Option<String>,
    },
}

/// Finds the admin address and token (flags first, then the config file), sends the request
/// for `action` and prints the answer. Exit 0 on success, 1 otherwise.
pub(super) fn run(
    action: &BansAction,
    config: Option<&PathBuf>,
    admin: Option<SocketAddr>,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    let file = match config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let admin = admin
        .or_else(|| file.as_ref().and_then(|c| c.admin.listen))
        .context("no admin address: pass --admin or --config with [admin] listen")?;
    let token = token
        .or_else(|| {
            file.as_ref()
                .and_then(|c| c.admin.token.as_ref().map(|t| t.expose().to_owned()))
        })
        .context("no admin token: set MAILAUTHD_ADMIN_TOKEN or [admin] token")?;
    send(action, admin, &token)
}

/// Sends the request for `action` to `admin` and prints the answer.
fn send(action: &BansAction, admin: SocketAddr, token: &str) -> anyhow::Result<ExitCode> {
    let (method, target) = match action {
        BansAction::List => ("GET", "/bans".to_owned()),
        BansAction::Clear { ip, user } => {
            let mut query = Vec::new();
            if let Some(ip) = ip {
                query.push(format!("ip={ip}"));
            }
            if let Some(user) = user {
                query.push(format!("user={}", escape(user)));
            }
            ("DELETE", format!("/bans?{}", query.join("&")))
        }
    };
    let (status, body) = request(admin, method, &target, token)?;
    if status == 200 {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("admin endpoint {admin} answered {status}: {body}");
        Ok(ExitCode::from(1))
    }
}

/// %-escapes everything but unreserved characters.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn request(admin: SocketAddr, method: &str, target: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_secs(15);
    let mut stream = TcpStream::connect_timeout(&admin, timeout)
        .with_context(|| format!("cannot connect to the admin endpoint {admin}; is [admin] listen set?"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!("{method} {target} HTTP/1.0\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .context("cannot send to the admin endpoint")?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .context("cannot read the admin endpoint's answer")?;
    let reply = String::from_utf8_lossy(&reply);
    let Some((head, body)) = reply.split_once("\r\n\r\n") else {
        bail!("the admin endpoint {admin} sent no complete HTTP answer");
    };
    let status = head
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the admin endpoint's answer has no status code")?;
    Ok((status, body.to_owned()))
}
