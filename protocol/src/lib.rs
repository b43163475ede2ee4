//! canopy's object model and wire contract. No I/O lives here.
//!
//! Everything canopy stores or sends is an object named by the SHA-256 of its bytes:
//!
//! - a **blob** is a regular file's content, with no header, so `sha256sum` of any copy
//!   verifies it;
//! - a [`Tree`] is one directory: sorted entries with kind, mode, owner, xattrs and a
//!   reference to a blob, a sub-tree, a symlink target or a device number;
//! - a [`Package`] records one imported archive (name, version, the archive's SHA-256)
//!   and the tree it unpacked to;
//! - a [`Commit`] is one version of a root: its tree, its parent, what it was built from,
//!   and an ed25519 signature by the store's key.
//!
//! [`HOST_IDENTITY`] lists the files each host needs its own copy of (machine id, host
//! keys, logs…), which shared roots do not carry.
//!
//! Trees, packages and commits have one canonical binary encoding each, starting with a
//! magic header and a version byte. Decoding rejects every input that the encoder would
//! not have produced, so an object has exactly one id.
//!
//! ```
//! use canopy_protocol::{BlobId, Entry, EntryKind, Meta, Name, Tree};
//!
//! let blob = BlobId::of(b"hello\n");
//! let entry = Entry {
//!     name: Name::new(b"greeting".to_vec()).unwrap(),
//!     meta: Meta { mode: 0o644, uid: 0, gid: 0, xattrs: Default::default() },
//!     kind: EntryKind::File { size: 6, blob },
//! };
//! let tree = Tree::new(vec![entry]).unwrap();
//! let bytes = tree.encode();
//! assert_eq!(Tree::decode(&bytes).unwrap(), tree);
//! assert_eq!(tree.id().to_string().len(), 64);
//! ```
#![warn(missing_docs)]

pub mod api;
mod codec;
mod commit;
mod escape;
mod host_identity;
mod id;
mod image;
pub mod inode;
pub mod pack;
mod package;
pub mod profile;
mod root_name;
#[cfg(test)]
mod test_entries;
mod tree;

pub use codec::DecodeError;
pub use commit::{
    Commit, CommitBody, EXTENSION_KEY_MAX, PackageRef, SignatureError, valid_extension_key,
};
pub use escape::Escaped;
pub use host_identity::{HOST_IDENTITY, HostIdentity, Keep, PerHost, host_identity};
pub use id::{ArchiveHash, BlobId, CommitId, Hasher, IdError, ObjectId, PackageId, TreeId};
pub use image::{IMAGE_EXTENSION, ImageConfig};
pub use package::{Package, PackageKind};
pub use root_name::{RootName, RootNameError};
pub use tree::{
    Entry, EntryKind, Meta, MetaError, NAME_MAX, Name, NameError, Tree, TreeError, Xattrs, identity,
};

/// ed25519 keys as used to sign commits, re-exported so callers need no second import.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
