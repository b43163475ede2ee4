//! A root's history: its commits newest first, and the one commit a full id or unique
//! prefix names. HTTP's log, NFS's `/NAME@COMMIT` exports, `roots log`, `checkout`,
//! rollback and the closure walk all read history through here.
//!
//! Commands name a root as `ROOT` (its current commit) or `ROOT@COMMIT` (any commit of
//! its history, by full id or unique prefix): [`RootAt`] parses that, [`resolve`] finds
//! the commit, and every command gives the same errors, which name the store and say
//! what exists.

use crate::store::{Store, StoreError};
use crate::suggest;
use canopy_protocol::{Commit, CommitId, RootName, RootNameError};
use std::path::PathBuf;

/// Why a root or commit could not be found.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The name is not a valid root name.
    #[error(transparent)]
    BadName(#[from] RootNameError),
    /// No root of that name.
    #[error("no root named {root} in the store at {}{hint}", store.display())]
    NoSuchRoot {
        /// The name asked for.
        root: String,
        /// The store looked in.
        store: PathBuf,
        /// A suggestion, or where to look.
        hint: String,
    },
    /// The commit part of `ROOT@COMMIT` is not hex.
    #[error("{0:?} is not a commit id or prefix (hex digits, as `canopy roots log` prints them)")]
    BadPrefix(String),
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
        "commit prefix {prefix} is ambiguous in the history of root {root} ({count} commits start with it); give more digits"
    )]
    Ambiguous {
        /// The root.
        root: RootName,
        /// The prefix.
        prefix: String,
        /// How many commits match.
        count: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A root, and optionally one commit of it, as a user wrote them: `web` or `web@3f2a`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootAt {
    /// The root.
    pub root: RootName,
    /// The commit id or prefix after `@`, if any.
    pub commit: Option<String>,
}

impl std::str::FromStr for RootAt {
    type Err = HistoryError;

    fn from_str(s: &str) -> Result<Self, HistoryError> {
        // Root names cannot contain '@', so the first one separates.
        let (root, commit) = match s.split_once('@') {
            Some((r, c)) => (r, Some(check_prefix(c)?)),
            None => (s, None),
        };
        Ok(RootAt {
            root: root.parse()?,
            commit,
        })
    }
}

impl std::fmt::Display for RootAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.commit {
            Some(c) => write!(f, "{}@{c}", self.root),
            None => write!(f, "{}", self.root),
        }
    }
}

/// A commit id or prefix, lowercased: 1 to 64 hex digits.
pub fn check_prefix(s: &str) -> Result<String, HistoryError> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HistoryError::BadPrefix(s.to_string()));
    }
    Ok(s.to_ascii_lowercase())
}

/// The current commit of a root; a missing root is an error naming the store and the
/// closest existing name.
pub fn head(store: &Store, root: &RootName) -> Result<CommitId, HistoryError> {
    if let Some(id) = store.root_ref(root)? {
        return Ok(id);
    }
    let names: Vec<String> = store
        .roots()?
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let removed = store
        .reflog(root)?
        .last()
        .filter(|l| l.applied && l.entry.new.is_none())
        .map(|l| l.entry.time);
    let hint = match suggest::closest(root.as_str(), names.iter().map(String::as_str)) {
        _ if removed.is_some() => format!(
            " (it was removed at {}: `canopy roots reflog {root}` shows its versions, \
             `canopy roots rollback {root} COMMIT` brings one back)",
            crate::view::rfc3339(removed.unwrap_or_default())
        ),
        Some(near) => format!("; did you mean {near}?"),
        None if names.is_empty() => {
            "; it has no roots yet (make one with `canopy assemble`)".into()
        }
        None => " (see `canopy roots list`)".into(),
    };
    Err(HistoryError::NoSuchRoot {
        root: root.to_string(),
        store: store.path().to_path_buf(),
        hint,
    })
}

/// The commits of a root's history, newest first, starting at `from`.
pub fn log(store: &Store, from: CommitId) -> Log<'_> {
    Log {
        store,
        next: Some(from),
    }
}

/// Iterator over a history; see [`log`]. It ends after the first commit that cannot be
/// read, having yielded the error, or quietly at a commit a replica left out on purpose
/// (see [`Store::cut_history_at`]).
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
            Err(StoreError::Missing { .. }) if self.store.history_cut_at(&id).unwrap_or(false) => {
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Every commit a root has had that the store still holds: its history, and the
/// commits its reflog names with their histories (a commit rolled away from, the
/// versions of a removed root). Newest first along each history.
pub fn known(store: &Store, root: &RootName) -> Result<Vec<CommitId>, HistoryError> {
    let mut starts = Vec::new();
    if let Some(head) = store.root_ref(root)? {
        starts.push(head);
    }
    for logged in store.reflog(root)?.iter().rev() {
        for id in [logged.entry.new, logged.entry.old].into_iter().flatten() {
            if !store.has(&id.0)? {
                // Collected by gc after the grace period.
                continue;
            }
            // A damaged or foreign entry names nothing of this root: a commit must be
            // readable and signed for this root's name to be rolled back to.
            match store.commit(&id) {
                Ok(c) if c.body.root == *root => starts.push(id),
                Ok(c) => tracing::warn!(
                    "the reflog of {root} names commit {id}, which is of root {}: ignored",
                    c.body.root
                ),
                Err(e) => tracing::warn!("the reflog of {root} names {id}: {e}; ignored"),
            }
        }
    }
    if starts.is_empty() {
        head(store, root)?;
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for start in starts {
        if seen.contains(&start) {
            continue;
        }
        for entry in log(store, start) {
            let (id, _) = entry?;
            if !seen.insert(id) {
                break;
            }
            out.push(id);
        }
    }
    Ok(out)
}

/// The commit of `root`'s history — or of its reflog, so a commit rolled away from or
/// of a removed root — that `prefix` names (full id or unique prefix).
pub fn find(store: &Store, root: &RootName, prefix: &str) -> Result<CommitId, HistoryError> {
    let prefix = check_prefix(prefix)?;
    let found: Vec<CommitId> = known(store, root)?
        .into_iter()
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HistoryError::NoSuchCommit {
            root: root.clone(),
            prefix,
        }),
        many => Err(HistoryError::Ambiguous {
            root: root.clone(),
            prefix,
            count: many.len(),
        }),
    }
}

/// The commit `at` names: the current one, or the one its prefix names.
pub fn resolve(store: &Store, at: &RootAt) -> Result<CommitId, HistoryError> {
    match &at.commit {
        Some(prefix) => find(store, &at.root, prefix),
        None => head(store, &at.root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_root_at() {
        let a: RootAt = "web@3F2a".parse().unwrap();
        assert_eq!(a.root.as_str(), "web");
        assert_eq!(a.commit.as_deref(), Some("3f2a"));
        assert_eq!(a.to_string(), "web@3f2a");
        let b: RootAt = "web".parse().unwrap();
        assert_eq!(b.commit, None);
        for bad in [
            "web@",
            "web@xyz",
            "@abc",
            "we/b",
            &format!("w@{}", "a".repeat(65)),
        ] {
            assert!(bad.parse::<RootAt>().is_err(), "{bad}");
        }
    }
}
