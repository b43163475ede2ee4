//! The README's walk-through, run for real: initialise a store, import Debian 12's bash
//! and coreutils with their dependencies, assemble a root, inspect it, check it out,
//! `chroot` into it, and prove the checkout is exactly what `dpkg-deb -x` of the same
//! packages gives — every path's type, mode (with setuid, setgid and sticky bits), owner,
//! symlink target, device numbers, xattrs and content. Then fsck, gc, a second version
//! of the root and a rollback.
//!
//! The other tests walk the corners with small packages built on the spot: conflicts
//! between packages, special files in a .deb, devices, fifos and xattrs in a tar,
//! importing a plain directory, and the forms of a package spec.

use crate::debs::{self, ROOT_PACKAGES};
use crate::util::{
    self, Canopy, Snapshot, assert_same_tree, cmd, count_tree, is_hex64, parse_import, simple_deb,
    walk, write_control, write_file,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};

/// The command the brief of the project asks to work in an assembled root.
const CHROOT_SCRIPT: &str = "echo ok && ls / && id -u";

/// Runs [`CHROOT_SCRIPT`] in `root` and checks what it prints.
fn assert_chroot_works(root: &Path) {
    let out = cmd("chroot")
        .arg(root)
        .args(["/bin/bash", "-c", CHROOT_SCRIPT])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"ok"), "chroot printed:\n{out}");
    assert_eq!(lines.last(), Some(&"0"), "chroot printed:\n{out}");
    for dir in ["bin", "etc", "lib", "lib64", "usr", "var"] {
        assert!(
            lines.contains(&dir),
            "`ls /` in the chroot lacks {dir}:\n{out}"
        );
    }
}

/// Checks out `root` into `dir` (which must not exist) with `--json` and checks the
/// document against the tree that landed on disk.
fn checkout(canopy: &Canopy, root: &str, dir: &Path, extra: &[&str]) -> Value {
    let out = canopy
        .cmd(["checkout", root])
        .arg(dir)
        .args(extra)
        .arg("--json")
        .stdout();
    let summary: Value = serde_json::from_str(&out).unwrap();
    let n = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {out}"))
    };
    let counts = count_tree(dir);
    assert_eq!(n("files"), counts.files, "{out}");
    assert_eq!(n("symlinks"), counts.symlinks, "{out}");
    assert_eq!(n("special"), counts.special, "{out}");
    assert!(
        n("dirs") == counts.dirs || n("dirs") == counts.dirs + 1,
        "summary says {} dirs, the checkout has {} below its top:\n{out}",
        n("dirs"),
        counts.dirs
    );
    assert_eq!(n("linked") + n("copied"), n("files"), "{out}");
    assert_eq!(summary["dir"], dir.to_str().unwrap(), "{out}");
    assert!(is_hex64(summary["commit"].as_str().unwrap()), "{out}");
    if !extra.contains(&"--hardlink") {
        assert_eq!(n("linked"), 0, "a plain checkout hard-linked files:\n{out}");
    }
    summary
}

/// `canopy assemble ARGS… --json`: the document, checked for the fields every test
/// reads.
fn assemble(canopy: &Canopy, args: &[&str]) -> Value {
    let mut command = canopy.cmd(["assemble"]);
    let done: Value = serde_json::from_str(&command.args(args).arg("--json").stdout()).unwrap();
    for key in ["commit", "tree"] {
        assert!(is_hex64(done[key].as_str().unwrap_or_default()), "{done}");
    }
    done
}

/// (device, inode) of every file under `dir` of a store (`objects`, `links`).
fn store_inodes(store: &Path, dir: &str) -> BTreeSet<(u64, u64)> {
    let objects = store.join(dir);
    if !objects.exists() {
        return BTreeSet::new();
    }
    walk(&objects)
        .into_iter()
        .map(|rel| fs::symlink_metadata(objects.join(rel)).unwrap())
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// Regular files of `dir` that are the very inode of a file under `within` of `store`:
/// an object (`objects`), or a link-farm file (`links`).
fn files_sharing(dir: &Path, store: &Path, within: &str) -> u64 {
    let objects = store_inodes(store, within);
    let mut shared = 0;
    for rel in walk(dir) {
        let meta = fs::symlink_metadata(dir.join(&rel)).unwrap();
        if meta.is_file() && objects.contains(&(meta.dev(), meta.ino())) {
            assert!(
                meta.nlink() > 1,
                "/{} shares an object's inode",
                rel.display()
            );
            shared += 1;
        }
    }
    shared
}

fn count_files(dir: &Path) -> u64 {
    if dir.exists() {
        count_tree(dir).files
    } else {
        0
    }
}

fn sorted(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().collect();
    v.sort();
    v
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of strings, got {value}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The JSON shape `roots log --json` promises for a package of a commit.
fn package_of(deb: &debs::Deb) -> Value {
    json!({
        "name": deb.name,
        "version": deb.version,
        "arch": deb.arch,
        "archive": util::sha256_file(&deb.path),
    })
}

#[test]
fn walkthrough_debian_root() {
    let debs = debs::root_debs();
    let paths: Vec<PathBuf> = debs.iter().map(|d| d.path.clone()).collect();
    let canopy = Canopy::new("walkthrough");
    let store = canopy.store().to_path_buf();

    // canopy init: a store and a signing key; a second init changes nothing.
    let out = canopy.stdout(["init"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("initialised store at {}", store.display())
    );
    let key = lines[1]
        .strip_prefix("public key: ")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(is_hex64(key), "{out}");
    assert_eq!(canopy.stdout(["key", "show"]), format!("{key}\n"));
    let out = canopy.stdout(["init"]);
    assert_eq!(
        out,
        format!(
            "store at {} already initialised\npublic key: {key}\n",
            store.display()
        )
    );

    // canopy import deb: one line per package.
    let out = canopy.cmd(["import", "deb"]).args(&paths).stdout();
    let imported = parse_import(&out);
    assert_eq!(imported.len(), debs.len(), "{out}");
    for deb in debs {
        let line = imported
            .iter()
            .find(|i| i.name == deb.name)
            .unwrap_or_else(|| panic!("no line for {}:\n{out}", deb.name));
        assert!(line.new, "{out}");
        assert_eq!(
            (&line.version, &line.arch),
            (&deb.version, &deb.arch),
            "{out}"
        );
        assert!(
            line.entries > 0 && line.new_objects > 0 && line.new_bytes > 0,
            "{out}"
        );
    }
    let listed = canopy.json(["packages", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), debs.len(), "{listed:?}");
    for deb in debs {
        let p = listed
            .iter()
            .find(|p| p["name"] == deb.name.as_str())
            .unwrap_or_else(|| panic!("packages list lacks {}: {listed:?}", deb.name));
        assert_eq!(p["version"], deb.version.as_str(), "{p}");
        assert_eq!(p["arch"], deb.arch.as_str(), "{p}");
        assert_eq!(p["kind"], "deb", "{p}");
        assert_eq!(p["archive"], util::sha256_file(&deb.path), "{p}");
        for id in ["tree", "id"] {
            assert!(is_hex64(p[id].as_str().unwrap_or_default()), "{p}");
        }
        assert!(p["imported_at"].is_i64(), "{p}");
        strings(&p["scripts"]);
    }

    // Importing again skips every package and writes nothing.
    let before = Snapshot::of(&store);
    let out = canopy
        .cmd(["import", "deb"])
        .args(&paths)
        .arg("--json")
        .stdout();
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["failed"], json!([]), "{out}");
    let again = again["packages"].as_array().unwrap();
    assert_eq!(again.len(), debs.len(), "{out}");
    for deb in debs {
        assert!(
            again.iter().any(|i| i["outcome"] == "skipped"
                && i["name"] == deb.name.as_str()
                && i["version"] == deb.version.as_str()
                && i["arch"] == deb.arch.as_str()
                && i["archive"] == util::sha256_file(&deb.path)),
            "{} is not reported skipped:\n{out}",
            deb.name
        );
    }
    before.assert_unchanged("importing the same packages again");

    // canopy assemble: a root named web from all fourteen packages.
    let subject = "debian 12: bash and coreutils";
    let mut args = vec!["web"];
    args.extend(ROOT_PACKAGES);
    args.extend(["-m", subject]);
    let first = assemble(&canopy, &args);
    assert_eq!(first["root"], "web");
    assert_eq!(first["written"], true, "{first}");
    assert_eq!(first["parent"], Value::Null, "{first}");
    assert_eq!(first["generation"], 1, "{first}");
    assert_eq!(
        first["packages"].as_array().map(Vec::len),
        Some(debs.len()),
        "{first}"
    );
    assert!(first["new_objects"].as_u64() > Some(0), "{first}");
    let c1 = first["commit"].as_str().unwrap().to_string();

    let roots = canopy.json(["roots", "list"]);
    assert_eq!(roots.as_array().map(Vec::len), Some(1), "{roots}");
    let web = &roots[0];
    assert_eq!(web["name"], "web", "{roots}");
    assert_eq!(web["commit"], c1.as_str(), "{roots}");
    assert_eq!(web["subject"], subject, "{roots}");
    assert_eq!(web["packages"], debs.len(), "{roots}");
    assert!(web["timestamp"].is_i64(), "{roots}");

    let log = canopy.json(["roots", "log", "web"]);
    assert_eq!(log.as_array().map(Vec::len), Some(1), "{log}");
    let entry = &log[0];
    assert_eq!(entry["commit"], c1.as_str(), "{log}");
    assert_eq!(entry["parent"], Value::Null, "{log}");
    assert_eq!(entry["subject"], subject, "{log}");
    assert!(entry["timestamp"].is_i64(), "{log}");
    assert_eq!(
        sorted(strings(&entry["requested"])),
        sorted(ROOT_PACKAGES.iter().map(|s| s.to_string())),
        "{log}"
    );
    let mut packages = entry["packages"].as_array().cloned().unwrap_or_default();
    packages.sort_by_key(|p| p["name"].as_str().map(String::from));
    // Which maintainer scripts each carried is checked by the repository tests.
    for p in &mut packages {
        p.as_object_mut().unwrap().remove("scripts");
    }
    let expected: Vec<Value> = debs.iter().map(package_of).collect();
    assert_eq!(packages, expected, "{log}");

    // canopy checkout: a plain directory, identical to dpkg-deb -x of the packages.
    let reference = canopy.path("reference");
    util::dpkg_extract(&paths, &reference);
    let root = canopy.path("root");
    let summary = checkout(&canopy, "web", &root, &[]);
    assert_eq!(summary["commit"], c1.as_str(), "{summary}");
    assert_same_tree(&reference, &root);
    assert!(
        fs::symlink_metadata(root.join("lib64/ld-linux-x86-64.so.2"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "Debian 12 is not usr-merged: /lib64/ld-linux-x86-64.so.2 is a symlink"
    );
    assert_chroot_works(&root);

    // The same with --hardlink: files whose metadata matches the store's object file
    // are that very file.
    let linked_root = canopy.path("root-hardlinked");
    let summary = checkout(&canopy, "web", &linked_root, &["--hardlink"]);
    assert!(
        summary["linked"].as_u64() > Some(0),
        "nothing was hard-linked: {summary}"
    );
    assert_same_tree(&reference, &linked_root);
    let linked = |key: &str| summary[key].as_u64().unwrap();
    assert_eq!(
        files_sharing(&linked_root, &store, "objects"),
        linked("linked") - linked("farm_linked"),
        "files sharing an inode with an object vs the summary's hard-linked count"
    );
    assert_eq!(
        files_sharing(&linked_root, &store, "links"),
        linked("farm_linked"),
        "files sharing an inode with the link farm vs the summary"
    );
    assert!(
        linked("farm_linked") > 0,
        "executables go through the farm: {summary}"
    );
    assert_eq!(
        linked("linked"),
        linked("files"),
        "every file is hard-linked: {summary}"
    );
    assert_chroot_works(&linked_root);

    // A checkout only goes into a new or empty directory.
    let occupied = canopy.mkdir("occupied");
    fs::write(occupied.join("mine"), "keep me").unwrap();
    canopy.cmd(["checkout", "web"]).arg(&occupied).failure(1);
    assert_eq!(
        fs::read_to_string(occupied.join("mine")).unwrap(),
        "keep me"
    );
    assert_eq!(walk(&occupied).len(), 1);

    // --subtree usr: a root whose top is /usr, for `-v NAME:/usr:ro`.
    let mut args = vec!["web-usr"];
    args.extend(ROOT_PACKAGES);
    args.extend(["--subtree", "usr"]);
    assert_eq!(assemble(&canopy, &args)["root"], "web-usr");
    let usr = canopy.path("usr");
    checkout(&canopy, "web-usr", &usr, &["--hardlink"]);
    assert!(usr.join("bin").is_dir() && usr.join("bin/id").is_file());
    assert!(!usr.join("usr").exists());
    assert_same_tree(&reference.join("usr"), &usr);

    // fsck is clean and gc finds nothing to remove.
    canopy.fsck_clean();
    let report = canopy.fsck_report();
    assert_eq!(
        report["objects"],
        count_files(&store.join("objects")),
        "{report}"
    );
    assert_eq!(report["refs"], count_files(&store.join("refs")), "{report}");
    assert_eq!(report["unreachable"], 0, "{report}");
    let gc = canopy.json(["gc"]);
    assert_eq!(
        (&gc["removed"], &gc["freed"]),
        (&json!(0), &json!(0)),
        "gc found something to remove in a store where everything is referenced: {gc}"
    );

    // A second version of web, from fewer packages (libc6 and what it depends on).
    let fewer = ["gcc-12-base", "libc6", "libgcc-s1"];
    let mut args = vec!["web"];
    args.extend(fewer);
    let second = assemble(&canopy, &args);
    assert_eq!(
        second["packages"].as_array().map(Vec::len),
        Some(3),
        "{second}"
    );
    assert_eq!(second["parent"], c1.as_str(), "{second}");
    assert_eq!(second["previous"], c1.as_str(), "{second}");
    assert_eq!(second["generation"], 2, "{second}");
    let c2 = second["commit"].as_str().unwrap().to_string();
    assert_ne!(c1, c2);
    let log = canopy.json(["roots", "log", "web"]);
    let commits = |log: &Value| -> Vec<String> {
        log.as_array()
            .unwrap()
            .iter()
            .map(|e| e["commit"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(commits(&log), [c2.as_str(), c1.as_str()], "{log}");
    assert_eq!(log[0]["parent"], c1.as_str(), "{log}");
    assert_eq!(
        log[0]["packages"].as_array().map(Vec::len),
        Some(3),
        "{log}"
    );
    let roots = canopy.json(["roots", "list"]);
    let web = roots
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web");
    assert_eq!(web.map(|r| &r["commit"]), Some(&json!(c2)), "{roots}");
    assert_eq!(web.map(|r| &r["packages"]), Some(&json!(3)), "{roots}");
    // Assembling the same again writes nothing.
    let again = assemble(&canopy, &args);
    assert_eq!(
        (&again["written"], &again["commit"]),
        (&json!(false), &json!(c2)),
        "{again}"
    );
    // An older commit can still be checked out by id, or as ROOT@PREFIX.
    let old = canopy.path("old");
    let summary = checkout(&canopy, "web", &old, &["--commit", &c1, "--hardlink"]);
    assert_eq!(summary["commit"], c1.as_str(), "{summary}");
    assert!(old.join("bin/bash").is_file());
    let old_again = canopy.path("nested/dirs/old");
    let summary = checkout(&canopy, &format!("web@{}", &c1[..10]), &old_again, &[]);
    assert_eq!(summary["commit"], c1.as_str(), "{summary}");
    assert!(old_again.join("bin/bash").is_file());

    // Rollback is a new commit with the parent's tree: history grows, nothing is lost.
    let tree =
        |commit: &str| canopy.json(["roots", "show", &format!("web@{commit}")])["tree"].clone();
    let rb = canopy.json(["roots", "rollback", "web"]);
    assert_eq!(rb["restored"], c1.as_str(), "{rb}");
    assert_eq!(rb["previous"], c2.as_str(), "{rb}");
    assert_eq!(rb["written"], true, "{rb}");
    assert_eq!(rb["generation"], 3, "{rb}");
    let c3 = rb["commit"].as_str().unwrap().to_string();
    assert_eq!(canopy.current("web"), c3);
    assert_eq!(tree(&c3), tree(&c1));
    let log = canopy.json(["roots", "log", "web"]);
    assert_eq!(
        commits(&log),
        [c3.as_str(), c2.as_str(), c1.as_str()],
        "{log}"
    );
    assert_eq!(
        log[0]["packages"].as_array().map(Vec::len),
        Some(debs.len()),
        "{log}"
    );
    // Rolling back again goes further back: before the first commit there is nothing.
    let refs = Snapshot::of(&store.join("refs"));
    canopy.fails(["roots", "rollback", "web"]);
    refs.assert_unchanged("a failed rollback");
    // Forward again, to the commit rolled back from, by a prefix of its id.
    let fwd = canopy.json(["roots", "rollback", "web", &c2[..12]]);
    assert_eq!(fwd["restored"], c2.as_str(), "{fwd}");
    let c4 = fwd["commit"].as_str().unwrap().to_string();
    assert_eq!(tree(&c4), tree(&c2));
    let again = canopy.json(["roots", "rollback", "web", &c2[..12]]);
    assert_eq!(
        (&again["written"], &again["commit"]),
        (&json!(false), &json!(c4)),
        "{again}"
    );
    let back = canopy.json(["roots", "rollback", "web", &c1[..12]]);
    assert_eq!(back["restored"], c1.as_str(), "{back}");
    assert_eq!(tree(&canopy.current("web")), tree(&c1));

    // gc --dry-run changes nothing; gc keeps everything web still needs.
    let before = Snapshot::of(&store);
    let out = canopy.stdout(["gc", "--dry-run"]);
    assert!(
        out.starts_with("gc: would remove ") && out.contains(" would free "),
        "{out}"
    );
    before.assert_unchanged("gc --dry-run");
    let dry = canopy.json(["gc", "--dry-run"]);
    before.assert_unchanged("gc --dry-run --json");
    let gc = canopy.json(["gc"]);
    assert_eq!(
        (&gc["removed"], &gc["freed"]),
        (&dry["removed"], &dry["freed"]),
        "{gc} vs {dry}"
    );
    // The rolled-back-from commit stays in history: gc keeps it, it still checks out.
    let kept = canopy.path("kept");
    checkout(&canopy, &format!("web@{}", &c2[..12]), &kept, &[]);
    canopy.fsck_clean();
    let after_gc = canopy.path("after-gc");
    checkout(&canopy, "web", &after_gc, &["--hardlink"]);
    assert_same_tree(&reference, &after_gc);
    // After the gc, forward again by full id: nothing a rollback may need was collected.
    let fwd = canopy.json(["roots", "rollback", "web", &c2]);
    assert_eq!(fwd["restored"], c2.as_str(), "{fwd}");
    assert_eq!(tree(&canopy.current("web")), tree(&c2));
    canopy.fsck_clean();
}

#[test]
fn assemble_refuses_conflicting_files_unless_allowed() {
    let canopy = Canopy::init("conflict");
    let dir = canopy.mkdir("debs");
    let a = simple_deb(
        &dir,
        "conflict-a",
        "1.0",
        &[
            ("etc/clash.conf", b"from a\n"),
            ("usr/share/a/only-a", b"a\n"),
        ],
    );
    let b = simple_deb(
        &dir,
        "conflict-b",
        "2.0",
        &[("etc/clash.conf", b"from b\n")],
    );
    canopy.cmd(["import", "deb"]).arg(&a).arg(&b).stdout();

    let refs = Snapshot::of(&canopy.store().join("refs"));
    let out = canopy.fails(["assemble", "clash", "conflict-a", "conflict-b"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "error: ",
        "conflict at /etc/clash.conf",
        "conflict-a 1.0",
        "conflict-b 2.0",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    refs.assert_unchanged("a refused assemble");
    assert_eq!(canopy.json(["roots", "list"]), json!([]));

    // With --allow-overwrite the later package wins, whichever order they come in.
    for (order, winner) in [
        (["conflict-a", "conflict-b"], "from b\n"),
        (["conflict-b", "conflict-a"], "from a\n"),
    ] {
        let name = format!("clash-{}", &order[1]);
        canopy
            .cmd(["assemble", &name])
            .args(order)
            .arg("--allow-overwrite")
            .stdout();
        let dir = canopy.path(&name);
        checkout(&canopy, &name, &dir, &[]);
        assert_eq!(
            fs::read_to_string(dir.join("etc/clash.conf")).unwrap(),
            winner
        );
        assert_eq!(
            fs::read_to_string(dir.join("usr/share/a/only-a")).unwrap(),
            "a\n"
        );
    }
}

/// Builds the tree of the `specials` package: setuid, setgid and sticky bits, odd
/// owners, a hard link, symlinks, a fifo and devices.
fn specials_tree(tree: &Path) {
    write_control(tree, "specials", "1.0", "all");
    let dir = |rel: &str, mode: u32, owner: (u32, u32)| {
        let path = tree.join(rel);
        fs::create_dir_all(&path).unwrap();
        chown(&path, Some(owner.0), Some(owner.1)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let file = |rel: &str, content: &[u8], mode: u32, owner: (u32, u32)| {
        let path = tree.join(rel);
        write_file(&path, content, 0o600);
        chown(&path, Some(owner.0), Some(owner.1)).unwrap();
        // After chown, which clears setuid and setgid.
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    fs::set_permissions(tree, fs::Permissions::from_mode(0o755)).unwrap();
    dir("usr", 0o755, (0, 0));
    dir("usr/bin", 0o755, (0, 0));
    file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755, (0, 0));
    fs::hard_link(
        tree.join("usr/bin/tool"),
        tree.join("usr/bin/tool-hardlink"),
    )
    .unwrap();
    symlink("tool", tree.join("usr/bin/tool-link")).unwrap();
    symlink("/usr/bin/tool", tree.join("usr/bin/tool-abs")).unwrap();
    file("usr/bin/sgid", b"#!/bin/sh\n", 0o2755, (0, 42));
    file("usr/bin/plain", b"plain\n", 0o644, (0, 0));
    file("usr/bin/empty", b"", 0o644, (0, 0));
    dir("srv", 0o1777, (0, 0));
    file("srv/owned", b"secret\n", 0o600, (1234, 5678));
    dir("srv/group-dir", 0o2775, (0, 50));
    dir("var/empty", 0o700, (0, 0));
    for (rel, kind, major, minor) in [("srv/null", "c", "1", "3"), ("srv/loop", "b", "7", "0")] {
        cmd("mknod")
            .args(["-m", "0660"])
            .arg(tree.join(rel))
            .args([kind, major, minor])
            .success();
    }
    cmd("mkfifo")
        .args(["-m", "0640"])
        .arg(tree.join("srv/fifo"))
        .success();
}

/// What a checkout of `specials` must hold, checked one by one.
fn assert_specials_deb(root: &Path) {
    let meta = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap();
    assert_eq!(meta("usr/bin/tool").mode() & 0o7777, 0o4755);
    assert_eq!(meta("usr/bin/tool-hardlink").mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::read(root.join("usr/bin/tool-hardlink")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/tool-link")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/tool-abs")).unwrap(),
        Path::new("/usr/bin/tool")
    );
    assert_eq!(
        (
            meta("usr/bin/sgid").mode() & 0o7777,
            meta("usr/bin/sgid").gid()
        ),
        (0o2755, 42)
    );
    assert_eq!(meta("srv").mode() & 0o7777, 0o1777);
    assert_eq!(
        (meta("srv/owned").uid(), meta("srv/owned").gid()),
        (1234, 5678)
    );
    assert_eq!(meta("srv/group-dir").mode() & 0o7777, 0o2775);
    assert_eq!(meta("srv/fifo").mode() & 0o170777, libc::S_IFIFO | 0o640);
    let null = meta("srv/null");
    assert_eq!(null.mode() & 0o170000, libc::S_IFCHR);
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    let lo = meta("srv/loop");
    assert_eq!(lo.mode() & 0o170000, libc::S_IFBLK);
    assert_eq!((libc::major(lo.rdev()), libc::minor(lo.rdev())), (7, 0));
}

#[test]
fn deb_with_special_files_round_trips() {
    let canopy = Canopy::init("specials-deb");
    let tree = canopy.mkdir("specials.tree");
    specials_tree(&tree);
    let deb = util::dpkg_build(&tree, &canopy.path("specials.deb"));
    let reference = canopy.path("reference");
    util::dpkg_extract(&[&deb], &reference);
    assert_specials_deb(&reference);

    let out = canopy.cmd(["import", "deb"]).arg(&deb).stdout();
    let line = &parse_import(&out)[0];
    assert_eq!(
        (line.name.as_str(), line.version.as_str()),
        ("specials", "1.0")
    );
    canopy.stdout(["assemble", "specials", "specials"]);
    let root = canopy.path("root");
    let summary = checkout(&canopy, "specials", &root, &[]);
    assert_eq!(summary["special"], 3, "{summary}");
    assert_specials_deb(&root);
    assert_same_tree(&reference, &root);

    // Where the object's mode or owner differ (setuid, other owners), the file is a
    // hard link to the link farm's copy with that mode and owner; the object keeps its.
    let linked = canopy.path("root-hardlinked");
    let summary = checkout(&canopy, "specials", &linked, &["--hardlink"]);
    assert!(
        summary["linked"] == summary["files"] && summary["farm_linked"].as_u64() > Some(0),
        "{summary}"
    );
    assert_same_tree(&reference, &linked);
    assert_eq!(
        files_sharing(&linked, canopy.store(), "objects")
            + files_sharing(&linked, canopy.store(), "links"),
        summary["linked"].as_u64().unwrap()
    );
    canopy.fsck_clean();
}

/// `security.capability` v2: cap_net_bind_service, permitted and effective.
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A tar (written with the `tar` crate) holding devices, a fifo, a sticky directory and
/// a file with a user xattr and a file capability given as PAX `SCHILY.xattr.*` records.
fn specials_tar() -> Vec<u8> {
    use tar::{EntryType, Header};
    let mut builder = tar::Builder::new(Vec::new());
    let mut add =
        |path: &str, kind: EntryType, mode: u32, gid: u64, data: &[u8], dev: (u32, u32)| {
            let mut h = Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(gid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
            if kind == EntryType::Symlink {
                h.set_link_name("ping").unwrap();
            }
            h.set_cksum();
            builder.append(&h, data).unwrap();
        };
    let none = (0, 0);
    add("./", EntryType::Directory, 0o755, 0, b"", none);
    add("dev/", EntryType::Directory, 0o755, 0, b"", none);
    add("dev/null", EntryType::Char, 0o666, 0, b"", (1, 3));
    add("dev/loop0", EntryType::Block, 0o660, 6, b"", (7, 0));
    add("run/", EntryType::Directory, 0o755, 0, b"", none);
    add("run/initctl", EntryType::Fifo, 0o600, 0, b"", none);
    add("bin/", EntryType::Directory, 0o755, 0, b"", none);
    let pax = crate::corpus::pax_records(&[
        ("SCHILY.xattr.user.test", b"hello"),
        ("SCHILY.xattr.security.capability", &CAPABILITY),
    ]);
    add("PaxHeaders/ping", EntryType::XHeader, 0o644, 0, &pax, none);
    add(
        "bin/ping",
        EntryType::Regular,
        0o755,
        0,
        b"\x7fELF pretend\n",
        none,
    );
    add("bin/sh", EntryType::Symlink, 0o777, 0, b"", none);
    add("etc/", EntryType::Directory, 0o755, 0, b"", none);
    add(
        "etc/shadow",
        EntryType::Regular,
        0o640,
        42,
        b"root:*:1::::::\n",
        none,
    );
    add("tmp/", EntryType::Directory, 0o1777, 0, b"", none);
    builder.into_inner().unwrap()
}

/// What a checkout of the specials tar must hold, checked one by one.
fn assert_specials_tar(root: &Path) {
    let meta = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap();
    let null = meta("dev/null");
    assert_eq!(null.mode() & 0o170777, libc::S_IFCHR | 0o666);
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    let lo = meta("dev/loop0");
    assert_eq!(lo.mode() & 0o170777, libc::S_IFBLK | 0o660);
    assert_eq!(
        (libc::major(lo.rdev()), libc::minor(lo.rdev()), lo.gid()),
        (7, 0, 6)
    );
    assert_eq!(meta("run/initctl").mode() & 0o170777, libc::S_IFIFO | 0o600);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(
        (meta("etc/shadow").mode() & 0o7777, meta("etc/shadow").gid()),
        (0o640, 42)
    );
    let ping = root.join("bin/ping");
    assert_eq!(
        util::xattr(&ping, b"user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        util::xattr(&ping, b"security.capability").as_deref(),
        Some(&CAPABILITY[..]),
        "the file capability of bin/ping did not survive (set it after chown and chmod)"
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("ping")
    );
}

/// GNU tar's extraction of the specials tar, the reference for canopy's checkout.
fn extract_specials_reference(canopy: &Canopy, tar: &Path) -> PathBuf {
    let reference = canopy.mkdir("reference");
    cmd("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(&reference)
        .success();
    assert_specials_tar(&reference);
    reference
}

#[test]
fn tar_with_devices_fifos_and_xattrs_round_trips() {
    let canopy = Canopy::init("specials-tar");
    let tar = canopy.path("specials.tar");
    fs::write(&tar, specials_tar()).unwrap();
    let reference = extract_specials_reference(&canopy, &tar);

    let out = canopy
        .cmd(["import", "tar"])
        .arg(&tar)
        .args(["--name", "specials", "--version", "1.0"])
        .stdout();
    let line = &parse_import(&out)[0];
    assert!(line.new, "{out}");
    assert_eq!(
        (line.name.as_str(), line.version.as_str()),
        ("specials", "1.0")
    );
    canopy.stdout(["assemble", "specials", "specials"]);
    let root = canopy.path("root");
    let summary = checkout(&canopy, "specials", &root, &[]);
    assert_eq!(summary["special"], 3, "{summary}");
    assert_specials_tar(&root);
    assert_same_tree(&reference, &root);
    // A file with xattrs is never the store's bare object file.
    let linked = canopy.path("root-hardlinked");
    checkout(&canopy, "specials", &linked, &["--hardlink"]);
    assert_specials_tar(&linked);
    assert_same_tree(&reference, &linked);
}

/// The reference side of the special-file tests, which needs no canopy: proves the
/// archives and the one-by-one checks agree with dpkg-deb and GNU tar.
#[test]
fn special_file_references_hold_what_the_tests_check() {
    let canopy = Canopy::new("specials-reference");
    let tree = canopy.mkdir("specials.tree");
    specials_tree(&tree);
    let deb = util::dpkg_build(&tree, &canopy.path("specials.deb"));
    let reference = canopy.path("deb-reference");
    util::dpkg_extract(&[&deb], &reference);
    assert_specials_deb(&reference);
    let tar = canopy.path("specials.tar");
    fs::write(&tar, specials_tar()).unwrap();
    let reference = extract_specials_reference(&canopy, &tar);
    let copy = canopy.mkdir("copy");
    cmd("cp")
        .arg("-a")
        .arg(format!("{}/.", reference.display()))
        .arg(&copy)
        .success();
    assert_same_tree(&reference, &copy);
    fs::set_permissions(copy.join("tmp"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(util::tree_differences(&reference, &copy).len(), 1);
}

#[test]
fn import_dir_round_trips() {
    let canopy = Canopy::init("import-dir");
    let src = canopy.mkdir("src");
    write_file(&src.join("bin/hello"), b"#!/bin/sh\necho hello\n", 0o755);
    write_file(&src.join("share/doc/hello/README"), b"hello\n", 0o644);
    write_file(
        &src.join("share/doc/hello/nested/deeper/secret"),
        b"s\n",
        0o600,
    );
    write_file(&src.join("etc/hello.conf"), b"greeting=hi\n", 0o640);
    chown(src.join("etc/hello.conf"), Some(0), Some(42)).unwrap();
    fs::create_dir_all(src.join("var/lib/hello")).unwrap();
    fs::set_permissions(src.join("var/lib/hello"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir_all(src.join("lib")).unwrap();
    symlink("../share/doc/hello/README", src.join("lib/readme")).unwrap();
    symlink("/bin/hello", src.join("bin/hi")).unwrap();
    for rel in [
        "bin",
        "share",
        "share/doc",
        "share/doc/hello",
        "share/doc/hello/nested",
    ] {
        fs::set_permissions(src.join(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(
        src.join("share/doc/hello/nested/deeper"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    fs::set_permissions(src.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("lib"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("var"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("var/lib"), fs::Permissions::from_mode(0o755)).unwrap();

    let out = canopy
        .cmd(["import", "dir"])
        .arg(&src)
        .args(["--name", "hello", "--version", "2.0"])
        .stdout();
    let line = &parse_import(&out)[0];
    assert!(line.new, "{out}");
    assert_eq!(
        (line.name.as_str(), line.version.as_str()),
        ("hello", "2.0")
    );
    let listed = canopy.json(["packages", "list"]);
    assert_eq!(listed[0]["kind"], "dir", "{listed}");
    canopy.stdout(["assemble", "hello", "hello"]);
    let root = canopy.path("root");
    checkout(&canopy, "hello", &root, &[]);
    assert_same_tree(&src, &root);
    let out = cmd(root.join("bin/hello")).stdout();
    assert_eq!(out, "hello\n");
}

#[test]
fn package_specs_select_versions_and_arches() {
    let canopy = Canopy::init("specs");
    let dir = canopy.mkdir("debs");
    let debs = [
        simple_deb(
            &dir,
            "multi",
            "1.0",
            &[("usr/share/multi/version", b"one\n")],
        ),
        simple_deb(
            &dir,
            "multi",
            "2.0",
            &[("usr/share/multi/version", b"two\n")],
        ),
        simple_deb(
            &dir,
            "other",
            "1.0",
            &[("usr/share/other/file", b"other\n")],
        ),
    ];
    canopy.cmd(["import", "deb"]).args(&debs).stdout();
    let version = |canopy: &Canopy, dir: &str, extra: &[&str]| {
        let path = canopy.path(dir);
        checkout(canopy, "r", &path, extra);
        fs::read_to_string(path.join("usr/share/multi/version")).unwrap()
    };

    let first = assemble(&canopy, &["r", "multi=1.0", "-m", "first"]);
    assert_eq!(
        first["packages"].as_array().map(Vec::len),
        Some(1),
        "{first}"
    );
    assert_eq!(version(&canopy, "one", &[]), "one\n");
    let second = assemble(&canopy, &["r", "multi:all=2.0", "other"]);
    assert_eq!(
        second["packages"].as_array().map(Vec::len),
        Some(2),
        "{second}"
    );
    assert_eq!(version(&canopy, "two", &[]), "two\n");
    let first_commit = first["commit"].as_str().unwrap();
    assert_eq!(
        version(&canopy, "again", &["--commit", first_commit]),
        "one\n"
    );
    let log = canopy.json(["roots", "log", "r"]);
    assert_eq!(log[1]["subject"], "first", "{log}");
    assert_eq!(log[1]["requested"], json!(["multi=1.0"]), "{log}");
    assert_eq!(
        sorted(strings(&log[0]["requested"])),
        ["multi:all=2.0", "other"],
        "{log}"
    );
    let mut got: Vec<(String, String, String)> = log[0]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap().to_string();
            (field("name"), field("version"), field("arch"))
        })
        .collect();
    got.sort();
    let want = |n: &str, v: &str| (n.to_string(), v.to_string(), "all".to_string());
    assert_eq!(got, [want("multi", "2.0"), want("other", "1.0")], "{log}");

    // Specs that match nothing fail and move no ref.
    let refs = Snapshot::of(&canopy.store().join("refs"));
    for spec in ["nosuch", "multi=3.0", "multi:amd64"] {
        let out = canopy.fails(["assemble", "r", spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    refs.assert_unchanged("assembles of unknown packages");

    // CANOPY_STORE stands in for --store; usage errors exit 2.
    let roots = canopy
        .bare_cmd(["roots", "list", "--json"])
        .env("CANOPY_STORE", canopy.store())
        .stdout();
    let roots: Value = serde_json::from_str(&roots).unwrap();
    assert_eq!(roots[0]["commit"], second["commit"]);
    canopy.cmd(["frobnicate"]).failure(2);
    canopy.cmd(["assemble"]).failure(2);
    assert_eq!(canopy.current("r"), second["commit"].as_str().unwrap());
}

/// Nothing needs root to build a root: `nobody` initialises a store, imports real
/// packages and assembles them, and the root still carries the archives' owners.
#[test]
fn import_and_assemble_work_without_root() {
    let env = Canopy::new("nonroot");
    let store = env.mkdir("store");
    chown(&store, Some(65534), Some(65534)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = util::cmd("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            util::BIN,
            "--store",
        ])
        .arg(&store)
        .args(args)
        .env("HOME", env.path(""));
        c
    };
    as_nobody(&["init"]).success();
    let packages = [
        "libc6",
        "libtinfo6",
        "bash",
        "base-files",
        "libgcc-s1",
        "gcc-12-base",
    ];
    as_nobody(&["import", "deb"])
        .args(debs::paths(&packages))
        .success();
    as_nobody(&["assemble", "web"]).args(packages).success();
    let dir = env.path("out");
    env.cmd(["checkout", "web"]).arg(&dir).success();
    let bash = fs::metadata(dir.join("bin/bash")).unwrap();
    assert_eq!(
        (bash.uid(), bash.gid(), bash.mode() & 0o7777),
        (0, 0, 0o755)
    );
    let out = cmd("chroot")
        .arg(&dir)
        .args(["/bin/bash", "-c", "echo built by nobody"])
        .stdout();
    assert_eq!(out, "built by nobody\n");
}
