//! A root's access profile in its history (see [`canopy_protocol::profile`]): setting
//! or dropping one writes a new signed commit of the same tree on top of the root's
//! current commit, so hosts that follow the root move to it without anything to fetch
//! but the commit, and every host that mounts it cold replays the profile. A new
//! version of the root (an upgrade) carries its parent's profile forward ([`carry`]):
//! the profile names paths, which then name the new version's files.

use crate::import::now;
use crate::store::{Store, StoreError};
use canopy_protocol::profile::{EXTENSION, Profile};
use canopy_protocol::{Commit, CommitBody, CommitId, RootName};
use std::collections::BTreeMap;

/// What setting or dropping a profile did.
pub struct Changed {
    /// The root's commit now: the new commit, or the head when nothing was written.
    pub id: CommitId,
    /// That commit.
    pub commit: Commit,
    /// The head before.
    pub previous: CommitId,
    /// Whether a commit was written: not when the head already says the same.
    pub written: bool,
}

/// Why a profile could not be set or dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The root does not exist.
    #[error("root {0} does not exist in this store (canopy roots list shows the roots)")]
    NoRoot(RootName),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes `root`'s current commit carry `profile` (`None`: no profile), as a new signed
/// commit of the same tree whose parent is the current head. The store must be open
/// for writing.
pub fn set(
    store: &Store,
    root: &RootName,
    profile: Option<&Profile>,
) -> Result<Changed, ProfileError> {
    let head = store
        .root_ref(root)?
        .ok_or_else(|| ProfileError::NoRoot(root.clone()))?;
    let current = store.commit(&head)?;
    let mut extensions = current.body.extensions.clone();
    let subject = match profile {
        Some(p) => {
            extensions.insert(EXTENSION.to_string(), p.to_json());
            format!(
                "profile {root}: {} files read by {}",
                p.paths.len(),
                p.command.join(" ")
            )
        }
        None => {
            extensions.remove(EXTENSION);
            format!("profile {root}: dropped")
        }
    };
    if extensions == current.body.extensions {
        return Ok(Changed {
            id: head,
            commit: current,
            previous: head,
            written: false,
        });
    }
    let body = CommitBody {
        root: root.clone(),
        generation: current.body.generation + 1,
        tree: current.body.tree,
        parent: Some(head),
        timestamp: now(),
        subject,
        requested: current.body.requested.clone(),
        options: current.body.options.clone(),
        packages: current.body.packages.clone(),
        extensions,
    };
    let commit = body.sign(&store.signing_key()?);
    let mut txn = store.begin()?;
    let id = txn.put_commit(&commit)?;
    txn.operation("profile");
    txn.set_root(root, Some(head), id);
    txn.commit()?;
    Ok(Changed {
        id,
        commit,
        previous: head,
        written: true,
    })
}

/// Carries `parent`'s profile, if it has one, into the extensions of a new version of
/// its root.
pub fn carry(parent: &CommitBody, extensions: &mut BTreeMap<String, Vec<u8>>) {
    if let Some(p) = parent.extensions.get(EXTENSION) {
        extensions
            .entry(EXTENSION.to_string())
            .or_insert_with(|| p.clone());
    }
}
