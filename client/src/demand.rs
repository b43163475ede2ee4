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
//!
//! A fetch ahead of use that a reader comes to wait for (its file is in a pack that is
//! queued or held) is made [`Urgent`]: from then on it stands for that reader's own
//! fetch, so it gives way to nothing and waits for no turn.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A fetch ahead of use that a reader now waits for: it no longer gives way (see the
/// module's documentation).
#[derive(Default)]
pub struct Urgent {
    set: AtomicBool,
    notify: Notify,
}

impl Urgent {
    /// Makes it urgent, waking whatever waits only because it was not.
    pub fn set(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Whether a reader waits for it.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Runs `wait` (for a turn, or for readers' fetches to end) unless or until this
    /// becomes urgent; `None` if it did.
    pub async fn unless<F: Future>(&self, wait: F) -> Option<F::Output> {
        // Enabled before the flag is read, so a `set` in between still wakes it.
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return None;
        }
        tokio::select! {
            biased;
            _ = notified => None,
            out = wait => Some(out),
        }
    }
}

/// Where a fetch ahead of use gives way to readers' fetches: while `demand` has some
/// under way, it reads no further, for at most `hold` in all, and not at all once
/// `urgent` is set.
pub struct Gate<'a> {
    /// Readers' fetches.
    pub demand: &'a Demand,
    /// How long it may still be held, in all.
    pub hold: Duration,
    /// Set when a reader comes to wait for this fetch.
    pub urgent: Option<&'a Urgent>,
}

impl Gate<'_> {
    /// Waits while readers' fetches are under way, within what is left of the hold
    /// (and unless urgent); returns how long it waited, which the caller does not count
    /// against the transfer's minimum rate.
    pub async fn pass(&mut self) -> Duration {
        if self.hold.is_zero() || self.demand.is_idle() || self.urgent.is_some_and(Urgent::is_set) {
            return Duration::ZERO;
        }
        let started = Instant::now();
        match self.urgent {
            Some(urgent) => {
                urgent.unless(self.demand.idle(self.hold)).await;
            }
            None => {
                self.demand.idle(self.hold).await;
            }
        }
        let held = started.elapsed();
        self.hold = self.hold.saturating_sub(held);
        held
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

    #[tokio::test]
    async fn an_urgent_fetch_gives_way_to_nothing() {
        let demand = Demand::default();
        let _reader = demand.begin();
        let urgent = Arc::new(Urgent::default());
        // Made urgent while it waits: it goes on long before its hold ends.
        let u = urgent.clone();
        let setter = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            u.set();
        });
        let mut gate = Gate {
            demand: &demand,
            hold: Duration::from_secs(30),
            urgent: Some(&urgent),
        };
        assert!(gate.pass().await < Duration::from_secs(10));
        setter.await.unwrap();
        // Urgent already: no wait at all, and none for a turn either.
        assert_eq!(gate.pass().await, Duration::ZERO);
        assert!(urgent.unless(std::future::pending::<()>()).await.is_none());
        // Not urgent: the wait runs to its end.
        assert_eq!(Urgent::default().unless(async { 7 }).await, Some(7));
    }
}
