//! Several instances on highly available shared state: one primary, one replica and three
//! sentinels under two instances, the primary frozen then killed under them; a 3-primary
//! Redis Cluster; a ban made during an outage written back; guesses spread over three
//! instances.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::start;
use crate::common::{Cluster, Daemon, READY_DEADLINE, Redis, header, http_get, wait_until};

const BANNED_IMAP: &str = "[UNAVAILABLE] Too many failed logins, try again later";
const INVALID_IMAP: &str = "[AUTHENTICATIONFAILED] Invalid login or password";
const POLICY: &str = "[policy]\nnet_failures = 4\nhmac_key = \"shared-key-for-the-whole-deployment\"\n";

fn status(reply: &str) -> String {
    header(reply, "Auth-Status").unwrap_or_default()
}

fn readyz(d: &Daemon) -> String {
    http_get(d.admin(), "/readyz").1
}

/// Four distinct wrong passwords from `ip` through `d`: the fourth bans the network.
fn ban_network(d: &Daemon, ip: &str) {
    for user in ["g1", "g2", "g3"] {
        assert_eq!(status(&d.login_from(user, "x", ip)), INVALID_IMAP);
    }
    assert_eq!(status(&d.login_from("g4", "x", ip)), INVALID_IMAP);
}

#[test]
fn a_sentinel_failover_keeps_bans_and_never_answers_a_right_password_as_wrong() {
    let primary = Redis::start();
    let replica = Redis::replica_of(&primary);
    let sentinels: Vec<Redis> = (0..3).map(|_| Redis::sentinel(&primary)).collect();
    for s in &sentinels {
        wait_until(
            READY_DEADLINE,
            "the sentinels to know each other and the replica",
            || {
                s.command("SENTINEL CKQUORUM mymaster").starts_with("+OK 3 usable")
                    && s.command("SENTINEL REPLICAS mymaster")
                        .contains(&replica.port.to_string())
            },
        );
    }
    let list: Vec<String> = sentinels.iter().map(|s| format!("\"127.0.0.1:{}\"", s.port)).collect();
    let config = format!(
        "{POLICY}[state]\nsentinels = [{}]\nsentinel_master = \"mymaster\"\nredis_timeout = \"1s\"\n",
        list.join(", ")
    );
    let one = Arc::new(start(&config));
    let two = Arc::new(start(&config));
    let old = format!("primary=127.0.0.1:{} ", primary.port);
    for d in [&one, &two] {
        assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.10")), "OK");
        wait_until(READY_DEADLINE, "the primary in use and the subscription", || {
            let r = readyz(d);
            r.contains(&old) && r.contains("mode=sentinel") && r.contains("bans_subscription=subscribed")
        });
    }

    // A ban made through one instance refuses the client on the other.
    ban_network(&one, "192.0.2.20");
    assert_eq!(
        status(&two.login_from("alice", "alice-secret", "192.0.2.20")),
        BANNED_IMAP
    );

    // Right passwords from another network, through both instances, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let steady = {
        let (stop, answers, one, two) = (stop.clone(), answers.clone(), one.clone(), two.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for d in [&one, &two] {
                    let answer = status(&d.login_from("bob", "bob-password", "192.0.2.30"));
                    answers.lock().unwrap().push(answer);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // A ban the other instance only heard of (it never asked Redis about this network)...
    ban_network(&one, "192.0.2.21");
    std::thread::sleep(Duration::from_millis(300));
    // ...still refuses at once while the primary hangs: no wait for Redis (1 s) first.
    primary.signal("STOP");
    let asked = Instant::now();
    assert_eq!(
        status(&two.login_from("alice", "alice-secret", "192.0.2.21")),
        BANNED_IMAP
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(500), "refused in {took:?}");

    // The primary dies; the sentinels promote the replica; both instances follow.
    primary.signal("KILL");
    let killed = Instant::now();
    let new = format!("primary=127.0.0.1:{} ", replica.port);
    for d in [&one, &two] {
        wait_until(
            Duration::from_secs(30),
            "the instance to use the promoted replica",
            || {
                let r = readyz(d);
                r.contains(&new) && r.contains("failovers=1") && r.contains("reachable=yes")
            },
        );
    }
    eprintln!(
        "both instances on the new primary {:?} after the kill",
        killed.elapsed()
    );
    assert!(replica.command("ROLE").contains("master"), "promoted");

    // Earlier bans still hold: they were replicated before the kill.
    assert_eq!(replica.command("EXISTS mailauthd:{n:192.0.2.20/32}:b").trim(), ":1");
    for d in [&one, &two] {
        assert_eq!(
            status(&d.login_from("alice", "alice-secret", "192.0.2.20")),
            BANNED_IMAP
        );
    }
    // New failures count on the new primary, and its bans reach the other instance.
    ban_network(&two, "192.0.2.22");
    assert_eq!(replica.command("EXISTS mailauthd:{n:192.0.2.22/32}:b").trim(), ":1");
    assert_eq!(
        status(&one.login_from("alice", "alice-secret", "192.0.2.22")),
        BANNED_IMAP
    );
    wait_until(READY_DEADLINE, "the subscription to follow the primary", || {
        readyz(&one).contains("bans_subscription=subscribed")
    });

    // Listed and lifted through the new primary, the lifting heard by the other instance.
    let out = two.bans_cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for net in ["192.0.2.20/32", "192.0.2.21/32", "192.0.2.22/32"] {
        assert!(listed.contains(&format!("net net={net} user=- ttl=")), "{out:?}");
    }
    let out = two.bans_cli(&["clear", "--ip", "192.0.2.22"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 1 ban(s)\n", "{out:?}");
    wait_until(Duration::from_secs(5), "the lifting to be heard", || {
        status(&one.login_from("alice", "alice-secret", "192.0.2.22")) == "OK"
    });

    stop.store(true, Ordering::SeqCst);
    steady.join().expect("the steady logins");
    let answers = answers.lock().unwrap();
    let ok = answers.iter().filter(|a| *a == "OK").count();
    eprintln!(
        "{} right-password logins during the failover, {ok} accepted",
        answers.len()
    );
    assert!(ok > 10, "{answers:?}");
    assert!(!answers.iter().any(|a| a == INVALID_IMAP), "{answers:?}");
    // Each change of state is logged once per instance.
    for d in [&one, &two] {
        let log = d.log();
        assert_eq!(log.matches("redis primary is now").count(), 1, "{log}");
        assert_eq!(log.matches("redis is unreachable (").count(), 1, "{log}");
    }
    let metrics = http_get(one.admin(), "/metrics").1;
    assert!(metrics.contains("mailauthd_state_failovers_seen 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "mailauthd_state{{mode=\"sentinel\",primary=\"127.0.0.1:{}\"}} 1",
            replica.port
        )),
        "{metrics}"
    );
}

#[test]
fn a_ban_on_a_redis_cluster_reaches_the_other_instance_and_is_listed_and_lifted() {
    let cluster = Cluster::start();
    // A generous timeout: an operation given up on a loaded machine would be counted in the
    // process instead, and this test is about what reaches the Cluster.
    let config = format!(
        "{POLICY}[state]\ncluster = {}\nredis_timeout = \"2s\"\n",
        cluster.toml_nodes()
    );
    let one = start(&config);
    let two = start(&config);
    for d in [&one, &two] {
        assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.40")), "OK");
        wait_until(READY_DEADLINE, "the subscription", || {
            let r = readyz(d);
            r.contains("mode=cluster") && r.contains("bans_subscription=subscribed")
        });
    }
    // A success is remembered in the slot of its own subject.
    let key = "mailauthd:{n:192.0.2.40/32}:s";
    assert_eq!(cluster.node_of(key).command(&format!("EXISTS {key}")).trim(), ":1");
    ban_network(&one, "192.0.2.41");
    assert_eq!(
        status(&two.login_from("alice", "alice-secret", "192.0.2.41")),
        BANNED_IMAP
    );
    // The ban lives on the node of its slot; the window keys of other subjects elsewhere.
    let key = "mailauthd:{n:192.0.2.41/32}:b";
    assert_eq!(cluster.node_of(key).command(&format!("EXISTS {key}")).trim(), ":1");

    let out = two.bans_cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.contains("net net=192.0.2.41/32 user=- ttl="), "{out:?}");
    let out = one.bans_cli(&["clear", "--ip", "192.0.2.41"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 1 ban(s)\n", "{out:?}");
    // The lifting is heard by the other instance too.
    wait_until(Duration::from_secs(5), "the lifted ban to be forgotten", || {
        status(&two.login_from("alice", "alice-secret", "192.0.2.41")) == "OK"
    });
    for d in [&one, &two] {
        let log = d.log();
        assert!(
            !log.contains("redis answered an error") && !log.contains("redis is unreachable"),
            "{log}"
        );
    }
}

#[test]
fn a_ban_made_while_redis_is_down_is_written_back_and_holds_on_the_other_instance() {
    let redis = Redis::start();
    let port = redis.port;
    let config = format!(
        "{POLICY}pair_failures = 2\n[state]\nredis = \"{}\"\nredis_timeout = \"200ms\"\n",
        redis.url()
    );
    let one = start(&config);
    let two = start(&config);
    for d in [&one, &two] {
        assert_eq!(status(&d.login_from("alice", "alice-secret", "192.0.2.50")), "OK");
    }
    drop(redis);
    // Counted in the process ("local"): the second wrong password bans the pair there.
    assert_eq!(status(&one.login_from("bob", "wrong1", "192.0.2.51")), INVALID_IMAP);
    assert_eq!(status(&one.login_from("bob", "wrong2", "192.0.2.51")), INVALID_IMAP);
    assert_eq!(
        status(&one.login_from("bob", "bob-password", "192.0.2.51")),
        BANNED_IMAP
    );

    let redis = Redis::start_on(port);
    let key = "mailauthd:{p:192.0.2.51/32|bob}:b";
    wait_until(Duration::from_secs(15), "the ban to be written to Redis", || {
        one.login_from("alice", "alice-secret", "192.0.2.50");
        redis.command(&format!("EXISTS {key}")).trim() == ":1"
    });
    let ttl: i64 = redis
        .command(&format!("PTTL {key}"))
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a ttl");
    assert!(ttl > 0 && ttl <= 15 * 60 * 1000, "it keeps its expiry: {ttl}");
    wait_until(Duration::from_secs(15), "the other instance to use Redis again", || {
        status(&two.login_from("bob", "bob-password", "192.0.2.51")) == BANNED_IMAP
    });
    assert!(
        one.log()
            .contains("bans made while redis was unreachable written to it")
    );
}

#[test]
fn guesses_spread_over_three_instances_ban_the_network_as_one_instance_would() {
    let redis = Redis::start();
    let config = format!(
        "[policy]\nnet_failures = 9\nhmac_key = \"shared-key-for-the-whole-deployment\"\n\
         [state]\nredis = \"{}\"\non_redis_error = \"tempfail\"\nredis_timeout = \"2s\"\n",
        redis.url()
    );
    let instances: Vec<Daemon> = (0..3).map(|_| start(&config)).collect();
    let ip = "192.0.2.60";
    // Eight distinct users guessed, round robin: not banned yet anywhere.
    for i in 0..8 {
        let d = &instances[i % 3];
        assert_eq!(
            status(&d.login_from(&format!("user{i}"), "guess", ip)),
            INVALID_IMAP,
            "guess {i}"
        );
    }
    // (No right password from the network in between: a success makes it trusted, with a
    // higher limit.)
    // The ninth, wherever it lands, bans the network for all three.
    assert_eq!(status(&instances[2].login_from("user8", "guess", ip)), INVALID_IMAP);
    for d in &instances {
        assert_eq!(status(&d.login_from("alice", "alice-secret", ip)), BANNED_IMAP);
    }
    assert_eq!(redis.command("EXISTS mailauthd:{n:192.0.2.60/32}:b").trim(), ":1");
}

#[test]
fn passwords_for_the_sentinels_and_the_primary_are_sent_and_never_logged() {
    let primary = Redis::start_with(&["--requirepass", "primary-pass-0123"]);
    let sentinel = Redis::sentinel_with(
        &primary,
        1,
        "sentinel auth-pass mymaster primary-pass-0123\nrequirepass sentinel-pass-0123\n",
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("redis.pass"), "primary-pass-0123\n").expect("the password file");
    let config = |redis_pass: &str| {
        format!(
            "{POLICY}[state]\nsentinels = [\"127.0.0.1:{}\"]\nsentinel_master = \"mymaster\"\n\
             redis_password_file = \"{}\"\nsentinel_password = \"{redis_pass}\"\non_redis_error = \"tempfail\"\n",
            sentinel.port,
            dir.path().join("redis.pass").display(),
        )
    };
    let right = start(&config("sentinel-pass-0123"));
    // "tempfail": an OK proves the policy reached Redis through the sentinel (the first
    // login may come before the connection is made, on a loaded machine).
    wait_until(Duration::from_secs(10), "a login through the sentinel", || {
        status(&right.login_from("alice", "alice-secret", "192.0.2.70")) == "OK"
    });
    assert!(readyz(&right).contains("reachable=yes"), "{}", readyz(&right));

    let wrong = start(&config("not-the-sentinel-pass"));
    assert_eq!(
        status(&wrong.login_from("alice", "alice-secret", "192.0.2.70")),
        "[UNAVAILABLE] Temporary authentication failure, try again later"
    );
    for d in [&right, &wrong] {
        let log = d.log();
        assert!(!log.contains("pass-0123"), "{log}");
    }
}

#[test]
fn concurrent_guesses_over_three_instances_overshoot_only_by_those_in_flight() {
    let redis = Redis::start();
    let config = format!(
        "[policy]\nnet_failures = 9\nhmac_key = \"shared-key-for-the-whole-deployment\"\n\
         [state]\nredis = \"{}\"\non_redis_error = \"tempfail\"\nredis_timeout = \"2s\"\n",
        redis.url()
    );
    let instances: Vec<Arc<Daemon>> = (0..3).map(|_| Arc::new(start(&config))).collect();
    // 24 distinct guesses at once, 8 through each instance, from one network.
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            let d = instances[i % 3].clone();
            std::thread::spawn(move || status(&d.login_from(&format!("user{i}"), "guess", "192.0.2.80")))
        })
        .collect();
    let answers: Vec<String> = guesses.into_iter().map(|g| g.join().expect("a guess")).collect();
    let checked = answers.iter().filter(|a| *a == INVALID_IMAP).count();
    let refused = answers.iter().filter(|a| *a == BANNED_IMAP).count();
    eprintln!("24 concurrent guesses, limit 9: {checked} checked, {refused} refused as banned");
    assert_eq!(checked + refused, 24, "{answers:?}");
    // The limit is reached whatever the spread; past it, only guesses already in flight
    // when the ban was written are still checked.
    assert!(checked >= 9, "{answers:?}");
    assert_eq!(redis.command("EXISTS mailauthd:{n:192.0.2.80/32}:b").trim(), ":1");
    for d in &instances {
        assert_eq!(
            status(&d.login_from("alice", "alice-secret", "192.0.2.80")),
            BANNED_IMAP
        );
    }
}

/// Runs openssl (the reference tool) with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = crate::common::spawn::spawn(cmd)
        .expect("openssl (Debian package openssl)")
        .wait_with_output()
        .expect("openssl to finish");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`) in `dir`, made with openssl.
fn make_certs(dir: &std::path::Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
    ]
    .concat();
    openssl(dir, &ca);
    let csr = [
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
    ]
    .concat();
    openssl(dir, &csr);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn a_rediss_server_is_used_when_its_certificate_chains_to_ca_file() {
    let certs = tempfile::tempdir().expect("a temp dir");
    make_certs(certs.path());
    let redis = Redis::start_tls(certs.path());
    let config = |ca: &str| {
        format!(
            "{POLICY}[state]\nredis = \"rediss://127.0.0.1:{}/0\"\n{ca}on_redis_error = \"tempfail\"\nredis_timeout = \"2s\"\n",
            redis.port
        )
    };
    let trusted = start(&config(&format!(
        "ca_file = \"{}\"\n",
        certs.path().join("ca.pem").display()
    )));
    // "tempfail": an OK proves the policy reached Redis over TLS.
    assert_eq!(status(&trusted.login_from("alice", "alice-secret", "192.0.2.90")), "OK");
    ban_network(&trusted, "192.0.2.91");
    assert_eq!(
        status(&trusted.login_from("alice", "alice-secret", "192.0.2.91")),
        BANNED_IMAP
    );
    // Without the CA the server's certificate is not trusted: nothing is decided.
    let untrusted = start(&config(""));
    assert_eq!(
        status(&untrusted.login_from("alice", "alice-secret", "192.0.2.90")),
        "[UNAVAILABLE] Temporary authentication failure, try again later"
    );
}

#[test]
fn sentinels_and_their_primary_are_used_over_tls_with_tls_and_ca_file() {
    let certs = tempfile::tempdir().expect("a temp dir");
    make_certs(certs.path());
    let primary = Redis::start_tls(certs.path());
    let sentinel = Redis::sentinel_tls(&primary, certs.path());
    let config = |ca: &str| {
        format!(
            "{POLICY}[state]\nsentinels = [\"127.0.0.1:{}\"]\nsentinel_master = \"mymaster\"\ntls = true\n{ca}\
             on_redis_error = \"tempfail\"\nredis_timeout = \"2s\"\n",
            sentinel.port
        )
    };
    let trusted = start(&config(&format!(
        "ca_file = \"{}\"\n",
        certs.path().join("ca.pem").display()
    )));
    // "tempfail": an OK proves the policy reached the primary the sentinel named, over TLS.
    wait_until(Duration::from_secs(10), "a login through the TLS sentinel", || {
        status(&trusted.login_from("alice", "alice-secret", "192.0.2.95")) == "OK"
    });
    assert!(
        readyz(&trusted).contains(&format!("primary=127.0.0.1:{} ", primary.port)),
        "{}",
        readyz(&trusted)
    );
    ban_network(&trusted, "192.0.2.96");
    assert_eq!(
        status(&trusted.login_from("alice", "alice-secret", "192.0.2.96")),
        BANNED_IMAP
    );
    let untrusted = start(&config(""));
    assert_eq!(
        status(&untrusted.login_from("alice", "alice-secret", "192.0.2.95")),
        "[UNAVAILABLE] Temporary authentication failure, try again later"
    );
}

#[test]
fn a_redis_cluster_is_used_over_tls_with_tls_and_ca_file() {
    let certs = tempfile::tempdir().expect("a temp dir");
    make_certs(certs.path());
    let cluster = Cluster::start_tls(certs.path());
    let config = format!(
        "{POLICY}[state]\ncluster = {}\ntls = true\nca_file = \"{}\"\non_redis_error = \"tempfail\"\nredis_timeout = \"2s\"\n",
        cluster.toml_nodes(),
        certs.path().join("ca.pem").display()
    );
    let one = start(&config);
    let two = start(&config);
    // "tempfail": an OK proves the policy reached the Cluster over TLS.
    for d in [&one, &two] {
        wait_until(Duration::from_secs(15), "a login through the TLS cluster", || {
            status(&d.login_from("alice", "alice-secret", "192.0.2.97")) == "OK"
        });
        wait_until(READY_DEADLINE, "the subscription over TLS", || {
            readyz(d).contains("bans_subscription=subscribed")
        });
    }
    ban_network(&one, "192.0.2.98");
    assert_eq!(
        status(&two.login_from("alice", "alice-secret", "192.0.2.98")),
        BANNED_IMAP
    );
}
