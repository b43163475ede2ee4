//! Editing a stored tree in memory: directories are read from the store only when a
//! change reaches into them, and only the changed ones are written back, so editing a
//! few paths of a large root costs a few directories.
//!
//! Paths are absolute (`/var/lib/dpkg/status`) and never follow symlinks: each
//! component must be a directory of the tree itself.

use crate::store::{StoreError, Txn};
use canopy_protocol::{Entry, EntryKind, Meta, Name, Tree, TreeId};
use std::collections::BTreeMap;

/// Why an edit cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A path component is not a directory of the tree.
    #[error("{path}: {component} is not a directory")]
    NotADirectory {
        /// The path edited.
        path: String,
        /// The component that is not a directory.
        component: String,
    },
    /// A path has an invalid component (empty, `.`, `..`, NUL).
    #[error("{0} is not a valid path in a tree")]
    BadPath(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One entry under edit.
#[derive(Clone, Debug)]
pub enum Node {
    /// A directory not opened yet.
    Tree {
        /// Its metadata.
        meta: Meta,
        /// Its content.
        tree: TreeId,
    },
    /// A directory opened for editing.
    Dir {
        /// Its metadata.
        meta: Meta,
        /// Its entries.
        children: BTreeMap<Name, Node>,
    },
    /// Anything else.
    Leaf {
        /// Its metadata.
        meta: Meta,
        /// What it is.
        kind: EntryKind,
    },
}

impl Node {
    fn from_entry(e: Entry) -> Node {
        match e.kind {
            EntryKind::Dir { tree } => Node::Tree { meta: e.meta, tree },
            kind => Node::Leaf { meta: e.meta, kind },
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &Meta {
        match self {
            Node::Tree { meta, .. } | Node::Dir { meta, .. } | Node::Leaf { meta, .. } => meta,
        }
    }

    /// Its metadata, to change.
    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Node::Tree { meta, .. } | Node::Dir { meta, .. } | Node::Leaf { meta, .. } => meta,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        !matches!(self, Node::Leaf { .. })
    }

    /// An empty directory.
    pub fn dir(meta: Meta) -> Node {
        Node::Dir {
            meta,
            children: BTreeMap::new(),
        }
    }
}

/// A directory's entries under edit.
pub type Children = BTreeMap<Name, Node>;

/// A tree being edited.
pub struct Editor {
    root: BTreeMap<Name, Node>,
}

/// A path's names: any bytes but `/` (names need not be UTF-8).
fn names(path: &[u8]) -> Result<Vec<Name>, EditError> {
    let bad = || EditError::BadPath(shown(path));
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c == b"." || c == b".." {
                return Err(bad());
            }
            Name::new(c.to_vec()).map_err(|_| bad())
        })
        .collect()
}

/// A path as messages show it.
fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn open<'n>(
    node: &'n mut Node,
    txn: &Txn<'_>,
) -> Result<Option<&'n mut BTreeMap<Name, Node>>, StoreError> {
    if let Node::Tree { meta, tree } = node {
        let children = txn
            .tree(tree)?
            .into_entries()
            .into_iter()
            .map(|e| (e.name.clone(), Node::from_entry(e)))
            .collect();
        *node = Node::Dir {
            meta: std::mem::take(meta),
            children,
        };
    }
    Ok(match node {
        Node::Dir { children, .. } => Some(children),
        _ => None,
    })
}

impl Editor {
    /// Starts editing `tree`.
    pub fn open(txn: &Txn<'_>, tree: &TreeId) -> Result<Editor, StoreError> {
        let mut root = Node::Tree {
            meta: Meta::ROOT_DIR,
            tree: *tree,
        };
        let children = std::mem::take(open(&mut root, txn)?.expect("a tree opens as a directory"));
        Ok(Editor { root: children })
    }

    /// The directory holding the last component of `path`, and that component.
    fn parent<'e>(
        &'e mut self,
        txn: &Txn<'_>,
        path: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Option<(&'e mut Children, Name)>, EditError> {
        let mut parts = names(path.as_ref())?;
        let Some(last) = parts.pop() else {
            return Err(EditError::BadPath(shown(path.as_ref())));
        };
        let mut dir = &mut self.root;
        for p in parts {
            let Some(node) = dir.get_mut(&p) else {
                return Ok(None);
            };
            dir = open(node, txn)?.ok_or_else(|| EditError::NotADirectory {
                path: shown(path.as_ref()),
                component: p.to_string(),
            })?;
        }
        Ok(Some((dir, last)))
    }

    /// The entry at `path`, if there is one.
    pub fn get(
        &mut self,
        txn: &Txn<'_>,
        path: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Option<&mut Node>, EditError> {
        Ok(match self.parent(txn, path.as_ref())? {
            Some((dir, last)) => dir.get_mut(&last),
            None => None,
        })
    }

    /// Puts `node` at `path`, replacing what was there; missing parent directories are
    /// created (0755, root). Returns what it replaced.
    pub fn put(
        &mut self,
        txn: &Txn<'_>,
        path: &(impl AsRef<[u8]> + ?Sized),
        node: Node,
    ) -> Result<Option<Node>, EditError> {
        let mut parts = names(path.as_ref())?;
        let Some(last) = parts.pop() else {
            return Err(EditError::BadPath(shown(path.as_ref())));
        };
        let mut dir = &mut self.root;
        for p in parts {
            let next = dir
                .entry(p.clone())
                .or_insert_with(|| Node::dir(Meta::ROOT_DIR));
            dir = open(next, txn)?.ok_or_else(|| EditError::NotADirectory {
                path: shown(path.as_ref()),
                component: p.to_string(),
            })?;
        }
        Ok(dir.insert(last, node))
    }

    /// Removes the entry at `path` (a directory with all it holds) and returns it.
    pub fn remove(
        &mut self,
        txn: &Txn<'_>,
        path: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Option<Node>, EditError> {
        Ok(match self.parent(txn, path.as_ref())? {
            Some((dir, last)) => dir.remove(&last),
            None => None,
        })
    }

    /// Writes the changed directories and returns the new root tree.
    pub fn write(self, txn: &mut Txn<'_>) -> Result<TreeId, StoreError> {
        write_dir(self.root, txn)
    }
}

fn write_dir(children: BTreeMap<Name, Node>, txn: &mut Txn<'_>) -> Result<TreeId, StoreError> {
    let mut entries = Vec::with_capacity(children.len());
    for (name, node) in children {
        let (meta, kind) = match node {
            Node::Tree { meta, tree } => (meta, EntryKind::Dir { tree }),
            Node::Dir { meta, children } => (
                meta,
                EntryKind::Dir {
                    tree: write_dir(children, txn)?,
                },
            ),
            Node::Leaf { meta, kind } => (meta, kind),
        };
        entries.push(Entry { name, meta, kind });
    }
    txn.put_tree(&Tree::new(entries).expect("edited entries have unique, valid names"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn edits_touch_only_what_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path()).unwrap();
        let mut txn = store.begin().unwrap();
        let empty = txn.put_tree(&Tree::new(vec![]).unwrap()).unwrap();
        let mut ed = Editor::open(&txn, &empty).unwrap();
        let (blob, size) = txn.put_blob(&b"x"[..]).map_err(|_| ()).unwrap();
        let file = || Node::Leaf {
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            kind: EntryKind::File { size, blob },
        };
        ed.put(&txn, "/var/lib/dpkg/status", file()).unwrap();
        ed.put(&txn, "/bin/sh", file()).unwrap();
        let tree = ed.write(&mut txn).unwrap();
        let mut ed = Editor::open(&txn, &tree).unwrap();
        assert!(ed.get(&txn, "/var/lib/dpkg/status").unwrap().is_some());
        assert!(matches!(
            ed.put(&txn, "/bin/sh/x", file()),
            Err(EditError::NotADirectory { .. })
        ));
        assert!(ed.remove(&txn, "/bin").unwrap().unwrap().is_dir());
        assert!(ed.get(&txn, "/bin/sh").unwrap().is_none());
        assert!(ed.get(&txn, "/var/lib/dpkg").unwrap().unwrap().is_dir());
        let again = ed.write(&mut txn).unwrap();
        assert_ne!(again, tree);
    }
}
