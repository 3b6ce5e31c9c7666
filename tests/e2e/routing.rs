//! Routing through the real nginx to two Dovecot stores whose mailboxes differ (the message
//! subject names the store): a domain's users land on its store, a user with `host=`/`port=`
//! on the other; a domain on both stores keeps each user on one, a store stopped mid-test
//! loses only its users to the other within one health interval, both stopped is a
//! temporary failure; and a Dovecot master user lets a CRAM-MD5 login of a user stored as
//! `{CRAM-MD5}` (made by `doveadm pw`) reach its mailbox.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::clients::{How, attempt, imap};
use crate::harness::dovecot::{Dovecot, Store};
use crate::harness::process::run;
use crate::harness::users::{Stored, User, htpasswd_line};
use crate::harness::{Front, shared};

const ANN: User = User {
    name: "route-ann@one.test",
    pass: "ann-pw",
    stored: Stored::Plain,
};
const HAL: User = User {
    name: "route-hal@one.test",
    pass: "hal-pw",
    stored: Stored::Plain,
};
const CRAM: User = User {
    name: "route-cram@one.test",
    pass: "cram pw 123",
    stored: Stored::Plain,
};
/// Users of a domain served by both stores.
const BOTH: [User; 6] = [
    User {
        name: "route-b0@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
    User {
        name: "route-b1@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
    User {
        name: "route-b2@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
    User {
        name: "route-b3@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
    User {
        name: "route-b4@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
    User {
        name: "route-b5@both.test",
        pass: "b-pw",
        stored: Stored::Plain,
    },
];
const MASTER: (&str, &str) = ("proxy", "master-pw-0123456789");
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const IMAP_TEMPFAIL: &str = "NO [UNAVAILABLE] Temporary authentication failure, try again later";

/// Which store a session reached: the subject of its one message.
fn store_of(r: &Value) -> Result<String, String> {
    if r["attempts"][0]["ok"] != true {
        return Err(r["attempts"][0]["resp"].as_str().unwrap_or("").to_owned());
    }
    let fetch = r["fetch"].as_str().unwrap_or("");
    ["store A", "store B"]
        .into_iter()
        .find(|s| fetch.contains(s))
        .map(str::to_owned)
        .ok_or_else(|| format!("no store in {r:#}"))
}

/// Dovecot's `{CRAM-MD5}` state of `pass`, made by Dovecot itself.
fn doveadm_cram(pass: &str) -> String {
    let mut cmd = Command::new("doveadm");
    cmd.args(["pw", "-s", "CRAM-MD5", "-p", pass]);
    let out = run(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "doveadm pw: {}", out.stderr);
    out.stdout.trim().to_owned()
}

#[test]
fn routes_by_user_and_domain_fail_over_and_log_in_as_the_master() {
    let env = shared();
    let dir = env.path().join("routing");
    let mut all: Vec<User> = vec![ANN, HAL, CRAM];
    all.extend(BOTH);
    let mut a = Some(Dovecot::start_store(
        &dir,
        &all,
        &Store {
            name: "store-a",
            subject: "hello from store A",
            master: Some(MASTER),
        },
    ));
    let mut b = Some(Dovecot::start_store(
        &dir,
        &all,
        &Store {
            name: "store-b",
            subject: "hello from store B",
            master: Some(MASTER),
        },
    ));
    let (a_port, b_port) = (a.as_ref().unwrap().imap_port, b.as_ref().unwrap().imap_port);
    let mut users = htpasswd_line(ANN.name, ANN.pass, ANN.stored);
    users.push_str(&format!(
        "{}::::::proxy host=127.0.0.1 port={b_port}\n",
        htpasswd_line(HAL.name, HAL.pass, HAL.stored).trim_end()
    ));
    users.push_str(&format!("{}:{}\n", CRAM.name, doveadm_cram(CRAM.pass)));
    for u in BOTH {
        users.push_str(&htpasswd_line(u.name, u.pass, u.stored));
    }
    let mut o = env.options(Some(users));
    o.extra = format!(
        "[route.domains.\"one.test\"]\nimap = \"127.0.0.1:{a_port}\"\n\
         [route.domains.\"both.test\"]\nimap = [\"127.0.0.1:{a_port}\", \"127.0.0.1:{b_port}\"]\n\
         [route.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         [backend]\nmaster_user = \"{}\"\nmaster_password = \"{}\"\n",
        MASTER.0, MASTER.1
    );
    let front: Front = env.extra_front("routing", &o);
    let port = front.nginx.ports.imap;
    let login = |u: User, how: How| store_of(&imap(port, vec![attempt(how, u.name, u.pass)]));

    // The domain's store, and host=/port= over it.
    assert_eq!(login(ANN, How::Quoted), Ok("store A".into()));
    assert_eq!(login(HAL, How::Quoted), Ok("store B".into()));
    assert_eq!(a.as_ref().unwrap().logins(ANN.name).len(), 1);
    assert_eq!(b.as_ref().unwrap().logins(HAL.name).len(), 1);

    // CRAM-MD5 of a {CRAM-MD5} user: nginx logs in as `user*proxy` with the master password.
    assert_eq!(login(CRAM, How::Cram), Ok("store A".into()));
    let logins = a.as_ref().unwrap().logins(CRAM.name);
    assert_eq!(logins.len(), 1, "{logins:?}");
    let log = a.as_ref().unwrap().log_text();
    assert!(
        log.contains(&format!("Master user logging in as {}", CRAM.name))
            && log.contains(&format!("user={}\toriginal_user={}", CRAM.name, MASTER.0)),
        "Dovecot did not log the master login"
    );

    // A domain on both stores: each user sticks to one, and both stores get some.
    let before: Vec<Result<String, String>> = BOTH.iter().map(|u| login(*u, How::Quoted)).collect();
    assert!(
        before.contains(&Ok("store A".into())) && before.contains(&Ok("store B".into())),
        "{before:?}"
    );
    assert_eq!(before, BOTH.iter().map(|u| login(*u, How::Quoted)).collect::<Vec<_>>());

    // Store B stops: within one health interval its users move to A, the others stay.
    let moved = BOTH
        .iter()
        .zip(&before)
        .find(|(_, s)| *s == &Ok("store B".to_owned()))
        .map(|(u, _)| *u)
        .unwrap();
    let stopped = Instant::now();
    drop(b.take());
    // One interval plus the check's timeout, with room for the Python clients' own time on
    // a loaded machine (tests/it/routing.rs bounds the daemon's part tightly).
    while login(moved, How::Quoted) != Ok("store A".into()) {
        assert!(stopped.elapsed() < HEALTH_INTERVAL * 3, "B's users did not move");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("store B stopped: its users moved after {:?}", stopped.elapsed());
    for (u, was) in BOTH.iter().zip(&before) {
        assert_eq!(
            login(*u, How::Quoted),
            Ok("store A".into()),
            "{}: was on {was:?}",
            u.name
        );
    }
    // A user routed by host= to the stopped store is not moved behind its back.
    assert!(login(HAL, How::Quoted).is_err());

    // Both stopped: a temporary failure, not a wrong password.
    drop(a.take());
    let stopped = Instant::now();
    loop {
        match login(ANN, How::Quoted) {
            Err(text) if text == IMAP_TEMPFAIL => break,
            other => assert!(stopped.elapsed() < HEALTH_INTERVAL * 4, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(front.mailauthd.log_text().contains("reason=\"backends-down\""));
}
