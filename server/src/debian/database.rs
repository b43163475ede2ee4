//! dpkg's database as `dpkg --unpack` leaves it, written from what package records
//! kept: `/var/lib/dpkg/status` with every package `install ok unpacked` (its control
//! fields, and `Conffiles` with each conffile's MD5 as installed), and
//! `/var/lib/dpkg/info/PKG.{list,md5sums,conffiles,preinst,postinst,…}` — every
//! member of the control archive but `control`, with its mode, plus the `.list` of the
//! archive's paths in archive order. `PKG` is `name:arch` for `Multi-Arch: same`
//! packages, as dpkg names them.

use super::control::{Paragraph, Relation, parse_paragraphs, parse_relations};
use super::deb::{DebFacts, EXTENSION, FILES};
use crate::configure::ConfigureError;
use crate::edit::{Editor, Node};
use crate::import::ImportError;
use crate::store::Txn;
use canopy_protocol::{EntryKind, Meta, Package, PackageKind};
use md5::Digest;

/// The administrative directory.
pub(crate) const ADMINDIR: &str = "/var/lib/dpkg";

/// What dpkg keeps of one package.
pub(crate) struct Unpacked {
    /// Package name.
    pub(crate) name: String,
    /// Its architecture.
    pub(crate) arch: String,
    /// Its version.
    pub(crate) version: String,
    /// Its name in `info/`: `name` or `name:arch`.
    pub(crate) info_name: String,
    /// `Essential: yes`.
    pub(crate) essential: bool,
    /// `Pre-Depends`.
    pub(crate) pre_depends: Vec<Vec<Relation>>,
    /// `Depends`.
    pub(crate) depends: Vec<Vec<Relation>>,
    /// Names it provides.
    pub(crate) provides: Vec<String>,
    /// Whether it has a preinst.
    pub(crate) preinst: bool,
    control: String,
    /// The control archive's members but `control`: name, metadata, content.
    members: Vec<(String, Meta, EntryKind)>,
    /// The `.list` content and its size.
    files: (canopy_protocol::BlobId, u64),
    /// When the archive was built.
    pub(crate) built_at: i64,
}

fn missing_control(p: &Package) -> ConfigureError {
    ConfigureError::Package(format!(
        "package {} {} was imported before canopy kept the control data configuring needs: \
         import its .deb again (`canopy import deb FILE`), or assemble with --from a \
         repository that has it, or pass --no-configure",
        p.name, p.version
    ))
}

fn bad(p: &Package, what: impl std::fmt::Display) -> ConfigureError {
    ConfigureError::Package(format!("package {} {}: {what}", p.name, p.version))
}

/// Reads what configuring needs of each Debian package.
pub(crate) fn read(txn: &Txn<'_>, packages: &[&Package]) -> Result<Vec<Unpacked>, ConfigureError> {
    let mut out = Vec::new();
    for p in packages {
        let control = p.control.ok_or_else(|| missing_control(p))?;
        let tree = txn.tree(&control)?;
        let mut text = None;
        let mut files = None;
        let mut members = Vec::new();
        for e in tree.into_entries() {
            let name = e.name.to_string();
            if name == FILES {
                let EntryKind::File { blob, size } = e.kind else {
                    return Err(bad(p, "its file list is not a file"));
                };
                files = Some((blob, size));
            } else if name == "control" {
                let EntryKind::File { blob, .. } = &e.kind else {
                    return Err(bad(p, "its control member is not a file"));
                };
                let bytes = txn.blob(blob)?;
                text = Some(
                    String::from_utf8(bytes)
                        .map_err(|_| bad(p, "its control file is not UTF-8"))?,
                );
            } else if matches!(e.kind, EntryKind::File { .. }) {
                members.push((name, e.meta, e.kind));
            }
        }
        let text = text.ok_or_else(|| bad(p, "no control file"))?;
        let paragraph = parse_paragraphs(&text)
            .map_err(|e| bad(p, format!("control file: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| bad(p, "empty control file"))?;
        let relations = |field: &str| {
            parse_relations(paragraph.get(field).unwrap_or(""))
                .map_err(|e| bad(p, format!("{field}: {e}")))
        };
        let multi_arch_same = paragraph
            .get("Multi-Arch")
            .is_some_and(|v| v.trim() == "same");
        out.push(Unpacked {
            name: p.name.clone(),
            arch: p.arch.clone(),
            version: p.version.clone(),
            info_name: if multi_arch_same {
                format!("{}:{}", p.name, p.arch)
            } else {
                p.name.clone()
            },
            essential: yes(&paragraph, "Essential"),
            pre_depends: relations("Pre-Depends")?,
            depends: relations("Depends")?,
            provides: relations("Provides")?
                .into_iter()
                .flatten()
                .map(|r| r.name)
                .collect(),
            preinst: members.iter().any(|(n, _, _)| n == "preinst"),
            control: text,
            members,
            files: files.ok_or_else(|| missing_control(p))?,
            built_at: p
                .extensions
                .get(EXTENSION)
                .and_then(|v| serde_json::from_slice::<DebFacts>(v).ok())
                .map(|f| f.built_at)
                .unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
    Ok(out)
}

impl Unpacked {
    /// The control archive's members (`control` included) with their modes and
    /// content: what dpkg extracts to `tmp.ci/` before it runs a preinst.
    pub(crate) fn control_archive(
        &self,
        txn: &Txn<'_>,
    ) -> Result<Vec<(String, u32, Vec<u8>)>, ConfigureError> {
        let mut out = vec![(
            "control".to_string(),
            0o644,
            self.control.clone().into_bytes(),
        )];
        for (name, meta, kind) in &self.members {
            if let EntryKind::File { blob, .. } = kind {
                out.push((name.clone(), u32::from(meta.mode), txn.blob(blob)?));
            }
        }
        Ok(out)
    }
}

fn yes(p: &Paragraph, field: &str) -> bool {
    p.get(field)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"))
}

/// The Debian packages of a set.
pub(crate) fn debs(packages: &[(canopy_protocol::PackageId, Package)]) -> Vec<&Package> {
    packages
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.kind == PackageKind::Deb)
        .collect()
}

const DIR: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
    xattrs: Vec::new(),
};

fn file_meta(mode: u16) -> Meta {
    Meta { mode, ..DIR }
}

/// Writes the database into the root being prepared.
pub(crate) fn write(
    ed: &mut Editor,
    txn: &mut Txn<'_>,
    pkgs: &[Unpacked],
) -> Result<(), ConfigureError> {
    for dir in [
        "",
        "/info",
        "/updates",
        "/triggers",
        "/alternatives",
        "/parts",
    ] {
        let path = format!("{ADMINDIR}{dir}");
        if ed.get(txn, &path).map_err(edit)?.is_none() {
            ed.put(txn, &path, Node::dir(DIR)).map_err(edit)?;
        }
    }
    let mut status = String::new();
    for p in pkgs {
        status.push_str(&paragraph(ed, txn, p)?);
        status.push('\n');
        let info = |member: &str| format!("{ADMINDIR}/info/{}.{member}", p.info_name);
        for (name, meta, kind) in &p.members {
            let meta = file_meta(meta.mode);
            ed.put(
                txn,
                &info(name),
                Node::Leaf {
                    meta,
                    kind: kind.clone(),
                },
            )
            .map_err(edit)?;
        }
        ed.put(
            txn,
            &info("list"),
            Node::Leaf {
                meta: file_meta(0o644),
                kind: EntryKind::File {
                    size: p.files.1,
                    blob: p.files.0,
                },
            },
        )
        .map_err(edit)?;
    }
    let (blob, size) = txn
        .put_blob(status.as_bytes())
        .map_err(|e| ImportError::from_blob(e, "dpkg's status file"))?;
    ed.put(
        txn,
        &format!("{ADMINDIR}/status"),
        Node::Leaf {
            meta: file_meta(0o644),
            kind: EntryKind::File { size, blob },
        },
    )
    .map_err(edit)?;
    Ok(())
}

fn edit(e: crate::edit::EditError) -> ConfigureError {
    ConfigureError::Package(format!("laying out dpkg's database: {e}"))
}

/// A package's status paragraph: its control fields with `Status: install ok unpacked`
/// after `Package:`, and its conffiles with their MD5s. dpkg rewrites the file in its
/// own field order when it configures.
fn paragraph(ed: &mut Editor, txn: &Txn<'_>, p: &Unpacked) -> Result<String, ConfigureError> {
    let mut out = String::new();
    for line in p.control.trim_end_matches('\n').lines() {
        if line.trim().is_empty() {
            break;
        }
        out.push_str(line);
        out.push('\n');
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("Package"))
        {
            out.push_str("Status: install ok unpacked\n");
        }
    }
    let Some((_, _, EntryKind::File { blob, .. })) =
        p.members.iter().find(|(n, _, _)| n == "conffiles")
    else {
        return Ok(out);
    };
    let list = String::from_utf8_lossy(&txn.blob(blob)?).into_owned();
    let mut lines = Vec::new();
    for line in list.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((path, flags)) = words.split_last() else {
            continue;
        };
        let content = match ed.get(txn, path).map_err(edit)? {
            Some(Node::Leaf {
                kind: EntryKind::File { blob, .. },
                ..
            }) => txn.blob(blob)?,
            // A conffile the package does not ship is not installed, so dpkg lists none.
            _ => continue,
        };
        let md5 = hex::encode(md5::Md5::digest(&content));
        let mut entry = format!(" {path} {md5}");
        for flag in flags {
            entry.push(' ');
            entry.push_str(flag);
        }
        lines.push(entry);
    }
    if !lines.is_empty() {
        out.push_str("Conffiles:\n");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}
