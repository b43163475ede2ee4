//! Reading the configured root back: every entry of the scratch directory, depth first
//! in name order, streamed to canopy with the content of files it did not send.

use super::{Materialized, place};
use crate::configure::stream::{self, Kind, Record};
use canopy_protocol::{BlobId, EntryKind, Hasher, Meta, ObjectId};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// xattrs of a path, without overlayfs' own.
fn xattrs(p: &Path) -> io::Result<canopy_protocol::Xattrs> {
    let mut out = Vec::new();
    for name in xattr::list(p)? {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(p, &name)? {
            out.push((bytes.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn hash(p: &Path) -> io::Result<ObjectId> {
    let mut f = open_nofollow(p)?;
    let mut h = Hasher::new();
    io::copy(&mut f, &mut h)?;
    Ok(h.finish())
}

fn open_nofollow(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Streams the root back: every entry, depth first in name order, then the entries
/// that could not be made, where they still fit.
pub(super) fn harvest(root: &Path, m: &Materialized, out: &mut impl Write) -> io::Result<()> {
    let sent: HashSet<ObjectId> = m.sent.keys().copied().collect();
    stream::write(
        out,
        &Record {
            path: Vec::new(),
            meta: Meta::ROOT_DIR,
            kind: Kind::Dir,
        },
    )?;
    walk(root, &mut Vec::new(), &sent, out)?;
    for r in &m.skipped {
        let p = place(root, &r.path).map_err(io::Error::other)?;
        let parent_is_dir = p
            .parent()
            .and_then(|d| d.symlink_metadata().ok())
            .is_some_and(|m| m.is_dir());
        if parent_is_dir && p.symlink_metadata().is_err() {
            stream::write(out, r)?;
        }
    }
    stream::end(out)
}

fn walk(
    dir: &Path,
    rel: &mut Vec<u8>,
    sent: &HashSet<ObjectId>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let p = dir.join(&name);
        let md = p.symlink_metadata()?;
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let meta = Meta {
            mode: (md.mode() & 0o7777) as u16,
            uid: md.uid(),
            gid: md.gid(),
            xattrs: xattrs(&p)?,
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            let blob = hash(&p)?;
            Kind::File {
                size: md.len(),
                blob: BlobId(blob),
                inline: !sent.contains(&blob),
            }
        } else if ft.is_symlink() {
            Kind::Other(EntryKind::Symlink {
                target: fs::read_link(&p)?.as_os_str().as_bytes().to_vec(),
            })
        } else if ft.is_fifo() {
            Kind::Other(EntryKind::Fifo)
        } else if ft.is_socket() {
            Kind::Other(EntryKind::Socket)
        } else {
            let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
            Kind::Other(if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            })
        };
        let record = Record {
            path: rel.clone(),
            meta,
            kind,
        };
        stream::write(out, &record)?;
        match record.kind {
            Kind::File {
                size, inline: true, ..
            } => {
                let copied = io::copy(&mut open_nofollow(&p)?.take(size), out)?;
                if copied != size {
                    return Err(io::Error::other(format!(
                        "{} shrank while being read",
                        p.display()
                    )));
                }
            }
            Kind::Dir => walk(&p, rel, sent, out)?,
            _ => {}
        }
        rel.truncate(len);
    }
    Ok(())
}
