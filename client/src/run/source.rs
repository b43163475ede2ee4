//! Where a run's root comes from: a [`View`] (one pinned commit of a root in the local
//! store or on a server), served by canopy's FUSE filesystem inside the run's own
//! namespaces, or a directory of the host (a checkout, a canopy mount). Both answer the
//! few questions a run asks of its root before it starts: does a path exist, what are
//! its mode and owners, what does a small file (`/etc/passwd`) say.

use crate::objects::Objects;
use crate::view::{Attr, COMMIT_XATTR, Kind, ROOT_INO, View};
use canopy_protocol::{CommitId, ImageConfig};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A path's kind, mode and owners, as the run will see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// A directory.
    pub dir: bool,
    /// A symlink.
    pub symlink: bool,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The root of a run.
pub enum Source {
    /// One version of a root, shown by a view whose only root is it.
    View {
        /// The view (one root, pinned).
        view: Arc<View>,
        /// Where its file contents come from.
        objects: Arc<dyn Objects>,
        /// The commit shown.
        commit: CommitId,
        /// The image configuration its commit records, if it came from an image.
        image: Option<Box<ImageConfig>>,
    },
    /// A directory of the host.
    Dir {
        /// The directory.
        path: PathBuf,
        /// The image configuration of the commit it shows, when known.
        image: Option<Box<ImageConfig>>,
    },
}

impl Source {
    /// A directory source, pinned: when `dir` is the `NAME` of a canopy mount that can
    /// follow new versions, the `NAME@COMMIT` beside it (its current commit), so the
    /// run's root does not change under it. Returns the directory and the commit.
    pub fn pinned_dir(dir: &Path) -> (PathBuf, Option<CommitId>) {
        let commit = xattr::get(dir, COMMIT_XATTR)
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<CommitId>().ok());
        if let (Some(commit), Some(parent), Some(name)) = (commit, dir.parent(), dir.file_name()) {
            let mut pinned = name.to_os_string();
            pinned.push(format!("@{commit}"));
            let pinned = parent.join(pinned);
            if pinned.is_dir() {
                return (pinned, Some(commit));
            }
        }
        (dir.to_path_buf(), commit)
    }

    /// The image configuration, if the root came from an image.
    pub fn image(&self) -> Option<&ImageConfig> {
        match self {
            Source::View { image, .. } | Source::Dir { image, .. } => image.as_deref(),
        }
    }

    /// What `path` (absolute, inside the root) is, without following symlinks.
    pub fn stat(&self, path: &str) -> Option<Stat> {
        match self {
            Source::View { view, .. } => view_lookup(view, path).map(|a| Stat {
                dir: a.kind == Kind::Dir,
                symlink: a.kind == Kind::Symlink,
                mode: a.perm as u32,
                uid: a.uid,
                gid: a.gid,
            }),
            Source::Dir { path: dir, .. } => {
                let m = fs::symlink_metadata(host_path(dir, path)?).ok()?;
                Some(Stat {
                    dir: m.is_dir(),
                    symlink: m.file_type().is_symlink(),
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                })
            }
        }
    }

    /// The content of regular file `path` of the root, if it is one of at most `max`
    /// bytes.
    pub fn read(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Source::View { view, objects, .. } => {
                let attr = view_lookup(view, path)?;
                let (blob, size) = view.file(attr.ino).ok()?;
                if size > max {
                    return None;
                }
                let file = objects.open(&blob.0, size).ok()?.file;
                let read = (&file).take(max).read_to_end(&mut out);
                objects.release(&blob.0);
                read.ok()?;
            }
            Source::Dir { path: dir, .. } => {
                let p = host_path(dir, path)?;
                if !fs::symlink_metadata(&p).ok()?.is_file() {
                    return None;
                }
                fs::File::open(p)
                    .ok()?
                    .take(max)
                    .read_to_end(&mut out)
                    .ok()?;
            }
        }
        Some(out)
    }

    /// The names in directory `path` of the root (symlinks not followed), at most
    /// `max` of them; `None` if it is not a directory.
    pub fn list(&self, path: &str, max: usize) -> Option<Vec<String>> {
        let mut names = Vec::new();
        match self {
            Source::View { view, .. } => {
                let dir = view_lookup(view, path).filter(|a| a.kind == Kind::Dir)?;
                view.list(dir.ino, 0, |_, _, name| {
                    names.push(String::from_utf8_lossy(name).into_owned());
                    names.len() >= max
                })
                .ok()?;
            }
            Source::Dir { path: dir, .. } => {
                let p = host_path(dir, path)?;
                if !fs::symlink_metadata(&p).ok()?.is_dir() {
                    return None;
                }
                for entry in fs::read_dir(p).ok()?.take(max) {
                    names.push(entry.ok()?.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Some(names)
    }

    /// Whether the root has program `name` in one of the usual directories.
    pub fn has_program(&self, name: &str) -> bool {
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .any(|d| self.stat(&format!("{d}/{name}")).is_some())
    }
}

/// How long a host's canopy mount may take to say what it shows, or to answer a stat.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The mountpoints of the host's canopy FUSE mounts, from `/proc/self/mountinfo`
/// (read without touching any mount).
pub(crate) fn canopy_mounts() -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            // `canopy mount` and the volume plugin show as type fuse, source canopy; a
            // run's own view as fuse.canopy.
            let mut fields = right.split(' ');
            let (kind, source) = (fields.next()?, fields.next()?);
            if !(kind == "fuse.canopy" || (kind == "fuse" && source == "canopy")) {
                return None;
            }
            Some(PathBuf::from(unescape(left.split(' ').nth(4)?)))
        })
        .collect()
}

/// Whether the process serving the canopy mount at `point` — `canopy mount`, or the
/// volume plugin's mount server — says it shows the top-level `entry`, asked at its
/// socket with a deadline. `None`: nobody answers (stopped, hung, or an older canopy).
fn says_it_shows(point: &Path, entry: &str) -> Option<bool> {
    crate::handover::shows(point, entry, ANSWER_WAIT)
        .or_else(|| crate::volume::shows(point, entry, ANSWER_WAIT))
}

/// Where the host shows `name@commit` in one of its canopy mounts (`canopy mount`
/// keeps every version it showed by that name; the volume plugin shows mounted volumes
/// so), if it does. A mount is touched only once its process has said, within a
/// deadline, that it shows that version: a stat on a mount whose process is stopped or
/// hung would block in the kernel, and the run with it.
pub fn host_mount_of(name: &str, commit: &CommitId) -> Option<PathBuf> {
    let entry = format!("{name}@{commit}");
    canopy_mounts().into_iter().find_map(|point| {
        match says_it_shows(&point, &entry) {
            Some(true) => {}
            Some(false) => return None,
            None => {
                tracing::warn!(
                    "the canopy mount at {} does not answer (its process stopped, hung or \
                     too old?): not using it",
                    point.display()
                );
                return None;
            }
        }
        let pinned = point.join(&entry);
        match is_dir_within(&pinned, ANSWER_WAIT) {
            Some(dir) => dir.then_some(pinned),
            None => {
                tracing::warn!(
                    "the canopy mount at {} stopped answering: not using it",
                    point.display()
                );
                None
            }
        }
    })
}

/// Refuses a directory on a canopy mount that does not answer: everything a run does
/// with its root (looking at it, mounting over it) would block in the kernel. A
/// directory elsewhere is not looked at.
pub fn check_answers(dir: &Path) -> Result<(), String> {
    let Ok(dir) = std::path::absolute(dir) else {
        return Ok(());
    };
    let Some(point) = canopy_mounts()
        .into_iter()
        .filter(|p| dir.starts_with(p))
        .max_by_key(|p| p.as_os_str().len())
    else {
        return Ok(());
    };
    if says_it_shows(&point, "").is_some() || is_dir_within(&dir, ANSWER_WAIT).is_some() {
        return Ok(());
    }
    Err(format!(
        "{} is on the canopy mount at {}, which does not answer within {ANSWER_WAIT:?} (its \
         process is stopped or hung?): restart that mount, or run the root from its server \
         (--server)",
        dir.display(),
        point.display()
    ))
}

/// Whether `path` is a directory, asked by a child process so that a mount whose
/// process does not answer cannot block this one: the kernel holds such a lookup
/// uninterruptibly. `None` when the child has not answered within `timeout`; it is
/// killed, and if the kernel holds it, left to end once the mount answers (it holds no
/// descriptor of ours, so nothing waits for it).
fn is_dir_within(path: &Path, timeout: Duration) -> Option<bool> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: the child calls only async-signal-safe functions (close_range, statfs,
    // stat, _exit) on memory prepared before the fork, as a child of a multi-threaded process
    // must.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        // SAFETY: as above; `st` is written by stat before it is read.
        unsafe {
            // No pipe or socket of the parent stays open in a child the kernel holds.
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            // statfs always reaches the mount's process (the kernel caches names and
            // attributes for long, never statfs), so a stopped one is found out.
            let mut fs: libc::statfs = std::mem::zeroed();
            let mut st: libc::stat = std::mem::zeroed();
            let dir = libc::statfs(c_path.as_ptr(), &mut fs) == 0
                && libc::stat(c_path.as_ptr(), &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            libc::_exit(if dir { 0 } else { 1 });
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            0 => {
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return None;
            }
            p if p == pid && libc::WIFEXITED(status) => {
                return Some(libc::WEXITSTATUS(status) == 0);
            }
            _ => return None,
        }
    }
}

/// A mountinfo path: `\040` and friends are octal escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Looks `path` up component by component; symlinks are not followed.
fn view_lookup(view: &View, path: &str) -> Option<Attr> {
    let mut attr = view.attr(ROOT_INO).ok()?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = view.lookup(attr.ino, part.as_bytes()).ok()?;
    }
    Some(attr)
}

/// `path` under host directory `dir`, if no directory on the way is a symlink (which
/// could lead out of the root).
fn host_path(dir: &Path, path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut full = dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            return None;
        }
        full.push(OsStr::from_bytes(part.as_bytes()));
        if i + 1 < parts.len() && fs::symlink_metadata(&full).ok()?.file_type().is_symlink() {
            return None;
        }
    }
    Some(full)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(super::unescape(r"/run/my\040mount"), "/run/my mount");
        assert_eq!(super::unescape(r"/a\\b"), r"/a\\b");
    }
}
