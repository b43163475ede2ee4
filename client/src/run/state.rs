//! A host's writable state over a read-only root: `/etc` and `/var` are overlays whose
//! upper layers live in a state directory (`--state DIR`, kept across runs; without
//! it, a temporary one removed after the run).
//!
//! Because the root is only the lower layer, upgrading it changes every file the host
//! never touched, while files the host changed keep the host's version — how ostree
//! treats `/etc`. [`State::diff`] lists what the host changed.
//!
//! ```text
//! DIR/canopy-state.json     which kind of overlay wrote it, and for which ids
//! DIR/lock                  held by the run using it
//! DIR/etc/upper, etc/work   the /etc overlay's upper and work directories
//! DIR/var/upper, var/work   the same for /var
//! ```
//!
//! An overlay mounted in a user namespace keeps its own metadata (whiteouts, opaque
//! directories) in `user.overlay.*` xattrs (`userxattr`); one mounted by root outside
//! any user namespace (`--spc`) in `trusted.overlay.*`. Neither reads the other's, and
//! ids differ between the two, so a state directory records which it is and refuses
//! the other kind.

use super::RunError;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directories of a root that a run makes writable.
pub const WRITABLE: [&str; 2] = ["etc", "var"];

const RECORD: &str = "canopy-state.json";

/// Where an overlay keeps its own metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Xattrs {
    /// `user.overlay.*`: overlays mounted inside a user namespace.
    User,
    /// `trusted.overlay.*`: overlays mounted by root in the host's user namespace.
    Trusted,
}

impl Xattrs {
    fn describe(self) -> &'static str {
        match self {
            Xattrs::User => "a run in a user namespace (overlay metadata in user.* xattrs)",
            Xattrs::Trusted => {
                "a super-privileged run (--spc; overlay metadata in trusted.* xattrs)"
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    overlay: Xattrs,
    /// The host uid and gid that root inside the runs is.
    root_uid: u32,
    root_gid: u32,
    /// Host identity already created (machine id, host keys…), by rule pattern.
    #[serde(default)]
    identity: Vec<String>,
}

/// An open state directory, locked for one run.
pub struct State {
    dir: PathBuf,
    record: Record,
    /// Removed when the run ends.
    temporary: bool,
    _lock: fs::File,
}

fn io(what: String) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

impl State {
    /// Opens (creating it if needed) the state directory `dir` for a run whose overlays
    /// keep their metadata in `xattrs` and whose root inside is host `root_uid:root_gid`.
    pub fn open(dir: &Path, xattrs: Xattrs, root: (u32, u32)) -> Result<State, RunError> {
        State::open_kept(dir, xattrs, root, true)
    }

    fn open_kept(
        dir: &Path,
        xattrs: Xattrs,
        root: (u32, u32),
        kept: bool,
    ) -> Result<State, RunError> {
        let refuse = |detail: String| RunError::State {
            dir: dir.to_path_buf(),
            detail,
        };
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock_path = dir.join("lock");
        let lock = fs::File::create(&lock_path)
            .map_err(io(format!("creating {}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(refuse("another canopy run is using it".into()));
        }
        let path = dir.join(RECORD);
        let mut new = false;
        let record = match fs::read(&path) {
            Ok(bytes) => {
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                    refuse(format!(
                        "{} is not a canopy state record: {e}",
                        path.display()
                    ))
                })?;
                if record.overlay != xattrs {
                    return Err(refuse(format!(
                        "it was made by {}, and this is {}: the two kinds of overlay do not read each other's files; give this run another --state directory",
                        record.overlay.describe(),
                        xattrs.describe()
                    )));
                }
                if (record.root_uid, record.root_gid) != root {
                    return Err(refuse(format!(
                        "its files belong to root of runs that were host uid {}:{}, and this run's root is {}:{} (another user or id range); give this run its own --state directory",
                        record.root_uid, record.root_gid, root.0, root.1
                    )));
                }
                record
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                new = true;
                Record {
                    version: 1,
                    overlay: xattrs,
                    root_uid: root.0,
                    root_gid: root.1,
                    identity: Vec::new(),
                }
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        for name in WRITABLE {
            for part in ["upper", "work"] {
                let sub = dir.join(name).join(part);
                fs::create_dir_all(&sub).map_err(io(format!("creating {}", sub.display())))?;
            }
        }
        let state = State {
            dir: dir.to_path_buf(),
            record,
            temporary: !kept,
            _lock: lock,
        };
        if new {
            state.save()?;
        }
        Ok(state)
    }

    /// A state directory made under `parent` for one run, removed when dropped.
    pub fn temporary(parent: &Path, xattrs: Xattrs, root: (u32, u32)) -> Result<State, RunError> {
        State::open_kept(&parent.join("state"), xattrs, root, false)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The upper layer of writable directory `name` (`etc` or `var`).
    pub fn upper(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("upper")
    }

    /// The work directory of writable directory `name`.
    pub fn work(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("work")
    }

    /// Gives the upper layer of `name` the mode and owner of the root's own directory:
    /// an overlay's top directory shows its upper layer's.
    pub fn match_root_dir(
        &self,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), RunError> {
        let upper = self.upper(name);
        fs::set_permissions(&upper, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io(format!("chmod {}", upper.display())))?;
        let meta = fs::metadata(&upper).map_err(io(format!("reading {}", upper.display())))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            // Only root may give files away; others keep their own (root inside).
            let _ = std::os::unix::fs::chown(&upper, Some(uid), Some(gid));
        }
        Ok(())
    }

    /// Whether host identity `pattern` was already created in this state.
    pub fn has_identity(&self, pattern: &str) -> bool {
        self.record.identity.iter().any(|p| p == pattern)
    }

    /// Records that host identity `pattern` now exists in this state.
    pub fn add_identity(&mut self, pattern: &str) -> Result<(), RunError> {
        if !self.has_identity(pattern) {
            self.record.identity.push(pattern.to_string());
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), RunError> {
        let path = self.dir.join(RECORD);
        let tmp = self.dir.join(format!(".{RECORD}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.record).expect("a record serialises");
        // A temporary state dies with the run: it needs no trip to the disk.
        let durable = |()| {
            if self.temporary {
                Ok(())
            } else {
                fs::File::open(&tmp)?.sync_all()
            }
        };
        fs::write(&tmp, bytes)
            .and_then(durable)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io(format!("writing {}", path.display())))
    }
}

/// What the host changed in state directory `dir`, path by path, against a root in
/// which `exists` tells whether a path is present: `A` added, `M` changed (content or
/// metadata), `D` deleted, `R` a directory replaced whole.
pub fn diff(dir: &Path, exists: &dyn Fn(&str) -> bool) -> Result<Vec<(char, String)>, RunError> {
    if !dir.join(RECORD).exists() {
        return Err(RunError::State {
            dir: dir.to_path_buf(),
            detail: "it holds no canopy state (the first `canopy run --state` makes it)".into(),
        });
    }
    let mut out = Vec::new();
    for name in WRITABLE {
        walk(
            &dir.join(name).join("upper"),
            &format!("/{name}"),
            exists,
            &mut out,
        )?;
    }
    Ok(out)
}

impl Drop for State {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether an overlay xattr (`user.overlay.NAME` or `trusted.overlay.NAME`) is set.
fn overlay_xattr(path: &Path, name: &str, value: Option<&[u8]>) -> bool {
    ["user", "trusted"].iter().any(
        |ns| match xattr::get(path, format!("{ns}.overlay.{name}")) {
            Ok(Some(v)) => value.is_none_or(|want| v == want),
            _ => false,
        },
    )
}

fn walk(
    dir: &Path,
    shown: &str,
    exists: &dyn Fn(&str) -> bool,
    out: &mut Vec<(char, String)>,
) -> Result<(), RunError> {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let inside = format!("{shown}/{}", e.file_name().to_string_lossy());
        let meta =
            fs::symlink_metadata(&path).map_err(io(format!("reading {}", path.display())))?;
        let ft = meta.file_type();
        let whiteout = (ft.is_char_device() && meta.rdev() == 0)
            || (ft.is_file() && meta.len() == 0 && overlay_xattr(&path, "whiteout", None));
        if whiteout {
            out.push(('D', inside));
        } else if ft.is_dir() {
            if overlay_xattr(&path, "opaque", Some(b"y")) {
                out.push(('R', format!("{inside}/")));
            } else if !exists(&inside) {
                out.push(('A', format!("{inside}/")));
            } else {
                walk(&path, &inside, exists, out)?;
            }
        } else {
            out.push((if exists(&inside) { 'M' } else { 'A' }, inside));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_refuse_the_other_kind_and_other_ids() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("s");
        drop(State::open(&state_dir, Xattrs::User, (0, 0)).unwrap());
        let err = State::open(&state_dir, Xattrs::Trusted, (0, 0))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("another --state directory"),
            "{err}"
        );
        let err = State::open(&state_dir, Xattrs::User, (1000, 1000))
            .err()
            .unwrap();
        assert!(err.to_string().contains("host uid 0:0"), "{err}");
        let held = State::open(&state_dir, Xattrs::User, (0, 0)).unwrap();
        let err = State::open(&state_dir, Xattrs::User, (0, 0)).err().unwrap();
        assert!(err.to_string().contains("another canopy run"), "{err}");
        drop(held);
    }

    #[test]
    fn diff_lists_what_the_host_changed() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path(), Xattrs::User, (0, 0)).unwrap();
        let etc = state.upper("etc");
        fs::write(etc.join("hostname"), "h\n").unwrap();
        fs::write(etc.join("new.conf"), "x\n").unwrap();
        fs::create_dir(etc.join("ssh")).unwrap();
        fs::write(etc.join("ssh/sshd_config"), "y\n").unwrap();
        fs::create_dir(etc.join("fresh")).unwrap();
        let exists = |p: &str| ["/etc/hostname", "/etc/ssh", "/etc/ssh/sshd_config"].contains(&p);
        let diff = diff(dir.path(), &exists).unwrap();
        assert_eq!(
            diff,
            [
                ('A', "/etc/fresh/".to_string()),
                ('M', "/etc/hostname".to_string()),
                ('A', "/etc/new.conf".to_string()),
                ('M', "/etc/ssh/sshd_config".to_string()),
            ]
        );
    }
}
