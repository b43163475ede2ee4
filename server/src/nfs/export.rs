//! The store's roots as NFS sees them: exports, file handles, fileids, attributes,
//! directory listings and reads. Knows nothing of XDR; [`super::nfs3`] and
//! [`super::mount`] encode what it answers.
//!
//! Every root is exported as `/NAME` (its current commit, followed as the ref moves) and
//! `/NAME@COMMIT` (one commit of NAME's history, by full id or unique prefix). `/` lists
//! the roots.
//!
//! **Fileids and handles come from the store's content, never from the process**, by
//! the rule FUSE inodes follow ([`canopy_protocol::inode`]): a file, symlink or device
//! has the fileid of its identity, so an unchanged file keeps its fileid and handle in
//! every version of a root. A directory's fileid is a hash of its export and path (for
//! `/NAME`, the same number FUSE gives `NAME/PATH`), so it too survives new versions, and always shows the tree its path has in the export's
//! current commit. A handle is that fileid plus the export it was reached through; a
//! server that does not know a fileid (it was restarted, or the root moved) walks that
//! export once and finds it again, so clients see a stale handle only for what no
//! longer exists.

mod attr;
mod handle;

use crate::store::{Store, StoreError};
pub use crate::view::Kind;
use crate::view::history::{self, HistoryError};
pub use attr::Attr;
use attr::{content_nanos, dir_attr, leaf_attr};
use canopy_protocol::{CommitId, Entry, EntryKind, Meta, ObjectId, RootName, Tree, TreeId, inode};
use lru::LruCache;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The fileid of `/`, the list of roots.
pub const TOP_ID: u64 = inode::TOP;
/// How long a listing of the roots' refs is reused before the store is read again: new
/// versions and new roots show within this.
const REFS_TTL: Duration = Duration::from_secs(1);
/// Decoded trees and commits kept in memory.
const CACHED_OBJECTS: usize = 16384;
/// Known fileids; past this the table is dropped and rebuilt by walks as handles come
/// back, which bounds memory whatever clients send.
const MAX_KNOWN: usize = 1 << 20;

/// How a root's top directory looks (trees carry no metadata for themselves): as FUSE
/// shows it.
const ROOT_META: Meta = Meta::ROOT_DIR;

/// Why an operation fails, in NFS's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No such entry.
    NoEnt,
    /// Not a directory.
    NotDir,
    /// A directory where something else is needed.
    IsDir,
    /// The wrong kind of file for the operation (e.g. READLINK of a file).
    Inval,
    /// The handle named something that no longer exists.
    Stale,
    /// The handle was not made by this server.
    BadHandle,
    /// A directory cookie that does not belong to the directory's current listing.
    BadCookie,
    /// A listing reply too small for even one entry.
    TooSmall,
    /// A name longer than any entry's.
    NameTooLong,
    /// The store failed (logged where it happened).
    Io,
}

/// Logs a store failure and answers [`Error::Io`]; a missing object is stale instead,
/// as when `gc` removed what an old handle named.
fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Missing { .. } => Error::Stale,
        other => {
            tracing::error!("{other}");
            Error::Io
        }
    }
}

/// Which version of a root an export shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/NAME`: the current commit, followed as the root moves.
    Current(RootName),
    /// `/NAME@COMMIT`: one commit.
    Pinned(CommitId),
}

/// The part of a handle that names its export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScopeKey {
    /// A current root, by a hash of its name (names are up to 128 bytes; handles 64).
    Name(u64),
    /// A pinned commit.
    Commit(CommitId),
}

impl Scope {
    fn key(&self) -> ScopeKey {
        match self {
            Scope::Current(name) => {
                ScopeKey::Name(inode::hash(&[b"root", name.as_str().as_bytes()]))
            }
            Scope::Pinned(c) => ScopeKey::Commit(*c),
        }
    }
}

/// What a fileid stands for.
#[derive(Clone, Debug)]
pub enum Node {
    /// `/`, the list of roots.
    Top,
    /// A directory: its export and its path there (empty for the root's top, else
    /// components joined by `/`).
    Dir {
        /// The export.
        scope: Scope,
        /// The path in the export.
        path: Vec<u8>,
    },
    /// Anything else, by identity; `scope` is the export it was reached through.
    Leaf {
        /// The export.
        scope: Scope,
        /// Kind, with content, target or device.
        kind: EntryKind,
        /// Mode, owner, xattrs.
        meta: Meta,
    },
}

/// Every root and its current commit.
pub type Roots = Arc<BTreeMap<RootName, CommitId>>;

/// A node and its fileid.
#[derive(Clone, Debug)]
pub struct Found {
    /// The fileid.
    pub id: u64,
    /// What it is.
    pub node: Node,
}

/// The fileid of a directory: its export and path.
fn dir_id(scope: &Scope, path: &[u8]) -> u64 {
    match scope {
        Scope::Current(name) => inode::dir(name.as_str().as_bytes(), path),
        Scope::Pinned(c) => inode::hash(&[b"pinned-dir", c.0.as_bytes(), path]),
    }
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        name.to_vec()
    } else {
        [path, b"/", name].concat()
    }
}

/// What `/` lists, as bytes to hash: the root names.
fn roots_content(roots: &BTreeMap<RootName, CommitId>) -> Vec<u8> {
    roots
        .keys()
        .flat_map(|n| [n.as_str().as_bytes(), b"/"].concat())
        .collect()
}

/// A directory opened for listing: `.` and `..` first (Linux NFS clients expect them
/// from the server), then the entries in name order. Position `i` is resumed with
/// cookie `i`, so cookies stay unique whatever the fileids (identical files share one).
pub struct Listing {
    dir: Found,
    parent: Found,
    content: Content,
    /// Changes exactly when the listing does.
    pub verifier: [u8; 8],
}

enum Content {
    Roots(Roots),
    Tree(Arc<Tree>),
}

impl Listing {
    /// How many entries, `.` and `..` included.
    pub fn len(&self) -> usize {
        2 + match &self.content {
            Content::Roots(r) => r.len(),
            Content::Tree(t) => t.entries().len(),
        }
    }
}

/// A range of a file about to be read.
pub struct Chunk<'e> {
    store: &'e Store,
    blob: ObjectId,
    offset: u64,
    /// How many bytes the range holds.
    pub len: usize,
    /// Whether the range reaches the end of the file.
    pub eof: bool,
}

impl Chunk<'_> {
    /// Reads the range into `buf` (of `len` bytes) with one positioned read: no more of
    /// the file is ever loaded.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<(), Error> {
        match self.store.objects().read_at(&self.blob, self.offset, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => {
                tracing::error!(
                    "object {} ends {n} bytes after {}, short of the {} bytes its entry promises",
                    self.blob,
                    self.offset,
                    buf.len()
                );
                Err(Error::Io)
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

/// The exports of one store.
pub struct Exports {
    store: Store,
    /// Fileids handed out or found by walks, with what they stand for.
    known: Mutex<HashMap<u64, Node>>,
    /// (export, top tree) pairs already walked, so each is walked once.
    walked: Mutex<HashSet<(Scope, TreeId)>>,
    trees: Mutex<LruCache<TreeId, Arc<Tree>>>,
    commits: Mutex<LruCache<CommitId, TreeId>>,
    refs: Mutex<Option<(Instant, Roots)>>,
}

/// A directory resolved in its export's commit.
struct Resolved {
    tree_id: TreeId,
    tree: Arc<Tree>,
    meta: Meta,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-updated: go on after a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Exports {
    /// The exports of `store`'s roots.
    pub fn new(store: Store) -> Self {
        let cap = NonZeroUsize::new(CACHED_OBJECTS).expect("nonzero");
        Exports {
            store,
            known: Mutex::default(),
            walked: Mutex::default(),
            trees: Mutex::new(LruCache::new(cap)),
            commits: Mutex::new(LruCache::new(cap)),
            refs: Mutex::default(),
        }
    }

    /// The store exported.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn tree(&self, id: &TreeId) -> Result<Arc<Tree>, Error> {
        if let Some(t) = lock(&self.trees).get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.store.tree(id).map_err(store_error)?);
        lock(&self.trees).put(*id, t.clone());
        Ok(t)
    }

    fn commit_tree(&self, id: &CommitId) -> Result<TreeId, Error> {
        if let Some(t) = lock(&self.commits).get(id) {
            return Ok(*t);
        }
        let tree = self.store.commit(id).map_err(store_error)?.body.tree;
        lock(&self.commits).put(*id, tree);
        Ok(tree)
    }

    /// Every root and its current commit, at most [`REFS_TTL`] old.
    pub fn roots(&self) -> Result<Roots, Error> {
        let mut refs = lock(&self.refs);
        if let Some((at, roots)) = refs.as_ref()
            && at.elapsed() < REFS_TTL
        {
            return Ok(roots.clone());
        }
        let roots = Arc::new(
            self.store
                .served_roots()
                .map_err(store_error)?
                .into_iter()
                .collect(),
        );
        *refs = Some((Instant::now(), Arc::clone(&roots)));
        Ok(roots)
    }

    /// The top tree an export shows now; stale if its root is gone.
    fn top_tree(&self, scope: &Scope) -> Result<TreeId, Error> {
        let commit = match scope {
            Scope::Current(name) => *self.roots()?.get(name).ok_or(Error::Stale)?,
            Scope::Pinned(c) => *c,
        };
        self.commit_tree(&commit)
    }

    /// The tree a directory's path has now; stale if the path is gone.
    fn resolve(&self, scope: &Scope, path: &[u8]) -> Result<Resolved, Error> {
        let mut tree_id = self.top_tree(scope)?;
        let mut meta = ROOT_META;
        if !path.is_empty() {
            for name in path.split(|&b| b == b'/') {
                match self.tree(&tree_id)?.get(name).map(|e| (&e.kind, &e.meta)) {
                    Some((EntryKind::Dir { tree }, m)) => {
                        tree_id = *tree;
                        meta = m.clone();
                    }
                    _ => return Err(Error::Stale),
                }
            }
        }
        Ok(Resolved {
            tree: self.tree(&tree_id)?,
            tree_id,
            meta,
        })
    }

    fn remember(&self, found: &Found) {
        if found.id == TOP_ID {
            return;
        }
        let mut known = lock(&self.known);
        if known.len() >= MAX_KNOWN && !known.contains_key(&found.id) {
            known.clear();
            lock(&self.walked).clear();
        }
        known.insert(found.id, found.node.clone());
    }

    /// An entry of directory `path` of `scope`.
    fn child(scope: &Scope, path: &[u8], e: &Entry) -> Found {
        match &e.kind {
            EntryKind::Dir { .. } => {
                let path = join(path, e.name.as_bytes());
                Found {
                    id: dir_id(scope, &path),
                    node: Node::Dir {
                        scope: scope.clone(),
                        path,
                    },
                }
            }
            kind => Found {
                id: inode::file(kind, &e.meta),
                node: Node::Leaf {
                    scope: scope.clone(),
                    kind: kind.clone(),
                    meta: e.meta.clone(),
                },
            },
        }
    }

    fn export_top(scope: Scope) -> Found {
        Found {
            id: dir_id(&scope, b""),
            node: Node::Dir {
                scope,
                path: Vec::new(),
            },
        }
    }

    /// `/`, the list of roots.
    pub fn top() -> Found {
        Found {
            id: TOP_ID,
            node: Node::Top,
        }
    }

    /// The export a name in `/` stands for: `NAME` or `NAME@COMMIT` (full id or a
    /// unique prefix of a commit in NAME's history).
    fn export_named(&self, name: &[u8]) -> Result<Scope, Error> {
        let s = std::str::from_utf8(name).map_err(|_| Error::NoEnt)?;
        let (root, pin) = match s.split_once('@') {
            Some((r, c)) => (r, Some(c)),
            None => (s, None),
        };
        let root: RootName = root.parse().map_err(|_| Error::NoEnt)?;
        if !self.roots()?.contains_key(&root) {
            return Err(Error::NoEnt);
        }
        let Some(pin) = pin else {
            return Ok(Scope::Current(root));
        };
        if pin.is_empty() || pin.len() > 64 {
            return Err(Error::NoEnt);
        }
        // An ambiguous prefix names no export rather than a guess.
        history::find(&self.store, &root, pin)
            .map(Scope::Pinned)
            .map_err(|e| match e {
                HistoryError::Store(e) => store_error(e),
                _ => Error::NoEnt,
            })
    }

    /// Looks `name` up in directory `dir`.
    pub fn lookup(&self, dir: &Found, name: &[u8]) -> Result<Found, Error> {
        if name.len() > canopy_protocol::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if name == b"." {
            return match dir.node {
                Node::Leaf { .. } => Err(Error::NotDir),
                _ => Ok(dir.clone()),
            };
        }
        if name == b".." {
            return self.parent(dir);
        }
        let found = match &dir.node {
            Node::Leaf { .. } => return Err(Error::NotDir),
            Node::Top => Self::export_top(self.export_named(name)?),
            Node::Dir { scope, path } => {
                let d = self.resolve(scope, path)?;
                let e = d.tree.get(name).ok_or(Error::NoEnt)?;
                Self::child(scope, path, e)
            }
        };
        self.remember(&found);
        Ok(found)
    }

    fn parent(&self, dir: &Found) -> Result<Found, Error> {
        match &dir.node {
            Node::Leaf { .. } => Err(Error::NotDir),
            Node::Top => Ok(Self::top()),
            Node::Dir { path, .. } if path.is_empty() => Ok(Self::top()),
            Node::Dir { scope, path } => {
                let up = match path.iter().rposition(|&b| b == b'/') {
                    Some(i) => path[..i].to_vec(),
                    None => Vec::new(),
                };
                let found = Found {
                    id: dir_id(scope, &up),
                    node: Node::Dir {
                        scope: scope.clone(),
                        path: up,
                    },
                };
                self.remember(&found);
                Ok(found)
            }
        }
    }

    /// Resolves a path from `/` (as MOUNT's MNT gets it): `/`, `/NAME`, `/NAME@COMMIT`,
    /// or a directory below them.
    pub fn mount(&self, path: &[u8]) -> Result<Found, Error> {
        let mut at = Self::top();
        for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            at = self.lookup(&at, name)?;
        }
        match at.node {
            Node::Leaf { .. } => Err(Error::NotDir),
            _ => Ok(at),
        }
    }

    /// The attributes of a node.
    pub fn attr(&self, found: &Found) -> Result<Attr, Error> {
        match &found.node {
            Node::Top => {
                let roots = self.roots()?;
                let nanos = content_nanos(&roots_content(&roots));
                Ok(dir_attr(found.id, &ROOT_META, roots.len(), nanos))
            }
            Node::Dir { scope, path } => {
                let d = self.resolve(scope, path)?;
                Ok(self.tree_attr(found.id, &d.tree, &d.tree_id, &d.meta))
            }
            Node::Leaf { kind, meta, .. } => Ok(leaf_attr(found.id, kind, meta)),
        }
    }

    fn tree_attr(&self, id: u64, tree: &Tree, tree_id: &TreeId, meta: &Meta) -> Attr {
        let subdirs = tree
            .entries()
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Dir { .. }))
            .count();
        dir_attr(id, meta, subdirs, content_nanos(tree_id.0.as_bytes()))
    }

    /// The attributes of a listed entry, without resolving its path again.
    pub fn entry_attr(&self, listing: &Listing, index: usize) -> Result<Attr, Error> {
        match (&listing.content, index) {
            (_, 0) => self.attr(&listing.dir),
            (_, 1) => self.attr(&listing.parent),
            (Content::Roots(_), _) => self.attr(&self.entry(listing, index)),
            (Content::Tree(tree), i) => {
                let e = &tree.entries()[i - 2];
                let found = self.entry(listing, index);
                match &e.kind {
                    EntryKind::Dir { tree: sub } => {
                        let subtree = self.tree(sub)?;
                        Ok(self.tree_attr(found.id, &subtree, sub, &e.meta))
                    }
                    kind => Ok(leaf_attr(found.id, kind, &e.meta)),
                }
            }
        }
    }

    /// Opens a directory for listing.
    pub fn list(&self, dir: &Found) -> Result<Listing, Error> {
        let parent = self.parent(dir)?;
        let (content, verifier) = match &dir.node {
            Node::Leaf { .. } => return Err(Error::NotDir),
            Node::Top => {
                let roots = self.roots()?;
                let verifier = inode::hash(&[b"verifier", &roots_content(&roots)]);
                (Content::Roots(roots), verifier)
            }
            Node::Dir { scope, path } => {
                let d = self.resolve(scope, path)?;
                (
                    Content::Tree(d.tree),
                    inode::hash(&[b"verifier", d.tree_id.0.as_bytes()]),
                )
            }
        };
        Ok(Listing {
            dir: dir.clone(),
            parent,
            content,
            verifier: verifier.to_be_bytes(),
        })
    }

    /// Entry `index` of a listing (`index < listing.len()`), with its name.
    pub fn entry(&self, listing: &Listing, index: usize) -> Found {
        self.named_entry(listing, index).1
    }

    /// Entry `index` of a listing and its name; remembered, as its handle goes out.
    pub fn named_entry(&self, listing: &Listing, index: usize) -> (Vec<u8>, Found) {
        let (name, found) = match (&listing.content, index) {
            (_, 0) => (b".".to_vec(), listing.dir.clone()),
            (_, 1) => (b"..".to_vec(), listing.parent.clone()),
            (Content::Roots(roots), i) => {
                let name = roots.keys().nth(i - 2).expect("index within the listing");
                (
                    name.as_str().as_bytes().to_vec(),
                    Self::export_top(Scope::Current(name.clone())),
                )
            }
            (Content::Tree(tree), i) => {
                let e = &tree.entries()[i - 2];
                let Node::Dir { scope, path } = &listing.dir.node else {
                    unreachable!("tree listings are of directories")
                };
                (e.name.as_bytes().to_vec(), Self::child(scope, path, e))
            }
        };
        self.remember(&found);
        (name, found)
    }

    /// A symlink's target.
    pub fn readlink(&self, found: &Found) -> Result<Vec<u8>, Error> {
        match &found.node {
            Node::Leaf {
                kind: EntryKind::Symlink { target },
                ..
            } => Ok(target.clone()),
            _ => Err(Error::Inval),
        }
    }

    /// Up to `count` bytes of a regular file from `offset`: the file opened and the
    /// range worked out, for [`Chunk::read_into`] to read straight into a reply.
    pub fn read(&self, found: &Found, offset: u64, count: u32) -> Result<Chunk<'_>, Error> {
        let (size, blob) = match &found.node {
            Node::Leaf {
                kind: EntryKind::File { size, blob },
                ..
            } => (*size, blob),
            Node::Leaf { .. } => return Err(Error::Inval),
            _ => return Err(Error::IsDir),
        };
        let len = u64::from(count).min(size.saturating_sub(offset)) as usize;
        // A missing object (gc removed what an old handle named) is stale; a damaged
        // one is an I/O error, never the wrong bytes (see `store::verified`).
        self.store.objects().size(&blob.0).map_err(store_error)?;
        self.store.verify_local(&blob.0).map_err(store_error)?;
        Ok(Chunk {
            store: &self.store,
            blob: blob.0,
            offset,
            len,
            eof: offset.saturating_add(len as u64) >= size,
        })
    }
}
