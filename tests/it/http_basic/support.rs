//! What the http-basic tests need besides the shared harness (which has the real nginx used
//! as the Basic-auth upstream): a stub upstream that hangs or answers, timed logins and log
//! polling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Daemon, header, plain_request, wait_until};

/// A reply from the daemon and how long it took.
#[derive(Debug)]
pub struct Reply {
    /// The reply bytes.
    pub bytes: Vec<u8>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Reply {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.bytes, name)
    }

    /// `Auth-Status`.
    pub fn status(&self) -> String {
        self.header("Auth-Status")
            .unwrap_or_else(|| panic!("no Auth-Status in {:?}", self.text()))
    }

    /// The reply as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A password login (client 192.0.2.77, attempt 1), timed.
pub fn login(d: &Daemon, protocol: &str, user: &str, pass: &str) -> Reply {
    let started = Instant::now();
    let bytes = d.ask(&plain_request(
        protocol,
        user.as_bytes(),
        pass.as_bytes(),
        "192.0.2.77",
        1,
    ));
    Reply {
        bytes,
        elapsed: started.elapsed(),
    }
}

/// Waits until the daemon's log has a line containing `needle`; returns that line.
pub fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_until(Duration::from_secs(5), &format!("{needle:?} in the log"), || {
        d.log().contains(needle)
    });
    d.log()
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Lines of the daemon's log containing `needle`.
pub fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains(needle)).count()
}

/// The HTTP status of `GET path` on the admin listener at `admin`.
pub fn admin_status(admin: SocketAddr, path: &str) -> u16 {
    let reply = crate::common::ask(admin, format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes());
    String::from_utf8_lossy(&reply)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {:?}", String::from_utf8_lossy(&reply)))
}

/// A stub upstream on a loopback port: it counts connections and either holds each one
/// without answering (`status` 0) or answers every request with `status`.
pub struct Stub {
    /// Its address.
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// Starts a stub that never answers.
    pub fn hanging() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let stub = Stub {
            addr,
            status: Arc::new(AtomicU16::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (status, accepted, stop) = (stub.status.clone(), stub.accepted.clone(), stub.stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst);
                if code == 0 {
                    // Held open, never answered, until the stub is dropped.
                    held.push(stream);
                } else {
                    std::thread::spawn(move || answer(stream, code));
                }
            }
        });
        stub
    }

    /// From now on, answer every request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `http://<addr>/auth`.
    pub fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }
}

fn answer(mut stream: TcpStream, code: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ =
        stream.write_all(format!("HTTP/1.1 {code} Stub\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the held connections.
        let _ = TcpStream::connect(self.addr);
    }
}
