//! Garbage collection: delete the objects no ref reaches.
//!
//! It runs under the store's exclusive lock, so no import or assemble can be between
//! writing objects and writing the ref that keeps them. A store whose closure cannot be
//! fully read is left alone: an unreadable tree might reference anything.

use crate::closure;
use crate::store::{Store, StoreError};

/// What gc did (or, dry, would do).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Objects removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Objects kept.
    pub kept: u64,
}

/// Why gc refused to run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The closure has problems, so what is garbage cannot be known for sure.
    #[error("the store has {0} problem(s) (first: {1}); run `canopy fsck` and fix them before gc")]
    Damaged(usize, String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Removes unreachable objects; with `dry_run`, only counts them.
pub fn gc(store: &Store, dry_run: bool) -> Result<Report, GcError> {
    let walk = closure::walk(store, None)?;
    if let Some(first) = walk.problems.first() {
        return Err(GcError::Damaged(walk.problems.len(), first.detail.clone()));
    }
    let mut report = Report::default();
    for (id, path) in store.objects()? {
        if walk.reachable.contains(&id) {
            report.kept += 1;
            continue;
        }
        report.removed += 1;
        report.freed += if dry_run {
            std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .unwrap_or(0)
        } else {
            store.remove_object(&id)?
        };
    }
    Ok(report)
}
