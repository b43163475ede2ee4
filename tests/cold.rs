//! Cold fetch: a fresh mount reads a whole root through directory packs and matches
//! `canopy checkout` byte for byte; a pack member altered on the way fails that object
//! alone (EIO, never wrong bytes); prefetch under a small cache bound keeps the bound
//! and never evicts an open file; a server without packs (404) is read one object at a
//! time, every byte still right; a walk brings a directory's large files ahead of the
//! reader, within the cache bound.

use crate::mount::{Mount, Server, answered, read, two_roots};
use crate::proxy::{self, tamper};
use crate::util::{Canopy, assert_same_tree, walk};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One store with roots `small` and `full`, and a checkout of `full`, shared by the
/// tests here (each serves and mounts it on its own).
fn shared() -> &'static (Canopy, PathBuf) {
    static SHARED: OnceLock<(Canopy, PathBuf)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let env = two_roots("cold");
        let reference = env.path("full-checkout");
        env.cmd(["checkout", "full"]).arg(&reference).success();
        (env, reference)
    })
}

#[test]
fn a_fresh_mount_reads_a_whole_root_as_checkout_through_packs() {
    let (env, reference) = shared();
    let server = Server::start(env, "127.0.0.1:0");
    let mount = Mount::start(env, "whole", &server.url, &["--root", "full"]);

    // A walk's sign (a listing, then its first file) has the rest of the directory
    // come in packs. Readers' own fetches go first, so how much a reader that never
    // pauses finds already there depends on timing: this one pauses until the
    // server has answered the packs, then finds the directory's files there.
    let files: Vec<PathBuf> = walk(reference)
        .into_iter()
        .filter(|p| fs::symlink_metadata(reference.join(p)).unwrap().is_file())
        .collect();
    let dir = {
        let mut count = std::collections::HashMap::<&Path, usize>::new();
        for f in &files {
            *count.entry(f.parent().unwrap()).or_default() += 1;
        }
        count.into_iter().max_by_key(|&(d, n)| (n, d)).unwrap().0
    };
    let in_dir: Vec<&PathBuf> = files.iter().filter(|f| f.parent() == Some(dir)).collect();
    assert!(
        in_dir.len() >= 20,
        "{}: {} files",
        dir.display(),
        in_dir.len()
    );
    let first = fs::read_dir(mount.dir.join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().unwrap().is_file())
        .unwrap()
        .path();
    read(&first).unwrap();
    let mut last = (0, 0, Instant::now());
    crate::mount::eventually(
        Duration::from_secs(60),
        || {
            format!(
                "the packs of {} did not end:\n{}",
                dir.display(),
                server.log()
            )
        },
        || {
            let log = server.log();
            let now = (answered(&log, "/v1/packs/"), answered(&log, "/v1/objects/"));
            if now != (last.0, last.1) {
                last = (now.0, now.1, Instant::now());
            }
            (now.0 > 0 && last.2.elapsed() > Duration::from_secs(2)).then_some(())
        },
    );
    let before = answered(&server.log(), "/v1/objects/");
    for f in &in_dir {
        assert_eq!(
            read(&mount.dir.join(f)).unwrap(),
            fs::read(reference.join(f)).unwrap()
        );
    }
    let alone = answered(&server.log(), "/v1/objects/") - before;
    assert!(
        alone < in_dir.len() / 4,
        "{alone} of the {} files of {} fetched one by one after its packs",
        in_dir.len(),
        dir.display()
    );
    // The whole root, read without pause, is right byte for byte.
    assert_same_tree(reference, &mount.dir);
    mount.stop();

    // With prefetch off, every file is one request, and the bytes are the same.
    let server = Server::start(env, "127.0.0.1:0");
    let mount = Mount::start(
        env,
        "whole-off",
        &server.url,
        &["--root", "full", "--no-prefetch"],
    );
    assert_same_tree(reference, &mount.dir);
    assert_eq!(answered(&server.log(), "/v1/packs/"), 0);
    mount.stop();
}

#[test]
fn a_server_without_packs_is_read_one_object_at_a_time() {
    let (env, reference) = shared();
    let server = Server::start(env, "127.0.0.1:0");
    let proxy = proxy::without(&server.url, "/v1/packs/");
    let mount = Mount::start(env, "no-packs", &proxy.url, &["--root", "full"]);
    assert_same_tree(reference, &mount.dir);
    let log = server.log();
    assert_eq!(answered(&log, "/v1/packs/"), 0, "{log}");
    assert!(
        answered(&log, "/v0/packs/") > 0,
        "prefetch never asked for a pack:\n{log}"
    );
    assert!(answered(&log, "/v1/objects/") > 0);
    let mount_log = mount.log();
    assert!(
        mount_log.contains("the server has no directory packs"),
        "the mount did not say it fell back:\n{mount_log}"
    );
    mount.stop();
}

/// The regular files directly in `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn a_pack_member_altered_on_the_way_fails_that_object_alone() {
    let (env, reference) = shared();
    let dir = "usr/bin";
    let siblings = files_in(&reference.join(dir));
    // A small file whose 64 bytes at its middle appear in no other file of the
    // directory: the proxy alters those bytes wherever it sees them.
    let (victim, marker) = siblings
        .iter()
        .filter(|p| (4096..=256 << 10).contains(&fs::metadata(p).unwrap().len()))
        .find_map(|p| {
            let bytes = fs::read(p).unwrap();
            let mid = bytes.len() / 2;
            let marker = bytes[mid..mid + 64].to_vec();
            let unique = siblings
                .iter()
                .all(|q| q == p || !fs::read(q).unwrap().windows(64).any(|w| w == &marker[..]));
            unique.then(|| (p.clone(), marker))
        })
        .expect("a file with bytes of its own in usr/bin");
    let mut altered = marker.clone();
    altered[0] ^= 0xff;
    let server = Server::start(env, "127.0.0.1:0");
    let proxy = tamper(&server.url, marker, altered);
    let mount = Mount::start(env, "tamper", &proxy.url, &["--root", "full"]);
    let name = victim.file_name().unwrap();
    // Listed, then read in order: a walk, which prefetches.
    assert_eq!(
        fs::read_dir(mount.path(dir)).unwrap().count(),
        fs::read_dir(reference.join(dir)).unwrap().count()
    );
    for file in &siblings {
        let through = mount.path(dir).join(file.file_name().unwrap());
        match read(&through) {
            Ok(bytes) => {
                assert_ne!(file.file_name().unwrap(), name, "altered bytes were served");
                assert_eq!(bytes, fs::read(file).unwrap(), "{}", file.display());
            }
            Err(e) => {
                assert_eq!(file.file_name().unwrap(), name, "{}: {e}", file.display());
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            }
        }
    }
    let log = mount.log();
    assert!(
        log.contains("in the pack from"),
        "the altered member was not seen in a pack:\n{log}"
    );
    assert!(answered(&server.log(), "/v1/packs/") > 0);
    mount.stop();
}

/// Bytes of the object files in a mount's cache directory.
pub(crate) fn cached_bytes(cache: &Path) -> u64 {
    walk(&cache.join("objects"))
        .into_iter()
        .filter_map(|p| fs::symlink_metadata(cache.join("objects").join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn prefetch_under_a_small_cache_keeps_the_bound_and_open_files() {
    let (env, reference) = shared();
    let bound: u64 = 3 << 20;
    let server = Server::start(env, "127.0.0.1:0");
    let mount = Mount::start(
        env,
        "small-cache",
        &server.url,
        &["--root", "full", "--cache-size", "3M"],
    );
    let cache = env.path("small-cache-cache");
    // A file held open (and read) for the whole test: it must stay.
    let held_rel = "bin/bash";
    let mut held = fs::File::open(mount.path(held_rel)).unwrap();
    let mut first = Vec::new();
    held.read_to_end(&mut first).unwrap();
    let held_size = first.len() as u64;
    assert!(held_size < bound);
    // Listing each directory and reading its first two files, as a walk does,
    // prefetches the others.
    let mut peak = 0;
    let mut dirs = 0;
    for rel in walk(reference) {
        let path = reference.join(&rel);
        if !fs::symlink_metadata(&path).unwrap().is_dir() {
            continue;
        }
        let files = files_in(&path);
        let rel_dir = rel.to_str().unwrap();
        assert!(fs::read_dir(mount.path(rel_dir)).unwrap().count() >= files.len());
        for file in files.iter().take(2) {
            let name = file.strip_prefix(reference).unwrap();
            let got = read(&mount.path(name.to_str().unwrap())).unwrap();
            assert_eq!(got, fs::read(file).unwrap(), "{}", name.display());
        }
        if files.len() > 2 {
            dirs += 1;
        }
        peak = peak.max(cached_bytes(&cache));
    }
    std::thread::sleep(Duration::from_millis(500));
    peak = peak.max(cached_bytes(&cache));
    assert!(dirs > 10, "only {dirs} directories");
    assert!(
        peak <= bound,
        "the cache held {peak} bytes, over its bound of {bound}"
    );
    // Still open, still served, from a cache file that was never evicted.
    let mut again = Vec::new();
    held.read_to_end(&mut again).unwrap();
    let mut whole = Vec::new();
    fs::File::open(mount.path(held_rel))
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap();
    assert_eq!(whole, fs::read(reference.join(held_rel)).unwrap());
    let id = crate::util::sha256_file(&reference.join(held_rel));
    assert!(
        cache.join("objects").join(&id[..2]).join(&id[2..]).exists(),
        "the open file's cache file was evicted"
    );
    assert!(
        answered(&server.log(), "/v1/packs/") > 0,
        "nothing was prefetched"
    );
    drop(held);
    mount.stop();
}

#[test]
fn a_walk_brings_a_directorys_large_files_unopened_within_the_bound() {
    let (env, reference) = shared();
    // A directory with a file over 1 MiB (packs carry none) whose first file is small:
    // listing it and reading that file is a walk.
    let (dir, large) = walk(reference)
        .into_iter()
        .filter(|rel| fs::symlink_metadata(reference.join(rel)).unwrap().is_dir())
        .find_map(|rel| {
            let files = files_in(&reference.join(&rel));
            let size = |p: &PathBuf| fs::metadata(p).unwrap().len();
            let large = files
                .iter()
                .filter(|p| size(p) > 1 << 20)
                .max_by_key(|p| size(p))?;
            (size(files.first()?) <= 1 << 20).then(|| (rel, large.clone()))
        })
        .expect("a directory with a file over 1 MiB");
    let large_size = fs::metadata(&large).unwrap().len();
    // Small: its share for prefetch (a quarter) just holds the large file.
    let mib = (4 * large_size).div_ceil(1 << 20) + 1;
    let bound = mib << 20;
    let server = Server::start(env, "127.0.0.1:0");
    let size_arg = format!("{mib}M");
    let mount = Mount::start(
        env,
        "large",
        &server.url,
        &["--root", "full", "--cache-size", &size_arg],
    );
    let cache = env.path("large-cache");
    let dir = dir.to_str().unwrap();
    let files = files_in(&reference.join(dir));
    assert!(
        fs::read_dir(mount.path(dir)).unwrap().count() >= files.len(),
        "{dir}"
    );
    let first = files[0].strip_prefix(reference).unwrap().to_str().unwrap();
    assert_eq!(
        read(&mount.path(first)).unwrap(),
        fs::read(&files[0]).unwrap()
    );
    // The large file arrives without being opened, and the bound holds meanwhile.
    let id = crate::util::sha256_file(&large);
    let object = cache.join("objects").join(&id[..2]).join(&id[2..]);
    let mut peak = 0;
    let mut arrived = false;
    // Generous: on a loaded machine the mount's start and the walk's fetches are slow.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        peak = peak.max(cached_bytes(&cache));
        arrived |= object.exists();
        if arrived {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        arrived,
        "{} ({large_size} bytes) did not arrive in the cache; mount log:\n{}",
        large.display(),
        mount.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    peak = peak.max(cached_bytes(&cache));
    assert!(
        peak <= bound,
        "the cache held {peak} bytes, over its bound of {bound}"
    );
    assert_eq!(
        answered(&server.log(), &format!("/v1/objects/{id}")),
        1,
        "the large file was not fetched once, ahead of use"
    );
    // Read now, every byte right.
    let name = large.strip_prefix(reference).unwrap().to_str().unwrap();
    assert_eq!(read(&mount.path(name)).unwrap(), fs::read(&large).unwrap());
    mount.stop();
}

/// A proxy to `upstream` that holds each request containing `needle` until `release`
/// is set, for `longest` at most, before passing it on (its reader's fetch then lasts
/// that long), saying in `seen` that one came.
fn holding(
    upstream: &str,
    needle: String,
    release: Arc<AtomicBool>,
    longest: Duration,
    seen: Arc<AtomicBool>,
) -> proxy::TcpProxy {
    proxy::TcpProxy::start(
        upstream,
        Arc::new(move |mut c: TcpStream, mut s: TcpStream, _: &AtomicBool| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // A request's head comes in one write: its first line is never split.
                if buf[..n]
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
                {
                    seen.store(true, Ordering::SeqCst);
                    let until = Instant::now() + longest;
                    while !release.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        }),
        Arc::new(|s, c, _: &AtomicBool| proxy::copy(s, c)),
    )
}

#[test]
fn a_walk_reaching_a_held_pack_has_it_fetched_rather_than_each_file_alone() {
    let (env, reference) = shared();
    let files: Vec<PathBuf> = walk(reference)
        .into_iter()
        .filter(|p| fs::symlink_metadata(reference.join(p)).unwrap().is_file())
        .collect();
    let size = |p: &Path| fs::metadata(reference.join(p)).unwrap().len();
    // The directory with the most files is walked; the largest file elsewhere is read
    // meanwhile by another reader whose fetch the proxy holds, so the directory's packs
    // give way to it (as they do to any reader's fetch) for as long as they may.
    let dir = {
        let mut count = std::collections::HashMap::<&Path, usize>::new();
        for f in &files {
            *count.entry(f.parent().unwrap()).or_default() += 1;
        }
        count.into_iter().max_by_key(|&(d, n)| (n, d)).unwrap().0
    };
    let slow = files
        .iter()
        .filter(|f| f.parent() != Some(dir))
        .max_by_key(|f| size(f))
        .unwrap();
    let slow_id = crate::util::sha256_file(&reference.join(slow));
    let seen = Arc::new(AtomicBool::new(false));
    let server = Server::start(env, "127.0.0.1:0");
    let proxy = holding(
        &server.url,
        format!("/v1/objects/{slow_id}"),
        Arc::new(AtomicBool::new(false)),
        Duration::from_secs(4),
        seen.clone(),
    );
    let mount = Mount::start(
        env,
        "promote",
        &proxy.url,
        &["--root", "full", "--timeout", "60s"],
    );
    let slow_path = mount.dir.join(slow);
    let other = std::thread::spawn(move || read(&slow_path).unwrap());
    crate::mount::eventually(
        Duration::from_secs(60),
        || "the held reader's request never reached the proxy".to_string(),
        || seen.load(Ordering::SeqCst).then_some(()),
    );
    // The walk: the directory listed, then every file in entry order, without pause.
    let entries: Vec<PathBuf> = fs::read_dir(mount.dir.join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.path())
        .collect();
    assert!(
        entries.len() >= 20,
        "{}: {} files",
        dir.display(),
        entries.len()
    );
    for path in &entries {
        let rel = path.strip_prefix(&mount.dir).unwrap();
        assert_eq!(read(path).unwrap(), fs::read(reference.join(rel)).unwrap());
    }
    // Its small files (those packs carry), but the first, which the walk's sign fetched
    // itself: the packs brought them, rather than one request each.
    let log = server.log();
    let small: Vec<String> = entries[1..]
        .iter()
        .map(|p| p.strip_prefix(&mount.dir).unwrap())
        .filter(|rel| size(rel) <= 1 << 20)
        .map(|rel| crate::util::sha256_file(&reference.join(rel)))
        .collect();
    let alone = small
        .iter()
        .filter(|id| answered(&log, &format!("/v1/objects/{id}")) > 0)
        .count();
    assert!(
        alone < small.len() / 4,
        "{alone} of the {} small files of {} were fetched one by one while its packs were \
         held back:\n{log}",
        small.len(),
        dir.display()
    );
    assert_eq!(
        other.join().unwrap(),
        fs::read(reference.join(slow)).unwrap()
    );
    mount.stop();
}

mod libraries;
