//! Transactions: the writers' one way into the store.
//!
//! Objects are staged as files in the store's local `tmp/`, and only [`Txn::commit`]
//! hands them to the object backend (durable and visible on return) and then moves the
//! refs, each by compare-and-swap. A crash at any point leaves the previous refs intact
//! and, at worst, unreferenced objects that `gc` removes; a transaction dropped without
//! commit leaves nothing at all.

use super::{IoContext, RefName, Store, StoreError};
use crate::crash;
use canopy_protocol::{
    ArchiveHash, BlobId, Commit, CommitId, Hasher, ObjectId, Package, PackageId, RootName, Tree,
    TreeId,
};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// What a committed transaction added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Objects that were not in the store before.
    pub new_objects: u64,
    /// Their total size in bytes.
    pub new_bytes: u64,
}

/// Why a blob could not be stored: the source failed, or the store did.
#[derive(Debug)]
pub enum BlobError {
    /// Reading the content failed (truncated archive, size limit, I/O error).
    Source(io::Error),
    /// Writing to the store failed.
    Store(StoreError),
}

/// A ref move a transaction makes when it commits.
struct RefMove {
    name: RefName,
    expected: Option<ObjectId>,
    new: ObjectId,
}

/// A set of writes that becomes visible all at once, or not at all.
pub struct Txn<'s> {
    store: &'s Store,
    dir: PathBuf,
    /// Staged objects: file and size.
    staged: HashMap<ObjectId, (PathBuf, u64)>,
    refs: Vec<RefMove>,
    seq: u64,
    stats: TxnStats,
    done: bool,
}

impl<'s> Txn<'s> {
    /// Starts a transaction staging in `dir` (created here).
    pub(super) fn new(store: &'s Store, dir: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Txn {
            store,
            dir,
            staged: HashMap::new(),
            refs: Vec::new(),
            seq: 0,
            stats: TxnStats::default(),
            done: false,
        })
    }

    /// The store this transaction writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Whether staging the object again can be skipped: it is staged already, or the
    /// backend can tell cheaply that it has it. (A remote backend is not asked object by
    /// object: its [`put`](super::backend::ObjectBackend::put) says what it had.)
    fn known(&self, id: &ObjectId) -> Result<bool, StoreError> {
        let objects = self.store.objects();
        Ok(self.staged.contains_key(id) || (objects.cheap_exists() && objects.exists(id)?))
    }

    /// What this transaction has staged so far: new objects, on a backend that tells
    /// cheaply what it has; on one that does not, objects it may have already too (the
    /// stats [`commit`](Self::commit) returns are exact).
    pub fn stats(&self) -> TxnStats {
        TxnStats {
            new_objects: self.staged.len() as u64,
            new_bytes: self.staged.values().map(|(_, size)| size).sum(),
        }
    }

    fn next_tmp(&mut self) -> PathBuf {
        self.seq += 1;
        self.dir.join(self.seq.to_string())
    }

    /// Keeps the staged file at `tmp` as object `id`, or drops it if the id is known.
    fn stage(&mut self, id: ObjectId, tmp: PathBuf, size: u64) -> Result<(), StoreError> {
        if self.known(&id)? {
            return fs::remove_file(&tmp).ctx(|| format!("removing {}", tmp.display()));
        }
        self.staged.insert(id, (tmp, size));
        crash::point("object staged");
        Ok(())
    }

    /// Streams content into the store, hashing it on the way; memory use is one buffer
    /// whatever the size. Returns the blob id and the number of bytes read.
    pub fn put_blob(&mut self, mut content: impl Read) -> Result<(BlobId, u64), BlobError> {
        let tmp = self.next_tmp();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))
            .map_err(BlobError::Store)?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    drop(file);
                    let _ = fs::remove_file(&tmp);
                    return Err(BlobError::Source(e));
                }
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .ctx(|| format!("writing {}", tmp.display()))
                .map_err(BlobError::Store)?;
            size += n as u64;
        }
        // Created 0644 above, but the umask may have narrowed it; hard-linked checkouts
        // compare against these bits.
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .ctx(|| format!("chmod {}", tmp.display()))
            .map_err(BlobError::Store)?;
        let id = hasher.finish();
        self.stage(id, tmp, size).map_err(BlobError::Store)?;
        Ok((BlobId(id), size))
    }

    /// Stores an encoded metadata object and returns its id.
    fn put_encoded(&mut self, bytes: &[u8]) -> Result<ObjectId, StoreError> {
        let id = ObjectId::of(bytes);
        if self.known(&id)? {
            return Ok(id);
        }
        let tmp = self.next_tmp();
        fs::write(&tmp, bytes).ctx(|| format!("writing {}", tmp.display()))?;
        self.stage(id, tmp, bytes.len() as u64)?;
        Ok(id)
    }

    /// Stores a tree.
    pub fn put_tree(&mut self, tree: &Tree) -> Result<TreeId, StoreError> {
        self.put_encoded(&tree.encode()).map(TreeId)
    }

    /// Stores a package record.
    pub fn put_package(&mut self, package: &Package) -> Result<PackageId, StoreError> {
        self.put_encoded(&package.encode()).map(PackageId)
    }

    /// Stores a commit.
    pub fn put_commit(&mut self, commit: &Commit) -> Result<CommitId, StoreError> {
        self.put_encoded(&commit.encode()).map(CommitId)
    }

    /// Reads a tree from this transaction or the store.
    pub fn tree(&self, id: &TreeId) -> Result<Tree, StoreError> {
        match self.staged.get(&id.0) {
            Some((path, _)) => {
                let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
                let actual = ObjectId::of(&bytes);
                if actual != id.0 {
                    return Err(StoreError::Corrupt { id: id.0, actual });
                }
                super::decode_tree(id, &bytes)
            }
            None => self.store.tree(id),
        }
    }

    /// Reads an object from this transaction or the store, unchecked: callers that
    /// stream it check what they read against its id.
    pub fn open_object(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError> {
        match self.staged.get(id) {
            Some((path, _)) => Ok(Box::new(
                fs::File::open(path).ctx(|| format!("opening {}", path.display()))?,
            )),
            None => self.store.objects().get(id),
        }
    }

    /// Reads a blob from this transaction or the store, checked against its id.
    pub fn blob(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.open_object(&id.0)?
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading object {id}"))?;
        let actual = ObjectId::of(&bytes);
        if actual != id.0 {
            return Err(StoreError::Corrupt { id: id.0, actual });
        }
        Ok(bytes)
    }

    /// Moves a root from `expected` (its current commit as this writer read it, `None`
    /// for a new root) to `commit` when the transaction commits. If another writer
    /// moved it meanwhile, the commit fails with [`StoreError::Conflict`] and the root
    /// keeps the other writer's commit.
    pub fn set_root(&mut self, name: &RootName, expected: Option<CommitId>, commit: CommitId) {
        self.refs.push(RefMove {
            name: RefName::Root(name.clone()),
            expected: expected.map(|c| c.0),
            new: commit.0,
        });
    }

    /// Records a package import when the transaction commits. An archive is imported
    /// once: if another writer recorded it meanwhile, its record is kept.
    pub fn set_package(&mut self, archive: &ArchiveHash, package: PackageId) {
        self.refs.push(RefMove {
            name: RefName::Package(*archive),
            expected: None,
            new: package.0,
        });
    }

    /// Makes everything durable and visible: objects first, refs last.
    pub fn commit(mut self) -> Result<TxnStats, StoreError> {
        let (staged, sizes): (Vec<_>, Vec<_>) = std::mem::take(&mut self.staged)
            .into_iter()
            .map(|(id, (path, size))| ((id, path), size))
            .unzip();
        // Everything this transaction references that is not reachable yet is staged,
        // present or not (package trees reused by assemble are reached by their refs).
        let ids: Vec<ObjectId> = staged.iter().map(|(id, _)| *id).collect();
        let _lease = self.store.objects().protect(&ids)?;
        let existed = self.store.objects().put(staged)?;
        for (was_there, size) in existed.into_iter().zip(sizes) {
            if !was_there {
                self.stats.new_objects += 1;
                self.stats.new_bytes += size;
            }
        }
        for m in std::mem::take(&mut self.refs) {
            crash::point("before ref write");
            let name = m.name.to_string();
            match self
                .store
                .refs()
                .compare_and_swap(&name, m.expected, Some(m.new))
            {
                Ok(()) => {}
                Err(StoreError::Conflict { found: Some(_), .. })
                    if matches!(m.name, RefName::Package(_)) => {}
                Err(e) => return Err(e),
            }
            crash::point("ref written");
        }
        self.done = true;
        fs::remove_dir_all(&self.dir).ctx(|| format!("removing {}", self.dir.display()))?;
        Ok(self.stats)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned: nothing it staged was ever visible, so dropping it is the rollback.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
