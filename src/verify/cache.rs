//! The verified-login cache: remembers that a password was right (or wrong) for a user's
//! stored hash, so that a mail client reconnecting all day with the same password costs one
//! slow hash per TTL instead of one per login.
//!
//! What is stored is never the password: the key is
//! HMAC-SHA256(random per-process key, scope ‖ user ‖ password ‖ fingerprint of the stored
//! hash), each variable-length field prefixed with its length so that no two different
//! inputs share a key. Because the stored hash's fingerprint is part of the key, a changed
//! hash (reload, password change) can never be answered from the cache; the entry for the
//! old hash simply ages out. Positive entries live `ttl`, negative ones (a wrong password,
//! still a failure for the caller and for any failure policy) `negative_ttl`. Expiry is
//! checked against an injected [`Clock`], so tests are exact and instant; moka's own TTL and
//! size bound only evict.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::config::CacheSettings;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// What the cache knows about one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// This password was verified right against this stored hash, within the TTL.
    Right,
    /// This password was verified wrong against this stored hash, within the negative TTL.
    Wrong,
    /// Nothing known: verify.
    Miss,
}

/// The key of one (scope, user, password, stored hash) combination. Holds no secret that
/// could be turned back into the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LoginKey([u8; 32]);

/// Computes [`LoginKey`]s with a random per-process key. Shared by the cache and the
/// single-flight table, so one login has one key in both.
#[derive(Clone)]
pub(crate) struct Keyer(Arc<Zeroizing<[u8; 32]>>);

impl fmt::Debug for Keyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyer(<redacted>)")
    }
}

impl Keyer {
    /// A keyer with a new random key.
    pub(crate) fn new() -> Keyer {
        Keyer(Arc::new(Zeroizing::new(rand::random())))
    }

    /// The key for `password` of `user` in `scope` (a source name) against a stored hash
    /// with `fingerprint`.
    pub(crate) fn key(&self, scope: &[u8], user: &[u8], password: &[u8], fingerprint: &[u8; 32]) -> LoginKey {
        // The key has the right length for HMAC-SHA256, so this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_slice()) else {
            unreachable!("a 32-byte HMAC key is always accepted")
        };
        for field in [scope, user, password] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        mac.update(fingerprint);
        LoginKey(mac.finalize().into_bytes().into())
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    right: bool,
    expires: Instant,
}

/// The verified-login cache. Cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct LoginCache {
    keyer: Keyer,
    entries: moka::sync::Cache<LoginKey, Entry>,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCache")
            .field("settings", &self.settings)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl LoginCache {
    /// A cache on the system clock, or `None` when `settings.ttl` is 0 (cache off).
    pub(crate) fn new(settings: CacheSettings) -> Option<LoginCache> {
        LoginCache::with_clock(settings, Arc::new(SystemClock))
    }

    /// A cache reading the time from `clock`, or `None` when `settings.ttl` is 0.
    pub(crate) fn with_clock(settings: CacheSettings, clock: Arc<dyn Clock>) -> Option<LoginCache> {
        if settings.ttl.is_zero() || settings.max_entries == 0 {
            return None;
        }
        // moka evicts on its own clock a little after our expiry; the exact check is ours.
        let longest = settings.ttl.max(settings.negative_ttl);
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_entries)
            .time_to_live(longest)
            .build();
        Some(LoginCache {
            keyer: Keyer::new(),
            entries,
            settings,
            clock,
        })
    }

    /// The keyer of this cache's keys.
    pub(crate) fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// The key for `password` of `user` in `scope` (a source name) against a stored hash
    /// with `fingerprint`.
    #[cfg(test)]
    pub(crate) fn key(&self, scope: &[u8], user: &[u8], password: &[u8], fingerprint: &[u8; 32]) -> LoginKey {
        self.keyer.key(scope, user, password, fingerprint)
    }

    /// What is known about `key` now.
    pub(crate) fn lookup(&self, key: &LoginKey) -> Lookup {
        match self.entries.get(key) {
            Some(entry) if entry.expires > self.clock.now() => {
                if entry.right {
                    Lookup::Right
                } else {
                    Lookup::Wrong
                }
            }
            Some(_) => {
                self.entries.invalidate(key);
                Lookup::Miss
            }
            None => Lookup::Miss,
        }
    }

    /// Remembers the outcome of a completed verification.
    pub(crate) fn remember(&self, key: LoginKey, right: bool) {
        let ttl = if right {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let expires = self.clock.now() + ttl;
        self.entries.insert(key, Entry { right, expires });
    }

    /// Entries held (approximate: moka counts lazily).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests;
