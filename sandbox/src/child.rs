//! The sandbox's side of the fork: what runs between `clone` and `execve`.
//!
//! The parent may have many threads, so the child runs only system calls: every
//! string, path and array it needs was prepared by the parent (the [`Plan`]), nothing
//! here allocates, locks or formats. A failure is reported as two numbers — the step
//! that failed and its errno — on a close-on-exec pipe, which the parent turns into a
//! message; a successful `execve` closes that pipe instead.
//!
//! With a new PID namespace the cloned process is the namespace's init: it does the
//! setup, clones the command's process, forwards signals to it, reaps orphans, and
//! exits with the command's status (128 + N for a command killed by signal N). When
//! it exits, the kernel kills whatever is left in the namespace.

mod steps;

pub(crate) use steps::{FUSE_OPTIONS_MAX, Step};

use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Failure codes beyond step indexes.
pub(crate) const FAIL_SYNC: u32 = u32::MAX;
pub(crate) const FAIL_BECOME_ROOT: u32 = u32::MAX - 1;
pub(crate) const FAIL_FORK: u32 = u32::MAX - 2;
pub(crate) const FAIL_IDS: u32 = u32::MAX - 3;
pub(crate) const FAIL_CWD: u32 = u32::MAX - 4;
pub(crate) const FAIL_EXEC: u32 = u32::MAX - 5;
pub(crate) const FAIL_STDIO: u32 = u32::MAX - 6;

/// What the command's process becomes before `execve`.
pub(crate) struct Exec {
    /// Candidate paths of the program, tried in order (the program as given, or each
    /// `PATH` directory joined with it).
    pub(crate) candidates: Vec<CString>,
    /// argv, NULL-terminated, pointing into `argv_store`.
    pub(crate) argv: Vec<*const libc::c_char>,
    pub(crate) _argv_store: Vec<CString>,
    /// envp, NULL-terminated, pointing into `env_store`.
    pub(crate) envp: Vec<*const libc::c_char>,
    pub(crate) _env_store: Vec<CString>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<libc::gid_t>,
    pub(crate) set_groups: bool,
    pub(crate) cwd: CString,
    /// Whether `cwd` is entered first, with the caller's ids ([`crate::Sandbox::cwd_first`]).
    pub(crate) cwd_first: bool,
    /// Descriptors to become 0, 1 and 2 (`None`: inherited).
    pub(crate) stdio: [Option<RawFd>; 3],
}

/// Everything the child does, prepared by the parent.
pub(crate) struct Plan {
    pub(crate) steps: Vec<Step>,
    pub(crate) exec: Exec,
    pub(crate) new_user: bool,
    pub(crate) pid_ns: bool,
    pub(crate) setgroups: bool,
    /// Read end of the pipe the parent writes one byte to once the id maps are written.
    pub(crate) sync: RawFd,
    /// Write end of the (close-on-exec) pipe failures are reported on.
    pub(crate) errors: RawFd,
    /// Read end of a pipe whose write end only the parent holds: it hangs up when the
    /// parent is gone.
    pub(crate) lifeline: RawFd,
    /// The parent's ends of those pipes, which the child closes first: its own copy of
    /// the sync pipe's write end would keep a read from ever seeing the parent go.
    pub(crate) parent_ends: [RawFd; 3],
}

/// Reports a failure to the parent and exits.
fn fail(errors: RawFd, code: u32, errno: Errno) -> ! {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&code.to_ne_bytes());
    record[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; record outlives the call.
    unsafe {
        libc::write(errors, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
}

/// Default dispositions and an empty mask, as a freshly exec'd program expects
/// (Rust ignores SIGPIPE, and an ignored signal stays ignored across execve).
fn reset_signals() {
    // SAFETY: signal and sigprocmask with valid arguments.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Asks for SIGKILL when the parent goes, and makes sure it has not gone already.
fn die_with_parent(lifeline: Option<RawFd>) -> Result<(), Errno> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if let Some(fd) = lifeline {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(1) }
        }
    }
    Ok(())
}

/// `setgroups(2)` as a raw system call: the C library's wrapper signals every thread
/// it believes the process has, and in a cloned child those threads do not exist.
fn set_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: a valid array of `groups.len()` gids.
    Errno::result(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
        .map(drop)
}

/// `setresgid(2)` then `setresuid(2)`, raw for the same reason as [`set_groups`].
fn set_ids(uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: plain system calls on the calling thread's credentials.
    unsafe {
        Errno::result(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        Errno::result(libc::syscall(libc::SYS_setresuid, uid, uid, uid)).map(drop)
    }
}

/// `clone(2)` with fork semantics (no new stack), bypassing the C library's fork
/// handlers, which may take locks that other threads of the parent held.
pub(crate) fn raw_clone(flags: libc::c_int) -> Result<libc::pid_t, Errno> {
    // SAFETY: with a null stack the child continues on a copy of the caller's stack,
    // exactly as after fork(); the child then only makes system calls.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    Errno::result(pid).map(|p| p as libc::pid_t)
}

/// Runs in the cloned process. Never returns.
pub(crate) fn run(plan: &Plan) -> ! {
    for fd in plan.parent_ends {
        // SAFETY: closing our copies of the parent's descriptors.
        unsafe { libc::close(fd) };
    }
    reset_signals();
    let mut byte = [0u8; 1];
    // SAFETY: read into a one-byte buffer.
    if unsafe { libc::read(plan.sync, byte.as_mut_ptr().cast(), 1) } != 1 {
        // The parent could not write the id maps, or is gone.
        fail(plan.errors, FAIL_SYNC, Errno::last());
    }
    if plan.exec.cwd_first
        && let Err(err) = nix::unistd::chdir(plan.exec.cwd.as_c_str())
    {
        fail(plan.errors, FAIL_CWD, err);
    }
    if plan.new_user {
        let become_root = || -> Result<(), Errno> {
            if plan.setgroups {
                set_groups(&[])?;
            }
            set_ids(0, 0)
        };
        if let Err(e) = become_root() {
            fail(plan.errors, FAIL_BECOME_ROOT, e);
        }
    }
    if let Err(e) = die_with_parent(Some(plan.lifeline)) {
        fail(plan.errors, FAIL_BECOME_ROOT, e);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        if let Err(e) = step.run() {
            fail(plan.errors, i as u32, e);
        }
    }
    if !plan.pid_ns {
        exec(plan);
    }
    match raw_clone(0) {
        Ok(0) => exec(plan),
        Ok(pid) => init(pid),
        Err(e) => fail(plan.errors, FAIL_FORK, e),
    }
}

/// The command's process: ids, stdio, directory, then `execve`.
fn exec(plan: &Plan) -> ! {
    let e = &plan.exec;
    for (target, fd) in e.stdio.iter().enumerate() {
        if let Some(fd) = *fd {
            // SAFETY: dup2 onto 0..2 of descriptors the parent kept open for us.
            if unsafe { libc::dup2(fd, target as libc::c_int) } < 0 {
                fail(plan.errors, FAIL_STDIO, Errno::last());
            }
        }
    }
    let ids = || -> Result<(), Errno> {
        if e.set_groups {
            set_groups(&e.groups)?;
        }
        set_ids(e.uid, e.gid)?;
        // Changing ids clears the parent-death signal: ask again.
        die_with_parent(None)
    };
    if let Err(err) = ids() {
        fail(plan.errors, FAIL_IDS, err);
    }
    if !e.cwd_first
        && let Err(err) = nix::unistd::chdir(e.cwd.as_c_str())
    {
        fail(plan.errors, FAIL_CWD, err);
    }
    // Everything but stdio closes at exec (the failure pipe must stay open until then).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let mut last = Errno::ENOENT;
    for candidate in &e.candidates {
        // SAFETY: candidate, argv and envp are NUL-terminated and outlive the call.
        unsafe { libc::execve(candidate.as_ptr(), e.argv.as_ptr(), e.envp.as_ptr()) };
        let err = Errno::last();
        // Keep the most telling error: a candidate that exists but cannot run.
        if err != Errno::ENOENT && err != Errno::ENOTDIR {
            last = err;
        }
    }
    fail(plan.errors, FAIL_EXEC, last)
}

/// The command's pid, for the signal handler.
static MAIN: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = MAIN.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The PID namespace's init: forwards signals to the command, reaps everything, and
/// exits with the command's status.
fn init(main: libc::pid_t) -> ! {
    MAIN.store(main, Ordering::Relaxed);
    // SAFETY: sigaction with a handler that only calls kill; close_range and waitpid
    // on our own descriptors and children.
    unsafe {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
            libc::SIGCONT,
        ] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        // init holds no descriptor: the command alone holds stdio and the failure pipe,
        // so readers see end-of-file when the command is done.
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == main {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    1
                };
                libc::_exit(code);
            }
            if pid < 0 && Errno::last() == Errno::ECHILD {
                libc::_exit(1);
            }
        }
    }
}
