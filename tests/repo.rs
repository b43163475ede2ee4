//! Roots resolved from a Debian repository: a real repository built at test time from
//! real packages (`dpkg-scanpackages`, `apt-ftparchive release`, `gpg --clearsign`),
//! served by nginx on 127.0.0.1; dependency resolution, downloads counted in nginx's
//! access log, upgrade of one rebuilt library, rollback, `roots diff`, a mounted
//! `--follow` host, and corrupted repositories that must change nothing.

use crate::debs::{self, Deb};
use crate::mount::{Mount, Nginx, Server, eventually};
use crate::util::{Canopy, Snapshot, cmd, sha256_file};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Packages beside the bash + coreutils closure, for a second root that shares most.
const MORE: &[&str] = &["findutils", "sed"];

/// An OpenPGP key made for the test, in a short-lived GnuPG home.
pub(crate) struct Gpg {
    home: tempfile::TempDir,
    /// The public key, exported as a binary keyring.
    pub(crate) keyring: PathBuf,
}

impl Gpg {
    pub(crate) fn new(env: &Canopy) -> Gpg {
        // gpg-agent's socket path must stay short: a home under /tmp, not the test dir.
        let home = tempfile::Builder::new()
            .prefix("cg")
            .tempdir_in("/tmp")
            .unwrap();
        cmd("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .args([
                "canopy test repository <repo@canopy.test>",
                "ed25519",
                "sign",
                "never",
            ])
            .success();
        let keyring = env.path(format!(
            "keyring-{}.gpg",
            home.path().file_name().unwrap().to_string_lossy()
        ));
        let key = cmd("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--export"])
            .output();
        assert!(!key.stdout.is_empty(), "gpg exported no key");
        fs::write(&keyring, key.stdout).unwrap();
        Gpg { home, keyring }
    }

    fn clearsign(&self, input: &Path, output: &Path) {
        cmd("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--yes",
                "--digest-algo",
                "SHA256",
                "--clearsign",
                "-o",
            ])
            .arg(output)
            .arg(input)
            .success();
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A Debian repository on disk: `pool/` and `dists/stable/main/binary-amd64/`, with
/// `Suite` and `Codename` `stable` (which mmdebstrap needs).
pub(crate) struct Repo {
    pub(crate) dir: PathBuf,
    pub(crate) gpg: Gpg,
}

impl Repo {
    pub(crate) fn new(env: &Canopy, debs: &[&Deb]) -> Repo {
        let dir = env.mkdir("repo");
        fs::create_dir_all(dir.join("pool")).unwrap();
        for deb in debs {
            fs::copy(
                &deb.path,
                dir.join("pool").join(deb.path.file_name().unwrap()),
            )
            .unwrap();
        }
        let repo = Repo {
            dir,
            gpg: Gpg::new(env),
        };
        repo.publish();
        repo
    }

    fn pool(&self, file: &str) -> PathBuf {
        self.dir.join("pool").join(file)
    }

    fn dist(&self) -> PathBuf {
        self.dir.join("dists/stable")
    }

    /// Writes Packages (plain, gz, xz), Release and a signed InRelease, as a Debian
    /// archive publishes them.
    fn publish(&self) {
        let bin = self.dist().join("main/binary-amd64");
        fs::create_dir_all(&bin).unwrap();
        let packages = cmd("dpkg-scanpackages")
            .args(["--multiversion", "pool", "/dev/null"])
            .current_dir(&self.dir)
            .stdout();
        fs::write(bin.join("Packages"), &packages).unwrap();
        for (tool, ext) in [("gzip", "gz"), ("xz", "xz")] {
            let packed = bin.join(format!("Packages.{ext}"));
            let _ = fs::remove_file(&packed);
            cmd(tool)
                .args(["-k", "-9"])
                .arg(bin.join("Packages"))
                .success();
            assert!(packed.exists());
        }
        let release = cmd("apt-ftparchive")
            .args([
                "-o",
                "APT::FTPArchive::Release::Suite=stable",
                "-o",
                "APT::FTPArchive::Release::Codename=stable",
                "-o",
                "APT::FTPArchive::Release::Architectures=amd64",
                "-o",
                "APT::FTPArchive::Release::Components=main",
                "release",
            ])
            .arg(self.dist().join("main"))
            .stdout();
        // apt-ftparchive names files relative to the directory it was given: make them
        // relative to dists/stable, as Release files list them.
        let release = release.replace(" binary-amd64/", " main/binary-amd64/");
        fs::write(self.dist().join("Release"), release).unwrap();
        self.gpg
            .clearsign(&self.dist().join("Release"), &self.dist().join("InRelease"));
    }
}

/// The `resolved N packages, D downloaded` line: (N, D).
fn resolved(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("resolved "))
        .unwrap_or_else(|| panic!("no `resolved` line in:\n{stdout}"));
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

fn root_debs() -> Vec<&'static Deb> {
    debs::root_debs().iter().collect()
}

/// Serves a repository's directory with nginx; `.deb` downloads are counted from its log.
fn serve_repo(env: &Canopy, repo: &Repo) -> Nginx {
    Nginx::start(env, &format!("root {};", repo.dir.display()))
}

fn deb_requests(nginx: &Nginx) -> usize {
    nginx.requests(".deb HTTP/1.1\" 200") + nginx.requests(".deb HTTP/1.1\" 206")
}

pub(crate) fn add_repo(env: &Canopy, repo: &Repo, url: &str) {
    let out = env.stdout([
        "repo",
        "add",
        "debian",
        url,
        "--suite",
        "stable",
        "--components",
        "main",
        "--arch",
        "amd64",
        "--keyring",
        repo.gpg.keyring.to_str().unwrap(),
    ]);
    assert!(out.starts_with("added repository debian: "), "{out}");
}

#[test]
fn assemble_resolves_from_a_repository_and_downloads_only_what_is_missing() {
    let env = Canopy::init("repo-assemble");
    let more = debs::more_debs(MORE);
    let mut all = root_debs();
    all.extend(more.iter());
    let repo = Repo::new(&env, &all);
    let nginx = serve_repo(&env, &repo);
    add_repo(&env, &repo, &nginx.url);

    // bash + coreutils resolve to their whole closure, awk through mawk's Provides.
    let out = env.stdout(["assemble", "web", "--from", "debian", "bash", "coreutils"]);
    let n = debs::ROOT_PACKAGES.len();
    assert_eq!(resolved(&out), (n, n), "{out}");
    assert_eq!(deb_requests(&nginx), n, "one download per package");
    let log = env.json(["roots", "log", "web"]);
    let commit = &log[0];
    assert_eq!(
        commit["requested"],
        serde_json::json!(["bash", "coreutils"])
    );
    assert_eq!(commit["options"], serde_json::json!(["from=debian"]));
    let recorded: BTreeSet<(String, String, String)> = commit["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
                p["archive"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = debs::root_debs()
        .iter()
        .map(|d| (d.name.clone(), d.version.clone(), sha256_file(&d.path)))
        .collect();
    assert_eq!(
        recorded, expected,
        "the commit records the resolved set with hashes"
    );
    let scripts = commit["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bash")
        .unwrap()["scripts"]
        .clone();
    assert!(
        scripts.as_array().unwrap().iter().any(|s| s == "postinst"),
        "bash's postinst is recorded as not run: {scripts}"
    );

    let dir = env.path("web");
    env.stdout(["checkout", "web", dir.to_str().unwrap()]);
    let ran = cmd("chroot")
        .arg(&dir)
        .args(["/bin/bash", "-c", "echo ok && ls / >/dev/null && id -u"])
        .stdout();
    assert_eq!(ran, "ok\n0\n");

    // A second root sharing most packages downloads only what it adds.
    let out = env.stdout([
        "assemble",
        "tools",
        "--from",
        "debian",
        "bash",
        "findutils",
        "sed",
    ]);
    let (count, downloaded) = resolved(&out);
    assert_eq!(downloaded, MORE.len(), "{out}");
    assert!(count > MORE.len() + 5, "{out}");
    assert_eq!(deb_requests(&nginx), n + MORE.len());

    // Nothing changed in the repository: upgrade writes no commit.
    let before = env.current("web");
    let out = env.stdout(["upgrade", "web"]);
    assert!(out.contains("web is up to date"), "{out}");
    assert_eq!(env.current("web"), before);
    assert_eq!(deb_requests(&nginx), n + MORE.len());

    // Requests that cannot be met say why, and change nothing.
    let snapshot = Snapshot::of(&env.store().join("refs"));
    for (spec, needle) in [
        ("no-such-package", "no-such-package"),
        ("bash=9.9-9", "bash"),
    ] {
        let out = env.fails(["assemble", "bad", "--from", "debian", spec]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{spec}: {err}");
    }
    snapshot.assert_unchanged("refused assembles");
}

/// The libgmp10 package rebuilt with a higher version and one changed file.
fn rebuild(env: &Canopy, deb: &Deb, changed: &str) -> PathBuf {
    let tree = env.path("rebuild");
    cmd("dpkg-deb")
        .arg("-R")
        .arg(&deb.path)
        .arg(&tree)
        .success();
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let version = format!("{}+canopy1", deb.version);
    let text = text.replace(
        &format!("Version: {}\n", deb.version),
        &format!("Version: {version}\n"),
    );
    fs::write(&control, text).unwrap();
    let file = tree.join(changed.trim_start_matches('/'));
    let mut content = fs::read(&file).unwrap();
    content.extend_from_slice(b"\nrebuilt by the canopy tests\n");
    fs::write(&file, content).unwrap();
    let out = env.path(format!("{}_{version}_amd64.deb", deb.name));
    cmd("dpkg-deb")
        .args(["--build", "-Zxz"])
        .arg(&tree)
        .arg(&out)
        .success();
    out
}

/// Every path a .deb ships, as `/usr/...`.
fn deb_paths(deb: &Path) -> BTreeSet<String> {
    let listing = cmd("dpkg-deb").arg("-c").arg(deb).stdout();
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| format!("/{}", p.trim_start_matches("./").trim_end_matches('/')))
        .collect()
}

#[test]
fn upgrade_fetches_the_one_changed_package_and_rollback_restores() {
    let env = Canopy::init("repo-upgrade");
    let repo = Repo::new(&env, &root_debs());
    let nginx = serve_repo(&env, &repo);
    add_repo(&env, &repo, &nginx.url);
    let out = env.stdout(["assemble", "web", "--from", "debian", "bash", "coreutils"]);
    let n = debs::ROOT_PACKAGES.len();
    assert_eq!(resolved(&out), (n, n), "{out}");
    let first = env.current("web");

    let server = Server::start(&env, "127.0.0.1:0");
    let mount = Mount::start(
        &env,
        "host",
        &server.url,
        &["--root", "web", "--follow", "--interval", "1s"],
    );
    let changed = "/usr/share/doc/libgmp10/copyright";
    let mounted = mount.path(changed.trim_start_matches('/'));
    let old_content = fs::read(&mounted).unwrap();

    let gmp = debs::deb("libgmp10");
    let new_deb = rebuild(&env, gmp, changed);
    fs::copy(
        &new_deb,
        repo.pool(new_deb.file_name().unwrap().to_str().unwrap()),
    )
    .unwrap();
    repo.publish();

    // A dry run reads the repository and resolves, downloads and writes nothing, and
    // says by its exit status that changes are pending.
    let store_before = Snapshot::of(env.store());
    let dry = env
        .cmd(["upgrade", "web", "--dry-run", "--json"])
        .failure(10);
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        (&dry["dry_run"], &dry["up_to_date"]),
        (&json!(true), &json!(false)),
        "{dry}"
    );
    assert_eq!(dry["commit"], first.as_str(), "{dry}");
    assert_eq!(
        dry["changes"],
        json!([{"change": "changed", "name": "libgmp10", "arch": "amd64",
                "old": gmp.version, "new": format!("{}+canopy1", gmp.version)}]),
        "{dry}"
    );
    assert_eq!(dry["download"]["archives"], 1, "{dry}");
    let human = env.cmd(["upgrade", "web", "--dry-run"]).failure(10);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!(
            "~ libgmp10 {} → {}+canopy1",
            gmp.version, gmp.version
        )),
        "{human}"
    );
    assert_eq!(deb_requests(&nginx), n, "a dry run downloads no archive");
    // Only the verified index cache may change (the new Packages index is cached).
    let after = Snapshot::of(env.store());
    let touched: Vec<String> = store_before
        .differences(&after)
        .into_iter()
        .filter(|d| !d.contains("cache/repos/"))
        .collect();
    assert!(
        touched.is_empty(),
        "a dry run changed the store:\n{}",
        touched.join("\n")
    );

    let up = env.json(["upgrade", "web"]);
    assert_eq!(up["resolved"]["packages"], n, "{up}");
    assert_eq!(up["resolved"]["downloaded"], 1, "{up}");
    assert_eq!(up["changes"], dry["changes"], "{up}");
    assert_eq!(
        (&up["written"], &up["previous"]),
        (&json!(true), &json!(first)),
        "{up}"
    );
    assert_eq!(deb_requests(&nginx), n + 1, "exactly one more download");
    let second = env.current("web");
    assert_eq!(up["commit"], second.as_str(), "{up}");
    assert_ne!(second, first);

    // The new root differs from the old only in that package's files.
    let diff = env.json(["roots", "diff", "web"]);
    let packages = diff["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 1, "{diff}");
    assert_eq!(packages[0]["name"], "libgmp10");
    assert_eq!(packages[0]["change"], "changed");
    let paths: Vec<(&str, &str)> = diff["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["change"].as_str().unwrap(), p["path"].as_str().unwrap()))
        .collect();
    assert!(paths.contains(&("M", changed)), "{paths:?}");
    let owned: BTreeSet<String> = deb_paths(&gmp.path)
        .union(&deb_paths(&new_deb))
        .cloned()
        .collect();
    for (_, path) in &paths {
        assert!(
            owned.contains(*path),
            "{path} changed but is not libgmp10's: {paths:?}"
        );
    }

    // The mounted host follows: new opens see the new file.
    eventually(
        Duration::from_secs(20),
        || format!("the mount never showed the upgrade of {changed}"),
        || (fs::read(&mounted).ok()? != old_content).then_some(()),
    );
    assert!(
        fs::read(&mounted)
            .unwrap()
            .ends_with(b"rebuilt by the canopy tests\n")
    );

    // Rollback is a new commit with the old tree, and the host goes back.
    let rb = env.json(["roots", "rollback", "web"]);
    assert_eq!(
        (&rb["restored"], &rb["previous"]),
        (&json!(first), &json!(second)),
        "{rb}"
    );
    let tree = |at: &str| env.json(["roots", "show", at])["tree"].clone();
    assert_eq!(tree("web"), tree(&format!("web@{first}")));
    assert_ne!(env.current("web"), second);
    eventually(
        Duration::from_secs(20),
        || "the mount never went back after the rollback".into(),
        || (fs::read(&mounted).ok()? == old_content).then_some(()),
    );
    mount.stop();
    env.fsck_clean();
}

#[test]
fn corrupted_repositories_are_refused_and_change_nothing() {
    let env = Canopy::init("repo-corrupt");
    let repo = Repo::new(&env, &root_debs());
    let url = format!("file://{}", repo.dir.display());

    // A key that did not sign the Release file: the repository is not added.
    let stranger = Gpg::new(&env);
    let out = env.fails([
        "repo",
        "add",
        "debian",
        &url,
        "--suite",
        "stable",
        "--keyring",
        stranger.keyring.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InRelease"), "{err}");
    assert!(env.stdout(["repo", "list"]).is_empty());
    add_repo(&env, &repo, &url);

    let store = |env: &Canopy| {
        (
            Snapshot::of(&env.store().join("objects")),
            Snapshot::of(&env.store().join("refs")),
        )
    };
    let (objects, refs) = store(&env);
    let refused = |what: &str, needle: &str| {
        let out = env.fails(["assemble", "web", "--from", "debian", "bash", "coreutils"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{what}: {err}");
        objects.assert_unchanged(what);
        refs.assert_unchanged(what);
    };

    // A .deb whose bytes are not what Packages says.
    let bash = debs::deb("bash");
    let pool_bash = repo.pool(bash.path.file_name().unwrap().to_str().unwrap());
    fs::copy(&debs::deb("mawk").path, &pool_bash).unwrap();
    refused("a swapped .deb", "does not match the repository's metadata");
    fs::copy(&bash.path, &pool_bash).unwrap();

    // A Packages index changed after Release was signed (the verified copy cached by
    // `repo add` is dropped, or canopy would rightly use it).
    fs::remove_dir_all(env.store().join("cache/repos/debian")).unwrap();
    let bin = repo.dist().join("main/binary-amd64");
    for file in ["Packages", "Packages.gz", "Packages.xz"] {
        let path = bin.join(file);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    refused(
        "an altered Packages index",
        "does not match the repository's metadata",
    );

    // A Release file altered after signing.
    repo.publish();
    let inrelease = repo.dist().join("InRelease");
    let text = fs::read_to_string(&inrelease).unwrap();
    fs::write(
        &inrelease,
        text.replacen("Suite: stable", "Suite: stab1e", 1),
    )
    .unwrap();
    refused("an altered InRelease", "InRelease");

    // Intact again: the same request works.
    repo.publish();
    let out = env.stdout(["assemble", "web", "--from", "debian", "bash", "coreutils"]);
    assert_eq!(resolved(&out).0, debs::ROOT_PACKAGES.len(), "{out}");
    env.fsck_clean();
}

#[test]
fn a_flat_repository_without_release_needs_the_explicit_opt_out() {
    let env = Canopy::init("repo-flat");
    let dir = env.mkdir("flat");
    for deb in debs::root_debs() {
        fs::copy(&deb.path, dir.join(deb.path.file_name().unwrap())).unwrap();
    }
    let packages = cmd("dpkg-scanpackages")
        .args([".", "/dev/null"])
        .current_dir(&dir)
        .stdout();
    fs::write(dir.join("Packages"), packages).unwrap();
    let url = format!("file://{}", dir.display());
    let out = env.fails(["repo", "add", "flat", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--keyring") && err.contains("--no-verify-signature"),
        "{err}"
    );
    let out = env.stdout(["repo", "add", "flat", &url, "--no-verify-signature"]);
    assert!(out.starts_with("added repository flat: "), "{out}");
    let out = env.stdout(["assemble", "base", "--from", "flat", "bash", "coreutils"]);
    assert_eq!(resolved(&out).0, debs::ROOT_PACKAGES.len(), "{out}");
    let listed: Value = env.json(["repo", "list"]);
    assert_eq!(listed[0]["name"], "flat");
    assert_eq!(listed[0]["keyring"], Value::Null);
}

/// The object file of the content at `path` in root `web`.
fn object_of(env: &Canopy, path: &str) -> PathBuf {
    let listed = env.json(["ls", "web", path, "--long"]);
    let id = listed[0]["blob"].as_str().unwrap().to_string();
    env.store().join("objects").join(&id[..2]).join(&id[2..])
}

#[test]
fn damaged_objects_are_repaired_from_the_download_cache_and_the_repository() {
    let env = Canopy::init("repo-repair");
    let repo = Repo::new(&env, &root_debs());
    let nginx = serve_repo(&env, &repo);
    add_repo(&env, &repo, &nginx.url);
    env.stdout(["assemble", "web", "--from", "debian", "bash", "coreutils"]);
    let before = env.path("before");
    env.cmd(["checkout", "web"]).arg(&before).success();
    let downloads = deb_requests(&nginx);

    // bash's content corrupted, libc's removed.
    let bash = object_of(&env, "/bin/bash");
    let libc = object_of(&env, "/lib/x86_64-linux-gnu/libc.so.6");
    fs::write(&bash, b"not bash").unwrap();
    fs::remove_file(&libc).unwrap();
    let broken = env.cmd(["fsck", "--json"]).failure(1);
    let broken: Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert!(
        broken["problems"].as_array().unwrap().len() >= 2,
        "{broken}"
    );
    // Damage to file contents hides no reference: gc still runs, keeping them.
    let gc = env.json(["gc", "--dry-run"]);
    assert!(!gc["damaged"].as_array().unwrap().is_empty(), "{gc}");

    // bash's archive is in the download cache; libc6's only in the repository.
    let deb = debs::deb("bash");
    let cache = env.store().join("cache/downloads");
    fs::create_dir_all(&cache).unwrap();
    fs::copy(
        &deb.path,
        cache.join(format!("{}.deb", sha256_file(&deb.path))),
    )
    .unwrap();
    // A tampered libc6 archive under its hash's name is refused (its content does not
    // hash to the name): the repository's copy, checked against the index, restores it.
    let libc6 = debs::deb("libc6");
    let tampered = cache.join(format!("{}.deb", sha256_file(&libc6.path)));
    let mut bytes = fs::read(&libc6.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&tampered, &bytes).unwrap();
    let done = env.cmd(["fsck", "--repair", "--json"]).success();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        err.contains(&format!("refusing {}", tampered.display())),
        "{err}"
    );
    let out = String::from_utf8_lossy(&done.stdout).to_string();
    let repaired: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(repaired["problems_after"], 0, "{repaired}");
    assert_eq!(repaired["unrepaired"], json!([]), "{repaired}");
    let sources: Vec<(&str, &str)> = repaired["repaired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["package"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        sources
            .iter()
            .any(|(p, s)| p.starts_with("bash ") && s.contains("cache/downloads")),
        "{repaired}"
    );
    assert!(
        sources
            .iter()
            .any(|(p, s)| p.starts_with("libc6 ") && s.starts_with(&nginx.url)),
        "{repaired}"
    );
    assert_eq!(
        deb_requests(&nginx),
        downloads + 1,
        "libc6 fetched once, bash not"
    );
    env.fsck_clean();
    let after = env.path("after");
    env.cmd(["checkout", "web"]).arg(&after).success();
    crate::util::assert_same_tree(&before, &after);

    // import --force replaces a damaged object from the archive given.
    fs::write(&bash, b"damaged again").unwrap();
    let forced = env.json(["import", "deb", "--force", deb.path.to_str().unwrap()]);
    assert_eq!(forced["packages"][0]["replaced"], 1, "{forced}");
    env.fsck_clean();

    // What no archive holds (the root's own top directory) is reported with its users,
    // and gc then deletes nothing, saying why.
    let top = env.json(["roots", "show", "web"])["tree"]
        .as_str()
        .unwrap()
        .to_string();
    let top_file = env.store().join("objects").join(&top[..2]).join(&top[2..]);
    fs::write(&top_file, b"not a tree").unwrap();
    let out = env.cmd(["fsck", "--repair", "--json"]).failure(1);
    let left: Value = serde_json::from_slice(&out.stdout).unwrap();
    let unrepaired = &left["unrepaired"][0];
    assert_eq!(unrepaired["id"], top.as_str(), "{left}");
    assert_eq!(unrepaired["roots"], json!(["web"]), "{left}");
    let err = env.fails(["gc"]);
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("gc deletes nothing") && err.contains("fsck --repair"),
        "{err}"
    );
}

/// Serves `dir` over HTTP/1.1 on 127.0.0.1 until `stop` is set; `.deb` answers send
/// half their body, then one byte a second (a mirror or proxy that trickles, each byte
/// well within any read timeout).
fn trickling_server(dir: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                c.set_nonblocking(false).unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let Ok(body) = fs::read(dir.join(path.trim_start_matches('/'))) else {
                    let _ = c.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if !path.ends_with(".deb") {
                    let _ = c.write_all(&body);
                    return;
                }
                let half = body.len() / 2;
                if c.write_all(&body[..half]).is_err() {
                    return;
                }
                for b in &body[half..] {
                    if stop.load(Ordering::SeqCst) || c.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
    });
    url
}

/// A repository server that sends a `.deb` a byte at a time (never stalling long
/// enough for a read timeout) is given up on within a bounded time, with an error
/// naming the URL, and nothing is imported.
#[test]
fn a_trickling_repository_is_given_up_on_and_changes_nothing() {
    let env = Canopy::init("repo-trickle");
    let repo = Repo::new(&env, &[debs::deb("gcc-12-base")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = trickling_server(repo.dir.clone(), stop.clone());
    add_repo(&env, &repo, &url);
    let objects = Snapshot::of(&env.store().join("objects"));
    let refs = Snapshot::of(&env.store().join("refs"));
    let out = env
        .cmd([
            "assemble",
            "g",
            "--from",
            "debian",
            "gcc-12-base",
            "--no-configure",
        ])
        .output_within(Duration::from_secs(150));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = out.expect("assemble still waited on the trickling server after 150 s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("too slow") && err.contains(&url) && err.contains(".deb"),
        "{err}"
    );
    objects.assert_unchanged("a trickled download");
    refs.assert_unchanged("a trickled download");
    env.fsck_clean();
}
