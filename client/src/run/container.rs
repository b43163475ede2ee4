//! The run's namespaces and mounts, on the `canopy-sandbox` crate, and the FUSE view
//! served from this process while the command runs.
//!
//! Inside a fresh directory `T` (the sandbox's root) the run mounts, in order:
//!
//! 1. a tmpfs at `T`, holding `.lower`, `.upper` and `.work`;
//! 2. the root: canopy's FUSE view at `T/.lower` (for a [`Source::View`]), or a host
//!    directory;
//! 3. an overlay at `T` of the root under the tmpfs: mount points the root lacks
//!    (`/proc`, `/host`, a `--bind` target) are made there, and the whole is made
//!    read-only at the end, so writes to the root fail with EROFS;
//! 4. `/etc` and `/var` as overlays of the root's own under the state directory's
//!    upper layers (see [`super::state`]);
//! 5. `/proc`, a minimal `/dev`, tmpfs `/tmp` and `/run` (with the directories a
//!    booted host finds there: see [`super::runtime`]), the host's `resolv.conf` and
//!    `hosts`, the caller's binds — or, super-privileged, the host's `/` at `/host`,
//!    its `/run`, `/dev` and `/etc/localtime`.

use super::source::Source;
use super::state::{State, WRITABLE, Xattrs};
use super::{RunConfig, RunError};
use crate::fs::CanopyFs;
use canopy_sandbox::{Mount, Namespaces, SHIFTED_IDS, Sandbox, SandboxError, Users};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The user namespace of a run: none for `--spc`; otherwise the caller is root inside
/// with the ids around it mapped (see [`Users::caller_root`]), or, for a user without
/// subordinate ids, the caller alone.
pub fn users(spc: bool) -> Result<Users, RunError> {
    if spc {
        return Ok(Users::Current);
    }
    match Users::caller_root(SHIFTED_IDS) {
        Ok(u) => Ok(u),
        Err(SandboxError::NoSubordinateIds { .. }) => {
            tracing::warn!(
                "no subordinate ids for this user (see /etc/subuid): only your own id exists in the run; files of other owners show as nobody"
            );
            Ok(Users::caller_as_root())
        }
        Err(e) => Err(e.into()),
    }
}

/// Fails, saying what to change, if this user cannot open `/dev/fuse`, which the run's
/// own view of the root needs (the kernel's error would name only a mount point).
fn fuse_usable() -> Result<(), RunError> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(RunError::Setup(format!(
            "cannot open /dev/fuse ({e}): a run reads its root through a FUSE view of its \
             own, so /dev/fuse must exist and be open to this user (Debian's default is \
             mode 0666: `chmod 0666 /dev/fuse`), or run as root from a `canopy mount`"
        ))),
    }
}

/// What to run and how, decided before the sandbox is built.
pub struct Process<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Environment.
    pub env: &'a [(String, String)],
    /// uid, gid and supplementary groups inside.
    pub ids: (u32, u32, Vec<u32>),
    /// Working directory inside.
    pub cwd: &'a str,
    /// Stdout to /dev/null (host identity commands).
    pub quiet: bool,
}

/// Runs `process` in the root of `source`, with `state`'s `/etc` and `/var`.
pub fn execute(
    cfg: &RunConfig,
    source: &Source,
    state: &State,
    users: &Users,
    run_dir: &Path,
    process: &Process<'_>,
) -> Result<ExitStatus, RunError> {
    let top = run_dir.join("root");
    if !top.exists() {
        fs::create_dir(&top).map_err(|e| RunError::Io {
            what: format!("creating {}", top.display()),
            source: e,
        })?;
    }
    let mut sb = Sandbox::new(users.clone());
    sb.namespaces(if cfg.spc {
        Namespaces {
            mount: true,
            ..Namespaces::NONE
        }
    } else {
        Namespaces {
            net: !cfg.host_network,
            ..Namespaces::ALL
        }
    });
    sb.root(&top);
    let userxattr = !cfg.spc;
    sb.mount(Mount::Tmpfs {
        target: "/".into(),
        mode: 0o755,
    });
    let mut fuse = None;
    let lower: PathBuf = match source {
        Source::View { .. } => {
            fuse_usable()?;
            let (ours, theirs) = UnixStream::pair()
                .map_err(|e| RunError::Setup(format!("creating a socket pair: {e}")))?;
            sb.mount(Mount::Fuse {
                target: "/.lower".into(),
                channel: theirs.as_raw_fd(),
            });
            fuse = Some((ours, theirs));
            top.join(".lower")
        }
        Source::Dir { path, .. } => path.clone(),
    };
    for dir in ["/.upper", "/.work"] {
        sb.mount(Mount::Dir {
            target: dir.into(),
            mode: 0o755,
            owner: None,
        });
    }
    sb.mount(Mount::Overlay {
        lower: vec![lower.clone()],
        upper: Some(top.join(".upper")),
        work: Some(top.join(".work")),
        target: "/".into(),
        userxattr,
    });
    for name in WRITABLE {
        let inside = format!("/{name}");
        match source.stat(&inside) {
            Some(s) if s.dir => {}
            _ => continue,
        }
        // A view's root is read through the root overlay (the FUSE mount is beneath
        // it now); a host directory directly, which keeps stacking shallow.
        let lower = match source {
            Source::View { .. } => top.join(name),
            Source::Dir { path, .. } => path.join(name),
        };
        sb.mount(Mount::Overlay {
            lower: vec![lower],
            upper: Some(state.upper(name)),
            work: Some(state.work(name)),
            target: inside.into(),
            userxattr,
        });
    }
    host_mounts(cfg, source, run_dir, &mut sb)?;
    for b in &cfg.binds {
        sb.mount(Mount::Bind {
            source: b.source.clone(),
            target: b.target.clone(),
            read_only: b.read_only,
        });
    }
    sb.read_only_root(true);
    if !cfg.spc {
        sb.hostname(cfg.hostname.clone());
    }
    for (k, v) in process.env {
        sb.env(k, v);
    }
    let (uid, gid, groups) = process.ids.clone();
    sb.user(uid, gid, groups).cwd(process.cwd);
    if process.quiet {
        sb.stdout(canopy_sandbox::Stdio::Null);
    }
    let mut session = None;
    if let (Source::View { view, objects, .. }, Some((ours, _))) = (source, &fuse) {
        let objects = cfg.view_objects.clone().unwrap_or_else(|| objects.clone());
        let fs = CanopyFs::new(view.clone(), objects, false);
        session = Some(Session::start(
            fs,
            ours.try_clone()
                .map_err(|e| RunError::Setup(format!("socket: {e}")))?,
        )?);
    }
    let spawned = sb.spawn(&process.argv[0], &process.argv[1..]);
    drop(fuse);
    let status = match spawned {
        Ok(mut child) => {
            super::signals::forward_to(child.id() as i32);
            let status = child.wait();
            super::signals::forward_to(0);
            status.map_err(RunError::from)
        }
        Err(e) => Err(RunError::from_spawn(e, &process.argv[0])),
    };
    if let Some(s) = session {
        s.stop();
    }
    let _ = fs::remove_dir(&top);
    forget_mount_points(cfg, source, state);
    status
}

/// Removes from the state the mount points that binds into `/etc` and `/var` left
/// there (empty files and directories where the root has nothing): they were never
/// the host's changes.
fn forget_mount_points(cfg: &RunConfig, source: &Source, state: &State) {
    let targets = ["/etc/hosts", "/etc/resolv.conf", "/etc/localtime"]
        .into_iter()
        .map(PathBuf::from)
        .chain(cfg.binds.iter().map(|b| b.target.clone()));
    for target in targets {
        let mut inside = target;
        while let Some(shown) = inside.to_str().map(str::to_string) {
            let mut parts = shown.trim_start_matches('/').splitn(2, '/');
            let (Some(top), Some(rest)) = (parts.next(), parts.next()) else {
                break;
            };
            if !WRITABLE.contains(&top) || source.stat(&shown).is_some() {
                break;
            }
            let path = state.upper(top).join(rest);
            let removed = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&path).is_ok(),
                Ok(m) if m.is_dir() => fs::remove_dir(&path).is_ok(),
                _ => false,
            };
            if !removed || !inside.pop() {
                break;
            }
        }
    }
}

/// The host's files and namespaces a run sees.
fn host_mounts(
    cfg: &RunConfig,
    source: &Source,
    run_dir: &Path,
    sb: &mut Sandbox,
) -> Result<(), RunError> {
    let bind = |source: &str, target: &str, read_only: bool| Mount::Bind {
        source: source.into(),
        target: target.into(),
        read_only,
    };
    sb.mount(Mount::Proc {
        target: "/proc".into(),
    });
    if cfg.spc {
        sb.mount(bind("/dev", "/dev", false));
        sb.mount(bind("/run", "/run", false));
        sb.mount(bind("/", "/host", false));
    } else {
        sb.mount(Mount::Dev {
            target: "/dev".into(),
        });
        sb.mount(Mount::Tmpfs {
            target: "/run".into(),
            mode: 0o755,
        });
        for d in super::runtime::dirs(source) {
            sb.mount(Mount::Dir {
                target: d.path.into(),
                mode: d.mode,
                owner: Some((d.uid, d.gid)),
            });
        }
    }
    sb.mount(Mount::Tmpfs {
        target: "/tmp".into(),
        mode: 0o1777,
    });
    let mut files = vec!["/etc/hosts"];
    if cfg.host_network {
        files.push("/etc/resolv.conf");
    }
    if cfg.spc {
        files.push("/etc/localtime");
    }
    for file in files {
        if !Path::new(file).exists() {
            continue;
        }
        match source.stat(file) {
            // A mount cannot go through a link (it could lead out of the root).
            Some(s) if s.symlink => {
                tracing::info!("{file} of the root is a symlink: the host's is not bound over it");
            }
            _ if file == "/etc/hosts" && !cfg.spc => {
                let hosts = hosts_file(run_dir, &cfg.hostname)?;
                sb.mount(Mount::Bind {
                    source: hosts,
                    target: file.into(),
                    read_only: true,
                });
            }
            _ => {
                sb.mount(bind(file, file, true));
            }
        }
    }
    Ok(())
}

/// The run's `/etc/hosts`: the host's, and the run's own hostname on 127.0.1.1 (as
/// Debian's installer writes it) unless the host's names it already, so that the name
/// resolves inside as on any host (apache2, sudo and make-ssl-cert look it up).
fn hosts_file(run_dir: &Path, hostname: &str) -> Result<PathBuf, RunError> {
    let mut text = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let named = text.lines().any(|l| {
        l.split('#')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .any(|n| n == hostname)
    });
    if !named && !hostname.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    let path = run_dir.join("hosts");
    fs::write(&path, text).map_err(|e| RunError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    })?;
    Ok(path)
}

/// The FUSE session of a run's view, served by a thread of this process.
struct Session {
    thread: std::thread::JoinHandle<()>,
    abandon: Arc<AtomicBool>,
}

/// How long a run may take to mount its view.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

impl Session {
    /// Serves `fs` on the `/dev/fuse` descriptor the sandbox sends over `channel` once
    /// it has mounted it.
    fn start(fs: CanopyFs, channel: UnixStream) -> Result<Session, RunError> {
        let abandon = Arc::new(AtomicBool::new(false));
        let stop = abandon.clone();
        let thread = std::thread::Builder::new()
            .name("canopy-run-fuse".into())
            .spawn(move || {
                let fd = match receive_fd(&channel, &stop) {
                    Ok(fd) => fd,
                    Err(e) => {
                        if !stop.load(Ordering::Relaxed) {
                            tracing::error!("receiving the run's FUSE device: {e}");
                        }
                        return;
                    }
                };
                let mut config = fuser::Config::default();
                config.n_threads = Some(4);
                match fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config) {
                    Ok(session) => {
                        if let Err(e) = session.run() {
                            tracing::debug!("the run's FUSE session ended: {e}");
                        }
                    }
                    Err(e) => tracing::error!("serving the run's root over FUSE: {e}"),
                }
            })
            .map_err(|e| RunError::Setup(format!("starting the FUSE thread: {e}")))?;
        Ok(Session { thread, abandon })
    }

    /// Ends the session: the run's namespaces are gone, so the kernel lets go of the
    /// mount and the thread ends by itself (nothing waits for it); one that never
    /// received its device gives up.
    fn stop(self) {
        self.abandon.store(true, Ordering::Relaxed);
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

/// Receives one descriptor (SCM_RIGHTS) on `channel`, waiting at most
/// [`MOUNT_TIMEOUT`] or until `stop` is set.
fn receive_fd(channel: &UnixStream, stop: &AtomicBool) -> std::io::Result<OwnedFd> {
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no descriptor came",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: channel.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            break;
        }
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the buffers outlive the call and the control
    // buffer has room for one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(channel.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no descriptor in the message",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Which kind of overlay a run mounts (see [`super::state`]).
pub fn xattrs(spc: bool) -> Xattrs {
    if spc { Xattrs::Trusted } else { Xattrs::User }
}
