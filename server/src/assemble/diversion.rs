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
    if set_aside.is_empty() {
        return Ok(tree);
    }
    let label = |i: usize| format!("{} {}", chosen[i].1.name, chosen[i].1.version);
    let mut ed = Editor::open(txn, &tree)?;
    let diverted = diversions(&mut ed, txn)?;
    for s in set_aside {
        let by = &chosen[s.diverter].1.name;
        let Some((_, to, _)) = diverted
            .iter()
            .find(|(from, _, pkg)| *from == s.path && pkg == by)
        else {
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
        let at = in_tree(&mut ed, txn, &s.path)?;
        let to = in_tree(&mut ed, txn, to)?;
        let leaf = |(meta, kind): (Meta, EntryKind)| Node::Leaf { meta, kind };
        ed.put(txn, &at, leaf(s.kept)).map_err(edit)?;
        ed.put(txn, &to, leaf(s.aside)).map_err(edit)?;
    }
    Ok(ed.write(txn)?)
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
