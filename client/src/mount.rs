//! `canopy mount`: load the roots, verify them, mount, follow, unmount on a signal.

use crate::cache::{Cache, CacheError};
use crate::fs::CanopyFs;
use crate::remote::{FetchError, Remote};
use crate::view::{RootVersion, Scope, View};
use canopy_protocol::{Commit, CommitId, SignatureError, VerifyingKey};
use fuser::{Config, MountOption, SessionACL};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything `canopy mount` needs, validated.
pub struct MountConfig {
    /// Servers (or caches in front of them), tried in order.
    pub servers: Vec<reqwest::Url>,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// The key commits must be signed with.
    pub trust: VerifyingKey,
    /// Every root, or one at the mountpoint.
    pub scope: Scope,
    /// With one root: show this commit instead of the current one.
    pub commit: Option<CommitId>,
    /// Poll for new versions this often.
    pub follow: Option<Duration>,
    /// The cache directory, shared by every mount of the host.
    pub cache_dir: PathBuf,
    /// The cache's bound in bytes.
    pub cache_size: u64,
    /// Use FUSE passthrough when the kernel allows.
    pub passthrough: bool,
    /// Bound on connecting to a server and on each wait for its data.
    pub timeout: Duration,
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
        "refusing root {root}: {source} (check --trust: `canopy key show` on the server prints its key)"
    )]
    Untrusted {
        /// The root.
        root: String,
        /// What is wrong with the signature.
        source: SignatureError,
    },
    /// The named root does not exist.
    #[error("the server has no root named {0}")]
    NoSuchRoot(String),
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
}

/// Fetches, verifies and decodes one version of a root.
async fn load(
    remote: &Remote,
    trust: &VerifyingKey,
    root: &str,
    commit: CommitId,
) -> Result<
    (
        RootVersion,
        Commit,
        std::collections::HashMap<canopy_protocol::TreeId, canopy_protocol::Tree>,
    ),
    MountError,
> {
    let bytes = remote.object(&commit.0).await?;
    let decoded = Commit::decode(&bytes).map_err(|e| MountError::BadCommit {
        root: root.to_string(),
        commit: commit.to_string(),
        reason: e.to_string(),
    })?;
    decoded
        .verify(trust)
        .map_err(|source| MountError::Untrusted {
            root: root.to_string(),
            source,
        })?;
    let trees = remote.tree_pack(&decoded.body.tree).await?;
    Ok((
        RootVersion {
            commit,
            tree: decoded.body.tree,
        },
        decoded,
        trees,
    ))
}

/// Brings the view up to date with the server: new roots appear, changed roots switch.
/// With `pinned`, the one root shows that commit.
async fn refresh(
    remote: &Remote,
    view: &View,
    trust: &VerifyingKey,
    pinned: Option<CommitId>,
) -> Result<(), MountError> {
    let wanted: Vec<(String, CommitId)> = match view.scope() {
        Scope::One(name) => {
            let commit = match pinned {
                Some(c) => c,
                None => {
                    let info = remote.root(name).await.map_err(|e| {
                        if e.is_not_found() {
                            MountError::NoSuchRoot(name.clone())
                        } else {
                            e.into()
                        }
                    })?;
                    parse_commit(name, &info.commit)?
                }
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
    for (name, commit) in wanted {
        if view.root(&name).is_some_and(|v| v.commit == commit) {
            continue;
        }
        let (version, c, trees) = load(remote, trust, &name, commit).await?;
        tracing::info!(
            "root {name}: now showing commit {commit} ({})",
            c.body.subject
        );
        view.install(&name, version, trees);
    }
    Ok(())
}

fn parse_commit(root: &str, hex: &str) -> Result<CommitId, MountError> {
    hex.parse()
        .map_err(|e: canopy_protocol::IdError| MountError::BadCommit {
            root: root.to_string(),
            commit: hex.to_string(),
            reason: e.to_string(),
        })
}

/// Unmounts a mount that is still in use, lazily: it disappears from the namespace now,
/// and the files still open keep working until closed, when canopy exits.
fn detach(mountpoint: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path and a flag; no other preconditions.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        tracing::warn!(
            "{} is busy: detached it; canopy exits when its last open file closes",
            mountpoint.display()
        );
    } else {
        tracing::error!(
            "unmounting {}: {}",
            mountpoint.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Mounts and serves until unmounted (`umount`) or until `shutdown` resolves (then
/// unmounts cleanly). `on_ready` runs once the mount is live.
pub fn run(
    cfg: MountConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), MountError> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| MountError::Setup(format!("starting the runtime: {e}")))?;
    let remote = Arc::new(
        Remote::new(cfg.servers.clone(), cfg.timeout)
            .map_err(|e| MountError::Setup(format!("HTTP client: {e}")))?,
    );
    let cache = Arc::new(Cache::open(&cfg.cache_dir, cfg.cache_size)?);
    let view = Arc::new(View::new(cfg.scope.clone()));
    rt.block_on(refresh(&remote, &view, &cfg.trust, cfg.commit))?;

    if !std::path::Path::new("/dev/fuse").exists() {
        return Err(MountError::Mount {
            path: cfg.mountpoint,
            reason: "/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3"
                .into(),
        });
    }
    if !cfg.mountpoint.is_dir() {
        return Err(MountError::Mount {
            path: cfg.mountpoint,
            reason: "not a directory".into(),
        });
    }
    let following = cfg.follow.is_some() && cfg.commit.is_none();
    let fs = CanopyFs::new(
        view.clone(),
        cache,
        remote.clone(),
        rt.handle().clone(),
        following,
        cfg.passthrough,
    );
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
    let mut session = fuser::Session::new(fs, &cfg.mountpoint, &config).map_err(|e| MountError::Mount {
        path: cfg.mountpoint.clone(),
        reason: match e.raw_os_error() {
            Some(libc::EBUSY) => "the mountpoint is busy (already mounted? try `umount` first)".into(),
            Some(libc::EPERM) | Some(libc::EACCES) => format!("{e}: mounting FUSE with allow_other needs root (or user_allow_other in /etc/fuse.conf)"),
            _ => e.to_string(),
        },
    })?;
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    rt.spawn(async move {
        shutdown.await;
        tracing::info!("unmounting {}", mountpoint.display());
        match unmounter.unmount() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => detach(&mountpoint),
            Err(e) => tracing::error!("unmounting {}: {e}", mountpoint.display()),
        }
    });
    if let (true, Some(interval)) = (following, cfg.follow) {
        let trust = cfg.trust;
        rt.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = refresh(&remote, &view, &trust, None).await {
                    tracing::warn!("following: {e}; keeping the current versions");
                }
            }
        });
    }
    on_ready();
    let result = session.run();
    rt.shutdown_timeout(Duration::from_secs(1));
    result.map_err(|e| MountError::Mount {
        path: cfg.mountpoint,
        reason: e.to_string(),
    })
}
