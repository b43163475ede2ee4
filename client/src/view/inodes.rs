//! The nodes of a view by inode number, numbered by the rule the module doc of
//! [`super`] gives: leaves from their identity, directories from where they are.

use canopy_protocol::{EntryKind, Meta, ObjectId, TreeId, inode};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) enum Node {
    /// The top directory listing every root.
    Roots,
    Dir {
        tree: TreeId,
        meta: Meta,
        /// Where it is: the top-level name and the path below it, which its number and
        /// its children's come from.
        top: Arc<[u8]>,
        path: Vec<u8>,
    },
    Leaf {
        kind: EntryKind,
        meta: Meta,
        identity: ObjectId,
    },
}

/// The nodes the kernel may ask about, by number.
#[derive(Default)]
pub(super) struct Inodes {
    pub(super) nodes: HashMap<u64, Node>,
}

impl Inodes {
    /// The number of the node that `fits` accepts, starting from `ino` and following
    /// [`inode::next`] past numbers another node holds (a hash collision).
    pub(super) fn place(&self, mut ino: u64, fits: impl Fn(&Node) -> bool) -> u64 {
        while let Some(node) = self.nodes.get(&ino) {
            if fits(node) {
                break;
            }
            tracing::warn!(
                "inode {ino} collides: numbering the newer node {}",
                inode::next(ino)
            );
            ino = inode::next(ino);
        }
        ino
    }

    /// The directory at `path` under top-level name `top`, now showing `tree`.
    pub(super) fn dir(&mut self, top: &Arc<[u8]>, path: Vec<u8>, tree: TreeId, meta: &Meta) -> u64 {
        let ino = self.place(
            inode::dir(top, &path),
            |n| matches!(n, Node::Dir { top: t, path: p, .. } if **t == **top && *p == path),
        );
        self.nodes.insert(
            ino,
            Node::Dir {
                tree,
                meta: meta.clone(),
                top: top.clone(),
                path,
            },
        );
        ino
    }

    /// The node of the directory at `path` under top-level name `top`, if it exists.
    pub(super) fn find_dir(&self, top: &Arc<[u8]>, path: &[u8]) -> Option<u64> {
        let ino = self.place(
            inode::dir(top, path),
            |n| matches!(n, Node::Dir { top: t, path: p, .. } if **t == **top && p == path),
        );
        self.nodes.contains_key(&ino).then_some(ino)
    }

    /// Like [`Inodes::dir`], but leaves a directory node that exists as it is.
    pub(super) fn dir_if_new(&mut self, top: &Arc<[u8]>, path: Vec<u8>, tree: TreeId, meta: &Meta) {
        let ino = self.place(
            inode::dir(top, &path),
            |n| matches!(n, Node::Dir { top: t, path: p, .. } if **t == **top && *p == path),
        );
        self.nodes.entry(ino).or_insert_with(|| Node::Dir {
            tree,
            meta: meta.clone(),
            top: top.clone(),
            path,
        });
    }

    /// The number of the leaf with `identity`, made or not.
    fn leaf_ino(&self, identity: &ObjectId) -> u64 {
        self.place(
            inode::from_digest(identity),
            |n| matches!(n, Node::Leaf { identity: i, .. } if i == identity),
        )
    }

    pub(super) fn leaf(&mut self, kind: &EntryKind, meta: &Meta) -> u64 {
        let identity = canopy_protocol::identity(kind, meta);
        let ino = self.leaf_ino(&identity);
        self.nodes.entry(ino).or_insert_with(|| Node::Leaf {
            kind: kind.clone(),
            meta: meta.clone(),
            identity,
        });
        ino
    }

    /// The node of the leaf with `kind` and `meta`, if one was made (looked up).
    pub(super) fn known_leaf(&self, kind: &EntryKind, meta: &Meta) -> Option<u64> {
        let ino = self.leaf_ino(&canopy_protocol::identity(kind, meta));
        self.nodes.contains_key(&ino).then_some(ino)
    }

    /// The child `name` of directory node (`top`, `path`).
    pub(super) fn child(
        &mut self,
        top: &Arc<[u8]>,
        path: &[u8],
        name: &[u8],
        kind: &EntryKind,
        meta: &Meta,
    ) -> u64 {
        match kind {
            EntryKind::Dir { tree } => {
                let child = if path.is_empty() {
                    name.to_vec()
                } else {
                    [path, b"/", name].concat()
                };
                self.dir(top, child, *tree, meta)
            }
            kind => self.leaf(kind, meta),
        }
    }
}
