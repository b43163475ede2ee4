//! A bounded directory of verified objects: content-addressed files, bounded in size,
//! evicted least recently used, never evicting an open file. A host's mounts share one
//! (so a file used by ten roots is one download and one file there), and a server in
//! front of a bucket keeps its hot objects in one.
//!
//! ```text
//! CACHE/objects/ab/cdef…   verified objects, named by id
//! CACHE/tmp/               downloads in flight (removed at open)
//! ```
//!
//! Objects found at start (from an earlier run) are re-hashed once, on first use, before
//! they are trusted again.

#![warn(missing_docs)]

use canopy_protocol::{Hasher, ObjectId};
use dashmap::DashMap;
use lru::LruCache;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why the cache could not provide an object; `E` is what the fetcher reports.
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E = std::convert::Infallible> {
    /// A filesystem operation on the cache failed.
    #[error("cache {what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Fetching failed.
    #[error(transparent)]
    Fetch(E),
    /// Another process uses the cache directory.
    #[error(
        "cache directory {0} is in use by another canopy process: one process uses a cache directory at a time (serve every root from one process, or give this one its own --cache-dir)"
    )]
    Busy(PathBuf),
}

fn io_err<E>(what: impl Into<String>) -> impl FnOnce(io::Error) -> CacheError<E> {
    let what = what.into();
    move |source| CacheError::Io { what, source }
}

struct Item {
    size: u64,
    verified: bool,
}

struct State {
    lru: LruCache<ObjectId, Item>,
    total: u64,
    /// Open files per object: these are never evicted.
    pinned: HashMap<ObjectId, u32>,
}

/// A bounded, shared, content-addressed cache directory.
pub struct Cache {
    dir: PathBuf,
    /// Held for the cache's life: eviction and cleanup assume no other process.
    _lock: fs::File,
    max_bytes: u64,
    state: Mutex<State>,
    /// One lock per object being fetched, so concurrent opens fetch it once.
    fetching: DashMap<ObjectId, Arc<Mutex<()>>>,
    seq: AtomicU64,
}

fn hash_file(path: &Path) -> io::Result<ObjectId> {
    let mut hasher = Hasher::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finish())
}

impl Cache {
    /// Opens (or creates) the cache at `dir`, keeping at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Cache, CacheError> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&objects).map_err(io_err(format!("creating {}", objects.display())))?;
        let lock_path = dir.join("lock");
        let lock = fs::File::create(&lock_path)
            .map_err(io_err(format!("creating {}", lock_path.display())))?;
        if let Err(e) = lock.try_lock() {
            return match e {
                fs::TryLockError::WouldBlock => Err(CacheError::Busy(dir.to_path_buf())),
                fs::TryLockError::Error(e) => {
                    Err(io_err(format!("locking {}", lock_path.display()))(e))
                }
            };
        }
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        // Oldest first, so the LRU order starts as "least recently written".
        let mut found = Vec::new();
        for fan in
            fs::read_dir(&objects).map_err(io_err(format!("listing {}", objects.display())))?
        {
            let fan = fan.map_err(io_err("listing objects"))?.path();
            let prefix = fan
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            for f in fs::read_dir(&fan).map_err(io_err(format!("listing {}", fan.display())))? {
                let f = f.map_err(io_err("listing objects"))?;
                let name = format!("{prefix}{}", f.file_name().to_string_lossy());
                let Ok(md) = f.metadata() else { continue };
                match name.parse::<ObjectId>() {
                    Ok(id) => found.push((md.modified().ok(), id, md.len())),
                    Err(_) => {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let mut state = State {
            lru: LruCache::unbounded(),
            total: 0,
            pinned: HashMap::new(),
        };
        for (_, id, size) in found {
            state.total += size;
            state.lru.put(
                id,
                Item {
                    size,
                    verified: false,
                },
            );
        }
        let cache = Cache {
            dir: dir.to_path_buf(),
            _lock: lock,
            max_bytes,
            state: Mutex::new(state),
            fetching: DashMap::new(),
            seq: AtomicU64::new(0),
        };
        cache.evict(&mut cache.state.lock().expect("cache lock"));
        Ok(cache)
    }

    /// Where an object's file lives in the cache.
    pub fn path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.state.lock().expect("cache lock").total
    }

    /// Returns the path of a verified copy of `id`, calling `fetch` to download it into
    /// a temporary file if the cache does not have it. Concurrent callers for one object
    /// wait for a single fetch. The object comes back pinned, so no eviction can remove
    /// it before the caller has opened it: call [`Cache::unpin`] when done.
    pub fn get<E>(
        &self,
        id: &ObjectId,
        fetch: impl FnOnce(&Path) -> Result<u64, E>,
    ) -> Result<PathBuf, CacheError<E>> {
        let lock = self.fetching.entry(*id).or_default().clone();
        let result = {
            let _guard = lock.lock().expect("fetch lock");
            self.get_locked(id, fetch)
        };
        drop(lock);
        self.fetching
            .remove_if(id, |_, l| Arc::strong_count(l) == 1);
        result
    }

    fn get_locked<E>(
        &self,
        id: &ObjectId,
        fetch: impl FnOnce(&Path) -> Result<u64, E>,
    ) -> Result<PathBuf, CacheError<E>> {
        let path = self.path(id);
        let verified = {
            let mut state = self.state.lock().expect("cache lock");
            let verified = state.lru.get(id).map(|i| i.verified);
            if verified.is_some() {
                *state.pinned.entry(*id).or_default() += 1;
            }
            verified
        };
        match verified {
            Some(true) => return Ok(path),
            Some(false) => {
                if hash_file(&path).ok() == Some(*id) {
                    if let Some(item) = self.state.lock().expect("cache lock").lru.get_mut(id) {
                        item.verified = true;
                    }
                    return Ok(path);
                }
                self.unpin(id);
                tracing::warn!("cached object {id} is damaged; fetching it again");
                self.forget(id);
            }
            None => {}
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{id}.{}", self.seq.fetch_add(1, Ordering::Relaxed)));
        let size = fetch(&tmp).map_err(CacheError::Fetch)?;
        let fan = path
            .parent()
            .expect("object paths have a fan-out directory");
        fs::create_dir_all(fan).map_err(io_err(format!("creating {}", fan.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("moving {} into place", tmp.display())))?;
        let mut state = self.state.lock().expect("cache lock");
        state.total += size;
        state.lru.put(
            *id,
            Item {
                size,
                verified: true,
            },
        );
        *state.pinned.entry(*id).or_default() += 1;
        self.evict(&mut state);
        Ok(path)
    }

    fn forget(&self, id: &ObjectId) {
        let mut state = self.state.lock().expect("cache lock");
        if let Some(item) = state.lru.pop(id) {
            state.total -= item.size;
        }
        let _ = fs::remove_file(self.path(id));
    }

    /// Undoes the pin of one [`Cache::get`], evicting if the cache is over its bound.
    pub fn unpin(&self, id: &ObjectId) {
        let mut state = self.state.lock().expect("cache lock");
        if let Some(n) = state.pinned.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                state.pinned.remove(id);
            }
        }
        self.evict(&mut state);
    }

    /// Removes least recently used, unpinned objects until under the bound.
    fn evict(&self, state: &mut State) {
        while state.total > self.max_bytes {
            let victim = state
                .lru
                .iter()
                .rev()
                .map(|(id, _)| *id)
                .find(|id| !state.pinned.contains_key(id));
            let Some(id) = victim else {
                tracing::debug!("cache over its bound with only open files left");
                return;
            };
            if let Some(item) = state.lru.pop(&id) {
                state.total -= item.size;
                let _ = fs::remove_file(self.path(&id));
                tracing::debug!("evicted {id} ({} bytes)", item.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fetches `data` into the cache and closes it again.
    fn put(cache: &Cache, data: &[u8]) -> ObjectId {
        let id = ObjectId::of(data);
        cache
            .get(&id, |tmp| {
                fs::write(tmp, data).unwrap();
                Ok::<_, std::io::Error>(data.len() as u64)
            })
            .unwrap();
        cache.unpin(&id);
        id
    }

    #[test]
    fn evicts_least_recently_used_but_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 10).unwrap();
        let a = put(&cache, b"aaaa");
        cache
            .get(&a, |_| -> Result<u64, std::io::Error> { panic!("cached") })
            .unwrap();
        let b = put(&cache, b"bbbb");
        let c = put(&cache, b"cccc");
        // Over 10 bytes: b is the least recently used unpinned object.
        assert!(cache.path(&a).exists());
        assert!(!cache.path(&b).exists());
        assert!(cache.path(&c).exists());
        assert!(cache.used() <= 10);
        cache.unpin(&a);
        put(&cache, b"dddd");
        assert!(!cache.path(&a).exists());
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Cache::open(dir.path(), 100).unwrap();
        assert!(matches!(
            Cache::open(dir.path(), 100),
            Err(CacheError::Busy(_))
        ));
        drop(first);
        Cache::open(dir.path(), 100).unwrap();
    }

    #[test]
    fn reuses_and_reverifies_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = put(&Cache::open(dir.path(), 100).unwrap(), b"kept"); // dropped: unlocked
        let cache = Cache::open(dir.path(), 100).unwrap();
        let path = cache
            .get(&id, |_| -> Result<u64, std::io::Error> {
                panic!("must not fetch what is cached")
            })
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), b"kept");
        fs::write(cache.path(&id), b"evil").unwrap();
        drop(cache);
        let cache = Cache::open(dir.path(), 100).unwrap();
        let fetched = std::cell::Cell::new(false);
        cache
            .get(&id, |tmp| {
                fetched.set(true);
                fs::write(tmp, b"kept").unwrap();
                Ok::<_, std::io::Error>(4)
            })
            .unwrap();
        assert!(fetched.get(), "a damaged cached object is fetched again");
    }
}
