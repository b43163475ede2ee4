use super::*;
use canopy_protocol::{BlobId, Entry, Name, ObjectId};
use std::sync::Mutex;

/// Every entry of directory `ino`, as a front end lists it.
fn listing(view: &View, ino: u64) -> Result<Vec<(u64, Kind, Vec<u8>)>, ViewError> {
    let mut out = Vec::new();
    view.list(ino, 0, |child, kind, name| {
        out.push((child, kind, name.to_vec()));
        false
    })?;
    Ok(out)
}

fn file(name: &str, blob: &[u8], mode: u16) -> Entry {
    Entry {
        name: Name::new(name.as_bytes().to_vec()).unwrap(),
        meta: Meta {
            mode,
            ..Default::default()
        },
        kind: EntryKind::File {
            size: blob.len() as u64,
            blob: BlobId::of(blob),
        },
    }
}

fn root_of(entries: Vec<Entry>) -> (TreeId, HashMap<TreeId, Tree>) {
    let tree = Tree::new(entries).unwrap();
    let id = tree.id();
    (id, HashMap::from([(id, tree)]))
}

#[test]
fn a_listing_goes_on_from_where_it_stopped() {
    let view = View::new(Scope::One("web".into()));
    let commit = CommitId(ObjectId::of(b"c"));
    let names = ["a", "b", "c", "d"];
    let (tree, trees) = root_of(names.iter().map(|n| file(n, n.as_bytes(), 0o644)).collect());
    view.install("web", RootVersion { commit, tree }, trees);
    let piece = |from: usize, room: usize| {
        let mut got = Vec::new();
        view.list(ROOT_INO, from, |_, _, name| {
            got.push(String::from_utf8(name.to_vec()).unwrap());
            got.len() == room
        })
        .unwrap();
        got
    };
    assert_eq!(piece(0, 2), ["a", "b"]);
    assert_eq!(piece(2, 2), ["c", "d"]);
    assert_eq!(piece(3, 9), ["d"]);
    assert!(piece(4, 9).is_empty() && piece(usize::MAX, 9).is_empty());
}

#[test]
fn same_file_in_two_roots_is_one_inode() {
    let view = View::new(Scope::All);
    let commit = CommitId(ObjectId::of(b"c"));
    let (t1, trees1) = root_of(vec![file("sh", b"shell", 0o755), file("a", b"x", 0o644)]);
    let (t2, trees2) = root_of(vec![file("sh", b"shell", 0o755), file("a", b"x", 0o600)]);
    view.install("one", RootVersion { commit, tree: t1 }, trees1);
    view.install("two", RootVersion { commit, tree: t2 }, trees2);
    let d1 = view.lookup(ROOT_INO, b"one").unwrap();
    let d2 = view.lookup(ROOT_INO, b"two").unwrap();
    assert_ne!(d1.ino, d2.ino, "directories have their own inodes");
    assert_eq!(
        view.lookup(d1.ino, b"sh").unwrap().ino,
        view.lookup(d2.ino, b"sh").unwrap().ino
    );
    assert_ne!(
        view.lookup(d1.ino, b"a").unwrap().ino,
        view.lookup(d2.ino, b"a").unwrap().ino,
        "mode differs"
    );
    assert_eq!(view.lookup(d1.ino, b"nope"), Err(ViewError::NotFound));
}

#[test]
fn numbers_are_the_rule_s_whichever_process_and_order() {
    let commit = CommitId(ObjectId::of(b"c"));
    let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
    let dir = Entry {
        name: Name::new(b"bin".to_vec()).unwrap(),
        meta: Meta {
            mode: 0o755,
            ..Default::default()
        },
        kind: EntryKind::Dir { tree: sub.id() },
    };
    let (tree, mut trees) = root_of(vec![dir, file("a", b"x", 0o644)]);
    trees.insert(sub.id(), sub);
    let (first, successor) = (View::new(Scope::All), View::new(Scope::All));
    first.install("web", RootVersion { commit, tree }, trees.clone());
    successor.install("web", RootVersion { commit, tree }, trees);
    // The first process walks top-down; the successor lists first, then looks up.
    let web = first.lookup(ROOT_INO, b"web").unwrap();
    let bin = first.lookup(web.ino, b"bin").unwrap();
    let sh = first.lookup(bin.ino, b"sh").unwrap();
    let listed = listing(&successor, ROOT_INO).unwrap();
    assert_eq!(listed, vec![(web.ino, Kind::Dir, b"web".to_vec())]);
    let inner = listing(&successor, web.ino).unwrap();
    assert!(
        inner.contains(&(bin.ino, Kind::Dir, b"bin".to_vec())),
        "{inner:?}"
    );
    assert_eq!(successor.lookup(bin.ino, b"sh").unwrap(), sh);
    assert_eq!(web.ino, inode::dir(b"web", b""));
    assert_eq!(bin.ino, inode::dir(b"web", b"bin"));
    let meta = Meta {
        mode: 0o755,
        ..Default::default()
    };
    let kind = EntryKind::File {
        size: 5,
        blob: BlobId::of(b"shell"),
    };
    assert_eq!(sh.ino, inode::file(&kind, &meta));
    // One root mounted alone: the same numbers below its top.
    let alone = View::new(Scope::One("web".into()));
    let (tree2, trees2) = {
        let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
        let (t, mut all) = root_of(vec![Entry {
            name: Name::new(b"bin".to_vec()).unwrap(),
            meta: meta.clone(),
            kind: EntryKind::Dir { tree: sub.id() },
        }]);
        all.insert(sub.id(), sub);
        (t, all)
    };
    alone.install(
        "web",
        RootVersion {
            commit,
            tree: tree2,
        },
        trees2,
    );
    assert_eq!(alone.lookup(ROOT_INO, b"bin").unwrap().ino, bin.ino);
}

#[test]
fn a_successor_answers_for_inodes_it_never_handed_out() {
    let (c1, c2) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
    let sub = Tree::new(vec![file("sh", b"shell", 0o755)]).unwrap();
    let bin = Entry {
        name: Name::new(b"bin".to_vec()).unwrap(),
        meta: Meta {
            mode: 0o755,
            ..Default::default()
        },
        kind: EntryKind::Dir { tree: sub.id() },
    };
    let (t1, mut trees1) = root_of(vec![bin, file("a", b"old", 0o644)]);
    trees1.insert(sub.id(), sub);
    let (t2, trees2) = root_of(vec![file("a", b"new!", 0o644)]);
    for scope in [Scope::All, Scope::One("web".into())] {
        let first = View::new(scope.clone()).keeping_versions();
        first.install(
            "web",
            RootVersion {
                commit: c1,
                tree: t1,
            },
            trees1.clone(),
        );
        let top = match scope {
            Scope::All => first.lookup(ROOT_INO, b"web").unwrap().ino,
            Scope::One(_) => ROOT_INO,
        };
        let bin = first.lookup(top, b"bin").unwrap();
        let sh = first.lookup(bin.ino, b"sh").unwrap();
        let old_a = first.lookup(top, b"a").unwrap();
        first.install(
            "web",
            RootVersion {
                commit: c2,
                tree: t2,
            },
            trees2.clone(),
        );
        // The successor installs the same history and answers for every number
        // the first handed out, the old version's included, without a lookup.
        let successor = View::new(scope.clone()).keeping_versions();
        for installed in first.history() {
            let trees = if installed.version.tree == t1 {
                trees1.clone()
            } else {
                trees2.clone()
            };
            successor.install(&installed.entry, installed.version, trees);
        }
        successor.index();
        assert_eq!(successor.attr(sh.ino).unwrap(), sh);
        assert_eq!(successor.attr(old_a.ino).unwrap(), old_a);
        assert_eq!(successor.file(old_a.ino).unwrap().1, 3);
        assert_eq!(successor.attr(bin.ino).unwrap().kind, Kind::Dir);
        assert_eq!(successor.attr(top).unwrap().ino, top);
        // The top directory shows the current version.
        assert_eq!(
            successor
                .file(successor.lookup(top, b"a").unwrap().ino)
                .unwrap()
                .1,
            4
        );
        assert_eq!(successor.shown(), vec!["web".to_string()]);
    }
}

#[test]
fn a_colliding_number_moves_the_newer_node_on() {
    let mut inodes = Inodes::default();
    let top: Arc<[u8]> = Arc::from(&b"web"[..]);
    let taken = inode::dir(&top, b"usr");
    let kind = EntryKind::Fifo;
    inodes.nodes.insert(
        taken,
        Node::Leaf {
            kind: kind.clone(),
            meta: Meta::default(),
            identity: canopy_protocol::identity(&kind, &Meta::default()),
        },
    );
    let tree = Tree::default().id();
    let ino = inodes.dir(&top, b"usr".to_vec(), tree, &Meta::default());
    assert_eq!(ino, inode::next(taken));
    assert_eq!(
        inodes.dir(&top, b"usr".to_vec(), tree, &Meta::default()),
        ino
    );
}

#[test]
fn a_removed_entry_is_no_longer_found() {
    let view = View::new(Scope::All);
    let commit = CommitId(ObjectId::of(b"c"));
    let (tree, trees) = root_of(vec![file("f", b"x", 0o644)]);
    view.install("web@c", RootVersion { commit, tree }, trees.clone());
    let dir = view.lookup(ROOT_INO, b"web@c").unwrap();
    let f = view.lookup(dir.ino, b"f").unwrap();
    assert!(view.remove("web@c"));
    assert!(!view.remove("web@c"), "removed once");
    assert_eq!(view.lookup(ROOT_INO, b"web@c"), Err(ViewError::NotFound));
    assert!(listing(&view, ROOT_INO).unwrap().is_empty());
    assert_eq!(view.file(f.ino).unwrap().1, 1, "an open file keeps working");
    view.install("web@c", RootVersion { commit, tree }, trees);
    assert_eq!(view.lookup(ROOT_INO, b"web@c").unwrap().ino, dir.ino);
}

#[test]
fn versions_stay_found_as_name_at_commit() {
    let view = View::new(Scope::All).keeping_versions();
    let (c1, c2) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
    let (t1, trees1) = root_of(vec![file("f", b"old", 0o644)]);
    let (t2, trees2) = root_of(vec![file("f", b"new!", 0o644)]);
    view.install(
        "web",
        RootVersion {
            commit: c1,
            tree: t1,
        },
        trees1,
    );
    let dir = view.lookup(ROOT_INO, b"web").unwrap();
    assert_eq!(view.commit_of(dir.ino), Some(c1));
    view.install(
        "web",
        RootVersion {
            commit: c2,
            tree: t2,
        },
        trees2,
    );
    assert_eq!(view.commit_of(dir.ino), Some(c2));
    let old = view
        .lookup(ROOT_INO, format!("web@{c1}").as_bytes())
        .unwrap();
    assert_eq!(view.commit_of(old.ino), Some(c1));
    let f = view.lookup(old.ino, b"f").unwrap();
    assert_eq!(
        view.file(f.ino).unwrap().1,
        3,
        "the pinned name keeps the old tree"
    );
    let names: Vec<_> = listing(&view, ROOT_INO)
        .unwrap()
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(names, [b"web".to_vec()], "pinned names are not listed");
}

#[test]
fn new_version_is_seen_by_new_lookups() {
    let view = View::new(Scope::One("web".into()));
    let commit = CommitId(ObjectId::of(b"c"));
    let (t1, trees1) = root_of(vec![file("f", b"old", 0o644)]);
    view.install("web", RootVersion { commit, tree: t1 }, trees1);
    let old = view.lookup(ROOT_INO, b"f").unwrap();
    let (t2, trees2) = root_of(vec![file("f", b"new!", 0o644)]);
    view.install("web", RootVersion { commit, tree: t2 }, trees2);
    let new = view.lookup(ROOT_INO, b"f").unwrap();
    assert_ne!(old.ino, new.ino);
    assert_eq!(
        view.file(old.ino).unwrap().1,
        3,
        "the old inode still reads the old content"
    );
    assert_eq!(view.file(new.ino).unwrap().1, 4);
}

fn dir(name: &str, entries: Vec<Entry>, trees: &mut HashMap<TreeId, Tree>) -> Entry {
    let tree = Tree::new(entries).unwrap();
    let id = tree.id();
    trees.insert(id, tree);
    Entry {
        name: Name::new(name.as_bytes().to_vec()).unwrap(),
        meta: Meta {
            mode: 0o755,
            ..Default::default()
        },
        kind: EntryKind::Dir { tree: id },
    }
}

/// A root with `bin/sh`, `etc/a` (`a`'s content given), `etc/gone` (a directory if
/// `gone_is_dir`, else a file) and `same`.
fn version(a: &[u8], gone_is_dir: bool, extra: &[&str]) -> (TreeId, HashMap<TreeId, Tree>) {
    let mut trees = HashMap::new();
    let bin = dir("bin", vec![file("sh", b"shell", 0o755)], &mut trees);
    let gone = if gone_is_dir {
        dir("gone", vec![file("x", b"x", 0o644)], &mut trees)
    } else {
        file("gone", b"a file now", 0o644)
    };
    let etc = dir("etc", vec![file("a", a, 0o644), gone], &mut trees);
    let mut top = vec![bin, etc, file("same", b"same", 0o644)];
    top.extend(extra.iter().map(|n| file(n, n.as_bytes(), 0o644)));
    let tree = Tree::new(top).unwrap();
    let id = tree.id();
    trees.insert(id, tree);
    (id, trees)
}

fn watched(view: &View) -> Arc<Mutex<Vec<Stale>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let told = seen.clone();
    view.watch(move |s| told.lock().unwrap().push(s.clone()));
    seen
}

#[test]
fn a_switch_updates_known_directories_and_says_what_changed() {
    let (c1, c2) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
    let view = View::new(Scope::One("web".into()));
    let (t1, trees1) = version(b"one", true, &["old"]);
    view.install(
        "web",
        RootVersion {
            commit: c1,
            tree: t1,
        },
        trees1,
    );
    let etc = view.lookup(ROOT_INO, b"etc").unwrap().ino;
    let bin = view.lookup(ROOT_INO, b"bin").unwrap().ino;
    let gone = view.lookup(etc, b"gone").unwrap().ino;
    let a = view.lookup(etc, b"a").unwrap().ino;
    let seen = watched(&view);
    let top = |names: &[&str]| -> Vec<(u64, Vec<u8>)> {
        names
            .iter()
            .map(|n| (ROOT_INO, n.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Stale {
            // The empty stand-in shown before: the kernel may have kept their absence.
            entries: top(&["bin", "etc", "old", "same"]),
            dirs: vec![ROOT_INO],
            leaves: Vec::new(),
        }],
        "what changed before anyone watched is told at once"
    );
    // Absent names may be kept by the kernel only where a switch tells when they
    // appear: in a root's directories.
    assert!(view.absent(ROOT_INO, b"new"));
    assert!(view.absent(etc, b"new"));
    assert!(!view.absent(etc, b"a"), "present");
    assert!(!view.absent(gone + 1_000_000, b"x"), "unknown directory");
    assert!(
        !view.absent(view.lookup(ROOT_INO, b"same").unwrap().ino, b"x"),
        "not a directory"
    );
    seen.lock().unwrap().clear();

    let (t2, trees2) = version(b"two!", false, &["new"]);
    view.install(
        "web",
        RootVersion {
            commit: c2,
            tree: t2,
        },
        trees2,
    );
    let told = seen.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:?}");
    let mut entries = told[0].entries.clone();
    entries.sort();
    let mut expected = vec![
        (ROOT_INO, b"old".to_vec()),
        (ROOT_INO, b"new".to_vec()),
        (etc, b"a".to_vec()),
        (etc, b"gone".to_vec()),
    ];
    expected.sort();
    assert_eq!(
        entries, expected,
        "changed, removed and added names are told, unchanged ones are not"
    );
    let mut dirs = told[0].dirs.clone();
    dirs.sort();
    let mut expected = vec![ROOT_INO, etc];
    expected.sort();
    assert_eq!(
        dirs, expected,
        "bin/ did not change; etc/gone is no directory now"
    );
    assert_eq!(
        told[0].leaves,
        [a],
        "the file etc/a stood for, the only leaf changed that was looked up"
    );
    // etc/ shows version 2 without being looked up again.
    let listed: Vec<_> = listing(&view, etc)
        .unwrap()
        .into_iter()
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(
        listed,
        [(Kind::File, b"a".to_vec()), (Kind::File, b"gone".to_vec())]
    );
    assert_eq!(view.file(view.lookup(etc, b"a").unwrap().ino).unwrap().1, 4);
    assert!(listing(&view, bin).is_ok());
    // Whoever is still in the old etc/gone/ keeps seeing it.
    assert_eq!(listing(&view, gone).unwrap().len(), 1);

    // The same version again: nothing to forget.
    view.install(
        "web",
        RootVersion {
            commit: c2,
            tree: t2,
        },
        version(b"two!", false, &["new"]).1,
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn roots_coming_and_going_change_the_top_listing() {
    let view = View::new(Scope::All);
    let seen = watched(&view);
    let commit = CommitId(ObjectId::of(b"c"));
    let (tree, trees) = root_of(vec![file("f", b"x", 0o644)]);
    view.install("web", RootVersion { commit, tree }, trees);
    let web = view.lookup(ROOT_INO, b"web").unwrap().ino;
    assert!(
        !view.absent(ROOT_INO, b"other"),
        "roots appear without a switch: their absence is not kept"
    );
    assert!(view.remove("web"));
    let (t2, trees2) = root_of(vec![file("f", b"y!", 0o644)]);
    view.install("web", RootVersion { commit, tree: t2 }, trees2);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            Stale {
                entries: Vec::new(),
                dirs: vec![ROOT_INO],
                leaves: Vec::new(),
            },
            Stale {
                entries: vec![(ROOT_INO, b"web".to_vec())],
                dirs: vec![ROOT_INO],
                leaves: Vec::new(),
            },
            Stale {
                entries: vec![(web, b"f".to_vec())],
                dirs: vec![web, ROOT_INO],
                leaves: Vec::new(),
            },
        ]
    );
}
