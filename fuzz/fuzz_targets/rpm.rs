//! `.rpm` packages imported from any bytes into a store in memory: lead, signature and
//! header sections, tags, and the cpio payload (plain or compressed). An import or a
//! classified error, never a panic or an unbounded allocation.
#![no_main]

use canopy_server::Store;
use canopy_server::import::Limits;
use canopy_server::rpm::import;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One store for every run (making its key is the slow part), and a directory for the
/// package file.
fn setup() -> &'static (Store, tempfile::TempDir) {
    static SETUP: OnceLock<(Store, tempfile::TempDir)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::memory(&dir.path().join("state")).unwrap();
        (store, dir)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (store, dir) = setup();
    let path = dir.path().join("package.rpm");
    std::fs::write(&path, bytes).unwrap();
    // Small limits: the fuzzer's inputs are small, and what is past a limit is refused
    // the same way whatever its size.
    let limits = Limits {
        max_unpacked: 64 << 20,
        max_entries: 10_000,
        max_header: 1 << 20,
    };
    let _ = import::import(store, &path, limits, None);
});
