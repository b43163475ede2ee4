//! Fetching from canopy servers (or HTTP caches in front of them), with failover and
//! timeouts, verifying every object against its id before anyone sees it.
//!
//! Every wait is bounded. A server gets `timeout` to connect and to send the response
//! headers, and from then on must keep an average rate of at least `min_rate`: after
//! `t` seconds it must have sent `(t - timeout) × min_rate` bytes. With the size of what
//! is fetched bounded too (a file's size from its tree entry, caps on metadata), a fetch
//! from one server never takes longer than `timeout + size / min_rate`, however slowly
//! a server or a proxy dribbles bytes.

use crate::demand::Gate;
use canopy_protocol::api::{LogEntry, RootInfo, decode_tree_pack};
use canopy_protocol::{DecodeError, Hasher, ObjectId, Tree, TreeId};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed: refused, timed out, cut off.
    #[error("{url}: {}", explain(error))]
    Http {
        /// The URL.
        url: String,
        /// What reqwest said (not a `source`: the message already says it, with its
        /// cause, so it is not printed twice).
        error: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The body's message, if any.
        message: String,
    },
    /// The bytes do not hash to the object id asked for: a corrupt store or a proxy
    /// that alters content. They are thrown away.
    #[error("{url}: hash mismatch: content hashes to {actual}, not to the id asked for")]
    Mismatch {
        /// The URL.
        url: String,
        /// What the content hashed to.
        actual: ObjectId,
    },
    /// A metadata object or tree pack does not decode.
    #[error("{url}: {source}")]
    Decode {
        /// The URL.
        url: String,
        /// Why.
        source: DecodeError,
    },
    /// Writing the fetched content locally failed.
    #[error("writing {path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server was too slow: it did not keep up the minimum rate, or sent headers
    /// too slowly.
    #[error(
        "{url}: gave up after {elapsed:.1?}: {received} bytes received, below the minimum rate (--timeout {timeout:?} plus the size at --min-rate)"
    )]
    TooSlow {
        /// The URL.
        url: String,
        /// How long it had been going.
        elapsed: Duration,
        /// Bytes of the body received.
        received: u64,
        /// The grace allowed before the rate counts.
        timeout: Duration,
    },
    /// The server sent more than the object or metadata can be.
    #[error("{url}: sent more than the {limit} bytes expected")]
    TooLong {
        /// The URL.
        url: String,
        /// The most that was expected.
        limit: u64,
    },
    /// Every server failed; the errors in order.
    #[error("{}", all_failed(.0))]
    AllFailed(Vec<FetchError>),
}

fn all_failed(errors: &[FetchError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!(
            "no server could answer: {}",
            many.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// A failed request in words that say what to check: reqwest's own message is the
/// same for every failure ("error sending request"); the cause is at the bottom.
fn explain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut cause: &dyn Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_timeout() {
        format!("no answer in time ({cause}): the server is slow or unreachable (see --timeout)")
    } else if e.is_connect() {
        format!("cannot connect ({cause}): is `canopy serve` running at this address?")
    } else {
        format!("{e}: {cause}")
    }
}

impl FetchError {
    /// Whether the server said the thing does not exist (rather than failing).
    pub fn is_not_found(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status == 404,
            FetchError::AllFailed(errs) => errs.iter().all(FetchError::is_not_found),
            _ => false,
        }
    }
}

/// Most a list of roots, a root's answer or a commit may be.
const METADATA_MAX: u64 = 16 << 20;
/// Most a tree pack may be (every directory of a root).
const TREE_PACK_MAX: u64 = 4 << 30;

/// The HTTP client: `timeout` bounds connecting and each read; with `zstd`, answers
/// may come compressed.
fn client(timeout: Duration, zstd: bool) -> Result<reqwest::Client, reqwest::Error> {
    // https uses rustls with ring; installing it twice (another client) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("canopy/", env!("CARGO_PKG_VERSION")));
    if !zstd {
        builder = builder.no_zstd();
    }
    builder.build()
}

/// Bytes gathered before each write of a fetched object to its file.
const WRITE_BUFFER: usize = 256 << 10;

/// One or more servers holding the same store.
pub struct Remote {
    servers: Vec<reqwest::Url>,
    http: reqwest::Client,
    timeout: Duration,
    /// Bytes per second a transfer must average once `timeout` has passed.
    min_rate: u64,
    /// The server that answered last; tried first next time.
    preferred: AtomicUsize,
}

impl Remote {
    /// A remote over `servers` (tried in order on failure). `timeout` bounds connecting,
    /// the wait for response headers and each wait for data, so a server that goes away
    /// costs at most that per server; `min_rate` (bytes per second, at least 1) is the
    /// average rate a transfer must keep after that (see the module documentation).
    pub fn new(
        servers: Vec<reqwest::Url>,
        timeout: Duration,
        min_rate: u64,
    ) -> Result<Self, reqwest::Error> {
        let http = client(timeout, true)?;
        // `Url::join` replaces the last path segment unless the base ends with '/':
        // `http://cdn/canopy` must mean `http://cdn/canopy/v1/…`.
        let servers = servers
            .into_iter()
            .map(|mut url| {
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                url
            })
            .collect();
        Ok(Remote {
            servers,
            http,
            timeout,
            min_rate: min_rate.max(1),
            preferred: AtomicUsize::new(0),
        })
    }

    /// This remote, asking servers for objects as they are stored rather than
    /// compressed: faster where the network is not the bottleneck (a replica on the
    /// same network copying everything), and no compression work for the server.
    pub fn uncompressed(self) -> Result<Self, reqwest::Error> {
        Ok(Remote {
            http: client(self.timeout, false)?,
            ..self
        })
    }

    /// Runs `attempt` against each server, starting with the preferred one, until one
    /// succeeds.
    /// The longest a fetch of `bytes` bytes from one server may take: `timeout`, then
    /// the bytes at the minimum rate.
    pub fn deadline(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs_f64(bytes as f64 / self.min_rate as f64)
    }

    /// The server to ask first: the one that answered last.
    pub(crate) fn preferred(&self) -> Option<reqwest::Url> {
        let n = self.servers.len();
        (n > 0).then(|| self.servers[self.preferred.load(Ordering::Relaxed) % n].clone())
    }

    async fn failover<T, F, Fut>(&self, attempt: F) -> Result<T, FetchError>
    where
        F: Fn(reqwest::Url) -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            match attempt(self.servers[idx].clone()).await {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    // With one server the error is reported once, by the caller.
                    if !e.is_not_found() && self.servers.len() > 1 {
                        tracing::warn!("{e}");
                    }
                    errors.push(e);
                }
            }
        }
        Err(FetchError::AllFailed(errors))
    }

    /// Asks `base` for `path`; an error status is an error, with canopy's message.
    pub(crate) async fn get(
        &self,
        base: &reqwest::Url,
        path: &str,
    ) -> Result<(String, reqwest::Response), FetchError> {
        let url = base.join(path).map_err(|e| FetchError::Status {
            url: path.into(),
            status: 0,
            message: e.to_string(),
        })?;
        let shown = url.to_string();
        let started = Instant::now();
        let res = tokio::time::timeout(self.timeout, self.http.get(url).send())
            .await
            .map_err(|_| FetchError::TooSlow {
                url: shown.clone(),
                elapsed: started.elapsed(),
                received: 0,
                timeout: self.timeout,
            })?
            .map_err(|error| FetchError::Http {
                url: shown.clone(),
                error,
            })?;
        if !res.status().is_success() {
            let status = res.status().as_u16();
            let body = res.bytes().await.unwrap_or_default();
            // canopy answers errors in JSON; anything else came from another server.
            let message = serde_json::from_slice::<canopy_protocol::api::ErrorBody>(&body)
                .map(|b| b.message)
                .unwrap_or_else(|_| {
                    "not an answer from canopy: is this URL a canopy server (or a cache in \
                     front of one that passes /v1/ through)?"
                        .into()
                });
            return Err(FetchError::Status {
                url: shown,
                status,
                message,
            });
        }
        Ok((shown, res))
    }

    /// The next chunk of a response's body, or `None` at its end, keeping the minimum
    /// rate (counted from `started`) and at most `limit` bytes in all (`received` so far).
    pub(crate) async fn chunk(
        &self,
        url: &str,
        res: &mut reqwest::Response,
        started: Instant,
        received: &mut u64,
        limit: u64,
    ) -> Result<Option<bytes::Bytes>, FetchError> {
        let allowed =
            self.timeout + Duration::from_secs_f64(*received as f64 / self.min_rate as f64);
        let chunk = tokio::time::timeout_at((started + allowed).into(), res.chunk())
            .await
            .map_err(|_| FetchError::TooSlow {
                url: url.to_string(),
                elapsed: started.elapsed(),
                received: *received,
                timeout: self.timeout,
            })?
            .map_err(|error| FetchError::Http {
                url: url.to_string(),
                error,
            })?;
        if let Some(chunk) = &chunk {
            *received += chunk.len() as u64;
            if *received > limit {
                return Err(FetchError::TooLong {
                    url: url.to_string(),
                    limit,
                });
            }
        }
        Ok(chunk)
    }

    async fn get_bytes(
        &self,
        base: &reqwest::Url,
        path: &str,
        limit: u64,
    ) -> Result<(String, Vec<u8>), FetchError> {
        let (url, mut res) = self.get(base, path).await?;
        let (started, mut received) = (Instant::now(), 0);
        let mut bytes = Vec::new();
        while let Some(chunk) = self
            .chunk(&url, &mut res, started, &mut received, limit)
            .await?
        {
            bytes.extend_from_slice(&chunk);
        }
        Ok((url, bytes))
    }

    /// Every root and its current commit.
    pub async fn roots(&self) -> Result<Vec<RootInfo>, FetchError> {
        self.failover(|base| async move {
            let (url, bytes) = self.get_bytes(&base, "v1/roots", METADATA_MAX).await?;
            serde_json::from_slice(&bytes).map_err(|e| FetchError::Status {
                url,
                status: 200,
                message: e.to_string(),
            })
        })
        .await
    }

    /// One root's current commit.
    pub async fn root(&self, name: &str) -> Result<RootInfo, FetchError> {
        self.failover(|base| async move {
            let (url, bytes) = self
                .get_bytes(&base, &format!("v1/roots/{name}"), METADATA_MAX)
                .await?;
            serde_json::from_slice(&bytes).map_err(|e| FetchError::Status {
                url,
                status: 200,
                message: e.to_string(),
            })
        })
        .await
    }

    /// A small object, whole and verified.
    pub async fn object(&self, id: &ObjectId) -> Result<Vec<u8>, FetchError> {
        self.failover(|base| async move {
            let (url, bytes) = self
                .get_bytes(&base, &format!("v1/objects/{id}"), METADATA_MAX)
                .await?;
            let actual = ObjectId::of(&bytes);
            if actual != *id {
                tracing::error!(
                    "hash mismatch for object {id} from {url}: content hashes to {actual}"
                );
                return Err(FetchError::Mismatch { url, actual });
            }
            Ok(bytes)
        })
        .await
    }

    /// Streams an object of `size` bytes (as its tree entry says) into the file `dest`
    /// (created or truncated), verifying it; on any failure, a server that sends more
    /// or keeps below the minimum rate included, the file is removed. Returns its size.
    pub async fn object_to_file(
        &self,
        id: &ObjectId,
        size: u64,
        dest: &Path,
    ) -> Result<u64, FetchError> {
        self.object_to_file_gated(id, size, dest, None).await
    }

    /// Streams an object into `dest` as [`Remote::object_to_file`] does, for a fetch
    /// ahead of use: the answer gives way to readers' fetches as `gate` says (see
    /// [`crate::demand`]); time held does not count against the minimum rate.
    pub async fn object_to_file_gated(
        &self,
        id: &ObjectId,
        size: u64,
        dest: &Path,
        gate: Option<Gate<'_>>,
    ) -> Result<u64, FetchError> {
        // Shared by the attempts (one server after another), taken by each in turn.
        let gate = &std::sync::Mutex::new(gate);
        let result = self
            .failover(|base| async move {
                let (url, mut res) = self.get(&base, &format!("v1/objects/{id}")).await?;
                let local = |source| FetchError::Local {
                    path: dest.display().to_string(),
                    source,
                };
                // Plain file writes, gathered into large ones: they land in the page
                // cache in microseconds, while a tokio file sends every write (and the
                // create) through the blocking pool, whose thread hand-offs cost more
                // than the writes with many fetches at once.
                let mut file = std::io::BufWriter::with_capacity(
                    WRITE_BUFFER,
                    std::fs::File::create(dest).map_err(local)?,
                );
                let mut hasher = Hasher::new();
                let (mut started, mut got) = (Instant::now(), 0);
                loop {
                    let mut taken = gate.lock().expect("gate lock").take();
                    if let Some(g) = &mut taken {
                        started += g.pass().await;
                    }
                    *gate.lock().expect("gate lock") = taken;
                    let Some(chunk) = self.chunk(&url, &mut res, started, &mut got, size).await?
                    else {
                        break;
                    };
                    hasher.update(&chunk);
                    file.write_all(&chunk).map_err(local)?;
                }
                file.flush().map_err(local)?;
                let actual = hasher.finish();
                if actual != *id {
                    tracing::error!(
                        "hash mismatch for object {id} from {url}: content hashes to {actual}"
                    );
                    return Err(FetchError::Mismatch { url, actual });
                }
                Ok(got)
            })
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    /// A root's history, newest first, as the server lists it (unsigned: what matters
    /// is checked on the commits themselves).
    pub async fn log(&self, name: &str) -> Result<Vec<LogEntry>, FetchError> {
        self.failover(|base| async move {
            let (url, bytes) = self
                .get_bytes(&base, &format!("v1/roots/{name}/log"), METADATA_MAX)
                .await?;
            serde_json::from_slice(&bytes).map_err(|e| FetchError::Status {
                url,
                status: 200,
                message: e.to_string(),
            })
        })
        .await
    }

    /// Every tree under `root`, in one request, each verified.
    pub async fn tree_pack(&self, root: &TreeId) -> Result<HashMap<TreeId, Tree>, FetchError> {
        Ok(self
            .tree_pack_encoded(root)
            .await?
            .into_iter()
            .map(|(id, (tree, _))| (id, tree))
            .collect())
    }

    /// Every tree under `root`, in one request, each verified, decoded and as encoded
    /// (what a replica stores).
    pub async fn tree_pack_encoded(
        &self,
        root: &TreeId,
    ) -> Result<HashMap<TreeId, (Tree, Vec<u8>)>, FetchError> {
        self.failover(|base| async move {
            let (url, bytes) = self
                .get_bytes(&base, &format!("v1/trees/{root}"), TREE_PACK_MAX)
                .await?;
            decode_tree_pack(&bytes, root).map_err(|source| FetchError::Decode { url, source })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_their_path() {
        let remote = Remote::new(
            vec![
                "http://cdn.example/canopy".parse().unwrap(),
                "http://server:7750".parse().unwrap(),
            ],
            Duration::from_secs(1),
            1,
        )
        .unwrap();
        let joined: Vec<String> = remote
            .servers
            .iter()
            .map(|b| b.join("v1/roots").unwrap().to_string())
            .collect();
        assert_eq!(
            joined,
            [
                "http://cdn.example/canopy/v1/roots",
                "http://server:7750/v1/roots"
            ]
        );
    }
}
