//! Passthrough registrations kept past the last close of their file, so that opening
//! the file again costs the kernel's OPEN round trip and one `fstat`, not opening and
//! checking its cache file, registering it with the kernel and closing both again
//! (`openat`, `statx`, two `ioctl`s and `close` per open: what a program that opens
//! the same large files again and again, such as a loader or an interpreter started
//! over and over, pays on every start).
//!
//! A kept registration holds its verified cache file open and pinned in the cache,
//! as the open file that registered it did: the cache never evicts a file the kernel
//! may still read through, and it counts its bytes. The pin moves with the file, from
//! the last handle released to the kept set and to the next open. The set is bounded
//! ([`KEPT_FILES`] files, a [`KEPT_SHARE`] of the cache's bound); the least recently
//! kept go first, their registrations closed before their pins are dropped.
//!
//! A kept file is reused only if its cache file still has the stamp it was verified
//! with (checked on the file canopy holds, so it is the very file the kernel reads);
//! else it is dropped and the open checks the cache again, as a first open does.
//! Registrations no open file reads through are not handed to a successor: the live
//! process closes them itself before it hands its open files over
//! ([`Files::close_kept`]), so each is closed once, by the process that made it, even if
//! the hand-over then fails and this process goes on. A process that ends without a
//! hand-over (killed, or stopped with its connection left in a service manager's store)
//! cannot close them: each is marked kept in the shared table of modes while it is in
//! the set and no open file holds it, and the successor closes those marked
//! ([`Files::adopt_recorded`]). The mark changes under the set's lock (an open taking a
//! registration out of the set takes the mark off before it is answered with it) and,
//! when a file is kept, under the modes lock too (where opens find registrations to
//! share).

use super::{Backing, Files, Mode, OpenFile};
use crate::objects::{Objects, Opened};
use canopy_protocol::ObjectId;
use lru::LruCache;
use std::sync::Arc;

/// At most this many registrations are kept: each holds one descriptor in canopy and
/// one file in the kernel.
pub(crate) const KEPT_FILES: usize = 256;
/// Kept files pin at most this fraction (1/8) of the cache's bound, so that they never
/// keep the cache from making room for what is read next.
const KEPT_SHARE: u64 = 8;

/// A registration no open file reads through, with the cache file it registered.
struct KeptFile {
    backing: Arc<Backing>,
    content: Arc<Opened>,
    blob: ObjectId,
    size: u64,
}

/// The kept registrations, least recently kept first out.
pub(crate) struct Kept {
    files: LruCache<u64, KeptFile>,
    bytes: u64,
    /// Bytes they may pin (`None`: sources without a bound, such as a local store).
    max_bytes: Option<u64>,
}

impl Kept {
    /// None kept yet, for a source with `bound` (see [`Objects::bound`]).
    pub(crate) fn new(bound: Option<u64>) -> Kept {
        Kept {
            files: LruCache::unbounded(),
            bytes: 0,
            max_bytes: bound.map(|b| b / KEPT_SHARE),
        }
    }

    /// Takes `ino`'s file out, if kept, marked as read through again.
    fn take(&mut self, ino: u64) -> Option<KeptFile> {
        let kept = self.files.pop(&ino)?;
        kept.backing.mark_kept(false);
        self.bytes -= kept.size;
        Some(kept)
    }

    /// Marks every kept registration kept in the shared table (once they are recorded
    /// there).
    pub(super) fn mark_all(&self) {
        for (_, kept) in self.files.iter() {
            kept.backing.mark_kept(true);
        }
    }

    /// Whether one more file of `size` bytes fits, once the oldest are pushed out.
    fn fits(&self, size: u64) -> bool {
        self.max_bytes.is_none_or(|max| size <= max)
    }

    /// Keeps `file` for `ino`, which no open file holds, marked so; returns those pushed
    /// out to stay within the bounds.
    fn push(&mut self, ino: u64, file: KeptFile) -> Vec<KeptFile> {
        file.backing.mark_kept(true);
        self.bytes += file.size;
        let mut out = Vec::new();
        if let Some(old) = self.files.put(ino, file) {
            self.bytes -= old.size;
            out.push(old);
        }
        while self.files.len() > KEPT_FILES || self.max_bytes.is_some_and(|m| self.bytes > m) {
            let Some((_, old)) = self.files.pop_lru() else {
                break;
            };
            self.bytes -= old.size;
            out.push(old);
        }
        out
    }
}

/// Closes the registrations of `files` (where no open file still reads through them),
/// then ends their pins, so that the cache never evicts a file the kernel still holds.
fn drop_all(files: Vec<KeptFile>, objects: &dyn Objects) {
    for kept in files {
        let KeptFile { backing, blob, .. } = kept;
        drop(backing);
        objects.release(&blob);
    }
}

impl Files {
    /// The registration kept for inode `ino`, of object `blob`, if its cache file is
    /// still as verified: taken out of the kept set with its content, whose pin the
    /// caller's open file now holds. A kept file found changed is dropped (see
    /// [`drop_all`]).
    pub(crate) fn reuse_kept(
        &self,
        ino: u64,
        blob: &ObjectId,
    ) -> Option<(Arc<Backing>, Arc<Opened>)> {
        let kept = self.kept.lock().expect("kept lock").take(ino)?;
        // An inode stands for one file identity, content included; checked all the
        // same, as it costs nothing and a mismatch would serve another file's bytes.
        if kept.blob != *blob {
            tracing::warn!(
                "inode {ino}: kept passthrough registration {} is of object {}, not {blob}; \
                 closed",
                kept.backing.raw,
                kept.blob
            );
            drop_all(vec![kept], &*self.objects);
            return None;
        }
        if kept.content.unchanged() {
            tracing::debug!(
                "inode {ino}: reusing kept passthrough registration {}",
                kept.backing.raw
            );
            return Some((kept.backing, kept.content));
        }
        tracing::warn!(
            "inode {ino}: its cache file changed since it was verified; its kept passthrough \
             registration {} is closed and the file checked again",
            kept.backing.raw
        );
        drop_all(vec![kept], &*self.objects);
        None
    }

    /// Ends the open file `open`, released by the kernel, whose content (pinned once)
    /// is `content`: its registration is kept if the open read through it, no other
    /// open file does, and `content` is the very file it registered; else the pin ends.
    /// Either way, files pushed out of the kept set are dropped.
    pub(crate) fn release_content(&self, open: &OpenFile, content: Arc<Opened>) {
        let mut content = Some(content);
        let out = self.keep(open, &mut content);
        if let Some(content) = content {
            drop(content);
            self.objects.release(&open.blob);
        }
        drop_all(out, &*self.objects);
    }

    /// Keeps the registration `open` read through, with `content` (taken), if it may
    /// be kept (see [`Files::release_content`]); returns the files pushed out.
    fn keep(&self, open: &OpenFile, content: &mut Option<Arc<Opened>>) -> Vec<KeptFile> {
        let Some(backing) = open.backing.as_ref() else {
            return Vec::new();
        };
        // Under the modes lock, so that no open takes the registration up meanwhile
        // (opens find registrations there) and its mark is right.
        let modes = self.modes.lock().expect("modes lock");
        let Some(Mode::Passthrough { stamp, .. }) = modes.get(&open.ino) else {
            return Vec::new();
        };
        let mut kept = self.kept.lock().expect("kept lock");
        let holders = Arc::strong_count(backing);
        // Kept already (an open shared it from the modes while it was being kept):
        // held by the set and this open file alone, it is marked kept again.
        if let Some(k) = kept.files.peek(&open.ino)
            && Arc::ptr_eq(&k.backing, backing)
        {
            if holders == 2 {
                backing.mark_kept(true);
            }
            return Vec::new();
        }
        // The open file itself and nothing else (another open file, a predecessor's
        // orphan) holds the registration; and the content is the registered file.
        let registered = content.as_ref().is_some_and(|c| c.stamp == *stamp);
        if holders != 1 || !registered || !kept.fits(open.size) {
            return Vec::new();
        }
        let Some(content) = content.take() else {
            return Vec::new();
        };
        let file = KeptFile {
            backing: backing.clone(),
            content,
            blob: open.blob,
            size: open.size,
        };
        let out = kept.push(open.ino, file);
        tracing::debug!(
            "inode {}: keeping passthrough registration {}",
            open.ino,
            backing.raw
        );
        out
    }

    /// Closes the registrations kept for inodes `inos` and ends their pins: files a
    /// switch to a new version replaced, opened again only by a program still in the
    /// old version (which then registers them anew).
    pub fn drop_kept(&self, inos: &[u64]) {
        let dropped: Vec<KeptFile> = {
            let mut kept = self.kept.lock().expect("kept lock");
            inos.iter().filter_map(|ino| kept.take(*ino)).collect()
        };
        if !dropped.is_empty() {
            tracing::debug!(
                "a new version replaced the files of {} kept passthrough registrations: closed",
                dropped.len()
            );
        }
        drop_all(dropped, &*self.objects);
    }

    /// Closes every kept registration and ends its pin: before the open files are
    /// handed to a successor (which is told only of registrations open files read
    /// through), and when the mount ends.
    pub fn close_kept(&self) {
        let all: Vec<KeptFile> = {
            let mut kept = self.kept.lock().expect("kept lock");
            kept.bytes = 0;
            std::iter::from_fn(|| kept.files.pop_lru().map(|(_, f)| f)).collect()
        };
        if !all.is_empty() {
            tracing::debug!("closing {} kept passthrough registrations", all.len());
        }
        drop_all(all, &*self.objects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    /// A kept file of `size` bytes. Its registration names no connection (a descriptor
    /// of /dev/null, whose close is refused and only logged): the set's bounds are what
    /// is tested here; registrations on a real connection are in tests/handover.rs.
    fn file(device: &Arc<OwnedFd>, raw: u32, size: u64) -> KeptFile {
        KeptFile {
            backing: Arc::new(Backing::known(raw, device)),
            content: Arc::new(Opened {
                file: std::fs::File::open("/dev/null").unwrap(),
                stamp: None,
            }),
            blob: ObjectId::of(&raw.to_le_bytes()),
            size,
        }
    }

    fn device() -> Arc<OwnedFd> {
        Arc::new(std::fs::File::open("/dev/null").unwrap().into())
    }

    #[test]
    fn at_most_kept_files_are_kept_the_least_recently_kept_going_first() {
        let device = device();
        let mut kept = Kept::new(None);
        let mut out = Vec::new();
        for ino in 0..KEPT_FILES as u64 + 3 {
            out.extend(kept.push(ino, file(&device, ino as u32, 1 << 30)));
        }
        assert_eq!(kept.files.len(), KEPT_FILES);
        let gone: Vec<u32> = out.iter().map(|f| f.backing.raw).collect();
        assert_eq!(gone, [0, 1, 2]);
        assert!(kept.take(2).is_none() && kept.take(3).is_some());
        assert_eq!(kept.bytes, (KEPT_FILES as u64 - 1) << 30);
    }

    #[test]
    fn a_kept_registration_is_marked_kept_in_the_shared_table_while_in_the_set() {
        use crate::mode_table::{ModeTable, Recorded};
        let device = device();
        let table = Arc::new(ModeTable::create().unwrap());
        let recorded = || {
            let fd = table.fd().try_clone_to_owned().unwrap();
            let (_, recorded) = ModeTable::open(fd).unwrap();
            recorded.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        };
        let f = file(&device, 5, 1);
        f.backing.record(&table, 9, None);
        let mut kept = Kept::new(None);
        assert!(kept.push(9, f).is_empty());
        assert_eq!(recorded(), [Recorded::Kept { ino: 9, raw: 5 }]);
        let f = kept.take(9).unwrap();
        let open = Recorded::Passthrough {
            ino: 9,
            raw: 5,
            stamp: None,
            handles: true,
        };
        assert_eq!(recorded(), [open]);
        assert!(kept.push(9, f).is_empty());
        // One recorded only once kept (the table made after): marked by `mark_all`.
        assert!(kept.push(10, file(&device, 6, 1)).is_empty());
        kept.files
            .peek(&10)
            .unwrap()
            .backing
            .record(&table, 10, None);
        kept.mark_all();
        let both = [
            Recorded::Kept { ino: 9, raw: 5 },
            Recorded::Kept { ino: 10, raw: 6 },
        ];
        assert_eq!(recorded(), both);
        // Closed (here refused: no connection) and freed.
        drop(kept);
        assert_eq!(recorded(), []);
    }

    #[test]
    fn kept_files_pin_at_most_an_eighth_of_the_cache() {
        let device = device();
        // A cache of 80 bytes: 10 may stay pinned between opens.
        let mut kept = Kept::new(Some(80));
        assert!(kept.fits(10) && !kept.fits(11));
        assert!(kept.push(1, file(&device, 1, 4)).is_empty());
        assert!(kept.push(2, file(&device, 2, 4)).is_empty());
        let out = kept.push(3, file(&device, 3, 4));
        assert_eq!(out.iter().map(|f| f.backing.raw).collect::<Vec<_>>(), [1]);
        assert_eq!((kept.files.len(), kept.bytes), (2, 8));
        // Taken back by an open: no longer counted.
        assert!(kept.take(2).is_some());
        assert_eq!(kept.bytes, 4);
    }
}
