//! `fsck --repair`: damaged objects restored from a source that proves its content.
//!
//! Every object an import wrote can be written again by importing the same archive:
//! the archive is found by its SHA-256 — the package record's `archive`, or, for a
//! record that is itself damaged, its ref's key — in the download cache, in directories
//! the user names, or in a configured repository (downloaded and checked against the
//! index's hash, as assemble does), and imported again with the store
//! [reimporting](Store::reimporting): each object is re-hashed as it is written, and the
//! damaged copies are replaced. What no archive holds (a root's own directories and
//! commits, a tarball whose file is gone) cannot be restored; for each such object the
//! report names the roots and packages that depend on it.

use crate::closure::Walk;
use crate::fsck;
use crate::import::{Class, ImportError, Imported, Limits, hash_file};
use crate::repo::fetch::Fetcher;
use crate::repo::{self, RepoError};
use crate::store::{Store, StoreError};
use canopy_protocol::{ArchiveHash, EntryKind, ObjectId, PackageId, RootName, TreeId};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Where archives may be found, besides the download cache and the repositories.
pub struct Sources<'a> {
    /// Fetches from repositories.
    pub fetcher: &'a Fetcher,
    /// Directories of archives to look in (e.g. `/var/cache/apt/archives`).
    pub dirs: Vec<PathBuf>,
}

/// One object restored, and from where.
#[derive(Clone, Debug)]
pub struct Repaired {
    /// The object.
    pub id: ObjectId,
    /// The package whose archive restored it.
    pub package: String,
    /// Where the archive came from: a file, or a URL.
    pub source: String,
}

/// One object that could not be restored, and what depends on it.
#[derive(Clone, Debug)]
pub struct Unrepaired {
    /// The object.
    pub id: ObjectId,
    /// What fsck said of it (`corrupt`, `missing`…).
    pub kind: &'static str,
    /// Roots whose history reaches it.
    pub roots: Vec<RootName>,
    /// Packages whose trees hold it (`name version`).
    pub packages: Vec<String>,
    /// Why it was not restored.
    pub reason: String,
}

/// What a repair did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Problems fsck found before.
    pub before: usize,
    /// Objects restored.
    pub repaired: Vec<Repaired>,
    /// Objects still damaged.
    pub unrepaired: Vec<Unrepaired>,
    /// Problems fsck finds after.
    pub after: usize,
    /// Link-farm files found changed and taken out of the farm.
    pub farm_removed: Vec<PathBuf>,
}

/// Why a repair stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A repository failed while looking for an archive.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A package whose objects are damaged, and the archive that would restore them.
struct Candidate {
    /// `name version`, or the ref key when the record itself is unreadable.
    label: String,
    archive: ArchiveHash,
    damaged: BTreeSet<ObjectId>,
}

/// Every object a package record's trees hold (trees and blobs, the record too).
fn package_objects(
    store: &Store,
    id: PackageId,
) -> Result<Option<(String, ArchiveHash, HashSet<ObjectId>)>, StoreError> {
    let Ok(p) = store.package(&id) else {
        return Ok(None);
    };
    let mut out = HashSet::from([id.0]);
    let mut stack: Vec<TreeId> = vec![p.tree];
    stack.extend(p.control);
    while let Some(t) = stack.pop() {
        if !out.insert(t.0) {
            continue;
        }
        // A damaged tree hides what is under it: the archive restores it all anyway.
        let Ok(tree) = store.tree(&t) else { continue };
        for e in tree.entries() {
            match &e.kind {
                EntryKind::Dir { tree } => stack.push(*tree),
                EntryKind::File { blob, .. } => {
                    out.insert(blob.0);
                }
                _ => {}
            }
        }
    }
    Ok(Some((format!("{} {}", p.name, p.version), p.archive, out)))
}

/// Repairs what fsck finds damaged. The store must be open for writing and
/// [reimporting](Store::reimporting).
pub fn repair(store: &Store, sources: &Sources) -> Result<Report, RepairError> {
    // Changed link-farm files are simply dropped: the objects are the reference.
    let farm = crate::linkfarm::remove_changed(store)?;
    let first = fsck::fsck(store)?;
    let damage: BTreeMap<ObjectId, &'static str> = first
        .problems
        .iter()
        .filter(|p| p.kind != "bad-signature")
        .filter_map(|p| p.id.map(|id| (id, p.kind)))
        .collect();
    let mut report = Report {
        before: first.problems.len() + farm.len(),
        farm_removed: farm.into_iter().map(|c| c.path).collect(),
        ..Report::default()
    };
    if damage.is_empty() {
        report.after = first.problems.len();
        return Ok(report);
    }
    // Which packages hold damaged objects.
    let mut candidates = Vec::new();
    let mut holders: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
    for (key, id) in store.package_refs()? {
        let (label, archive, objects) = match package_objects(store, id)? {
            Some(found) => found,
            // An unreadable record: its key is the archive's hash for .debs and RPMs.
            None => (format!("package record {id}"), key, HashSet::from([id.0])),
        };
        let hit: BTreeSet<ObjectId> = damage
            .keys()
            .filter(|d| objects.contains(d))
            .copied()
            .collect();
        for d in &hit {
            holders.entry(*d).or_default().push(label.clone());
        }
        if !hit.is_empty() {
            candidates.push(Candidate {
                label,
                archive,
                damaged: hit,
            });
        }
    }
    let mut offered: Option<BTreeMap<ArchiveHash, crate::repo::Archive>> = None;
    let mut reasons: BTreeMap<ObjectId, String> = BTreeMap::new();
    for c in &candidates {
        let found = match find_local(store, &c.archive, &sources.dirs)? {
            Some(path) => Some((path.clone(), path.display().to_string(), false)),
            None => fetch(store, &c.archive, sources, &mut offered)?,
        };
        let Some((file, source, downloaded)) = found else {
            for d in &c.damaged {
                reasons.entry(*d).or_insert_with(|| {
                    format!(
                        "the archive of {} (sha256 {}) is in no download cache, directory or repository",
                        c.label, c.archive
                    )
                });
            }
            continue;
        };
        let imported = reimport(store, &file);
        if downloaded {
            let _ = std::fs::remove_file(&file);
        }
        match imported {
            Ok(_) => {
                for d in &c.damaged {
                    if !store.damaged(d)? && store.has(d)? {
                        report.repaired.push(Repaired {
                            id: *d,
                            package: c.label.clone(),
                            source: source.clone(),
                        });
                    }
                }
            }
            Err(e) => {
                for d in &c.damaged {
                    reasons
                        .entry(*d)
                        .or_insert_with(|| format!("importing {source} again failed: {e}"));
                }
            }
        }
    }
    let repaired: HashSet<ObjectId> = report.repaired.iter().map(|r| r.id).collect();
    let left: Vec<(ObjectId, &'static str)> = damage
        .iter()
        .filter(|(id, _)| !repaired.contains(id))
        .map(|(id, k)| (*id, *k))
        .collect();
    if !left.is_empty() {
        let users = root_users(store, left.iter().map(|(id, _)| *id).collect())?;
        for (id, kind) in left {
            report.unrepaired.push(Unrepaired {
                id,
                kind,
                roots: users.get(&id).cloned().unwrap_or_default(),
                packages: holders.get(&id).cloned().unwrap_or_default(),
                reason: reasons.remove(&id).unwrap_or_else(|| {
                    "no package holds it (a root's own directory or commit): it cannot be made again".into()
                }),
            });
        }
    }
    report.after = fsck::fsck(store)?.problems.len();
    Ok(report)
}

/// An archive with this hash in the download cache or a directory given, checked.
fn find_local(
    store: &Store,
    archive: &ArchiveHash,
    dirs: &[PathBuf],
) -> Result<Option<PathBuf>, StoreError> {
    let cache = store.path().join("cache/downloads");
    let hex = archive.to_string();
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in std::iter::once(&cache).chain(dirs) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // The cache names archives by hash; a directory of .debs or .rpms by package.
            let likely = name.starts_with(&hex) || name.ends_with(".deb") || name.ends_with(".rpm");
            if likely && path.is_file() {
                candidates.push(path);
            }
        }
    }
    // The cache's own names first: the cheapest to confirm.
    candidates.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&hex))
    });
    for path in candidates {
        match hash_file(&path) {
            Ok(h) if h == *archive => return Ok(Some(path)),
            // A file named after the hash that does not hash to it was changed: refused.
            Ok(h)
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&hex)) =>
            {
                tracing::warn!(
                    "refusing {}: its SHA-256 is {h}, not the {hex} its name says",
                    path.display()
                )
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Downloads an archive with this hash from the first configured repository that
/// offers it, checked against the index; the repositories' indexes are read once.
fn fetch(
    store: &Store,
    archive: &ArchiveHash,
    sources: &Sources,
    offered: &mut Option<BTreeMap<ArchiveHash, crate::repo::Archive>>,
) -> Result<Option<(PathBuf, String, bool)>, RepairError> {
    if offered.is_none() {
        let mut all = BTreeMap::new();
        for (name, config) in repo::list(store)? {
            match repo::archives(store, &name, &config, sources.fetcher) {
                Ok(list) => all.extend(list.into_iter().map(|a| (a.sha256, a))),
                Err(e) => tracing::warn!("repository {name} is not usable for repairs: {e}"),
            }
        }
        *offered = Some(all);
    }
    let Some(a) = offered.as_ref().and_then(|o| o.get(archive)) else {
        return Ok(None);
    };
    let dir = store.path().join("cache/downloads");
    std::fs::create_dir_all(&dir).map_err(|source| RepoError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let dest = dir.join(format!("{archive}.repair"));
    let path = sources
        .fetcher
        .download(&a.url, &dest, a.size, &a.sha256, &|_| {})?;
    let downloaded = a.url.scheme() != "file";
    Ok(Some((path, a.url.to_string(), downloaded)))
}

/// Imports an archive again, by its format as its first bytes tell it.
fn reimport(store: &Store, file: &Path) -> Result<Imported, ImportError> {
    let format = crate::format::of_archive(file)
        .map_err(|source| ImportError::Io {
            what: format!("reading {}", file.display()),
            source,
        })?
        .ok_or_else(|| {
            ImportError::refused(
                Class::Malformed,
                format!(
                    "{}: neither a .deb nor an RPM (the package formats canopy imports from repositories)",
                    file.display()
                ),
            )
        })?;
    format.import(store, file, Limits::default(), None)
}

/// For each of `ids`, the roots whose history (or reflog) reaches it.
fn root_users(
    store: &Store,
    ids: HashSet<ObjectId>,
) -> Result<BTreeMap<ObjectId, Vec<RootName>>, StoreError> {
    let mut out: BTreeMap<ObjectId, Vec<RootName>> = BTreeMap::new();
    for (root, head) in store.roots()? {
        let mut w = Walk::new(store, None);
        w.commits(&format!("root {root}"), head);
        let reach = w.finish().reachable;
        for id in ids.iter().filter(|id| reach.contains(id)) {
            out.entry(*id).or_default().push(root.clone());
        }
    }
    Ok(out)
}
