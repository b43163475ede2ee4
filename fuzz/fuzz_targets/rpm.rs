//! `.rpm` packages imported from any bytes into a store in memory: lead, signature and
//! header sections, tags, and the cpio payload (plain or compressed). An import or a
//! classified error, never a panic or an unbounded allocation.
#![no_main]

mod importing;

use canopy_server::rpm::import;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (store, path) = importing::store_with_input("package.rpm", bytes);
    let _ = import::import(store, &path, importing::limits(), None);
});
