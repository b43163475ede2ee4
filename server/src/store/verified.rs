//! Object files checked against their ids before they are served.
//!
//! HTTP sends object files with `sendfile` and NFS reads ranges of them straight into
//! replies, so neither would see a file damaged on disk (a flipped bit, a truncation,
//! an edit): hosts over HTTP verify and refuse it, but an HTTP cache in front would keep
//! the wrong bytes for good (objects are immutable), and NFS clients verify nothing.
//! So a server hashes each object's file once before its bytes first leave, and
//! remembers the file as it then was (device, inode, size, modification and change
//! times): a file written over, truncated, replaced or even `chmod`-ed since is hashed
//! again before it is served. A file that does not hold its object's bytes is an error
//! naming the object and `canopy fsck --repair`, never the wrong bytes.

use super::{Store, StoreError};
use canopy_protocol::{Hasher, ObjectId};
use lru::LruCache;
use std::fs::{File, Metadata};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Mutex, PoisonError};

/// Files remembered as verified: a few roots' worth. One forgotten is hashed again
/// when next served, which costs time, never correctness.
const REMEMBERED: usize = 256 * 1024;

/// A file as it was when verified: any write, truncation, replacement or metadata
/// change gives another stamp.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The object files found to hold their objects' bytes, and as what files.
pub(super) struct Verified {
    files: Mutex<LruCache<ObjectId, Stamp>>,
}

impl Default for Verified {
    fn default() -> Self {
        Verified {
            files: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).expect("nonzero"),
            )),
        }
    }
}

impl Verified {
    fn knows(&self, id: &ObjectId, meta: &Metadata) -> bool {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.get(id) == Some(&Stamp::of(meta))
    }

    fn remember(&self, id: ObjectId, meta: &Metadata) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.put(id, Stamp::of(meta));
    }
}

impl Store {
    /// Whether object `id`'s file, whose metadata is `meta`, was verified as it is now:
    /// a cheap test before [`Store::verify_file`].
    pub fn file_verified(&self, id: &ObjectId, meta: &Metadata) -> bool {
        self.verified.knows(id, meta)
    }

    /// Checks that `file` (object `id`'s file, opened) holds the object's bytes,
    /// hashing it unless it was verified as it is now. Reads the whole file when it
    /// hashes: call it off the threads that must not block.
    pub fn verify_file(&self, id: &ObjectId, file: &File) -> Result<(), StoreError> {
        self.verify_file_reporting(id, file, &|_| {})
    }

    /// [`Store::verify_file`], telling `progress` how many bytes from the start have
    /// been hashed as the hashing goes (not at all for a file verified before).
    pub fn verify_file_reporting(
        &self,
        id: &ObjectId,
        file: &File,
        progress: &dyn Fn(u64),
    ) -> Result<(), StoreError> {
        let io_err = |source: io::Error| StoreError::Io {
            what: format!("reading object {id} to verify it"),
            source,
        };
        let before = file.metadata().map_err(io_err)?;
        if self.verified.knows(id, &before) {
            return Ok(());
        }
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut offset = 0u64;
        loop {
            let n = match file.read_at(&mut buf, offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            io::Write::write_all(&mut hasher, &buf[..n]).map_err(io_err)?;
            offset += n as u64;
            progress(offset);
        }
        let actual = hasher.finish();
        if actual != *id {
            return Err(StoreError::Corrupt { id: *id, actual });
        }
        // Remembered only if the file did not change while it was read.
        let after = file.metadata().map_err(io_err)?;
        if Stamp::of(&before) == Stamp::of(&after) {
            self.verified.remember(*id, &after);
        }
        Ok(())
    }

    /// Checks object `id`'s file on this machine, as [`Store::verify_file`] does; a
    /// backend without files checks what it reads itself.
    pub fn verify_local(&self, id: &ObjectId) -> Result<(), StoreError> {
        // The common case, a file verified before, costs one `stat`.
        if let Some(path) = self.local_path(id)
            && let Ok(meta) = std::fs::metadata(path)
            && self.verified.knows(id, &meta)
        {
            return Ok(());
        }
        match self.open_file(id)? {
            Some(file) => self.verify_file(id, &file),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_changed_file_is_verified_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        fs_write(&path, b"hello");
        let id = ObjectId::of(b"hello");
        let store = Store::memory(&dir.path().join("state")).unwrap();
        let file = File::open(&path).unwrap();
        store.verify_file(&id, &file).unwrap();
        assert!(store.file_verified(&id, &file.metadata().unwrap()));
        // Same size, other bytes: the change time moves, so it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs_write(&path, b"jello");
        let file = File::open(&path).unwrap();
        assert!(!store.file_verified(&id, &file.metadata().unwrap()));
        match store.verify_file(&id, &file) {
            Err(StoreError::Corrupt { actual, .. }) => assert_eq!(actual, ObjectId::of(b"jello")),
            other => panic!("expected a corrupt object, got {:?}", other.err()),
        }
    }

    fn fs_write(path: &std::path::Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }
}
