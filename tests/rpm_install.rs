//! Installed RPM roots: the fixture distribution of [`crate::rpm`] (a filesystem, the
//! host's libc, dash as `/bin/sh` and rpm packaged as RPMs, so scriptlets and rpm run
//! in the root) assembled with its scriptlets run in the configure sandbox, owners
//! resolved from the root's own account files, and the root's rpm database written —
//! compared with what `rpm --root DIR -i --nodeps` makes of the same RPMs.

use crate::rpm::fixtures;
use crate::util::{Canopy, cmd, tree_differences};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The packages of a root with a shell, scriptlets and rpm.
const ROOT: [&str; 7] = [
    "filesystem",
    "setup",
    "hostlibc",
    "sh",
    "libgreet",
    "greet",
    "hostrpm",
];

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store with every fixture package imported.
fn imported(name: &str) -> Canopy {
    let fx = fixtures();
    let canopy = Canopy::init(name);
    let all: Vec<&str> = fx.rpms.values().map(|p| path_str(p)).collect();
    canopy.stdout([&["import", "rpm"][..], &all].concat());
    canopy
}

fn checkout(canopy: &Canopy, root: &str) -> PathBuf {
    let dir = canopy.path(format!("checkout-{root}"));
    canopy.stdout(["checkout", root, path_str(&dir)]);
    dir
}

fn owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

#[test]
fn scriptlets_run_owners_resolve_and_rpm_lists_the_packages() {
    let canopy = imported("rpm-installed");
    let report = canopy.json([&["assemble", "web"][..], &ROOT].concat());
    let configure = &report["configure"];
    assert_eq!(configure["configured"], true, "{report}");
    let dir = checkout(&canopy, "web");
    // web comes from setup's /etc/passwd; greeter from greet's own %pre.
    assert_eq!(owner(&dir.join("var/lib/greet")), (48, 48, 0o750));
    assert_eq!(owner(&dir.join("etc/greet.secret")), (990, 990, 0o640));
    assert_eq!(
        fs::read_to_string(dir.join("var/lib/greet/post-ran")).unwrap(),
        "installed 1\n"
    );
    // Directory metadata from the headers.
    assert_eq!(owner(&dir.join("tmp")).2, 0o1777);
    assert_eq!(owner(&dir.join("root")).2, 0o550);
    // What ran is recorded, per package, in order.
    let log = canopy.json(["roots", "log", "web"]);
    let packages = log[0]["configure"]["packages"].as_array().unwrap();
    let greet = packages.iter().find(|p| p["name"] == "greet").unwrap();
    let ran: Vec<(&str, &str, i64)> = greet["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["script"].as_str().unwrap(),
                s["args"].as_str().unwrap(),
                s["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ran, [("%pre", "1", 0), ("%post", "1", 0)]);
    assert_eq!(log[0]["configure"]["format"], "rpm");
    // The root's own rpm wrote its database: rpm sees every package, from inside and
    // from outside.
    let mut expected: Vec<String> = ROOT.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let names = |out: String| {
        let mut names: Vec<String> = out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names
    };
    let outside = cmd("rpm")
        .arg("--root")
        .arg(&dir)
        .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n"])
        .stdout();
    assert_eq!(names(outside), expected);
    let inside = cmd("chroot")
        .arg(&dir)
        .args(["rpm", "-qa", "--qf", "%{NAME}\n"])
        .stdout();
    assert_eq!(names(inside), expected);
    let files = cmd("chroot")
        .arg(&dir)
        .args(["rpm", "-qf", "/etc/greet.secret"])
        .stdout();
    assert!(files.starts_with("greet-1.0-1"), "{files}");
    // The same packages again make the same root.
    let again = canopy.json([&["assemble", "again"][..], &ROOT].concat());
    assert_eq!(again["tree"], report["tree"], "not reproducible");
    canopy.fsck_clean();
}

#[test]
fn a_root_is_what_rpm_installs() {
    let fx = fixtures();
    let canopy = imported("rpm-like-rpm");
    canopy.stdout([&["assemble", "web"][..], &ROOT].concat());
    let ours = checkout(&canopy, "web");
    let reference = canopy.mkdir("reference");
    let rpms: Vec<&PathBuf> = ROOT.iter().map(|n| &fx.rpms[n]).collect();
    cmd("rpm")
        .arg("--root")
        .arg(&reference)
        .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
        .args(&rpms)
        .env("SOURCE_DATE_EPOCH", "0")
        .success();
    for dir in [&reference, &ours] {
        fs::remove_dir_all(dir.join("var/lib/rpm")).unwrap();
    }
    // rpm writes each scriptlet to a file in its %_tmppath, which it makes if the
    // packages do not (a distribution's filesystem package does); canopy hands
    // scriptlets over in /run/canopy, outside the root.
    fs::remove_dir(reference.join("var/tmp")).unwrap();
    let differences = tree_differences(&reference, &ours);
    assert!(
        differences.is_empty(),
        "the root differs from rpm --root -i of the same packages:\n{}",
        differences.join("\n")
    );
}

#[test]
fn failing_scriptlets_and_unknown_owners_fail_the_assemble() {
    let canopy = imported("rpm-failing");
    let before = canopy.snapshot();
    // rpm -i would only warn about a failed %post; canopy refuses the root.
    let out = canopy
        .cmd([
            "assemble",
            "bad",
            "filesystem",
            "setup",
            "hostlibc",
            "sh",
            "fails",
        ])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for wanted in ["fails", "%post", "exit status 3", "about to fail"] {
        assert!(stderr.contains(wanted), "{wanted} not in:\n{stderr}");
    }
    // A file of a user the root does not know: named with its package and path…
    let out = canopy
        .cmd([
            "assemble",
            "bad",
            "filesystem",
            "setup",
            "hostlibc",
            "sh",
            "orphan",
        ])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for wanted in [
        "orphan-1.0-1",
        "/etc/orphan",
        "nobody42",
        "--unknown-owner=root",
    ] {
        assert!(stderr.contains(wanted), "{wanted} not in:\n{stderr}");
    }
    before.assert_unchanged("refused assembles");
    // …or given to root, with a warning, when the recipe says so (and kept for upgrades).
    let out = canopy
        .cmd([
            "assemble",
            "lenient",
            "--unknown-owner=root",
            "filesystem",
            "setup",
            "hostlibc",
            "sh",
            "orphan",
        ])
        .success();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nobody42"), "{stderr}");
    let dir = checkout(&canopy, "lenient");
    assert_eq!(owner(&dir.join("etc/orphan")), (0, 0, 0o644));
    let log = canopy.json(["roots", "log", "lenient"]);
    let options = log[0]["options"].to_string();
    assert!(options.contains("unknown-owner=root"), "{options}");
    canopy.fsck_clean();
}
