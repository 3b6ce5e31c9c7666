//! The policy state in Redis, shared by every mailauthd instance that points at it: one
//! server, a primary found through Redis Sentinel (and followed through failovers), or a
//! Redis Cluster.
//!
//! Keys are `<prefix>:{<subject>}:f` (a sorted set of password tags scored by time),
//! `<prefix>:{<subject>}:b` (a ban, holding its expiry) and `<prefix>:{<subject>}:s` (a
//! recent success), where `<subject>` is one scope's key (see [`super::Subject::key`]). The
//! braces make a Cluster hash tag: both keys one script call touches share a slot, so the
//! same script runs on one server and on a Cluster. A failure is recorded by one script call
//! per scope (EVALSHA), so concurrent instances cannot race between counting and banning.
//! Bans are also indexed in the sorted set `<prefix>:bans` (member: subject, score: expiry),
//! which the admin listing reads instead of scanning the keyspace, and published on the
//! channel `<prefix>:ban-events` so every instance hears of them at once.
//!
//! Each operation is bounded by `[state] redis_timeout`; after a connection failure or a
//! timeout Redis is left alone for a second, then tried again (asking the sentinels for the
//! primary anew), and each change between reachable and not is logged once. An error that
//! Redis answered fails that operation only: Redis is not marked down for it, except a
//! read-only replica or a cluster that is down, which are what a failover looks like.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisError, RedisFuture, RedisResult, Script, ServerErrorKind, Value,
};

use super::{BanEntry, BanFilter, Limits, Lookup, PolicyError, Recorded, SCOPES, Scope, Subject};
use crate::config::{OnRedisError, StateSettings};

/// Records one failure in one scope: KEYS are the window and the ban of one subject; ARGV
/// are now, window, ban (ms), the password tag and the limit. Returns the count and 1 when
/// this failure banned (else 0).
const FAIL_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ban = tonumber(ARGV[3])
local tag = ARGV[4]
local limit = tonumber(ARGV[5])
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZADD', key, now, tag)
local n = redis.call('ZCARD', key)
if n > limit then
  redis.call('ZREMRANGEBYRANK', key, 0, n - limit - 1)
  n = limit
end
if n >= limit then
  redis.call('SET', KEYS[2], now + ban, 'PX', ban)
  redis.call('DEL', key)
  return {n, 1}
end
redis.call('PEXPIRE', key, window)
return {n, 0}
";

/// How long Redis is left alone after a failed operation.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Admin operations (listing every ban) may take longer than one login's lookup.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many bans are listed.
const MAX_LISTED: usize = 100_000;

/// At most this many bans made during an outage wait to be written to Redis.
const MAX_UNWRITTEN: usize = 10_000;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// How the shared state is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One Redis server.
    Single,
    /// The primary the sentinels name.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

impl Mode {
    /// The name `/readyz` and `/metrics` show.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "redis",
            Mode::Sentinel => "sentinel",
            Mode::Cluster => "cluster",
        }
    }
}

/// The state of the ban subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listening {
    /// Not subscribed yet.
    Starting,
    /// Subscribed: bans made elsewhere arrive.
    Subscribed,
    /// The subscription was lost; it is being made again.
    Lost,
}

impl Listening {
    /// The name `/readyz` and `/metrics` show.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Listening::Starting => "starting",
            Listening::Subscribed => "subscribed",
            Listening::Lost => "lost",
        }
    }
}

/// What `/readyz` and `/metrics` show about the shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreStatus {
    /// How Redis is reached.
    pub mode: Mode,
    /// The server in use (the primary for Sentinel), once connected.
    pub primary: Option<String>,
    /// Whether the last operation reached Redis (`None`: none tried yet).
    pub reachable: Option<bool>,
    /// Changes of primary seen since the start.
    pub failovers: u64,
    /// The ban subscription.
    pub listening: Listening,
}

/// A ban event on the channel: a ban with its expiry, or a ban lifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BanEvent {
    /// `subject` is banned until `until` (ms since the epoch).
    Banned {
        /// The scope key.
        subject: String,
        /// The expiry.
        until: u64,
    },
    /// The ban of `subject` was lifted.
    Lifted {
        /// The scope key.
        subject: String,
    },
    /// Subscribed again after the subscription was lost: events may have been missed (a
    /// ban lifted meanwhile), so what was heard before is to be forgotten.
    Missed,
}

impl BanEvent {
    fn encode(&self) -> String {
        match self {
            BanEvent::Banned { subject, until } => format!("ban {until} {subject}"),
            BanEvent::Lifted { subject } => format!("lift {subject}"),
            // Never sent: each instance makes it up for itself.
            BanEvent::Missed => String::new(),
        }
    }

    /// Reads a message of the channel back (`None`: not one of ours).
    pub(crate) fn decode(text: &str) -> Option<BanEvent> {
        if let Some(rest) = text.strip_prefix("ban ") {
            let (until, subject) = rest.split_once(' ')?;
            return Some(BanEvent::Banned {
                subject: subject.to_owned(),
                until: until.parse().ok()?,
            });
        }
        text.strip_prefix("lift ").map(|subject| BanEvent::Lifted {
            subject: subject.to_owned(),
        })
    }
}

/// Where the store connects.
enum Backend {
    Single(Option<Client>),
    Sentinel(Option<tokio::sync::Mutex<SentinelClient>>),
    Cluster {
        client: Option<ClusterClient>,
        /// Each seed node, for the subscription (any node of a Cluster hears every PUBLISH).
        nodes: Vec<::redis::ConnectionInfo>,
        /// With TLS, what the nodes' certificates are checked against.
        certs: Option<::redis::TlsCertificates>,
    },
}

/// A connection of whichever kind the backend makes.
#[derive(Clone)]
enum Conn {
    Managed(ConnectionManager),
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Why an operation did not get an answer it could use.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The command failed.
    Redis(RedisError),
}

/// A connection being made, awaited by every operation that needs it meanwhile.
type Pending = Shared<BoxFuture<'static, Result<Conn, String>>>;

/// Makes connections, in a task of their own: an operation that gives up after
/// `redis_timeout` does not cancel the connection under way, so a slow handshake (asking the
/// sentinels, then the primary) still completes for the operations after it.
struct Connector {
    backend: Backend,
    /// The bound on one connection attempt.
    timeout: Duration,
    /// The server in use, once connected (the primary for Sentinel).
    primary: Mutex<Option<String>>,
    failovers: AtomicU64,
}

impl Connector {
    /// Remembers the server in use; a different one than before is a failover, logged once.
    fn note_primary(&self, addr: String) {
        let Ok(mut slot) = self.primary.lock() else { return };
        match slot.as_deref() {
            Some(old) if old != addr => {
                self.failovers.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(target: "mailauthd::policy", "redis primary is now {addr} (was {old})");
            }
            None => tracing::info!(target: "mailauthd::policy", "redis primary in use: {addr}"),
            Some(_) => {}
        }
        *slot = Some(addr);
    }

    /// Connects to the server in use (asking the sentinels for it).
    async fn connect(self: Arc<Self>) -> Result<Conn, String> {
        let conn = match &self.backend {
            Backend::Single(client) => {
                let client = client.clone().ok_or("the redis url cannot be used")?;
                let addr = client.get_connection_info().addr().to_string();
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
                self.note_primary(addr);
                Conn::Managed(conn)
            }
            Backend::Sentinel(sentinel) => {
                let sentinel = sentinel.as_ref().ok_or("the sentinel settings cannot be used")?;
                // The sentinels name the primary, and it is asked whether it is one.
                let client = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| format!("asking the sentinels: {e}"))?;
                let addr = client.get_connection_info().addr().to_string();
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                self.note_primary(addr);
                Conn::Direct(conn)
            }
            Backend::Cluster { client, nodes, .. } => {
                let client = client.as_ref().ok_or("the cluster settings cannot be used")?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout);
                let conn = client
                    .get_async_connection_with_config(config)
                    .await
                    .map_err(|e| e.to_string())?;
                let seeds: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
                self.note_primary(seeds.join(","));
                Conn::Cluster(conn)
            }
        };
        Ok(conn)
    }
}

/// Policy state in Redis.
pub(crate) struct RedisStore {
    mode: Mode,
    connector: Arc<Connector>,
    conn: Mutex<Option<Conn>>,
    connecting: Mutex<Option<Pending>>,
    listening: AtomicU8,
    script: Script,
    prefix: String,
    timeout: Duration,
    on_error: OnRedisError,
    health: AtomicU8,
    /// The last operation got an error answer (logged once per run of them).
    erring: AtomicBool,
    retry_at: Mutex<Option<Instant>>,
    /// Bans made in this process while Redis was unreachable, to write when it is back.
    unwritten: Mutex<Vec<(String, u64)>>,
    has_unwritten: AtomicBool,
}

impl RedisStore {
    /// A store for the shared state `state` describes (validated by the config), or `None`
    /// without one; nothing is connected yet.
    pub(crate) fn new(state: &StateSettings) -> Option<RedisStore> {
        let password = state.redis_password.as_ref().map(|p| p.expose().to_owned());
        let certs = || ::redis::TlsCertificates {
            client_tls: None,
            root_cert: state.ca.clone(),
        };
        let (mode, backend) = if let Some(url) = &state.redis {
            let client = match &state.ca {
                Some(ca) => Client::build_with_tls(
                    url.expose(),
                    ::redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                ),
                None => Client::open(url.expose()),
            };
            (Mode::Single, Backend::Single(client.ok()))
        } else if !state.sentinels.is_empty() {
            let addrs = state.sentinels.iter().filter_map(|n| node_addr(n, state.tls));
            let mut builder =
                SentinelClientBuilder::new(addrs, &state.sentinel_master, SentinelServerType::Master).ok();
            if state.tls {
                builder = builder.map(|b| {
                    b.set_client_to_redis_tls_mode(::redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(::redis::TlsMode::Secure)
                });
                if state.ca.is_some() {
                    builder = builder.map(|b| {
                        b.set_client_to_redis_certificates(certs())
                            .set_client_to_sentinel_certificates(certs())
                    });
                }
            }
            if let Some(p) = &password {
                builder = builder.map(|b| b.set_client_to_redis_password(p));
            }
            if let Some(p) = &state.sentinel_password {
                builder = builder.map(|b| b.set_client_to_sentinel_password(p.expose()));
            }
            let client = builder.and_then(|b| b.build().ok());
            (Mode::Sentinel, Backend::Sentinel(client.map(tokio::sync::Mutex::new)))
        } else if !state.cluster.is_empty() {
            let mut settings = RedisConnectionInfo::default();
            if let Some(p) = &password {
                settings = settings.set_password(p);
            }
            let nodes: Vec<::redis::ConnectionInfo> = state
                .cluster
                .iter()
                .filter_map(|n| node_addr(n, state.tls)?.into_connection_info().ok())
                .map(|info| info.set_redis_settings(settings.clone()))
                .collect();
            // Each operation is bounded by `redis_timeout` on its own (see `run`).
            let mut builder = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(connect_timeout(state.redis_timeout))
                .response_timeout(connect_timeout(state.redis_timeout))
                .retries(1);
            if let Some(p) = &password {
                builder = builder.password(p);
            }
            if state.tls {
                builder = builder.tls(::redis::TlsMode::Secure).certs(certs());
            }
            let tls_certs = state.tls.then(certs);
            (
                Mode::Cluster,
                Backend::Cluster {
                    client: builder.build().ok(),
                    nodes,
                    certs: tls_certs,
                },
            )
        } else {
            return None;
        };
        Some(RedisStore {
            mode,
            connector: Arc::new(Connector {
                backend,
                timeout: connect_timeout(state.redis_timeout),
                primary: Mutex::new(None),
                failovers: AtomicU64::new(0),
            }),
            conn: Mutex::new(None),
            connecting: Mutex::new(None),
            listening: AtomicU8::new(0),
            script: Script::new(FAIL_SCRIPT),
            prefix: state.key_prefix.clone(),
            timeout: state.redis_timeout,
            on_error: state.on_redis_error,
            health: AtomicU8::new(UNKNOWN),
            erring: AtomicBool::new(false),
            retry_at: Mutex::new(None),
            unwritten: Mutex::new(Vec::new()),
            has_unwritten: AtomicBool::new(false),
        })
    }

    /// The key of `kind` (`f`, `b`, `s`) for one scope's subject key.
    fn key(&self, kind: char, subject: &str) -> String {
        format!("{}:{{{subject}}}:{kind}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:bans", self.prefix)
    }

    /// The Pub/Sub channel of ban events.
    fn channel(&self) -> String {
        format!("{}:ban-events", self.prefix)
    }

    /// What `/readyz` and `/metrics` show.
    pub(crate) fn status(&self) -> StoreStatus {
        StoreStatus {
            mode: self.mode,
            primary: self.connector.primary.lock().ok().and_then(|p| p.clone()),
            reachable: match self.health.load(Ordering::SeqCst) {
                UP => Some(true),
                DOWN => Some(false),
                _ => None,
            },
            failovers: self.connector.failovers.load(Ordering::SeqCst),
            listening: match self.listening.load(Ordering::SeqCst) {
                1 => Listening::Subscribed,
                2 => Listening::Lost,
                _ => Listening::Starting,
            },
        }
    }

    /// The connection in use, or the one being made (started here when none is).
    async fn connection(&self) -> Result<Conn, String> {
        let pending = {
            if let Some(conn) = self.conn.lock().map_err(|_| "connection lock poisoned")?.as_ref() {
                return Ok(conn.clone());
            }
            let mut connecting = self.connecting.lock().map_err(|_| "connection lock poisoned")?;
            connecting
                .get_or_insert_with(|| {
                    let connector = self.connector.clone();
                    let task = tokio::spawn(async move {
                        let bound = connector.timeout;
                        tokio::time::timeout(bound, connector.connect())
                            .await
                            .unwrap_or_else(|_| Err(format!("no connection within {}ms", bound.as_millis())))
                    });
                    async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        let result = pending.await;
        if let Ok(mut connecting) = self.connecting.lock() {
            // Made (or failed) once: the next caller uses it, or makes a new one.
            *connecting = None;
        }
        if let (Ok(conn), Ok(mut slot)) = (&result, self.conn.lock()) {
            *slot = Some(conn.clone());
        }
        result
    }

    /// Runs `op` on a connection within `timeout`, keeping track of Redis's health.
    async fn run<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, PolicyError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if let Ok(retry_at) = self.retry_at.lock()
            && retry_at.is_some_and(|at| Instant::now() < at)
        {
            return Err(PolicyError::Redis("waiting before trying again".to_owned()));
        }
        let attempt = async {
            let conn = self.connection().await.map_err(Failure::Connect)?;
            op(conn).await.map_err(Failure::Redis)
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Redis(e))) if !is_connection_error(&e) => {
                // Redis answered (an error reply, an unexpected type, a command the
                // client refused to send): it is reachable, and the other operations
                // must keep using it. Only this operation fails.
                if !self.erring.swap(true, Ordering::SeqCst) {
                    tracing::warn!(target: "mailauthd::policy", "redis answered an error: {e}");
                }
                return Err(PolicyError::Command(e.to_string()));
            }
            Ok(Err(Failure::Redis(e))) => Err(e.to_string()),
            Ok(Err(Failure::Connect(e))) => Err(e),
            Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
        };
        match result {
            Ok(value) => {
                self.erring.store(false, Ordering::SeqCst);
                if self.health.swap(UP, Ordering::SeqCst) == DOWN {
                    tracing::warn!(target: "mailauthd::policy", "redis is reachable again; using the shared counters");
                }
                Ok(value)
            }
            Err(reason) => {
                // A fresh connection next time (to the primary the sentinels name then):
                // the old one may be wedged on a dead socket or a demoted server.
                if let Ok(mut slot) = self.conn.lock() {
                    *slot = None;
                }
                if let Ok(mut retry_at) = self.retry_at.lock() {
                    *retry_at = Some(Instant::now() + RETRY_AFTER);
                }
                if self.health.swap(DOWN, Ordering::SeqCst) != DOWN {
                    let fallback = match self.on_error {
                        OnRedisError::Local => "counting in this process until it is back",
                        OnRedisError::Tempfail => "password logins get a temporary failure until it is back",
                    };
                    tracing::error!(target: "mailauthd::policy", "redis is unreachable ({reason}); {fallback}");
                }
                Err(PolicyError::Redis(reason))
            }
        }
    }

    /// Bans and successes of `subject`.
    pub(crate) async fn lookup(&self, subject: &Subject, now: u64) -> Result<Lookup, PolicyError> {
        let keys: Vec<String> = SCOPES
            .iter()
            .map(|s| self.key('b', subject.key(*s)))
            .chain([Scope::Net, Scope::Pair].iter().map(|s| self.key('s', subject.key(*s))))
            .collect();
        // MGET over several slots: the Cluster client splits it by node.
        let values: Vec<Option<u64>> = self
            .run(self.timeout, |mut conn| async move {
                ::redis::cmd("MGET").arg(&keys).query_async(&mut conn).await
            })
            .await?;
        let get = |i: usize| values.get(i).copied().flatten();
        Ok(Lookup {
            bans: [get(0), get(1), get(2)].map(|b| b.filter(|until| *until > now)),
            net_trusted: get(3).is_some(),
            pair_known: get(4).is_some(),
            remembered: [None; 2],
        })
    }

    /// Records one failure: one script call per counted scope (see [`FAIL_SCRIPT`]), sent
    /// together; a ban is indexed and published.
    pub(crate) async fn fail(
        &self,
        subject: &Subject,
        tag: &str,
        limits: &Limits,
        now: u64,
    ) -> Result<Recorded, PolicyError> {
        let invocations: Vec<(usize, ::redis::ScriptInvocation<'_>)> = SCOPES
            .iter()
            .enumerate()
            .filter(|(i, _)| limits.failures[*i] > 0)
            .map(|(i, scope)| {
                let key = subject.key(*scope);
                let mut invocation = self.script.prepare_invoke();
                invocation
                    .key(self.key('f', key))
                    .key(self.key('b', key))
                    .arg(now)
                    .arg(limits.window_ms)
                    .arg(limits.ban_ms)
                    .arg(tag)
                    .arg(limits.failures[i]);
                (i, invocation)
            })
            .collect();
        let until = now.saturating_add(limits.ban_ms);
        let index = self.index_key();
        let channel = self.channel();
        let keys = SCOPES.map(|s| subject.key(s));
        let out: Vec<(usize, (u32, u32))> = self
            .run(self.timeout, |conn| async move {
                let calls = invocations.into_iter().map(|(i, invocation)| {
                    let mut conn = conn.clone();
                    async move {
                        let r: (u32, u32) = invocation.invoke_async(&mut conn).await?;
                        Ok::<_, RedisError>((i, r))
                    }
                });
                let out: Vec<(usize, (u32, u32))> = futures_util::future::try_join_all(calls).await?;
                for (i, (_, banned)) in &out {
                    if *banned == 1 {
                        announce(conn.clone(), &index, &channel, keys[*i], until, false).await?;
                    }
                }
                Ok(out)
            })
            .await?;
        let mut recorded = Recorded::default();
        for (i, (count, banned)) in out {
            recorded.counts[i] = count;
            if banned == 1 && recorded.banned.is_none() {
                recorded.banned = SCOPES.get(i).copied();
            }
        }
        Ok(recorded)
    }

    /// Forgets the pair's failures and remembers the success of the network and the pair.
    pub(crate) async fn succeed(&self, subject: &Subject, memory_ms: u64, now: u64) -> Result<(), PolicyError> {
        // Not atomic: the keys are of different subjects (different Cluster slots), and
        // each command stands alone.
        let mut forget = ::redis::cmd("DEL");
        forget.arg(self.key('f', subject.key(Scope::Pair)));
        let mut cmds = vec![forget];
        for scope in [Scope::Net, Scope::Pair] {
            let mut remember = ::redis::cmd("SET");
            remember
                .arg(self.key('s', subject.key(scope)))
                .arg(now)
                .arg("PX")
                .arg(memory_ms);
            cmds.push(remember);
        }
        self.run(
            self.timeout,
            |conn| async move { each::<()>(&conn, cmds).await.map(drop) },
        )
        .await
    }

    /// Remembers a ban made in this process while Redis was unreachable, to be written to
    /// Redis by [`RedisStore::write_unwritten`] once it is back.
    pub(crate) fn keep_unwritten(&self, subject: String, until: u64) {
        if let Ok(mut list) = self.unwritten.lock()
            && list.len() < MAX_UNWRITTEN
        {
            list.push((subject, until));
            self.has_unwritten.store(true, Ordering::SeqCst);
        }
    }

    /// Whether bans made during an outage wait to be written.
    pub(crate) fn has_unwritten(&self) -> bool {
        self.has_unwritten.load(Ordering::SeqCst)
    }

    /// Writes the bans made during an outage (those not expired yet), indexed and published
    /// like any other; a longer ban already in Redis is kept. Returns how many were written.
    pub(crate) async fn write_unwritten(&self, now: u64) -> Result<usize, PolicyError> {
        let pending: Vec<(String, u64)> = match self.unwritten.lock() {
            Ok(mut list) => {
                self.has_unwritten.store(false, Ordering::SeqCst);
                std::mem::take(&mut *list)
            }
            Err(_) => return Ok(0),
        };
        let live: Vec<(String, u64)> = pending.into_iter().filter(|(_, until)| *until > now).collect();
        if live.is_empty() {
            return Ok(0);
        }
        let index = self.index_key();
        let channel = self.channel();
        let bans: Vec<(String, String, u64)> = live
            .iter()
            .map(|(subject, until)| (self.key('b', subject), subject.clone(), *until))
            .collect();
        let written = self
            .run(ADMIN_TIMEOUT, |conn| async move {
                for (key, subject, until) in &bans {
                    let left = until.saturating_sub(now).max(1);
                    // GT: a later expiry already there (a ban made elsewhere) stays.
                    let mut c = conn.clone();
                    let current: Option<u64> = ::redis::cmd("GET").arg(key).query_async(&mut c).await?;
                    if current.is_some_and(|c| c >= *until) {
                        continue;
                    }
                    ::redis::cmd("SET")
                        .arg(key)
                        .arg(*until)
                        .arg("PX")
                        .arg(left)
                        .query_async::<()>(&mut c)
                        .await?;
                    announce(conn.clone(), &index, &channel, subject, *until, true).await?;
                }
                Ok(bans.len())
            })
            .await;
        match written {
            Ok(n) => {
                tracing::info!(target: "mailauthd::policy", written = n, "bans made while redis was unreachable written to it");
                Ok(n)
            }
            Err(e) => {
                // Kept for the next time Redis is reachable.
                for (subject, until) in live {
                    self.keep_unwritten(subject, until);
                }
                Err(e)
            }
        }
    }

    /// Every ban in the index with its time left in ms (expired entries are dropped).
    async fn ban_keys(&self, now: u64) -> Result<Vec<(String, i64)>, PolicyError> {
        let index = self.index_key();
        let prefix = self.prefix.clone();
        self.run(ADMIN_TIMEOUT, |mut conn| async move {
            ::redis::cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(now)
                .query_async::<()>(&mut conn)
                .await?;
            let subjects: Vec<String> = ::redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(MAX_LISTED - 1)
                .query_async(&mut conn)
                .await?;
            // An empty pipeline is not a command Redis can be sent ("empty command").
            if subjects.is_empty() {
                return Ok(Vec::new());
            }
            let cmds = subjects
                .iter()
                .map(|subject| {
                    let mut pttl = ::redis::cmd("PTTL");
                    pttl.arg(format!("{prefix}:{{{subject}}}:b"));
                    pttl
                })
                .collect();
            let ttls: Vec<i64> = each(&conn, cmds).await?;
            Ok(subjects.into_iter().zip(ttls).collect())
        })
        .await
    }

    /// Every ban in force.
    pub(crate) async fn bans(&self, now: u64) -> Result<Vec<BanEntry>, PolicyError> {
        let mut out: Vec<BanEntry> = self
            .ban_keys(now)
            .await?
            .into_iter()
            .filter(|(_, ttl)| *ttl > 0)
            .filter_map(|(subject, ttl)| BanEntry::from_key(&subject, Duration::from_millis(ttl.unsigned_abs())))
            .collect();
        out.sort_by(|a, b| (a.scope.as_str(), &a.net, &a.user).cmp(&(b.scope.as_str(), &b.net, &b.user)));
        Ok(out)
    }

    /// Lifts the bans `filter` selects and forgets their failures; returns how many (and
    /// the subjects lifted, for the caller's cache).
    pub(crate) async fn clear(&self, filter: &BanFilter, now: u64) -> Result<Vec<String>, PolicyError> {
        let mut doomed = Vec::new();
        for (subject, ttl) in self.ban_keys(now).await? {
            if BanEntry::from_key(&subject, Duration::ZERO).is_some_and(|b| filter.matches(&b)) {
                doomed.push((subject, ttl));
            }
        }
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.index_key();
        let channel = self.channel();
        let keys: Vec<(String, String)> = doomed
            .iter()
            .map(|(s, _)| (self.key('b', s), self.key('f', s)))
            .collect();
        let subjects: Vec<String> = doomed.iter().map(|(s, _)| s.clone()).collect();
        let lifted = subjects.clone();
        self.run(ADMIN_TIMEOUT, |mut conn| async move {
            // One subject a command: they live in different Cluster slots.
            let mut cmds: Vec<Cmd> = keys
                .iter()
                .map(|(ban, window)| {
                    let mut del = ::redis::cmd("DEL");
                    del.arg(ban).arg(window);
                    del
                })
                .collect();
            let mut zrem = ::redis::cmd("ZREM");
            zrem.arg(&index).arg(&subjects);
            cmds.push(zrem);
            each::<()>(&conn, cmds).await?;
            for subject in &subjects {
                let event = BanEvent::Lifted {
                    subject: subject.clone(),
                };
                ::redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(event.encode())
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            Ok(())
        })
        .await?;
        // Only bans that were still in force count as lifted.
        Ok(doomed
            .into_iter()
            .zip(lifted)
            .filter(|((_, ttl), _)| *ttl > 0)
            .map(|(_, s)| s)
            .collect())
    }

    /// Listens for ban events for as long as the process runs, handing each to `heard`;
    /// the subscription follows the primary through failovers and is made again when lost.
    pub(crate) async fn listen(self: Arc<Self>, heard: impl Fn(BanEvent) + Send + 'static) {
        use futures_util::StreamExt;
        let channel = self.channel();
        let mut logged_lost = false;
        loop {
            let target = self.subscription_target().await;
            let subscribed = match &target {
                Some((client, _)) => match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, RedisError>(pubsub)
                })
                .await
                {
                    Ok(Ok(pubsub)) => Some(pubsub),
                    _ => None,
                },
                None => None,
            };
            if let (Some(mut pubsub), Some((_, addr))) = (subscribed, target) {
                if self.listening.swap(1, Ordering::SeqCst) == 2 {
                    heard(BanEvent::Missed);
                }
                tracing::info!(target: "mailauthd::policy", "listening for bans on {addr}");
                logged_lost = false;
                let mut messages = pubsub.on_message();
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                if let Ok(text) = msg.get_payload::<String>()
                                    && let Some(event) = BanEvent::decode(&text)
                                {
                                    heard(event);
                                }
                            }
                            None => break,
                        },
                        _ = tick.tick() => {
                            // A failover moved the primary (or the command connection found
                            // the old one gone): subscribe where the bans are published now.
                            let current = self.connector.primary.lock().ok().and_then(|p| p.clone());
                            let down = self.health.load(Ordering::SeqCst) == DOWN;
                            if self.mode == Mode::Sentinel && (down || current.is_some_and(|c| c != addr)) {
                                break;
                            }
                        }
                    }
                }
            }
            if self.listening.swap(2, Ordering::SeqCst) != 2 && !logged_lost {
                tracing::warn!(target: "mailauthd::policy", "not listening for bans made elsewhere; trying again");
                logged_lost = true;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    /// The server to subscribe on, with its address: the one server, the primary the
    /// sentinels name, or the first Cluster node that answers.
    async fn subscription_target(&self) -> Option<(Client, String)> {
        match &self.connector.backend {
            Backend::Single(client) => client.clone().map(|c| {
                let addr = c.get_connection_info().addr().to_string();
                (c, addr)
            }),
            Backend::Sentinel(sentinel) => {
                let mut sentinel =
                    tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), sentinel.as_ref()?.lock())
                        .await
                        .ok()?;
                let client =
                    tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), sentinel.async_get_client())
                        .await
                        .ok()?
                        .ok()?;
                let addr = client.get_connection_info().addr().to_string();
                Some((client, addr))
            }
            Backend::Cluster { nodes, certs, .. } => {
                for node in nodes {
                    let client = match certs {
                        Some(certs) => Client::build_with_tls(node.clone(), certs.clone()),
                        None => Client::open(node.clone()),
                    };
                    let Ok(client) = client else { continue };
                    let ok = tokio::time::timeout(self.timeout, async {
                        let mut conn = client.get_multiplexed_async_connection().await?;
                        ::redis::cmd("PING").query_async::<()>(&mut conn).await
                    })
                    .await;
                    if matches!(ok, Ok(Ok(()))) {
                        return Some((client, node.addr().to_string()));
                    }
                }
                None
            }
        }
    }
}

/// The bound on one connection attempt: a handshake takes several round trips (more with
/// Sentinel), so it gets more than one operation's `redis_timeout`.
fn connect_timeout(op_timeout: Duration) -> Duration {
    (op_timeout * 4).max(Duration::from_secs(2))
}

/// Indexes the ban of `subject` and publishes it; with `keep_later`, a later expiry already
/// in the index stays.
async fn announce(
    mut conn: Conn,
    index: &str,
    channel: &str,
    subject: &str,
    until: u64,
    keep_later: bool,
) -> RedisResult<()> {
    let mut zadd = ::redis::cmd("ZADD");
    zadd.arg(index);
    if keep_later {
        zadd.arg("GT");
    }
    zadd.arg(until).arg(subject).query_async::<()>(&mut conn).await?;
    let event = BanEvent::Banned {
        subject: subject.to_owned(),
        until,
    };
    ::redis::cmd("PUBLISH")
        .arg(channel)
        .arg(event.encode())
        .query_async::<()>(&mut conn)
        .await
}

/// Sends `cmds` at once, each on its own (a pipeline must stay within one Cluster slot),
/// and collects the answers in order.
async fn each<T: ::redis::FromRedisValue>(conn: &Conn, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
    futures_util::future::try_join_all(cmds.into_iter().map(|cmd| {
        let mut conn = conn.clone();
        async move { cmd.query_async::<T>(&mut conn).await }
    }))
    .await
}

/// `host:port` as a TCP address (validated by the config), over TLS with `tls`.
fn node_addr(node: &str, tls: bool) -> Option<ConnectionAddr> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = port.parse().ok()?;
    Some(if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    })
}

/// Whether `e` says Redis cannot be reached (or the connection is unusable), as opposed to
/// an answer it gave: only the former marks Redis down and switches to the fallback. A
/// server that became a read-only replica, and a cluster that is down, are failovers under
/// way: the connection is made again (to the new primary).
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::ClusterDown)
        )
}

#[cfg(test)]
mod tests {
    use super::{BanEvent, is_connection_error};
    use ::redis::{ErrorKind, RedisError};

    #[test]
    fn only_a_lost_or_unusable_connection_counts_as_redis_being_down() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_connection_error(&refused) && is_connection_error(&reset));
        assert!(is_connection_error(&RedisError::from((
            ErrorKind::AuthenticationFailed,
            "WRONGPASS"
        ))));
        for answered in [
            RedisError::from((ErrorKind::Client, "empty command")),
            RedisError::from((ErrorKind::UnexpectedReturnType, "not an integer")),
        ] {
            assert!(!is_connection_error(&answered), "{answered}");
        }
    }

    #[test]
    fn ban_events_read_back_and_strangers_are_ignored() {
        for event in [
            BanEvent::Banned {
                subject: "p:192.0.2.1/32|a b|c".to_owned(),
                until: 1_700_000_000_000,
            },
            BanEvent::Lifted {
                subject: "u:name with spaces".to_owned(),
            },
        ] {
            assert_eq!(BanEvent::decode(&event.encode()), Some(event));
        }
        assert_eq!(BanEvent::decode("ban soon n:x"), None);
        assert_eq!(BanEvent::decode("hello"), None);
    }
}
