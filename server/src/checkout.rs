//! Checkout: a root as a plain directory tree.
//!
//! The tree is written into a temporary directory beside the destination and renamed
//! into place at the end, so the destination is either absent, or complete. With
//! `hardlink`, files whose metadata matches the store's object file are hard links to
//! it; they must then never be modified in place (that would corrupt the store, which
//! `canopy fsck` detects).

use crate::store::{IoContext, Store, StoreError};
use canopy_protocol::{BlobId, EntryKind, Hasher, Meta, Tree, TreeId};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How to check out.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// Hard-link files to the store's objects where the metadata allows.
    pub hardlink: bool,
    /// Called with the number of entries written so far (files, directories, symlinks,
    /// special files) after each one, for a progress display.
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// What a checkout did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Regular files written.
    pub files: u64,
    /// Of which hard-linked to the store.
    pub linked: u64,
    /// Of those, linked through the link farm (see [`crate::linkfarm`]): files whose
    /// mode or owner differ from the object file's, executables among them.
    pub farm_linked: u64,
    /// Bytes of the hard-linked files: what this checkout shares with the store and
    /// every other checkout of the same files.
    pub linked_bytes: u64,
    /// Files copied although hard links were asked for, because their mode, owner or
    /// xattrs differ from the store's object file.
    pub copied_for_metadata: u64,
    /// Hard links were asked for, but the destination is on another filesystem.
    pub cross_device: bool,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub specials: u64,
    /// Things that could not be recreated as they are, e.g. devices when not root.
    pub warnings: Vec<String>,
}

/// Why a checkout failed. The destination is left untouched.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The destination exists and is not an empty directory.
    #[error("{0} already exists and is not an empty directory")]
    NotEmpty(PathBuf),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Writer<'a> {
    store: &'a Store,
    opts: Options<'a>,
    as_root: bool,
    report: Report,
    farm: crate::linkfarm::Pending,
}

/// Writes the tree `tree` at `dest`, creating missing parent directories.
pub fn checkout(
    store: &Store,
    tree: &TreeId,
    dest: &Path,
    opts: Options<'_>,
) -> Result<Report, CheckoutError> {
    if let Ok(mut entries) = fs::read_dir(dest) {
        if entries.next().is_some() {
            return Err(CheckoutError::NotEmpty(dest.to_path_buf()));
        }
    } else if dest.symlink_metadata().is_ok() {
        return Err(CheckoutError::NotEmpty(dest.to_path_buf()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| CheckoutError::NotEmpty(dest.to_path_buf()))?;
    // As `mkdir -p`: a checkout to /srv/roots/web needs no separate mkdir.
    fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.canopy-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    fs::create_dir(&staging).ctx(|| format!("creating {}", staging.display()))?;
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut w = Writer {
        store,
        opts,
        as_root,
        report: Report::default(),
        farm: crate::linkfarm::Pending::default(),
    };
    let top = Place {
        at: staging.clone(),
        shown: staging.clone(),
    };
    let result = w.dir(tree, &top).and_then(|()| {
        std::mem::take(&mut w.farm).publish(store)?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", staging.display()))?;
        // rename(2) replaces an empty directory, so an existing empty `dest` is fine.
        fs::rename(&staging, dest)
            .ctx(|| format!("renaming {} to {}", staging.display(), dest.display()))
    });
    if let Err(e) = result {
        let _ = make_writable(&staging);
        let _ = fs::remove_dir_all(&staging);
        return Err(e.into());
    }
    if !as_root {
        w.report.warnings.push(
            "not running as root: files are owned by the current user, not by the uid/gid stored"
                .into(),
        );
    }
    Ok(w.report)
}

/// Directories are made read-only only after their children are written; a failed
/// checkout may leave some, which must be opened up again before removal.
fn make_writable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            make_writable(&e.path())?;
        }
    }
    Ok(())
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths built from tree names hold no NUL")
}

/// Where an entry is written: `at` is the path given to system calls, kept under
/// [`ANCHOR_AFTER`] bytes by restarting it from an open directory (`/proc/self/fd/N`),
/// so a path as long as an import allows checks out under any destination although
/// the whole path is longer than PATH_MAX; `shown` is the real path, for messages.
struct Place {
    at: PathBuf,
    shown: PathBuf,
}

/// Length of `at` past which a directory is opened and paths restart from it.
const ANCHOR_AFTER: usize = 2048;

impl Place {
    fn join(&self, name: &[u8]) -> Place {
        let name = std::ffi::OsStr::from_bytes(name);
        Place {
            at: self.at.join(name),
            shown: self.shown.join(name),
        }
    }

    /// The path for messages, escaped: names are any bytes.
    fn show(&self) -> canopy_protocol::Escaped<'_> {
        canopy_protocol::Escaped(self.shown.as_os_str().as_bytes())
    }

    /// This directory as a place to write its children: the same, or restarted from
    /// an open descriptor (returned, to be kept open while the children are written).
    fn enter(&self) -> Result<(Place, Option<fs::File>), StoreError> {
        let same = || Place {
            at: self.at.clone(),
            shown: self.shown.clone(),
        };
        if self.at.as_os_str().len() <= ANCHOR_AFTER {
            return Ok((same(), None));
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&self.at)
            .ctx(|| format!("opening {}", self.show()))?;
        let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        Ok((Place { at, ..same() }, Some(dir)))
    }
}

impl Writer<'_> {
    fn dir(&mut self, id: &TreeId, dir: &Place) -> Result<(), StoreError> {
        let tree: Tree = self.store.tree(id)?;
        let (dir, _open) = dir.enter()?;
        for entry in tree.entries() {
            let p = dir.join(entry.name.as_bytes());
            match &entry.kind {
                EntryKind::Dir { tree } => {
                    fs::create_dir(&p.at).ctx(|| format!("creating {}", p.show()))?;
                    self.dir(tree, &p)?;
                    self.finish(&p, &entry.meta)?;
                    self.report.dirs += 1;
                }
                EntryKind::File { blob, size } => {
                    self.file(blob, *size, &entry.meta, &p)?;
                    self.report.files += 1;
                }
                EntryKind::Symlink { target } => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p.at)
                        .ctx(|| format!("creating symlink {}", p.show()))?;
                    self.owner(&p, &entry.meta)?;
                    self.xattrs(&p, &entry.meta);
                    self.report.symlinks += 1;
                }
                kind => {
                    let (fmt, dev) = match *kind {
                        EntryKind::CharDevice { major, minor } => {
                            (libc::S_IFCHR, libc::makedev(major, minor))
                        }
                        EntryKind::BlockDevice { major, minor } => {
                            (libc::S_IFBLK, libc::makedev(major, minor))
                        }
                        EntryKind::Fifo => (libc::S_IFIFO, 0),
                        _ => (libc::S_IFSOCK, 0),
                    };
                    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
                    if unsafe { libc::mknod(cstr(&p.at).as_ptr(), fmt | 0o600, dev) } != 0 {
                        let err = io::Error::last_os_error();
                        if err.raw_os_error() == Some(libc::EPERM) {
                            self.report.warnings.push(format!(
                                "{}: cannot create a {} without privileges",
                                p.show(),
                                kind.label()
                            ));
                            continue;
                        }
                        return Err(StoreError::Io {
                            what: format!("creating {} {}", kind.label(), p.show()),
                            source: err,
                        });
                    }
                    self.finish(&p, &entry.meta)?;
                    self.report.specials += 1;
                }
            }
            if let Some(progress) = self.opts.progress {
                let r = &self.report;
                progress(r.files + r.dirs + r.symlinks + r.specials);
            }
        }
        Ok(())
    }

    fn file(&mut self, blob: &BlobId, size: u64, meta: &Meta, p: &Place) -> Result<(), StoreError> {
        if self.opts.hardlink && !self.report.cross_device {
            // Objects that are no files here (a bucket) are linked through the farm.
            let object = self.store.local_path(&blob.0);
            if self.link(blob, object.as_deref(), size, meta, p)? {
                return Ok(());
            }
        }
        let mut src = self.store.objects().get(&blob.0)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p.at)
            .ctx(|| format!("creating {}", p.show()))?;
        // Verify while copying: a corrupt object must not become a corrupt checkout.
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src.read(&mut buf).ctx(|| {
                format!(
                    "reading object {} from {}",
                    blob.0,
                    self.store.objects().location()
                )
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n])
                .ctx(|| format!("writing {}", p.show()))?;
        }
        let actual = hasher.finish();
        if actual != blob.0 {
            return Err(StoreError::Corrupt { id: blob.0, actual });
        }
        drop(dst);
        self.finish(p, meta)
    }

    /// Hard-links the entry at `p` to the object file when its mode and owner are the
    /// entry's, else to the link farm's file of that mode and owner; says whether it
    /// did (files with xattrs, or a farm the user may not write, are copied).
    fn link(
        &mut self,
        blob: &BlobId,
        object: Option<&Path>,
        size: u64,
        meta: &Meta,
        p: &Place,
    ) -> Result<bool, StoreError> {
        if !meta.xattrs.is_empty() {
            self.report.copied_for_metadata += 1;
            return Ok(false);
        }
        // The object file's mode and owner, when there is one.
        let file = match object {
            Some(path) => {
                let om = fs::metadata(path).ctx(|| format!("reading object {}", path.display()))?;
                if om.len() != size {
                    self.report.copied_for_metadata += 1;
                    return Ok(false);
                }
                Some((om.mode() & 0o7777, om.uid(), om.gid()))
            }
            None => None,
        };
        // Not root: the checkout's files are the user's whatever the entry says.
        let owner = if self.as_root {
            (meta.uid, meta.gid)
        } else {
            // SAFETY: geteuid/getegid have no preconditions.
            file.map_or_else(
                || unsafe { (libc::geteuid(), libc::getegid()) },
                |(_, uid, gid)| (uid, gid),
            )
        };
        let (source, farmed) = match (object, file) {
            (Some(path), Some((mode, uid, gid)))
                if mode == u32::from(meta.mode) && (uid, gid) == owner =>
            {
                (path.to_path_buf(), false)
            }
            _ => {
                match self.farm.file(
                    self.store,
                    object,
                    blob,
                    size,
                    (meta.mode, owner.0, owner.1),
                )? {
                    Some(farmed) => (farmed, true),
                    None => {
                        self.report.copied_for_metadata += 1;
                        return Ok(false);
                    }
                }
            }
        };
        match fs::hard_link(&source, &p.at) {
            Ok(()) => {
                self.report.linked += 1;
                self.report.farm_linked += u64::from(farmed);
                self.report.linked_bytes += size;
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                self.report.cross_device = true;
                Ok(false)
            }
            Err(e) => Err(StoreError::Io {
                what: format!("linking {}", p.show()),
                source: e,
            }),
        }
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown also clears
    /// `security.capability`).
    fn finish(&mut self, p: &Place, meta: &Meta) -> Result<(), StoreError> {
        self.owner(p, meta)?;
        fs::set_permissions(&p.at, fs::Permissions::from_mode(u32::from(meta.mode)))
            .ctx(|| format!("chmod {}", p.show()))?;
        self.xattrs(p, meta);
        Ok(())
    }

    fn owner(&mut self, p: &Place, meta: &Meta) -> Result<(), StoreError> {
        if self.as_root {
            std::os::unix::fs::lchown(&p.at, Some(meta.uid), Some(meta.gid))
                .ctx(|| format!("chown {}", p.show()))?;
        }
        Ok(())
    }

    fn xattrs(&mut self, p: &Place, meta: &Meta) {
        for (name, value) in &meta.xattrs {
            if let Err(e) = xattr::set(&p.at, std::ffi::OsStr::from_bytes(name), value) {
                self.report.warnings.push(format!(
                    "{}: cannot set xattr {}: {e}",
                    p.show(),
                    canopy_protocol::Escaped(name)
                ));
            }
        }
    }
}
