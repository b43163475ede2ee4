//! Demand first: a reader waiting for an object it asked for is served before anything
//! fetched ahead of use.
//!
//! Prefetch shares the host's cores, the server's disk and the link with the fetches
//! that readers wait for; a program that starts (an interpreter, a shell) waits on a
//! handful of files, one after another, and every one of them that queues behind a
//! pack makes the start slower. So each fetch a reader waits for is counted while it
//! runs ([`Demand::begin`]), and prefetch holds back while any is counted
//! ([`Demand::idle`]): it starts no pack and reads no further into one under way
//! (the server's writes then stop at the socket's buffer, so its disk and CPU go to
//! the demand too). The hold is bounded: a stream of demand fetches that never ends
//! (a walk over a tree) delays a pack by at most the limit its caller gives, after
//! which it goes on beside them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Fetches readers wait for, under way now.
#[derive(Default)]
pub struct Demand {
    active: AtomicUsize,
    idle: Notify,
}

/// One fetch a reader waits for, counted until dropped.
pub struct Fetching<'a>(&'a Demand);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Demand {
    /// Counts a fetch a reader waits for, until the guard is dropped.
    pub fn begin(&self) -> Fetching<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Fetching(self)
    }

    /// Whether no reader's fetch is under way.
    pub fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// Waits until no reader's fetch is under way, or `limit` has passed; returns how
    /// long it waited.
    pub async fn idle(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + limit);
        loop {
            // Registered before the count is read, so a fetch that ends in between
            // still wakes it (`notify_waiters` reaches every `Notified` created).
            let notified = self.idle.notified();
            if self.is_idle() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waits_for_demand_to_end_and_no_longer_than_its_limit() {
        let demand = Arc::new(Demand::default());
        // Nothing under way: no wait.
        assert!(demand.idle(Duration::from_secs(5)).await < Duration::from_secs(1));
        let guard = demand.begin();
        // Bounded: a fetch that does not end holds prefetch back for the limit only.
        let waited = demand.idle(Duration::from_millis(50)).await;
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        drop(guard);
        assert!(demand.is_idle());
        // Woken when the last fetch ends, long before the limit.
        let d = demand.clone();
        let held = std::thread::spawn(move || {
            let _g = d.begin();
            let _h = d.begin();
            std::thread::sleep(Duration::from_millis(100));
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waited = demand.idle(Duration::from_secs(30)).await;
        held.join().unwrap();
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert!(demand.is_idle());
    }
}
