//! Hostile archives: every one is refused with its error class, and the store is left
//! byte-for-byte unchanged.
//!
//! Each case is one line of [`cases`]: a name, how it is imported (`import deb`,
//! `import rpm` or `import tar`), the `[CLASS]` canopy must end its error message with,
//! extra arguments, and the generator from `corpus.rs` or `rpms.rs` that writes the
//! archive. Every case runs against a
//! store that already holds a good package, and the test reports every case that went
//! wrong, not just the first.

use crate::util::{self, Canopy, parse_import};
use crate::{corpus, rpms};
use std::fs;

/// How a case is imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `canopy import deb FILE`
    Deb,
    /// `canopy import tar FILE --name NAME`
    Tar,
    /// `canopy import rpm FILE`
    Rpm,
}
const DEB: Kind = Kind::Deb;
const TAR: Kind = Kind::Tar;
const RPM: Kind = Kind::Rpm;

/// One hostile archive and what canopy must say about it.
struct Case {
    name: &'static str,
    kind: Kind,
    class: &'static str,
    args: &'static [&'static str],
    make: fn() -> Vec<u8>,
}

const fn case(
    name: &'static str,
    kind: Kind,
    class: &'static str,
    args: &'static [&'static str],
    make: fn() -> Vec<u8>,
) -> Case {
    Case {
        name,
        kind,
        class,
        args,
        make,
    }
}

const NONE: &[&str] = &[];
const MAX_8M: &[&str] = &["--max-size", "8M"];

fn long_component() -> Vec<u8> {
    let mut path = b"./".to_vec();
    path.extend(std::iter::repeat_n(b'a', 256));
    path
}

/// The table: adding a case is one line.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use corpus::*;
    vec![
        case("dotdot", DEB, "path-traversal", NONE, || deb_of("h-dotdot", &tar_with_file("../etc/passwd"))),
        case("dotdot-tar", TAR, "path-traversal", NONE, || tar_with_file("../etc/passwd")),
        case("dotdot-nested", DEB, "path-traversal", NONE, || deb_of("h-nested", &Tar::new().dir("./").dir("./a/").file("./a/../../x", b"x").finish())),
        case("dotdot-inside", DEB, "path-traversal", NONE, || deb_of("h-inside", &Tar::new().dir("./").dir("./a/").file("./a/../b", b"x").finish())),
        case("absolute", DEB, "absolute-path", NONE, || deb_of("h-abs", &tar_with_file("/etc/passwd"))),
        case("absolute-tar", TAR, "absolute-path", NONE, || tar_with_file("/etc/passwd")),
        case("symlink-absolute", DEB, "through-symlink", NONE, || deb_of("h-symabs", &tar_through_absolute_symlink())),
        case("symlink-absolute-tar", TAR, "through-symlink", NONE, tar_through_absolute_symlink),
        case("symlink-relative", DEB, "through-symlink", NONE, || deb_of("h-symrel", &tar_through_relative_symlink())),
        case("nul-in-pax-path", DEB, "bad-name", NONE, || deb_of("h-nul", &tar_with_pax_path(b"./etc/pass\0wd"))),
        case("component-256-bytes", DEB, "bad-name", NONE, || deb_of("h-long", &tar_with_pax_path(&long_component()))),
        case("component-256-bytes-tar", TAR, "bad-name", NONE, || tar_with_pax_path(&long_component())),
        case("duplicate", DEB, "duplicate-entry", NONE, || deb_of("h-dup", &tar_duplicate("./etc/x", "./etc/x"))),
        case("duplicate-respelled", DEB, "duplicate-entry", NONE, || deb_of("h-dup2", &tar_duplicate("./etc/x", "etc/x"))),
        case("duplicate-tar", TAR, "duplicate-entry", NONE, || tar_duplicate("./etc/x", "./etc/x")),
        case("truncated-tar-mid-file", TAR, "truncated", NONE, || tar_truncated(512 + 3000)),
        case("truncated-tar-mid-header", TAR, "truncated", NONE, || tar_truncated(200)),
        case("truncated-tar-first-header", TAR, "truncated", NONE, tar_truncated_in_first_header),
        case("truncated-tar-gz", TAR, "truncated", NONE, || { let gz = gzip(&good_tar("cutgz")); gz[..gz.len() / 2].to_vec() }),
        case("truncated-deb-mid-data", DEB, "truncated", NONE, || deb_cut_from_end(20_000)),
        case("truncated-deb-last-byte", DEB, "truncated", NONE, || deb_cut_from_end(1)),
        case("truncated-deb-member-header", DEB, "truncated", NONE, deb_cut_in_data_header),
        case("png", DEB, "not-a-deb", NONE, png),
        case("elf", DEB, "not-a-deb", NONE, elf),
        case("text", DEB, "not-a-deb", NONE, || b"This is not a Debian package.\n".to_vec()),
        case("ar-without-debian-binary", DEB, "not-a-deb", NONE, || ar(&[("hello.txt", b"hi\n")])),
        case("ar-empty", DEB, "not-a-deb", NONE, || ar(&[])),
        case("debian-binary-3.0", DEB, "not-a-deb", NONE, || ar(&[("debian-binary", b"3.0\n"), ("control.tar.gz", &control_tar_gz(&control("h-v3"))), ("data.tar.gz", &gzip(&good_tar("h-v3")))])),
        case("no-data-tar", DEB, "not-a-deb", NONE, || deb_members(&[("control.tar.gz", &control_tar_gz(&control("h-nodata")))])),
        case("xz-that-is-gzip", DEB, "bad-compression", NONE, || deb_members(&[("control.tar.gz", &control_tar_gz(&control("h-xzgz"))), ("data.tar.xz", &gzip(&good_tar("h-xzgz")))])),
        case("zst-that-is-plain", DEB, "bad-compression", NONE, || deb_members(&[("control.tar.gz", &control_tar_gz(&control("h-zst"))), ("data.tar.zst", &good_tar("h-zst"))])),
        case("control-gz-that-is-plain", DEB, "bad-compression", NONE, || deb_members(&[("control.tar.gz", &Tar::new().dir("./").file("./control", control("h-cplain").as_bytes()).finish()), ("data.tar.gz", &gzip(&good_tar("h-cplain")))])),
        case("data-tar-lz4", DEB, "bad-compression", NONE, || deb_members(&[("control.tar.gz", &control_tar_gz(&control("h-lz4"))), ("data.tar.lz4", b"\x04\x22\x4d\x18\x64\x40\xa7\0\0\0\0\x05\x5d\xcc\x02")])),
        case("zstd-bomb", DEB, "too-large", MAX_8M, || deb_members(&[("control.tar.gz", &control_tar_gz(&control("h-bomb"))), ("data.tar.zst", &zstd_zero_bomb(64 << 20))])),
        case("zstd-bomb-tar", TAR, "too-large", MAX_8M, || zstd_zero_bomb(64 << 20)),
        case("over-max-size-k", DEB, "too-large", &["--max-size", "32K"], || good_deb("h-sized")),
        case("over-max-size-bytes", DEB, "too-large", &["--max-size", "32768"], || good_deb("h-sized")),
        case("pax-header-2gib", DEB, "too-large", NONE, || deb_of("h-pax", &tar_huge_metadata_header(PAX))),
        case("gnu-longname-2gib", TAR, "too-large", NONE, || tar_huge_metadata_header(GNU_LONGNAME)),
        case("hardlink-missing", DEB, "bad-link", NONE, || deb_of("h-link", &tar_hardlink("./usr/missing", |_| {}, |_| {}))),
        case("hardlink-forward", DEB, "bad-link", NONE, || deb_of("h-fwd", &tar_hardlink("./usr/later", |_| {}, |t| { t.file("./usr/later", b"x"); }))),
        case("hardlink-to-dir", DEB, "bad-link", NONE, || deb_of("h-ldir", &tar_hardlink("./usr/", |_| {}, |_| {}))),
        case("hardlink-to-symlink", TAR, "bad-link", NONE, || tar_hardlink("./usr/sym", |t| { t.symlink("./usr/sym", "target"); }, |_| {})),
        case("bad-checksum", DEB, "malformed", NONE, || deb_of("h-sum", &tar_bad_checksum())),
        case("bad-checksum-tar", TAR, "malformed", NONE, tar_bad_checksum),
        case("pax-sparse-file", TAR, "malformed", NONE, || Tar::new().dir("./").pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0"), ("GNU.sparse.name", b"./big"), ("GNU.sparse.realsize", b"1048576")]).file("./GNUSparseFile.0/big", b"1\n0\n512\n").finish()),
        case("size-not-a-number", TAR, "malformed", NONE, tar_bad_size_field),
        case("control-tar-without-control", DEB, "bad-control", NONE, || deb_members(&[("control.tar.gz", &gzip(&Tar::new().dir("./").file("./md5sums", b"").finish())), ("data.tar.gz", &gzip(&good_tar("h-noctl")))])),
        case("control-without-version", DEB, "bad-control", NONE, || deb(&control("h-nover").replace("Version: 1.0\n", ""), &good_tar("h-nover"))),
        case("control-without-package", DEB, "bad-control", NONE, || deb(&control("h-nopkg").replace("Package: h-nopkg\n", ""), &good_tar("h-nopkg"))),
        case("xattr-value-over-64k", DEB, "too-large", NONE, || deb_of("h-xbig", &tar_with_xattr(b"user.big", &vec![b'v'; 65_537]))),
        case("xattr-value-over-64k-tar", TAR, "too-large", NONE, || tar_with_xattr(b"user.big", &vec![b'v'; 65_537])),
        case("xattr-empty-name", DEB, "bad-name", NONE, || deb_of("h-xempty", &tar_with_xattr(b"", b"v"))),
        case("xattr-empty-name-tar", TAR, "bad-name", NONE, || tar_with_xattr(b"", b"v")),
        case("path-20000-levels", DEB, "bad-name", NONE, || deb_of("h-deep", &tar_deep(20_000))),
        case("path-20000-levels-tar", TAR, "bad-name", NONE, || tar_deep(20_000)),
        case("path-4096-bytes", TAR, "bad-name", NONE, || tar_long_path(4096)),
        case("control-arch-with-dotdot", DEB, "bad-control", NONE, || deb(&control("h-archdd").replace("Architecture: all\n", "Architecture: ../../../../tmp/x\nMulti-Arch: same\n"), &good_tar("h-archdd"))),
        case("control-arch-with-a-line-of-its-own", DEB, "bad-control", NONE, || deb(&control("h-archnl").replace("Architecture: all\n", "Architecture: all\n Status: install ok installed\n"), &good_tar("h-archnl"))),
        case("control-binary-garbage", DEB, "bad-control", NONE, || deb("\u{1}\u{2}\u{3}\n\n\0", &good_tar("h-garbage"))),
        case("rpm-png", RPM, "not-an-rpm", NONE, png),
        case("rpm-a-deb", RPM, "not-an-rpm", NONE, || good_deb("h-deb-as-rpm")),
        case("rpm-source-package", RPM, "not-an-rpm", NONE, || { let mut r = rpms::good("h-src"); r.lead_type = 1; r.build() }),
        case("rpm-truncated-lead", RPM, "truncated", NONE, || rpms::good("h-cut").build()[..50].to_vec()),
        case("rpm-truncated-header", RPM, "truncated", NONE, || { let b = rpms::good("h-cut2").build(); b[..b.len() - 300].to_vec() }),
        case("rpm-truncated-payload", RPM, "truncated", NONE, || { let b = rpms::good("h-cut3").build(); b[..b.len() - 10].to_vec() }),
        case("rpm-index-count-16m", RPM, "too-large", NONE, || { let mut r = rpms::good("h-count"); r.intro = Some((0x00ff_ffff, 64)); r.build() }),
        case("rpm-data-size-255m", RPM, "truncated", NONE, || { let mut r = rpms::good("h-data"); r.intro = Some((20, 0x0fff_0000)); r.build() }),
        case("rpm-data-size-4g", RPM, "too-large", NONE, || { let mut r = rpms::good("h-data4g"); r.intro = Some((20, 0xffff_fff0)); r.build() }),
        case("rpm-index-past-data", RPM, "malformed", NONE, || { let mut r = rpms::good("h-past"); r.intro = Some((20, 16)); r.build() }),
        case("rpm-payload-not-gzip", RPM, "bad-compression", NONE, || { let mut r = rpms::good("h-notgz"); r.payload = Some(b"this is not a compressed payload".to_vec()); r.build() }),
        case("rpm-payload-garbage-gzip", RPM, "malformed", NONE, || { let mut r = rpms::good("h-garb"); r.payload = Some(gzip(&[&b"070701"[..], &[b'z'; 200]].concat())); r.build() }),
        case("rpm-cpio-dotdot", RPM, "path-traversal", NONE, || rpms::with_cpio("h-rdotdot", &[(b"./usr/share/gen", 0o040755, b""), (b"./usr/share/../../../etc/passwd", 0o100644, b"x")])),
        case("rpm-cpio-absolute", RPM, "absolute-path", NONE, || rpms::with_cpio("h-rabs", &[(b"/etc/passwd", 0o100644, b"x")])),
        case("rpm-header-dotdot", RPM, "path-traversal", NONE, || rpms::rpm("h-hdotdot", vec![rpms::file("/usr/../../etc/passwd", b"x")]).build()),
        case("rpm-cpio-unlisted", RPM, "malformed", NONE, || rpms::with_cpio("h-unlisted", &[(b"./usr/share/gen", 0o040755, b""), (b"./etc/shadow", 0o100644, b"x")])),
        case("rpm-cpio-duplicate", RPM, "duplicate-entry", NONE, || { let e = rpms::GOOD_ENTRIES; rpms::with_cpio("h-rdup", &[e[0], e[1], e[1], e[2]]) }),
        case("rpm-entry-larger-than-header", RPM, "malformed", NONE, || { let e = rpms::GOOD_ENTRIES; rpms::with_cpio("h-big", &[e[0], (b"./usr/share/gen/data", 0o100644, b"generated, and then some more\n"), e[2]]) }),
        case("rpm-payload-larger-than-declared", RPM, "too-large", NONE, || { let r = rpms::good("h-more"); let mut cpio = rpms::cpio(&rpms::GOOD_ENTRIES); cpio.extend(b"07070100000000 more data after the trailer"); let mut r2 = r.clone(); r2.payload = Some(gzip(&cpio)); r2.build() }),
        case("rpm-payload-missing-file", RPM, "malformed", NONE, || { let e = rpms::GOOD_ENTRIES; rpms::with_cpio("h-missing", &[e[0], e[2]]) }),
        case("rpm-bad-header-digest", RPM, "bad-digest", NONE, || { let mut r = rpms::good("h-digest"); r.bad_digest = true; r.build() }),
        case("rpm-file-digest-disagrees", RPM, "bad-digest", NONE, || { let mut r = rpms::good("h-fdigest"); r.file_digests = Some(Some(1)); r.build() }),
        case("rpm-zstd-bomb", RPM, "too-large", MAX_8M, || { let mut r = rpms::rpm("h-rbomb", vec![rpms::file("/big", &vec![0; 64 << 20])]); r.compressor = "zstd"; r.build() }),
        case("rpm-unsigned-with-keyring", RPM, "bad-signature", &["--keyring", "KEYRING"], || rpms::good("h-unsigned").build()),
    ]
}

/// Imports one case into `canopy`'s store; returns a description of what went wrong.
fn check(canopy: &Canopy, case: &Case) -> Option<String> {
    let ext = match case.kind {
        Kind::Deb => "deb",
        Kind::Tar => "tar",
        Kind::Rpm => "rpm",
    };
    let file = canopy.path(format!("hostile/{}.{ext}", case.name));
    fs::write(&file, (case.make)()).unwrap();
    let before = canopy.snapshot();
    let mut cmd = match case.kind {
        Kind::Deb => canopy.cmd(["import", "deb"]),
        Kind::Tar => canopy.cmd(["import", "tar"]),
        Kind::Rpm => canopy.cmd(["import", "rpm"]),
    };
    cmd.arg(&file);
    if case.kind == Kind::Tar {
        cmd.args(["--name", case.name]);
    }
    // A keyring named KEYRING is a real one: an empty OpenPGP keyring file would be
    // refused before the package is read.
    let keyring = crate::rpm::fixtures()
        .keyring
        .to_string_lossy()
        .into_owned();
    cmd.args(
        case.args
            .iter()
            .map(|a| if *a == "KEYRING" { keyring.as_str() } else { a }),
    );
    let out = cmd.output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.code() != Some(1) {
        wrong.push(format!("exit status is {}, expected 1", out.status));
    }
    let tag = format!("[{}]", case.class);
    let line = stderr.lines().find(|l| l.starts_with("error: importing "));
    match line {
        None => wrong.push("no `error: importing FILE: …` line on stderr".into()),
        Some(line) => {
            if !line.contains(&*file.to_string_lossy()) {
                wrong.push("the error line does not name the file".into());
            }
            if !line.trim_end().ends_with(&tag) {
                wrong.push(format!("the error line does not end with {tag}"));
            }
        }
    }
    if !out.stdout.is_empty() {
        wrong.push("something was printed on stdout".into());
    }
    let diff = before.differences(&canopy.snapshot());
    if !diff.is_empty() {
        wrong.push(format!("the store changed:\n    {}", diff.join("\n    ")));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "case {} ({}):\n  {}{}",
            case.name,
            case.class,
            wrong.join("\n  "),
            cmd.report("exit status 1 and the class above", &out)
        )
    })
}

#[test]
fn every_hostile_archive_is_refused_and_leaves_the_store_unchanged() {
    let canopy = Canopy::init("hostile");
    let good = canopy.path("good.deb");
    fs::write(&good, corpus::good_deb("good")).unwrap();
    let imported = parse_import(&canopy.stdout(["import", "deb", good.to_str().unwrap()]));
    assert!(imported.len() == 1 && imported[0].new && imported[0].name == "good");
    canopy.mkdir("hostile");
    let cases = cases();
    let failures: Vec<String> = cases.iter().filter_map(|c| check(&canopy, c)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} hostile archives were not handled as the contract says:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    canopy.fsck_clean();
}

#[test]
fn good_archives_still_import_next_to_a_hostile_one() {
    let canopy = Canopy::init("hostile-mixed");
    let (one, bad, two) = (
        canopy.path("one.deb"),
        canopy.path("bad.deb"),
        canopy.path("two.deb"),
    );
    fs::write(&one, corpus::good_deb("one")).unwrap();
    fs::write(&bad, corpus::deb_of("bad", &corpus::tar_with_file("../x"))).unwrap();
    fs::write(&two, corpus::good_deb("two")).unwrap();
    let out = canopy.fails([
        "import",
        "deb",
        one.to_str().unwrap(),
        bad.to_str().unwrap(),
        two.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<String> = parse_import(&stdout)
        .into_iter()
        .map(|i| {
            assert!(i.new, "{stdout}");
            i.name
        })
        .collect();
    names.sort();
    assert_eq!(names, ["one", "two"], "stdout:\n{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    assert!(
        errors[0].contains(&*bad.to_string_lossy()) && errors[0].ends_with("[path-traversal]"),
        "stderr:\n{stderr}"
    );
    let listed = canopy.json(["packages", "list"]);
    let mut listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["one", "two"]);
    canopy.fsck_clean();
}

/// The generators themselves: the good archives are what dpkg and GNU tar accept, and
/// the flawed ones are flawed for GNU tar too. Needs no canopy binary.
#[test]
fn corpus_archives_are_what_they_claim() {
    let canopy = Canopy::new("corpus");
    let good = canopy.path("good.deb");
    fs::write(&good, corpus::good_deb("good")).unwrap();
    let info = util::cmd("dpkg-deb").arg("--info").arg(&good).stdout();
    assert!(info.contains("Package: good"), "{info}");
    let list = util::cmd("dpkg-deb").arg("--contents").arg(&good).stdout();
    assert!(list.contains("./usr/share/good/data"), "{list}");
    let tar = |name: &str, bytes: Vec<u8>| {
        let path = canopy.path(name);
        fs::write(&path, bytes).unwrap();
        let mut cmd = util::cmd("tar");
        cmd.arg("-tvf").arg(path);
        cmd
    };
    tar("good.tar", corpus::good_tar("x")).success();
    let dotdot = tar("dotdot.tar", corpus::tar_with_file("../etc/passwd")).stdout();
    assert!(dotdot.contains("../etc/passwd"), "{dotdot}");
    let pax = tar("pax.tar", corpus::tar_with_pax_path(b"./from-pax")).stdout();
    assert!(
        pax.contains("./from-pax") && !pax.contains("placeholder"),
        "{pax}"
    );
    tar("sum.tar", corpus::tar_bad_checksum()).failure(2);
    tar("cut.tar", corpus::tar_truncated(3000)).failure(2);
    // The bomb really is 64 MiB of zeros in a few kilobytes.
    let bomb = corpus::zstd_zero_bomb(64 << 20);
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let plain = zstd::decode_all(&bomb[..]).unwrap();
    assert_eq!(plain.len() as u64, (64 << 20) + 512 + 1024);
}

/// An object file replaced by something that is not a file — a FIFO, whose open would
/// wait for a writer, or a symlink to `/dev/zero`, which never ends — is damage that
/// every reader reports at once, and that `fsck --repair` mends from the archive.
#[test]
fn object_files_that_are_not_files_are_reported_and_repaired_without_waiting() {
    use std::time::Duration;
    let canopy = Canopy::init("hostile-store");
    let archives = canopy.mkdir("archives");
    fs::write(archives.join("good.deb"), corpus::good_deb("good")).unwrap();
    canopy
        .cmd(["import", "deb"])
        .arg(archives.join("good.deb"))
        .success();
    canopy
        .cmd(["assemble", "web", "good", "--no-configure"])
        .success();
    let blob = canopy.json(["ls", "web", "/usr/share/good/data"])[0]["blob"]
        .as_str()
        .unwrap()
        .to_string();
    let file = canopy
        .store()
        .join("objects")
        .join(&blob[..2])
        .join(&blob[2..]);
    let within = |args: &[&str]| {
        canopy
            .cmd(args)
            .output_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("canopy {} still running after 60 s", args.join(" ")))
    };
    for damage in ["fifo", "symlink to /dev/zero"] {
        fs::remove_file(&file).unwrap();
        if damage == "fifo" {
            util::cmd("mkfifo").arg(&file).success();
        } else {
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        }
        let out = within(&["fsck"]);
        let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        assert!(
            out.status.code() == Some(1) && text.contains(&blob[2..]),
            "{damage}: fsck: {}\n{text}",
            out.status
        );
        let out = within(&["cat", "web", "/usr/share/good/data"]);
        assert_eq!(out.status.code(), Some(1), "{damage}: cat");
        let out = within(&["fsck", "--repair", "--archives", archives.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{damage}: fsck --repair: {}\n{}",
            out.status,
            String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
        );
        assert!(fs::symlink_metadata(&file).unwrap().is_file(), "{damage}");
        canopy.fsck_clean();
    }
    // Files that are not objects at all are said and left alone: fsck still checks
    // everything else.
    let stray = file.with_file_name("notanobject");
    fs::write(&stray, b"x").unwrap();
    fs::write(canopy.store().join("objects/zz"), b"x").unwrap();
    let out = within(&["fsck"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("notanobject") && err.contains("objects/zz"),
        "fsck with stray files: {}\n{err}",
        out.status
    );
}

/// An archive given as a pipe (`canopy import deb <(curl …)`, a FIFO) is imported as
/// the same file would be: it can be read only once, and its second open used to wait
/// for a writer forever. A device (`/dev/zero`) is refused before a byte is read.
#[test]
fn archives_from_pipes_import_and_devices_are_refused() {
    use std::time::Duration;
    let canopy = Canopy::init("hostile-pipes");
    let inputs: [(&str, Vec<u8>, &[&str]); 3] = [
        ("deb", corpus::good_deb("piped"), &[]),
        ("rpm", rpms::good("piped-rpm").build(), &[]),
        (
            "tar",
            corpus::good_tar("piped-tar"),
            &["--name", "piped-tar"],
        ),
    ];
    for (kind, bytes, args) in inputs {
        let fifo = canopy.path(format!("{kind}.fifo"));
        util::cmd("mkfifo").arg(&fifo).success();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::write(fifo, bytes))
        };
        let out = canopy
            .cmd(["import", kind])
            .arg(&fifo)
            .args(args)
            .output_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("import {kind} of a FIFO still running after 60 s"));
        assert!(
            out.status.success(),
            "import {kind} of a FIFO: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        writer.join().unwrap().unwrap();
    }
    let out = canopy
        .cmd(["import", "deb", "/dev/zero"])
        .output_within(Duration::from_secs(60))
        .expect("import deb /dev/zero still running after 60 s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && err.contains("/dev/zero")
            && err.contains("not a regular file"),
        "{err}"
    );
    assert!(
        fs::read_dir(canopy.store().join("tmp")).map_or(0, |d| d.count()) == 0,
        "spooled copies left in tmp/"
    );
    canopy.fsck_clean();
}
