//! The policy state in Redis, shared by every mailauthd instance that points at it.
//!
//! A failure is recorded by one Lua script (EVALSHA), so concurrent instances cannot race
//! between counting and banning. Keys are `<prefix>:f:<key>` (a sorted set of password tags
//! scored by time), `<prefix>:b:<key>` (a ban, holding its expiry) and `<prefix>:s:<key>`
//! (a recent success); every one carries a TTL, so Redis never keeps stale entries.
//! Each operation is bounded by `[state] redis_timeout`; after a connection failure or a
//! timeout Redis is left alone for a second, then tried again, and each change between
//! reachable and not is logged once. An error that Redis answered fails that operation
//! only: Redis is not marked down for it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult, Script};

use super::{BanEntry, BanFilter, Limits, Lookup, PolicyError, Recorded, SCOPES, Scope, Subject};
use crate::config::{OnRedisError, StateSettings};

/// Records one failure: KEYS are the three windows then the three bans (net, user, pair);
/// ARGV are now, window, ban (ms), the password tag and the three limits. Returns the three
/// counts and the 1-based index of the first scope banned (0: none).
const FAIL_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ban = tonumber(ARGV[3])
local tag = ARGV[4]
local out = {0, 0, 0, 0}
for i = 1, 3 do
  local limit = tonumber(ARGV[4 + i])
  if limit > 0 then
    local key = KEYS[i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('ZADD', key, now, tag)
    local n = redis.call('ZCARD', key)
    if n > limit then
      redis.call('ZREMRANGEBYRANK', key, 0, n - limit - 1)
      n = limit
    end
    out[i] = n
    if n >= limit then
      redis.call('SET', KEYS[3 + i], now + ban, 'PX', ban)
      redis.call('DEL', key)
      if out[4] == 0 then out[4] = i end
    else
      redis.call('PEXPIRE', key, window)
    end
  end
end
return out
";

/// How long Redis is left alone after a failed operation.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Admin operations (listing every ban) may take longer than one login's lookup.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many bans are listed.
const MAX_LISTED: usize = 100_000;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Policy state in one Redis database.
#[derive(Debug)]
pub(crate) struct RedisStore {
    client: Option<Client>,
    manager: Mutex<Option<ConnectionManager>>,
    script: Script,
    prefix: String,
    timeout: Duration,
    on_error: OnRedisError,
    health: AtomicU8,
    /// The last operation got an error answer (logged once per run of them).
    erring: AtomicBool,
    retry_at: Mutex<Option<Instant>>,
}

impl RedisStore {
    /// A store for `url` (validated by the config); nothing is connected yet.
    pub(crate) fn new(url: &str, state: &StateSettings) -> RedisStore {
        RedisStore {
            client: Client::open(url).ok(),
            manager: Mutex::new(None),
            script: Script::new(FAIL_SCRIPT),
            prefix: state.key_prefix.clone(),
            timeout: state.redis_timeout,
            on_error: state.on_redis_error,
            health: AtomicU8::new(UNKNOWN),
            erring: AtomicBool::new(false),
            retry_at: Mutex::new(None),
        }
    }

    fn key(&self, kind: char, key: &str) -> String {
        format!("{}:{kind}:{key}", self.prefix)
    }

    fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.manager.lock().map_err(|_| "connection lock poisoned".to_owned())?;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let client = self.client.clone().ok_or("the redis url cannot be used")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `op` on a connection within `timeout`, keeping track of Redis's health.
    async fn run<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, PolicyError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if let Ok(retry_at) = self.retry_at.lock()
            && retry_at.is_some_and(|at| Instant::now() < at)
        {
            return Err(PolicyError::Redis("waiting before trying again".to_owned()));
        }
        let result = match self.connection() {
            Ok(conn) => match tokio::time::timeout(timeout, op(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) if !is_connection_error(&e) => {
                    // Redis answered (an error reply, an unexpected type, a command the
                    // client refused to send): it is reachable, and the other operations
                    // must keep using it. Only this operation fails.
                    if !self.erring.swap(true, Ordering::SeqCst) {
                        tracing::warn!(target: "mailauthd::policy", "redis answered an error: {e}");
                    }
                    return Err(PolicyError::Command(e.to_string()));
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
            },
            Err(e) => Err(e),
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
                // A fresh connection next time: the old one may be wedged on a dead socket.
                if let Ok(mut slot) = self.manager.lock() {
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
            .map(|s| self.key('b', &subject.key(*s)))
            .chain(
                [Scope::Net, Scope::Pair]
                    .iter()
                    .map(|s| self.key('s', &subject.key(*s))),
            )
            .collect();
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
        })
    }

    /// Records one failure atomically (see [`FAIL_SCRIPT`]).
    pub(crate) async fn fail(
        &self,
        subject: &Subject,
        tag: &str,
        limits: &Limits,
        now: u64,
    ) -> Result<Recorded, PolicyError> {
        let mut invocation = self.script.prepare_invoke();
        for kind in ['f', 'b'] {
            for scope in SCOPES {
                invocation.key(self.key(kind, &subject.key(scope)));
            }
        }
        invocation
            .arg(now)
            .arg(limits.window_ms)
            .arg(limits.ban_ms)
            .arg(tag)
            .arg(&limits.failures[..]);
        let out: Vec<u32> = self
            .run(self.timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let get = |i: usize| out.get(i).copied().unwrap_or(0);
        let banned = match get(3) {
            0 => None,
            i => SCOPES.get(i as usize - 1).copied(),
        };
        Ok(Recorded {
            counts: [get(0), get(1), get(2)],
            banned,
        })
    }

    /// Forgets the pair's failures and remembers the success of the network and the pair.
    pub(crate) async fn succeed(&self, subject: &Subject, memory_ms: u64, now: u64) -> Result<(), PolicyError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .del(self.key('f', &subject.key(Scope::Pair)))
            .ignore()
            .cmd("SET")
            .arg(self.key('s', &subject.key(Scope::Net)))
            .arg(now)
            .arg("PX")
            .arg(memory_ms)
            .ignore()
            .cmd("SET")
            .arg(self.key('s', &subject.key(Scope::Pair)))
            .arg(now)
            .arg("PX")
            .arg(memory_ms)
            .ignore();
        self.run(self.timeout, |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Every ban key with its time left in ms.
    async fn ban_keys(&self) -> Result<Vec<(String, i64)>, PolicyError> {
        let pattern = format!("{}:b:*", glob_escape(&self.prefix));
        self.run(ADMIN_TIMEOUT, |mut conn| async move {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 || keys.len() >= MAX_LISTED {
                    break;
                }
            }
            // An empty pipeline is not a command Redis can be sent ("empty command").
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = ::redis::pipe();
            for key in &keys {
                pipe.pttl(key);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut conn).await?;
            Ok(keys.into_iter().zip(ttls).collect())
        })
        .await
    }

    /// Every ban in force.
    pub(crate) async fn bans(&self) -> Result<Vec<BanEntry>, PolicyError> {
        let strip = format!("{}:b:", self.prefix);
        let mut out: Vec<BanEntry> = self
            .ban_keys()
            .await?
            .into_iter()
            .filter(|(_, ttl)| *ttl > 0)
            .filter_map(|(key, ttl)| {
                let key = key.strip_prefix(&strip)?;
                BanEntry::from_key(key, Duration::from_millis(ttl.unsigned_abs()))
            })
            .collect();
        out.sort_by(|a, b| (a.scope.as_str(), &a.net, &a.user).cmp(&(b.scope.as_str(), &b.net, &b.user)));
        Ok(out)
    }

    /// Lifts the bans `filter` selects and forgets their failures; returns how many.
    pub(crate) async fn clear(&self, filter: &BanFilter) -> Result<usize, PolicyError> {
        let strip = format!("{}:b:", self.prefix);
        let mut doomed = Vec::new();
        for (full, _) in self.ban_keys().await? {
            let Some(key) = full.strip_prefix(&strip) else { continue };
            if BanEntry::from_key(key, Duration::ZERO).is_some_and(|b| filter.matches(&b)) {
                doomed.push(self.key('f', key));
                doomed.push(full.clone());
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let count = doomed.len() / 2;
        self.run(ADMIN_TIMEOUT, |mut conn| async move {
            ::redis::cmd("DEL").arg(&doomed).query_async::<()>(&mut conn).await
        })
        .await?;
        Ok(count)
    }
}

/// Whether `e` says Redis cannot be reached (or the connection is unusable), as opposed to
/// an answer it gave: only the former marks Redis down and switches to the fallback.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

/// Escapes the characters SCAN's MATCH treats as a pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::is_connection_error;
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
}
