//! The `mailauthd` binary: parse the command line, start logging, run, map errors to an
//! exit code.

use std::process::ExitCode;

use clap::Parser;
use mailauthd::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    if let Err(e) = cli::init_logging(cli.log_format, level) {
        eprintln!("mailauthd: {e:#}");
        return ExitCode::from(2);
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailauthd: {e:#}");
            ExitCode::from(2)
        }
    }
}
