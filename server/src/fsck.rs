//! fsck: re-hash every object, and check that everything the refs reach is present,
//! decodable and (for commits) signed by the store's key; re-hash the link farm's
//! files too (see [`crate::linkfarm`]).

use crate::closure::{self, Problem};
use crate::store::{Store, StoreError};
use canopy_protocol::{Hasher, ObjectId};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// What fsck found.
pub struct Report {
    /// Objects re-hashed.
    pub objects: u64,
    /// Refs followed.
    pub refs: u64,
    /// Objects no ref reaches (a root's unconfigured trees, or left by an interrupted
    /// write; `gc` removes them).
    pub unreachable: u64,
    /// Everything wrong, without duplicates.
    pub problems: Vec<Problem>,
}

fn rehash(store: &Store, id: &ObjectId) -> Result<ObjectId, String> {
    let mut hasher = Hasher::new();
    let mut reader = store.objects().get(id).map_err(|e| e.to_string())?;
    std::io::copy(&mut reader, &mut hasher).map_err(|e| e.to_string())?;
    Ok(hasher.finish())
}

/// Where an object is, for messages: its file, or its id in the backend.
fn whereabouts(store: &Store, id: &ObjectId) -> String {
    match store.local_path(id) {
        Some(path) => path.display().to_string(),
        None => format!("object {id} in {}", store.objects().location()),
    }
}

/// Checks the whole store.
pub fn fsck(store: &Store) -> Result<Report, StoreError> {
    fsck_with_progress(store, &|_, _| {})
}

/// [`fsck`], calling `progress(done, total)` as objects are re-hashed (from several
/// threads), for a progress display: re-hashing a large store takes a while.
pub fn fsck_with_progress(
    store: &Store,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Report, StoreError> {
    let objects = store.objects().list()?;
    let total = objects.len() as u64;
    let done = AtomicU64::new(0);
    let mut problems: Vec<Problem> = objects
        .par_iter()
        .inspect(|_| progress(done.fetch_add(1, Ordering::Relaxed) + 1, total))
        .filter_map(|id| match rehash(store, id) {
            Ok(actual) if actual == *id => None,
            Ok(actual) => Some(Problem {
                kind: "corrupt",
                id: Some(*id),
                detail: format!("{} hashes to {actual}", whereabouts(store, id)),
                leaf: false,
            }),
            Err(e) => Some(Problem {
                kind: "unreadable",
                id: Some(*id),
                detail: format!("{}: {e}", whereabouts(store, id)),
                leaf: false,
            }),
        })
        .collect();
    let key = store.verifying_key()?;
    let walk = closure::walk(store, Some(&key))?;
    for p in walk.problems {
        // A corrupt object is found by both passes; say it once.
        if !problems
            .iter()
            .any(|q| q.kind == p.kind && q.id == p.id && p.id.is_some())
        {
            problems.push(p);
        }
    }
    for c in crate::linkfarm::changed(store) {
        problems.push(Problem {
            kind: "link-farm",
            id: None,
            detail: format!(
                "{} {} (it should hold object {}): a hard-linked checkout was edited in place, which changes every checkout linking it; `canopy fsck --repair` takes it out of the farm",
                c.path.display(),
                match c.actual {
                    Some(a) => format!("hashes to {a}"),
                    None => "is unreadable".into(),
                },
                c.id
            ),
            leaf: true,
        });
    }
    let unreachable = objects
        .iter()
        .filter(|id| !walk.reachable.contains(id))
        .count() as u64;
    Ok(Report {
        objects: objects.len() as u64,
        refs: walk.refs,
        unreachable,
        problems,
    })
}
