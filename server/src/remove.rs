//! Removing roots and imported packages: refs go, objects stay until gc finds nothing
//! keeps them.
//!
//! A removed root's ref is deleted with a reflog entry, so its versions stay reachable
//! (for `roots rollback`, and from gc) for the reflog's grace period. A package record
//! is removed only while nothing uses it — no root, no commit of a root's history, no
//! commit the reflog still keeps — since a root built from it would otherwise lose the
//! record of what it was made from.

use crate::closure::{Closure, Walk};
use crate::packages::{PackageIndex, PackageSpec};
use crate::store::{Store, StoreError};
use crate::view::history::{self, HistoryError};
use canopy_protocol::{ArchiveHash, CommitId, Package, PackageId, RootName};

use std::collections::{BTreeMap, HashSet};

/// Why something could not be removed. Nothing changes in any case.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The root does not exist.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// No imported package matches.
    #[error(transparent)]
    Lookup(#[from] crate::packages::LookupError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What removing a root did, or would do.
#[derive(Clone, Debug)]
pub struct RootRemoval {
    /// The commit the root was at.
    pub commit: CommitId,
    /// Objects only this root (its history and its reflog) keeps: gc frees them once
    /// its reflog entries are older than the grace period.
    pub unique_objects: u64,
    /// Their bytes.
    pub unique_bytes: u64,
}

/// Removes root `root` (with `dry_run`, only says what it would free). The ref goes
/// with a reflog entry `remove`, atomically as every ref move.
pub fn remove_root(
    store: &Store,
    root: &RootName,
    dry_run: bool,
) -> Result<RootRemoval, RemoveError> {
    let head = history::head(store, root)?;
    let cutoff = crate::gc::reflog_cutoff(crate::gc::REFLOG_GRACE);
    let mine = walk(store, |w| {
        w.commits(&format!("root {root}"), head);
        Ok(())
    })?;
    let others = walk(store, |w| {
        w.roots(Some(root))?;
        w.reflogs(cutoff, Some(root))?;
        w.packages()
    })?;
    let (mut unique_objects, mut unique_bytes) = (0, 0);
    for id in mine.reachable.difference(&others.reachable) {
        if let Ok(size) = store.objects().size(id) {
            unique_objects += 1;
            unique_bytes += size;
        }
    }
    if !dry_run {
        let mut txn = store.begin()?;
        txn.operation("remove");
        txn.remove_root(root, head);
        txn.commit()?;
    }
    Ok(RootRemoval {
        commit: head,
        unique_objects,
        unique_bytes,
    })
}

fn walk(
    store: &Store,
    add: impl FnOnce(&mut Walk) -> Result<(), StoreError>,
) -> Result<Closure, StoreError> {
    let mut w = Walk::new(store, None);
    add(&mut w)?;
    Ok(w.finish())
}

/// How one root uses a package.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Use {
    /// Its current commit is built from it.
    pub current: bool,
    /// How many older commits of its history are.
    pub history: usize,
    /// Commits its reflog keeps are (the root may be removed), until this unix time.
    pub reflog_until: Option<i64>,
}

/// Which roots use which package records.
pub struct Users {
    by_package: BTreeMap<PackageId, BTreeMap<RootName, Use>>,
    by_archive: BTreeMap<ArchiveHash, BTreeMap<RootName, Use>>,
}

impl Users {
    /// Reads every root's history and the commits reflog entries younger than `grace`
    /// keep (commits only: no tree is read).
    pub fn of(store: &Store, grace: std::time::Duration) -> Result<Users, StoreError> {
        let mut users = Users {
            by_package: BTreeMap::new(),
            by_archive: BTreeMap::new(),
        };
        // Commits of the roots' histories: the reflog adds only the others.
        let mut in_history = HashSet::new();
        for (root, head) in store.roots()? {
            for (i, entry) in history::log(store, head).enumerate() {
                let (id, c) = entry?;
                in_history.insert(id);
                users.note(&c, &root, |u| {
                    if i == 0 {
                        u.current = true
                    } else {
                        u.history += 1
                    }
                });
            }
        }
        let cutoff = crate::gc::reflog_cutoff(grace);
        for root in store.logged_roots()? {
            let mut seen = in_history.clone();
            for logged in store.reflog(&root)? {
                if !logged.applied || logged.entry.time <= cutoff {
                    continue;
                }
                let until = logged.entry.time + grace.as_secs() as i64;
                for start in [logged.entry.old, logged.entry.new].into_iter().flatten() {
                    if !store.has(&start.0)? {
                        continue;
                    }
                    for entry in history::log(store, start) {
                        let Ok((id, c)) = entry else { break };
                        if !seen.insert(id) {
                            break;
                        }
                        users.note(&c, &root, |u| {
                            u.reflog_until = Some(u.reflog_until.map_or(until, |t| t.max(until)))
                        });
                    }
                }
            }
        }
        Ok(users)
    }

    /// Records, for each package `commit` was built from, what `root`'s use of it is.
    fn note(&mut self, commit: &canopy_protocol::Commit, root: &RootName, how: impl Fn(&mut Use)) {
        for p in &commit.body.packages {
            how(self
                .by_package
                .entry(p.package)
                .or_default()
                .entry(root.clone())
                .or_default());
            how(self
                .by_archive
                .entry(p.archive)
                .or_default()
                .entry(root.clone())
                .or_default());
        }
    }

    /// The roots that use this package record (or another record of its archive).
    pub fn of_package(&self, id: &PackageId, archive: &ArchiveHash) -> BTreeMap<RootName, Use> {
        let mut out = self.by_package.get(id).cloned().unwrap_or_default();
        for (root, u) in self.by_archive.get(archive).into_iter().flatten() {
            out.entry(root.clone()).or_insert(*u);
        }
        out
    }
}

/// One package a removal looked at.
pub struct PackageRemoval {
    /// The key of its ref (a .deb's SHA-256, or the key of a named import).
    pub key: ArchiveHash,
    /// Its record id.
    pub id: PackageId,
    /// The record.
    pub package: Package,
    /// The roots that use it; empty when it was (or, dry, would be) removed.
    pub users: BTreeMap<RootName, Use>,
}

/// What a package removal selects.
pub enum Selection<'a> {
    /// Packages matching a spec (`NAME`, `NAME=VERSION`, `NAME:ARCH=VERSION`).
    Spec(&'a PackageSpec),
    /// Every package no root uses.
    Unused,
}

/// Removes the selected package records that no root uses (with `dry_run`, only says
/// which); the others are returned with their users and stay.
pub fn remove_packages(
    store: &Store,
    selection: Selection,
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<Vec<PackageRemoval>, RemoveError> {
    let index = PackageIndex::load(store)?;
    let chosen: Vec<&(PackageId, Package)> = match &selection {
        Selection::Spec(spec) => {
            let matching: Vec<_> = index
                .all()
                .iter()
                .filter(|(_, p)| {
                    p.name == spec.name
                        && spec.arch.as_ref().is_none_or(|a| *a == p.arch)
                        && spec.version.as_ref().is_none_or(|v| *v == p.version)
                })
                .collect();
            if matching.is_empty() {
                // The lookup's error names what exists and suggests a name.
                index.find(spec)?;
            }
            matching
        }
        Selection::Unused => index.all().iter().collect(),
    };
    let users = Users::of(store, grace)?;
    let keys: BTreeMap<PackageId, ArchiveHash> = store
        .package_refs()?
        .into_iter()
        .map(|(key, id)| (id, key))
        .collect();
    let mut out = Vec::new();
    let mut txn = store.begin()?;
    for (id, package) in chosen {
        let Some(key) = keys.get(id).copied() else {
            continue;
        };
        let used = users.of_package(id, &package.archive);
        if matches!(selection, Selection::Unused) && !used.is_empty() {
            continue;
        }
        if used.is_empty() && !dry_run {
            txn.remove_package(&key, *id);
        }
        out.push(PackageRemoval {
            key,
            id: *id,
            package: package.clone(),
            users: used,
        });
    }
    txn.commit()?;
    Ok(out)
}
