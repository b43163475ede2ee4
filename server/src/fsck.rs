//! fsck: re-hash every object, and check that everything the refs reach is present,
//! decodable and (for commits) signed by the store's key.

use crate::closure::{self, Problem};
use crate::store::{Store, StoreError};
use canopy_protocol::{Hasher, ObjectId};
use rayon::prelude::*;
use std::fs::File;
use std::io::Read;

/// What fsck found.
pub struct Report {
    /// Objects re-hashed.
    pub objects: u64,
    /// Refs followed.
    pub refs: u64,
    /// Objects no ref reaches (left by an interrupted write; `gc` removes them).
    pub unreachable: u64,
    /// Everything wrong, without duplicates.
    pub problems: Vec<Problem>,
}

fn rehash(path: &std::path::Path) -> std::io::Result<ObjectId> {
    let mut f = File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Checks the whole store.
pub fn fsck(store: &Store) -> Result<Report, StoreError> {
    let objects = store.objects()?;
    let mut problems: Vec<Problem> = objects
        .par_iter()
        .filter_map(|(id, path)| match rehash(path) {
            Ok(actual) if actual == *id => None,
            Ok(actual) => Some(Problem {
                kind: "corrupt",
                id: Some(*id),
                detail: format!("{} hashes to {actual}", path.display()),
            }),
            Err(e) => Some(Problem {
                kind: "unreadable",
                id: Some(*id),
                detail: format!("{}: {e}", path.display()),
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
    let unreachable = objects
        .iter()
        .filter(|(id, _)| !walk.reachable.contains(id))
        .count() as u64;
    Ok(Report {
        objects: objects.len() as u64,
        refs: walk.refs,
        unreachable,
        problems,
    })
}
