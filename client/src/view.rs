//! The mounted view of roots: which commit each root shows, the trees of those commits,
//! and the inode numbers handed to the kernel. It knows nothing of FUSE, so other front
//! ends can serve the same view.
//!
//! Inode numbers follow [`canopy_protocol::inode`], the rule the NFS export follows too:
//! every regular file, symlink or device with the same content and metadata (blob, mode,
//! owner, xattrs) is one inode, numbered from its identity, whichever root and path it
//! appears under, so the kernel caches its pages once. A directory's number comes from
//! the top-level name it is under and its path below it: one inode per path, kept
//! across new versions of a root, showing the tree its path has in the version shown
//! now (a path that is gone keeps its last tree, for whoever is still in it). Nothing is numbered by this process: another
//! process serving the same roots (a successor that took the FUSE connection over)
//! gives every node the same number.
//!
//! Since a node never changes what it stands for but for a directory's tree, a front end
//! may let the kernel cache names and attributes for long: a new version of a root
//! brings every directory node up to date at once and tells the front end what the
//! kernel must forget ([`View::watch`], [`Stale`]).

mod attr;
mod inodes;
mod nodes;
mod stale;

pub use attr::{Attr, Kind};
use canopy_protocol::{CommitId, EntryKind, Meta, Tree, TreeId, inode};
use inodes::{Inodes, Node};
pub use stale::Stale;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

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
    watch: Mutex<Watch>,
    /// The `profile` extension of commits loaded and verified for this view, by commit
    /// (`None`: it has none), so a replay needs no second fetch of the commit.
    profiles: Mutex<lru::LruCache<CommitId, Option<Arc<[u8]>>>>,
}

/// Commits whose profiles a view keeps.
const PROFILES: std::num::NonZeroUsize = std::num::NonZeroUsize::new(64).expect("non-zero");

/// Who is told what a change made stale ([`View::watch`]), and what went stale before
/// anyone watched.
#[derive(Default)]
struct Watch {
    watcher: Option<Arc<Watcher>>,
    pending: Stale,
}

type Watcher = dyn Fn(&Stale) + Send + Sync;

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
            watch: Mutex::new(Watch::default()),
            profiles: Mutex::new(lru::LruCache::new(PROFILES)),
        }
    }

    /// Notes the `profile` extension `value` of `commit`, just loaded and verified.
    pub(crate) fn remember_profile(&self, commit: CommitId, value: Option<&[u8]>) {
        let value = value.map(Arc::from);
        self.profiles.lock().expect("view lock").put(commit, value);
    }

    /// The `profile` extension of `commit` if it was noted ([`View::remember_profile`]),
    /// shared rather than copied (a profile may be a megabyte, and a replay that only
    /// asks whether there is one must not copy it).
    pub(crate) fn profile_of(&self, commit: &CommitId) -> Option<Option<Arc<[u8]>>> {
        self.profiles
            .lock()
            .expect("view lock")
            .get(commit)
            .cloned()
    }

    /// Has `watcher` told, after every change of the view, what it made stale (names
    /// that now mean another node or none, directories whose attributes or listing
    /// changed): a front end whose kernel caches them drops them. It is first told
    /// what changed before it watched (a process taking a mount over may show newer
    /// versions than the kernel saw).
    pub fn watch(&self, watcher: impl Fn(&Stale) + Send + Sync + 'static) {
        let watcher: Arc<Watcher> = Arc::new(watcher);
        let pending = {
            let mut watch = self.watch.lock().expect("view lock");
            watch.watcher = Some(watcher.clone());
            std::mem::take(&mut watch.pending)
        };
        if !pending.is_empty() {
            watcher(&pending);
        }
    }

    /// Tells the watcher what a change made stale (called with no lock of the view
    /// held: the watcher may wait for the kernel, which may wait for a lookup).
    fn changed(&self, stale: Stale) {
        if stale.is_empty() {
            return;
        }
        let watcher = {
            let mut watch = self.watch.lock().expect("view lock");
            match &watch.watcher {
                Some(w) => w.clone(),
                None => {
                    watch.pending.extend(stale);
                    return;
                }
            }
        };
        watcher(&stale);
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
        let newly_shown = self
            .roots
            .write()
            .expect("view lock")
            .insert(name.to_string(), version)
            .is_none();
        // Every directory node the kernel may hold shows the new version at once.
        let stale = {
            let mut inodes = self.inodes.write().expect("view lock");
            let trees = self.trees.read().expect("view lock");
            match &self.scope {
                Scope::One(_) => inodes.switch(&trees, ROOT_INO, tree, &ROOT_META),
                Scope::All => {
                    let top: Arc<[u8]> = Arc::from(name.as_bytes());
                    let mut stale = match inodes.find_dir(&top, b"") {
                        Some(ino) => inodes.switch(&trees, ino, tree, &ROOT_META),
                        None => Stale::default(),
                    };
                    if newly_shown {
                        stale.dirs.push(ROOT_INO);
                    }
                    stale
                }
            }
        };
        self.changed(stale);
    }

    /// Stops showing the top-level entry `name` of a [`Scope::All`] view: new lookups and
    /// listings no longer find it. Its trees and inodes stay, so files still open keep
    /// working, and installing the name again reuses its directory inode. Returns whether
    /// it was shown.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self
            .roots
            .write()
            .expect("view lock")
            .remove(name)
            .is_some();
        if removed {
            self.changed(Stale {
                entries: vec![(ROOT_INO, name.as_bytes().to_vec())],
                dirs: vec![ROOT_INO],
                leaves: Vec::new(),
            });
        }
        removed
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

    /// Every tree under `top`, if the view holds them all (a version with the tree of
    /// one installed before: a profile or a rollback commit), so installing it needs
    /// nothing fetched.
    pub fn trees_under(&self, top: TreeId) -> Option<HashMap<TreeId, Tree>> {
        let all = self.trees.read().expect("view lock");
        let mut out = HashMap::new();
        let mut todo = vec![top];
        while let Some(id) = todo.pop() {
            if out.contains_key(&id) {
                continue;
            }
            let tree = all.get(&id)?;
            for e in tree.entries() {
                if let EntryKind::Dir { tree } = &e.kind {
                    todo.push(*tree);
                }
            }
            out.insert(id, Tree::clone(tree));
        }
        Some(out)
    }

    /// Tree `id`, if the view holds it (every tree of every version installed).
    pub fn tree(&self, id: &TreeId) -> Result<Arc<Tree>, ViewError> {
        self.trees
            .read()
            .expect("view lock")
            .get(id)
            .cloned()
            .ok_or(ViewError::Missing)
    }
}

#[cfg(test)]
mod tests;
