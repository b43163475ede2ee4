//! Trees: one directory each, entries sorted by name.
//!
//! Encoding (all integers big-endian):
//!
//! ```text
//! "CNPT" 0x01                      magic, version
//! u32 count                        then per entry, in strictly increasing name order:
//!   u16 len, name                  1..=255 bytes, no '/' or NUL, not "." or ".."
//!   u8  kind                       1 file 2 dir 3 symlink 4 char 5 block 6 fifo 7 socket
//!   u16 mode                       permission bits incl. setuid/setgid/sticky (<= 0o7777)
//!   u32 uid, u32 gid
//!   file:    u64 size, 32-byte blob id
//!   dir:     32-byte tree id
//!   symlink: u16 len, target       1..=4095 bytes, no NUL
//!   char/block: u32 major, u32 minor
//!   u16 xattr count                then per xattr, in strictly increasing name order:
//!     u8 len, name                 1..=255 bytes, no NUL
//!     u32 len, value               at most 65536 bytes
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::escape::Escaped;
use crate::id::{BlobId, ObjectId, TreeId};
use std::fmt;

const MAGIC: &[u8; 4] = b"CNPT";
/// Header of the bytes an [`identity`] hashes: never a valid object of any kind.
const IDENTITY_MAGIC: &[u8; 4] = b"CNPI";
const VERSION: u8 = 1;

/// Longest entry name, as Linux's NAME_MAX.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, as Linux's PATH_MAX less the NUL.
pub const SYMLINK_MAX: usize = 4095;
/// Largest xattr value, as Linux's XATTR_SIZE_MAX.
pub const XATTR_VALUE_MAX: usize = 65536;

/// Why a name cannot be a directory entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    #[error("empty file name")]
    Empty,
    /// The name is `.` or `..`.
    #[error("file name {0:?} is reserved")]
    Dot(String),
    /// The name holds a `/` or a NUL byte.
    #[error("file name {0:?} contains '/' or NUL")]
    BadByte(String),
    /// The name is longer than 255 bytes.
    #[error("file name of {0} bytes exceeds 255")]
    TooLong(usize),
}

/// A validated directory entry name: raw bytes, as Linux allows any but `/` and NUL.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Vec<u8>);

impl Name {
    /// Validates `bytes` as one path component.
    pub fn new(bytes: Vec<u8>) -> Result<Self, NameError> {
        let lossy = || String::from_utf8_lossy(&bytes).into_owned();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes == b"." || bytes == b".." {
            return Err(NameError::Dot(lossy()));
        }
        if bytes.iter().any(|&b| b == b'/' || b == 0) {
            return Err(NameError::BadByte(lossy()));
        }
        if bytes.len() > NAME_MAX {
            return Err(NameError::TooLong(bytes.len()));
        }
        Ok(Name(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Shown escaped (see [`Escaped`]): a name is any bytes, and printing it raw could
/// forge lines of output or reach the terminal as escape sequences.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Escaped(&self.0), f)
    }
}

/// Extended attributes, sorted by name with no duplicates.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Metadata every entry has.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Meta {
    /// Permission bits with setuid/setgid/sticky; never file-type bits.
    pub mode: u16,
    /// Numeric owner, as recorded in the archive.
    pub uid: u32,
    /// Numeric group, as recorded in the archive.
    pub gid: u32,
    /// Extended attributes (e.g. `security.capability`), sorted by name.
    pub xattrs: Xattrs,
}

impl Meta {
    /// How front ends show a root's own top directory, which no tree entry describes:
    /// 0755, owned by root.
    pub const ROOT_DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    };

    /// Checks what a tree would refuse: mode bits beyond `0o7777`, an xattr name that is
    /// empty, over 255 bytes or holds NUL, a value over 64 KiB, xattrs unsorted or
    /// given twice, more than 65535 of them. Importers call this on what an archive
    /// claims, so a bad entry is refused with its path instead of failing later.
    pub fn check(&self) -> Result<(), MetaError> {
        if self.mode > 0o7777 {
            return Err(MetaError::Mode(self.mode));
        }
        for (i, (name, value)) in self.xattrs.iter().enumerate() {
            if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
                return Err(MetaError::XattrName(name.clone()));
            }
            if value.len() > XATTR_VALUE_MAX {
                return Err(MetaError::XattrValue {
                    name: name.clone(),
                    len: value.len(),
                });
            }
            if i > 0 && self.xattrs[i - 1].0 >= *name {
                return Err(MetaError::XattrOrder);
            }
        }
        if self.xattrs.len() > u16::MAX as usize {
            return Err(MetaError::TooManyXattrs(self.xattrs.len()));
        }
        Ok(())
    }
}

/// Metadata no tree can hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// Bits beyond `0o7777` (file-type bits).
    #[error("mode {0:o} has bits beyond 7777")]
    Mode(u16),
    /// An xattr name that is empty, over 255 bytes or holds NUL.
    #[error("xattr name \"{}\" is empty, over 255 bytes or holds NUL", Escaped(.0))]
    XattrName(Vec<u8>),
    /// An xattr value over [`XATTR_VALUE_MAX`].
    #[error("xattr {} has a value of {len} bytes, over 65536", Escaped(.name))]
    XattrValue {
        /// The xattr's name.
        name: Vec<u8>,
        /// The value's length.
        len: usize,
    },
    /// Xattrs not in strictly increasing name order.
    #[error("xattrs are not sorted or are duplicated")]
    XattrOrder,
    /// More xattrs than the encoding counts.
    #[error("{0} xattrs, over 65535")]
    TooManyXattrs(usize),
}

/// What an entry is, with what each kind needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Its content.
        blob: BlobId,
    },
    /// A directory.
    Dir {
        /// Its content.
        tree: TreeId,
    },
    /// A symbolic link.
    Symlink {
        /// Raw target bytes, kept exactly (absolute targets included).
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

impl EntryKind {
    fn code(&self) -> u8 {
        match self {
            EntryKind::File { .. } => 1,
            EntryKind::Dir { .. } => 2,
            EntryKind::Symlink { .. } => 3,
            EntryKind::CharDevice { .. } => 4,
            EntryKind::BlockDevice { .. } => 5,
            EntryKind::Fifo => 6,
            EntryKind::Socket => 7,
        }
    }

    /// A short lowercase word for messages and listings.
    pub fn label(&self) -> &'static str {
        match self {
            EntryKind::File { .. } => "file",
            EntryKind::Dir { .. } => "directory",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::CharDevice { .. } => "char device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
        }
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Its name within the directory.
    pub name: Name,
    /// Mode, owner, xattrs.
    pub meta: Meta,
    /// Kind and kind-specific data.
    pub kind: EntryKind,
}

/// Why entries cannot form a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// Two entries share a name.
    #[error("duplicate entry {0}")]
    Duplicate(Name),
    /// An entry's fields are out of range.
    #[error("entry {name}: {reason}")]
    BadEntry {
        /// The entry.
        name: Name,
        /// What is out of range.
        reason: String,
    },
}

fn check_entry(e: &Entry) -> Result<(), String> {
    e.meta.check().map_err(|e| e.to_string())?;
    if let EntryKind::Symlink { target } = &e.kind
        && (target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0))
    {
        return Err("symlink target is empty, too long or contains NUL".into());
    }
    Ok(())
}

/// Everything an entry records but its name, as the tree encoding writes it.
fn write_body(w: &mut Writer, kind: &EntryKind, meta: &Meta) {
    w.u8(kind.code());
    w.u16(meta.mode);
    w.u32(meta.uid);
    w.u32(meta.gid);
    match kind {
        EntryKind::File { size, blob } => {
            w.u64(*size);
            w.id(&blob.0);
        }
        EntryKind::Dir { tree } => w.id(&tree.0),
        EntryKind::Symlink { target } => w.bytes16(target),
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            w.u32(*major);
            w.u32(*minor);
        }
        EntryKind::Fifo | EntryKind::Socket => {}
    }
    w.u16(meta.xattrs.len() as u16);
    for (name, value) in &meta.xattrs {
        w.bytes8(name);
        w.bytes32(value);
    }
}

/// The identity of a file: the SHA-256 of everything an entry records but its name
/// (kind, content or target or device, mode, owner, xattrs), under its own header.
///
/// Two entries with the same identity are the same file wherever they appear, in any
/// root or version: front ends give them one inode (FUSE) or one fileid (NFS), so a
/// kernel caches their pages once and an unchanged file keeps its number across
/// versions. Only the name is left out: the identity does not depend on paths.
pub fn identity(kind: &EntryKind, meta: &Meta) -> ObjectId {
    let mut w = Writer::with_header(IDENTITY_MAGIC, VERSION);
    write_body(&mut w, kind, meta);
    ObjectId::of(&w.into_bytes())
}

/// One directory: entries in strictly increasing byte order of name.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    entries: Vec<Entry>,
}

impl Tree {
    /// Builds a tree from entries in any order; sorts them and their xattrs, and refuses
    /// duplicates and out-of-range fields.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self, TreeError> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in &mut entries {
            e.meta.xattrs.sort();
        }
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && entries[i - 1].name == e.name {
                return Err(TreeError::Duplicate(e.name.clone()));
            }
            check_entry(e).map_err(|reason| TreeError::BadEntry {
                name: e.name.clone(),
                reason,
            })?;
        }
        if entries.len() > u32::MAX as usize {
            return Err(TreeError::BadEntry {
                name: entries[0].name.clone(),
                reason: "too many entries".into(),
            });
        }
        Ok(Tree { entries })
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Consumes the tree, returning its sorted entries.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The entry called `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_header(MAGIC, VERSION);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.bytes16(e.name.as_bytes());
            write_body(&mut w, &e.kind, &e.meta);
        }
        w.into_bytes()
    }

    /// The id: SHA-256 of the canonical encoding.
    pub fn id(&self) -> TreeId {
        TreeId::of(&self.encode())
    }

    /// Decodes a canonical encoding; anything the encoder would not produce is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_header(bytes, MAGIC, VERSION, "tree")?;
        // The smallest entry (1-byte name, fifo, no xattrs) takes 16 bytes.
        let count = r.count(16)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = Name::new(r.bytes16()?.to_vec())
                .map_err(|e| DecodeError::invalid("entry name", e.to_string()))?;
            if let Some(prev) = entries.last()
                && prev.name >= name
            {
                return Err(DecodeError::invalid(
                    "entry order",
                    format!("{name} is not after {}", prev.name),
                ));
            }
            let code = r.u8()?;
            let mode = r.u16()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let kind = match code {
                1 => EntryKind::File {
                    size: r.u64()?,
                    blob: BlobId(r.id()?),
                },
                2 => EntryKind::Dir {
                    tree: TreeId(r.id()?),
                },
                3 => EntryKind::Symlink {
                    target: r.bytes16()?.to_vec(),
                },
                4 => EntryKind::CharDevice {
                    major: r.u32()?,
                    minor: r.u32()?,
                },
                5 => EntryKind::BlockDevice {
                    major: r.u32()?,
                    minor: r.u32()?,
                },
                6 => EntryKind::Fifo,
                7 => EntryKind::Socket,
                other => {
                    return Err(DecodeError::invalid(
                        "entry kind",
                        format!("unknown kind {other}"),
                    ));
                }
            };
            let n = r.u16()?;
            let mut xattrs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let k = r.bytes8()?.to_vec();
                let v = r.bytes32()?.to_vec();
                xattrs.push((k, v));
            }
            let entry = Entry {
                name,
                meta: Meta {
                    mode,
                    uid,
                    gid,
                    xattrs,
                },
                kind,
            };
            check_entry(&entry).map_err(|reason| {
                DecodeError::invalid("entry", format!("{}: {reason}", entry.name))
            })?;
            entries.push(entry);
        }
        r.finish()?;
        Ok(Tree { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = Name> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..12,
        )
        .prop_filter_map("not . or ..", |b| Name::new(b).ok())
    }

    fn arb_kind() -> impl Strategy<Value = EntryKind> {
        let id = any::<[u8; 32]>().prop_map(ObjectId::from_bytes);
        prop_oneof![
            (any::<u64>(), id.clone()).prop_map(|(size, id)| EntryKind::File {
                size,
                blob: BlobId(id)
            }),
            id.prop_map(|id| EntryKind::Dir { tree: TreeId(id) }),
            proptest::collection::vec(1u8..=255, 1..40)
                .prop_map(|target| EntryKind::Symlink { target }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(major, minor)| EntryKind::CharDevice { major, minor }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(major, minor)| EntryKind::BlockDevice { major, minor }),
            Just(EntryKind::Fifo),
            Just(EntryKind::Socket),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let xattrs = proptest::collection::btree_map(
            proptest::collection::vec(1u8..=255, 1..20),
            proptest::collection::vec(any::<u8>(), 0..30),
            0..3,
        );
        (
            arb_name(),
            0u16..=0o7777,
            any::<u32>(),
            any::<u32>(),
            xattrs,
            arb_kind(),
        )
            .prop_map(|(name, mode, uid, gid, xattrs, kind)| Entry {
                name,
                meta: Meta {
                    mode,
                    uid,
                    gid,
                    xattrs: xattrs.into_iter().collect(),
                },
                kind,
            })
    }

    fn arb_tree() -> impl Strategy<Value = Tree> {
        proptest::collection::vec(arb_entry(), 0..8).prop_map(|mut entries| {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            Tree::new(entries).unwrap()
        })
    }

    proptest! {
        #[test]
        fn encode_decode_encode_is_identity(tree in arb_tree()) {
            let bytes = tree.encode();
            let back = Tree::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &tree);
            prop_assert_eq!(back.encode(), bytes);
        }

        /// Canonical: whatever decodes re-encodes to the very same bytes, so a mutated
        /// encoding is either refused or is a different object with a different id.
        #[test]
        fn any_mutation_changes_id_or_is_rejected(tree in arb_tree(), pos in any::<usize>(), byte in any::<u8>()) {
            let bytes = tree.encode();
            let mut mutated = bytes.clone();
            let i = pos % mutated.len();
            prop_assume!(mutated[i] != byte);
            mutated[i] = byte;
            if let Ok(decoded) = Tree::decode(&mutated) {
                prop_assert_eq!(decoded.encode(), mutated.clone());
                prop_assert_ne!(decoded.id(), tree.id());
            }
        }

        /// Identity is the entry less its name: equal exactly when kind and meta are.
        #[test]
        fn identity_ignores_only_the_name(a in arb_entry(), b in arb_entry()) {
            prop_assert_eq!(
                identity(&a.kind, &a.meta) == identity(&b.kind, &b.meta),
                (&a.kind, &a.meta) == (&b.kind, &b.meta)
            );
            let renamed = Entry { name: b.name.clone(), ..a.clone() };
            prop_assert_eq!(identity(&renamed.kind, &renamed.meta), identity(&a.kind, &a.meta));
        }

        #[test]
        fn truncation_and_trailing_bytes_are_rejected(tree in arb_tree(), cut in any::<usize>()) {
            let bytes = tree.encode();
            let cut = cut % bytes.len();
            prop_assert!(Tree::decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(Tree::decode(&longer), Err(DecodeError::TrailingBytes(1)));
        }
    }

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: Name::new(name.to_vec()).unwrap(),
            meta: Meta {
                mode: 0o644,
                ..Default::default()
            },
            kind: EntryKind::Fifo,
        }
    }

    #[test]
    fn rejects_unsorted_duplicate_and_bad_names() {
        let good = Tree::new(vec![entry(b"a"), entry(b"b")]).unwrap().encode();
        // Swap the two names in place: same length, so only the order is wrong.
        let mut swapped = good.clone();
        let a = good.iter().position(|&b| b == b'a').unwrap();
        let b = good.iter().position(|&c| c == b'b').unwrap();
        swapped[a] = b'b';
        swapped[b] = b'a';
        assert!(matches!(
            Tree::decode(&swapped),
            Err(DecodeError::Invalid {
                field: "entry order",
                ..
            })
        ));
        let mut dup = good.clone();
        dup[b] = b'a';
        assert!(matches!(
            Tree::decode(&dup),
            Err(DecodeError::Invalid {
                field: "entry order",
                ..
            })
        ));
        let mut slash = good.clone();
        slash[a] = b'/';
        assert!(matches!(
            Tree::decode(&slash),
            Err(DecodeError::Invalid {
                field: "entry name",
                ..
            })
        ));
        let mut nul = good.clone();
        nul[a] = 0;
        assert!(matches!(
            Tree::decode(&nul),
            Err(DecodeError::Invalid {
                field: "entry name",
                ..
            })
        ));
        let mut dot = good;
        dot[a] = b'.';
        assert!(matches!(
            Tree::decode(&dot),
            Err(DecodeError::Invalid {
                field: "entry name",
                ..
            })
        ));
        assert_eq!(
            Tree::new(vec![entry(b"x"), entry(b"x")]),
            Err(TreeError::Duplicate(Name::new(b"x".to_vec()).unwrap()))
        );
    }

    #[test]
    fn rejects_unknown_version_and_magic() {
        let mut bytes = Tree::default().encode();
        bytes[4] = 2;
        assert_eq!(
            Tree::decode(&bytes),
            Err(DecodeError::UnsupportedVersion {
                kind: "tree",
                version: 2
            })
        );
        bytes[0] = b'X';
        assert_eq!(
            Tree::decode(&bytes),
            Err(DecodeError::BadMagic { expected: "tree" })
        );
    }

    #[test]
    fn rejects_mode_with_file_type_bits() {
        let mut e = entry(b"a");
        e.meta.mode = 0o100644_u16;
        assert!(Tree::new(vec![e]).is_err());
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(Name::new(vec![]), Err(NameError::Empty));
        assert!(matches!(Name::new(b"..".to_vec()), Err(NameError::Dot(_))));
        assert!(matches!(
            Name::new(b"a/b".to_vec()),
            Err(NameError::BadByte(_))
        ));
        assert!(matches!(
            Name::new(vec![b'a'; 256]),
            Err(NameError::TooLong(256))
        ));
    }
}
