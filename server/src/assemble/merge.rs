//! The union of package trees: directories merge, a path two packages fill
//! differently is a conflict (or, when overwrites are allowed, the later package wins),
//! and a directory only one package contributes stays an id that is never read.

use super::AssembleError;
use super::diversion::SetAside;
use crate::store::{StoreError, Txn};
use canopy_protocol::{Entry, EntryKind, Escaped, Meta, Name, Tree, TreeId};
use std::collections::{BTreeMap, HashSet};

/// One path in the union, remembering which package put it there.
pub(super) enum Slot {
    Dir {
        meta: Meta,
        origin: usize,
        content: Content,
    },
    Leaf {
        meta: Meta,
        kind: EntryKind,
        origin: usize,
    },
}

/// A directory's content: untouched (just an id) or opened for merging.
pub(super) enum Content {
    Tree(TreeId),
    Open(BTreeMap<Name, Slot>),
}

impl Slot {
    pub(super) fn from_entry(e: Entry, origin: usize) -> Slot {
        match e.kind {
            EntryKind::Dir { tree } => Slot::Dir {
                meta: e.meta,
                origin,
                content: Content::Tree(tree),
            },
            kind => Slot::Leaf {
                meta: e.meta,
                kind,
                origin,
            },
        }
    }

    fn origin(&self) -> usize {
        match self {
            Slot::Dir { origin, .. } | Slot::Leaf { origin, .. } => *origin,
        }
    }
}

pub(super) struct Merger<'t, 's> {
    pub(super) txn: &'t Txn<'s>,
    pub(super) labels: Vec<String>,
    pub(super) allow_overwrite: bool,
    pub(super) overwritten: Vec<String>,
    /// Packages whose preinst calls dpkg-divert, in a root that will be configured.
    pub(super) diverters: HashSet<usize>,
    /// Entries set aside for those packages' diversions.
    pub(super) set_aside: Vec<SetAside>,
}

impl Merger<'_, '_> {
    /// Opens a directory for merging; its children keep the directory's origin.
    fn open<'c>(
        &self,
        content: &'c mut Content,
        origin: usize,
    ) -> Result<&'c mut BTreeMap<Name, Slot>, StoreError> {
        if let Content::Tree(id) = content {
            let tree = self.txn.tree(id)?;
            let map = tree
                .into_entries()
                .into_iter()
                .map(|e| (e.name.clone(), Slot::from_entry(e, origin)))
                .collect();
            *content = Content::Open(map);
        }
        match content {
            Content::Open(map) => Ok(map),
            Content::Tree(_) => unreachable!("opened above"),
        }
    }

    pub(super) fn merge(
        &mut self,
        dst: &mut BTreeMap<Name, Slot>,
        src: Tree,
        origin: usize,
        prefix: &[u8],
    ) -> Result<(), AssembleError> {
        for entry in src.into_entries() {
            let raw = [prefix, b"/", entry.name.as_bytes()].concat();
            let path = Escaped(&raw).to_string();
            let Some(existing) = dst.get_mut(&entry.name) else {
                dst.insert(entry.name.clone(), Slot::from_entry(entry, origin));
                continue;
            };
            match (existing, &entry.kind) {
                (
                    Slot::Dir {
                        content,
                        origin: first,
                        ..
                    },
                    EntryKind::Dir { tree },
                ) => {
                    if matches!(content, Content::Tree(t) if t == tree) {
                        continue;
                    }
                    // Directory metadata stays that of the first package, as dpkg
                    // leaves an existing directory alone.
                    let first = *first;
                    let children = self.open(content, first)?;
                    let sub = self.txn.tree(tree)?;
                    self.merge(children, sub, origin, &raw)?;
                }
                (Slot::Leaf { meta, kind, .. }, _)
                    if *meta == entry.meta && *kind == entry.kind => {}
                (existing, kind) => {
                    let first = existing.origin();
                    let diverter = [origin, first]
                        .into_iter()
                        .find(|i| self.diverters.contains(i));
                    if let (
                        false,
                        Some(diverter),
                        Slot::Leaf {
                            meta, kind: old, ..
                        },
                        false,
                    ) = (
                        self.allow_overwrite,
                        diverter,
                        &*existing,
                        matches!(kind, EntryKind::Dir { .. }),
                    ) {
                        let detail = describe(existing, &entry);
                        let theirs = (meta.clone(), old.clone());
                        let ours = (entry.meta.clone(), entry.kind.clone());
                        let (kept, aside, other) = if diverter == origin {
                            *existing = Slot::from_entry(entry, origin);
                            (ours, theirs, first)
                        } else {
                            (theirs, ours, origin)
                        };
                        self.set_aside.push(SetAside {
                            path: raw,
                            kept,
                            aside,
                            diverter,
                            other,
                            detail,
                        });
                        continue;
                    }
                    if !self.allow_overwrite {
                        return Err(AssembleError::Conflict {
                            path,
                            first: self.labels[existing.origin()].clone(),
                            second: self.labels[origin].clone(),
                            detail: describe(existing, &entry),
                        });
                    }
                    self.overwritten.push(path);
                    *existing = Slot::from_entry(entry, origin);
                }
            }
        }
        Ok(())
    }
}

/// Says how an existing slot differs from a new entry at the same path.
fn describe(existing: &Slot, new: &Entry) -> String {
    let Slot::Leaf { meta, kind, .. } = existing else {
        return format!("one ships a directory, the other a {}", new.kind.label());
    };
    if std::mem::discriminant(kind) != std::mem::discriminant(&new.kind) {
        return format!(
            "one ships a {}, the other a {}",
            kind.label(),
            new.kind.label()
        );
    }
    let mut diffs = Vec::new();
    if *kind != new.kind {
        diffs.push(match kind {
            EntryKind::File { .. } => "content",
            EntryKind::Symlink { .. } => "target",
            _ => "device number",
        });
    }
    if meta.mode != new.meta.mode {
        diffs.push("mode");
    }
    if (meta.uid, meta.gid) != (new.meta.uid, new.meta.gid) {
        diffs.push("owner");
    }
    if meta.xattrs != new.meta.xattrs {
        diffs.push("xattrs");
    }
    format!(
        "both ship a {} differing in {}",
        kind.label(),
        diffs.join(", ")
    )
}

pub(super) fn write(map: BTreeMap<Name, Slot>, txn: &mut Txn<'_>) -> Result<TreeId, StoreError> {
    let mut entries = Vec::with_capacity(map.len());
    for (name, slot) in map {
        entries.push(match slot {
            Slot::Dir {
                meta,
                content: Content::Tree(tree),
                ..
            } => Entry {
                name,
                meta,
                kind: EntryKind::Dir { tree },
            },
            Slot::Dir {
                meta,
                content: Content::Open(children),
                ..
            } => Entry {
                name,
                meta,
                kind: EntryKind::Dir {
                    tree: write(children, txn)?,
                },
            },
            Slot::Leaf { meta, kind, .. } => Entry { name, meta, kind },
        });
    }
    txn.put_tree(&Tree::new(entries).expect("merged entries have unique, valid names"))
}

/// Writes the directory at `path` of the union as the root tree.
pub(super) fn subtree(
    mut map: BTreeMap<Name, Slot>,
    path: &str,
    txn: &mut Txn<'_>,
) -> Result<TreeId, AssembleError> {
    let missing = || AssembleError::Subtree(path.to_string());
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Ok(write(map, txn)?);
    }
    for (i, part) in parts.iter().enumerate() {
        let name = Name::new(part.as_bytes().to_vec()).map_err(|_| missing())?;
        match map.remove(&name) {
            Some(Slot::Dir {
                content: Content::Tree(id),
                ..
            }) if i == parts.len() - 1 => return Ok(id),
            Some(Slot::Dir {
                content: Content::Tree(id),
                origin,
                ..
            }) => {
                let tree = txn.tree(&id)?;
                map = tree
                    .into_entries()
                    .into_iter()
                    .map(|e| (e.name.clone(), Slot::from_entry(e, origin)))
                    .collect();
            }
            Some(Slot::Dir {
                content: Content::Open(children),
                ..
            }) => map = children,
            _ => return Err(missing()),
        }
    }
    Ok(write(map, txn)?)
}
