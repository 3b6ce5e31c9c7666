//! Backend health checks: a TCP connect plus the protocol's greeting (`* OK`, `+OK`, `220`)
//! every `[route.health] interval`, each backend at once, each check within `timeout`. A
//! backend that fails is out until it passes again; each change is logged once and exported
//! in `/metrics` (`mailauthd_backend_up`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Health, Router};
use crate::login::MailProtocol;
use crate::metrics::Metrics;

/// The greeting a healthy backend of `protocol` starts with.
fn greeting(protocol: MailProtocol) -> &'static [u8] {
    match protocol {
        MailProtocol::Imap => b"* OK",
        MailProtocol::Pop3 => b"+OK",
        MailProtocol::Smtp => b"220",
    }
}

/// Connects to `addr` and reads its greeting line; `Err` says what was wrong.
pub(crate) async fn check(protocol: MailProtocol, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut line = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        // The first line only; a greeting longer than 1 KiB without a line end is no greeting.
        while !line.contains(&b'\n') && line.len() < 1024 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("cannot read the greeting: {e}"))?;
            if n == 0 {
                return Err("closed before greeting".to_owned());
            }
            line.extend_from_slice(&buf[..n]);
        }
        let want = greeting(protocol);
        if line.starts_with(want) {
            Ok(())
        } else {
            let first = line.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or(&[]);
            let shown = String::from_utf8_lossy(&first[..first.len().min(60)]).into_owned();
            Err(format!("greeting {shown:?} is not {:?}", String::from_utf8_lossy(want)))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no greeting within {}", humantime::format_duration(timeout))),
    }
}

/// Checks every backend once, at the same time, and records the results.
pub(crate) async fn check_all(router: &Router, metrics: &Metrics) {
    let timeout = router.settings().timeout;
    let checks = router
        .backends()
        .into_iter()
        .map(|(protocol, addr)| async move { (protocol, addr, check(protocol, addr, timeout).await) });
    for (protocol, addr, result) in futures_join(checks).await {
        let up = result.is_ok();
        metrics.backend_up(protocol.as_str(), &addr.to_string(), up);
        match (router.set_health(protocol, addr, up), result) {
            (None, _) => {}
            (Some(before), Ok(())) => {
                if before == Health::Down {
                    tracing::warn!(protocol = protocol.as_str(), backend = %addr, "backend is up again; it takes logins");
                } else {
                    tracing::info!(protocol = protocol.as_str(), backend = %addr, "backend is up");
                }
            }
            (Some(_), Err(why)) => {
                tracing::error!(protocol = protocol.as_str(), backend = %addr, "backend is down ({why}); its users go to the other backends of their route until it passes a check");
            }
        }
    }
}

/// Runs the futures at once and collects their outputs (in order).
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Checks every backend every `interval` until the task is aborted (nothing when checks are
/// off).
pub(crate) async fn run(router: Arc<Router>, metrics: Arc<Metrics>) {
    let interval = router.settings().interval;
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        check_all(&router, &metrics).await;
    }
}
