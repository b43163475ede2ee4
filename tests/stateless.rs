//! Stateless servers in front of one bucket: several `canopy serve` on one store in
//! SeaweedFS, each with its own read cache; a host mounting through two of them keeps
//! reading when one dies; a server whose bucket goes away keeps serving what it cached,
//! answers 503 `backend-unavailable` for the rest, and recovers by itself; a SeaweedFS
//! cluster that replicates every volume on two servers loses one and reads go on.

use crate::debs;
use crate::mount::{Mount, SMALL, Server};
use crate::seaweed::{Cluster, OwnSeaweed, Seaweed};
use crate::util::{Canopy, cmd, walk};
use std::fs;
use std::time::{Duration, Instant};

/// A store in a fresh bucket of `sw` with roots `small` and `full`.
fn bucket_store(sw: &Seaweed, name: &str) -> Canopy {
    let (_, url) = sw.bucket(name);
    let env = sw.env(name);
    env.cmd(["init", "--backend", &url]).success();
    env.cmd(["import", "deb"])
        .args(debs::paths(debs::ROOT_PACKAGES))
        .success();
    env.cmd(["assemble", "small"]).args(SMALL).success();
    env.cmd(["assemble", "full"])
        .args(debs::ROOT_PACKAGES)
        .success();
    env
}

/// `curl` of `path` on `server`: status and body.
fn get(server: &Server, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out = cmd("curl")
        .args(["-s", "-m", "30", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("{}{path}", server.url))
        .output();
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&body[nl + 1..])
        .trim()
        .parse()
        .unwrap();
    body.truncate(nl);
    (status, body)
}

/// The blob id of a file of a checkout (its SHA-256).
fn id_of(path: &std::path::Path) -> String {
    crate::util::sha256_file(path)
}

#[test]
fn a_host_reads_on_through_the_other_server_when_one_dies() {
    let sw = Seaweed::shared();
    let env = bucket_store(sw, "two-servers");
    env.cmd(["checkout", "full"])
        .arg(env.path("reference"))
        .success();
    let a_cache = env.path("cache-a");
    let b_cache = env.path("cache-b");
    let mut a = Server::start_with(
        &env,
        "127.0.0.1:0",
        &["--cache-dir", a_cache.to_str().unwrap()],
    );
    let b = Server::start_with(
        &env,
        "127.0.0.1:0",
        &["--cache-dir", b_cache.to_str().unwrap()],
    );
    let mount = Mount::start(
        &env,
        "mnt",
        &a.url,
        &["--server", &b.url, "--root", "full", "--timeout", "3s"],
    );
    // Every file of the root is read while server A is killed partway through.
    let files: Vec<_> = walk(&env.path("reference"))
        .into_iter()
        .filter(|rel| {
            fs::symlink_metadata(env.path("reference").join(rel))
                .unwrap()
                .is_file()
        })
        .collect();
    assert!(files.len() > 100, "{} files", files.len());
    let kill_at = files.len() / 3;
    for (i, rel) in files.iter().enumerate() {
        if i == kill_at {
            a.stop();
        }
        let got = crate::mount::read(&mount.path(rel.to_str().unwrap()))
            .unwrap_or_else(|e| panic!("reading {}: {e}\n{}", rel.display(), mount.log()));
        assert_eq!(
            got,
            fs::read(env.path("reference").join(rel)).unwrap(),
            "{} differs",
            rel.display()
        );
    }
    assert!(
        b.object_requests() > 0,
        "server B answered nothing: the failover was not exercised"
    );
    mount.stop();
    // Both caches hold verified objects named by their ids, within their bound.
    for cache in [&a_cache, &b_cache] {
        for rel in walk(&cache.join("objects")) {
            let p = cache.join("objects").join(&rel);
            if p.is_file() {
                let name = rel.to_str().unwrap().replace('/', "");
                assert_eq!(id_of(&p), name, "{} is not what it is named", p.display());
            }
        }
    }
}

#[test]
fn an_unreachable_bucket_serves_cached_objects_503_for_others_and_recovers() {
    let mut sw = OwnSeaweed::start("outage");
    let env = bucket_store(&sw, "outage");
    env.cmd(["checkout", "full"])
        .arg(env.path("reference"))
        .success();
    let server = Server::start(&env, "127.0.0.1:0");
    let bash = id_of(&env.path("reference/bin/bash"));
    let sha = id_of(&env.path("reference/usr/bin/sha256sum"));
    let bash_bytes = fs::read(env.path("reference/bin/bash")).unwrap();

    let (status, body) = get(&server, &format!("/v1/objects/{bash}"), &[]);
    assert_eq!((status, body.len()), (200, bash_bytes.len()));
    // Ranges come from the cached file.
    let (status, body) = get(
        &server,
        &format!("/v1/objects/{bash}"),
        &["-H", "Range: bytes=1-3"],
    );
    assert_eq!((status, &body[..]), (206, &b"ELF"[..]));
    let (status, roots) = get(&server, "/v1/roots", &[]);
    assert_eq!(status, 200);

    sw.stop();
    let start = Instant::now();
    let (status, body) = get(&server, &format!("/v1/objects/{bash}"), &[]);
    assert_eq!(
        status, 200,
        "a cached object is served while the bucket is down"
    );
    assert_eq!(body, bash_bytes);
    let (status, body) = get(&server, &format!("/v1/objects/{sha}"), &[]);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "backend-unavailable", "{err}");
    // It says when to ask again.
    let (_, head) = get(
        &server,
        &format!("/v1/objects/{sha}"),
        &["-D", "-", "-o", "/dev/null"],
    );
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.contains("retry-after: 5\r\n"), "{head}");
    assert!(
        err["message"].as_str().unwrap().contains(&sha[..16])
            || err["message"].as_str().unwrap().contains("s3://"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "answers took {:?}",
        start.elapsed()
    );
    // The roots seen last are still served: hosts keep their roots.
    assert_eq!(get(&server, "/v1/roots", &[]), (200, roots));

    sw.restart();
    let back = crate::mount::eventually(
        Duration::from_secs(60),
        || "the server did not recover after the bucket came back".into(),
        || match get(&server, &format!("/v1/objects/{sha}"), &[]) {
            (200, body) => Some(body),
            _ => None,
        },
    );
    assert_eq!(
        back,
        fs::read(env.path("reference/usr/bin/sha256sum")).unwrap()
    );
    // A commit made meanwhile elsewhere is served within seconds.
    env.cmd(["assemble", "later"]).args(SMALL).success();
    crate::mount::eventually(
        Duration::from_secs(10),
        || "a new root was not served within 10 s".into(),
        || (get(&server, "/v1/roots/later", &[]).0 == 200).then_some(()),
    );
}

#[test]
fn reads_go_on_when_a_volume_server_of_a_replicated_cluster_dies() {
    let mut cluster = Cluster::start("replicated");
    let env = bucket_store(&cluster, "replicated");
    // Replication 001: each server holds a copy of every volume.
    let (a, b) = (cluster.volume_bytes(0), cluster.volume_bytes(1));
    assert!(a > 10 << 20 && a == b, "volume data: {a} and {b} bytes");
    cluster.kill_volume(0);
    // Every object is read back (and verified) from the surviving copies.
    env.cmd(["checkout", "full"]).arg(env.path("out")).success();
    let out = cmd("chroot")
        .arg(env.path("out"))
        .args([
            "/bin/bash",
            "-c",
            "echo ok && sha256sum --version | head -1",
        ])
        .stdout();
    assert!(out.starts_with("ok\nsha256sum"), "{out}");
    env.fsck_report();
    let server = Server::start(&env, "127.0.0.1:0");
    let bash = id_of(&env.path("out/bin/bash"));
    let (status, body) = get(&server, &format!("/v1/objects/{bash}"), &[]);
    assert_eq!(status, 200);
    assert_eq!(body, fs::read(env.path("out/bin/bash")).unwrap());
}
