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
//! Bytes verified before they reach the cache (a pack's members, offered) are written
//! straight at their object's name and listed once complete; a file a crash left there
//! half-written is, like any file of an earlier run, hashed before use.
//!
//! Cached bytes are never trusted on their name alone. Cache files are read-only (mode
//! 0444, in directories only the owner can enter), and each verification records the
//! file's [`Stamp`] — device, inode, change time and size. An open whose file still has
//! the stamp of its last verification costs one `fstat`; any other (a file from an
//! earlier run, or one written, truncated, replaced or even chmod-ed since) is hashed
//! again first, and fetched again if its bytes are not the object's. So a cache file
//! altered on disk never reaches a reader, passthrough or not: an open hands out a file
//! verified since its last change, and reads through canopy check the stamp again and
//! open the object anew if it moved (canopy-client's FUSE front end does). fs-verity would let the kernel keep that promise for reads of an
//! already open passthrough file too; the ext4 cache directories this was built on do
//! not have it, so a file altered by root while open can still be read through
//! passthrough until it is closed.

#![warn(missing_docs)]

mod verify;

use verify::verify;
pub use verify::{Stamp, Verified};

use canopy_protocol::ObjectId;
use dashmap::DashMap;
use lru::LruCache;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// Mode of cache files: nobody writes them once they are in place.
const READ_ONLY: u32 = 0o444;
/// Mode of the cache's directories.
const PRIVATE_DIR: u32 = 0o700;

struct Item {
    size: u64,
    /// The stamp of the last verification; `None` until the first in this process.
    verified: Option<Stamp>,
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

/// Creates `dir` (and its parents) with the cache's directory mode.
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Removes whatever is at `path`, a directory too (never following a link).
fn remove_any(path: &Path) {
    if fs::remove_file(path).is_err() {
        let _ = fs::remove_dir_all(path);
    }
}

/// Runs `op`, which makes the object file `path`, creating its fan-out directory first
/// if `op` finds it missing: the first time one of its objects goes in, not before
/// every object (an object put in costs as few system calls as can be).
fn in_fan_out<T>(path: &Path, op: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_dir(
                path.parent()
                    .expect("object paths have a fan-out directory"),
            )?;
            op()
        }
        other => other,
    }
}

impl Cache {
    /// Opens (or creates) the cache at `dir`, keeping at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Cache, CacheError> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        if dir.exists() && !dir.is_dir() {
            return Err(io_err(format!(
                "using {} as the cache directory (give --cache-dir a directory)",
                dir.display()
            ))(io::Error::from(
                io::ErrorKind::NotADirectory,
            )));
        }
        private_dir(&objects).map_err(io_err(format!("creating {}", objects.display())))?;
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
        private_dir(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
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
                    // Only a regular file can be an object: a link, a directory or a
                    // FIFO there was planted, and would stand in a fetch's way.
                    Ok(_) if !md.is_file() => remove_any(&f.path()),
                    Ok(id) => {
                        // Caches written before files were read-only.
                        if md.mode() & 0o222 != 0 {
                            let _ = fs::set_permissions(
                                f.path(),
                                fs::Permissions::from_mode(READ_ONLY),
                            );
                        }
                        found.push((md.modified().ok(), id, md.len()))
                    }
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
                    verified: None,
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

    /// The most bytes it holds (open files aside).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.state.lock().expect("cache lock").total
    }

    /// Opens a verified copy of `id`, calling `fetch` to download it into a temporary
    /// file if the cache does not have one. Concurrent callers for one object wait for a
    /// single fetch. The object comes back pinned, so no eviction removes it while the
    /// caller uses it: call [`Cache::unpin`] when done.
    pub fn get<E>(
        &self,
        id: &ObjectId,
        fetch: impl FnOnce(&Path) -> Result<u64, E>,
    ) -> Result<Verified, CacheError<E>> {
        self.one_at_a_time(id, || self.get_locked(id, fetch))
    }

    /// Runs `f` holding `id`'s fetch lock: one fetch or verification of an object at a
    /// time, however many callers want it.
    fn one_at_a_time<T>(&self, id: &ObjectId, f: impl FnOnce() -> T) -> T {
        let lock = self.fetching.entry(*id).or_default().clone();
        let result = {
            let _guard = lock.lock().expect("fetch lock");
            f()
        };
        self.done_with(id, lock);
        result
    }

    /// Drops a handle on `id`'s fetch lock, and the lock with the last one.
    fn done_with(&self, id: &ObjectId, lock: Arc<Mutex<()>>) {
        drop(lock);
        self.fetching
            .remove_if(id, |_, l| Arc::strong_count(l) == 1);
    }

    /// Opens a verified copy of `id` if the cache holds one, without fetching and
    /// without waiting (pinned as by [`Cache::get`]); `None` if it holds none, one is
    /// being fetched or verified now, or the one it held was damaged (it is removed).
    pub fn cached(&self, id: &ObjectId) -> Option<Verified> {
        let lock = self.fetching.entry(*id).or_default().clone();
        let found = match lock.try_lock() {
            Ok(_guard) => self.find_locked(id),
            Err(_) => None,
        };
        self.done_with(id, lock);
        found
    }

    /// The cached, verified copy of `id`, pinned, if there is one (under `id`'s fetch
    /// lock). A damaged copy is removed.
    fn find_locked(&self, id: &ObjectId) -> Option<Verified> {
        let known = {
            let mut state = self.state.lock().expect("cache lock");
            let known = state.lru.get(id).map(|i| i.verified);
            if known.is_some() {
                *state.pinned.entry(*id).or_default() += 1;
            }
            known
        }?;
        match verify(&self.path(id), id, known) {
            Ok(v) => {
                if let Some(item) = self.state.lock().expect("cache lock").lru.get_mut(id) {
                    item.verified = Some(v.stamp);
                }
                Some(v)
            }
            Err(why) => {
                self.unpin(id);
                tracing::warn!("cached object {id} {why}: removed, it is fetched again when read");
                self.forget(id);
                None
            }
        }
    }

    fn get_locked<E>(
        &self,
        id: &ObjectId,
        fetch: impl FnOnce(&Path) -> Result<u64, E>,
    ) -> Result<Verified, CacheError<E>> {
        if let Some(v) = self.find_locked(id) {
            return Ok(v);
        }
        let tmp = self.staging(id);
        let size = fetch(&tmp).map_err(CacheError::Fetch)?;
        // Room first, then the file: the directory never holds more than the bound
        // allows, even for a moment (open files aside).
        self.reserve(&mut self.state.lock().expect("cache lock"), size);
        let (file, stamp) = self.install(id, &tmp, size, true)?;
        Ok(Verified { file, stamp })
    }

    /// A new name in the cache's staging directory for a copy of `id` (a fetch ahead of
    /// use writes there, then puts it in with [`Cache::offer_file`]).
    pub fn staging(&self, id: &ObjectId) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{id}.{}", self.seq.fetch_add(1, Ordering::Relaxed)))
    }

    /// Moves the staged copy `tmp` of `id` (just fetched and hashed on the way in; its
    /// `size` bytes reserved) into place, read-only, and lists it, pinned if `pin`. The
    /// stamp is taken from the file that is handed out, so a change from here on is
    /// seen. On failure nothing of it stays and the reservation is given back.
    fn install<E>(
        &self,
        id: &ObjectId,
        tmp: &Path,
        size: u64,
        pin: bool,
    ) -> Result<(fs::File, Stamp), CacheError<E>> {
        let path = self.path(id);
        let installed = fs::set_permissions(tmp, fs::Permissions::from_mode(READ_ONLY))
            .map_err(io_err(format!("making {} read-only", tmp.display())))
            .and_then(|()| self.place(tmp, &path))
            .and_then(|()| {
                let file =
                    fs::File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
                let stamp =
                    Stamp::of(&file).map_err(io_err(format!("examining {}", path.display())))?;
                Ok((file, stamp))
            });
        match installed {
            Ok((file, stamp)) => {
                self.list(id, size, stamp, pin);
                Ok((file, stamp))
            }
            Err(e) => {
                self.undo(Some(tmp), &path, size);
                Err(e)
            }
        }
    }

    /// Renames the staged `tmp` to the object file `path`.
    fn place<E>(&self, tmp: &Path, path: &Path) -> Result<(), CacheError<E>> {
        in_fan_out(path, || fs::rename(tmp, path))
            .map_err(io_err(format!("moving {} into place", tmp.display())))
    }

    /// Lists the object `id` of `size` bytes, just put in place with `stamp`, pinned if
    /// `pin`; evicts what the bound then requires.
    fn list(&self, id: &ObjectId, size: u64, stamp: Stamp, pin: bool) {
        let mut state = self.state.lock().expect("cache lock");
        state.lru.put(
            *id,
            Item {
                size,
                verified: Some(stamp),
            },
        );
        if pin {
            *state.pinned.entry(*id).or_default() += 1;
        }
        self.evict(&mut state);
    }

    /// Removes what a failed put left (`tmp`, if it was staged, and `path`) and gives its
    /// `size` bytes back.
    fn undo(&self, tmp: Option<&Path>, path: &Path, size: u64) {
        if let Some(tmp) = tmp {
            let _ = fs::remove_file(tmp);
        }
        let _ = fs::remove_file(path);
        self.state.lock().expect("cache lock").total -= size;
    }

    /// Whether a caller is fetching, verifying or putting in `id` right now (through
    /// [`Cache::get`], [`Cache::cached`] or an offer): another fetch of it would be a
    /// second download.
    pub fn is_fetching(&self, id: &ObjectId) -> bool {
        self.fetching.contains_key(id)
    }

    /// Whether the cache lists `id` (without checking its file: [`Cache::cached`] does).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.state.lock().expect("cache lock").lru.contains(id)
    }

    /// Puts `bytes`, which the caller has verified to be object `id`, into the cache,
    /// unpinned, as something fetched ahead of use: unless the cache holds `id` already
    /// or it is being fetched or verified now, and only if room can be made by evicting
    /// unpinned objects, so the bound holds and no open file goes. Returns whether it
    /// was put. Never waits for another fetch.
    pub fn offer(&self, id: &ObjectId, bytes: &[u8]) -> Result<bool, CacheError> {
        let size = bytes.len() as u64;
        self.if_room(id, size, || self.write_offered(id, bytes, size))
    }

    /// Runs `put` for object `id` of `size` bytes offered ahead of use, with room
    /// reserved for it, if nobody fetches `id` now, the cache does not hold it, and
    /// evicting unpinned objects makes room; returns false otherwise. Never waits for
    /// another fetch.
    fn if_room(
        &self,
        id: &ObjectId,
        size: u64,
        put: impl FnOnce() -> Result<bool, CacheError>,
    ) -> Result<bool, CacheError> {
        let lock = self.fetching.entry(*id).or_default().clone();
        let result = match lock.try_lock() {
            Ok(_guard) => {
                let room = {
                    let mut state = self.state.lock().expect("cache lock");
                    let room = !state.lru.contains(id) && self.make_room(&state, size);
                    if room {
                        self.reserve(&mut state, size);
                    }
                    room
                };
                if room { put() } else { Ok(false) }
            }
            Err(_) => Ok(false),
        };
        self.done_with(id, lock);
        result
    }

    /// Writes `bytes` as object `id` (room for its `size` reserved) and lists it.
    ///
    /// Written straight at the object's own name, with no staging name and no rename (a
    /// pack puts hundreds of small objects in, and the rename cost as much as the
    /// write): the file is listed only once all its bytes are in, under `id`'s fetch
    /// lock, so no reader of this process can get it before; and a file left half
    /// written by a crash is listed by the next run's scan with no stamp, so it is
    /// hashed before any use and fetched again (stamps never outlive a process). Created
    /// new and read-only, and stamped through the descriptor it was written with: no
    /// chmod, no second open.
    fn write_offered(&self, id: &ObjectId, bytes: &[u8], size: u64) -> Result<bool, CacheError> {
        let path = self.path(id);
        let put = self
            .create(&path)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| Stamp::of(&f)))
            .map_err(io_err(format!("writing {}", path.display())));
        match put {
            Ok(stamp) => {
                self.list(id, size, stamp, false);
                Ok(true)
            }
            Err(e) => {
                self.undo(None, &path, size);
                Err(e)
            }
        }
    }

    /// Creates the object file `path`, new and read-only. A file already there is not
    /// listed (the caller checked, under the object's fetch lock), so nobody uses it:
    /// one a removal failed to take away. It is replaced, never written into.
    fn create(&self, path: &Path) -> io::Result<fs::File> {
        let new = || {
            in_fan_out(path, || {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(READ_ONLY)
                    .open(path)
            })
        };
        match new() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(path)?;
                new()
            }
            other => other,
        }
    }

    /// Whether `size` more bytes could go in now by evicting unpinned objects.
    pub fn has_room(&self, size: u64) -> bool {
        self.make_room(&self.state.lock().expect("cache lock"), size)
    }

    /// Puts the staged file `tmp` ([`Cache::staging`]), which the caller has verified to
    /// be object `id` of `size` bytes, into the cache as [`Cache::offer`] puts bytes:
    /// unpinned, only if the cache neither holds `id` nor is fetching it, and only if
    /// evicting unpinned objects makes room. Returns whether it was put; `tmp` is gone
    /// either way.
    pub fn offer_file(&self, id: &ObjectId, tmp: &Path, size: u64) -> Result<bool, CacheError> {
        let result = self.if_room(id, size, || {
            self.install(id, tmp, size, false).map(|_| true)
        });
        if !matches!(result, Ok(true)) {
            let _ = fs::remove_file(tmp);
        }
        result
    }

    /// Counts `size` bytes about to be put in the cache, evicting unpinned objects first
    /// (least recently used first) as far as it takes to stay within the bound.
    fn reserve(&self, state: &mut State, size: u64) {
        state.total += size;
        self.evict(state);
    }

    /// Whether `size` more bytes can fit under the bound by evicting unpinned objects
    /// (evicting nothing if not).
    fn make_room(&self, state: &State, size: u64) -> bool {
        if state.total + size <= self.max_bytes {
            return true;
        }
        let evictable: u64 = state
            .lru
            .iter()
            .filter(|(id, _)| !state.pinned.contains_key(*id))
            .map(|(_, item)| item.size)
            .sum();
        state.total - evictable + size <= self.max_bytes
    }

    /// Unlists `id` and removes whatever is at its name: its file, or a directory
    /// planted there (which no fetch could otherwise replace).
    fn forget(&self, id: &ObjectId) {
        let mut state = self.state.lock().expect("cache lock");
        if let Some(item) = state.lru.pop(id) {
            state.total -= item.size;
        }
        remove_any(&self.path(id));
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
mod tests;
