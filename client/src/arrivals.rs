//! Files under way: what requests ahead of use (directory packs and large files
//! prefetched, a profile's replay) are bringing, so that a reader who reaches one of
//! them waits for it rather than fetching it a second time, and the bounds those
//! requests share.
//!
//! A request registers the objects it brings ([`Arrivals::expect`]) once it is under
//! way, or already while it is queued or held back (behind others, or giving way to
//! readers' fetches) if a reader's wait can make it go at once ([`Arrival::promoting`]):
//! a walk that reaches a file of a queued directory pack then has that pack fetched
//! for it, rather than fetching each of its files alone.
//! Each object is marked arrived as soon as it is in the cache (or refused by it), and
//! whatever the request did not bring is marked when it ends, fails or is abandoned
//! ([`Expected`]'s drop): its readers then fetch it themselves. A reader's wait is
//! bounded by the request's own deadline ([`Arrival`]'s `wait`).

use crate::demand::Urgent;
use crate::prefetch::IN_FLIGHT;
use crate::remote::{FetchError, Remote};
use canopy_cache::Cache;
use canopy_protocol::ObjectId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A reader waits for a request to bring its file only if at most this many bytes of
/// the request's answer come before it; further behind, fetching it alone (one round
/// trip) is sooner.
const AHEAD: u64 = 256 << 10;

/// Something a request under way is to bring.
pub struct Arrival {
    done: Mutex<bool>,
    cond: Condvar,
    /// Where its bytes start in the request's answer.
    start: u64,
    /// How far the request's answer has been received (up to the end of its last
    /// member delivered).
    received: Arc<AtomicU64>,
    /// Longest a reader waits for it.
    wait: Duration,
    /// Set by a reader that waits for it, if its request is one that may be queued or
    /// held back: it then goes at once.
    urgent: Option<Arc<Urgent>>,
}

impl Arrival {
    /// An object whose bytes start at `start` in an answer received up to `received`,
    /// waited for at most `wait`.
    pub fn new(start: u64, received: Arc<AtomicU64>, wait: Duration) -> Self {
        Arrival {
            done: Mutex::new(false),
            cond: Condvar::new(),
            start,
            received,
            wait,
            urgent: None,
        }
    }

    /// The same, brought by a request that may be queued or held back, which `urgent`
    /// makes go at once when a reader comes to wait for it.
    pub fn promoting(self, urgent: Arc<Urgent>) -> Self {
        Arrival {
            urgent: Some(urgent),
            ..self
        }
    }

    /// The first thing of an answer (a whole object, or any member where waiting is
    /// always worth it), waited for at most `wait`.
    pub fn first(wait: Duration) -> Self {
        Arrival::new(0, Arc::new(AtomicU64::new(0)), wait)
    }

    fn finish(&self) {
        *self.done.lock().expect("arrival lock") = true;
        self.cond.notify_all();
    }

    /// Whether waiting for it beats fetching it alone: only if little of the answer is
    /// still to come before it.
    fn near(&self) -> bool {
        self.start
            .saturating_sub(self.received.load(Ordering::Relaxed))
            <= AHEAD
    }

    /// Waits until it is done or its wait has passed.
    fn wait(&self) {
        let deadline = Instant::now() + self.wait;
        let mut done = self.done.lock().expect("arrival lock");
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = self.cond.wait_timeout(done, left).expect("arrival lock").0;
        }
    }
}

/// The objects requests under way are bringing, by id (a clone shares them).
#[derive(Clone, Default)]
pub struct Arrivals {
    pending: Arc<Mutex<HashMap<ObjectId, Arc<Arrival>>>>,
}

impl Arrivals {
    /// Registers that a request now under way brings `objects`, but those another
    /// request brings already or for which `skip` says so; returns them, to be marked
    /// arrived as they come.
    pub fn expect(
        &self,
        objects: impl IntoIterator<Item = (ObjectId, Arrival)>,
        skip: impl Fn(&ObjectId) -> bool,
    ) -> Expected {
        let mut pending = self.pending.lock().expect("arrivals lock");
        let mut mine = HashMap::new();
        for (id, arrival) in objects {
            if pending.contains_key(&id) || mine.contains_key(&id) || skip(&id) {
                continue;
            }
            let arrival = Arc::new(arrival);
            pending.insert(id, arrival.clone());
            mine.insert(id, arrival);
        }
        drop(pending);
        Expected {
            arrivals: self.clone(),
            mine,
        }
    }

    /// Waits, within its request's deadline, if a request under way (or queued) is
    /// bringing `id` and has little to send before it; a request queued or held back
    /// that the reader so waits for goes at once. Called before a reader fetches `id`
    /// itself.
    pub fn wait_for(&self, id: &ObjectId) {
        let Some(arrival) = self.pending.lock().expect("arrivals lock").get(id).cloned() else {
            return;
        };
        // Only for a reader that waits for it: one made to go for a file too far in
        // would skip the in-flight bounds while that reader fetches the file alone
        // anyway, and a reader jumping about (a parallel grep) could promote any number.
        // A walk reaches a part's first files first, which are near.
        if !arrival.near() {
            return;
        }
        if let Some(urgent) = &arrival.urgent {
            urgent.set();
        }
        arrival.wait();
    }

    /// Marks `id` arrived, if `arrival` is still the one registered for it.
    fn arrived(&self, id: &ObjectId, arrival: &Arrival) {
        let mut pending = self.pending.lock().expect("arrivals lock");
        if pending.get(id).is_some_and(|a| std::ptr::eq(&**a, arrival)) {
            pending.remove(id);
        }
        drop(pending);
        arrival.finish();
    }
}

/// What one request registered it brings; whatever it has not marked arrived is marked
/// when this is dropped (its readers then fetch it themselves).
pub struct Expected {
    arrivals: Arrivals,
    mine: HashMap<ObjectId, Arc<Arrival>>,
}

impl Expected {
    /// Whether this request registered `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.mine.contains_key(id)
    }

    /// Marks `id` arrived (in the cache, or not coming): its readers go on.
    pub fn arrived(&self, id: &ObjectId) {
        if let Some(a) = self.mine.get(id) {
            self.arrivals.arrived(id, a);
        }
    }

    /// Offers `bytes`, verified as object `id`, to `cache` ([`Cache::offer`]), then marks
    /// it arrived; returns whether the cache took it. `what` names the requester in the
    /// log.
    pub fn deliver(&self, cache: &Cache, id: ObjectId, bytes: &[u8], what: &str) -> bool {
        let taken = match cache.offer(&id, bytes) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!("{what}: {e}");
                false
            }
        };
        self.arrived(&id);
        taken
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        for (id, a) in &self.mine {
            self.arrivals.arrived(id, a);
        }
    }
}

/// Whether the server has an endpoint that requests ahead of use rely on, until it
/// answers that it has not (a server from before it, or a proxy that passes only
/// objects through).
pub struct Endpoint(AtomicBool);

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint(AtomicBool::new(true))
    }
}

impl Endpoint {
    /// Whether the server is not known to lack it.
    pub fn supported(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sorts out a failed request: if `e` says the server lacks the endpoint (see
    /// [`crate::pack::unsupported`]), turns it off for good, logging once that the
    /// server has no `what` and `so` follows, and returns true; otherwise returns false,
    /// for the caller to report `e`.
    pub fn lacks(&self, e: &FetchError, what: &str, so: &str) -> bool {
        if !crate::pack::unsupported(e) {
            return false;
        }
        if self.0.swap(false, Ordering::Relaxed) {
            tracing::info!("the server has no {what} ({e}): {so}");
        }
        true
    }
}

/// How many requests ahead of use, and how many bytes of their answers, may be in
/// flight at once.
pub struct Bounds {
    requests: Arc<Semaphore>,
    /// Permits are KiB of answers in flight (at most [`IN_FLIGHT`]).
    bytes: Arc<Semaphore>,
}

/// A request's place within [`Bounds`], held until dropped.
pub type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Bounds {
    /// At most `requests` requests and [`IN_FLIGHT`] bytes in flight.
    pub fn new(requests: usize) -> Self {
        Bounds {
            requests: Arc::new(Semaphore::new(requests)),
            bytes: Arc::new(Semaphore::new((IN_FLIGHT >> 10) as usize)),
        }
    }

    /// At most `requests` more requests of their own, whose bytes count against these.
    pub fn sharing_bytes(&self, requests: usize) -> Self {
        Bounds {
            requests: Arc::new(Semaphore::new(requests)),
            bytes: self.bytes.clone(),
        }
    }

    /// Waits for room for one request of `bytes`; `None` if the bounds are closed.
    pub async fn permits(&self, bytes: u64) -> Option<Permits> {
        let request = self.requests.clone().acquire_owned().await.ok()?;
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(kib(bytes))
            .await
            .ok()?;
        Some((request, bytes))
    }
}

/// The KiB permits of a request for `bytes`: at least one, at most all there are;
/// clamped before narrowing, so a size past 4 TiB cannot wrap to a few permits.
fn kib(bytes: u64) -> u32 {
    (bytes >> 10).clamp(1, IN_FLIGHT >> 10) as u32
}

/// Fetches object `id` (`size` bytes) into `cache` through the cache's one fetch per
/// object, so a reader or another prefetch that comes for it meanwhile waits for this
/// one rather than downloading it too; on the blocking pool, since that fetch blocks.
/// The object is left unpinned; the error says why it did not come.
pub(crate) async fn fetch_into(
    cache: Arc<Cache>,
    remote: Arc<Remote>,
    id: ObjectId,
    size: u64,
) -> Result<(), String> {
    let handle = tokio::runtime::Handle::current();
    let fetched = tokio::task::spawn_blocking(move || {
        let got = cache.get(&id, |tmp| {
            handle.block_on(remote.object_to_file(&id, size, tmp))
        });
        if got.is_ok() {
            cache.unpin(&id);
        }
        got.map(|_| ())
    })
    .await;
    match fetched {
        Ok(got) => got.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_clamped_before_narrowing() {
        let all = (IN_FLIGHT >> 10) as u32;
        assert_eq!(kib(0), 1);
        assert_eq!(kib(5 << 10), 5);
        // 4 TiB + 1 KiB would wrap to 1 permit as a u32.
        assert_eq!(kib((1 << 42) + 1024), all);
        assert_eq!(kib(u64::MAX), all);
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::of(&[n])
    }

    #[test]
    fn a_reader_waits_for_what_is_under_way_and_no_longer() {
        let arrivals = Arrivals::default();
        // Nothing under way: no wait.
        arrivals.wait_for(&id(1));
        let expected = arrivals.expect(
            [
                (id(1), Arrival::first(Duration::from_secs(60))),
                (id(2), Arrival::first(Duration::from_secs(60))),
                (id(3), Arrival::first(Duration::from_secs(60))),
            ],
            |i| *i == id(3),
        );
        assert!(expected.contains(&id(1)) && !expected.contains(&id(3)));
        // Another request does not register what one brings already.
        let other = arrivals.expect([(id(1), Arrival::first(Duration::ZERO))], |_| false);
        assert!(!other.contains(&id(1)));
        // A reader is woken when its object arrives.
        let a = arrivals.clone();
        let reader = std::thread::spawn(move || a.wait_for(&id(1)));
        std::thread::sleep(Duration::from_millis(20));
        expected.arrived(&id(1));
        reader.join().unwrap();
        // What the request did not bring is let go when it ends.
        let a = arrivals.clone();
        let reader = std::thread::spawn(move || a.wait_for(&id(2)));
        drop(expected);
        reader.join().unwrap();
        assert!(arrivals.pending.lock().unwrap().is_empty());
        // A wait is bounded by the arrival's own limit.
        let _stuck = arrivals.expect([(id(4), Arrival::first(Duration::from_millis(30)))], |_| {
            false
        });
        arrivals.wait_for(&id(4));
        // Far behind in its answer: the reader does not wait at all.
        let far = Arrival::new(
            AHEAD + 1,
            Arc::new(AtomicU64::new(0)),
            Duration::from_secs(60),
        );
        let _far = arrivals.expect([(id(5), far)], |_| false);
        arrivals.wait_for(&id(5));
    }
}
