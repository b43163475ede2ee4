use super::search::*;
use super::*;
use crate::view::{RootVersion, Scope, View};
use canopy_protocol::{BlobId, CommitId, Meta, Name, Tree};
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
    shown(trees, top)
}

fn path(f: &Found) -> String {
    let dir: Vec<String> = f
        .dir
        .iter()
        .map(|n| String::from_utf8_lossy(n).into())
        .collect();
    format!("/{}", dir.join("/"))
}

/// [`resolve`] with a budget that never runs out.
fn at(view: &View, root: TreeId, path: &[u8]) -> Option<Found> {
    resolve(view, root, path, &mut Steps(usize::MAX))
}

#[test]
fn paths_resolve_inside_the_root_as_the_kernel_would() {
    let (view, root) = root();
    let resolve = |view: &View, root: TreeId, path: &[u8]| at(view, root, path);
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
    let app = at(&view, root, b"/opt/app/bin/app").unwrap();
    let mut needs = Needs {
        machine: object::elf::EM_X86_64,
        wide: true,
        runpath: vec![b"$ORIGIN/../lib".to_vec()],
        ..Needs::default()
    };
    let find = |needs: &Needs, name: &[u8], ld: Option<&LdCache>| {
        let steps = &mut Steps(usize::MAX);
        let search = search_dirs(&view, &app, needs, steps);
        let defaults = default_search(&view, root, needs.machine, needs.wide, steps);
        locate(&view, &app, name, &search, ld, &defaults, steps).map(|f| f.blob)
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
fn a_roots_loader_and_libc_are_found_before_any_program_is_read() {
    let (view, root) = root();
    let steps = &mut Steps(usize::MAX);
    // A standard path, through the root's own links.
    let (ld, machine, wide) = common::loader(&view, root, &[], steps).unwrap();
    assert_eq!(ld.blob, BlobId::of(b"ld-linux-x86-64.so.2").0);
    assert_eq!((machine, wide), (object::elf::EM_X86_64, true));
    // An interpreter seen in a program read comes first, if the root holds it.
    let seen = |p: &str| vec![(p.as_bytes().to_vec(), object::elf::EM_386, false)];
    let (app, app_machine, _) =
        common::loader(&view, root, &seen("/opt/app/bin/app"), steps).unwrap();
    assert_eq!(app.blob, BlobId::of(b"app").0);
    assert_eq!(app_machine, object::elf::EM_386);
    let (ld2, _, _) = common::loader(&view, root, &seen("/nope/ld.so"), steps).unwrap();
    assert_eq!(ld2.blob, ld.blob);
    // The C library, as the loader finds it for a program that needs it alone.
    let defaults = default_search(&view, root, machine, wide, steps);
    let libc = locate(&view, &ld, common::LIBC, &[], None, &defaults, steps).unwrap();
    assert_eq!(libc.blob, BlobId::of(b"libc.so.6").0);
    // A root without a loader (static programs only, or another layout) gets nothing.
    let (bare, bare_root) = bare_root();
    assert!(common::loader(&bare, bare_root, &[], steps).is_none());
}

/// A view showing the root of top-level tree `top` (with `trees` under it) as `r`.
fn shown(mut trees: HashMap<TreeId, Tree>, top: Tree) -> (View, TreeId) {
    let id = top.id();
    trees.insert(id, top);
    let view = View::new(Scope::One("r".into()));
    let commit = CommitId(ObjectId::of(b"c"));
    view.install("r", RootVersion { commit, tree: id }, trees);
    (view, id)
}

/// A root with one file and no loader.
fn bare_root() -> (View, TreeId) {
    shown(HashMap::new(), Tree::new(vec![file("app")]).unwrap())
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
    let entries: Vec<_> = entries.iter().map(|(n, p)| (0x0303, *n, *p, 0)).collect();
    let b = crate::prefetch::ldcache::build(&entries);
    LdCache::parse(b, object::elf::EM_X86_64).unwrap()
}

/// A root whose `/a0` is a directory reached through a chain of 40 links, each going
/// `x/../` down and up once more, and an executable asking for 128 libraries with
/// 32 runpath entries all naming `/a0`.
fn hostile() -> (View, TreeId, Found, Needs) {
    let mut trees = HashMap::new();
    let x = dir(&mut trees, "x", vec![]);
    let mut top = vec![x, file("app")];
    for i in 0..40 {
        let next = if i == 39 {
            "x".to_string()
        } else {
            format!("{}a{}", "x/../".repeat(20), i + 1)
        };
        top.push(link(&format!("a{i}"), &next));
    }
    top.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let top = Tree::new(top).unwrap();
    let id = top.id();
    trees.insert(id, top);
    let view = View::new(Scope::One("r".into()));
    let commit = CommitId(ObjectId::of(b"c"));
    view.install("r", RootVersion { commit, tree: id }, trees);
    let app = at(&view, id, b"/app").unwrap();
    let needs = Needs {
        machine: object::elf::EM_X86_64,
        wide: true,
        needed: (0..128)
            .map(|i| format!("lib{i}.so").into_bytes())
            .collect(),
        runpath: vec![b"/a0".to_vec(); 32],
        ..Needs::default()
    };
    (view, id, app, needs)
}

#[test]
fn a_hostile_object_costs_bounded_work() {
    let (view, root, app, needs) = hostile();
    // One path through the chain stops at the per-path bound.
    let mut steps = Steps(usize::MAX);
    assert!(resolve_dir(&view, root, b"/a0", &mut steps).is_none());
    assert!(usize::MAX - steps.0 <= STEPS);
    // Each search directory is resolved once, not once per name: the whole object
    // costs its directories' walks plus one look-up per (name, directory).
    let mut steps = Steps(usize::MAX);
    let search = search_dirs(&view, &app, &needs, &mut steps);
    let defaults = default_search(&view, root, needs.machine, needs.wide, &mut steps);
    for name in &needs.needed {
        assert!(locate(&view, &app, name, &search, None, &defaults, &mut steps).is_none());
    }
    let spent = usize::MAX - steps.0;
    assert!(spent <= (32 + 6) * STEPS + 128 * (32 + 6), "{spent} steps");
    assert!(spent <= PROGRAM_STEPS);
    // And a program's budget stops it, whatever its objects ask.
    let mut steps = Steps(1000);
    let search = search_dirs(&view, &app, &needs, &mut steps);
    for name in &needs.needed {
        locate(&view, &app, name, &search, None, &defaults, &mut steps);
    }
    assert_eq!(steps.0, 0);
}
