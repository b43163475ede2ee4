//! Access profiles: the files a program read as it started, in the order it first read
//! them, recorded once per root and replayed by every host that mounts it cold.
//!
//! A profile lives in the root's signed commit, under the extension key [`EXTENSION`]
//! (JSON of [`Profile`]), so the commit's signature covers it and everything that
//! keeps, copies or checks commits (gc, replication, fsck) keeps it too. It names
//! **paths** relative to the root, not object ids: a new version of the root (an
//! upgrade) carries its parent's profile forward, and the paths then name the new
//! contents.
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

    /// Reads and checks an extension value: at most [`MAX_PATHS`] paths, each relative
    /// and made of plain names (no `.`, `..` or empty component).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProfileError> {
        let p: Profile =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Json(e.to_string()))?;
        if p.paths.len() > MAX_PATHS {
            return Err(ProfileError::TooMany(p.paths.len()));
        }
        if let Some(bad) = p.paths.iter().find(|path| !plain(path)) {
            return Err(ProfileError::BadPath(bad.clone()));
        }
        Ok(p)
    }

    /// The profile of a commit's extensions: `None` if it has none.
    pub fn of(
        extensions: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Option<Result<Self, ProfileError>> {
        extensions.get(EXTENSION).map(|v| Profile::from_json(v))
    }
}

/// Whether `path` is relative and made of plain names.
fn plain(path: &str) -> bool {
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

/// The plan of `profile` against tree `root`, whose trees `tree` gives (`None`: not
/// available, and the paths under it are left out). Paths that are not regular files of
/// the tree (gone in this version, or a symlink or directory now) are left out, as is
/// each content after its first path; the rest keeps profile order.
pub fn plan(
    profile: &Profile,
    root: TreeId,
    mut tree: impl FnMut(&TreeId) -> Option<Arc<Tree>>,
) -> Plan {
    let mut trees: HashMap<TreeId, Option<Arc<Tree>>> = HashMap::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut plan = Plan::default();
    let mut bytes = 0;
    for path in &profile.paths {
        let Some(m) = resolve(path, root, &mut |id| {
            trees.entry(*id).or_insert_with(|| tree(id)).clone()
        }) else {
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
    plan
}

/// The regular file at `path` under `root`, without following symlinks.
fn resolve(
    path: &str,
    root: TreeId,
    tree: &mut impl FnMut(&TreeId) -> Option<Arc<Tree>>,
) -> Option<Member> {
    let mut dir = root;
    let mut names = path.split('/').peekable();
    while let Some(name) = names.next() {
        let t = tree(&dir)?;
        let entry = t.get(name.as_bytes())?;
        match (&entry.kind, names.peek()) {
            (EntryKind::Dir { tree }, Some(_)) => dir = *tree,
            (EntryKind::File { size, blob }, None) => {
                return Some(Member {
                    blob: *blob,
                    size: *size,
                });
            }
            _ => return None,
        }
    }
    None
}

/// The paths of `ids` under tree `root` (whose trees `tree` gives), in the order of
/// `ids`: each content's first path in a depth-first walk of the tree in entry order.
/// Contents the tree does not hold, and paths that are not UTF-8, are left out.
pub fn paths_of(
    ids: &[ObjectId],
    root: TreeId,
    tree: &impl Fn(&TreeId) -> Option<Arc<Tree>>,
) -> Vec<String> {
    let wanted: HashSet<ObjectId> = ids.iter().copied().collect();
    let mut found: HashMap<ObjectId, String> = HashMap::new();
    let mut todo = vec![(root, String::new())];
    let mut visited = HashSet::new();
    while let Some((id, prefix)) = todo.pop() {
        if !visited.insert(id) || found.len() == wanted.len() {
            continue;
        }
        let Some(t) = tree(&id) else { continue };
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
                EntryKind::File { blob, .. } if wanted.contains(&blob.0) => {
                    found.entry(blob.0).or_insert(path);
                }
                EntryKind::Dir { tree } => dirs.push((*tree, path)),
                _ => {}
            }
        }
        // Popped in entry order.
        todo.extend(dirs.into_iter().rev());
    }
    ids.iter().filter_map(|id| found.get(id).cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Entry, Meta, Name};

    fn file(name: &str, content: &[u8], size: u64) -> Entry {
        Entry {
            name: Name::new(name.as_bytes().to_vec()).unwrap(),
            meta: Meta::default(),
            kind: EntryKind::File {
                size,
                blob: BlobId::of(content),
            },
        }
    }

    fn dir(name: &str, tree: TreeId) -> Entry {
        Entry {
            name: Name::new(name.as_bytes().to_vec()).unwrap(),
            meta: Meta::default(),
            kind: EntryKind::Dir { tree },
        }
    }

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
        let plan = plan(&profile, root, |id| map.get(id).cloned());
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
        let paths = paths_of(&ids, root, &|id| map.get(id).cloned());
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
}
