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
pub(crate) const MERGED: [&str; 7] = ["bin", "sbin", "lib", "lib32", "lib64", "libo32", "libx32"];

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
            place(ed, txn, &join(dir.as_bytes(), &name), node)?;
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

/// `dir/name`, as bytes: names are any bytes, and their `Display` escapes them.
fn join(dir: &[u8], name: &Name) -> Vec<u8> {
    [dir, b"/", name.as_bytes()].concat()
}

/// Puts `/rel` (a path under a merged directory, e.g. `bin/sh`) at `/usr/rel`.
fn place(ed: &mut Editor, txn: &Txn<'_>, rel: &[u8], mut node: Node) -> Result<(), MergeError> {
    let dest = [b"/usr/", rel].concat();
    let Some(existing) = ed.get(txn, &dest)? else {
        ed.put(txn, &dest, node)?;
        return Ok(());
    };
    if same(existing, &node) {
        return Ok(());
    }
    let top = [b"/", rel].concat();
    // The top entry links to the /usr one: /usr keeps its own.
    if let Some(t) = link_target(&node) {
        let base = rel
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&b""[..], |i| &rel[..i]);
        if t == dest
            || link_target(existing).is_some_and(|l| {
                l == t
                    || [b"/", base, b"/", t].concat() == l
                    || t == [b"/usr/", base, b"/", l].concat()
            })
        {
            return Ok(());
        }
    }
    // The /usr entry links to the top one: the top one's content moves over it.
    if link_target(existing).is_some_and(|l| l == top) {
        ed.put(txn, &dest, node)?;
        return Ok(());
    }
    if existing.is_dir() && node.is_dir() {
        for (name, child) in take_children(&mut node, txn)? {
            place(ed, txn, &join(rel, &name), child)?;
        }
        return Ok(());
    }
    Err(MergeError::Conflict(
        String::from_utf8_lossy(rel).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use canopy_protocol::Tree;

    #[test]
    fn names_move_byte_for_byte() {
        // systemd ships /lib/systemd/system/system-systemd\x2dcryptsetup.slice: the
        // backslash is part of the name, and merging once doubled it.
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path()).unwrap();
        let mut txn = store.begin().unwrap();
        let empty = txn.put_tree(&Tree::new(vec![]).unwrap()).unwrap();
        let (blob, size) = txn.put_blob(&b"x"[..]).map_err(|_| ()).unwrap();
        let file = || Node::Leaf {
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            kind: EntryKind::File { size, blob },
        };
        let names: [&[u8]; 3] = [
            br"system-systemd\x2dcryptsetup.slice",
            b"caf\xe9 latin-1",
            b"dir/with\\backslash/inside",
        ];
        let mut ed = Editor::open(&txn, &empty).unwrap();
        for name in names {
            ed.put(&txn, &[b"/lib/systemd/", name].concat(), file())
                .unwrap();
        }
        ed.put(&txn, "/usr/lib/systemd/other", file()).unwrap();
        merge(&mut ed, &txn).unwrap();
        for name in names {
            let path = [b"/usr/lib/systemd/", name].concat();
            assert!(
                ed.get(&txn, &path).unwrap().is_some(),
                "{}",
                String::from_utf8_lossy(&path)
            );
        }
        assert!(ed.get(&txn, "/usr/lib/systemd/other").unwrap().is_some());
        assert!(matches!(
            ed.get(&txn, "/lib").unwrap(),
            Some(Node::Leaf {
                kind: EntryKind::Symlink { .. },
                ..
            })
        ));
    }
}
