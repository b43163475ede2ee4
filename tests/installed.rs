//! Installed roots: packages configured at assemble time in a sandbox, as dpkg
//! installs them.
//!
//! One signed repository of real bookworm packages (the Essential set with
//! nginx-light, ca-certificates and python3: [`debs::INSTALLED_PACKAGES`]) and one
//! store with root `web` resolved and configured from it are shared by the tests that
//! only read them. The reference is mmdebstrap, run on the same repository with the
//! same `SOURCE_DATE_EPOCH`. Packages that misbehave (a failing postinst, one that tries
//! the network, one that runs `rm -rf /`) are built with dpkg-deb at test time and
//! configured with dpkg's smallest closure ([`debs::DPKG_PACKAGES`]).

use crate::debs::{self, Deb};
use crate::repo::{Repo, add_repo};
use crate::util::{Canopy, cmd, parse_assemble, write_control, write_file};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What the shared fixture made.
struct Shared {
    env: Canopy,
    repo: PathBuf,
    keyring: PathBuf,
    /// The packages `web` was resolved to.
    names: Vec<String>,
    /// Its `configure` record.
    configured: Value,
    /// Its tree id.
    tree: String,
}

/// The shared store, repository and configured root `web` (built once per test
/// process; removed at exit).
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let env = Canopy::init("installed");
        let debs = debs::more_debs(debs::INSTALLED_PACKAGES);
        let repo = Repo::new(&env, &debs.iter().collect::<Vec<&Deb>>());
        add_repo(&env, &repo, &format!("file://{}", repo.dir.display()));
        let out = env.stdout([
            "assemble",
            "web",
            "--from",
            "debian",
            "--essential",
            "nginx-light",
            "ca-certificates",
            "python3",
        ]);
        assert!(out.contains("configured "), "{out}");
        let log = env.json(["roots", "log", "web"]);
        let names = log[0]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let shared = Shared {
            repo: repo.dir.clone(),
            keyring: repo.gpg.keyring.clone(),
            names,
            configured: log[0]["configure"].clone(),
            tree: log[0]["tree"].as_str().unwrap().to_string(),
            env,
        };
        // Statics are never dropped: the directory goes when the test process exits.
        remove_at_exit(shared.env.path(""));
        shared
    })
}

/// Removes `dir` when the process exits.
fn remove_at_exit(dir: PathBuf) {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn cleanup() {
        if std::env::var_os("CANOPY_TEST_KEEP").is_some() {
            return;
        }
        for d in DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
            let _ = fs::remove_dir_all(d);
        }
    }
    let mut dirs = DIRS.lock().unwrap();
    if dirs.is_empty() {
        // SAFETY: registers a function with no preconditions.
        unsafe { libc::atexit(cleanup) };
    }
    dirs.push(dir);
}

/// Checks out root `web` of `env` into a new directory.
fn checkout(env: &Canopy, root: &str, name: &str) -> PathBuf {
    let dir = env.path(name);
    env.cmd(["checkout", root])
        .arg(&dir)
        .arg("--hardlink")
        .stdout();
    dir
}

fn chroot(dir: &Path, args: &[&str]) -> String {
    cmd("chroot").arg(dir).args(args).stdout()
}

#[test]
fn a_configured_root_has_users_alternatives_certificates_and_a_package_database() {
    let s = shared();
    let dir = checkout(&s.env, "web", "checks");
    let user = chroot(&dir, &["getent", "passwd", "www-data"]);
    assert!(
        user.starts_with("www-data:") && user.contains(":33:33:"),
        "{user}"
    );
    assert_eq!(chroot(&dir, &["awk", "BEGIN { print 6*7 }"]), "42\n");
    assert_eq!(
        fs::read_link(dir.join("etc/alternatives/awk")).unwrap(),
        Path::new("/usr/bin/mawk")
    );
    assert_eq!(chroot(&dir, &["which", "awk"]), "/usr/bin/awk\n");
    let listed = chroot(&dir, &["dpkg", "-l", "nginx-light"]);
    assert!(
        listed.lines().any(|l| l.starts_with("ii  nginx-light ")),
        "{listed}"
    );
    let installed = chroot(&dir, &["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"]);
    assert_eq!(
        installed.lines().filter(|l| l.trim() == "ii").count(),
        s.names.len(),
        "every package is installed: {installed}"
    );
    assert_eq!(
        chroot(&dir, &["dpkg", "-S", "/usr/sbin/nginx"]),
        "nginx: /usr/sbin/nginx\n"
    );
    let nginx = cmd("chroot").arg(&dir).args(["nginx", "-t"]).success();
    assert!(
        String::from_utf8_lossy(&nginx.stderr).contains("test is successful"),
        "{}",
        String::from_utf8_lossy(&nginx.stderr)
    );
    let certs = chroot(
        &dir,
        &[
            "python3",
            "-c",
            "import ssl; print(len(ssl.create_default_context().get_ca_certs()) or ssl.create_default_context().cert_store_stats()['x509_ca'])",
        ],
    );
    assert!(certs.trim().parse::<u32>().unwrap() > 100, "{certs}");
    assert!(fs::metadata(dir.join("etc/ld.so.cache")).unwrap().len() > 0);
    assert_eq!(
        fs::read_link(dir.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::read(dir.join("etc/machine-id")).unwrap_or_default(),
        b""
    );
    assert!(!dir.join("var/log/dpkg.log").exists());
    assert!(dir.join("var/log").is_dir());
    // The commit says what ran and what was left out.
    let packages = s.configured["packages"].as_array().unwrap();
    let base_passwd = packages
        .iter()
        .find(|p| p["name"] == "base-passwd")
        .unwrap();
    assert_eq!(base_passwd["scripts"][0]["script"], "preinst");
    assert_eq!(base_passwd["scripts"][0]["status"], 0);
    assert!(
        s.configured["stripped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "/var/log/dpkg.log"),
        "{}",
        s.configured
    );
    let text = s.env.stdout(["roots", "log", "web"]);
    assert!(text.contains(&format!("tree: {}", s.tree)), "{text}");
    assert!(text.contains("postinst configure (0)"), "{text}");
}

/// One path of a tree as the comparison sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Symlink target or file content.
    data: Vec<u8>,
}

fn scan(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for rel in crate::util::walk(root) {
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let (kind, data) = if ft.is_symlink() {
            (
                'l',
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec(),
            )
        } else if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_file() {
            ('f', fs::read(&path).unwrap())
        } else {
            ('o', m.rdev().to_be_bytes().to_vec())
        };
        out.insert(
            format!("/{}", rel.display()),
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                data,
            },
        );
    }
    out
}

/// What mmdebstrap makes that is its own, not the packages': its apt setup, the host's
/// resolv.conf and hostname, an fstab, device nodes, `/var/lib/dpkg/arch` and the dpkg
/// option it was given.
fn mmdebstrap_own(path: &str) -> bool {
    [
        "/dev/",
        "/etc/apt",
        "/var/cache/apt",
        "/var/lib/apt",
        "/var/log/apt",
        "/etc/dpkg/dpkg.cfg.d/99mmdebstrap",
    ]
    .iter()
    .any(|p| {
        path == p.trim_end_matches('/')
            || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
    }) || [
        "/etc/fstab",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/var/lib/dpkg/arch",
    ]
    .contains(&path)
}

/// Files whose lines come out in configure order (the order dpkg happened to pick), so
/// they are compared as sets.
const LINE_SETS: &[&str] = &[
    "/etc/shells",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
];

fn lines(data: &[u8]) -> BTreeSet<Vec<u8>> {
    data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

#[test]
fn a_configured_root_is_what_mmdebstrap_installs() {
    let s = shared();
    let sde = s.configured["source_date_epoch"].as_i64().unwrap();
    let reference = s.env.path("mmdebstrap");
    let source = format!(
        "deb [signed-by={}] copy://{} stable main",
        s.keyring.display(),
        s.repo.display()
    );
    // force-unsafe-io only skips dpkg's fsyncs, which cost minutes on slow disks.
    cmd("mmdebstrap")
        .args([
            "--mode=root",
            "--variant=custom",
            "--dpkgopt=force-unsafe-io",
            "--quiet",
        ])
        .arg(format!("--include={}", s.names.join(",")))
        .args(["stable"])
        .arg(&reference)
        .arg(&source)
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .success();
    let ours = scan(&checkout(&s.env, "web", "compare"));
    let theirs = scan(&reference);
    let stripped: BTreeMap<&str, &str> = s.configured["stripped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["action"].as_str().unwrap()))
        .collect();
    let mut problems = Vec::new();
    for (path, theirs) in &theirs {
        let Some(ours) = ours.get(path) else {
            if !mmdebstrap_own(path) && stripped.get(path.as_str()) != Some(&"removed") {
                problems.push(format!("missing {path}"));
            }
            continue;
        };
        if ours == theirs {
            continue;
        }
        let same_meta = (ours.kind, ours.mode, ours.uid, ours.gid)
            == (theirs.kind, theirs.mode, theirs.uid, theirs.gid);
        let explained = same_meta
            && ((LINE_SETS.contains(&path.as_str()) && lines(&ours.data) == lines(&theirs.data))
                // A .pyc that Python wrote on import embeds its source's mtime, and roots
                // carry no times: the compiled code after the 16-byte header must match.
                || (path.ends_with(".pyc")
                    && ours.data.len() > 16
                    && ours.data[16..] == theirs.data[16..])
                || stripped.get(path.as_str()) == Some(&"emptied") && ours.data.is_empty());
        if !explained {
            problems.push(format!(
                "{path} differs: ours {} {:o} {}:{} ({} bytes), mmdebstrap's {} {:o} {}:{} ({} bytes)",
                ours.kind,
                ours.mode,
                ours.uid,
                ours.gid,
                ours.data.len(),
                theirs.kind,
                theirs.mode,
                theirs.uid,
                theirs.gid,
                theirs.data.len()
            ));
        }
    }
    for path in ours.keys() {
        if !theirs.contains_key(path) {
            problems.push(format!("extra {path}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences from mmdebstrap:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Sanity: the comparison saw the whole root.
    assert!(ours.len() > 8000, "{} paths", ours.len());
    assert!(ours.contains_key("/var/lib/dpkg/info/nginx-common.postinst"));
}

/// A package built at test time: `name` with a postinst (`#!/bin/sh` script body).
fn script_deb(dir: &Path, name: &str, version: &str, postinst: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-{version}"));
    write_control(&tree, name, version, "all");
    write_file(
        &tree.join("DEBIAN/postinst"),
        format!("#!/bin/sh\n{postinst}\n").as_bytes(),
        0o755,
    );
    write_file(
        &tree.join(format!("usr/share/doc/{name}/README")),
        format!("{name} {version}\n").as_bytes(),
        0o644,
    );
    let out = dir.join(format!("{name}_{version}_all.deb"));
    cmd("dpkg-deb")
        .args(["--root-owner-group", "--build", "-Zgzip"])
        .arg(&tree)
        .arg(&out)
        .success();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
    out
}

/// A store with dpkg's smallest closure imported.
fn dpkg_store(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::more_debs(debs::DPKG_PACKAGES).iter().map(|d| &d.path))
        .stdout();
    env
}

fn assemble_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["assemble", root];
    args.extend(debs::DPKG_PACKAGES);
    args.extend(extra);
    args
}

#[test]
fn a_failing_script_fails_the_assemble_with_its_output_and_changes_nothing() {
    let env = dpkg_store("installed-fails");
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-fails",
        "1.0",
        "for i in $(seq 1 25); do echo \"line $i of the failing script\"; done\nexit 3",
    );
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    let before = env.snapshot();
    let out = env.fails(assemble_args("bad", &["canopy-fails"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canopy-fails: postinst failed with exit status 3"),
        "{err}"
    );
    assert!(err.contains("line 25 of the failing script"), "{err}");
    assert!(err.contains("line 6 of the failing script"), "{err}");
    assert!(
        !err.contains("line 5 of the failing script"),
        "only the last 20 lines: {err}"
    );
    before.assert_unchanged("a failed configure");
    env.fsck_clean();
    // Without configuring, the same packages assemble.
    let out = env.stdout(
        [
            assemble_args("bad", &["canopy-fails"]),
            vec!["--no-configure"],
        ]
        .concat(),
    );
    parse_assemble(&out);
    let log = env.json(["roots", "log", "bad"]);
    assert_eq!(log[0]["options"], serde_json::json!(["no-configure"]));
    assert_eq!(log[0]["configure"], Value::Null);
}

#[test]
fn scripts_have_no_network() {
    let env = dpkg_store("installed-network");
    // Something listens on the host's loopback: the sandbox's own loopback has nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let bash = debs::more_debs(&["bash", "libtinfo6"]);
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-network",
        "1.0",
        &format!(
            "ip=$(cat /proc/net/dev | grep -c :)\necho \"$ip interfaces\"\n\
             if bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo CONNECTED; exit 0; fi\n\
             if bash -c 'exec 3<>/dev/tcp/151.101.2.132/80' 2>/dev/null; then echo CONNECTED OUT; exit 0; fi\n\
             echo no network; exit 7"
        ),
    );
    env.cmd(["import", "deb"])
        .arg(&deb)
        .args(bash.iter().map(|d| &d.path))
        .stdout();
    let out = env.fails(assemble_args(
        "net",
        &["canopy-network", "bash", "libtinfo6"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit status 7"), "{err}");
    assert!(
        err.contains("1 interfaces") && err.contains("no network"),
        "{err}"
    );
    assert!(
        listener.accept().is_err(),
        "the host's listener was reached from a package script"
    );
}

#[test]
fn a_script_that_removes_everything_touches_neither_host_nor_store() {
    let env = dpkg_store("installed-destroy");
    let canary = env.path("canary");
    fs::write(&canary, b"still here\n").unwrap();
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-destroy",
        "1.0",
        "echo destroying everything\necho pwned > /host-marker\nrm -rf --no-preserve-root / 2>/dev/null\nexit 0",
    );
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    let before = env.snapshot();
    let out = env.fails(assemble_args("gone", &["canopy-destroy"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("destroying everything"),
        "the script ran: {err}"
    );
    assert!(!Path::new("/host-marker").exists());
    assert_eq!(fs::read(&canary).unwrap(), b"still here\n");
    assert!(Path::new("/usr/bin/dpkg").exists() && Path::new("/etc/passwd").exists());
    before.assert_unchanged("a configure whose script removed /");
    env.fsck_clean();
}

/// A user made for a test, removed (with its subordinate ranges) when dropped.
struct TestUser {
    name: String,
}

impl TestUser {
    /// A new user: `system` users get no subordinate id range from useradd; others get
    /// one (added by hand where useradd does not).
    fn new(tag: &str, system: bool) -> TestUser {
        let name = format!("canopy-{tag}-{}", std::process::id() % 100_000);
        let _ = cmd("userdel").arg(&name).output();
        let mut add = cmd("useradd");
        add.args(["-M", "-s", "/bin/sh"]);
        if system {
            add.arg("-r");
        }
        add.arg(&name);
        // Other tests may hold /etc/passwd's lock for a moment.
        let mut tries = 0;
        while !add.output().status.success() {
            tries += 1;
            assert!(tries < 20, "useradd {name} keeps failing");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let user = TestUser { name };
        if !system
            && !fs::read_to_string("/etc/subuid")
                .unwrap_or_default()
                .contains(&format!("{}:", user.name))
        {
            let start = 300_000 + (std::process::id() % 1000) * 65_536;
            let range = format!("{start}-{}", start + 65_535);
            cmd("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &user.name])
                .success();
        }
        user
    }

    /// `canopy ARGS` as this user.
    fn canopy(&self, store: &Path, args: &[&str]) -> std::process::Output {
        cmd("runuser")
            .args(["-u", &self.name, "--", crate::util::BIN, "--store"])
            .arg(store)
            .args(args)
            .output()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = cmd("userdel").arg(&self.name).output();
    }
}

/// A directory the user owns, with a copy of dpkg's smallest closure to import.
fn user_dir(env: &Canopy, user: &TestUser) -> (PathBuf, Vec<String>) {
    let dir = env.mkdir(format!("home-{}", user.name));
    let mut debs = Vec::new();
    for deb in debs::more_debs(debs::DPKG_PACKAGES) {
        let copy = dir.join(deb.path.file_name().unwrap());
        fs::copy(&deb.path, &copy).unwrap();
        debs.push(copy.display().to_string());
    }
    cmd("chown").args(["-R", &user.name]).arg(&dir).success();
    (dir, debs)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn configuring_as_a_user_takes_its_subordinate_ids_and_says_what_is_missing() {
    let env = Canopy::new("installed-user");
    for (tag, system) in [("ids", false), ("noids", true)] {
        let user = TestUser::new(tag, system);
        let (dir, debs) = user_dir(&env, &user);
        let store = dir.join("store");
        let init = user.canopy(&store, &["init"]);
        assert!(init.status.success(), "{}", text(&init));
        let mut import = vec!["import", "deb"];
        import.extend(debs.iter().map(String::as_str));
        let out = user.canopy(&store, &import);
        assert!(out.status.success(), "{}", text(&out));
        let assemble = assemble_args("small", &[]);
        let out = user.canopy(&store, &assemble[..]);
        if system {
            assert!(!out.status.success(), "{}", text(&out));
            let err = text(&out);
            assert!(
                err.contains("/etc/subuid")
                    && err.contains(&user.name)
                    && err.contains(&format!("`{}:", user.name)),
                "the error names the line to add: {err}"
            );
            // Unconfigured, the same user assembles.
            let out = user.canopy(&store, &[&assemble[..], &["--no-configure"]].concat());
            assert!(out.status.success(), "{}", text(&out));
            continue;
        }
        assert!(
            out.status.success() && text(&out).contains("configured "),
            "{}",
            text(&out)
        );
        // Root can read the user's store: the root is configured, with the ids inside.
        let tree = env.path(format!("{}-small", user.name));
        cmd(crate::util::BIN)
            .arg("--store")
            .arg(&store)
            .args(["checkout", "small"])
            .arg(&tree)
            .success();
        let status = fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
        let dpkg = status
            .split("\n\n")
            .find(|p| p.starts_with("Package: dpkg\n"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(dpkg.contains("\nStatus: install ok installed\n"), "{dpkg}");
        let meta = fs::metadata(tree.join("var/lib/dpkg/status")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "owners as inside the sandbox"
        );
        let fsck = user.canopy(&store, &["fsck"]);
        assert!(fsck.status.success(), "{}", text(&fsck));
    }
}

#[test]
fn the_same_packages_configure_to_the_same_tree_in_another_store() {
    let s = shared();
    let env = Canopy::init("installed-again");
    // Imported one by one, in the reverse order, then assembled from imported packages.
    let mut debs = debs::more_debs(debs::INSTALLED_PACKAGES);
    debs.reverse();
    for deb in &debs {
        env.cmd(["import", "deb"]).arg(&deb.path).stdout();
    }
    let mut args = vec!["assemble", "web"];
    args.extend(s.names.iter().map(String::as_str));
    env.stdout(&args);
    let log = env.json(["roots", "log", "web"]);
    assert_eq!(log[0]["tree"].as_str(), Some(s.tree.as_str()), "{}", log[0]);
    assert_eq!(
        log[0]["configure"]["source_date_epoch"],
        s.configured["source_date_epoch"]
    );
}

#[test]
fn upgrade_configures_again_from_scratch() {
    let env = dpkg_store("installed-upgrade");
    let dir = env.mkdir("debs");
    let hello = |version: &str| {
        script_deb(
            &dir,
            "canopy-hello",
            version,
            "cat /usr/share/doc/canopy-hello/README > /etc/canopy-hello",
        )
    };
    env.cmd(["import", "deb"]).arg(hello("1.0")).stdout();
    env.stdout(assemble_args("up", &["canopy-hello"]));
    env.cmd(["import", "deb"]).arg(hello("2.0")).stdout();
    let out = env.stdout(["upgrade", "up"]);
    assert!(out.contains("canopy-hello 1.0 → 2.0"), "{out}");
    assert!(out.contains("configured "), "{out}");
    env.stdout(assemble_args("fresh", &["canopy-hello"]));
    let tree = |root: &str| env.json(["roots", "log", root])[0]["tree"].clone();
    assert_eq!(tree("up"), tree("fresh"), "an upgraded root is a fresh one");
    let dir = checkout(&env, "up", "up");
    assert_eq!(
        fs::read_to_string(dir.join("etc/canopy-hello")).unwrap(),
        "canopy-hello 2.0\n"
    );
}

/// Processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> usize {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| fs::read(e.path().join("cmdline")).ok().as_deref() == Some(&wanted[..]))
        .count()
}

#[test]
fn a_configure_killed_at_any_point_leaves_the_last_good_root_and_nothing_running() {
    let env = dpkg_store("installed-kill");
    let out = env.stdout(assemble_args("web", &[]));
    let good = parse_assemble(&out).commit;
    let dir = env.mkdir("debs");
    let sleeper = script_deb(
        &dir,
        "canopy-sleeper",
        "1.0",
        "echo sleeping now\nsleep 3011",
    );
    let quick = script_deb(&dir, "canopy-quick", "1.0", "echo quick");
    env.cmd(["import", "deb"])
        .arg(&sleeper)
        .arg(&quick)
        .stdout();
    let after = |what: &str| {
        env.fsck_clean();
        assert_eq!(env.current("web"), good, "web moved after {what}");
        assert_eq!(processes(&["sleep", "3011"]), 0, "a script outlived {what}");
    };

    // kill -9 while a postinst runs.
    let mut child = std::process::Command::new(crate::util::BIN)
        .arg("--store")
        .arg(env.store())
        .arg("-v")
        .args(assemble_args("web", &["canopy-sleeper"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("sleeping now") {
            break;
        }
    }
    assert!(
        seen.contains("sleeping now"),
        "the postinst never ran:\n{seen}"
    );
    assert_eq!(processes(&["sleep", "3011"]), 1, "the script is running");
    child.kill().unwrap();
    child.wait().unwrap();
    // The sandbox dies with canopy (its processes get SIGKILL when their parent goes).
    let start = std::time::Instant::now();
    while processes(&["sleep", "3011"]) > 0 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    after("kill -9 during a postinst");

    // Aborted once configuring is done but nothing is durable, and as the ref is written.
    for (var, value) in [
        ("CANOPY_CRASH_AT", "configured"),
        ("CANOPY_CRASH_AT", "before ref write"),
        ("CANOPY_CRASH_AFTER", "1"),
    ] {
        env.cmd(assemble_args("web", &["canopy-quick"]))
            .env(var, value)
            .signal(libc::SIGABRT);
        after(&format!("{var}={value}"));
    }
    // And then it works.
    let out = env.stdout(assemble_args("web", &["canopy-quick"]));
    assert!(out.contains("configured "), "{out}");
    assert_ne!(env.current("web"), good);
    env.fsck_clean();
}
