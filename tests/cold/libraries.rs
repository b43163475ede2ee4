//! Library prefetch: a starting program's loader and libraries reach the cache before
//! the loader asks for them, each fetched once, and none with `--no-prefetch`; the
//! root's loader, `ld.so.cache` and C library come while the executable itself is
//! still on its way, or as soon as a mount of that one root serves.

use super::{holding, shared};
use crate::mount::{Mount, Server, answered, eventually, read};
use crate::util::walk;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The regular file `rel` names in the checkout `root`, following its symlinks inside
/// the checkout (an absolute target starts again at `root`), as the root's own loader
/// would in a chroot.
fn in_root(root: &Path, rel: &str) -> PathBuf {
    let mut path = PathBuf::new();
    let mut todo: Vec<String> = rel.split('/').rev().map(String::from).collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        match name.as_str() {
            "" | "." => continue,
            ".." => {
                path.pop();
                continue;
            }
            _ => path.push(&name),
        }
        let meta = fs::symlink_metadata(root.join(&path)).unwrap();
        if meta.file_type().is_symlink() {
            links += 1;
            assert!(links < 40, "{rel}: too many links");
            let target = fs::read_link(root.join(&path)).unwrap();
            let target = target.to_str().unwrap();
            path.pop();
            if target.starts_with('/') {
                path = PathBuf::new();
            }
            todo.extend(target.split('/').rev().map(String::from));
        }
    }
    root.join(path)
}

#[test]
fn a_programs_libraries_arrive_unopened_once_its_executable_is_read() {
    let (env, reference) = shared();
    let id = |rel: &str| crate::util::sha256_file(&in_root(reference, rel));
    let bash = id("/bin/bash");
    let libraries = [
        ("the loader", id("/lib64/ld-linux-x86-64.so.2")),
        ("libtinfo", id("/lib/x86_64-linux-gnu/libtinfo.so.6")),
        ("libc", id("/lib/x86_64-linux-gnu/libc.so.6")),
    ];
    // An executable that is no ELF object (a shell script).
    let script = walk(reference)
        .into_iter()
        .filter(|rel| rel.starts_with("usr/bin") || rel.starts_with("bin"))
        .find(|rel| {
            let meta = fs::symlink_metadata(reference.join(rel)).unwrap();
            meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
                && fs::read(reference.join(rel)).unwrap().starts_with(b"#!")
        })
        .expect("a shell script in the root");
    let script_id = crate::util::sha256_file(&reference.join(&script));

    let server = Server::start(env, "127.0.0.1:0");
    let mount = Mount::start(env, "elf", &server.url, &["--root", "full"]);
    let ld_cache = in_root(reference, "/etc").join("ld.so.cache");
    let mut known = vec![script_id.clone(), bash.clone()];
    known.extend(libraries.iter().map(|(_, id)| id.clone()));
    if ld_cache.exists() {
        known.push(crate::util::sha256_file(&ld_cache));
    }
    // Requests for objects other than those: the commit's, already at the start (the
    // root's loader and libc may be on their way too: the mount shows one root).
    let others = |log: &str| {
        answered(log, "/v1/objects/")
            - known
                .iter()
                .map(|id| answered(log, &format!("/v1/objects/{id}")))
                .sum::<usize>()
    };
    let at_start = others(&server.log());
    let cache = env.path("elf-cache");
    let cached = |id: &str| cache.join("objects").join(&id[..2]).join(&id[2..]).exists();
    assert_eq!(
        read(&mount.path(script.to_str().unwrap())).unwrap(),
        fs::read(reference.join(&script)).unwrap()
    );
    assert_eq!(
        read(&mount.path("bin/bash")).unwrap(),
        fs::read(in_root(reference, "/bin/bash")).unwrap()
    );
    // The libraries arrive without anything opening them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !libraries.iter().all(|(_, id)| cached(id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = server.log();
    for (what, id) in &libraries {
        assert!(
            cached(id),
            "{what} ({id}) did not arrive in the cache; mount log:\n{}",
            mount.log()
        );
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id}")),
            1,
            "{what} was not fetched once"
        );
    }
    // Nothing else was fetched, and each of those once: the mount (or the script)
    // brought what almost every program needs (the loader, ld.so.cache, libc), bash
    // its own libraries.
    assert_eq!(
        others(&log),
        at_start,
        "objects fetched besides the script ({script_id}), bash ({bash}) and its \
         libraries; server log:\n{log}"
    );
    for id in &known {
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id}")),
            1,
            "{id}: {log}"
        );
    }
    let expected = answered(&log, "/v1/objects/");
    // Read through the mount, every byte right, and not fetched again.
    let libc = in_root(reference, "/lib/x86_64-linux-gnu/libc.so.6");
    assert_eq!(
        read(&mount.path("lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
        fs::read(&libc).unwrap()
    );
    assert_eq!(answered(&server.log(), "/v1/objects/"), expected);
    mount.stop();

    // With prefetch off, reading bash brings nothing more.
    let mount = Mount::start(
        env,
        "elf-off",
        &server.url,
        &["--root", "full", "--no-prefetch"],
    );
    let before = answered(&server.log(), "/v1/objects/");
    read(&mount.path("bin/bash")).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let log = server.log();
    assert_eq!(answered(&log, "/v1/objects/"), before + 1, "{log}");
    for (what, id) in &libraries {
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id}")),
            1,
            "{what} was fetched with --no-prefetch"
        );
    }
    mount.stop();
}

#[test]
fn a_roots_loader_and_libc_arrive_while_its_first_executable_is_held() {
    let (env, reference) = shared();
    let id = |rel: &str| crate::util::sha256_file(&in_root(reference, rel));
    let bash = id("/bin/bash");
    let mut common = vec![
        ("the loader", id("/lib64/ld-linux-x86-64.so.2")),
        ("libc", id("/lib/x86_64-linux-gnu/libc.so.6")),
    ];
    if in_root(reference, "/etc").join("ld.so.cache").exists() {
        common.push(("ld.so.cache", id("/etc/ld.so.cache")));
    }
    let libtinfo = id("/lib/x86_64-linux-gnu/libtinfo.so.6");
    // The executable's request is held at a proxy until the test lets it go: its
    // reader's fetch lasts until then, and nothing of it reaches the cache.
    let server = Server::start(env, "127.0.0.1:0");
    let (release, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let proxy = holding(
        &server.url,
        format!("/v1/objects/{bash}"),
        release.clone(),
        Duration::from_secs(300),
        seen.clone(),
    );
    // Both roots shown: nothing is fetched before a program starts (see
    // `a_mount_of_one_root_fetches_its_loader_and_libc_before_any_program`).
    let mount = Mount::start(env, "elf-held", &proxy.url, &["--timeout", "600s"]);
    let cache = env.path("elf-held-cache");
    let cached = |id: &str| cache.join("objects").join(&id[..2]).join(&id[2..]).exists();
    std::thread::sleep(Duration::from_millis(500));
    for (what, id) in &common {
        assert!(!cached(id), "{what} came before any program started");
    }
    let path = mount.path("full/bin/bash");
    let reader = std::thread::spawn(move || read(&path).unwrap());
    eventually(
        Duration::from_secs(120),
        || "the request for bash never reached the proxy".to_string(),
        || seen.load(Ordering::SeqCst).then_some(()),
    );
    // While bash is held, what every program of the root needs arrives unopened.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !common.iter().all(|(_, id)| cached(id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let held_log = server.log();
    let missing: Vec<&str> = common
        .iter()
        .filter(|(_, id)| !cached(id))
        .map(|(what, _)| *what)
        .collect();
    release.store(true, Ordering::SeqCst);
    assert!(
        missing.is_empty(),
        "{missing:?} did not arrive while bash was held; mount log:\n{}",
        mount.log()
    );
    // bash's own libraries are known only from its headers: not asked for yet.
    assert_eq!(answered(&held_log, &format!("/v1/objects/{libtinfo}")), 0);
    assert_eq!(answered(&held_log, &format!("/v1/objects/{bash}")), 0);
    assert!(!cached(&bash));
    // Once bash is there, every byte right, its own libraries follow; each object is
    // fetched once.
    assert_eq!(
        reader.join().unwrap(),
        fs::read(in_root(reference, "/bin/bash")).unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cached(&libtinfo) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        cached(&libtinfo),
        "libtinfo never came; mount log:\n{}",
        mount.log()
    );
    let log = server.log();
    for (what, id) in common
        .iter()
        .chain([("bash", bash.clone()), ("libtinfo", libtinfo)].iter())
    {
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id}")),
            1,
            "{what} was not fetched once; server log:\n{log}"
        );
    }
    mount.stop();
}

#[test]
fn a_mount_of_one_root_fetches_its_loader_and_libc_before_any_program() {
    let (env, reference) = shared();
    let id = |rel: &str| crate::util::sha256_file(&in_root(reference, rel));
    let mut common = vec![
        ("the loader", id("/lib64/ld-linux-x86-64.so.2")),
        ("libc", id("/lib/x86_64-linux-gnu/libc.so.6")),
    ];
    if in_root(reference, "/etc").join("ld.so.cache").exists() {
        common.push(("ld.so.cache", id("/etc/ld.so.cache")));
    }
    let server = Server::start(env, "127.0.0.1:0");
    let mount = Mount::start(env, "elf-serving", &server.url, &["--root", "full"]);
    let cache = env.path("elf-serving-cache");
    let cached = |id: &str| cache.join("objects").join(&id[..2]).join(&id[2..]).exists();
    // Nothing opens a file: they come all the same, each once.
    eventually(
        Duration::from_secs(120),
        || format!("{common:?} did not all arrive; mount log:\n{}", mount.log()),
        || common.iter().all(|(_, id)| cached(id)).then_some(()),
    );
    let log = server.log();
    for (what, id) in &common {
        assert_eq!(
            answered(&log, &format!("/v1/objects/{id}")),
            1,
            "{what} was not fetched once; server log:\n{log}"
        );
    }
    // And read through the mount, every byte right, without another fetch.
    assert_eq!(
        read(&mount.path("lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
        fs::read(in_root(reference, "/lib/x86_64-linux-gnu/libc.so.6")).unwrap()
    );
    assert_eq!(
        answered(&server.log(), "/v1/objects/"),
        answered(&log, "/v1/objects/")
    );
    mount.stop();
}
