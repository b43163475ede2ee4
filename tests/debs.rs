//! The real Debian 12 packages the tests import, fetched once with `apt-get download`.
//!
//! [`ROOT_PACKAGES`] is the complete Depends/Pre-Depends closure of `bash` and
//! `coreutils` on bookworm (checked with `apt-cache depends`): unpacked together they
//! make a root where `chroot ROOT /bin/bash -c 'echo ok && ls / && id -u'` works. The
//! virtual `awk` that base-files pre-depends on is provided by `mawk`; `libc6` pulls in
//! `libgcc-s1`, which pulls in `gcc-12-base`.
//!
//! The .debs are cached in `$CANOPY_TEST_DEBS`, or else `target/test-debs` of the
//! workspace, and reused across runs. Within one test process a `OnceLock` fetches them
//! once; across processes an flock on `DIR/.lock` serialises the fetch, and each file
//! is downloaded into a private directory and renamed into place, so nobody ever sees a
//! partial .deb. If they cannot be fetched, the tests fail and say what to run: they never
//! skip.

use crate::util::cmd;
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The closure of bash + coreutils on Debian 12, by package name.
pub const ROOT_PACKAGES: &[&str] = &[
    "base-files",
    "bash",
    "coreutils",
    "debianutils",
    "gcc-12-base",
    "libacl1",
    "libattr1",
    "libc6",
    "libgcc-s1",
    "libgmp10",
    "libpcre2-8-0",
    "libselinux1",
    "libtinfo6",
    "mawk",
];

/// The closure of bookworm's Essential packages with `nginx-light`, `ca-certificates`
/// and `python3`, without Recommends (what `apt-get install -s -o
/// Dir::State::status=/dev/null` lists): the set whose configured root the installed-root
/// tests compare with mmdebstrap's. `usrmerge` is the alternative apt picks for
/// init-system-helpers' `usrmerge | usr-is-merged`.
pub const INSTALLED_PACKAGES: &[&str] = &[
    "base-files",
    "base-passwd",
    "bash",
    "bsdutils",
    "ca-certificates",
    "coreutils",
    "dash",
    "debconf",
    "debianutils",
    "diffutils",
    "dpkg",
    "findutils",
    "gcc-12-base",
    "grep",
    "gzip",
    "hostname",
    "init-system-helpers",
    "iproute2",
    "libacl1",
    "libattr1",
    "libaudit-common",
    "libaudit1",
    "libblkid1",
    "libbpf1",
    "libbsd0",
    "libbz2-1.0",
    "libc-bin",
    "libc6",
    "libcap-ng0",
    "libcap2",
    "libcap2-bin",
    "libcom-err2",
    "libcrypt1",
    "libdb5.3",
    "libdebconfclient0",
    "libelf1",
    "libexpat1",
    "libffi8",
    "libfile-find-rule-perl",
    "libgcc-s1",
    "libgcrypt20",
    "libgdbm-compat4",
    "libgdbm6",
    "libgmp10",
    "libgpg-error0",
    "libgssapi-krb5-2",
    "libk5crypto3",
    "libkeyutils1",
    "libkrb5-3",
    "libkrb5support0",
    "liblz4-1",
    "liblzma5",
    "libmd0",
    "libmnl0",
    "libmount1",
    "libncursesw6",
    "libnginx-mod-http-echo",
    "libnsl2",
    "libnumber-compare-perl",
    "libpam-modules",
    "libpam-modules-bin",
    "libpam-runtime",
    "libpam0g",
    "libpcre2-8-0",
    "libperl5.36",
    "libpython3-stdlib",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libreadline8",
    "libselinux1",
    "libsmartcols1",
    "libsqlite3-0",
    "libssl3",
    "libsystemd0",
    "libtext-glob-perl",
    "libtinfo6",
    "libtirpc-common",
    "libtirpc3",
    "libudev1",
    "libuuid1",
    "libxtables12",
    "libzstd1",
    "login",
    "mawk",
    "media-types",
    "ncurses-base",
    "ncurses-bin",
    "nginx",
    "nginx-common",
    "nginx-light",
    "openssl",
    "perl",
    "perl-base",
    "perl-modules-5.36",
    "python3",
    "python3-minimal",
    "python3.11",
    "python3.11-minimal",
    "readline-common",
    "sed",
    "sysvinit-utils",
    "tar",
    "usrmerge",
    "util-linux",
    "util-linux-extra",
    "zlib1g",
];

/// The closure of bookworm's Essential packages with `systemd-sysv`, `linux-image-amd64`,
/// `initramfs-tools` and `openssh-server`, without Recommends (what `apt-get install -s
/// -o Dir::State::status=/dev/null` lists): a root that boots, diskless, over NFS, and
/// whose nodes each need host keys of their own.
pub const NETBOOT_PACKAGES: &[&str] = &[
    "adduser",
    "base-files",
    "base-passwd",
    "bash",
    "bsdutils",
    "coreutils",
    "cpio",
    "dash",
    "debconf",
    "debianutils",
    "diffutils",
    "dmsetup",
    "dpkg",
    "findutils",
    "gcc-12-base",
    "grep",
    "gzip",
    "hostname",
    "init-system-helpers",
    "initramfs-tools",
    "initramfs-tools-core",
    "klibc-utils",
    "kmod",
    "libacl1",
    "libapparmor1",
    "libargon2-1",
    "libattr1",
    "libaudit-common",
    "libaudit1",
    "libblkid1",
    "libbsd0",
    "libbz2-1.0",
    "libc-bin",
    "libc6",
    "libcap-ng0",
    "libcap2",
    "libcbor0.8",
    "libcom-err2",
    "libcrypt1",
    "libcryptsetup12",
    "libdb5.3",
    "libdebconfclient0",
    "libdevmapper1.02.1",
    "libedit2",
    "libfdisk1",
    "libffi8",
    "libfido2-1",
    "libfile-find-rule-perl",
    "libgcc-s1",
    "libgcrypt20",
    "libgdbm-compat4",
    "libgdbm6",
    "libgmp10",
    "libgpg-error0",
    "libgssapi-krb5-2",
    "libip4tc2",
    "libjson-c5",
    "libk5crypto3",
    "libkeyutils1",
    "libklibc",
    "libkmod2",
    "libkrb5-3",
    "libkrb5support0",
    "liblz4-1",
    "liblzma5",
    "libmd0",
    "libmount1",
    "libncursesw6",
    "libnsl2",
    "libnumber-compare-perl",
    "libp11-kit0",
    "libpam-modules",
    "libpam-modules-bin",
    "libpam-runtime",
    "libpam0g",
    "libpcre2-8-0",
    "libperl5.36",
    "libproc2-0",
    "libseccomp2",
    "libselinux1",
    "libsemanage-common",
    "libsemanage2",
    "libsepol2",
    "libsmartcols1",
    "libssl3",
    "libsystemd-shared",
    "libsystemd0",
    "libtext-glob-perl",
    "libtinfo6",
    "libtirpc-common",
    "libtirpc3",
    "libudev1",
    "libuuid1",
    "libwrap0",
    "libzstd1",
    "linux-base",
    "linux-image-6.1.0-57-amd64",
    "linux-image-amd64",
    "login",
    "logsave",
    "mawk",
    "mount",
    "ncurses-base",
    "ncurses-bin",
    "openssh-client",
    "openssh-server",
    "openssh-sftp-server",
    "passwd",
    "perl",
    "perl-base",
    "perl-modules-5.36",
    "procps",
    "runit-helper",
    "sed",
    "sensible-utils",
    "systemd",
    "systemd-sysv",
    "sysvinit-utils",
    "tar",
    "ucf",
    "udev",
    "usrmerge",
    "util-linux",
    "util-linux-extra",
    "zlib1g",
];

/// The smallest set dpkg configures in: dpkg, a shell, coreutils, the diff and
/// ldconfig dpkg checks for, sed and grep (which libc6's preinst calls), with their
/// Depends/Pre-Depends closure (a subset of [`INSTALLED_PACKAGES`]).
pub const DPKG_PACKAGES: &[&str] = &[
    "coreutils",
    "dash",
    "debianutils",
    "diffutils",
    "dpkg",
    "grep",
    "libc-bin",
    "sed",
    "gcc-12-base",
    "libacl1",
    "libattr1",
    "libbz2-1.0",
    "libc6",
    "libgcc-s1",
    "libgmp10",
    "liblzma5",
    "libmd0",
    "libpcre2-8-0",
    "libselinux1",
    "libzstd1",
    "tar",
    "zlib1g",
];

/// One downloaded package.
#[derive(Clone, Debug)]
pub struct Deb {
    /// `Package:` field.
    pub name: String,
    /// `Version:` field, with any epoch.
    pub version: String,
    /// `Architecture:` field.
    pub arch: String,
    /// The .deb file.
    pub path: PathBuf,
}

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("CANOPY_TEST_DEBS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-debs"),
    }
}

/// Every package of [`ROOT_PACKAGES`], in that order, downloaded if need be.
pub fn root_debs() -> &'static [Deb] {
    static DEBS: OnceLock<Vec<Deb>> = OnceLock::new();
    DEBS.get_or_init(|| fetch(ROOT_PACKAGES))
}

/// One package of [`ROOT_PACKAGES`].
pub fn deb(name: &str) -> &'static Deb {
    root_debs()
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} is not one of debs::ROOT_PACKAGES"))
}

/// Packages beyond [`ROOT_PACKAGES`], downloaded if need be.
pub fn more_debs(names: &[&str]) -> Vec<Deb> {
    fetch(names)
}

/// The .deb files of some packages of [`ROOT_PACKAGES`].
pub fn paths(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| deb(n).path.clone()).collect()
}

fn fetch(names: &[&str]) -> Vec<Deb> {
    let dir = cache_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let lock = fs::File::create(dir.join(".lock")).unwrap();
    // SAFETY: flock only reads the descriptor, which `lock` keeps open until we return.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!(
            "locking {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut have = scan(&dir);
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !have.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "fetching {} into {} with apt-get download",
            missing.join(" "),
            dir.display()
        );
        download(&dir, &missing);
        have = scan(&dir);
    }
    names
        .iter()
        .map(|n| {
            have.remove(*n).unwrap_or_else(|| {
                panic!(
                    "apt-get download did not produce {n} in {}; fetch it by hand: \
                     cd {} && apt-get download {n}",
                    dir.display(),
                    dir.display()
                )
            })
        })
        .collect()
}

/// The .debs already in `dir`, newest version per package.
fn scan(dir: &Path) -> BTreeMap<String, Deb> {
    let mut out: BTreeMap<String, Deb> = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "deb") {
            continue;
        }
        let fields = cmd("dpkg-deb")
            .arg("-f")
            .arg(&path)
            .args(["Package", "Version", "Architecture"])
            .stdout();
        let field = |key: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("{} has no {key} field", path.display()))
                .to_string()
        };
        let deb = Deb {
            name: field("Package"),
            version: field("Version"),
            arch: field("Architecture"),
            path,
        };
        let newer = match out.get(&deb.name) {
            None => true,
            Some(old) => cmd("dpkg")
                .args(["--compare-versions", &deb.version, "gt", &old.version])
                .output()
                .status
                .success(),
        };
        if newer {
            out.insert(deb.name.clone(), deb);
        }
    }
    out
}

/// Downloads packages into a private directory, then renames them into `dir`. Runs
/// `apt-get update` once if the first attempt fails (empty package lists).
fn download(dir: &Path, names: &[&str]) {
    let staging = dir.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).unwrap();
    let attempt = || {
        cmd("apt-get")
            .args(["download", "-q"])
            .args(names)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir(&staging)
            .output()
    };
    let mut out = attempt();
    if !out.status.success() {
        eprintln!("apt-get download failed; running apt-get update once and retrying");
        let update = cmd("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        if update.status.success() {
            out = attempt();
        }
    }
    if !out.status.success() {
        panic!(
            "could not download the Debian packages the tests need into {dir}.\n\
             Run as root: apt-get update && (cd {dir} && apt-get download {names})\n\
             or point CANOPY_TEST_DEBS at a directory holding those .debs.\n\n\
             apt-get download said:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            dir = dir.display(),
            names = names.join(" "),
        );
    }
    for entry in fs::read_dir(&staging).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            fs::rename(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    fs::remove_dir_all(&staging).unwrap();
}
