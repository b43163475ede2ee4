//! Looking into a root without mounting it: a path's entry (following symlinks inside
//! the root, never out of it), what a root holds in all, and which package put a path
//! there. `canopy ls`, `cat`, `owner` and `roots show` are built on this.

use crate::store::{Store, StoreError};
use canopy_protocol::{BlobId, CommitBody, Entry, EntryKind, Meta, PackageRef, TreeId};
use std::collections::{HashSet, VecDeque};

/// Symlinks followed in one lookup before it is called a loop (Linux's MAXSYMLINKS).
const MAX_HOPS: usize = 40;

/// Why a path could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Nothing at that path.
    #[error("{0}: no such file or directory in the root")]
    NotFound(String),
    /// A component that should be a directory is not.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// Too many symlinks.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether the last component of a path is followed when it is a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow it (`cat`, `ls` of a link to a directory).
    Last,
    /// Look at the link itself (`owner`, `ls --long` of a link).
    NotLast,
}

/// An entry found at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The path it was found at, with symlinks resolved: `/usr/bin/bash`, `/` for the
    /// root's own directory.
    pub path: Vec<u8>,
    /// Its metadata.
    pub meta: Meta,
    /// What it is.
    pub kind: EntryKind,
}

impl Found {
    /// The path for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// The root directory itself, which no entry describes.
fn top(tree: TreeId) -> Found {
    Found {
        path: b"/".to_vec(),
        meta: Meta::ROOT_DIR,
        kind: EntryKind::Dir { tree },
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

fn joined(dirs: &[(Vec<u8>, TreeId)], last: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, _) in dirs.iter().skip(1) {
        out.push(b'/');
        out.extend_from_slice(name);
    }
    if let Some(last) = last {
        out.push(b'/');
        out.extend_from_slice(last);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Finds `path` (absolute, or relative to the top) in the tree `root`. Symlinks met on
/// the way are resolved within the root: `..` stops at its top and absolute targets
/// start from it, as in a chroot.
pub fn lookup(
    store: &Store,
    root: &TreeId,
    path: &[u8],
    follow: Follow,
) -> Result<Found, InspectError> {
    // The directories walked so far, from the top: (name, tree).
    let mut dirs: Vec<(Vec<u8>, TreeId)> = vec![(Vec::new(), *root)];
    let mut todo: VecDeque<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
    let mut hops = 0;
    let shown = || String::from_utf8_lossy(path).into_owned();
    while let Some(name) = todo.pop_front() {
        match name.as_slice() {
            b"." => continue,
            b".." => {
                if dirs.len() > 1 {
                    dirs.pop();
                }
                continue;
            }
            _ => {}
        }
        let (_, here) = dirs.last().expect("the top is never popped");
        let tree = store.tree(here)?;
        let Some(entry) = tree.get(&name) else {
            return Err(InspectError::NotFound(shown()));
        };
        let last = todo.is_empty();
        match &entry.kind {
            EntryKind::Dir { tree } => dirs.push((name, *tree)),
            EntryKind::Symlink { target } if !last || follow == Follow::Last => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(InspectError::Loop(shown()));
                }
                if target.starts_with(b"/") {
                    dirs.truncate(1);
                }
                for part in components(target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(part.to_vec());
                }
            }
            _ if last => {
                return Ok(Found {
                    path: joined(&dirs, Some(&name)),
                    meta: entry.meta.clone(),
                    kind: entry.kind.clone(),
                });
            }
            _ => return Err(InspectError::NotADirectory(shown())),
        }
    }
    // Ended on a directory (possibly through a symlink): report the directory itself,
    // with its entry's metadata from the parent, or the top's.
    if dirs.len() == 1 {
        return Ok(top(*root));
    }
    let (name, tree) = dirs.pop().expect("more than the top");
    let parent = store.tree(&dirs.last().expect("the top").1)?;
    let entry = parent
        .get(&name)
        .expect("the parent listed this directory a moment ago");
    Ok(Found {
        path: joined(&dirs, Some(&name)),
        meta: entry.meta.clone(),
        kind: EntryKind::Dir { tree },
    })
}

/// The entries `ls` shows for a found path: a directory's children, or the entry itself.
pub fn list(store: &Store, found: &Found) -> Result<Vec<Entry>, InspectError> {
    match &found.kind {
        EntryKind::Dir { tree } => Ok(store.tree(tree)?.into_entries()),
        kind => {
            let name = found.path.rsplit(|&b| b == b'/').next().unwrap_or(b"/");
            Ok(vec![Entry {
                name: canopy_protocol::Name::new(name.to_vec())
                    .expect("a component of a found path is a valid name"),
                meta: found.meta.clone(),
                kind: kind.clone(),
            }])
        }
    }
}

/// What a root holds, counted path by path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Regular files.
    pub files: u64,
    /// Directories, the top not counted.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub specials: u64,
    /// Bytes of all regular files (a file at two paths counts twice).
    pub bytes: u64,
    /// Distinct file contents (blobs).
    pub blobs: u64,
    /// Bytes of the distinct contents: what the root costs in the store.
    pub blob_bytes: u64,
}

/// Counts everything under tree `root`.
pub fn usage(store: &Store, root: &TreeId) -> Result<Usage, StoreError> {
    let mut u = Usage::default();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        for e in store.tree(&id)?.entries() {
            match &e.kind {
                EntryKind::Dir { tree } => {
                    u.dirs += 1;
                    stack.push(*tree);
                }
                EntryKind::File { size, blob } => {
                    u.files += 1;
                    u.bytes += size;
                    if seen.insert(*blob) {
                        u.blobs += 1;
                        u.blob_bytes += size;
                    }
                }
                EntryKind::Symlink { .. } => u.symlinks += 1,
                _ => u.specials += 1,
            }
        }
    }
    Ok(u)
}

/// Where a path of a root came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// These packages ship it exactly as the root has it (a directory: with the
    /// root's metadata); indexes into the commit's package list, in assembly order.
    Packages(Vec<usize>),
    /// The root has it, but not as any package ships it: made or changed when the
    /// packages were configured. `replaced` lists the packages that ship something
    /// else at that path.
    Configuration {
        /// Packages whose version of the path the root does not have.
        replaced: Vec<usize>,
        /// The scripts that name the path, or dpkg's database (see [`crate::maker`]).
        makers: Vec<crate::maker::Maker>,
    },
    /// No package ships it and the commit records no configuration.
    Unknown,
}

/// The owner of a path: the entry as the root has it, and where it came from.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The entry (the path's last component is not followed if it is a symlink).
    pub found: Found,
    /// Where it came from.
    pub origin: Origin,
}

/// Which package put `path` into the root that `commit` describes.
pub fn owner(store: &Store, commit: &CommitBody, path: &[u8]) -> Result<Owner, InspectError> {
    let found = lookup(store, &commit.tree, path, Follow::NotLast)?;
    // A root made with `--subtree usr` holds the packages' /usr at its top.
    let subtree = commit
        .options
        .iter()
        .find_map(|o| o.strip_prefix("subtree="))
        .unwrap_or("");
    let mut in_package = subtree.as_bytes().to_vec();
    if found.path != b"/" {
        in_package.extend_from_slice(&found.path);
    }
    let mut shipped = Vec::new();
    let mut replaced = Vec::new();
    for (i, p) in commit.packages.iter().enumerate() {
        let Some(theirs) = shipped_by(store, p, &in_package)? else {
            continue;
        };
        let same = match (&theirs.kind, &found.kind) {
            (EntryKind::Dir { .. }, EntryKind::Dir { .. }) => theirs.meta == found.meta,
            _ => theirs.meta == found.meta && theirs.kind == found.kind,
        };
        if same {
            shipped.push(i);
        } else {
            replaced.push(i);
        }
    }
    let origin = if !shipped.is_empty() {
        Origin::Packages(shipped)
    } else if !replaced.is_empty() || commit.extensions.contains_key(crate::configure::EXTENSION) {
        let is_dir = matches!(found.kind, EntryKind::Dir { .. });
        Origin::Configuration {
            replaced,
            makers: crate::maker::makers(store, commit, &in_package, is_dir)?,
        }
    } else {
        Origin::Unknown
    };
    Ok(Owner { found, origin })
}

/// What the package's own tree has at exactly `path` (no symlinks followed).
fn shipped_by(
    store: &Store,
    package: &PackageRef,
    path: &[u8],
) -> Result<Option<Shipped>, StoreError> {
    let record = store.package(&package.package)?;
    let mut meta = Meta::ROOT_DIR;
    let mut kind = EntryKind::Dir { tree: record.tree };
    for name in components(path) {
        let EntryKind::Dir { tree } = kind else {
            return Ok(None);
        };
        let Some(entry) = store.tree(&tree)?.get(name).cloned() else {
            return Ok(None);
        };
        meta = entry.meta;
        kind = entry.kind;
    }
    Ok(Some(Shipped { meta, kind }))
}

/// A package's entry at a path.
struct Shipped {
    meta: Meta,
    kind: EntryKind,
}

/// A file's content, checked against its id before the first byte is handed out (the
/// object is read twice: once to hash, once to copy, so memory stays one buffer).
pub fn content(store: &Store, blob: &BlobId) -> Result<Box<dyn std::io::Read + Send>, StoreError> {
    use crate::store::IoContext;
    let objects = store.objects();
    let mut hasher = canopy_protocol::Hasher::new();
    std::io::copy(&mut objects.get(&blob.0)?, &mut hasher)
        .ctx(|| format!("reading object {blob} from {}", objects.location()))?;
    let actual = hasher.finish();
    if actual != blob.0 {
        return Err(StoreError::Corrupt { id: blob.0, actual });
    }
    objects.get(&blob.0)
}
