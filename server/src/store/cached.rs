//! A read-through cache in front of a remote backend, for `canopy serve` on a bucket:
//! the server stays stateless (any number of them serve one bucket, a lost cache costs
//! only refetches), yet hot objects are local files, so HTTP ranges and NFS reads are
//! served from disk instead of a request to the bucket each.
//!
//! Objects are fetched whole into a [`canopy_cache::Cache`] (bounded, least recently
//! used out first) and verified against their id on the way in; a fetch that fails
//! leaves nothing behind. While the bucket is unreachable, cached objects are still
//! served and others fail with [`StoreError::Backend`]; nothing is remembered about the
//! failure, so the next request after the bucket returns succeeds.
//!
//! Refs are kept for [`REF_TTL`], so a burst of requests costs one listing of the
//! bucket, and a commit made anywhere is served within that time. While the bucket is
//! unreachable, the last refs seen are served (hosts keep what they have), with a
//! warning.

use super::backend::{GcScope, Held, ObjectBackend, RefBackend};
use super::{IoContext, StoreError};
use canopy_cache::{Cache, CacheError};
use canopy_protocol::{Hasher, ObjectId};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long refs read from the bucket are reused.
pub const REF_TTL: Duration = Duration::from_secs(1);

/// Objects of a remote backend, read through a local cache.
pub struct CachedObjects {
    inner: Box<dyn ObjectBackend>,
    cache: Arc<Cache>,
}

impl CachedObjects {
    /// `inner`'s objects, read through `cache`.
    pub fn new(inner: Box<dyn ObjectBackend>, cache: Arc<Cache>) -> Self {
        CachedObjects { inner, cache }
    }

    /// The object as an open, verified local file, fetched first if not cached. The
    /// file stays readable after eviction: eviction unlinks, the open file lives on.
    fn file(&self, id: &ObjectId) -> Result<File, StoreError> {
        let verified = self
            .cache
            .get(id, |tmp| fetch(&*self.inner, id, tmp))
            .map_err(|e| match e {
                CacheError::Fetch(e) => e,
                CacheError::Io { what, source } => StoreError::Io { what, source },
                CacheError::Busy(dir) => StoreError::Io {
                    what: format!("cache {}", dir.display()),
                    source: std::io::Error::other("in use by another process"),
                },
            })?;
        self.cache.unpin(id);
        Ok(verified.file)
    }
}

/// Streams object `id` from `inner` into `tmp`, hashing as it goes; the object's size
/// if it hashes to its id. Nothing is left at `tmp` on failure.
fn fetch(inner: &dyn ObjectBackend, id: &ObjectId, tmp: &Path) -> Result<u64, StoreError> {
    let copied = (|| {
        let mut reader = inner.get(id)?;
        let mut out = File::create(tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| StoreError::Backend {
                what: format!("reading object {id} from {}", inner.location()),
                reason: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .ctx(|| format!("writing {}", tmp.display()))?;
            size += n as u64;
        }
        let actual = hasher.finish();
        if actual != *id {
            tracing::error!(
                "object {id} in {} is corrupt: its content hashes to {actual}",
                inner.location()
            );
            return Err(StoreError::Corrupt { id: *id, actual });
        }
        Ok(size)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    copied
}

impl ObjectBackend for CachedObjects {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, staged: Vec<(ObjectId, PathBuf)>) -> Result<Vec<bool>, StoreError> {
        self.inner.put(staged)
    }

    /// The verified cached file: [`super::Store::read_object`] verifies again, which
    /// costs a hash of bytes already local.
    fn get(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(Box::new(self.file(id)?))
    }

    fn read_at(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let file = self.file(id)?;
        let mut done = 0;
        while done < buf.len() {
            let n = file
                .read_at(&mut buf[done..], offset + done as u64)
                .ctx(|| format!("reading cached object {id}"))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn size(&self, id: &ObjectId) -> Result<u64, StoreError> {
        Ok(self
            .file(id)?
            .metadata()
            .ctx(|| format!("reading the size of cached object {id}"))?
            .len())
    }

    fn exists(&self, id: &ObjectId) -> Result<bool, StoreError> {
        self.inner.exists(id)
    }

    fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        self.inner.list()
    }

    fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        self.inner.delete(id)
    }

    fn open_file(&self, id: &ObjectId) -> Result<Option<File>, StoreError> {
        self.file(id).map(Some)
    }

    fn cheap_exists(&self) -> bool {
        self.inner.cheap_exists()
    }

    fn protect(&self, ids: &[ObjectId]) -> Result<Held, StoreError> {
        self.inner.protect(ids)
    }

    fn begin_gc(&self) -> Result<GcScope, StoreError> {
        self.inner.begin_gc()
    }
}

/// What was read for a ref or a listing, and when.
struct Seen<T> {
    at: Instant,
    value: T,
}

/// What was read last for each key, and when.
type Memo<T> = Mutex<HashMap<String, Seen<T>>>;

/// Refs of a remote backend, reused for [`REF_TTL`] and served stale while it is down.
pub struct CachedRefs {
    inner: Box<dyn RefBackend>,
    gets: Memo<Option<ObjectId>>,
    lists: Memo<Vec<(String, ObjectId)>>,
}

impl CachedRefs {
    /// `inner`'s refs, cached briefly.
    pub fn new(inner: Box<dyn RefBackend>) -> Self {
        CachedRefs {
            inner,
            gets: Mutex::default(),
            lists: Mutex::default(),
        }
    }

    fn forget(&self) {
        self.gets.lock().expect("ref cache").clear();
        self.lists.lock().expect("ref cache").clear();
    }
}

/// `key`'s value from `seen` if fresh; else `read` it, keeping the answer, or, if the
/// backend is down, the last value seen.
fn through<T: Clone>(
    seen: &Memo<T>,
    key: &str,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Some(s) = seen.lock().expect("ref cache").get(key)
        && s.at.elapsed() < REF_TTL
    {
        return Ok(s.value.clone());
    }
    match read() {
        Ok(value) => {
            seen.lock().expect("ref cache").insert(
                key.to_string(),
                Seen {
                    at: Instant::now(),
                    value: value.clone(),
                },
            );
            Ok(value)
        }
        Err(e @ StoreError::Backend { .. }) => match seen.lock().expect("ref cache").get(key) {
            Some(s) => {
                tracing::warn!(
                    "{e}; serving refs {key:?} as read {}s ago",
                    s.at.elapsed().as_secs()
                );
                Ok(s.value.clone())
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

impl RefBackend for CachedRefs {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn get(&self, name: &str) -> Result<Option<ObjectId>, StoreError> {
        through(&self.gets, name, || self.inner.get(name))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, StoreError> {
        through(&self.lists, prefix, || self.inner.list(prefix))
    }

    fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
    ) -> Result<(), StoreError> {
        let swapped = self.inner.compare_and_swap(name, expected, new);
        self.forget();
        swapped
    }

    fn append_log(&self, name: &str, entry: &str) -> Result<(), StoreError> {
        self.inner.append_log(name, entry)
    }

    fn read_log(&self, name: &str) -> Result<Vec<String>, StoreError> {
        self.inner.read_log(name)
    }

    fn log_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.log_names(prefix)
    }
}
