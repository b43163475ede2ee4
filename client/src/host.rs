//! A host's client settings: servers, trust, cache and how objects are fetched.

use crate::fs::CanopyFs;
use crate::handover::Options;
use crate::mount::MountError;
use crate::objects::Fetched;
use crate::prefetch::Prefetch;
use crate::profile::Replay;
use crate::remote::Remote;
use crate::view::View;
use canopy_cache::{Cache, CacheError};
use canopy_protocol::VerifyingKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What every canopy client on a host needs: where to fetch from, whom to trust, where
/// to cache.
pub struct HostConfig {
    /// Servers (or caches in front of them), tried in order.
    pub servers: Vec<reqwest::Url>,
    /// The key commits must be signed with.
    pub trust: VerifyingKey,
    /// The cache directory, shared by every root the client shows.
    pub cache_dir: PathBuf,
    /// The cache's bound in bytes.
    pub cache_size: u64,
    /// Use FUSE passthrough when the kernel allows.
    pub passthrough: bool,
    /// Bound on connecting to a server, on its response headers and on each wait for
    /// its data.
    pub timeout: Duration,
    /// Bytes per second a transfer must average once `timeout` has passed.
    pub min_rate: u64,
    /// Fetch a directory's small files in the background when its files are read in
    /// order (see [`crate::prefetch`]).
    pub prefetch: bool,
    /// Ask servers for objects in zstd: less to transfer over a slow link, but the
    /// server compresses each object on its first request and the host decompresses
    /// it, which costs more than it saves on a fast one.
    pub compress: bool,
    /// Replay the access profile of each version shown into a cold cache (see
    /// [`crate::profile`]).
    pub profile: bool,
}

impl HostConfig {
    /// The replayer of profiles for `view`, unless `profile` is off.
    pub(crate) fn replay(&self, view: &Arc<View>, remote: &Arc<Remote>) -> Option<Arc<Replay>> {
        if !self.profile {
            return None;
        }
        Replay::new(view.clone(), remote.clone(), self.trust, self.cache_size)
    }

    /// The file system of a host that fetches from servers: `view`, with contents
    /// fetched from `remote` on `rt` into `cache` and, unless `prefetch` is off,
    /// directories prefetched; profiles replayed into `cache` by `replay` (from
    /// [`HostConfig::replay`]), if given.
    pub(crate) fn filesystem(
        &self,
        view: &Arc<View>,
        remote: &Arc<Remote>,
        rt: &tokio::runtime::Handle,
        cache: Arc<Cache>,
        replay: Option<&Arc<Replay>>,
    ) -> CanopyFs {
        let objects =
            Fetched::new(cache.clone(), remote.clone(), rt.clone()).with_replay(replay.cloned());
        // Prefetch::new starts a runtime of its own: not when prefetch is off.
        let prefetch = self
            .prefetch
            .then(|| Prefetch::new(cache, remote.clone(), view.clone(), self.cache_size))
            .flatten();
        let Some(prefetch) = prefetch else {
            return CanopyFs::new(view.clone(), Arc::new(objects), self.passthrough);
        };
        if let Some(r) = replay {
            r.holding(prefetch.clone());
        }
        let objects = objects.with_prefetch(prefetch.clone());
        CanopyFs::new(view.clone(), Arc::new(objects), self.passthrough).with_prefetch(prefetch)
    }
}

impl HostConfig {
    /// Starts the runtime and the HTTP client.
    pub(crate) fn connect(&self) -> Result<(tokio::runtime::Runtime, Arc<Remote>), MountError> {
        let rt = tokio::runtime::Runtime::new()
            .map_err(|e| MountError::Setup(format!("starting the runtime: {e}")))?;
        let remote = Arc::new(
            self.remote()
                .map_err(|e| MountError::Setup(format!("HTTP client: {e}")))?,
        );
        Ok((rt, remote))
    }

    /// The client for this host's servers, with its timeouts and compression.
    pub(crate) fn remote(&self) -> Result<Remote, reqwest::Error> {
        let remote = Remote::new(self.servers.clone(), self.timeout, self.min_rate)?;
        if self.compress {
            Ok(remote)
        } else {
            remote.uncompressed()
        }
    }

    /// Opens the cache that a process handing its mount over still holds: it lets go
    /// as it exits.
    pub(crate) fn open_cache_released(&self) -> Result<Arc<Cache>, MountError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Cache::open(&self.cache_dir, self.cache_size) {
                Err(CacheError::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return Ok(Arc::new(other?)),
            }
        }
    }
}

impl HostConfig {
    /// What a process taking over a mount served with this configuration must share.
    pub(crate) fn handover_options(&self) -> Options {
        let servers: Vec<String> = self.servers.iter().map(|u| u.to_string()).collect();
        let trust: String = self
            .trust
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Options(vec![
            ("servers".into(), servers.join(" ")),
            ("trust".into(), trust),
            ("cache-dir".into(), self.cache_dir.display().to_string()),
            ("cache-size".into(), self.cache_size.to_string()),
            ("passthrough".into(), self.passthrough.to_string()),
            ("timeout".into(), format!("{:?}", self.timeout)),
            ("min-rate".into(), self.min_rate.to_string()),
        ])
    }
}
