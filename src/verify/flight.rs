//! Single flight: identical logins that arrive together (a phone reconnecting several IMAP
//! folders at once) cost one verification. The first caller for a [`LoginKey`] hashes; the
//! others wait for its answer. The key is the verified-login cache's (user, password and
//! stored hash, keyed with a random per-process secret), so two different passwords never
//! share an answer. An entry lives only while someone waits on it, so the table holds at
//! most one entry per login in progress.
//!
//! Hand-written on tokio's `OnceCell`: if the caller doing the work gives up (its request
//! deadline passed), the next waiter takes the work over, so no waiter is left without an
//! answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::cache::LoginKey;

/// One verification in progress, shared by every caller with the same key.
type Cell<T> = Arc<OnceCell<T>>;

/// The logins being verified now.
#[derive(Debug)]
pub(crate) struct Flights<T> {
    table: Mutex<HashMap<LoginKey, Cell<T>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Flights<T> {
        Flights {
            table: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes a flight from the table once its last caller is done with it (also when that
/// caller's future is dropped half-way).
struct Seat<'a, T> {
    flights: &'a Flights<T>,
    key: LoginKey,
    cell: Cell<T>,
}

impl<T> Drop for Seat<'_, T> {
    fn drop(&mut self) {
        let mut table = self.flights.table.lock().unwrap_or_else(|e| e.into_inner());
        // Two holders left: the table and this seat. Then nobody else waits on it.
        if table.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) && Arc::strong_count(&self.cell) <= 2 {
            table.remove(&self.key);
        }
    }
}

impl<T: Clone> Flights<T> {
    /// Runs `work` for `key` unless a caller with the same key is already running it, in
    /// which case its answer is awaited and returned. The flag says whether the answer was
    /// someone else's.
    pub(crate) async fn run<F, Fut>(&self, key: LoginKey, work: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            table.entry(key).or_default().clone()
        };
        let seat = Seat {
            flights: self,
            key,
            cell,
        };
        let mut ran = false;
        let answer = seat
            .cell
            .get_or_init(|| {
                ran = true;
                work()
            })
            .await
            .clone();
        drop(seat);
        (answer, !ran)
    }

    /// Flights in the table now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
