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
mod tests;
