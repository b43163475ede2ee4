//! The floor of a warm FUSE mount, for `benches/mount.sh`: a minimal read-only file
//! system that copies a directory tree into memory and serves it through fuser with the
//! session settings and open flags a canopy mount uses (8 threads on one descriptor,
//! one-hour TTLs, `FOPEN_KEEP_CACHE | FOPEN_NOFLUSH`, no OPENDIR, cached listings and
//! symlinks), answering every request from memory with no other work. What a canopy
//! mount costs beyond it is canopy's own; what it costs beyond the disk is FUSE's.
//!
//! With `--no-open` it answers OPEN with ENOSYS, so that the kernel opens files by
//! itself from then on (no OPEN nor RELEASE round trip, pages kept): what a FUSE mount
//! would cost if opens cost no round trip, which canopy cannot do (it must see opens to
//! pass files through to the cache, keep open files from eviction and hand them over).
//!
//! Not part of canopy: a benchmark reference only.
//!
//! ```sh
//! cargo run --release -p canopy-client --example fuse_floor -- [--no-open] SOURCE_DIR MOUNTPOINT
//! ```
//!
//! Prints `mounted at MOUNTPOINT` once serving, and unmounts at SIGTERM or SIGINT.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, Request, SessionACL,
};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// As canopy's: names and attributes never change under a mount.
const TTL: Duration = Duration::from_secs(3600);

/// What a node holds.
enum Body {
    File(Vec<u8>),
    Dir {
        /// Listing order, for readdir.
        entries: Vec<(OsString, u64)>,
        /// By name, for lookup.
        names: HashMap<OsString, u64>,
    },
    Symlink(Vec<u8>),
    Other,
}

/// One node of the tree; its inode number is its index + 1.
struct Node {
    attr: FileAttr,
    body: Body,
}

/// The tree in memory.
struct Floor {
    nodes: Vec<Node>,
    /// Answer OPEN with ENOSYS (see the module's documentation).
    no_open: bool,
}

impl Floor {
    /// Copies the tree under `root` into memory.
    fn load(root: &Path, no_open: bool) -> std::io::Result<Floor> {
        let mut floor = Floor {
            nodes: Vec::new(),
            no_open,
        };
        floor.add(root)?;
        Ok(floor)
    }

    /// Adds `path` (and, for a directory, everything under it); returns its inode.
    fn add(&mut self, path: &Path) -> std::io::Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        let ino = self.nodes.len() as u64 + 1;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            FileType::Directory
        } else if ft.is_file() {
            FileType::RegularFile
        } else if ft.is_symlink() {
            FileType::Symlink
        } else {
            FileType::NamedPipe
        };
        let attr = FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.len().div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        self.nodes.push(Node {
            attr,
            body: Body::Other,
        });
        let body = match kind {
            FileType::RegularFile => Body::File(std::fs::read(path)?),
            FileType::Symlink => {
                Body::Symlink(std::fs::read_link(path)?.into_os_string().into_vec())
            }
            FileType::Directory => {
                let mut children: Vec<_> = std::fs::read_dir(path)?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()?;
                children.sort();
                let mut entries = Vec::new();
                for name in children {
                    let child = self.add(&path.join(&name))?;
                    entries.push((name, child));
                }
                let names = entries.iter().cloned().collect();
                Body::Dir { entries, names }
            }
            _ => Body::Other,
        };
        self.nodes[ino as usize - 1].body = body;
        Ok(ino)
    }

    fn node(&self, ino: INodeNo) -> Result<&Node, Errno> {
        let i = ino.0.checked_sub(1).ok_or(Errno::ENOENT)?;
        self.nodes.get(i as usize).ok_or(Errno::ENOENT)
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // As canopy: symlink targets kept by the kernel.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.node(parent).and_then(|n| match &n.body {
            Body::Dir { names, .. } => names.get(name).copied().ok_or(Errno::ENOENT),
            _ => Err(Errno::ENOTDIR),
        });
        match found.and_then(|ino| self.node(INodeNo(ino))) {
            Ok(n) => reply.entry(&TTL, &n.attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(n) => reply.attr(&TTL, &n.attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).map(|n| &n.body) {
            Ok(Body::Symlink(target)) => reply.data(target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        match self.node(ino).map(|n| &n.body) {
            Ok(Body::File(_)) => reply.opened(
                FileHandle(ino.0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            ),
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.node(ino).map(|n| &n.body) {
            Ok(Body::File(bytes)) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As canopy: the kernel then opens directories by itself, listings kept.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.node(ino).map(|n| &n.body) {
            Ok(Body::Dir { entries, .. }) => entries,
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        for (i, (name, child)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = self.nodes[*child as usize - 1].attr.kind;
            if reply.add(INodeNo(*child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let no_open = args.first().is_some_and(|a| a == "--no-open");
    if no_open {
        args.remove(0);
    }
    let [source, mountpoint] = args.as_slice() else {
        eprintln!("usage: fuse_floor [--no-open] SOURCE_DIR MOUNTPOINT");
        std::process::exit(2);
    };
    if let Err(e) = serve(Path::new(source), Path::new(mountpoint), no_open) {
        eprintln!("fuse_floor: {e}");
        std::process::exit(1);
    }
}

/// Serves `source` at `mountpoint` until SIGTERM or SIGINT.
fn serve(source: &Path, mountpoint: &Path, no_open: bool) -> std::io::Result<()> {
    let floor = Floor::load(source, no_open)
        .map_err(|e| std::io::Error::other(format!("loading {}: {e}", source.display())))?;
    // Blocked before the session's threads start, so that they inherit the mask and
    // only `sigwait` below takes the signal.
    // SAFETY: plain signal-set calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse_floor".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(8);
    config.clone_fd = false;
    let session = fuser::Session::new(floor, mountpoint, &config)?.spawn()?;
    println!("mounted at {}", mountpoint.display());
    let mut sig = 0;
    // SAFETY: waits on the set built above.
    unsafe { libc::sigwait(&set, &mut sig) };
    session.umount_and_join()
}
