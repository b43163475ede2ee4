//! What the refs reach: every root's commits (through parents), the packages they were
//! built from, every imported package, and all their trees and blobs. fsck checks this
//! closure; gc keeps exactly it.

use crate::store::{Store, StoreError};
use crate::view::history;
use canopy_protocol::{EntryKind, ObjectId, TreeId, VerifyingKey};
use std::collections::HashSet;

/// A problem found while walking.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// `missing`, `corrupt`, `undecodable`, `unreadable`, `bad-signature`, `size-mismatch`
    /// or `bad-ref`.
    pub kind: &'static str,
    /// The object concerned, if any.
    pub id: Option<ObjectId>,
    /// What and where.
    pub detail: String,
}

/// The result of a walk.
#[derive(Default)]
pub struct Closure {
    /// Every object reached.
    pub reachable: HashSet<ObjectId>,
    /// Refs followed.
    pub refs: u64,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

impl Closure {
    fn problem(&mut self, kind: &'static str, id: Option<ObjectId>, detail: String) {
        self.problems.push(Problem { kind, id, detail });
    }

    /// Records a failed read of a reached object (which stays reached).
    fn read_failed(&mut self, err: StoreError, what: &str) {
        let (kind, id) = match &err {
            StoreError::Missing { id, .. } => ("missing", Some(*id)),
            StoreError::Corrupt { id, .. } => ("corrupt", Some(*id)),
            StoreError::Decode { id, .. } => ("undecodable", Some(*id)),
            _ => ("bad-ref", None),
        };
        if let Some(id) = id {
            self.reachable.insert(id);
        }
        self.problem(kind, id, format!("{what}: {err}"));
    }
}

/// Walks everything the refs reach. With `key`, every commit's signature is checked.
/// Problems are collected, not raised: the walk goes on past them.
pub fn walk(store: &Store, key: Option<&VerifyingKey>) -> Result<Closure, StoreError> {
    let mut c = Closure::default();
    let mut trees: Vec<(TreeId, String)> = Vec::new();
    let roots = match store.roots() {
        Ok(r) => r,
        Err(e) => {
            c.read_failed(e, "listing roots");
            Vec::new()
        }
    };
    for (name, head) in roots {
        c.refs += 1;
        for entry in history::log(store, head) {
            let (id, commit) = match entry {
                Ok(found) => found,
                Err(e) => {
                    c.read_failed(e, &format!("root {name}, history"));
                    break;
                }
            };
            // Histories share their older commits: walk each once.
            if !c.reachable.insert(id.0) {
                break;
            }
            if let Some(key) = key
                && let Err(e) = commit.verify(key)
            {
                c.problem(
                    "bad-signature",
                    Some(id.0),
                    format!("root {name}, commit {id}: {e}"),
                );
            }
            trees.push((
                commit.body.tree,
                format!("root {name}, commit {}", id.0.short()),
            ));
            for p in &commit.body.packages {
                c.reachable.insert(p.package.0);
            }
        }
    }
    let packages = match store.package_refs() {
        Ok(p) => p,
        Err(e) => {
            c.read_failed(e, "listing packages");
            Vec::new()
        }
    };
    for (archive, id) in packages {
        c.refs += 1;
        c.reachable.insert(id.0);
        match store.package(&id) {
            Ok(p) => {
                let context = format!("package {} {}", p.name, p.version);
                if let Some(control) = p.control {
                    trees.push((control, format!("{context}, control")));
                }
                trees.push((p.tree, context));
            }
            Err(e) => c.read_failed(e, &format!("package ref {archive}")),
        }
    }
    while let Some((id, context)) = trees.pop() {
        if !c.reachable.insert(id.0) {
            continue;
        }
        let tree = match store.tree(&id) {
            Ok(t) => t,
            Err(e) => {
                c.read_failed(e, &context);
                continue;
            }
        };
        for entry in tree.entries() {
            match &entry.kind {
                EntryKind::Dir { tree } => trees.push((*tree, context.clone())),
                EntryKind::File { blob, size } => {
                    if !c.reachable.insert(blob.0) {
                        continue;
                    }
                    match store.objects().size(&blob.0) {
                        Ok(len) if len == *size => {}
                        Ok(len) => c.problem(
                            "size-mismatch",
                            Some(blob.0),
                            format!(
                                "{context}: file {} should be {size} bytes, the object has {len}",
                                entry.name,
                            ),
                        ),
                        Err(StoreError::Missing { .. }) => c.problem(
                            "missing",
                            Some(blob.0),
                            format!("{context}: content of file {}", entry.name),
                        ),
                        Err(e) => c.problem(
                            "unreadable",
                            Some(blob.0),
                            format!("{context}: content of file {}: {e}", entry.name),
                        ),
                    }
                }
                _ => {}
            }
        }
    }
    Ok(c)
}
