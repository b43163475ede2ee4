//! The open files of a mount: file handles, how the kernel reads each inode, and the
//! passthrough registrations on the FUSE connection — the state a process taking a
//! live mount over adopts ([`Files::state`], [`Files::adopt`]), so files opened before
//! the hand-over keep reading and closing as if nothing happened.
//!
//! Passthrough registrations are kept as the kernel's raw backing ids, closed by canopy
//! itself: a registration made by one process stays valid on the connection after it
//! exits, and its successor must reuse it (the kernel binds one backing file per inode
//! while files read through it, and refuses an open that names another).

mod handed;
mod handles;
mod kept;

pub use handed::{BackingState, FilesState, HandleState};
pub use handles::Adopted;

use crate::mode_table::{ModeTable, Recorded};
use crate::objects::{Objects, Opened};
use canopy_cache::Stamp;
use canopy_protocol::ObjectId;
use fuser::{KernelConfig, ReplyOpen};
use handles::{Handle, Inherited};
use kept::Kept;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// A passthrough registration on the connection, closed when the last open file
/// reading through it is released and it is not kept for the next open ([`kept`]).
pub(crate) struct Backing {
    raw: u32,
    device: Arc<OwnedFd>,
    /// Its entry in the shared table of modes, if recorded.
    entry: OnceLock<(Arc<ModeTable>, usize)>,
}

impl Backing {
    /// Registers `file` on the connection of `device`.
    fn open(device: &Arc<OwnedFd>, file: &std::fs::File) -> std::io::Result<Backing> {
        let raw = fuser::BackingId::create_raw(device.as_fd(), file)?;
        tracing::debug!("opened passthrough registration {raw}");
        Ok(Backing::known(raw, device))
    }

    /// A registration made before (by this process or a predecessor).
    fn known(raw: u32, device: &Arc<OwnedFd>) -> Backing {
        Backing {
            raw,
            device: device.clone(),
            entry: OnceLock::new(),
        }
    }

    /// Records it in `table` for inode `ino`, read from a file with `stamp`.
    fn record(&self, table: &Arc<ModeTable>, ino: u64, stamp: Option<Stamp>) {
        if self.entry.get().is_some() {
            return;
        }
        // Its open files are recorded from now on, each before it is answered (see
        // [`Files::insert`]): it has none yet, or they were recorded (see
        // [`Files::record_in`]).
        let r = Recorded::Passthrough {
            ino,
            raw: self.raw,
            stamp: stamp.map(|s| s.to_raw()),
            handles: true,
        };
        if let Some(slot) = table.add(r) {
            let _ = self.entry.set((table.clone(), slot));
        }
    }

    /// Marks it in the shared table as kept, no open file reading through it (`true`),
    /// or as read through again (`false`): a successor after a crash closes the
    /// registrations marked kept (see [`crate::mode_table`]).
    fn mark_kept(&self, kept: bool) {
        if let Some((table, slot)) = self.entry.get() {
            table.mark_kept(*slot, kept);
        }
    }

    /// Answers an open with this registration; `direct`: reads and writes still come
    /// to canopy (only mmap uses the backing file), for an open whose content canopy
    /// reads itself while the kernel binds the inode to this registration.
    pub(crate) fn reply(&self, reply: ReplyOpen, fh: u64, direct: bool) {
        // SAFETY: `raw` is a live registration on this connection (this value holds
        // it); the wrapper is turned back into the raw id, so it never closes it.
        let id = unsafe { reply.wrap_backing(self.raw) };
        // Nothing is ever written: closing needs no FLUSH round trip. Both flags are
        // within the kernel's passthrough mask.
        let mut flags = fuser::FopenFlags::FOPEN_NOFLUSH;
        if direct {
            flags |= fuser::FopenFlags::FOPEN_DIRECT_IO;
        }
        reply.opened_passthrough(fuser::FileHandle(fh), flags, &id);
        let _ = id.into_raw();
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Some((table, slot)) = self.entry.get() {
            table.remove(*slot);
        }
        // SAFETY: an ioctl on a descriptor this value keeps open, with a pointer to a
        // u32 that lives across the call.
        let rc = unsafe { libc::ioctl(self.device.as_raw_fd(), BACKING_CLOSE, &self.raw) };
        if rc == 0 {
            tracing::debug!("closed passthrough registration {}", self.raw);
        } else {
            // Closed already, by this process or another: opens answered with it fail.
            tracing::warn!(
                "closing passthrough registration {}: {}",
                self.raw,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// An open file.
pub(crate) struct OpenFile {
    pub(crate) ino: u64,
    pub(crate) blob: ObjectId,
    pub(crate) size: u64,
    /// What reads read: `None` until the first read fetches it, replaced by a verified
    /// copy when the file is found changed. Once `Some`, the handle holds one
    /// [`crate::objects::Objects::open`] until release.
    pub(crate) content: Mutex<Option<Arc<Opened>>>,
    /// Holds the passthrough registration until release.
    pub(crate) backing: Option<Arc<Backing>>,
    /// Counted in its inode's [`Mode::Cached`].
    pub(crate) counted: bool,
}

impl OpenFile {
    /// An open file of a predecessor that could not hand it over (killed): known from
    /// its inode when it is first read. Its release is counted off its inode's
    /// [`Mode::Cached`], as the predecessor's table recorded it (unless the predecessor
    /// recorded each open file: then through that entry, see [`Files::get_or_insert`]).
    pub(crate) fn orphan(ino: u64, blob: ObjectId, size: u64) -> OpenFile {
        OpenFile {
            ino,
            blob,
            size,
            content: Mutex::new(None),
            backing: None,
            counted: true,
        }
    }
}

/// How the kernel reads an inode's open files: one way per inode at a time (an open
/// asking for another fails).
enum Mode {
    /// From this backing file, while open files hold it, for opens of the same,
    /// unchanged file.
    Passthrough {
        id: Weak<Backing>,
        stamp: Option<Stamp>,
    },
    /// Through canopy and the page cache, for `open` files (`entry` in the shared
    /// table, if recorded).
    Cached { open: usize, entry: Option<usize> },
}

/// How an open file is read.
pub(crate) enum Io {
    /// By the kernel, from the cache file.
    Passthrough(Arc<Backing>),
    /// Through canopy, the pages kept by the kernel.
    Cached,
    /// As `Cached`, counted in the inode's [`Mode::Cached`] (passthrough is on).
    Counted,
    /// Through canopy, page by page: the inode is bound to a registration that open
    /// files still read through (the kernel allows one per inode, and refuses an open
    /// of it without one), but this open could not be checked against its file (changed
    /// since, or being verified for another open): it names the registration with
    /// direct I/O, so its reads come to canopy, and holds it until release.
    Direct(Arc<Backing>),
}

/// What the kernel said in its INIT request, so that a successor can replay it to its
/// own FUSE session (the kernel sends INIT once per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInit {
    /// Protocol major version.
    pub major: u32,
    /// Protocol minor version.
    pub minor: u32,
    /// The kernel's readahead bound.
    pub max_readahead: u32,
    /// The capabilities the kernel offered (`flags | flags2 << 32`).
    pub flags: u64,
}

impl KernelInit {
    /// Reads the kernel's offer from the configuration `init` is given, before any
    /// change: `set_max_readahead` refuses a value over the kernel's bound with that
    /// bound.
    fn of(config: &mut KernelConfig) -> KernelInit {
        let max_readahead = match config.set_max_readahead(u32::MAX) {
            Err(max) => max,
            Ok(previous) => {
                let _ = config.set_max_readahead(previous);
                previous
            }
        };
        let abi = config.kernel_abi();
        KernelInit {
            major: abi.0,
            minor: abi.1,
            max_readahead,
            flags: config.capabilities().bits(),
        }
    }
}

/// The first file handle of a process: the time in nanoseconds, so that a process
/// that took a mount over from one killed before handing its files over (their
/// handles unknown) never hands out a number the kernel still holds.
fn first_fh() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The open files of a mount, shared by its FUSE session and its hand-over listener.
pub struct Files {
    passthrough: AtomicBool,
    handles: Mutex<HashMap<u64, Handle>>,
    /// How each inode with open files is read (when passthrough is on).
    modes: Mutex<HashMap<u64, Mode>>,
    next_fh: AtomicU64,
    /// Held for reading while an open or a release changes the tables; held for
    /// writing while they are handed over (requests wait, and are resent to the
    /// successor if this process exits).
    gate: RwLock<()>,
    /// The connection (a duplicate of the session's `/dev/fuse` descriptor).
    device: OnceLock<Arc<OwnedFd>>,
    kernel: OnceLock<KernelInit>,
    /// Where modes are recorded for a successor after a crash.
    table: OnceLock<Arc<ModeTable>>,
    /// Registrations of a predecessor killed without handing its files over: kept for
    /// good (which open files still read through them is not known).
    orphans: Mutex<Vec<Arc<Backing>>>,
    /// The open files of a predecessor killed without handing its files over, as it
    /// recorded them: each holds its registration until the kernel releases it.
    inherited: Mutex<Inherited>,
    /// Releases of handles this process never saw are not counted off their inode's
    /// open files read through canopy: the killed predecessor recorded each of its open
    /// files ([`Files::adopt_recorded`]), and only those are.
    orphans_known: AtomicBool,
    /// Registrations no open file reads through, kept for the next open (see [`kept`]).
    kept: Mutex<Kept>,
    /// Where contents come from: kept files hold a pin on theirs.
    objects: Arc<dyn Objects>,
}

impl Files {
    /// No open files of contents from `objects`; passthrough wanted or not.
    pub fn new(passthrough: bool, objects: Arc<dyn Objects>) -> Files {
        Files {
            passthrough: AtomicBool::new(passthrough),
            handles: Mutex::new(HashMap::new()),
            modes: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(first_fh()),
            gate: RwLock::new(()),
            device: OnceLock::new(),
            kernel: OnceLock::new(),
            table: OnceLock::new(),
            orphans: Mutex::new(Vec::new()),
            inherited: Mutex::new(Inherited::default()),
            orphans_known: AtomicBool::new(false),
            kept: Mutex::new(Kept::new(objects.bound())),
            objects,
        }
    }

    /// Whether passthrough is on.
    pub(crate) fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// Decides passthrough at INIT (wanted, and granted by the kernel), and remembers
    /// the kernel's offer.
    pub(crate) fn init(&self, config: &mut KernelConfig) {
        let _ = self.kernel.set(KernelInit::of(config));
        if self.passthrough() {
            let granted = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(granted, Ordering::Relaxed);
        }
    }

    /// The kernel's INIT offer, once the session is set up.
    pub fn kernel(&self) -> Option<KernelInit> {
        self.kernel.get().copied()
    }

    /// Gives the connection's descriptor (passthrough registrations are made on it).
    pub fn attach(&self, device: OwnedFd) {
        let _ = self.device.set(Arc::new(device));
    }

    /// The connection's descriptor, once attached.
    pub fn device(&self) -> Option<Arc<OwnedFd>> {
        self.device.get().cloned()
    }

    /// Enters an open or a release (see `gate`).
    pub(crate) fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A new file handle number.
    pub(crate) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// The open file `fh`, or one made by `make` for a handle this process never
    /// handed out (a predecessor killed before it could hand its files over).
    pub(crate) fn get_or_insert(
        &self,
        fh: u64,
        make: impl FnOnce() -> Option<OpenFile>,
    ) -> Option<Arc<OpenFile>> {
        let mut handles = self.handles.lock().expect("handles lock");
        if let Some(handle) = handles.get(&fh) {
            return Some(handle.open.clone());
        }
        let mut made = make()?;
        // Counted off only through the predecessor's entry, when it recorded them.
        made.counted &= !self.orphans_known.load(Ordering::Relaxed);
        let open = Arc::new(made);
        handles.insert(
            fh,
            Handle {
                open: open.clone(),
                entry: None,
            },
        );
        Some(open)
    }

    /// Records open file `fh`, answering the OPEN request `unique` (a
    /// [`fuser::Request::unique`]), before the kernel is answered (see
    /// [`crate::mode_table`]).
    pub(crate) fn insert(&self, fh: u64, unique: u64, open: OpenFile) -> Arc<OpenFile> {
        match &open.backing {
            Some(b) => tracing::debug!(
                "handle {fh}: inode {} through passthrough registration {}",
                open.ino,
                b.raw
            ),
            None => tracing::debug!("handle {fh}: inode {} read through canopy", open.ino),
        }
        let entry = handles::record(self.table.get(), fh, unique, &open);
        if entry.is_none() && open.counted && open.backing.is_none() {
            // Before the answer: a successor then trusts the count, not the entries.
            self.untrack_cached(open.ino);
        }
        let open = Arc::new(open);
        self.handles.lock().expect("handles lock").insert(
            fh,
            Handle {
                open: open.clone(),
                entry,
            },
        );
        open
    }

    /// Forgets open file `fh` of inode `ino` at its release. A handle never seen is a
    /// predecessor's (killed) that was never read: counted off the inode as an orphan
    /// unless the predecessor recorded its open files (then only those are).
    pub(crate) fn remove(&self, fh: u64, ino: u64) -> Option<Arc<OpenFile>> {
        let handle = self.handles.lock().expect("handles lock").remove(&fh);
        tracing::debug!("handle {fh}: released");
        // Before the release is answered: a process killed until then has the kernel
        // resend it, and its successor frees the entry at that release.
        if let (
            Some(Handle {
                entry: Some(slot), ..
            }),
            Some(table),
        ) = (&handle, self.table.get())
        {
            table.remove(*slot);
        }
        self.release_inherited(fh);
        let open = handle.map(|h| h.open);
        let counted = match &open {
            Some(o) => o.counted,
            None => !self.orphans_known.load(Ordering::Relaxed),
        };
        if counted {
            self.count_off(ino);
        }
        open
    }

    /// Counts one open file read through canopy off inode `ino`.
    fn count_off(&self, ino: u64) {
        let mut modes = self.modes.lock().expect("modes lock");
        if let Some(Mode::Cached { open: n, entry }) = modes.get_mut(&ino) {
            *n = n.saturating_sub(1);
            if *n > 0 {
                self.record_cached(ino, *n, entry, false);
            } else {
                if let (Some(table), Some(slot)) = (self.table.get(), *entry) {
                    table.remove(slot);
                }
                modes.remove(&ino);
            }
        }
    }

    /// Records a new count of cached opens of `ino` in the shared table; a new entry
    /// says whether each of them has a handle entry (`handles`).
    fn record_cached(&self, ino: u64, open: usize, entry: &mut Option<usize>, handles: bool) {
        let Some(table) = self.table.get() else {
            return;
        };
        match *entry {
            Some(slot) => table.set_count(slot, open as u64),
            None => {
                let count = open as u64;
                *entry = table.add(Recorded::Cached {
                    ino,
                    count,
                    handles,
                })
            }
        }
    }

    /// Says of inode `ino`'s count of cached opens that not each has a handle entry.
    fn untrack_cached(&self, ino: u64) {
        let modes = self.modes.lock().expect("modes lock");
        if let (
            Some(Mode::Cached {
                entry: Some(slot), ..
            }),
            Some(table),
        ) = (modes.get(&ino), self.table.get())
        {
            table.untrack(*slot);
        }
    }

    /// Records modes in `table` from now on (and those of files open now), so that a
    /// successor after a crash knows them. Entries already there (a table taken over)
    /// stay as they are. A new table is seen by no successor before this returns (it is
    /// stored after), so registrations are recorded before their open files.
    pub fn record_in(&self, table: Arc<ModeTable>) {
        let _ = self.table.set(table.clone());
        let modes = self.modes.lock().expect("modes lock");
        for (ino, mode) in modes.iter() {
            if let Mode::Passthrough { id, stamp } = mode
                && let Some(b) = id.upgrade()
            {
                b.record(&table, *ino, *stamp);
            }
        }
        drop(modes);
        // Open files after their registrations; those read through canopy with a handle
        // entry counted by inode.
        let mut recorded = HashMap::new();
        let mut handles = self.handles.lock().expect("handles lock");
        for (fh, handle) in handles.iter_mut() {
            if handle.entry.is_none() {
                // Answered long ago: no OPEN of it will come again (0 is no request's).
                handle.entry = handles::record(Some(&table), *fh, 0, &handle.open);
            }
            if handle.entry.is_some() && handle.open.backing.is_none() {
                *recorded.entry(handle.open.ino).or_default() += 1;
            }
        }
        drop(handles);
        let mut inherited = self.inherited.lock().expect("inherited lock");
        inherited.record(&table, &mut recorded);
        drop(inherited);
        let mut modes = self.modes.lock().expect("modes lock");
        for (ino, mode) in modes.iter_mut() {
            if let Mode::Cached { open, entry } = mode {
                let all = recorded.get(ino).is_some_and(|n: &usize| *n >= *open);
                self.record_cached(*ino, *open, entry, all);
            }
        }
        drop(modes);
        // Taken over live from a process that kept them for good: so does a successor.
        for b in self.orphans.lock().expect("orphans lock").iter() {
            if let Some((table, slot)) = b.entry.get() {
                table.untrack(*slot);
            }
        }
        self.kept.lock().expect("kept lock").mark_all();
    }

    /// How to serve an open of inode `ino`, whose content is `opened` if the host
    /// holds it already. Passthrough needs that content; otherwise the open is read
    /// through canopy, which fetches at the first read.
    pub(crate) fn io_for(&self, ino: u64, opened: Option<&Opened>) -> Io {
        if !self.passthrough() {
            return Io::Cached;
        }
        let mut modes = self.modes.lock().expect("modes lock");
        match modes.get_mut(&ino) {
            Some(Mode::Passthrough { id, stamp }) if let Some(id) = id.upgrade() => {
                // Read through again. (Kept meanwhile, by a release that came between
                // this open's look at the kept set and now: it stays there, marked
                // again once no open file holds it, see [`Files::release_content`].)
                id.mark_kept(false);
                match opened {
                    Some(o) if o.stamp == *stamp => return Io::Passthrough(id),
                    Some(_) => tracing::warn!(
                        "inode {ino}: its open files read a cache file that has changed since; \
                         this open reads a verified copy through canopy"
                    ),
                    // Being verified for another open (a successor verifies each
                    // object once), or found changed and removed: canopy's reads wait
                    // for it, or fetch it again.
                    None => tracing::debug!(
                        "inode {ino}: its cache file is not at hand; this open reads through \
                         canopy"
                    ),
                }
                return Io::Direct(id);
            }
            Some(Mode::Cached { open, entry }) if *open > 0 => {
                *open += 1;
                let open = *open;
                self.record_cached(ino, open, entry, false);
                return Io::Counted;
            }
            _ => {}
        }
        let Some(opened) = opened else {
            let mut entry = None;
            self.record_cached(ino, 1, &mut entry, true);
            modes.insert(ino, Mode::Cached { open: 1, entry });
            return Io::Counted;
        };
        let registered = match self.device.get() {
            Some(device) => Backing::open(device, &opened.file),
            None => Err(std::io::Error::other("no FUSE connection attached")),
        };
        match registered {
            Ok(backing) => {
                let backing = Arc::new(backing);
                if let Some(table) = self.table.get() {
                    backing.record(table, ino, opened.stamp);
                }
                modes.insert(
                    ino,
                    Mode::Passthrough {
                        id: Arc::downgrade(&backing),
                        stamp: opened.stamp,
                    },
                );
                Io::Passthrough(backing)
            }
            Err(e) => {
                tracing::warn!(
                    "FUSE passthrough refused ({e}); reads go through canopy from now on"
                );
                self.passthrough.store(false, Ordering::Relaxed);
                Io::Cached
            }
        }
    }

    /// Stops opens and releases (they wait) until the guard is dropped; while it is
    /// held, [`Files::state`] is exact.
    pub fn freeze(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }
}
