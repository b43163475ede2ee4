//! Inode numbers: what FUSE calls a node's `ino` and NFS its fileid, derived from what
//! the node is and never from the process that serves it, so that any process — a
//! restarted NFS server, or a new `canopy mount` that took a live FUSE connection over
//! from the old one — gives every node the number the kernel already knows.
//!
//! The rule:
//!
//! - [`TOP`] (1) is the top directory: FUSE's root inode, NFS's list of roots.
//! - A file, symlink, device, fifo or socket is numbered by [`file`]: the first 64 bits
//!   of its [`identity`](crate::identity) (kind, content or target or device, mode,
//!   owner, xattrs). The same file in any root, path or version has one number, so the
//!   kernel caches its pages once, and an unchanged file keeps its number across
//!   versions.
//! - A directory is numbered by [`dir`]: a hash of the top-level name it is reached
//!   under (the root's name, or the name of the entry that shows it, such as
//!   `web@COMMIT`) and its path below that (`usr/bin`; empty for the top-level directory
//!   itself). One number per path, kept across versions: a directory shows the tree its
//!   path has in the version current when it was last looked up.
//!
//! Numbers are never 0 or 1. Two different nodes with one number (a 64-bit hash
//! collision) are told apart by whoever keeps the table: the later one takes
//! [`next`] of the number, then `next` of that, until a free one.
//!
//! ```
//! use canopy_protocol::inode;
//! assert_eq!(inode::dir(b"web", b"usr/bin"), inode::dir(b"web", b"usr/bin"));
//! assert_ne!(inode::dir(b"web", b"usr/bin"), inode::dir(b"base", b"usr/bin"));
//! assert!(inode::dir(b"web", b"") > inode::TOP);
//! ```

use crate::id::ObjectId;
use crate::tree::{EntryKind, Meta, identity};

/// The top directory's number (FUSE requires 1 for its root).
pub const TOP: u64 = 1;

/// The link count of every node numbered by [`file`]. Such a node may stand at several
/// paths (identical files are one inode), so it says it has more than one name, as a
/// hard-linked file does: an overlay over the mount (`canopy run`'s `/etc` and `/var`,
/// a diskless node's writable layer) then breaks the link when it copies one name up,
/// whereas with a count of 1 it takes both names for one file and a write to one (an
/// empty log, a default configuration) shows at the other. Copying tools (`cp -a`,
/// `tar`, `rsync -H`) link only names whose inode they meet twice, as they would on a
/// disk with hard links.
pub const LEAF_NLINK: u32 = 2;

/// A number from a digest: its first 8 bytes, kept clear of 0 and [`TOP`].
pub fn from_digest(id: &ObjectId) -> u64 {
    let v = u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
    if v <= TOP { v + 2 } else { v }
}

/// The first 64 bits of SHA-256 over length-prefixed parts, kept clear of 0 and
/// [`TOP`]: stable across builds, machines and versions of canopy.
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(&(p.len() as u64).to_be_bytes());
        bytes.extend_from_slice(p);
    }
    from_digest(&ObjectId::of(&bytes))
}

/// The number of a non-directory entry: from its identity.
pub fn file(kind: &EntryKind, meta: &Meta) -> u64 {
    from_digest(&identity(kind, meta))
}

/// The number of a directory: from the top-level name it is reached under and its path
/// below that (components joined by `/`, no leading `/`; empty for the top itself).
pub fn dir(top: &[u8], path: &[u8]) -> u64 {
    hash(&[b"dir", top, path])
}

/// The number to try after `ino` when it is taken by another node.
pub fn next(ino: u64) -> u64 {
    hash(&[b"next", &ino.to_be_bytes()])
}
