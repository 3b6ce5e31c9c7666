//! The load generator: behaves like nginx's mail proxy asking an auth_http server. One new
//! TCP connection per request, `GET /check HTTP/1.0` with nginx's headers in nginx's order,
//! read up to the end of the reply's header block, close, and check the verdict.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the reply must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `Auth-Status: OK`.
    Ok,
    /// Any other `Auth-Status` (a refusal).
    Refused,
    /// Anything with an `Auth-Status` (the static ceiling answers OK to everything).
    Any,
}

/// One request to send.
pub struct Request {
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// nginx's request for a `plain` IMAP login (protocol.md §1.3: the headers, in this order).
pub fn nginx_request(user: &str, pass: &str, expect: Expect) -> Request {
    let bytes = format!(
        "GET /check HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: {user}\r\n\
         Auth-Pass: {pass}\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"
    )
    .into_bytes();
    Request { bytes, expect }
}

/// Builds request number `n` of a run.
pub type Workload = Arc<dyn Fn(u64) -> Request + Send + Sync>;

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Replies with the expected verdict.
    pub ok: u64,
    /// Replies with another verdict, connection errors, timeouts.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every good reply, microseconds, sorted.
    pub latencies: Vec<u32>,
    /// CPU time the server used per good reply, microseconds (set by the caller).
    pub cpu_us_per_request: f64,
    /// The user-space part of `cpu_us_per_request` (set by the caller).
    pub cpu_user_us_per_request: f64,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[index]) / 1000.0
    }
}

/// Limits of one run: whichever comes first ends it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    pub max_requests: u64,
    pub concurrency: usize,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends requests to `addr` until the bounds are reached or `stop` is set.
pub async fn run(addr: SocketAddr, workload: Workload, bounds: Bounds, stop: Option<Arc<AtomicBool>>) -> Stats {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bounds.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..bounds.concurrency {
        let (next, workload, stop) = (next.clone(), workload.clone(), stop.clone());
        tasks.spawn(async move {
            let mut stats = Stats::default();
            loop {
                if Instant::now() >= deadline || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= bounds.max_requests {
                    break;
                }
                let request = workload(n);
                let t0 = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, one(addr, &request.bytes)).await {
                    Ok(Ok(status)) if verdict_matches(&status, request.expect) => {
                        stats.ok += 1;
                        stats
                            .latencies
                            .push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    _ => stats.errors += 1,
                }
            }
            stats
        });
    }
    let mut total = Stats::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(stats) = done {
            total.ok += stats.ok;
            total.errors += stats.errors;
            total.latencies.extend(stats.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

fn verdict_matches(status: &Option<String>, expect: Expect) -> bool {
    match (status.as_deref(), expect) {
        (Some("OK"), Expect::Ok) => true,
        (Some(s), Expect::Refused) => s != "OK",
        (Some(_), Expect::Any) => true,
        _ => false,
    }
}

/// One request on a new connection; the `Auth-Status` value of the reply.
async fn one(addr: SocketAddr, request: &[u8]) -> std::io::Result<Option<String>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    // nginx reads into one 1024-byte buffer and stops at the end of the header block.
    let mut buf = [0u8; 1024];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let status = text
        .lines()
        .find_map(|line| line.strip_prefix("Auth-Status:").map(|v| v.trim().to_owned()));
    Ok(status)
}

/// A Zipf(s) sampler over ranks `0..n`, with a small deterministic generator.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for v in &mut cdf {
            *v /= sum;
        }
        Zipf { cdf }
    }

    /// The rank for request number `n` (a hash of `n` as the uniform draw).
    pub fn rank(&self, n: u64) -> usize {
        let u = (splitmix(n) >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
