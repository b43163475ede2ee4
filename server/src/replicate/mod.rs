//! `canopy replicate`: a verified copy of another canopy server's roots in this store,
//! which can then serve them to hosts that trust the upstream's key.
//!
//! For each root, one pass:
//! 1. its upstream commit is fetched and checked as hosts check it (signed by the
//!    trusted key, for this root's name, and — if the replica has the root already —
//!    newer than and descending from the replica's commit): [`canopy_client::mount`];
//! 2. the commits to copy: the current one, or with `--history` every commit back to
//!    one the replica has (a history left out is recorded as a cut, see
//!    [`Store::cut_history_at`], so walks of history end there rather than fail);
//! 3. their trees, one tree pack per commit (verified), skipping every tree the
//!    replica's current commit of the root has already: its contents are complete;
//! 4. the file contents the replica does not hold, fetched in parallel and verified as
//!    they stream to disk, then written in batches of about `batch_bytes`, each durable
//!    on its own: a run killed at any point keeps what it wrote and the next run
//!    fetches only the rest;
//! 5. trees and commits, then the root's ref (a compare-and-swap on the replica's
//!    commit): nothing is published until everything under it is in the store.
//!
//! Any object that does not verify refuses its root (the error names it); the other
//! roots go on.

mod fetch;

use crate::crash;
use crate::store::{Store, StoreError};
use crate::view::history;
use canopy_client::mount::{self, MountError};
use canopy_client::remote::{FetchError, Remote};
use canopy_protocol::{Commit, CommitId, EntryKind, ObjectId, RootName, TreeId, VerifyingKey};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What to replicate and how.
pub struct Options {
    /// The roots; empty: every root upstream.
    pub roots: Vec<RootName>,
    /// Copy whole histories rather than the current commits.
    pub history: bool,
    /// Objects fetched at once.
    pub jobs: usize,
    /// Bytes of file contents written to the store per durable batch.
    pub batch_bytes: u64,
}

/// The upstream: its servers, the key its roots must be signed with, and the runtime
/// its requests run on.
pub struct Upstream {
    /// The servers (tried in order).
    pub remote: Arc<Remote>,
    /// The key.
    pub trust: VerifyingKey,
    /// Requests are run here (`block_on`: never call from one of its threads).
    pub rt: tokio::runtime::Handle,
    /// Set to stop: the pass ends after the objects being fetched, writing nothing more.
    pub stop: Arc<AtomicBool>,
}

/// What a pass tells as it goes (for progress on a terminal).
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The root's new commits are verified; their trees and contents come next.
    Copying {
        /// The root.
        root: &'a str,
        /// The upstream commit.
        commit: CommitId,
        /// How many commits are copied.
        commits: u64,
    },
    /// A batch of file contents was written.
    Fetched {
        /// The root.
        root: &'a str,
        /// Objects fetched so far.
        objects: u64,
        /// Objects to fetch.
        of: u64,
        /// Bytes fetched so far.
        bytes: u64,
        /// Bytes to fetch.
        total: u64,
    },
    /// The root's ref now names the upstream commit.
    Published {
        /// The root.
        root: &'a str,
        /// The commit.
        commit: CommitId,
    },
}

/// How one root's pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The replica had the upstream's commit already.
    Current,
    /// A root new to the replica.
    Created,
    /// The replica's root moved to the upstream's commit.
    Updated,
    /// Something did not verify: nothing was published for the root.
    Refused,
    /// The upstream or the store failed: nothing was published; a later run resumes.
    Failed,
}

/// One root's pass.
#[derive(Clone, Debug, Serialize)]
pub struct RootReport {
    /// The root.
    pub root: String,
    /// How it ended.
    pub status: Status,
    /// The upstream commit (published unless refused or failed).
    pub commit: Option<String>,
    /// The replica's commit before.
    pub previous: Option<String>,
    /// Commits copied.
    pub commits: u64,
    /// Trees new to the replica.
    pub trees: u64,
    /// File contents fetched.
    pub objects_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
    /// File contents the replica had already.
    pub objects_present: u64,
    /// Why it was refused or failed.
    pub error: Option<String>,
}

impl RootReport {
    /// A report of root `root` with nothing done yet.
    pub fn new(root: &str) -> Self {
        RootReport {
            root: root.to_string(),
            status: Status::Current,
            commit: None,
            previous: None,
            commits: 0,
            trees: 0,
            objects_fetched: 0,
            bytes_fetched: 0,
            objects_present: 0,
            error: None,
        }
    }
}

/// Why a root was not published.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A commit was refused as a host refuses it (signature, name, history).
    #[error("{0}")]
    Refused(MountError),
    /// An object's bytes do not match its id, or its size its tree entry.
    #[error("object {id} does not verify: {reason}")]
    BadObject {
        /// The object.
        id: ObjectId,
        /// What was wrong, and where it came from.
        reason: String,
    },
    /// Two commits of the history do not follow each other.
    #[error(
        "commit {commit} has generation {generation}, but its parent {parent} has {parent_generation}: the history is not consistent"
    )]
    BadHistory {
        /// The child.
        commit: CommitId,
        /// Its generation.
        generation: u64,
        /// The parent.
        parent: CommitId,
        /// Its generation.
        parent_generation: u64,
    },
    /// The upstream could not be reached or failed.
    #[error("{0}")]
    Fetch(FetchError),
    /// The replica's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stopped by a signal.
    #[error("stopped before it was published (what was written is kept: run again to resume)")]
    Stopped,
}

impl RootError {
    /// Whether upstream's content was refused (rather than failing to arrive).
    fn is_refusal(&self) -> bool {
        match self {
            RootError::Refused(e) => e.is_refusal() || bad_bytes(e),
            RootError::BadObject { .. } | RootError::BadHistory { .. } => true,
            _ => false,
        }
    }
}

/// Whether a fetch failed on bytes that do not verify.
fn mismatch(e: &FetchError) -> bool {
    match e {
        FetchError::Mismatch { .. } | FetchError::Decode { .. } => true,
        FetchError::AllFailed(all) => all.iter().any(mismatch),
        _ => false,
    }
}

fn bad_bytes(e: &MountError) -> bool {
    matches!(e, MountError::Fetch(f) if mismatch(f))
}

impl From<MountError> for RootError {
    fn from(e: MountError) -> Self {
        RootError::Refused(e)
    }
}

impl From<FetchError> for RootError {
    fn from(e: FetchError) -> Self {
        RootError::Fetch(e)
    }
}

/// A root upstream and its commit, or why it cannot be replicated.
pub type Listed = (String, Result<CommitId, MountError>);

/// The roots to replicate and their upstream commits; a root that cannot be listed
/// gets its error instead.
pub fn upstream_roots(up: &Upstream, opts: &Options) -> Result<Vec<Listed>, FetchError> {
    if opts.roots.is_empty() {
        let listed = up.rt.block_on(up.remote.roots())?;
        return Ok(listed
            .into_iter()
            .map(|info| {
                let commit = info.commit.parse().map_err(|e: canopy_protocol::IdError| {
                    MountError::BadCommit {
                        root: info.name.clone(),
                        commit: info.commit.clone(),
                        reason: e.to_string(),
                    }
                });
                (info.name, commit)
            })
            .collect());
    }
    Ok(opts
        .roots
        .iter()
        .map(|name| {
            let commit = up.rt.block_on(mount::current(&up.remote, name.as_str()));
            (name.to_string(), commit)
        })
        .collect())
}

/// Replicates root `name` at upstream commit `head` into `store`; `progress` hears
/// what happens. The report says how it ended; an error is also in it.
pub fn root(
    store: &Store,
    up: &Upstream,
    opts: &Options,
    name: &str,
    head: CommitId,
    progress: &dyn Fn(Event),
) -> RootReport {
    let mut report = RootReport::new(name);
    report.commit = Some(head.to_string());
    match copy_root(store, up, opts, name, head, &mut report, progress) {
        Ok(status) => report.status = status,
        Err(e) => {
            report.status = if e.is_refusal() {
                Status::Refused
            } else {
                Status::Failed
            };
            report.error = Some(e.to_string());
        }
    }
    report
}

fn copy_root(
    store: &Store,
    up: &Upstream,
    opts: &Options,
    name: &str,
    head: CommitId,
    report: &mut RootReport,
    progress: &dyn Fn(Event),
) -> Result<Status, RootError> {
    let root: RootName = name.parse().map_err(|e: canopy_protocol::RootNameError| {
        RootError::Refused(MountError::BadCommit {
            root: name.to_string(),
            commit: head.to_string(),
            reason: e.to_string(),
        })
    })?;
    let local = store.root_ref(&root)?;
    report.previous = local.map(|c| c.to_string());
    // The replica's published history of the root, and whether it was cut short.
    let (mut had, cut_short) = match local {
        Some(local) if local != head || opts.history => local_history(store, local)?,
        _ => (HashSet::new(), false),
    };
    // Up to date, unless --history asks for the history a run without it left out:
    // then the whole upstream history is walked (commits are small; trees and files
    // the replica has are skipped as ever).
    let deepen = opts.history && cut_short;
    if local == Some(head) && !deepen {
        return Ok(Status::Current);
    }
    if deepen {
        had.clear();
    }
    let rt = &up.rt;
    let newest = rt.block_on(mount::verified_commit(&up.remote, &up.trust, name, head))?;
    if let Some(local) = local.filter(|l| *l != head) {
        rt.block_on(mount::forward(&up.remote, name, local, head, &newest))?;
    }
    // A root signed by the trusted key: the store now serves that key's roots.
    store.become_replica_of(&up.trust)?;
    // The trees the replica holds completely: those of its published commit.
    let mut known = match local {
        Some(local) => known_trees(store, up, local)?,
        None => HashSet::new(),
    };
    let (commits, cut) = commits_to_copy(up, opts, name, head, newest, &had)?;
    if local == Some(head) && commits.len() == 1 {
        // The upstream has no more of the history either.
        return Ok(Status::Current);
    }
    progress(Event::Copying {
        root: name,
        commit: head,
        commits: commits.len() as u64,
    });

    // Trees (kept on disk in the transaction that publishes) and the blobs they name.
    let mut meta = store.begin()?;
    meta.operation("replicate");
    let mut blobs: Vec<(ObjectId, u64)> = Vec::new();
    let mut seen_blobs = HashSet::new();
    for (id, commit) in &commits {
        let pack = rt.block_on(up.remote.tree_pack_encoded(&commit.body.tree))?;
        let mut stack = vec![commit.body.tree];
        while let Some(tree_id) = stack.pop() {
            if !known.insert(tree_id) {
                continue;
            }
            let (tree, bytes) = pack.get(&tree_id).ok_or_else(|| RootError::BadObject {
                id: tree_id.0,
                reason: format!("the tree pack of commit {id} does not hold it"),
            })?;
            if meta.put_encoded_object(bytes)? != tree_id.0 {
                return Err(RootError::BadObject {
                    id: tree_id.0,
                    reason: "its bytes hash to another id".into(),
                });
            }
            report.trees += 1;
            for entry in tree.entries() {
                match &entry.kind {
                    EntryKind::Dir { tree } => stack.push(*tree),
                    EntryKind::File { blob, size } if seen_blobs.insert(blob.0) => {
                        blobs.push((blob.0, *size));
                    }
                    _ => {}
                }
            }
        }
    }
    // Everything the root will reference, present or not, is protected from a gc on
    // another machine until it is published (the batches below reference nothing yet).
    let mut ids: Vec<ObjectId> = blobs.iter().map(|(id, _)| *id).collect();
    ids.extend(commits.iter().map(|(id, _)| id.0));
    ids.extend(known.iter().map(|t| t.0));
    let _lease = store.objects().protect(&ids)?;
    let missing = fetch::absent(store, &blobs, opts.jobs)?;
    report.objects_present = (blobs.len() - missing.len()) as u64;
    fetch::copy(store, up, opts, name, &missing, report, progress)?;
    if up.stop.load(Ordering::SeqCst) {
        return Err(RootError::Stopped);
    }

    // Commits, oldest first, then the cut (if any), then the ref.
    for (id, commit) in commits.iter().rev() {
        if meta.put_commit(commit)? != *id {
            return Err(RootError::BadObject {
                id: id.0,
                reason: "the commit does not encode to its id".into(),
            });
        }
        report.commits += 1;
    }
    if let Some(cut) = cut {
        store.cut_history_at(&cut)?;
    }
    meta.set_root(&root, local, head);
    meta.commit()?;
    progress(Event::Published {
        root: name,
        commit: head,
    });
    Ok(if local.is_some() {
        Status::Updated
    } else {
        Status::Created
    })
}

/// The commits of the replica's history of a root, from its published commit, and
/// whether that history was cut short (its oldest commit has a parent).
fn local_history(store: &Store, from: CommitId) -> Result<(HashSet<CommitId>, bool), StoreError> {
    let (mut out, mut cut) = (HashSet::new(), false);
    for entry in history::log(store, from) {
        let (id, commit) = entry?;
        out.insert(id);
        cut = commit.body.parent.is_some();
    }
    Ok((out, cut))
}

/// Every tree of the replica's published commit `local`: complete in the store, so
/// never fetched again. The upstream's tree pack of that commit names them in one
/// request (the trees are the same bytes wherever they come from, by their ids);
/// without it, the replica's own trees are read.
fn known_trees(
    store: &Store,
    up: &Upstream,
    local: CommitId,
) -> Result<HashSet<TreeId>, StoreError> {
    let tree = store.commit(&local)?.body.tree;
    if let Ok(pack) = up.rt.block_on(up.remote.tree_pack_encoded(&tree)) {
        return Ok(pack.into_keys().collect());
    }
    Ok(crate::view::trees_under(store, tree)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// A commit fetched and verified.
type Verified = (CommitId, Commit);

/// The commits to copy, newest first, each verified; and the commit where the copied
/// history stops short of its start (the parent of the oldest copied), unless the
/// replica has it.
fn commits_to_copy(
    up: &Upstream,
    opts: &Options,
    name: &str,
    head: CommitId,
    newest: Commit,
    had: &HashSet<CommitId>,
) -> Result<(Vec<Verified>, Option<CommitId>), RootError> {
    let mut commits = vec![(head, newest)];
    loop {
        let (child_id, child) = commits.last().expect("one commit at least");
        let Some(parent) = child.body.parent else {
            return Ok((commits, None));
        };
        if had.contains(&parent) {
            return Ok((commits, None));
        }
        if !opts.history {
            return Ok((commits, Some(parent)));
        }
        let (child_id, generation) = (*child_id, child.body.generation);
        let older = match up
            .rt
            .block_on(mount::verified_commit(&up.remote, &up.trust, name, parent))
        {
            Ok(c) => c,
            // The upstream is a replica whose history stops here.
            Err(MountError::Fetch(e)) if e.is_not_found() => return Ok((commits, Some(parent))),
            Err(e) => return Err(e.into()),
        };
        if older.body.generation + 1 != generation {
            return Err(RootError::BadHistory {
                commit: child_id,
                generation,
                parent,
                parent_generation: older.body.generation,
            });
        }
        commits.push((parent, older));
    }
}

/// Writes nothing more once `stop` is set; a crash point between durable batches.
fn batch_written() {
    crash::point("replicate batch written");
}
