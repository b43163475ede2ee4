//! Directory packs: the contents of one directory's small files in one answer.
//!
//! `GET /v1/packs/{tree}/{part}` answers part `part` of the plan [`parts`] makes of tree
//! `tree`: the distinct contents of its regular files of at most [`MEMBER_MAX`] bytes
//! (its own entries only, not its subdirectories'), in entry order, cut into parts of at
//! most [`PART_MAX`] bytes and [`PART_MEMBERS`] members. Server and client compute the
//! same plan from the tree, so the client knows every member's id and size before it
//! asks, and the URL names the answer for good: a tree never changes, and neither do
//! its parts, so HTTP caches keep them as they keep objects, and every host asks the
//! same URLs.
//!
//! ```text
//! pack    = "CNBP" 0x01, u32 count, member*
//! member  = 32-byte id, u64 length, length bytes   (length MISSING: the server lacks it, no bytes)
//! ```
//!
//! A member is trusted only once its bytes hash to its id; one that does not fails that
//! object alone.

use crate::id::{BlobId, ObjectId};
use crate::tree::{EntryKind, Tree};

/// Largest file whose content goes into packs; larger ones are fetched alone (they
/// stream at full speed by themselves, and would hold a pack's smaller members back).
pub const MEMBER_MAX: u64 = 1 << 20;
/// Most content bytes in one part.
pub const PART_MAX: u64 = 4 << 20;
/// Most members in one part.
pub const PART_MEMBERS: usize = 512;
/// A pack's first bytes.
pub const MAGIC: &[u8; 4] = b"CNBP";
/// The pack format's version, after [`MAGIC`].
pub const VERSION: u8 = 1;
/// Bytes before the first member: magic, version, count.
pub const HEAD_LEN: usize = 9;
/// Bytes of a member's head: id and length.
pub const MEMBER_HEAD_LEN: usize = 40;
/// The length a member has when the server does not hold the object.
pub const MISSING: u64 = u64::MAX;

/// One member of a part: an object and its size as the tree gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The content.
    pub blob: BlobId,
    /// Its size in bytes.
    pub size: u64,
}

/// The parts of `tree`'s pack, in order (none if it has no small files).
pub fn parts(tree: &Tree) -> Vec<Vec<Member>> {
    let mut seen = std::collections::HashSet::new();
    let mut parts: Vec<Vec<Member>> = Vec::new();
    let mut bytes = 0;
    for e in tree.entries() {
        let EntryKind::File { size, blob } = e.kind else {
            continue;
        };
        if size > MEMBER_MAX || !seen.insert(blob) {
            continue;
        }
        let full = parts
            .last()
            .is_none_or(|p| p.len() == PART_MEMBERS || bytes + size > PART_MAX);
        if full {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts
            .last_mut()
            .expect("a part was just pushed")
            .push(Member { blob, size });
    }
    parts
}

/// A pack's head for `count` members.
pub fn head(count: usize) -> [u8; HEAD_LEN] {
    let mut out = [0u8; HEAD_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4] = VERSION;
    out[5..].copy_from_slice(&(count as u32).to_be_bytes());
    out
}

/// The member count a pack's head announces, if it is a pack's head.
pub fn parse_head(bytes: &[u8; HEAD_LEN]) -> Option<usize> {
    if &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    Some(u32::from_be_bytes(bytes[5..].try_into().expect("4 bytes")) as usize)
}

/// A member's head: its id and `length` ([`MISSING`] if the server lacks it).
pub fn member_head(id: &ObjectId, length: u64) -> [u8; MEMBER_HEAD_LEN] {
    let mut out = [0u8; MEMBER_HEAD_LEN];
    out[..32].copy_from_slice(id.as_bytes());
    out[32..].copy_from_slice(&length.to_be_bytes());
    out
}

/// The id and length of a member's head.
pub fn parse_member_head(bytes: &[u8; MEMBER_HEAD_LEN]) -> (ObjectId, u64) {
    let id = ObjectId::from_bytes(bytes[..32].try_into().expect("32 bytes"));
    let length = u64::from_be_bytes(bytes[32..].try_into().expect("8 bytes"));
    (id, length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_entries::file;

    #[test]
    fn plan_keeps_small_distinct_files_in_order_and_cuts_parts() {
        let mut entries = vec![
            file("a", b"a", 3 << 20),
            file("b", b"b", 2 << 20),
            file("c", b"a", 3 << 20),
            file("d", b"d", MEMBER_MAX),
        ];
        for i in 0..PART_MEMBERS {
            entries.push(file(&format!("z{i:04}"), format!("{i}").as_bytes(), 1));
        }
        let tree = Tree::new(entries).unwrap();
        let parts = parts(&tree);
        // a, b, c are too large; d alone, then PART_MEMBERS ones cut by count.
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0][0].blob, BlobId::of(b"d"));
        assert_eq!(parts[0].len(), PART_MEMBERS);
        assert_eq!(parts[1].len(), 1);
        let (id, len) = parse_member_head(&member_head(&parts[0][0].blob.0, 7));
        assert_eq!((id, len), (parts[0][0].blob.0, 7));
        assert_eq!(parse_head(&head(3)), Some(3));
        assert_eq!(parse_head(b"CNPK\x01\0\0\0\x03"), None);
    }

    #[test]
    fn parts_are_bounded_in_bytes() {
        let entries = (0..10)
            .map(|i| file(&format!("f{i}"), format!("{i}").as_bytes(), MEMBER_MAX))
            .collect();
        let parts = parts(&Tree::new(entries).unwrap());
        assert!(
            parts
                .iter()
                .all(|p| p.iter().map(|m| m.size).sum::<u64>() <= PART_MAX)
        );
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 10);
    }
}
