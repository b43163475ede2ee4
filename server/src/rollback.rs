//! Rollback: a new signed commit whose tree is an earlier commit's and whose parent is
//! the current head. History only grows, so the commit rolled back from stays in it
//! (a later rollback can go forward to it again, and gc keeps it), and hosts that
//! refuse to go back in generation still follow.
//!
//! The new commit repeats the restored commit's request, options, packages and
//! extensions, so `upgrade` and `roots log` see the root as that commit made it, and
//! records which commit it restored under the extension key [`EXTENSION`].

use crate::import::now;
use crate::store::{Store, StoreError};
use crate::view::history::{self, HistoryError};
use canopy_protocol::{Commit, CommitBody, CommitId, RootName};
use serde::{Deserialize, Serialize};

/// The extension key of a rollback commit: JSON `{"restored": "<commit id>"}`.
pub const EXTENSION: &str = "rollback";

/// What the `rollback` extension holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The commit whose tree and recipe the rollback commit carries.
    pub restored: String,
}

/// What a rollback did.
pub struct RolledBack {
    /// The root's commit now: the new rollback commit, or the head when nothing was
    /// written.
    pub id: CommitId,
    /// That commit.
    pub commit: Commit,
    /// The head before.
    pub previous: CommitId,
    /// The commit whose content was restored.
    pub restored: CommitId,
    /// Whether a commit was written: not when the head already has the restored
    /// commit's content.
    pub written: bool,
}

/// Why a rollback could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// There is no earlier version to go back to.
    #[error("root {0} has no earlier version to roll back to")]
    NothingBefore(RootName),
    /// The target belongs to another root.
    #[error("commit {commit} is a commit of root {other}, not of {root}")]
    OtherRoot {
        /// The root rolled back.
        root: RootName,
        /// The commit given.
        commit: CommitId,
        /// The root it belongs to.
        other: RootName,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The commit a rollback commit restored, if `commit` is one.
pub fn restored_by(commit: &CommitBody) -> Option<CommitId> {
    let value = commit.extensions.get(EXTENSION)?;
    let r: Restored = serde_json::from_slice(value).ok()?;
    r.restored.parse().ok().map(CommitId)
}

/// The version before the one `head` shows: the parent of the commit that made the
/// head's content, looking through rollback commits, so that rolling back again goes
/// further back instead of undoing the last rollback.
pub fn previous_version(
    store: &Store,
    root: &RootName,
    head: CommitId,
) -> Result<CommitId, RollbackError> {
    let mut made = head;
    let mut hops = 0;
    loop {
        let commit = store.commit(&made)?;
        match restored_by(&commit.body) {
            // A bound, in case of a malicious chain; real chains are short.
            Some(earlier) if hops < 1000 => {
                made = earlier;
                hops += 1;
            }
            _ => {
                return commit
                    .body
                    .parent
                    .ok_or_else(|| RollbackError::NothingBefore(root.clone()));
            }
        }
    }
}

/// Where a rollback starts: the root's current commit, or, for a root that was
/// removed, the commit it had (which becomes the new commit's parent: history grows on
/// from where it stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The root exists, at this commit.
    Head(CommitId),
    /// The root was removed when at this commit.
    Removed(CommitId),
}

impl Base {
    /// The commit the rollback commit builds on.
    pub fn commit(self) -> CommitId {
        match self {
            Base::Head(c) | Base::Removed(c) => c,
        }
    }
}

/// Where `root` stands for a rollback: its head, or the commit it had when removed.
pub fn base(store: &Store, root: &RootName) -> Result<Base, HistoryError> {
    if let Some(head) = store.root_ref(root)? {
        return Ok(Base::Head(head));
    }
    let removed = store.reflog(root)?.into_iter().rev().find_map(|l| {
        (l.applied && l.entry.new.is_none())
            .then_some(l.entry.old)
            .flatten()
    });
    match removed {
        // A damaged or foreign entry is no base: the commit must be this root's.
        Some(c) if store.commit(&c).is_ok_and(|x| x.body.root == *root) => Ok(Base::Removed(c)),
        // Neither a root nor a removed one: the usual error, with its suggestions.
        _ => Err(history::head(store, root).expect_err("the root has no ref")),
    }
}

/// Makes the root show `target`'s content again, as a new commit on top of `base`. The
/// store must be open for writing.
pub fn rollback(
    store: &Store,
    root: &RootName,
    base: Base,
    target: CommitId,
) -> Result<RolledBack, RollbackError> {
    let head = base.commit();
    let current = store.commit(&head)?;
    let old = store.commit(&target)?;
    if old.body.root != *root {
        return Err(RollbackError::OtherRoot {
            root: root.clone(),
            commit: target,
            other: old.body.root,
        });
    }
    let mut extensions = without_record(&old.body);
    let same = current.body.tree == old.body.tree
        && current.body.packages == old.body.packages
        && current.body.requested == old.body.requested
        && current.body.options == old.body.options
        && without_record(&current.body) == extensions;
    if same && matches!(base, Base::Head(_)) {
        return Ok(RolledBack {
            id: head,
            commit: current,
            previous: head,
            restored: target,
            written: false,
        });
    }
    let record = Restored {
        restored: target.to_string(),
    };
    extensions.insert(
        EXTENSION.to_string(),
        serde_json::to_vec(&record).expect("a record serializes"),
    );
    let body = CommitBody {
        root: root.clone(),
        generation: current.body.generation + 1,
        tree: old.body.tree,
        parent: Some(head),
        timestamp: now(),
        subject: format!(
            "rollback {root} to {} ({})",
            target.0.short(),
            old.body.subject
        ),
        requested: old.body.requested.clone(),
        options: old.body.options.clone(),
        packages: old.body.packages.clone(),
        extensions,
    };
    let commit = body.sign(&store.signing_key()?);
    let mut txn = store.begin()?;
    let id = txn.put_commit(&commit)?;
    txn.operation("rollback");
    let expected = match base {
        Base::Head(h) => Some(h),
        Base::Removed(_) => None,
    };
    txn.set_root(root, expected, id);
    txn.commit()?;
    Ok(RolledBack {
        id,
        commit,
        previous: head,
        restored: target,
        written: true,
    })
}

/// A commit's extensions without the rollback record.
fn without_record(body: &CommitBody) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut e = body.extensions.clone();
    e.remove(EXTENSION);
    e
}
