//! `canopy mount`: load the roots, verify them, mount, follow, unmount on a signal.

use crate::fs::CanopyFs;
use crate::handover::{HandoverError, Options};
use crate::host::HostConfig;
use crate::remote::{FetchError, Remote};
use crate::view::{RootVersion, Scope, View};
use canopy_cache::CacheError;
use canopy_protocol::{Commit, CommitId, SignatureError, VerifyingKey};
use fuser::{Config, MountOption, SessionACL};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `canopy mount` needs, validated.
pub struct MountConfig {
    /// Servers, key and cache.
    pub host: HostConfig,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Every root, or one at the mountpoint.
    pub scope: Scope,
    /// With one root: show this commit instead of the current one (a full id, or a
    /// unique prefix of a commit in the root's history as the server lists it).
    pub commit: Option<String>,
    /// Poll for new versions this often.
    pub follow: Option<Duration>,
    /// A live canopy mount serves the mountpoint: take it over.
    pub take_over: bool,
    /// Descriptors the service manager kept for this mount (its FUSE connection, when a
    /// previous process was killed or stopped for a restart).
    pub stored: Option<crate::service::Stored>,
}

impl MountConfig {
    /// What a process taking this mount over must share with it.
    pub(crate) fn handover_options(&self) -> Options {
        let root = match &self.scope {
            Scope::All => "(all)".to_string(),
            Scope::One(name) => name.clone(),
        };
        let mut options = self.host.handover_options();
        options.0.extend([
            ("root".into(), root),
            ("commit".into(), self.commit.clone().unwrap_or_default()),
            (
                "follow".into(),
                self.follow
                    .map_or_else(|| "off".to_string(), |d| format!("{d:?}")),
            ),
        ]);
        options
    }
}

/// Why mounting failed or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A server could not be reached or answered wrongly.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A commit does not decode.
    #[error("commit {commit} of root {root} is not a valid commit: {reason}")]
    BadCommit {
        /// The root.
        root: String,
        /// The commit.
        commit: String,
        /// Why.
        reason: String,
    },
    /// A commit is not signed by the trusted key.
    #[error(
        "refusing root {root}: {error} (check --trust: `canopy key show` on the server prints its key)"
    )]
    Untrusted {
        /// The root.
        root: String,
        /// What is wrong with the signature (not a `source`: the message says it).
        error: SignatureError,
    },
    /// The named root does not exist.
    #[error("the server has no root named {name} ({known})")]
    NoSuchRoot {
        /// The root asked for.
        name: String,
        /// The server and the roots it has, as the message shows them.
        known: String,
    },
    /// The ref of one root points at a commit signed as a version of another: a swapped
    /// ref on a compromised server or proxy.
    #[error(
        "refusing root {root}: its ref points at commit {commit}, which is signed as a version of root {names}"
    )]
    WrongRoot {
        /// The root asked for.
        root: String,
        /// The commit its ref gave.
        commit: String,
        /// The root the commit's signature names.
        names: String,
    },
    /// A root followed at one commit now points at an older or unrelated one: a
    /// replayed or rewritten ref (a rollback is a new commit with a higher generation).
    #[error("{0}")]
    NotForward(Box<NotForward>),
    /// No commit of the root's history starts with the prefix given.
    #[error("no commit {prefix} in the history of root {root} on the server")]
    NoSuchCommit {
        /// The root.
        root: String,
        /// The id or prefix given.
        prefix: String,
    },
    /// Several commits start with the prefix given.
    #[error(
        "commit prefix {prefix} is ambiguous in the history of root {root} ({count} commits); give more digits"
    )]
    AmbiguousCommit {
        /// The root.
        root: String,
        /// The prefix given.
        prefix: String,
        /// How many commits start with it.
        count: usize,
    },
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Mounting failed.
    #[error("cannot mount at {path}: {reason}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Setting up the HTTP client or the runtime failed.
    #[error("{0}")]
    Setup(String),
    /// Taking a live mount over failed or was refused.
    #[error(transparent)]
    Handover(#[from] HandoverError),
}

/// A move of a followed root that history does not allow (see [`MountError::NotForward`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing root {root}: it moved from commit {from} (generation {from_generation}) to {to} (generation {to_generation}), which {why}; staying at {from}"
)]
pub struct NotForward {
    /// The root.
    pub root: String,
    /// The commit shown.
    pub from: CommitId,
    /// Its generation.
    pub from_generation: u64,
    /// The commit the ref now gives.
    pub to: CommitId,
    /// Its generation.
    pub to_generation: u64,
    /// "is not newer" or "does not descend from it".
    pub why: &'static str,
}

impl MountError {
    /// Whether this is a root refused for what the server holds (signature, name,
    /// history), rather than a failure to reach it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            MountError::Untrusted { .. }
                | MountError::WrongRoot { .. }
                | MountError::NotForward(_)
                | MountError::BadCommit { .. }
        )
    }
}

/// Fetches commit `commit` of root `root`, checks that `trust` signed it for that
/// root, and decodes it. (`canopy replicate` checks what it copies the same way.)
pub async fn verified_commit(
    remote: &Remote,
    trust: &VerifyingKey,
    root: &str,
    commit: CommitId,
) -> Result<Commit, MountError> {
    checked_commit(&remote.object(&commit.0).await?, trust, root, commit)
}

/// Decodes commit `commit` of root `root` from `bytes` (checked against its id) and
/// checks that `trust` signed it for that root.
pub(crate) fn checked_commit(
    bytes: &[u8],
    trust: &VerifyingKey,
    root: &str,
    commit: CommitId,
) -> Result<Commit, MountError> {
    let decoded = Commit::decode(bytes).map_err(|e| MountError::BadCommit {
        root: root.to_string(),
        commit: commit.to_string(),
        reason: e.to_string(),
    })?;
    decoded
        .verify(trust)
        .map_err(|error| MountError::Untrusted {
            root: root.to_string(),
            error,
        })?;
    if decoded.body.root.as_str() != root {
        return Err(MountError::WrongRoot {
            root: root.to_string(),
            commit: commit.to_string(),
            names: decoded.body.root.to_string(),
        });
    }
    Ok(decoded)
}

/// Fetches, verifies and decodes one version of a root (its trees from `known` when
/// that view holds them all: a new commit of the same tree costs only the commit);
/// when no server answers, the copy kept for a successor under a service manager
/// ([`crate::service::kept_version`]).
pub(crate) async fn load(
    remote: &Remote,
    trust: &VerifyingKey,
    root: &str,
    commit: CommitId,
    known: Option<&View>,
) -> Result<
    (
        RootVersion,
        Commit,
        std::collections::HashMap<canopy_protocol::TreeId, canopy_protocol::Tree>,
    ),
    MountError,
> {
    let fetched = async {
        let decoded = verified_commit(remote, trust, root, commit).await?;
        let trees = match known.and_then(|v| v.trees_under(decoded.body.tree)) {
            Some(trees) => trees,
            None => remote.tree_pack(&decoded.body.tree).await?,
        };
        Ok::<_, MountError>((decoded, trees))
    };
    let (decoded, trees) = match fetched.await {
        Err(MountError::Fetch(e)) => {
            crate::service::kept_version(trust, root, commit).ok_or(MountError::Fetch(e))?
        }
        other => other?,
    };
    crate::service::keep_version(commit, &decoded, &trees);
    if let Some(view) = known {
        let value = decoded
            .body
            .extensions
            .get(canopy_protocol::profile::EXTENSION);
        view.remember_profile(commit, value.map(Vec::as_slice));
    }
    Ok((
        RootVersion {
            commit,
            tree: decoded.body.tree,
        },
        decoded,
        trees,
    ))
}

/// The commit root `name` is at on the server, or [`MountError::NoSuchRoot`].
pub async fn current(remote: &Remote, name: &str) -> Result<CommitId, MountError> {
    match remote.root(name).await {
        Ok(info) => parse_commit(name, &info.commit),
        Err(e) if e.is_not_found() => Err(no_such_root(remote, name).await),
        Err(e) => Err(e.into()),
    }
}

/// Roots named in a [`MountError::NoSuchRoot`] message at most.
const ROOTS_SHOWN: usize = 12;

/// [`MountError::NoSuchRoot`] for `name`, naming the server and the roots it has.
async fn no_such_root(remote: &Remote, name: &str) -> MountError {
    let server = remote
        .preferred()
        .map_or_else(|| "the server".to_string(), |u| u.to_string());
    let known = match remote.roots().await {
        Ok(roots) if roots.is_empty() => format!("{server} has none yet"),
        Ok(roots) => {
            let mut names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            let more = names.len().saturating_sub(ROOTS_SHOWN);
            names.truncate(ROOTS_SHOWN);
            let tail = if more > 0 {
                format!(" and {more} more: `canopy roots list` on the server")
            } else {
                String::new()
            };
            format!("{server} has {}{tail}", names.join(", "))
        }
        Err(_) => format!("asked {server}"),
    };
    MountError::NoSuchRoot {
        name: name.to_string(),
        known,
    }
}

/// Shows `commit` of root `root` as the view's top-level entry `entry` (the root's own
/// name, or another one such as the volume plugin's `NAME@COMMIT`), unless the entry
/// shows that commit already.
pub(crate) async fn show(
    remote: &Remote,
    view: &View,
    trust: &VerifyingKey,
    entry: &str,
    root: &str,
    commit: CommitId,
) -> Result<(), MountError> {
    if view.root(entry).is_some_and(|v| v.commit == commit) {
        return Ok(());
    }
    let (version, c, trees) = load(remote, trust, root, commit, Some(view)).await?;
    if let Some(shown) = view.root(entry) {
        forward(remote, root, shown.commit, commit, &c).await?;
    }
    tracing::info!(
        "{entry}: now showing commit {commit} of root {root} ({})",
        c.body.subject
    );
    view.install(entry, version, trees);
    Ok(())
}

/// Commits walked back from a new commit to find the one shown; a longer jump is
/// judged by generation alone.
const MAX_WALK: u64 = 64;

/// A commit fetched (and so checked against its id) and decoded.
async fn fetch_commit(remote: &Remote, root: &str, id: CommitId) -> Result<Commit, MountError> {
    let bytes = remote.object(&id.0).await?;
    Commit::decode(&bytes).map_err(|e| MountError::BadCommit {
        root: root.to_string(),
        commit: id.to_string(),
        reason: e.to_string(),
    })
}

/// Refuses to move a root from commit `from` to `to` (signed, decoded as `new`) unless
/// `to` has a higher generation and descends from `from`: history only grows, so an
/// older or unrelated commit under the root's name is a replay or a rewrite.
pub async fn forward(
    remote: &Remote,
    root: &str,
    from: CommitId,
    to: CommitId,
    new: &Commit,
) -> Result<(), MountError> {
    let old = fetch_commit(remote, root, from).await?;
    let refuse = |why| {
        MountError::NotForward(Box::new(NotForward {
            root: root.to_string(),
            from,
            from_generation: old.body.generation,
            to,
            to_generation: new.body.generation,
            why,
        }))
    };
    if new.body.generation <= old.body.generation {
        return Err(refuse("is not newer"));
    }
    let gap = new.body.generation - old.body.generation;
    if gap > MAX_WALK {
        return Ok(());
    }
    let mut next = new.body.parent;
    for _ in 0..gap {
        match next {
            Some(id) if id == from => return Ok(()),
            Some(id) => next = fetch_commit(remote, root, id).await?.body.parent,
            None => break,
        }
    }
    if next == Some(from) {
        return Ok(());
    }
    Err(refuse("does not descend from it"))
}

/// Brings the view up to date with the server: new roots appear, changed roots switch,
/// and (in a view of every root) roots the server no longer has go. With `pinned`, the
/// one root shows that commit.
pub(crate) async fn refresh(
    remote: &Remote,
    view: &View,
    trust: &VerifyingKey,
    pinned: Option<CommitId>,
) -> Result<(), MountError> {
    let wanted: Vec<(String, CommitId)> = match view.scope() {
        Scope::One(name) => {
            let commit = match pinned {
                Some(c) => c,
                None => current(remote, name).await?,
            };
            vec![(name.clone(), commit)]
        }
        Scope::All => {
            let mut out = Vec::new();
            for info in remote.roots().await? {
                let c = parse_commit(&info.name, &info.commit)?;
                out.push((info.name, c));
            }
            out
        }
    };
    // One root that cannot be trusted does not hide the others; if every root is
    // refused, that is the mount's error.
    let all = matches!(view.scope(), Scope::All);
    if all {
        // A root the server no longer has leaves a mount of every root (what is open
        // in it keeps working); the NAME@COMMIT entries of versions shown stay. Only
        // once the server says it has no such root: one it leaves out of its list for
        // another reason (a ref it cannot read) stays as it is.
        for name in view.shown() {
            if name.contains('@') || wanted.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let gone = matches!(remote.root(&name).await, Err(e) if e.is_not_found());
            if gone && view.remove(&name) {
                tracing::info!("{name}: no longer on the server; no longer shown");
            }
        }
    }
    let (count, mut refused) = (wanted.len(), Vec::new());
    for (name, commit) in wanted {
        match show(remote, view, trust, &name, &name, commit).await {
            Err(e) if all && e.is_refusal() => refused.push(e),
            other => other?,
        }
    }
    if !refused.is_empty() && refused.len() == count && view.is_empty() {
        return Err(refused.remove(0));
    }
    for e in refused {
        tracing::warn!("{e}; the other roots are shown");
    }
    Ok(())
}

/// The commit of `root`'s history that `prefix` names: a full id as it is (it is
/// verified when fetched), a prefix looked up in the server's log.
pub(crate) async fn find_commit(
    remote: &Remote,
    root: &str,
    prefix: &str,
) -> Result<CommitId, MountError> {
    let prefix = prefix.to_ascii_lowercase();
    if let Ok(id) = prefix.parse() {
        return Ok(id);
    }
    let log = match remote.log(root).await {
        Ok(log) => log,
        Err(e) if e.is_not_found() => return Err(no_such_root(remote, root).await),
        Err(e) => return Err(e.into()),
    };
    let found: Vec<&str> = log
        .iter()
        .map(|e| e.commit.as_str())
        .filter(|c| c.starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [one] => parse_commit(root, one),
        [] => Err(MountError::NoSuchCommit {
            root: root.to_string(),
            prefix,
        }),
        many => Err(MountError::AmbiguousCommit {
            root: root.to_string(),
            prefix,
            count: many.len(),
        }),
    }
}

pub(crate) fn parse_commit(root: &str, hex: &str) -> Result<CommitId, MountError> {
    hex.parse()
        .map_err(|e: canopy_protocol::IdError| MountError::BadCommit {
            root: root.to_string(),
            commit: hex.to_string(),
            reason: e.to_string(),
        })
}

/// `umount -l`: takes the mount at `mountpoint` out of the namespace now; the kernel
/// lets go of it once nothing uses it any more.
pub fn umount_lazily(mountpoint: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path and a flag; no other preconditions.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Unmounts a mount that is still in use, lazily: it disappears from the namespace now,
/// and the files still open keep working until closed, when canopy exits.
pub(crate) fn detach(mountpoint: &Path) {
    match umount_lazily(mountpoint) {
        Ok(()) => tracing::warn!(
            "{} is busy: detached it; canopy exits when its last open file closes",
            mountpoint.display()
        ),
        Err(e) => tracing::error!("unmounting {}: {e}", mountpoint.display()),
    }
}

/// Unmounts a session's mount; one still in use is detached (see [`detach`]).
pub(crate) fn unmount(unmounter: &mut fuser::SessionUnmounter, mountpoint: &Path) {
    tracing::info!("unmounting {}", mountpoint.display());
    match unmounter.unmount() {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => detach(mountpoint),
        Err(e) => tracing::error!("unmounting {}: {e}", mountpoint.display()),
    }
}

/// Mounts `fs` at `mountpoint` as every canopy mount is: read-only, visible to every
/// user (`allow_other` with the kernel checking permissions), programs and devices
/// usable. Serve it with [`fuser::Session::run`].
pub(crate) fn fuse_session(
    fs: CanopyFs,
    mountpoint: &Path,
) -> Result<fuser::Session<CanopyFs>, MountError> {
    let failed = |reason: String| MountError::Mount {
        path: mountpoint.to_path_buf(),
        reason,
    };
    if !Path::new("/dev/fuse").exists() {
        return Err(failed(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3".into(),
        ));
    }
    if !mountpoint.is_dir() {
        return Err(failed("not a directory".into()));
    }
    let files = fs.files();
    let session = fuser::Session::new(fs, mountpoint, &session_config()).map_err(|e| failed(match e.raw_os_error() {
        Some(libc::EBUSY) => "the mountpoint is busy (already mounted? try `umount` first)".into(),
        Some(libc::EPERM) | Some(libc::EACCES) => format!("{e}: mounting FUSE with allow_other needs root (or user_allow_other in /etc/fuse.conf)"),
        _ => e.to_string(),
    }))?;
    let device = session
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| failed(format!("duplicating the FUSE descriptor: {e}")))?;
    files.attach(device);
    Ok(session)
}

/// How every canopy FUSE session runs (one descriptor shared by its threads: a
/// successor taking the connection over needs the requests of only that one resent).
pub(crate) fn session_config() -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("canopy".into()),
        MountOption::Subtype("canopy".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::Exec,
        MountOption::Suid,
        MountOption::Dev,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(8);
    config.clone_fd = false;
    config
}

pub use crate::handover::resolved;
pub use crate::session::run;
