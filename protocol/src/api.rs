//! The HTTP protocol, v1: JSON shapes and the tree pack.
//!
//! ```text
//! GET  /v1/objects/{id}        an object's bytes; immutable, ETag = id, Range, zstd on the wire
//! GET  /v1/roots               [RootInfo]
//! GET  /v1/roots/{name}        RootInfo: the current commit (fetch it as an object and
//!                              verify its signature); cached for a few seconds only
//! GET  /v1/roots/{name}/log    [LogEntry], newest first
//! GET  /v1/trees/{id}          TreePack of every tree reachable from tree {id}: a whole
//!                              root's directory metadata in one round trip; immutable
//! GET  /v1/packs/{tree}/{part} a directory's small files, many per answer (see
//!                              [`crate::pack`]); immutable
//! errors                       ErrorBody with a stable code; 400 bad id, 404 missing
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::id::{ObjectId, TreeId};
use crate::tree::{EntryKind, Tree};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A root and its current commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    /// Root name.
    pub name: String,
    /// Current commit id (hex).
    pub commit: String,
}

/// One commit of a root's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Commit id (hex).
    pub commit: String,
    /// Parent commit id (hex), if any.
    pub parent: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    /// Subject line.
    pub subject: String,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `bad-id`, `bad-name`, `not-found`, `internal`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

const PACK_MAGIC: &[u8; 4] = b"CNPK";
const PACK_VERSION: u8 = 1;

/// Encodes trees (id, encoded bytes) as a tree pack:
/// `"CNPK" 0x01, u32 count, then per tree: 32-byte id, u32 length, bytes`.
pub fn encode_tree_pack<'a>(trees: impl IntoIterator<Item = (TreeId, &'a [u8])>) -> Vec<u8> {
    let trees: Vec<_> = trees.into_iter().collect();
    let mut w = Writer::with_header(PACK_MAGIC, PACK_VERSION);
    w.u32(trees.len() as u32);
    for (id, bytes) in trees {
        w.id(&id.0);
        w.bytes32(bytes);
    }
    w.into_bytes()
}

/// Decodes a tree pack, verifying every tree against its id, and checks that it holds
/// every tree reachable from `root`. Returns each tree with its encoded bytes.
pub fn decode_tree_pack(
    bytes: &[u8],
    root: &TreeId,
) -> Result<HashMap<TreeId, (Tree, Vec<u8>)>, DecodeError> {
    let mut r = Reader::with_header(bytes, PACK_MAGIC, PACK_VERSION, "tree pack")?;
    let n = r.count(36)?;
    let mut trees = HashMap::with_capacity(n);
    for _ in 0..n {
        let id = TreeId(r.id()?);
        let encoded = r.bytes32()?;
        if ObjectId::of(encoded) != id.0 {
            return Err(DecodeError::invalid(
                "tree pack",
                format!("tree {id} does not match its content"),
            ));
        }
        let tree = Tree::decode(encoded)?;
        trees.insert(id, (tree, encoded.to_vec()));
    }
    r.finish()?;
    let mut stack = vec![*root];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let (tree, _) = trees
            .get(&id)
            .ok_or_else(|| DecodeError::invalid("tree pack", format!("tree {id} is missing")))?;
        for e in tree.entries() {
            if let EntryKind::Dir { tree } = e.kind {
                stack.push(tree);
            }
        }
    }
    Ok(trees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Entry, Meta, Name};

    #[test]
    fn pack_round_trip_and_completeness() {
        let leaf = Tree::default();
        let leaf_bytes = leaf.encode();
        let top = Tree::new(vec![Entry {
            name: Name::new(b"d".to_vec()).unwrap(),
            meta: Meta {
                mode: 0o755,
                ..Default::default()
            },
            kind: EntryKind::Dir { tree: leaf.id() },
        }])
        .unwrap();
        let top_bytes = top.encode();
        let pack = encode_tree_pack([(top.id(), &top_bytes[..]), (leaf.id(), &leaf_bytes[..])]);
        let trees = decode_tree_pack(&pack, &top.id()).unwrap();
        assert_eq!(trees.len(), 2);
        let partial = encode_tree_pack([(top.id(), &top_bytes[..])]);
        assert!(decode_tree_pack(&partial, &top.id()).is_err());
        let mut tampered = pack.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(decode_tree_pack(&tampered, &top.id()).is_err());
    }
}
