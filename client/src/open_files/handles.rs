//! Open files recorded one by one in the shared table of modes, so that the successor
//! of a process killed without a hand-over closes each passthrough registration once
//! the kernel has released the last open file reading through it, and never before
//! (see [`crate::mode_table`] for why each entry is right whenever the process dies).
//!
//! An open answered with a registration, or counted among its inode's open files read
//! through canopy, gets a handle entry before the answer ([`Files::insert`]), freed at
//! its release before the release is answered ([`Files::remove`]). A successor takes
//! over the registrations whose open files all have entries ([`Files::adopt_recorded`]):
//! each of those entries holds its registration (or is counted among its inode's open
//! files) until the kernel releases that handle ([`Files::remove`]) or resends the OPEN
//! it was made for ([`Files::opening`]: never answered, so the kernel holds no such
//! handle); a registration no entry holds is closed at once. Opens of the same file
//! meanwhile share the registration, as the kernel requires, and hold it too.

use super::{Backing, Files, Mode, OpenFile};
use crate::fs::RESENT;
use crate::mode_table::{ModeTable, Recorded};
use canopy_cache::Stamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An open file of this process and its handle entry in the shared table, if any.
pub(super) struct Handle {
    pub(super) open: Arc<OpenFile>,
    pub(super) entry: Option<usize>,
}

/// An open file a killed predecessor recorded, reading through a registration (or
/// through canopy, counted in its inode's [`Mode::Cached`]).
struct InheritedOpen {
    ino: u64,
    backing: Option<Arc<Backing>>,
    /// Its handle entry (none yet in the new table of a process that took it over live).
    entry: Option<usize>,
    /// The OPEN request it was made for (without the resend mark).
    unique: u64,
}

/// The open files a killed predecessor recorded, until the kernel releases them.
#[derive(Default)]
pub(super) struct Inherited {
    /// By file handle.
    opens: HashMap<u64, InheritedOpen>,
    /// The file handle recorded for each OPEN request.
    by_unique: HashMap<u64, u64>,
}

/// What a process resuming a connection took over from the table of modes the process
/// before left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Inodes with open files.
    pub inodes: usize,
    /// Registrations kept for files opened again (no open file), closed.
    pub kept_closed: usize,
    /// Registrations no open file read through any more, closed.
    pub unused_closed: usize,
    /// Open files recorded reading through a registration, each holding it until the
    /// kernel releases it.
    pub open_files: usize,
    /// Open files recorded reading through canopy, each counted off its inode at its
    /// release.
    pub cached_files: usize,
    /// Registrations kept until unmount: not every open file of theirs was recorded.
    pub held: usize,
}

impl Inherited {
    /// Adds open file `fh` of inode `ino`, recorded for OPEN request `unique`, which
    /// holds `backing` (none: read through canopy), with its handle entry if it has one.
    pub(super) fn insert(
        &mut self,
        fh: u64,
        ino: u64,
        unique: u64,
        backing: Option<Arc<Backing>>,
        entry: Option<usize>,
    ) {
        if unique != 0 {
            self.by_unique.insert(unique, fh);
        }
        let open = InheritedOpen {
            ino,
            backing,
            entry,
            unique,
        };
        self.opens.insert(fh, open);
    }

    /// Each open file: file handle, inode, registration, OPEN request.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, u64, Option<u32>, u64)> + '_ {
        self.opens.iter().map(|(fh, o)| {
            let raw = o.backing.as_ref().map(|b| b.raw);
            (*fh, o.ino, raw, o.unique)
        })
    }

    /// Adds the handle entries of those that have none to `table` (see
    /// [`Files::record_in`]); counts in `recorded`, by inode, those read through canopy
    /// that have one.
    pub(super) fn record(&mut self, table: &ModeTable, recorded: &mut HashMap<u64, usize>) {
        for (fh, o) in self.opens.iter_mut() {
            if o.entry.is_none() {
                o.entry = match &o.backing {
                    Some(b) => record_through(*fh, o.unique, o.ino, b),
                    None => record_cached(table, *fh, o.unique, o.ino),
                };
            }
            if o.entry.is_some() && o.backing.is_none() {
                *recorded.entry(o.ino).or_default() += 1;
            }
        }
    }
}

/// Adds to `table` the handle entry of open file `fh`, made for OPEN request `unique`,
/// if it reads through a registration recorded there or is counted among its inode's
/// open files read through canopy.
pub(super) fn record(
    table: Option<&Arc<ModeTable>>,
    fh: u64,
    unique: u64,
    open: &OpenFile,
) -> Option<usize> {
    match &open.backing {
        Some(b) => record_through(fh, unique, open.ino, b),
        None if open.counted => record_cached(table?, fh, unique, open.ino),
        None => None,
    }
}

/// Adds the handle entry of open file `fh` of inode `ino`, made for OPEN request
/// `unique`, counted among the inode's open files read through canopy (if the table is
/// full, none: the count is then trusted, see [`Files::insert`]).
fn record_cached(table: &ModeTable, fh: u64, unique: u64, ino: u64) -> Option<usize> {
    table.add_handle(Recorded::Handle {
        ino,
        raw: 0,
        registration: None,
        fh,
        unique: unique & !RESENT,
    })
}

/// Adds the handle entry of open file `fh` of inode `ino`, made for OPEN request
/// `unique`, which reads through `backing`, if that registration is recorded in a
/// table; if the table is full, the registration is said not to have all its open files
/// recorded (a successor keeps it for good).
fn record_through(fh: u64, unique: u64, ino: u64, backing: &Backing) -> Option<usize> {
    let (table, registration) = backing.entry.get()?;
    let slot = table.add_handle(Recorded::Handle {
        ino,
        raw: backing.raw,
        registration: Some(*registration),
        fh,
        unique: unique & !RESENT,
    });
    if slot.is_none() {
        table.untrack(*registration);
    }
    slot
}

impl Files {
    /// Takes over the modes a predecessor killed without a hand-over recorded in
    /// `table` (its own, from the service manager's store), and records in it from now
    /// on (attach the connection first). `handles_kept`: every process that served the
    /// connection since the entries were made kept handle entries (an older one between
    /// did not, so none is trusted).
    ///
    /// Registrations kept with no open file, or with open files all recorded and none
    /// left, are closed; those with recorded open files are held by them until released;
    /// others are kept until unmount (which open files read through them is not known).
    pub fn adopt_recorded(
        &self,
        table: Arc<ModeTable>,
        recorded: Vec<(usize, Recorded)>,
        handles_kept: bool,
    ) -> Adopted {
        let device = self.device.get().cloned();
        let mut modes = self.modes.lock().expect("modes lock");
        let mut orphans = self.orphans.lock().expect("orphans lock");
        let mut inherited = self.inherited.lock().expect("inherited lock");
        let mut adopted = Adopted::default();
        // Registrations whose open files all have entries, by entry.
        let mut counted: HashMap<usize, (u64, Option<Stamp>, Arc<Backing>)> = HashMap::new();
        // Inodes whose open files read through canopy all have entries: their entry,
        // and how many of those.
        let mut tracked: HashMap<u64, (usize, usize)> = HashMap::new();
        let mut opens = Vec::new();
        for (slot, r) in recorded {
            match r {
                Recorded::Kept { ino, raw } => {
                    let Some(device) = &device else { continue };
                    // Dropped at once: its entry is freed, and the registration closed
                    // (nothing the kernel holds open reads through it, and no open was
                    // answered with it since it was marked).
                    tracing::debug!(
                        "inode {ino}: passthrough registration {raw} was kept by the process \
                         before, with no open file"
                    );
                    let backing = Backing::known(raw, device);
                    let _ = backing.entry.set((table.clone(), slot));
                    drop(backing);
                    adopted.kept_closed += 1;
                }
                Recorded::Passthrough {
                    ino,
                    raw,
                    stamp,
                    handles,
                } => {
                    adopted.inodes += 1;
                    let Some(device) = &device else { continue };
                    let backing = Arc::new(Backing::known(raw, device));
                    let _ = backing.entry.set((table.clone(), slot));
                    let stamp = stamp.map(Stamp::from_raw);
                    if handles && handles_kept {
                        counted.insert(slot, (ino, stamp, backing));
                        continue;
                    }
                    if handles {
                        // Written again by a version that did not keep handle entries.
                        table.untrack(slot);
                    }
                    tracing::debug!("took over passthrough registration {raw} of inode {ino}");
                    let id = Arc::downgrade(&backing);
                    modes.insert(ino, Mode::Passthrough { id, stamp });
                    orphans.push(backing);
                    adopted.held += 1;
                }
                Recorded::Handle { .. } => opens.push((slot, r)),
                Recorded::Cached {
                    ino,
                    count,
                    handles,
                } => {
                    adopted.inodes += 1;
                    if handles && handles_kept {
                        tracked.insert(ino, (slot, 0));
                    } else if handles {
                        table.untrack(slot);
                    }
                    modes.insert(
                        ino,
                        Mode::Cached {
                            open: count as usize,
                            entry: Some(slot),
                        },
                    );
                }
            }
        }
        for (slot, r) in opens {
            let Recorded::Handle {
                ino,
                raw,
                registration,
                fh,
                unique,
            } = r
            else {
                continue;
            };
            match registration.map(|r| counted.get(&r)) {
                Some(Some((i, _, backing))) if *i == ino && backing.raw == raw => {
                    let backing = Some(backing.clone());
                    inherited.insert(fh, ino, unique, backing, Some(slot));
                    adopted.open_files += 1;
                }
                None if handles_kept && matches!(modes.get(&ino), Some(Mode::Cached { .. })) => {
                    inherited.insert(fh, ino, unique, None, Some(slot));
                    adopted.cached_files += 1;
                    if let Some((_, n)) = tracked.get_mut(&ino) {
                        *n += 1;
                    }
                }
                // Of a registration kept for good, closed, or never recorded; or of
                // counts not trusted.
                _ => table.remove(slot),
            }
        }
        // Counted by their entries where each has one: the count may hold one more
        // (killed between counting an open and adding its entry: never answered).
        for (ino, (slot, n)) in tracked {
            if n == 0 {
                table.remove(slot);
                modes.remove(&ino);
                continue;
            }
            table.set_count(slot, n as u64);
            if let Some(Mode::Cached { open, .. }) = modes.get_mut(&ino) {
                *open = n;
            }
        }
        // Releases of handles without entries are not counted off (see
        // [`crate::mode_table`]), when every open file has one.
        self.orphans_known.store(handles_kept, Ordering::Relaxed);
        for (ino, stamp, backing) in counted.into_values() {
            let holders = Arc::strong_count(&backing) - 1;
            if holders == 0 {
                tracing::debug!(
                    "inode {ino}: no open file reads through passthrough registration {} of \
                     the process before",
                    backing.raw
                );
                adopted.unused_closed += 1;
                continue;
            }
            tracing::debug!(
                "took over passthrough registration {} of inode {ino}, until the {holders} \
                 open files recorded reading through it are released",
                backing.raw
            );
            let id = Arc::downgrade(&backing);
            modes.insert(ino, Mode::Passthrough { id, stamp });
        }
        let _ = self.table.set(table);
        adopted
    }

    /// An OPEN request `unique` (a [`fuser::Request::unique`]) is being answered: if
    /// the kernel resent it, the open file a killed predecessor recorded for it never
    /// reached the kernel, and stops holding its registration.
    pub(crate) fn opening(&self, unique: u64) {
        if unique & RESENT == 0 {
            return;
        }
        let open = {
            let mut inherited = self.inherited.lock().expect("inherited lock");
            let Some(fh) = inherited.by_unique.remove(&(unique & !RESENT)) else {
                return;
            };
            let Some(open) = inherited.opens.remove(&fh) else {
                return;
            };
            tracing::debug!(
                "handle {fh}: recorded by the process before for an open it never answered"
            );
            open
        };
        self.free_inherited(open);
    }

    /// The kernel released handle `fh`: if a killed predecessor recorded it, it stops
    /// holding its registration.
    pub(super) fn release_inherited(&self, fh: u64) {
        let open = {
            let mut inherited = self.inherited.lock().expect("inherited lock");
            if inherited.opens.is_empty() {
                return;
            }
            let Some(open) = inherited.opens.remove(&fh) else {
                return;
            };
            inherited.by_unique.remove(&open.unique);
            tracing::debug!("handle {fh}: released, recorded by the process before");
            open
        };
        self.free_inherited(open);
    }

    /// Frees the entry of `open`, then lets go of its registration (closed if nothing
    /// else holds it) or counts it off its inode's open files read through canopy.
    fn free_inherited(&self, open: InheritedOpen) {
        if let (Some(table), Some(slot)) = (self.table.get(), open.entry) {
            table.remove(slot);
        }
        match open.backing {
            Some(backing) => drop(backing),
            None => self.count_off(open.ino),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Local;
    use canopy_protocol::ObjectId;
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    /// Files on a "connection" of /dev/null (closing a registration is refused there,
    /// and only logged): what is counted and freed is tested here; the kernel's side
    /// is in tests/handover.rs.
    fn files() -> Files {
        let files = Files::new(true, Arc::new(Local::new(|_| None)));
        files.attach(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        files
    }

    fn left(table: &ModeTable) -> Vec<Recorded> {
        let fd = table.fd().try_clone_to_owned().unwrap();
        let (_, recorded) = ModeTable::open(fd).unwrap();
        recorded.into_iter().map(|(_, r)| r).collect()
    }

    fn registration(ino: u64, raw: u32, handles: bool) -> Recorded {
        Recorded::Passthrough {
            ino,
            raw,
            stamp: None,
            handles,
        }
    }

    /// A table as a process killed at various points leaves it: registration 5 (inode
    /// 9) with one open file released later, one whose OPEN (unique 40) the kernel
    /// resends, never answered; registration 6 (inode 10) with no open file left;
    /// registration 7 (inode 11) not all of whose open files were recorded.
    fn killed() -> (Arc<ModeTable>, Vec<(usize, Recorded)>) {
        let table = ModeTable::create().unwrap();
        let r5 = table.add(registration(9, 5, true)).unwrap();
        let handle = |fh, unique, registration, ino, raw| Recorded::Handle {
            ino,
            raw,
            registration: Some(registration),
            fh,
            unique,
        };
        table.add(handle(100, 30, r5, 9, 5)).unwrap();
        table.add(handle(101, 40, r5, 9, 5)).unwrap();
        table.add(registration(10, 6, true)).unwrap();
        let r7 = table.add(registration(11, 7, true)).unwrap();
        table.add(handle(102, 50, r7, 11, 7)).unwrap();
        table.untrack(r7);
        let fd = table.fd().try_clone_to_owned().unwrap();
        let (table, recorded) = ModeTable::open(fd).unwrap();
        (Arc::new(table), recorded)
    }

    #[test]
    fn a_successor_holds_a_registration_until_its_recorded_open_files_are_gone() {
        let (table, recorded) = killed();
        let files = files();
        let adopted = files.adopt_recorded(table.clone(), recorded, true);
        let expected = Adopted {
            inodes: 3,
            kept_closed: 0,
            unused_closed: 1,
            open_files: 2,
            cached_files: 0,
            held: 1,
        };
        assert_eq!(adopted, expected);
        // Registration 6 closed (its entry freed), 7 kept for good (its open file's
        // entry freed: not counted).
        let entries = left(&table);
        assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
        assert!(!entries.contains(&registration(10, 6, true)), "{entries:?}");
        assert!(entries.contains(&registration(11, 7, false)), "{entries:?}");
        assert_eq!(entries.len(), 4, "{entries:?}");
        // A new open of inode 9 shares registration 5 and is recorded too.
        let Io::Direct(shared) = files.io_for(9, None) else {
            panic!("inode 9 is bound to registration 5")
        };
        assert_eq!(shared.raw, 5);
        let open = OpenFile {
            ino: 9,
            blob: ObjectId::of(b"x"),
            size: 1,
            content: Mutex::new(None),
            backing: Some(shared),
            counted: false,
        };
        files.insert(7000, 60, open);
        assert_eq!(left(&table).len(), 5);
        // The resent OPEN 40 and the release of handle 100: both recorded files gone,
        // the new open holds the registration alone.
        files.opening(40 | RESENT);
        files.opening(30);
        files.remove(100, 9);
        let entries = left(&table);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
        // Its release: closed and freed.
        drop(files.remove(7000, 9));
        let entries = left(&table);
        assert_eq!(entries, [registration(11, 7, false)]);
        // Handles never recorded, or released twice, change nothing.
        files.remove(100, 9);
        files.remove(102, 11);
        assert_eq!(left(&table), [registration(11, 7, false)]);
    }

    #[test]
    fn after_a_process_that_kept_no_handle_entries_every_registration_is_kept() {
        let (table, recorded) = killed();
        let files = files();
        let adopted = files.adopt_recorded(table.clone(), recorded, false);
        assert_eq!(
            (adopted.held, adopted.open_files, adopted.unused_closed),
            (3, 0, 0)
        );
        // Said so in the table, for the successors after; stale handle entries freed.
        let entries = left(&table);
        assert_eq!(
            entries,
            [
                registration(9, 5, false),
                registration(10, 6, false),
                registration(11, 7, false)
            ]
        );
    }

    #[test]
    fn open_files_of_a_killed_process_are_handed_over_live_and_recorded_anew() {
        let (table, recorded) = killed();
        let live = files();
        live.adopt_recorded(table, recorded, true);
        live.opening(40 | RESENT);
        let next = files();
        next.adopt(live.state()).unwrap();
        drop(live);
        let fresh = Arc::new(ModeTable::create().unwrap());
        next.record_in(fresh.clone());
        let entries = left(&fresh);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
        assert!(entries.contains(&registration(11, 7, false)), "{entries:?}");
        assert!(entries.iter().any(|r| matches!(
            r,
            Recorded::Handle {
                ino: 9,
                raw: 5,
                fh: 100,
                unique: 30,
                ..
            }
        )));
        // Released: registration 5 closed, 7 kept.
        next.remove(100, 9);
        assert_eq!(left(&fresh), [registration(11, 7, false)]);
    }

    /// Inode 20's count of open files read through canopy.
    fn cached(files: &Files) -> usize {
        match files.modes.lock().unwrap().get(&20) {
            Some(Mode::Cached { open, .. }) => *open,
            _ => 0,
        }
    }

    #[test]
    fn open_files_read_through_canopy_are_counted_off_once_each() {
        // Inode 20: open files 200 (answered) and 201 (its OPEN, 70, resent), the
        // release of 202 handled but not answered (entry freed, count lowered), and an
        // open counted whose entry was not added yet (killed, so never answered): a
        // count of 3, each of its files with an entry (`handles`) or not.
        let adopt = |handles_kept, handles| {
            let made = ModeTable::create().unwrap();
            let count = Recorded::Cached {
                ino: 20,
                count: 3,
                handles,
            };
            made.add(count).unwrap();
            for (fh, unique) in [(200, 60), (201, 70)] {
                let h = Recorded::Handle {
                    ino: 20,
                    raw: 0,
                    registration: None,
                    fh,
                    unique,
                };
                made.add(h).unwrap();
            }
            let fd = made.fd().try_clone_to_owned().unwrap();
            let (table, recorded) = ModeTable::open(fd).unwrap();
            let files = files();
            let a = files.adopt_recorded(Arc::new(table), recorded, handles_kept);
            (files, a)
        };
        // Counted by its entries.
        let (files, adopted) = adopt(true, true);
        assert_eq!((adopted.inodes, adopted.cached_files), (1, 2));
        assert_eq!(cached(&files), 2);
        // 202's release, resent, counts nothing off (before, it was counted off again:
        // with 200 open, a passthrough open of the inode then failed).
        files.remove(202, 20);
        assert_eq!(cached(&files), 2);
        files.opening(70 | RESENT);
        assert_eq!(cached(&files), 1);
        // Read, then released: counted off once.
        let blob = ObjectId::of(b"x");
        files.get_or_insert(200, || Some(OpenFile::orphan(20, blob, 1)));
        files.remove(200, 20);
        assert_eq!(cached(&files), 0);
        files.remove(200, 20);
        assert_eq!(cached(&files), 0);
        // Not each file with an entry: the count is kept, and still only the entries
        // count off (one too many then stays: never too few).
        let (files, _) = adopt(true, false);
        assert_eq!(cached(&files), 3);
        files.remove(202, 20);
        files.remove(200, 20);
        assert_eq!(cached(&files), 2);
        // After a process that kept no entries, any release of a handle never seen is
        // counted off, as before.
        let (files, adopted) = adopt(false, true);
        assert_eq!(adopted.cached_files, 0);
        files.remove(202, 20);
        assert_eq!(cached(&files), 2);
    }

    #[test]
    fn a_new_table_trusts_the_entries_of_files_read_through_canopy_if_each_has_one() {
        let files = files();
        let counted = |ino| OpenFile {
            ino,
            blob: ObjectId::of(b"x"),
            size: 1,
            content: Mutex::new(None),
            backing: None,
            counted: true,
        };
        // Inode 20: two open files, one of them unknown (a killed predecessor's, never
        // read); inode 21: one, known.
        for ino in [20, 20, 21] {
            assert!(matches!(files.io_for(ino, None), Io::Counted));
        }
        files.insert(300, 2, counted(20));
        files.insert(301, 4, counted(21));
        let table = Arc::new(ModeTable::create().unwrap());
        files.record_in(table.clone());
        let entries = left(&table);
        let count = |ino, count, handles| Recorded::Cached {
            ino,
            count,
            handles,
        };
        assert!(entries.contains(&count(20, 2, false)), "{entries:?}");
        assert!(entries.contains(&count(21, 1, true)), "{entries:?}");
        assert_eq!(entries.len(), 4, "{entries:?}");
    }

    use super::super::Io;
}
