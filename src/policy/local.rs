//! The policy state in this process: failure windows, bans and recent successes in three
//! bounded moka caches. A flood of distinct networks or user names evicts the coldest
//! entries instead of growing memory; idle entries expire on their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::{BanEntry, BanFilter, Limits, Lookup, Recorded, SCOPES, Scope, Subject, millis};
use crate::config::PolicySettings;

/// The distinct failures (password tags) of one key inside its window. Holds at most as
/// many entries as the limit, so its size is bounded too.
#[derive(Debug, Default)]
pub(crate) struct Window {
    entries: Vec<(String, u64)>,
}

impl Window {
    /// Adds a failure with password tag `tag` at `now` and returns how many distinct
    /// failures the window holds: entries older than `window_ms` are dropped first, a tag
    /// already present only moves to `now`, and past `limit` the oldest go.
    pub(crate) fn record(&mut self, tag: &str, now: u64, window_ms: u64, limit: u32) -> u32 {
        self.entries.retain(|(_, at)| at.saturating_add(window_ms) > now);
        match self.entries.iter_mut().find(|(t, _)| t == tag) {
            Some(entry) => entry.1 = now,
            None => self.entries.push((tag.to_owned(), now)),
        }
        let cap = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        while self.entries.len() > cap {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, at))| *at)
                .map_or(0, |(i, _)| i);
            self.entries.swap_remove(oldest);
        }
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }
}

/// How many entries a table holds, or more: an entry is counted before it is inserted (or
/// as soon as it is created) and uncounted when the table reports its removal. So zero
/// means the table is empty, and a login need not look anything up in it: with no
/// failures and no bans about, that is most logins' case.
#[derive(Debug, Default)]
struct Held(AtomicUsize);

impl Held {
    fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// For the table's eviction listener. (Wrapping: a removal reported before its entry
    /// was counted leaves a huge count for that moment, which only means "look it up".)
    fn remove(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    fn none(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

/// The eviction listener of a table counted by `held`.
fn uncount<K, V>(held: &Arc<Held>) -> impl Fn(Arc<K>, V, RemovalCause) + Send + Sync + 'static {
    let held = held.clone();
    move |_, _, _| held.remove()
}

/// Failure windows, bans and successes of this process.
#[derive(Debug)]
pub(crate) struct LocalStore {
    windows: Cache<String, Arc<Mutex<Window>>>,
    windows_held: Arc<Held>,
    bans: Cache<String, u64>,
    bans_held: Arc<Held>,
    successes: Cache<String, u64>,
    success_ms: u64,
}

impl LocalStore {
    /// Empty tables bounded by `settings.max_entries` each.
    pub(crate) fn new(settings: &PolicySettings) -> LocalStore {
        let cap = settings.max_entries;
        let (windows_held, bans_held) = (Arc::new(Held::default()), Arc::new(Held::default()));
        LocalStore {
            windows: Cache::builder()
                .max_capacity(cap)
                .time_to_idle(settings.window)
                .eviction_listener(uncount(&windows_held))
                .build(),
            windows_held,
            bans: Cache::builder()
                .max_capacity(cap)
                .time_to_live(settings.ban)
                .eviction_listener(uncount(&bans_held))
                .build(),
            bans_held,
            successes: Cache::builder()
                .max_capacity(cap)
                .time_to_live(settings.success_memory)
                .build(),
            success_ms: millis(settings.success_memory),
        }
    }

    /// Bans and successes of `subject`.
    pub(crate) fn lookup(&self, subject: &Subject, now: u64) -> Lookup {
        let no_bans = self.bans_held.none();
        let ban = |scope: Scope| {
            if no_bans {
                return None;
            }
            self.bans.get(subject.key(scope)).filter(|until| *until > now)
        };
        let remembered = [Scope::Net, Scope::Pair].map(|scope| self.successes.get(subject.key(scope)));
        let recent = |at: Option<u64>| at.is_some_and(|at| at.saturating_add(self.success_ms) > now);
        Lookup {
            bans: SCOPES.map(ban),
            net_trusted: recent(remembered[0]),
            pair_known: recent(remembered[1]),
            remembered,
        }
    }

    /// Records one failure in each scope's window; a window that reaches its limit becomes
    /// a ban and starts again from zero.
    pub(crate) fn fail(&self, subject: &Subject, tag: &str, limits: &Limits, now: u64) -> Recorded {
        let mut recorded = Recorded::default();
        for (i, scope) in SCOPES.into_iter().enumerate() {
            let limit = limits.failures[i];
            if limit == 0 {
                continue;
            }
            let key = subject.key(scope);
            let entry = self.windows.entry_by_ref(key).or_default();
            if entry.is_fresh() {
                self.windows_held.add();
            }
            let window = entry.into_value();
            let count = match window.lock() {
                Ok(mut w) => w.record(tag, now, limits.window_ms, limit),
                Err(poisoned) => poisoned.into_inner().record(tag, now, limits.window_ms, limit),
            };
            recorded.counts[i] = count;
            if count >= limit {
                self.bans_held.add();
                self.bans.insert(key.to_owned(), now.saturating_add(limits.ban_ms));
                self.windows.invalidate(key);
                recorded.banned = recorded.banned.or(Some(scope));
            }
        }
        recorded
    }

    /// Forgets the pair's failures and remembers the success of the network and the pair.
    /// `remembered`: when the network's and the pair's successes were last remembered, as
    /// [`LocalStore::lookup`] read them for this login (`None`: not remembered, or not read).
    pub(crate) fn succeed(&self, subject: &Subject, remembered: [Option<u64>; 2], now: u64) {
        let pair = subject.key(Scope::Pair);
        // Most logins have no failures to forget, and a cache read costs far less than a
        // removal or an insert (each one a write through moka's queues).
        if !self.windows_held.none() && self.windows.contains_key(pair) {
            self.windows.invalidate(pair);
        }
        // A success remembered less than 1 % of the memory ago (at most 1 s) is not
        // refreshed: an IMAP client reconnecting in a loop would otherwise write twice per login.
        let refresh_ms = (self.success_ms / 100).min(1000);
        for (key, at) in [subject.key(Scope::Net), pair].into_iter().zip(remembered) {
            if at.is_none_or(|at| now.saturating_sub(at) >= refresh_ms) {
                self.successes.insert(key.to_owned(), now);
            }
        }
    }

    /// The bans in force at `now`.
    pub(crate) fn bans(&self, now: u64) -> Vec<BanEntry> {
        let mut out: Vec<BanEntry> = self
            .bans
            .iter()
            .filter(|(_, until)| *until > now)
            .filter_map(|(key, until)| BanEntry::from_key(&key, Duration::from_millis(until - now)))
            .collect();
        out.sort_by(|a, b| (a.scope.as_str(), &a.net, &a.user).cmp(&(b.scope.as_str(), &b.net, &b.user)));
        out
    }

    /// Lifts the bans `filter` selects and forgets their failures; returns how many.
    pub(crate) fn clear(&self, filter: &BanFilter, now: u64) -> usize {
        let mut cleared = 0;
        for (key, until) in self.bans.iter() {
            let Some(ban) = BanEntry::from_key(&key, Duration::ZERO) else {
                continue;
            };
            if filter.matches(&ban) {
                self.bans.invalidate(key.as_str());
                self.windows.invalidate(key.as_str());
                cleared += usize::from(until > now);
            }
        }
        cleared
    }

    /// The counts of held windows and bans, after pending evictions are applied.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        self.windows.run_pending_tasks();
        self.bans.run_pending_tasks();
        let count = |held: &Held| held.0.load(Ordering::SeqCst);
        (count(&self.windows_held), count(&self.bans_held))
    }

    /// Entries held in all three tables, after pending evictions are applied.
    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> u64 {
        self.windows.run_pending_tasks();
        self.bans.run_pending_tasks();
        self.successes.run_pending_tasks();
        self.windows.entry_count() + self.bans.entry_count() + self.successes.entry_count()
    }
}
