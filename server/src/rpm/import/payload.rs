//! Reading an `.rpm`'s cpio payload against the files its header lists.

use super::{File, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use crate::import::builder::{ArchivePath, TreeBuilder};
use crate::import::compress::{Compression, decoder};
use crate::import::limit::{Budget, Counted, Limits};
use crate::import::{Class, ImportError, prefix};
use crate::rpm::cpio::{self, Record};
use crate::rpm::header::Headers;
use crate::store::{BlobError, Txn};
use canopy_protocol::{BlobId, EntryKind};
use std::collections::HashMap;
use std::io::{self, Read};

/// Zero bytes allowed after the cpio trailer (rpm pads the archive; some tools pad to
/// 512-byte blocks).
const MAX_TRAILER: u64 = 64 << 10;

/// Reads the cpio payload into a tree, matching every record to a header file.
pub(super) fn read_payload(
    txn: &mut Txn<'_>,
    compressed: impl Read,
    compression: Compression,
    files: &[File],
    headers: &Headers,
    limits: Limits,
    what: &str,
) -> Result<TreeBuilder, ImportError> {
    let budget = Budget::new(limits);
    budget.content();
    let context = format!("{what}: payload");
    let mut reader = Counted::new(budget.wrap(decoder(compressed, Some(compression), &context)?));
    let read_err =
        |e: io::Error, budget: &Budget| ImportError::from_read(e, &context, budget.at_eof());
    let by_path: HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.shown.clone(), i))
        .collect();
    let mut seen = vec![false; files.len()];
    let mut builder = TreeBuilder::new(limits.max_entries);
    // The blob of each hard-link group, once its carrier has arrived.
    let mut linked: HashMap<usize, (BlobId, u64)> = HashMap::new();
    loop {
        let record = cpio::next(&mut reader).map_err(|e| read_err(e, &budget))?;
        let (index, size) = match record {
            Record::Trailer => break,
            Record::Stripped(index) => {
                let f = files.get(index as usize).ok_or_else(|| {
                    ImportError::refused(
                        Class::Malformed,
                        format!("{context}: a record names file #{index}, which the header does not list"),
                    )
                })?;
                (index as usize, f.payload_size())
            }
            Record::Named { name, size } => {
                let path = ArchivePath::parse(&name).map_err(|e| prefix(e, &context))?;
                let shown = path.display();
                let index = *by_path.get(&shown).ok_or_else(|| {
                    ImportError::refused(
                        Class::Malformed,
                        format!("{context}: entry {shown} is not listed in the header"),
                    )
                })?;
                (index, size)
            }
        };
        let f = &files[index];
        if std::mem::replace(&mut seen[index], true) {
            return Err(ImportError::refused(
                Class::DuplicateEntry,
                format!("{context}: entry {} appears twice", f.shown),
            ));
        }
        if f.ghost() {
            // Old rpms put ghosts in the payload, empty: skip whatever is there.
            skip(&mut reader, size).map_err(|e| read_err(e, &budget))?;
            continue;
        }
        if size != f.payload_size() {
            return Err(ImportError::refused(
                Class::Malformed,
                format!(
                    "{context}: entry {} holds {size} bytes, the header says {}",
                    f.shown,
                    f.payload_size()
                ),
            ));
        }
        let meta = f.meta();
        let kind = match f.mode & S_IFMT {
            S_IFREG if f.carrier => {
                let (blob, got) = txn
                    .put_blob((&mut reader).take(size))
                    .map_err(|e| match e {
                        BlobError::Source(e) => read_err(e, &budget),
                        BlobError::Store(e) => e.into(),
                    })?;
                if got != size {
                    return Err(ImportError::refused(
                        Class::Truncated,
                        format!("{context}: entry {} has {got} of its {size} bytes", f.shown),
                    ));
                }
                // The blob's id is its SHA-256: the header's digest costs nothing more.
                if let Some(want) = &f.sha256
                    && *want != blob.0.to_hex()
                {
                    return Err(ImportError::refused(
                        Class::BadDigest,
                        format!(
                            "{context}: entry {}'s content has SHA-256 {}, the header says {want}",
                            f.shown, blob.0
                        ),
                    ));
                }
                if let Some(g) = f.group {
                    linked.insert(g, (blob, size));
                }
                Some(EntryKind::File { size, blob })
            }
            // A hard link before its group's carrier: added once the content is known.
            S_IFREG => None,
            S_IFDIR => {
                builder
                    .add_dir(&f.path, meta.clone())
                    .map_err(|e| prefix(e, &context))?;
                None
            }
            S_IFLNK => {
                let mut target = Vec::with_capacity(size as usize);
                (&mut reader)
                    .take(size)
                    .read_to_end(&mut target)
                    .map_err(|e| read_err(e, &budget))?;
                if target != f.link.as_bytes() || target.is_empty() || target.len() > 4095 {
                    return Err(ImportError::refused(
                        Class::BadName,
                        format!(
                            "{context}: symlink {} has target {:?} in the payload and {:?} in the header",
                            f.shown,
                            String::from_utf8_lossy(&target),
                            f.link
                        ),
                    ));
                }
                Some(EntryKind::Symlink { target })
            }
            S_IFCHR => Some(EntryKind::CharDevice {
                major: u32::from(f.rdev >> 8),
                minor: u32::from(f.rdev & 0xff),
            }),
            S_IFBLK => Some(EntryKind::BlockDevice {
                major: u32::from(f.rdev >> 8),
                minor: u32::from(f.rdev & 0xff),
            }),
            S_IFIFO => Some(EntryKind::Fifo),
            S_IFSOCK => Some(EntryKind::Socket),
            other => {
                return Err(ImportError::refused(
                    Class::Malformed,
                    format!(
                        "{context}: entry {} has unknown file type {other:o}",
                        f.shown
                    ),
                ));
            }
        };
        skip(&mut reader, cpio::padding(size) as u64).map_err(|e| read_err(e, &budget))?;
        if let Some(kind) = kind {
            builder
                .add_leaf(&f.path, meta, kind)
                .map_err(|e| prefix(e, &context))?;
        }
    }
    for (i, f) in files.iter().enumerate() {
        if f.ghost() {
            continue;
        }
        if !seen[i] {
            return Err(ImportError::refused(
                Class::Malformed,
                format!(
                    "{context}: the header lists {}, which the payload lacks",
                    f.shown
                ),
            ));
        }
        if let (Some(g), false) = (f.group, f.carrier) {
            let (blob, size) = linked[&g];
            builder
                .add_leaf(&f.path, f.meta(), EntryKind::File { size, blob })
                .map_err(|e| prefix(e, &context))?;
        }
    }
    finish_archive(&mut reader, &budget, headers, &context)?;
    Ok(builder)
}

/// After the trailer: only zero padding, bounded, and then the end of the stream, whose
/// length must be what the headers declare.
fn finish_archive<R: Read>(
    reader: &mut Counted<R>,
    budget: &Budget,
    headers: &Headers,
    context: &str,
) -> Result<(), ImportError> {
    let mut rest = Vec::new();
    (&mut *reader)
        .take(MAX_TRAILER + 1)
        .read_to_end(&mut rest)
        .map_err(|e| ImportError::from_read(e, context, budget.at_eof()))?;
    if rest.len() as u64 > MAX_TRAILER || rest.iter().any(|&b| b != 0) {
        return Err(ImportError::refused(
            Class::TooLarge,
            format!(
                "{context}: data follows the end of the archive: the payload is larger than its entries"
            ),
        ));
    }
    let total = reader.read_bytes();
    if let Some(declared) = headers.declared_archive_size() {
        if total > declared {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!(
                    "{context}: unpacks to {total} bytes, more than the {declared} the header declares"
                ),
            ));
        }
        if total < declared {
            return Err(ImportError::refused(
                Class::Truncated,
                format!(
                    "{context}: unpacks to {total} of the {declared} bytes the header declares"
                ),
            ));
        }
    }
    Ok(())
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
