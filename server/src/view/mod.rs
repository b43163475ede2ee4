//! One read view of the store, shared by every reader: HTTP, NFS, checkout and the
//! inspection commands. It knows nothing of their protocols.
//!
//! - [`history`]: a root's commits newest first, and the commit a unique prefix names;
//! - [`EntryAttr`]: what an entry of a tree shows (kind, mode, owner, size, device);
//! - [`trees_under`]: every tree a tree reaches, as stored (what a tree pack holds).
//!
//! Object bytes are read through the store's backend ([`Store::objects`]); a reader that
//! can use a file (sendfile, a hard link) asks [`Store::local_path`] first.

pub mod history;

use crate::store::{Store, StoreError};
use canopy_protocol::{EntryKind, Meta, TreeId};
use std::collections::HashSet;

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Block device.
    Block,
    /// Character device.
    Char,
    /// Symbolic link.
    Symlink,
    /// Unix socket.
    Socket,
    /// Named pipe.
    Fifo,
}

/// What an entry shows whoever reads it; front ends add what is theirs (inode or
/// fileid, link count, times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryAttr {
    /// Type.
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Size in bytes (symlinks: target length; directories: 4096; devices: 0).
    pub size: u64,
    /// Device major and minor numbers.
    pub rdev: (u32, u32),
}

impl EntryAttr {
    /// The attributes of an entry of this kind and metadata.
    pub fn of(kind: &EntryKind, meta: &Meta) -> Self {
        let (kind, size, rdev) = match kind {
            EntryKind::File { size, .. } => (Kind::File, *size, (0, 0)),
            EntryKind::Dir { .. } => (Kind::Dir, 4096, (0, 0)),
            EntryKind::Symlink { target } => (Kind::Symlink, target.len() as u64, (0, 0)),
            EntryKind::CharDevice { major, minor } => (Kind::Char, 0, (*major, *minor)),
            EntryKind::BlockDevice { major, minor } => (Kind::Block, 0, (*major, *minor)),
            EntryKind::Fifo => (Kind::Fifo, 0, (0, 0)),
            EntryKind::Socket => (Kind::Socket, 0, (0, 0)),
        };
        EntryAttr {
            kind,
            mode: u32::from(meta.mode),
            uid: meta.uid,
            gid: meta.gid,
            size,
            rdev,
        }
    }
}

/// Every tree `root` reaches (itself included), each once, with its stored bytes
/// (verified against its id).
pub fn trees_under(store: &Store, root: TreeId) -> Result<Vec<(TreeId, Vec<u8>)>, StoreError> {
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut trees = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let bytes = store.read_object(&id.0)?;
        let tree = canopy_protocol::Tree::decode(&bytes).map_err(|source| StoreError::Decode {
            id: id.0,
            kind: "tree",
            source,
        })?;
        for e in tree.entries() {
            if let EntryKind::Dir { tree } = e.kind {
                stack.push(tree);
            }
        }
        trees.push((id, bytes));
    }
    Ok(trees)
}

/// A unix time as RFC 3339 UTC, for messages.
pub fn rfc3339(ts: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture;
    use canopy_protocol::RootName;

    #[test]
    fn log_walks_newest_first_and_find_takes_unique_prefixes() {
        let (_state, store, tree) = fixture::memory_with(&[("d/f", b"hello")]);
        let ids: Vec<_> = (0..3)
            .map(|_| fixture::commit(&store, "web", tree))
            .collect();
        let logged: Vec<_> = history::log(&store, ids[2]).map(|e| e.unwrap().0).collect();
        assert_eq!(logged, [ids[2], ids[1], ids[0]]);
        let web: RootName = "web".parse().unwrap();
        let full = ids[1].to_string();
        assert_eq!(history::find(&store, &web, &full).unwrap(), ids[1]);
        assert_eq!(history::find(&store, &web, &full[..12]).unwrap(), ids[1]);
        for bad in ["", "zz"] {
            assert!(matches!(
                history::find(&store, &web, bad),
                Err(history::HistoryError::BadPrefix(_))
            ));
        }
        assert!(matches!(
            history::find(&store, &web, &"0".repeat(64)),
            Err(history::HistoryError::NoSuchCommit { .. })
        ));
        let nope: RootName = "nope".parse().unwrap();
        assert!(matches!(
            history::find(&store, &nope, "ab"),
            Err(history::HistoryError::NoSuchRoot { .. })
        ));
    }

    #[test]
    fn trees_under_reaches_every_tree_once() {
        let (_state, store, tree) = fixture::memory_with(&[("d/f", b"x"), ("e/f", b"x")]);
        let trees = trees_under(&store, tree).unwrap();
        // The top, and d and e, which are one tree.
        assert_eq!(trees.len(), 2);
        assert_eq!(trees[0].0, tree);
    }
}
