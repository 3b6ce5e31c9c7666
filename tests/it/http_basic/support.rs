//! What the http-basic tests need besides the shared harness (which has the real nginx used
//! as the Basic-auth upstream): a stub upstream that hangs or answers, timed logins and log
//! polling.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// `Basic base64(user ":" pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// The `Authorization` value of a request head, if any.
fn authorization(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    })
}

/// Reads one request head; `None` when the connection closes first.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    Some(buf)
}

/// A stub upstream on a loopback port: it counts connections and either holds each one
/// without answering (`status` 0) or answers every request with `status` — or, once told
/// which credentials are good ([`Stub::check`]), answers `status` to those and 401 to any
/// other.
pub struct Stub {
    /// Its address.
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    good: Arc<Mutex<Option<String>>>,
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
            good: Arc::new(Mutex::new(None)),
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (status, good, accepted, stop) = (
            stub.status.clone(),
            stub.good.clone(),
            stub.accepted.clone(),
            stub.stop.clone(),
        );
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
                    let good = good.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    std::thread::spawn(move || answer(stream, code, good.as_deref()));
                }
            }
        });
        stub
    }

    /// From now on, answer every request with `status` (0: hold it unanswered).
    pub fn answer_with(&self, status: u16) {
        *self.good.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.status.store(status, Ordering::SeqCst);
    }

    /// From now on, answer `status` to `user`/`pass` and 401 to any other credentials.
    pub fn check(&self, user: &str, pass: &str, status: u16) {
        *self.good.lock().unwrap_or_else(|e| e.into_inner()) = Some(basic(user, pass));
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

fn answer(mut stream: TcpStream, code: u16, good: Option<&str>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let code = match good {
        Some(good) if authorization(&head).as_deref() != Some(good) => 401,
        _ => code,
    };
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

/// An upstream that keeps each connection alive after its first answer and then, as an
/// upstream whose keep-alive timeout fires just as the next request arrives, reads the next
/// request on it and closes the socket without answering. The first request on a
/// connection is answered 204 for `user`/`pass`, 401 for any other credentials; `vanish`'s
/// requests are never answered.
pub struct OneAnswerPerConnection {
    /// Its address.
    pub addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    unanswered: Arc<AtomicUsize>,
}

impl OneAnswerPerConnection {
    /// Starts it; its threads end with the test process.
    pub fn start(user: &str, pass: &str) -> OneAnswerPerConnection {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let unanswered = Arc::new(AtomicUsize::new(0));
        let good = basic(user, pass);
        let (a, u) = (answered.clone(), unanswered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (a, u, good) = (a.clone(), u.clone(), good.clone());
                std::thread::spawn(move || serve_once(stream, &good, &a, &u));
            }
        });
        OneAnswerPerConnection {
            addr,
            answered,
            unanswered,
        }
    }

    /// `http://<addr>/auth?key=<key>`.
    pub fn url(&self, key: &str) -> String {
        format!("http://{}/auth?key={key}", self.addr)
    }

    /// Requests answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Requests read and closed without a byte of answer.
    pub fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }
}

fn serve_once(mut stream: TcpStream, good: &str, answered: &AtomicUsize, unanswered: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let auth = authorization(&head).unwrap_or_default();
    if auth == basic("vanish", "pw") {
        unanswered.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let reply = if auth == good {
        "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n"
    } else {
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"mail\"\r\nContent-Length: 0\r\n\
         Connection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n"
    };
    answered.fetch_add(1, Ordering::SeqCst);
    if stream.write_all(reply.as_bytes()).is_err() {
        return;
    }
    if read_head(&mut stream).is_some() {
        unanswered.fetch_add(1, Ordering::SeqCst);
    }
}
