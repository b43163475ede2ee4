//! `canopy volume-plugin`: canopy roots as read-only Docker volumes.
//!
//! The plugin answers Docker's volume plugin protocol ([`protocol`]) on a unix socket,
//! keeps its volumes — definitions, and which containers mount which — in a state file
//! ([`state`]), and serves every mounted volume from one FUSE mount under `--mount-dir`
//! ([`driver`]), so all containers on the host share one cache, one inode per file and
//! one copy of its pages.
//!
//! The mount is served by a process of its own, the mount server ([`server`]), which
//! the plugin starts and talks to ([`control`]). It outlives the plugin: the plugin can
//! be restarted, upgraded or killed while containers read from their volumes, and the
//! next plugin takes up the same server and the saved mounts.

mod control;
mod driver;
mod protocol;
mod server;
mod state;
mod store;

use crate::handover;
use crate::host::HostConfig;
use crate::mount::{MountError, umount_lazily};
use control::MountServer;
pub use control::{ServerError, shows};
use driver::Driver;
pub use state::StateError;
use state::StateFile;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Reads `bytes` as the plugin reads what it does not trust — as a `VolumeDriver.Create`
/// body (name and options checked), as its state file, and as a request and an answer
/// between the plugin and its mount server — and drops the result: what the fuzz
/// targets (`fuzz/`) feed arbitrary bytes to.
#[doc(hidden)]
pub fn read_untrusted(bytes: &[u8]) {
    let _ = protocol::create_definition(bytes);
    let _ = state::parse(bytes, Path::new("volumes.json"));
    let _ = control::read_line::<control::Request>(&mut &bytes[..]);
    let _ = control::read_line::<control::Answer>(&mut &bytes[..]);
}

/// Everything `canopy volume-plugin` needs, validated.
pub struct VolumeConfig {
    /// Servers, key and cache.
    pub host: HostConfig,
    /// The socket Docker connects to.
    pub socket: PathBuf,
    /// Where the volume definitions are kept.
    pub state_dir: PathBuf,
    /// Where the plugin's FUSE mount lives.
    pub mount_dir: PathBuf,
    /// How often volumes with `follow=true` ask for new versions.
    pub interval: Duration,
    /// The arguments that make this program a mount server for this configuration
    /// (see [`serve_mounts`]).
    pub server_args: Vec<OsString>,
}

/// Why the plugin could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The state file cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The socket cannot be used.
    #[error("socket {path}: {reason}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Setting up the cache, the servers or the FUSE mount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The mount directory cannot be made.
    #[error("creating the mount directory {path}: {source}")]
    MountDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The mount server cannot be started or reached.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The mount directory serves another plugin's volumes.
    #[error(
        "{mount_dir} serves the volumes of the plugin whose state is in {state_dir}: give each \
         plugin its own --mount-dir"
    )]
    Shared {
        /// The mount directory.
        mount_dir: PathBuf,
        /// The other plugin's state directory.
        state_dir: String,
    },
}

/// The listening socket file, removed when dropped so that a stopped plugin leaves none.
struct Socket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing {}: {e}", self.path.display());
        }
    }
}

/// Binds the socket. A socket file nothing listens on is a leftover of a plugin that
/// died, and is replaced; a live one means another plugin runs, and is left alone.
fn claim_socket(path: &Path) -> Result<Socket, VolumeError> {
    let refuse = |reason: String| VolumeError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| refuse(format!("creating {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(refuse(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        Ok(_) if handover::connect_now(path).is_ok() => {
            return Err(refuse(
                "another plugin is listening on it: stop that one first".into(),
            ));
        }
        Ok(_) => {
            tracing::info!("removing the stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|e| refuse(format!("removing it: {e}")))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| refuse(e.to_string()))?;
    let socket = Socket {
        path: path.to_path_buf(),
        listener: Some(listener),
    };
    // Whoever can talk to the plugin can define volumes: root only, like Docker's socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| refuse(format!("setting its mode: {e}")))?;
    Ok(socket)
}

/// Makes the mount directory, first detaching the dead mount a killed mount server
/// leaves there (whose every access fails with ENOTCONN).
fn prepare_mount_dir(dir: &Path) -> Result<(), VolumeError> {
    if let Err(e) = std::fs::metadata(dir)
        && e.raw_os_error() == Some(libc::ENOTCONN)
    {
        tracing::warn!(
            "{}: detaching the mount of a plugin that died",
            dir.display()
        );
        umount_lazily(dir).map_err(|source| VolumeError::MountDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| VolumeError::MountDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Serves Docker until `shutdown` resolves: then stops answering and removes the
/// socket; the mount server stops too if no volume is mounted, and keeps serving the
/// mounted ones otherwise. `on_ready` runs once the socket answers.
pub fn run(
    cfg: VolumeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), VolumeError> {
    let (state, volumes) = StateFile::open(&cfg.state_dir)?;
    let mut socket = claim_socket(&cfg.socket)?;
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| MountError::Setup(format!("starting the runtime: {e}")))?;
    let listener = {
        let std_listener = socket.listener.take().expect("bound above");
        let _runtime = rt.enter();
        std_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(std_listener))
            .map_err(|e| VolumeError::Socket {
                path: cfg.socket.clone(),
                reason: e.to_string(),
            })?
    };
    let server = MountServer::new(
        &cfg.mount_dir,
        cfg.server_args.clone(),
        server::handover_options(&cfg),
    );
    rt.block_on(server.ensure())?;
    // One mount directory serves one plugin's volumes: another plugin's would be hidden
    // as entries nobody uses.
    let owner = rt.block_on(server.hello())?.options;
    let state_dir = |o: &handover::Options| {
        o.0.iter()
            .find(|(k, _)| k == "state-dir")
            .map(|(_, v)| v.clone())
    };
    if let Some(theirs) =
        state_dir(&owner).filter(|t| Some(t) != state_dir(&server.options).as_ref())
    {
        return Err(VolumeError::Shared {
            mount_dir: cfg.mount_dir,
            state_dir: theirs,
        });
    }
    let restarts = server.restarts();
    let mut driver = Driver::new(volumes, state, server, cfg.mount_dir.clone());
    rt.block_on(async {
        driver.adopt().await;
        driver.upgrade_server().await;
        driver.keep_store().await;
    });
    if driver.mounted() > 0 {
        tracing::info!(
            "took up {} mounted volumes from the saved state",
            driver.mounted()
        );
    }
    let driver: protocol::Shared = Arc::new(tokio::sync::Mutex::new(driver));
    let follower = driver.clone();
    rt.spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(cfg.interval) => {}
                // A mount server started again shows released volumes' entries too:
                // brought in line at once, not up to an interval later.
                () = restarts.wait() => {}
            }
            follower.lock().await.follow().await;
        }
    });

    on_ready();
    let served = driver.clone();
    rt.block_on(async move {
        if let Err(e) = axum::serve(listener, protocol::router(served))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("serving {}: {e}", cfg.socket.display());
        }
    });
    // No new requests from here: the socket goes first, then the server if it serves
    // nothing.
    drop(socket);
    rt.block_on(async { driver.lock().await.stop().await });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Serves the plugin's FUSE mount as its mount server: what the plugin starts, as this
/// program with [`VolumeConfig::server_args`]. Returns once the mount is unmounted (the
/// plugin asked, or `umount`) or `shutdown` resolved (then it unmounts).
pub fn serve_mounts(
    cfg: VolumeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), VolumeError> {
    server::serve(cfg, shutdown)
}
