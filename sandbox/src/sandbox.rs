//! The sandbox builder: which namespaces, which root, which mounts, which command.

use crate::child::{self, Exec, Plan, Step};
use crate::{Child, Mount, SandboxError, Users};
use nix::errno::Errno;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `PATH` searched for a program named without a `/`, when the sandbox's
/// environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long the sandbox's setup may take before the sandbox is killed and reported.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Which namespaces a sandbox gets besides the user namespace ([`Users`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespaces {
    /// Its own mounts (always, when it has a root or mounts).
    pub mount: bool,
    /// Its own process ids: the command is not pid 1, a small init is (see
    /// [`Child`]); everything it starts dies with it.
    pub pid: bool,
    /// Its own System V IPC and POSIX message queues.
    pub ipc: bool,
    /// Its own hostname.
    pub uts: bool,
    /// Its own network: only a loopback interface (brought up), no route out.
    pub net: bool,
}

impl Namespaces {
    /// Every namespace: isolated mounts, processes, IPC, hostname and network.
    pub const ALL: Namespaces = Namespaces {
        mount: true,
        pid: true,
        ipc: true,
        uts: true,
        net: true,
    };
    /// The caller's namespaces (a super-privileged container shares them all but mounts).
    pub const NONE: Namespaces = Namespaces {
        mount: false,
        pid: false,
        ipc: false,
        uts: false,
        net: false,
    };
}

/// What a standard descriptor of the command is connected to.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe whose other end is in [`Child::stdin`], [`Child::stdout`] or [`Child::stderr`].
    Piped,
    /// This descriptor (a file, a socket, one end of a pipe).
    Fd(OwnedFd),
}

/// A sandbox to run one command in. See the crate documentation for an example.
#[derive(Debug)]
pub struct Sandbox {
    users: Users,
    namespaces: Namespaces,
    root: Option<PathBuf>,
    mounts: Vec<Mount>,
    read_only_root: bool,
    hostname: Option<String>,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cwd: PathBuf,
    cwd_first: bool,
    env: Vec<(OsString, OsString)>,
    stdio: [Stdio; 3],
}

impl Sandbox {
    /// A sandbox in `users`, with every namespace, the caller's root directory, no
    /// mounts, an empty environment, uid and gid 0 inside, `/` as working directory and
    /// the caller's stdio.
    pub fn new(users: Users) -> Sandbox {
        Sandbox {
            users,
            namespaces: Namespaces::ALL,
            root: None,
            mounts: Vec::new(),
            read_only_root: false,
            hostname: None,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            cwd: PathBuf::from("/"),
            cwd_first: false,
            env: Vec::new(),
            stdio: Default::default(),
        }
    }

    /// Which namespaces to create (default: [`Namespaces::ALL`]).
    pub fn namespaces(&mut self, namespaces: Namespaces) -> &mut Self {
        self.namespaces = namespaces;
        self
    }

    /// Makes `dir` (a host path) the sandbox's `/`, with `pivot_root`: nothing of the
    /// host is visible inside but what [`Sandbox::mount`] adds.
    pub fn root(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.root = Some(dir.into());
        self
    }

    /// Adds a mount, applied in order (an overlay at `/` must come first).
    pub fn mount(&mut self, mount: Mount) -> &mut Self {
        self.mounts.push(mount);
        self
    }

    /// Remounts the new root read-only once everything is mounted.
    pub fn read_only_root(&mut self, read_only: bool) -> &mut Self {
        self.read_only_root = read_only;
        self
    }

    /// Sets the hostname (with a UTS namespace).
    pub fn hostname(&mut self, name: impl Into<String>) -> &mut Self {
        self.hostname = Some(name.into());
        self
    }

    /// The uid, gid and supplementary groups the command runs as, inside (default 0,
    /// 0, none).
    pub fn user(&mut self, uid: u32, gid: u32, groups: Vec<u32>) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self.groups = groups;
        self
    }

    /// The command's working directory, inside (default `/`).
    pub fn cwd(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = dir.into();
        self
    }

    /// Enters the working directory first, before the namespaces' mounts and with the
    /// caller's own host ids (before taking the ids inside): a directory below one that
    /// only the caller may search (a home directory of mode 0700, `/root`) is reachable,
    /// although the ids inside could not look it up. The directory is the caller's,
    /// so its path is not looked up again in the new root.
    pub fn cwd_first(&mut self) -> &mut Self {
        self.cwd_first = true;
        self
    }

    /// Adds an environment variable (the environment starts empty).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Connects the command's stdin.
    pub fn stdin(&mut self, s: Stdio) -> &mut Self {
        self.stdio[0] = s;
        self
    }

    /// Connects the command's stdout.
    pub fn stdout(&mut self, s: Stdio) -> &mut Self {
        self.stdio[1] = s;
        self
    }

    /// Connects the command's stderr.
    pub fn stderr(&mut self, s: Stdio) -> &mut Self {
        self.stdio[2] = s;
        self
    }

    /// Starts `program` with `args` in the sandbox. A program named without `/` is
    /// looked up in the sandbox's `PATH`. Returns once the command has been executed,
    /// or with the setup step that failed; the stdio settings are used up.
    pub fn spawn<I, S>(
        &mut self,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> Result<Child, SandboxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let (steps, descriptions) = self.steps()?;
        let mut argv_store = vec![c(program.as_bytes(), "program")?];
        for a in args {
            argv_store.push(c(a.as_ref().as_bytes(), "argument")?);
        }
        let mut env_store = Vec::new();
        let mut path_var = DEFAULT_PATH.as_bytes().to_vec();
        for (k, v) in &self.env {
            if k == "PATH" {
                path_var = v.as_bytes().to_vec();
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env_store.push(c(&kv, "environment variable")?);
        }
        let candidates = candidates(program, &path_var)?;
        let mut keep: Vec<OwnedFd> = Vec::new();
        let mut child_ends: [Option<RawFd>; 3] = [None; 3];
        let mut parent_ends: [Option<File>; 3] = [None, None, None];
        for (i, s) in self.stdio.iter_mut().enumerate() {
            let fd = match std::mem::take(s) {
                Stdio::Inherit => continue,
                Stdio::Null => File::options()
                    .read(i == 0)
                    .write(i != 0)
                    .open("/dev/null")
                    .map_err(|source| SandboxError::Io {
                        what: "opening /dev/null".into(),
                        source,
                    })?
                    .into(),
                Stdio::Piped => {
                    let (r, w) = pipe()?;
                    let (mine, theirs) = if i == 0 { (w, r) } else { (r, w) };
                    parent_ends[i] = Some(File::from(mine));
                    theirs
                }
                Stdio::Fd(fd) => fd,
            };
            // Above 2, so that setting up one of 0..2 never clobbers another.
            let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                .map_err(|e| spawn_err("duplicating a stdio descriptor", e))?;
            // SAFETY: a new descriptor that nothing else owns.
            let high = unsafe { OwnedFd::from_raw_fd(high) };
            child_ends[i] = Some(high.as_raw_fd());
            keep.push(high);
        }
        let (sync_r, sync_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (life_r, life_w) = pipe()?;
        let plan = Plan {
            steps,
            exec: Exec {
                candidates,
                argv: ptrs(&argv_store),
                _argv_store: argv_store,
                envp: ptrs(&env_store),
                _env_store: env_store,
                uid: self.uid,
                gid: self.gid,
                groups: self.groups.clone(),
                set_groups: self.users.setgroups_allowed(),
                cwd: c(self.cwd.as_os_str().as_bytes(), "working directory")?,
                cwd_first: self.cwd_first,
                stdio: child_ends,
            },
            new_user: matches!(self.users, Users::Mapped { .. }),
            pid_ns: self.namespaces.pid,
            setgroups: self.users.setgroups_allowed(),
            sync: sync_r.as_raw_fd(),
            errors: err_w.as_raw_fd(),
            lifeline: life_r.as_raw_fd(),
            parent_ends: [sync_w.as_raw_fd(), err_r.as_raw_fd(), life_w.as_raw_fd()],
        };
        let pid = child::raw_clone(self.clone_flags()).map_err(|e| SandboxError::Spawn {
            what: format!(
                "creating the sandbox's namespaces{}",
                if e == Errno::EPERM || e == Errno::ENOSPC {
                    " (are user namespaces allowed? see sysctl user.max_user_namespaces)"
                } else {
                    ""
                }
            ),
            source: e,
        })?;
        if pid == 0 {
            child::run(&plan);
        }
        drop((sync_r, err_w, life_r, keep));
        let mut child = Child::new(pid)?;
        [child.stdin, child.stdout, child.stderr] = parent_ends;
        self.users.write_maps(pid)?;
        let mut sync = File::from(sync_w);
        std::io::Write::write_all(&mut sync, &[1]).map_err(|source| SandboxError::Io {
            what: "releasing the sandbox's process".into(),
            source,
        })?;
        drop(sync);
        let report = read_report(err_r)?;
        drop(life_w);
        match report {
            None => Ok(child),
            Some((code, errno)) => {
                let _ = child.kill();
                Err(SandboxError::Setup {
                    step: describe(code, &descriptions, self, program),
                    source: errno,
                })
            }
        }
    }

    /// Runs `program` to completion and returns its exit status.
    pub fn status<I, S>(
        &mut self,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> Result<std::process::ExitStatus, SandboxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn(program, args)?.wait()
    }

    fn clone_flags(&self) -> libc::c_int {
        let mut flags = 0;
        let ns = &self.namespaces;
        for (on, flag) in [
            (
                matches!(self.users, Users::Mapped { .. }),
                libc::CLONE_NEWUSER,
            ),
            (self.needs_mount_ns(), libc::CLONE_NEWNS),
            (ns.pid, libc::CLONE_NEWPID),
            (ns.ipc, libc::CLONE_NEWIPC),
            (ns.uts, libc::CLONE_NEWUTS),
            (ns.net, libc::CLONE_NEWNET),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }

    fn needs_mount_ns(&self) -> bool {
        self.namespaces.mount || self.root.is_some() || !self.mounts.is_empty()
    }

    /// The child's setup steps, and what each does (for error messages).
    fn steps(&self) -> Result<(Vec<Step>, Vec<String>), SandboxError> {
        let mut steps: Vec<(Step, String)> = Vec::new();
        if self.needs_mount_ns() {
            steps.push((Step::Private, "making the sandbox's mounts private".into()));
        }
        let base = self.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        for m in &self.mounts {
            m.plan(&base, &mut steps).map_err(SandboxError::Config)?;
        }
        if let Some(root) = &self.root {
            steps.push((
                Step::Pivot {
                    root: c(root.as_os_str().as_bytes(), "root directory")?,
                },
                format!("entering the root {}", root.display()),
            ));
            if self.read_only_root {
                steps.push((
                    Step::ReadOnly {
                        target: CString::new("/").unwrap(),
                    },
                    "making the root read-only".into(),
                ));
            }
        }
        if self.namespaces.net {
            steps.push((Step::Loopback, "bringing the loopback interface up".into()));
        }
        if let Some(name) = &self.hostname {
            if !self.namespaces.uts {
                return Err(SandboxError::Config(
                    "a hostname needs a UTS namespace".into(),
                ));
            }
            steps.push((
                Step::Hostname(c(name.as_bytes(), "hostname")?),
                format!("setting the hostname {name}"),
            ));
        }
        Ok(steps.into_iter().unzip())
    }
}

fn c(bytes: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::Config(format!("the {what} contains a NUL byte")))
}

fn ptrs(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths `execve` tries for `program`: itself if it names a path, else each
/// directory of `path` joined with it.
fn candidates(program: &OsStr, path: &[u8]) -> Result<Vec<CString>, SandboxError> {
    let name = program.as_bytes();
    if name.is_empty() {
        return Err(SandboxError::Config("no program given".into()));
    }
    if name.contains(&b'/') {
        return Ok(vec![c(name, "program")?]);
    }
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(name);
            c(&full, "program path")
        })
        .collect()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err("creating a pipe", e))
}

fn spawn_err(what: &str, source: Errno) -> SandboxError {
    SandboxError::Spawn {
        what: what.into(),
        source,
    }
}

/// Reads the child's failure report: `None` once the command was executed.
fn read_report(fd: OwnedFd) -> Result<Option<(u32, Errno)>, SandboxError> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = SETUP_TIMEOUT.as_millis() as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n == 0 {
        return Err(SandboxError::Config(format!(
            "the sandbox's setup did not finish within {} s",
            SETUP_TIMEOUT.as_secs()
        )));
    }
    let mut file = File::from(fd);
    let mut record = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut record).map_err(|source| SandboxError::Io {
        what: "reading the sandbox's setup report".into(),
        source,
    })?;
    if record.len() < 8 {
        return Ok(None);
    }
    let code = u32::from_ne_bytes(record[..4].try_into().unwrap());
    let errno = i32::from_ne_bytes(record[4..8].try_into().unwrap());
    Ok(Some((code, Errno::from_raw(errno))))
}

fn describe(code: u32, steps: &[String], sb: &Sandbox, program: &OsStr) -> String {
    let program = Path::new(program).display();
    match code {
        child::FAIL_SYNC => "waiting for the user namespace's id maps".into(),
        child::FAIL_BECOME_ROOT => "becoming root in the new user namespace".into(),
        child::FAIL_FORK => "starting the command's process".into(),
        child::FAIL_IDS => format!("switching to uid {} gid {}", sb.uid, sb.gid),
        child::FAIL_CWD => format!("entering the working directory {}", sb.cwd.display()),
        child::FAIL_EXEC => format!("running {program}"),
        child::FAIL_STDIO => "connecting stdin, stdout and stderr".into(),
        i => steps
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("setup step {i}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_in_path() {
        let c = candidates(OsStr::new("sh"), b"/usr/bin:/bin").unwrap();
        assert_eq!(
            c,
            vec![
                CString::new("/usr/bin/sh").unwrap(),
                CString::new("/bin/sh").unwrap()
            ]
        );
        let c = candidates(OsStr::new("/bin/sh"), b"/x").unwrap();
        assert_eq!(c, vec![CString::new("/bin/sh").unwrap()]);
        assert!(candidates(OsStr::new(""), b"").is_err());
    }
}
