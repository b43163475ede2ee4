//! What a new version of a root makes stale in a kernel's caches. Entries and
//! attributes may be cached for long, since what a node stands for never changes: a
//! leaf is numbered from its identity, and only directories (numbered by path) show
//! another tree when their root switches. A switch therefore brings every directory
//! node the kernel may hold up to date and lists what the kernel must forget: the
//! names whose meaning changed (names that appeared included: the kernel may keep a
//! name's absence as well, [`View::absent`]), and the directories whose attributes or
//! listings did.

use super::View;
use super::inodes::{Inodes, Node};
use canopy_protocol::{Entry, EntryKind, Meta, Tree, TreeId};
use std::collections::HashMap;
use std::sync::Arc;

/// What a change of the view made stale in a kernel's caches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stale {
    /// `(directory inode, name)`: the name now stands for another node, for none, or
    /// for one where there was none.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Directories whose attributes or listing changed.
    pub dirs: Vec<u64>,
    /// Nodes of files (and other leaves) the kernel may hold that a changed name stood
    /// for: they may be shown elsewhere still, or by an older version a program is in.
    pub leaves: Vec<u64>,
}

impl Stale {
    /// Whether nothing is stale.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dirs.is_empty()
    }

    /// Adds what `other` made stale.
    pub(super) fn extend(&mut self, other: Stale) {
        self.entries.extend(other.entries);
        self.dirs.extend(other.dirs);
        self.leaves.extend(other.leaves);
    }
}

impl Inodes {
    /// Shows `tree` (with `meta`) at directory node `ino` and, below it, the trees of
    /// the new version at every directory node that exists; returns what changed for a
    /// kernel that holds the nodes. Only directories whose tree or metadata differ are
    /// visited, so a small upgrade costs little whatever the size of the root.
    pub(super) fn switch(
        &mut self,
        trees: &HashMap<TreeId, Arc<Tree>>,
        ino: u64,
        tree: TreeId,
        meta: &Meta,
    ) -> Stale {
        let mut stale = Stale::default();
        let mut todo = vec![(ino, tree, meta.clone())];
        while let Some((ino, tree, meta)) = todo.pop() {
            let Some(Node::Dir {
                tree: shown,
                meta: shown_meta,
                top,
                path,
            }) = self.nodes.get_mut(&ino)
            else {
                continue;
            };
            if *shown == tree && *shown_meta == meta {
                continue;
            }
            let old = std::mem::replace(shown, tree);
            *shown_meta = meta;
            let (top, path) = (top.clone(), path.clone());
            stale.dirs.push(ino);
            if old == tree {
                continue;
            }
            let (Some(old), Some(new)) = (trees.get(&old), trees.get(&tree)) else {
                // Not loaded (an empty stand-in, or a bug): forget every name below.
                continue;
            };
            for (name, before, after) in changes(old, new) {
                if !matches!(
                    (before.map(|b| &b.kind), after.map(|a| &a.kind)),
                    (Some(EntryKind::Dir { .. }), Some(EntryKind::Dir { .. }))
                ) {
                    // A directory stays the same node (numbered by path); anything
                    // else that changed is another node, or none, or appeared where
                    // the kernel may keep its absence.
                    stale.entries.push((ino, name.to_vec()));
                }
                if let Some(Entry { kind, meta, .. }) = before
                    && !matches!(kind, EntryKind::Dir { .. })
                    && after.is_none_or(|a| a.kind != *kind || a.meta != *meta)
                    && let Some(leaf) = self.known_leaf(kind, meta)
                {
                    stale.leaves.push(leaf);
                }
                if let Some(Entry {
                    kind: EntryKind::Dir { tree },
                    meta,
                    ..
                }) = after
                {
                    let child = child_path(&path, name);
                    if let Some(child) = self.find_dir(&top, &child) {
                        todo.push((child, *tree, meta.clone()));
                    }
                }
            }
        }
        stale
    }
}

impl View {
    /// Whether `name` is absent from directory `parent` in a way only a switch can
    /// change: `parent` is a directory of a root's tree, whose listing lacks `name`. The
    /// kernel may then keep the absence as long as a name (a negative entry), and a
    /// switch that adds the name has it forgotten ([`Stale::entries`]). Not so for the
    /// top of a view of every root (roots, and pinned `NAME@COMMIT` names, appear
    /// without a switch), nor for a directory this process does not know.
    pub fn absent(&self, parent: u64, name: &[u8]) -> bool {
        let tree = match self.inodes.read().expect("view lock").nodes.get(&parent) {
            Some(Node::Dir { tree, .. }) => *tree,
            _ => return false,
        };
        self.tree(&tree).is_ok_and(|t| t.get(name).is_none())
    }
}

fn child_path(path: &[u8], name: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        name.to_vec()
    } else {
        [path, b"/", name].concat()
    }
}

/// The names whose entries differ between two listings, with their entries before and
/// after (`None`: absent).
fn changes<'a>(
    old: &'a Tree,
    new: &'a Tree,
) -> Vec<(&'a [u8], Option<&'a Entry>, Option<&'a Entry>)> {
    let (mut a, mut b) = (
        old.entries().iter().peekable(),
        new.entries().iter().peekable(),
    );
    let mut out = Vec::new();
    loop {
        let step = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), None) => (x.name.as_bytes(), a.next(), None),
            (None, Some(y)) => (y.name.as_bytes(), None, b.next()),
            (Some(x), Some(y)) => match x.name.as_bytes().cmp(y.name.as_bytes()) {
                std::cmp::Ordering::Less => (x.name.as_bytes(), a.next(), None),
                std::cmp::Ordering::Greater => (y.name.as_bytes(), None, b.next()),
                std::cmp::Ordering::Equal => (x.name.as_bytes(), a.next(), b.next()),
            },
        };
        if step.1 != step.2 {
            out.push(step);
        }
    }
    out
}
