//! Installed roots: packages configured at assemble time in a sandbox, as dpkg
//! installs them.
//!
//! One signed repository of real bookworm packages (the Essential set with
//! nginx-light, ca-certificates and python3: [`debs::INSTALLED_PACKAGES`]) and one
//! store with root `web` resolved and configured from it are shared by the tests that
//! only read them. The reference is mmdebstrap, run on the same repository with the
//! same `SOURCE_DATE_EPOCH`; the same packages imported into another store in another
//! order must configure to the same tree. Misbehaving scripts and faults are in
//! `configure.rs`.

use crate::debs::{self, Deb};
use crate::repo::{Repo, add_repo};
use crate::util::{Canopy, cmd};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
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
pub(crate) fn remove_at_exit(dir: PathBuf) {
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

/// Checks out `root` of `env` into a new directory.
pub(crate) fn checkout(env: &Canopy, root: &str, name: &str) -> PathBuf {
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
fn owner_names_the_scripts_that_made_a_configured_path() {
    let s = shared();
    // update-alternatives made /usr/bin/awk and /etc/alternatives/awk; mawk ships neither.
    for path in ["/usr/bin/awk", "/etc/alternatives/awk"] {
        let owner = s.env.json(["owner", "web", path]);
        assert_eq!(owner["origin"], "configuration", "{owner}");
        let made_by = owner["made_by"].as_array().unwrap();
        assert!(
            made_by
                .iter()
                .any(|m| m["package"]["name"] == "mawk" && m["script"] == "postinst"),
            "{owner}"
        );
    }
    let text = s.env.stdout(["owner", "web", "/usr/bin/awk"]);
    assert_eq!(
        text,
        "/usr/bin/awk: configuration (made by mawk's postinst, which names it)\n"
    );
    let passwd = s.env.json(["owner", "web", "/etc/passwd"]);
    assert!(
        passwd["made_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["package"]["name"] == "base-passwd"),
        "{passwd}"
    );
    let status = s.env.json(["owner", "web", "/var/lib/dpkg/status"]);
    assert_eq!(
        (&status["origin"], &status["made_by"]),
        (
            &json!("configuration"),
            &json!([{"what": "package database"}])
        ),
        "{status}"
    );
    // What a package ships stays the package's.
    let mawk = s.env.json(["owner", "web", "/usr/bin/mawk"]);
    assert_eq!(
        (&mawk["origin"], &mawk["packages"][0]["name"]),
        (&json!("package"), &json!("mawk"))
    );
}
