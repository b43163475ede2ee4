//! A walked directory's large files, fetched ahead of the reader too.
//!
//! Packs carry only files up to [`pack::MEMBER_MAX`]; larger ones (shared libraries,
//! interpreters, compilers: a third of a typical root's bytes in a few dozen files)
//! would otherwise be fetched one at a time, each only when the walk reaches it. Once a
//! directory is prefetched, they come beside its packs, one object per request, at most
//! [`LARGE`] at once, under the same bounds as packs: their bytes count against
//! [`IN_FLIGHT`](super::IN_FLIGHT) and the share of the cache
//! ([`SHARE`](super::SHARE)); they go in only where evicting unpinned objects makes
//! room ([`Cache::offer_file`]); each is verified as it streams in
//! ([`Remote::object_to_file_gated`]); they give way to readers' own fetches
//! ([`crate::demand`], at most [`HOLD`](super::HOLD) each). A reader that opens one on
//! its way waits for it (within its deadline: `--timeout`, then its size at
//! `--min-rate`) rather than fetching it a second time, and makes it go at once if it
//! is still queued or held.
//!
//! [`Cache::offer_file`]: canopy_cache::Cache::offer_file
//! [`Remote::object_to_file_gated`]: crate::remote::Remote::object_to_file_gated

use super::Prefetch;
use crate::arrivals::Arrival;
use crate::demand::Urgent;
use canopy_protocol::pack;
use canopy_protocol::{EntryKind, ObjectId, Tree, TreeId};
use std::collections::HashSet;
use std::sync::Arc;

/// Large files fetched ahead of use at once.
pub const LARGE: usize = 2;

impl Prefetch {
    /// Fetches the files of `tree` (`tree_id`) too large for its pack, but `opened` and
    /// those cached, in the background, as far as the share allows.
    pub(super) fn large_files(
        self: &Arc<Self>,
        tree_id: TreeId,
        tree: &Tree,
        opened: Option<&ObjectId>,
    ) {
        let mut seen = HashSet::new();
        for e in tree.entries() {
            let EntryKind::File { size, blob } = e.kind else {
                continue;
            };
            let id = blob.0;
            if size <= pack::MEMBER_MAX
                || Some(&id) == opened
                || !seen.insert(id)
                || self.cache.contains(&id)
            {
                continue;
            }
            if !self.within_share(size) {
                tracing::debug!(
                    "prefetch of {id} ({size} bytes, in {tree_id}) left out: objects \
                     prefetched and not yet opened fill their share of the cache"
                );
                break;
            }
            // Registered now, so a reader that reaches it while it is queued waits for it
            // rather than fetching it too (within its deadline, as for a pack).
            let urgent = Arc::new(Urgent::default());
            let arrival = Arrival::first(self.remote.deadline(size)).promoting(urgent.clone());
            let expected = self.arrivals.expect([(id, arrival)], |_| false);
            if !expected.contains(&id) {
                continue;
            }
            let this = self.clone();
            if let Some(rt) = &self.rt {
                rt.spawn(async move {
                    this.fetch_large_into_cache(&id, size, &urgent).await;
                    // Its readers go on, whether it came or not.
                    drop(expected);
                });
            }
        }
    }

    /// Fetches object `id` of `size` bytes into the cache, if there is room once its
    /// turn comes.
    async fn fetch_large_into_cache(&self, id: &ObjectId, size: u64, urgent: &Urgent) {
        let Some((gate, _permits)) = self.turn(&self.large, size, urgent).await else {
            return;
        };
        // Queued a while: a reader may have fetched it, or the cache filled with open
        // files meanwhile.
        if self.cache.contains(id) || !self.cache.has_room(size) {
            return;
        }
        let tmp = self.cache.staging(id);
        let fetched = self
            .remote
            .object_to_file_gated(id, size, &tmp, Some(gate))
            .await;
        match fetched {
            Ok(got) => match self.cache.offer_file(id, &tmp, got) {
                Ok(true) => self.speculate(*id, got),
                Ok(false) => {}
                Err(e) => tracing::warn!("prefetch: {e}"),
            },
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!("prefetch of object {id}: {e}");
            }
        }
    }
}
