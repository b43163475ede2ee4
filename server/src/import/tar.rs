//! Tar archives: the payload of `.deb` packages and of `canopy import tar`.

use super::builder::{ArchivePath, TreeBuilder};
use super::compress::decoder;
use super::limit::{Budget, Limits};
use super::{
    Class, Identity, ImportError, Imported, already_imported, finish, hash_file, named_key, open,
    prefix,
};
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
    let what = path.display().to_string();
    let input = super::input(store, path, limits.max_unpacked)?;
    let path = input.path();
    let archive = hash_file(path)?;
    let key = named_key("tar", name, version, &archive.to_string());
    if let Some(done) = already_imported(store, &key)? {
        return Ok(done);
    }
    let mut txn = store.begin()?;
    let builder = read(
        &mut txn,
        decoder(open(path)?, None, &what)?,
        limits,
        Dialect::Package,
        &what,
    )?;
    let entries = builder.entries();
    let tree = builder.write(&mut txn)?;
    let who = Identity {
        kind: PackageKind::Tar,
        name: name.to_string(),
        version: version.to_string(),
        arch: String::new(),
        scripts: Vec::new(),
        control: None,
        extensions: Default::default(),
    };
    finish(txn, tree, entries, who, archive, key)
}

fn malformed(what: &str, path: &ArchivePath, detail: impl std::fmt::Display) -> ImportError {
    ImportError::refused(
        Class::Malformed,
        format!("{what}: entry {}: {detail}", path.display()),
    )
}

/// Which rules a tar stream is read under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// A package or tarball: it must end with its end-of-archive block (without it,
    /// it was cut short), and absolute paths are refused.
    Package,
    /// A container image layer: its digest already proves it whole, so it may simply
    /// stop after its last entry (umoci 0.4.7 writes layers without padding or end
    /// blocks); paths are rooted at the image's root, so a leading `/` (umoci's root
    /// entry is `/`) means the same as none, as Docker and containerd read it.
    Layer,
}

/// Trailing bytes allowed after the end-of-archive block (tar pads to its record size,
/// 10 KiB by default).
const MAX_TRAILER: u64 = 1 << 20;

/// What PAX and GNU long-name records said about the entry that follows them.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// GNU long names end with NUL padding.
fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Reads a tar stream (under `dialect`'s rules) into a tree, storing file contents in `txn` as they stream by,
/// then reads the stream to its end so that compression trailers and checksums are
/// verified too.
///
/// Entries are read raw: PAX and GNU long-name records are handled here, so that their
/// declared size is checked against the header limit before a byte of them is held.
pub(crate) fn read(
    txn: &mut Txn<'_>,
    reader: impl Read,
    limits: Limits,
    dialect: Dialect,
    what: &str,
) -> Result<TreeBuilder, ImportError> {
    let builder = TreeBuilder::new(limits.max_entries);
    read_into(txn, reader, limits, dialect, what, builder)
}

/// [`read`] into a builder of the caller's (one that records the archive's order, say).
pub(crate) fn read_into(
    txn: &mut Txn<'_>,
    reader: impl Read,
    limits: Limits,
    dialect: Dialect,
    what: &str,
    mut builder: TreeBuilder,
) -> Result<TreeBuilder, ImportError> {
    let budget = Budget::new(limits);
    let reader: Box<dyn Read + '_> = match dialect {
        Dialect::Package => Box::new(reader),
        Dialect::Layer => Box::new(PadToBlock {
            inner: reader,
            read: 0,
            padding: None,
        }),
    };
    let mut archive = tar::Archive::new(budget.wrap(reader));
    let read_err =
        |e: std::io::Error, context: &str| ImportError::from_read(e, context, budget.at_eof());
    let mut pending = Pending::default();
    for entry in archive.entries().map_err(|e| read_err(e, what))?.raw(true) {
        let mut entry = entry.map_err(|e| read_err(e, what))?;
        let entry_type = entry.header().entry_type();
        if matches!(
            entry_type,
            EntryType::XHeader
                | EntryType::XGlobalHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            let declared = entry.header().entry_size().map_err(|e| read_err(e, what))?;
            if declared > budget.max_header() {
                return Err(ImportError::refused(
                    Class::TooLarge,
                    format!(
                        "{what}: a {declared}-byte header record exceeds {} bytes",
                        budget.max_header()
                    ),
                ));
            }
            let mut data = Vec::with_capacity(declared as usize);
            (&mut entry)
                .take(declared)
                .read_to_end(&mut data)
                .map_err(|e| read_err(e, what))?;
            if data.len() as u64 != declared {
                return Err(ImportError::refused(
                    Class::Truncated,
                    format!("{what}: archive ends inside a header record"),
                ));
            }
            match entry_type {
                EntryType::XHeader => pending.pax = Some(data),
                EntryType::GNULongName => pending.long_name = Some(trim_nul(data)),
                EntryType::GNULongLink => pending.long_link = Some(trim_nul(data)),
                _ => {} // Global PAX headers carry nothing canopy keeps.
            }
            continue;
        }
        // Each entry starts a fresh header budget: the bound is on what lies between
        // two entries (records, skipped data), not on a run of small headers.
        budget.headers();
        let header = entry.header();
        let mut raw_path = pending
            .long_name
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let mut link = pending
            .long_link
            .take()
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let mut uid = header.uid().map_err(|e| read_err(e, what))?;
        let mut gid = header.gid().map_err(|e| read_err(e, what))?;
        let size = header.entry_size().map_err(|e| read_err(e, what))?;
        let mode = header.mode().map_err(|e| read_err(e, what))? & 0o7777;
        let device = (header.device_major(), header.device_minor());
        let mut xattrs = Vec::new();
        if let Some(pax) = pending.pax.take() {
            for ext in tar::PaxExtensions::new(&pax) {
                let ext = ext.map_err(|e| {
                    ImportError::refused(Class::Malformed, format!("{what}: bad PAX record: {e}"))
                })?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            ImportError::refused(
                                Class::Malformed,
                                format!(
                                    "{what}: PAX {} is not a number",
                                    String::from_utf8_lossy(key)
                                ),
                            )
                        })
                };
                if key.starts_with(b"GNU.sparse.") {
                    // A PAX sparse file (`tar --sparse --format=pax`): its data is a
                    // map of holes and pieces, not the file; refused as GNU sparse
                    // entries are, rather than stored as the wrong content.
                    return Err(ImportError::refused(
                        Class::Malformed,
                        format!(
                            "{what}: entry {}: sparse files are not supported (unpack and tar it again without --sparse)",
                            canopy_protocol::Escaped(&raw_path)
                        ),
                    ));
                }
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), value.to_vec()));
                } else {
                    match key {
                        b"path" => raw_path = value.to_vec(),
                        b"linkpath" => link = Some(value.to_vec()),
                        b"uid" => uid = number()?,
                        b"gid" => gid = number()?,
                        // The data length comes from the header; a record that says
                        // otherwise would make the two disagree about where entries are.
                        b"size" if number()? != size => {
                            return Err(ImportError::refused(
                                Class::Malformed,
                                format!(
                                    "{what}: PAX size {} disagrees with the header's {size}",
                                    number()?
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        let path = parse_path(&raw_path, dialect).map_err(|e| prefix(e, what))?;
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
                budget.content();
                let (blob, got) = txn.put_blob((&mut entry).take(size)).map_err(|e| match e {
                    BlobError::Source(e) => read_err(e, &format!("{what}: entry {}", path.display())),
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
                let target = parse_path(&link.unwrap_or_default(), dialect).map_err(|e| prefix(e, what))?;
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
    if dialect == Dialect::Package && !budget.ended_with_zero_block() {
        return Err(ImportError::refused(
            Class::Truncated,
            format!("{what}: tar stream ends without its end-of-archive block"),
        ));
    }
    let trailer = std::io::copy(
        &mut archive.into_inner().take(MAX_TRAILER + 1),
        &mut std::io::sink(),
    )
    .map_err(|e| read_err(e, what))?;
    if trailer > MAX_TRAILER {
        return Err(ImportError::refused(
            Class::Malformed,
            format!("{what}: more than {MAX_TRAILER} bytes follow the end of the archive"),
        ));
    }
    Ok(builder)
}

/// An entry's path under `dialect`'s rules.
fn parse_path(raw: &[u8], dialect: Dialect) -> Result<ArchivePath, ImportError> {
    match dialect {
        Dialect::Package => ArchivePath::parse(raw),
        Dialect::Layer => {
            let start = raw.iter().take_while(|&&b| b == b'/').count();
            ArchivePath::parse(&raw[start..])
        }
    }
}

/// A stream that stops short of a 512-byte block boundary, continued with zeros up
/// to it: the tar reader then sees the last entry's padding and a clean end.
struct PadToBlock<R> {
    inner: R,
    read: u64,
    /// Zeros still to give once the inner stream has ended.
    padding: Option<u64>,
}

impl<R: Read> Read for PadToBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.padding.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            self.padding = Some((512 - self.read % 512) % 512);
        }
        let left = self.padding.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}
