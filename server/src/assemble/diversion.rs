//! Files that one package ships and another diverts.
//!
//! dpkg lets a package take over a path another package ships: its preinst runs
//! `dpkg-divert --add --divert /usr/lib/x/halt /sbin/halt`, and from then on the
//! other package's `/sbin/halt` is unpacked to `/usr/lib/x/halt` (molly-guard does
//! this to `systemd-sysv`'s `halt`, `reboot` and `shutdown`). A union laid out before
//! any script runs cannot know that: where two packages fill one path differently and
//! one of them has a preinst that calls `dpkg-divert`, that one's entry takes the path
//! and the other's is set aside. Once the scripts have run, the root's own
//! `/var/lib/dpkg/diversions` says where each set-aside entry goes; one it does not
//! divert is the conflict it was.

use super::AssembleError;
use crate::debian::usrmerge::MERGED;
use crate::edit::{Editor, Node};
use crate::store::Txn;
use canopy_protocol::{EntryKind, Meta, Package, PackageId, PackageKind, TreeId};
use std::collections::HashSet;

/// An entry set aside for a diversion.
pub(crate) struct SetAside {
    /// The path both packages fill (raw bytes).
    pub(crate) path: Vec<u8>,
    /// The diverting package's entry, which keeps the path.
    pub(crate) kept: (Meta, EntryKind),
    /// The other package's entry.
    pub(crate) aside: (Meta, EntryKind),
    /// The diverting package and the other one (indices into the chosen packages).
    pub(crate) diverter: usize,
    pub(crate) other: usize,
    /// How the two differ, for the conflict it becomes if nothing diverts it.
    pub(crate) detail: String,
}

/// The Debian packages whose preinst calls `dpkg-divert`.
pub(crate) fn diverters(
    txn: &Txn<'_>,
    chosen: &[(PackageId, Package)],
) -> Result<HashSet<usize>, AssembleError> {
    let mut out = HashSet::new();
    for (i, (_, p)) in chosen.iter().enumerate() {
        let Some(control) = p
            .control
            .filter(|_| p.kind == PackageKind::Deb && p.scripts.iter().any(|s| s == "preinst"))
        else {
            continue;
        };
        let tree = txn.tree(&control)?;
        for e in tree.entries() {
            if e.name.as_bytes() == b"preinst"
                && let EntryKind::File { blob, .. } = &e.kind
                && txn
                    .blob(blob)?
                    .windows(b"dpkg-divert".len())
                    .any(|w| w == b"dpkg-divert")
            {
                out.insert(i);
            }
        }
    }
    Ok(out)
}

/// One entry of `/var/lib/dpkg/diversions`: the path, where it goes, and the package
/// whose files keep the path.
type Diversion = (Vec<u8>, Vec<u8>, String);

/// The root's diversions.
fn diversions(ed: &mut Editor, txn: &Txn<'_>) -> Result<Vec<Diversion>, AssembleError> {
    let text = match ed.get(txn, "/var/lib/dpkg/diversions").map_err(edit)? {
        Some(Node::Leaf {
            kind: EntryKind::File { blob, .. },
            ..
        }) => txn.blob(&blob.clone())?,
        _ => return Ok(Vec::new()),
    };
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    Ok(lines
        .chunks_exact(3)
        .map(|c| {
            (
                c[0].to_vec(),
                c[1].to_vec(),
                String::from_utf8_lossy(c[2]).into_owned(),
            )
        })
        .collect())
}

fn edit(e: crate::edit::EditError) -> AssembleError {
    AssembleError::Configure(crate::configure::ConfigureError::Package(e.to_string()))
}

/// `path` as it is reached in `ed`'s tree: under `/usr` where the root is
/// merged-/usr and its first directory (`/sbin`, `/lib`…) is a link into `/usr`.
fn in_tree(ed: &mut Editor, txn: &Txn<'_>, path: &[u8]) -> Result<Vec<u8>, AssembleError> {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    let top = rest.split(|&b| b == b'/').next().unwrap_or_default();
    let top_path = [b"/", top].concat();
    let merged = matches!(
        ed.get(txn, &top_path).map_err(edit)?,
        Some(Node::Leaf { kind: EntryKind::Symlink { target }, .. })
            if *target == [b"usr/", top].concat()
    );
    Ok(if merged {
        [b"/usr/", rest].concat()
    } else {
        [b"/", rest].concat()
    })
}

/// Puts each set-aside entry where the configured root's diversions send it (and the
/// diverting package's entry back at the path, whatever `dpkg-divert --rename` did to
/// it); a path no diversion of the diverting package covers is a conflict.
pub(crate) fn place(
    txn: &mut Txn<'_>,
    tree: TreeId,
    set_aside: Vec<SetAside>,
    chosen: &[(PackageId, Package)],
) -> Result<TreeId, AssembleError> {
    let label = |i: usize| format!("{} {}", chosen[i].1.name, chosen[i].1.version);
    let mut ed = Editor::open(txn, &tree)?;
    let diverted = diversions(&mut ed, txn)?;
    if diverted.is_empty() && set_aside.is_empty() {
        return Ok(tree);
    }
    let mut placed = HashSet::new();
    for s in set_aside {
        let by = &chosen[s.diverter].1.name;
        let at = in_tree(&mut ed, txn, &s.path)?;
        let mut found = None;
        for (from, to, pkg) in &diverted {
            if pkg == by && in_tree(&mut ed, txn, from)? == at {
                found = Some(to);
                break;
            }
        }
        let Some(to) = found else {
            let (first, second) = if s.other < s.diverter {
                (label(s.other), label(s.diverter))
            } else {
                (label(s.diverter), label(s.other))
            };
            return Err(AssembleError::Conflict {
                path: canopy_protocol::Escaped(&s.path).to_string(),
                first,
                second,
                detail: format!(
                    "{} (and {by}'s preinst, which calls dpkg-divert, did not divert it)",
                    s.detail
                ),
            });
        };
        let to = in_tree(&mut ed, txn, to)?;
        ed.put(txn, &at, leaf(s.kept)).map_err(edit)?;
        ed.put(txn, &to, leaf(s.aside)).map_err(edit)?;
        placed.insert(at);
    }
    restore_own(&mut ed, txn, &diverted, chosen, &placed)?;
    Ok(ed.write(txn)?)
}

fn leaf((meta, kind): (Meta, EntryKind)) -> Node {
    Node::Leaf { meta, kind }
}

/// dpkg runs a preinst before it unpacks the package; here the package's files are in
/// place already, and `dpkg-divert --rename` skips only those the package owns by the
/// very name given. One it ships under the other name of a merged-/usr root
/// (molly-guard ships `/sbin/pm-suspend` and diverts `/usr/sbin/pm-suspend`) is moved
/// away, where dpkg would have found nothing to move: it goes back.
fn restore_own(
    ed: &mut Editor,
    txn: &Txn<'_>,
    diverted: &[Diversion],
    chosen: &[(PackageId, Package)],
    placed: &HashSet<Vec<u8>>,
) -> Result<(), AssembleError> {
    for (from, to, pkg) in diverted {
        let at = in_tree(ed, txn, from)?;
        let name = pkg.split(':').next().unwrap_or_default();
        let Some((_, p)) = chosen.iter().find(|(_, p)| p.name == name) else {
            continue;
        };
        if placed.contains(&at) || ed.get(txn, &at).map_err(edit)?.is_some() {
            continue;
        }
        let Some(own) = own_entry(txn, p, from)? else {
            continue;
        };
        let to = in_tree(ed, txn, to)?;
        let moved = matches!(
            ed.get(txn, &to).map_err(edit)?,
            Some(Node::Leaf { meta, kind }) if *meta == own.0 && *kind == own.1
        );
        if moved {
            ed.remove(txn, &to).map_err(edit)?;
            ed.put(txn, &at, leaf(own)).map_err(edit)?;
        }
    }
    Ok(())
}

/// Package `p`'s own entry at `path` or at its other name in a merged-/usr root.
fn own_entry(
    txn: &Txn<'_>,
    p: &Package,
    path: &[u8],
) -> Result<Option<(Meta, EntryKind)>, AssembleError> {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    let merged = |r: &[u8]| {
        let top = r.split(|&b| b == b'/').next().unwrap_or_default();
        MERGED.iter().any(|m| m.as_bytes() == top)
    };
    let mut names = vec![[b"/", rest].concat()];
    match rest.strip_prefix(b"usr/") {
        Some(under) if merged(under) => names.push([b"/", under].concat()),
        None if merged(rest) => names.push([b"/usr/", rest].concat()),
        _ => {}
    }
    let mut ed = Editor::open(txn, &p.tree)?;
    for name in names {
        if let Some(Node::Leaf { meta, kind }) = ed.get(txn, &name).map_err(edit)? {
            return Ok(Some((meta.clone(), kind.clone())));
        }
    }
    Ok(None)
}

/// The conflict the first set-aside entry is, for a root that is not configured.
pub(crate) fn unresolved(
    set_aside: &[SetAside],
    chosen: &[(PackageId, Package)],
) -> Result<(), AssembleError> {
    let Some(s) = set_aside.first() else {
        return Ok(());
    };
    let label = |i: usize| format!("{} {}", chosen[i].1.name, chosen[i].1.version);
    let (first, second) = if s.other < s.diverter {
        (label(s.other), label(s.diverter))
    } else {
        (label(s.diverter), label(s.other))
    };
    Err(AssembleError::Conflict {
        path: canopy_protocol::Escaped(&s.path).to_string(),
        first,
        second,
        detail: s.detail.clone(),
    })
}
