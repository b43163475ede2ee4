//! Programs using a mount while its daemon is replaced, killed or restarted: bash
//! running bash in a loop from the mount and readers hashing files, which must never
//! fail; and, if they stall, what they wait for.

use crate::handover::{Process, to_hex, warm};
use crate::util::cmd;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the readers saw.
#[derive(Default)]
struct Seen {
    errors: Mutex<Vec<String>>,
    passes: AtomicUsize,
}

/// Reads `path` whole, again and again until `stop`, hashing each pass against `sha`;
/// drops each piece read from the page cache so the next pass asks the mount again.
/// `pause` between pieces keeps one open file reading across hand-overs.
fn reader(path: PathBuf, sha: String, pause: Duration, stop: Arc<AtomicBool>, seen: Arc<Seen>) {
    let fail = |what: String| seen.errors.lock().unwrap().push(what);
    while !stop.load(Ordering::Relaxed) {
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                fail(format!("open {}: {e}", path.display()));
                continue;
            }
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut offset = 0i64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    // SAFETY: fadvise on an open descriptor with a range.
                    unsafe {
                        libc::posix_fadvise(
                            file.as_raw_fd(),
                            offset,
                            n as i64,
                            libc::POSIX_FADV_DONTNEED,
                        )
                    };
                    offset += n as i64;
                }
                Err(e) => {
                    fail(format!("read {} at {offset}: {e}", path.display()));
                    break;
                }
            }
            std::thread::sleep(pause);
        }
        let got = to_hex(&hasher.finalize());
        if got != sha {
            fail(format!(
                "{}: read {offset} bytes hashing {got}",
                path.display()
            ));
        }
        seen.passes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Programs using a mount while its daemon is replaced: bash running bash in a loop
/// from the mount, two readers streaming and hashing the big file (its first opens
/// are read through canopy, which fetches it, and so are the opens overlapping them),
/// and two streaming and hashing the warm file (once cached, with passthrough, read by
/// the kernel from the cache file; each reader's open overlaps the other's, so a
/// successor answers with the registration it took over).
pub(crate) struct Load {
    /// The mountpoint.
    dir: PathBuf,
    program: Process,
    program_out: Option<std::thread::JoinHandle<Vec<String>>>,
    runs: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(dir: &Path, sha: &str) -> Load {
        // Once, so that the program's files are cached: with passthrough its opens are
        // then read by the kernel from the cache files (registrations a successor must
        // reuse), while the big file's first opens are read through canopy.
        let out = cmd("chroot")
            .arg(dir)
            .args([
                "/bin/bash",
                "-c",
                "read -r l < /etc/debian_version && echo warm",
            ])
            .stdout();
        assert_eq!(out, "warm\n");
        let warm_sha = to_hex(&Sha256::digest(warm()));
        // Any failure prints FAIL and ends the loop.
        let program = Command::new("chroot")
            .arg(dir)
            .args([
                "/bin/bash",
                "-c",
                "while :; do /bin/bash -c 'read -r l < /etc/debian_version && echo ok' || { echo FAIL; exit 1; }; done",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut program = Process {
            child: program,
            mount: None,
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let program_out = {
            let out = program.child.stdout.take().unwrap();
            let runs = runs.clone();
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(l) if l == "ok" => {
                            runs.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(l) => bad.push(l),
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                bad
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let readers = [
            ("data/big", sha, 0),
            ("data/big", sha, 15),
            ("data/warm", &warm_sha, 5),
            ("data/warm", &warm_sha, 20),
        ]
        .into_iter()
        .map(|(file, sha, pause)| {
            let (path, sha, stop, seen) =
                (dir.join(file), sha.to_string(), stop.clone(), seen.clone());
            let pause = Duration::from_millis(pause);
            std::thread::spawn(move || reader(path, sha, pause, stop, seen))
        })
        .collect();
        Load {
            dir: dir.to_path_buf(),
            program,
            program_out: Some(program_out),
            runs,
            stop,
            seen,
            readers,
        }
    }

    /// Waits until the program has run again since `before` runs (a generous bound:
    /// under load a bash run can take seconds to start; a stalled mount never makes
    /// progress). If it has not, says whether it failed (its errors) or waits (on
    /// what, from the kernel's stacks), and then aborts the mount's FUSE connection so
    /// that nothing of the test stays blocked on it.
    pub(crate) fn goes_on(&mut self, before: usize, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.runs.load(Ordering::Relaxed) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.runs.load(Ordering::Relaxed) > before {
            return;
        }
        if let Some(status) = self.program.child.try_wait().unwrap() {
            let mut stderr = String::new();
            let mut err = self.program.child.stderr.take().unwrap();
            let _ = err.read_to_string(&mut stderr);
            panic!("the program from the mount failed after {after} ({status}): {stderr}");
        }
        let report = stall_report(&self.dir, self.program.child.id());
        crate::mount::abort_connection(&self.dir);
        panic!("the program from the mount waits since {after}:\n{report}");
    }

    pub(crate) fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// Stops the programs; asserts that nothing failed. Returns what was done.
    pub(crate) fn finish(mut self, logs: &str) -> String {
        std::thread::sleep(Duration::from_millis(400));
        self.stop.store(true, Ordering::Relaxed);
        // A request left unanswered would hold a reader for good: bounded.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.readers.iter().any(|r| !r.is_finished()) {
            assert!(Instant::now() < deadline, "a reader hangs on the mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let _ = self.program.child.kill();
        let _ = self.program.child.wait();
        let mut stderr = String::new();
        let mut err = self.program.child.stderr.take().unwrap();
        err.read_to_string(&mut stderr).unwrap();
        let bad = self.program_out.take().unwrap().join().unwrap();
        let errors = self.seen.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "readers failed: {errors:?}\n{logs}");
        assert!(
            bad.is_empty() && stderr.is_empty(),
            "the program from the mount failed: {bad:?} {stderr}\n{logs}"
        );
        let passes = self.seen.passes.load(Ordering::Relaxed);
        assert!(passes >= 2, "the readers hardly read");
        format!(
            "program runs {}, reader passes {passes}, requests resent {}",
            self.runs.load(Ordering::Relaxed),
            logs.matches("the kernel resent").count()
        )
    }
}

impl Drop for Load {
    /// The readers stop (a failed test must not leave them reading); the program is
    /// killed with its [`Process`].
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the processes using a stalled mount wait for: the state and kernel stack of
/// each of the program's processes and of the threads of the `canopy mount` processes
/// of the test serving `dir`, and the FUSE connection's count of requests waiting for
/// an answer. Reads nothing through the mount.
fn stall_report(dir: &Path, program: u32) -> String {
    let tasks = |pid: u32| -> Vec<PathBuf> {
        fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|t| t.path())
            .collect()
    };
    let children = |pid: u32| -> Vec<u32> {
        tasks(pid)
            .iter()
            .flat_map(|t| {
                let c = fs::read_to_string(t.join("children")).unwrap_or_default();
                c.split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    };
    let mut pids = vec![program];
    let mut i = 0;
    while i < pids.len() {
        pids.extend(children(pids[i]));
        i += 1;
    }
    // The daemons are children of the test process (a canopy process is never blocked
    // on its own memory, so its command line can be read).
    let daemons = children(std::process::id()).into_iter().filter(|pid| {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        comm.trim() == "canopy"
            && cmdline
                .split(|b| *b == 0)
                .any(|a| a == dir.as_os_str().as_encoded_bytes())
    });
    let mut out = String::new();
    let who = pids
        .iter()
        .map(|p| ("program", *p))
        .chain(daemons.map(|p| ("daemon", p)));
    for (who, pid) in who {
        for task in tasks(pid) {
            let read = |name: &str| fs::read_to_string(task.join(name)).unwrap_or_default();
            // `stat`'s third field is the state (R, S, D, Z…), after the name in ().
            let stat = read("stat");
            let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
            out += &format!(
                "{who} {}: {} state {state}, syscall {}\n{}",
                task.display(),
                read("comm").trim(),
                read("syscall").trim(),
                read("stack")
            );
        }
    }
    if let Some(connection) = crate::mount::fuse_connection(dir) {
        let waiting = fs::read_to_string(connection.join("waiting")).unwrap_or_default();
        out += &format!(
            "FUSE connection {}: {} requests waiting\n",
            connection.display(),
            waiting.trim()
        );
    }
    out
}
