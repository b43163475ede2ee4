//! File contents into the replica: which it lacks, and fetching them in parallel into
//! durable batches.

use super::{Event, Options, RootError, RootReport, Upstream, batch_written};
use crate::store::{IoContext, Store, StoreError};
use canopy_client::remote::FetchError;
use canopy_protocol::ObjectId;
use futures_util::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The objects of `wanted` the store does not hold, in order. A store in a bucket is
/// asked `jobs` objects at a time (each is a request); a local one stats its files.
pub(super) fn absent(
    store: &Store,
    wanted: &[(ObjectId, u64)],
    jobs: usize,
) -> Result<Vec<(ObjectId, u64)>, StoreError> {
    if !store.is_remote() || wanted.len() < 2 {
        return absent_one_by_one(store, wanted);
    }
    let chunk = wanted.len().div_ceil(jobs.max(1));
    let parts: Vec<Result<Vec<(ObjectId, u64)>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = wanted
            .chunks(chunk)
            .map(|part| s.spawn(move || absent_one_by_one(store, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a presence check does not panic"))
            .collect()
    });
    let mut out = Vec::new();
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

fn absent_one_by_one(
    store: &Store,
    wanted: &[(ObjectId, u64)],
) -> Result<Vec<(ObjectId, u64)>, StoreError> {
    let mut out = Vec::new();
    for w in wanted {
        if !store.has(&w.0)? {
            out.push(*w);
        }
    }
    Ok(out)
}

/// A scratch directory under the store's `tmp/` (which the next writer cleans if this
/// one dies), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(store: &Store) -> Result<Self, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = store
            .path()
            .join("tmp")
            .join(format!("replicate-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fetches `missing` (id, size as the tree says) into the store in batches of about
/// `opts.batch_bytes`, each written durably before the next is fetched.
pub(super) fn copy(
    store: &Store,
    up: &Upstream,
    opts: &Options,
    name: &str,
    missing: &[(ObjectId, u64)],
    report: &mut RootReport,
    progress: &dyn Fn(Event),
) -> Result<(), RootError> {
    if missing.is_empty() {
        return Ok(());
    }
    let total: u64 = missing.iter().map(|(_, s)| s).sum();
    let scratch = Scratch::new(store)?;
    let mut rest = missing;
    while !rest.is_empty() {
        if up.stop.load(Ordering::SeqCst) {
            return Err(RootError::Stopped);
        }
        // At least one object per batch, however large.
        let mut bytes = 0;
        let take = rest
            .iter()
            .position(|(_, size)| {
                bytes += size;
                bytes > opts.batch_bytes
            })
            .map_or(rest.len(), |i| i.max(1));
        let (batch, later) = rest.split_at(take);
        rest = later;
        let fetched = fetch_batch(up, opts.jobs, batch, &scratch.0)?;
        let mut txn = store.begin()?;
        for (id, path, size) in &fetched {
            txn.adopt_verified(*id, path, *size)?;
        }
        txn.commit()?;
        batch_written();
        report.objects_fetched += fetched.len() as u64;
        report.bytes_fetched += fetched.iter().map(|(_, _, s)| s).sum::<u64>();
        progress(Event::Fetched {
            root: name,
            objects: report.objects_fetched,
            of: missing.len() as u64,
            bytes: report.bytes_fetched,
            total,
        });
    }
    Ok(())
}

/// Fetches `batch` into files of `dir`, `jobs` at a time, each verified against its id
/// and its size; stops early on the first failure or when asked to stop. The fetches
/// run as one task on the runtime, beside the connections' own tasks, rather than on
/// this thread: every chunk received would otherwise cross threads.
fn fetch_batch(
    up: &Upstream,
    jobs: usize,
    batch: &[(ObjectId, u64)],
    dir: &Path,
) -> Result<Vec<(ObjectId, PathBuf, u64)>, RootError> {
    let (remote, stop) = (up.remote.clone(), up.stop.clone());
    let (batch, dir) = (batch.to_vec(), dir.to_path_buf());
    let task = up.rt.spawn(async move {
        let fetches = futures_util::stream::iter(batch.into_iter().map(|(id, size)| {
            let (remote, path) = (remote.clone(), dir.join(id.to_hex()));
            async move {
                let got = remote
                    .object_to_file(&id, size, &path)
                    .await
                    .map_err(|e| fetch_failed(id, e))?;
                if got != size {
                    let _ = std::fs::remove_file(&path);
                    return Err(RootError::BadObject {
                        id,
                        reason: format!(
                            "the upstream sent {got} bytes, its tree entry says {size}"
                        ),
                    });
                }
                Ok((id, path, size))
            }
        }))
        .buffer_unordered(jobs.max(1));
        let stopped = async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            all = fetches.try_collect::<Vec<_>>() => all,
            _ = stopped => Err(RootError::Stopped),
        }
    });
    match up.rt.block_on(task) {
        Ok(fetched) => fetched,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down.
        Err(_) => Err(RootError::Stopped),
    }
}

/// A failed fetch of object `id`: bytes that do not verify refuse the root, naming the
/// object; anything else is a failure to fetch.
fn fetch_failed(id: ObjectId, e: FetchError) -> RootError {
    if super::mismatch(&e) {
        RootError::BadObject {
            id,
            reason: e.to_string(),
        }
    } else {
        RootError::Fetch(e)
    }
}
