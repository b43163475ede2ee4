//! The host's cache is not trusted on its names: a cache file altered on disk (written
//! over, truncated) is found out by the next open or read, fetched again and never
//! served, through canopy or through FUSE passthrough; cache files are read-only.

use crate::corpus;
use crate::mount::{Mount, Server, read};
use crate::util::{Canopy, sha256_file};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Asks the kernel to drop the pages it keeps for `file` (a file of the mount), so the
/// next read reaches canopy.
fn drop_pages(file: &fs::File) {
    // SAFETY: fadvise only takes a valid descriptor and a range.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// Reads all of `file` with positioned reads (so an fd held open can be read again).
fn pread_all(file: &fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut at = 0;
    while at < len {
        match file.read_at(&mut buf[at..], at as u64)? {
            0 => break,
            n => at += n,
        }
    }
    buf.truncate(at);
    Ok(buf)
}

/// Alters a cache file as its owner could after a chmod: same size, one byte flipped,
/// or cut short.
fn alter(path: &Path, truncate: bool) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    if truncate {
        bytes.truncate(bytes.len() / 2);
    } else {
        bytes[1000] ^= 0xff;
    }
    fs::write(path, &bytes).unwrap();
}

#[test]
fn altered_cache_files_are_fetched_again_never_served() {
    let env = Canopy::init("cache-altered");
    let deb = env.path("altered.deb");
    fs::write(&deb, corpus::good_deb("altered")).unwrap();
    env.cmd(["import", "deb"]).arg(&deb).success();
    env.cmd(["assemble", "altered", "altered"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    let data = corpus::noise(64 * 1024);

    for (name, extra) in [
        ("plain", &["--no-passthrough"][..]),
        ("passthrough", &[][..]),
    ] {
        let args = [&["--root", "altered"][..], extra].concat();
        let mount = Mount::start(&env, name, &server.url, &args);
        let path = mount.path("usr/share/altered/data");
        assert_eq!(read(&path).unwrap(), data, "{name}: first read");
        let id = sha256_file(&path);
        let cached = env
            .path(format!("{name}-cache"))
            .join("objects")
            .join(&id[..2])
            .join(&id[2..]);
        let mode = fs::metadata(&cached).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "{name}: cache files are read-only");

        for truncate in [false, true] {
            let held = fs::File::open(&path).unwrap();
            assert_eq!(pread_all(&held, data.len()).unwrap(), data);
            alter(&cached, truncate);
            if name == "plain" {
                // A file opened before the change, read through canopy: the change is
                // seen at the next read, which gets the object's bytes.
                drop_pages(&held);
                assert_eq!(
                    pread_all(&held, data.len()).unwrap(),
                    data,
                    "{name}: an open file read altered bytes (truncated: {truncate})"
                );
            }
            drop(held);
            // A new open, its pages dropped: the object's bytes, never the altered ones.
            let again = fs::File::open(&path).unwrap();
            drop_pages(&again);
            assert_eq!(
                pread_all(&again, data.len()).unwrap(),
                data,
                "{name}: a new open read altered bytes (truncated: {truncate})"
            );
            drop(again);
            assert_eq!(
                fs::read(&cached).unwrap(),
                data,
                "{name}: the cache file was not fetched again"
            );
        }
        let log = mount.log();
        assert!(
            log.contains("holds other bytes"),
            "{name}: the altered file was not reported:\n{log}"
        );
        mount.stop();
    }
}

#[test]
fn a_cache_file_altered_under_a_passthrough_open_is_never_served_and_opens_go_on() {
    let env = Canopy::init("cache-held");
    // Over the size below which files are read through canopy even with passthrough.
    let data = corpus::noise(512 * 1024);
    fs::write(env.mkdir("src/data").join("big"), &data).unwrap();
    env.cmd(["import", "dir"])
        .arg(env.path("src"))
        .args(["--name", "held", "--version", "1"])
        .success();
    env.cmd(["assemble", "held", "held", "--no-configure"])
        .success();
    let server = Server::start(&env, "127.0.0.1:0");
    let mount = Mount::start(&env, "held", &server.url, &["--root", "held"]);
    let path = mount.path("data/big");
    // Fetched through canopy; once the kernel has sent its release, opens pass through.
    assert_eq!(read(&path).unwrap(), data);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let held = fs::File::open(&path).unwrap();
    assert_eq!(pread_all(&held, data.len()).unwrap(), data);
    let id = sha256_file(&path);
    let cached = env
        .path("held-cache")
        .join("objects")
        .join(&id[..2])
        .join(&id[2..]);
    alter(&cached, false);
    // The kernel binds the inode to the held file's registration and refuses an open
    // without it: this one names it, and its reads come to canopy (verified bytes).
    let again = fs::File::open(&path).unwrap();
    assert_eq!(pread_all(&again, data.len()).unwrap(), data);
    drop((held, again));
    let log = mount.log();
    assert!(
        log.contains("holds other bytes"),
        "the altered file was not reported:\n{log}"
    );
    mount.stop();
}
