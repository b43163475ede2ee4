//! Container images imported from any bytes into a store in memory, read both as an
//! OCI image layout archive and as a `docker save` archive: index, manifests, config,
//! digests and layers. An import or a classified error, never a panic or an unbounded
//! allocation.
#![no_main]

use canopy_protocol::RootName;
use canopy_server::Store;
use canopy_server::import::Limits;
use canopy_server::oci::{self, Format, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One store for every run (making its key is the slow part), and a directory for the
/// image archive.
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
    let path = dir.path().join("image.tar");
    std::fs::write(&path, bytes).unwrap();
    let root: RootName = "fuzz".parse().unwrap();
    for format in [Format::Layout, Format::DockerArchive] {
        let req = Request {
            root: root.clone(),
            path: &path,
            format,
            reference: None,
            // Fixed, so a run does not depend on the machine it runs on.
            platform: Some("linux/amd64"),
            // Small limits: the fuzzer's inputs are small, and what is past a limit is
            // refused the same way whatever its size.
            limits: Limits {
                max_unpacked: 64 << 20,
                max_entries: 10_000,
                max_header: 1 << 20,
            },
            subject: None,
        };
        let _ = oci::import(store, &req, &mut |_, _, _| {});
    }
});
