//! Merged `/usr`: `/bin`, `/sbin` and `/lib*` as symlinks into `/usr`, laid out before
//! any script runs when the package set holds `usrmerge` or `usr-is-merged` (the
//! latter's preinst refuses an unmerged root).
//!
//! The result is what `convert-usrmerge` (the usrmerge package's own conversion)
//! leaves: each top directory's entries moved to `/usr/DIR`, and `DIR -> usr/DIR`. A
//! path both places hold is resolved as that script resolves it — one of the two is a
//! link to the other, or they are the same — and refused otherwise.

use crate::edit::{EditError, Editor, Node};
use crate::store::Txn;
use canopy_protocol::{EntryKind, Meta, Name};
use std::collections::BTreeMap;

/// The directories merged into `/usr`, as convert-usrmerge lists them.
const MERGED: [&str; 7] = ["bin", "sbin", "lib", "lib32", "lib64", "libo32", "libx32"];

/// The packages whose presence means the root is merged-/usr.
pub(crate) const MARKERS: [&str; 2] = ["usrmerge", "usr-is-merged"];

/// Why the root cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Both `/DIR/x` and `/usr/DIR/x` exist and neither is a link to the other.
    #[error("merged /usr: both /{0} and /usr/{0} exist and differ")]
    Conflict(String),
    /// The tree could not be edited.
    #[error(transparent)]
    Edit(#[from] EditError),
}

const LINK_META: Meta = Meta {
    mode: 0o777,
    uid: 0,
    gid: 0,
    xattrs: Vec::new(),
};

/// Merges the root's top directories into `/usr`.
pub(crate) fn merge(ed: &mut Editor, txn: &Txn<'_>) -> Result<(), MergeError> {
    for dir in MERGED {
        let top = format!("/{dir}");
        match ed.get(txn, &top)? {
            Some(node) if node.is_dir() => {}
            _ => continue,
        }
        let moved = ed.remove(txn, &top)?.expect("checked above");
        let usr = format!("/usr/{dir}");
        if ed.get(txn, &usr)?.is_none() {
            ed.put(txn, &usr, Node::dir(moved.meta().clone()))?;
        }
        let mut moved = moved;
        let children = take_children(&mut moved, txn)?;
        for (name, node) in children {
            place(ed, txn, &format!("{dir}/{name}"), node)?;
        }
        ed.put(
            txn,
            &top,
            Node::Leaf {
                meta: LINK_META,
                kind: EntryKind::Symlink {
                    target: format!("usr/{dir}").into_bytes(),
                },
            },
        )?;
    }
    Ok(())
}

fn take_children(node: &mut Node, txn: &Txn<'_>) -> Result<BTreeMap<Name, Node>, MergeError> {
    if let Node::Tree { meta, tree } = node {
        let children = txn
            .tree(tree)
            .map_err(EditError::from)?
            .into_entries()
            .into_iter()
            .map(|e| {
                let name = e.name.clone();
                let node = match e.kind {
                    EntryKind::Dir { tree } => Node::Tree { meta: e.meta, tree },
                    kind => Node::Leaf { meta: e.meta, kind },
                };
                (name, node)
            })
            .collect();
        *node = Node::Dir {
            meta: std::mem::take(meta),
            children,
        };
    }
    match node {
        Node::Dir { children, .. } => Ok(std::mem::take(children)),
        _ => Ok(BTreeMap::new()),
    }
}

fn link_target(node: &Node) -> Option<&[u8]> {
    match node {
        Node::Leaf {
            kind: EntryKind::Symlink { target },
            ..
        } => Some(target),
        _ => None,
    }
}

fn same(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Leaf { meta: m1, kind: k1 }, Node::Leaf { meta: m2, kind: k2 }) => {
            m1 == m2 && k1 == k2
        }
        (Node::Tree { meta: m1, tree: t1 }, Node::Tree { meta: m2, tree: t2 }) => {
            m1 == m2 && t1 == t2
        }
        _ => false,
    }
}

/// Puts `/rel` (a path under a merged directory, e.g. `bin/sh`) at `/usr/rel`.
fn place(ed: &mut Editor, txn: &Txn<'_>, rel: &str, mut node: Node) -> Result<(), MergeError> {
    let dest = format!("/usr/{rel}");
    let Some(existing) = ed.get(txn, &dest)? else {
        ed.put(txn, &dest, node)?;
        return Ok(());
    };
    if same(existing, &node) {
        return Ok(());
    }
    let top = format!("/{rel}");
    // The top entry links to the /usr one: /usr keeps its own.
    if let Some(t) = link_target(&node) {
        let base = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let t = String::from_utf8_lossy(t);
        if t == dest
            || link_target(existing).is_some_and(|l| {
                let l = String::from_utf8_lossy(l);
                l == t || format!("/{base}/{t}") == l || t == format!("/usr/{base}/{l}")
            })
        {
            return Ok(());
        }
    }
    // The /usr entry links to the top one: the top one's content moves over it.
    if link_target(existing).is_some_and(|l| l == top.as_bytes()) {
        ed.put(txn, &dest, node)?;
        return Ok(());
    }
    if existing.is_dir() && node.is_dir() {
        for (name, child) in take_children(&mut node, txn)? {
            place(ed, txn, &format!("{rel}/{name}"), child)?;
        }
        return Ok(());
    }
    Err(MergeError::Conflict(rel.to_string()))
}
