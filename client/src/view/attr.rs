//! What the view says of an inode: its type and attributes, as any front end shows them.

use canopy_protocol::{EntryKind, Meta};

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

fn encode_rdev(major: u32, minor: u32) -> u32 {
    // The kernel's 32-bit new_encode_dev, which FUSE carries.
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub(super) fn leaf_attr(ino: u64, kind: &EntryKind, meta: &Meta) -> Attr {
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
        nlink: canopy_protocol::inode::LEAF_NLINK,
        rdev,
    }
}
