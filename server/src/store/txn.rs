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
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a committed transaction added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Objects that were not in the store before.
    pub new_objects: u64,
    /// Their total size in bytes.
    pub new_bytes: u64,
    /// Of these, objects that were present but damaged, and were replaced (only when
    /// the store is [reimporting](Store::reimporting)).
    pub replaced: u64,
}

/// Why a blob could not be stored: the source failed, or the store did.
#[derive(Debug)]
pub enum BlobError {
    /// Reading the content failed (truncated archive, size limit, I/O error).
    Source(io::Error),
    /// Writing to the store failed.
    Store(StoreError),
}

/// Bytes [`Txn::put_blob`] reads at a time.
const COPY_BUF: usize = 256 * 1024;

/// A ref move a transaction makes when it commits.
struct RefMove {
    name: RefName,
    expected: Option<ObjectId>,
    /// `None` removes the ref.
    new: Option<ObjectId>,
}

/// A set of writes that becomes visible all at once, or not at all.
pub struct Txn<'s> {
    store: &'s Store,
    dir: PathBuf,
    /// Staging directories of the transactions absorbed into this one.
    absorbed: Vec<PathBuf>,
    /// Staged objects: file and size.
    staged: HashMap<ObjectId, (PathBuf, u64)>,
    /// Present objects found damaged, whose staged copies replace them.
    replace: Vec<ObjectId>,
    refs: Vec<RefMove>,
    seq: u64,
    stats: TxnStats,
    done: bool,
    /// What the reflog says moved the roots (see [`Txn::operation`]).
    operation: &'static str,
    /// The buffer [`Txn::put_blob`] copies through, kept between blobs.
    buf: Vec<u8>,
}

impl<'s> Txn<'s> {
    /// Starts a transaction staging in `dir` (created here).
    pub(super) fn new(store: &'s Store, dir: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Txn {
            store,
            dir,
            absorbed: Vec::new(),
            staged: HashMap::new(),
            replace: Vec::new(),
            refs: Vec::new(),
            seq: 0,
            stats: TxnStats::default(),
            done: false,
            operation: "commit",
            buf: Vec::new(),
        })
    }

    /// The store this transaction writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Whether staging the object again can be skipped: it is staged already, or the
    /// backend can tell cheaply that it has it. (A remote backend is not asked object by
    /// object: its [`put`](super::backend::ObjectBackend::put) says what it had.)
    /// When the store is [reimporting](Store::reimporting), every present object is
    /// checked, and a damaged one is not known: it is staged again, to replace it.
    fn known(&self, id: &ObjectId) -> Result<bool, StoreError> {
        if self.staged.contains_key(id) {
            return Ok(true);
        }
        let objects = self.store.objects();
        if self.store.reimports() {
            return Ok(objects.exists(id)? && !self.store.damaged(id)?);
        }
        Ok(objects.cheap_exists() && objects.exists(id)?)
    }

    /// What this transaction has staged so far: new objects, on a backend that tells
    /// cheaply what it has; on one that does not, objects it may have already too (the
    /// stats [`commit`](Self::commit) returns are exact).
    pub fn stats(&self) -> TxnStats {
        TxnStats {
            new_objects: self.staged.len() as u64,
            new_bytes: self.staged.values().map(|(_, size)| size).sum(),
            replaced: self.replace.len() as u64,
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
        if self.store.reimports() && self.store.objects().exists(&id)? {
            self.replace.push(id);
        }
        self.staged.insert(id, (tmp, size));
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
        // One buffer per transaction, not per blob: most blobs are a few KiB, and a fresh
        // zeroed 256 KiB for each would be mostly wasted work.
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUF, 0);
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
        self.buf = buf;
        // Created 0644 above, but the umask may have narrowed it; hard-linked checkouts
        // compare against these bits.
        if !umask_keeps(0o644) {
            file.set_permissions(fs::Permissions::from_mode(0o644))
                .ctx(|| format!("chmod {}", tmp.display()))
                .map_err(BlobError::Store)?;
        }
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

    /// Stages the file at `path` (on the store's file system, e.g. under its `tmp/`) as
    /// object `id` of `size` bytes, moving it rather than copying it. The caller has
    /// verified that its content hashes to `id` (a fetch from another server does as
    /// it downloads).
    pub fn adopt_verified(
        &mut self,
        id: ObjectId,
        path: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let tmp = self.next_tmp();
        fs::rename(path, &tmp).ctx(|| format!("moving {} to {}", path.display(), tmp.display()))?;
        // Hard-linked checkouts compare against these bits.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
            .ctx(|| format!("chmod {}", tmp.display()))?;
        self.stage(id, tmp, size)
    }

    /// Stores an encoded object as it is and returns its id: a tree or commit fetched
    /// from another store, whose bytes (and so id and signature) must not change.
    pub fn put_encoded_object(&mut self, bytes: &[u8]) -> Result<ObjectId, StoreError> {
        self.put_encoded(bytes)
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
            new: Some(commit.0),
        });
    }

    /// Removes a root when the transaction commits, if it is still at `expected`. Its
    /// reflog stays, and with it the way back (`roots rollback`) until gc's grace period
    /// is over.
    pub fn remove_root(&mut self, name: &RootName, expected: CommitId) {
        self.refs.push(RefMove {
            name: RefName::Root(name.clone()),
            expected: Some(expected.0),
            new: None,
        });
    }

    /// Points a package ref that holds `expected` at a new record `package` (a record
    /// remade because the old one was damaged).
    pub fn replace_package(&mut self, key: &ArchiveHash, expected: PackageId, package: PackageId) {
        self.refs.push(RefMove {
            name: RefName::Package(*key),
            expected: Some(expected.0),
            new: Some(package.0),
        });
    }

    /// Removes a package record's ref (`key`: the archive's hash, or a named import's
    /// key) when the transaction commits, if it still points at `expected`.
    pub fn remove_package(&mut self, key: &ArchiveHash, expected: PackageId) {
        self.refs.push(RefMove {
            name: RefName::Package(*key),
            expected: Some(expected.0),
            new: None,
        });
    }

    /// Names what this transaction's root moves are, in the reflog: `assemble`,
    /// `upgrade`, `rollback`, `remove`… (default `commit`).
    pub fn operation(&mut self, op: &'static str) {
        self.operation = op;
    }

    /// Records a package import when the transaction commits. An archive is imported
    /// once: if another writer recorded it meanwhile, its record is kept.
    pub fn set_package(&mut self, archive: &ArchiveHash, package: PackageId) {
        self.refs.push(RefMove {
            name: RefName::Package(*archive),
            expected: None,
            new: Some(package.0),
        });
    }

    /// Takes over everything `part` staged and the refs it would move, so that one
    /// commit makes both visible (one durable step for many imports instead of one
    /// each). Objects this transaction already stages are dropped from `part`. Returns
    /// the ids `part` added, each with its size, and how many damaged objects it
    /// replaces that this transaction did not already.
    pub fn absorb(&mut self, mut part: Txn<'s>) -> Result<(Vec<(ObjectId, u64)>, u64), StoreError> {
        let mut added = Vec::new();
        for (id, (path, size)) in std::mem::take(&mut part.staged) {
            if self.staged.contains_key(&id) {
                fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
                continue;
            }
            self.staged.insert(id, (path, size));
            added.push((id, size));
        }
        let mut replaced = 0;
        for id in std::mem::take(&mut part.replace) {
            if !self.replace.contains(&id) {
                self.replace.push(id);
                replaced += 1;
            }
        }
        self.refs.append(&mut part.refs);
        // The part's files now belong to this transaction: its directory goes when
        // this one commits or is dropped, not before.
        part.done = true;
        self.absorbed.push(part.dir.clone());
        self.absorbed.append(&mut part.absorbed);
        Ok((added, replaced))
    }

    /// Makes everything durable and visible: objects first, refs last.
    pub fn commit(self) -> Result<TxnStats, StoreError> {
        self.commit_telling_new().map(|(stats, _)| stats)
    }

    /// As [`commit`](Self::commit), and says which objects were not in the store before
    /// (what a batch of imports reports per archive).
    pub fn commit_telling_new(mut self) -> Result<(TxnStats, HashSet<ObjectId>), StoreError> {
        // A damaged object goes just before its replacement arrives: a crash between
        // leaves it missing, which is no worse, and fsck says so.
        for id in std::mem::take(&mut self.replace) {
            match self.store.objects().delete(&id) {
                Ok(_) | Err(StoreError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
            self.stats.replaced += 1;
        }
        let (staged, sizes): (Vec<_>, Vec<_>) = std::mem::take(&mut self.staged)
            .into_iter()
            .map(|(id, (path, size))| ((id, path), size))
            .unzip();
        // Everything this transaction references that is not reachable yet is staged,
        // present or not (package trees reused by assemble are reached by their refs).
        let ids: Vec<ObjectId> = staged.iter().map(|(id, _)| *id).collect();
        // One step per object staged, counted here rather than as each is written so
        // that a write staged by several threads (see `absorb`) takes as many steps as
        // the same write staged by one.
        for _ in &ids {
            crash::point("object staged");
        }
        let _lease = self.store.objects().protect(&ids)?;
        let existed = self.store.objects().put(staged)?;
        let mut new = HashSet::new();
        for ((was_there, size), id) in existed.into_iter().zip(sizes).zip(ids) {
            if !was_there {
                self.stats.new_objects += 1;
                self.stats.new_bytes += size;
                new.insert(id);
            }
        }
        for m in std::mem::take(&mut self.refs) {
            crash::point("before ref write");
            if let RefName::Root(root) = &m.name {
                // The entry first: a crash before the move leaves an entry the reflog
                // reads as interrupted, never a move without its entry.
                let (old, new) = (m.expected.map(CommitId), m.new.map(CommitId));
                self.store.log_root_move(root, self.operation, old, new)?;
                crash::point("reflog written");
            }
            let name = m.name.to_string();
            match self.store.refs().compare_and_swap(&name, m.expected, m.new) {
                Ok(()) => {}
                // An archive another writer recorded meanwhile keeps that record.
                Err(StoreError::Conflict { found: Some(_), .. })
                    if matches!(m.name, RefName::Package(_)) && m.new.is_some() => {}
                Err(e) => return Err(e),
            }
            crash::point("ref written");
        }
        self.done = true;
        for dir in std::iter::once(&self.dir).chain(&self.absorbed) {
            fs::remove_dir_all(dir).ctx(|| format!("removing {}", dir.display()))?;
        }
        Ok((self.stats, new))
    }
}

/// Whether files created with `mode` get exactly it: the process's umask clears none of
/// its bits. Read once from `/proc/self/status` (the umask cannot be read without
/// changing it otherwise); when it cannot be read, the answer is no, and callers set
/// the mode themselves.
fn umask_keeps(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let umask = UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    umask.is_some_and(|u| u & mode == 0)
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned: nothing it staged was ever visible, so dropping it is the rollback.
            let _ = fs::remove_dir_all(&self.dir);
            for dir in &self.absorbed {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}
