//! `canopy replicate`: a verified copy of a server's roots, in a local store and in a
//! bucket, served to hosts that trust the upstream's key; a second run fetches nothing;
//! an upstream object altered on disk refuses its root (named) and publishes nothing of
//! it; kill -9 between batches and a rerun completes; a replica of a replica; a wrong
//! key, and a store with roots of its own, refused.

use crate::mount::{Mount, SMALL, Server, two_roots};
use crate::seaweed::Seaweed;
use crate::util::{BIN, Canopy, cmd, sha256_file};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An upstream store with roots `small` and `full`, served, and its key in a file.
struct Upstream {
    env: Canopy,
    server: Server,
    key: PathBuf,
}

fn upstream(name: &str) -> Upstream {
    let env = two_roots(name);
    let key = env.path("upstream.pub");
    fs::write(&key, env.stdout(["key", "show"])).unwrap();
    let server = Server::start(&env, "127.0.0.1:0");
    Upstream { env, server, key }
}

/// `canopy replicate URL --trust KEY --json ARGS` in `env`, which must succeed.
fn replicate(env: &Canopy, url: &str, key: &PathBuf, args: &[&str]) -> serde_json::Value {
    let out = env
        .cmd(["replicate", url, "--trust"])
        .arg(key)
        .arg("--json")
        .args(args)
        .success();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The report of root `name` in a replicate summary.
fn root<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["root"] == name)
        .unwrap_or_else(|| panic!("no root {name} in {summary}"))
}

/// The roots of a store as `roots list --json` gives them: name and commit.
fn roots(env: &Canopy) -> Vec<(String, String)> {
    let list = env.json(["roots", "list"]);
    let mut out: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Mounts `full` from `url` trusting `key` and runs bash from it in a chroot.
fn runs_bash_from(env: &Canopy, url: &str, key: &PathBuf, name: &str) {
    fs::copy(key, env.path("server.pub")).unwrap();
    let mount = Mount::start(env, name, url, &["--root", "full"]);
    let out = cmd("chroot")
        .arg(mount.path(""))
        .args(["/bin/bash", "-c", "echo from $0 $BASH_VERSION | sha256sum"])
        .stdout();
    assert!(out.len() > 64, "{out}");
    mount.stop();
}

#[test]
fn a_replica_serves_the_upstream_roots_verified_and_fetches_only_what_it_lacks() {
    let up = upstream("rep-up");
    // `small` has two commits upstream; the replica copies the current one only.
    up.env
        .cmd(["assemble", "small"])
        .args(SMALL)
        .arg("mawk")
        .success();
    let replica = Canopy::init("rep-local");
    let first = replicate(&replica, &up.server.url, &up.key, &[]);
    assert_eq!(first["not_published"], 0, "{first}");
    assert_eq!(root(&first, "full")["status"], "created", "{first}");
    assert_eq!(root(&first, "small")["status"], "created", "{first}");
    let fetched = first["objects_fetched"].as_u64().unwrap();
    assert!(fetched > 100, "{first}");
    assert_eq!(roots(&replica), roots(&up.env));
    // The replica vouches for the upstream's roots with the upstream's key.
    assert_eq!(
        replica.stdout(["key", "show"]),
        fs::read_to_string(&up.key).unwrap()
    );
    replica.fsck_clean();
    // Its history stops at the replicated commit without failing anything.
    let log = replica.json(["roots", "log", "small"]);
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert!(log[0]["parent"].is_string(), "{log}");
    replica.cmd(["gc"]).success();
    replica.fsck_clean();

    // A second run fetches nothing: not one object request upstream.
    let requests = up.server.object_requests();
    assert!(
        requests as u64 >= fetched,
        "{requests} object requests upstream"
    );
    let again = replicate(&replica, &up.server.url, &up.key, &[]);
    assert_eq!(again["objects_fetched"], 0, "{again}");
    assert_eq!(root(&again, "full")["status"], "current", "{again}");
    assert_eq!(up.server.object_requests(), requests);

    // A new upstream commit: only what it changes is looked at (mawk's files go, and
    // coreutils' come, which the replica has already, through `full`): the trees and
    // files that did not change are skipped by the tree pack of the replica's commit.
    up.env
        .cmd(["assemble", "small"])
        .args(SMALL)
        .arg("coreutils")
        .success();
    let update = replicate(&replica, &up.server.url, &up.key, &["--root", "small"]);
    let small = root(&update, "small");
    assert_eq!(small["status"], "updated", "{update}");
    let before = root(&first, "small");
    let looked_at = |r: &serde_json::Value| {
        r["objects_fetched"].as_u64().unwrap() + r["objects_present"].as_u64().unwrap()
    };
    assert_eq!(small["objects_fetched"], 0, "{update}");
    assert!(
        looked_at(small) > 0 && looked_at(small) < looked_at(before),
        "{before}\n{update}"
    );
    assert!(
        small["trees"].as_u64() < before["trees"].as_u64(),
        "{update}"
    );
    assert_eq!(roots(&replica), roots(&up.env));
    replica.fsck_clean();

    // Hosts mount the replica with the upstream's key and run bash from it.
    let served = Server::start(&replica, "127.0.0.1:0");
    runs_bash_from(&replica, &served.url, &up.key, "mnt");

    // The replica signs nothing itself.
    let out = replica.fails(["roots", "rollback", "small"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replica"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A replica of the replica, still trusting the upstream's key, with the history
    // the replica has (two commits of `small`; the first is cut).
    let second = Canopy::init("rep-of-rep");
    let copy = replicate(&second, &served.url, &up.key, &["--history"]);
    assert_eq!(copy["not_published"], 0, "{copy}");
    assert_eq!(root(&copy, "small")["commits"], 2, "{copy}");
    assert_eq!(roots(&second), roots(&up.env));
    second.fsck_clean();
    let log = second.json(["roots", "log", "small"]);
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");

    // --history later brings the history left out.
    let deeper = replicate(&replica, &up.server.url, &up.key, &["--history"]);
    assert_eq!(root(&deeper, "small")["status"], "updated", "{deeper}");
    assert_eq!(root(&deeper, "full")["status"], "current", "{deeper}");
    let log = replica.json(["roots", "log", "small"]);
    assert_eq!(log.as_array().unwrap().len(), 3, "{log}");
    assert!(log[2]["parent"].is_null(), "{log}");
    replica.fsck_clean();

    // A wrong key: every root refused, naming the keys; nothing published.
    let wrong = Canopy::init("rep-wrong");
    let wrong_key = wrong.path("wrong.pub");
    fs::write(&wrong_key, wrong.stdout(["key", "show"])).unwrap();
    let other = Canopy::init("rep-wrong-target");
    let out = other
        .cmd(["replicate", &up.server.url, "--trust"])
        .arg(&wrong_key)
        .failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    let wrong_hex = fs::read_to_string(&wrong_key).unwrap();
    assert!(
        err.contains(wrong_hex.trim()) && err.contains("full"),
        "{err}"
    );
    assert!(roots(&other).is_empty());
    // A store with roots of its own refuses to become a replica of another key.
    let out = up
        .env
        .cmd(["replicate", &served.url, "--trust"])
        .arg(&wrong_key)
        .failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("roots of its own"), "{err}");
}

#[test]
fn a_replica_in_a_bucket_is_served_to_hosts() {
    let up = upstream("rep-up-s3");
    let sw = Seaweed::shared();
    let (_, url) = sw.bucket("replica");
    let env = sw.env("rep-s3");
    env.cmd(["init", "--backend", &url]).success();
    let first = replicate(&env, &up.server.url, &up.key, &["--jobs", "16"]);
    assert_eq!(first["not_published"], 0, "{first}");
    assert_eq!(roots(&env), roots(&up.env));
    env.fsck_clean();
    let again = replicate(&env, &up.server.url, &up.key, &[]);
    assert_eq!(again["objects_fetched"], 0, "{again}");
    let cache = env.path("serve-cache");
    let served = Server::start_with(
        &env,
        "127.0.0.1:0",
        &["--cache-dir", cache.to_str().unwrap()],
    );
    runs_bash_from(&env, &served.url, &up.key, "mnt");
}

#[test]
fn an_altered_upstream_object_refuses_its_root_and_names_it() {
    let up = upstream("rep-up-bad");
    // sha256sum is in `full` only: a proxy alters bytes of its own on their way.
    up.env
        .cmd(["checkout", "full"])
        .arg(up.env.path("ref"))
        .success();
    let victim = up.env.path("ref/usr/bin/sha256sum");
    let id = sha256_file(&victim);
    let proxy = crate::proxy::tamper_file(&up.server.url, &victim, &[up.env.path("ref/usr/bin")]);

    let replica = Canopy::init("rep-bad");
    let out = replica
        .cmd(["replicate", &proxy.url, "--trust"])
        .arg(&up.key)
        .arg("--json")
        .failure(1);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let full = root(&summary, "full");
    assert_eq!(full["status"], "refused", "{summary}");
    assert!(
        full["error"].as_str().unwrap().contains(&id),
        "the error does not name object {id}: {summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&id));
    assert_eq!(root(&summary, "small")["status"], "created", "{summary}");
    let published: Vec<String> = roots(&replica).into_iter().map(|(n, _)| n).collect();
    assert_eq!(published, ["small"]);
    assert!(
        !replica
            .store()
            .join("objects")
            .join(&id[..2])
            .join(&id[2..])
            .exists()
    );
    replica.fsck_clean();
}

#[test]
fn a_replicate_killed_between_batches_resumes_and_completes() {
    let up = upstream("rep-up-kill");
    let replica = Canopy::init("rep-kill");
    let pause = replica.path("paused");
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(replica.store())
        .args([
            "replicate",
            &up.server.url,
            "--root",
            "full",
            "--batch-size",
            "1M",
            "--trust",
        ])
        .arg(&up.key)
        .env("CANOPY_PAUSE_AT", "replicate batch written")
        .env("CANOPY_PAUSE_FILE", &pause)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pause.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "replicate never wrote a batch"
        );
        assert!(child.try_wait().unwrap().is_none(), "replicate ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The batch written is kept; no root is published.
    assert!(roots(&replica).is_empty());
    let kept = crate::util::walk(&replica.store().join("objects"))
        .into_iter()
        .filter(|p| replica.store().join("objects").join(p).is_file())
        .count();
    assert!(kept > 0, "no object survived the kill");

    let rerun = replicate(&replica, &up.server.url, &up.key, &["--root", "full"]);
    let full = root(&rerun, "full");
    assert_eq!(full["status"], "created", "{rerun}");
    assert!(
        full["objects_present"].as_u64().unwrap() >= kept as u64,
        "{rerun}"
    );
    replica.fsck_clean();
    for (env, out) in [(&up.env, "ref"), (&replica, "out")] {
        env.cmd(["checkout", "full"]).arg(env.path(out)).success();
    }
    crate::util::assert_same_tree(&up.env.path("ref"), &replica.path("out"));
}
