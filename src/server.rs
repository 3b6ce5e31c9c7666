//! The auth_http listener: one request per connection, as nginx sends them. Reads the header
//! block under a deadline, decides, writes the reply, closes. Every request gets an answer,
//! malformed or not; a connection cap bounds the work in flight; shutdown stops accepting
//! and drains the connections already accepted.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::auth_http::{self, MAX_REQUEST_BYTES, ProtocolError, Refusal, RefuseKind, Verdict};
use crate::decide::{Authenticator, Decision, log_decision, use_real_client};
use crate::login::MailProtocol;
use crate::reason::Reason;

/// A bound listener: TCP or a unix-domain socket.
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix-domain socket.
    Unix(UnixListener),
}

impl Listener {
    /// The bound address, for the log.
    pub(crate) fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
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
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let auth = auth.clone();
                connections.spawn(async move {
                    serve_connection(stream, peer, &auth, limits.read_timeout).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Finished tasks are only reaped at the next accept; reap them so the count is true.
    while connections.try_join_next().is_some() {}
    tracing::info!("stopped accepting; draining {} connection(s)", connections.len());
    while connections.join_next().await.is_some() {}
}

/// A connection from either kind of listener.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A new connection and the address it came from (`unix:` on a unix socket).
async fn accept(listener: &Listener) -> io::Result<(Box<dyn Stream>, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            // Replies are one small write: send it at once.
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream), peer.ip().to_canonical().to_string()))
        }
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            Ok((Box::new(stream), "unix:".to_owned()))
        }
    }
}

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

async fn serve_connection(mut stream: Box<dyn Stream>, peer: String, auth: &Authenticator, read_timeout: Duration) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + read_timeout;
    // Room for a whole ordinary request, so the buffer holding the password is not
    // reallocated (which would leave an unzeroed copy behind).
    let mut buf = Vec::with_capacity(8192);
    // Whether the request was read to its end (nothing unread left in the socket).
    let mut read_whole = false;
    let reply = match read_header_block(stream.as_mut(), &mut buf, deadline).await {
        Ok(len) => match auth_http::parse_request(&buf[..len]) {
            Ok(mut req) => {
                read_whole = buf.len() == len;
                use_real_client(&auth.config, &mut req);
                // The decision shares the request's deadline: a login stuck behind a full
                // pool or a slow upstream gets a temporary failure instead of no answer.
                let decision = match tokio::time::timeout_at(deadline, auth.decide(&req)).await {
                    Ok(decision) => decision,
                    Err(_) => Decision::temporary(Reason::Deadline),
                };
                if decision.reason == Reason::BadSecret {
                    auth.report_bad_secret(&peer, &req);
                }
                log_decision(&req, &decision, started);
                let (protocol, method) = (req.protocol.as_str(), req.method.as_str());
                auth.metrics
                    .decision(protocol, method, decision.result(), started.elapsed());
                auth_http::render_reply(&decision.verdict, Some(req.protocol))
            }
            Err(e) => bad_request(auth, &e, auth_http::protocol_hint(&buf[..len]), started),
        },
        Err(ReadEnd::TooLarge) => bad_request(auth, &ProtocolError::TooLarge, None, started),
        Err(ReadEnd::TimedOut(0) | ReadEnd::Closed(0) | ReadEnd::Failed) => return,
        Err(ReadEnd::TimedOut(_) | ReadEnd::Closed(_)) => bad_request(auth, &ProtocolError::Incomplete, None, started),
    };
    // Zero the request bytes: they held the password.
    zeroize::Zeroize::zeroize(&mut buf);
    // With the whole request read, dropping the stream closes it with a FIN: no separate
    // shutdown(2) per login. Otherwise unread bytes would make that close a reset, so the
    // FIN goes first. nginx closes as soon as it has the header block; a reset after that is
    // normal.
    let write = async {
        stream.write_all(&reply).await?;
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
