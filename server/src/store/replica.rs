//! What makes a store a replica of another (`canopy replicate`): the key its roots are
//! signed with upstream, and where its histories were cut short.
//!
//! Both are refs, so they live wherever the store's refs do (a directory, a bucket) and
//! every server attached to the store sees them:
//!
//! ```text
//! trust/upstream   the upstream's public key (32 bytes, written as a ref's hex)
//! shallow/ID       commit ID is absent on purpose: the history before it was not
//!                  replicated, and walks of history end there rather than fail
//! ```
//!
//! A replica serves roots it did not sign: hosts, `fsck` and `key show` use the
//! upstream's key, and the replica's own key signs nothing (a commit made there would
//! not verify on any host that trusts upstream).

use super::{Store, StoreError};
use canopy_protocol::{CommitId, ObjectId, VerifyingKey};

/// The ref holding the upstream's public key.
const UPSTREAM: &str = "trust/upstream";
/// The ref namespace of history cuts.
const SHALLOW: &str = "shallow";

fn hex(key: &VerifyingKey) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// The key this store's roots are signed with upstream, if it is a replica.
    pub fn upstream_key(&self) -> Result<Option<VerifyingKey>, StoreError> {
        let Some(id) = self.refs().get(UPSTREAM)? else {
            return Ok(None);
        };
        VerifyingKey::from_bytes(id.as_bytes())
            .map(Some)
            .map_err(|e| StoreError::BadRef {
                path: format!("{}/refs/{UPSTREAM}", self.refs().location()).into(),
                reason: format!("not an ed25519 public key: {e}"),
            })
    }

    /// Makes this store a replica of the roots `key` signs (see
    /// [`Store::may_replicate`]); a replica of `key` already, or a store signed by `key`
    /// itself, is left as it is.
    pub fn become_replica_of(&self, key: &VerifyingKey) -> Result<(), StoreError> {
        if !self.may_replicate(key)? {
            return Ok(());
        }
        let value = ObjectId::from_bytes(key.to_bytes());
        match self.refs().compare_and_swap(UPSTREAM, None, Some(value)) {
            Ok(()) => Ok(()),
            // Another replicate claimed it meanwhile: fine if for the same key.
            Err(StoreError::Conflict { .. }) => self.become_replica_of(key),
            Err(e) => Err(e),
        }
    }

    /// Whether this store can hold the roots `key` signs, and has yet to be made a
    /// replica of it (false: it is one already, or `key` is its own). A store with
    /// roots of its own, or a replica of another key, is refused: its hosts trust
    /// another key, and one store serves one key's roots.
    pub fn may_replicate(&self, key: &VerifyingKey) -> Result<bool, StoreError> {
        let refuse = |reason: String| StoreError::Replica {
            store: self.path().display().to_string(),
            reason,
        };
        match self.upstream_key()? {
            Some(k) if k == *key => return Ok(false),
            Some(k) => {
                return Err(refuse(format!(
                    "it is a replica of the roots signed by key {}, not by key {}: \
                     replicate into a new store (`canopy --store DIR init`)",
                    hex(&k),
                    hex(key)
                )));
            }
            None => {}
        }
        let own = self.verifying_key()?;
        if own == *key {
            return Ok(false);
        }
        let roots = self.roots()?;
        if let Some((name, _)) = roots.first() {
            return Err(refuse(format!(
                "it has roots of its own ({name}{}), signed by its key {}, not by key {}: \
                 replicate into a new store (`canopy --store DIR init`)",
                if roots.len() > 1 {
                    format!(" and {} more", roots.len() - 1)
                } else {
                    String::new()
                },
                hex(&own),
                hex(key)
            )));
        }
        Ok(true)
    }

    /// Records that commit `id` is absent on purpose: history walks end at it.
    pub fn cut_history_at(&self, id: &CommitId) -> Result<(), StoreError> {
        let name = format!("{SHALLOW}/{id}");
        match self.refs().compare_and_swap(&name, None, Some(id.0)) {
            Ok(()) | Err(StoreError::Conflict { found: Some(_), .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether history was cut at commit `id` (see [`Store::cut_history_at`]).
    pub fn history_cut_at(&self, id: &CommitId) -> Result<bool, StoreError> {
        Ok(self.refs().get(&format!("{SHALLOW}/{id}"))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture::{commit, memory_with};
    use crate::view::history;

    #[test]
    fn a_store_with_roots_of_its_own_refuses_another_key() {
        let (_state, store, tree) = memory_with(&[("a", b"a")]);
        commit(&store, "web", tree);
        let own = store.verifying_key().unwrap();
        assert!(!store.may_replicate(&own).unwrap());
        let other = canopy_protocol::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let err = store.become_replica_of(&other).unwrap_err().to_string();
        assert!(
            err.contains("roots of its own (web)") && err.contains(&hex(&other)),
            "{err}"
        );
        assert_eq!(store.upstream_key().unwrap(), None);
    }

    #[test]
    fn a_replica_trusts_and_shows_the_upstream_key_and_signs_nothing() {
        let (_state, store, _) = memory_with(&[("a", b"a")]);
        let upstream = canopy_protocol::SigningKey::from_bytes(&[7; 32]).verifying_key();
        store.become_replica_of(&upstream).unwrap();
        store.become_replica_of(&upstream).unwrap();
        assert_eq!(store.upstream_key().unwrap(), Some(upstream));
        assert_eq!(store.verifying_key().unwrap(), upstream);
        let err = store.signing_key().unwrap_err().to_string();
        assert!(
            err.contains("replica") && err.contains(&hex(&upstream)),
            "{err}"
        );
        let other = canopy_protocol::SigningKey::from_bytes(&[8; 32]).verifying_key();
        let err = store.become_replica_of(&other).unwrap_err().to_string();
        assert!(
            err.contains(&hex(&upstream)) && err.contains(&hex(&other)),
            "{err}"
        );
    }

    #[test]
    fn history_ends_quietly_where_it_was_cut_and_only_there() {
        let (_state, store, tree) = memory_with(&[("a", b"a")]);
        let first = commit(&store, "web", tree);
        let second = commit(&store, "web", tree);
        store.objects().delete(&first.0).unwrap();
        let walked: Vec<_> = history::log(&store, second).collect();
        assert!(matches!(
            walked.last(),
            Some(Err(StoreError::Missing { .. }))
        ));
        store.cut_history_at(&first).unwrap();
        store.cut_history_at(&first).unwrap();
        let walked: Vec<CommitId> = history::log(&store, second).map(|c| c.unwrap().0).collect();
        assert_eq!(walked, [second]);
        let key = store.verifying_key().unwrap();
        let closure = crate::closure::walk(&store, Some(&key)).unwrap();
        assert!(closure.problems.is_empty(), "{:?}", closure.problems);
    }
}
