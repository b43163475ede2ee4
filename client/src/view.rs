//! The mounted view of roots: which commit each root shows, the trees of those commits,
//! and the inode numbers handed to the kernel. It knows nothing of FUSE, so other front
//! ends can serve the same view.
//!
//! Inode numbers follow [`canopy_protocol::inode`], the rule the NFS export follows too:
//! every regular file, symlink or device with the same content and metadata (blob, mode,
//! owner, xattrs) is one inode, numbered from its identity, whichever root and path it
//! appears under, so the kernel caches its pages once. A directory's number comes from
//! the top-level name it is under and its path below it: one inode per path, kept
//! across new versions of a root, showing the tree its path has in the version that was
//! current when it was last looked up. Nothing is numbered by this process: another
//! process serving the same roots (a successor that took the FUSE connection over)
//! gives every node the same number.

use canopy_protocol::{BlobId, CommitId, EntryKind, Meta, ObjectId, Tree, TreeId, Xattrs, inode};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// The inode of the mount's top directory.
pub const ROOT_INO: u64 = inode::TOP;

/// How a root's own top directory looks (trees carry no metadata for themselves).
const ROOT_META: Meta = Meta::ROOT_DIR;

/// What a lookup can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// No such entry.
    NotFound,
    /// Asked to look inside something that is not a directory.
    NotDir,
    /// Asked to read something that is not a regular file.
    NotFile,
    /// Asked for a symlink's target of something else.
    NotSymlink,
    /// The tree is not loaded: a bug, or a tree pack that was incomplete.
    Missing,
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// An inode's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (symlinks: target length).
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Device number for devices, as the kernel encodes it.
    pub rdev: u32,
}

enum Node {
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
struct Inodes {
    nodes: HashMap<u64, Node>,
}

impl Inodes {
    /// The number of the node that `fits` accepts, starting from `ino` and following
    /// [`inode::next`] past numbers another node holds (a hash collision).
    fn place(&self, mut ino: u64, fits: impl Fn(&Node) -> bool) -> u64 {
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
    fn dir(&mut self, top: &Arc<[u8]>, path: Vec<u8>, tree: TreeId, meta: &Meta) -> u64 {
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

    /// Like [`Inodes::dir`], but leaves a directory node that exists as it is.
    fn dir_if_new(&mut self, top: &Arc<[u8]>, path: Vec<u8>, tree: TreeId, meta: &Meta) {
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

    fn leaf(&mut self, kind: &EntryKind, meta: &Meta) -> u64 {
        let identity = canopy_protocol::identity(kind, meta);
        let ino = self.place(
            inode::from_digest(&identity),
            |n| matches!(n, Node::Leaf { identity: i, .. } if *i == identity),
        );
        self.nodes.entry(ino).or_insert_with(|| Node::Leaf {
            kind: kind.clone(),
            meta: meta.clone(),
            identity,
        });
        ino
    }

    /// The child `name` of directory node (`top`, `path`).
    fn child(
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

/// One version of a root, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootVersion {
    /// The commit.
    pub commit: CommitId,
    /// Its tree.
    pub tree: TreeId,
}

/// Which roots a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every root, as `MOUNTPOINT/NAME/`.
    All,
    /// One root, at the mountpoint itself.
    One(String),
}

/// The roots of a mount and their inodes.
pub struct View {
    scope: Scope,
    trees: RwLock<HashMap<TreeId, Arc<Tree>>>,
    roots: RwLock<BTreeMap<String, RootVersion>>,
    /// Every version a [`Scope::All`] view has shown, as `NAME@COMMIT`, when asked
    /// for ([`View::keeping_versions`]): found by lookup (not listed), so a program can
    /// stay on the version it started with while the root follows new ones (`canopy
    /// run` of `MOUNT/NAME`).
    pinned: RwLock<HashMap<String, RootVersion>>,
    keep_versions: bool,
    /// Every (entry, version) installed, in order: what a successor process must show
    /// too, since the kernel may hold inodes of any of them.
    history: RwLock<Vec<Installed>>,
    inodes: RwLock<Inodes>,
}

/// One version installed under a top-level entry, as [`View::history`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The top-level entry (a root's name, or `NAME@COMMIT`).
    pub entry: String,
    /// The version.
    pub version: RootVersion,
}

/// The unlisted extended attribute of a root's top directory in a [`Scope::All`]
/// view that holds the commit it shows, as 64 hex digits; `NAME@COMMIT` beside it
/// keeps showing that commit.
pub const COMMIT_XATTR: &str = "user.canopy.commit";

fn encode_rdev(major: u32, minor: u32) -> u32 {
    // The kernel's 32-bit new_encode_dev, which FUSE carries.
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn leaf_attr(ino: u64, kind: &EntryKind, meta: &Meta) -> Attr {
    let (kind, size, rdev) = match kind {
        EntryKind::File { size, .. } => (Kind::File, *size, 0),
        EntryKind::Symlink { target } => (Kind::Symlink, target.len() as u64, 0),
        EntryKind::CharDevice { major, minor } => {
            (Kind::CharDevice, 0, encode_rdev(*major, *minor))
        }
        EntryKind::BlockDevice { major, minor } => {
            (Kind::BlockDevice, 0, encode_rdev(*major, *minor))
        }
        EntryKind::Fifo => (Kind::Fifo, 0, 0),
        EntryKind::Socket => (Kind::Socket, 0, 0),
        EntryKind::Dir { .. } => unreachable!("directories are not leaves"),
    };
    Attr {
        ino,
        kind,
        perm: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        size,
        nlink: 1,
        rdev,
    }
}

impl View {
    /// An empty view; roots appear with [`View::install`].
    pub fn new(scope: Scope) -> View {
        let mut inodes = Inodes::default();
        let top = match &scope {
            Scope::All => Node::Roots,
            // Replaced by the first install; an empty tree until then.
            Scope::One(name) => Node::Dir {
                tree: Tree::default().id(),
                meta: ROOT_META,
                top: Arc::from(name.as_bytes()),
                path: Vec::new(),
            },
        };
        inodes.nodes.insert(ROOT_INO, top);
        let mut trees = HashMap::new();
        trees.insert(Tree::default().id(), Arc::new(Tree::default()));
        View {
            scope,
            trees: RwLock::new(trees),
            roots: RwLock::new(BTreeMap::new()),
            pinned: RwLock::new(HashMap::new()),
            keep_versions: false,
            history: RwLock::new(Vec::new()),
            inodes: RwLock::new(inodes),
        }
    }

    /// Keeps every version shown as `NAME@COMMIT` (see [`COMMIT_XATTR`]); for the views
    /// of `canopy mount`, not for the volume plugin's, whose entries come and go.
    pub fn keeping_versions(mut self) -> View {
        self.keep_versions = self.scope == Scope::All;
        self
    }

    /// The roots shown.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether no top-level entry is shown.
    pub fn is_empty(&self) -> bool {
        self.roots.read().expect("view lock").is_empty()
    }

    /// The version of a root shown now.
    pub fn root(&self, name: &str) -> Option<RootVersion> {
        self.roots.read().expect("view lock").get(name).cloned()
    }

    /// Shows `version` for root `name` from now on. `trees` must hold every tree under
    /// its tree. New lookups and directory listings see it at once; files already open
    /// keep reading what they opened.
    pub fn install(&self, name: &str, version: RootVersion, trees: HashMap<TreeId, Tree>) {
        {
            let mut all = self.trees.write().expect("view lock");
            for (id, tree) in trees {
                all.entry(id).or_insert_with(|| Arc::new(tree));
            }
        }
        let tree = version.tree;
        {
            let installed = Installed {
                entry: name.to_string(),
                version: version.clone(),
            };
            let mut history = self.history.write().expect("view lock");
            if !history.contains(&installed) {
                history.push(installed);
            }
        }
        if self.keep_versions && !name.contains('@') {
            self.pinned
                .write()
                .expect("view lock")
                .insert(format!("{name}@{}", version.commit), version.clone());
        }
        self.roots
            .write()
            .expect("view lock")
            .insert(name.to_string(), version);
        let mut inodes = self.inodes.write().expect("view lock");
        match &self.scope {
            Scope::One(_) => {
                if let Some(Node::Dir { tree: t, .. }) = inodes.nodes.get_mut(&ROOT_INO) {
                    *t = tree;
                }
            }
            Scope::All => {
                // A top-level directory the kernel knows shows the new tree at once.
                let top: Arc<[u8]> = Arc::from(name.as_bytes());
                let ino = inodes.place(inode::dir(&top, b""), |n| {
                    matches!(n, Node::Dir { top: t, path, .. } if **t == *top && path.is_empty())
                });
                if inodes.nodes.contains_key(&ino) {
                    inodes.dir(&top, Vec::new(), tree, &ROOT_META);
                }
            }
        }
    }

    /// Stops showing the top-level entry `name` of a [`Scope::All`] view: new lookups and
    /// listings no longer find it. Its trees and inodes stay, so files still open keep
    /// working, and installing the name again reuses its directory inode. Returns whether
    /// it was shown.
    pub fn remove(&self, name: &str) -> bool {
        self.roots
            .write()
            .expect("view lock")
            .remove(name)
            .is_some()
    }

    /// Every (entry, version) installed so far, oldest first.
    pub fn history(&self) -> Vec<Installed> {
        self.history.read().expect("view lock").clone()
    }

    /// The top-level entries shown now (as [`View::root`] finds them).
    pub fn shown(&self) -> Vec<String> {
        self.roots
            .read()
            .expect("view lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Numbers every node of every version installed, as a process that had answered
    /// every lookup would have: a process that took a live FUSE connection over must
    /// answer the kernel about inodes it never handed out itself. Directories shown now
    /// take their current trees; those of earlier versions only numbers nobody holds.
    pub fn index(&self) {
        let mut tops: Vec<(Arc<[u8]>, TreeId)> = Vec::new();
        for (name, v) in self.roots.read().expect("view lock").iter() {
            tops.push((Arc::from(name.as_bytes()), v.tree));
        }
        for (name, v) in self.pinned.read().expect("view lock").iter() {
            tops.push((Arc::from(name.as_bytes()), v.tree));
        }
        for installed in self.history.read().expect("view lock").iter().rev() {
            tops.push((
                Arc::from(installed.entry.as_bytes()),
                installed.version.tree,
            ));
        }
        let trees = self.trees.read().expect("view lock");
        let mut inodes = self.inodes.write().expect("view lock");
        let mut seen = std::collections::HashSet::new();
        for (top, tree) in tops {
            if !seen.insert((top.clone(), tree)) {
                continue;
            }
            if self.scope == Scope::All {
                inodes.dir_if_new(&top, Vec::new(), tree, &ROOT_META);
            }
            // Directories still to walk, with an explicit stack: trees may be deep.
            let mut stack = vec![(Vec::new(), tree)];
            while let Some((path, id)) = stack.pop() {
                let Some(t) = trees.get(&id) else { continue };
                for e in t.entries() {
                    let name = e.name.as_bytes();
                    match &e.kind {
                        EntryKind::Dir { tree } => {
                            let child = if path.is_empty() {
                                name.to_vec()
                            } else {
                                [&path[..], b"/", name].concat()
                            };
                            inodes.dir_if_new(&top, child.clone(), *tree, &e.meta);
                            stack.push((child, *tree));
                        }
                        kind => {
                            inodes.leaf(kind, &e.meta);
                        }
                    }
                }
            }
        }
    }

    fn tree(&self, id: &TreeId) -> Result<Arc<Tree>, ViewError> {
        self.trees
            .read()
            .expect("view lock")
            .get(id)
            .cloned()
            .ok_or(ViewError::Missing)
    }

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

    /// The entries of a directory (without `.` and `..`), with their inodes and types.
    pub fn list(&self, ino: u64) -> Result<Vec<(u64, Kind, Vec<u8>)>, ViewError> {
        let mut inodes = self.inodes.write().expect("view lock");
        match inodes.nodes.get(&ino).ok_or(ViewError::NotFound)? {
            Node::Roots => {
                let roots = self.roots.read().expect("view lock").clone();
                Ok(roots
                    .into_iter()
                    .map(|(name, v)| {
                        let top = Arc::from(name.as_bytes());
                        (
                            inodes.dir(&top, Vec::new(), v.tree, &ROOT_META),
                            Kind::Dir,
                            name.into_bytes(),
                        )
                    })
                    .collect())
            }
            Node::Dir {
                tree, top, path, ..
            } => {
                let (top, path) = (top.clone(), path.clone());
                let tree = self.tree(tree)?;
                Ok(tree
                    .entries()
                    .iter()
                    .map(|e| {
                        let name = e.name.as_bytes();
                        let child = inodes.child(&top, &path, name, &e.kind, &e.meta);
                        let kind = match &e.kind {
                            EntryKind::Dir { .. } => Kind::Dir,
                            kind => leaf_attr(child, kind, &e.meta).kind,
                        };
                        (child, kind, name.to_vec())
                    })
                    .collect())
            }
            Node::Leaf { .. } => Err(ViewError::NotDir),
        }
    }

    /// A regular file's content id and size.
    pub fn file(&self, ino: u64) -> Result<(BlobId, u64), ViewError> {
        match self
            .inodes
            .read()
            .expect("view lock")
            .nodes
            .get(&ino)
            .ok_or(ViewError::NotFound)?
        {
            Node::Leaf {
                kind: EntryKind::File { blob, size },
                ..
            } => Ok((*blob, *size)),
            _ => Err(ViewError::NotFile),
        }
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, ViewError> {
        match self
            .inodes
            .read()
            .expect("view lock")
            .nodes
            .get(&ino)
            .ok_or(ViewError::NotFound)?
        {
            Node::Leaf {
                kind: EntryKind::Symlink { target },
                ..
            } => Ok(target.clone()),
            _ => Err(ViewError::NotSymlink),
        }
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
        match self
            .inodes
            .read()
            .expect("view lock")
            .nodes
            .get(&ino)
            .ok_or(ViewError::NotFound)?
        {
            Node::Roots => Ok(Vec::new()),
            Node::Dir { meta, .. } | Node::Leaf { meta, .. } => Ok(meta.xattrs.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_protocol::{Entry, Name, ObjectId};

    fn file(name: &str, blob: &[u8], mode: u16) -> Entry {
        Entry {
            name: Name::new(name.as_bytes().to_vec()).unwrap(),
            meta: Meta {
                mode,
                ..Default::default()
            },
            kind: EntryKind::File {
                size: blob.len() as u64,
                blob: BlobId::of(blob),
            },
        }
    }

    fn root_of(entries: Vec<Entry>) -> (TreeId, HashMap<TreeId, Tree>) {
        let tree = Tree::new(entries).unwrap();
        let id = tree.id();
        (id, HashMap::from([(id, tree)]))
    }

    #[test]
    fn same_file_in_two_roots_is_one_inode() {
        let view = View::new(Scope::All);
        let commit = CommitId(ObjectId::of(b"c"));
        let (t1, trees1) = root_of(vec![file("sh", b"shell", 0o755), file("a", b"x", 0o644)]);
        let (t2, trees2) = root_of(vec![file("sh", b"shell", 0o755), file("a", b"x", 0o600)]);
        view.install("one", RootVersion { commit, tree: t1 }, trees1);
        view.install("two", RootVersion { commit, tree: t2 }, trees2);
        let d1 = view.lookup(ROOT_INO, b"one").unwrap();
        let d2 = view.lookup(ROOT_INO, b"two").unwrap();
        assert_ne!(d1.ino, d2.ino, "directories have their own inodes");
        assert_eq!(
            view.lookup(d1.ino, b"sh").unwrap().ino,
            view.lookup(d2.ino, b"sh").unwrap().ino
        );
        assert_ne!(
            view.lookup(d1.ino, b"a").unwrap().ino,
            view.lookup(d2.ino, b"a").unwrap().ino,
            "mode differs"
        );
        assert_eq!(view.lookup(d1.ino, b"nope"), Err(ViewError::NotFound));
    }

    #[test]
    fn numbers_are_the_rule_s_whichever_process_and_order() {
        let commit = CommitId(ObjectId::of(b"c"));
        let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
        let dir = Entry {
            name: Name::new(b"bin".to_vec()).unwrap(),
            meta: Meta {
                mode: 0o755,
                ..Default::default()
            },
            kind: EntryKind::Dir { tree: sub.id() },
        };
        let (tree, mut trees) = root_of(vec![dir, file("a", b"x", 0o644)]);
        trees.insert(sub.id(), sub);
        let (first, successor) = (View::new(Scope::All), View::new(Scope::All));
        first.install("web", RootVersion { commit, tree }, trees.clone());
        successor.install("web", RootVersion { commit, tree }, trees);
        // The first process walks top-down; the successor lists first, then looks up.
        let web = first.lookup(ROOT_INO, b"web").unwrap();
        let bin = first.lookup(web.ino, b"bin").unwrap();
        let sh = first.lookup(bin.ino, b"sh").unwrap();
        let listed = successor.list(ROOT_INO).unwrap();
        assert_eq!(listed, vec![(web.ino, Kind::Dir, b"web".to_vec())]);
        let inner = successor.list(web.ino).unwrap();
        assert!(
            inner.contains(&(bin.ino, Kind::Dir, b"bin".to_vec())),
            "{inner:?}"
        );
        assert_eq!(successor.lookup(bin.ino, b"sh").unwrap(), sh);
        assert_eq!(web.ino, inode::dir(b"web", b""));
        assert_eq!(bin.ino, inode::dir(b"web", b"bin"));
        let meta = Meta {
            mode: 0o755,
            ..Default::default()
        };
        let kind = EntryKind::File {
            size: 5,
            blob: BlobId::of(b"shell"),
        };
        assert_eq!(sh.ino, inode::file(&kind, &meta));
        // One root mounted alone: the same numbers below its top.
        let alone = View::new(Scope::One("web".into()));
        let (tree2, trees2) = {
            let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
            let (t, mut all) = root_of(vec![Entry {
                name: Name::new(b"bin".to_vec()).unwrap(),
                meta: meta.clone(),
                kind: EntryKind::Dir { tree: sub.id() },
            }]);
            all.insert(sub.id(), sub);
            (t, all)
        };
        alone.install(
            "web",
            RootVersion {
                commit,
                tree: tree2,
            },
            trees2,
        );
        assert_eq!(alone.lookup(ROOT_INO, b"bin").unwrap().ino, bin.ino);
    }

    #[test]
    fn a_successor_answers_for_inodes_it_never_handed_out() {
        let (c1, c2) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
        let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
        let bin = Entry {
            name: Name::new(b"bin".to_vec()).unwrap(),
            meta: Meta {
                mode: 0o755,
                ..Default::default()
            },
            kind: EntryKind::Dir { tree: sub.id() },
        };
        let (t1, mut trees1) = root_of(vec![bin, file("a", b"old", 0o644)]);
        trees1.insert(sub.id(), sub);
        let (t2, trees2) = root_of(vec![file("a", b"new!", 0o644)]);
        for scope in [Scope::All, Scope::One("web".into())] {
            let first = View::new(scope.clone()).keeping_versions();
            first.install(
                "web",
                RootVersion {
                    commit: c1,
                    tree: t1,
                },
                trees1.clone(),
            );
            let top = match scope {
                Scope::All => first.lookup(ROOT_INO, b"web").unwrap().ino,
                Scope::One(_) => ROOT_INO,
            };
            let bin = first.lookup(top, b"bin").unwrap();
            let sh = first.lookup(bin.ino, b"sh").unwrap();
            let old_a = first.lookup(top, b"a").unwrap();
            first.install(
                "web",
                RootVersion {
                    commit: c2,
                    tree: t2,
                },
                trees2.clone(),
            );
            // The successor installs the same history and answers for every number
            // the first handed out, the old version's included, without a lookup.
            let successor = View::new(scope.clone()).keeping_versions();
            for installed in first.history() {
                let trees = if installed.version.tree == t1 {
                    trees1.clone()
                } else {
                    trees2.clone()
                };
                successor.install(&installed.entry, installed.version, trees);
            }
            successor.index();
            assert_eq!(successor.attr(sh.ino).unwrap(), sh);
            assert_eq!(successor.attr(old_a.ino).unwrap(), old_a);
            assert_eq!(successor.file(old_a.ino).unwrap().1, 3);
            assert_eq!(successor.attr(bin.ino).unwrap().kind, Kind::Dir);
            assert_eq!(successor.attr(top).unwrap().ino, top);
            // The top directory shows the current version.
            assert_eq!(
                successor
                    .file(successor.lookup(top, b"a").unwrap().ino)
                    .unwrap()
                    .1,
                4
            );
            assert_eq!(successor.shown(), vec!["web".to_string()]);
        }
    }

    #[test]
    fn a_colliding_number_moves_the_newer_node_on() {
        let mut inodes = Inodes::default();
        let top: Arc<[u8]> = Arc::from(&b"web"[..]);
        let taken = inode::dir(&top, b"usr");
        let kind = EntryKind::Fifo;
        inodes.nodes.insert(
            taken,
            Node::Leaf {
                kind: kind.clone(),
                meta: Meta::default(),
                identity: canopy_protocol::identity(&kind, &Meta::default()),
            },
        );
        let tree = Tree::default().id();
        let ino = inodes.dir(&top, b"usr".to_vec(), tree, &Meta::default());
        assert_eq!(ino, inode::next(taken));
        assert_eq!(
            inodes.dir(&top, b"usr".to_vec(), tree, &Meta::default()),
            ino
        );
    }

    #[test]
    fn a_removed_entry_is_no_longer_found() {
        let view = View::new(Scope::All);
        let commit = CommitId(ObjectId::of(b"c"));
        let (tree, trees) = root_of(vec![file("f", b"x", 0o644)]);
        view.install("web@c", RootVersion { commit, tree }, trees.clone());
        let dir = view.lookup(ROOT_INO, b"web@c").unwrap();
        let f = view.lookup(dir.ino, b"f").unwrap();
        assert!(view.remove("web@c"));
        assert!(!view.remove("web@c"), "removed once");
        assert_eq!(view.lookup(ROOT_INO, b"web@c"), Err(ViewError::NotFound));
        assert!(view.list(ROOT_INO).unwrap().is_empty());
        assert_eq!(view.file(f.ino).unwrap().1, 1, "an open file keeps working");
        view.install("web@c", RootVersion { commit, tree }, trees);
        assert_eq!(view.lookup(ROOT_INO, b"web@c").unwrap().ino, dir.ino);
    }

    #[test]
    fn versions_stay_found_as_name_at_commit() {
        let view = View::new(Scope::All).keeping_versions();
        let (c1, c2) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
        let (t1, trees1) = root_of(vec![file("f", b"old", 0o644)]);
        let (t2, trees2) = root_of(vec![file("f", b"new!", 0o644)]);
        view.install(
            "web",
            RootVersion {
                commit: c1,
                tree: t1,
            },
            trees1,
        );
        let dir = view.lookup(ROOT_INO, b"web").unwrap();
        assert_eq!(view.commit_of(dir.ino), Some(c1));
        view.install(
            "web",
            RootVersion {
                commit: c2,
                tree: t2,
            },
            trees2,
        );
        assert_eq!(view.commit_of(dir.ino), Some(c2));
        let old = view
            .lookup(ROOT_INO, format!("web@{c1}").as_bytes())
            .unwrap();
        assert_eq!(view.commit_of(old.ino), Some(c1));
        let f = view.lookup(old.ino, b"f").unwrap();
        assert_eq!(
            view.file(f.ino).unwrap().1,
            3,
            "the pinned name keeps the old tree"
        );
        let names: Vec<_> = view
            .list(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(names, [b"web".to_vec()], "pinned names are not listed");
    }

    #[test]
    fn new_version_is_seen_by_new_lookups() {
        let view = View::new(Scope::One("web".into()));
        let commit = CommitId(ObjectId::of(b"c"));
        let (t1, trees1) = root_of(vec![file("f", b"old", 0o644)]);
        view.install("web", RootVersion { commit, tree: t1 }, trees1);
        let old = view.lookup(ROOT_INO, b"f").unwrap();
        let (t2, trees2) = root_of(vec![file("f", b"new!", 0o644)]);
        view.install("web", RootVersion { commit, tree: t2 }, trees2);
        let new = view.lookup(ROOT_INO, b"f").unwrap();
        assert_ne!(old.ino, new.ino);
        assert_eq!(
            view.file(old.ino).unwrap().1,
            3,
            "the old inode still reads the old content"
        );
        assert_eq!(view.file(new.ino).unwrap().1, 4);
    }
}
