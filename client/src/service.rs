//! The service manager's file-descriptor store (systemd's `FDSTORE=1`, or anything
//! speaking the same protocol): a mount's FUSE connection and its table of I/O modes
//! are kept there, so that when the process is killed (or stopped for a restart) the
//! connection stays open, requests wait, and the restarted process, given the
//! descriptors back (`LISTEN_FDS`), serves the mount on as if nothing happened.
//!
//! What else a successor needs (the kernel's INIT, the versions shown, the options) is
//! in a small state file beside the hand-over socket, replaced atomically; and each
//! version shown (its commit and trees) is kept beside it too, so that a successor
//! started while no server answers serves the mount on from what is cached.

use crate::handover::{Options, Shown};
use crate::open_files::KernelInit;
use canopy_protocol::{Commit, CommitId, Tree, TreeId, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// A descriptor store named after this process started, replacing `NOTIFY_SOCKET`
/// (a process that keeps descriptors for this one, restarted since).
static STORE_AT: std::sync::Mutex<Option<std::ffi::OsString>> = std::sync::Mutex::new(None);

/// From now on, messages go to the descriptor store at `address` (a path, or `@NAME`
/// for an abstract socket) instead of `NOTIFY_SOCKET`.
pub fn store_at(address: &str) {
    *STORE_AT.lock().expect("store lock") = Some(address.into());
}

/// Sends `state` (newline-separated assignments) to the service manager, with `fds`;
/// `Ok(false)` when not run by one (`NOTIFY_SOCKET` unset).
pub fn notify(state: &str, fds: &[BorrowedFd]) -> std::io::Result<bool> {
    use nix::sys::socket::{
        ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socket,
    };
    let named = STORE_AT.lock().expect("store lock").clone();
    let Some(path) = named.or_else(|| std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()))
    else {
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

/// A connection kept for a mount, as a successor resumes it.
pub(crate) struct Resumable {
    /// The FUSE connection.
    pub device: OwnedFd,
    /// The table of I/O modes, if one was kept.
    pub modes: Option<OwnedFd>,
    /// The state beside the mount's hand-over socket.
    pub state: State,
}

impl Stored {
    /// The connection kept for the mount at `mountpoint`, if the state beside its
    /// hand-over socket says it was served with `options`. Otherwise the connection is
    /// let go (its keeper, which `keeper` names in the warning, forgets it, and the old
    /// mount is detached) and `None` says to mount anew.
    pub(crate) fn resume(
        &mut self,
        mountpoint: &Path,
        options: &Options,
        keeper: &str,
    ) -> Option<Resumable> {
        let device = self.take(CONNECTION)?;
        let modes = self.take(MODES);
        let path = state_path(&crate::handover::socket_path(mountpoint));
        let why = match State::read(&path) {
            Ok(state) if state.options == *options => {
                return Some(Resumable {
                    device,
                    modes,
                    state,
                });
            }
            Ok(_) => "it was served with other options".to_string(),
            Err(e) => format!("its state file {}: {e}", path.display()),
        };
        tracing::warn!(
            "not resuming the FUSE connection kept by {keeper} ({why}): mounting {} anew",
            mountpoint.display()
        );
        forget();
        drop((device, modes));
        let _ = crate::mount::umount_lazily(mountpoint);
        None
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
    /// Whether the process that wrote it (and, if it resumed the connection, the ones
    /// before) keeps a handle entry in the table of I/O modes for each open file read
    /// through a passthrough registration (see [`crate::mode_table`]), so that a
    /// successor closes each registration once its open files are released. Absent
    /// (`false`) from versions before them: their successor keeps such registrations
    /// until unmount. Written before the process serves a request.
    #[serde(default)]
    pub handles: bool,
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

/// Where this process keeps the versions it shows (set under a descriptor store).
static VERSIONS: OnceLock<PathBuf> = OnceLock::new();

/// The directory of kept versions of the mount whose hand-over socket is `socket`.
pub fn versions_path(socket: &Path) -> PathBuf {
    socket.with_extension("versions")
}

/// Keeps every version loaded from now on in `dir` (0700), and reads kept ones back
/// from it when no server answers.
pub fn keep_versions_in(dir: PathBuf) {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        tracing::warn!("keeping versions for a restart in {}: {e}", dir.display());
    }
    let _ = VERSIONS.set(dir);
}

/// Keeps commit `commit` (decoded as `decoded`, with its `trees`) for a successor: one
/// file of length-prefixed canonical encodings, the commit first, written once.
pub(crate) fn keep_version(commit: CommitId, decoded: &Commit, trees: &HashMap<TreeId, Tree>) {
    let Some(dir) = VERSIONS.get() else {
        return;
    };
    let path = dir.join(commit.to_string());
    if path.exists() {
        return;
    }
    let mut bytes = Vec::new();
    for part in std::iter::once(decoded.encode()).chain(trees.values().map(Tree::encode)) {
        bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&part);
    }
    let tmp = path.with_extension("new");
    if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!("keeping {} for a restart: {e}", path.display());
    }
}

/// Commit `commit` of root `root` and its trees as kept by [`keep_version`], verified
/// as if fetched (the signature by `trust`, the name, every id); `None` if not kept or
/// not valid.
pub(crate) fn kept_version(
    trust: &VerifyingKey,
    root: &str,
    commit: CommitId,
) -> Option<(Commit, HashMap<TreeId, Tree>)> {
    let path = VERSIONS.get()?.join(commit.to_string());
    let bytes = std::fs::read(&path).ok()?;
    let mut parts = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<8>() {
        let len = usize::try_from(u64::from_be_bytes(*len)).ok()?;
        let part = tail.get(..len)?;
        parts.push(part);
        rest = &tail[len..];
    }
    let (first, trees) = parts.split_first()?;
    let decoded = crate::mount::checked_commit(first, trust, root, commit).ok()?;
    let trees: Option<HashMap<TreeId, Tree>> = trees
        .iter()
        .map(|b| Tree::decode(b).ok().map(|t| (t.id(), t)))
        .collect();
    let trees = trees?;
    if decoded.id() != commit || !trees.contains_key(&decoded.body.tree) {
        return None;
    }
    tracing::warn!(
        "no server answers: showing commit {commit} of root {root} from the copy kept in {}",
        path.display()
    );
    Some((decoded, trees))
}

/// Removes the kept versions that are not in `shown`.
pub(crate) fn prune_versions(shown: &[Shown]) {
    let Some(Ok(entries)) = VERSIONS.get().map(std::fs::read_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !shown
            .iter()
            .any(|s| name.to_str() == Some(s.commit.as_str()))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
