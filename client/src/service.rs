//! The service manager's file-descriptor store (systemd's `FDSTORE=1`, or anything
//! speaking the same protocol): a mount's FUSE connection and its table of I/O modes
//! are kept there, so that when the process is killed (or stopped for a restart) the
//! connection stays open, requests wait, and the restarted process, given the
//! descriptors back (`LISTEN_FDS`), serves the mount on as if nothing happened.
//!
//! What else a successor needs (the kernel's INIT, the versions shown, the options) is
//! in a small state file beside the hand-over socket, replaced atomically.

use crate::handover::{Options, Shown};
use crate::open_files::KernelInit;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The name the FUSE connection is stored under.
pub const CONNECTION: &str = "canopy-fuse";
/// The name the table of I/O modes is stored under.
pub const MODES: &str = "canopy-modes";

/// Descriptors the service manager passed at start (`LISTEN_FDS`, `LISTEN_FDNAMES`,
/// for this process by `LISTEN_PID`), by name.
pub struct Stored(HashMap<String, OwnedFd>);

impl Stored {
    /// The descriptors passed to this process, if any.
    pub fn from_env() -> Option<Stored> {
        let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
        if pid != std::process::id() {
            return None;
        }
        let count: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let names: Vec<&str> = names.split(':').collect();
        let mut fds = HashMap::new();
        for i in 0..count.clamp(0, 64) {
            let raw = 3 + i;
            // SAFETY: fcntl on a descriptor number; an unopened one gives EBADF.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
                continue;
            }
            // SAFETY: the service manager opened it for this process; nothing else in
            // it owns the number.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let name = names.get(i as usize).copied().unwrap_or("unknown");
            fds.insert(name.to_string(), fd);
        }
        Some(Stored(fds))
    }

    /// Takes the descriptor stored as `name`.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        self.0.remove(name)
    }

    /// The names passed, for the log.
    pub fn describe(&self) -> String {
        let mut names: Vec<&str> = self.0.keys().map(|k| k.as_str()).collect();
        names.sort();
        format!("{} descriptors ({})", names.len(), names.join(", "))
    }

    /// Closes them and has the service manager drop its copies (a connection whose
    /// mount is gone, or that is not resumed).
    pub fn release(self) {
        forget();
        drop(self);
    }

    /// Whether a FUSE connection is among them.
    pub fn has_connection(&self) -> bool {
        self.0.contains_key(CONNECTION)
    }
}

/// Sends `state` (newline-separated assignments) to the service manager, with `fds`;
/// `Ok(false)` when not run by one (`NOTIFY_SOCKET` unset).
pub fn notify(state: &str, fds: &[BorrowedFd]) -> std::io::Result<bool> {
    use nix::sys::socket::{
        ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socket,
    };
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(Path::new(&path))?,
    };
    let sock = socket(
        nix::sys::socket::AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [std::io::IoSlice::new(state.as_bytes())];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(true)
}

/// Whether a service manager that keeps descriptors runs this process: `NOTIFY_SOCKET`
/// set, and `FDSTORE` (the unit's `FileDescriptorStoreMax=`, set by systemd 254 and
/// later) not below the two descriptors a mount stores. Older managers do not say: the
/// unit is trusted to keep them.
pub fn has_store() -> bool {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return false;
    }
    match std::env::var("FDSTORE").map(|v| v.parse::<u32>()) {
        Ok(Ok(n)) if n < 2 => {
            tracing::warn!(
                "the service manager keeps {n} descriptors for this service: a restart will \
                 mount anew (set FileDescriptorStoreMax=16 in the unit to keep the mount)"
            );
            false
        }
        _ => true,
    }
}

/// Has the service manager drop the connection and the table of modes it keeps (they
/// belong to a mount this process does not resume).
pub fn forget() {
    for name in [CONNECTION, MODES] {
        if let Err(e) = notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]) {
            tracing::warn!("asking the service manager to drop {name}: {e}");
        }
    }
}

/// What a successor reads beside the stored descriptors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The options of the process that wrote it.
    pub options: Options,
    /// The kernel's INIT offer on the connection.
    pub init: KernelInit,
    /// Every version shown, oldest first.
    pub history: Vec<Shown>,
}

/// The state file of the mount whose hand-over socket is `socket`.
pub fn state_path(socket: &Path) -> PathBuf {
    socket.with_extension("json")
}

impl State {
    /// Writes it to `path` atomically (a new file renamed over the old).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.new");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Reads it from `path`.
    pub fn read(path: &Path) -> std::io::Result<State> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}
