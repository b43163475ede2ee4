//! Tar archives: the payload of `.deb` packages and of `canopy import tar`.

use super::builder::{ArchivePath, TreeBuilder};
use super::compress::decoder;
use super::limit::{Budget, Limits};
use super::{Class, Identity, ImportError, Imported, already_imported, finish, hash_file, open};
use crate::store::{BlobError, Store, Txn};
use canopy_protocol::{EntryKind, Meta, PackageKind};
use std::io::Read;
use std::path::Path;
use tar::EntryType;

/// Imports a tarball (plain, gzip, xz or zstd, told by its content) as package `name`.
pub fn import(
    store: &Store,
    path: &Path,
    name: &str,
    version: &str,
    limits: Limits,
) -> Result<Imported, ImportError> {
    let archive = hash_file(path)?;
    if let Some(done) = already_imported(store, &archive)? {
        return Ok(done);
    }
    let mut txn = store.begin()?;
    let what = path.display().to_string();
    let builder = read(&mut txn, decoder(open(path)?, None, &what)?, limits, &what)?;
    let entries = builder.entries();
    let tree = builder.write(&mut txn)?;
    let who = Identity {
        kind: PackageKind::Tar,
        name: name.to_string(),
        version: version.to_string(),
        arch: String::new(),
        scripts: Vec::new(),
    };
    finish(txn, tree, entries, who, archive)
}

fn malformed(what: &str, path: &ArchivePath, detail: impl std::fmt::Display) -> ImportError {
    ImportError::refused(
        Class::Malformed,
        format!("{what}: entry {}: {detail}", path.display()),
    )
}

/// Reads a tar stream into a tree, storing file contents in `txn` as they stream by.
pub(crate) fn read(
    txn: &mut Txn<'_>,
    reader: impl Read,
    limits: Limits,
    what: &str,
) -> Result<TreeBuilder, ImportError> {
    let budget = Budget::new(limits);
    let mut archive = tar::Archive::new(budget.wrap(reader));
    let mut builder = TreeBuilder::new(limits.max_entries);
    for entry in archive
        .entries()
        .map_err(|e| ImportError::from_read(e, what))?
    {
        let mut entry = entry.map_err(|e| ImportError::from_read(e, what))?;
        let path = ArchivePath::parse(&entry.path_bytes()).map_err(|e| prefix(e, what))?;
        let header = entry.header();
        let entry_type = header.entry_type();
        if entry_type == EntryType::XGlobalHeader {
            continue;
        }
        let mode = header.mode().map_err(|e| malformed(what, &path, e))? & 0o7777;
        let mut uid = header.uid().map_err(|e| malformed(what, &path, e))?;
        let mut gid = header.gid().map_err(|e| malformed(what, &path, e))?;
        let device = (header.device_major(), header.device_minor());
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| ImportError::from_read(e, what))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| malformed(what, &path, e))?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), value.to_vec()));
                } else if key == b"uid" || key == b"gid" {
                    let n = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| malformed(what, &path, "PAX uid/gid is not a number"))?;
                    if key == b"uid" { uid = n } else { gid = n }
                }
            }
        }
        xattrs.sort();
        if xattrs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(malformed(what, &path, "an xattr is given twice"));
        }
        let meta = Meta {
            mode: mode as u16,
            uid: u32::try_from(uid)
                .map_err(|_| malformed(what, &path, format!("uid {uid} is out of range")))?,
            gid: u32::try_from(gid)
                .map_err(|_| malformed(what, &path, format!("gid {gid} is out of range")))?,
            xattrs,
        };
        match entry_type {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                budget.content();
                let (blob, got) = txn.put_blob(&mut entry).map_err(|e| match e {
                    BlobError::Source(e) => ImportError::from_read(e, &format!("{what}: entry {}", path.display())),
                    BlobError::Store(e) => e.into(),
                })?;
                budget.headers();
                if got != size {
                    return Err(ImportError::refused(
                        Class::Truncated,
                        format!("{what}: entry {} has {got} of its {size} bytes", path.display()),
                    ));
                }
                builder.add_leaf(&path, meta, EntryKind::File { size, blob })
            }
            EntryType::Directory => builder.add_dir(&path, meta),
            EntryType::Symlink => {
                let target = link.filter(|t| !t.is_empty() && t.len() <= 4095 && !t.contains(&0)).ok_or_else(|| {
                    ImportError::refused(
                        Class::BadName,
                        format!("{what}: symlink {} has an empty, over-long or NUL-holding target", path.display()),
                    )
                })?;
                builder.add_leaf(&path, meta, EntryKind::Symlink { target })
            }
            EntryType::Link => {
                let target = ArchivePath::parse(&link.unwrap_or_default()).map_err(|e| prefix(e, what))?;
                let (meta, kind) = builder.file(&target).ok_or_else(|| {
                    ImportError::refused(
                        Class::BadLink,
                        format!(
                            "{what}: hard link {} points to {}, which is not an earlier regular file",
                            path.display(),
                            target.display()
                        ),
                    )
                })?;
                // A hard link is the same inode: it shares its target's metadata.
                builder.add_leaf(&path, meta, kind)
            }
            EntryType::Char | EntryType::Block => {
                let (Ok(Some(major)), Ok(Some(minor))) = device else {
                    return Err(malformed(what, &path, "device numbers are missing or invalid"));
                };
                let kind = if entry_type == EntryType::Char {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                };
                builder.add_leaf(&path, meta, kind)
            }
            EntryType::Fifo => builder.add_leaf(&path, meta, EntryKind::Fifo),
            other => Err(malformed(what, &path, format!("unsupported entry type {:?}", other.as_byte() as char))),
        }
        .map_err(|e| prefix(e, what))?;
    }
    if !budget.ended_with_zero_block() {
        return Err(ImportError::refused(
            Class::Truncated,
            format!("{what}: tar stream ends without its end-of-archive block"),
        ));
    }
    Ok(builder)
}

/// Names the archive in a refusal that was raised without knowing it.
fn prefix(e: ImportError, what: &str) -> ImportError {
    match e {
        ImportError::Refused { class, detail } if !detail.starts_with(what) => {
            ImportError::Refused {
                class,
                detail: format!("{what}: {detail}"),
            }
        }
        other => other,
    }
}
