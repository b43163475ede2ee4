//! What a sandbox mounts, and how each mount becomes the child's setup steps.
//!
//! Targets are paths inside the sandbox (`/proc`, `/dev`…); with a new root they are
//! resolved under it before `pivot_root`, so they never name host paths. Missing
//! target directories are created; a target with a symlink anywhere in its path is
//! refused, so a root that ships `/dev -> /etc` cannot redirect a mount.

use crate::child::Step;
use nix::mount::MsFlags;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The devices a minimal `/dev` holds, bound from the host's.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One mount, applied in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// Binds a host path (file or directory, with what is mounted below it) at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the sandbox.
        target: PathBuf,
        /// Read-only (with the host mount's nosuid/nodev/noexec kept).
        read_only: bool,
    },
    /// A new `proc` for the sandbox's PID namespace.
    Proc {
        /// Usually `/proc`.
        target: PathBuf,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Where.
        target: PathBuf,
        /// Permission bits of its root (`0o1777` for `/tmp`).
        mode: u32,
    },
    /// A minimal `/dev`: a tmpfs with the host's null, zero, full, random, urandom and
    /// tty bound in, `fd`/`stdin`/`stdout`/`stderr` links to `/proc/self/fd`, a private
    /// `pts` (with `ptmx`) and a tmpfs `shm`.
    Dev {
        /// Usually `/dev`.
        target: PathBuf,
    },
    /// An overlay of read-only `lower` directories (host paths, topmost first) under a
    /// writable `upper` (with its `work` directory on the same filesystem).
    Overlay {
        /// Lower layers, topmost first.
        lower: Vec<PathBuf>,
        /// Upper layer, `None` for a read-only overlay.
        upper: Option<PathBuf>,
        /// Work directory of the upper layer.
        work: Option<PathBuf>,
        /// Where inside the sandbox; `/` mounts it over the new root.
        target: PathBuf,
        /// Keep overlay's own xattrs in the `user.` namespace (`userxattr`), as an
        /// overlay mounted inside a user namespace must.
        userxattr: bool,
    },
    /// A FUSE filesystem served by the caller, mounted read-only as type `fuse.canopy`
    /// with `allow_other` and `default_permissions`, so file owners are read in the
    /// sandbox's user namespace. The sandbox opens `/dev/fuse` itself (the kernel wants
    /// the opener in the mount's user namespace), mounts it, and sends the descriptor
    /// over `channel`, a unix socket whose other end the caller reads (SCM_RIGHTS) and
    /// serves from then on: lookups in later steps wait for the caller's answers.
    Fuse {
        /// Where inside the sandbox; `/` mounts it over the new root.
        target: PathBuf,
        /// The sandbox's end of a unix socket pair.
        channel: std::os::fd::RawFd,
    },
    /// A directory (and its parents), if missing.
    Dir {
        /// Where.
        target: PathBuf,
        /// Permission bits when created.
        mode: u32,
        /// Owner and group inside the sandbox, given to the directory (with `mode`
        /// again, which a change of owner may clear) whether it was created or not. An
        /// id the sandbox's user namespace does not map leaves the owner as it was.
        owner: Option<(u32, u32)>,
    },
    /// A symbolic link at `target` pointing to `points_to`.
    Symlink {
        /// Where the link is.
        target: PathBuf,
        /// What it points to.
        points_to: PathBuf,
    },
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths are checked for NUL bytes first")
}

/// `target` (an absolute path inside the sandbox) under `root`, and each directory on
/// the way, so the child can create them without following links.
struct Resolved {
    full: PathBuf,
    ancestors: Vec<CString>,
}

fn resolve(root: &Path, target: &Path) -> Result<Resolved, String> {
    let mut full = root.to_path_buf();
    let mut ancestors = Vec::new();
    for comp in target.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                ancestors.push(cstr(&full));
                full.push(name);
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "mount target {} must be an absolute path without `..`",
                    target.display()
                ));
            }
        }
    }
    if full.as_os_str().as_bytes().contains(&0) {
        return Err(format!(
            "mount target {} contains a NUL byte",
            target.display()
        ));
    }
    // The root itself exists; only what lies below it is checked and created.
    if !ancestors.is_empty() {
        ancestors.remove(0);
    }
    Ok(Resolved { full, ancestors })
}

fn check_source(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("mount source {} contains a NUL byte", p.display()))
}

/// Escapes a path for overlayfs' comma- and colon-separated options.
fn overlay_path(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b',' | b':' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Steps that make `target` a directory (or, with `file`, an empty file).
fn ensure(r: &Resolved, file: bool, mode: u32, steps: &mut Vec<(Step, String)>, shown: &Path) {
    let mut dirs = r.ancestors.clone();
    if !file {
        dirs.push(cstr(&r.full));
    }
    if !dirs.is_empty() {
        steps.push((
            Step::Dirs { paths: dirs, mode },
            format!("creating directory {}", shown.display()),
        ));
    }
    if file {
        steps.push((
            Step::File {
                path: cstr(&r.full),
            },
            format!("creating mount point {}", shown.display()),
        ));
    }
}

impl Mount {
    /// Appends the child's steps for this mount, each with what it does for messages.
    pub(crate) fn plan(&self, root: &Path, steps: &mut Vec<(Step, String)>) -> Result<(), String> {
        match self {
            Mount::Bind {
                source,
                target,
                read_only,
            } => {
                let src = check_source(source)?;
                let r = resolve(root, target)?;
                ensure(&r, !source.is_dir(), 0o755, steps, target);
                steps.push((
                    Step::Mount {
                        source: Some(src),
                        target: cstr(&r.full),
                        fstype: None,
                        flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                        data: None,
                    },
                    format!("binding {} at {}", source.display(), target.display()),
                ));
                if *read_only {
                    steps.push((
                        Step::ReadOnly {
                            target: cstr(&r.full),
                        },
                        format!("making {} read-only", target.display()),
                    ));
                }
            }
            Mount::Proc { target } => {
                let r = resolve(root, target)?;
                ensure(&r, false, 0o555, steps, target);
                steps.push((
                    Step::mount(
                        "proc",
                        &r.full,
                        "proc",
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        None,
                    ),
                    format!("mounting proc at {}", target.display()),
                ));
            }
            Mount::Tmpfs { target, mode } => {
                let r = resolve(root, target)?;
                ensure(&r, false, 0o755, steps, target);
                steps.push((
                    Step::mount(
                        "tmpfs",
                        &r.full,
                        "tmpfs",
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                        Some(format!("mode={mode:o}")),
                    ),
                    format!("mounting a tmpfs at {}", target.display()),
                ));
            }
            Mount::Dev { target } => self.plan_dev(root, target, steps)?,
            Mount::Overlay {
                lower,
                upper,
                work,
                target,
                userxattr,
            } => {
                let r = resolve(root, target)?;
                ensure(&r, false, 0o755, steps, target);
                let mut data = b"lowerdir=".to_vec();
                for (i, l) in lower.iter().enumerate() {
                    check_source(l)?;
                    if i > 0 {
                        data.push(b':');
                    }
                    data.extend(overlay_path(l));
                }
                if let (Some(u), Some(w)) = (upper, work) {
                    check_source(u)?;
                    check_source(w)?;
                    data.extend(b",upperdir=");
                    data.extend(overlay_path(u));
                    data.extend(b",workdir=");
                    data.extend(overlay_path(w));
                }
                // Without an index, copying one name of a multiply-linked lower file up
                // breaks the link rather than carrying the write to its other names
                // (identical files of a canopy mount are one inode).
                data.extend(b",index=off");
                if *userxattr {
                    data.extend(b",userxattr");
                }
                steps.push((
                    Step::Mount {
                        source: Some(CString::new("overlay").unwrap()),
                        target: cstr(&r.full),
                        fstype: Some(CString::new("overlay").unwrap()),
                        flags: MsFlags::empty(),
                        data: Some(
                            CString::new(data)
                                .map_err(|_| "overlay paths contain NUL".to_string())?,
                        ),
                    },
                    format!("mounting an overlay at {}", target.display()),
                ));
            }
            Mount::Fuse { target, channel } => {
                let r = resolve(root, target)?;
                ensure(&r, false, 0o755, steps, target);
                let options = "rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions";
                debug_assert!(options.len() <= crate::child::FUSE_OPTIONS_MAX);
                steps.push((
                    Step::Fuse {
                        target: cstr(&r.full),
                        options: CString::new(options).expect("static options"),
                        channel: *channel,
                    },
                    format!("mounting the FUSE filesystem at {}", target.display()),
                ));
            }
            Mount::Dir {
                target,
                mode,
                owner,
            } => {
                let r = resolve(root, target)?;
                ensure(&r, false, *mode, steps, target);
                if let Some((uid, gid)) = *owner {
                    steps.push((
                        Step::Owner {
                            path: cstr(&r.full),
                            uid,
                            gid,
                            mode: *mode,
                        },
                        format!("giving {} to {uid}:{gid}", target.display()),
                    ));
                }
            }
            Mount::Symlink { target, points_to } => {
                let r = resolve(root, target)?;
                let parent = Resolved {
                    full: r.full.parent().map(Path::to_path_buf).unwrap_or_default(),
                    ancestors: r.ancestors.clone(),
                };
                if !parent.ancestors.is_empty() {
                    steps.push((
                        Step::Dirs {
                            paths: parent.ancestors,
                            mode: 0o755,
                        },
                        format!("creating the directory of {}", target.display()),
                    ));
                }
                steps.push((
                    Step::Symlink {
                        points_to: check_source(points_to)?,
                        link: cstr(&r.full),
                    },
                    format!("linking {} to {}", target.display(), points_to.display()),
                ));
            }
        }
        Ok(())
    }

    fn plan_dev(
        &self,
        root: &Path,
        target: &Path,
        steps: &mut Vec<(Step, String)>,
    ) -> Result<(), String> {
        let r = resolve(root, target)?;
        ensure(&r, false, 0o755, steps, target);
        steps.push((
            Step::mount(
                "tmpfs",
                &r.full,
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("mode=755".into()),
            ),
            format!("mounting a tmpfs at {}", target.display()),
        ));
        for dev in DEVICES {
            let inside = target.join(dev);
            let full = r.full.join(dev);
            steps.push((
                Step::File { path: cstr(&full) },
                format!("creating {}", inside.display()),
            ));
            steps.push((
                Step::Mount {
                    source: Some(cstr(&Path::new("/dev").join(dev))),
                    target: cstr(&full),
                    fstype: None,
                    flags: MsFlags::MS_BIND,
                    data: None,
                },
                format!("binding /dev/{dev} at {}", inside.display()),
            ));
        }
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            steps.push((
                Step::Symlink {
                    points_to: CString::new(to).unwrap(),
                    link: cstr(&r.full.join(link)),
                },
                format!("linking {} to {to}", target.join(link).display()),
            ));
        }
        for (dir, mode) in [("pts", 0o755), ("shm", 0o1777)] {
            steps.push((
                Step::Dirs {
                    paths: vec![cstr(&r.full.join(dir))],
                    mode,
                },
                format!("creating {}", target.join(dir).display()),
            ));
        }
        steps.push((
            Step::mount(
                "devpts",
                &r.full.join("pts"),
                "devpts",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620".into()),
            ),
            format!("mounting devpts at {}", target.join("pts").display()),
        ));
        steps.push((
            Step::mount(
                "tmpfs",
                &r.full.join("shm"),
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=1777".into()),
            ),
            format!("mounting a tmpfs at {}", target.join("shm").display()),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_under_the_root() {
        let r = resolve(Path::new("/srv/root"), Path::new("/dev/pts")).unwrap();
        assert_eq!(r.full, Path::new("/srv/root/dev/pts"));
        assert_eq!(r.ancestors, vec![CString::new("/srv/root/dev").unwrap()]);
        assert!(resolve(Path::new("/srv/root"), Path::new("/a/../../etc")).is_err());
    }

    #[test]
    fn overlay_options_are_escaped() {
        assert_eq!(overlay_path(Path::new("/a,b:c")), b"/a\\,b\\:c".to_vec());
    }
}
