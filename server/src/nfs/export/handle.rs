//! File handles: what a handle holds, and how one from before a restart or an upgrade
//! is found again.

use super::{Error, Exports, Found, Node, Scope, ScopeKey, TOP_ID, lock};
use canopy_protocol::{CommitId, EntryKind, ObjectId};
use std::time::Instant;

/// First bytes of every handle: a magic byte and the handle format's version.
const HANDLE_MAGIC: [u8; 2] = [0xca, 0x01];

impl Exports {
    /// The handle of a node: magic, kind, fileid, then the export it was reached through
    /// (a hash of the root's name, or the pinned commit id); at most 43 bytes, well
    /// within NFSv3's 64.
    pub fn handle(found: &Found) -> Vec<u8> {
        let mut h = HANDLE_MAGIC.to_vec();
        let scope = match &found.node {
            Node::Top => {
                h.push(0);
                None
            }
            Node::Dir { scope, .. } => {
                h.push(1);
                Some(scope)
            }
            Node::Leaf { scope, .. } => {
                h.push(2);
                Some(scope)
            }
        };
        h.extend_from_slice(&found.id.to_be_bytes());
        match scope.map(Scope::key) {
            None => {}
            Some(ScopeKey::Name(n)) => h.extend_from_slice(&n.to_be_bytes()),
            Some(ScopeKey::Commit(c)) => h.extend_from_slice(c.0.as_bytes()),
        }
        h
    }

    /// What a handle names. Handles this server never made are bad; handles of what
    /// no export holds any more are stale.
    pub fn resolve_handle(&self, handle: &[u8]) -> Result<Found, Error> {
        if handle.len() < 11 || handle[..2] != HANDLE_MAGIC {
            return Err(Error::BadHandle);
        }
        let is_dir = match handle[2] {
            0 if handle.len() == 11 => {
                return if handle[3..] == TOP_ID.to_be_bytes() {
                    Ok(Self::top())
                } else {
                    Err(Error::BadHandle)
                };
            }
            1 => true,
            2 => false,
            _ => return Err(Error::BadHandle),
        };
        let id = u64::from_be_bytes(handle[3..11].try_into().expect("8 bytes"));
        let key = match handle[11..].len() {
            8 => ScopeKey::Name(u64::from_be_bytes(
                handle[11..].try_into().expect("8 bytes"),
            )),
            32 => {
                let bytes: [u8; 32] = handle[11..].try_into().expect("32 bytes");
                ScopeKey::Commit(CommitId(ObjectId::from_bytes(bytes)))
            }
            _ => return Err(Error::BadHandle),
        };
        let known = |exports: &Self| {
            lock(&exports.known)
                .get(&id)
                .cloned()
                .filter(|node| matches!(node, Node::Dir { .. }) == is_dir)
        };
        if let Some(node) = known(self) {
            return Ok(Found { id, node });
        }
        let scope = match key {
            ScopeKey::Commit(c) => Scope::Pinned(c),
            ScopeKey::Name(_) => self
                .roots()?
                .keys()
                .map(|name| Scope::Current(name.clone()))
                .find(|s| s.key() == key)
                .ok_or(Error::Stale)?,
        };
        self.walk(&scope)?;
        known(self)
            .map(|node| Found { id, node })
            .ok_or(Error::Stale)
    }

    /// Remembers every directory and file of an export's current version, once per
    /// version: how handles from before a restart or an upgrade are found again.
    fn walk(&self, scope: &Scope) -> Result<(), Error> {
        let top = self.top_tree(scope)?;
        if !lock(&self.walked).insert((scope.clone(), top)) {
            return Ok(());
        }
        let started = Instant::now();
        let mut count = 0usize;
        self.remember(&Self::export_top(scope.clone()));
        let mut stack = vec![(top, Vec::new())];
        while let Some((tree_id, path)) = stack.pop() {
            for e in self.tree(&tree_id)?.entries() {
                let found = Self::child(scope, &path, e);
                if let (EntryKind::Dir { tree }, Node::Dir { path, .. }) = (&e.kind, &found.node) {
                    stack.push((*tree, path.clone()));
                }
                self.remember(&found);
                count += 1;
            }
        }
        tracing::info!(
            "walked {count} entries of {scope:?} to find handles again ({:?})",
            started.elapsed()
        );
        Ok(())
    }
}
