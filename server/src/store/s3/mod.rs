//! The S3 backend: objects and refs in a bucket of any S3-class object store (AWS S3,
//! SeaweedFS, MinIO, Ceph RGW, R2…), through the `object_store` crate.
//!
//! ```text
//! PREFIX/canopy-store          format line and the public key every writer signs with
//! PREFIX/objects/HEX           one object per key, named by its SHA-256
//! PREFIX/refs/roots/NAME       a ref: the id in hex and a newline
//! PREFIX/refs/packages/HASH
//! PREFIX/logs/roots/NAME/SEQ   a ref's log, one entry per key (S3 has no append)
//! PREFIX/leases/…, PREFIX/gc   writers' leases and the garbage collector's lock (see [`lease`])
//! ```
//!
//! Several machines may write one bucket. Objects are put with `If-None-Match: *`, so a
//! put reports whether the object was there. Refs move only by conditional writes:
//! creation with `If-None-Match: *`, change with `If-Match: ETAG` of the value read, so
//! of two writers racing on one ref exactly one wins and the other gets
//! [`StoreError::Conflict`]. `canopy init --backend` checks that the store honours both
//! conditions before using a bucket (some S3 implementations silently ignore them).
//!
//! The backend is synchronous, like the rest of the store: its requests run on a small
//! runtime of its own, so it may be called from any thread. Every request has a
//! connect timeout, a total timeout and a bounded number of retries.

pub mod config;
mod explain;
pub(crate) mod lease;
mod refs;

pub use refs::S3Refs;

use super::StoreError;
use super::backend::ObjectBackend;
use crate::crash;
use bytes::Bytes;
use canopy_protocol::{ObjectId, VerifyingKey};
use config::{Credentials, S3Config};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion, WriteMultipart,
};
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The key that marks a bucket prefix as a store, and its format line.
const MARKER: &str = "canopy-store";
const MARKER_FORMAT: &str = "canopy-store 1";
/// Requests in flight at once when putting or reading many objects.
const PARALLEL: usize = 16;
/// Objects up to this size are put in one request (read into memory); larger ones in
/// parts of [`PART_SIZE`].
const SINGLE_PUT_MAX: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;

/// How long requests may take: writers retry more, servers answer sooner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// Commands that write: a few retries over up to half a minute.
    Writer,
    /// `canopy serve`: one retry, so a host hears 503 quickly and tries another server.
    Server,
}

/// The runtime the backend's requests run on, shared by every bucket of the process and
/// never shut down (so no store is dropped inside a runtime it owns).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("canopy-s3")
            .enable_all()
            .build()
            .expect("starting the S3 runtime (threads and a timer)")
    })
}

/// Runs `f` on the backend's runtime and waits for it, from any thread.
fn block<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| StoreError::Backend {
        what: "waiting for an S3 request".into(),
        reason: "the request task failed".into(),
    })
}

/// One bucket prefix, shared by the object and ref halves of a store.
pub struct Bucket {
    client: Arc<AmazonS3>,
    root: String,
    config: S3Config,
}

impl Bucket {
    /// Connects (lazily: no request is made here) with credentials from the environment
    /// or the credentials file.
    pub fn connect(config: &S3Config, patience: Patience) -> Result<Arc<Bucket>, StoreError> {
        let creds = Credentials::find()?;
        let (connect, retries, retry_for) = match patience {
            Patience::Writer => (Duration::from_secs(5), 3, Duration::from_secs(30)),
            Patience::Server => (Duration::from_secs(2), 1, Duration::from_secs(4)),
        };
        let options = ClientOptions::new()
            .with_connect_timeout(connect)
            .with_timeout(Duration::from_secs(300))
            .with_allow_http(true);
        let retry = RetryConfig {
            max_retries: retries,
            retry_timeout: retry_for,
            ..RetryConfig::default()
        };
        // Credentials are given explicitly: the builder must never fall back to instance
        // metadata or other network lookups.
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.url.bucket)
            .with_region(&config.region)
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(&creds.secret)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(token) = &creds.token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // The workspace's one TLS stack: rustls with ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = builder.build().map_err(|e| StoreError::Backend {
            what: format!("configuring {}", config.describe()),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Bucket {
            client: Arc::new(client),
            root: config.url.prefix.clone(),
            config: config.clone(),
        }))
    }

    /// The bucket and endpoint, for messages.
    pub fn describe(&self) -> String {
        self.config.describe()
    }

    /// The public key the store's commits are signed with, from its marker; `None` if
    /// the bucket holds no store (yet).
    pub fn stored_public_key(self: &Arc<Self>) -> Result<Option<VerifyingKey>, StoreError> {
        let Some((text, _)) = self.get_small(MARKER)? else {
            return Ok(None);
        };
        let bad = |reason: String| StoreError::UnsupportedFormat {
            path: PathBuf::from(format!("{}/{MARKER}", self.config.url)),
            found: reason,
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        if lines.next() != Some(MARKER_FORMAT) {
            return Err(bad(text.to_string()));
        }
        let hex_key = lines
            .find_map(|l| l.strip_prefix("key "))
            .ok_or_else(|| bad("no key line".into()))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut bytes).map_err(|e| bad(e.to_string()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }

    /// The store's public key; an error if the bucket holds no store.
    pub fn public_key(self: &Arc<Self>) -> Result<VerifyingKey, StoreError> {
        self.stored_public_key()?
            .ok_or_else(|| StoreError::Backend {
                what: format!("reading {}/{MARKER}", self.config.url),
                reason: "the bucket holds no canopy store (was it removed?)".into(),
            })
    }

    /// Creates the store's marker with its public key, unless one exists (then `false`).
    pub(crate) fn create_marker(self: &Arc<Self>, key: &VerifyingKey) -> Result<bool, StoreError> {
        let text = format!("{MARKER_FORMAT}\nkey {}\n", hex::encode(key.to_bytes()));
        self.put_small(MARKER, Bytes::from(text), PutMode::Create)
    }

    /// Checks that the store honours `If-None-Match: *` and `If-Match`, on which every
    /// ref update relies; some S3 implementations ignore them, and two writers would then
    /// lose each other's updates.
    pub(crate) fn check_conditional_writes(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Backend {
            what: "naming a probe".into(),
            reason: e.to_string(),
        })?;
        let rel = format!("probe-{}", hex::encode(salt));
        let body = || Bytes::from_static(b"probe\n");
        let created = self.put_small(&rel, body(), PutMode::Create)?;
        let again = self.put_small(&rel, body(), PutMode::Create)?;
        let stale = UpdateVersion {
            e_tag: Some("\"0000000000000000\"".into()),
            version: None,
        };
        let stale_update = self.put_small(&rel, body(), PutMode::Update(stale))?;
        self.delete_key(&rel)?;
        if !created || again || stale_update {
            return Err(StoreError::Backend {
                what: format!("checking {}", self.config.describe()),
                reason: "this S3 implementation does not honour conditional writes \
                         (If-None-Match: * and If-Match), so two writers could lose each \
                         other's updates; canopy needs a store that does (AWS S3, \
                         SeaweedFS, MinIO, Ceph RGW 18+, R2)"
                    .into(),
            });
        }
        Ok(())
    }

    /// The key of `rel` under the prefix.
    fn key(&self, rel: &str) -> Key {
        if self.root.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.root))
        }
    }

    fn object_key(&self, id: &ObjectId) -> Key {
        self.key(&format!("objects/{id}"))
    }

    /// What a failed request did, naming the bucket (never the credentials).
    fn fail(&self, what: impl Into<String>, e: object_store::Error) -> StoreError {
        StoreError::Backend {
            what: format!("{} in {}", what.into(), self.config.describe()),
            reason: explain::explain(&e.to_string()),
        }
    }

    fn object_err(&self, id: &ObjectId, what: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::Missing {
                id: *id,
                store: self.config.url.to_string(),
            },
            e => self.fail(format!("{what} object {id}"), e),
        }
    }

    /// The small object at `rel` (a ref, a config, a log entry) with its ETag, or
    /// `None` if absent.
    fn get_small(
        self: &Arc<Self>,
        rel: &str,
    ) -> Result<Option<(Bytes, Option<String>)>, StoreError> {
        let b = self.clone();
        let key = self.key(rel);
        let got = block(async move {
            let r = b.client.get_opts(&key, GetOptions::default()).await?;
            let etag = r.meta.e_tag.clone();
            Ok::<_, object_store::Error>((r.bytes().await?, etag))
        })?;
        match got {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(format!("reading {rel}"), e)),
        }
    }

    /// Puts a small object with a condition; `Ok(false)` when the condition failed.
    fn put_small(
        self: &Arc<Self>,
        rel: &str,
        body: Bytes,
        mode: PutMode,
    ) -> Result<bool, StoreError> {
        let b = self.clone();
        let key = self.key(rel);
        let put = block(async move {
            b.client
                .put_opts(&key, PutPayload::from(body), PutOptions::from(mode))
                .await
        })?;
        match put {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.fail(format!("writing {rel}"), e)),
        }
    }

    fn delete_key(self: &Arc<Self>, rel: &str) -> Result<(), StoreError> {
        let b = self.clone();
        let key = self.key(rel);
        match block(async move { b.client.delete(&key).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(format!("deleting {rel}"), e)),
        }
    }

    /// Every key under `rel/`, as the rest of its name, sorted, with its last
    /// modification (the store's clock).
    fn list_under(
        self: &Arc<Self>,
        rel: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>, u64)>, StoreError> {
        let b = self.clone();
        let prefix = self.key(rel);
        let listed =
            block(async move { b.client.list(Some(&prefix)).try_collect::<Vec<_>>().await })?
                .map_err(|e| self.fail(format!("listing {rel}/"), e))?;
        let strip = format!("{}/", self.key(rel));
        let mut out: Vec<_> = listed
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((name, m.last_modified, m.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Objects in a bucket.
pub struct S3Objects {
    bucket: Arc<Bucket>,
}

impl S3Objects {
    /// The objects of `bucket`.
    pub fn new(bucket: Arc<Bucket>) -> Self {
        S3Objects { bucket }
    }
}

/// Puts one staged file as object `id`; says whether it was there already. The staged
/// file is removed once the object is stored.
async fn put_one(b: Arc<Bucket>, id: ObjectId, tmp: PathBuf) -> Result<bool, StoreError> {
    let io = |what: &str, e| StoreError::Io {
        what: format!("{what} {}", tmp.display()),
        source: e,
    };
    let size = tokio::fs::metadata(&tmp)
        .await
        .map_err(|e| io("reading", e))?
        .len();
    let key = b.object_key(&id);
    let existed = if size <= SINGLE_PUT_MAX {
        let bytes = tokio::fs::read(&tmp).await.map_err(|e| io("reading", e))?;
        match b
            .client
            .put_opts(
                &key,
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => false,
            Err(object_store::Error::AlreadyExists { .. }) => true,
            Err(e) => return Err(b.fail(format!("storing object {id}"), e)),
        }
    } else {
        // Multipart uploads take no condition: ask first. A race with another writer
        // putting the same bytes is harmless.
        match b.client.head(&key).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => {
                let upload = b
                    .client
                    .put_multipart(&key)
                    .await
                    .map_err(|e| b.fail(format!("storing object {id}"), e))?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                let mut file = tokio::fs::File::open(&tmp)
                    .await
                    .map_err(|e| io("opening", e))?;
                let mut buf = vec![0u8; PART_SIZE];
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
                        .await
                        .map_err(|e| io("reading", e))?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .wait_for_capacity(2)
                        .await
                        .map_err(|e| b.fail(format!("storing object {id}"), e))?;
                    writer.write(&buf[..n]);
                }
                writer
                    .finish()
                    .await
                    .map_err(|e| b.fail(format!("storing object {id}"), e))?;
                false
            }
            Err(e) => return Err(b.fail(format!("storing object {id}"), e)),
        }
    };
    tokio::fs::remove_file(&tmp)
        .await
        .map_err(|e| io("removing", e))?;
    crash::point("object stored");
    Ok(existed)
}

/// Reads an object's byte stream chunk by chunk, from any thread.
struct StreamReader {
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunk: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(mut stream) = self.stream.take() else {
                return Ok(0);
            };
            let (stream, next) = block(async move {
                let next = stream.next().await;
                (stream, next)
            })
            .map_err(std::io::Error::other)?;
            match next {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.stream = Some(stream);
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl ObjectBackend for S3Objects {
    fn location(&self) -> String {
        self.bucket.config.describe()
    }

    fn put(&self, staged: Vec<(ObjectId, PathBuf)>) -> Result<Vec<bool>, StoreError> {
        let b = self.bucket.clone();
        block(async move {
            futures_util::stream::iter(staged)
                .map(|(id, tmp)| put_one(b.clone(), id, tmp))
                .buffered(PARALLEL)
                .try_collect()
                .await
        })?
    }

    fn get(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError> {
        let b = self.bucket.clone();
        let key = b.object_key(id);
        let got = block(async move { b.client.get(&key).await })?
            .map_err(|e| self.bucket.object_err(id, "reading", e))?;
        Ok(Box::new(StreamReader {
            stream: Some(got.into_stream()),
            chunk: Bytes::new(),
        }))
    }

    fn read_at(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let size = self.size(id)?;
        let end = size.min(offset.saturating_add(buf.len() as u64));
        if offset >= end {
            return Ok(0);
        }
        let b = self.bucket.clone();
        let key = b.object_key(id);
        let bytes = block(async move { b.client.get_range(&key, offset..end).await })?
            .map_err(|e| self.bucket.object_err(id, "reading", e))?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn size(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let b = self.bucket.clone();
        let key = b.object_key(id);
        let meta = block(async move { b.client.head(&key).await })?
            .map_err(|e| self.bucket.object_err(id, "reading the size of", e))?;
        Ok(meta.size)
    }

    fn exists(&self, id: &ObjectId) -> Result<bool, StoreError> {
        match self.size(id) {
            Ok(_) => Ok(true),
            Err(StoreError::Missing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        let mut out = Vec::new();
        for (name, _, _) in self.bucket.list_under("objects")? {
            let id = name
                .parse()
                .map_err(|e: canopy_protocol::IdError| StoreError::BadRef {
                    path: PathBuf::from(format!("{}/objects/{name}", self.bucket.config.url)),
                    reason: format!("stray key in objects/: {e}"),
                })?;
            out.push(id);
        }
        Ok(out)
    }

    fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let size = match self.size(id) {
            Ok(size) => size,
            Err(StoreError::Missing { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        self.bucket.delete_key(&format!("objects/{id}"))?;
        Ok(size)
    }

    fn cheap_exists(&self) -> bool {
        false
    }

    fn protect(&self, ids: &[ObjectId]) -> Result<super::backend::Held, StoreError> {
        lease::protect(&self.bucket, ids)
    }

    fn begin_gc(&self) -> Result<super::backend::GcScope, StoreError> {
        lease::begin_gc(&self.bucket)
    }
}
