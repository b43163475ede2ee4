//! A root's history: its commits newest first, and the one commit a full id or unique
//! prefix names. HTTP's log, NFS's `/NAME@COMMIT` exports, `roots log`, `checkout
//! --commit`, rollback and the closure walk all read history through here.

use crate::store::{Store, StoreError};
use canopy_protocol::{Commit, CommitId, RootName};

/// Why a commit could not be found.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// No root of that name.
    #[error("no root named {0} (see `canopy roots list`)")]
    NoSuchRoot(RootName),
    /// No commit of the root's history starts with the prefix.
    #[error("no commit {prefix} in the history of root {root} (see `canopy roots log {root}`)")]
    NoSuchCommit {
        /// The root.
        root: RootName,
        /// The id or prefix asked for.
        prefix: String,
    },
    /// Several commits start with the prefix.
    #[error(
        "commit prefix {prefix} is ambiguous in the history of root {root}; give more characters"
    )]
    Ambiguous {
        /// The root.
        root: RootName,
        /// The prefix.
        prefix: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The commits of a history, newest first, starting at `from`.
pub fn log(store: &Store, from: CommitId) -> Log<'_> {
    Log {
        store,
        next: Some(from),
    }
}

/// Iterator over a history; see [`log`]. It ends after the first commit that cannot be
/// read, having yielded the error.
pub struct Log<'s> {
    store: &'s Store,
    next: Option<CommitId>,
}

impl Iterator for Log<'_> {
    type Item = Result<(CommitId, Commit), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.next.take()?;
        match self.store.commit(&id) {
            Ok(c) => {
                self.next = c.body.parent;
                Some(Ok((id, c)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// The commit of `root`'s history that `prefix` names (full id or unique prefix).
pub fn find(store: &Store, root: &RootName, prefix: &str) -> Result<CommitId, HistoryError> {
    let head = store
        .root_ref(root)?
        .ok_or_else(|| HistoryError::NoSuchRoot(root.clone()))?;
    let mut found = Vec::new();
    for entry in log(store, head) {
        let (id, _) = entry?;
        if id.to_string().starts_with(prefix) {
            found.push(id);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HistoryError::NoSuchCommit {
            root: root.clone(),
            prefix: prefix.to_string(),
        }),
        _ => Err(HistoryError::Ambiguous {
            root: root.clone(),
            prefix: prefix.to_string(),
        }),
    }
}
