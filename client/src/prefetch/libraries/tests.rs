use super::*;
use crate::view::{RootVersion, Scope};
use canopy_protocol::{BlobId, CommitId, Entry, Meta, Name};
use std::collections::HashMap;

fn entry(name: &str, kind: EntryKind) -> Entry {
    Entry {
        name: Name::new(name.as_bytes().to_vec()).unwrap(),
        meta: Meta {
            mode: 0o755,
            ..Default::default()
        },
        kind,
    }
}

fn file(name: &str) -> Entry {
    entry(
        name,
        EntryKind::File {
            size: 100,
            blob: BlobId::of(name.as_bytes()),
        },
    )
}

fn link(name: &str, target: &str) -> Entry {
    entry(
        name,
        EntryKind::Symlink {
            target: target.as_bytes().to_vec(),
        },
    )
}

/// A directory of `entries`, added to `trees`.
fn dir(trees: &mut HashMap<TreeId, Tree>, name: &str, entries: Vec<Entry>) -> Entry {
    let t = Tree::new(entries).unwrap();
    let id = t.id();
    trees.insert(id, t);
    entry(name, EntryKind::Dir { tree: id })
}

/// A merged-/usr root: /lib → usr/lib, /lib64 → usr/lib64, a loader link, libraries
/// in the multiarch directory and elsewhere, a link loop.
fn root() -> (View, TreeId) {
    let mut trees = HashMap::new();
    let multiarch = dir(
        &mut trees,
        "x86_64-linux-gnu",
        vec![
            file("ld-linux-x86-64.so.2"),
            file("libc.so.6"),
            link("libtinfo.so.6", "libtinfo.so.6.4"),
            file("libtinfo.so.6.4"),
        ],
    );
    let lib = dir(&mut trees, "lib", vec![multiarch]);
    let lib64 = dir(
        &mut trees,
        "lib64",
        vec![link(
            "ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )],
    );
    let local = dir(&mut trees, "lib", vec![file("libx.so.1")]);
    let local = dir(&mut trees, "local", vec![local]);
    let app = dir(
        &mut trees,
        "lib",
        vec![
            file("libapp.so"),
            link("loop", "loop2"),
            link("loop2", "loop"),
        ],
    );
    let bin = dir(&mut trees, "bin", vec![file("app")]);
    let opt = dir(&mut trees, "app", vec![bin, app]);
    let opt = dir(&mut trees, "opt", vec![opt]);
    let usr = dir(&mut trees, "usr", vec![lib, lib64, local]);
    let etc = dir(&mut trees, "etc", vec![file("shadow")]);
    let top = Tree::new(vec![
        etc,
        link("lib", "usr/lib"),
        link("lib64", "/usr/lib64"),
        opt,
        usr,
    ])
    .unwrap();
    let id = top.id();
    trees.insert(id, top);
    let view = View::new(Scope::One("r".into()));
    let commit = CommitId(ObjectId::of(b"c"));
    view.install("r", RootVersion { commit, tree: id }, trees);
    (view, id)
}

fn path(f: &Found) -> String {
    let dir: Vec<String> = f
        .dir
        .iter()
        .map(|n| String::from_utf8_lossy(n).into())
        .collect();
    format!("/{}", dir.join("/"))
}

#[test]
fn paths_resolve_inside_the_root_as_the_kernel_would() {
    let (view, root) = root();
    let ld = resolve(&view, root, b"/lib64/ld-linux-x86-64.so.2").unwrap();
    assert_eq!(ld.blob, BlobId::of(b"ld-linux-x86-64.so.2").0);
    assert_eq!(path(&ld), "/usr/lib/x86_64-linux-gnu");
    let tinfo = resolve(&view, root, b"/lib/x86_64-linux-gnu/libtinfo.so.6").unwrap();
    assert_eq!(tinfo.blob, BlobId::of(b"libtinfo.so.6.4").0);
    // `..` at the top stays there: nothing outside the root is ever reached.
    let shadow = resolve(&view, root, b"/../../../etc/shadow").unwrap();
    assert_eq!(path(&shadow), "/etc");
    // Loops, directories and missing names find nothing.
    assert!(resolve(&view, root, b"/opt/app/lib/loop").is_none());
    assert!(resolve(&view, root, b"/usr/lib").is_none());
    assert!(resolve(&view, root, b"/nope/libc.so.6").is_none());
    assert!(resolve(&view, root, b"/etc/shadow/x").is_none());
    let deep = b"/".repeat(100_000);
    assert!(resolve(&view, root, &[&deep[..], b"etc/shadow"].concat()).is_some());
    let dots = b"../".repeat(10_000);
    assert!(resolve(&view, root, &dots).is_none());
}

#[test]
fn libraries_are_found_where_the_loader_looks() {
    let (view, root) = root();
    let app = resolve(&view, root, b"/opt/app/bin/app").unwrap();
    let mut needs = Needs {
        machine: object::elf::EM_X86_64,
        wide: true,
        runpath: vec![b"$ORIGIN/../lib".to_vec()],
        ..Needs::default()
    };
    let find = |needs: &Needs, name: &[u8], ld: Option<&LdCache>| {
        locate(&view, &app, needs, name, ld).map(|f| f.blob)
    };
    let id = |name: &str| Some(BlobId::of(name.as_bytes()).0);
    // $ORIGIN, then the default directories through the /lib link.
    assert_eq!(find(&needs, b"libapp.so", None), id("libapp.so"));
    assert_eq!(find(&needs, b"libc.so.6", None), id("libc.so.6"));
    // Only the cache knows /usr/local/lib.
    assert_eq!(find(&needs, b"libx.so.1", None), None);
    let ld = ld_cache_of(&[("libx.so.1", "/usr/local/lib/libx.so.1")]);
    assert_eq!(find(&needs, b"libx.so.1", Some(&ld)), id("libx.so.1"));
    // Names that are paths: absolute ones inside the root, relative ones not at all.
    assert_eq!(find(&needs, b"/etc/shadow", None), id("shadow"));
    assert_eq!(find(&needs, b"../../etc/shadow", None), None);
    assert_eq!(find(&needs, b"..", None), None);
    assert_eq!(find(&needs, &vec![b'a'; 100_000], None), None);
    // A runpath the loader could not expand here is skipped.
    needs.runpath = vec![b"$PLATFORM/lib".to_vec(), b"relative".to_vec()];
    assert_eq!(find(&needs, b"libapp.so", None), None);
}

#[test]
fn search_paths_expand_origin_and_lib() {
    let x86 = object::elf::EM_X86_64;
    assert_eq!(
        expand(b"${ORIGIN}/x:$ORIGIN", b"/o", x86).unwrap(),
        b"/o/x:/o"
    );
    assert_eq!(
        expand(b"/usr/$LIB/${LIB}", b"/o", x86).unwrap(),
        b"/usr/lib/x86_64-linux-gnu/lib/x86_64-linux-gnu"
    );
    assert!(expand(b"/$PLATFORM", b"/o", x86).is_none());
    assert!(expand(b"$", b"/o", x86).is_none());
    assert!(expand(b"$LIB", b"/o", 0xffff).is_none());
}

/// An x86-64 `ld.so.cache` listing `(name, path)`.
fn ld_cache_of(entries: &[(&str, &str)]) -> LdCache {
    let head = 48 + 24 * entries.len();
    let mut b = b"glibc-ld.so.cache1.1".to_vec();
    b.extend((entries.len() as u32).to_le_bytes());
    b.extend([0; 4]);
    b.extend([2, 0, 0, 0]);
    b.extend([0; 16]);
    let mut strings = Vec::new();
    for (name, path) in entries {
        let key = (head + strings.len()) as u32;
        strings.extend(name.as_bytes());
        strings.push(0);
        let value = (head + strings.len()) as u32;
        strings.extend(path.as_bytes());
        strings.push(0);
        b.extend(0x0303u32.to_le_bytes());
        b.extend(key.to_le_bytes());
        b.extend(value.to_le_bytes());
        b.extend([0; 12]);
    }
    b.extend(strings);
    LdCache::parse(&b, object::elf::EM_X86_64).unwrap()
}
