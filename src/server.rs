//! The auth_http listener: one request per connection, as nginx sends them. Reads the header
//! block under a deadline, decides, writes the reply, closes. Every request gets an answer,
//! malformed or not; a connection cap bounds the work in flight; shutdown stops accepting
//! and drains the connections already accepted.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, TryAcquireError};
use zeroize::Zeroizing;

use crate::auth_http::{self, MAX_REQUEST_BYTES, ProtocolError, Refusal, RefuseKind, Verdict};
use crate::decide::{Authenticator, Decision, log_decision, use_real_client};
use crate::login::MailProtocol;
use crate::reason::Reason;

/// A bound listener: TCP or a unix-domain socket.
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP: a non-blocking listening socket whose readiness the runtime watches. Its
    /// connections are accepted non-blocking and answered without the runtime when they
    /// can be ([`serve_tcp`]).
    Tcp(AsyncFd<std::net::TcpListener>),
    /// Unix-domain socket.
    Unix(UnixListener),
}

impl Listener {
    /// The bound address, for the log.
    pub(crate) fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .get_ref()
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".to_owned()),
        }
    }
}

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    /// Deadline for the whole request, counted from the accept.
    pub read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `listener` until `shutdown` completes, then waits for the connections in flight
/// (at most `read_timeout` plus the time their decisions take).
pub(crate) async fn run(
    listener: Listener,
    auth: Arc<Authenticator>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    // Connections taken straight from the listener since `shutdown` was last polled. While
    // connections keep coming, they are accepted without a readiness wait or a poll of the
    // shutdown future (two signal streams, a lock each) per connection, and `shutdown` is
    // still looked at every `ACCEPTS_PER_SHUTDOWN_CHECK` of them.
    let mut in_a_row = 0u32;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => break,
            // `biased`: shutdown is checked first, in this order, without drawing a random
            // number per connection for fairness among two branches that need none.
            Err(TryAcquireError::NoPermits) => tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            },
        };
        in_a_row += 1;
        let waiting = if in_a_row < ACCEPTS_PER_SHUTDOWN_CHECK {
            try_accept(&listener)
        } else {
            None
        };
        let accepted = match waiting {
            Some(accepted) => {
                // As the readiness wait would: the loop gives the worker up once its budget
                // is spent, so a steady stream of connections cannot starve its tasks.
                tokio::task::coop::consume_budget().await;
                accepted
            }
            None => {
                in_a_row = 0;
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    accepted = accept(&listener) => accepted,
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let auth = auth.clone();
                // Each connection holds its permit: the permits in use are the connections
                // in flight, which is all the draining below needs to know.
                let connection = Box::pin(async move {
                    match stream {
                        Accepted::Tcp(stream) => serve_tcp(stream, peer, &auth, limits.read_timeout).await,
                        Accepted::Unix(stream) => {
                            let started = Connection::start(limits.read_timeout);
                            serve_connection(Box::new(stream), peer, &auth, limits.read_timeout, started).await;
                        }
                    }
                    drop(permit);
                });
                if let Some(rest) = answer_at_once(connection) {
                    tokio::spawn(rest);
                }
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving; the next
                // round waits for a connection and looks at the shutdown future.
                tracing::warn!("accept failed: {e}");
                in_a_row = ACCEPTS_PER_SHUTDOWN_CHECK;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let in_flight = limits.max_connections - permits.available_permits();
    tracing::info!("stopped accepting; draining {in_flight} connection(s)");
    // Every permit back: every connection task has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// A connection from either kind of listener.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An accepted connection.
enum Accepted {
    /// Non-blocking, not (yet) watched by the runtime.
    Tcp(std::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// A connection's future in a box: it moves as one pointer.
type ConnectionFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls a new connection once, here, and returns it when it is not finished. Most are
/// finished on that poll (the request has arrived, and the login is cheap or cached), and
/// then need no task of their own: no allocation, no scheduling, no hand-over to another
/// thread. The rest become tasks; the first thing a new task does is poll its future again,
/// which registers the task's own waker with whatever the connection waits on (the one of
/// this poll does nothing). A panic is contained here as it would be in a task: that
/// connection ends, the server goes on.
fn answer_at_once(mut connection: ConnectionFuture) -> Option<ConnectionFuture> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| connection.as_mut().poll(&mut context)));
    match polled {
        Ok(std::task::Poll::Ready(())) => None,
        Ok(std::task::Poll::Pending) => Some(connection),
        Err(_) => {
            tracing::error!("a connection's handling panicked; that connection is closed");
            None
        }
    }
}

/// Connections accepted in a row without a look at the shutdown future.
const ACCEPTS_PER_SHUTDOWN_CHECK: u32 = 32;

/// A connection that is already waiting, without waiting for one: `None` when there is
/// none (or on a unix socket, which always takes [`accept`]).
fn try_accept(listener: &Listener) -> Option<io::Result<(Accepted, String)>> {
    match listener {
        Listener::Tcp(l) => match l.try_io(Interest::READABLE, accept_tcp) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            accepted => Some(accepted),
        },
        Listener::Unix(_) => None,
    }
}

/// A new connection and the address it came from (`unix:` on a unix socket).
async fn accept(listener: &Listener) -> io::Result<(Accepted, String)> {
    match listener {
        Listener::Tcp(l) => loop {
            let mut ready = l.readable().await?;
            let Ok(accepted) = ready.try_io(|l| accept_tcp(l.get_ref())) else {
                // Nothing left to accept: the readiness was cleared, wait for the next.
                continue;
            };
            return accepted;
        },
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            Ok((Accepted::Unix(stream), "unix:".to_owned()))
        }
    }
}

/// accept4(SOCK_NONBLOCK | SOCK_CLOEXEC): the connection is non-blocking from the start,
/// with no fcntl per login. No TCP_NODELAY either (one setsockopt per login): the reply is
/// the connection's first and only write, and Nagle's algorithm holds a segment back only
/// while earlier data is unacknowledged.
fn accept_tcp(listener: &std::net::TcpListener) -> io::Result<(Accepted, String)> {
    let (socket, addr) = socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = addr.as_socket().map_or_else(
        || "unknown".to_owned(),
        |a| crate::login::ip_text(a.ip().to_canonical()),
    );
    Ok((Accepted::Tcp(socket.into()), peer))
}

/// When a connection was accepted and when its request must be answered by.
#[derive(Clone, Copy)]
struct Connection {
    started: Instant,
    deadline: tokio::time::Instant,
}

impl Connection {
    fn start(read_timeout: Duration) -> Connection {
        // One clock reading for both.
        let started = Instant::now();
        Connection {
            started,
            deadline: tokio::time::Instant::from_std(started) + read_timeout,
        }
    }
}

/// The bytes of a request read in one go before the runtime is involved. An nginx request
/// is a few hundred bytes (several KB only with a client certificate, which then takes the
/// ordinary way). Kept under 1 KB: the buffer and the connection's task are then small
/// allocations that the allocator's per-thread caches serve without locking or merging.
const FIRST_READ: usize = 960;

/// Serves a TCP connection. nginx sends its request as soon as it connects, so by the time
/// the connection is accepted the request is usually there, and the reply fits in the
/// socket's empty send buffer: both are done with one non-blocking call each, without
/// registering the socket with the runtime (which costs two `epoll_ctl` calls per login).
/// A request still arriving, or a reply that does not go out at once, continues the
/// ordinary way, watched by the runtime and under the same deadline.
async fn serve_tcp(stream: std::net::TcpStream, peer: String, auth: &Authenticator, read_timeout: Duration) {
    use std::io::{Read, Write};
    let conn = Connection::start(read_timeout);
    let mut first = FirstRead::new();
    let read = match (&stream).read(&mut first.bytes) {
        Ok(0) => return,
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
        Err(_) => return,
    };
    first.used = read;
    let Some(len) = auth_http::find_header_end(&first.bytes[..read], &mut 0) else {
        // Not all there yet: the ordinary way, with what has arrived, in a buffer with room
        // for a whole ordinary request (so it is not reallocated, which would leave an
        // unzeroed copy behind).
        let mut buf = Zeroizing::new(Vec::with_capacity(REQUEST_BUFFER));
        buf.extend_from_slice(&first.bytes[..read]);
        drop(first);
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => continue_connection(Box::new(stream), peer, auth, read_timeout, conn, buf).await,
            Err(e) => unwatched(&peer, &e),
        }
        return;
    };
    let reply = answer(&first.bytes[..len], &peer, auth, conn).await;
    let read_whole = read == len;
    // Zero the request bytes now: they held the password.
    drop(first);
    let sent = match (&stream).write(&reply) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
        Err(_) => return,
    };
    if sent == reply.len() {
        if !read_whole {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        return;
    }
    match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => finish(Box::new(stream), &reply[sent..], read_whole, read_timeout).await,
        Err(e) => unwatched(&peer, &e),
    }
}

/// The buffer of [`serve_tcp`]'s first read. On the heap, not in the connection's future,
/// which is moved a few times when it is spawned (every move would copy the buffer too).
/// Its bytes hold a password: the part that was read is zeroed when it is dropped.
struct FirstRead {
    bytes: Vec<u8>,
    /// How many bytes the read filled.
    used: usize,
}

impl FirstRead {
    fn new() -> FirstRead {
        FirstRead {
            bytes: vec![0; FIRST_READ],
            used: 0,
        }
    }
}

impl Drop for FirstRead {
    fn drop(&mut self) {
        // Only what the read filled: the rest is the zeroes it started with.
        if let Some(used) = self.bytes.get_mut(..self.used) {
            zeroize::Zeroize::zeroize(used);
        }
    }
}

/// A connection the runtime could not watch (its epoll registration failed): it is closed
/// without an answer, and nginx reports the auth server unreachable for that login.
fn unwatched(peer: &str, error: &io::Error) {
    tracing::warn!("cannot watch a connection from {peer}: {error}; closed without an answer");
}

/// Room for a whole ordinary request in the ordinary way's buffer.
const REQUEST_BUFFER: usize = 8192;

/// Why reading a request ended without a complete header block.
enum ReadEnd {
    TooLarge,
    Closed(usize),
    TimedOut(usize),
    Failed,
}

async fn read_header_block(
    stream: &mut dyn Stream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<usize, ReadEnd> {
    // Straight into `buf`'s spare room: a buffer held in the connection's future would be
    // copied with it on every spawn.
    let mut resume = 0;
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Err(_) => return Err(ReadEnd::TimedOut(buf.len())),
            Ok(Err(_)) => return Err(ReadEnd::Failed),
            Ok(Ok(0)) => return Err(ReadEnd::Closed(buf.len())),
            Ok(Ok(_)) => {}
        }
        if let Some(len) = auth_http::find_header_end(buf, &mut resume) {
            return Ok(len);
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(ReadEnd::TooLarge);
        }
    }
}

async fn serve_connection(
    stream: Box<dyn Stream>,
    peer: String,
    auth: &Authenticator,
    read_timeout: Duration,
    conn: Connection,
) {
    // Room for a whole ordinary request, so the buffer holding the password is not
    // reallocated (which would leave an unzeroed copy behind).
    let buf = Zeroizing::new(Vec::with_capacity(REQUEST_BUFFER));
    continue_connection(stream, peer, auth, read_timeout, conn, buf).await;
}

/// Reads the rest of a request (after the bytes in `buf`) under the connection's deadline,
/// answers it and closes.
async fn continue_connection(
    mut stream: Box<dyn Stream>,
    peer: String,
    auth: &Authenticator,
    read_timeout: Duration,
    conn: Connection,
    mut buf: Zeroizing<Vec<u8>>,
) {
    // Whether the request was read to its end (nothing unread left in the socket).
    let mut read_whole = false;
    let reply = match read_header_block(stream.as_mut(), &mut buf, conn.deadline).await {
        Ok(len) => {
            read_whole = buf.len() == len;
            answer(&buf[..len], &peer, auth, conn).await
        }
        Err(ReadEnd::TooLarge) => bad_request(auth, &ProtocolError::TooLarge, None, conn.started),
        Err(ReadEnd::TimedOut(0) | ReadEnd::Closed(0) | ReadEnd::Failed) => return,
        Err(ReadEnd::TimedOut(_) | ReadEnd::Closed(_)) => {
            bad_request(auth, &ProtocolError::Incomplete, None, conn.started)
        }
    };
    // Zero the request bytes (they held the password) before the reply is sent; `buf`
    // zeroes itself again when dropped, on every way out of this function.
    zeroize::Zeroize::zeroize(buf.as_mut_slice());
    finish(stream, &reply, read_whole, read_timeout).await;
}

/// The reply to one whole header block: parsed, decided, logged and counted.
async fn answer(block: &[u8], peer: &str, auth: &Authenticator, conn: Connection) -> Vec<u8> {
    let mut req = match auth_http::parse_request(block) {
        Ok(req) => req,
        Err(e) => return bad_request(auth, &e, auth_http::protocol_hint(block), conn.started),
    };
    use_real_client(&auth.config, &mut req);
    // The decision shares the request's deadline: a login stuck behind a full pool or a
    // slow upstream gets a temporary failure instead of no answer. Boxed: the decision's
    // future is most of a connection's state, and a boxed one is not copied along with the
    // connection's future when it is spawned.
    let decision = match tokio::time::timeout_at(conn.deadline, Box::pin(auth.decide(&req))).await {
        Ok(decision) => decision,
        Err(_) => Decision::temporary(Reason::Deadline),
    };
    if decision.reason == Reason::BadSecret {
        auth.report_bad_secret(peer, &req);
    }
    let took = conn.started.elapsed();
    log_decision(&req, &decision, took);
    let (protocol, method) = (req.protocol.as_str(), req.method.as_str());
    auth.metrics.decision(protocol, method, decision.result(), took);
    auth_http::render_reply(&decision.verdict, Some(req.protocol))
}

/// Writes `reply` and closes. With the whole request read, dropping the stream closes it
/// with a FIN: no separate shutdown(2) per login. Otherwise unread bytes would make that
/// close a reset, so the FIN goes first. nginx closes as soon as it has the header block; a
/// reset after that is normal.
async fn finish(mut stream: Box<dyn Stream>, reply: &[u8], read_whole: bool, read_timeout: Duration) {
    let write = async {
        stream.write_all(reply).await?;
        if !read_whole {
            stream.shutdown().await?;
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(read_timeout, write).await;
}

/// The temporary failure of a request that could not be read; `protocol` (when its
/// `Auth-Protocol` line could still be read) selects the client's text and SMTP's code.
fn bad_request(
    auth: &Authenticator,
    error: &ProtocolError,
    protocol: Option<MailProtocol>,
    started: Instant,
) -> Vec<u8> {
    auth.metrics
        .decision("unknown", "unknown", "bad-request", started.elapsed());
    tracing::warn!(target: "mailauthd::auth", result = "bad-request", reason = %error, "malformed auth request");
    let verdict = Verdict::Refuse(Refusal {
        kind: RefuseKind::BadRequest,
        wait: None,
    });
    auth_http::render_reply(&verdict, protocol)
}
