//! Trees, commits, packages and tree packs decoded from any bytes: an error or a value
//! that encodes back to the same bytes, never a panic.
#![no_main]

use canopy_protocol::api::decode_tree_pack;
use canopy_protocol::{Commit, Package, Tree, TreeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(tree) = Tree::decode(bytes) {
        assert_eq!(
            tree.encode(),
            bytes,
            "a tree decodes from one encoding only"
        );
    }
    let _ = Commit::decode(bytes);
    let _ = Package::decode(bytes);
    let root = TreeId(canopy_protocol::ObjectId::of(bytes));
    let _ = decode_tree_pack(bytes, &root);
});
