//! A root's life after assembly, through the real binary: looking into it without
//! mounting (`roots show`, `ls`, `cat`, `owner`, any commit as `ROOT@COMMIT`), checked
//! against a checkout and the packages' own listings; listings that meet a closed
//! stdout; errors that name the store and suggest a name; a server and a mount that
//! take `ROOT@COMMIT` too, and mountpoints a mount must refuse; removing roots and
//! packages (kept by the reflog until pruned), and checkouts that share every inode.

use crate::debs;
use crate::mount::{Mount, Nginx, Server, is_mounted};
use crate::util::{Canopy, cmd, count_tree, is_hex64, walk};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

/// A store with every test package imported and root `web` assembled from all of them.
fn web(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(debs::ROOT_PACKAGES))
        .success();
    env.cmd(["assemble", "web"])
        .args(debs::ROOT_PACKAGES)
        .success();
    env
}

/// The paths a .deb ships (`/usr/bin/id`…), from `dpkg-deb -c`, as the package's own
/// answer to "who owns this".
fn shipped(deb: &Path) -> BTreeSet<String> {
    cmd("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .stdout()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| format!("/{}", p.trim_start_matches("./").trim_end_matches('/')))
        .filter(|p| p != "/")
        .collect()
}

#[test]
fn inspection_without_mounting_agrees_with_a_checkout() {
    let env = web("inspect");
    let dir = env.path("web");
    let out: Value = serde_json::from_str(
        &env.cmd(["checkout", "web"])
            .arg(&dir)
            .arg("--json")
            .stdout(),
    )
    .unwrap();

    // roots show: the ids, the signer, and counts that match the checkout.
    let show = env.json(["roots", "show", "web"]);
    for key in ["commit", "tree", "signer"] {
        assert!(
            is_hex64(show[key].as_str().unwrap_or_default()),
            "{key}: {show}"
        );
    }
    assert_eq!(show["commit"], out["commit"], "{show}");
    assert_eq!(show["tree"], out["tree"], "{show}");
    assert_eq!(show["commit"], env.current("web").as_str());
    assert_eq!(
        format!("{}\n", show["signer"].as_str().unwrap()),
        env.stdout(["key", "show"])
    );
    assert_eq!(
        (&show["signature_ok"], &show["current"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        (&show["parent"], &show["generation"]),
        (&Value::Null, &json!(1))
    );
    let counts = count_tree(&dir);
    assert_eq!(show["files"], counts.files, "{show}");
    assert_eq!(show["symlinks"], counts.symlinks, "{show}");
    assert_eq!(show["dirs"], counts.dirs, "{show}");
    let size: u64 = walk(&dir)
        .iter()
        .map(|rel| fs::symlink_metadata(dir.join(rel)).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert_eq!(show["size"], size, "{show}");
    assert_eq!(
        show["packages"].as_array().map(Vec::len),
        Some(debs::ROOT_PACKAGES.len())
    );
    // The human form states the same facts.
    let human = env.stdout(["roots", "show", "web"]);
    for fact in [
        format!("commit     {}", show["commit"].as_str().unwrap()),
        format!("tree       {}", show["tree"].as_str().unwrap()),
        format!(
            "{} files, {} dirs, {} symlinks",
            counts.files, counts.dirs, counts.symlinks
        ),
        format!("packages   {}", debs::ROOT_PACKAGES.len()),
    ] {
        assert!(
            human.contains(&fact),
            "`roots show` lacks {fact:?}:\n{human}"
        );
    }

    // ls: the names, modes, owners and sizes of the checkout.
    for path in ["/", "/usr/bin", "/etc", "/lib64"] {
        let listed = env.json(["ls", "web", path]);
        let names: BTreeSet<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        let on_disk: BTreeSet<String> = fs::read_dir(dir.join(path.trim_start_matches('/')))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, on_disk, "ls {path}");
        for e in listed.as_array().unwrap() {
            let p = dir
                .join(path.trim_start_matches('/'))
                .join(e["name"].as_str().unwrap());
            let m = fs::symlink_metadata(&p).unwrap();
            assert_eq!(e["mode"], format!("{:04o}", m.mode() & 0o7777), "{e}");
            assert_eq!(
                (&e["uid"], &e["gid"]),
                (&json!(m.uid()), &json!(m.gid())),
                "{e}"
            );
            match e["kind"].as_str().unwrap() {
                "file" => assert_eq!(e["size"], m.len(), "{e}"),
                "symlink" => assert_eq!(e["target"], fs::read_link(&p).unwrap().to_str().unwrap()),
                "dir" => assert!(m.is_dir()),
                other => panic!("unexpected kind {other} in {e}"),
            }
        }
        let human: BTreeSet<String> = env
            .stdout(["ls", "web", path])
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(human, on_disk, "ls {path} (text)");
    }
    let long = env.stdout(["ls", "web", "/bin/bash", "--long"]);
    let bash = fs::metadata(dir.join("bin/bash")).unwrap();
    assert!(
        long.starts_with("-rwxr-xr-x ") && long.contains(&format!(" {} bash", bash.len())),
        "{long}"
    );
    let link = env.stdout(["ls", "web", "/lib64/ld-linux-x86-64.so.2", "--long"]);
    assert!(
        link.starts_with('l') && link.contains(" -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        "{link}"
    );

    // cat: file contents, with symlinks resolved inside the root (/etc/os-release is a
    // relative link to ../usr/lib/os-release; /lib64/ld… an absolute one).
    for path in [
        "/etc/os-release",
        "/bin/bash",
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/debian_version",
    ] {
        let got = env.cmd(["cat", "web", path]).success().stdout;
        let want = fs::read(dir.join(path.trim_start_matches('/'))).unwrap();
        assert!(
            got == want,
            "cat {path}: {} bytes, the checkout has {}",
            got.len(),
            want.len()
        );
    }
    let err = env.fails(["cat", "web", "/usr/bin"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("is a directory, not a file") && err.contains("canopy ls web /usr/bin"),
        "{err}"
    );
    let err = env.fails(["cat", "web", "/etc/no-such-file"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("/etc/no-such-file: no such file or directory") && err.contains("root web"),
        "{err}"
    );

    // owner: each path's package is the one whose archive lists it.
    for name in ["bash", "coreutils", "libc6", "mawk", "base-files"] {
        let deb = debs::deb(name);
        let listed = shipped(&deb.path);
        for path in listed
            .iter()
            .filter(|p| dir.join(p.trim_start_matches('/')).is_file())
            .take(3)
        {
            let owner = env.json(["owner", "web", path]);
            assert_eq!(owner["origin"], "package", "{path}: {owner}");
            let names: Vec<&str> = owner["packages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, [name], "{path}: {owner}");
            assert_eq!(owner["packages"][0]["version"], deb.version.as_str());
        }
    }
    let owner = env.stdout(["owner", "web", "/bin/bash"]);
    assert_eq!(
        owner,
        format!("/bin/bash: bash {} (amd64)\n", debs::deb("bash").version)
    );
    // A directory many packages ship lists them all.
    let doc = env.json(["owner", "web", "/usr/share/doc"]);
    assert_eq!(
        doc["packages"].as_array().map(Vec::len),
        Some(debs::ROOT_PACKAGES.len()),
        "{doc}"
    );
    let missing = env.fails(["owner", "web", "/usr/bin/awk"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such file or directory"));

    // Any commit, as ROOT@PREFIX: after a second version, the first is still readable.
    let first = env.current("web");
    env.cmd(["assemble", "web", "libc6", "gcc-12-base", "libgcc-s1"])
        .success();
    env.fails(["cat", "web", "/bin/bash"]);
    let old = env
        .cmd(["cat", &format!("web@{}", &first[..8]), "/bin/bash"])
        .success()
        .stdout;
    assert!(old == fs::read(dir.join("bin/bash")).unwrap());
    let show_old = env.json(["roots", "show", &format!("web@{}", &first[..8])]);
    assert_eq!(
        (&show_old["commit"], &show_old["current"]),
        (&json!(first), &json!(false))
    );
    let err = env.fails(["ls", "web@ffffffffff", "/"]);
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains("no commit ffffffffff in the history of root web")
    );
    let err = env.fails(["ls", "web@xyz", "/"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("is not a commit id or prefix"));
}

/// A pipe whose reading end is already closed: every write to it fails with EPIPE,
/// whatever the amount written, so the test does not depend on timing.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn listings_end_quietly_when_stdout_is_closed() {
    let env = web("closed-pipe");
    env.cmd([
        "assemble",
        "web",
        "bash",
        "libc6",
        "gcc-12-base",
        "libgcc-s1",
        "libtinfo6",
    ])
    .success();
    let listings: &[&[&str]] = &[
        &["packages", "list"],
        &["packages", "list", "--json"],
        &["roots", "list"],
        &["roots", "list", "--json"],
        &["roots", "log", "web"],
        &["roots", "log", "web", "--json"],
        &["roots", "diff", "web"],
        &["roots", "diff", "web", "--json"],
        &["roots", "show", "web"],
        &["roots", "show", "web", "--json"],
        &["ls", "web", "/usr/bin"],
        &["ls", "web", "/usr/bin", "--long"],
        &["ls", "web", "/usr/bin", "--json"],
        &["cat", "web", "/bin/bash"],
        &["owner", "web", "/bin/bash"],
        &["repo", "list", "--json"],
        &["fsck"],
        &["fsck", "--json"],
        &["key", "show"],
    ];
    for args in listings {
        let out = std::process::Command::new(crate::util::BIN)
            .arg("--store")
            .arg(env.store())
            .args(*args)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) && stderr.is_empty(),
            "canopy {} on a closed stdout: {}, stderr:\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    // The pipeline of the README's kind, as a shell runs it: status 141, no message.
    let out = cmd("bash")
        .arg("-c")
        .arg(format!(
            "{} --store {} cat web /bin/bash | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
            crate::util::BIN,
            env.store().display()
        ))
        .success();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "141\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_name_the_store_and_suggest_names() {
    let env = web("names");
    let store = env.store().display().to_string();
    let err = env.fails(["roots", "show", "wbe"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains(&format!(
            "no root named wbe in the store at {store}; did you mean web?"
        )),
        "{err}"
    );
    let err = env.fails(["checkout", "pg", "/tmp/never"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains(&format!("no root named pg in the store at {store}")),
        "{err}"
    );
    let err = env.fails(["assemble", "x", "bsah"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("did you mean bash?"), "{err}");
    let err = env.fails(["assemble", "x", "--from", "nowhere", "bash"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("no repository named nowhere"), "{err}");

    // `roots diff` of a root with one commit is no error.
    let out = env.stdout(["roots", "diff", "web"]);
    assert!(
        out.contains("is the root's first: nothing to compare it with"),
        "{out}"
    );
    let diff = env.json(["roots", "diff", "web"]);
    assert_eq!(
        (&diff["old"], &diff["packages"], &diff["paths"]),
        (&Value::Null, &json!([]), &json!([]))
    );

    // A tarball imported under a second name is a second package; objects are shared.
    let tar = env.path("base.tar");
    fs::write(env.mkdir("tree").join("hello"), "hello\n").unwrap();
    cmd("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(env.path("tree"))
        .arg(".")
        .success();
    let import = |name: &str| {
        env.json(["import", "tar", tar.to_str().unwrap(), "--name", name])["packages"][0].clone()
    };
    let base = import("base");
    assert_eq!(base["outcome"], "imported", "{base}");
    let again = import("base");
    assert_eq!(again["outcome"], "skipped", "{again}");
    let base2 = import("base2");
    assert_eq!(
        (&base2["outcome"], &base2["name"]),
        (&json!("imported"), &json!("base2")),
        "{base2}"
    );
    assert_eq!(base2["archive"], base["archive"], "the same tarball");
    assert_eq!(base2["tree"], base["tree"], "the same content");
    assert_eq!(
        base2["new_objects"], 1,
        "only the package record is new: {base2}"
    );
    let done = env.json(["assemble", "b2", "base2"]);
    assert_eq!(done["written"], true);
}

#[test]
fn a_server_and_a_mount_take_root_at_commit_and_refuse_bad_mountpoints() {
    let env = web("mount-at");
    let first = env.current("web");
    let tree = env.json(["roots", "show", "web"])["tree"]
        .as_str()
        .unwrap()
        .to_string();
    env.cmd(["assemble", "web", "libc6", "gcc-12-base", "libgcc-s1"])
        .success();
    let server = Server::start(&env, "127.0.0.1:0");

    // A commit's id where a tree's is wanted: an answer, not a server error.
    let answer = cmd("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{}/v1/trees/{first}", server.url))
        .stdout();
    let (body, code) = answer.rsplit_once('\n').unwrap();
    assert_eq!(code, "404", "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "not-found", "{body}");
    let answer = cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v1/trees/{tree}", server.url))
        .stdout();
    assert_eq!(answer, "200");

    // --root ROOT@PREFIX pins a commit by a prefix of its id, as every command takes it.
    let mount = Mount::start(
        &env,
        "pinned",
        &server.url,
        &["--root", &format!("web@{}", &first[..10])],
    );
    assert!(
        mount.path("bin/bash").is_file(),
        "the first version has bash"
    );
    let trust = env.path("server.pub");
    let url = server.url.clone();
    let mount_cmd = |dir: &Path, extra: &[&str]| {
        let mut c = env.bare_cmd(["mount", &url]);
        c.arg(dir)
            .arg("--trust")
            .arg(&trust)
            .arg("--cache-dir")
            .arg(env.path("cache-x"))
            .args(extra);
        c
    };
    // Over a live canopy mount: refused, naming how to restart.
    let out = mount_cmd(&mount.path(""), &[]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is already a canopy mount") && err.contains("umount"),
        "{err}"
    );
    mount.stop();
    // A missing mountpoint is said to be missing.
    let out = mount_cmd(&env.path("no/such/dir"), &[]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("mkdir -p"),
        "{err}"
    );
    // A directory with files: refused unless --nonempty.
    let busy = env.mkdir("busy");
    fs::write(busy.join("mine"), "keep me").unwrap();
    let out = mount_cmd(&busy, &[]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not empty") && err.contains("--nonempty"),
        "{err}"
    );
    assert!(!is_mounted(&busy));
    let over = Mount::start(&env, "busy", &server.url, &["--nonempty", "--root", "web"]);
    assert!(over.path("lib64/ld-linux-x86-64.so.2").exists());
    over.stop();
    assert_eq!(fs::read_to_string(busy.join("mine")).unwrap(), "keep me");
    // An unknown prefix, a server that is down, a server that is not canopy.
    let empty = env.mkdir("empty");
    let out = mount_cmd(&empty, &["--root", "web@ffffffff"]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no commit ffffffff in the history of root web"),
        "{err}"
    );
    drop(server);
    let out = mount_cmd(&empty, &[]).failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("is `canopy serve` running"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one message, once:\n{err}");
    let nginx = Nginx::start(&env, &format!("root {};", env.mkdir("www").display()));
    let mut c = env.bare_cmd(["mount", &nginx.url]);
    c.arg(&empty)
        .arg("--trust")
        .arg(&trust)
        .arg("--cache-dir")
        .arg(env.path("cache-y"));
    let err = String::from_utf8_lossy(&c.failure(1).stderr).into_owned();
    assert!(
        err.contains("HTTP 404") && err.contains("is this URL a canopy server"),
        "{err}"
    );
}

/// The objects' ids a `ls --json` listing names, by file name.
fn blob_of(env: &Canopy, at: &str, path: &str) -> String {
    let listed = env.json(["ls", at, path, "--long"]);
    listed[0]["blob"].as_str().unwrap().to_string()
}

fn object_file(env: &Canopy, id: &str) -> std::path::PathBuf {
    env.store().join("objects").join(&id[..2]).join(&id[2..])
}

#[test]
fn removal_keeps_what_the_reflog_names_until_pruned_and_checkouts_share_inodes() {
    let env = web("remove");
    // Two hard-linked checkouts share one inode per file, executables included.
    let (a, b) = (env.path("a"), env.path("b"));
    for dir in [&a, &b] {
        let out: Value = serde_json::from_str(
            &env.cmd(["checkout", "web", "--hardlink", "--json"])
                .arg(dir)
                .stdout(),
        )
        .unwrap();
        assert_eq!(out["linked"], out["files"], "{out}");
        assert!(out["farm_linked"].as_u64() > Some(0), "{out}");
    }
    for file in ["bin/bash", "lib/x86_64-linux-gnu/libc.so.6"] {
        let (x, y) = (
            fs::metadata(a.join(file)).unwrap(),
            fs::metadata(b.join(file)).unwrap(),
        );
        assert_eq!(
            (x.dev(), x.ino()),
            (y.dev(), y.ino()),
            "{file} is not shared"
        );
        assert_eq!(x.mode() & 0o7777, 0o755, "{file}");
        let object = object_file(&env, &blob_of(&env, "web", &format!("/{file}")));
        assert_eq!(
            fs::metadata(&object).unwrap().mode() & 0o7777,
            0o644,
            "the object file keeps its own mode"
        );
    }

    // A second root with a package only it uses.
    let debs = env.mkdir("debs");
    let only = crate::util::simple_deb(
        &debs,
        "oldonly",
        "1.0",
        &[("etc/oldonly.conf", b"only old\n")],
    );
    env.cmd(["import", "deb"]).arg(&only).success();
    env.cmd([
        "assemble",
        "old",
        "libc6",
        "gcc-12-base",
        "libgcc-s1",
        "oldonly",
    ])
    .success();
    let old = env.current("old");
    let blob = blob_of(&env, "old", "/etc/oldonly.conf");
    let refused = env.cmd(["packages", "remove", "oldonly=1.0"]).failure(1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("refused: oldonly 1.0 is used by old (its current commit)"),
        "{err}"
    );

    let refs = crate::util::Snapshot::of(&env.store().join("refs"));
    let dry = env.json(["roots", "remove", "old", "--dry-run"]);
    assert_eq!(
        (&dry["removed"], &dry["commit"]),
        (&json!(false), &json!(old)),
        "{dry}"
    );
    assert!(dry["unique_objects"].as_u64() > Some(0), "{dry}");
    refs.assert_unchanged("roots remove --dry-run");
    let gone = env.json(["roots", "remove", "old"]);
    assert_eq!(gone["removed"], true, "{gone}");
    let roots = env.json(["roots", "list"]);
    assert_eq!(roots.as_array().map(Vec::len), Some(1), "{roots}");
    let removed = env.json(["roots", "list", "--removed"]);
    assert_eq!(
        (
            &removed[0]["name"],
            &removed[0]["commit"],
            &removed[0]["kept"]
        ),
        (&json!("old"), &json!(old), &json!(true)),
        "{removed}"
    );
    let err = env.fails(["roots", "show", "old"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("it was removed at") && err.contains("canopy roots reflog old"),
        "{err}"
    );
    let reflog = env.json(["roots", "reflog", "old"]);
    assert_eq!(reflog[0]["op"], "remove", "{reflog}");
    assert_eq!(
        (&reflog[0]["old"], &reflog[0]["new"]),
        (&json!(old), &Value::Null)
    );
    assert_eq!(reflog[1]["op"], "assemble", "{reflog}");
    assert!(reflog[0]["user"].as_str().is_some_and(|u| !u.is_empty()));

    // A damaged line is passed over; a line naming another root's commit gives it
    // nothing: no rollback to web's commit under the name old.
    let log_file = env.store().join("logs/roots/old");
    let web_head = env.current("web");
    let mut lines = fs::read_to_string(&log_file).unwrap();
    lines.push_str("{not json\n");
    lines.push_str(&format!(
        "{{\"time\":1,\"user\":\"x\",\"op\":\"assemble\",\"old\":null,\"new\":\"{web_head}\"}}\n"
    ));
    fs::write(&log_file, lines).unwrap();
    let tampered = env.json(["roots", "reflog", "old"]);
    assert_eq!(tampered.as_array().map(Vec::len), Some(3), "{tampered}");
    assert_eq!(
        (&tampered[0]["new"], &tampered[0]["applied"]),
        (&json!(web_head), &json!(false)),
        "{tampered}"
    );
    let refused = env.fails(["roots", "rollback", "old", &web_head[..12]]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no commit"), "{err}");
    assert!(
        err.contains("is of root web"),
        "the foreign entry is named: {err}"
    );
    // A line cut short by a crash (no newline) is not an entry, and the next one is whole.
    let mut torn = fs::read(&log_file).unwrap();
    torn.extend_from_slice(b"{\"time\":17");
    fs::write(&log_file, torn).unwrap();

    // Within the grace period gc keeps it, and says why; its versions stay readable.
    let gc = env.json(["gc"]);
    assert!(gc["kept_by"]["reflog"].as_u64() > Some(0), "{gc}");
    assert!(object_file(&env, &blob).exists());
    let kept = env
        .cmd(["cat", &format!("old@{}", &old[..10]), "/etc/oldonly.conf"])
        .stdout();
    assert_eq!(kept, "only old\n");
    let err = env.cmd(["packages", "remove", "oldonly"]).failure(1);
    assert!(String::from_utf8_lossy(&err.stderr).contains("old (its reflog until"));
    // A rollback brings the removed root back, from where it stopped.
    let back = env.json(["roots", "rollback", "old"]);
    assert_eq!(
        (&back["restored"], &back["written"]),
        (&json!(old), &json!(true)),
        "{back}"
    );
    let reflog = env.json(["roots", "reflog", "old"]);
    assert_eq!(
        (&reflog[0]["op"], &reflog[0]["applied"]),
        (&json!("rollback"), &json!(true)),
        "{reflog}"
    );
    env.json(["roots", "remove", "old"]);

    // The name used again: a new root with a history of its own (generation 1, no
    // parent), while the reflog still knows the removed one's versions.
    env.cmd(["assemble", "old", "libc6", "gcc-12-base", "libgcc-s1"])
        .success();
    let reused = env.json(["roots", "show", "old"]);
    assert_eq!(
        (&reused["generation"], &reused["parent"]),
        (&json!(1), &Value::Null),
        "{reused}"
    );
    assert_eq!(
        env.json(["roots", "log", "old"]).as_array().map(Vec::len),
        Some(1)
    );
    let reflog = env.json(["roots", "reflog", "old"]);
    assert_eq!(
        (&reflog[0]["op"], &reflog[0]["old"], &reflog[0]["applied"]),
        (&json!("assemble"), &Value::Null, &json!(true)),
        "{reflog}"
    );
    assert_eq!(reflog[1]["op"], "remove", "{reflog}");
    let kept = env
        .cmd(["cat", &format!("old@{}", &old[..10]), "/etc/oldonly.conf"])
        .stdout();
    assert_eq!(kept, "only old\n", "the removed versions stay reachable");
    let err = env.fails(["cat", "old", "/etc/oldonly.conf"]);
    assert!(!err.status.success());
    env.json(["roots", "remove", "old"]);

    // Pruned: the package goes, then gc frees what only old used, and nothing of web.
    let web_tree = env.json(["roots", "show", "web"])["tree"].clone();
    let removed = env.json(["packages", "remove", "oldonly", "--prune-reflog", "now"]);
    assert_eq!(removed["packages"][0]["removed"], true, "{removed}");
    let gc = env.json(["gc", "--prune-reflog", "now"]);
    assert!(
        gc["removed"].as_u64() > Some(0) && gc["freed"].as_u64() > Some(0),
        "{gc}"
    );
    assert_eq!(gc["kept_by"]["reflog"], 0, "{gc}");
    assert!(!object_file(&env, &blob).exists(), "old's own file is gone");
    env.fsck_clean();
    assert_eq!(env.json(["roots", "show", "web"])["tree"], web_tree);
    let again = env.path("c");
    env.cmd(["checkout", "web", "--hardlink"])
        .arg(&again)
        .success();
    crate::util::assert_same_tree(&a, &again);
    let err = env.fails(["roots", "rollback", "old"]);
    assert!(!String::from_utf8_lossy(&err.stderr).is_empty());
    // Unused packages: listed by a dry run, removed for real.
    let unused = env.json(["packages", "remove", "--unused", "--dry-run"]);
    assert_eq!(
        unused["packages"],
        json!([]),
        "every package is web's: {unused}"
    );

    // A hard-linked checkout edited in place changes the farm file every checkout
    // shares: fsck says so, --repair takes it out, a new checkout has the real bash.
    let bash = again.join("bin/bash");
    let original = fs::read(&bash).unwrap();
    let mut edit = fs::OpenOptions::new().write(true).open(&bash).unwrap();
    std::io::Write::write_all(&mut edit, b"\x7fELF-edited").unwrap();
    drop(edit);
    let out = env.cmd(["fsck", "--json"]).failure(1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "link-farm"),
        "{report}"
    );
    let fixed = env.json(["fsck", "--repair"]);
    assert_eq!(
        (
            fixed["link_farm_removed"].as_array().map(Vec::len),
            &fixed["problems_after"]
        ),
        (Some(1), &json!(0)),
        "{fixed}"
    );
    env.fsck_clean();
    let fresh = env.path("d");
    env.cmd(["checkout", "web", "--hardlink"])
        .arg(&fresh)
        .success();
    assert_eq!(fs::read(fresh.join("bin/bash")).unwrap(), original);
}
