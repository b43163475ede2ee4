//! Live hand-over of a `canopy mount`: a new `canopy mount` on a mountpoint a live one
//! serves takes the FUSE connection over, and programs running from the mount never
//! see it go (no failed system call, no ENOTCONN, the same bytes).

use crate::debs;
use crate::mount::{SMALL, Server, is_mounted};
use crate::util::{Canopy, cmd};
use crate::workload::Load;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of the big file read while the daemon is replaced.
const BIG: usize = 48 << 20;
/// Bytes of the file read once before (cached, so that with passthrough the kernel
/// reads it from the cache file) and again while the daemon is replaced.
const WARM: usize = 4 << 20;

/// `len` incompressible bytes, the same on every run for the same `seed` (xorshift).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    let mut x = seed;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

/// The content of `/data/warm`.
pub(crate) fn warm() -> Vec<u8> {
    pattern(WARM, 0x2545_f491_4f6c_dd1d)
}

/// A store with root `ho`: bash and what it needs, plus `/data/big` and `/data/warm`
/// (random bytes). Returns the store and the big file's SHA-256.
pub(crate) fn store(name: &str) -> (Canopy, String) {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(SMALL))
        .success();
    let dir = env.mkdir("big/data");
    let bytes = pattern(BIG, 0x9e37_79b9_7f4a_7c15);
    fs::write(dir.join("big"), &bytes).unwrap();
    fs::write(dir.join("warm"), warm()).unwrap();
    let sha = to_hex(&Sha256::digest(&bytes));
    assemble(&env, "1");
    (env, sha)
}

/// Imports the directory `big/` of `env` as `version` of package `big`, and assembles
/// root `ho` anew of it and the small packages.
fn assemble(env: &Canopy, version: &str) {
    env.cmd(["import", "dir"])
        .arg(env.path("big"))
        .args(["--name", "big", "--version", version])
        .success();
    env.cmd(["assemble", "ho", "--no-configure"])
        .args(SMALL)
        .arg("big")
        .success();
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A process of the test: stopped when dropped (a failed assertion leaves no daemon,
/// program or mount behind).
pub(crate) struct Process {
    pub(crate) child: Child,
    /// The mount it serves, taken away if it is still running when dropped.
    pub(crate) mount: Option<PathBuf>,
}

impl Process {
    /// Waits for it to exit, at most `limit`; its status.
    pub(crate) fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: it must unmount and exit 0.
    pub(crate) fn stop(mut self) {
        let device = self.mount.as_deref().and_then(mounted_device);
        // Opened while the connection is this mount's: written to later, it aborts
        // nothing if the connection ended meanwhile (another mount may have its number).
        let abort = device.as_deref().and_then(|device| {
            let minor = device.split(':').nth(1)?;
            let file = fs::OpenOptions::new()
                .write(true)
                .open(format!("/sys/fs/fuse/connections/{minor}/abort"))
                .ok()?;
            (self.mount.as_deref().and_then(mounted_device).as_deref() == Some(device))
                .then_some(file)
        });
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.exited(Duration::from_secs(20));
        if status.is_none() {
            // It serves until the kernel ends the connection, which outlives our mount
            // while a copy of it is mounted elsewhere: say where, and end it.
            let held = device.as_deref().map(holders).unwrap_or_default();
            if let Some(mut abort) = abort {
                let _ = std::io::Write::write_all(&mut abort, b"1");
            }
            panic!("no exit within 20 s of SIGTERM; the mount ({device:?}) is also in: {held}");
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "exit on SIGTERM: {status:?}"
        );
        let dir = self.mount.take().unwrap();
        assert!(
            !is_mounted(&dir),
            "{} still mounted after SIGTERM",
            dir.display()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match &self.mount {
            Some(dir) => crate::mount::force_stop(&mut self.child, dir),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The device (`MAJOR:MINOR`) of the mount at `dir`, from the mount table.
fn mounted_device(dir: &Path) -> Option<String> {
    // The parent resolved, not the mount itself: nothing is asked of the mount.
    let dir = fs::canonicalize(dir.parent()?).ok()?.join(dir.file_name()?);
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == dir.to_str())?;
    Some(line.split(' ').nth(2)?.to_string())
}

/// The processes (one per mount namespace) whose mount table holds the FUSE mount of
/// `device`, and where.
fn holders(device: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !seen.insert(ns) {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(2) == Some(&device) {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push(format!("{pid} ({}) at {}", comm.trim(), fields[4]));
            }
        }
    }
    out.join(", ")
}

/// The command line of a `canopy mount` of root `ho` on `dir` with `extra` options.
pub(crate) fn mount_args(env: &Canopy, dir: &Path, url: &str, extra: &[&str]) -> Vec<OsString> {
    let trust = env.path("server.pub");
    if !trust.exists() {
        fs::write(&trust, env.stdout(["key", "show"])).unwrap();
    }
    let mut args: Vec<OsString> = ["-v", "mount", url].iter().map(OsString::from).collect();
    args.push(dir.into());
    args.extend(["--trust".into(), trust.into_os_string()]);
    args.extend(["--cache-dir".into(), env.path("cache").into_os_string()]);
    args.extend(["--root", "ho"].iter().map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Starts `command` (a `canopy mount` on `dir`, logging to `log`); returns the process
/// once it says it is mounted.
fn start(mut command: Command, dir: &Path, log: &Path) -> Process {
    let child = command
        // Open files and passthrough registrations, for [`passthrough_kept`].
        .env(
            "CANOPY_LOG",
            "info,fuser=error,canopy_client::open_files=debug",
        )
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("starting canopy mount");
    let mut process = Process {
        child,
        mount: Some(dir.to_path_buf()),
    };
    crate::mount::wait_for_line(&mut process.child, "mounted at", log);
    process
}

/// A `canopy mount` of root `ho` on `dir`, started with `extra` options; returns the
/// process once it says it is mounted.
pub(crate) fn start_mount(
    env: &Canopy,
    dir: &Path,
    url: &str,
    log: &Path,
    extra: &[&str],
) -> Process {
    let mut command = Command::new(crate::util::BIN);
    command.args(mount_args(env, dir, url, extra));
    start(command, dir, log)
}

/// Log files of the daemons one after the other.
pub(crate) struct Logs {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl Logs {
    pub(crate) fn next(&mut self) -> PathBuf {
        let path = self.dir.join(format!("mount-{}.log", self.paths.len() + 1));
        self.paths.push(path.clone());
        path
    }

    pub(crate) fn all(&self) -> String {
        self.paths
            .iter()
            .map(|l| fs::read_to_string(l).unwrap_or_default())
            .collect()
    }
}

/// Replaces the daemon of a mount `times` times while programs use it; nothing may
/// fail.
fn replaced_under_load(name: &str, extra: &[&str], times: usize) {
    let (env, sha) = store(name);
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = env.mkdir("mnt");
    let mut logs = Logs {
        dir: env.path(""),
        paths: Vec::new(),
    };
    let mut daemon = start_mount(&env, &dir, &server.url, &logs.next(), extra);
    // Cached before the load, so that with passthrough its opens pass through: once the
    // daemon has had the release of this read (the kernel sends it after close returns),
    // or the readers' first opens would still be read through canopy, and then each
    // other's.
    assert!(crate::mount::read(&dir.join("data/warm")).unwrap() == warm());
    released(&logs.paths[0], &dir.join("data/warm"));
    let mut load = Load::start(&dir, &sha);
    for replaced in 1..=times {
        std::thread::sleep(Duration::from_millis(400));
        let before = load.runs();
        let next = start_mount(&env, &dir, &server.url, &logs.next(), extra);
        let status = daemon.exited(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "the replaced canopy mount did not exit 0 ({status:?}):\n{}",
            logs.all()
        );
        // It exited without unmounting: the successor serves the mount now.
        daemon.mount = None;
        daemon = next;
        assert!(is_mounted(&dir), "not mounted after hand-over {replaced}");
        load.goes_on(before, &format!("hand-over {replaced}"));
    }
    let all_logs = logs.all();
    let done = load.finish(&all_logs);
    eprintln!("{name}: {times} hand-overs; {done}");
    assert_eq!(
        all_logs.matches("took the mount over").count(),
        times,
        "{all_logs}"
    );
    // Files open across hand-overs were taken over, with passthrough their kernel
    // registrations too (the long-running bash holds its executable open).
    let passthrough = !extra.contains(&"--no-passthrough");
    let through = all_logs
        .lines()
        .filter(|l| l.contains("took the mount over") && !l.contains(" 0 of them read through"))
        .count();
    assert_eq!(through > 0, passthrough, "{all_logs}");
    if passthrough {
        passthrough_kept(&dir, &logs);
    }
    // Requests the replaced processes had read and not answered were answered.
    assert!(
        all_logs.contains("the kernel resent"),
        "no request was in flight at any of {times} hand-overs?\n{all_logs}"
    );
    // The last one still serves, and unmounts on SIGTERM.
    let out = cmd("chroot")
        .arg(&dir)
        .args(["/bin/bash", "-c", "echo alive"])
        .stdout();
    assert_eq!(out, "alive\n");
    daemon.stop();
}

/// Waits (at most 10 s) until the daemon logging to `log` has released every handle
/// it opened on `file`.
fn released(log: &Path, file: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(file).unwrap().ino();
    let opened = format!(": inode {ino} ");
    crate::mount::eventually(
        Duration::from_secs(60),
        || {
            format!(
                "{} not released:\n{}",
                file.display(),
                fs::read_to_string(log).unwrap()
            )
        },
        || {
            let text = fs::read_to_string(log).unwrap();
            let handles = text
                .lines()
                .filter(|l| l.contains(&opened))
                .filter_map(|l| l.split("handle ").nth(1)?.split(':').next());
            let mut released = handles.map(|h| format!("handle {h}: released"));
            released.all(|r| text.contains(&r)).then_some(())
        },
    );
}

/// Checks, from the daemons' logs, that passthrough went on across the hand-overs of
/// the mount at `dir`: no registration was closed twice (an open answered with it
/// would fail with EIO); successors answered opens of files held open across a
/// hand-over (the program's bash, held open as its executable; the warm file) with the
/// registration they took over (the kernel binds one per inode); and the last process
/// registered files opened after its hand-over.
fn passthrough_kept(dir: &Path, logs: &Logs) {
    use std::os::unix::fs::MetadataExt;
    let warm = fs::metadata(dir.join("data/warm")).unwrap().ino();
    let logs: Vec<String> = logs
        .paths
        .iter()
        .map(|l| fs::read_to_string(l).unwrap())
        .collect();
    let all = logs.concat();
    closed_once(&all);
    // (inode, registration) of each open of `log` read through passthrough.
    let through = |log: &str| -> Vec<(u64, u64)> {
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(": inode ")?;
                let (ino, raw) = rest.split_once(" through passthrough registration ")?;
                Some((ino.parse().ok()?, raw.trim().parse().ok()?))
            })
            .collect()
    };
    let (mut reused, mut reused_warm) = (0, 0);
    for log in &logs {
        let taken: Vec<u64> = log
            .lines()
            .filter_map(|l| {
                let rest = l.split("took over passthrough registration ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect();
        for (ino, raw) in through(log) {
            if taken.contains(&raw) {
                reused += 1;
                reused_warm += usize::from(ino == warm);
            }
        }
    }
    // Not asserted for the warm file: an open that finds the cache busy verifying the
    // same file for another open is read through canopy, and so are the opens that
    // overlap it from then on; under load its readers may never pass through.
    let warm_opens = through(&all).iter().filter(|(ino, _)| *ino == warm).count();
    assert!(
        reused > 0,
        "no successor answered an open with a registration it took over\n{all}"
    );
    let last = logs.last().unwrap();
    let made: Vec<u64> = last
        .lines()
        .filter_map(|l| {
            l.split("opened passthrough registration ")
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert!(
        through(last).iter().any(|(_, raw)| made.contains(raw)),
        "the last process read no file opened after its hand-over through passthrough:\n{last}"
    );
    eprintln!(
        "passthrough: {warm_opens} opens of the warm file read by the kernel; {reused} opens \
         answered with a registration taken over ({reused_warm} of the warm file); the last \
         process opened {} registrations of its own",
        made.len()
    );
}

/// A second `canopy mount` on the live mount at `dir`, with [`start_mount`]'s options
/// and `extra`; what it printed and how it ended.
fn successor(env: &Canopy, dir: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(crate::util::BIN)
        .args(["mount", url])
        .arg(dir)
        .arg("--trust")
        .arg(env.path("server.pub"))
        .arg("--cache-dir")
        .arg(env.path("cache"))
        .args(["--root", "ho"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_mount_is_replaced_ten_times_with_passthrough_and_nothing_fails() {
    replaced_under_load("handover-pt", &[], 10);
}

#[test]
fn a_mount_is_replaced_ten_times_without_passthrough_and_nothing_fails() {
    replaced_under_load("handover-nopt", &["--no-passthrough"], 10);
}

#[test]
fn a_successor_with_other_options_is_refused_and_says_how_to_restart() {
    let (env, _) = store("handover-opts");
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = env.mkdir("mnt");
    let first_log = env.path("first.log");
    let daemon = start_mount(&env, &dir, &server.url, &first_log, &[]);
    let out = successor(&env, &dir, &server.url, &["--no-passthrough"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("passthrough (running: true; new: false)")
            && stderr.contains("systemctl restart canopy-mount"),
        "{stderr}"
    );
    // The live one serves on.
    assert!(!fs::read(dir.join("etc/debian_version")).unwrap().is_empty());
    daemon.stop();
}

/// Lines of `log` that say `what`.
fn said(log: &Path, what: &str) -> usize {
    fs::read_to_string(log).unwrap().matches(what).count()
}

/// How the opens of `/data/warm` of the mount at `dir` went, from the log of its
/// daemon: how many passed through (read by the kernel), how many of those registered
/// the cache file with the kernel, and how many reused a registration kept since a
/// close.
#[derive(Debug, PartialEq)]
struct Through {
    opens: usize,
    registered: usize,
    reused: usize,
}

impl Through {
    fn of(dir: &Path, log: &Path) -> Through {
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(dir.join("data/warm")).unwrap().ino();
        Through {
            opens: said(
                log,
                &format!(": inode {ino} through passthrough registration "),
            ),
            registered: said(log, "opened passthrough registration"),
            reused: said(
                log,
                &format!("inode {ino}: reusing kept passthrough registration"),
            ),
        }
    }
}

/// Reads `/data/warm` of the mount at `dir` `times` times, one open after the other:
/// each time the right bytes, and released by the daemon logging to `log` before the
/// next open (else the open would share the registration of the one before).
fn read_warm(dir: &Path, log: &Path, times: usize) {
    let path = dir.join("data/warm");
    for _ in 0..times {
        assert!(crate::mount::read(&path).unwrap() == warm());
        released(log, &path);
    }
}

/// Waits until the daemon logging to `log` has kept the registration each of `opens`
/// opens of `/data/warm` read through (it says so after the release it logs first, once
/// the registration is marked kept in its table of modes).
fn kept(log: &Path, opens: usize) {
    crate::mount::eventually(
        Duration::from_secs(60),
        || fs::read_to_string(log).unwrap(),
        || (said(log, "keeping passthrough registration") == opens).then_some(()),
    );
}

#[test]
fn a_large_file_opened_again_reuses_its_registration_until_a_hand_over_or_the_bound() {
    let (env, _) = store("handover-kept");
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = env.mkdir("mnt");
    let mut logs = Logs {
        dir: env.path(""),
        paths: Vec::new(),
    };
    let first = logs.next();
    let daemon = start_mount(&env, &dir, &server.url, &first, &[]);
    // The first open fetches (read through canopy), the next registers the cached
    // file with the kernel, and the ones after reuse that registration, kept since
    // the last close, rather than open and register the cache file again. (An open
    // that finds the cache busy with the file, such as a prefetch checking it, is
    // read through canopy: only opens that passed through are counted.)
    read_warm(&dir, &first, 5);
    let t = Through::of(&dir, &first);
    let all = logs.all();
    assert!(t.opens >= 2, "{t:?}\n{all}");
    assert_eq!((t.registered, t.reused), (1, t.opens - 1), "{all}");
    // A successor is handed no kept registration: the live process closes it itself,
    // once, and the successor registers the file anew.
    let second = logs.next();
    let daemon = {
        let next = start_mount(&env, &dir, &server.url, &second, &[]);
        let mut old = daemon;
        let status = old.exited(Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{}", logs.all());
        old.mount = None;
        next
    };
    read_warm(&dir, &second, 3);
    let t = Through::of(&dir, &second);
    let all = logs.all();
    assert_eq!(
        said(&first, "closing 1 kept passthrough registrations"),
        1,
        "{all}"
    );
    assert_eq!(
        said(&second, "took over passthrough registration"),
        0,
        "{all}"
    );
    assert!(t.opens >= 1, "{t:?}\n{all}");
    assert_eq!((t.registered, t.reused), (1, t.opens - 1), "{all}");
    closed_once(&all);
    daemon.stop();
    // Kept files are pinned in the cache, within an eighth of its bound: under a cache
    // of 16 MiB the 4 MiB file is not kept, and each open registers it again.
    let third = logs.next();
    let daemon = start_mount(&env, &dir, &server.url, &third, &["--cache-size", "16M"]);
    read_warm(&dir, &third, 4);
    let t = Through::of(&dir, &third);
    let all = logs.all();
    assert!(t.opens >= 2, "{t:?}\n{all}");
    assert_eq!((t.registered, t.reused), (t.opens, 0), "{all}");
    assert_eq!(said(&third, "keeping passthrough registration"), 0, "{all}");
    daemon.stop();
}

/// Checks, from the daemons' logs `all`, that no registration was closed twice (an open
/// answered with it would fail).
fn closed_once(all: &str) {
    assert!(
        !all.contains("closing passthrough registration"),
        "a passthrough registration was closed twice:\n{all}"
    );
}

/// `canopy mount` of root `ho` on `dir` under tests/fd_store.py, with debug output
/// (-vv: the open files and registrations, for [`Through`] and [`registration_of`]).
fn supervised(env: &Canopy, dir: &Path, url: &str) -> crate::fdstore::Supervised {
    let mut args = mount_args(env, dir, url, &[]);
    assert_eq!(args[0], "-v");
    args[0] = "-vv".into();
    crate::fdstore::Supervised::start(&env.path(""), dir, &args)
}

#[test]
fn registrations_kept_by_a_killed_mount_are_closed_by_its_successor() {
    use crate::fdstore::{abort_and_detach, kill};
    let (env, _) = store("handover-kept-killed");
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = fs::canonicalize(env.mkdir("mnt")).unwrap();
    let mut supervised = supervised(&env, &dir, &server.url);
    let first = supervised.ready();
    let (log1, log2) = (env.path("mount-1.log"), env.path("mount-2.log"));
    let all = || {
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        read(&log1) + &read(&log2)
    };
    // Opened and closed again, the file's registration is kept (and its entry in the
    // shared table of modes marked so once it is) by the process killed next.
    read_warm(&dir, &log1, 4);
    let t = Through::of(&dir, &log1);
    assert!(t.opens >= 1 && t.registered == 1, "{t:?}\n{}", all());
    kept(&log1, t.opens);
    kill(first, libc::SIGKILL);
    supervised.wait(&format!("killed {first} 9"), Duration::from_secs(60));
    supervised.ready();
    // The successor closes it rather than keep it for good as an open file's (it then
    // stayed open until unmount, its cache file unpinned, and every open shared it)...
    assert_eq!(
        said(&log2, "closed the 1 passthrough registrations it kept"),
        1,
        "{}",
        all()
    );
    assert_eq!(
        said(&log2, "took over passthrough registration"),
        0,
        "{}",
        all()
    );
    // ...and registers the file anew, keeping that registration between its opens.
    read_warm(&dir, &log2, 3);
    let t = Through::of(&dir, &log2);
    assert!(t.opens >= 1, "{t:?}\n{}", all());
    assert_eq!((t.registered, t.reused), (1, t.opens - 1), "{}", all());
    closed_once(&all());
    // The store closed, the mount is dead: taken away.
    supervised.stop();
    abort_and_detach(&dir);
    assert!(!is_mounted(&dir));
}

#[test]
fn a_switch_closes_the_registrations_kept_for_files_it_replaced() {
    let (env, _) = store("handover-kept-switch");
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = env.mkdir("mnt");
    let log = env.path("mount.log");
    let follow = ["--follow", "--interval", "200ms"];
    let daemon = start_mount(&env, &dir, &server.url, &log, &follow);
    let all = || fs::read_to_string(&log).unwrap();
    read_warm(&dir, &log, 3);
    let t = Through::of(&dir, &log);
    assert!(t.opens >= 1 && t.registered == 1, "{t:?}\n{}", all());
    kept(&log, t.opens);
    // A new version replaces /data/warm (and leaves /data/big out).
    fs::remove_file(env.path("big/data/big")).unwrap();
    fs::write(env.path("big/data/warm"), b"replaced\n").unwrap();
    assemble(&env, "2");
    // The followed switch closes the registration kept for the file replaced (it only
    // pinned the old file in the cache) rather than let it age out.
    crate::mount::eventually(Duration::from_secs(120), all, || {
        let closed = "a new version replaced the files of 1 kept passthrough registrations";
        (said(&log, closed) == 1).then_some(())
    });
    assert_eq!(fs::read(dir.join("data/warm")).unwrap(), b"replaced\n");
    closed_once(&all());
    daemon.stop();
}

/// The registration the last open of `file` read through, from the log of the daemon
/// that answered it (the open has returned, so its answer is logged).
fn registration_of(log: &Path, file: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(file).unwrap().ino();
    let through = format!(": inode {ino} through passthrough registration ");
    let text = fs::read_to_string(log).unwrap();
    let line = text.lines().rev().find(|l| l.contains(&through));
    let raw = line.and_then(|l| l.split(&through).nth(1)?.trim().parse().ok());
    raw.unwrap_or_else(|| panic!("{} read through no registration:\n{text}", file.display()))
}

/// Whether the daemon logging to `log` closed registration `raw`.
fn closed(log: &Path, raw: u32) -> bool {
    let line = format!("closed passthrough registration {raw}");
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines().any(|l| l.trim_end().ends_with(&line))
}

/// Checks that `file`, opened as `open`, reads `bytes` (at a few offsets, through the
/// open file itself: with passthrough the kernel reads the cache file).
fn reads(open: &fs::File, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    for at in [0, bytes.len() / 3, bytes.len() - 4096] {
        let mut buf = vec![0u8; 4096];
        open.read_exact_at(&mut buf, at as u64).unwrap();
        assert!(buf == bytes[at..at + 4096], "wrong bytes at {at}");
    }
}

#[test]
fn open_files_at_a_kill_or_restart_hold_their_registrations_until_released() {
    use crate::fdstore::{abort_and_detach, kill};
    let (env, _) = store("handover-open-killed");
    let big = pattern(BIG, 0x9e37_79b9_7f4a_7c15);
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = fs::canonicalize(env.mkdir("mnt")).unwrap();
    let mut supervised = supervised(&env, &dir, &server.url);
    let first = supervised.ready();
    let logs: Vec<PathBuf> = (1..=3)
        .map(|n| env.path(format!("mount-{n}.log")))
        .collect();
    let all = || {
        let read = |p: &PathBuf| fs::read_to_string(p).unwrap_or_default();
        logs.iter().map(read).collect::<String>()
    };
    let (warm_path, big_path) = (dir.join("data/warm"), dir.join("data/big"));
    // Cached (each first open reads through canopy), then held open through
    // passthrough registrations of the first process.
    assert!(crate::mount::read(&warm_path).unwrap() == warm());
    assert!(crate::mount::read(&big_path).unwrap() == big);
    released(&logs[0], &warm_path);
    released(&logs[0], &big_path);
    let warm_open = fs::File::open(&warm_path).unwrap();
    let big_open = fs::File::open(&big_path).unwrap();
    let (warm_raw, big_raw) = (
        registration_of(&logs[0], &warm_path),
        registration_of(&logs[0], &big_path),
    );
    kill(first, libc::SIGKILL);
    supervised.wait(&format!("killed {first} 9"), Duration::from_secs(60));
    let second = supervised.ready();
    assert_eq!(
        said(
            &logs[1],
            "2 open files hold the registrations they read through"
        ),
        1,
        "{}",
        all()
    );
    reads(&warm_open, &warm());
    reads(&big_open, &big);
    // Closed by the program, the warm file's registration is closed by the successor
    // (before, it stayed open until unmount, with its cache file).
    drop(warm_open);
    crate::mount::eventually(Duration::from_secs(60), all, || {
        closed(&logs[1], warm_raw).then_some(())
    });
    // The big file, still open, keeps its registration: read, opened again (the kernel
    // binds one registration per inode: an open answered with another would fail), and
    // that open closed.
    reads(&big_open, &big);
    let again = fs::File::open(&big_path).unwrap();
    reads(&again, &big);
    assert_eq!(registration_of(&logs[1], &big_path), big_raw, "{}", all());
    drop(again);
    released(&logs[1], &big_path);
    assert!(!closed(&logs[1], big_raw), "{}", all());
    reads(&big_open, &big);
    // Stopped for a restart (SIGTERM: it exits, its connection left in the store), the
    // next process finds the open file the first recorded, kept in the table by the
    // second, and closes the registration at its release.
    kill(second, libc::SIGTERM);
    supervised.wait(&format!("exited {second} 0"), Duration::from_secs(60));
    supervised.ready();
    assert_eq!(
        said(
            &logs[2],
            "1 open files hold the registrations they read through"
        ),
        1,
        "{}",
        all()
    );
    reads(&big_open, &big);
    drop(big_open);
    crate::mount::eventually(Duration::from_secs(60), all, || {
        closed(&logs[2], big_raw).then_some(())
    });
    // Opened anew, each file is registered anew and reads right.
    assert!(crate::mount::read(&warm_path).unwrap() == warm());
    assert!(crate::mount::read(&big_path).unwrap() == big);
    closed_once(&all());
    supervised.stop();
    abort_and_detach(&dir);
    assert!(!is_mounted(&dir));
}

#[test]
fn an_open_file_of_a_killed_mount_keeps_its_registration_across_a_live_hand_over() {
    use crate::fdstore::kill;
    let (env, _) = store("handover-open-live");
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = fs::canonicalize(env.mkdir("mnt")).unwrap();
    let mut supervised = supervised(&env, &dir, &server.url);
    let first = supervised.ready();
    let logs = [
        env.path("mount-1.log"),
        env.path("mount-2.log"),
        env.path("live.log"),
    ];
    let all = || {
        let read = |p: &PathBuf| fs::read_to_string(p).unwrap_or_default();
        logs.iter().map(read).collect::<String>()
    };
    let warm_path = dir.join("data/warm");
    assert!(crate::mount::read(&warm_path).unwrap() == warm());
    released(&logs[0], &warm_path);
    let held = fs::File::open(&warm_path).unwrap();
    let raw = registration_of(&logs[0], &warm_path);
    kill(first, libc::SIGKILL);
    supervised.wait(&format!("killed {first} 9"), Duration::from_secs(60));
    supervised.ready();
    assert_eq!(
        said(
            &logs[1],
            "1 open files hold the registrations they read through"
        ),
        1,
        "{}",
        all()
    );
    // A process started by hand takes the mount over live (the stand-in starts none
    // after the one it runs exits).
    supervised.hold();
    let live = start_mount(&env, &dir, &server.url, &logs[2], &[]);
    supervised.wait("held", Duration::from_secs(20));
    // It was handed the open file the killed process recorded: opened again, the file
    // is answered with the registration the kernel binds it to (with another, the open
    // fails), and the registration is closed once the file held open is closed too.
    assert!(crate::mount::read(&warm_path).unwrap() == warm());
    assert_eq!(registration_of(&logs[2], &warm_path), raw, "{}", all());
    released(&logs[2], &warm_path);
    assert!(!closed(&logs[2], raw), "{}", all());
    reads(&held, &warm());
    drop(held);
    crate::mount::eventually(Duration::from_secs(60), all, || {
        closed(&logs[2], raw).then_some(())
    });
    closed_once(&all());
    live.stop();
    supervised.stop();
}
