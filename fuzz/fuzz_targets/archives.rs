//! Tarballs (plain or compressed) and .deb packages imported from any bytes into a
//! store in memory: an import or a classified error, never a panic or an unbounded
//! allocation.
#![no_main]

mod importing;

use canopy_server::debian::deb;
use canopy_server::import::tar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (store, path) = importing::store_with_input("archive", bytes);
    let _ = tar::import(store, &path, "fuzz", "1", importing::limits());
    let _ = deb::import(store, &path, importing::limits());
});
