//! The store in a real distributed object store (SeaweedFS's S3 gateway): init, import,
//! assemble, checkout, fsck and gc on a bucket; several machines (local states) writing
//! one bucket; a gc on one machine during an import on another; crashes mid-import.

use crate::debs;
use crate::mount::SMALL;
use crate::seaweed::Seaweed;
use crate::util::{Canopy, assert_same_tree, simple_deb};
use serde_json::json;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A store in a fresh bucket: `canopy init --backend s3://…`.
fn s3_store(sw: &Seaweed, name: &str) -> (Canopy, String, String) {
    let (bucket, url) = sw.bucket(name);
    let env = sw.env(name);
    let out = env.stdout(["init", "--backend", &url]);
    assert!(
        out.starts_with(&format!("initialised store at {}", env.store().display()))
            && out.contains(&url),
        "{out}"
    );
    (env, bucket, url)
}

/// Another machine's local state attached to the bucket at `url`, with `key` to write.
fn attach(sw: &Seaweed, name: &str, url: &str, key: Option<&std::path::Path>) -> Canopy {
    let env = sw.env(name);
    let mut command = env.cmd(["init", "--backend", url]);
    if let Some(key) = key {
        command.arg("--key").arg(key);
    }
    let out = command.stdout();
    assert!(out.contains("attached"), "{out}");
    env
}

fn key_of(env: &Canopy) -> std::path::PathBuf {
    env.store().join("keys/ed25519.secret")
}

#[test]
fn a_store_in_a_bucket_builds_the_same_roots_and_checks_clean() {
    let sw = Seaweed::shared();
    let (s3, _, url) = s3_store(sw, "same");
    let local = Canopy::init("s3-same-local");
    for env in [&s3, &local] {
        env.cmd(["import", "deb"])
            .args(debs::paths(debs::ROOT_PACKAGES))
            .success();
        env.cmd(["assemble", "full"])
            .args(debs::ROOT_PACKAGES)
            .success();
        env.cmd(["checkout", "full"]).arg(env.path("out")).success();
    }
    assert_same_tree(&local.path("out"), &s3.path("out"));
    let (a, b) = (s3.fsck_report(), local.fsck_report());
    assert_eq!(
        a["objects"], b["objects"],
        "same content, same objects: {a} {b}"
    );
    assert_eq!(a["unreachable"], 0);
    let gc = s3.stdout(["gc"]);
    assert!(gc.starts_with("gc: removed 0 objects"), "{gc}");

    // Hard-linked checkouts from a bucket share one link-farm file per file.
    let (a, b) = (s3.path("a"), s3.path("b"));
    for dir in [&a, &b] {
        let out = s3.json(["checkout", "full", "--hardlink", dir.to_str().unwrap()]);
        assert_eq!(out["linked"], out["files"], "{out}");
    }
    assert_same_tree(&local.path("out"), &a);
    let (x, y) = (
        fs::metadata(a.join("bin/bash")).unwrap(),
        fs::metadata(b.join("bin/bash")).unwrap(),
    );
    assert_eq!((x.dev(), x.ino()), (y.dev(), y.ino()), "bash is not shared");
    // The reflog is in the bucket too: a removed root is listed, and comes back.
    let commit = s3.current("full");
    s3.json(["roots", "remove", "full"]);
    let removed = s3.json(["roots", "list", "--removed"]);
    assert_eq!(
        (&removed[0]["name"], &removed[0]["commit"]),
        (&json!("full"), &json!(commit)),
        "{removed}"
    );
    let back = s3.json(["roots", "rollback", "full"]);
    assert_eq!(back["restored"], json!(commit), "{back}");
    let reflog = s3.json(["roots", "reflog", "full"]);
    let ops: Vec<&str> = reflog
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["rollback", "remove", "assemble"], "{reflog}");

    // A second machine without the key: it sees the store and its key, cannot write.
    let reader = attach(sw, "same-reader", &url, None);
    assert_eq!(reader.stdout(["key", "show"]), s3.stdout(["key", "show"]));
    assert_eq!(reader.current("full"), s3.current("full"));
    let refused = reader.cmd(["assemble", "again"]).args(SMALL).failure(1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no signing key") && err.contains("--key"),
        "{err}"
    );
    // Nor can a wrong key attach.
    let other = Canopy::init("s3-same-other");
    let wrong = sw
        .env("same-wrong")
        .cmd(["init", "--backend", &url, "--key"])
        .arg(key_of(&other))
        .failure(1);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("not the key"), "{err}");
}

#[test]
fn bad_credentials_and_unreachable_endpoints_fail_clearly_and_change_nothing() {
    let sw = Seaweed::shared();
    let (_, url) = sw.bucket("creds");
    let env = sw
        .env("creds")
        .with_env("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    let out = env.cmd(["init", "--backend", &url]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("wrong-secret"),
        "the secret is never printed: {err}"
    );
    assert!(!env.store().join("config").exists());

    let (s3, _, _) = s3_store(sw, "down");
    let dead = format!("http://127.0.0.1:{}", crate::seaweed::free_port());
    let start = Instant::now();
    let out = s3
        .cmd(["roots", "list"])
        .env("AWS_ENDPOINT_URL", &dead)
        .failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dead) || err.contains("s3://"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60), "bounded");

    let no_creds = sw.env("nocreds").with_env("AWS_ACCESS_KEY_ID", "");
    let out = no_creds.cmd(["init", "--backend", &url]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}

#[test]
fn writers_on_several_machines_never_lose_an_update() {
    let sw = Seaweed::shared();
    let (a, _, url) = s3_store(sw, "writers");
    let b = attach(sw, "writers-b", &url, Some(&key_of(&a)));
    let c = attach(sw, "writers-c", &url, Some(&key_of(&a)));
    a.cmd(["import", "deb"]).args(debs::paths(SMALL)).success();

    // Two roots from two machines at once: both land.
    // Each writer a different package set, so no commit is the same as another's (an
    // assemble that would change nothing writes nothing).
    let spawn = |env: &Canopy, root: &str, packages: usize| {
        let mut command = Command::new(crate::util::BIN);
        command
            .arg("--store")
            .arg(env.store())
            .args(["assemble", root])
            .args(&SMALL[..packages])
            .args(["-m", &format!("{root} from {}", env.store().display())])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("AWS_ENDPOINT_URL", sw.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", crate::seaweed::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", crate::seaweed::SECRET_KEY),
        ] {
            command.env(k, v);
        }
        command.spawn().unwrap()
    };
    let runs = [spawn(&a, "one", 6), spawn(&b, "two", 6)];
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let roots = c.json(["roots", "list"]);
    assert_eq!(roots.as_array().unwrap().len(), 2, "{roots}");

    // Three machines move one root at once: each either lands on top of the others or
    // is told it lost; no commit that reported success is lost.
    let runs = [
        spawn(&a, "shared", 6),
        spawn(&b, "shared", 5),
        spawn(&c, "shared", 4),
    ];
    let mut landed = 0;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            landed += 1;
        } else {
            assert!(err.contains("changed by another writer"), "{err}");
        }
    }
    assert!(landed >= 1);
    let log = c.json(["roots", "log", "shared"]);
    assert_eq!(
        log.as_array().unwrap().len(),
        landed,
        "every landed commit is in history: {log}"
    );
    a.fsck_report();
}

#[test]
fn gc_on_another_machine_spares_what_a_running_import_relies_on() {
    let sw = Seaweed::shared();
    let (a, bucket, url) = s3_store(sw, "lease");
    let b = attach(sw, "lease-b", &url, Some(&key_of(&a)));
    let shared = b"the same bytes in two packages\n";
    let first = simple_deb(&a.path(""), "first", "1", &[("usr/share/first/f", shared)]);
    let second = simple_deb(
        &a.path(""),
        "second",
        "1",
        &[("usr/share/second/f", shared)],
    );
    let blob = crate::util::sha256_file(&a.path("first_1.tree/usr/share/first/f"));

    // An import that dies after storing its objects leaves them unreferenced; its lease
    // (left too) is removed behind canopy's back, as a gc would after it expires.
    let mut n = 1;
    loop {
        let out = a
            .cmd(["import", "deb"])
            .arg(&first)
            .env("CANOPY_CRASH_AFTER", n.to_string())
            .output();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "the import must die before its ref: {err}"
        );
        if err.contains("(object stored)") && sw.list(&bucket, "store/objects").contains(&blob) {
            break;
        }
        n += 1;
        assert!(n < 50, "no object stored: {err}");
    }
    for lease in sw.list(&bucket, "store/leases") {
        sw.delete(&bucket, &format!("store/leases/{lease}"));
    }

    // The second import finds the garbage blob present and pauses before its ref; a gc
    // on machine B runs meanwhile, then the import finishes.
    let pause = a.path("paused");
    let mut import = Command::new(crate::util::BIN);
    import
        .arg("--store")
        .arg(a.store())
        .args(["import", "deb"])
        .arg(&second)
        .env("AWS_ENDPOINT_URL", &sw.endpoint)
        .env("AWS_ACCESS_KEY_ID", crate::seaweed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::seaweed::SECRET_KEY)
        .env("CANOPY_PAUSE_AT", "before ref write")
        .env("CANOPY_PAUSE_FILE", &pause)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let running = import.spawn().unwrap();
    let start = Instant::now();
    while !pause.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the import never paused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gc = b.stdout(["gc"]);
    assert!(gc.starts_with("gc: removed "), "{gc}");
    assert!(
        sw.list(&bucket, "store/objects").contains(&blob),
        "gc deleted the blob the paused import relies on: {gc}"
    );
    fs::remove_file(&pause).unwrap();
    let out = running.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.fsck_report();
    assert!(
        sw.list(&bucket, "store/leases").is_empty(),
        "leases are removed when done"
    );
}

#[test]
fn a_crash_at_any_step_of_an_import_to_s3_leaves_the_last_good_state() {
    let sw = Seaweed::shared();
    let (env, _, _) = s3_store(sw, "crash");
    let base = simple_deb(&env.path(""), "base", "1", &[("etc/base", b"base\n")]);
    env.cmd(["import", "deb"]).arg(&base).success();
    env.cmd(["assemble", "r", "base"]).success();
    let before = env.current("r");
    let next = simple_deb(
        &env.path(""),
        "next",
        "1",
        &[
            ("usr/bin/a", b"a\n"),
            ("usr/lib/b", b"b\n"),
            ("etc/base", b"base\n"),
        ],
    );
    let mut n = 1;
    loop {
        let out = env
            .cmd(["import", "deb"])
            .arg(&next)
            .env("CANOPY_CRASH_AFTER", n.to_string())
            .output();
        if out.status.success() {
            break;
        }
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGABRT),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.fsck_report();
        assert_eq!(env.current("r"), before);
        n += 1;
        assert!(n < 100, "the import never finished");
    }
    let packages = env.json(["packages", "list"]);
    assert_eq!(packages.as_array().unwrap().len(), 2, "{packages}");
    env.cmd(["assemble", "r", "base", "next", "--allow-overwrite"])
        .success();
    env.fsck_report();
}
