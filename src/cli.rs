//! The command line: `serve`, `check-config`, `test`, `user`, `nginx-config`, and for
//! packagers `man` and `completions`. `anyhow` lives here and in
//! `main.rs` only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

mod bans;
mod check;
mod test_login;
mod user;

use crate::config::Config;

/// `mailauthd --version`: the crate version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MAILAUTHD_COMMIT"), ")");

/// mailauthd: the auth_http server for nginx's mail proxy.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, long_about = None)]
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
        /// The login to decide.
        #[command(flatten)]
        login: test_login::TestLogin,
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
        /// The CA (PEM) that signs client certificates, for `[external]` (SASL EXTERNAL).
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
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

pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
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
                .on_thread_park(crate::logging::on_worker_park)
                .on_thread_stop(crate::logging::flush_thread)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::serve(config))?;
            // The workers write their last batched lines as they stop: "stopped" comes after.
            drop(runtime);
            tracing::info!(target: "mailauthd::daemon", "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => check::run(config.as_ref()),
        Command::User { command } => user::run(command),
        Command::Bans {
            action,
            config,
            admin,
            token,
        } => bans::run(&action, config.as_ref(), admin, token),
        Command::Test { config, login } => test_login::run(load_config(config.as_ref())?, login),
        Command::NginxConfig {
            config,
            server_name,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let config = load_config(config.as_ref())?;
            let opts = crate::nginx_config::NginxOptions {
                server_name,
                tls_cert,
                tls_key,
                tls_client_ca,
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

/// Starts logging to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging(format: LogFormat, default_level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Plain text, never colours: a log is read by journald, fail2ban and grep, and ANSI
    // styling (even switched off at run time) costs each login line several thousand
    // instructions, so it is left out of the build.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logging::BatchedStderr);
    let result = match format {
        LogFormat::Text => builder.event_format(crate::logging::TextFormat::default()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        bail!("cannot start logging: {e}");
    }
    Ok(())
}
