//! The FUSE front end: a thin adapter from kernel requests to the [`View`] and the
//! [`Cache`]. Read-only; attributes exactly as stored.
//!
//! Opened files are served from the cache file: with FUSE passthrough (kernel 6.9+ and
//! CAP_SYS_ADMIN) the kernel reads the cache file itself, otherwise canopy reads it and
//! keeps its own reads out of the page cache so the pages are held once, by the mount,
//! with `FOPEN_KEEP_CACHE` since content never changes under an inode.
//!
//! An open never waits for the network: a file the cache does not hold yet is opened
//! at once and fetched by its first read. The kernel sends those reads from its
//! readahead, without the reader waiting on the request itself, and a reader waits for
//! their pages killably: a reader blocked on a slow server is gone as soon as it is
//! killed (a request already taken by canopy would otherwise hold it until answered),
//! as on a local disk, while the fetch goes on within its deadline for the next reader.
//!
//! Content handed to the kernel is verified since its last change (see
//! [`canopy_cache`]): passthrough only backs files verified at open, and reads through
//! canopy check that the file has not changed since (one `fstat` per read); one that
//! has is opened anew from the cache, which verifies it again or fetches it again, so
//! altered cache files never reach a reader as wrong bytes.

use crate::objects::{Objects, Opened};
use crate::open_files::{Files, Io, OpenFile};
use crate::prefetch::Prefetch;
use crate::view::{Attr, COMMIT_XATTR, Kind, Stale, View, ViewError};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// How long the kernel may keep names, attributes and listings. Nodes never change
/// what they stand for, but for directories of a root that switches to a new version,
/// and then the view says what the kernel must forget ([`forget_stale`]).
const TTL: Duration = Duration::from_secs(3600);
/// Files up to this size are read through canopy even with passthrough on. Their pages
/// stay in the kernel's cache of the inode (`FOPEN_KEEP_CACHE`), so once read they cost
/// only the open; a passthrough open costs more (the cache file opened and checked, a
/// backing registered with the kernel and dropped at the last close), and what it
/// saves, a copy through canopy at the first read, is small for small files
/// (`benches/mount.sh`: opening a small file took about twice as long with passthrough).
const PASSTHROUGH_MIN: u64 = 128 * 1024;

/// The mounted filesystem.
pub struct CanopyFs {
    view: Arc<View>,
    objects: Arc<dyn Objects>,
    files: Arc<Files>,
    /// Fetches a directory's small files when a program reads it as a walk does.
    prefetch: Option<Arc<Prefetch>>,
    /// Whether the kernel opens directories by itself when OPENDIR answers ENOSYS
    /// (Linux 5.1 and later say so at INIT; older ones fail the open instead).
    opens_dirs_itself: bool,
}

impl CanopyFs {
    /// A filesystem over `view`, reading contents from `objects`. If the view may
    /// change while mounted, have the kernel told what it made stale ([`forget_stale`]).
    pub fn new(view: Arc<View>, objects: Arc<dyn Objects>, passthrough: bool) -> Self {
        CanopyFs {
            view,
            files: Arc::new(Files::new(passthrough, objects.clone())),
            objects,
            prefetch: None,
            opens_dirs_itself: false,
        }
    }

    /// Prefetches with `prefetch` (see [`crate::prefetch`]).
    pub fn with_prefetch(mut self, prefetch: Arc<Prefetch>) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Its open files, shared with whoever hands the mount over.
    pub fn files(&self) -> Arc<Files> {
        self.files.clone()
    }

    /// The content an open file reads: fetched at its first read; opened anew when
    /// `stale` (a copy found changed since its verification) is still the current one.
    fn content(&self, open: &OpenFile, stale: Option<&Arc<Opened>>) -> Result<Arc<Opened>, Errno> {
        let mut slot = open.content.lock().expect("content lock");
        if let Some(current) = &*slot
            && stale.is_none_or(|s| !Arc::ptr_eq(s, current))
        {
            return Ok(current.clone());
        }
        let opened = self.objects.open(&open.blob, open.size).map_err(|e| {
            tracing::error!("cannot open object {}: {e}", open.blob);
            Errno::EIO
        })?;
        if slot.is_some() {
            // The handle holds one open already.
            self.objects.release(&open.blob);
        }
        let opened = Arc::new(opened);
        *slot = Some(opened.clone());
        Ok(opened)
    }

    /// Reads up to `size` bytes at `offset` of an open file, checking afterwards that
    /// its cache file did not change (else reading a verified copy instead).
    fn read_open(&self, open: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let failed = |e: std::io::Error| {
            tracing::error!("reading cached object {}: {e}", open.blob);
            Errno::EIO
        };
        let content = self.content(open, None)?;
        let buf = read_at(&content.file, offset, size).map_err(failed)?;
        if content.unchanged() {
            return Ok(buf);
        }
        // Changed since it was verified: what was just read cannot be trusted.
        let fresh = self.content(open, Some(&content))?;
        read_at(&fresh.file, offset, size).map_err(failed)
    }
}

impl Drop for CanopyFs {
    /// The session is over: kept registrations go, and with them their pins on a cache
    /// that other mounts of the process (volumes) may share.
    fn drop(&mut self) {
        self.files.close_kept();
    }
}

/// Reads up to `size` bytes of `file` at `offset` (fewer only at its end), keeping
/// them out of the page cache: the kernel keeps them for the mount, and the cache
/// file's copy would be a second one.
fn read_at(file: &File, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    // SAFETY: fadvise only takes a valid descriptor and a range.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as i64,
            filled as i64,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    Ok(buf)
}

/// Has the kernel forget, through `notifier`, what each change of `view` makes stale:
/// the names that now stand for another node or none, and the attributes and listings
/// of the directories that changed. Names go first: forgetting a name waits for the
/// lookups and listings under way in its directory, so none of them can cache the old
/// version after its directory was forgotten. Passthrough registrations kept for
/// files of `files` that a changed name stood for are closed (see
/// [`Files::drop_kept`]).
pub fn forget_stale(view: &View, notifier: fuser::Notifier, files: Arc<Files>) {
    view.watch(move |stale: &Stale| {
        files.drop_kept(&stale.leaves);
        let started = std::time::Instant::now();
        // ENOENT: the kernel holds no such name or node, so there is nothing to forget.
        let held = |e: &std::io::Error| e.raw_os_error() != Some(libc::ENOENT);
        for (parent, name) in &stale.entries {
            if let Err(e) = notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
                && held(&e)
            {
                tracing::warn!(
                    "telling the kernel to forget name {} in directory {parent}: {e}",
                    String::from_utf8_lossy(name)
                );
            }
        }
        for dir in &stale.dirs {
            // From offset 0 to the end: attributes and every page of the listing.
            if let Err(e) = notifier.inval_inode(INodeNo(*dir), 0, 0)
                && held(&e)
            {
                tracing::warn!("telling the kernel to forget directory {dir}: {e}");
            }
        }
        tracing::debug!(
            "the kernel forgot {} names and {} directories in {:?}",
            stale.entries.len(),
            stale.dirs.len(),
            started.elapsed()
        );
    });
}

/// The attributes of a negative entry: only node 0 matters.
const ABSENT: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
    flags: 0,
};

/// Marks the requests the kernel sends again (`FUSE_NOTIFY_RESEND`) after a process
/// that had read them without answering handed the mount over.
pub(crate) const RESENT: u64 = 1 << 63;

/// Logs a request resent by the kernel (see [`RESENT`]).
fn note_resent(req: &Request, what: &str) {
    if req.unique().0 & RESENT != 0 {
        tracing::info!("answering a {what} request the kernel resent after a hand-over");
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
        self.files.init(config);
        // A symlink is a leaf numbered by its identity, target included, so an inode's
        // target never changes: the kernel may keep it rather than ask (READLINK) at
        // every path walk through it, such as every exec's ELF interpreter. Refused
        // only by kernels older than 4.20, which then ask as before.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        self.opens_dirs_itself = config
            .capabilities()
            .contains(fuser::InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        if let Some(p) = &self.prefetch {
            p.serving();
        }
        if self.files.passthrough() {
            tracing::info!("FUSE passthrough on: the kernel reads cached files directly");
        } else {
            tracing::info!("FUSE passthrough off: reads go through canopy");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        note_resent(req, "lookup");
        match self.view.lookup(parent.0, name.as_bytes()) {
            Ok(attr) => {
                if let (Some(p), Kind::File) = (&self.prefetch, attr.kind) {
                    p.looked_up(parent.0, attr.ino, name.as_bytes());
                }
                reply.entry(&TTL, &(&attr).into(), Generation(0))
            }
            // Node 0 with a timeout: ENOENT that the kernel keeps (a negative entry),
            // so that a program's searches (a loader's library path, an interpreter's
            // module path) ask once. A switch that adds the name has it forgotten.
            Err(ViewError::NotFound) if self.view.absent(parent.0, name.as_bytes()) => {
                reply.entry(&TTL, &ABSENT, Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        note_resent(req, "getattr");
        match self.view.attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &(&attr).into()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        note_resent(req, "open");
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let (blob, size) = match self.view.file(ino.0) {
            Ok((blob, size)) => (blob.0, size),
            Err(e) => return reply.error(errno(e)),
        };
        if let Some(p) = &self.prefetch {
            p.opening(ino.0, &blob);
        }
        // What the host holds already, for passthrough of a large file (its registration
        // kept since its last close, else its cache file); anything else is fetched by
        // the first read, not here (see the module's documentation).
        let _entered = self.files.enter();
        self.files.opening(req.unique().0);
        let large = self.files.passthrough() && size > PASSTHROUGH_MIN;
        let kept = large.then(|| self.files.reuse_kept(ino.0, &blob)).flatten();
        let (opened, io) = match kept {
            Some((backing, content)) => (Some(content), Io::Passthrough(backing)),
            None => {
                let opened = if large {
                    match self.objects.cached(&blob, size) {
                        Ok(o) => o.map(Arc::new),
                        Err(e) => {
                            tracing::error!("cannot open object {blob}: {e}");
                            return reply.error(Errno::EIO);
                        }
                    }
                } else {
                    None
                };
                let io = self.files.io_for(ino.0, opened.as_deref());
                (opened, io)
            }
        };
        let fh = self.files.next_fh();
        let counted = matches!(io, Io::Counted);
        let (backing, direct) = match io {
            Io::Passthrough(backing) => (Some(backing), false),
            Io::Direct(backing) => (Some(backing), true),
            Io::Cached | Io::Counted => (None, false),
        };
        // Answered through the open file's own hold on the registration: a release that
        // overtakes this answer then finds it held by open files alone, and may keep it.
        let open = self.files.insert(
            fh,
            req.unique().0,
            OpenFile {
                ino: ino.0,
                blob,
                size,
                content: Mutex::new(opened),
                backing,
                counted,
            },
        );
        // Nothing is ever written, so closing needs no FLUSH round trip (FOPEN_NOFLUSH).
        match &open.backing {
            // The kernel refuses passthrough opens with flags outside its passthrough
            // mask (FOPEN_KEEP_CACHE included): the backing file's pages are the cache.
            Some(backing) => backing.reply(reply, fh, direct),
            None => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        note_resent(req, "read");
        // A handle this process did not hand out was opened by a predecessor that could
        // not hand its files over (killed): the inode says what it reads.
        let open = self.files.get_or_insert(fh.0, || {
            let (blob, size) = self.view.file(ino.0).ok()?;
            Some(OpenFile::orphan(ino.0, blob.0, size))
        });
        let Some(open) = open else {
            return reply.error(Errno::EBADF);
        };
        match self.read_open(&open, offset, size) {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
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
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        note_resent(req, "release");
        let _entered = self.files.enter();
        let Some(open) = self.files.remove(fh.0, ino.0) else {
            return reply.ok();
        };
        let content = open.content.lock().expect("content lock").take();
        if let Some(content) = content {
            self.files.release_content(&open, content);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No directory state is kept per open, so the kernel need not ask: ENOSYS
        // makes it open every directory of the connection by itself from now on
        // (no OPENDIR nor RELEASEDIR round trip, two per directory a walk enters),
        // with its listing kept (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, the kernel's
        // default without OPENDIR). A directory whose listing changes is forgotten by
        // the kernel when its root switches (see [`forget_stale`]). Kernels before 5.1
        // would fail the open instead: they are answered with the same flags.
        if self.opens_dirs_itself {
            reply.error(Errno::ENOSYS);
        } else {
            let flags = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
            reply.opened(FileHandle(0), flags);
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        note_resent(req, "readdir");
        if let (Some(p), 0) = (&self.prefetch, offset) {
            p.listing(ino.0);
        }
        // `.` and `..` are offsets 0 and 1; entry n of the directory is n + 2, and what
        // each carries is the offset of the next (where the kernel asks to go on).
        for (i, name) in [&b"."[..], b".."]
            .into_iter()
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(
                ino,
                (i + 1) as u64,
                FileType::Directory,
                OsStr::from_bytes(name),
            ) {
                return reply.ok();
            }
        }
        let from = (offset as usize).saturating_sub(2);
        let mut next = from + 2;
        let listed = self.view.list(ino.0, from, |child, kind, name| {
            next += 1;
            reply.add(
                INodeNo(child),
                next as u64,
                file_type(kind),
                OsStr::from_bytes(name),
            )
        });
        if let Err(e) = listed {
            return reply.error(errno(e));
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
