//! The command line: `serve`, `check-config`, `test`, `user`, `nginx-config`, and for
//! packagers `man` and `completions`. `anyhow` lives here and in
//! `main.rs` only.

pub mod user;

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

mod bans;

use crate::config::Config;
use crate::decide::Authenticator;
use crate::protocol::{self, AuthMethod, AuthRequest, MailProtocol, Verdict};
use crate::source::htpasswd::Severity;
use crate::source::{ReloadOutcome, Source};

/// mailauthd: the auth_http server for nginx's mail proxy.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MAILAUTHD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file; without it the built-in default is used (listen 127.0.0.1:14380,
        /// users.htpasswd in the working directory, backends on 127.0.0.1:143/110/25).
        #[arg(long, short, env = "MAILAUTHD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config and its users files; report every problem. Exit 0 if usable, 1 if not.
    CheckConfig {
        /// Config file (the built-in default without it).
        #[arg(long, short, env = "MAILAUTHD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Decide one login as the server would, with the password read from stdin, and print the
    /// reply nginx would get. Exit 0 if accepted, 1 if refused.
    Test {
        /// Config file.
        #[arg(long, short, env = "MAILAUTHD_CONFIG")]
        config: Option<PathBuf>,
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
    },
    /// Manage a users file (htpasswd-compatible): add, passwd, del, list, verify.
    /// Exit 0 done, 1 refused (user exists / absent, wrong password), 2 error.
    User {
        /// What to do.
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Print an nginx `mail {}` block (IMAP, POP3, submission, inbound MX) that sends every
    /// login to this daemon's listen address.
    NginxConfig {
        /// Config file (the built-in default without it).
        #[arg(long, short, env = "MAILAUTHD_CONFIG")]
        config: Option<PathBuf>,
        /// nginx `server_name` (nginx uses the host name without it).
        #[arg(long)]
        server_name: Option<String>,
        /// TLS certificate chain (PEM).
        #[arg(long, default_value = "/etc/ssl/certs/ssl-cert-snakeoil.pem")]
        tls_cert: PathBuf,
        /// TLS private key (PEM).
        #[arg(long, default_value = "/etc/ssl/private/ssl-cert-snakeoil.key")]
        tls_key: PathBuf,
    },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
    /// Print a shell completion script on stdout.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List or lift brute-force bans through the running daemon's admin endpoint.
    Bans {
        /// What to do.
        #[command(subcommand)]
        action: bans::BansAction,
        /// Config file whose `[admin] listen` and `token` are used.
        #[arg(long, short, env = "MAILAUTHD_CONFIG")]
        config: Option<PathBuf>,
        /// Admin address, instead of `[admin] listen`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Bearer token, instead of `[admin] token`.
        #[arg(long, env = "MAILAUTHD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

fn parse_protocol(s: &str) -> Result<MailProtocol, String> {
    MailProtocol::parse(s).ok_or_else(|| format!("{s:?} is not imap, pop3 or smtp"))
}

fn parse_method(s: &str) -> Result<AuthMethod, String> {
    AuthMethod::parse(s).ok_or_else(|| format!("{s:?} is not plain, apop, cram-md5, external or none"))
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::builtin()),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(config.as_ref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.workers)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => check_config(config.as_ref()),
        Command::User { command } => user::run(command),
        Command::Bans {
            action,
            config,
            admin,
            token,
        } => {
            let file = match &config {
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
            bans::run(&action, admin, &token)
        }
        Command::Test {
            config,
            user,
            protocol,
            method,
            client_ip,
            salt,
            smtp_to,
            attempt,
        } => {
            let config = load_config(config.as_ref())?;
            let mut pass = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut pass)
                .context("cannot read the password from stdin")?;
            while matches!(pass.last(), Some(b'\n' | b'\r')) {
                pass.pop();
            }
            let req = AuthRequest {
                uri: "/".to_owned(),
                method,
                protocol,
                user: user.into_bytes(),
                pass,
                salt: salt.map(String::into_bytes),
                login_attempt: attempt,
                client_ip: Some(client_ip),
                client_host: None,
                smtp_helo: None,
                smtp_from: None,
                smtp_to: smtp_to.map(String::into_bytes),
                tls: None,
                proxy: None,
                extra_headers: Vec::new(),
            };
            test_login(config, &req)
        }
        Command::NginxConfig {
            config,
            server_name,
            tls_cert,
            tls_key,
        } => {
            let config = load_config(config.as_ref())?;
            let opts = crate::nginx_config::NginxOptions {
                server_name,
                tls_cert,
                tls_key,
            };
            write_stdout(crate::nginx_config::render(&config, &opts).as_bytes())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("cannot render the man page")?;
            write_stdout(&out)
        }
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mailauthd", &mut out);
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut errors = 0;
    for source_config in &config.sources {
        let source = Source::new(source_config);
        let Source::Htpasswd(file) = &source else {
            // An upstream is not contacted here: its answers depend on the credentials.
            println!("{}: not contacted", source.name());
            continue;
        };
        match file.reload(true) {
            ReloadOutcome::Loaded { users, problems } => {
                for p in &problems {
                    let level = if p.severity == Severity::Error {
                        "error"
                    } else {
                        "warning"
                    };
                    errors += usize::from(p.severity == Severity::Error);
                    println!("{level}: {p}");
                }
                println!("{}: {users} user(s)", source.name());
            }
            ReloadOutcome::Failed(e) => {
                errors += 1;
                println!("error: {e}");
            }
            ReloadOutcome::Unsettled => {
                errors += 1;
                println!(
                    "error: {}: the file kept changing while it was read; run again",
                    source.name()
                );
            }
            ReloadOutcome::Unchanged | ReloadOutcome::KeptPrevious { .. } | ReloadOutcome::SuspiciousEmpty { .. } => {}
        }
    }
    println!(
        "listen {}; routes imap {} pop3 {} smtp {}",
        config.listen, config.routes.imap.addr, config.routes.pop3.addr, config.routes.smtp.addr
    );
    if errors > 0 {
        println!("{}: {errors} error(s)", config.origin);
        return Ok(ExitCode::from(1));
    }
    println!("{}: OK", config.origin);
    Ok(ExitCode::SUCCESS)
}

fn test_login(config: Config, req: &AuthRequest) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // A test login must not write to the live brute-force state (a shared Redis), nor be
    // refused by it.
    let mut config = config;
    config.policy.enabled = false;
    let auth = Arc::new(Authenticator::new(Arc::new(config)));
    crate::daemon::reload_sources(&auth, true);
    let decision = runtime.block_on(auth.decide(req));
    let reply = protocol::render_reply(&decision.verdict, Some(req.protocol));
    use std::io::Write;
    std::io::stdout().write_all(&reply).context("cannot write to stdout")?;
    eprintln!("reason: {}", decision.reason);
    match decision.verdict {
        Verdict::Accept(_) => Ok(ExitCode::SUCCESS),
        Verdict::Refuse(_) => Ok(ExitCode::from(1)),
    }
}

/// Starts logging to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging(format: LogFormat, default_level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        bail!("cannot start logging: {e}");
    }
    Ok(())
}
