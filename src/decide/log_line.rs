//! The one log line per decision, in the fixed field order that the fail2ban filter
//! (`contrib/fail2ban/`) and log readers anchor on.

use std::time::Instant;

use super::Decision;
use crate::auth_http::{AuthRequest, Verdict};
use crate::login::{AuthMethod, printable};

/// Writes the one log line per decision. The password never appears, at any level.
///
/// The fields come in a fixed order, `client_ip` first and everything the client chooses
/// (the user name) after the fixed-vocabulary ones, so that a text-format line reads
/// `login refused client_ip="203.0.113.9" result="invalid" reason="wrong-password" ...` and
/// a log filter (fail2ban, `contrib/fail2ban/`) can anchor on the start of the line.
pub(crate) fn log_decision(req: &AuthRequest, decision: &Decision, started: Instant) {
    let result = decision.result();
    let micros = started.elapsed().as_micros() as u64;
    // With `none` the user bytes may be stale credentials or leaked worker memory
    // (CVE-2025-53859): never logged, whoever built the request.
    let user = if req.method == AuthMethod::None {
        String::new()
    } else {
        printable(&req.user)
    };
    // `unix:` for a unix-socket client, as nginx writes it.
    let client_ip = req.client.map(|c| c.to_string()).unwrap_or_default();
    let scheme = decision
        .scheme
        .as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    let source = decision.source.as_deref().unwrap_or("-");
    if matches!(decision.verdict, Verdict::Accept(_)) {
        tracing::info!(target: "mailauthd::auth", client_ip, result, reason = decision.reason.as_str(), protocol = %req.protocol, method = %req.method, user, scheme = scheme.as_str(), source, micros, "login accepted");
    } else {
        tracing::warn!(target: "mailauthd::auth", client_ip, result, reason = decision.reason.as_str(), protocol = %req.protocol, method = %req.method, user, scheme = scheme.as_str(), source, micros, "login refused");
    }
}
