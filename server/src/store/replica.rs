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
