//! The object store.
//!
//! ```text
//! STORE/config                 format line; its presence marks a complete `init`
//! STORE/lock                   flock: shared for readers, exclusive for the one writer
//! STORE/keys/ed25519.secret    the signing key (hex seed, mode 0600)
//! STORE/objects/ab/cdef…       one file per object, named by its SHA-256
//! STORE/refs/roots/NAME        current commit of a root
//! STORE/refs/packages/HASH     package record of the archive whose SHA-256 is HASH
//! STORE/logs/roots/NAME        the root's reflog: every move of its ref (see [`reflog`])
//! STORE/tmp/                   in-flight transactions; removed by the next writer
//! ```
//!
//! The directory is the store's local state: its config, lock, key and staging area
//! (and the repository configuration and download caches of [`crate::repo`]). Objects
//! and refs are reached through the [`backend`] seam: [`local`] keeps them in the
//! directory as above, [`memory`] in maps for unit tests. All writes go through a
//! [`Txn`].

pub mod backend;
pub mod cached;
pub mod config;
mod error;
#[cfg(test)]
pub(crate) mod fixture;
pub mod init;
pub mod local;
pub mod memory;
pub mod reflog;
pub mod replica;
pub mod s3;
mod txn;
mod verified;

pub use config::Backend;
pub(crate) use error::IoContext;
pub use error::StoreError;
pub(crate) use local::{syncfs, write_atomic};
pub use txn::{BlobError, Txn, TxnStats};

use backend::{ObjectBackend, RefBackend};
use canopy_protocol::{
    ArchiveHash, Commit, CommitId, ObjectId, Package, PackageId, RootName, SigningKey, Tree,
    TreeId, VerifyingKey,
};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A ref's name: what it is for and, through [`fmt::Display`], its path in the ref
/// backend (`roots/NAME`, `packages/HASH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefName {
    /// The current commit of a root.
    Root(RootName),
    /// The package record imported from the archive with this SHA-256.
    Package(ArchiveHash),
}

/// The ref namespace of roots.
const ROOTS: &str = "roots";
/// The ref namespace of imported packages.
const PACKAGES: &str = "packages";

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefName::Root(name) => write!(f, "{ROOTS}/{name}"),
            RefName::Package(archive) => write!(f, "{PACKAGES}/{archive}"),
        }
    }
}

/// An open store, holding its lock until dropped.
pub struct Store {
    root: PathBuf,
    objects: Box<dyn ObjectBackend>,
    refs: Box<dyn RefBackend>,
    /// The bucket, for a store in one: it holds the store's public key.
    bucket: Option<Arc<s3::Bucket>>,
    _lock: Option<File>,
    /// See [`Store::reimporting`].
    reimport: bool,
    /// Object files found to hold their bytes (see [`verified`]).
    verified: verified::Verified,
}

impl Store {
    /// A store whose objects and refs live in memory, with its local state (key,
    /// staging area) in `state`, a directory created if needed: for unit tests.
    pub fn memory(state: &Path) -> Result<Store, StoreError> {
        for dir in ["tmp", "keys"] {
            let p = state.join(dir);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        init::make_key(state)?;
        Ok(Store {
            root: state.to_path_buf(),
            objects: Box::new(memory::MemoryObjects::default()),
            refs: Box::new(memory::MemoryRefs::default()),
            bucket: None,
            _lock: None,
            reimport: false,
            verified: Default::default(),
        })
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
        let backend = Backend::parse(&found, root)?;
        let lock = match access {
            Access::Unlocked => None,
            _ => Some(lock(root, access)?),
        };
        let store = match backend {
            Backend::Local => Store {
                root: root.to_path_buf(),
                objects: Box::new(local::LocalObjects::new(root)),
                refs: Box::new(local::LocalRefs::new(root)),
                bucket: None,
                _lock: lock,
                reimport: false,
                verified: Default::default(),
            },
            Backend::S3(config) => {
                let patience = match access {
                    Access::Unlocked => s3::Patience::Server,
                    _ => s3::Patience::Writer,
                };
                let bucket = s3::Bucket::connect(&config.overridden_by_env(), patience)?;
                Store {
                    root: root.to_path_buf(),
                    objects: Box::new(s3::S3Objects::new(bucket.clone())),
                    refs: Box::new(s3::S3Refs::new(bucket.clone())),
                    bucket: Some(bucket),
                    _lock: lock,
                    reimport: false,
                    verified: Default::default(),
                }
            }
        };
        if access == Access::Write {
            store.clean_tmp()?;
        }
        Ok(store)
    }

    /// Removes what crashed writers left in `tmp/`, and marks it so that staged objects
    /// are created where inodes are cheap to allocate ([`local::spread_staging`]). Only
    /// the lock holder may do this.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        local::spread_staging(&tmp);
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

    /// The store's local directory: config, lock, key, staging area, caches.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// This store, set to read archives again even when they were imported already
    /// (`import --force`, `fsck --repair`): every transaction then checks the objects it
    /// would otherwise skip as present, and replaces those whose bytes are damaged.
    pub fn reimporting(mut self) -> Self {
        self.reimport = true;
        self
    }

    /// Whether the store was set with [`Store::reimporting`].
    pub fn reimports(&self) -> bool {
        self.reimport
    }

    /// Whether a present object is damaged: its bytes cannot be read, or do not hash to
    /// its id.
    pub fn damaged(&self, id: &ObjectId) -> Result<bool, StoreError> {
        let mut reader = match self.objects.get(id) {
            Ok(r) => r,
            Err(StoreError::Missing { .. }) => return Ok(false),
            // A file that cannot be opened as an object (a FIFO, a symlink, no read
            // permission) is damage to replace; a bucket out of reach is not.
            Err(StoreError::Io { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut hasher = canopy_protocol::Hasher::new();
        Ok(match io::copy(&mut reader, &mut hasher) {
            Ok(_) => hasher.finish() != *id,
            Err(_) => true,
        })
    }

    /// Where the objects live.
    pub fn objects(&self) -> &dyn ObjectBackend {
        &*self.objects
    }

    /// Where the refs live.
    pub fn refs(&self) -> &dyn RefBackend {
        &*self.refs
    }

    /// The object's file on this machine, if the object backend keeps one (see
    /// [`ObjectBackend::local_path`]).
    pub fn local_path(&self, id: &ObjectId) -> Option<PathBuf> {
        self.objects.local_path(id)
    }

    /// The object as an open file on this machine, if the backend has one (see
    /// [`ObjectBackend::open_file`]).
    pub fn open_file(&self, id: &ObjectId) -> Result<Option<File>, StoreError> {
        self.objects.open_file(id)
    }

    /// Whether objects and refs live elsewhere (a bucket), each read a request.
    pub fn is_remote(&self) -> bool {
        self.bucket.is_some()
    }

    /// This store for a long-running server: objects read through `cache` (fetched
    /// whole, verified, kept as files) and refs reused for a second (see [`cached`]).
    pub fn read_through(self, cache: Arc<canopy_cache::Cache>) -> Store {
        Store {
            objects: Box::new(cached::CachedObjects::new(self.objects, cache)),
            refs: Box::new(cached::CachedRefs::new(self.refs)),
            ..self
        }
    }

    /// Whether the object is present.
    pub fn has(&self, id: &ObjectId) -> Result<bool, StoreError> {
        self.objects.exists(id)
    }

    /// Reads an object whole and checks it against its id.
    pub fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.objects
            .get(id)?
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading object {id} from {}", self.objects.location()))?;
        let actual = ObjectId::of(&bytes);
        if actual != *id {
            return Err(StoreError::Corrupt { id: *id, actual });
        }
        Ok(bytes)
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

    /// The signing key made or imported at `init`. A replica signs nothing: its roots
    /// are signed upstream, with a key it does not hold.
    pub fn signing_key(&self) -> Result<SigningKey, StoreError> {
        if let Some(key) = self.upstream_key()? {
            return Err(StoreError::Replica {
                store: self.root.display().to_string(),
                reason: format!(
                    "it is a replica (`canopy replicate`) of the roots signed by key {}: \
                     commits are made upstream and replicated here, not made here",
                    key.to_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            });
        }
        let path = self.root.join(init::KEY);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.bucket.is_some() => {
                return Err(StoreError::BadKey {
                    path,
                    reason: format!(
                        "this machine has no signing key for {}: every writer of a store signs \
                         with its one key; attach with `canopy init --backend {} --key FILE`, \
                         FILE being {} of the machine that created it",
                        self.objects.location(),
                        self.objects
                            .location()
                            .split(' ')
                            .next()
                            .unwrap_or_default(),
                        init::KEY
                    ),
                });
            }
            Err(e) => {
                return Err(StoreError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        init::parse_key(&text, &path)
    }

    /// The public half of the signing key: what hosts are told to trust. A machine
    /// attached to a bucket without the secret key reads it from the bucket.
    /// A replica's is its upstream's (see [`replica`]).
    pub fn verifying_key(&self) -> Result<VerifyingKey, StoreError> {
        if let Some(key) = self.upstream_key()? {
            return Ok(key);
        }
        match (&self.bucket, self.root.join(init::KEY).exists()) {
            (Some(bucket), false) => bucket.public_key(),
            _ => Ok(self.signing_key()?.verifying_key()),
        }
    }

    /// The current commit of a root, if the root exists.
    pub fn root_ref(&self, name: &RootName) -> Result<Option<CommitId>, StoreError> {
        let name = RefName::Root(name.clone()).to_string();
        Ok(self.refs.get(&name)?.map(CommitId))
    }

    /// Every root with its current commit, sorted by name.
    pub fn roots(&self) -> Result<Vec<(RootName, CommitId)>, StoreError> {
        self.list_refs(ROOTS, CommitId)
    }

    /// Every root whose ref can be read, for serving: a ref damaged on disk is logged
    /// and left out, so one bad file does not hide every other root from hosts. (gc,
    /// fsck and writers use [`Store::roots`], which fails on it: they must see every
    /// ref.)
    pub fn served_roots(&self) -> Result<Vec<(RootName, CommitId)>, StoreError> {
        match self.roots() {
            Err(StoreError::BadRef { .. }) => {}
            other => return other,
        }
        let mut out = Vec::new();
        for name in self.refs.names(ROOTS)? {
            let root = match name.parse::<RootName>() {
                Ok(root) => root,
                Err(e) => {
                    tracing::error!(
                        "{ROOTS}/{name} in {} is not a root's ref: {e}",
                        self.refs.location()
                    );
                    continue;
                }
            };
            match self.root_ref(&root) {
                Ok(Some(id)) => out.push((root, id)),
                Ok(None) => {}
                Err(e) => tracing::error!(
                    "{e}: root {root} is left out, the others are served; run `canopy fsck`"
                ),
            }
        }
        Ok(out)
    }

    /// The package record imported from the archive with this hash, if any.
    pub fn package_ref(&self, archive: &ArchiveHash) -> Result<Option<PackageId>, StoreError> {
        let name = RefName::Package(*archive).to_string();
        Ok(self.refs.get(&name)?.map(PackageId))
    }

    /// Every imported package: archive hash and package record id.
    pub fn package_refs(&self) -> Result<Vec<(ArchiveHash, PackageId)>, StoreError> {
        self.list_refs(PACKAGES, PackageId)
    }

    /// The refs of a namespace, named by `K` (a root name, an archive hash).
    fn list_refs<K: std::str::FromStr, V>(
        &self,
        space: &str,
        wrap: impl Fn(ObjectId) -> V,
    ) -> Result<Vec<(K, V)>, StoreError>
    where
        K::Err: fmt::Display,
    {
        let mut out = Vec::new();
        for (name, id) in self.refs.list(space)? {
            let key = name.parse().map_err(|e: K::Err| StoreError::BadRef {
                path: Path::new(&self.refs.location())
                    .join("refs")
                    .join(space)
                    .join(&name),
                reason: e.to_string(),
            })?;
            out.push((key, wrap(id)));
        }
        Ok(out)
    }

    /// Starts a transaction. The store must have been opened with [`Access::Write`].
    /// Several may be open at once (threads staging parts of one write, see
    /// [`Txn::absorb`]): each stages in its own directory.
    pub fn begin(&self) -> Result<Txn<'_>, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("txn-{}-{n}", std::process::id()));
        Txn::new(self, dir)
    }
}

/// Takes the store's lock, waiting (and saying so) if another process holds it.
fn lock(root: &Path, access: Access) -> Result<File, StoreError> {
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
    Ok(lock)
}

fn decode_tree(id: &TreeId, bytes: &[u8]) -> Result<Tree, StoreError> {
    Tree::decode(bytes).map_err(|source| StoreError::Decode {
        id: id.0,
        kind: "tree",
        source,
    })
}

#[cfg(test)]
mod tests;
