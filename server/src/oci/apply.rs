//! Applying an image's layers, in order, into one root tree, with the OCI rules: a
//! whiteout `.wh.NAME` removes NAME of the layers below, an opaque marker
//! `.wh..wh..opq` empties the directory it is in of what the layers below put there,
//! and the layer's own entries then replace what is below (directories merge, taking
//! the layer's metadata). Whiteouts apply only to lower layers, so their order within
//! a layer does not matter. Neither kind of marker is left in the root.
//!
//! Only directory metadata is read: a directory that no later layer touches is kept by
//! its tree id, and file contents are never opened.

use crate::import::{Class, ImportError};
use crate::store::{StoreError, Txn};
use canopy_protocol::{Entry, EntryKind, Meta, Name, Tree, TreeId};
use std::collections::{BTreeMap, HashMap};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// One path of the root being built.
enum Node {
    Dir { meta: Meta, content: Content },
    Leaf { meta: Meta, kind: EntryKind },
}

/// A directory's content: untouched since a layer put it there, or opened.
enum Content {
    Tree(TreeId),
    Open(BTreeMap<Name, Node>),
}

/// The root of an image, layer after layer.
#[derive(Default)]
pub(crate) struct Root {
    top: BTreeMap<Name, Node>,
    /// Layer directories known to hold no whiteout at any depth: these are kept by
    /// id until a later layer changes them.
    clean: HashMap<TreeId, bool>,
}

impl Root {
    /// Applies the layer whose tree is `layer`; `what` names it in errors.
    pub(crate) fn apply(
        &mut self,
        txn: &Txn<'_>,
        layer: &TreeId,
        what: &str,
    ) -> Result<(), ImportError> {
        let tree = txn.tree(layer)?;
        let mut cx = Cx {
            txn,
            what,
            clean: &mut self.clean,
        };
        apply_dir(&mut cx, &mut self.top, tree, "")
    }

    /// Writes the root's new directories; returns the root tree.
    pub(crate) fn write(self, txn: &mut Txn<'_>) -> Result<TreeId, StoreError> {
        write(self.top, txn)
    }
}

/// What applying one layer reads and remembers.
struct Cx<'a, 't, 's> {
    txn: &'t Txn<'s>,
    what: &'a str,
    clean: &'a mut HashMap<TreeId, bool>,
}

impl Cx<'_, '_, '_> {
    fn refuse(&self, class: Class, detail: String) -> ImportError {
        ImportError::refused(class, format!("{}: {detail}", self.what))
    }

    /// Whether layer directory `id` holds no whiteout or opaque marker at any depth.
    fn is_clean(&mut self, id: &TreeId) -> Result<bool, StoreError> {
        if let Some(known) = self.clean.get(id) {
            return Ok(*known);
        }
        let tree = self.txn.tree(id)?;
        let mut clean = true;
        for e in tree.entries() {
            let sub_clean = match &e.kind {
                _ if e.name.as_bytes().starts_with(WHITEOUT) => false,
                EntryKind::Dir { tree } => self.is_clean(tree)?,
                _ => true,
            };
            if !sub_clean {
                clean = false;
                break;
            }
        }
        self.clean.insert(*id, clean);
        Ok(clean)
    }
}

fn name_of(bytes: &[u8]) -> Option<Name> {
    Name::new(bytes.to_vec()).ok()
}

fn apply_dir(
    cx: &mut Cx<'_, '_, '_>,
    dst: &mut BTreeMap<Name, Node>,
    layer: Tree,
    path: &str,
) -> Result<(), ImportError> {
    let entries = layer.into_entries();
    for e in &entries {
        let name = e.name.as_bytes();
        if name == OPAQUE {
            dst.clear();
            continue;
        }
        let Some(target) = name.strip_prefix(WHITEOUT) else {
            continue;
        };
        if target.starts_with(WHITEOUT) {
            continue; // `.wh..wh.*`: aufs bookkeeping, as Docker skips it
        }
        if matches!(e.kind, EntryKind::Dir { .. }) {
            return Err(cx.refuse(
                Class::Malformed,
                format!("whiteout {path}/{} is a directory", e.name),
            ));
        }
        match target {
            b"." | b".." => {
                return Err(cx.refuse(
                    Class::PathTraversal,
                    format!(
                        "whiteout {path}/{} names a path outside its directory",
                        e.name
                    ),
                ));
            }
            _ => match name_of(target) {
                Some(t) => {
                    dst.remove(&t);
                }
                None => {
                    return Err(cx.refuse(
                        Class::BadName,
                        format!("whiteout {path}/{} names nothing", e.name),
                    ));
                }
            },
        }
    }
    for e in entries {
        if e.name.as_bytes().starts_with(WHITEOUT) {
            continue;
        }
        let here = format!("{path}/{}", e.name);
        match e.kind {
            EntryKind::Dir { tree } => {
                let sub = cx.txn.tree(&tree)?;
                let opaque = sub.entries().iter().any(|c| c.name.as_bytes() == OPAQUE);
                match dst.get_mut(&e.name) {
                    Some(Node::Dir { meta, content }) => {
                        *meta = e.meta;
                        let children = open(cx.txn, content)?;
                        apply_dir(cx, children, sub, &here)?;
                    }
                    Some(Node::Leaf {
                        kind: EntryKind::Symlink { target },
                        ..
                    }) if !opaque => {
                        return Err(cx.refuse(
                            Class::ThroughSymlink,
                            format!(
                                "{here} is a directory in this layer, but a layer below made it a symlink to {}; canopy does not apply a layer through a symlink",
                                String::from_utf8_lossy(target)
                            ),
                        ));
                    }
                    _ => {
                        let content = if cx.is_clean(&tree)? {
                            Content::Tree(tree)
                        } else {
                            let mut children = BTreeMap::new();
                            apply_dir(cx, &mut children, sub, &here)?;
                            Content::Open(children)
                        };
                        dst.insert(
                            e.name,
                            Node::Dir {
                                meta: e.meta,
                                content,
                            },
                        );
                    }
                }
            }
            kind => {
                dst.insert(e.name, Node::Leaf { meta: e.meta, kind });
            }
        }
    }
    Ok(())
}

/// Opens a directory for changes.
fn open<'c>(
    txn: &Txn<'_>,
    content: &'c mut Content,
) -> Result<&'c mut BTreeMap<Name, Node>, StoreError> {
    if let Content::Tree(id) = content {
        let map = txn
            .tree(id)?
            .into_entries()
            .into_iter()
            .map(|e| (e.name, node(e.meta, e.kind)))
            .collect();
        *content = Content::Open(map);
    }
    match content {
        Content::Open(map) => Ok(map),
        Content::Tree(_) => unreachable!("opened above"),
    }
}

fn node(meta: Meta, kind: EntryKind) -> Node {
    match kind {
        EntryKind::Dir { tree } => Node::Dir {
            meta,
            content: Content::Tree(tree),
        },
        kind => Node::Leaf { meta, kind },
    }
}

fn write(map: BTreeMap<Name, Node>, txn: &mut Txn<'_>) -> Result<TreeId, StoreError> {
    let mut entries = Vec::with_capacity(map.len());
    for (name, node) in map {
        let (meta, kind) = match node {
            Node::Dir {
                meta,
                content: Content::Tree(tree),
            } => (meta, EntryKind::Dir { tree }),
            Node::Dir {
                meta,
                content: Content::Open(children),
            } => (
                meta,
                EntryKind::Dir {
                    tree: write(children, txn)?,
                },
            ),
            Node::Leaf { meta, kind } => (meta, kind),
        };
        entries.push(Entry { name, meta, kind });
    }
    txn.put_tree(&Tree::new(entries).expect("layer entries have unique, valid names"))
}
