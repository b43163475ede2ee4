//! Inputs that a fault and attack probe found mishandled, kept as regression tests:
//! `.deb` member layouts judged as `dpkg-deb` judges them, long runs of header-only
//! entries, the longest importable path checked out, a batch that goes on past every
//! kind of refused archive, file names that try to forge `roots diff` output, and HTTP
//! `Range` requests answered as RFC 9110 says.

use crate::corpus::{self, Tar, ar, control, control_tar_gz, gzip, noise};
use crate::mount::Server;
use crate::util::{self, Canopy, cmd, parse_import};
use std::fs;
use std::path::Path;

/// One `.deb` layout and canopy's expected verdict: `Ok(())` imports it (and then its
/// files must be what `dpkg-deb -x` extracts), `Err(class)` refuses it.
struct Layout {
    name: &'static str,
    deb: Vec<u8>,
    verdict: Result<(), &'static str>,
}

fn layouts() -> Vec<Layout> {
    let ctl = |n: &str| control_tar_gz(&control(n));
    let one = gzip(&corpus::good_tar("one"));
    let two = gzip(&corpus::good_tar("two"));
    let two_zst = zstd::encode_all(&corpus::good_tar("two")[..], 3).unwrap();
    let debian = ("debian-binary", &b"2.0\n"[..]);
    let layout = |name, members: &[(&str, &[u8])], verdict| Layout {
        name,
        deb: ar(&[&[debian], members].concat()),
        verdict,
    };
    let mut garbage_after = ar(&[
        debian,
        ("control.tar.gz", &ctl("lay-garbage")),
        ("data.tar.gz", &one),
    ]);
    garbage_after.extend(noise(100));
    vec![
        layout(
            "two-data",
            &[
                ("control.tar.gz", &ctl("lay-twodata")),
                ("data.tar.gz", &one),
                ("data.tar.gz", &two),
            ],
            Ok(()),
        ),
        layout(
            "data-then-zst",
            &[
                ("control.tar.gz", &ctl("lay-zst")),
                ("data.tar.gz", &one),
                ("data.tar.zst", &two_zst),
            ],
            Ok(()),
        ),
        layout(
            "member-after-data",
            &[
                ("control.tar.gz", &ctl("lay-after")),
                ("data.tar.gz", &one),
                ("junk", b"junk\n"),
            ],
            Ok(()),
        ),
        layout(
            "control-after-data",
            &[
                ("control.tar.gz", &ctl("lay-ctlafter")),
                ("data.tar.gz", &one),
                ("control.tar.gz", &ctl("lay-other")),
            ],
            Ok(()),
        ),
        layout(
            "underscore-members",
            &[
                ("_first", b"x"),
                ("control.tar.gz", &ctl("lay-under")),
                ("_second", b"y"),
                ("data.tar.gz", &one),
            ],
            Ok(()),
        ),
        Layout {
            name: "garbage-after-data",
            deb: garbage_after,
            verdict: Ok(()),
        },
        layout(
            "two-control",
            &[
                ("control.tar.gz", &ctl("lay-twoctl")),
                ("control.tar.gz", &ctl("lay-twoctl2")),
                ("data.tar.gz", &one),
            ],
            Err("not-a-deb"),
        ),
        layout(
            "data-before-control",
            &[("data.tar.gz", &one), ("control.tar.gz", &ctl("lay-early"))],
            Err("not-a-deb"),
        ),
        layout(
            "unknown-before-data",
            &[
                ("control.tar.gz", &ctl("lay-unk")),
                ("junk", b"junk\n"),
                ("data.tar.gz", &one),
            ],
            Err("not-a-deb"),
        ),
        layout(
            "unknown-before-control",
            &[
                ("junk", b"junk\n"),
                ("control.tar.gz", &ctl("lay-unk2")),
                ("data.tar.gz", &one),
            ],
            Err("not-a-deb"),
        ),
    ]
}

#[test]
fn deb_member_layouts_are_judged_as_dpkg_deb_judges_them() {
    let canopy = Canopy::init("deb-layouts");
    let mut wrong = Vec::new();
    for layout in layouts() {
        let file = canopy.path(format!("{}.deb", layout.name));
        fs::write(&file, &layout.deb).unwrap();
        let dpkg = cmd("dpkg-deb").arg("--fsys-tarfile").arg(&file).output();
        if dpkg.status.success() != layout.verdict.is_ok() {
            wrong.push(format!(
                "{}: dpkg-deb --fsys-tarfile says {}, the table says {:?}",
                layout.name, dpkg.status, layout.verdict
            ));
            continue;
        }
        let before = canopy.snapshot();
        let out = canopy.cmd(["import", "deb"]).arg(&file).output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match layout.verdict {
            Err(class) => {
                let refused = stderr.lines().any(|l| {
                    l.starts_with("error: importing") && l.ends_with(&format!("[{class}]"))
                });
                if out.status.code() != Some(1) || !refused {
                    wrong.push(format!(
                        "{}: expected a [{class}] refusal, got {}: {stderr}",
                        layout.name, out.status
                    ));
                }
                let diff = before.differences(&canopy.snapshot());
                if !diff.is_empty() {
                    wrong.push(format!("{}: the store changed: {diff:?}", layout.name));
                }
            }
            Ok(()) => {
                if !out.status.success() {
                    wrong.push(format!("{}: refused: {stderr}", layout.name));
                    continue;
                }
                let pkg = &parse_import(&String::from_utf8_lossy(&out.stdout))[0].name;
                let root = format!("r-{}", layout.name);
                canopy.stdout(["assemble", &root, pkg]);
                let ours = canopy.path(format!("co-{}", layout.name));
                canopy.cmd(["checkout", &root]).arg(&ours).success();
                let theirs = canopy.mkdir(format!("dpkg-{}", layout.name));
                util::dpkg_extract(&[&file], &theirs);
                let diff = util::tree_differences(&theirs, &ours);
                if !diff.is_empty() {
                    wrong.push(format!(
                        "{}: canopy's files differ from dpkg-deb -x's: {diff:?}",
                        layout.name
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    canopy.fsck_clean();
}

#[test]
fn long_runs_of_header_only_entries_import() {
    let canopy = Canopy::init("small-headers");
    // 5,000 directories then 5,000 symlinks: 5 MB of headers with no file content.
    let tar = corpus::tar_many_small_entries(5_000);
    let file = canopy.path("many.tar");
    fs::write(&file, &tar).unwrap();
    let listed = cmd("tar").arg("-tf").arg(&file).stdout().lines().count();
    assert_eq!(listed, 10_003);
    let out = canopy
        .cmd(["import", "tar"])
        .arg(&file)
        .args(["--name", "many"])
        .stdout();
    let imported = parse_import(&out);
    // Every entry but the archive's own root.
    assert!(imported[0].new && out.contains("10002 entries"), "{out}");
    let deb = canopy.path("many.deb");
    fs::write(&deb, corpus::deb_of("many", &tar)).unwrap();
    canopy.cmd(["import", "deb"]).arg(&deb).success();
}

#[test]
fn the_longest_importable_path_checks_out() {
    let canopy = Canopy::init("long-path");
    let file = canopy.path("long.tar");
    fs::write(&file, corpus::tar_long_path(4095)).unwrap();
    canopy
        .cmd(["import", "tar"])
        .arg(&file)
        .args(["--name", "long"])
        .success();
    canopy.stdout(["assemble", "long", "long"]);
    let dest =
        canopy.path("checked-out/a-destination-that-makes-the-whole-path-longer-than-path-max");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    canopy.cmd(["checkout", "long"]).arg(&dest).success();
    // find walks with relative paths, so it reaches what one absolute path cannot name.
    let found = cmd("find")
        .args([".", "-type", "f"])
        .current_dir(&dest)
        .stdout();
    assert_eq!(found.trim_end(), format!(".{}", corpus::long_path(4095)));
}

#[test]
fn a_batch_goes_on_past_every_kind_of_refused_archive() {
    let canopy = Canopy::init("batch");
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "xattr-big",
            corpus::deb_of(
                "b1",
                &corpus::tar_with_xattr(b"user.v", &vec![b'v'; 70_000]),
            ),
            "too-large",
        ),
        (
            "xattr-empty",
            corpus::deb_of("b2", &corpus::tar_with_xattr(b"", b"v")),
            "bad-name",
        ),
        (
            "deep",
            corpus::deb_of("b3", &corpus::tar_deep(20_000)),
            "bad-name",
        ),
        (
            "two-control",
            corpus::deb_members(&[
                ("control.tar.gz", &control_tar_gz(&control("b4"))),
                ("control.tar.gz", &control_tar_gz(&control("b4"))),
                ("data.tar.gz", &gzip(&corpus::good_tar("b4"))),
            ]),
            "not-a-deb",
        ),
    ];
    let mut args = vec![canopy.path("first.deb")];
    fs::write(&args[0], corpus::good_deb("first")).unwrap();
    for (name, bytes, _) in &bad {
        let path = canopy.path(format!("{name}.deb"));
        fs::write(&path, bytes).unwrap();
        args.push(path);
    }
    args.push(canopy.path("last.deb"));
    fs::write(args.last().unwrap(), corpus::good_deb("last")).unwrap();
    let out = canopy.cmd(["import", "deb"]).args(&args).failure(1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names: Vec<String> = parse_import(&stdout).into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["first", "last"], "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (name, _, class) in &bad {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{name}.deb")) && l.ends_with(&format!("[{class}]"))),
            "no [{class}] error for {name}.deb:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 of 6 archives failed"), "{stderr}");
    canopy.fsck_clean();
}

#[test]
fn names_in_diff_output_are_escaped_and_exact_in_json() {
    let canopy = Canopy::init("diff-names");
    let forged = "x\nD /usr/bin/sudo";
    let coloured = "\x1b[31mred";
    let v1 = Tar::new().dir("./").file("./keep", b"k").finish();
    let v2 = Tar::new()
        .dir("./")
        .file("./keep", b"k")
        .file(&format!("./{forged}"), b"f")
        .file(&format!("./{coloured}"), b"c")
        .file("./back\\slash", b"b")
        .finish();
    for (version, tar) in [("1", v1), ("2", v2)] {
        let file = canopy.path(format!("names-{version}.tar"));
        fs::write(&file, tar).unwrap();
        canopy
            .cmd(["import", "tar"])
            .arg(&file)
            .args(["--name", "names", "--version", version])
            .success();
        canopy.stdout(["assemble", "names", &format!("names={version}")]);
    }
    let out = canopy.cmd(["roots", "diff", "names"]).output();
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b), "an escape byte reached stdout");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let paths: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(['A', 'D', 'M']))
        .collect();
    // The name "x\nD " holds a newline: printed raw, "D /usr/bin/sudo" would be a line.
    assert_eq!(
        paths,
        [
            "A /\\x1b[31mred",
            "A /back\\\\slash",
            "A /x\\nD ",
            "A /x\\nD /usr",
            "A /x\\nD /usr/bin",
            "A /x\\nD /usr/bin/sudo"
        ],
        "{stdout}"
    );
    let json = canopy.json(["roots", "diff", "names"]);
    let mut exact: Vec<&str> = json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    exact.sort();
    assert_eq!(exact[0], format!("/{coloured}"));
    assert_eq!(exact[1], "/back\\slash");
    assert_eq!(*exact.last().unwrap(), format!("/{forged}"));
}

/// `curl` with extra request headers (separated by `|`); returns the status line's code, the headers
/// (lowercased names) and the body.
fn get(url: &str, header: &str, dir: &Path) -> (u16, String, Vec<u8>) {
    let (head, body) = (dir.join("head"), dir.join("body"));
    let mut curl = cmd("curl");
    curl.args(["-s", "-o"]).arg(&body).arg("-D").arg(&head);
    for h in header.split('|') {
        curl.args(["-H", h]);
    }
    curl.arg(url).success();
    let head = fs::read_to_string(head).unwrap().to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, fs::read(body).unwrap())
}

#[test]
fn http_ranges_are_answered_as_rfc_9110_says() {
    let canopy = Canopy::init("ranges");
    let deb = canopy.path("good.deb");
    fs::write(&deb, corpus::good_deb("ranges")).unwrap();
    canopy.cmd(["import", "deb"]).arg(&deb).success();
    let data = noise(64 * 1024);
    let data_file = canopy.path("data");
    fs::write(&data_file, &data).unwrap();
    let server = Server::start(&canopy, "127.0.0.1:0");
    let url = format!(
        "{}/v1/objects/{}",
        server.url,
        util::sha256_file(&data_file)
    );
    let dir = canopy.path("");

    // Two ranges: multipart/byteranges with both pieces.
    let (code, head, body) = get(&url, "Range: bytes=0-9, 100-109", &dir);
    assert_eq!(code, 206, "{head}");
    assert!(
        head.contains("content-type: multipart/byteranges; boundary="),
        "{head}"
    );
    for (piece, range) in [
        (&data[0..10], "bytes 0-9/65536"),
        (&data[100..110], "bytes 100-109/65536"),
    ] {
        let part = format!("Content-Range: {range}\r\n\r\n").into_bytes();
        let at = body
            .windows(part.len())
            .position(|w| w == part)
            .expect(range);
        assert_eq!(
            body[at + part.len()..at + part.len() + 10],
            *piece,
            "{range}"
        );
    }
    // A suffix longer than the object is the whole object.
    let (code, head, body) = get(&url, "Range: bytes=-1000000", &dir);
    assert_eq!((code, body == data), (206, true), "{head}");
    assert!(
        head.contains("content-range: bytes 0-65535/65536"),
        "{head}"
    );
    // Only the satisfiable piece of several.
    let (code, head, body) = get(&url, "Range: bytes=70000-80000, 0-3", &dir);
    assert_eq!((code, &body[..]), (206, &data[0..4]), "{head}");
    // Nothing satisfiable: 416 with the length.
    let (code, head, _) = get(&url, "Range: bytes=70000-", &dir);
    assert_eq!(code, 416, "{head}");
    assert!(head.contains("content-range: bytes */65536"), "{head}");
    // A malformed header or another validator in If-Range: the whole object, 200.
    for header in ["Range: bytes=9-1", "Range: bytes=0-1|If-Range: \"another\""] {
        let (code, head, body) = get(&url, header, &dir);
        assert_eq!((code, body == data), (200, true), "{header}: {head}");
    }
}

/// Makes `levels` nested directories `d/d/…` under `base`, with one file at the bottom,
/// walking down with `openat` (the whole path is far past PATH_MAX).
fn deep_directory(base: &Path, levels: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open = |at: i32, name: &std::ffi::CStr| {
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = unsafe { libc::openat(at, name.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: fd was just opened and is owned here.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let base = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).unwrap();
    let mut dir = open(libc::AT_FDCWD, &base);
    for _ in 0..levels {
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::mkdirat(dir.as_raw_fd(), c"d".as_ptr(), 0o755) },
            0
        );
        dir = open(dir.as_raw_fd(), c"d");
    }
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"f".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
    };
    assert!(fd >= 0);
    // SAFETY: fd was just opened.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

#[test]
fn a_directory_20000_levels_deep_is_refused_not_a_crash() {
    let canopy = Canopy::init("deep-dir");
    let base = canopy.mkdir("deep");
    deep_directory(&base, 20_000);
    let out = canopy
        .cmd(["import", "dir"])
        .arg(&base)
        .args(["--name", "deep"])
        .output();
    // First away with it: rm -rf walks by descriptors, a recursive removal would not.
    cmd("rm").arg("-rf").arg(&base).success();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Refused by the path bound, or by the kernel's PATH_MAX on the way down: an error
    // naming the directory either way, never a crash.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&*base.to_string_lossy())
            && (stderr.contains("[bad-name]") || stderr.contains("File name too long")),
        "{stderr}"
    );
}
