//! RPM packages: a small distribution built with `rpmbuild` once per test process (a
//! `setup` package with `/etc/passwd`, a library, a program using every kind of entry
//! and flag), imported and compared with what `rpm2cpio | cpio -idm` extracts; header
//! signatures made with `rpmsign` and a throwaway key.

use crate::rpms;
use crate::util::{Canopy, cmd, parse_import, tree_differences};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fixture distribution.
pub struct Fixtures {
    /// Package name → its `.rpm`.
    pub rpms: BTreeMap<&'static str, PathBuf>,
    /// `greet` signed with the throwaway key.
    pub signed: PathBuf,
    /// The throwaway key's public keyring.
    pub keyring: PathBuf,
    /// An rpm-md repository of every package (`Packages/`, `repodata/`), its
    /// repomd.xml signed with the key.
    pub repo: PathBuf,
    /// Where spec files are built.
    dir: PathBuf,
    /// The key's GnuPG home, for signing more.
    gpg: PathBuf,
}

/// Spec files: (name, version, BuildArch, the rest of the spec).
const SPECS: &[(&str, &str, &str, &str)] = &[
    (
        "filesystem",
        "3.18",
        "noarch",
        r#"%install
mkdir -p %{buildroot}/etc %{buildroot}/tmp %{buildroot}/srv/shared %{buildroot}/var/lib %{buildroot}/root
%files
%dir /etc
%dir %attr(1777,root,root) /tmp
%dir /srv
%dir /srv/shared
%dir /var
%dir /var/lib
%dir %attr(0550,root,root) /root
"#,
    ),
    (
        "hostlibc",
        "1.0",
        "x86_64",
        r#"Provides: libc.so.6()(64bit)
%install
mkdir -p %{buildroot}/lib64 %{buildroot}/usr/lib/x86_64-linux-gnu
cp -L /lib64/ld-linux-x86-64.so.2 %{buildroot}/lib64/
cp -L $(ldd /bin/dash | awk '/libc.so.6/ {print $3}') %{buildroot}/usr/lib/x86_64-linux-gnu/libc.so.6
%files
/lib64/ld-linux-x86-64.so.2
/usr/lib/x86_64-linux-gnu/libc.so.6
"#,
    ),
    (
        "hostrpm",
        "4.18",
        "x86_64",
        r#"Requires: libc.so.6()(64bit)
%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/usr/lib/x86_64-linux-gnu %{buildroot}/usr/lib/rpm %{buildroot}/etc/rpm
cp -L /usr/bin/rpm /usr/bin/rpmdb %{buildroot}/usr/bin/
for lib in $(ldd /usr/bin/rpm /usr/bin/rpmdb | awk '/=>/ && !/libc.so.6/ {print $3}' | sort -u); do
    cp -L "$lib" %{buildroot}/usr/lib/x86_64-linux-gnu/
done
cp -L /usr/lib/rpm/rpmrc /usr/lib/rpm/macros %{buildroot}/usr/lib/rpm/
echo '%%_dbpath /var/lib/rpm' > %{buildroot}/etc/rpm/macros.dbpath
%files
/usr/bin/rpm
/usr/bin/rpmdb
/usr/lib/x86_64-linux-gnu/*
/usr/lib/rpm/rpmrc
/usr/lib/rpm/macros
/etc/rpm/macros.dbpath
"#,
    ),
    (
        "fails",
        "1.0",
        "noarch",
        r#"Requires(post): /bin/sh
%install
mkdir -p %{buildroot}/etc
echo fails > %{buildroot}/etc/fails
%post
echo about to fail
exit 3
%files
/etc/fails
"#,
    ),
    (
        "orphan",
        "1.0",
        "noarch",
        r#"%install
mkdir -p %{buildroot}/etc
echo orphan > %{buildroot}/etc/orphan
%files
%attr(0644,nobody42,nobody42) /etc/orphan
"#,
    ),
    (
        "setup",
        "2.14",
        "noarch",
        r#"%install
mkdir -p %{buildroot}/etc
printf 'root:x:0:0:root:/root:/bin/sh\nweb:x:48:48:web server:/var/www:/sbin/nologin\n' > %{buildroot}/etc/passwd
printf 'root:x:0:\nweb:x:48:\n' > %{buildroot}/etc/group
%files
%config(noreplace) /etc/passwd
%config(noreplace) /etc/group
"#,
    ),
    (
        "libgreet",
        "1.0",
        "x86_64",
        r#"Provides: libgreet.so.1()(64bit)
%install
mkdir -p %{buildroot}/usr/lib64
echo 'not really a library' > %{buildroot}/usr/lib64/libgreet.so.1.0
ln -s libgreet.so.1.0 %{buildroot}/usr/lib64/libgreet.so.1
%files
/usr/lib64/libgreet.so.1.0
/usr/lib64/libgreet.so.1
"#,
    ),
    (
        "sh",
        "1.0",
        "x86_64",
        r#"Provides: sh
Requires: libc.so.6()(64bit)
%install
mkdir -p %{buildroot}/bin
cp /bin/dash %{buildroot}/bin/sh
%files
/bin/sh
"#,
    ),
    (
        "needy",
        "1.0",
        "noarch",
        r#"Requires: libmissing.so.2()(64bit)
%install
mkdir -p %{buildroot}/usr/share/needy
echo needs > %{buildroot}/usr/share/needy/README
%files
/usr/share/needy/README
"#,
    ),
    (
        "greet",
        "1.0",
        "noarch",
        r#"Requires(pre): setup
Requires(pre): /bin/sh
Requires(post): /bin/sh
Requires: filesystem
Requires: libgreet.so.1()(64bit)
Requires: /bin/sh
Requires: (sh or busybox)
Recommends: greet-doc
%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/etc %{buildroot}/var/lib/greet %{buildroot}/var/log
echo 'not for everyone' > %{buildroot}/etc/greet.secret
printf '#!/bin/sh\necho hello\n' > %{buildroot}/usr/bin/greet
chmod 755 %{buildroot}/usr/bin/greet
cp -p %{buildroot}/usr/bin/greet %{buildroot}/usr/bin/greet-su
ln -s greet %{buildroot}/usr/bin/hello
echo 'greeting = hello' > %{buildroot}/etc/greet.conf
echo 'one inode, two names' > %{buildroot}/usr/bin/linked-a
ln %{buildroot}/usr/bin/linked-a %{buildroot}/usr/bin/linked-b
echo 'pings' > %{buildroot}/usr/bin/greet-ping
touch %{buildroot}/var/log/greet.log
%pre
# A user of its own, as useradd would add it (the root has only a shell).
known=
while IFS=: read -r name rest; do [ "$name" = greeter ] && known=1; done </etc/passwd
[ -n "$known" ] || echo 'greeter:x:990:990:greeter:/:/sbin/nologin' >>/etc/passwd
known=
while IFS=: read -r name rest; do [ "$name" = greeter ] && known=1; done </etc/group
[ -n "$known" ] || echo 'greeter:x:990:' >>/etc/group
%post
echo installed $1 > /var/lib/greet/post-ran
%files
/usr/bin/greet
%attr(4755,root,root) /usr/bin/greet-su
/usr/bin/hello
/usr/bin/linked-a
/usr/bin/linked-b
%caps(cap_net_raw=ep) /usr/bin/greet-ping
%config(noreplace) /etc/greet.conf
%dir %attr(0750,web,web) /var/lib/greet
%attr(0640,greeter,greeter) /etc/greet.secret
%ghost /var/log/greet.log
"#,
    ),
];

/// Writes and builds one spec; returns the `.rpm`.
fn build(dir: &Path, name: &str, version: &str, release: &str, arch: &str, body: &str) -> PathBuf {
    let spec = dir.join(format!("{name}.spec"));
    // Tags (Requires:…) go before %description, sections after it.
    let split = body.find("\n%").map_or(0, |i| i + 1);
    let split = if body.starts_with('%') { 0 } else { split };
    let (preamble, sections) = body.split_at(split);
    fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: canopy test package {name}\n\
             License: MIT\nBuildArch: {arch}\nAutoReqProv: no\n\
             %global __os_install_post %{{nil}}\n%global debug_package %{{nil}}\n\
             {preamble}%description\nA package of canopy's RPM tests.\n{sections}"
        ),
    )
    .unwrap();
    cmd("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", dir.join("top").display()))
        .args(["--target", arch])
        .arg(&spec)
        .success();
    dir.join(format!(
        "top/RPMS/{arch}/{name}-{version}-{release}.{arch}.rpm"
    ))
}

/// The fixtures, built on first use and shared by every test of the process. They live
/// under the target directory; fixtures of processes that are gone are removed.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpm-fixtures");
        fs::create_dir_all(&base).unwrap();
        for entry in fs::read_dir(&base).unwrap().flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let rpms = SPECS
            .iter()
            .map(|(name, version, arch, body)| (*name, build(&dir, name, version, "1", arch, body)))
            .collect::<BTreeMap<_, _>>();
        let gpg = gpg_home();
        let (signed, keyring) = sign(&dir, &gpg, &rpms["greet"]);
        let repo = dir.join("repo");
        fs::create_dir_all(repo.join("Packages")).unwrap();
        for rpm in rpms.values() {
            fs::copy(rpm, repo.join("Packages").join(rpm.file_name().unwrap())).unwrap();
        }
        let fixtures = Fixtures {
            rpms,
            signed,
            keyring,
            repo,
            dir,
            gpg,
        };
        fixtures.publish(&fixtures.repo);
        fixtures
    })
}

impl Fixtures {
    /// Writes `repo`'s metadata with createrepo_c and signs repomd.xml.
    pub fn publish(&self, repo: &Path) {
        cmd("createrepo_c")
            .args(["--quiet", "--update", "--general-compress-type", "gz"])
            .arg(repo)
            .success();
        let repomd = repo.join("repodata/repomd.xml");
        let _ = fs::remove_file(repo.join("repodata/repomd.xml.asc"));
        gpg(&self.gpg)
            .args(["--armor", "--detach-sign", "-o"])
            .arg(repo.join("repodata/repomd.xml.asc"))
            .arg(&repomd)
            .success();
    }

    /// Builds one more package from the fixture specs under another release.
    pub fn rebuild(&self, name: &str, release: &str) -> PathBuf {
        let (_, version, arch, body) = SPECS.iter().find(|s| s.0 == name).unwrap();
        build(&self.dir, name, version, release, arch, body)
    }
}

/// A GnuPG home with one signing key, kept for the test process (under /tmp: the
/// agent's socket path must stay short); homes of processes that are gone are removed.
fn gpg_home() -> PathBuf {
    for entry in fs::read_dir("/tmp").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("canopy-rpm-gpg-")
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let home = PathBuf::from(format!("/tmp/canopy-rpm-gpg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    gpg(&home)
        .args([
            "--passphrase",
            "",
            "--quick-gen-key",
            "canopy rpm test <rpm@canopy.test>",
        ])
        .args(["rsa2048", "sign", "never"])
        .success();
    home
}

/// gpg on `home`, in batch mode; the agent it starts is stopped when it is done.
fn gpg(home: &Path) -> crate::util::TestCommand {
    let mut c = cmd("sh");
    c.args([
        "-c",
        "gpg --homedir \"$0\" --batch \"$@\"; s=$?; gpgconf --homedir \"$0\" --kill gpg-agent; exit $s",
    ])
    .arg(home);
    c
}

/// A copy of `rpm` signed with `rpmsign` and the key of `home`; returns it and the
/// key's public keyring.
fn sign(dir: &Path, home: &Path, rpm: &Path) -> (PathBuf, PathBuf) {
    let keyring = dir.join("RPM-GPG-KEY-canopy-test");
    fs::write(
        &keyring,
        gpg(home).args(["--armor", "--export"]).output().stdout,
    )
    .unwrap();
    let signed_dir = dir.join("signed");
    fs::create_dir_all(&signed_dir).unwrap();
    let signed = signed_dir.join(rpm.file_name().unwrap());
    fs::copy(rpm, &signed).unwrap();
    cmd("rpmsign")
        .args(["--addsign", "--define", "__gpg /usr/bin/gpg", "--define"])
        .arg(format!("_gpg_path {}", home.display()))
        .args(["--define", "_gpg_name canopy rpm test <rpm@canopy.test>"])
        .arg(&signed)
        .env("GNUPGHOME", home)
        .success();
    let _ = std::process::Command::new("gpgconf")
        .arg("--homedir")
        .arg(home)
        .args(["--kill", "gpg-agent"])
        .status();
    (signed, keyring)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Files that `rpm -qp` says carry capabilities: cpio cannot hold them.
fn files_with_caps(rpm: &Path) -> Vec<String> {
    cmd("rpm")
        .args(["-qp", "--qf", "[%{FILENAMES}\t%{FILECAPS}\n]"])
        .arg(rpm)
        .stdout()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, caps)| !caps.is_empty() && *caps != "(none)")
        .map(|(path, _)| path.to_string())
        .collect()
}

#[test]
fn import_equals_rpm2cpio_extraction() {
    let fx = fixtures();
    let canopy = Canopy::init("rpm-import");
    for (name, rpm) in &fx.rpms {
        let out = canopy.stdout(["import", "rpm", path_str(rpm)]);
        let imported = parse_import(&out);
        assert!(imported.len() == 1 && imported[0].new, "{out}");
        // Alone, a package's owners by name mean nothing (no /etc/passwd): root, as
        // cpio makes them.
        canopy.stdout([
            "assemble",
            &format!("p-{name}"),
            "--unknown-owner=root",
            name,
        ]);
        let ours = canopy.path(format!("ours-{name}"));
        canopy.stdout(["checkout", &format!("p-{name}"), path_str(&ours)]);
        let reference = canopy.mkdir(format!("cpio-{name}"));
        let script = format!(
            "rpm2cpio '{}' | cpio -idm --quiet --no-absolute-filenames",
            rpm.display()
        );
        cmd("sh")
            .args(["-c", &script])
            .current_dir(&reference)
            .success();
        let caps = files_with_caps(rpm);
        let unexplained: Vec<String> = tree_differences(&reference, &ours)
            .into_iter()
            .filter(|d| {
                // cpio keeps no xattrs: capabilities are checked below instead.
                !caps.iter().any(|c| d.starts_with(&format!("{c}: xattrs")))
            })
            .collect();
        assert!(
            unexplained.is_empty(),
            "{name}: checkout differs from rpm2cpio | cpio:\n{}",
            unexplained.join("\n")
        );
        for path in &caps {
            let value = crate::util::xattr(&ours.join(&path[1..]), b"security.capability");
            assert!(value.is_some(), "{name}: {path} lost its capabilities");
        }
    }
    // What the greet package's header said about its files.
    let greet = canopy.path("ours-greet");
    let ping = crate::util::xattr(&greet.join("usr/bin/greet-ping"), b"security.capability");
    assert_eq!(
        hex::encode(ping.unwrap()),
        "0100000200200000000000000000000000000000",
        "cap_net_raw=ep as setcap writes it"
    );
    assert!(
        !greet.join("var/log/greet.log").exists(),
        "a %ghost file was written"
    );
    let meta = |p: &str| fs::symlink_metadata(greet.join(p)).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        meta("usr/bin/greet-su").permissions().mode() & 0o7777,
        0o4755
    );
    assert_eq!(meta("var/lib/greet").permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        fs::read_link(greet.join("usr/bin/hello")).unwrap(),
        Path::new("greet")
    );
    assert_eq!(
        meta("usr/bin/linked-a").size(),
        meta("usr/bin/linked-b").size()
    );
    assert_eq!(
        fs::read(greet.join("usr/bin/linked-b")).unwrap(),
        b"one inode, two names\n"
    );
    canopy.fsck_clean();
}

#[test]
fn import_records_what_the_header_says_and_skips_repeats() {
    let fx = fixtures();
    let canopy = Canopy::init("rpm-records");
    let all: Vec<&str> = fx.rpms.values().map(|p| path_str(p)).collect();
    let out = canopy.stdout([&["import", "rpm"][..], &all].concat());
    assert_eq!(parse_import(&out).len(), SPECS.len(), "{out}");
    let again = canopy.stdout([&["import", "rpm"][..], &all].concat());
    assert!(
        again.lines().all(|l| l.starts_with("skipped ")),
        "a second import read the archives again:\n{again}"
    );
    let list = canopy.json(["packages", "list"]);
    let greet = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "greet")
        .expect("greet is listed");
    assert_eq!(greet["kind"], "rpm");
    assert_eq!(greet["version"], "1.0-1");
    assert_eq!(greet["arch"], "noarch");
    assert_eq!(greet["scripts"], serde_json::json!(["pre", "post"]));
    let facts = &greet["extensions"]["rpm"];
    assert_eq!(facts["version"], "1.0");
    assert_eq!(facts["release"], "1");
    assert_eq!(facts["epoch"], serde_json::Value::Null);
    assert_eq!(
        facts["owners"],
        serde_json::json!([
            {"path": "/etc/greet.secret", "user": "greeter", "group": "greeter"},
            {"path": "/var/lib/greet", "user": "web", "group": "web"}
        ])
    );
    assert_eq!(facts["config"], serde_json::json!(["/etc/greet.conf"]));
    assert_eq!(facts["ghosts"], serde_json::json!(["/var/log/greet.log"]));
    let requires: Vec<&str> = facts["requires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for wanted in ["libgreet.so.1()(64bit)", "/bin/sh", "(sh or busybox)"] {
        assert!(requires.contains(&wanted), "{wanted} not in {requires:?}");
    }
    assert!(greet["control"].as_str().is_some_and(|c| c.len() == 64));
    let lib = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libgreet")
        .unwrap();
    assert_eq!(lib["arch"], "x86_64");
    canopy.fsck_clean();
}

#[test]
fn header_signatures_are_checked_against_the_keyring() {
    let fx = fixtures();
    let canopy = Canopy::init("rpm-signatures");
    let keyring = path_str(&fx.keyring);
    let before = canopy.snapshot();
    // Unsigned, and signed by a key the keyring does not hold: refused, nothing stored.
    let out = canopy
        .cmd([
            "import",
            "rpm",
            "--keyring",
            keyring,
            path_str(&fx.rpms["greet"]),
        ])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no header signature") && stderr.contains("[bad-signature]"),
        "{stderr}"
    );
    let other = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let out = canopy
        .cmd(["import", "rpm", "--keyring", other, path_str(&fx.signed)])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not in the keyring") && stderr.contains("[bad-signature]"),
        "{stderr}"
    );
    before.assert_unchanged("refused signatures");
    // Signed by the keyring's key: imported.
    let out = canopy.stdout(["import", "rpm", "--keyring", keyring, path_str(&fx.signed)]);
    assert!(out.starts_with("imported greet 1.0-1 (noarch)"), "{out}");
    canopy.fsck_clean();
}

#[test]
fn large_file_records_import_like_newc_ones() {
    let canopy = Canopy::init("rpm-stripped");
    let newc = canopy.path("newc.rpm");
    fs::write(&newc, rpms::good("gen-newc").build()).unwrap();
    let mut stripped = rpms::good("gen-stripped");
    stripped.stripped = true;
    // With SHA-256 file digests, as rpmbuild writes them: they agree with the content.
    stripped.file_digests = Some(None);
    let stripped_path = canopy.path("stripped.rpm");
    fs::write(&stripped_path, stripped.build()).unwrap();
    canopy.stdout(["import", "rpm", path_str(&newc), path_str(&stripped_path)]);
    canopy.stdout(["assemble", "a", "gen-newc"]);
    canopy.stdout(["assemble", "b", "gen-stripped"]);
    let (a, b) = (canopy.path("a"), canopy.path("b"));
    canopy.stdout(["checkout", "a", path_str(&a)]);
    canopy.stdout(["checkout", "b", path_str(&b)]);
    let diff = tree_differences(&a, &b);
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    assert_eq!(
        fs::read(b.join("usr/share/gen/data")).unwrap(),
        b"generated\n"
    );
}

#[test]
fn damaged_rpms_are_refused_never_crash() {
    let canopy = Canopy::init("rpm-damaged");
    let good = rpms::good("gen-damaged").build();
    let file = canopy.path("damaged.rpm");
    let mut crashed = Vec::new();
    for at in (0..good.len()).step_by(5) {
        let mut bytes = good.clone();
        bytes[at] ^= 0xa5;
        fs::write(&file, &bytes).unwrap();
        let out = canopy.cmd(["import", "rpm", path_str(&file)]).output();
        match out.status.code() {
            Some(1) => {}
            // A flip in bytes nothing checks (the lead's name field) may still import.
            Some(0) => {}
            _ => crashed.push(format!(
                "byte {at}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
    assert!(crashed.is_empty(), "{}", crashed.join("\n"));
    canopy.fsck_clean();
}

/// Copies the fixture repository for one test, which may then change it.
fn repo_copy(canopy: &Canopy) -> PathBuf {
    let dir = canopy.path("rpm-repo");
    cmd("cp")
        .arg("-a")
        .arg(&fixtures().repo)
        .arg(&dir)
        .success();
    dir
}

/// `.rpm` downloads nginx served.
fn rpm_requests(nginx: &crate::mount::Nginx) -> usize {
    nginx.requests(".rpm HTTP/1.1\" 200") + nginx.requests(".rpm HTTP/1.1\" 206")
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

#[test]
fn repository_assemble_upgrade_and_explain() {
    let fx = fixtures();
    let canopy = Canopy::init("rpm-repo");
    let repo = repo_copy(&canopy);
    let nginx = crate::mount::Nginx::start(&canopy, &format!("root {};", repo.display()));
    let keyring = path_str(&fx.keyring);
    let out = canopy.stdout([
        "repo",
        "add",
        "rpms",
        &nginx.url,
        "--kind",
        "rpm-md",
        "--keyring",
        keyring,
        "--verify-package-signatures",
    ]);
    assert!(
        out.starts_with(&format!(
            "added repository rpms: {} packages for x86_64",
            SPECS.len()
        )),
        "{out}"
    );
    // greet needs libgreet by soname, /bin/sh by path, setup before its scripts.
    let out = canopy
        .cmd(["assemble", "web", "--from", "rpms", "greet"])
        .output();
    // The fixtures are unsigned: --verify-package-signatures refuses them.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[bad-signature]"), "{stderr}");
    canopy.stdout(["repo", "remove", "rpms"]);
    canopy.stdout([
        "repo",
        "add",
        "rpms",
        &nginx.url,
        "--kind",
        "rpm-md",
        "--keyring",
        keyring,
    ]);
    let refused = rpm_requests(&nginx);
    let out = canopy.stdout(["assemble", "web", "--from", "rpms", "greet"]);
    assert_eq!(resolved(&out), (6, 6), "{out}");
    let log = canopy.json(["roots", "log", "web"]);
    let names: Vec<&str> = log[0]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["filesystem", "greet", "hostlibc", "libgreet", "setup", "sh"]
    );
    // Installed: greet's scriptlets ran in the sandbox.
    assert_eq!(log[0]["configure"]["format"], "rpm", "{log}");
    let downloads = rpm_requests(&nginx);
    assert_eq!(downloads - refused, 6);
    // Nothing new: up to date, nothing fetched.
    let out = canopy.stdout(["upgrade", "web"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(rpm_requests(&nginx), downloads);
    // One rebuilt library: one download.
    let rebuilt = fx.rebuild("libgreet", "2");
    fs::copy(
        &rebuilt,
        repo.join("Packages").join(rebuilt.file_name().unwrap()),
    )
    .unwrap();
    fx.publish(&repo);
    let out = canopy.stdout(["upgrade", "web"]);
    assert!(out.contains("~ libgreet 1.0-1 → 1.0-2"), "{out}");
    assert_eq!(rpm_requests(&nginx), downloads + 1, "{out}");
    // An impossible request says what is missing.
    let out = canopy
        .cmd(["assemble", "bad", "--from", "rpms", "needy"])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needy") && stderr.contains("libmissing.so.2()(64bit)"),
        "{stderr}"
    );
    canopy.fsck_clean();
}

#[test]
fn repository_metadata_is_checked() {
    let fx = fixtures();
    let canopy = Canopy::init("rpm-repo-checked");
    let repo = repo_copy(&canopy);
    let nginx = crate::mount::Nginx::start(&canopy, &format!("root {};", repo.display()));
    // A keyring that did not sign repomd.xml.
    let other = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let out = canopy
        .cmd([
            "repo",
            "add",
            "r",
            &nginx.url,
            "--kind",
            "rpm-md",
            "--keyring",
            other,
        ])
        .failure(1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the keyring"),
        "{out:?}"
    );
    assert_eq!(canopy.json(["repo", "list"]), serde_json::json!([]));
    // A primary that is not what repomd.xml says.
    let keyring = path_str(&fx.keyring);
    canopy.stdout([
        "repo",
        "add",
        "r",
        &nginx.url,
        "--kind",
        "rpm-md",
        "--keyring",
        keyring,
    ]);
    let primary = fs::read_dir(repo.join("repodata"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("primary.xml"))
        .unwrap();
    let mut bytes = fs::read(&primary).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&primary, bytes).unwrap();
    // The cache still holds the good copy: force a new repomd.xml to be read.
    let repomd = repo.join("repodata/repomd.xml");
    let text = fs::read_to_string(&repomd).unwrap();
    fs::write(&repomd, format!("{text}\n")).unwrap();
    let _ = fs::remove_dir_all(canopy.store().join("cache/repos/r"));
    let out = canopy.cmd(["repo", "update", "r"]).failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("repomd.xml") || stderr.contains("does not match"),
        "{stderr}"
    );
}
