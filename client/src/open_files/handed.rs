//! What a process taking a live mount over is handed of the open files: the state of
//! [`Files`], written by the live process and adopted by its successor.

use super::{Backing, Files, Handle, Mode, OpenFile};
use canopy_cache::Stamp;
use canopy_protocol::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// One open file as handed to a successor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleState {
    fh: u64,
    ino: u64,
    blob: String,
    size: u64,
    /// `passthrough`, `counted`, `cached` or `direct`.
    io: String,
    /// The passthrough registration it reads through.
    backing: Option<u32>,
}

/// One passthrough registration as handed to a successor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackingState {
    ino: u64,
    raw: u32,
    stamp: Option<[u64; 5]>,
}

/// An open file a killed process before recorded (see [`Files::adopt_recorded`]), as
/// handed to a successor: it holds its registration until released.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InheritedState {
    fh: u64,
    ino: u64,
    /// Its registration (none: read through canopy, counted in its inode's
    /// [`CachedState`]).
    raw: Option<u32>,
    /// The OPEN request it was recorded for (see [`Files::opening`]).
    unique: u64,
}

/// How many open files of an inode read through canopy, as handed to a successor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedState {
    ino: u64,
    open: usize,
}

/// The open files of a mount, as handed to a successor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilesState {
    passthrough: bool,
    next_fh: u64,
    handles: Vec<HandleState>,
    backings: Vec<BackingState>,
    /// Open files of a killed process before, known from its table of modes alone
    /// (absent from versions before them, whose successor closed their registrations
    /// at once: an open of such a file then failed while it was open).
    #[serde(default)]
    inherited: Vec<InheritedState>,
    /// Registrations kept until unmount: which open files of a killed process before
    /// read through them is not known.
    #[serde(default)]
    held: Vec<u32>,
    /// The count of open files read through canopy of each inode, those of a killed
    /// process before included (absent from versions before it: counted from
    /// `handles`, which lack those never read).
    #[serde(default)]
    cached: Vec<CachedState>,
    /// Releases of handles never seen are not counted off (see
    /// [`Files::adopt_recorded`]).
    #[serde(default)]
    orphans_known: bool,
}

impl Files {
    /// The open files, for a successor (call while frozen).
    pub fn state(&self) -> FilesState {
        let handles = self.handles.lock().expect("handles lock");
        let modes = self.modes.lock().expect("modes lock");
        let (mut backings, mut cached) = (Vec::new(), Vec::new());
        for (ino, mode) in modes.iter() {
            match mode {
                Mode::Passthrough { id, stamp } if let Some(id) = id.upgrade() => {
                    backings.push(BackingState {
                        ino: *ino,
                        raw: id.raw,
                        stamp: stamp.map(|s| s.to_raw()),
                    });
                }
                Mode::Cached { open, .. } => cached.push(CachedState {
                    ino: *ino,
                    open: *open,
                }),
                Mode::Passthrough { .. } => {}
            }
        }
        let handles = handles
            .iter()
            .map(|(fh, Handle { open, .. })| HandleState {
                fh: *fh,
                ino: open.ino,
                blob: open.blob.to_string(),
                size: open.size,
                io: match (&open.backing, open.counted) {
                    (Some(_), _) => "passthrough",
                    (None, true) => "counted",
                    (None, false) if self.passthrough() => "direct",
                    (None, false) => "cached",
                }
                .to_string(),
                backing: open.backing.as_ref().map(|b| b.raw),
            })
            .collect();
        let (inherited, held) = self.inherited_state();
        FilesState {
            passthrough: self.passthrough(),
            next_fh: self.next_fh.load(Ordering::Relaxed),
            handles,
            backings,
            inherited,
            held,
            cached,
            orphans_known: self.orphans_known.load(Ordering::Relaxed),
        }
    }

    /// Takes over the open files of a predecessor on the same connection (attach the
    /// connection first). Call before the session serves requests. Returns how many
    /// open files it took over, and how many of them the kernel reads through
    /// passthrough.
    pub fn adopt(&self, state: FilesState) -> Result<(usize, usize), String> {
        let device = self
            .device
            .get()
            .cloned()
            .ok_or("no FUSE connection attached")?;
        self.passthrough
            .store(state.passthrough && self.passthrough(), Ordering::Relaxed);
        self.next_fh.store(state.next_fh.max(1), Ordering::Relaxed);
        let mut handles = self.handles.lock().expect("handles lock");
        let mut modes = self.modes.lock().expect("modes lock");
        let backings: HashMap<u32, Arc<Backing>> = state
            .backings
            .iter()
            .map(|b| (b.raw, Arc::new(Backing::known(b.raw, &device))))
            .collect();
        let count = state.handles.len();
        let through = state.handles.iter().filter(|h| h.backing.is_some()).count();
        for h in state.handles {
            let blob: ObjectId = h
                .blob
                .parse()
                .map_err(|e| format!("open file {}: object id {}: {e}", h.fh, h.blob))?;
            let counted = h.io == "counted";
            if counted {
                match modes.entry(h.ino).or_insert(Mode::Cached {
                    open: 0,
                    entry: None,
                }) {
                    Mode::Cached { open, .. } => *open += 1,
                    Mode::Passthrough { .. } => {
                        return Err(format!("inode {} is read two ways", h.ino));
                    }
                }
            }
            let backing = h.backing.and_then(|raw| backings.get(&raw).cloned());
            let open = Arc::new(OpenFile {
                ino: h.ino,
                blob,
                size: h.size,
                content: Mutex::new(None),
                backing,
                counted,
            });
            // Recorded in a table of modes once this process has one.
            handles.insert(h.fh, Handle { open, entry: None });
        }
        // The live process's counts, which know the open files never read of a killed
        // process before it.
        for c in state.cached {
            let mode = modes.entry(c.ino).or_insert(Mode::Cached {
                open: 0,
                entry: None,
            });
            if let Mode::Cached { open, .. } = mode {
                *open = (*open).max(c.open);
            }
        }
        self.orphans_known
            .store(state.orphans_known, Ordering::Relaxed);
        for b in state.backings {
            tracing::debug!(
                "took over passthrough registration {} of inode {}",
                b.raw,
                b.ino
            );
            let id = &backings[&b.raw];
            modes.insert(
                b.ino,
                Mode::Passthrough {
                    id: Arc::downgrade(id),
                    stamp: b.stamp.map(Stamp::from_raw),
                },
            );
        }
        drop(handles);
        drop(modes);
        self.adopt_inherited(state.inherited, state.held, &backings);
        // Registrations no open file holds any more close as their last holder goes.
        drop(backings);
        Ok((count, through))
    }

    /// The open files of a killed process before and the registrations kept until
    /// unmount, for a successor.
    fn inherited_state(&self) -> (Vec<InheritedState>, Vec<u32>) {
        let inherited = self
            .inherited
            .lock()
            .expect("inherited lock")
            .iter()
            .map(|(fh, ino, raw, unique)| InheritedState {
                fh,
                ino,
                raw,
                unique,
            })
            .collect();
        let held = self.orphans.lock().expect("orphans lock");
        (inherited, held.iter().map(|b| b.raw).collect())
    }

    /// Takes over the open files of a killed process before and the registrations kept
    /// until unmount that the live process hands over, of `backings`.
    fn adopt_inherited(
        &self,
        inherited: Vec<InheritedState>,
        held: Vec<u32>,
        backings: &HashMap<u32, Arc<Backing>>,
    ) {
        let mut orphans = self.orphans.lock().expect("orphans lock");
        for raw in held {
            match backings.get(&raw) {
                Some(b) => orphans.push(b.clone()),
                None => tracing::warn!("registration {raw} kept until unmount is not handed over"),
            }
        }
        drop(orphans);
        let mut opens = self.inherited.lock().expect("inherited lock");
        for i in inherited {
            match i.raw.map(|raw| backings.get(&raw)) {
                Some(Some(b)) => opens.insert(i.fh, i.ino, i.unique, Some(b.clone()), None),
                // Counted in its inode's count, handed over.
                None => opens.insert(i.fh, i.ino, i.unique, None, None),
                Some(None) => tracing::warn!(
                    "registration {:?} of handle {} is not handed over",
                    i.raw,
                    i.fh
                ),
            }
        }
    }
}
