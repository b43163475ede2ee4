//! What a new user trips on, kept as regression tests: the usual mistakes (a server
//! given without `http://`, a port alone for `--listen`, a path for a repository URL, a
//! mistyped `--archives` directory) get an error that names the fix, and the reports
//! say exactly what happened (an import where every archive failed, package lines of
//! packages without an architecture).

use crate::util::{Canopy, simple_deb};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line an import prints when archives failed says what became of the rest:
/// never "the others were imported" when there were none; a directory given for its
/// archives gets the glob named.
#[test]
fn import_summary_counts_what_was_imported() {
    let canopy = Canopy::init("newuser-import");
    let good = simple_deb(&canopy.path(""), "nu-good", "1.0", &[("opt/nu/a", b"a\n")]);
    fs::write(canopy.path("garbage.deb"), b"not a deb\n").unwrap();

    let out = canopy.fails(["import", "deb", "missing.deb"]);
    let err = stderr(&out);
    assert!(err.contains("missing.deb"), "{err}");
    assert!(err.contains("the archive was not imported"), "{err}");
    assert!(!err.contains("the others"), "{err}");

    let out = canopy.fails(["import", "deb", "missing.deb", "garbage.deb"]);
    let err = stderr(&out);
    assert!(err.contains("none of the 2 archives was imported"), "{err}");

    let out = canopy.fails([
        "import".as_ref(),
        "deb".as_ref(),
        good.as_os_str(),
        "garbage.deb".as_ref(),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("1 of 2 archives failed to import; the other 1 were imported"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported nu-good 1.0"));

    // A directory of archives names the glob that was meant.
    canopy.mkdir("debs");
    let err = stderr(&canopy.fails(["import", "deb", "debs"]));
    assert!(
        err.contains("debs is a directory; give the archives in it, e.g. debs/*.deb"),
        "{err}"
    );
}

/// A server given as `HOST:PORT`, which a URL parser takes for a URL of scheme HOST,
/// is refused at once (usage error, status 2) with the `http://` form to give.
#[test]
fn server_url_without_scheme_names_the_fix() {
    let canopy = Canopy::init("newuser-url");
    let mnt = canopy.mkdir("mnt");
    fs::write(canopy.path("server.pub"), "00\n").unwrap();
    for url in ["localhost:7750", "127.0.0.1:7750"] {
        let out = canopy
            .bare_cmd(["mount", url])
            .arg(&mnt)
            .args(["--trust", "server.pub"])
            .failure(2);
        let err = stderr(&out);
        assert!(err.contains(&format!("http://{url}")), "{err}");
    }
    for args in [
        &[
            "run",
            "--server",
            "server:7750",
            "--trust",
            "server.pub",
            "web",
        ][..],
        &["replicate", "server:7750", "--trust", "server.pub"],
    ] {
        let out = canopy.cmd(args).failure(2);
        assert!(
            stderr(&out).contains("http://server:7750"),
            "{}",
            stderr(&out)
        );
    }
    // Servers given only with --server leave the mountpoint where the URL goes.
    let out = canopy
        .bare_cmd([
            "mount",
            "--server",
            "http://a:7750",
            "--server",
            "http://b:7750",
        ])
        .arg(&mnt)
        .args(["--trust", "server.pub"])
        .failure(2);
    assert!(
        stderr(&out).contains("the server comes first"),
        "{}",
        stderr(&out)
    );
    let out = canopy
        .bare_cmd(["mount", "ftp://server/"])
        .arg(&mnt)
        .args(["--trust", "server.pub"])
        .failure(2);
    assert!(stderr(&out).contains("http or https"), "{}", stderr(&out));
}

/// A repository given as a directory path gets its `file://` URL named; one without a
/// scheme gets the accepted schemes.
#[test]
fn repository_path_names_its_file_url() {
    let canopy = Canopy::init("newuser-repo");
    let dir = canopy.mkdir("flat");
    let out = canopy
        .cmd(["repo", "add", "local"])
        .arg(&dir)
        .arg("--no-verify-signature")
        .failure(2);
    let err = stderr(&out);
    assert!(err.contains(&format!("file://{}", dir.display())), "{err}");
    let out = canopy
        .cmd([
            "repo",
            "add",
            "d",
            "deb.debian.org/debian",
            "--no-verify-signature",
        ])
        .failure(2);
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}

/// `--listen 7750` says what an address looks like; `--listen localhost:0` serves.
#[test]
fn listen_takes_host_names_and_explains_addresses() {
    let canopy = Canopy::init("newuser-listen");
    for bad in ["7750", ":7750"] {
        let out = canopy.cmd(["serve", "--listen", bad]).failure(2);
        let err = stderr(&out);
        assert!(err.contains("0.0.0.0:7750"), "{bad}: {err}");
    }
    let mut server = std::process::Command::new(crate::util::BIN)
        .arg("--store")
        .arg(canopy.store())
        .args(["serve", "--listen", "localhost:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    );
    let _ = server.kill();
    let _ = server.wait();
    read.unwrap();
    assert!(
        line.contains("on http://127.0.0.1:"),
        "serve printed {line:?}"
    );
}

/// `fsck --repair --archives DIR` with a DIR that does not exist is an error naming
/// it, before anything is done (it was searched as an empty directory, silently).
#[test]
fn repair_refuses_a_missing_archives_directory() {
    let canopy = Canopy::init("newuser-archives");
    let out = canopy.fails(["fsck", "--repair", "--archives", "/nonexistent/archives"]);
    let err = stderr(&out);
    assert!(err.contains("--archives /nonexistent/archives"), "{err}");
    assert!(err.contains("no such directory"), "{err}");
}

/// Packages without an architecture (tarballs, directories) print as `NAME VERSION`,
/// with no trailing space, in `roots show`, `roots log` and `packages remove`; a bad
/// `--version` is named with its value; `packages list` keeps its columns past a long
/// name.
#[test]
fn package_lines_have_no_trailing_space() {
    let canopy = Canopy::init("newuser-lines");
    let tree = canopy.mkdir("tree/opt");
    fs::write(tree.join("f"), b"f\n").unwrap();
    canopy.stdout(["import", "dir", "tree", "--name", "tools", "--version", "1"]);
    canopy.stdout(["assemble", "t", "tools"]);
    let mut lines = canopy.stdout(["roots", "show", "t"]);
    lines += &canopy.stdout(["roots", "log", "t"]);
    lines += &canopy.stdout(["packages", "remove", "--unused", "--dry-run"]);
    canopy.stdout(["import", "dir", "tree", "--name", "spare"]);
    lines += &canopy.stdout(["packages", "remove", "--unused", "--dry-run"]);
    assert!(lines.contains("    tools 1\n"), "{lines}");
    assert!(lines.contains("would remove spare 0\n"), "{lines}");
    for line in lines.lines() {
        assert_eq!(line, line.trim_end(), "trailing space in:\n{lines}");
    }
    // `packages list` keeps its columns aligned past a long name.
    canopy.stdout([
        "import",
        "dir",
        "tree",
        "--name",
        "a-package-name-longer-than-the-name-column",
    ]);
    let list = canopy.stdout(["packages", "list"]);
    let columns: BTreeSet<Option<usize>> = list.lines().map(|l| l.find(" 20")).collect();
    assert_eq!(columns.len(), 1, "import times not in one column:\n{list}");
    let out = canopy.fails(["import", "dir", "tree", "--name", "t", "--version", "1 0"]);
    assert!(
        stderr(&out).contains("--version \"1 0\""),
        "{}",
        stderr(&out)
    );
}

/// Another user's store is an error that says whose it is and what to do (run as its
/// owner, or use a store of one's own), beside the file that was refused; so is a store
/// that cannot be created where the user may not write.
#[test]
fn another_users_store_says_what_to_do() {
    let canopy = Canopy::init("newuser-perm");
    let private = canopy.mkdir("private");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let as_nobody = |store: &std::path::Path, args: &[&str]| {
        let mut c = crate::util::cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::util::BIN)
            .arg("--store")
            .arg(store)
            .args(args)
            .env("HOME", canopy.path(""));
        c
    };
    for args in [&["roots", "list"][..], &["import", "deb", "x.deb"]] {
        let out = as_nobody(canopy.store(), args).failure(1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "this user may not use the store at {} (it belongs to uid 0)",
                canopy.store().display()
            )),
            "{err}"
        );
        assert!(err.contains("--store DIR"), "{err}");
        assert!(err.contains("lock: Permission denied"), "{err}");
    }
    let out = as_nobody(&private.join("store"), &["init"]).failure(1);
    let err = stderr(&out);
    assert!(err.contains("may not use the store at"), "{err}");
    assert!(err.contains("--store DIR"), "{err}");
}

/// A mistyped repository name gets the configured name it is near, as a mistyped root
/// or package name does.
#[test]
fn mistyped_repository_names_get_a_suggestion() {
    let canopy = Canopy::init("newuser-reponame");
    let dir = canopy.mkdir("flat");
    fs::write(dir.join("Packages"), b"").unwrap();
    canopy
        .cmd(["repo", "add", "flat"])
        .arg(format!("file://{}", dir.display()))
        .arg("--no-verify-signature")
        .success();
    for args in [
        &["assemble", "r", "--from", "falt", "bash"][..],
        &["repo", "update", "flta"],
        &["repo", "remove", "flta"],
    ] {
        let err = stderr(&canopy.fails(args));
        assert!(err.contains("did you mean flat?"), "{args:?}: {err}");
    }
}

/// `roots diff` of two commits with the same content says that nothing differs,
/// rather than printing a header alone (the same packages assembled with other options).
#[test]
fn diff_of_equal_commits_says_nothing_differs() {
    let canopy = Canopy::init("newuser-diff");
    let tree = canopy.mkdir("tree/opt");
    fs::write(tree.join("f"), b"f\n").unwrap();
    canopy.stdout(["import", "dir", "tree", "--name", "tools"]);
    canopy.stdout(["assemble", "t", "tools"]);
    canopy.stdout(["assemble", "t", "tools", "--allow-overwrite"]);
    let log = canopy.json(["roots", "log", "t"]);
    let (new, old) = (
        log[0]["commit"].as_str().unwrap(),
        log[1]["commit"].as_str().unwrap(),
    );
    assert_ne!(new, old, "the second assemble wrote no commit: {log}");
    let out = canopy.stdout(["roots", "diff", "t"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("no package or path differs: both commits have tree "),
        "{out}"
    );
    let out = canopy.stdout(["roots", "diff", "t", "--packages"]);
    assert!(out.contains("no package or path differs"), "{out}");
}

/// Runs canopy with its output on a terminal (`script` gives it a pty) and returns
/// what the terminal got.
fn on_a_terminal(canopy: &Canopy, args: &str) -> String {
    let line = format!(
        "{} --store {} {args}",
        crate::util::BIN,
        canopy.store().display()
    );
    let out = crate::util::cmd("script")
        .args(["-qfec", &line, "/dev/null"])
        .current_dir(canopy.path(""))
        .success();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long steps of a large root, checkout and fsck, show how far they are on a
/// terminal (entries written, objects re-hashed), and print nothing of it otherwise.
#[test]
fn checkout_and_fsck_show_progress_on_a_terminal() {
    let canopy = Canopy::init("newuser-progress");
    let tree = canopy.mkdir("tree/opt");
    for i in 0..50 {
        fs::write(tree.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    canopy.stdout(["import", "dir", "tree", "--name", "tools"]);
    canopy.stdout(["assemble", "t", "tools"]);
    let shown = on_a_terminal(&canopy, "checkout t out");
    assert!(shown.contains("checking out t "), "{shown}");
    assert!(shown.contains(" entries"), "{shown}");
    assert!(shown.contains("checked out t "), "{shown}");
    let shown = on_a_terminal(&canopy, "fsck");
    assert!(shown.contains(" objects re-hashed"), "{shown}");
    assert!(shown.contains("no problems"), "{shown}");
    // Not on a terminal: the report alone.
    let out = canopy.cmd(["checkout", "t", "out2"]).success();
    assert_eq!(stderr(&out), "");
    let out = canopy.cmd(["fsck"]).success();
    assert_eq!(stderr(&out), "");
}

/// `init --key` given a file others may read warns that a signing key is secret and
/// that the public key (`key show`, the same form) is not one; a 0600 key is quiet.
#[test]
fn init_warns_about_a_key_others_can_read() {
    let canopy = Canopy::init("newuser-key");
    let public = canopy.path("server.pub");
    fs::write(&public, canopy.stdout(["key", "show"])).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
    let out = canopy
        .bare_cmd(["--store", "other", "init", "--key"])
        .arg(&public)
        .success();
    let err = stderr(&out);
    assert!(err.contains("is readable by other users"), "{err}");
    assert!(
        err.contains("the public key `canopy key show` prints"),
        "{err}"
    );
    let secret = canopy.store().join("keys/ed25519.secret");
    let out = canopy
        .bare_cmd(["--store", "third", "init", "--key"])
        .arg(&secret)
        .success();
    assert_eq!(stderr(&out), "");
}

/// On a store in a bucket: `init` again without `--backend` changes nothing and says
/// where the store is (it was refused with the config file's text as a "format"); init
/// with another bucket, or a local store with a bucket, says to give another `--store`;
/// refused credentials name the variables to check.
#[test]
fn init_again_on_a_bucket_store_and_its_mistakes() {
    let sw = crate::seaweed::Seaweed::shared();
    let (_, url) = sw.bucket("newuser-init");
    let env = sw.env("newuser-init");
    env.stdout(["init", "--backend", &url]);
    let out = env.stdout(["init"]);
    assert!(
        out.contains("already initialised") && out.contains(&url),
        "{out}"
    );
    assert_eq!(env.json(["init"])["backend"], url.as_str());
    let (_, other) = sw.bucket("newuser-other");
    let err = stderr(&env.fails(["init", "--backend", &other]));
    assert!(err.contains("give another --store"), "{err}");
    assert!(!err.contains("format"), "{err}");
    let local = Canopy::init("newuser-init-local");
    let err = stderr(&local.fails(["init", "--backend", &url]));
    assert!(err.contains("give another --store"), "{err}");

    let err = stderr(
        &env.cmd(["roots", "list"])
            .env("AWS_SECRET_ACCESS_KEY", "wrong")
            .failure(1),
    );
    assert!(err.contains("check AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!err.contains("<?xml"), "{err}");
}

/// The volume plugin started by another user than root says that it runs as root,
/// beside the directory it could not create.
#[test]
fn volume_plugin_as_another_user_says_it_runs_as_root() {
    let canopy = Canopy::init("newuser-plugin");
    let key = canopy.path("server.pub");
    fs::write(&key, canopy.stdout(["key", "show"])).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = crate::util::cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::BIN)
        .args(["volume-plugin", "--server", "http://127.0.0.1:9", "--trust"])
        .arg(&key)
        .args(["--state-dir", "/var/lib/canopy-newuser-test/volumes"])
        .env("HOME", canopy.path(""))
        .failure(1);
    let err = stderr(&out);
    assert!(err.contains("the volume plugin runs as root"), "{err}");
    assert!(
        err.contains("/var/lib/canopy-newuser-test/volumes"),
        "{err}"
    );
}

/// `upgrade` of a root assembled from a repository that has been removed since names
/// that repository as the root's, and what to do (it suggested another repository's
/// name, as for a typo).
#[test]
fn upgrade_names_a_removed_repository_of_the_root() {
    let canopy = Canopy::init("newuser-upgrade");
    let dir = canopy.mkdir("flat");
    simple_deb(&dir, "nu-tool", "1.0", &[("opt/nu/tool", b"tool\n")]);
    let index = crate::util::cmd("dpkg-scanpackages")
        .args([".", "/dev/null"])
        .current_dir(&dir)
        .stdout();
    fs::write(dir.join("Packages"), index).unwrap();
    for name in ["flat", "flat2"] {
        canopy
            .cmd(["repo", "add", name])
            .arg(format!("file://{}", dir.display()))
            .arg("--no-verify-signature")
            .success();
    }
    canopy.stdout(["assemble", "t", "--from", "flat", "nu-tool"]);
    canopy.stdout(["repo", "remove", "flat"]);
    for args in [&["upgrade", "t"][..], &["upgrade", "t", "--dry-run"]] {
        let err = stderr(&canopy.fails(args));
        assert!(
            err.contains("root t was assembled --from flat, and no repository named flat"),
            "{err}"
        );
        assert!(!err.contains("did you mean"), "{err}");
    }
}

/// `serve` on a taken port says so and what to do (another canopy serve, --listen,
/// port 0); below 1024 as another user than root, that the port needs root.
#[test]
fn serve_on_a_taken_or_privileged_port_says_what_to_do() {
    let canopy = Canopy::init("newuser-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = stderr(&canopy.fails(["serve", "--listen", &addr]));
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("another process listens there"), "{err}");
    assert!(err.contains("port 0 picks a free one"), "{err}");
    // Only where low ports are privileged (a container may open them to all users:
    // then the server would start, and that is right).
    let start = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if start > 1 {
        let out = crate::util::cmd("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::util::BIN)
            .arg("--store")
            .arg(canopy.store())
            .args(["serve", "--listen", "127.0.0.1:1"])
            .output_within(std::time::Duration::from_secs(60))
            .expect("serve on a privileged port ended");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("ports below 1024 need root"), "{err}");
    }
}

/// `-q` leaves only errors on stderr: no notes, no warnings, no progress, even on a
/// terminal; the report on stdout stays.
#[test]
fn quiet_leaves_only_errors() {
    let canopy = Canopy::init("newuser-quiet");
    let tree = canopy.mkdir("tree/opt");
    fs::write(tree.join("f"), b"f\n").unwrap();
    canopy.stdout(["import", "dir", "tree", "--name", "tools"]);
    let out = canopy.cmd(["assemble", "t", "tools"]).success();
    assert!(
        stderr(&out).contains("note: not configured"),
        "{}",
        stderr(&out)
    );
    let out = canopy.cmd(["-q", "assemble", "t2", "tools"]).success();
    assert_eq!(stderr(&out), "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("assembled t2"));
    let shown = on_a_terminal(&canopy, "-q checkout t out");
    assert!(!shown.contains("entries"), "{shown}");
    assert!(shown.contains("checked out t "), "{shown}");
    let err = stderr(&canopy.fails(["-q", "roots", "show", "nope"]));
    assert!(err.contains("error: no root named nope"), "{err}");
}

/// `replicate --root` of a root the upstream lacks is an error line like any other
/// (`error: root … not published: …`), and the run exits 1.
#[test]
fn replicate_reports_an_unknown_root_as_an_error() {
    let upstream = Canopy::init("newuser-upstream");
    let tree = upstream.mkdir("tree/opt");
    fs::write(tree.join("f"), b"f\n").unwrap();
    upstream.stdout(["import", "dir", "tree", "--name", "tools"]);
    upstream.stdout(["assemble", "web", "tools"]);
    let server = crate::mount::Server::start(&upstream, "127.0.0.1:0");
    let key = upstream.path("upstream.pub");
    fs::write(&key, upstream.stdout(["key", "show"])).unwrap();
    let mirror = Canopy::init("newuser-mirror");
    let out = mirror
        .cmd(["replicate", &server.url, "--root", "wbe", "--trust"])
        .arg(&key)
        .failure(1);
    let err = stderr(&out);
    assert!(err.contains("error: root wbe not published: "), "{err}");
}

/// `import tar -` reads a tarball piped in (and leaves nothing in the store's tmp/);
/// `import deb -` says which imports read standard input instead of "reading -: No such
/// file or directory".
#[test]
fn import_tar_reads_standard_input() {
    let canopy = Canopy::init("newuser-stdin");
    let tree = canopy.mkdir("tree/opt");
    fs::write(tree.join("f"), b"piped\n").unwrap();
    crate::util::cmd("tar")
        .args(["-C", "tree", "-czf", "t.tar.gz", "."])
        .current_dir(canopy.path(""))
        .success();
    let tarball = fs::File::open(canopy.path("t.tar.gz")).unwrap();
    let out = std::process::Command::new(crate::util::BIN)
        .arg("--store")
        .arg(canopy.store())
        .args(["import", "tar", "-", "--name", "piped"])
        .stdin(tarball)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported piped 0 (tar)"));
    canopy.stdout(["assemble", "p", "piped"]);
    assert_eq!(canopy.stdout(["cat", "p", "/opt/f"]), "piped\n");
    assert_eq!(fs::read_dir(canopy.store().join("tmp")).unwrap().count(), 0);
    let err = stderr(&canopy.fails(["import", "deb", "-"]));
    assert!(
        err.contains("`import tar`, `import oci` and `import docker-archive` read standard input"),
        "{err}"
    );
}

/// A malformed ref is a problem fsck lists with the others (it stopped fsck at the
/// reflog, with no report); gc still deletes nothing while it is there.
#[test]
fn fsck_lists_a_malformed_ref_among_its_problems() {
    let canopy = Canopy::init("newuser-badref");
    let tree = canopy.mkdir("tree/opt");
    fs::write(tree.join("f"), b"f\n").unwrap();
    canopy.stdout(["import", "dir", "tree", "--name", "tools"]);
    canopy.stdout(["assemble", "r1", "tools"]);
    canopy.stdout(["assemble", "r2", "tools"]);
    let bad = canopy.store().join("refs/roots/r1");
    fs::write(&bad, b"garbage\n").unwrap();
    let out = canopy.fails(["fsck"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("bad-ref: listing roots: ref {}", bad.display())),
        "{report}"
    );
    assert!(
        report.contains("fsck: ") && report.contains(" problems"),
        "{report}"
    );
    let json = canopy.cmd(["fsck", "--json"]).failure(1);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        doc["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "bad-ref"),
        "{doc}"
    );
    let before = canopy.snapshot();
    let err = stderr(&canopy.fails(["gc"]));
    assert!(err.contains("gc deletes nothing"), "{err}");
    before.assert_unchanged("a gc refused over a malformed ref");
}
