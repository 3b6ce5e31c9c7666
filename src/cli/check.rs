//! `mailauthd check-config`: validates a config and loads each source once, reporting every
//! problem. Exit 0 if usable, 1 if not.

use std::path::PathBuf;
use std::process::ExitCode;

use super::load_config;
use crate::source::Source;

/// Checks the config at `path` (the built-in default without one) and prints the report.
pub(super) fn run(path: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut errors = 0;
    // Nothing is served: the metrics a source records here are thrown away.
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    for source_config in &config.sources {
        let report = Source::new(source_config, &metrics).check();
        for line in &report.lines {
            println!("{line}");
        }
        errors += report.errors;
    }
    for warning in config.exposure_warnings() {
        println!("warning: {warning}");
    }
    let r = &config.routes;
    println!(
        "listen {}; routes imap {} pop3 {} smtp {}",
        config.listen,
        addrs(&r.imap),
        addrs(&r.pop3),
        addrs(&r.smtp)
    );
    for (domain, d) in &r.domains {
        let each: Vec<String> = [("imap", &d.imap), ("pop3", &d.pop3), ("smtp", &d.smtp)]
            .into_iter()
            .filter_map(|(p, l)| l.as_ref().map(|l| format!("{p} {}", addrs(l))))
            .collect();
        println!("routes for {domain}: {}", each.join(" "));
    }
    if errors > 0 {
        println!("{}: {errors} error(s)", config.origin);
        return Ok(ExitCode::from(1));
    }
    println!("{}: OK", config.origin);
    Ok(ExitCode::SUCCESS)
}

/// A rule's backends as resolved now, e.g. `10.0.0.1:143,10.0.0.2:143`.
fn addrs(list: &crate::config::RouteList) -> String {
    let all: Vec<String> = list
        .targets
        .iter()
        .flat_map(|t| t.addrs.iter().map(ToString::to_string))
        .collect();
    all.join(",")
}
