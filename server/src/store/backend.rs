//! The seam under the store: where objects and refs live.
//!
//! A [`Store`](super::Store) reaches its objects through an [`ObjectBackend`] and its refs
//! through a [`RefBackend`]; the transaction, importers, assembler and every reader run
//! unchanged on any of them. Backends store bytes and ids and nothing else: verifying an
//! object against its id, decoding it, signing and locking are the store's business.
//!
//! Ref names are paths such as `roots/web` or `packages/HASH` (see [`super::RefName`]);
//! a backend only needs them to be `/`-separated, non-empty, printable components.

use super::StoreError;
use canopy_protocol::ObjectId;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

/// Where a store's objects live: content-addressed, immutable, put once.
pub trait ObjectBackend: Send + Sync {
    /// Where the objects are, for messages: a directory, a bucket URL, `memory`.
    fn location(&self) -> String;

    /// Makes each staged file (written by a transaction, complete and closed) the
    /// object of its id, durably, before returning. Each put is atomic — a reader sees
    /// the whole object or none — and idempotent: an object already present is kept
    /// and its staged file removed. Returns, in order, whether each was already present.
    /// Staged files are consumed either way.
    fn put(&self, staged: Vec<(ObjectId, PathBuf)>) -> Result<Vec<bool>, StoreError>;

    /// A reader over an object's bytes, not verified here. A missing object is
    /// [`StoreError::Missing`].
    fn get(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at the
    /// end of the object).
    fn read_at(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError>;

    /// The object's size in bytes; [`StoreError::Missing`] if absent.
    fn size(&self, id: &ObjectId) -> Result<u64, StoreError>;

    /// Whether the object is present.
    fn exists(&self, id: &ObjectId) -> Result<bool, StoreError>;

    /// Every object present, in no particular order.
    fn list(&self) -> Result<Vec<ObjectId>, StoreError>;

    /// Deletes an object and returns the bytes freed. Only garbage collection calls
    /// this.
    fn delete(&self, id: &ObjectId) -> Result<u64, StoreError>;

    /// The object's file on this machine, if the backend keeps one (for hard-linked
    /// checkouts and sendfile). The path names a file that is never written again; it
    /// may be absent (check, or handle `NotFound`).
    fn local_path(&self, _id: &ObjectId) -> Option<PathBuf> {
        None
    }

    /// The object as an open file on this machine, if the backend has one — its own
    /// (see [`local_path`](Self::local_path)) or a read cache's verified copy —, for
    /// serving ranges and positioned reads from disk; `None` if it has none.
    fn open_file(&self, id: &ObjectId) -> Result<Option<File>, StoreError> {
        let Some(path) = self.local_path(id) else {
            return Ok(None);
        };
        match super::local::open_object_file(&path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing {
                id: *id,
                store: self.location(),
            }),
            Err(source) => Err(StoreError::Io {
                what: format!("opening {}", path.display()),
                source,
            }),
        }
    }

    /// Whether [`exists`](Self::exists) is cheap enough to ask for every object a writer
    /// stages (a stat, a map lookup). When it is not (a request over the network), a
    /// transaction stages everything it writes and lets [`put`](Self::put) say what was
    /// there.
    fn cheap_exists(&self) -> bool {
        true
    }

    /// Protects `ids` — every object a transaction is about to reference, present or
    /// not — from a garbage collection running on another machine, until the returned
    /// guard is dropped; waits while one is deleting. Backends written by one process at
    /// a time (under the store's lock) have nothing to do.
    fn protect(&self, _ids: &[ObjectId]) -> Result<Held, StoreError> {
        Ok(Held::nothing())
    }

    /// Starts a garbage collection: excludes others and says what running writers on
    /// other machines protect, to be kept as if a ref reached it.
    fn begin_gc(&self) -> Result<GcScope, StoreError> {
        Ok(GcScope {
            protected: HashSet::new(),
            held: Held::nothing(),
        })
    }
}

/// Something held until dropped: a writer's lease, the garbage collector's lock.
pub struct Held {
    _guard: Option<Box<dyn Send>>,
}

impl Held {
    /// Nothing to release.
    pub fn nothing() -> Self {
        Held { _guard: None }
    }

    /// Holds `guard`, whose drop releases what it stands for.
    pub fn new(guard: impl Send + 'static) -> Self {
        Held {
            _guard: Some(Box::new(guard)),
        }
    }
}

/// What a garbage collection may assume while it runs.
pub struct GcScope {
    /// Objects running writers protect: kept whatever the refs reach.
    pub protected: HashSet<ObjectId>,
    /// Keeps other garbage collections out until dropped.
    pub held: Held,
}

/// Where a store's refs live: names pointing at objects, changed only by
/// compare-and-swap, and an append-only log per ref (the reflog).
pub trait RefBackend: Send + Sync {
    /// Where the refs are, for messages.
    fn location(&self) -> String;

    /// What `name` points at, if it exists.
    fn get(&self, name: &str) -> Result<Option<ObjectId>, StoreError>;

    /// Every ref under `prefix` (e.g. `roots`), as (the rest of its name, id), sorted by
    /// name. A ref removed while listing is left out.
    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, StoreError>;

    /// The names of the refs under `prefix`, sorted, without reading what they point
    /// at (so a ref damaged on disk does not keep the others from being named).
    fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list(prefix)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Points `name` at `new` (or removes it, with `None`) if it holds `expected` now
    /// (`None`: if it does not exist); otherwise changes nothing and answers
    /// [`StoreError::Conflict`] with what it holds. Durable on return.
    fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
    ) -> Result<(), StoreError>;

    /// Appends one entry (a line of text, no newline) to the log of `name`, durably.
    /// Entries are never rewritten; the log outlives the ref.
    fn append_log(&self, name: &str, entry: &str) -> Result<(), StoreError>;

    /// The log of `name`, oldest entry first; empty if it has none.
    fn read_log(&self, name: &str) -> Result<Vec<String>, StoreError>;

    /// The refs under `prefix` that have a log, whether or not the ref still exists,
    /// as the rest of their names (`web` for `roots/web`), in no particular order.
    fn log_names(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}
