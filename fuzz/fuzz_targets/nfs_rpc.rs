//! NFSv3 and MOUNT calls from any bytes, answered against an empty store: a
//! reply or silence, never a panic, and never a reply larger than the largest read.
#![no_main]

use canopy_server::Store;
use canopy_server::nfs::Answerer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn answerer() -> &'static Answerer {
    static ANSWERER: OnceLock<(Answerer, tempfile::TempDir)> = OnceLock::new();
    &ANSWERER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::memory(&dir.path().join("state")).unwrap();
            (Answerer::new(store), dir)
        })
        .0
}

fuzz_target!(|record: &[u8]| {
    if let Some(reply) = answerer().answer(record) {
        assert!(reply.len() <= 2 << 20, "a reply of {} bytes", reply.len());
    }
});
