//! How the kernel reads each open inode, kept in shared memory (a memfd the service
//! manager holds with the FUSE connection) so that the successor of a process killed
//! without a hand-over knows it too: the kernel allows one way per inode while files
//! are open, so an open answered another way — a new passthrough registration while
//! the dead process's is in use, or passthrough while its files read through canopy —
//! would fail.
//!
//! A passthrough registration no open file reads through any more, kept for the next
//! open of its file (see `open_files/kept.rs`), is marked kept: a successor closes those
//! (no file the kernel holds open reads through them). The mark is one store into the
//! entry's state word, made while no open file holds the registration and taken off
//! before one is answered with it. A process of a version before the mark reads a
//! marked entry as free: it leaves that registration open, as it would have anyway, and
//! nothing reads through it.
//!
//! Each open file reading through a registration has an entry of its own, a handle
//! entry (its file handle, the unique number of the kernel's OPEN request, and the
//! registration's entry), added before the kernel is answered and freed when the kernel
//! releases the handle, before that release is answered (see `open_files/handles.rs`).
//! A successor holds a registration while its handle entries last, frees each at the
//! release of its handle or when the kernel resends its OPEN (the open was never
//! answered), and closes the registration when none is left. A crash at any point
//! leaves each entry right: one added for an open the kernel was not answered stays
//! until the kernel resends that open (it does, for every request read and not
//! answered), one for a handle the kernel holds until that handle's release. So a
//! registration is never closed while a file the kernel holds reads through it, and
//! never kept once none does. A registration entry says whether every open file of it
//! has a handle entry ([`Recorded::Passthrough`]'s `handles`): not if one could not be
//! added (a full table), nor for entries of versions before handle entries (their
//! successor keeps such registrations until unmount, as those versions did). The bit is
//! in the word of the registration's id, whose upper half older versions ignore; they
//! read handle entries as free. Whether the processes since the entry was made all kept
//! handle entries is in the state file (`service::State::handles`).
//!
//! Open files read through canopy have handle entries too (no registration), beside
//! their inode's count of them, and the count's entry says whether each has one. The
//! count is raised before the open's entry is added and lowered after its entry is
//! freed; a successor counts such an inode by its handle entries, each counted off once
//! (at its handle's release or its OPEN's resend), and nothing else. The releases a
//! killed process had handled but not answered come again, for handles without
//! entries: counted off once more, as before, they left the count too low, and a
//! passthrough open of the inode then failed while a file read through canopy was open.
//! Where an open file could not be given an entry (a full table), the count is used,
//! which never counts fewer files than the kernel holds (at worst one more, never
//! counted off: that inode is then read through canopy, not passthrough). The count is
//! updated by one store of its own word.
//!
//! Entries are plain stores into the mapping (no system call on the request path); a
//! process killed in the middle of one leaves that entry unused, never a wrong one.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries: inodes with open files, and open files read through a registration or
/// counted, at once; beyond, they go unrecorded (logged once). The size is part of the
/// format: a process of another version refuses a table of another size.
const CAPACITY: usize = 16384;
/// Words per entry: state, ino, registration, count, stamp (5); for a handle entry:
/// state, ino, registration, the OPEN request's unique number, file handle, the
/// registration's entry.
const WORDS: usize = 9;
const BYTES: usize = CAPACITY * WORDS * 8;
/// Entries handle entries leave free, for inodes.
const FOR_INODES: usize = CAPACITY / 4;

const FREE: u64 = 0;
const PASSTHROUGH: u64 = 1;
const CACHED: u64 = 2;
/// A passthrough entry whose registration is kept with no open file reading through it.
const KEPT: u64 = 3;
/// An open file reading through a registration (read as free by versions before it).
const HANDLE: u64 = 4;
/// In a registration's word: every open file reading through it has a handle entry.
const HANDLES: u64 = 1 << 63;
/// A handle entry's registration for an open file read through canopy.
const NONE: u64 = u64::MAX;

/// One inode's I/O mode, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Its open files read through this registration of a cache file with this stamp.
    Passthrough {
        /// The inode.
        ino: u64,
        /// The kernel's backing id.
        raw: u32,
        /// The cache file's stamp ([`canopy_cache::Stamp::to_raw`]), if known.
        stamp: Option<[u64; 5]>,
        /// Every open file reading through it has a [`Recorded::Handle`] entry.
        handles: bool,
    },
    /// No open file reads through this registration: it is kept for the next open.
    Kept {
        /// The inode.
        ino: u64,
        /// The kernel's backing id.
        raw: u32,
    },
    /// An open file reading through the registration of entry `registration`, or
    /// through canopy (`None`, counted in its inode's [`Recorded::Cached`]).
    Handle {
        /// The inode.
        ino: u64,
        /// The kernel's backing id (as in the registration's entry; 0 without one).
        raw: u32,
        /// The registration's entry.
        registration: Option<usize>,
        /// The file handle.
        fh: u64,
        /// The unique number of the OPEN request it answers (without the kernel's
        /// resend mark): a resent OPEN with it was never answered.
        unique: u64,
    },
    /// This many of its open files read through canopy and the page cache.
    Cached {
        /// The inode.
        ino: u64,
        /// Open files.
        count: u64,
        /// Each of them has a [`Recorded::Handle`] entry.
        handles: bool,
    },
}

/// The shared table.
pub struct ModeTable {
    fd: OwnedFd,
    words: *const AtomicU64,
    free: Mutex<Vec<usize>>,
    full_logged: std::sync::atomic::AtomicBool,
    handles_full_logged: std::sync::atomic::AtomicBool,
}

// SAFETY: the mapping lives as long as the table and is only accessed through atomics.
unsafe impl Send for ModeTable {}
// SAFETY: as above.
unsafe impl Sync for ModeTable {}

impl Drop for ModeTable {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this table made, which nothing uses after.
        unsafe { libc::munmap(self.words as *mut libc::c_void, BYTES) };
    }
}

impl ModeTable {
    /// A new, empty table in a new memfd.
    pub fn create() -> std::io::Result<ModeTable> {
        // SAFETY: a NUL-terminated name and flags.
        let fd = unsafe { libc::memfd_create(c"canopy-modes".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: memfd_create just returned this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), BYTES as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (table, _) = ModeTable::open(fd)?;
        Ok(table)
    }

    /// The table in `fd` (from a process that is gone), and what it records, entry by
    /// entry.
    pub fn open(fd: OwnedFd) -> std::io::Result<(ModeTable, Vec<(usize, Recorded)>)> {
        let size = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        if size != BYTES as u64 {
            return Err(std::io::Error::other(format!(
                "an I/O mode table of {size} bytes (expected {BYTES})"
            )));
        }
        // SAFETY: a shared read-write mapping of a file of exactly BYTES bytes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let table = ModeTable {
            fd,
            words: map as *const AtomicU64,
            free: Mutex::new(Vec::new()),
            full_logged: std::sync::atomic::AtomicBool::new(false),
            handles_full_logged: std::sync::atomic::AtomicBool::new(false),
        };
        let mut recorded = Vec::new();
        let mut free = Vec::new();
        for slot in (0..CAPACITY).rev() {
            match table.read(slot) {
                Some(r) => recorded.push((slot, r)),
                None => free.push(slot),
            }
        }
        *table.free.lock().expect("free lock") = free;
        recorded.sort_by_key(|(slot, _)| *slot);
        Ok((table, recorded))
    }

    /// The memfd, for the service manager's store.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn word(&self, slot: usize, i: usize) -> &AtomicU64 {
        // SAFETY: slot < CAPACITY and i < WORDS index inside the mapping.
        unsafe { &*self.words.add(slot * WORDS + i) }
    }

    fn read(&self, slot: usize) -> Option<Recorded> {
        let w = |i| self.word(slot, i).load(Ordering::Acquire);
        let ino = w(1);
        match w(0) {
            PASSTHROUGH => {
                let stamp = [w(4), w(5), w(6), w(7), w(8)];
                Some(Recorded::Passthrough {
                    ino,
                    raw: w(2) as u32,
                    stamp: (stamp != [0; 5]).then_some(stamp),
                    handles: w(2) & HANDLES != 0,
                })
            }
            KEPT => Some(Recorded::Kept {
                ino,
                raw: w(2) as u32,
            }),
            CACHED => Some(Recorded::Cached {
                ino,
                count: w(3),
                handles: w(2) & HANDLES != 0,
            }),
            HANDLE => Some(Recorded::Handle {
                ino,
                raw: w(2) as u32,
                unique: w(3),
                fh: w(4),
                registration: (w(5) != NONE).then_some(w(5) as usize),
            }),
            _ => None,
        }
    }

    /// Records `r` in a free entry; `None` when the table is full.
    pub fn add(&self, r: Recorded) -> Option<usize> {
        let slot = self.free.lock().expect("free lock").pop();
        let Some(slot) = slot else {
            if !self.full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the table of I/O modes is full ({CAPACITY} inodes and open files): files \
                     opened beyond are not recorded for a successor after a crash, which may \
                     then fail opens of them while they are open"
                );
            }
            return None;
        };
        self.set(slot, r);
        Some(slot)
    }

    /// Records handle entry `r` in a free entry; `None` when the table is full but for
    /// the entries kept for inodes ([`FOR_INODES`]): a handle not recorded only costs a
    /// successor a registration kept until unmount, or an open counted too many, while
    /// an inode not recorded may have opens fail in a successor.
    pub fn add_handle(&self, r: Recorded) -> Option<usize> {
        let slot = {
            let mut free = self.free.lock().expect("free lock");
            if free.len() <= FOR_INODES {
                None
            } else {
                free.pop()
            }
        };
        let Some(slot) = slot else {
            if !self.handles_full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "more than {} open files at once: the ones beyond are not recorded for a \
                     successor after a crash, which keeps their passthrough registrations until \
                     unmount",
                    CAPACITY - FOR_INODES
                );
            }
            return None;
        };
        self.set(slot, r);
        Some(slot)
    }

    /// Records `r` in entry `slot`.
    pub fn set(&self, slot: usize, r: Recorded) {
        let w = |i| self.word(slot, i);
        w(0).store(FREE, Ordering::Release);
        match r {
            Recorded::Passthrough {
                ino,
                raw,
                stamp,
                handles,
            } => {
                w(1).store(ino, Ordering::Relaxed);
                let bit = if handles { HANDLES } else { 0 };
                w(2).store(u64::from(raw) | bit, Ordering::Relaxed);
                for (i, v) in stamp.unwrap_or([0; 5]).into_iter().enumerate() {
                    w(4 + i).store(v, Ordering::Relaxed);
                }
                w(0).store(PASSTHROUGH, Ordering::Release);
            }
            Recorded::Kept { ino, raw } => {
                w(1).store(ino, Ordering::Relaxed);
                w(2).store(u64::from(raw), Ordering::Relaxed);
                for i in 4..WORDS {
                    w(i).store(0, Ordering::Relaxed);
                }
                w(0).store(KEPT, Ordering::Release);
            }
            Recorded::Handle {
                ino,
                raw,
                registration,
                fh,
                unique,
            } => {
                w(1).store(ino, Ordering::Relaxed);
                w(2).store(u64::from(raw), Ordering::Relaxed);
                w(3).store(unique, Ordering::Relaxed);
                w(4).store(fh, Ordering::Relaxed);
                w(5).store(registration.map_or(NONE, |r| r as u64), Ordering::Relaxed);
                w(0).store(HANDLE, Ordering::Release);
            }
            Recorded::Cached {
                ino,
                count,
                handles,
            } => {
                w(1).store(ino, Ordering::Relaxed);
                w(2).store(if handles { HANDLES } else { 0 }, Ordering::Relaxed);
                w(3).store(count, Ordering::Relaxed);
                w(0).store(CACHED, Ordering::Release);
            }
        }
    }

    /// Sets the count of the entry `slot` of open files read through canopy, the rest
    /// as recorded (one store: a process killed meanwhile leaves the entry whole).
    pub fn set_count(&self, slot: usize, count: u64) {
        self.word(slot, 3).store(count, Ordering::Release);
    }

    /// Says of the registration entry `slot` that not every open file reading through
    /// it has a handle entry (one could not be added): a successor keeps it for good.
    /// Of an entry of open files read through canopy, that its count is to be trusted
    /// rather than its handle entries.
    pub fn untrack(&self, slot: usize) {
        self.word(slot, 2).fetch_and(!HANDLES, Ordering::AcqRel);
    }

    /// Marks the passthrough entry `slot` kept (no open file reads through its
    /// registration) or not, leaving the rest of it as recorded; an entry of another
    /// kind is left alone.
    pub fn mark_kept(&self, slot: usize, kept: bool) {
        let (from, to) = if kept {
            (PASSTHROUGH, KEPT)
        } else {
            (KEPT, PASSTHROUGH)
        };
        let _ = self
            .word(slot, 0)
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Frees entry `slot`.
    pub fn remove(&self, slot: usize) {
        self.word(slot, 0).store(FREE, Ordering::Release);
        self.free.lock().expect("free lock").push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_reads_what_was_recorded() {
        let table = ModeTable::create().unwrap();
        let a = table
            .add(Recorded::Passthrough {
                ino: 7,
                raw: 3,
                stamp: Some([1, 2, 3, 4, 5]),
                handles: true,
            })
            .unwrap();
        let h = Recorded::Handle {
            ino: 7,
            raw: 3,
            registration: Some(a),
            fh: 1 << 60,
            unique: 42,
        };
        let h_slot = table.add(h).unwrap();
        let cached = |ino, count| Recorded::Cached {
            ino,
            count,
            handles: true,
        };
        let b = table.add(cached(9, 1)).unwrap();
        table.set_count(b, 2);
        table.untrack(b);
        let c = table.add(cached(11, 1)).unwrap();
        table.remove(c);
        // Kept, taken up again and kept again; a cached entry is never marked.
        let k = table
            .add(Recorded::Passthrough {
                ino: 13,
                raw: 4,
                stamp: None,
                handles: true,
            })
            .unwrap();
        // One open file of it could not be recorded.
        table.untrack(k);
        table.mark_kept(k, true);
        table.mark_kept(k, false);
        table.mark_kept(k, true);
        table.mark_kept(b, true);
        let fd = table.fd().try_clone_to_owned().unwrap();
        drop(table);
        let (again, recorded) = ModeTable::open(fd).unwrap();
        let recorded: Vec<Recorded> = recorded.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            recorded,
            vec![
                Recorded::Passthrough {
                    ino: 7,
                    raw: 3,
                    stamp: Some([1, 2, 3, 4, 5]),
                    handles: true,
                },
                h,
                Recorded::Cached {
                    ino: 9,
                    count: 2,
                    handles: false
                },
                Recorded::Kept { ino: 13, raw: 4 },
            ]
        );
        table_marks_untracked(&again, k);
        // Entries in use are not handed out again.
        let d = again.add(cached(1, 1)).unwrap();
        assert!(d != a && d != b && d != k && d != h_slot);
    }

    #[test]
    fn open_files_leave_a_quarter_of_the_table_to_inodes() {
        let table = ModeTable::create().unwrap();
        let handle = |fh| Recorded::Handle {
            ino: 1,
            raw: 0,
            registration: None,
            fh,
            unique: fh,
        };
        let recorded = (0..CAPACITY as u64)
            .map_while(|fh| table.add_handle(handle(fh)))
            .count();
        assert_eq!(recorded, CAPACITY - FOR_INODES);
        let inodes = (0..CAPACITY as u64)
            .map_while(|ino| {
                table.add(Recorded::Cached {
                    ino,
                    count: 1,
                    handles: true,
                })
            })
            .count();
        assert_eq!(inodes, FOR_INODES);
    }

    /// The kept entry `k` of `table`, taken up again, says its open files are not all
    /// recorded.
    fn table_marks_untracked(table: &ModeTable, k: usize) {
        table.mark_kept(k, false);
        assert_eq!(
            table.read(k),
            Some(Recorded::Passthrough {
                ino: 13,
                raw: 4,
                stamp: None,
                handles: false
            })
        );
    }
}
