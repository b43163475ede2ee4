//! Importing many archives at once: each is read and staged in its own transaction on
//! one of a few threads (decompression is most of an import's CPU), and the staged
//! imports are committed together, so a batch costs one durable step (two `syncfs` on
//! a local store) instead of one per archive.
//!
//! Each archive stays atomic: a refused archive's transaction is dropped and leaves
//! nothing, and a crash leaves every archive imported completely or not at all
//! (objects become visible before any ref; each package ref is written after them).

use super::{ImportError, Imported, Outcome, Prepared, Staged};
use crate::store::{Store, StoreError, Txn, TxnStats};
use canopy_protocol::{ArchiveHash, ObjectId};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Staged bytes after which a batch commits and the next one starts, so that a crash
/// or a failing disk costs at most this much work, and `tmp/` holds at most this much
/// beyond what the batch adds.
const BATCH_BYTES: u64 = 1 << 30;

/// Archives read at once: one per core (each import is one thread's decompression
/// and hashing).
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An archive waiting for its batch's commit to be reported.
enum Waiting {
    /// Known already: imported before, failed, or a copy of one earlier in the batch.
    Ready(Result<Imported, ImportError>),
    /// In the batch: reported once the commit says which of its objects were new.
    Staged {
        id: canopy_protocol::PackageId,
        package: canopy_protocol::Package,
        entries: u64,
        added: Vec<(ObjectId, u64)>,
        replaced: u64,
    },
}

/// Imports archives `0..count`: `prepare(i)` reads and stages archive `i` (called on
/// up to `threads` threads at once, largest `size(i)` first), and staged archives are
/// committed together. `report` gets every archive's result in order, once it is
/// visible in the store. A failed archive — refused, or a bug caught as a panic —
/// costs the others nothing. Returns an error only if a commit fails; the archives of
/// that batch are then not imported (and not reported).
pub fn import<'s>(
    store: &'s Store,
    count: usize,
    threads: usize,
    size: impl Fn(usize) -> u64,
    prepare: impl Fn(usize) -> Result<Prepared<'s>, ImportError> + Sync,
    mut report: impl FnMut(usize, Result<Imported, ImportError>),
) -> Result<(), StoreError> {
    // Largest first: an archive is read by one thread, so a large one started last
    // would leave the other cores idle while it decompresses alone (in a set of
    // Debian packages taken in name order, python3.11-minimal came second to last).
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(i)));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads.clamp(1, count.max(1)) {
            let tx = tx.clone();
            let (next, prepare, order) = (&next, &prepare, &order);
            s.spawn(move || {
                loop {
                    let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let result = catch_unwind(AssertUnwindSafe(|| prepare(i)))
                        .unwrap_or(Err(ImportError::Bug));
                    if tx.send((i, result)).is_err() {
                        // The committer gave up (a commit failed): stop reading.
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut batch = Batch::new(store)?;
        let mut arrived = BTreeMap::new();
        let mut ordered = 0;
        for (i, result) in rx {
            arrived.insert(i, result);
            // Archives join the batch in order, so that what each reports as new is
            // what importing them one after another would report.
            while let Some(result) = arrived.remove(&ordered) {
                batch.add(ordered, result)?;
                ordered += 1;
                if batch.bytes >= BATCH_BYTES {
                    batch.commit(&mut report)?;
                    batch = Batch::new(store)?;
                }
            }
        }
        batch.commit(&mut report)
    })
}

/// Archives staged together, committed at once.
struct Batch<'s> {
    txn: Txn<'s>,
    waiting: Vec<(usize, Waiting)>,
    /// Package refs the batch sets, and the archive that set each.
    keys: HashMap<ArchiveHash, (canopy_protocol::PackageId, canopy_protocol::Package)>,
    bytes: u64,
}

impl<'s> Batch<'s> {
    fn new(store: &'s Store) -> Result<Self, StoreError> {
        Ok(Batch {
            txn: store.begin()?,
            waiting: Vec::new(),
            keys: HashMap::new(),
            bytes: 0,
        })
    }

    fn add(
        &mut self,
        i: usize,
        result: Result<Prepared<'s>, ImportError>,
    ) -> Result<(), StoreError> {
        let waiting = match result {
            Ok(Prepared::Staged(staged)) => match self.keys.get(&staged.key) {
                // The same archive twice in one batch: the second is imported already
                // by the time anyone sees it (its own staging is dropped).
                Some((id, package)) => Waiting::Ready(Ok(Imported {
                    id: *id,
                    package: package.clone(),
                    outcome: Outcome::AlreadyImported,
                })),
                None => {
                    let Staged {
                        txn,
                        id,
                        package,
                        entries,
                        key,
                    } = staged;
                    let (added, replaced) = self.txn.absorb(*txn)?;
                    self.bytes += added.iter().map(|(_, size)| size).sum::<u64>();
                    self.keys.insert(key, (id, package.clone()));
                    Waiting::Staged {
                        id,
                        package,
                        entries,
                        added,
                        replaced,
                    }
                }
            },
            Ok(Prepared::Done(done)) => Waiting::Ready(Ok(done)),
            Err(e) => Waiting::Ready(Err(e)),
        };
        self.waiting.push((i, waiting));
        Ok(())
    }

    /// Commits the batch, then reports its archives in order.
    fn commit(
        self,
        report: &mut impl FnMut(usize, Result<Imported, ImportError>),
    ) -> Result<(), StoreError> {
        let (_, new) = self.txn.commit_telling_new()?;
        for (i, waiting) in self.waiting {
            let result = match waiting {
                Waiting::Ready(result) => result,
                Waiting::Staged {
                    id,
                    package,
                    entries,
                    added,
                    replaced,
                } => {
                    let mut stats = TxnStats {
                        replaced,
                        ..TxnStats::default()
                    };
                    for (object, size) in added {
                        if new.contains(&object) {
                            stats.new_objects += 1;
                            stats.new_bytes += size;
                        }
                    }
                    Ok(Imported {
                        id,
                        package,
                        outcome: Outcome::New { entries, stats },
                    })
                }
            };
            report(i, result);
        }
        Ok(())
    }
}
