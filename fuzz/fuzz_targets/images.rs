//! Container images imported from any bytes into a store in memory, read both as an
//! OCI image layout archive and as a `docker save` archive: index, manifests, config,
//! digests and layers. An import or a classified error, never a panic or an unbounded
//! allocation.
#![no_main]

mod importing;

use canopy_protocol::RootName;
use canopy_server::oci::{self, Format, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (store, path) = importing::store_with_input("image.tar", bytes);
    let root: RootName = "fuzz".parse().unwrap();
    for format in [Format::Layout, Format::DockerArchive] {
        let req = Request {
            root: root.clone(),
            path: &path,
            format,
            reference: None,
            // Fixed, so a run does not depend on the machine it runs on.
            platform: Some("linux/amd64"),
            limits: importing::limits(),
            subject: None,
        };
        let _ = oci::import(store, &req, &mut |_, _, _| {});
    }
});
