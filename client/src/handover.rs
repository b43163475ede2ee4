//! Live hand-over of a FUSE mount from one canopy process to the next, with no
//! disconnect: programs using the mount never see it go away.
//!
//! Every serving process listens on a unix socket named after its mountpoint
//! ([`socket_path`], mode 0600 in a 0700 directory, callers of the same user only). A
//! successor started on the same mountpoint connects and says which options it runs
//! with; a process with other options refuses, saying how to restart instead. Then:
//!
//! 1. the live process lists the root versions it has shown ([`Offer`]); the successor
//!    loads them (the kernel may still hold inodes of any of them; the inode rule gives
//!    every process the same numbers) and says `go`;
//! 2. the live process stops opening and releasing files, and sends the `/dev/fuse`
//!    descriptor (SCM_RIGHTS), the kernel's INIT offer and its open files; on the
//!    successor's acknowledgement it exits without unmounting, opens and releases still
//!    stopped (the successor adopted the open files as sent: a release answered after
//!    that would close a passthrough registration the successor answers opens with);
//! 3. the successor builds its FUSE session on a socket pair into which it writes the
//!    INIT the kernel sent the first process (the kernel sends INIT once per
//!    connection), puts the real descriptor in the pair's place, and asks the kernel to
//!    resend every request the previous process had read but not answered
//!    (`FUSE_NOTIFY_RESEND`). Requests meanwhile wait in the kernel's queue.
//!
//! The request loop after a hand-over is the one a fresh mount runs, so requests cost
//! the same.

use crate::fs::CanopyFs;
use crate::open_files::{Files, FilesState, KernelInit};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLockWriteGuard};
use std::time::Duration;

/// How long a successor may take to load the versions offered before saying `go`.
const LOAD_WAIT: Duration = Duration::from_secs(300);
/// How long each other step of the exchange may take.
const STEP_WAIT: Duration = Duration::from_secs(20);
/// Bound on one message.
const MAX_MESSAGE: u32 = 256 << 20;

/// The options of a mount that a successor must share to take it over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options(pub Vec<(String, String)>);

impl Options {
    /// Names the options that differ between `self` (live) and `other` (successor).
    pub(crate) fn differences(&self, other: &Options) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            let theirs = other.0.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
            if theirs != Some(v) {
                out.push(format!(
                    "{k} (running: {v}; new: {})",
                    theirs.map_or("(none)", |s| s.as_str())
                ));
            }
        }
        for (k, v) in &other.0 {
            if !self.0.iter().any(|(k2, _)| k2 == k) {
                out.push(format!("{k} (running: (none); new: {v})"));
            }
        }
        out
    }
}

/// A version of a top-level entry the live process has shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The entry (a root's name, or `NAME@COMMIT`).
    pub entry: String,
    /// The commit, 64 hex digits.
    pub commit: String,
}

/// The first answer to a successor: what to load before taking over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// Every version shown so far, oldest first.
    pub history: Vec<Shown>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Hello {
        options: Options,
        pid: u32,
    },
    Refused {
        reason: String,
    },
    Offer(Offer),
    Go,
    Take {
        init: KernelInit,
        files: FilesState,
        history: Vec<Shown>,
    },
    Taken,
    /// Not a hand-over: what does the live process show?
    Query,
    /// The answer to `Query`.
    Serves {
        options: Options,
        history: Vec<Shown>,
    },
}

fn send(stream: &mut UnixStream, message: &Message) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

fn receive(stream: &mut UnixStream) -> std::io::Result<Message> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "hand-over message of {len} bytes"
        )));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Sends descriptor `fd` with one byte.
fn send_fd(stream: &UnixStream, fd: &impl AsFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw = [fd.as_fd().as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"F")];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives the descriptor [`send_fd`] sent.
fn receive_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else
            // owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(std::io::Error::other(
        "no descriptor in the hand-over message",
    ))
}

/// The directory of hand-over sockets: /run/canopy-handover as root (not /run/canopy,
/// where the unit mounts), else `$XDG_RUNTIME_DIR/canopy-handover` or
/// /tmp/canopy-handover-UID.
pub(crate) fn runtime_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/canopy-handover");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("canopy-handover"),
        None => PathBuf::from(format!("/tmp/canopy-handover-{uid}")),
    }
}

/// The absolute path of mountpoint `path` with its parent's symbolic links resolved,
/// without looking at the mountpoint itself: a mount whose process is gone answers
/// nothing (a dead one fails, one whose connection a service manager keeps waits).
pub fn resolved(path: &Path) -> PathBuf {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (path.file_name(), parent) {
        (Some(name), parent) => std::fs::canonicalize(parent.unwrap_or(Path::new(".")))
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        // `/`, or a path ending in `..`.
        (None, _) => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The hand-over socket of the mount at `mountpoint` (named from its path as
/// [`resolved`] gives it).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let resolved = resolved(mountpoint);
    let hash =
        canopy_protocol::inode::hash(&[b"handover", resolved.as_os_str().as_encoded_bytes()]);
    runtime_dir().join(format!("mount-{hash:016x}.sock"))
}

/// Connects to the unix socket at `path` without waiting: a blocking connect to a
/// listener whose process is stopped waits for good once its backlog is full.
pub(crate) fn connect_now(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Whether the live canopy mount at `point` (as `/proc/self/mountinfo` gives it) shows
/// a top-level `entry` (`NAME@COMMIT`), asked of its process at the hand-over socket so
/// that nothing touches the mount: `None` if no process answers within `wait` (none
/// listens, or it is stopped or hung, when any access to the mount could block).
pub fn shows(point: &Path, entry: &str, wait: Duration) -> Option<bool> {
    let mut stream = connect_now(&socket_path(point)).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.set_write_timeout(Some(wait)).ok()?;
    send(&mut stream, &Message::Query).ok()?;
    let Message::Serves { options, history } = receive(&mut stream).ok()? else {
        return None;
    };
    // Only a mount of every root (`root` is `(all)`) shows each version it showed as
    // `NAME@COMMIT`; a mount of one root shows that root at the mountpoint.
    let all = options.0.iter().any(|(k, v)| k == "root" && v == "(all)");
    Some(
        all && history
            .iter()
            .any(|s| s.entry == entry || format!("{}@{}", s.entry, s.commit) == entry),
    )
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Removes the socket when the listening process ends normally.
pub(crate) struct Listening {
    path: PathBuf,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens for successors at `path` in a thread of its own; a successful hand-over
/// ends this process (without unmounting: the successor serves the mount now).
pub(crate) fn listen(
    path: &Path,
    options: Options,
    files: Arc<Files>,
    history: impl Fn() -> Vec<Shown> + Send + 'static,
) -> std::io::Result<Listening> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A socket left by a process that is gone answers nobody: replace it.
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                match serve_one(&mut stream, &options, &files, &history) {
                    Ok(None) => {}
                    Ok(Some(_frozen)) => {
                        tracing::info!("handed the mount over to a new canopy process; exiting");
                        // Still frozen until the end: an open or a release waiting at
                        // the gate must not run here any more (a release would close a
                        // passthrough registration the successor took over, an open
                        // would bind a file the successor does not know of); the
                        // kernel resends them to the successor. No destructor runs:
                        // nothing unmounts, nothing closes the connection the successor
                        // now serves.
                        std::process::exit(0);
                    }
                    Err(e) => tracing::warn!("hand-over not done: {e}; serving on"),
                }
            }
        })?;
    Ok(Listening {
        path: path.to_path_buf(),
    })
}

/// Answers one connection: a query, or a hand-over (then returns once the successor
/// has the connection, with opens and releases still frozen, for good).
fn serve_one<'a>(
    stream: &mut UnixStream,
    options: &Options,
    files: &'a Files,
    history: &impl Fn() -> Vec<Shown>,
) -> Result<Option<RwLockWriteGuard<'a, ()>>, String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let uid = peer_uid(stream).map_err(|e| format!("peer credentials: {e}"))?;
    if uid != me && uid != 0 {
        return Err(format!("refused a hand-over to uid {uid}"));
    }
    let io = |e: std::io::Error| e.to_string();
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_WAIT)).map_err(io)?;
    let (theirs, pid) = match receive(stream).map_err(io)? {
        Message::Hello { options, pid } => (options, pid),
        Message::Query => {
            let serves = Message::Serves {
                options: options.clone(),
                history: history(),
            };
            send(stream, &serves).map_err(io)?;
            return Ok(None);
        }
        _ => return Err("a successor spoke out of turn".into()),
    };
    let differences = options.differences(&theirs);
    if !differences.is_empty() {
        let reason = differences.join(", ");
        let _ = send(
            stream,
            &Message::Refused {
                reason: reason.clone(),
            },
        );
        return Err(format!("process {pid} asked with other options: {reason}"));
    }
    let (Some(init), Some(device)) = (files.kernel(), files.device()) else {
        let reason = "the running process has no connection to hand over yet".to_string();
        let _ = send(
            stream,
            &Message::Refused {
                reason: reason.clone(),
            },
        );
        return Err(reason);
    };
    send(stream, &Message::Offer(Offer { history: history() })).map_err(io)?;
    stream.set_read_timeout(Some(LOAD_WAIT)).map_err(io)?;
    let Message::Go = receive(stream).map_err(io)? else {
        return Err("a successor spoke out of turn".into());
    };
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    tracing::info!("handing the mount over to process {pid}");
    // Opens and releases wait from here until this process exits (the kernel resends
    // them to the successor), or until the hand-over fails.
    let frozen = files.freeze();
    // Registrations no open file reads through are this process's to close: the
    // successor is told only of those its open files need.
    files.close_kept();
    send_fd(stream, &*device).map_err(io)?;
    send(
        stream,
        &Message::Take {
            init,
            files: files.state(),
            history: history(),
        },
    )
    .map_err(io)?;
    match receive(stream).map_err(io)? {
        Message::Taken => Ok(Some(frozen)),
        _ => Err("a successor spoke out of turn".into()),
    }
}

/// Why a hand-over could not be done.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The live process runs with other options.
    #[error(
        "{mountpoint} is already a canopy mount, served with other options: {reason}. To \
         restart it with new options, stop it first (`systemctl restart canopy-mount`, or \
         `umount {mountpoint}` and start canopy mount again); to take it over live, give the \
         same options"
    )]
    Refused {
        /// The mountpoint.
        mountpoint: String,
        /// Which options differ.
        reason: String,
    },
    /// The exchange failed.
    #[error("taking over the canopy mount at {mountpoint}: {reason}")]
    Failed {
        /// The mountpoint.
        mountpoint: String,
        /// What went wrong.
        reason: String,
    },
}

/// A hand-over under way: the live process waits for [`Pending::take`].
pub struct Pending {
    stream: UnixStream,
    mountpoint: String,
    /// What to load before taking over.
    pub offer: Offer,
}

/// What a successor receives.
pub struct Taken {
    /// The connection.
    pub device: OwnedFd,
    /// The kernel's INIT offer.
    pub init: KernelInit,
    /// The open files.
    pub files: FilesState,
    /// Every version shown, oldest first (may have grown since the offer).
    pub history: Vec<Shown>,
}

/// Asks the process serving `mountpoint` to hand it over. `Ok(None)`: no process
/// answers at its socket.
pub fn ask(mountpoint: &Path, options: &Options) -> Result<Option<Pending>, HandoverError> {
    let path = socket_path(mountpoint);
    let failed = |reason: String| HandoverError::Failed {
        mountpoint: mountpoint.display().to_string(),
        reason,
    };
    let Ok(mut stream) = UnixStream::connect(&path) else {
        return Ok(None);
    };
    let io = |e: std::io::Error| failed(format!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_WAIT)).map_err(io)?;
    send(
        &mut stream,
        &Message::Hello {
            options: options.clone(),
            pid: std::process::id(),
        },
    )
    .map_err(io)?;
    match receive(&mut stream).map_err(io)? {
        Message::Offer(offer) => Ok(Some(Pending {
            stream,
            mountpoint: mountpoint.display().to_string(),
            offer,
        })),
        Message::Refused { reason } => Err(HandoverError::Refused {
            mountpoint: mountpoint.display().to_string(),
            reason,
        }),
        _ => Err(failed("the live process spoke out of turn".into())),
    }
}

impl Pending {
    /// Takes the connection over: the live process sends it and its state, and exits.
    /// Returns once it is gone.
    pub fn take(mut self) -> Result<Taken, HandoverError> {
        let mountpoint = self.mountpoint.clone();
        let failed = |reason: String| HandoverError::Failed {
            mountpoint: mountpoint.clone(),
            reason,
        };
        let io = |e: std::io::Error| failed(e.to_string());
        send(&mut self.stream, &Message::Go).map_err(io)?;
        let device = receive_fd(&self.stream).map_err(io)?;
        let Message::Take {
            init,
            files,
            history,
        } = receive(&mut self.stream).map_err(io)?
        else {
            return Err(failed("the live process spoke out of turn".into()));
        };
        send(&mut self.stream, &Message::Taken).map_err(io)?;
        // The live process exits now: its end closes when it is gone, and with it the
        // cache lock it holds.
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        Ok(Taken {
            device,
            init,
            files,
            history,
        })
    }
}

/// The INIT request the kernel sent, as bytes of `/dev/fuse`.
fn init_request(init: &KernelInit) -> Vec<u8> {
    const FUSE_INIT: u32 = 26;
    const FUSE_INIT_EXT: u64 = 1 << 30;
    let flags = init.flags | FUSE_INIT_EXT;
    let mut b = Vec::with_capacity(104);
    // fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, padding.
    b.extend_from_slice(&104u32.to_ne_bytes());
    b.extend_from_slice(&FUSE_INIT.to_ne_bytes());
    b.extend_from_slice(&1u64.to_ne_bytes());
    b.extend_from_slice(&0u64.to_ne_bytes());
    for _ in 0..4 {
        b.extend_from_slice(&0u32.to_ne_bytes());
    }
    // fuse_init_in: major, minor, max_readahead, flags, flags2, unused[11].
    b.extend_from_slice(&init.major.to_ne_bytes());
    b.extend_from_slice(&init.minor.to_ne_bytes());
    b.extend_from_slice(&init.max_readahead.to_ne_bytes());
    b.extend_from_slice(&(flags as u32).to_ne_bytes());
    b.extend_from_slice(&((flags >> 32) as u32).to_ne_bytes());
    b.resize(104, 0);
    b
}

/// A FUSE session serving `fs` on the live connection `device`, whose kernel sent
/// `init` when it was set up.
pub(crate) fn resume(
    fs: CanopyFs,
    device: OwnedFd,
    init: &KernelInit,
    config: fuser::Config,
) -> std::io::Result<fuser::Session<CanopyFs>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::unistd::write(&ours, &init_request(init))?;
    let session = fuser::Session::from_fd(fs, theirs, fuser::SessionACL::All, config.clone())?;
    // fuser's answer is for the kernel of the first process: it heard one already.
    let mut answer = [0u8; 4096];
    let n = nix::unistd::read(&ours, &mut answer)?;
    if n < 16 || i32::from_ne_bytes(answer[4..8].try_into().expect("4 bytes")) != 0 {
        return Err(std::io::Error::other(
            "the FUSE session refused the INIT replayed",
        ));
    }
    // The session reads and writes the connection from now on, and clones it for its
    // other threads when it runs.
    // SAFETY: dup2 onto a descriptor the session owns; it stays open (now the device).
    if unsafe { libc::dup2(device.as_raw_fd(), session.as_fd().as_raw_fd()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(session)
}

/// Asks the kernel to queue again every request read from the connection and not
/// answered (by a process that is gone).
pub(crate) fn resend(device: &impl AsFd) -> std::io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut out = Vec::with_capacity(16);
    // fuse_out_header: len, error (the notification code), unique 0.
    out.extend_from_slice(&16u32.to_ne_bytes());
    out.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    out.extend_from_slice(&0u64.to_ne_bytes());
    nix::unistd::write(device, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_differ_are_named() {
        let a = Options(vec![
            ("passthrough".into(), "true".into()),
            ("root".into(), "web".into()),
        ]);
        let b = Options(vec![
            ("passthrough".into(), "false".into()),
            ("root".into(), "web".into()),
        ]);
        assert!(a.differences(&a.clone()).is_empty());
        assert_eq!(
            a.differences(&b),
            vec!["passthrough (running: true; new: false)".to_string()]
        );
    }

    #[test]
    fn the_init_replayed_carries_the_offer() {
        let init = KernelInit {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: (1 << 37) | 1,
        };
        let b = init_request(&init);
        assert_eq!(b.len(), 104);
        assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 26);
        assert_eq!(u32::from_ne_bytes(b[40..44].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(b[44..48].try_into().unwrap()), 45);
        assert_eq!(
            u32::from_ne_bytes(b[52..56].try_into().unwrap()),
            1 | 1 << 30
        );
        assert_eq!(u32::from_ne_bytes(b[56..60].try_into().unwrap()), 1 << 5);
    }
}
