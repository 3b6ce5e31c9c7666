//! Scenario 9: what nginx knows about the connection, through nginx's real TLS. A test CA,
//! nginx's server certificate and client certificates are made here with openssl; Python's
//! ssl clients speak IMAP (plain port + STARTTLS, and IMAPS), POP3S and SMTP with STARTTLS.
//!
//! - `[tls] required_for`: a cleartext login on the plain port is refused with RFC 5530's
//!   `[PRIVACYREQUIRED]` / RFC 4954's `538 5.7.11`; the same login after STARTTLS (or on the
//!   implicit-TLS port) reaches the backend.
//! - `[external]`: SASL EXTERNAL with a certificate from the CA that names the user logs in
//!   (nginx gets the stored cleartext for Dovecot); a certificate naming someone else, one
//!   from a foreign CA (nginx's `optional_no_ca` passes `FAILED:...`) and no certificate at
//!   all are refused.
//! - `[nginx]` shared secret: nginx's `auth_http_header` line carries it; an nginx without
//!   it gets a temporary failure.
//! - `[client] real_ip_from`: behind a PROXY-protocol balancer the address it names is the
//!   client (`allow_nets`, the log line); `[listener.NAME]` rules apply to the nginx server
//!   that names it, and such a server must repeat the secret line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::mailauthd::Mailauthd;
use crate::harness::nginx::{Nginx, Ports};
use crate::harness::process::run;
use crate::harness::{Env, Front, shared, users};

const TLS_CLIENTS_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tls_clients.py");
const SECRET: &str = "e2e-shared-secret-0123";

/// The certificates of one test, all in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(&self.dir);
        let out = run(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "openssl {args:?}: {}", out.stderr);
    }

    /// An EC key and a certificate for `subject`, signed by `ca` (self-signed without one).
    fn issue(&self, name: &str, subject: &str, ca: Option<&str>, ext: &str) {
        let (key, cert, csr, extfile) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(self.dir.join(&extfile), ext).unwrap();
        let newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        match ca {
            None => {
                let mut args = vec!["req", "-x509"];
                args.extend(newkey);
                args.extend(["-days", "2", "-subj", subject, "-keyout", &key, "-out", &cert]);
                self.openssl(&args);
            }
            Some(ca) => {
                let mut args = vec!["req"];
                args.extend(newkey);
                args.extend(["-subj", subject, "-keyout", &key, "-out", &csr]);
                self.openssl(&args);
                let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
                self.openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_cert,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    "4096",
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                    "-out",
                    &cert,
                ]);
            }
        }
    }

    fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki { dir: dir.to_owned() };
        let ca =
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n";
        pki.issue("ca", "/CN=mailauthd e2e CA", None, ca);
        let leaf = "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
        pki.issue(
            "server",
            "/CN=mail.test",
            Some("ca"),
            &format!("{leaf}keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:mail.test\n"),
        );
        let client = format!("{leaf}keyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n");
        pki.issue(
            "good",
            &format!("/O=Example/CN={}", users::TLS_EXT.name),
            Some("ca"),
            &client,
        );
        pki.issue("other", "/O=Example/CN=someone-else@example.test", Some("ca"), &client);
        // The right name, but from a CA nginx does not trust.
        pki.issue("foreign", &format!("/CN={}", users::TLS_EXT.name), None, &client);
        pki
    }
}

/// nginx with TLS: IMAP with STARTTLS on the `imap` port, IMAPS on `mx`, POP3S on `pop3`,
/// SMTP with STARTTLS on `smtp`; client certificates asked for and passed to mailauthd as
/// verified or not (`optional_no_ca`), as protocol.md §6 V14 captured.
fn tls_conf(dir: &Path, auth_port: u16, p: &Ports, pki: &Pki, secret: bool) -> String {
    let d = dir.display();
    let secret = if secret {
        format!("auth_http_header X-Auth-Key \"{SECRET}\";")
    } else {
        String::new()
    };
    format!(
        r#"# generated by the mailauthd e2e suite (scenario 9)
load_module {module};
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
mail {{
    server_name mail.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    auth_http_timeout 15s;
    {secret}
    proxy_pass_error_message on;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {ca};
    ssl_verify_client optional_no_ca;
    imap_auth plain login external;
    pop3_auth plain external;
    smtp_auth plain login external;
    server {{ listen 127.0.0.1:{imap}; protocol imap; starttls on; }}
    server {{ listen 127.0.0.1:{mx} ssl; protocol imap; }}
    server {{ listen 127.0.0.1:{pop3} ssl; protocol pop3; }}
    server {{ listen 127.0.0.1:{smtp}; protocol smtp; starttls on; }}
}}
"#,
        module = crate::harness::prereq::MAIL_MODULE,
        cert = pki.path("server.pem"),
        key = pki.path("server.key"),
        ca = pki.path("ca.pem"),
        imap = p.imap,
        mx = p.mx,
        pop3 = p.pop3,
        smtp = p.smtp,
    )
}

/// A mailauthd with the connection rules and the TLS nginx in front of it, in `name`.
fn tls_front(env: &Env, name: &str, nginx_sends_secret: bool) -> (Front, Pki) {
    let dir = env.path().join(name);
    let pki = Pki::make(&dir.join("pki"));
    let mut o = env.options(Some(users::htpasswd(&[users::TLS_PLAIN, users::TLS_EXT])));
    o.extra = format!(
        "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"{SECRET}\"\n\
         [tls]\nrequired_for = [\"imap\", \"pop3\", \"smtp\"]\nmin_protocol = \"TLSv1.2\"\n\
         [external]\ncertificate_user = \"subject-cn\"\n"
    );
    let mailauthd = Mailauthd::start(&dir.join("mailauthd"), &o);
    let port = mailauthd.port;
    let nginx = Nginx::start(&dir.join("nginx"), |d, p| {
        tls_conf(d, port, p, &pki, nginx_sends_secret)
    });
    (Front { nginx, mailauthd }, pki)
}

/// One client session of `tls_clients.py`.
fn client(pki: &Pki, spec: Value, cert: Option<&str>) -> Value {
    let mut spec = spec;
    spec["ca"] = json!(pki.path("ca.pem"));
    spec["cert"] = json!(cert.map(|c| pki.path(&format!("{c}.pem"))));
    spec["key"] = json!(cert.map(|c| pki.path(&format!("{c}.key"))));
    let mut cmd = Command::new(crate::harness::prereq::python3());
    cmd.arg(TLS_CLIENTS_PY).arg(spec.to_string());
    let o = run(cmd, Duration::from_secs(60));
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "tls_clients.py gave no JSON ({e}) for {spec}\n{}\n{}",
            o.stdout, o.stderr
        )
    })
}

fn login(proto: &str, port: u16, starttls: bool, user: &str, pass: &str) -> Value {
    json!({"proto": proto, "port": port, "starttls": starttls, "method": "login", "user": user, "pass": pass})
}

fn external(proto: &str, port: u16, starttls: bool, authzid: &str) -> Value {
    json!({"proto": proto, "port": port, "starttls": starttls, "method": "external", "authzid": authzid})
}

fn ok(v: &Value) {
    assert_eq!(v["ok"], true, "should have logged in: {v:#}");
    assert_eq!(v["tls"].as_str().map(|t| t.starts_with("TLSv1.")), Some(true), "{v:#}");
}

fn refused_with(v: &Value, text: &str) {
    assert_eq!(v["ok"], false, "should have been refused: {v:#}");
    let got = v["text"].as_str().unwrap_or("");
    assert!(got.contains(text), "want {text:?} in the refusal: {v:#}");
}

/// The log lines of mailauthd's decisions with `needle`.
fn decisions(front: &Front, needle: &str) -> Vec<String> {
    front
        .mailauthd
        .log_text()
        .lines()
        .filter(|l| l.contains("login ") && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn cleartext_logins_need_tls_and_pass_after_starttls() {
    let env = shared();
    let (front, pki) = tls_front(&env, "tls-required", true);
    let p = &front.nginx.ports;
    let u = users::TLS_PLAIN;

    // IMAP LOGIN on the plain port: refused by mailauthd (RFC 5530), nothing reaches Dovecot.
    let r = client(&pki, login("imap", p.imap, false, u.name, u.pass), None);
    refused_with(&r, "[PRIVACYREQUIRED]");
    assert_eq!(r["tls"], Value::Null);
    // SMTP AUTH PLAIN without STARTTLS: RFC 4954's 538 5.7.11.
    let r = client(&pki, login("smtp", p.smtp, false, u.name, u.pass), None);
    refused_with(
        &r,
        "538 5.7.11 Encryption required for requested authentication mechanism",
    );
    assert!(env.backends.dovecot.logins(u.name).is_empty());
    assert_eq!(decisions(&front, "reason=\"tls-required\"").len(), 2);

    // The same logins after STARTTLS, and on the implicit-TLS ports, reach the backends.
    let r = client(&pki, login("imap", p.imap, true, u.name, u.pass), None);
    ok(&r);
    assert!(r["after"].as_str().unwrap_or("").starts_with("OK"), "SELECT: {r:#}");
    ok(&client(&pki, login("imaps", p.mx, false, u.name, u.pass), None));
    let r = client(&pki, login("pop3s", p.pop3, false, u.name, u.pass), None);
    ok(&r);
    let r = client(&pki, login("smtp", p.smtp, true, u.name, u.pass), None);
    ok(&r);
    assert!(r["text"].as_str().unwrap_or("").starts_with("235"), "{r:#}");
    assert_eq!(
        decisions(&front, "result=\"ok\"").len(),
        4,
        "{}",
        front.mailauthd.log_text()
    );
}

#[test]
fn external_logs_in_with_a_certificate_that_names_the_user() {
    let env = shared();
    let (front, pki) = tls_front(&env, "tls-external", true);
    let p = &front.nginx.ports;
    let u = users::TLS_EXT;

    // A certificate from the CA naming the user: IMAPS, POP3S and SMTP after STARTTLS. nginx
    // logs in to Dovecot with the cleartext mailauthd sends back.
    let r = client(&pki, external("imaps", p.mx, false, u.name), Some("good"));
    ok(&r);
    assert!(r["after"].as_str().unwrap_or("").starts_with("OK"), "SELECT: {r:#}");
    let r = client(&pki, external("pop3s", p.pop3, false, u.name), Some("good"));
    ok(&r);
    let r = client(&pki, external("imap", p.imap, true, u.name), Some("good"));
    ok(&r);
    let r = client(&pki, external("smtp", p.smtp, true, u.name), Some("good"));
    ok(&r);
    assert!(r["text"].as_str().unwrap_or("").starts_with("235"), "{r:#}");
    let logins = env.backends.dovecot.logins(u.name);
    assert_eq!(logins.len(), 3, "{logins:?}");

    // Someone else's certificate, a foreign CA's, none: refused as a wrong password.
    let invalid = "[AUTHENTICATIONFAILED]";
    refused_with(
        &client(&pki, external("imaps", p.mx, false, u.name), Some("other")),
        invalid,
    );
    refused_with(
        &client(&pki, external("imaps", p.mx, false, u.name), Some("foreign")),
        invalid,
    );
    refused_with(&client(&pki, external("imaps", p.mx, false, u.name), None), invalid);
    refused_with(
        &client(&pki, external("smtp", p.smtp, true, u.name), Some("other")),
        "535 5.7.8",
    );
    assert_eq!(env.backends.dovecot.logins(u.name).len(), 3);
    assert_eq!(decisions(&front, "reason=\"certificate-mismatch\"").len(), 2);
    // nginx's own verdict, as it passes it: FAILED:<reason> for the foreign CA, NONE without.
    assert_eq!(decisions(&front, "reason=\"certificate-not-verified\"").len(), 2);
    assert_eq!(decisions(&front, "method=external").len(), 8);
}

#[test]
fn an_nginx_without_the_shared_secret_gets_a_temporary_failure() {
    let env = shared();
    let (front, pki) = tls_front(&env, "tls-no-secret", false);
    let u = users::TLS_PLAIN;
    let r = client(&pki, login("imaps", front.nginx.ports.mx, false, u.name, u.pass), None);
    refused_with(&r, "[UNAVAILABLE]");
    assert_eq!(decisions(&front, "reason=\"bad-secret\"").len(), 1);
}

/// nginx behind a PROXY-protocol balancer (the `imap` port), and two servers that name their
/// listener: one without repeating the secret line (`pop3` port), one with it (`smtp` port).
fn balancer_conf(dir: &Path, auth_port: u16, p: &Ports) -> String {
    let d = dir.display();
    format!(
        r#"# generated by the mailauthd e2e suite (scenario 9, balancer and listeners)
load_module {module};
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
mail {{
    server_name mail.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    auth_http_header X-Auth-Key "{SECRET}";
    proxy_pass_error_message on;
    imap_auth plain login;
    server {{ listen 127.0.0.1:{imap} proxy_protocol; protocol imap; }}
    server {{
        listen 127.0.0.1:{pop3}; protocol imap;
        auth_http_header X-Mail-Listener webmail;
    }}
    server {{
        listen 127.0.0.1:{smtp}; protocol imap;
        auth_http_header X-Mail-Listener webmail;
        auth_http_header X-Auth-Key "{SECRET}";
    }}
}}
"#,
        module = crate::harness::prereq::MAIL_MODULE,
        imap = p.imap,
        pop3 = p.pop3,
        smtp = p.smtp,
    )
}

#[test]
fn the_real_client_behind_a_balancer_and_per_listener_rules() {
    let env = shared();
    let dir = env.path().join("tls-balancer");
    let pki = Pki::make(&dir.join("pki"));
    let u = users::TLS_PLAIN;
    let line = users::htpasswd(&[u]);
    let users = format!("{}:::::: allow_nets=192.0.2.1/32\n", line.trim_end());
    let mut o = env.options(Some(users));
    o.extra = format!(
        "[nginx]\nsecret_header = \"X-Auth-Key\"\nsecret = \"{SECRET}\"\n\
         [client]\nreal_ip_from = [\"127.0.0.1\"]\n\
         [listener.webmail]\ntls_required_for = [\"imap\"]\nmethods = [\"plain\"]\n"
    );
    let mailauthd = Mailauthd::start(&dir.join("mailauthd"), &o);
    let port = mailauthd.port;
    let nginx = Nginx::start(&dir.join("nginx"), |d, p| balancer_conf(d, port, p));
    let front = Front { nginx, mailauthd };
    let p = &front.nginx.ports;
    let proxied = |from: &str| {
        let mut spec = login("imap", p.imap, false, u.name, u.pass);
        spec["proxy_from"] = json!(from);
        client(&pki, spec, None)
    };

    // The balancer names 192.0.2.1, the one network the account may log in from.
    let r = proxied("192.0.2.1");
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(decisions(&front, "client_ip=\"192.0.2.1\" result=\"ok\"").len(), 1);
    let r = proxied("198.51.100.7");
    refused_with(&r, "[AUTHENTICATIONFAILED]");
    assert_eq!(
        decisions(
            &front,
            "client_ip=\"198.51.100.7\" result=\"invalid\" reason=\"not-allowed-from-network\""
        )
        .len(),
        1
    );

    // A server {} with an auth_http_header of its own does not inherit mail {}'s: without
    // the repeated secret line nginx sends none.
    let r = client(&pki, login("imap", p.pop3, false, u.name, u.pass), None);
    refused_with(&r, "[UNAVAILABLE]");
    assert_eq!(decisions(&front, "reason=\"bad-secret\"").len(), 1);
    // With it, the listener's own rule applies: TLS for IMAP there, and none elsewhere.
    let r = client(&pki, login("imap", p.smtp, false, u.name, u.pass), None);
    refused_with(&r, "[PRIVACYREQUIRED]");
}
