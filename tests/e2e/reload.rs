//! Scenario 7: a password changed in the users file while nginx and mailauthd run. Within
//! the reload interval (or right after SIGHUP) the new password works and the old one fails,
//! and another user logging in over and over meanwhile never sees a failure.

use crate::harness::clients::{How, attempt, python, smtp};
use crate::harness::expect::*;
use crate::harness::process::poll;
use crate::harness::users::{self, RELOAD_NEW_PASS, User, htpasswd};
use crate::harness::{Front, shared};
use serde_json::json;
use std::time::{Duration, Instant};

fn login(front: &Front, name: &str, pass: &str) -> serde_json::Value {
    smtp(front.nginx.ports.smtp, vec![attempt(How::Plain, name, pass)], None)
}

/// Logins of `u` in a loop on another thread until the returned closure is called, which
/// yields every SMTP reply code seen.
fn steady_logins(front: &Front, u: User, tag: &str) -> impl FnOnce() -> Vec<serde_json::Value> + use<> {
    let stop = front.mailauthd.config_path.with_file_name(format!("stop-{tag}"));
    let spec = json!({
        "proto": "smtp_loop", "port": front.nginx.ports.smtp, "user": u.name, "pass": u.pass,
        "count": 2000, "secs": 45, "stop_file": stop.to_str().unwrap(),
    });
    let h = std::thread::spawn(move || python(spec));
    move || {
        std::fs::write(&stop, "").unwrap();
        let v = h.join().expect("login loop thread");
        v["results"].as_array().cloned().unwrap_or_default()
    }
}

fn change_password(front: &Front, how: impl FnOnce()) -> Duration {
    let (c, s) = (users::RELOAD_CHANGED, users::RELOAD_STEADY);
    let r = login(front, c.name, c.pass);
    logged_in(&r, 0);
    let finish = steady_logins(front, s, &format!("{}", front.mailauthd.port));
    std::thread::sleep(Duration::from_millis(300)); // let the loop get going (not readiness)
    let changed = [
        users::User {
            pass: RELOAD_NEW_PASS,
            ..c
        },
        s,
    ];
    front.mailauthd.replace_users(&htpasswd(&changed));
    let t0 = Instant::now();
    how();
    poll("the new password to work", Duration::from_secs(15), || {
        let r = login(front, c.name, RELOAD_NEW_PASS);
        (r["attempts"][0]["ok"] == true).then_some(())
    });
    let took = t0.elapsed();
    let r = login(front, c.name, c.pass);
    refused(&r, 0, SMTP_INVALID);
    let results = finish();
    assert!(
        results.len() >= 3,
        "the loop should have logged in a few times: {results:?}"
    );
    let bad: Vec<_> = results.iter().filter(|r| r["code"] != 235).collect();
    assert!(
        bad.is_empty(),
        "{} of {} steady logins failed: {bad:?}",
        bad.len(),
        results.len()
    );
    took
}

#[test]
fn reload_by_polling() {
    let env = shared();
    let users = [users::RELOAD_CHANGED, users::RELOAD_STEADY];
    let front = env.extra_front("reload-poll", &env.options(Some(htpasswd(&users))));
    let took = change_password(&front, || {});
    // reload_interval is 1 s; a failed poll costs its 1 s Auth-Wait on top.
    assert!(took < Duration::from_secs(5), "new password took {took:?}");
}

#[test]
fn reload_by_sighup() {
    let env = shared();
    let users = [users::RELOAD_CHANGED, users::RELOAD_STEADY];
    let mut o = env.options(Some(htpasswd(&users)));
    // Polling is too slow to matter here: only SIGHUP can explain a quick change.
    o.reload_interval = "600s";
    let front = env.extra_front("reload-hup", &o);
    let took = change_password(&front, || front.mailauthd.sighup());
    assert!(took < Duration::from_secs(5), "new password took {took:?} after SIGHUP");
}
