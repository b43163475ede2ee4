//! Access profiles: the files a program read as it started, in the order it first read
//! them, recorded once per root and replayed by every host that mounts it cold.
//!
//! A profile lives in the root's signed commit, under the extension key [`EXTENSION`]
//! (JSON of [`Profile`]), so the commit's signature covers it and everything that
//! keeps, copies or checks commits (gc, replication, fsck) keeps it too. It names
//! **paths** relative to the root, not object ids: a new version of the root (an
//! upgrade) carries its parent's profile forward, and the paths then name the new
//! contents. Recording notes contents, so each is named by the first path that holds
//! it in the tree ([`paths_of`]), whichever path the program read it by: identical
//! files share one path, and one fetch. A profile is at most [`MAX_JSON`] bytes, so the
//! commit that carries it stays small enough for every host to load.
//!
//! Replaying a profile fetches its files in profile order, many per request:
//! `GET /v1/packs/profile/{commit}/{part}` answers part `part` of the plan [`plan`]
//! makes of the commit's profile against the commit's tree, in the directory-pack
//! format ([`crate::pack`]). Server and client compute the same plan from the signed
//! commit, so the client knows every member's id and size before it asks, every member
//! is verified against its id, and the URL names its answer for good (every host asks
//! the same URLs, HTTP caches keep them). Files larger than [`pack::MEMBER_MAX`] are
//! not in parts: the plan lists them apart ([`Plan::large`]), fetched as objects.

use crate::id::ObjectId;
use crate::pack::{self, Member};
use crate::tree::{EntryKind, Tree};
use crate::{BlobId, TreeId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The commit extension key holding a [`Profile`].
pub const EXTENSION: &str = "profile";
/// Most paths a profile holds (a program's start reads hundreds; this keeps a commit
/// small whatever was recorded).
pub const MAX_PATHS: usize = 16_384;
/// Longest path in a profile, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Largest profile, in bytes of its JSON: commits travel whole (a host fetches one
/// within a bound of 16 MiB), so a profile must never make its commit unloadable.
pub const MAX_JSON: usize = 1 << 20;

/// What a profile records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The command recorded, as it was given.
    pub command: Vec<String>,
    /// When it was recorded, unix seconds.
    pub recorded: i64,
    /// The commit whose tree the paths were recorded in (a carried-forward profile
    /// keeps naming where it was recorded).
    pub recorded_in: String,
    /// Regular files read, relative to the root (`usr/bin/bash`), in the order they
    /// were first read.
    pub paths: Vec<String>,
    /// Their total size in bytes, when recorded.
    pub bytes: u64,
}

/// Why an extension value is not a usable profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// Larger than [`MAX_JSON`].
    #[error("the profile is {0} bytes of JSON, more than the {MAX_JSON} allowed")]
    TooLarge(usize),
    /// Not the JSON of a [`Profile`].
    #[error("the profile is not valid JSON of a profile: {0}")]
    Json(String),
    /// Too many paths.
    #[error("the profile has {0} paths, more than the {MAX_PATHS} allowed")]
    TooMany(usize),
    /// A path that is not a plain relative path.
    #[error("the profile's path {0:?} is not a relative path of plain names")]
    BadPath(String),
}

impl Profile {
    /// The extension value: JSON, one form for one set of facts.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Profile always serialises")
    }

    /// Reads and checks an extension value: at most [`MAX_JSON`] bytes and
    /// [`MAX_PATHS`] paths, each one [`allowed`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProfileError> {
        if bytes.len() > MAX_JSON {
            return Err(ProfileError::TooLarge(bytes.len()));
        }
        let p: Profile =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Json(e.to_string()))?;
        if p.paths.len() > MAX_PATHS {
            return Err(ProfileError::TooMany(p.paths.len()));
        }
        if let Some(bad) = p.paths.iter().find(|path| !allowed(path)) {
            return Err(ProfileError::BadPath(bad.clone()));
        }
        Ok(p)
    }

    /// Drops the last paths until the profile holds at most [`MAX_PATHS`] paths and
    /// [`MAX_JSON`] bytes of JSON, if it can (not if its command alone is too large);
    /// returns how many were dropped.
    pub fn fit(&mut self) -> usize {
        let before = self.paths.len();
        self.paths.truncate(MAX_PATHS);
        let base = Profile {
            paths: Vec::new(),
            ..self.clone()
        }
        .to_json()
        .len();
        // Each path adds its JSON string and a comma.
        let mut size = base;
        let keep = self
            .paths
            .iter()
            .take_while(|p| {
                size += serde_json::to_string(p).map_or(usize::MAX / 2, |j| j.len()) + 1;
                size <= MAX_JSON
            })
            .count();
        self.paths.truncate(keep);
        while self.to_json().len() > MAX_JSON && self.paths.pop().is_some() {}
        before - self.paths.len()
    }

    /// The profile of a commit's extensions: `None` if it has none.
    pub fn of(
        extensions: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Option<Result<Self, ProfileError>> {
        extensions.get(EXTENSION).map(|v| Profile::from_json(v))
    }
}

/// Whether a profile may hold `path`: relative, made of plain names (no `.`, `..` or
/// empty component, no NUL), at most [`MAX_PATH_LEN`] bytes.
pub fn allowed(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// What replaying a profile against one tree fetches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Parts of the profile's pack, in profile order: distinct contents of at most
    /// [`pack::MEMBER_MAX`] bytes, parts of at most [`pack::PART_MAX`] bytes and
    /// [`pack::PART_MEMBERS`] members.
    pub parts: Vec<Vec<Member>>,
    /// Larger contents, in profile order, each fetched as an object.
    pub large: Vec<Member>,
}

impl Plan {
    /// Every member, parts first.
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .flatten()
            .chain(&self.large)
            .map(|m| m.size)
            .sum()
    }
}

/// The plan of `profile` against tree `root`, whose trees `tree` gives. A tree it
/// cannot give fails the plan (a plan that left paths out would still name its URLs
/// for good). Paths that are not regular files of the tree (gone in this version, or a
/// symlink or directory now) are left out, as is each content after its first path;
/// the rest keeps profile order.
pub fn plan<E>(
    profile: &Profile,
    root: TreeId,
    mut tree: impl FnMut(&TreeId) -> Result<Arc<Tree>, E>,
) -> Result<Plan, E> {
    let mut trees: HashMap<TreeId, Arc<Tree>> = HashMap::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut plan = Plan::default();
    let mut bytes = 0;
    for path in &profile.paths {
        let found = resolve(path, root, &mut |id| {
            if let Some(t) = trees.get(id) {
                return Ok(t.clone());
            }
            let t = tree(id)?;
            trees.insert(*id, t.clone());
            Ok(t)
        })?;
        let Some(m) = found else {
            continue;
        };
        if !seen.insert(m.blob) {
            continue;
        }
        if m.size > pack::MEMBER_MAX {
            plan.large.push(m);
            continue;
        }
        let full = plan
            .parts
            .last()
            .is_none_or(|p| p.len() == pack::PART_MEMBERS || bytes + m.size > pack::PART_MAX);
        if full {
            plan.parts.push(Vec::new());
            bytes = 0;
        }
        bytes += m.size;
        plan.parts
            .last_mut()
            .expect("a part was just pushed")
            .push(m);
    }
    Ok(plan)
}

/// The regular file at `path` under `root`, without following symlinks.
fn resolve<E>(
    path: &str,
    root: TreeId,
    tree: &mut impl FnMut(&TreeId) -> Result<Arc<Tree>, E>,
) -> Result<Option<Member>, E> {
    let mut dir = root;
    let mut names = path.split('/').peekable();
    while let Some(name) = names.next() {
        let t = tree(&dir)?;
        let Some(entry) = t.get(name.as_bytes()) else {
            return Ok(None);
        };
        match (&entry.kind, names.peek()) {
            (EntryKind::Dir { tree }, Some(_)) => dir = *tree,
            (EntryKind::File { size, blob }, None) => {
                return Ok(Some(Member {
                    blob: *blob,
                    size: *size,
                }));
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The paths of `ids` under tree `root` (whose trees `tree` gives; one it cannot give
/// fails the walk), in the order of `ids`: each content's first path in a depth-first
/// walk of the tree in entry order that a profile may hold ([`allowed`]). A profile
/// thus names the first path holding a content read, whichever path the program read
/// it by: identical files share one path, and one fetch. Contents the tree does not
/// hold under an allowed path are left out.
pub fn paths_of<E>(
    ids: &[ObjectId],
    root: TreeId,
    tree: &impl Fn(&TreeId) -> Result<Arc<Tree>, E>,
) -> Result<Vec<String>, E> {
    let wanted: HashSet<ObjectId> = ids.iter().copied().collect();
    let mut found: HashMap<ObjectId, String> = HashMap::new();
    let mut todo = vec![(root, String::new())];
    let mut visited = HashSet::new();
    while let Some((id, prefix)) = todo.pop() {
        if !visited.insert(id) || found.len() == wanted.len() {
            continue;
        }
        let t = tree(&id)?;
        let mut dirs = Vec::new();
        for e in t.entries() {
            let Ok(name) = std::str::from_utf8(e.name.as_bytes()) else {
                continue;
            };
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            match &e.kind {
                EntryKind::File { blob, .. }
                    if wanted.contains(&blob.0)
                        && !found.contains_key(&blob.0)
                        && allowed(&path) =>
                {
                    found.insert(blob.0, path);
                }
                // Nothing under a path too long is allowed.
                EntryKind::Dir { tree } if path.len() < MAX_PATH_LEN => dirs.push((*tree, path)),
                _ => {}
            }
        }
        // Popped in entry order.
        todo.extend(dirs.into_iter().rev());
    }
    Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_entries::{dir, file};

    fn trees() -> (TreeId, HashMap<TreeId, Arc<Tree>>) {
        let lib = Tree::new(vec![
            file("big.so", b"big", pack::MEMBER_MAX + 1),
            file("a.py", b"a", 10),
            file("same.py", b"b", 20),
        ])
        .unwrap();
        let top = Tree::new(vec![
            file("b", b"b", 20),
            dir("lib", lib.id()),
            file("z", b"z", 5),
        ])
        .unwrap();
        let root = top.id();
        let map = HashMap::from([(lib.id(), Arc::new(lib)), (root, Arc::new(top))]);
        (root, map)
    }

    #[test]
    fn plan_keeps_profile_order_and_leaves_out_what_the_tree_lacks() {
        let (root, map) = trees();
        let profile = Profile {
            paths: [
                "z",
                "lib/big.so",
                "gone",
                "lib",
                "lib/a.py/x",
                "lib/same.py",
                "b",
                "lib/a.py",
            ]
            .map(String::from)
            .to_vec(),
            ..Profile::default()
        };
        let plan = plan(&profile, root, |id| map.get(id).cloned().ok_or(())).unwrap();
        let blobs: Vec<BlobId> = plan.parts[0].iter().map(|m| m.blob).collect();
        // `b` has the content of lib/same.py, listed before it: once.
        assert_eq!(
            blobs,
            vec![BlobId::of(b"z"), BlobId::of(b"b"), BlobId::of(b"a")]
        );
        assert_eq!(plan.large.len(), 1);
        assert_eq!(plan.bytes(), 35 + pack::MEMBER_MAX + 1);
    }

    #[test]
    fn paths_come_back_in_the_order_of_the_ids() {
        let (root, map) = trees();
        let ids = [BlobId::of(b"a").0, BlobId::of(b"z").0, BlobId::of(b"b").0];
        let paths = paths_of(&ids, root, &|id| map.get(id).cloned().ok_or(())).unwrap();
        // `b` is both `b` and `lib/same.py`: the first in entry order.
        assert_eq!(paths, vec!["lib/a.py", "z", "b"]);
    }

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        let ok = Profile {
            paths: vec!["usr/bin/bash".into()],
            ..Profile::default()
        };
        assert_eq!(Profile::from_json(&ok.to_json()), Ok(ok));
        for bad in ["/etc/passwd", "usr/../etc", "a//b", "./a", "", "a/"] {
            let p = Profile {
                paths: vec![bad.into()],
                ..Profile::default()
            };
            assert_eq!(
                Profile::from_json(&p.to_json()),
                Err(ProfileError::BadPath(bad.into()))
            );
        }
        assert!(matches!(
            Profile::from_json(b"{\"paths\": 3}"),
            Err(ProfileError::Json(_))
        ));
    }

    #[test]
    fn a_profile_is_bounded_in_bytes_and_fit_makes_it_fit() {
        let mut p = Profile {
            command: vec!["x".repeat(1000)],
            paths: (0..MAX_PATHS)
                .map(|n| format!("{n}/{}", "a".repeat(200)))
                .collect(),
            ..Profile::default()
        };
        let json = p.to_json();
        assert!(json.len() > MAX_JSON);
        assert_eq!(
            Profile::from_json(&json),
            Err(ProfileError::TooLarge(json.len()))
        );
        let dropped = p.fit();
        assert!(dropped > 0 && !p.paths.is_empty());
        let json = p.to_json();
        assert!(json.len() <= MAX_JSON);
        assert_eq!(Profile::from_json(&json), Ok(p.clone()));
        // The first paths are kept.
        assert_eq!(p.paths[0], format!("0/{}", "a".repeat(200)));
        // A command too large alone leaves nothing that fits.
        let mut huge = Profile {
            command: vec!["y".repeat(MAX_JSON)],
            paths: vec!["a".into()],
            ..Profile::default()
        };
        huge.fit();
        assert!(huge.paths.is_empty() && huge.to_json().len() > MAX_JSON);
    }

    #[test]
    fn a_tree_that_cannot_be_read_fails_the_plan_and_the_walk() {
        let (root, map) = trees();
        let profile = Profile {
            paths: vec!["z".into(), "lib/a.py".into()],
            ..Profile::default()
        };
        let lib = *map.keys().find(|id| **id != root).unwrap();
        let failing = |id: &TreeId| {
            if *id == lib {
                Err("io")
            } else {
                map.get(id).cloned().ok_or("missing")
            }
        };
        assert_eq!(plan(&profile, root, failing), Err("io"));
        assert_eq!(paths_of(&[BlobId::of(b"a").0], root, &failing), Err("io"));
    }

    #[test]
    fn paths_the_format_refuses_are_not_recorded() {
        // The same content first under a path too long, then under `z/y`: `z/y`.
        let name = "d".repeat(250);
        let mut chain = Tree::new(vec![file("x", b"same", 4)]).unwrap();
        let mut map = HashMap::new();
        for _ in 0..20 {
            let id = chain.id();
            map.insert(id, Arc::new(chain));
            chain = Tree::new(vec![dir(&name, id)]).unwrap();
        }
        let z = Tree::new(vec![file("y", b"same", 4)]).unwrap();
        let root_tree = Tree::new(vec![dir("a", chain.id()), dir("z", z.id())]).unwrap();
        let root = root_tree.id();
        map.insert(chain.id(), Arc::new(chain));
        map.insert(z.id(), Arc::new(z));
        map.insert(root, Arc::new(root_tree));
        let paths = paths_of(&[BlobId::of(b"same").0], root, &|id| {
            map.get(id).cloned().ok_or(())
        })
        .unwrap();
        assert_eq!(paths, vec!["z/y"]);
    }
}
