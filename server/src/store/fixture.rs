//! Stores for unit tests: in memory, with roots made from small directories.

use super::Store;
use crate::import::{Limits, dir};
use canopy_protocol::{CommitBody, CommitId, RootName, TreeId};

/// A memory store (its local state in a temporary directory) holding a package
/// imported from a directory with `files` (path, content; parents are created).
pub(crate) fn memory_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Store, TreeId) {
    let state = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = src.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let store = Store::memory(state.path()).unwrap();
    let imported = dir::import(&store, src.path(), "pkg", "1", Limits::default()).unwrap();
    (state, store, imported.package.tree)
}

/// A store on disk (objects as files, so HTTP sends them with `sendfile`) holding a
/// package imported from a directory with `files`, as [`memory_with`].
pub(crate) fn local_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Store, TreeId) {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = src.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let (store, _) = Store::init(&dir.path().join("store")).unwrap();
    let imported = dir::import(&store, src.path(), "pkg", "1", Limits::default()).unwrap();
    (dir, store, imported.package.tree)
}

/// Commits `tree` as the next version of `root` (signed, generation counted) and moves
/// the root to it.
pub(crate) fn commit(store: &Store, root: &str, tree: TreeId) -> CommitId {
    let root: RootName = root.parse().unwrap();
    let parent = store.root_ref(&root).unwrap();
    let generation = parent.map_or(1, |p| store.commit(&p).unwrap().body.generation + 1);
    let body = CommitBody {
        root: root.clone(),
        generation,
        tree,
        parent,
        timestamp: generation as i64,
        subject: format!("commit {generation}"),
        requested: vec![],
        options: vec![],
        packages: vec![],
        extensions: Default::default(),
    };
    let mut txn = store.begin().unwrap();
    let id = txn
        .put_commit(&body.sign(&store.signing_key().unwrap()))
        .unwrap();
    txn.set_root(&root, parent, id);
    txn.commit().unwrap();
    id
}
