//! Starting mount servers and watching them: a server that dies while it serves a mount
//! is started again on the connection the plugin keeps for it.

use super::{FdStore, RESTART_WAIT, Restarted};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most restarts of a server that keeps dying, in [`RESTART_WINDOW`].
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A descriptor to wait on the end of process `pid`, which is not a child.
pub(super) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        tracing::warn!(
            "watching the mount server (process {pid}): {}",
            io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: a descriptor just opened for this process.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A mount server the plugin watches.
pub(super) enum Server {
    /// One it started.
    Child(Child),
    /// One an earlier plugin started: its pid and a pidfd.
    Adopted(u32, OwnedFd),
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Child(c) => c.id(),
            Server::Adopted(pid, _) => *pid,
        }
    }

    /// Waits until it ends; whether it exited cleanly (unknown for one not a child:
    /// then what it left in the store tells).
    fn wait(&mut self) -> (bool, String) {
        match self {
            Server::Child(c) => match c.wait() {
                Ok(s) => (s.success(), s.to_string()),
                Err(e) => (false, e.to_string()),
            },
            Server::Adopted(_, fd) => {
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a process's whole life is waited for.
                while unsafe { libc::poll(&mut poll, 1, -1) } < 0 {}
                (false, "ended".into())
            }
        }
    }
}

/// How the plugin starts mount servers.
pub(super) struct Launcher {
    pub(super) mount_dir: PathBuf,
    pub(super) exe: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) store: Option<Arc<FdStore>>,
}

impl Launcher {
    /// Starts a server in a session of its own (a signal to the plugin's terminal or
    /// process group does not reach it), storing its connection in the plugin's store;
    /// with `fds` (a dead server's, by name), it resumes that connection.
    pub(super) fn spawn(&self, fds: Vec<(String, OwnedFd)>) -> io::Result<Child> {
        use std::os::unix::process::CommandExt;
        // LISTEN_PID must be the server's own pid, known only after the fork: a shell
        // sets it and execs the server in its place.
        let mut command = if fds.is_empty() {
            Command::new(&self.exe)
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
                .arg(&self.exe);
            c
        };
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET");
        if let Some(store) = &self.store {
            command
                .env("NOTIFY_SOCKET", store.name())
                .env("FDSTORE", "16");
        }
        if !fds.is_empty() {
            let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
            command
                .env("LISTEN_FDS", fds.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        let raw: Vec<i32> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        // SAFETY: only async-signal-safe calls (setsid, fcntl, dup2) on descriptors
        // this process owns, in the child between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Out of the way first (a descriptor may sit at 3 or 4), then to 3, 4…
                let mut high = [0i32; 16];
                for (i, fd) in raw.iter().take(high.len()).enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                    if high[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().take(raw.len()).enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        if let Some(store) = &self.store {
            store.expect(child.id());
        }
        Ok(child)
    }

    /// Waits for `child`; a server that dies (not a clean exit) while the store keeps
    /// its connection is started again on it at once, at most [`MAX_RESTARTS`] times a
    /// minute.
    pub(super) fn supervise(
        &self,
        mut server: Server,
        restarting: &AtomicBool,
        restarted: &Restarted,
    ) {
        let mut restarts: Vec<Instant> = Vec::new();
        loop {
            let pid = server.pid();
            let (clean, how) = server.wait();
            let Some(store) = self.store.as_ref().filter(|s| s.is_main(pid)) else {
                // Replaced by a newer server (which stores its own connection).
                return;
            };
            restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
            // A server that ended cleanly unmounted first (its FDSTOREREMOVE may still
            // be on its way): nothing to resume then.
            let mounted = crate::run::source::canopy_mounts()
                .contains(&crate::mount::resolved(&self.mount_dir));
            let kept = if clean || !mounted {
                None
            } else {
                store.take()
            };
            let Some(fds) = kept else {
                store.clear();
                return;
            };
            if restarts.len() >= MAX_RESTARTS {
                tracing::error!(
                    "the mount server died {MAX_RESTARTS} times within a minute: not starting \
                     it again (the next call to the plugin starts a new one)"
                );
                store.clear();
                return;
            }
            restarts.push(Instant::now());
            tracing::warn!(
                "the mount server (process {pid}) died ({how}): starting it again on its FUSE \
                 connection"
            );
            restarting.store(true, Ordering::SeqCst);
            // Copies, put back if the new server dies before it stores its own.
            let spare: Vec<(String, OwnedFd)> = fds
                .iter()
                .filter_map(|(name, fd)| Some((name.clone(), fd.try_clone().ok()?)))
                .collect();
            let mut child = match self.spawn(fds) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("starting the mount server again: {e}");
                    store.clear();
                    restarting.store(false, Ordering::SeqCst);
                    return;
                }
            };
            // Until it says it serves, or dies, or the wait is over.
            let deadline = Instant::now() + RESTART_WAIT;
            let ready = loop {
                if store.wait_ready(child.id(), Duration::from_millis(100)) {
                    break true;
                }
                if !matches!(child.try_wait(), Ok(None)) || Instant::now() > deadline {
                    break false;
                }
            };
            if !ready {
                store.restore(child.id(), spare);
            }
            restarting.store(false, Ordering::SeqCst);
            restarted.set();
            if ready {
                tracing::info!(
                    "the mount server serves again (process {}), on the connection it kept",
                    child.id()
                );
            } else {
                tracing::warn!(
                    "the mount server started again (process {}) did not say it serves \
                     within {RESTART_WAIT:?}",
                    child.id()
                );
            }
            server = Server::Child(child);
        }
    }
}
