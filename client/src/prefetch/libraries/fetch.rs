//! One library fetched ahead of its loader: registered as under way, so the loader
//! reaching it waits for it (and makes it go at once if it still waits for its turn),
//! its bytes reserved against the share of the cache for what is fetched ahead of use,
//! within the library requests' bounds, through the cache's one fetch per object.

use super::Found;
use crate::arrivals::Arrival;
use crate::demand::Urgent;
use crate::prefetch::Prefetch;
use std::sync::Arc;

impl Prefetch {
    /// Registers that `f` is under way, so the loader reaching it waits for this fetch
    /// rather than starting its own (and makes it go at once if it is still waiting
    /// for its turn), and returns its fetch (whether the cache then holds it); `None`
    /// if the cache holds it, another request or a reader brings it already, or its
    /// bytes would not stay within the share of the cache for what is fetched ahead
    /// of use (counting those of library fetches under way).
    pub(super) fn fetch_expected(
        self: &Arc<Self>,
        f: Found,
    ) -> Option<impl std::future::Future<Output = bool> + Send + 'static> {
        if self.cache.contains(&f.blob) || self.cache.is_fetching(&f.blob) {
            return None;
        }
        let reserved = Reserved::take(self, f.size)?;
        let urgent = Arc::new(Urgent::default());
        let arrival = Arrival::first(self.remote.deadline(f.size)).promoting(urgent.clone());
        let expected = self
            .arrivals
            .expect([(f.blob, arrival)], |id| self.cache.contains(id));
        if !expected.contains(&f.blob) {
            return None;
        }
        let this = self.clone();
        Some(async move {
            let cached = this.fetch_library(&f, &urgent).await;
            // Its readers go on, whether it came or not.
            drop(expected);
            drop(reserved);
            cached
        })
    }

    /// Fetches library `f` into the cache; whether the cache holds it then. It waits
    /// for its turn within the bounds unless `urgent` is set (a reader waits for it):
    /// then it goes at once, as that reader's own fetch would have.
    async fn fetch_library(&self, f: &Found, urgent: &Urgent) -> bool {
        // Counted as a reader's fetch: packs give way to it.
        let _demand = self.demand.begin();
        let _permits = match urgent.unless(self.libraries.bounds.permits(f.size)).await {
            Some(None) => return false,
            Some(Some(permits)) => Some(permits),
            None => None,
        };
        if self.cache.contains(&f.blob) {
            return true;
        }
        // Queued a while: a reader or a profile's replay may be fetching it now.
        if self.cache.is_fetching(&f.blob) || !self.cache.has_room(f.size) {
            return false;
        }
        let id = f.blob;
        match crate::arrivals::fetch_into(self.cache.clone(), self.remote.clone(), id, f.size).await
        {
            Ok(()) => {
                self.speculate(id, f.size);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "library prefetch of /{}/… object {id}: {e}",
                    String::from_utf8_lossy(&f.dir.join(&b'/')),
                );
                false
            }
        }
    }
}

/// Bytes of a library fetch under way, counted against the share of the cache for
/// what is fetched ahead of use until it ends (once in the cache, it is counted as
/// prefetched instead): fetches queued together cannot all pass the same total.
pub(super) struct Reserved {
    prefetch: Arc<Prefetch>,
    bytes: u64,
}

impl Reserved {
    /// Reserves `bytes`, if they stay within the share with those already reserved.
    fn take(prefetch: &Arc<Prefetch>, bytes: u64) -> Option<Reserved> {
        let mut reserved = prefetch.libraries.reserved.lock().expect("prefetch lock");
        if !prefetch.within_share(reserved.saturating_add(bytes)) {
            return None;
        }
        *reserved += bytes;
        Some(Reserved {
            prefetch: prefetch.clone(),
            bytes,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        *self
            .prefetch
            .libraries
            .reserved
            .lock()
            .expect("prefetch lock") -= self.bytes;
    }
}
