//! Garbage collection: delete the objects nothing keeps.
//!
//! Three things keep objects: roots (with their whole history), imported packages, and
//! the reflog, which keeps the commits roots had — the versions of a removed root, a
//! commit rolled away from — for a grace period (30 days unless told otherwise), so a
//! removal or a rollback can be undone until then. The report says how many objects
//! each kept, so the user knows what to remove to free more.
//!
//! It runs under the store's exclusive lock, so no import or assemble of this machine can
//! be between writing objects and writing the ref that keeps them. Writers on other
//! machines (a store in a bucket) protect what they are about to reference with leases,
//! which the backend's [`begin_gc`](crate::store::backend::ObjectBackend::begin_gc)
//! collects before any object is listed. Damage to a file's content (a missing or cut
//! blob) hides nothing, so gc goes on and keeps the damaged objects for `fsck --repair`;
//! an unreadable tree, commit or package record might reference anything, so then gc
//! deletes nothing and says which object and what uses it.

use crate::closure::{Closure, Problem, Walk};
use crate::store::{Store, StoreError};
use std::time::Duration;

/// How long the reflog keeps what it names by default.
pub const REFLOG_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The unix time at or before which reflog entries keep nothing, for a grace period
/// (with no grace, every entry made so far).
pub fn reflog_cutoff(grace: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now.saturating_sub(grace.as_secs().min(i64::MAX as u64) as i64)
}

/// How to collect.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Only count what would be removed.
    pub dry_run: bool,
    /// Reflog entries younger than this keep their commits.
    pub reflog_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            reflog_grace: REFLOG_GRACE,
        }
    }
}

/// What gc did (or, dry, would do), and why the rest remains.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Objects removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Objects kept.
    pub kept: u64,
    /// Of which reached from roots and their history.
    pub kept_by_roots: u64,
    /// Of which reached only from reflog entries within the grace period.
    pub kept_by_reflog: u64,
    /// Their bytes: what `--prune-reflog now` would free too.
    pub reflog_bytes: u64,
    /// Of which reached only from imported packages no root uses.
    pub kept_by_packages: u64,
    /// Their bytes: what removing those packages would free.
    pub package_bytes: u64,
    /// Of which protected by writers on other machines (leases on a store in a bucket).
    pub kept_by_writers: u64,
    /// Damage to file contents found on the way (kept, for `fsck --repair`).
    pub damaged: Vec<Problem>,
    /// Link-farm files no checkout links any more, removed (not in a dry run).
    pub farm_removed: u64,
    /// Their bytes.
    pub farm_freed: u64,
}

/// Why gc refused to run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// An object that references others is unreadable, so what is garbage cannot be
    /// known for sure.
    #[error(
        "gc deletes nothing: {detail}{more}; what that object references is unknown, so no object can be called garbage. Repair it (`canopy fsck --repair`), or remove what uses it, then run gc again"
    )]
    Damaged {
        /// The first such problem.
        detail: String,
        /// How many more.
        more: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The closure of one kind of keeper.
fn closure(
    store: &Store,
    add: impl FnOnce(&mut Walk) -> Result<(), StoreError>,
) -> Result<Closure, StoreError> {
    let mut w = Walk::new(store, None);
    add(&mut w)?;
    Ok(w.finish())
}

/// Removes the objects that nothing keeps; with `dry_run`, only counts them.
pub fn gc(store: &Store, opts: &Options) -> Result<Report, GcError> {
    // First: from here on, writers elsewhere either are protected or wait.
    let scope = store.objects().begin_gc()?;
    let cutoff = reflog_cutoff(opts.reflog_grace);
    let roots = closure(store, |w| w.roots(None))?;
    let reflog = closure(store, |w| w.reflogs(cutoff, None))?;
    let packages = closure(store, |w| w.packages())?;
    let mut problems = roots.problems;
    problems.extend(packages.problems);
    let (leaves, blocking): (Vec<Problem>, Vec<Problem>) =
        problems.into_iter().partition(|p| p.leaf);
    if let Some(first) = blocking.first() {
        return Err(GcError::Damaged {
            detail: first.detail.clone(),
            more: match blocking.len() {
                1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            },
        });
    }
    let mut report = Report {
        damaged: leaves,
        ..Report::default()
    };
    let size = |id: &canopy_protocol::ObjectId| store.objects().size(id).unwrap_or(0);
    for id in store.objects().list()? {
        if roots.reachable.contains(&id) {
            report.kept_by_roots += 1;
        } else if reflog.reachable.contains(&id) {
            report.kept_by_reflog += 1;
            report.reflog_bytes += size(&id);
        } else if packages.reachable.contains(&id) {
            report.kept_by_packages += 1;
            report.package_bytes += size(&id);
        } else if scope.protected.contains(&id) {
            report.kept_by_writers += 1;
        } else {
            report.removed += 1;
            report.freed += if opts.dry_run {
                size(&id)
            } else {
                store.objects().delete(&id)?
            };
            continue;
        }
        report.kept += 1;
    }
    if !opts.dry_run {
        (report.farm_removed, report.farm_freed) = crate::linkfarm::sweep(store)?;
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
        let dry = gc(
            &store,
            &Options {
                dry_run: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!((dry.removed, dry.freed), (1, 8));
        assert_eq!(store.objects().list().unwrap().len() as u64, before);
        let done = gc(&store, &Options::default()).unwrap();
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
        assert!(matches!(
            gc(&store, &Options::default()),
            Err(GcError::Damaged { .. })
        ));
    }
}
