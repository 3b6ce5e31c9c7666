//! Where a password is checked against a stored hash: the verified-login cache first
//! ([`cache`]), then the hash itself, inline for cheap schemes and on the bounded thread pool
//! ([`pool`]) for slow and memory-hard ones. Sources and `decide` call [`Verifier`] only;
//! it knows hashes, not users files or nginx.

mod cache;
mod flight;
mod pool;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use zeroize::Zeroizing;

pub(crate) use cache::LoginCache;
pub(crate) use pool::{PoolError, VerifyPool};

use crate::hash::{StoredHash, Weight};
use crate::metrics::Metrics;
use cache::{Keyer, Lookup};
use flight::Flights;

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The password matches the stored hash.
    pub right: bool,
    /// The answer came from the verified-login cache, without hashing.
    pub cached: bool,
}

/// The verification pool with the verified-login cache and the single-flight table in
/// front of it.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    pool: VerifyPool,
    cache: Option<LoginCache>,
    keyer: Keyer,
    flights: Arc<Flights<Result<bool, PoolError>>>,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// Verifies on `pool`, through `cache` when it is on (`None`: no cache).
    pub(crate) fn new(pool: VerifyPool, cache: Option<LoginCache>, metrics: Arc<Metrics>) -> Verifier {
        let keyer = cache.as_ref().map_or_else(Keyer::new, |c| c.keyer().clone());
        Verifier {
            pool,
            cache,
            keyer,
            flights: Arc::new(Flights::default()),
            metrics,
        }
    }

    /// Checks `password` of `user` in `scope` (a source name) against `hash`: from the
    /// verified-login cache when it is on, else by hashing, once for every identical login
    /// in progress. Cheap schemes skip both: hashing them costs less than the key.
    pub(crate) async fn verify_login(
        &self,
        scope: &[u8],
        user: &[u8],
        password: &Zeroizing<Vec<u8>>,
        hash: &Arc<StoredHash>,
    ) -> Result<Verified, PoolError> {
        if hash.weight() == Weight::Cheap {
            let right = self.pool.run_inline(hash, |h| h.verify(password));
            return Ok(Verified { right, cached: false });
        }
        let key = self.keyer.key(scope, user, password, &hash.fingerprint());
        if let Some(cache) = &self.cache {
            let right = match cache.lookup(&key) {
                Lookup::Right => Some(true),
                Lookup::Wrong => Some(false),
                Lookup::Miss => None,
            };
            if let Some(right) = right {
                self.metrics.cache_hit();
                return Ok(Verified { right, cached: true });
            }
            self.metrics.cache_miss();
        }
        let (right, shared) = self
            .flights
            .run(key, || {
                let pass = password.clone();
                let hash = hash.clone();
                let pool = self.pool.clone();
                let cache = self.cache.clone();
                async move {
                    let right = pool.run(hash, move |h| h.verify(&pass)).await;
                    if let (Some(cache), Ok(right)) = (cache, right) {
                        cache.remember(key, right);
                    }
                    right
                }
            })
            .await;
        if shared {
            self.metrics.verification_shared();
        }
        Ok(Verified {
            right: right?,
            cached: false,
        })
    }

    /// Whether a server that checks passwords itself (an LDAP bind) accepted `password` for
    /// `user` in `scope` within the cache's TTL. Only right answers are remembered for such
    /// checks: a wrong password goes to the server each time, so a changed password is
    /// taken as soon as the server has it.
    pub(crate) fn recall_remote(&self, scope: &[u8], user: &[u8], password: &[u8]) -> bool {
        let Some(cache) = &self.cache else { return false };
        let hit = cache.lookup(&self.keyer.key(scope, user, password, &REMOTE_FINGERPRINT)) == Lookup::Right;
        if hit {
            self.metrics.cache_hit();
        } else {
            self.metrics.cache_miss();
        }
        hit
    }

    /// Remembers that the server accepted `password` for `user` in `scope`.
    pub(crate) fn remember_remote(&self, scope: &[u8], user: &[u8], password: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.remember(self.keyer.key(scope, user, password, &REMOTE_FINGERPRINT), true);
        }
    }
}

/// The stored-hash fingerprint of a login the server verified: no SHA-256 of a real hash
/// is all zeros, so such keys never meet a stored hash's.
const REMOTE_FINGERPRINT: [u8; 32] = [0; 32];
