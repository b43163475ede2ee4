//! What can go wrong in the store, with the file, object or ref concerned.

use canopy_protocol::{DecodeError, ObjectId};
use std::io;
use std::path::PathBuf;

/// The config line of a store this canopy understands.
pub(crate) const FORMAT: &str = "canopy-store 1\n";

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
        /// The store (its directory, or its backend's address).
        store: String,
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
    /// A ref did not hold the value a compare-and-swap expected: another writer moved it.
    #[error(
        "ref {name} was changed by another writer (expected {}, found {}); nothing was changed, run the command again",
        show(expected),
        show(found)
    )]
    Conflict {
        /// The ref, e.g. `roots/web`.
        name: String,
        /// What the writer expected it to hold.
        expected: Option<ObjectId>,
        /// What it holds.
        found: Option<ObjectId>,
    },
    /// A remote backend (S3) failed or refused a request.
    #[error("{what}: {reason}")]
    Backend {
        /// What was being done, naming the bucket.
        what: String,
        /// Why it failed.
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
    /// `init` asked for another backend than the store at that directory has.
    #[error("store at {store} is initialised already, {reason}")]
    OtherBackend {
        /// The store's directory.
        store: String,
        /// Where its objects are, and what to do.
        reason: String,
    },
    /// The store cannot be, or is, a replica of another store's roots.
    #[error("store at {store}: {reason}")]
    Replica {
        /// The store's directory.
        store: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl StoreError {
    /// [`StoreError::Conflict`] unless a ref holds what a compare-and-swap expected.
    pub(crate) fn unless_expected(
        name: &str,
        expected: Option<ObjectId>,
        found: Option<ObjectId>,
    ) -> Result<(), StoreError> {
        if found == expected {
            return Ok(());
        }
        Err(StoreError::Conflict {
            name: name.to_string(),
            expected,
            found,
        })
    }
}

fn show(id: &Option<ObjectId>) -> String {
    id.map_or_else(|| "no ref".to_string(), |id| id.short())
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
