//! Serving over HTTP and mounting with FUSE, as a host would: real `canopy serve` on
//! 127.0.0.1, real FUSE mounts, real Debian packages, real programs run from the mount.

use crate::debs;
use crate::util::{Canopy, assert_same_tree, cmd, parse_assemble, walk};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Root `small` (bash and what it needs) and root `full` (every test package), which
/// share most files.
pub(crate) const SMALL: &[&str] = &[
    "base-files",
    "bash",
    "libc6",
    "libtinfo6",
    "gcc-12-base",
    "libgcc-s1",
];

/// A store holding roots `small` and `full`.
pub(crate) fn two_roots(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(debs::ROOT_PACKAGES))
        .success();
    env.cmd(["assemble", "small"]).args(SMALL).success();
    env.cmd(["assemble", "full"])
        .args(debs::ROOT_PACKAGES)
        .success();
    env
}

/// Waits until `line` appears on the child's stdout; returns that line.
pub(crate) fn wait_for_line(child: &mut Child, what: &str, stderr: &Path) -> String {
    let out = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(out).lines();
    match lines.next() {
        Some(Ok(line)) if line.contains(what) => line,
        other => panic!(
            "expected a line with {what:?}, got {other:?}; stderr:\n{}",
            fs::read_to_string(stderr).unwrap_or_default()
        ),
    }
}

/// `canopy -v serve` on 127.0.0.1, stopped when dropped. Its access log is kept so
/// tests can count requests.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(env: &Canopy, listen: &str) -> Server {
        Server::start_with(env, listen, &[])
    }

    /// With more arguments to `serve`, and the environment's variables.
    pub(crate) fn start_with(env: &Canopy, listen: &str, extra: &[&str]) -> Server {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = env.path(format!("serve-{}-{n}.log", listen.replace(':', "_")));
        let mut child = Command::new(crate::util::BIN)
            .args(["--store"])
            .arg(env.store())
            .args(["-v", "serve", "--listen", listen])
            .args(extra)
            .envs(env.envs().iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting canopy serve");
        let line = wait_for_line(&mut child, "on http://", &log);
        let url = line.rsplit(' ').next().unwrap().to_string();
        Server { child, url, log }
    }

    /// The `host:port` it listens on.
    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// The server's log (its access log with `-v`).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }

    /// How many object requests the server answered.
    pub(crate) fn object_requests(&self) -> usize {
        answered(&self.log(), "/v1/objects/")
    }

    /// How many requests for this object the server answered, once it has logged at
    /// least one: a request's line is written after its answer is sent, so a reader
    /// that has its bytes may look before the line is there.
    fn requests_for(&self, id: &str) -> usize {
        eventually(
            Duration::from_secs(30),
            || format!("the server logged no request for object {id}"),
            || {
                let n = answered(&self.log(), &format!("/v1/objects/{id} "));
                (n > 0).then_some(n)
            },
        )
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests a server's log `log` says it answered whose URI starts with `prefix`.
pub(crate) fn answered(log: &str, prefix: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("answered") && l.contains(&format!("uri={prefix}")))
        .count()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `canopy mount` in the foreground, stopped with SIGTERM (which must unmount) when
/// dropped.
pub(crate) struct Mount {
    child: Child,
    pub(crate) dir: PathBuf,
    log: PathBuf,
}

pub(crate) fn is_mounted(dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap()))
}

impl Mount {
    pub(crate) fn start(env: &Canopy, name: &str, url: &str, extra: &[&str]) -> Mount {
        Mount::start_on(env, name, env.mkdir(name), url, extra)
    }

    /// As [`Mount::start`], on `dir`, which exists already.
    pub(crate) fn start_on(
        env: &Canopy,
        name: &str,
        dir: PathBuf,
        url: &str,
        extra: &[&str],
    ) -> Mount {
        let log = env.path(format!("{name}.log"));
        let trust = env.path("server.pub");
        if !trust.exists() {
            fs::write(&trust, env.stdout(["key", "show"])).unwrap();
        }
        let mut child = Command::new(crate::util::BIN)
            .args(["-v", "mount", url])
            .arg(&dir)
            .arg("--trust")
            .arg(&trust)
            .arg("--cache-dir")
            .arg(env.path(format!("{name}-cache")))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting canopy mount");
        wait_for_line(&mut child, "mounted at", &log);
        assert!(is_mounted(&dir), "{} is not a mount point", dir.display());
        Mount { child, dir, log }
    }

    /// The mount process's exit status, once it exits within `limit`; else the test
    /// fails with `why` and its log.
    pub(crate) fn exit_within(&mut self, limit: Duration, why: &str) -> ExitStatus {
        let log = self.log.clone();
        eventually(
            limit,
            || format!("{why}:\n{}", fs::read_to_string(&log).unwrap_or_default()),
            || self.child.try_wait().unwrap(),
        )
    }

    /// Sends `signal` to the mount's process.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }

    /// SIGTERM: the mount must go away and the process exit 0.
    pub(crate) fn stop(mut self) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "canopy mount exited with {status} on SIGTERM:\n{}",
            self.log()
        );
        assert!(
            !is_mounted(&self.dir),
            "{} still mounted after SIGTERM",
            self.dir.display()
        );
    }
}

/// After a failed assertion: stops a process that mounts at `dir` however it can be
/// stopped, never hanging, and takes its mount away.
pub(crate) fn force_stop(child: &mut Child, dir: &Path) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if is_mounted(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_stop(&mut self.child, &self.dir);
    }
}

/// The fusectl directory of the FUSE connection of the mount at `dir`
/// (`/sys/fs/fuse/connections/N`, fusectl mounted if it is not), found from the mount
/// table: nothing is read through the mount.
pub(crate) fn fuse_connection(dir: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(dir.parent().unwrap())
        .unwrap()
        .join(dir.file_name().unwrap());
    // The last mount on `dir` is the one its path reaches.
    let device = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&dir.to_str().unwrap()))
        .and_then(|f| f[2].split(':').nth(1).map(str::to_string))?;
    let connections = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(connections).is_ok_and(|mut d| d.next().is_none()) {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(connections)
            .status();
    }
    Some(connections.join(device))
}

/// Aborts the FUSE connection of the mount at `dir` (through fusectl), so that nothing
/// waiting on it stays blocked: the way out when its process cannot answer any more.
pub(crate) fn abort_connection(dir: &Path) {
    // The abort file is opened, then the mount checked to be still the directory's: a
    // connection that ends meanwhile leaves its open file inert, so another test's
    // mount, given the same connection number since, is never aborted.
    let Some(connection) = fuse_connection(dir) else {
        return;
    };
    let Ok(mut abort) = fs::OpenOptions::new()
        .write(true)
        .open(connection.join("abort"))
    else {
        return;
    };
    if fuse_connection(dir).as_ref() == Some(&connection) {
        let _ = abort.write_all(b"1");
    }
}

/// Polls `poll` until it yields a value, panicking with `failure()` after `limit`.
pub(crate) fn eventually<T>(
    limit: Duration,
    failure: impl Fn() -> String,
    mut poll: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = poll() {
            return value;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

fn blob_of(path: &Path) -> String {
    crate::util::sha256_file(path)
}

#[test]
fn two_roots_run_share_inodes_and_download_once() {
    let env = two_roots("mount-two");
    let server = Server::start(&env, "127.0.0.1:0");
    let mount = Mount::start(&env, "mnt", &server.url, &[]);

    let mut roots: Vec<String> = fs::read_dir(&mount.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    roots.sort();
    assert_eq!(roots, ["full", "small"]);

    let out = cmd("chroot")
        .arg(mount.path("full"))
        .args(["/bin/bash", "-c", "echo ok && ls / && id -u"])
        .stdout();
    assert!(
        out.starts_with("ok\n") && out.contains("usr\n") && out.ends_with("0\n"),
        "{out}"
    );
    let out = cmd("chroot")
        .arg(mount.path("small"))
        .args(["/bin/bash", "-c", "echo small"])
        .stdout();
    assert_eq!(out, "small\n");

    // Same file in both roots: one inode, one download, although both roots ran it.
    let (a, b) = (mount.path("small/bin/bash"), mount.path("full/bin/bash"));
    assert_eq!(
        fs::metadata(&a).unwrap().ino(),
        fs::metadata(&b).unwrap().ino()
    );
    assert_eq!(read(&a).unwrap(), read(&b).unwrap());
    assert_eq!(
        server.requests_for(&blob_of(&a)),
        1,
        "bash was downloaded more than once"
    );
    // Directories are per path: the two /usr are distinct inodes.
    assert_ne!(
        fs::metadata(mount.path("small/usr")).unwrap().ino(),
        fs::metadata(mount.path("full/usr")).unwrap().ino()
    );
    // Numbers follow the inode rule, not the process: a successor gives the same ones.
    assert_eq!(
        fs::metadata(mount.path("full/usr/bin")).unwrap().ino(),
        canopy_protocol::inode::dir(b"full", b"usr/bin")
    );

    // The mount shows exactly what a checkout of the same commit holds.
    let out = env.path("full-checkout");
    env.cmd(["checkout", "full"]).arg(&out).success();
    assert_same_tree(&out, &mount.path("full"));
    mount.stop();
}

/// Several threads read every file of a cold mount at once, each in its own order, and
/// then again warm: every byte matches a checkout. The mount's FUSE threads, the
/// fetches, directory packs and prefetch all serve the same files concurrently.
#[test]
fn a_root_read_by_many_threads_at_once_matches_a_checkout() {
    let env = two_roots("mount-parallel");
    let reference = env.path("full-checkout");
    env.cmd(["checkout", "full"]).arg(&reference).success();
    let files: Vec<PathBuf> = walk(&reference)
        .into_iter()
        .filter(|p| fs::symlink_metadata(reference.join(p)).unwrap().is_file())
        .collect();
    assert!(files.len() > 100, "only {} files", files.len());
    let server = Server::start(&env, "127.0.0.1:0");
    let mount = Mount::start(&env, "parallel", &server.url, &["--root", "full"]);
    for pass in ["cold", "warm"] {
        let errors: Vec<String> = std::thread::scope(|s| {
            let readers: Vec<_> = (0..6)
                .map(|t| {
                    let (files, reference, dir) = (&files, &reference, &mount.dir);
                    s.spawn(move || {
                        // Thread t starts at its own offset; odd threads go backwards.
                        let n = files.len();
                        let mut bad = Vec::new();
                        for i in 0..n {
                            let k = (t * n / 6 + i) % n;
                            let k = if t % 2 == 1 { n - 1 - k } else { k };
                            let path = &files[k];
                            match read(&dir.join(path)) {
                                Ok(got) if got == fs::read(reference.join(path)).unwrap() => {}
                                Ok(_) => bad.push(format!("{}: wrong bytes", path.display())),
                                Err(e) => bad.push(format!("{}: {e}", path.display())),
                            }
                        }
                        bad
                    })
                })
                .collect();
            readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect()
        });
        assert!(
            errors.is_empty(),
            "{pass} pass: {} failures, first: {:?}\n{}",
            errors.len(),
            &errors[..errors.len().min(5)],
            mount.log()
        );
    }
    mount.stop();
}

#[test]
fn cache_stays_within_its_bound_under_a_full_walk() {
    let env = two_roots("mount-bound");
    let server = Server::start(&env, "127.0.0.1:0");
    let bound: u64 = 4 << 20;
    let mount = Mount::start(
        &env,
        "mnt",
        &server.url,
        &["--root", "full", "--cache-size", "4M"],
    );
    let reference = env.path("ref");
    env.cmd(["checkout", "full"]).arg(&reference).success();
    let mut total = 0u64;
    for rel in walk(&reference) {
        let path = reference.join(&rel);
        if fs::symlink_metadata(&path).unwrap().is_file() {
            let content = read(&mount.dir.join(&rel)).unwrap();
            assert_eq!(content, read(&path).unwrap(), "{} differs", rel.display());
            total += content.len() as u64;
        }
    }
    assert!(
        total > 4 * bound,
        "the walk ({total} bytes) must be much larger than the cache"
    );
    let cached: u64 = walk(&env.path("mnt-cache/objects"))
        .iter()
        .map(|rel| fs::symlink_metadata(env.path("mnt-cache/objects").join(rel)).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(
        cached <= bound,
        "cache holds {cached} bytes, over its {bound}-byte bound"
    );
    mount.stop();
}

#[test]
fn server_outage_keeps_cached_files_and_fails_others_quickly() {
    let env = two_roots("mount-outage");
    let mut server = Server::start(&env, "127.0.0.1:0");
    let addr = server.addr();
    let mount = Mount::start(
        &env,
        "mnt",
        &server.url,
        &["--root", "full", "--timeout", "2s"],
    );
    let cached = read(&mount.path("bin/bash")).unwrap();

    server.stop();
    assert_eq!(
        read(&mount.path("bin/bash")).unwrap(),
        cached,
        "a cached file must keep working"
    );
    // Worse than a refused connection: a server that accepts and then never answers.
    let hole = std::net::TcpListener::bind(&addr).unwrap();
    let start = Instant::now();
    let err = read(&mount.path("usr/bin/sha256sum"))
        .expect_err("an uncached file cannot be read offline");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "EIO took {:?}",
        start.elapsed()
    );
    drop(hole);

    let _back = Server::start(&env, &addr);
    let again =
        read(&mount.path("usr/bin/sha256sum")).expect("reads recover when the server returns");
    assert_eq!(&again[..4], b"\x7fELF");
    mount.stop();
}

#[test]
fn failover_to_the_next_server() {
    let env = two_roots("mount-failover");
    let server = Server::start(&env, "127.0.0.1:0");
    // Nothing listens on port 9 of 127.0.0.1: the first server is down.
    let mount = Mount::start(
        &env,
        "mnt",
        "http://127.0.0.1:9",
        &["--server", &server.url, "--root", "small"],
    );
    let out = cmd("chroot")
        .arg(&mount.dir)
        .args(["/bin/bash", "-c", "echo via failover"])
        .stdout();
    assert_eq!(out, "via failover\n");
    mount.stop();
}

#[test]
fn tampered_objects_and_foreign_keys_are_refused() {
    let env = two_roots("mount-tamper");
    let server = Server::start(&env, "127.0.0.1:0");
    let reference = env.path("ref");
    env.cmd(["checkout", "full"]).arg(&reference).success();
    // A proxy alters bytes of sha256sum's own on their way.
    let proxy = crate::proxy::tamper_file(
        &server.url,
        &reference.join("usr/bin/sha256sum"),
        &[reference.join("usr/bin"), reference.join("bin")],
    );

    let mount = Mount::start(&env, "mnt", &proxy.url, &["--root", "full"]);
    let err =
        read(&mount.path("usr/bin/sha256sum")).expect_err("tampered content must not be served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        mount.log().contains("hash mismatch"),
        "no hash mismatch logged:\n{}",
        mount.log()
    );
    assert!(
        read(&mount.path("bin/bash")).is_ok(),
        "other files still work"
    );
    mount.stop();

    // A commit signed by another key: the mount is refused.
    let other = Canopy::init("mount-tamper-other");
    let foreign = env.path("other.pub");
    fs::write(&foreign, other.stdout(["key", "show"])).unwrap();
    let dir = env.mkdir("refused");
    let out = env
        .bare_cmd(["mount", &server.url])
        .arg(&dir)
        .arg("--trust")
        .arg(&foreign)
        .arg("--cache-dir")
        .arg(env.path("refused-cache"))
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing root") && stderr.contains("not by the trusted key"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("not by the trusted key").count(),
        1,
        "said once: {stderr}"
    );
    assert!(!is_mounted(&dir));

    // A root the server does not have: the error names the server and what it has.
    let out = env
        .bare_cmd(["mount", &server.url])
        .arg(&dir)
        .arg("--trust")
        .arg(env.path("server.pub"))
        .args(["--root", "wbe", "--cache-dir"])
        .arg(env.path("refused-cache"))
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no root named wbe")
            && stderr.contains(&server.url)
            && stderr.contains("full"),
        "{stderr}"
    );
    assert!(!is_mounted(&dir));
}

/// Imports a one-file tar package `app` whose /srv/msg holds `msg`.
pub(crate) fn import_app(env: &Canopy, version: &str, msg: &str) {
    let tree = env.mkdir(format!("app-{version}/srv"));
    fs::write(tree.join("msg"), msg).unwrap();
    let tarball = env.path(format!("app-{version}.tar"));
    cmd("tar")
        .arg("-C")
        .arg(env.path(format!("app-{version}")))
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg(".")
        .success();
    env.cmd(["import", "tar"])
        .arg(&tarball)
        .args(["--name", "app", "--version", version])
        .success();
}

/// Imports a tar package `site` of version `version` with files `(path, content)`.
fn import_site(env: &Canopy, version: &str, files: &[(&str, &str)]) {
    let top = env.mkdir(format!("site-{version}"));
    for (path, content) in files {
        let path = top.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let tarball = env.path(format!("site-{version}.tar"));
    cmd("tar")
        .arg("-C")
        .arg(&top)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg(".")
        .success();
    env.cmd(["import", "tar"])
        .arg(&tarball)
        .args(["--name", "site", "--version", version])
        .success();
}

/// What `dir` shows: every path below it, sorted, with the size and content of its files,
/// as `ls -R`, `stat` and `cat` see it through the kernel's caches; `None` if a path
/// listed could not be looked at.
fn seen(dir: &Path) -> Option<Vec<(String, u64, Vec<u8>)>> {
    fn visit(dir: &Path, rel: &str, out: &mut Vec<(String, u64, Vec<u8>)>) -> Option<()> {
        let mut names: Vec<String> = fs::read_dir(dir.join(rel))
            .ok()?
            .map(|e| Some(e.ok()?.file_name().into_string().unwrap()))
            .collect::<Option<_>>()?;
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(dir.join(&child)).ok()?;
            if meta.is_dir() {
                out.push((child.clone(), 0, Vec::new()));
                visit(dir, &child, out)?;
            } else {
                let content = read(&dir.join(&child)).ok()?;
                out.push((child, meta.len(), content));
            }
        }
        Some(())
    }
    let mut out = Vec::new();
    visit(dir, "", &mut out)?;
    Some(out)
}

/// Version 1 of the `site` package of the follow tests.
const SITE_1: [(&str, &str); 5] = [
    ("srv/msg", "one\n"),
    ("srv/old", "only in one\n"),
    ("srv/same", "in both\n"),
    ("srv/conf/a", "a1\n"),
    ("srv/conf/gone/x", "x\n"),
];

/// Version 2: a file changed, one removed, one added, a directory turned into a file.
const SITE_2: [(&str, &str); 5] = [
    ("srv/msg", "two, longer\n"),
    ("srv/same", "in both\n"),
    ("srv/new", "only in two\n"),
    ("srv/conf/a", "a2, longer\n"),
    ("srv/conf/gone", "a file where a directory was\n"),
];

/// What [`seen`] finds in a directory `name` of `env` made of `files`.
fn expected(env: &Canopy, name: &str, files: &[(&str, &str)]) -> Vec<(String, u64, Vec<u8>)> {
    let dir = env.mkdir(name);
    for (path, content) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    seen(&dir).unwrap()
}

#[test]
fn follow_switches_new_opens_and_keeps_open_files() {
    let env = Canopy::init("mount-follow");
    let (one, two) = (SITE_1, SITE_2);
    import_site(&env, "1", &one);
    env.cmd(["assemble", "site", "site"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    // One root at the mountpoint, and every root under its name.
    let alone = Mount::start(
        &env,
        "alone",
        &server.url,
        &["--root", "site", "--follow", "--interval", "200ms"],
    );
    let all = Mount::start(
        &env,
        "all",
        &server.url,
        &["--follow", "--interval", "200ms"],
    );
    let views = [alone.dir.clone(), all.path("site")];
    let (v1, v2) = (
        expected(&env, "expect-1", &one),
        expected(&env, "expect-2", &two),
    );
    // Every name, attribute, listing and page of version 1 is in the kernel's caches.
    for view in &views {
        assert_eq!(seen(view).as_ref(), Some(&v1), "{}", view.display());
        assert_eq!(
            seen(view).as_ref(),
            Some(&v1),
            "{} (cached)",
            view.display()
        );
    }
    // The name version 2 adds was looked for: the kernel keeps its absence (a
    // negative entry) until a switch has it forgotten.
    for view in &views {
        for _ in 0..2 {
            assert!(!view.join("srv/new").exists(), "{}", view.display());
        }
    }
    let held: Vec<fs::File> = views
        .iter()
        .map(|v| fs::File::open(v.join("srv/msg")).unwrap())
        .collect();
    let cwd = Command::new("sh")
        .arg("-c")
        .arg("read -r _; ls")
        .current_dir(alone.path("srv/conf/gone"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    import_site(&env, "2", &two);
    let assembled = parse_assemble(&env.stdout(["assemble", "site", "site=2"]));
    // Within the follow interval (and the time to load the new trees) both views show
    // version 2 everywhere, though the kernel was told it may cache for long.
    for view in &views {
        eventually(
            Duration::from_secs(15),
            || {
                format!(
                    "{} never showed commit {} alone: {:?}\n{}\n{}",
                    view.display(),
                    assembled.commit,
                    seen(view),
                    alone.log(),
                    all.log()
                )
            },
            || (seen(view).as_ref() == Some(&v2)).then_some(()),
        );
    }
    for view in &views {
        assert_eq!(
            seen(view).as_ref(),
            Some(&v2),
            "{} stays on version 2",
            view.display()
        );
        assert_eq!(
            fs::read_to_string(view.join("srv/new")).unwrap(),
            "only in two\n",
            "{}: a name whose absence the kernel kept appears with the switch",
            view.display()
        );
    }
    let mut names: Vec<String> = fs::read_dir(&all.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["site"]);
    // Files opened before the switch keep their content.
    for mut file in held {
        let mut old = String::new();
        file.read_to_string(&mut old).unwrap();
        assert_eq!(
            old, "one\n",
            "a file opened before the switch keeps its content"
        );
    }
    // A process whose working directory went away keeps it, as on a local disk.
    let mut cwd = cwd;
    drop(cwd.stdin.take());
    let out = cwd.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // A root removed on the server leaves the mount of every root; the mount of that
    // one root keeps showing what it showed.
    env.json(["roots", "remove", "site"]);
    eventually(
        Duration::from_secs(15),
        || format!("{} still lists site:\n{}", all.dir.display(), all.log()),
        || {
            fs::read_dir(&all.dir)
                .unwrap()
                .next()
                .is_none()
                .then_some(())
        },
    );
    assert!(!all.path("site").exists());
    assert_eq!(seen(&alone.dir).as_ref(), Some(&v2));
    all.stop();
    alone.stop();
}

#[test]
fn a_process_taking_a_followed_mount_over_moves_on_once_it_serves() {
    let env = Canopy::init("mount-follow-over");
    import_site(&env, "1", &SITE_1);
    env.cmd(["assemble", "site", "site"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    // The first process never asks the server again (an hour between polls).
    let args = [
        "--root",
        "site",
        "--follow",
        "--interval",
        "1h",
        "--no-passthrough",
    ];
    let mut first = Mount::start(&env, "mnt", &server.url, &args);
    let (v1, v2) = (
        expected(&env, "expect-1", &SITE_1),
        expected(&env, "expect-2", &SITE_2),
    );
    assert_eq!(
        seen(&first.dir),
        Some(v1),
        "version 1, in the kernel's caches"
    );
    import_site(&env, "2", &SITE_2);
    env.cmd(["assemble", "site", "site=2"]).success();

    // A successor takes the mount over: the kernel still holds version 1's names, and
    // the successor shows version 2 only once it can have the kernel forget them.
    // (The same name: the same cache, as a take-over needs; the log starts anew.)
    let second = Mount::start_on(&env, "mnt", first.dir.clone(), &server.url, &args);
    let status = first.exit_within(Duration::from_secs(20), "the first process did not exit");
    assert!(status.success(), "{status}:\n{}", first.log());
    eventually(
        Duration::from_secs(15),
        || {
            format!(
                "the successor never showed version 2 everywhere: {:?}\n{}",
                seen(&second.dir),
                second.log()
            )
        },
        || (seen(&second.dir).as_ref() == Some(&v2)).then_some(()),
    );
    second.stop();
    drop(first);
}

/// nginx as a caching proxy between hosts and the server.
/// nginx on a free port of 127.0.0.1 with one `location /` whose body the caller
/// gives (a proxy cache, a static directory…); its access log is kept.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) url: String,
    prefix: PathBuf,
}

impl Nginx {
    pub(crate) fn start(env: &Canopy, location: &str) -> Nginx {
        let prefix = env.mkdir("nginx");
        fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = format!(
            "user root;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/logs/access.log;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
             scgi_temp_path {p}/scgi;\n  proxy_cache_path {p}/cache keys_zone=canopy:10m max_size=1g;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      {location}\n    }}\n  }}\n}}\n",
            p = prefix.display()
        );
        fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx (scripts/test.sh installs it)");
        eventually(
            Duration::from_secs(10),
            || "nginx did not start".into(),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
            prefix,
        }
    }

    /// How many requests nginx logged whose line contains `needle`.
    pub(crate) fn requests(&self, needle: &str) -> usize {
        fs::read_to_string(self.prefix.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master then stops its workers, which would otherwise
    /// outlive the test (holding the test's stdout open).
    fn drop(&mut self) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn an_http_cache_serves_the_second_host() {
    let env = two_roots("mount-nginx");
    let server = Server::start(&env, "127.0.0.1:0");
    let proxy = Nginx::start(
        &env,
        &format!(
            "proxy_pass {}; proxy_cache canopy; proxy_http_version 1.1;",
            server.url
        ),
    );
    // Without prefetch, each file is one object GET: what the assertions count (a
    // prefetching host may get the file in a directory pack, or not, by timing).
    let args = ["--root", "full", "--no-prefetch"];
    let first = Mount::start(&env, "host1", &proxy.url, &args);
    let file = first.path("usr/bin/sha256sum");
    let content = read(&file).unwrap();
    let id = blob_of(&file);
    assert_eq!(server.requests_for(&id), 1);
    first.stop();

    let second = Mount::start(&env, "host2", &proxy.url, &args);
    assert_eq!(read(&second.path("usr/bin/sha256sum")).unwrap(), content);
    assert_eq!(
        server.requests_for(&id),
        1,
        "the second host's cold read must come from nginx, not the origin"
    );
    second.stop();
}

#[test]
fn sigterm_while_busy_detaches_and_exits_when_the_last_file_closes() {
    let env = Canopy::init("mount-busy");
    import_app(&env, "1", "one\n");
    env.cmd(["assemble", "app", "app"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    let mut mount = Mount::start(&env, "mnt", &server.url, &["--root", "app"]);
    let mut held = fs::File::open(mount.path("srv/msg")).unwrap();

    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(mount.child.id() as i32, libc::SIGTERM) };
    eventually(
        Duration::from_secs(10),
        || format!("still mounted after SIGTERM:\n{}", mount.log()),
        || (!is_mounted(&mount.dir)).then_some(()),
    );
    let mut content = String::new();
    held.read_to_string(&mut content).unwrap();
    assert_eq!(
        content, "one\n",
        "an open file keeps working after the detach"
    );
    assert!(
        matches!(mount.child.try_wait(), Ok(None)),
        "canopy must serve the open file until it closes"
    );

    drop(held);
    let status = mount.exit_within(
        Duration::from_secs(10),
        "canopy did not exit after the last file closed",
    );
    assert!(status.success(), "exit status {status}:\n{}", mount.log());
}

#[test]
fn a_mount_whose_daemon_was_killed_is_mounted_again_without_a_hand() {
    let env = two_roots("mount-dead");
    let server = Server::start(&env, "127.0.0.1:0");
    let mut first = Mount::start(&env, "mnt", &server.url, &["--root", "small"]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let err = fs::metadata(&first.dir).expect_err("a dead mount cannot be looked at");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let second = Mount::start_on(
        &env,
        "mnt",
        first.dir.clone(),
        &server.url,
        &["--root", "small"],
    );
    assert!(
        second.log().contains("detached the dead mount"),
        "{}",
        second.log()
    );
    let out = cmd("chroot")
        .arg(&second.dir)
        .args(["/bin/bash", "-c", "echo alive"])
        .stdout();
    assert_eq!(out, "alive\n");
    second.stop();
    drop(first);
}
