//! The FUSE front end: a thin adapter from kernel requests to the [`View`] and the
//! [`Cache`]. Read-only; attributes exactly as stored.
//!
//! Opened files are served from the cache file: with FUSE passthrough (kernel 6.9+ and
//! CAP_SYS_ADMIN) the kernel reads the cache file itself, otherwise canopy reads it and
//! keeps its own reads out of the page cache so the pages are held once, by the mount,
//! with `FOPEN_KEEP_CACHE` since content never changes under an inode.

use crate::objects::Objects;
use crate::view::{Attr, COMMIT_XATTR, Kind, View, ViewError};
use canopy_protocol::ObjectId;
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, UNIX_EPOCH};

/// Files never change under an inode: the kernel may keep their attributes long.
const FILE_TTL: Duration = Duration::from_secs(3600);

struct OpenFile {
    blob: ObjectId,
    file: File,
    /// Holds the kernel's passthrough registration until release.
    _backing: Option<Arc<BackingId>>,
}

/// The mounted filesystem.
pub struct CanopyFs {
    view: Arc<View>,
    objects: Arc<dyn Objects>,
    /// How long names and directory attributes may be cached: short when following a
    /// root, so a new version shows within a second.
    dir_ttl: Duration,
    /// Whether roots may switch to new versions while mounted.
    follows: bool,
    passthrough: AtomicBool,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// One passthrough registration per inode, shared by its open handles.
    backing: Mutex<HashMap<u64, Weak<BackingId>>>,
    next_fh: AtomicU64,
}

impl CanopyFs {
    /// A filesystem over `view`, reading contents from `objects`; `follows` when the
    /// view may switch roots to new versions.
    pub fn new(
        view: Arc<View>,
        objects: Arc<dyn Objects>,
        follows: bool,
        passthrough: bool,
    ) -> Self {
        CanopyFs {
            view,
            objects,
            dir_ttl: if follows {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(3600)
            },
            follows,
            passthrough: AtomicBool::new(passthrough),
            handles: Mutex::new(HashMap::new()),
            backing: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn ttl(&self, attr: &Attr) -> Duration {
        if attr.kind == Kind::Dir {
            self.dir_ttl
        } else {
            FILE_TTL
        }
    }

    /// Fetches (or finds) the content of a file inode and opens it; the object stays
    /// available until the handle is released.
    fn open_file(&self, ino: u64) -> Result<(ObjectId, File), Errno> {
        let (blob, size) = self.view.file(ino).map_err(errno)?;
        let id = blob.0;
        let file = self.objects.open(&id, size).map_err(|e| {
            tracing::error!("cannot open object {id}: {e}");
            Errno::EIO
        })?;
        Ok((id, file))
    }

    fn backing_for(&self, ino: u64, file: &File, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let mut table = self.backing.lock().expect("backing lock");
        if let Some(id) = table.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                table.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                tracing::warn!(
                    "FUSE passthrough refused ({e}); reads go through canopy from now on"
                );
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The errno that tells the truth about a view error.
fn errno(e: ViewError) -> Errno {
    match e {
        ViewError::NotFound => Errno::ENOENT,
        ViewError::NotDir => Errno::ENOTDIR,
        ViewError::NotFile => Errno::EISDIR,
        ViewError::NotSymlink => Errno::EINVAL,
        ViewError::Missing => Errno::EIO,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

impl From<&Attr> for FileAttr {
    fn from(a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            // Files are identified by content, not by when they were written: one
            // inode may stand for the same file in many roots.
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for CanopyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if self.passthrough.load(Ordering::Relaxed) {
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(granted, Ordering::Relaxed);
        }
        if self.passthrough.load(Ordering::Relaxed) {
            tracing::info!("FUSE passthrough on: the kernel reads cached files directly");
        } else {
            tracing::info!("FUSE passthrough off: reads go through canopy");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.view.lookup(parent.0, name.as_bytes()) {
            Ok(attr) => {
                let ttl = self.ttl(&attr);
                reply.entry_with_ttls(&ttl, &self.dir_ttl, &(&attr).into(), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.attr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(&attr), &(&attr).into()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let (blob, file) = match self.open_file(ino.0) {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let backing = self.backing_for(ino.0, &file, &reply);
        let passthrough = backing.clone();
        self.handles.lock().expect("handles lock").insert(
            fh,
            Arc::new(OpenFile {
                blob,
                file,
                _backing: backing,
            }),
        );
        match passthrough {
            // The kernel refuses passthrough opens with flags outside its passthrough
            // mask (FOPEN_KEEP_CACHE included): the backing file's pages are the cache.
            Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(open) = self
            .handles
            .lock()
            .expect("handles lock")
            .get(&fh.0)
            .cloned()
        else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match open
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("reading cached object {}: {e}", open.blob);
                    return reply.error(Errno::EIO);
                }
            }
        }
        // The kernel keeps these pages for the mount; the cache file's copy would be a
        // second one.
        // SAFETY: fadvise only takes a valid descriptor and a range.
        unsafe {
            libc::posix_fadvise(
                open.file.as_raw_fd(),
                offset as i64,
                filled as i64,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        reply.data(&buf[..filled]);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(open) = self.handles.lock().expect("handles lock").remove(&fh.0) {
            self.objects.release(&open.blob);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // A pinned view never changes, so the kernel may keep directory listings; a
        // followed one can switch trees under a directory inode, so it must ask again.
        let flags = if self.follows {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        };
        reply.opened(FileHandle(0), flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.view.list(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [
            (ino.0, Kind::Dir, b".".to_vec()),
            (ino.0, Kind::Dir, b"..".to_vec()),
        ];
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                file_type(kind),
                OsStr::from_bytes(&name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut xattrs = match self.view.xattrs(ino.0) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        if name.as_bytes() == COMMIT_XATTR.as_bytes()
            && let Some(commit) = self.view.commit_of(ino.0)
        {
            // Not in listxattr: a root's files and directories stay exactly as stored.
            xattrs = vec![(name.as_bytes().to_vec(), commit.to_string().into_bytes())];
        }
        match xattrs.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some((_, v)) if size == 0 => reply.size(v.len() as u32),
            Some((_, v)) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Some((_, v)) => reply.data(v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let xattrs = match self.view.xattrs(ino.0) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        let mut names = Vec::new();
        for (k, _) in &xattrs {
            names.extend_from_slice(k);
            names.push(0);
        }
        if size == 0 {
            reply.size(names.len() as u32);
        } else if names.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&names);
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used = self.objects.used();
        reply.statfs(used.div_ceil(4096), 0, 0, 0, 0, 4096, 255, 4096);
    }
}
