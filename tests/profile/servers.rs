//! Replay against servers that alter, fail or lack profile packs: a member altered on
//! the way fails that file alone (EIO); a replay whose every part failed is replayed
//! again, and `canopy run --no-profile` asks for none; a server from before profile
//! packs (404) is asked for nothing ahead of use, serves every file, and the mount says
//! so once.

use super::{SCRIPT, replayed, shared};
use crate::mount::{Mount, Server, answered, eventually, read};
use crate::proxy::{self, TcpProxy, copy, rewrite, tamper};
use crate::util::{assert_same_tree, sha256_file};
use canopy_protocol::pack::MEMBER_MAX;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[test]
fn a_profile_member_altered_on_the_way_fails_that_file_alone() {
    let s = shared();
    let small: Vec<&String> = s
        .paths
        .iter()
        .filter(|p| fs::metadata(s.reference.join(p)).unwrap().len() <= 1 << 20)
        .collect();
    // A packed file whose 64 bytes at its middle appear in no other profiled file.
    let (victim, marker) = small
        .iter()
        .filter(|p| fs::metadata(s.reference.join(p)).unwrap().len() >= 4096)
        .find_map(|p| {
            let bytes = fs::read(s.reference.join(p)).unwrap();
            let mid = bytes.len() / 2;
            let marker = bytes[mid..mid + 64].to_vec();
            let unique = s.paths.iter().all(|q| {
                q == *p
                    || !fs::read(s.reference.join(q))
                        .unwrap()
                        .windows(64)
                        .any(|w| w == &marker[..])
            });
            unique.then(|| (p.to_string(), marker))
        })
        .expect("a profiled file with bytes of its own");
    let mut altered = marker.clone();
    altered[0] ^= 0xff;
    let server = Server::start(&s.env, "127.0.0.1:0");
    let proxy = tamper(&server.url, marker, altered);
    let mount = Mount::start(
        &s.env,
        "tampered",
        &proxy.url,
        &["--root", "web", "--no-prefetch"],
    );
    replayed(&mount);
    for path in &s.paths {
        match read(&mount.path(path)) {
            Ok(bytes) => {
                assert_ne!(*path, victim, "altered bytes were served");
                assert_eq!(bytes, fs::read(s.reference.join(path)).unwrap(), "{path}");
            }
            Err(e) => {
                assert_eq!(*path, victim, "{path}: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            }
        }
    }
    let log = mount.log();
    assert!(
        log.contains("in the pack from") && log.contains("/v1/packs/profile/"),
        "the altered member was not seen in a profile pack:\n{log}"
    );
    mount.stop();
}

#[test]
fn a_replay_that_failed_is_replayed_again_and_run_can_turn_it_off() {
    let s = shared();
    let server = Server::start(&s.env, "127.0.0.1:0");
    let commit = s.env.json(["roots", "show", "web"])["commit"]
        .as_str()
        .unwrap()
        .to_string();
    // Profile pack requests ask for a bad id (400) while `broken` is set.
    let broken = Arc::new(AtomicBool::new(true));
    let needle = format!("/v1/packs/profile/{}", &commit[..1]).into_bytes();
    let mut bad = needle.clone();
    *bad.last_mut().unwrap() = b'!';
    let b = broken.clone();
    let proxy = TcpProxy::start(
        &server.url,
        Arc::new(move |c, s, _: &AtomicBool| rewrite(c, s, &needle, &bad, &b)),
        Arc::new(|s, c, _: &AtomicBool| copy(s, c)),
    );
    let mount = Mount::start(
        &s.env,
        "retry",
        &proxy.url,
        &[
            "--root",
            "web",
            "--follow",
            "--interval",
            "200ms",
            "--no-prefetch",
        ],
    );
    eventually(
        Duration::from_secs(30),
        || format!("the replay did not fail:\n{}", mount.log()),
        || {
            mount
                .log()
                .contains("every pack part of the profile")
                .then_some(())
        },
    );
    broken.store(false, Ordering::Relaxed);
    replayed(&mount);
    mount.stop();

    // canopy run --server replays the profile unless told not to.
    fs::write(s.env.path("server.pub"), s.env.stdout(["key", "show"])).unwrap();
    let before = answered(&server.log(), "/v1/packs/profile/");
    s.env
        .bare_cmd(["run", "--server", &server.url, "--trust"])
        .arg(s.env.path("server.pub"))
        .arg("--cache-dir")
        .arg(s.env.path("run-cache"))
        .args(["--no-profile", "web", "--", "/bin/bash", "-c", SCRIPT])
        .success();
    assert_eq!(answered(&server.log(), "/v1/packs/profile/"), before);
}

#[test]
fn a_server_without_profile_packs_replays_nothing_and_serves_every_file() {
    let s = shared();
    let server = Server::start(&s.env, "127.0.0.1:0");
    // As a server from before profile packs: it answers them 404 "no such endpoint",
    // and objects as before.
    let proxy = proxy::without(&server.url, "/v1/packs/profile/");
    // Following: each look for new versions could try (and log) again.
    let mount = Mount::start(
        &s.env,
        "old-server",
        &proxy.url,
        &[
            "--root",
            "web",
            "--no-prefetch",
            "--follow",
            "--interval",
            "200ms",
        ],
    );
    let said = "the server has no profile packs";
    eventually(
        Duration::from_secs(60),
        || {
            format!(
                "the mount did not say the server lacks profile packs:\n{}",
                mount.log()
            )
        },
        || mount.log().contains(said).then_some(()),
    );
    // Nothing came ahead of use, not even the large files, which need no pack.
    let large: Vec<&String> = s
        .paths
        .iter()
        .filter(|p| fs::metadata(s.reference.join(p)).unwrap().len() > MEMBER_MAX)
        .collect();
    assert!(!large.is_empty(), "the profile has no large file");
    let log = server.log();
    for path in large {
        let id = sha256_file(&s.reference.join(path));
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id} ")),
            0,
            "{path} was replayed from a server without profile packs:\n{log}"
        );
    }
    assert_same_tree(&s.reference, &mount.dir);
    let log = server.log();
    assert_eq!(answered(&log, "/v1/packs/profile/"), 0, "{log}");
    assert!(answered(&log, "/v0/packs/profile/") > 0, "{log}");
    let mount_log = mount.log();
    assert_eq!(mount_log.matches(said).count(), 1, "{mount_log}");
    assert!(
        !mount_log.contains("replayed the profile") && !mount_log.contains("profile replay of"),
        "{mount_log}"
    );
    mount.stop();
}
