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

/// The open files of a mount, as handed to a successor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilesState {
    passthrough: bool,
    next_fh: u64,
    handles: Vec<HandleState>,
    backings: Vec<BackingState>,
}

impl Files {
    /// The open files, for a successor (call while frozen).
    pub fn state(&self) -> FilesState {
        let handles = self.handles.lock().expect("handles lock");
        let modes = self.modes.lock().expect("modes lock");
        let mut backings = Vec::new();
        for (ino, mode) in modes.iter() {
            if let Mode::Passthrough { id, stamp } = mode
                && let Some(id) = id.upgrade()
            {
                backings.push(BackingState {
                    ino: *ino,
                    raw: id.raw,
                    stamp: stamp.map(|s| s.to_raw()),
                });
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
        FilesState {
            passthrough: self.passthrough(),
            next_fh: self.next_fh.load(Ordering::Relaxed),
            handles,
            backings,
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
        // Registrations no open file holds any more close as their last holder goes.
        drop(backings);
        Ok((count, through))
    }
}
