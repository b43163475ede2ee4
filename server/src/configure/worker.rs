//! The configure worker: the part of configuring that runs inside the shifted user
//! namespace (`canopy __configure-worker`, started by [`super::run`]).
//!
//! It reads a [`Job`] and the prepared root as a record stream on stdin, writes the
//! root out as a scratch directory owned by the namespace's ids, runs the job's program
//! in a second sandbox whose `/` is that directory (new mount, PID, IPC, UTS and network
//! namespaces; `/proc`, a minimal `/dev`, tmpfs `/tmp` and `/run`), then walks the
//! directory and streams every entry back on stdout — content only for files whose
//! content canopy did not send — and removes the directory. The program's output goes
//! to stderr as it comes.
//!
//! Everything that touches the scratch directory happens here, inside the namespace:
//! its files belong to subordinate ids that the user who runs canopy cannot read or
//! delete from outside.

use super::stream::{self, Kind, Record};
use canopy_protocol::{EntryKind, Meta, ObjectId};
use canopy_sandbox::{Mount, Namespaces, Sandbox, Stdio, Users};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod harvest;

use harvest::harvest;

/// Where the worker sees its scratch directory.
const SCRATCH: &str = "/tmp";

/// What the worker is asked to do.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Job {
    /// The directory to work in: it exists, the worker may write to it, and it is the
    /// worker's working directory (this path is for messages).
    pub(crate) scratch: PathBuf,
    /// Scratch directories that interrupted runs left, to remove first.
    pub(crate) leftovers: Vec<PathBuf>,
    /// The program to run in the root, and its arguments.
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// Its whole environment.
    pub(crate) env: Vec<(String, String)>,
    /// Files the program finds in `/run/canopy` (name, mode, content); contents go as
    /// hex, since JSON would spell each byte as a number and a comma.
    #[serde(with = "hex_files")]
    pub(crate) files: Vec<(String, u32, Vec<u8>)>,
    /// Files of `/run/canopy` bound read-only over paths of the root, for the run
    /// only (e.g. `policy-rc.d`).
    pub(crate) binds: Vec<(String, String)>,
    /// Directories emptied after the run, but for the names given.
    pub(crate) empty: Vec<(String, Vec<String>)>,
    /// The hostname the program sees.
    pub(crate) hostname: String,
    /// The modification time every file of the root starts with.
    pub(crate) mtime: i64,
    /// How long the program may run, in seconds.
    pub(crate) timeout_secs: u64,
    /// Work in a tmpfs of this many bytes mounted over the scratch directory (in the
    /// worker's own mount namespace: it vanishes with the worker), rather than on disk.
    pub(crate) tmpfs: Option<u64>,
}

/// How the program ended, sent after the harvested tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ended {
    /// Its exit status, if it exited.
    pub status: Option<i32>,
    /// Whether it ran out of time and was killed.
    pub timed_out: bool,
}

/// The most the job's line may take: it carries the control archives of every
/// package with a preinst (debconf templates with all their translations: tens of
/// megabytes for a large set), and is bounded only so that a broken sender cannot make
/// the worker read without end.
const JOB_MAX: u64 = 1 << 30;

/// `Job::files` with each content as a hex string.
mod hex_files {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Files = Vec<(String, u32, Vec<u8>)>;

    pub(super) fn serialize<S: Serializer>(files: &Files, s: S) -> Result<S::Ok, S::Error> {
        let hexed: Vec<(&str, u32, String)> = files
            .iter()
            .map(|(name, mode, content)| (name.as_str(), *mode, hex::encode(content)))
            .collect();
        hexed.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Files, D::Error> {
        let hexed = Vec::<(String, u32, String)>::deserialize(d)?;
        hexed
            .into_iter()
            .map(|(name, mode, content)| {
                hex::decode(&content)
                    .map(|c| (name, mode, c))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// Prefix of the worker's own messages on stderr, which also carries the program's output.
pub(crate) const MESSAGE: &str = "canopy-worker: ";

/// Runs the worker on stdin and stdout; returns the process exit status.
pub fn main() -> i32 {
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(1 << 20, stdin.lock());
    let mut output = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    match work(&mut input, &mut output).and_then(|()| output.flush().map_err(|e| e.to_string())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{MESSAGE}error: {e}");
            1
        }
    }
}

fn work(input: &mut impl BufRead, output: &mut impl Write) -> Result<(), String> {
    let mut line = Vec::new();
    input
        .take(JOB_MAX)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the job: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "reading the job: it ended after {} bytes, without its newline (at most {JOB_MAX})",
            line.len()
        ));
    }
    let job: Job = serde_json::from_slice(&line).map_err(|e| format!("reading the job: {e}"))?;
    for old in &job.leftovers {
        if let Err(e) = fs::remove_dir_all(old) {
            eprintln!("{MESSAGE}cannot remove {}: {e}", old.display());
        }
    }
    // The scratch directory is the working directory, entered with the caller's ids: its
    // path may pass through directories the ids here cannot search (`/root`, a home of
    // mode 0700). Seen at a path they can, in this mount namespace only.
    let scratch = Path::new(SCRATCH);
    let target = CString::new(SCRATCH).expect("no NUL");
    // SAFETY: valid C strings; the worker's mount namespace is its own.
    let r = unsafe {
        libc::mount(
            c".".as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "binding {} to {SCRATCH}: {}",
            job.scratch.display(),
            io::Error::last_os_error()
        ));
    }
    if let Some(size) = job.tmpfs {
        let options = CString::new(format!("size={size},mode=0755")).expect("no NUL");
        // SAFETY: valid C strings; the worker's mount namespace is its own.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(format!(
                "mounting a tmpfs on {} (at {SCRATCH}): {}",
                job.scratch.display(),
                io::Error::last_os_error()
            ));
        }
    }
    let root = scratch.join("root");
    let io_dir = scratch.join("io");
    let result = configure(&job, &root, &io_dir, input, output);
    // The scratch tree belongs to the namespace's ids: only here can it be removed.
    for dir in [&root, &io_dir] {
        if dir.symlink_metadata().is_ok()
            && let Err(e) = fs::remove_dir_all(dir)
        {
            eprintln!("{MESSAGE}cannot remove {}: {e}", dir.display());
        }
    }
    result
}

fn configure(
    job: &Job,
    root: &Path,
    io_dir: &Path,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), String> {
    fs::create_dir(io_dir).map_err(|e| format!("creating {}: {e}", io_dir.display()))?;
    for (name, mode, content) in &job.files {
        let path = place(io_dir, name.as_bytes())?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::write(&path, content)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(*mode)))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let t = std::time::Instant::now();
    let tree = materialize(input, root, job.mtime)?;
    eprintln!(
        "{MESSAGE}wrote the root out in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    let ended = run(job, root, io_dir)?;
    eprintln!(
        "{MESSAGE}ran {} in {:.1} s",
        job.program,
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    harvest(root, &tree, output).map_err(|e| format!("reading the configured root back: {e}"))?;
    eprintln!(
        "{MESSAGE}read the root back in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let trailer = serde_json::to_vec(&ended).expect("a plain struct serializes");
    output
        .write_all(&trailer)
        .and_then(|()| output.write_all(b"\n"))
        .map_err(|e| format!("sending the result: {e}"))
}

/// What writing the root out left to know.
struct Materialized {
    /// Every file content sent, with the first path that holds it.
    sent: HashMap<ObjectId, PathBuf>,
    /// Entries that cannot be made inside a user namespace (devices, sockets).
    skipped: Vec<Record>,
}

/// A relative record path as a path under `root`, refusing anything that could leave it.
fn place(root: &Path, rel: &[u8]) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in rel.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
            return Err(format!(
                "bad path {:?} in the stream",
                String::from_utf8_lossy(rel)
            ));
        }
        p.push(OsStr::from_bytes(c));
    }
    Ok(p)
}

fn ctx<T>(r: io::Result<T>, what: &str, p: &Path) -> Result<T, String> {
    r.map_err(|e| format!("{what} {}: {e}", p.display()))
}

/// Owner, then mode (chown clears setuid bits), then xattrs (chown clears
/// `security.capability`).
fn finish(p: &Path, meta: &Meta, symlink: bool) -> Result<(), String> {
    ctx(
        std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid)),
        "chown",
        p,
    )?;
    if !symlink {
        ctx(
            fs::set_permissions(p, fs::Permissions::from_mode(u32::from(meta.mode))),
            "chmod",
            p,
        )?;
    }
    for (name, value) in &meta.xattrs {
        ctx(
            xattr::set(p, OsStr::from_bytes(name), value),
            "setting an xattr on",
            p,
        )?;
    }
    Ok(())
}

fn materialize(input: &mut impl Read, root: &Path, mtime: i64) -> Result<Materialized, String> {
    let mut m = Materialized {
        sent: HashMap::new(),
        skipped: Vec::new(),
    };
    let mut made = Vec::new();
    let bad = |e: io::Error| format!("reading the root from canopy: {e}");
    while let Some(r) = stream::read(input).map_err(bad)? {
        let p = if r.path.is_empty() {
            root.to_path_buf()
        } else {
            place(root, &r.path)?
        };
        match &r.kind {
            Kind::Dir => {
                ctx(fs::create_dir(&p), "creating", &p)?;
                finish(&p, &r.meta, false)?;
            }
            Kind::File { size, blob, inline } => {
                if *inline {
                    let mut f = ctx(
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&p),
                        "creating",
                        &p,
                    )?;
                    let copied = io::copy(&mut input.take(*size), &mut f).map_err(bad)?;
                    if copied != *size {
                        return Err(format!("{}: the stream ended inside it", p.display()));
                    }
                    m.sent.entry(blob.0).or_insert_with(|| p.clone());
                } else {
                    let from = m.sent.get(&blob.0).ok_or_else(|| {
                        format!("{}: content {} was never sent", p.display(), blob)
                    })?;
                    ctx(fs::copy(from, &p), "copying into", &p)?;
                }
                finish(&p, &r.meta, false)?;
            }
            Kind::Other(EntryKind::Symlink { target }) => {
                ctx(
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &p),
                    "creating symlink",
                    &p,
                )?;
                finish(&p, &r.meta, true)?;
            }
            Kind::Other(EntryKind::Fifo) => {
                let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
                // SAFETY: a valid C path.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(format!(
                        "mkfifo {}: {}",
                        p.display(),
                        io::Error::last_os_error()
                    ));
                }
                finish(&p, &r.meta, false)?;
            }
            Kind::Other(_) => {
                // mknod is for the host's root alone; the entry is put back as it was.
                m.skipped.push(r);
                continue;
            }
        }
        made.push(p);
    }
    // Children first, so that making an entry does not change its directory's time again.
    for p in made.iter().rev() {
        set_mtime(p, mtime)?;
    }
    Ok(m)
}

fn set_mtime(p: &Path, mtime: i64) -> Result<(), String> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: a valid C path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(format!(
            "setting the time of {}: {}",
            p.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the job's program in the root; returns how it ended.
fn run(job: &Job, root: &Path, io_dir: &Path) -> Result<Ended, String> {
    let mut sb = Sandbox::new(Users::Current);
    sb.namespaces(Namespaces::ALL)
        .root(root)
        .hostname(&job.hostname)
        .mount(Mount::Proc {
            target: "/proc".into(),
        })
        .mount(Mount::Dev {
            target: "/dev".into(),
        })
        .mount(Mount::Tmpfs {
            target: "/tmp".into(),
            mode: 0o1777,
        })
        .mount(Mount::Bind {
            source: io_dir.to_path_buf(),
            target: "/run/canopy".into(),
            read_only: false,
        });
    let mut mount_points = vec!["proc", "dev", "tmp", "run", "run/canopy"];
    for (name, target) in &job.binds {
        sb.mount(Mount::Bind {
            source: io_dir.join(name),
            target: target.into(),
            read_only: true,
        });
        mount_points.push(target.trim_start_matches('/'));
    }
    for (k, v) in &job.env {
        sb.env(k, v);
    }
    // Mount points the root did not have are the sandbox's, not the root's.
    let missing: Vec<PathBuf> = mount_points
        .iter()
        .map(|m| root.join(m))
        .filter(|p| p.symlink_metadata().is_err())
        .collect();
    let err = io::stderr();
    let dup = |what| {
        err.as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicating stderr for the {what}: {e}"))
    };
    sb.stdin(Stdio::Null)
        .stdout(Stdio::Fd(dup("program's output")?))
        .stderr(Stdio::Fd(dup("program's errors")?));
    let mut child = sb
        .spawn(&job.program, &job.args)
        .map_err(|e| format!("starting {} in the root: {e}", job.program))?;
    let ended = match child
        .wait_timeout(Duration::from_secs(job.timeout_secs))
        .map_err(|e| e.to_string())?
    {
        Some(status) => Ended {
            status: Some(status.code().unwrap_or(128)),
            timed_out: false,
        },
        None => {
            let _ = child.kill();
            Ended {
                status: None,
                timed_out: true,
            }
        }
    };
    // Deepest first: a mount point the sandbox made inside another one it made.
    for p in missing.into_iter().rev() {
        let removed = match p.symlink_metadata() {
            Ok(m) if m.is_dir() => fs::remove_dir(&p),
            Ok(_) => fs::remove_file(&p),
            Err(_) => Ok(()),
        };
        if let Err(e) = removed {
            eprintln!("{MESSAGE}cannot remove mount point {}: {e}", p.display());
        }
    }
    for (dir, keep) in &job.empty {
        empty(&place(root, dir.trim_start_matches('/').as_bytes())?, keep)?;
    }
    Ok(ended)
}

/// Removes what `dir` holds but the names in `keep`.
fn empty(dir: &Path, keep: &[String]) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        if keep.iter().any(|k| OsStr::new(k) == entry.file_name()) {
            continue;
        }
        let p = entry.path();
        let removed = match p.symlink_metadata() {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        };
        removed.map_err(|e| format!("removing {}: {e}", p.display()))?;
    }
    Ok(())
}
