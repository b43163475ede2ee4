//! Garbage collection: delete the objects no ref reaches.
//!
//! It runs under the store's exclusive lock, so no import or assemble of this machine can
//! be between writing objects and writing the ref that keeps them. Writers on other
//! machines (a store in a bucket) protect what they are about to reference with leases,
//! which the backend's [`begin_gc`](crate::store::backend::ObjectBackend::begin_gc)
//! collects before any object is listed. A store whose closure cannot be fully read is
//! left alone: an unreadable tree might reference anything.

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
    // First: from here on, writers elsewhere either are protected or wait.
    let scope = store.objects().begin_gc()?;
    let walk = closure::walk(store, None)?;
    if let Some(first) = walk.problems.first() {
        return Err(GcError::Damaged(walk.problems.len(), first.detail.clone()));
    }
    let mut report = Report::default();
    for id in store.objects().list()? {
        if walk.reachable.contains(&id) || scope.protected.contains(&id) {
            report.kept += 1;
            continue;
        }
        report.removed += 1;
        report.freed += if dry_run {
            store.objects().size(&id).unwrap_or(0)
        } else {
            store.objects().delete(&id)?
        };
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{Recipe, Request, assemble, select_imported};
    use crate::import::{Limits, dir};
    use crate::store::Store;

    /// Imports a one-file directory as `name` and assembles root `web` from it.
    fn import_and_assemble(store: &Store, src: &std::path::Path, name: &str, content: &str) {
        std::fs::write(src.join("file"), content).unwrap();
        dir::import(store, src, name, "1", Limits::default()).unwrap();
        let recipe = Recipe {
            specs: vec![name.parse().unwrap()],
            ..Recipe::default()
        };
        let packages = select_imported(store, &recipe.specs).unwrap();
        let root = "web".parse().unwrap();
        let req = Request {
            root,
            recipe,
            packages,
            subject: None,
        };
        assemble(store, &req, None).unwrap();
    }

    #[test]
    fn gc_keeps_history_and_packages_and_removes_only_orphans() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let store = Store::memory(state.path()).unwrap();
        import_and_assemble(&store, src.path(), "one", "first");
        import_and_assemble(&store, src.path(), "two", "second");
        let mut txn = store.begin().unwrap();
        let (orphan, _) = txn.put_blob(&b"nobody's"[..]).map_err(|_| ()).unwrap();
        txn.commit().unwrap();

        let fsck = crate::fsck::fsck(&store).unwrap();
        assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
        assert_eq!(fsck.unreachable, 1);
        let before = store.objects().list().unwrap().len() as u64;
        let dry = gc(&store, true).unwrap();
        assert_eq!((dry.removed, dry.freed), (1, 8));
        assert_eq!(store.objects().list().unwrap().len() as u64, before);
        let done = gc(&store, false).unwrap();
        assert_eq!((done.removed, done.kept), (1, before - 1));
        assert!(!store.has(&orphan.0).unwrap());
        // Both commits and both packages survive: history is reachable.
        let fsck = crate::fsck::fsck(&store).unwrap();
        assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
        assert_eq!(fsck.unreachable, 0);
        assert_eq!(fsck.refs, 3);
    }

    #[test]
    fn gc_refuses_a_store_whose_closure_is_broken() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let store = Store::memory(state.path()).unwrap();
        import_and_assemble(&store, src.path(), "one", "first");
        let (_, head) = store.roots().unwrap().remove(0);
        let tree = store.commit(&head).unwrap().body.tree;
        store.objects().delete(&tree.0).unwrap();
        assert!(matches!(gc(&store, false), Err(GcError::Damaged(..))));
    }
}
