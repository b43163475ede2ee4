//! Where a mount's hand-over socket lives, and asking its process without touching
//! the mount.

use super::wire::{Message, receive, send};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
