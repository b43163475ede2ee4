//! The local backend: objects and refs as files in the store's directory.
//!
//! ```text
//! STORE/objects/ab/cdef…       one file per object, named by its SHA-256
//! STORE/refs/roots/NAME        one ref per file: the id in hex and a newline
//! STORE/refs/packages/HASH
//! STORE/logs/roots/NAME        a ref's log: one entry per line, appended
//! ```
//!
//! Objects arrive by rename from the store's `tmp/` (same filesystem), made durable
//! with one `syncfs` before the renames and one after, far cheaper than an fsync per
//! file on packages with thousands of files. Refs are replaced with fsync + rename +
//! fsync of their directory. Compare-and-swap reads, compares and writes: it is atomic
//! because one writer at a time holds the store's lock (see [`super::Access`]).

use super::backend::{ObjectBackend, RefBackend};
use super::{IoContext, StoreError};
use crate::crash;
use canopy_protocol::ObjectId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Objects under `STORE/objects/`.
pub struct LocalObjects {
    dir: PathBuf,
    store: PathBuf,
}

impl LocalObjects {
    /// The objects of the store at `store`.
    pub fn new(store: &Path) -> Self {
        LocalObjects {
            dir: store.join("objects"),
            store: store.to_path_buf(),
        }
    }

    /// Where an object's file lives (whether or not it exists).
    fn path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    fn missing(&self, id: &ObjectId) -> StoreError {
        StoreError::Missing {
            id: *id,
            store: self.store.display().to_string(),
        }
    }

    fn open(&self, id: &ObjectId) -> Result<File, StoreError> {
        let path = self.path(id);
        open_object_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.missing(id),
            _ => StoreError::Io {
                what: format!("opening object {}", path.display()),
                source: e,
            },
        })
    }
}

/// Opens an object's file for reading. Object files are regular files: anything else
/// at that name (a FIFO, whose open would wait for a writer; a symlink, say to
/// `/dev/zero`, which would never end) is damage, refused at once as invalid data.
pub fn open_object_file(path: &Path) -> io::Result<File> {
    let not_regular = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {what}, not an object file; run `canopy fsck --repair`",
                path.display()
            ),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_regular("a symlink"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_regular("not a regular file"));
    }
    Ok(file)
}

/// Flushes the whole filesystem holding `dir` (data and metadata) to disk.
pub(crate) fn syncfs(dir: &Path) -> Result<(), StoreError> {
    let d = File::open(dir).ctx(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(StoreError::Io {
            what: "syncing the store's filesystem".into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `FS_TOPDIR_FL` (`chattr +T`): not in the libc crate.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Marks the staging directory `tmp` as the top of a directory hierarchy, so that ext4
/// places each transaction's staging directory — and so the inodes of the objects staged
/// in it — in a block group with many free inodes, rather than next to its parent.
///
/// Without it, an ext4 without a journal skips, on every file it creates, each free inode
/// of the parent's group that was freed in the last minute or more (`recently_deleted`):
/// after a large removal nearby (a gc, a build's clean, a removed checkout) creating an
/// object file took ~0.5 ms of kernel time, most of an import. The mark only steers
/// where inodes go; on file systems without it the call fails and nothing changes.
pub(crate) fn spread_staging(tmp: &Path) {
    let set = || -> io::Result<()> {
        let dir = File::open(tmp)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        let mut flags: libc::c_int = 0;
        // SAFETY: both ioctls read or write one int, which `flags` is; `dir` keeps the
        // descriptor open.
        if unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & FS_TOPDIR_FL != 0 {
            return Ok(());
        }
        flags |= FS_TOPDIR_FL;
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if let Err(e) = set() {
        tracing::debug!("{}: not marked as a top directory: {e}", tmp.display());
    }
}

/// Renames the staged file `tmp` to `objects/ab/cdef…` (`hex` split after two digits,
/// relative to the open `objects` directory, which is at `dir`) unless that object is there already: then
/// nothing moves and the answer is `true`. The fan-out directory is made when missing.
///
/// One `renameat2(RENAME_NOREPLACE)` per object does what a check for the object, a
/// check for its directory and a rename did in three calls; a file system that lacks
/// the flag (`EINVAL`) gets the check and a plain rename, which is as safe while one
/// writer at a time holds the store.
fn move_in(objects: &File, dir: &Path, tmp: &Path, hex: &str) -> io::Result<bool> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let (fan, name) = hex.split_at(2);
    let dest = CString::new(format!("{fan}/{name}")).map_err(io::Error::other)?;
    let from = CString::new(tmp.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let rename = |flags: libc::c_uint| {
        // SAFETY: two NUL-terminated paths (`from` absolute, `dest` relative to the
        // descriptor `objects` keeps open).
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                objects.as_raw_fd(),
                dest.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let mut made_fan = false;
    loop {
        match rename(libc::RENAME_NOREPLACE) {
            Ok(()) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(true),
            // The fan-out directory is missing (the staged file is ours: it exists).
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_fan => {
                let fan = CString::new(fan).map_err(io::Error::other)?;
                // SAFETY: a NUL-terminated path relative to the open `objects`.
                if unsafe { libc::mkdirat(objects.as_raw_fd(), fan.as_ptr(), 0o777) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                made_fan = true;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if dir.join(fan).join(name).exists() {
                    return Ok(true);
                }
                fs::create_dir_all(dir.join(fan))?;
                rename(0)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}

impl ObjectBackend for LocalObjects {
    fn location(&self) -> String {
        self.store.display().to_string()
    }

    fn put(&self, staged: Vec<(ObjectId, PathBuf)>) -> Result<Vec<bool>, StoreError> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        // Every staged file durable before any becomes visible.
        syncfs(&self.dir)?;
        let objects = File::open(&self.dir).ctx(|| format!("opening {}", self.dir.display()))?;
        let mut existed = Vec::with_capacity(staged.len());
        for (id, tmp) in staged {
            let hex = id.to_hex();
            let was_there = move_in(&objects, &self.dir, &tmp, &hex).ctx(|| {
                format!(
                    "moving object {id} from {} into {}",
                    tmp.display(),
                    self.dir.display()
                )
            })?;
            if was_there {
                fs::remove_file(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
            } else {
                crash::point("object renamed");
            }
            existed.push(was_there);
        }
        // And the renames, before any ref can point at their objects.
        syncfs(&self.dir)?;
        Ok(existed)
    }

    fn get(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(Box::new(self.open(id)?))
    }

    fn read_at(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let file = self.open(id)?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        what: format!(
                            "reading {} bytes at {offset} of object {}",
                            buf.len(),
                            self.path(id).display()
                        ),
                        source: e,
                    });
                }
            }
        }
        Ok(done)
    }

    fn size(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let path = self.path(id);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.missing(id)),
            Err(e) => Err(StoreError::Io {
                what: format!("reading the size of object {}", path.display()),
                source: e,
            }),
        }
    }

    fn exists(&self, id: &ObjectId) -> Result<bool, StoreError> {
        Ok(self.path(id).exists())
    }

    /// Files whose names are not ids are reported as errors rather than skipped, since
    /// nothing else writes there.
    fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        let objects = &self.dir;
        let mut out = Vec::new();
        // What is not an object's name (an editor's backup, a file copied in by hand)
        // is no object: said, and left alone, so that fsck and gc still do their work.
        let stray = |path: &Path| {
            tracing::warn!(
                "{} is not an object of the store: left alone (remove it)",
                path.display()
            )
        };
        for fan in fs::read_dir(objects).ctx(|| format!("listing {}", objects.display()))? {
            let fan = fan.ctx(|| format!("listing {}", objects.display()))?.path();
            let prefix = fan.file_name().unwrap().to_string_lossy().into_owned();
            if prefix.len() != 2 || !fs::symlink_metadata(&fan).is_ok_and(|m| m.is_dir()) {
                stray(&fan);
                continue;
            }
            for f in fs::read_dir(&fan).ctx(|| format!("listing {}", fan.display()))? {
                let path = f.ctx(|| format!("listing {}", fan.display()))?.path();
                let name = format!("{prefix}{}", path.file_name().unwrap().to_string_lossy());
                match name.parse() {
                    Ok(id) => out.push(id),
                    Err(_) => stray(&path),
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let path = self.path(id);
        let len = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        Ok(len)
    }

    fn local_path(&self, id: &ObjectId) -> Option<PathBuf> {
        Some(self.path(id))
    }
}

/// Cuts a last line that a crash left without its newline, so the next entry does not
/// join it.
fn drop_torn_line(f: &File) -> io::Result<()> {
    let len = f.metadata()?.len();
    let mut last = [0u8; 1];
    if len == 0 || (f.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n') {
        return Ok(());
    }
    let mut text = Vec::new();
    (&*f).read_to_end(&mut text)?;
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    f.set_len(keep as u64)
}

/// Refs under `STORE/refs/`, logs under `STORE/logs/`.
pub struct LocalRefs {
    store: PathBuf,
}

impl LocalRefs {
    /// The refs of the store at `store`.
    pub fn new(store: &Path) -> Self {
        LocalRefs {
            store: store.to_path_buf(),
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Writes `data` to `path` atomically: temporary file beside it, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .expect("atomic writes target a file inside a directory");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fsync_dir(dir)
}

fn read_ref(path: &Path) -> Result<Option<ObjectId>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                what: format!("reading ref {}", path.display()),
                source: e,
            });
        }
    };
    let id = text.strip_suffix('\n').unwrap_or(&text).parse().map_err(
        |e: canopy_protocol::IdError| StoreError::BadRef {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    )?;
    Ok(Some(id))
}

impl RefBackend for LocalRefs {
    fn location(&self) -> String {
        self.store.display().to_string()
    }

    fn get(&self, name: &str) -> Result<Option<ObjectId>, StoreError> {
        read_ref(&self.store.join("refs").join(name))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, StoreError> {
        let dir = self.store.join("refs").join(prefix);
        let mut out = Vec::new();
        for name in self.names(prefix)? {
            // A ref removed since the listing is simply gone.
            if let Some(id) = read_ref(&dir.join(&name))? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Atomic-write temporaries (dot files) are not refs.
    fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.store.join("refs").join(prefix);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
    ) -> Result<(), StoreError> {
        let path = self.store.join("refs").join(name);
        StoreError::unless_expected(name, expected, read_ref(&path)?)?;
        match new {
            Some(id) => {
                // Namespaces other than roots and packages (a replica's) appear on use.
                let dir = path.parent().expect("refs live in a directory");
                fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
                write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)
            }
            None => {
                fs::remove_file(&path).ctx(|| format!("removing ref {}", path.display()))?;
                fsync_dir(path.parent().expect("refs live in a directory"))
            }
        }
    }

    fn append_log(&self, name: &str, entry: &str) -> Result<(), StoreError> {
        debug_assert!(!entry.contains('\n'), "log entries are single lines");
        let path = self.store.join("logs").join(name);
        let dir = path.parent().expect("logs live in a directory");
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let is_new = !path.exists();
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)
            .ctx(|| format!("opening log {}", path.display()))?;
        drop_torn_line(&f).ctx(|| format!("repairing log {}", path.display()))?;
        f.write_all(format!("{entry}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .ctx(|| format!("appending to log {}", path.display()))?;
        if is_new {
            fsync_dir(dir)?;
        }
        Ok(())
    }

    fn log_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.store.join("logs").join(prefix);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    what: format!("listing {}", dir.display()),
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry
                .ctx(|| format!("listing {}", dir.display()))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with('.') {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn read_log(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let path = self.store.join("logs").join(name);
        match fs::read_to_string(&path) {
            // A line cut short by a crash mid-append has no newline: it never happened.
            Ok(text) => Ok(text
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StoreError::Io {
                what: format!("reading log {}", path.display()),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(dir: &Path) -> io::Result<libc::c_int> {
        let d = File::open(dir)?;
        let mut flags: libc::c_int = 0;
        // SAFETY: reads one int into `flags`.
        match unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&d),
                libc::FS_IOC_GETFLAGS,
                &mut flags,
            )
        } {
            0 => Ok(flags),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// An object moves into a fan-out directory made on the way; a second copy of it
    /// moves nowhere and leaves the first as it was.
    #[test]
    fn moving_in_makes_the_fan_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        fs::create_dir(&objects).unwrap();
        let open = File::open(&objects).unwrap();
        let hex = ObjectId::of(b"one").to_hex();
        let (first, second) = (dir.path().join("1"), dir.path().join("2"));
        fs::write(&first, b"one").unwrap();
        fs::write(&second, b"two").unwrap();
        assert!(!move_in(&open, &objects, &first, &hex).unwrap());
        assert!(!first.exists());
        let dest = objects.join(&hex[..2]).join(&hex[2..]);
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        assert!(move_in(&open, &objects, &second, &hex).unwrap());
        assert_eq!(
            fs::read(&dest).unwrap(),
            b"one",
            "the object is never replaced"
        );
        assert!(second.exists(), "the caller removes the copy");
        // A staged file that is gone is an error, not an object.
        let gone = dir.path().join("gone");
        let other = ObjectId::of(b"other").to_hex();
        assert!(move_in(&open, &objects, &gone, &other).is_err());
    }

    /// The staging mark adds the top-directory flag and nothing else (where the file
    /// system keeps flags at all: ext2/3/4, btrfs, xfs, tmpfs).
    #[test]
    fn spreading_staging_sets_only_the_top_directory_flag() {
        let dir = tempfile::tempdir().unwrap();
        let before = flags(dir.path()).expect("the test directory's file system keeps inode flags");
        spread_staging(dir.path());
        let after = flags(dir.path()).unwrap();
        assert_eq!(after & !FS_TOPDIR_FL, before, "no other flag changes");
        // SAFETY: statfs fills the struct it is given; the path is NUL-terminated.
        let ext4 = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type == 0xEF53
        };
        if ext4 {
            assert_ne!(after & FS_TOPDIR_FL, 0, "ext4 keeps the mark");
        } else {
            assert!(after & FS_TOPDIR_FL != 0 || before == after);
        }
    }
}
