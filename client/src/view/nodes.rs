//! What the view answers about one node: its attributes, a name looked up in it, its
//! listing, its file, link target, commit and extended attributes.

use super::attr::leaf_attr;
use super::{Attr, Kind, ROOT_META, Scope, View, ViewError};
use crate::view::inodes::Node;
use canopy_protocol::{BlobId, CommitId, EntryKind, Meta, Tree, TreeId, Xattrs};
use std::sync::Arc;

impl View {
    fn dir_attr(&self, ino: u64, tree: &TreeId, meta: &Meta) -> Result<Attr, ViewError> {
        let tree = self.tree(tree)?;
        let subdirs = tree
            .entries()
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Dir { .. }))
            .count();
        Ok(Attr {
            ino,
            kind: Kind::Dir,
            perm: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: 4096,
            nlink: 2 + subdirs as u32,
            rdev: 0,
        })
    }

    /// The attributes of an inode.
    pub fn attr(&self, ino: u64) -> Result<Attr, ViewError> {
        let inodes = self.inodes.read().expect("view lock");
        match inodes.nodes.get(&ino).ok_or(ViewError::NotFound)? {
            Node::Roots => {
                let n = self.roots.read().expect("view lock").len() as u32;
                Ok(Attr {
                    ino,
                    kind: Kind::Dir,
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 4096,
                    nlink: 2 + n,
                    rdev: 0,
                })
            }
            Node::Dir { tree, meta, .. } => self.dir_attr(ino, tree, meta),
            Node::Leaf { kind, meta, .. } => Ok(leaf_attr(ino, kind, meta)),
        }
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, ViewError> {
        let mut inodes = self.inodes.write().expect("view lock");
        let ino = match inodes.nodes.get(&parent).ok_or(ViewError::NotFound)? {
            Node::Roots => {
                let name_str = std::str::from_utf8(name).map_err(|_| ViewError::NotFound)?;
                let shown = self.roots.read().expect("view lock").get(name_str).cloned();
                let version = match shown {
                    Some(v) => v,
                    None => self
                        .pinned
                        .read()
                        .expect("view lock")
                        .get(name_str)
                        .cloned()
                        .ok_or(ViewError::NotFound)?,
                };
                inodes.dir(&Arc::from(name), Vec::new(), version.tree, &ROOT_META)
            }
            Node::Dir {
                tree, top, path, ..
            } => {
                let (top, path) = (top.clone(), path.clone());
                let tree = self.tree(tree)?;
                let entry = tree.get(name).ok_or(ViewError::NotFound)?;
                inodes.child(&top, &path, name, &entry.kind, &entry.meta)
            }
            Node::Leaf { .. } => return Err(ViewError::NotDir),
        };
        drop(inodes);
        self.attr(ino)
    }

    /// The entries of a directory (without `.` and `..`) from the `from`th on, each
    /// handed to `add` with its inode and type until `add` returns true (full): a
    /// listing read in many pieces costs each piece, not the whole directory again.
    pub fn list(
        &self,
        ino: u64,
        from: usize,
        mut add: impl FnMut(u64, Kind, &[u8]) -> bool,
    ) -> Result<(), ViewError> {
        let mut inodes = self.inodes.write().expect("view lock");
        match inodes.nodes.get(&ino).ok_or(ViewError::NotFound)? {
            Node::Roots => {
                let roots = self.roots.read().expect("view lock").clone();
                for (name, v) in roots.into_iter().skip(from) {
                    let top = Arc::from(name.as_bytes());
                    let child = inodes.dir(&top, Vec::new(), v.tree, &ROOT_META);
                    if add(child, Kind::Dir, name.as_bytes()) {
                        break;
                    }
                }
            }
            Node::Dir {
                tree, top, path, ..
            } => {
                let (top, path) = (top.clone(), path.clone());
                let tree = self.tree(tree)?;
                for e in tree.entries().iter().skip(from) {
                    let name = e.name.as_bytes();
                    let child = inodes.child(&top, &path, name, &e.kind, &e.meta);
                    let kind = match &e.kind {
                        EntryKind::Dir { .. } => Kind::Dir,
                        kind => leaf_attr(child, kind, &e.meta).kind,
                    };
                    if add(child, kind, name) {
                        break;
                    }
                }
            }
            Node::Leaf { .. } => return Err(ViewError::NotDir),
        }
        Ok(())
    }

    /// What `f` makes of node `ino`, under the inode table's read lock.
    fn with_node<T>(
        &self,
        ino: u64,
        f: impl FnOnce(&Node) -> Result<T, ViewError>,
    ) -> Result<T, ViewError> {
        let inodes = self.inodes.read().expect("view lock");
        f(inodes.nodes.get(&ino).ok_or(ViewError::NotFound)?)
    }

    /// A regular file's content id and size.
    pub fn file(&self, ino: u64) -> Result<(BlobId, u64), ViewError> {
        self.with_node(ino, |node| match node {
            Node::Leaf {
                kind: EntryKind::File { blob, size },
                ..
            } => Ok((*blob, *size)),
            _ => Err(ViewError::NotFile),
        })
    }

    /// The tree a directory inode shows now, with its id.
    pub fn dir_tree(&self, ino: u64) -> Option<(TreeId, Arc<Tree>)> {
        let id = match self.inodes.read().expect("view lock").nodes.get(&ino)? {
            Node::Dir { tree, .. } => *tree,
            _ => return None,
        };
        self.tree(&id).ok().map(|t| (id, t))
    }

    /// Where directory `ino` is: the tree of the root version its top-level entry shows
    /// now, and the names of the directories from that root down to it, so a path
    /// inside the same root can be resolved from its trees alone.
    pub fn dir_place(&self, ino: u64) -> Option<(TreeId, Vec<Vec<u8>>)> {
        let (top, path) = match self.inodes.read().expect("view lock").nodes.get(&ino)? {
            Node::Dir { top, path, .. } => (top.clone(), path.clone()),
            _ => return None,
        };
        let name = std::str::from_utf8(&top).ok()?;
        let shown = self
            .roots
            .read()
            .expect("view lock")
            .get(name)
            .map(|v| v.tree);
        let root = shown.or_else(|| {
            let pinned = self.pinned.read().expect("view lock");
            pinned.get(name).map(|v| v.tree)
        })?;
        let names = path
            .split(|b| *b == b'/')
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Some((root, names))
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, ViewError> {
        self.with_node(ino, |node| match node {
            Node::Leaf {
                kind: EntryKind::Symlink { target },
                ..
            } => Ok(target.clone()),
            _ => Err(ViewError::NotSymlink),
        })
    }

    /// The commit a top-level directory of a [`Scope::All`] view shows now (see
    /// [`COMMIT_XATTR`]).
    pub fn commit_of(&self, ino: u64) -> Option<CommitId> {
        if self.scope != Scope::All {
            return None;
        }
        let name = match self.inodes.read().expect("view lock").nodes.get(&ino)? {
            Node::Dir { top, path, .. } if path.is_empty() => {
                std::str::from_utf8(top).ok()?.to_string()
            }
            _ => return None,
        };
        let roots = self.roots.read().expect("view lock");
        match roots.get(&name) {
            Some(v) => Some(v.commit),
            None => self
                .pinned
                .read()
                .expect("view lock")
                .get(&name)
                .map(|v| v.commit),
        }
    }

    /// An inode's extended attributes.
    pub fn xattrs(&self, ino: u64) -> Result<Xattrs, ViewError> {
        self.with_node(ino, |node| match node {
            Node::Roots => Ok(Vec::new()),
            Node::Dir { meta, .. } | Node::Leaf { meta, .. } => Ok(meta.xattrs.clone()),
        })
    }
}
