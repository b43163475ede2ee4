//! Importers: turn an archive (`.deb`, tarball) or a directory into a package tree in
//! the store, keeping exactly what it contains — modes with setuid/setgid/sticky, the
//! archive's numeric owners, symlinks, hard links, devices, fifos and xattrs.
//!
//! Every import is one store transaction: a refused or failed import leaves the store
//! exactly as it was. Archives are streamed: file contents go straight to disk, and
//! memory is bounded by [`Limits`] whatever the archive claims.

pub mod batch;
pub(crate) mod builder;
pub(crate) mod compress;
pub mod dir;
pub(crate) mod limit;
pub mod tar;

use crate::store::{IoContext, Store, StoreError, Txn, TxnStats};
use canopy_protocol::{ArchiveHash, Hasher, Package, PackageId, PackageKind, TreeId};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use limit::Limits;

/// Why an archive was refused. Each class has a stable code, printed in brackets at
/// the end of the message, so scripts and tests can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A path with a `..` component.
    PathTraversal,
    /// A path starting with `/`.
    AbsolutePath,
    /// An entry beneath a symlink of the same archive.
    ThroughSymlink,
    /// A path component with a NUL byte, or empty, or over 255 bytes; a bad symlink target.
    BadName,
    /// The same non-directory path twice.
    DuplicateEntry,
    /// The archive ends early.
    Truncated,
    /// Not a Debian binary package.
    NotADeb,
    /// Not a binary RPM package.
    NotAnRpm,
    /// Content that does not match its declared compression, or an unknown compression.
    BadCompression,
    /// Over the unpacked-size, entry-count or header-size limit.
    TooLarge,
    /// A hard link to something that is not an earlier regular file of the archive.
    BadLink,
    /// Missing or unusable control data: a .deb's control file, an RPM's name,
    /// version or release.
    BadControl,
    /// Structural damage: bad header checksum, unsupported entry type, bad numbers.
    Malformed,
    /// Content whose SHA-256 is not the digest that names it or that the archive
    /// itself carries (an image's blob or layer; an RPM's header or payload).
    BadDigest,
    /// An OpenPGP signature the import was asked to check is missing or does not verify.
    BadSignature,
    /// Not a container image canopy reads: no OCI layout or `docker save` manifest, a
    /// media type or schema it does not know, a missing blob.
    NotAnImage,
}

impl Class {
    /// The stable code, e.g. `path-traversal`.
    pub fn code(self) -> &'static str {
        match self {
            Class::PathTraversal => "path-traversal",
            Class::AbsolutePath => "absolute-path",
            Class::ThroughSymlink => "through-symlink",
            Class::BadName => "bad-name",
            Class::DuplicateEntry => "duplicate-entry",
            Class::Truncated => "truncated",
            Class::NotADeb => "not-a-deb",
            Class::NotAnRpm => "not-an-rpm",
            Class::BadCompression => "bad-compression",
            Class::TooLarge => "too-large",
            Class::BadLink => "bad-link",
            Class::BadControl => "bad-control",
            Class::Malformed => "malformed",
            Class::BadDigest => "bad-digest",
            Class::BadSignature => "bad-signature",
            Class::NotAnImage => "not-an-image",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What went wrong in an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input was refused; nothing was written.
    #[error("{detail} [{class}]")]
    Refused {
        /// Which kind of problem.
        class: Class,
        /// What and where, naming the entry.
        detail: String,
    },
    /// Reading the input failed for a reason other than its content.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// canopy itself failed on this archive (a panic, caught so that the others of a
    /// batch still import).
    #[error("canopy failed on this archive (a bug: please report it with the archive)")]
    Bug,
}

impl ImportError {
    pub(crate) fn refused(class: Class, detail: impl Into<String>) -> Self {
        ImportError::Refused {
            class,
            detail: detail.into(),
        }
    }

    /// Turns a failure to store content read from an archive into an import error.
    pub(crate) fn from_blob(err: crate::store::BlobError, context: &str) -> Self {
        match err {
            crate::store::BlobError::Source(e) => ImportError::from_read(e, context, false),
            crate::store::BlobError::Store(e) => e.into(),
        }
    }

    /// The class of a refused input, if that is what this is.
    pub fn class(&self) -> Option<Class> {
        match self {
            ImportError::Refused { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// Classifies an error met while reading archive content: our own limits, early
    /// ends and decoder complaints each keep their meaning. `ended` says whether the
    /// input had already run out, which makes any complaint a truncation.
    pub(crate) fn from_read(err: io::Error, context: &str, ended: bool) -> Self {
        if let Some(limit) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<limit::LimitExceeded>())
        {
            return ImportError::refused(Class::TooLarge, format!("{context}: {limit}"));
        }
        if ended || err.kind() == io::ErrorKind::UnexpectedEof {
            return ImportError::refused(
                Class::Truncated,
                format!("{context}: archive ends early ({err})"),
            );
        }
        ImportError::refused(Class::Malformed, format!("{context}: {err}"))
    }
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The package record's id.
    pub id: PackageId,
    /// The package record.
    pub package: Package,
    /// Whether it was new, and what it added.
    pub outcome: Outcome,
}

/// Whether an import added anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The archive was imported before; nothing was read beyond its hash.
    AlreadyImported,
    /// Imported now.
    New {
        /// Entries in the package (files, directories, links…).
        entries: u64,
        /// Objects and bytes the store did not have.
        stats: TxnStats,
    },
}

/// The SHA-256 of a file, read in one pass.
pub fn hash_file(path: &Path) -> Result<ArchiveHash, ImportError> {
    let io_err = |source| ImportError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    let mut hasher = Hasher::new();
    io::copy(&mut File::open(path).map_err(io_err)?, &mut hasher).map_err(io_err)?;
    Ok(ArchiveHash(hasher.finish()))
}

/// `bytes` decompressed, the format (gzip, xz, zstd or none) told by its magic
/// bytes, with the same memory bounds as archive members.
pub fn decompress<'a>(bytes: &'a [u8], what: &str) -> Result<Box<dyn io::Read + 'a>, ImportError> {
    compress::decoder(bytes, None, what)
}

/// Returns the package already imported from this archive, if any — never when the
/// store is [reimporting](Store::reimporting): then the archive is read again.
pub(crate) fn already_imported(
    store: &Store,
    archive: &ArchiveHash,
) -> Result<Option<Imported>, ImportError> {
    if store.reimports() {
        return Ok(None);
    }
    match store.package_ref(archive)? {
        Some(id) => Ok(Some(Imported {
            id,
            package: store.package(&id)?,
            outcome: Outcome::AlreadyImported,
        })),
        None => Ok(None),
    }
}

/// The fields of a package record that the importer knows before the tree is written.
pub(crate) struct Identity {
    pub(crate) kind: PackageKind,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) arch: String,
    pub(crate) scripts: Vec<String>,
    pub(crate) control: Option<TreeId>,
    pub(crate) extensions: BTreeMap<String, Vec<u8>>,
}

/// An import read and staged in its own transaction, not visible yet: commit it alone
/// ([`Prepared::commit`]) or with others ([`batch`]).
pub struct Staged<'s> {
    /// Boxed, so that a staged import (sent between threads) stays about the size of
    /// an imported one.
    txn: Box<Txn<'s>>,
    id: PackageId,
    package: Package,
    entries: u64,
    /// The package ref it sets.
    key: ArchiveHash,
}

/// What preparing an import gives: the package imported before, or a staged import.
pub enum Prepared<'s> {
    /// The archive was imported before; nothing was read beyond its hash.
    Done(Imported),
    /// Read and staged, to be committed.
    Staged(Staged<'s>),
}

impl Prepared<'_> {
    /// Makes the import visible on its own (one durable step).
    pub fn commit(self) -> Result<Imported, ImportError> {
        match self {
            Prepared::Done(done) => Ok(done),
            Prepared::Staged(staged) => {
                let stats = staged.txn.commit()?;
                Ok(Imported {
                    id: staged.id,
                    package: staged.package,
                    outcome: Outcome::New {
                        entries: staged.entries,
                        stats,
                    },
                })
            }
        }
    }
}

/// Writes the package record for `tree`, points the package ref `key` at it and
/// commits. The key is the archive's hash for formats whose archives name themselves
/// (`.deb`); tarballs and directories, named by the user, are keyed by name, version
/// and content (see [`named_key`]).
pub(crate) fn finish(
    txn: Txn<'_>,
    tree: TreeId,
    entries: u64,
    who: Identity,
    archive: ArchiveHash,
    key: ArchiveHash,
) -> Result<Imported, ImportError> {
    Prepared::Staged(stage(txn, tree, entries, who, archive, key)?).commit()
}

/// As [`finish`], without the commit.
pub(crate) fn stage<'s>(
    mut txn: Txn<'s>,
    tree: TreeId,
    entries: u64,
    who: Identity,
    archive: ArchiveHash,
    key: ArchiveHash,
) -> Result<Staged<'s>, ImportError> {
    // Read again (import --force, fsck --repair): the objects are now whole; an intact
    // record stays the package's record, a damaged one is replaced.
    let previous = txn.store().package_ref(&key)?;
    if let Some(old) = previous
        && !txn.store().damaged(&old.0)?
        && let Ok(package) = txn.store().package(&old)
    {
        return Ok(Staged {
            txn: Box::new(txn),
            id: old,
            package,
            entries,
            key,
        });
    }
    let package = Package {
        kind: who.kind,
        name: who.name,
        version: who.version,
        arch: who.arch,
        archive,
        tree,
        imported_at: now(),
        scripts: who.scripts,
        control: who.control,
        extensions: who.extensions,
    };
    let id = txn.put_package(&package)?;
    match previous {
        Some(old) => txn.replace_package(&key, old, id),
        None => txn.set_package(&key, id),
    }
    Ok(Staged {
        txn: Box::new(txn),
        id,
        package,
        entries,
        key,
    })
}

/// The package ref of content imported under a name the user gave: the same tarball
/// (or directory tree) as `base` and as `base2` makes two packages, which share every
/// object; the same name, version and content again is the same import.
pub(crate) fn named_key(kind: &str, name: &str, version: &str, content: &str) -> ArchiveHash {
    ArchiveHash::of(format!("canopy-{kind}\0{name}\0{version}\0{content}").as_bytes())
}

/// Seconds since the epoch, as stored in records and commits.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Names the archive in a refusal that was raised without knowing it.
pub(crate) fn prefix(e: ImportError, what: &str) -> ImportError {
    match e {
        ImportError::Refused { class, detail } if !detail.starts_with(what) => {
            ImportError::Refused {
                class,
                detail: format!("{what}: {detail}"),
            }
        }
        other => other,
    }
}

/// Opens a file for import, naming it in the error.
/// An archive as it can be read twice (hashed, then read): a regular file as it is, a
/// pipe (`<(curl …)`, a FIFO) first copied into the store's `tmp/` (at most `max`
/// bytes), since it can be read only once — its second open would wait for a writer
/// that never comes. Anything else (a device such as `/dev/zero`, a directory) is
/// refused before a byte is read.
pub(crate) struct Input {
    path: std::path::PathBuf,
    _spooled: Option<tempfile::TempPath>,
}

impl Input {
    /// Where to read the archive.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// See [`Input`].
pub(crate) fn input(store: &Store, path: &Path, max: u64) -> Result<Input, ImportError> {
    use std::os::unix::fs::FileTypeExt;
    // `stat`, not `open`: it never waits on a FIFO, and follows `/dev/fd/N`.
    let meta = std::fs::metadata(path).ctx(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        return Ok(Input {
            path: path.to_path_buf(),
            _spooled: None,
        });
    }
    if !meta.file_type().is_fifo() {
        return Err(ImportError::Io {
            what: format!("reading {}", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or a pipe"),
        });
    }
    let dir = store.path().join("tmp");
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut spool = tempfile::NamedTempFile::new_in(&dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    let copied = io::copy(&mut open(path)?.take(max.saturating_add(1)), &mut spool)
        .ctx(|| format!("copying {} into {}", path.display(), dir.display()))?;
    if copied > max {
        return Err(ImportError::refused(
            Class::TooLarge,
            format!("{} holds more than {max} bytes", path.display()),
        ));
    }
    Ok(Input {
        path: spool.path().to_path_buf(),
        _spooled: Some(spool.into_temp_path()),
    })
}

pub(crate) fn open(path: &Path) -> Result<File, ImportError> {
    File::open(path)
        .ctx(|| format!("opening {}", path.display()))
        .map_err(ImportError::from)
}
