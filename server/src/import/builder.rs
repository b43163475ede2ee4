//! Builds a package tree from archive entries given as paths, refusing what could not
//! be a real directory tree: `..`, absolute paths, entries beneath symlinks, duplicates,
//! paths too long for any program to name.
//!
//! Depth is the archive's to choose, so nothing here recurses on it: trees are written
//! and dropped with explicit stacks.

use super::{Class, ImportError};
use crate::store::Txn;
use canopy_protocol::{Entry, EntryKind, Escaped, Meta, MetaError, Name, Tree, TreeId};
use std::collections::BTreeMap;

/// Longest path an entry may have, as `/a/b/c` from the root: Linux's PATH_MAX less
/// its NUL. A root is used at `/` (mounted, run, booted), where a longer path could not
/// be named in one system call, so no real package has one; the bound also caps the
/// depth of every tree at 2,048 levels.
pub(crate) const PATH_MAX: usize = 4095;

/// The metadata of directories an archive implies but does not list.
const IMPLIED_DIR: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
    xattrs: Vec::new(),
};

/// A path split into validated components. The empty path is the archive's root.
pub(crate) struct ArchivePath(Vec<Name>);

impl ArchivePath {
    /// Parses a path as archives write them (`./usr/bin/x`, `usr/bin/x`, `usr/lib/`).
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, ImportError> {
        let shown = || Escaped(raw);
        if raw.first() == Some(&b'/') {
            return Err(ImportError::refused(
                Class::AbsolutePath,
                format!("entry \"{}\" has an absolute path", shown()),
            ));
        }
        let mut parts = Vec::new();
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    return Err(ImportError::refused(
                        Class::PathTraversal,
                        format!("entry \"{}\" has a '..' component", shown()),
                    ));
                }
                _ => parts.push(Name::new(comp.to_vec()).map_err(|e| {
                    ImportError::refused(Class::BadName, format!("entry \"{}\": {e}", shown()))
                })?),
            }
        }
        let len: usize = parts.iter().map(|p| p.as_bytes().len() + 1).sum();
        if len > PATH_MAX {
            let mut start = raw.to_vec();
            start.truncate(64);
            return Err(ImportError::refused(
                Class::BadName,
                format!(
                    "entry \"{}…\" has a path of {len} bytes, over {PATH_MAX}",
                    Escaped(&start)
                ),
            ));
        }
        Ok(ArchivePath(parts))
    }

    /// The path as `/a/b`, for messages.
    pub(crate) fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            s.push('/');
            s.push_str(&p.to_string());
        }
        if s.is_empty() { "/".into() } else { s }
    }
}

enum Node {
    Dir {
        meta: Meta,
        explicit: bool,
        children: BTreeMap<Name, Node>,
    },
    Leaf {
        meta: Meta,
        kind: EntryKind,
    },
}

/// A directory tree under construction.
pub(crate) struct TreeBuilder {
    root: BTreeMap<Name, Node>,
    entries: u64,
    max_entries: u64,
    /// Every path added, in order, one per line, as dpkg lists a package's files.
    order: Option<Vec<u8>>,
}

impl TreeBuilder {
    pub(crate) fn new(max_entries: u64) -> Self {
        TreeBuilder {
            root: BTreeMap::new(),
            entries: 0,
            max_entries,
            order: None,
        }
    }

    /// Also records every path added, in the order added (see [`TreeBuilder::take_order`]).
    pub(crate) fn record_order(&mut self) {
        self.order = Some(Vec::new());
    }

    /// The paths added since [`TreeBuilder::record_order`], one per line: `/.` for the
    /// archive's root, `/usr/bin/x` for the others (dpkg's `.list` format).
    pub(crate) fn take_order(&mut self) -> Option<Vec<u8>> {
        self.order.take()
    }

    fn note(&mut self, path: &ArchivePath) {
        if let Some(order) = &mut self.order {
            if path.0.is_empty() {
                order.extend_from_slice(b"/.");
            }
            for name in &path.0 {
                order.push(b'/');
                order.extend_from_slice(name.as_bytes());
            }
            order.push(b'\n');
        }
    }

    /// How many entries were added.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds a directory. Directories may repeat (the last metadata wins), and may follow
    /// entries beneath them, as tar writers order things in many ways.
    pub(crate) fn add_dir(&mut self, path: &ArchivePath, meta: Meta) -> Result<(), ImportError> {
        check(path, &meta)?;
        self.note(path);
        let Some((last, parents)) = path.0.split_last() else {
            // The archive's own root ("./"): roots are always 0755 root:root.
            return Ok(());
        };
        let dir = self.parent(parents, path)?;
        match dir.get_mut(last) {
            Some(Node::Dir {
                meta: m, explicit, ..
            }) => {
                *m = meta;
                *explicit = true;
            }
            Some(Node::Leaf { kind, .. }) => {
                return Err(ImportError::refused(
                    Class::DuplicateEntry,
                    format!(
                        "entry {} is both a {} and a directory",
                        path.display(),
                        kind.label()
                    ),
                ));
            }
            None => {
                dir.insert(
                    last.clone(),
                    Node::Dir {
                        meta,
                        explicit: true,
                        children: BTreeMap::new(),
                    },
                );
            }
        }
        self.count(path)
    }

    /// Adds anything but a directory.
    pub(crate) fn add_leaf(
        &mut self,
        path: &ArchivePath,
        meta: Meta,
        kind: EntryKind,
    ) -> Result<(), ImportError> {
        check(path, &meta)?;
        let Some((last, parents)) = path.0.split_last() else {
            return Err(ImportError::refused(
                Class::Malformed,
                format!("the archive root is a {}", kind.label()),
            ));
        };
        self.note(path);
        let dir = self.parent(parents, path)?;
        if dir.contains_key(last) {
            return Err(ImportError::refused(
                Class::DuplicateEntry,
                format!("entry {} appears twice", path.display()),
            ));
        }
        dir.insert(last.clone(), Node::Leaf { meta, kind });
        self.count(path)
    }

    /// The regular file at `path`, for hard links.
    pub(crate) fn file(&self, path: &ArchivePath) -> Option<(Meta, EntryKind)> {
        let (last, parents) = path.0.split_last()?;
        let mut dir = &self.root;
        for p in parents {
            match dir.get(p)? {
                Node::Dir { children, .. } => dir = children,
                Node::Leaf { .. } => return None,
            }
        }
        match dir.get(last)? {
            Node::Leaf {
                meta,
                kind: kind @ EntryKind::File { .. },
            } => Some((meta.clone(), kind.clone())),
            _ => None,
        }
    }

    fn count(&mut self, path: &ArchivePath) -> Result<(), ImportError> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!(
                    "more than {} entries (at {})",
                    self.max_entries,
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// The children map of the directory holding `path`, creating implied directories.
    fn parent(
        &mut self,
        parents: &[Name],
        path: &ArchivePath,
    ) -> Result<&mut BTreeMap<Name, Node>, ImportError> {
        let mut dir = &mut self.root;
        for p in parents {
            let node = dir.entry(p.clone()).or_insert_with(|| Node::Dir {
                meta: IMPLIED_DIR,
                explicit: false,
                children: BTreeMap::new(),
            });
            dir = match node {
                Node::Dir { children, .. } => children,
                Node::Leaf {
                    kind: EntryKind::Symlink { .. },
                    ..
                } => {
                    return Err(ImportError::refused(
                        Class::ThroughSymlink,
                        format!("entry {} lies beneath symlink {p}", path.display()),
                    ));
                }
                Node::Leaf { kind, .. } => {
                    return Err(ImportError::refused(
                        Class::Malformed,
                        format!(
                            "entry {} lies beneath {p}, which is a {}",
                            path.display(),
                            kind.label()
                        ),
                    ));
                }
            };
        }
        Ok(dir)
    }

    /// Writes every directory as a tree object, deepest first; returns the root tree.
    pub(crate) fn write(mut self, txn: &mut Txn<'_>) -> Result<TreeId, ImportError> {
        // One frame per open directory: its remaining children, the entries written so
        // far, and the name and metadata it will be entered under in its parent.
        struct Frame {
            children: std::collections::btree_map::IntoIter<Name, Node>,
            entries: Vec<Entry>,
            name: Option<(Name, Meta)>,
        }
        let mut stack = vec![Frame {
            children: std::mem::take(&mut self.root).into_iter(),
            entries: Vec::new(),
            name: None,
        }];
        loop {
            let top = stack.last_mut().expect("the root frame is popped last");
            match top.children.next() {
                Some((name, Node::Dir { meta, children, .. })) => stack.push(Frame {
                    children: children.into_iter(),
                    entries: Vec::new(),
                    name: Some((name, meta)),
                }),
                Some((name, Node::Leaf { meta, kind })) => {
                    top.entries.push(Entry { name, meta, kind })
                }
                None => {
                    let done = stack.pop().expect("top exists");
                    let tree = Tree::new(done.entries).map_err(|e| {
                        ImportError::refused(Class::Malformed, format!("a directory: {e}"))
                    })?;
                    let id = txn.put_tree(&tree)?;
                    match (done.name, stack.last_mut()) {
                        (Some((name, meta)), Some(parent)) => parent.entries.push(Entry {
                            name,
                            meta,
                            kind: EntryKind::Dir { tree: id },
                        }),
                        _ => return Ok(id),
                    }
                }
            }
        }
    }
}

/// Dropping a deep tree of nested maps would recurse once per level: take it apart
/// level by level instead.
impl Drop for TreeBuilder {
    fn drop(&mut self) {
        let mut pending: Vec<BTreeMap<Name, Node>> = vec![std::mem::take(&mut self.root)];
        while let Some(map) = pending.pop() {
            for (_, node) in map {
                if let Node::Dir { children, .. } = node {
                    pending.push(children);
                }
            }
        }
    }
}

/// Refuses metadata no tree could hold (an empty xattr name, a value over 64 KiB…),
/// naming the entry.
fn check(path: &ArchivePath, meta: &Meta) -> Result<(), ImportError> {
    meta.check().map_err(|e| {
        let class = match e {
            MetaError::XattrValue { .. } | MetaError::TooManyXattrs(_) => Class::TooLarge,
            MetaError::XattrName(_) => Class::BadName,
            MetaError::Mode(_) | MetaError::XattrOrder => Class::Malformed,
        };
        ImportError::refused(class, format!("entry {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(r: Result<ArchivePath, ImportError>) -> Option<Class> {
        r.err().and_then(|e| e.class())
    }

    #[test]
    fn parses_archive_paths() {
        assert_eq!(
            ArchivePath::parse(b"./usr/bin/").unwrap().display(),
            "/usr/bin"
        );
        assert_eq!(ArchivePath::parse(b"./").unwrap().display(), "/");
        assert_eq!(
            class(ArchivePath::parse(b"./a/../../x")),
            Some(Class::PathTraversal)
        );
        assert_eq!(
            class(ArchivePath::parse(b"/etc/passwd")),
            Some(Class::AbsolutePath)
        );
        assert_eq!(class(ArchivePath::parse(b"a/b\0c")), Some(Class::BadName));
        assert_eq!(
            class(ArchivePath::parse(&[b'x'; 256])),
            Some(Class::BadName)
        );
    }

    #[test]
    fn refuses_entries_beneath_symlinks_and_duplicates() {
        let mut b = TreeBuilder::new(100);
        let meta = Meta {
            mode: 0o777,
            ..Default::default()
        };
        b.add_leaf(
            &ArchivePath::parse(b"lib").unwrap(),
            meta.clone(),
            EntryKind::Symlink {
                target: b"/etc".to_vec(),
            },
        )
        .unwrap();
        let e = b
            .add_leaf(
                &ArchivePath::parse(b"lib/passwd").unwrap(),
                meta.clone(),
                EntryKind::Fifo,
            )
            .unwrap_err();
        assert_eq!(e.class(), Some(Class::ThroughSymlink));
        let e = b
            .add_dir(&ArchivePath::parse(b"lib").unwrap(), meta.clone())
            .unwrap_err();
        assert_eq!(e.class(), Some(Class::DuplicateEntry));
        let e = b
            .add_leaf(
                &ArchivePath::parse(b"./lib").unwrap(),
                meta,
                EntryKind::Symlink {
                    target: b"x".to_vec(),
                },
            )
            .unwrap_err();
        assert_eq!(e.class(), Some(Class::DuplicateEntry));
    }
}
