//! `mailauthd serve`: builds the parts that decide logins ([`assemble`], the composition
//! root), binds the listeners, loads the sources, keeps them fresh (polling and SIGHUP), and
//! runs the server until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{self, AdminState};
use crate::auth_http::AuthRequest;
use crate::clock::SystemClock;
use crate::config::{Config, ListenAddr};
use crate::decide::{Authenticator, Decision};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::route::{self, Router};
use crate::server::{self, Listener, ServerLimits};
use crate::source::{Source, SourceStatus};
use crate::verify::{LoginCache, Verifier, VerifyPool};
use sd_notify::NotifyState;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A unix socket path is taken by something that is not a socket.
    #[error("cannot listen on unix:{}: the path exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Binds the configured listener. A stale unix socket left by an earlier run is replaced.
pub(crate) async fn bind(listen: &ListenAddr) -> Result<Listener, DaemonError> {
    match listen {
        ListenAddr::Tcp(addr) => TcpListener::bind(addr)
            .await
            .and_then(TcpListener::into_std)
            .and_then(|l| {
                defer_accept(&l);
                // SAFETY: `AsyncFd` asks that the descriptor stay open while registered. It
                // owns the listener, which closes it only when dropped, after the
                // registration is removed.
                unsafe { AsyncFd::register(l) }
                    .map(Listener::Tcp)
                    .map_err(std::io::Error::from)
            })
            .map_err(|source| DaemonError::Bind {
                addr: listen.to_string(),
                source,
            }),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(DaemonError::NotASocket { path: path.clone() });
                }
                let _ = std::fs::remove_file(path);
            }
            UnixListener::bind(path)
                .map(Listener::Unix)
                .map_err(|source| DaemonError::Bind {
                    addr: listen.to_string(),
                    source,
                })
        }
    }
}

/// Has the kernel hand a connection over when its first bytes arrive (Linux's
/// `TCP_DEFER_ACCEPT`, nginx's `listen ... deferred`). nginx sends its request as soon as it
/// has connected, so the request is there when the connection is accepted and is answered
/// with one read, and no connection is watched for its request to come. A connection that
/// sends nothing is handed over after about a second, and then has `read_timeout` like any
/// other. Where the option cannot be set, connections are accepted as they come.
fn defer_accept(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // The fewest seconds: the kernel waits out one SYN-ACK retransmission (one second).
    let seconds: libc::c_int = 1;
    // SAFETY: the descriptor is the listener's, open for the duration of the call; the
    // option value is a c_int that lives across it, and its size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        tracing::debug!(
            "cannot defer accepting until data arrives: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Builds everything that decides logins from `config`: metrics, the verification pool
/// with the verified-login cache in front of it, the brute-force policy and the sources
/// (not loaded yet: call [`reload_sources`]).
pub(crate) fn assemble(config: Arc<Config>) -> Authenticator {
    let metrics = Arc::new(Metrics::new());
    let sources = config.sources.iter().map(|c| Source::new(c, &metrics)).collect();
    let pool = VerifyPool::with_limits(
        config.verify_threads,
        config.verify_queue,
        config.verify_memory_hard_threads,
        metrics.clone(),
    );
    let verifier = Verifier::new(pool, LoginCache::new(config.cache), metrics.clone());
    let policy = Policy::new(&config.policy, &config.state, Arc::new(SystemClock));
    let router = Arc::new(Router::new(&config.routes));
    Authenticator {
        config,
        sources,
        metrics,
        policy,
        verifier,
        secret_logged: Default::default(),
        router,
    }
}

/// Re-reads every source that changed (all of them with `force`), logging and counting
/// what each reload did. Returns whether a source read a new file (good or broken), so the
/// caller can log what is in use.
pub(crate) fn reload_sources(auth: &Authenticator, force: bool) -> bool {
    let mut read = false;
    for source in &auth.sources {
        let outcome = source.reload(force);
        let status = source.status();
        outcome.log(&status.name, status.ready);
        match outcome.metric() {
            Some(Ok(users)) => auth.metrics.reload_ok(&status.name, users),
            Some(Err(reason)) => auth.metrics.reload_failed(&status.name, reason),
            None => {}
        }
        if let Some(broken) = outcome.broken_lines() {
            auth.metrics.broken_lines(&status.name, broken);
        }
        read |= outcome.read_new_file();
    }
    read
}

/// Decides one login as `serve` would, with the sources loaded once: `mailauthd test`. A
/// test login must not write to the live brute-force state (a shared Redis), nor be refused
/// by it, so the policy is off; it is not nginx either, so no shared secret is asked for.
pub(crate) async fn decide_once(mut config: Config, req: &AuthRequest) -> Decision {
    config.policy.enabled = false;
    config.nginx_secret = None;
    let auth = assemble(Arc::new(config));
    reload_sources(&auth, true);
    // One round of health checks, so the answer shows the backends' state as `serve` sees it.
    if !auth.router.settings().interval.is_zero() {
        route::health::check_all(&auth.router, &auth.metrics).await;
    }
    auth.decide(req).await
}

/// Logs one line with what is in use: each source with its user count (or `unavailable`
/// when it never loaded, `upstream` for an upstream), the total, and the routes.
fn log_in_use(auth: &Authenticator) {
    let statuses: Vec<SourceStatus> = auth.sources.iter().map(Source::status).collect();
    let total: usize = statuses.iter().filter_map(|s| s.users).sum();
    let sources: Vec<String> = statuses.iter().map(|s| format!("{}={}", s.name, s.summary)).collect();
    let r = &auth.config.routes;
    let mut routes = format!("imap={} pop3={} smtp={}", r.imap.spec, r.pop3.spec, r.smtp.spec);
    if !r.domains.is_empty() {
        let domains: Vec<&str> = r.domains.keys().map(String::as_str).collect();
        routes.push_str(&format!(" domains={}", domains.join(",")));
    }
    tracing::info!(sources = %sources.join(" "), users = total, routes = %routes, "in use");
}

/// Tells systemd (`Type=notify`) about a state change; a no-op outside systemd.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

/// Loads the sources, binds the listener and serves until SIGTERM/SIGINT.
pub(crate) async fn serve(config: Config) -> Result<(), DaemonError> {
    let files: Vec<String> = config.users_files().iter().map(|p| p.display().to_string()).collect();
    tracing::info!(
        "mailauthd {} starting with config {}, users file(s) {}",
        env!("CARGO_PKG_VERSION"),
        config.origin,
        files.join(", ")
    );
    for warning in config.exposure_warnings() {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(config);
    let auth = Arc::new(assemble(config.clone()));
    auth.policy.listen();
    // Sources are read before the first request; a slow disk must not block the runtime.
    let initial = auth.clone();
    let _ = tokio::task::spawn_blocking(move || reload_sources(&initial, true)).await;
    for route in [&config.routes.imap, &config.routes.pop3, &config.routes.smtp] {
        tracing::debug!(backend = %route.spec, addr = %route.addr, "route");
    }
    log_in_use(&auth);
    // Backend checks and name re-resolution run beside the logins, never in one.
    let health = tokio::spawn(route::health::run(auth.router.clone(), auth.metrics.clone()));
    let names = tokio::spawn(route::dns::run(
        auth.router.clone(),
        Arc::new(route::dns::DnsResolver::new(&config.routes.nameservers)),
    ));

    let listener = bind(&config.listen).await?;
    let admin = match config.admin.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind {
                addr: format!("admin {addr}"),
                source,
            })?;
            let bound = l.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
            tracing::info!("admin endpoints on {bound}");
            Some(l)
        }
        None => None,
    };
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    tracing::info!("listening on {}", listener.local_addr());
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);

    let reloader = {
        let auth = auth.clone();
        let interval = config.reload_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(if interval.is_zero() {
                Duration::from_secs(3600)
            } else {
                interval
            });
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let force = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: reloading users files");
                        true
                    }
                };
                if !force && interval.is_zero() {
                    continue;
                }
                if force {
                    let now = NotifyState::monotonic_usec_now().ok();
                    let mut state = vec![NotifyState::Reloading];
                    state.extend(now);
                    notify(&state);
                }
                let auth = auth.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if reload_sources(&auth, force) || force {
                        log_in_use(&auth);
                    }
                })
                .await;
                if force {
                    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
                }
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = admin.map(|listener| {
        let state = Arc::new(AdminState {
            auth: auth.clone(),
            token: config.admin.token.clone(),
        });
        let mut stop = stop_rx.clone();
        tokio::spawn(admin::run(listener, state, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        notify(&[NotifyState::Stopping]);
        let _ = stop_tx.send(true);
    };
    let limits = ServerLimits {
        read_timeout: config.read_timeout,
        max_connections: config.max_connections,
    };
    // The accept loop runs as a task on a worker thread, so each connection's task starts
    // on the same thread (tokio's LIFO slot) instead of being handed over from the main
    // thread with a wake-up per login.
    if let Err(e) = tokio::spawn(server::run(listener, auth, limits, shutdown)).await
        && e.is_panic()
    {
        // As if it had run here: the process ends with the panic, and systemd restarts it.
        std::panic::resume_unwind(e.into_panic());
    }
    reloader.abort();
    health.abort();
    names.abort();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    if let ListenAddr::Unix(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
