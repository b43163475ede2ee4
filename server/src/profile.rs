//! A root's access profile in its history (see [`canopy_protocol::profile`]): setting
//! or dropping one writes a new signed commit of the same tree on top of the root's
//! current commit, so hosts that follow the root move to it without anything to fetch
//! but the commit, and every host that mounts it cold replays the profile. A new
//! version of the root (an upgrade) carries its parent's profile forward ([`carry`]):
//! the profile names paths, which then name the new version's files.

use crate::import::now;
use crate::store::{Store, StoreError};
use canopy_protocol::profile::{EXTENSION, Profile};
use canopy_protocol::{Commit, CommitBody, CommitId, Escaped, RootName};
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
    /// The profile is not one hosts would accept.
    #[error("root {0}: not writing this profile: {1}")]
    Invalid(RootName, canopy_protocol::profile::ProfileError),
    /// The root moved on from the commit the profile was recorded in.
    #[error(
        "root {root} moved from commit {expected} (where the profile was recorded) to {head} \
         meanwhile: not writing the profile (record it again on the new version)"
    )]
    Moved {
        /// The root.
        root: RootName,
        /// The commit it was expected at.
        expected: CommitId,
        /// Its head now.
        head: CommitId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes `root`'s current commit carry `profile` (`None`: no profile), as a new signed
/// commit of the same tree whose parent is the current head. With `expected`, the head
/// must be that commit (the one a profile was recorded in): a profile is not attached
/// to a version it was not recorded in. The profile is checked as hosts check it
/// before anything is signed. The store must be open for writing.
pub fn set(
    store: &Store,
    root: &RootName,
    profile: Option<&Profile>,
    expected: Option<CommitId>,
) -> Result<Changed, ProfileError> {
    let head = store
        .root_ref(root)?
        .ok_or_else(|| ProfileError::NoRoot(root.clone()))?;
    if let Some(expected) = expected.filter(|e| *e != head) {
        return Err(ProfileError::Moved {
            root: root.clone(),
            expected,
            head,
        });
    }
    let current = store.commit(&head)?;
    let mut extensions = current.body.extensions.clone();
    let subject = match profile {
        Some(p) => {
            let json = p.to_json();
            Profile::from_json(&json).map_err(|e| ProfileError::Invalid(root.clone(), e))?;
            extensions.insert(EXTENSION.to_string(), json);
            // The command is whatever was recorded: shown escaped wherever a subject is.
            format!(
                "profile {root}: {} files read by {}",
                p.paths.len(),
                Escaped(p.command.join(" ").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture;

    fn profile(command: &str, path: &str) -> Profile {
        Profile {
            command: vec![command.into()],
            paths: vec![path.into()],
            ..Profile::default()
        }
    }

    #[test]
    fn set_refuses_what_hosts_would_refuse_and_escapes_the_subject() {
        let (_dir, store, tree) = fixture::local_with(&[("a", b"first")]);
        let first = fixture::commit(&store, "r", tree);
        let root: RootName = "r".parse().unwrap();
        let bad = set(&store, &root, Some(&profile("x", "../a")), None);
        assert!(matches!(bad, Err(ProfileError::Invalid(..))));
        assert_eq!(store.root_ref(&root).unwrap(), Some(first));
        let done = set(&store, &root, Some(&profile("x\u{1b}[2J", "a")), None).unwrap();
        assert!(done.written);
        let subject = done.commit.body.subject;
        assert!(!subject.contains('\u{1b}'), "{subject:?}");
    }

    #[test]
    fn set_refuses_a_root_that_moved_from_the_commit_expected() {
        let (_dir, store, tree) = fixture::local_with(&[("a", b"first")]);
        let first = fixture::commit(&store, "r", tree);
        let second = fixture::commit(&store, "r", tree);
        let root: RootName = "r".parse().unwrap();
        let err = set(&store, &root, Some(&profile("x", "a")), Some(first))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&first.to_string()) && err.contains(&second.to_string()),
            "{err}"
        );
        assert_eq!(store.root_ref(&root).unwrap(), Some(second));
        assert!(set(&store, &root, Some(&profile("x", "a")), Some(second)).is_ok());
    }
}
