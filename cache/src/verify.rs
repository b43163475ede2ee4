//! What makes a cache file usable: its content hashed to the object's id, and the
//! [`Stamp`] it had then, so an open whose file still has that stamp needs no hashing.

use canopy_protocol::{Hasher, ObjectId};
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What a cache file was when its content was last verified: any write, truncation,
/// replacement or attribute change gives another stamp (the change time moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    size: u64,
}

impl Stamp {
    /// The stamp of an open file now.
    pub fn of(file: &fs::File) -> io::Result<Stamp> {
        Ok(Stamp::from(&file.metadata()?))
    }

    /// The stamp as plain numbers, for a process that takes a mount over (it compares
    /// stamps it is handed with those of files it opens).
    pub fn to_raw(&self) -> [u64; 5] {
        [
            self.dev,
            self.ino,
            self.ctime.0 as u64,
            self.ctime.1 as u64,
            self.size,
        ]
    }

    /// The stamp [`Stamp::to_raw`] gave.
    pub fn from_raw(raw: [u64; 5]) -> Stamp {
        Stamp {
            dev: raw[0],
            ino: raw[1],
            ctime: (raw[2] as i64, raw[3] as i64),
            size: raw[4],
        }
    }
}

impl From<&fs::Metadata> for Stamp {
    fn from(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            size: m.size(),
        }
    }
}

/// An open cache file whose content was the object's at its [`Stamp`].
pub struct Verified {
    /// The file, read-only.
    pub file: fs::File,
    /// The file's stamp when its content was last verified.
    pub stamp: Stamp,
}

/// Opens the cache file at `path` and checks it is object `id`: at once if its stamp is
/// `known`, by hashing its content otherwise. `Err` says why it cannot be used.
pub(crate) fn verify(path: &Path, id: &ObjectId, known: Option<Stamp>) -> Result<Verified, String> {
    // Never through a link, and never waiting: a link or a FIFO planted at an object's
    // name (by whoever can write the cache directory) would hand out a file out of the
    // cache's sight, or block the open until a writer came. (O_NONBLOCK does nothing to
    // a regular file's reads.)
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot be opened ({e})"))?;
    let m = file
        .metadata()
        .map_err(|e| format!("cannot be examined ({e})"))?;
    if !m.is_file() {
        return Err("is not a regular file".into());
    }
    let stamp = Stamp::from(&m);
    if known == Some(stamp) {
        return Ok(Verified { file, stamp });
    }
    let mut hasher = Hasher::new();
    io::copy(&mut (&file).take(stamp.size), &mut hasher)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let actual = hasher.finish();
    if actual != *id {
        return Err(format!("holds other bytes (they hash to {actual})"));
    }
    // Changed while being hashed: what was hashed may not be what is there.
    if Stamp::of(&file).ok() != Some(stamp) {
        return Err("changed while it was being verified".into());
    }
    file.rewind().map_err(|e| format!("cannot be read ({e})"))?;
    Ok(Verified { file, stamp })
}
