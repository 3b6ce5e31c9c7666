//! The recording SMTP backend: just enough ESMTP + XCLIENT for nginx's SMTP proxy
//! (greeting, EHLO advertising XCLIENT, `220` to XCLIENT, MAIL/RCPT/DATA/RSET/NOOP/QUIT), and
//! a record of every line nginx sends, one [`Session`] per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Upper bounds so a misbehaving peer cannot make the recorder grow without limit.
const MAX_SESSIONS: usize = 10_000;
const MAX_LINES: usize = 10_000;

/// Every line (without CRLF) one backend connection received, in order.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub lines: Vec<Vec<u8>>,
}

impl Session {
    pub fn text(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// The first line starting with `prefix` (ASCII case-insensitive: smtplib sends
    /// `mail FROM:`), lossy UTF-8.
    pub fn line(&self, prefix: &str) -> Option<String> {
        let p = prefix.to_ascii_lowercase();
        self.text().into_iter().find(|l| l.to_ascii_lowercase().starts_with(&p))
    }
}

pub struct Recorder {
    pub port: u16,
    sessions: Arc<Mutex<Vec<Arc<Mutex<Session>>>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let port = listener.local_addr().unwrap().port();
        let sessions: Arc<Mutex<Vec<Arc<Mutex<Session>>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (sessions.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sess = Arc::new(Mutex::new(Session::default()));
                {
                    let mut all = s2.lock().unwrap_or_else(|e| e.into_inner());
                    if all.len() >= MAX_SESSIONS {
                        continue;
                    }
                    all.push(sess.clone());
                }
                std::thread::spawn(move || {
                    let _ = serve(conn, &sess);
                });
            }
        });
        Recorder {
            port,
            sessions,
            stop,
            accept: Some(accept),
        }
    }

    /// A snapshot of all sessions so far.
    pub fn sessions(&self) -> Vec<Session> {
        let all = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Sessions that contain a line with `needle` (lossy UTF-8, ASCII case-insensitive).
    pub fn sessions_with(&self, needle: &str) -> Vec<Session> {
        let n = needle.to_ascii_lowercase();
        self.sessions()
            .into_iter()
            .filter(|s| s.text().iter().any(|l| l.to_ascii_lowercase().contains(&n)))
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect(super::process::loopback(self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, sess: &Mutex<Session>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 recorder.test ESMTP recorder\r\n")?;
    let mut in_data = false;
    for _ in 0..MAX_LINES {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        sess.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line.clone());
        if in_data {
            if line == b"." {
                in_data = false;
                w.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            continue;
        }
        let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");
        let reply: &[u8] = match verb {
            "EHLO" => b"250-recorder.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-XCLIENT ADDR LOGIN NAME HELO PROTO\r\n250 SIZE 10240000\r\n",
            "HELO" => b"250 recorder.test\r\n",
            "XCLIENT" => b"220 recorder.test ESMTP recorder\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "DATA" => {
                in_data = true;
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        w.write_all(reply)?;
    }
    Ok(())
}
