//! A running sandbox: its process, bounded waits, and killing it.

use crate::SandboxError;
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A started sandbox. With a PID namespace, its process is the namespace's init, and
/// killing it kills everything the command started.
///
/// Dropping a `Child` that was not waited for kills it (SIGKILL) and reaps it, so an
/// error path never leaves a sandbox running.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    /// The write end of the command's stdin, with [`crate::Stdio::Piped`].
    pub stdin: Option<File>,
    /// The read end of the command's stdout, with [`crate::Stdio::Piped`].
    pub stdout: Option<File>,
    /// The read end of the command's stderr, with [`crate::Stdio::Piped`].
    pub stderr: Option<File>,
}

impl Child {
    pub(crate) fn new(pid: libc::pid_t) -> Result<Child, SandboxError> {
        // SAFETY: pidfd_open on a child we have not reaped, so the pid is still ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(SandboxError::Spawn {
                what: "opening a pidfd for the sandbox".into(),
                source: Errno::last(),
            });
        }
        Ok(Child {
            pid,
            // SAFETY: a new descriptor that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    /// The process id (in the caller's PID namespace).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the sandbox to exit.
    pub fn wait(&mut self) -> Result<ExitStatus, SandboxError> {
        loop {
            if let Some(s) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(s);
            }
        }
    }

    /// Waits at most `timeout`; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, SandboxError> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(SandboxError::Spawn {
                    what: "waiting for the sandbox".into(),
                    source: e,
                });
            }
            if n == 0 {
                return Ok(None);
            }
            return self.reap().map(Some);
        }
    }

    fn reap(&mut self) -> Result<ExitStatus, SandboxError> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                let s = ExitStatus::from_raw(status);
                self.status = Some(s);
                return Ok(s);
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(SandboxError::Spawn {
                    what: format!("reaping sandbox process {}", self.pid),
                    source: e,
                });
            }
        }
    }

    /// Sends a signal (through the pidfd, so never to a recycled pid).
    pub fn signal(&self, signal: libc::c_int) -> Result<(), SandboxError> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match Errno::result(r) {
            Ok(_) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(SandboxError::Spawn {
                what: format!("signalling sandbox process {}", self.pid),
                source: e,
            }),
        }
    }

    /// Kills the sandbox (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, SandboxError> {
        self.signal(libc::SIGKILL)?;
        self.wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
        }
    }
}
