//! Writers' leases and the garbage collector's lock: how a gc on one machine never
//! deletes what a writer on another machine is about to reference.
//!
//! A put of an object that already exists does not refresh its age on S3, so age alone
//! cannot tell garbage from an object a running import just found present. Instead:
//!
//! ```text
//! writer (each commit)                        gc
//! 1. write leases/NAME listing every object   1. create PREFIX/gc (If-None-Match: *)
//!    it will reference                        2. read every live lease: its objects are roots
//! 2. look at PREFIX/gc: while a live gc       3. mark from the refs, list the objects,
//!    holds it, wait                              delete the rest
//! 3. put objects, move refs                   4. delete PREFIX/gc
//! 4. delete the lease
//! ```
//!
//! A lease is written either before the gc reads the leases (and the gc keeps its
//! objects) or after; then the writer's step 2 comes after the gc's step 1, so the
//! writer sees the lock and relies on nothing until the gc is done. This needs only the
//! read-after-write consistency every current S3 implementation gives, no clocks.
//!
//! Processes die: leases and the lock are rewritten every [`TTL`]/3 while held, and one
//! not rewritten for [`TTL`] (by the store's own clock, its keys' modification times) is
//! dead: a gc deletes dead leases, replaces a dead lock, and writers stop waiting for one.

use super::{Bucket, block};
use crate::store::StoreError;
use crate::store::backend::{GcScope, Held};
use bytes::Bytes;
use canopy_protocol::ObjectId;
use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, UpdateVersion};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lease or the lock lives without being rewritten.
const TTL: Duration = Duration::from_secs(15 * 60);
/// How often a waiting writer looks at the lock again.
const POLL: Duration = Duration::from_secs(1);
const LOCK: &str = "gc";
const LEASE_HEADER: &str = "canopy-lease 1";

/// Who holds a lease or the lock, for messages.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{host} pid {}", std::process::id())
}

/// A key's modification time (the store's clock), or `None` if absent.
fn modified(bucket: &Arc<Bucket>, rel: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let b = bucket.clone();
    let key = bucket.key(rel);
    match block(async move { b.client.head(&key).await })? {
        Ok(meta) => Ok(Some(meta.last_modified)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(bucket.fail(format!("reading {rel}"), e)),
    }
}

fn is_dead(last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(last)
        .to_std()
        .is_ok_and(|age| age > TTL)
}

/// Rewrites `rel` with `body` every [`TTL`]/3 until the returned guard is dropped, and
/// then deletes it.
fn keep_alive(bucket: &Arc<Bucket>, rel: String, body: Bytes) -> Held {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let b = bucket.clone();
    let key = bucket.key(&rel);
    super::runtime().spawn(async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(TTL / 3) => {
                    if let Err(e) = b.client.put(&key, body.clone().into()).await {
                        tracing::warn!("renewing {key}: {e}");
                    }
                }
            }
        }
    });
    Held::new(Renewed {
        stop: Some(stop),
        bucket: bucket.clone(),
        rel,
    })
}

/// A key kept alive; dropping it stops the renewals and deletes the key.
struct Renewed {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    bucket: Arc<Bucket>,
    rel: String,
}

impl Drop for Renewed {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = self.bucket.delete_key(&self.rel) {
            tracing::warn!("removing {} (a gc ignores it after {TTL:?}): {e}", self.rel);
        }
    }
}

/// Step 1–2 of a writer: leases `ids`, then waits while a live gc holds the lock. The
/// lease ends when the returned guard is dropped.
pub(crate) fn protect(bucket: &Arc<Bucket>, ids: &[ObjectId]) -> Result<Held, StoreError> {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).map_err(|e| StoreError::Backend {
        what: "naming a lease".into(),
        reason: e.to_string(),
    })?;
    let rel = format!("leases/{}", hex::encode(salt));
    let mut body = format!("{LEASE_HEADER}\n{}\n", holder());
    for id in ids {
        body.push_str(&format!("{id}\n"));
    }
    let body = Bytes::from(body);
    bucket.put_small(&rel, body.clone(), PutMode::Overwrite)?;
    let written = Instant::now();
    let held = keep_alive(bucket, rel.clone(), body);
    let leased_at = modified(bucket, &rel)?.unwrap_or_else(Utc::now);
    let mut warned = false;
    while let Some(lock) = modified(bucket, LOCK)? {
        let now = leased_at + written.elapsed();
        if is_dead(lock, now) {
            tracing::warn!(
                "ignoring a garbage collection lock in {} not renewed since {lock}",
                bucket.config.describe()
            );
            break;
        }
        if !warned {
            tracing::warn!(
                "waiting for a garbage collection on {} to finish (see {}/{LOCK})",
                bucket.config.describe(),
                bucket.config.url
            );
            warned = true;
        }
        std::thread::sleep(POLL);
    }
    Ok(held)
}

/// The store's clock now: the modification time of a key written for the purpose.
fn store_now(bucket: &Arc<Bucket>) -> Result<DateTime<Utc>, StoreError> {
    bucket.put_small("clock", Bytes::from_static(b"\n"), PutMode::Overwrite)?;
    Ok(modified(bucket, "clock")?.unwrap_or_else(Utc::now))
}

/// Step 1–2 of a gc: takes the lock (replacing a dead one) and collects what live leases
/// protect, deleting dead leases. The lock is released when the scope is dropped.
pub(crate) fn begin_gc(bucket: &Arc<Bucket>) -> Result<GcScope, StoreError> {
    let now = store_now(bucket)?;
    let body = Bytes::from(format!("canopy-gc 1\n{}\n", holder()));
    if !bucket.put_small(LOCK, body.clone(), PutMode::Create)? {
        let Some((current, etag)) = bucket.get_small(LOCK)? else {
            return Err(busy(bucket, "it was just released; run gc again".into()));
        };
        let since = modified(bucket, LOCK)?.unwrap_or(now);
        if !is_dead(since, now) {
            let who = String::from_utf8_lossy(&current)
                .lines()
                .nth(1)
                .unwrap_or("?")
                .to_string();
            return Err(busy(bucket, format!("held by {who} since {since}")));
        }
        let version = UpdateVersion {
            e_tag: etag,
            version: None,
        };
        if !bucket.put_small(LOCK, body.clone(), PutMode::Update(version))? {
            return Err(busy(bucket, "another gc just took it".into()));
        }
    }
    let held = keep_alive(bucket, LOCK.to_string(), body);
    let mut protected = HashSet::new();
    for (name, last, _) in bucket.list_under("leases")? {
        let rel = format!("leases/{name}");
        if is_dead(last, now) {
            tracing::info!("removing the dead lease {rel} (not renewed since {last})");
            bucket.delete_key(&rel)?;
            continue;
        }
        let Some((text, _)) = bucket.get_small(&rel)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        if lines.next() != Some(LEASE_HEADER) {
            return Err(StoreError::Backend {
                what: format!("reading lease {rel} in {}", bucket.config.describe()),
                reason: "not a canopy lease; gc keeps everything until it is removed".into(),
            });
        }
        protected.extend(lines.skip(1).filter_map(|l| l.parse::<ObjectId>().ok()));
    }
    Ok(GcScope { protected, held })
}

fn busy(bucket: &Bucket, detail: String) -> StoreError {
    StoreError::Backend {
        what: format!(
            "starting a garbage collection on {}",
            bucket.config.describe()
        ),
        reason: format!("another gc holds {}/{LOCK} ({detail})", bucket.config.url),
    }
}
