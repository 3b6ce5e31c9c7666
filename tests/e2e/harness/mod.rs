//! The test harness: one shared setup (Dovecot, the recording SMTP backend, mailauthd and
//! nginx on loopback ports in one temp dir), plus helpers to start extra mailauthd/nginx
//! pairs for tests that need their own configuration.
//!
//! The shared setup lives in a static and is torn down from an `atexit` hook, so its
//! processes are stopped (SIGTERM, then SIGKILL, by PID) and its temp dir removed when the
//! test binary exits, whether tests passed or failed. Per-test processes are stopped by their
//! Drop guards. When neither runs (the binary is interrupted or killed), the parent-death
//! signal every process is started with (`spawn`) stops them; `leftovers.rs` checks both.

pub mod clients;
pub mod dovecot;
pub mod expect;
#[path = "../../shared/leak_check.rs"]
pub mod leak_check;
pub mod mailauthd;
pub mod nginx;
pub mod prereq;
pub mod process;
pub mod recorder;
#[path = "../../shared/spawn.rs"]
pub mod spawn;
pub mod users;

use dovecot::Dovecot;
use mailauthd::{Mailauthd, Options};
use nginx::Nginx;
use recorder::Recorder;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Backends shared by every test.
pub struct Backends {
    pub dovecot: Dovecot,
    pub recorder: Recorder,
}

/// A mailauthd and the nginx in front of it. Dropped nginx first.
pub struct Front {
    pub nginx: Nginx,
    pub mailauthd: Mailauthd,
}

pub struct Env {
    // Field order is drop order: clients' fronts, then backends, then the directory.
    pub front: Front,
    pub backends: Backends,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// mailauthd options for this env's backends, with the suite's defaults.
    pub fn options(&self, users: Option<String>) -> Options {
        options(&self.backends, users)
    }

    /// A second mailauthd + nginx pair in a fresh sub-folder, for a test that needs its own.
    pub fn extra_front(&self, name: &str, o: &Options) -> Front {
        let dir = self.path().join(name);
        let mailauthd = Mailauthd::start(&dir.join("mailauthd"), o);
        let port = mailauthd.port;
        let nginx = Nginx::start(&dir.join("nginx"), |d, p| nginx::standard_conf(d, port, p));
        Front { nginx, mailauthd }
    }
}

/// Shared defaults: `wait = "1s"`, `max_attempts = 3`, reload every second.
pub fn options(b: &Backends, users: Option<String>) -> Options {
    Options {
        users,
        reload_interval: "1s",
        wait: "1s",
        max_attempts: 3,
        imap: format!("127.0.0.1:{}", b.dovecot.imap_port),
        pop3: format!("127.0.0.1:{}", b.dovecot.pop3_port),
        smtp: format!("127.0.0.1:{}", b.recorder.port),
        extra: String::new(),
    }
}

fn build() -> Env {
    prereq::check();
    let dir = tempfile::Builder::new()
        .prefix("mailauthd-e2e-")
        .tempdir()
        .expect("temp dir");
    // Dovecot's unprivileged processes must reach files below it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    eprintln!("e2e: shared setup in {}", dir.path().display());
    let dovecot = Dovecot::start(dir.path(), users::ALL);
    let recorder = Recorder::start();
    let backends = Backends { dovecot, recorder };
    let o = options(&backends, Some(users::htpasswd(users::ALL)));
    let mailauthd = Mailauthd::start(&dir.path().join("mailauthd"), &o);
    let port = mailauthd.port;
    let nginx = Nginx::start(&dir.path().join("nginx"), |d, p| nginx::standard_conf(d, port, p));
    Env {
        front: Front { nginx, mailauthd },
        backends,
        dir,
    }
}

static SHARED: Mutex<Option<Result<Arc<Env>, String>>> = Mutex::new(None);

extern "C" fn teardown() {
    let env = SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(Ok(env)) = env {
        if std::env::var_os("E2E_KEEP").is_some() {
            let kept: PathBuf = env.path().to_path_buf();
            eprintln!("e2e: keeping {}", kept.display());
            // Leak the directory, still stop every process.
            if let Ok(env) = Arc::try_unwrap(env) {
                let Env { front, backends, dir } = env;
                drop(front);
                drop(backends);
                let _ = dir.keep();
            }
            return;
        }
        drop(env);
    }
}

/// The shared setup, built by the first test that asks. If building it failed, every test
/// fails with the same message.
pub fn shared() -> Arc<Env> {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        let r = std::panic::catch_unwind(build).map(Arc::new).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "shared setup panicked".to_string())
        });
        // SAFETY: registering a plain extern "C" function with atexit(3).
        unsafe {
            libc::atexit(teardown);
        }
        *g = Some(r);
    }
    match g.as_ref().unwrap() {
        Ok(env) => env.clone(),
        Err(msg) => panic!("shared e2e setup failed: {msg}"),
    }
}
