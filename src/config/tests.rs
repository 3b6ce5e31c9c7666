//! Tests of loading and validating whole configs: defaults, file:line in problems, and
//! each section's checks.

use super::*;

fn from_file_text(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(
        text,
        ConfigOrigin::File(PathBuf::from("/etc/mailauthd.toml")),
        Path::new("/etc"),
    )
}

#[test]
fn builtin_default_matches_the_documented_values() {
    let c = Config::builtin();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN.to_string());
    assert_eq!(c.routes.imap.addr, "127.0.0.1:143".parse().unwrap());
    assert_eq!(c.routes.pop3.addr.port(), 110);
    assert_eq!(c.routes.smtp.addr.port(), 25);
    assert_eq!(c.users_files(), vec![Path::new("./users.htpasswd")]);
    assert_eq!(
        c.auth,
        AuthSettings {
            wait_secs: 3,
            max_attempts: 10
        }
    );
}

#[test]
fn the_contract_example_validates_with_paths_relative_to_the_config() {
    let c = from_file_text(
        "listen = \"unix:/run/mailauthd.sock\"\n[[source]]\nkind = \"htpasswd\"\npath = \"users.htpasswd\"\n\
         [route]\nimap = \"127.0.0.1:143\"\npop3 = \"localhost:110\"\nsmtp = \"[::1]:25\"\n",
    )
    .unwrap();
    assert_eq!(c.listen, ListenAddr::Unix("/run/mailauthd.sock".into()));
    assert_eq!(c.users_files(), vec![Path::new("/etc/users.htpasswd")]);
    assert!(c.routes.pop3.addr.ip().is_loopback());
    assert_eq!(c.routes.smtp.addr, "[::1]:25".parse().unwrap());
}

#[test]
fn every_problem_is_reported_with_key_and_line() {
    let err = from_file_text(
        "listen = \"nowhere\"\nread_timeout = \"soon\"\n[auth]\nmax_attempts = 0\n[route]\nimap = \"127.0.0.1\"\n\
         [[source]]\nkind = \"sql\"\n",
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    assert_eq!(problems.len(), 5, "{text}");
    assert!(text.contains("/etc/mailauthd.toml:1: listen:"), "{text}");
    assert!(text.contains("/etc/mailauthd.toml:2: read_timeout:"), "{text}");
    assert!(text.contains("/etc/mailauthd.toml:4: auth.max_attempts:"), "{text}");
    assert!(text.contains("/etc/mailauthd.toml:6: route.imap:"), "{text}");
    assert!(
        text.contains("/etc/mailauthd.toml:8: source[0].kind: unknown source kind \"sql\""),
        "{text}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let err = from_file_text("listen = \"127.0.0.1:1\"\n\n[auth]\nwiat = \"3s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/mailauthd.toml:4:"), "{err}");
    assert!(err.contains("wiat"), "{err}");
}

#[test]
fn cache_settings_have_defaults_and_are_checked() {
    let c = Config::builtin();
    assert_eq!(c.cache, CacheSettings::default());
    assert_eq!(c.cache.ttl, Duration::from_secs(300));
    let c = from_file_text(
        "[cache]\nttl = \"0s\"\nnegative_ttl = \"5s\"\nmax_entries = 10\n[[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
    )
    .unwrap();
    assert_eq!(
        c.cache,
        CacheSettings {
            ttl: Duration::ZERO,
            negative_ttl: Duration::from_secs(5),
            max_entries: 10
        }
    );
    let err =
        from_file_text("[cache]\nttl = \"soon\"\nmax_entries = -1\n[[source]]\nkind = \"htpasswd\"\npath = \"u\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("/etc/mailauthd.toml:2: cache.ttl:"), "{err}");
    assert!(err.contains("/etc/mailauthd.toml:3: cache.max_entries:"), "{err}");
}

#[test]
fn a_file_config_needs_a_source() {
    let err = from_file_text("").unwrap_err().to_string();
    assert!(err.contains("no [[source]] configured"), "{err}");
}

#[test]
fn the_example_config_documents_the_policy_and_state_defaults() {
    let example = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/mailauthd.toml"
    )))
    .unwrap();
    let builtin = Config::builtin();
    assert_eq!(example.policy, builtin.policy);
    assert_eq!(example.state, builtin.state);
    assert_eq!(builtin.policy.pair_failures, 5);
    assert_eq!(builtin.policy.net_failures, 20);
    assert_eq!(builtin.policy.window, Duration::from_secs(900));
    assert_eq!(builtin.state.on_redis_error, OnRedisError::Local);
    assert_eq!(builtin.state.redis, None);
}

#[test]
fn bad_policy_and_state_values_are_reported_with_their_keys() {
    let err = Config::from_toml(
        "[policy]\nwindow = \"0s\"\nipv6_prefix = 200\nallow = [\"10.0.0.0/33\"]\nhmac_key = \"tiny-key\"\n\
         [state]\nredis = \"http://x\"\non_redis_error = \"ignore\"\n",
        ConfigOrigin::BuiltIn,
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    for key in [
        "policy.window",
        "policy.ipv6_prefix",
        "policy.allow",
        "policy.hmac_key",
        "state.redis",
        "state.on_redis_error",
    ] {
        assert!(err.contains(&format!("{key}:")), "{key} missing in {err}");
    }
    assert!(!err.contains("tiny-key"), "the key is never repeated: {err}");
}

#[test]
fn absurd_durations_are_refused_before_they_overflow_a_clock() {
    let err = from_file_text(
        "read_timeout = \"300000000000 years\"\n[auth]\nwait = \"2h\"\n[cache]\nttl = \"2000 years\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/etc/mailauthd.toml:1: read_timeout:"), "{err}");
    assert!(
        err.contains("/etc/mailauthd.toml:3: auth.wait: \"2h\" is too long; at most 1h"),
        "{err}"
    );
    assert!(err.contains("/etc/mailauthd.toml:5: cache.ttl:"), "{err}");
}

#[test]
fn debug_output_of_a_config_shows_no_secret() {
    let c = from_file_text(
        "[admin]\nlisten = \"127.0.0.1:14381\"\ntoken = \"tok-0123456789abcdef\"\n[policy]\nhmac_key = \"hmac-0123456789abcdef\"\n\
         [state]\nredis = \"redis://:redispass@127.0.0.1:6379/0\"\n[[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
    )
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["tok-0123456789abcdef", "hmac-0123456789abcdef", "redispass"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert_eq!(c.admin.token.as_ref().map(|t| t.expose()), Some("tok-0123456789abcdef"));
}

#[test]
fn the_routing_contract_validates() {
    let c = from_file_text(
        "[route]\nimap = \"10.0.0.1:143\"\npop3 = [\"10.0.0.1:110\", \"10.0.0.2:110\"]\nsmtp = \"localhost:25\"\n\
         [route.domains.\"Example.org\"]\nimap = [\"10.0.1.1:143\", \"10.0.1.2:143\"]\n\
         [route.health]\ninterval = \"5s\"\ntimeout = \"2s\"\n\
         [backend]\nmaster_user = \"proxy\"\nmaster_password = \"0123456789abcdefg\"\nmaster_separator = \"*\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
    )
    .unwrap();
    assert_eq!(c.routes.pop3.targets.len(), 2);
    assert_eq!(c.routes.pop3.addr, "10.0.0.1:110".parse().unwrap());
    assert!(!c.routes.smtp.targets[0].literal && c.routes.smtp.targets[0].addrs[0].ip().is_loopback());
    let d = &c.routes.domains["example.org"];
    assert_eq!((d.imap.as_ref().unwrap().targets.len(), d.pop3.is_none()), (2, true));
    assert_eq!(c.routes.health.interval, Duration::from_secs(5));
    let m = c.backend.master.unwrap();
    assert_eq!((m.user.as_str(), m.separator.as_str()), ("proxy", "*"));
    // Checks are off unless asked for.
    assert!(Config::builtin().routes.health.interval.is_zero());
}

#[test]
fn routing_problems_name_their_keys() {
    let err = from_file_text(
        "[route]\nimap = []\npop3 = [\"10.0.0.1:110\", \"10.0.0.1:110\"]\n[route.domains.\"a b\"]\nimap = \"10.0.0.1:143\"\n\
         [route.domains.\"x.org\"]\n[route.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n\
         [backend]\nmaster_user = \"proxy\"\nmaster_password = \"short\"\n",
    )
    .unwrap_err()
    .to_string();
    for want in [
        ":2: route.imap: an empty list",
        ":3: route.pop3: \"10.0.0.1:110\" is listed twice",
        ":4: route.domains: \"a b\" is not a domain name",
        "route.domains: \"x.org\" names no backend",
        ":9: route.health.timeout:",
        ":12: backend.master_password: use 16 to 256",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    assert!(!err.contains("short\""), "the password is never repeated: {err}");
}

#[test]
fn sentinel_and_cluster_settings_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("redis.pass"), "from-a-file\nignored\n").unwrap();
    let c = Config::from_toml(
        "[state]\nsentinels = [\"127.0.0.1:26379\", \"[::1]:26380\"]\nsentinel_master = \"mymaster\"\n\
         redis_password_file = \"redis.pass\"\nsentinel_password = \"sentinel-secret\"\n\
         [[source]]\nkind = \"htpasswd\"\npath = \"u\"\n",
        ConfigOrigin::File(dir.path().join("m.toml")),
        dir.path(),
    )
    .unwrap();
    assert_eq!(c.state.sentinels, ["127.0.0.1:26379", "[::1]:26380"]);
    assert_eq!(c.state.sentinel_master, "mymaster");
    assert_eq!(c.state.redis_password.as_ref().map(|p| p.expose()), Some("from-a-file"));
    assert_eq!(
        c.state.sentinel_password.as_ref().map(|p| p.expose()),
        Some("sentinel-secret")
    );
    assert!(!format!("{c:?}").contains("sentinel-secret"));

    let err = from_file_text(
        "[state]\nredis = \"redis://127.0.0.1/0\"\nsentinels = [\"127.0.0.1:26379\", \"nowhere\"]\n\
         cluster = [\"127.0.0.1:0\"]\nkey_prefix = \"a{b}\"\n\
         redis_password = \"pw-one\"\nredis_password_file = \"/nonexistent\"\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "/etc/mailauthd.toml:3: state.sentinels: \"nowhere\" is not host:port",
        "/etc/mailauthd.toml:4: state.cluster: \"127.0.0.1:0\" is not host:port",
        "state: set only one of redis, sentinels and cluster",
        "state.sentinel_master: sentinels need sentinel_master",
        "/etc/mailauthd.toml:5: state.key_prefix:",
        "/etc/mailauthd.toml:6: state.redis_password: set state.redis_password or state.redis_password_file, not both",
    ] {
        assert!(err.contains(expected), "{expected} missing in {err}");
    }
    assert!(!err.contains("pw-one"), "{err}");

    let err = from_file_text("[state]\nredis = \"redis://127.0.0.1/0\"\nca_file = \"ca.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/etc/mailauthd.toml:3: state.ca_file: applies to a rediss:// server URL, or with tls = true"),
        "{err}"
    );
    let err = from_file_text("[state]\nredis = \"rediss://127.0.0.1/0\"\nca_file = \"/nonexistent/ca.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.ca_file: cannot read /nonexistent/ca.pem"), "{err}");
    // With tls = true, ca_file serves the sentinels and Cluster nodes.
    let err =
        from_file_text("[state]\ncluster = [\"127.0.0.1:7000\"]\ntls = true\nca_file = \"/nonexistent/ca.pem\"\n")
            .unwrap_err()
            .to_string();
    assert!(!err.contains("applies to"), "{err}");
    assert!(err.contains("state.ca_file: cannot read"), "{err}");
}
