//! Access profiles: `canopy profile record` runs bash in a real root and writes the
//! files it read into a new signed commit of the same tree; a fresh host (fresh mount,
//! empty cache) replays it before any program runs: the files arrive byte-identical in
//! a few requests, and the program then runs with no object requests. A bogus profile
//! is refused and the root still works; a small cache bound holds while a profile larger
//! than its share replays. Servers that alter, fail or lack profile packs: [`servers`].

mod servers;

use crate::cold::cached_bytes;
use crate::debs::{self, ROOT_PACKAGES};
use crate::mount::{Mount, Server, answered, eventually, read};
use crate::util::{Canopy, cmd, sha256_file};
use canopy_protocol::profile::Profile;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// What the profile records: bash, coreutils programs, their libraries, a file of /etc.
const SCRIPT: &str = "sort --version; ls /usr/lib; cat /etc/os-release; id -u";

/// One store with root `web` (profiled), root `bogus` (a signed commit whose profile
/// names paths outside the root) and root `later` (profiled by its test), the profile's
/// paths, and a checkout of `web`.
struct Shared {
    env: Canopy,
    reference: PathBuf,
    paths: Vec<String>,
    /// Files of the profile too large for packs (fetched as objects).
    large: u64,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let env = Canopy::init("profile");
        env.cmd(["import", "deb"])
            .args(debs::paths(ROOT_PACKAGES))
            .success();
        for root in ["web", "bogus", "later"] {
            env.cmd(["assemble", root]).args(ROOT_PACKAGES).success();
        }
        let before = env.json(["roots", "show", "web"]);
        let out = env
            .cmd([
                "profile",
                "record",
                "web",
                "--json",
                "--",
                "/bin/bash",
                "-c",
                SCRIPT,
            ])
            .stdout();
        let recorded: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(recorded["written"], true, "{recorded}");
        assert_eq!(recorded["exit_status"], 0, "{recorded}");
        // A new commit of the same tree, on top of the one before.
        let after = env.json(["roots", "show", "web"]);
        assert_eq!(after["tree"], before["tree"]);
        assert_eq!(after["parent"], before["commit"]);
        assert_eq!(after["commit"], recorded["commit"]);
        let paths: Vec<String> = recorded["profile"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        for expected in ["bin/bash", "usr/bin/sort", "bin/ls", "usr/lib/os-release"] {
            assert!(paths.iter().any(|p| p == expected), "{expected}: {paths:?}");
        }
        let shown = env.json(["profile", "show", "web"]);
        assert_eq!(shown["profile"]["paths"], recorded["profile"]["paths"]);
        let large = shown["replay"]["large"].as_u64().unwrap();

        // Signed by the store's key, but naming paths outside the root.
        let store = canopy_server::Store::open(env.store(), canopy_server::Access::Write).unwrap();
        let bogus = Profile {
            command: vec!["/bin/true".into()],
            paths: vec!["bin/bash".into(), "../../etc/shadow".into()],
            ..Profile::default()
        };
        // `profile::set` refuses it: the commit is made by hand.
        let name: canopy_protocol::RootName = "bogus".parse().unwrap();
        let head = store.root_ref(&name).unwrap().unwrap();
        let mut body = store.commit(&head).unwrap().body;
        body.extensions
            .insert("profile".into(), serde_json::to_vec(&bogus).unwrap());
        body.parent = Some(head);
        body.generation += 1;
        let signed = body.sign(&store.signing_key().unwrap());
        let mut txn = store.begin().unwrap();
        let id = txn.put_commit(&signed).unwrap();
        txn.operation("profile");
        txn.set_root(&name, Some(head), id);
        txn.commit().unwrap();
        drop(store);

        let reference = env.path("web-checkout");
        env.cmd(["checkout", "web"]).arg(&reference).success();
        Shared {
            env,
            reference,
            paths,
            large,
        }
    })
}

/// The cache file of the content of `file`.
fn cache_file(cache: &Path, file: &Path) -> PathBuf {
    let id = sha256_file(file);
    cache.join("objects").join(&id[..2]).join(&id[2..])
}

/// Waits until the mount's log says its profile was replayed.
fn replayed(mount: &Mount) {
    eventually(
        Duration::from_secs(60),
        || format!("the profile was not replayed:\n{}", mount.log()),
        || mount.log().contains("replayed the profile").then_some(()),
    );
}

/// Runs the profile's script in the mounted root, as the recorded program did, and
/// checks what it printed.
fn run_script(mount: &Mount) {
    let out = cmd("chroot")
        .arg(&mount.dir)
        .args(["/bin/bash", "-c", SCRIPT])
        .stdout();
    assert!(
        out.contains("sort (GNU coreutils)") && out.ends_with("0\n"),
        "{out}"
    );
}

#[test]
fn a_fresh_host_replays_the_profile_before_the_program_runs() {
    let s = shared();
    let server = Server::start(&s.env, "127.0.0.1:0");
    // Without directory prefetch: only the profile brings files ahead of use.
    let mount = Mount::start(
        &s.env,
        "fresh",
        &server.url,
        &["--root", "web", "--no-prefetch"],
    );
    replayed(&mount);
    let cache = s.env.path("fresh-cache");
    // Every profiled file is in the cache, byte-identical, though nothing read it.
    for path in &s.paths {
        let file = s.reference.join(path);
        let cached = fs::read(cache_file(&cache, &file))
            .unwrap_or_else(|e| panic!("{path} is not in the cache: {e}"));
        assert_eq!(cached, fs::read(&file).unwrap(), "{path}");
    }
    // In a few requests: profile packs, the large files one each, and the commit.
    let log = server.log();
    let packs = answered(&log, "/v1/packs/profile/");
    let objects = server.object_requests() as u64;
    assert!(packs >= 1, "no profile pack was asked for:\n{log}");
    assert!(
        objects <= 1 + s.large,
        "{objects} object requests for {} profiled files ({} large):\n{log}",
        s.paths.len(),
        s.large
    );
    assert!((packs as u64 + objects) < s.paths.len() as u64);

    // The program then finds what it reads in the cache.
    let before = server.object_requests();
    run_script(&mount);
    let during = server.object_requests() - before;
    assert!(
        during <= 1,
        "the profiled program made {during} object requests:\n{}",
        server.log()
    );
    mount.stop();

    // With --no-profile, nothing is replayed.
    let server = Server::start(&s.env, "127.0.0.1:0");
    let mount = Mount::start(
        &s.env,
        "no-profile",
        &server.url,
        &["--root", "web", "--no-prefetch", "--no-profile"],
    );
    assert_eq!(
        read(&mount.path("usr/bin/sort")).unwrap(),
        fs::read(s.reference.join("usr/bin/sort")).unwrap()
    );
    assert_eq!(answered(&server.log(), "/v1/packs/profile/"), 0);
    mount.stop();
}

#[test]
fn a_bogus_profile_is_refused_and_the_root_still_works() {
    let s = shared();
    let shown = s.env.fails(["profile", "show", "bogus"]);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("bogus")
            && stderr.contains("../../etc/shadow")
            && stderr.contains("canopy profile drop bogus"),
        "{stderr}"
    );
    let server = Server::start(&s.env, "127.0.0.1:0");
    let mount = Mount::start(
        &s.env,
        "bogus",
        &server.url,
        &["--root", "bogus", "--no-prefetch"],
    );
    eventually(
        Duration::from_secs(30),
        || format!("the bogus profile was not refused:\n{}", mount.log()),
        || {
            mount
                .log()
                .contains("not replaying the profile of commit")
                .then_some(())
        },
    );
    let out = cmd("chroot")
        .arg(&mount.dir)
        .args(["/bin/bash", "-c", "echo ok"])
        .stdout();
    assert_eq!(out, "ok\n");
    assert_eq!(answered(&server.log(), "/v1/packs/profile/"), 0);
    mount.stop();
}

#[test]
fn only_the_program_is_recorded_and_a_command_that_never_ran_writes_nothing() {
    let s = shared();
    // A root of its own, with the users and groups canopy run reads before the program
    // (cat reads neither; bash would, through the C library).
    let users = s.env.path("own-users");
    fs::create_dir_all(users.join("etc")).unwrap();
    fs::write(
        users.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nzed:x:1000:1000::/home/zed:/bin/bash\n",
    )
    .unwrap();
    fs::write(users.join("etc/group"), "root:x:0:\nzed:x:1000:\n").unwrap();
    s.env
        .cmd(["import", "dir"])
        .arg(&users)
        .args(["--name", "own-users"])
        .success();
    s.env
        .cmd(["assemble", "own"])
        .args(ROOT_PACKAGES)
        .arg("own-users")
        .success();
    let out = s
        .env
        .cmd([
            "profile",
            "record",
            "own",
            "--dry-run",
            "--json",
            "--",
            "/bin/cat",
            "/etc/os-release",
        ])
        .stdout();
    let recorded: serde_json::Value = serde_json::from_str(&out).unwrap();
    let paths = recorded["profile"]["paths"].as_array().unwrap();
    assert!(paths.iter().any(|p| p == "usr/lib/os-release"), "{paths:?}");
    for own in ["etc/passwd", "etc/group"] {
        assert!(!paths.iter().any(|p| p == own), "{own}: {paths:?}");
    }

    let before = s.env.json(["roots", "show", "own"]);
    for command in [
        &["/no/such/program"][..],
        &["/bin/bash", "-c", "exit 127"][..],
        &["/etc/os-release"][..],
    ] {
        let failed = s
            .env
            .fails(["profile", "record", "own", "--"].iter().chain(command));
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains("no profile written"),
            "{command:?}: {stderr}"
        );
    }
    assert_eq!(
        s.env.json(["roots", "show", "own"])["commit"],
        before["commit"]
    );

    // The command is shown escaped.
    let out = s
        .env
        .cmd([
            "profile",
            "record",
            "own",
            "--dry-run",
            "--",
            "/bin/bash",
            "-c",
            "cat /etc/os-release # \u{1b}]0;title\u{7}",
        ])
        .stdout();
    assert!(
        out.contains("usr/lib/os-release") && !out.contains('\u{1b}'),
        "{out:?}"
    );
}

#[test]
fn a_profile_larger_than_its_share_keeps_the_cache_bound() {
    let s = shared();
    let bound: u64 = 3 << 20;
    let server = Server::start(&s.env, "127.0.0.1:0");
    let mount = Mount::start(
        &s.env,
        "small",
        &server.url,
        &["--root", "web", "--no-prefetch", "--cache-size", "3M"],
    );
    let cache = s.env.path("small-cache");
    let mut peak = 0;
    eventually(
        Duration::from_secs(60),
        || format!("the profile was not replayed:\n{}", mount.log()),
        || {
            peak = peak.max(cached_bytes(&cache));
            mount.log().contains("replayed the profile").then_some(())
        },
    );
    let log = mount.log();
    assert!(log.contains("only its first files are replayed"), "{log}");
    // Its share (a quarter of 3M) went to the profile's first small files.
    let share = bound / 4;
    let replayed = cached_bytes(&cache);
    assert!(
        replayed > 0 && replayed <= share,
        "{replayed} bytes replayed"
    );
    // Every file still reads right, the cache evicting as it goes.
    for path in &s.paths {
        assert_eq!(
            read(&mount.path(path)).unwrap(),
            fs::read(s.reference.join(path)).unwrap(),
            "{path}"
        );
        peak = peak.max(cached_bytes(&cache));
    }
    assert!(
        peak <= bound,
        "the cache held {peak} bytes, over its bound of {bound}"
    );
    mount.stop();
}

#[test]
fn a_following_host_replays_a_profile_recorded_later_and_kept_by_upgrades() {
    let s = shared();
    let server = Server::start(&s.env, "127.0.0.1:0");
    let mount = Mount::start(
        &s.env,
        "later",
        &server.url,
        &[
            "--root",
            "later",
            "--follow",
            "--interval",
            "200ms",
            "--no-prefetch",
        ],
    );
    let cache = s.env.path("later-cache");
    // A file read and held open before the root moves on.
    let mut held = fs::File::open(mount.path("usr/bin/sort")).unwrap();
    let mut first = vec![0u8; 4096];
    std::io::Read::read_exact(&mut held, &mut first).unwrap();
    let trees = answered(&server.log(), "/v1/trees/");
    let out = s
        .env
        .cmd([
            "profile",
            "record",
            "later",
            "--",
            "/bin/bash",
            "-c",
            SCRIPT,
        ])
        .stdout();
    assert!(out.contains("with this profile"), "{out}");
    replayed(&mount);
    let recorded = s.env.json(["profile", "show", "later"]);
    for path in recorded["profile"]["paths"].as_array().unwrap() {
        let path = path.as_str().unwrap();
        // `later` has the tree of `web`, whose checkout is the reference.
        let file = s.reference.join(path);
        assert!(
            cache_file(&cache, &file).exists(),
            "{path} was not replayed"
        );
    }
    // The tree did not change: nothing fetched for it, and the open file reads on.
    assert_eq!(
        answered(&server.log(), "/v1/trees/"),
        trees,
        "the switch to a commit of the same tree fetched trees:\n{}",
        server.log()
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut rest).unwrap();
    first.extend(rest);
    assert_eq!(first, fs::read(s.reference.join("usr/bin/sort")).unwrap());

    // A new version of the root keeps the profile, and is replayed in turn.
    let without_mawk: Vec<&str> = ROOT_PACKAGES
        .iter()
        .copied()
        .filter(|p| *p != "mawk")
        .collect();
    s.env
        .cmd(["assemble", "later"])
        .args(&without_mawk)
        .success();
    let upgraded = s.env.json(["profile", "show", "later"]);
    assert_ne!(upgraded["commit"], recorded["commit"]);
    assert_eq!(upgraded["profile"], recorded["profile"]);
    let new = upgraded["commit"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(30),
        || format!("commit {new} was not replayed:\n{}", mount.log()),
        || {
            mount
                .log()
                .contains(&format!("replayed the profile of commit {new}"))
                .then_some(())
        },
    );
    drop(held);
    mount.stop();
}

/// The profile's replay, directory prefetch and library prefetch on at once (as by
/// default), and the program run right after the mount: none fetches a file another is
/// fetching, so no object is asked for twice.
#[test]
fn replay_and_prefetch_together_fetch_each_object_once() {
    let s = shared();
    let server = Server::start(&s.env, "127.0.0.1:0");
    let mount = Mount::start(&s.env, "both", &server.url, &["--root", "web"]);
    run_script(&mount);
    replayed(&mount);
    let log = server.log();
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for line in log.lines().filter(|l| l.contains("answered")) {
        let Some(at) = line.find("uri=/v1/objects/") else {
            continue;
        };
        let id = &line[at + "uri=/v1/objects/".len()..];
        let id = id.split([' ', '?']).next().unwrap();
        *counts.entry(id).or_default() += 1;
    }
    assert!(!counts.is_empty(), "no object requests:\n{log}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "objects asked for more than once: {twice:?}\nserver log:\n{log}\nmount log:\n{}",
        mount.log()
    );
    mount.stop();
}
