//! Attributes as NFS shows them, from entries and trees.

use super::Kind;
use crate::view::EntryAttr;
use canopy_protocol::{EntryKind, Meta, inode};

/// A file's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Type.
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Link count: 1 for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Size in bytes (symlinks: target length; directories: 4096).
    pub size: u64,
    /// Device major and minor numbers.
    pub rdev: (u32, u32),
    /// The fileid.
    pub fileid: u64,
    /// Modification (and change and access) time: the epoch for files, as FUSE shows
    /// them; for directories the epoch plus nanoseconds taken from their content, so a
    /// directory that changes in a new version looks modified to clients that cache
    /// listings, and one that does not keeps its time.
    pub time: (u32, u32),
}

/// Nanoseconds of a directory's time, from what it lists (see [`Attr::time`]).
pub(super) fn content_nanos(content: &[u8]) -> u32 {
    (inode::hash(&[b"time", content]) % 1_000_000_000) as u32
}

pub(super) fn leaf_attr(id: u64, kind: &EntryKind, meta: &Meta) -> Attr {
    let a = EntryAttr::of(kind, meta);
    debug_assert!(a.kind != Kind::Dir, "directories are not leaves");
    Attr {
        kind: a.kind,
        mode: a.mode,
        nlink: canopy_protocol::inode::LEAF_NLINK,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        rdev: a.rdev,
        fileid: id,
        time: (0, 0),
    }
}

pub(super) fn dir_attr(id: u64, meta: &Meta, subdirs: usize, nanos: u32) -> Attr {
    Attr {
        kind: Kind::Dir,
        mode: u32::from(meta.mode),
        nlink: 2u32.saturating_add(u32::try_from(subdirs).unwrap_or(u32::MAX)),
        uid: meta.uid,
        gid: meta.gid,
        size: 4096,
        rdev: (0, 0),
        fileid: id,
        time: (0, nanos),
    }
}
