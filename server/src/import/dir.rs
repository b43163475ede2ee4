//! Plain directories on the importing machine (`canopy import dir`).

use super::builder::{ArchivePath, TreeBuilder};
use super::limit::Limits;
use super::{Class, Identity, ImportError, Imported, already_imported, finish, named_key};
use crate::store::{BlobError, IoContext, Store, Txn};
use canopy_protocol::{EntryKind, Meta, PackageKind, Xattrs};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Imports the tree under `dir` as package `name`, with owners and modes as they are on
/// disk. The same content under the same name and version is imported once.
pub fn import(
    store: &Store,
    dir: &Path,
    name: &str,
    version: &str,
    limits: Limits,
) -> Result<Imported, ImportError> {
    let meta = fs::metadata(dir).ctx(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(ImportError::refused(
            Class::Malformed,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut txn = store.begin()?;
    let mut builder = TreeBuilder::new(limits.max_entries);
    walk(&mut txn, &mut builder, dir, limits)?;
    let entries = builder.entries();
    let tree = builder.write(&mut txn)?;
    // No archive to hash: the key is what makes two imports the same one.
    let archive = named_key("dir", name, version, &tree.to_string());
    if let Some(done) = already_imported(store, &archive)? {
        return Ok(done);
    }
    let who = Identity {
        kind: PackageKind::Dir,
        name: name.to_string(),
        version: version.to_string(),
        arch: String::new(),
        scripts: Vec::new(),
        control: None,
        extensions: Default::default(),
    };
    finish(txn, tree, entries, who, archive, archive)
}

/// Adds everything under `top` to `builder`. Directories wait on a stack instead of a
/// recursion: the depth is the directory's to choose, and the path bound refuses it
/// long before memory runs short.
fn walk(
    txn: &mut Txn<'_>,
    builder: &mut TreeBuilder,
    top: &Path,
    limits: Limits,
) -> Result<(), ImportError> {
    let mut unpacked = 0u64;
    let mut pending: Vec<(std::path::PathBuf, Vec<u8>)> = vec![(top.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = pending.pop() {
        walk_one(txn, builder, &dir, rel, &mut pending, &mut unpacked, limits)?;
    }
    Ok(())
}

/// Adds the entries of one directory; its subdirectories go onto `pending`.
fn walk_one(
    txn: &mut Txn<'_>,
    builder: &mut TreeBuilder,
    dir: &Path,
    mut rel: Vec<u8>,
    pending: &mut Vec<(std::path::PathBuf, Vec<u8>)>,
    unpacked: &mut u64,
    limits: Limits,
) -> Result<(), ImportError> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()
        .ctx(|| format!("listing {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(child.file_name().as_bytes());
        let apath = ArchivePath::parse(&rel)?;
        let md = fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
        let meta = Meta {
            mode: (md.mode() & 0o7777) as u16,
            uid: md.uid(),
            gid: md.gid(),
            xattrs: xattrs(&path)?,
        };
        let ft = md.file_type();
        if ft.is_dir() {
            builder.add_dir(&apath, meta)?;
            pending.push((path, rel.clone()));
        } else {
            let kind = if ft.is_file() {
                let file = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
                let (blob, size) = txn.put_blob(file).map_err(|e| match e {
                    BlobError::Source(e) => ImportError::Io {
                        what: format!("reading {}", path.display()),
                        source: e,
                    },
                    BlobError::Store(e) => e.into(),
                })?;
                *unpacked += size;
                if *unpacked > limits.max_unpacked {
                    return Err(ImportError::refused(
                        Class::TooLarge,
                        format!(
                            "{} holds more than {} bytes (see --max-size)",
                            dir.display(),
                            limits.max_unpacked
                        ),
                    ));
                }
                EntryKind::File { size, blob }
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&path).ctx(|| format!("reading link {}", path.display()))?;
                EntryKind::Symlink {
                    target: target.as_os_str().as_bytes().to_vec(),
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
                if ft.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else {
                EntryKind::Socket
            };
            builder.add_leaf(&apath, meta, kind)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

/// The extended attributes of `path` itself (symlinks are not followed), sorted.
fn xattrs(path: &Path) -> Result<Xattrs, ImportError> {
    let io = |source| ImportError::Io {
        what: format!("reading xattrs of {}", path.display()),
        source,
    };
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support have none to keep.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(io(e)),
    };
    for name in names {
        if let Some(value) = xattr::get(path, &name).map_err(io)? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}
