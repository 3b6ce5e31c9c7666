//! Scenario 10: an inbound MX with `[smtp] reverse_dns = "require"`, nginx's `resolver`
//! pointed at a small DNS responder the test runs on a loopback UDP port. Clients connect
//! from different loopback addresses, and the responder answers each one's PTR query as the
//! scenario needs: a name whose A record points back (nginx sends it as `Client-Host`),
//! NXDOMAIN (nginx sends `[UNAVAILABLE]`) and SERVFAIL (`[TEMPUNAVAIL]`).

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::expect::one_session;
use crate::harness::mailauthd::Mailauthd;
use crate::harness::nginx::{Nginx, Ports};
use crate::harness::process::run;
use crate::harness::{Front, shared};

/// The client whose PTR record names `mx.client.test`, which resolves back to it.
const CONFIRMED: &str = "127.0.0.2";
/// The client without a PTR record (NXDOMAIN).
const NO_PTR: &str = "127.0.0.3";
/// The client whose PTR lookup fails (SERVFAIL).
const BROKEN: &str = "127.0.0.4";
const NAME: &str = "mx.client.test";

/// A DNS responder on a loopback UDP port (RFC 1035 §4), answering from a fixed table;
/// stopped when dropped.
struct Dns {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The name in a question at `at`, lower case with dots, and the offset after it.
fn qname(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), at));
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).into_owned());
        at += len;
    }
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// The answer to one query: response code and answer records (type, rdata).
fn answer(name: &str, qtype: u16) -> (u8, Vec<(u16, Vec<u8>)>) {
    let ptr_of = |ip: &str| {
        let mut parts: Vec<&str> = ip.split('.').collect();
        parts.reverse();
        format!("{}.in-addr.arpa", parts.join("."))
    };
    const A: u16 = 1;
    const PTR: u16 = 12;
    if name == ptr_of(CONFIRMED) {
        let rdata = encode_name(NAME);
        return (0, if qtype == PTR { vec![(PTR, rdata)] } else { vec![] });
    }
    if name == NAME {
        let ip: Vec<u8> = CONFIRMED.split('.').map(|p| p.parse().unwrap()).collect();
        return (0, if qtype == A { vec![(A, ip)] } else { vec![] });
    }
    if name == ptr_of(BROKEN) {
        return (2, vec![]); // SERVFAIL
    }
    (3, vec![]) // NXDOMAIN
}

fn respond(query: &[u8]) -> Option<Vec<u8>> {
    let (name, end) = qname(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let (rcode, records) = answer(&name, qtype);
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]); // ID
    let rd = query[2] & 0x01;
    out.push(0x84 | rd); // QR, AA, RD as asked
    out.push(0x80 | rcode); // RA, RCODE
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, rdata) in records {
        out.extend_from_slice(&[0xC0, 12]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]); // IN, TTL 60
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

impl Dns {
    fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS responder");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = respond(&buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

fn mx_conf(dir: &Path, auth_port: u16, p: &Ports, dns_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"# generated by the mailauthd e2e suite (scenario 10)
load_module {module};
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
mail {{
    server_name mail.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    proxy_pass_error_message on;
    resolver 127.0.0.1:{dns_port} ipv6=off;
    resolver_timeout 5s;
    server {{ listen 127.0.0.1:{mx}; protocol smtp; smtp_auth none; xclient on; }}
}}
"#,
        module = crate::harness::prereq::MAIL_MODULE,
        mx = p.mx,
    )
}

fn mx_from(port: u16, source: &str, from: &str) -> Value {
    let spec = json!({
        "proto": "mx", "port": port, "source": source, "mail_from": from,
        "rcpt_to": "postmaster@example.test", "body": "Subject: rdns\r\n\r\nhi\r\n",
    });
    let mut cmd = std::process::Command::new(crate::harness::prereq::python3());
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tls_clients.py"))
        .arg(spec.to_string());
    let o = run(cmd, Duration::from_secs(60));
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", o.stdout, o.stderr))
}

#[test]
fn reverse_dns_required_through_nginx_resolver() {
    let env = shared();
    let dns = Dns::start();
    let dir = env.path().join("reverse-dns");
    let o = env.options(Some(String::new()));
    // `[smtp]` is already in the suite's config: the key goes into that table.
    let mailauthd = Mailauthd::start_with(&dir.join("mailauthd"), &o, |c| {
        c.replace("[smtp]\n", "[smtp]\nreverse_dns = \"require\"\n")
    });
    let port = mailauthd.port;
    let nginx = Nginx::start(&dir.join("nginx"), |d, p| mx_conf(d, port, p, dns.port));
    let front = Front { nginx, mailauthd };
    let mx = front.nginx.ports.mx;

    let r = mx_from(mx, CONFIRMED, "rdns-confirmed@sender.test");
    assert_eq!(r["ok"], true, "{r:#}");
    let s = one_session(&env.backends.recorder, "FROM:<rdns-confirmed@sender.test>");
    let x = s
        .line("XCLIENT ")
        .unwrap_or_else(|| panic!("no XCLIENT: {:?}", s.text()));
    assert!(
        x.contains(&format!("NAME={NAME}")) && x.contains(&format!("ADDR={CONFIRMED}")),
        "{x}"
    );

    let r = mx_from(mx, NO_PTR, "rdns-none@sender.test");
    assert_eq!(r["ok"], false);
    assert_eq!(
        r["text"], "550 5.7.25 Client host rejected: no reverse DNS name ([UNAVAILABLE])",
        "{r:#}"
    );
    let r = mx_from(mx, BROKEN, "rdns-broken@sender.test");
    assert_eq!(
        r["text"],
        "450 4.7.25 Client host rejected: reverse DNS lookup failed for now ([TEMPUNAVAIL]), try again later",
        "{r:#}"
    );
    assert!(env.backends.recorder.sessions_with("rdns-none@").is_empty());
    assert!(env.backends.recorder.sessions_with("rdns-broken@").is_empty());
    let log = front.mailauthd.log_text();
    assert_eq!(log.matches("reason=\"no-reverse-dns\"").count(), 1, "{log}");
    assert_eq!(log.matches("reason=\"reverse-dns-tempfail\"").count(), 1, "{log}");
}
