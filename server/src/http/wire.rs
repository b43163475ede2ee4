//! Answers computed once: the zstd form of objects and tree packs, and tree packs
//! themselves. Everything they are made of is immutable, so each is computed on first
//! request (once, however many ask at the same time), kept in memory within a byte
//! budget, least recently used first out, and served with its length known.

use super::answer::Answer;
use bytes::Bytes;
use canopy_protocol::ObjectId;
use lru::LruCache;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Objects smaller than this are sent as they are: a zstd frame would save little and
/// cost the client a decompression.
pub(super) const MIN_COMPRESS: u64 = 512;
/// Objects larger than this are sent as they are: their zstd form would take too much
/// of the budget.
pub(super) const MAX_COMPRESS: u64 = 64 * 1024 * 1024;
/// zstd's level: its default, fast enough that the first request barely waits.
const LEVEL: i32 = 3;
/// What an entry costs beyond its bytes (key, bookkeeping), so that many small or
/// empty entries are bounded too.
const ENTRY_COST: u64 = 128;

/// What a cached answer is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Kind {
    /// A small object's bytes, as they are: served from memory.
    Small,
    /// An object, zstd-compressed; none if that would not make it smaller.
    ObjectZstd,
    /// Every tree under a tree, as a tree pack.
    TreePack,
    /// That pack, zstd-compressed.
    TreePackZstd,
}

type Cell = Arc<OnceCell<Option<Bytes>>>;

struct Entry {
    cell: Cell,
    /// What it counts against the budget once computed (0 before).
    cost: u64,
}

struct State {
    lru: LruCache<(Kind, ObjectId), Entry>,
    used: u64,
}

/// The cache of computed answers.
pub(super) struct WireCache {
    budget: u64,
    state: Mutex<State>,
}

impl WireCache {
    /// A cache holding at most `budget` bytes.
    pub(super) fn new(budget: u64) -> WireCache {
        WireCache {
            budget,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    /// The cached answer for `key`, computing it with `compute` (on the blocking pool)
    /// if nobody has. Concurrent callers for one key wait for one computation. A failed
    /// computation is not kept: the next caller tries again.
    pub(super) async fn get(
        &self,
        kind: Kind,
        id: ObjectId,
        compute: impl FnOnce() -> Result<Option<Bytes>, Answer> + Send + 'static,
    ) -> Result<Option<Bytes>, Answer> {
        let key = (kind, id);
        let cell = {
            let mut state = self.state.lock().expect("wire cache lock");
            state
                .lru
                .get_or_insert(key, || Entry {
                    cell: Cell::default(),
                    cost: 0,
                })
                .cell
                .clone()
        };
        if let Some(done) = cell.get() {
            return Ok(done.clone());
        }
        let value = cell
            .get_or_try_init(|| super::blocking(compute))
            .await?
            .clone();
        self.account(key, &cell, &value);
        Ok(value)
    }

    /// The cached answer for `key`, if it has been computed.
    pub(super) fn peek(&self, kind: Kind, id: ObjectId) -> Option<Option<Bytes>> {
        let mut state = self.state.lock().expect("wire cache lock");
        state
            .lru
            .get(&(kind, id))
            .and_then(|entry| entry.cell.get().cloned())
    }

    /// Keeps `value` as the answer for `key` (computed by the caller), unless one is
    /// kept already.
    pub(super) fn insert(&self, kind: Kind, id: ObjectId, value: Option<Bytes>) {
        let key = (kind, id);
        let cell = Cell::new(OnceCell::new_with(Some(value.clone())));
        {
            let mut state = self.state.lock().expect("wire cache lock");
            if state.lru.contains(&key) {
                return;
            }
            state.lru.put(
                key,
                Entry {
                    cell: cell.clone(),
                    cost: 0,
                },
            );
        }
        self.account(key, &cell, &value);
    }

    /// Counts a computed value against the budget (once, and only if `cell` is still
    /// the entry for `key`), and evicts what is over it.
    fn account(&self, key: (Kind, ObjectId), cell: &Cell, value: &Option<Bytes>) {
        let mut state = self.state.lock().expect("wire cache lock");
        let cost = ENTRY_COST + value.as_ref().map_or(0, |b| b.len() as u64);
        let mut added = 0;
        if let Some(entry) = state.lru.peek_mut(&key)
            && Arc::ptr_eq(&entry.cell, cell)
            && entry.cost == 0
        {
            entry.cost = cost;
            added = cost;
        }
        state.used += added;
        while state.used > self.budget {
            let Some((_, old)) = state.lru.pop_lru() else {
                break;
            };
            state.used -= old.cost;
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.state.lock().expect("wire cache lock").used
    }
}

/// `data` in zstd, if that makes it at least 1/16 smaller.
pub(super) fn compress(data: &[u8]) -> std::io::Result<Option<Bytes>> {
    let packed = zstd::bulk::compress(data, LEVEL)?;
    Ok((packed.len() < data.len() - data.len() / 16).then(|| Bytes::from(packed)))
}

/// Whether an `Accept-Encoding` value accepts zstd (named, with a weight above 0).
pub(super) fn accepts_zstd(accept: Option<&str>) -> bool {
    accept.is_some_and(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let weight = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            coding.eq_ignore_ascii_case("zstd") && weight > 0.0
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_weights() {
        assert!(accepts_zstd(Some("gzip, zstd")));
        assert!(accepts_zstd(Some("ZSTD;q=0.5")));
        assert!(!accepts_zstd(Some("zstd;q=0")));
        assert!(!accepts_zstd(Some("gzip, br")));
        assert!(!accepts_zstd(None));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn computes_once_and_stays_within_its_budget() {
        let cache = WireCache::new(500);
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let get = |id: u8, len: usize| {
            let calls = calls.clone();
            let cache = &cache;
            async move {
                cache
                    .get(Kind::ObjectZstd, ObjectId::of(&[id]), move || {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok(Some(Bytes::from(vec![id; len])))
                    })
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let (a, b) = tokio::join!(get(1, 100), get(1, 100));
        assert_eq!(a, b);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        get(2, 100).await;
        get(3, 100).await;
        assert!(cache.used() <= 500);
        // 1 was the least recently used: computed again.
        get(1, 100).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
