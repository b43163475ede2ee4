//! A `canopy mount` under a service manager's file-descriptor store: killed with
//! SIGKILL, or stopped for a restart, its successor resumes the FUSE connection the
//! store kept, and programs running from the mount see nothing (no failed system call,
//! no ENOTCONN, the same bytes). `tests/fd_store.py` stands in for systemd (PID 1 is not
//! systemd here): it runs the unit's command line as `Type=notify` with
//! `FileDescriptorStoreMax=` and `Restart=always` would.

use crate::handover::{mount_args, start_mount, store};
use crate::mount::Server;
use crate::workload::Load;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No wait of this test lasts longer: then its FUSE connection is aborted, so that a
/// failure leaves nothing waiting on the mount.
const WATCHDOG: Duration = Duration::from_secs(240);

/// Aborts the FUSE connection of every mount on `dir` and detaches them: every request
/// waiting on them fails at once.
pub(crate) fn abort_and_detach(dir: &Path) {
    for _ in 0..4 {
        if crate::mount::fuse_connection(dir).is_none() {
            return;
        }
        crate::mount::abort_connection(dir);
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// `tests/fd_store.py` running `canopy mount`, and what it reports.
pub(crate) struct Supervised {
    child: Child,
    events: mpsc::Receiver<String>,
    seen: Vec<String>,
    dir: PathBuf,
    watchdog: Option<mpsc::Sender<()>>,
}

impl Supervised {
    pub(crate) fn start(env_dir: &Path, dir: &Path, args: &[OsString]) -> Supervised {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fd_store.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(env_dir.join("notify.sock"))
            .arg(env_dir.join("mount"))
            .arg(crate::util::BIN)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tests/fd_store.py (python3)");
        let (tx, events) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (watchdog, fired) = mpsc::channel::<()>();
        let watched = dir.to_path_buf();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = fired.recv_timeout(WATCHDOG) {
                eprintln!("fdstore: {WATCHDOG:?} passed: aborting the mount's connection");
                abort_and_detach(&watched);
            }
        });
        Supervised {
            child,
            events,
            seen: Vec::new(),
            dir: dir.to_path_buf(),
            watchdog: Some(watchdog),
        }
    }

    /// The next event starting with `what`, within `limit`.
    pub(crate) fn wait(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(what) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no `{what}` from the stand-in within {limit:?} ({e}); it said {:?}\n{}",
                    self.seen,
                    self.logs()
                ),
            }
        }
    }

    /// The last event seen that starts with `what`.
    fn last(&self, what: &str) -> String {
        let found = self.seen.iter().rev().find(|l| l.starts_with(what));
        found.cloned().unwrap_or_default()
    }

    /// The pid in a `ready PID` event, within a minute.
    pub(crate) fn ready(&mut self) -> i32 {
        let line = self.wait("ready ", Duration::from_secs(60));
        line["ready ".len()..].parse().unwrap()
    }

    /// Every log of the processes it started.
    fn logs(&self) -> String {
        let parent = self.dir.parent().unwrap();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(parent)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.to_string_lossy().ends_with(".log"))
            .collect();
        logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Has it start no process after the current one ends (it says `held` then), as
    /// while systemd waits `RestartSec=`.
    pub(crate) fn hold(&self) {
        kill(self.child.id() as i32, libc::SIGUSR1);
    }

    /// Stops it (SIGTERM): it stops the mount's process and closes the store.
    pub(crate) fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill with a valid pid and signal.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            abort_and_detach(&self.dir);
        }
        self.watchdog.take();
    }
}

/// Runs `command` for at most `limit`: how it ended and its stderr.
fn output_within(mut command: Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: i32, signal: i32) {
    // SAFETY: kill with a pid and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// The stand-in runs `canopy mount` with `extra` options while a program runs from
/// the mount and readers stream a large file: the daemon is killed with SIGKILL, then
/// stopped as for a restart, then killed and left unserved for a while, then killed
/// with the server gone; each time the stand-in starts the next one, which resumes the
/// connection. Then the stand-in stops, closing its store: the mount is dead, and a
/// plain `canopy mount` detaches it and mounts anew.
fn killed_and_restarted(name: &str, extra: &[&str]) {
    let (env, sha) = store(name);
    let server = Server::start(&env, "127.0.0.1:0");
    let dir = std::fs::canonicalize(env.mkdir("mnt")).unwrap();
    // `PREFIX` stands for the first 12 digits of the root's commit.
    let shown: serde_json::Value =
        serde_json::from_str(&env.stdout(["roots", "show", "ho", "--json"])).unwrap();
    let commit = shown["commit"].as_str().unwrap()[..12].to_string();
    let extra: Vec<&str> = extra
        .iter()
        .map(|a| if *a == "PREFIX" { commit.as_str() } else { a })
        .collect();
    let extra = extra.as_slice();
    let args = mount_args(&env, &dir, &server.url, extra);
    // Declared before the stand-in, so dropped after it: on a failure the stand-in
    // goes first, taking the connection with it, and the programs then fail fast.
    let mut running: Option<Load> = None;
    let mut supervised = Supervised::start(&env.path(""), &dir, &args);
    let first = supervised.ready();
    let store = supervised.last("store ");
    assert!(
        store.contains("canopy-fuse") && store.contains("canopy-modes"),
        "{store}"
    );
    let load = running.insert(Load::start(&dir, &sha));

    // kill -9: the store holds the connection; requests wait for the next process.
    std::thread::sleep(Duration::from_millis(500));
    let before = load.runs();
    let killed = Instant::now();
    kill(first, libc::SIGKILL);
    supervised.wait(&format!("killed {first} 9"), Duration::from_secs(20));
    let second = supervised.ready();
    let resumed = killed.elapsed();
    load.goes_on(before, "kill -9");
    assert!(crate::mount::fuse_connection(&dir).is_some());

    // A stop for a restart (what `systemctl restart` sends): exits 0, leaving the mount.
    std::thread::sleep(Duration::from_millis(500));
    let before = load.runs();
    kill(second, libc::SIGTERM);
    supervised.wait(&format!("exited {second} 0"), Duration::from_secs(20));
    let third = supervised.ready();
    load.goes_on(before, "a restart");

    // A long gap (systemd holding the unit, or giving up until an administrator starts
    // it): programs wait; a `canopy mount` started by hand meanwhile does not wait with
    // them, and says what holds the mount.
    std::thread::sleep(Duration::from_millis(500));
    let before = load.runs();
    kill(supervised.child.id() as i32, libc::SIGUSR1);
    kill(third, libc::SIGKILL);
    supervised.wait("held", Duration::from_secs(20));
    let mut by_hand = Command::new(crate::util::BIN);
    by_hand.args(&args[1..]);
    let (status, stderr) = output_within(by_hand, Duration::from_secs(60));
    assert!(
        !status.success() && stderr.contains("does not answer"),
        "{status:?} {stderr}"
    );
    kill(supervised.child.id() as i32, libc::SIGUSR2);
    let fourth = supervised.ready();
    load.goes_on(before, "a long gap");

    // kill -9 while no server answers: the successor shows the versions kept beside the
    // state file and serves on from the cache.
    drop(server);
    std::thread::sleep(Duration::from_millis(500));
    let before = load.runs();
    kill(fourth, libc::SIGKILL);
    supervised.wait(&format!("killed {fourth} 9"), Duration::from_secs(20));
    supervised.ready();
    load.goes_on(before, "kill -9 with the server gone");

    let logs = supervised.logs();
    let done = running.take().unwrap().finish(&logs);
    assert_eq!(
        logs.matches("from the connection the service manager kept")
            .count(),
        4,
        "{logs}"
    );
    assert!(
        logs.contains("no server answers: showing commit"),
        "the last one did not show the kept version: {logs}"
    );
    assert!(
        !extra.contains(&"--commit") || logs.contains("as before"),
        "the last one did not resolve its pinned commit from what was shown: {logs}"
    );
    let recorded: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("recorded by the process before"))
        .collect();
    eprintln!(
        "{name}: kill -9 (ready again after {resumed:?}), a restart, a gap, offline; {done}; {recorded:?}"
    );

    // The stand-in stops, closing its store: the mount is dead, and a `canopy mount`
    // without a service manager detaches it and mounts anew.
    supervised.stop();
    let server = Server::start(&env, "127.0.0.1:0");
    let mut plain = start_mount(&env, &dir, &server.url, &env.path("plain.log"), extra);
    let out = crate::util::cmd("chroot")
        .arg(&dir)
        .args(["/bin/bash", "-c", "echo alive"])
        .stdout();
    assert_eq!(out, "alive\n");
    assert!(plain.exited(Duration::ZERO).is_none());
    plain.stop();
}

#[test]
fn a_mount_killed_or_restarted_under_a_descriptor_store_goes_on_with_passthrough() {
    // Pinned to its commit by a prefix, which a successor with no server resolves from
    // what was shown before.
    killed_and_restarted("fdstore-pt", &["--commit", "PREFIX"]);
}

#[test]
fn a_mount_killed_or_restarted_under_a_descriptor_store_goes_on_without_passthrough() {
    killed_and_restarted("fdstore-nopt", &["--no-passthrough"]);
}
