//! Crash safety: a writer killed at any durable step leaves the last good state.
//!
//! The test build of canopy aborts (SIGABRT) at the Nth durable step of a write when
//! `CANOPY_CRASH_AFTER=N` is set; the steps are each staged object, each object rename,
//! and the moments before and after each ref write (and, for a root's ref, after its
//! reflog entry). A clean run on a copy of the store tells how many steps a command
//! takes (2 per new object + 2 per package ref + 3 per root ref), then the command
//! is crashed at a spread of steps on fresh copies, including the last steps around
//! the ref writes. After every crash: `fsck` passes, root `web` is at its old commit
//! (or at the new one if the crash came after its ref was written), and a checkout of it
//! works; a crashed import is finished by simply running it again.

use crate::debs;
use crate::util::{Canopy, parse_assemble, parse_import, simple_deb};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Real packages imported under crashes: small ones, as every crash point costs two
/// imports (each archive's commit syncs the filesystem).
const IMPORTED: &[&str] = &[
    "gcc-12-base",
    "libacl1",
    "libattr1",
    "libgcc-s1",
    "libselinux1",
];

/// Real packages assembled under crashes: libc6 and its dependencies, a set closed
/// under Depends.
const ASSEMBLED: &[&str] = &["gcc-12-base", "libc6", "libgcc-s1"];

const SMALL: [&str; 3] = ["small-a", "small-b", "small-c"];

/// A store holding root `web` at commit C1, assembled from three tiny packages.
fn store_at_c1(name: &str) -> (Canopy, String) {
    let canopy = Canopy::init(name);
    let dir = canopy.mkdir("small");
    let mut debs = Vec::new();
    for name in SMALL {
        let path = format!("etc/{name}.conf");
        let content = format!("{name}\n");
        debs.push(simple_deb(
            &dir,
            name,
            "1.0",
            &[(&path, content.as_bytes())],
        ));
    }
    canopy.cmd(["import", "deb"]).args(&debs).stdout();
    let out = canopy.cmd(["assemble", "web"]).args(SMALL).stdout();
    (canopy, parse_assemble(&out).commit)
}

/// Steps to crash at: a Fibonacci spread up to `total`, the last four steps, the first
/// step past the end (which must not crash), and `extra`.
fn crash_points(total: u64, extra: &[u64]) -> Vec<u64> {
    let mut points = BTreeSet::new();
    let (mut a, mut b) = (1, 2);
    while a <= total {
        points.insert(a);
        (a, b) = (b, a + b);
    }
    points.extend(total.saturating_sub(3).max(1)..=total + 1);
    points.extend(extra.iter().filter(|&&n| n >= 1 && n <= total + 1));
    points.into_iter().collect()
}

/// Runs `canopy ARGS` crashing at step `n` of `total`: it must die by SIGABRT if
/// `n <= total` and succeed otherwise.
fn run_crashing(canopy: &Canopy, args: &[&str], paths: &[PathBuf], n: u64, total: u64) {
    let mut cmd = canopy.cmd(args);
    cmd.args(paths).env("CANOPY_CRASH_AFTER", n.to_string());
    if n <= total {
        cmd.signal(libc::SIGABRT);
    } else {
        cmd.success();
    }
}

/// Checks out root `web` into a fresh directory and returns it.
fn checkout_web(canopy: &Canopy, name: &str) -> PathBuf {
    let dir = canopy.path(name);
    canopy
        .cmd(["checkout", "web"])
        .arg(&dir)
        .arg("--hardlink")
        .stdout();
    dir
}

fn assert_is_c1_tree(dir: &Path) {
    for name in SMALL {
        let content = std::fs::read_to_string(dir.join(format!("etc/{name}.conf")));
        assert_eq!(
            content.ok(),
            Some(format!("{name}\n")),
            "in {}",
            dir.display()
        );
    }
}

/// Names of the packages the store lists as imported.
fn imported_names(canopy: &Canopy) -> BTreeSet<String> {
    canopy
        .json(["packages", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn crash_during_import_leaves_the_last_good_state() {
    let (base, c1) = store_at_c1("crash-import");
    let paths = debs::paths(IMPORTED);
    let import = ["import", "deb"];

    // A clean run on a copy counts the steps.
    let probe = base.fork("crash-import-probe");
    let out = probe.cmd(import).args(&paths).stdout();
    let lines = parse_import(&out);
    assert_eq!(lines.len(), IMPORTED.len(), "{out}");
    assert!(lines.iter().all(|l| l.new), "{out}");
    let total: u64 = lines.iter().map(|l| 2 * l.new_objects + 2).sum();
    // Where the first two archives' ref writes fall if archives are committed one by
    // one, in order: worth a try whatever the implementation does.
    let mut boundaries = Vec::new();
    let mut step = 0;
    for line in &lines[..2] {
        step += 2 * line.new_objects + 2;
        boundaries.extend([step - 2, step - 1, step, step + 1]);
    }
    probe.fsck_clean();
    assert_eq!(probe.current("web"), c1);

    for n in crash_points(total, &boundaries) {
        eprintln!("--- import crashing at step {n} of {total}");
        let store = base.fork(&format!("crash-import-{n}"));
        run_crashing(&store, &import, &paths, n, total);
        store.fsck_clean();
        assert_eq!(
            store.current("web"),
            c1,
            "web moved after a crash at step {n}"
        );
        assert_is_c1_tree(&checkout_web(&store, "web"));
        let done = imported_names(&store);
        for name in &done {
            assert!(
                SMALL.contains(&name.as_str()) || IMPORTED.contains(&name.as_str()),
                "unknown package {name} after a crash at step {n}"
            );
        }
        if n > total {
            assert_eq!(done.len(), SMALL.len() + IMPORTED.len());
        }
        // gc removes what the crash left unreferenced, and nothing else.
        store.stdout(["gc"]);
        assert_eq!(store.fsck_report()["unreachable"], 0);
        // Running the import again finishes the job: what was complete is skipped.
        let out = store.cmd(import).args(&paths).stdout();
        for line in parse_import(&out) {
            assert_eq!(
                !line.new,
                done.contains(&line.name),
                "after a crash at step {n}, {} was listed: {}; the rerun said:\n{out}",
                line.name,
                done.contains(&line.name)
            );
        }
        assert_eq!(imported_names(&store).len(), SMALL.len() + IMPORTED.len());
        store.fsck_clean();
    }
}

#[test]
fn crash_during_assemble_leaves_the_last_good_state() {
    let (base, c1) = store_at_c1("crash-assemble");
    base.cmd(["import", "deb"])
        .args(debs::paths(ASSEMBLED))
        .stdout();
    let mut assemble = vec!["assemble", "web"];
    assemble.extend(ASSEMBLED);

    // A clean run on a copy counts the steps: one ref, its reflog entry just before it.
    let probe = base.fork("crash-assemble-probe");
    let done = parse_assemble(&probe.stdout(&assemble));
    let total = 2 * done.new_objects + 3;
    let log = probe.json(["roots", "log", "web"]);
    assert_eq!(log[0]["commit"], done.commit.as_str(), "{log}");
    assert_eq!(log[0]["parent"], c1.as_str(), "{log}");
    probe.fsck_clean();

    for n in crash_points(total, &[]) {
        eprintln!("--- assemble crashing at step {n} of {total}");
        let store = base.fork(&format!("crash-assemble-{n}"));
        run_crashing(&store, &assemble, &[], n, total);
        store.fsck_clean();
        let current = store.current("web");
        let tree = checkout_web(&store, "web");
        if n < total {
            assert_eq!(
                current, c1,
                "web moved after a crash at step {n} of {total}"
            );
            assert_is_c1_tree(&tree);
        } else {
            assert_ne!(current, c1, "web's ref was written before step {n}");
            let log = store.json(["roots", "log", "web"]);
            assert_eq!(log[0]["parent"], c1.as_str(), "{log}");
            assert!(tree.join("lib/x86_64-linux-gnu/libc.so.6").exists());
        }
        // The reflog lost nothing: an entry for every move that happened, and one shown
        // as interrupted for the move the crash cut short.
        let reflog = store.json(["roots", "reflog", "web"]);
        // (applied, whether it moved to C1), newest first.
        let moves: Vec<(bool, bool)> = reflog
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["applied"] == true, e["new"] == c1.as_str()))
            .collect();
        let expected = if n < total - 1 {
            vec![(true, true)]
        } else {
            vec![(n >= total, false), (true, true)]
        };
        assert_eq!(
            moves, expected,
            "reflog after a crash at step {n}: {reflog}"
        );
        if n >= total - 1 {
            assert_eq!(reflog[0]["old"], c1.as_str(), "{reflog}");
        }
        if n == total - 1 {
            // Every new object is in place but nothing refers to them yet (an
            // interrupted reflog entry keeps nothing).
            let report = store.fsck_report();
            assert_eq!(report["unreachable"], done.new_objects, "{report}");
            store.stdout(["gc"]);
            assert_eq!(store.fsck_report()["unreachable"], 0);
            store.fsck_clean();
        }
    }
}
