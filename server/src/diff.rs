//! What changed between two versions of a root: packages by name, paths by walking
//! both trees. Subtrees with the same id are equal and never opened, so the cost is
//! that of the directories that differ, not of the root.

use crate::store::{Store, StoreError};
use canopy_protocol::{ArchiveHash, Entry, EntryKind, PackageRef, TreeId};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// What the package comparison looks at: name and architecture match packages up,
/// the archive tells whether they differ. Commits' packages and packages a repository
/// offers (an upgrade's dry run) are compared alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    /// Package name.
    pub name: &'a str,
    /// Architecture.
    pub arch: &'a str,
    /// Version.
    pub version: &'a str,
    /// SHA-256 of its archive.
    pub archive: &'a ArchiveHash,
}

impl<'a> From<&'a PackageRef> for Listed<'a> {
    fn from(p: &'a PackageRef) -> Self {
        Listed {
            name: &p.name,
            arch: &p.arch,
            version: &p.version,
            archive: &p.archive,
        }
    }
}

/// How one package differs between two package lists (packages are matched by name
/// and architecture).
#[derive(Debug, PartialEq, Eq)]
pub enum PackageChange<'a> {
    /// Only in the new list.
    Added(Listed<'a>),
    /// Only in the old list.
    Removed(Listed<'a>),
    /// In both, built from different archives.
    Changed {
        /// In the old list.
        old: Listed<'a>,
        /// In the new list.
        new: Listed<'a>,
    },
}

/// The packages that differ between two package lists, sorted by name.
pub fn packages<'a, O, N>(old: O, new: N) -> Vec<PackageChange<'a>>
where
    O: IntoIterator,
    O::Item: Into<Listed<'a>>,
    N: IntoIterator,
    N::Item: Into<Listed<'a>>,
{
    let key = |p: &Listed<'a>| (p.name, p.arch);
    let old: BTreeMap<_, Listed<'a>> = old
        .into_iter()
        .map(|p| {
            let p = p.into();
            (key(&p), p)
        })
        .collect();
    let new: BTreeMap<_, Listed<'a>> = new
        .into_iter()
        .map(|p| {
            let p = p.into();
            (key(&p), p)
        })
        .collect();
    let mut out = Vec::new();
    for (k, o) in &old {
        match new.get(k) {
            None => out.push(PackageChange::Removed(*o)),
            Some(n) if n.archive != o.archive => {
                out.push(PackageChange::Changed { old: *o, new: *n })
            }
            Some(_) => {}
        }
    }
    for (k, n) in &new {
        if !old.contains_key(k) {
            out.push(PackageChange::Added(*n));
        }
    }
    out.sort_by_key(|c| match c {
        PackageChange::Added(p) | PackageChange::Removed(p) => (p.name, p.arch),
        PackageChange::Changed { new, .. } => (new.name, new.arch),
    });
    out
}

/// How a path differs between two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathChange {
    /// Only in the new tree.
    Added,
    /// Only in the old tree.
    Removed,
    /// In both, with other content, kind or metadata.
    Modified,
}

impl PathChange {
    /// One-character marker, as in `diff --name-status`: `A`, `D`, `M`.
    pub fn marker(self) -> char {
        match self {
            PathChange::Added => 'A',
            PathChange::Removed => 'D',
            PathChange::Modified => 'M',
        }
    }
}

/// Every path that differs between two trees, in path order, as raw bytes (`/a/b`):
/// names are any bytes, so showing them is the caller's choice (escaped for people,
/// exact for `--json`). A directory that is added or removed is listed with everything
/// under it.
pub fn trees(
    store: &Store,
    old: &TreeId,
    new: &TreeId,
) -> Result<Vec<(PathChange, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    walk(store, Some(old), Some(new), b"", &mut out)?;
    Ok(out)
}

fn walk(
    store: &Store,
    old: Option<&TreeId>,
    new: Option<&TreeId>,
    prefix: &[u8],
    out: &mut Vec<(PathChange, Vec<u8>)>,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    let entries = |id: Option<&TreeId>| -> Result<Vec<Entry>, StoreError> {
        Ok(match id {
            Some(id) => store.tree(id)?.into_entries(),
            None => Vec::new(),
        })
    };
    let mut old = entries(old)?.into_iter().peekable();
    let mut new = entries(new)?.into_iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => o.name.cmp(&n.name),
        };
        let (o, n) = match order {
            Ordering::Less => (old.next(), None),
            Ordering::Greater => (None, new.next()),
            Ordering::Equal => (old.next(), new.next()),
        };
        let name = o
            .as_ref()
            .or(n.as_ref())
            .expect("one side has an entry")
            .name
            .as_bytes();
        let path = [prefix, b"/", name].concat();
        let subtree = |e: &Option<Entry>| match e {
            Some(Entry {
                kind: EntryKind::Dir { tree },
                ..
            }) => Some(*tree),
            _ => None,
        };
        let (old_dir, new_dir) = (subtree(&o), subtree(&n));
        match (&o, &n) {
            (Some(_), None) => out.push((PathChange::Removed, path.clone())),
            (None, Some(_)) => out.push((PathChange::Added, path.clone())),
            (Some(a), Some(b)) if old_dir.is_some() && new_dir.is_some() && a.meta != b.meta => {
                out.push((PathChange::Modified, path.clone()));
            }
            (Some(_), Some(_)) if old_dir.is_some() && new_dir.is_some() => {}
            (Some(a), Some(b)) if a != b => {
                // A kind change (file ↔ directory) is a removal and an addition.
                if old_dir.is_some() || new_dir.is_some() {
                    out.push((PathChange::Removed, path.clone()));
                    out.push((PathChange::Added, path.clone()));
                } else {
                    out.push((PathChange::Modified, path.clone()));
                }
            }
            _ => {}
        }
        if old_dir.is_some() || new_dir.is_some() {
            walk(store, old_dir.as_ref(), new_dir.as_ref(), &path, out)?;
        }
    }
}
