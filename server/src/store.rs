//! The object store on disk.
//!
//! ```text
//! STORE/config                 format line; its presence marks a complete `init`
//! STORE/lock                   flock: shared for readers, exclusive for the one writer
//! STORE/keys/ed25519.secret    the signing key (hex seed, mode 0600)
//! STORE/objects/ab/cdef…       one file per object, named by its SHA-256
//! STORE/refs/roots/NAME        current commit of a root
//! STORE/refs/packages/HASH     package record of the archive whose SHA-256 is HASH
//! STORE/tmp/                   in-flight transactions; removed by the next writer
//! ```
//!
//! All writes go through a [`Txn`]: objects are staged in `tmp/`, and only
//! [`Txn::commit`] makes them durable (one `syncfs`), moves them into `objects/`, makes
//! the moves durable (a second `syncfs`) and then writes the refs, each ref with fsync +
//! rename + fsync of its directory. A crash at any
//! point leaves the previous refs intact and, at worst, unreferenced objects that `gc`
//! removes; a transaction that is dropped without commit leaves nothing at all.

use crate::crash;
use canopy_protocol::{
    ArchiveHash, BlobId, Commit, CommitId, DecodeError, Hasher, ObjectId, Package, PackageId,
    RootName, SigningKey, Tree, TreeId, VerifyingKey,
};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const FORMAT: &str = "canopy-store 1\n";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holds no initialised store.
    #[error("no canopy store at {0}: run `canopy init` first (or pass --store / set CANOPY_STORE)")]
    NotAStore(PathBuf),
    /// The store was made by an incompatible version.
    #[error("store at {path} has format {found:?}, this canopy understands {FORMAT:?}")]
    UnsupportedFormat {
        /// The store.
        path: PathBuf,
        /// Its config line.
        found: String,
    },
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A referenced object is not in the store.
    #[error("object {id} is missing from the store at {store}; run `canopy fsck`")]
    Missing {
        /// The object.
        id: ObjectId,
        /// The store.
        store: PathBuf,
    },
    /// An object's bytes do not hash to its name.
    #[error(
        "object {id} in the store is corrupt (its content hashes to {actual}); run `canopy fsck`"
    )]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// What its content hashes to.
        actual: ObjectId,
    },
    /// An object is not the kind of object expected, or not canonical.
    #[error("object {id} is not a valid {kind}: {source}")]
    Decode {
        /// The object.
        id: ObjectId,
        /// The kind expected.
        kind: &'static str,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// A ref file is malformed.
    #[error("ref {path} is malformed: {reason}")]
    BadRef {
        /// The ref file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signing key is unreadable.
    #[error("signing key {path} is unusable: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Attaches "what was being done" to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            what: what(),
            source,
        })
    }
}

/// Whether a [`Store`] is opened to read or to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Shared lock: many readers, no writer meanwhile.
    Read,
    /// Exclusive lock: the one writer; cleans up `tmp/` left by crashed writers.
    Write,
    /// No lock, for long-running readers (`canopy serve`) that must never hold writers
    /// off. What they read stays valid: objects are immutable, refs are replaced
    /// atomically, and gc removes only objects that no ref reaches.
    Unlocked,
}

/// An open store, holding its lock until dropped.
pub struct Store {
    root: PathBuf,
    _lock: Option<File>,
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Writes `data` to `path` atomically: temporary file beside it, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .expect("atomic writes target a file inside a directory");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fsync_dir(dir)
}

impl Store {
    /// Creates a store at `root` (or completes one whose `init` was interrupted).
    /// Returns the open store and whether anything was created.
    pub fn init(root: &Path) -> Result<(Store, bool), StoreError> {
        if root.join("config").exists() {
            return Ok((Store::open(root, Access::Write)?, false));
        }
        for dir in ["objects", "refs/roots", "refs/packages", "tmp", "keys"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        let key_path = root.join("keys/ed25519.secret");
        if !key_path.exists() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| StoreError::BadKey {
                path: key_path.clone(),
                reason: format!("no randomness for a new key: {e}"),
            })?;
            write_atomic(
                &key_path,
                format!("{}\n", hex::encode(seed)).as_bytes(),
                0o600,
            )?;
        }
        // config last: a store without it is an interrupted init, never a half store.
        write_atomic(&root.join("config"), FORMAT.as_bytes(), 0o644)?;
        Ok((Store::open(root, Access::Write)?, true))
    }

    /// Opens the store at `root`, waiting for the lock if another process holds it.
    pub fn open(root: &Path, access: Access) -> Result<Store, StoreError> {
        let config = root.join("config");
        let found = match fs::read_to_string(&config) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotAStore(root.to_path_buf()));
            }
            Err(e) => {
                return Err(StoreError::Io {
                    what: format!("reading {}", config.display()),
                    source: e,
                });
            }
        };
        if found != FORMAT {
            return Err(StoreError::UnsupportedFormat {
                path: root.to_path_buf(),
                found,
            });
        }
        if access == Access::Unlocked {
            return Ok(Store {
                root: root.to_path_buf(),
                _lock: None,
            });
        }
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        let tried = match access {
            Access::Write => lock.try_lock(),
            _ => lock.try_lock_shared(),
        };
        match tried {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::warn!(
                    "waiting for another canopy process to release the store lock {}",
                    lock_path.display()
                );
                match access {
                    Access::Write => lock.lock(),
                    _ => lock.lock_shared(),
                }
                .ctx(|| format!("locking {}", lock_path.display()))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    what: format!("locking {}", lock_path.display()),
                    source: e,
                });
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            _lock: Some(lock),
        };
        if access == Access::Write {
            store.clean_tmp()?;
        }
        Ok(store)
    }

    /// Removes what crashed writers left in `tmp/`. Only the lock holder may do this.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).ctx(|| format!("listing {}", tmp.display()))? {
            let path = entry.ctx(|| format!("listing {}", tmp.display()))?.path();
            tracing::info!("removing leftover {}", path.display());
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            // An interrupted configure's scratch tree belongs to the sandbox's ids: when
            // not root, only the next configure (inside the sandbox) can remove it.
            let scratch = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("configure-"));
            match removed {
                Err(e) if scratch && e.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::info!(
                        "{} is left for the next configure to remove",
                        path.display()
                    );
                }
                other => other.ctx(|| format!("removing {}", path.display()))?,
            }
        }
        Ok(())
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where an object's file lives (whether or not it exists).
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the object is present.
    pub fn has(&self, id: &ObjectId) -> bool {
        self.object_path(id).exists()
    }

    /// Reads an object whole and checks it against its id.
    pub fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        read_verified(&self.object_path(id), id, &self.root)
    }

    /// Reads and decodes a tree.
    pub fn tree(&self, id: &TreeId) -> Result<Tree, StoreError> {
        decode_tree(id, &self.read_object(&id.0)?)
    }

    /// Reads and decodes a commit (the signature is not checked here).
    pub fn commit(&self, id: &CommitId) -> Result<Commit, StoreError> {
        let bytes = self.read_object(&id.0)?;
        Commit::decode(&bytes).map_err(|source| StoreError::Decode {
            id: id.0,
            kind: "commit",
            source,
        })
    }

    /// Reads and decodes a package record.
    pub fn package(&self, id: &PackageId) -> Result<Package, StoreError> {
        let bytes = self.read_object(&id.0)?;
        Package::decode(&bytes).map_err(|source| StoreError::Decode {
            id: id.0,
            kind: "package",
            source,
        })
    }

    /// The signing key made at `init`.
    pub fn signing_key(&self) -> Result<SigningKey, StoreError> {
        let path = self.root.join("keys/ed25519.secret");
        let text = fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| StoreError::BadKey {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// The public half of the signing key: what hosts are told to trust.
    pub fn verifying_key(&self) -> Result<VerifyingKey, StoreError> {
        Ok(self.signing_key()?.verifying_key())
    }

    /// The current commit of a root, if the root exists.
    pub fn root_ref(&self, name: &RootName) -> Result<Option<CommitId>, StoreError> {
        read_ref(&self.root.join("refs/roots").join(name.as_str())).map(|id| id.map(CommitId))
    }

    /// Every root with its current commit, sorted by name.
    pub fn roots(&self) -> Result<Vec<(RootName, CommitId)>, StoreError> {
        let refs = list_refs(&self.root.join("refs/roots"))?;
        Ok(refs
            .into_iter()
            .map(|(name, id)| (name, CommitId(id)))
            .collect())
    }

    /// The package record imported from the archive with this hash, if any.
    pub fn package_ref(&self, archive: &ArchiveHash) -> Result<Option<PackageId>, StoreError> {
        read_ref(&self.root.join("refs/packages").join(archive.to_string()))
            .map(|id| id.map(PackageId))
    }

    /// Every imported package: archive hash and package record id.
    pub fn package_refs(&self) -> Result<Vec<(ArchiveHash, PackageId)>, StoreError> {
        let refs = list_refs(&self.root.join("refs/packages"))?;
        Ok(refs
            .into_iter()
            .map(|(archive, id)| (archive, PackageId(id)))
            .collect())
    }

    /// Every object file in the store, as (id, path). Files whose names are not ids are
    /// reported as errors rather than skipped, since nothing else writes there.
    pub fn objects(&self) -> Result<Vec<(ObjectId, PathBuf)>, StoreError> {
        let objects = self.root.join("objects");
        let mut out = Vec::new();
        for fan in fs::read_dir(&objects).ctx(|| format!("listing {}", objects.display()))? {
            let fan = fan.ctx(|| format!("listing {}", objects.display()))?.path();
            let prefix = fan.file_name().unwrap().to_string_lossy().into_owned();
            for f in fs::read_dir(&fan).ctx(|| format!("listing {}", fan.display()))? {
                let path = f.ctx(|| format!("listing {}", fan.display()))?.path();
                let name = format!("{prefix}{}", path.file_name().unwrap().to_string_lossy());
                let id =
                    name.parse()
                        .map_err(|e: canopy_protocol::IdError| StoreError::BadRef {
                            path: path.clone(),
                            reason: format!("stray file in objects/: {e}"),
                        })?;
                out.push((id, path));
            }
        }
        Ok(out)
    }

    /// Deletes an object. Only garbage collection calls this, under the write lock.
    pub(crate) fn remove_object(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let path = self.object_path(id);
        let len = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        Ok(len)
    }

    /// Starts a transaction. The store must have been opened with [`Access::Write`].
    pub fn begin(&self) -> Result<Txn<'_>, StoreError> {
        let dir = self
            .root
            .join("tmp")
            .join(format!("txn-{}", std::process::id()));
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Txn {
            store: self,
            dir,
            staged: HashMap::new(),
            refs: Vec::new(),
            seq: 0,
            stats: TxnStats::default(),
            done: false,
        })
    }
}

fn read_verified(path: &Path, id: &ObjectId, store: &Path) -> Result<Vec<u8>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                id: *id,
                store: store.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(StoreError::Io {
                what: format!("reading object {}", path.display()),
                source: e,
            });
        }
    };
    let actual = ObjectId::of(&bytes);
    if actual != *id {
        return Err(StoreError::Corrupt { id: *id, actual });
    }
    Ok(bytes)
}

fn decode_tree(id: &TreeId, bytes: &[u8]) -> Result<Tree, StoreError> {
    Tree::decode(bytes).map_err(|source| StoreError::Decode {
        id: id.0,
        kind: "tree",
        source,
    })
}

fn read_ref(path: &Path) -> Result<Option<ObjectId>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                what: format!("reading ref {}", path.display()),
                source: e,
            });
        }
    };
    let id = text.strip_suffix('\n').unwrap_or(&text).parse().map_err(
        |e: canopy_protocol::IdError| StoreError::BadRef {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    )?;
    Ok(Some(id))
}

/// The refs of a directory, named by `K` (a root name, an archive hash), sorted by
/// name; atomic-write temporaries (dot files) are not refs.
fn list_refs<K: std::str::FromStr>(dir: &Path) -> Result<Vec<(K, ObjectId)>, StoreError>
where
    K::Err: std::fmt::Display,
{
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push((name, entry.path()));
        }
    }
    names.sort();
    let mut out = Vec::new();
    for (name, path) in names {
        let key = name.parse().map_err(|e: K::Err| StoreError::BadRef {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // A ref removed since the listing is simply gone.
        if let Some(id) = read_ref(&path)? {
            out.push((key, id));
        }
    }
    Ok(out)
}

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

/// A set of writes that becomes visible all at once, or not at all.
pub struct Txn<'s> {
    store: &'s Store,
    dir: PathBuf,
    staged: HashMap<ObjectId, PathBuf>,
    refs: Vec<(PathBuf, ObjectId)>,
    seq: u64,
    stats: TxnStats,
    done: bool,
}

impl Txn<'_> {
    /// The store this transaction writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Whether the object is in the store or staged in this transaction.
    pub fn has(&self, id: &ObjectId) -> bool {
        self.staged.contains_key(id) || self.store.has(id)
    }

    fn next_tmp(&mut self) -> PathBuf {
        self.seq += 1;
        self.dir.join(self.seq.to_string())
    }

    /// Keeps the staged file at `tmp` as object `id`, or drops it if the id is known.
    fn stage(&mut self, id: ObjectId, tmp: PathBuf, size: u64) -> Result<(), StoreError> {
        if self.has(&id) {
            return fs::remove_file(&tmp).ctx(|| format!("removing {}", tmp.display()));
        }
        self.staged.insert(id, tmp);
        self.stats.new_objects += 1;
        self.stats.new_bytes += size;
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
        if self.has(&id) {
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
            Some(path) => decode_tree(id, &read_verified(path, &id.0, &self.store.root)?),
            None => self.store.tree(id),
        }
    }

    /// Where an object's bytes are: its staged file in this transaction, or its file in
    /// the store.
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        match self.staged.get(id) {
            Some(path) => path.clone(),
            None => self.store.object_path(id),
        }
    }

    /// Reads a blob from this transaction or the store, checked against its id.
    pub fn blob(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        match self.staged.get(&id.0) {
            Some(path) => read_verified(path, &id.0, &self.store.root),
            None => self.store.read_object(&id.0),
        }
    }

    /// Points a root at a commit when the transaction commits.
    pub fn set_root(&mut self, name: &RootName, commit: CommitId) {
        self.refs
            .push((PathBuf::from("roots").join(name.as_str()), commit.0));
    }

    /// Records a package import when the transaction commits.
    pub fn set_package(&mut self, archive: &ArchiveHash, package: PackageId) {
        self.refs.push((
            PathBuf::from("packages").join(archive.to_string()),
            package.0,
        ));
    }

    /// Makes everything durable and visible: objects first, refs last.
    pub fn commit(mut self) -> Result<TxnStats, StoreError> {
        if !self.staged.is_empty() {
            // One syncfs makes every staged file durable before any becomes visible,
            // far cheaper than an fsync per file on packages with thousands of files.
            self.syncfs()?;
            for (id, tmp) in std::mem::take(&mut self.staged) {
                let dest = self.store.object_path(&id);
                let fan = dest
                    .parent()
                    .expect("object paths have a fan-out directory");
                if !fan.exists() {
                    fs::create_dir(fan).ctx(|| format!("creating {}", fan.display()))?;
                }
                fs::rename(&tmp, &dest)
                    .ctx(|| format!("moving object {id} into {}", dest.display()))?;
                crash::point("object renamed");
            }
            // And one more for the renames, before any ref can point at their objects.
            self.syncfs()?;
        }
        for (rel, id) in std::mem::take(&mut self.refs) {
            crash::point("before ref write");
            let path = self.store.root.join("refs").join(rel);
            write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)?;
            crash::point("ref written");
        }
        self.done = true;
        fs::remove_dir_all(&self.dir).ctx(|| format!("removing {}", self.dir.display()))?;
        Ok(self.stats)
    }

    /// Flushes the store's whole filesystem (data and metadata) to disk.
    fn syncfs(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.dir).ctx(|| format!("opening {}", self.dir.display()))?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(StoreError::Io {
                what: "syncing the store's filesystem".into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, created) = Store::init(dir.path()).unwrap();
        assert!(created);
        let (id, size) = {
            let mut txn = store.begin().unwrap();
            txn.put_blob(&b"abc"[..]).map_err(|_| ()).unwrap()
        };
        assert_eq!(size, 3);
        assert!(!store.has(&id.0));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn committed_objects_are_readable_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path()).unwrap();
        let mut txn = store.begin().unwrap();
        let (a, _) = txn.put_blob(&b"same"[..]).map_err(|_| ()).unwrap();
        let (b, _) = txn.put_blob(&b"same"[..]).map_err(|_| ()).unwrap();
        assert_eq!(a, b);
        let stats = txn.commit().unwrap();
        assert_eq!(
            stats,
            TxnStats {
                new_objects: 1,
                new_bytes: 4
            }
        );
        assert_eq!(store.read_object(&a.0).unwrap(), b"same");
        fs::write(store.object_path(&a.0), b"evil").unwrap();
        assert!(matches!(
            store.read_object(&a.0),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
