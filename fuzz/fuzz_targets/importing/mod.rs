//! What the importer targets share: a store in memory, the input written to a file
//! (importers read files), and small limits.

use canopy_server::Store;
use canopy_server::import::Limits;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The one store of every run (making its key is the slow part), and `bytes` written
/// to the file `name` beside it.
pub fn store_with_input(name: &str, bytes: &[u8]) -> (&'static Store, PathBuf) {
    static SETUP: OnceLock<(Store, tempfile::TempDir)> = OnceLock::new();
    let (store, dir) = SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::memory(&dir.path().join("state")).unwrap();
        (store, dir)
    });
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (store, path)
}

/// Small limits: the fuzzer's inputs are small, and what is past a limit is refused the
/// same way whatever its size.
pub fn limits() -> Limits {
    Limits {
        max_unpacked: 64 << 20,
        max_entries: 10_000,
        max_header: 1 << 20,
    }
}
