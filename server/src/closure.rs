//! What the refs reach: every root's commits (through parents), the packages they were
//! built from, every imported package, and all their trees and blobs. fsck checks this
//! closure; gc keeps exactly it.

use crate::store::{Store, StoreError};
use canopy_protocol::{CommitId, EntryKind, ObjectId, TreeId, VerifyingKey};
use std::collections::HashSet;

/// A problem found while walking.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// `missing`, `corrupt`, `undecodable`, `bad-signature`, `size-mismatch` or `bad-ref`.
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

    /// Records a failed read of a reached object.
    fn read_failed(&mut self, err: StoreError, what: &str) {
        let (kind, id) = match &err {
            StoreError::Missing { id, .. } => ("missing", Some(*id)),
            StoreError::Corrupt { id, .. } => ("corrupt", Some(*id)),
            StoreError::Decode { id, .. } => ("undecodable", Some(*id)),
            _ => ("bad-ref", None),
        };
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
        let mut next: Option<CommitId> = Some(head);
        while let Some(id) = next.take() {
            if !c.reachable.insert(id.0) {
                break;
            }
            let commit = match store.commit(&id) {
                Ok(commit) => commit,
                Err(e) => {
                    c.read_failed(e, &format!("root {name}, commit {id}"));
                    break;
                }
            };
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
            next = commit.body.parent;
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
                if let Some(control) = &p.control {
                    trees.push((control.tree, format!("{context}, control data")));
                    c.reachable.insert(control.files.0);
                    if !store.has(&control.files.0) {
                        c.problem(
                            "missing",
                            Some(control.files.0),
                            format!("{context}: its file list"),
                        );
                    }
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
                    match std::fs::metadata(store.object_path(&blob.0)) {
                        Ok(m) if m.len() == *size => {}
                        Ok(m) => c.problem(
                            "size-mismatch",
                            Some(blob.0),
                            format!(
                                "{context}: file {} should be {size} bytes, the object has {}",
                                entry.name,
                                m.len()
                            ),
                        ),
                        Err(_) => c.problem(
                            "missing",
                            Some(blob.0),
                            format!("{context}: content of file {}", entry.name),
                        ),
                    }
                }
                _ => {}
            }
        }
    }
    Ok(c)
}
