//! What the refs reach: every root's commits (through parents), the packages they were
//! built from, every imported package, the commits the reflog still keeps, and all
//! their trees and blobs. fsck checks this closure; gc keeps exactly it, and says which
//! of these keeps what ([`Walk`] walks from any of them).

use crate::store::{Store, StoreError};
use crate::view::history;
use canopy_protocol::{CommitId, EntryKind, ObjectId, RootName, TreeId, VerifyingKey};
use std::collections::HashSet;

/// A problem found while walking.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// `missing`, `corrupt`, `undecodable`, `unreadable`, `bad-signature`, `size-mismatch`,
    /// `bad-ref` or (fsck only) `link-farm`.
    pub kind: &'static str,
    /// The object concerned, if any.
    pub id: Option<ObjectId>,
    /// What and where.
    pub detail: String,
    /// The object is a file's content: it references nothing, so its damage hides no
    /// other object from the walk.
    pub leaf: bool,
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
        self.problems.push(Problem {
            kind,
            id,
            detail,
            leaf: false,
        });
    }

    fn leaf_problem(&mut self, kind: &'static str, id: ObjectId, detail: String) {
        self.problems.push(Problem {
            kind,
            id: Some(id),
            detail,
            leaf: true,
        });
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

/// Walks everything the refs reach: roots with their history, imported packages, and
/// what the reflog keeps for gc's default grace period.
/// With `key`, every commit's signature is checked. Problems are collected, not raised:
/// the walk goes on past them.
pub fn walk(store: &Store, key: Option<&VerifyingKey>) -> Result<Closure, StoreError> {
    let mut w = Walk::new(store, key);
    w.roots(None)?;
    w.packages()?;
    w.reflogs(crate::gc::reflog_cutoff(crate::gc::REFLOG_GRACE), None)?;
    Ok(w.finish())
}

/// A walk of the store from chosen starting points, each added by a method, then
/// [`Walk::finish`] to follow every tree they reach.
pub struct Walk<'s> {
    store: &'s Store,
    key: Option<&'s VerifyingKey>,
    c: Closure,
    /// Trees to follow: id, where it was met, whether its damage goes unreported.
    trees: Vec<(TreeId, String, bool)>,
}

impl<'s> Walk<'s> {
    /// An empty walk; with `key`, the commits it meets have their signatures checked.
    pub fn new(store: &'s Store, key: Option<&'s VerifyingKey>) -> Self {
        Walk {
            store,
            key,
            c: Closure::default(),
            trees: Vec::new(),
        }
    }

    /// Every root's history, except `skip`'s.
    pub fn roots(&mut self, skip: Option<&RootName>) -> Result<(), StoreError> {
        let roots = match self.store.roots() {
            Ok(r) => r,
            Err(e) => {
                self.c.read_failed(e, "listing roots");
                Vec::new()
            }
        };
        for (name, head) in roots {
            if Some(&name) == skip {
                continue;
            }
            self.c.refs += 1;
            self.history(&format!("root {name}"), head, false);
        }
        Ok(())
    }

    /// The commits that roots' reflogs name in entries made after `since`
    /// (unix seconds), with their histories: what a rollback may still go back to, and
    /// the versions of removed roots, for the grace period. Entries whose move never
    /// happened keep nothing, and commits gc already took are passed over. What the
    /// reflog keeps is kept on a best-effort basis: damage found there is not reported.
    pub fn reflogs(&mut self, since: i64, skip: Option<&RootName>) -> Result<(), StoreError> {
        for root in self.store.logged_roots()? {
            if Some(&root) == skip {
                continue;
            }
            // A reflog that cannot be read (or the ref it is read against, malformed) is
            // a problem like any other: fsck lists it among the rest, and gc, which
            // cannot tell what it keeps, deletes nothing.
            let entries = match self.store.reflog(&root) {
                Ok(entries) => entries,
                Err(e) => {
                    self.c
                        .read_failed(e, &format!("reading the reflog of {root}"));
                    continue;
                }
            };
            for logged in entries {
                if !logged.applied || logged.entry.time <= since {
                    continue;
                }
                for id in [logged.entry.old, logged.entry.new].into_iter().flatten() {
                    if self.store.has(&id.0)? {
                        self.history(&format!("reflog of {root}"), id, true);
                    }
                }
            }
        }
        Ok(())
    }

    /// One root's history from `head`.
    pub fn commits(&mut self, label: &str, head: CommitId) {
        self.history(label, head, false);
    }

    /// Every imported package.
    pub fn packages(&mut self) -> Result<(), StoreError> {
        let packages = match self.store.package_refs() {
            Ok(p) => p,
            Err(e) => {
                self.c.read_failed(e, "listing packages");
                Vec::new()
            }
        };
        for (archive, id) in packages {
            self.c.refs += 1;
            self.c.reachable.insert(id.0);
            match self.store.package(&id) {
                Ok(p) => {
                    let context = format!("package {} {}", p.name, p.version);
                    if let Some(control) = p.control {
                        self.trees
                            .push((control, format!("{context}, control"), false));
                    }
                    self.trees.push((p.tree, context, false));
                }
                Err(e) => self.c.read_failed(e, &format!("package ref {archive}")),
            }
        }
        Ok(())
    }

    /// A history from `head`, newest first, stopping at commits already walked; with
    /// `quiet`, damage met is not reported.
    fn history(&mut self, label: &str, head: CommitId, quiet: bool) {
        for entry in history::log(self.store, head) {
            let (id, commit) = match entry {
                Ok(found) => found,
                Err(_) if quiet => break,
                Err(e) => {
                    self.c.read_failed(e, &format!("{label}, history"));
                    break;
                }
            };
            // Histories share their older commits: walk each once.
            if !self.c.reachable.insert(id.0) {
                break;
            }
            if let Some(key) = self.key.filter(|_| !quiet)
                && let Err(e) = commit.verify(key)
            {
                self.c.problem(
                    "bad-signature",
                    Some(id.0),
                    format!("{label}, commit {id}: {e}"),
                );
            }
            let context = format!("{label}, commit {}", id.0.short());
            self.trees.push((commit.body.tree, context, quiet));
            for p in &commit.body.packages {
                self.c.reachable.insert(p.package.0);
            }
        }
    }

    /// Follows every tree reached so far and returns what the walk found.
    pub fn finish(mut self) -> Closure {
        let (store, c) = (self.store, &mut self.c);
        while let Some((id, context, quiet)) = self.trees.pop() {
            if !c.reachable.insert(id.0) {
                continue;
            }
            let tree = match store.tree(&id) {
                Ok(t) => t,
                Err(_) if quiet => continue,
                Err(e) => {
                    c.read_failed(e, &context);
                    continue;
                }
            };
            for entry in tree.entries() {
                match &entry.kind {
                    EntryKind::Dir { tree } => self.trees.push((*tree, context.clone(), quiet)),
                    EntryKind::File { blob, size } => {
                        if !c.reachable.insert(blob.0) || quiet {
                            continue;
                        }
                        match store.objects().size(&blob.0) {
                            Ok(len) if len == *size => {}
                            Ok(len) => c.leaf_problem(
                                "size-mismatch",
                                blob.0,
                                format!(
                                    "{context}: file {} should be {size} bytes, the object has {len}",
                                    entry.name,
                                ),
                            ),
                            Err(StoreError::Missing { .. }) => c.leaf_problem(
                                "missing",
                                blob.0,
                                format!("{context}: content of file {}", entry.name),
                            ),
                            Err(e) => c.leaf_problem(
                                "unreadable",
                                blob.0,
                                format!("{context}: content of file {}: {e}", entry.name),
                            ),
                        }
                    }
                    _ => {}
                }
            }
        }
        self.c
    }
}
