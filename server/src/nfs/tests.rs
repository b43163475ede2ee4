//! The NFS view over a memory store: exports, lookups, attributes and reads, without
//! a socket.

use super::export::{Error, Exports, Kind};
use crate::store::fixture;

#[test]
fn exports_show_roots_and_pinned_commits_and_read_ranges() {
    let (_state, store, tree) = fixture::memory_with(&[("bin/tool", b"0123456789")]);
    let first = fixture::commit(&store, "web", tree);
    fixture::commit(&store, "web", tree);
    let exports = Exports::new(store);

    let top = exports.mount(b"/").unwrap();
    let listing = exports.list(&top).unwrap();
    assert_eq!(listing.len(), 3, ". .. web");
    let web = exports.mount(b"/web").unwrap();
    let bin = exports.lookup(&web, b"bin").unwrap();
    assert_eq!(exports.attr(&bin).unwrap().kind, Kind::Dir);
    let tool = exports.lookup(&bin, b"tool").unwrap();
    let attr = exports.attr(&tool).unwrap();
    assert_eq!(
        (attr.kind, attr.size, attr.nlink),
        (Kind::File, 10, canopy_protocol::inode::LEAF_NLINK)
    );

    let chunk = exports.read(&tool, 3, 4).unwrap();
    let mut buf = vec![0; chunk.len];
    chunk.read_into(&mut buf).unwrap();
    assert_eq!((&buf[..], chunk.eof), (&b"3456"[..], false));
    let tail = exports.read(&tool, 8, 100).unwrap();
    assert_eq!((tail.len, tail.eof), (2, true));

    // An old commit by unique prefix; an unknown one is not there.
    let short = &first.to_string()[..10];
    let pinned = exports.mount(format!("/web@{short}").as_bytes()).unwrap();
    assert!(exports.lookup(&pinned, b"bin").is_ok());
    assert_eq!(exports.mount(b"/web@ffffffffff").unwrap_err(), Error::NoEnt);
    assert_eq!(exports.mount(b"/nope").unwrap_err(), Error::NoEnt);
}
