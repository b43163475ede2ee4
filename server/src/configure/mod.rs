//! Configuring a root: running its packages' scripts once, at assemble time, so that
//! users, alternatives, the package database and generated files are part of the root
//! every host gets.
//!
//! A package format (see [`Format`]; Debian's is [`crate::debian::configure`]) lays the
//! union of the packages out as its package manager would have left it unpacked, and
//! says what to run. This module does the rest, the same for every format:
//!
//! 1. a **worker** (`canopy __configure-worker`, [`worker`]) starts in a new user
//!    namespace whose ids 0–65535 are a block of host ids no host user has (see
//!    [`canopy_sandbox::Users::shifted`]); canopy streams it the prepared tree and it
//!    writes it out as a scratch directory under the store's `tmp/`, owned by those ids
//!    and never sharing an inode with the store;
//! 2. the worker runs the format's program with that directory as `/`, in new mount,
//!    PID, IPC, UTS and network namespaces: no network, `/proc`, a minimal `/dev`,
//!    tmpfs `/tmp` and `/run`; its output streams back to canopy as it comes;
//! 3. the worker streams the directory back — content only for files canopy did not
//!    send — and removes it; canopy builds the configured tree from that stream,
//!    leaving out host identity ([`canopy_protocol::HOST_IDENTITY`]), and stores what
//!    is new in the assemble's transaction.
//!
//! Nothing of this touches a ref: a failure anywhere leaves the store as it was, and a
//! crash leaves only the transaction's and the scratch directory's leftovers, which the
//! next writer and the next configure remove.

mod stream;
pub mod worker;

use crate::import::builder::{ArchivePath, TreeBuilder};
use crate::import::{ImportError, Limits};
use crate::store::{BlobError, StoreError, Txn};
use canopy_protocol::{
    BlobId, Entry, EntryKind, Keep, Meta, ObjectId, Package, PackageId, TreeId, host_identity,
    identity,
};
use canopy_sandbox::{Namespaces, SHIFTED_IDS, Sandbox, SandboxError, Stdio, Users};
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stream::{Kind, Record};
use worker::{Ended, Job};

/// The commit extension that records what configuring did (JSON of [`Configured`]).
pub const EXTENSION: &str = "configure";

/// The hidden command that runs [`worker::main`].
pub const WORKER_COMMAND: &str = "__configure-worker";

/// How long materializing and harvesting may take beyond the program's own time.
const IO_GRACE: Duration = Duration::from_secs(600);

/// What the commit records about configuring (the [`EXTENSION`] value). Field order and
/// sorted lists make the same facts the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Configured {
    /// Whose scripts ran: `dpkg`.
    pub format: String,
    /// The `SOURCE_DATE_EPOCH` scripts saw (and the time every file started with).
    pub source_date_epoch: i64,
    /// Per package, by name: the scripts that ran, in order.
    pub packages: Vec<PackageScripts>,
    /// Host identity left out of the root, by path.
    pub stripped: Vec<Stripped>,
}

/// The scripts one package ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageScripts {
    /// Package name.
    pub name: String,
    /// Its architecture.
    pub arch: String,
    /// What ran, in order.
    pub scripts: Vec<ScriptRun>,
}

/// One script run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScriptRun {
    /// `preinst`, `postinst`…
    pub script: String,
    /// Its arguments (`install`, `configure`, `triggered ldconfig`…).
    pub args: String,
    /// Its exit status.
    pub status: i32,
}

/// One path left out of the root because each host must have its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stripped {
    /// The path.
    pub path: String,
    /// What it is (`machine id`, `SSH host private key`…).
    pub what: String,
    /// `removed` or `emptied`.
    pub action: String,
}

/// What a format prepared: the tree to configure and the program that configures it.
pub struct Plan {
    /// The union with the format's layout (database, merged-/usr…).
    pub tree: TreeId,
    /// `SOURCE_DATE_EPOCH` for the run: the caller's, else the format's choice (for
    /// Debian, the newest package's build time), so that the same packages give the
    /// same files.
    pub source_date_epoch: i64,
    /// Program run in the root, with its arguments.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Files the program finds in `/run/canopy` (name, mode, content).
    pub files: Vec<(String, u32, Vec<u8>)>,
    /// Files of `/run/canopy` bound read-only over paths of the root for the run only
    /// (name, path).
    pub binds: Vec<(String, String)>,
    /// Directories emptied after the run but for the names given (`/run` but `lock`:
    /// runtime state of the scripts is not part of a root).
    pub empty: Vec<(String, Vec<String>)>,
}

/// What a format says about a package set.
pub enum Prepared {
    /// It cannot be configured, and why (no shell, no package manager in the root).
    Skip(String),
    /// Configure it this way.
    Run(Plan, Box<dyn Report>),
}

/// Reads the program's output as it comes and, at the end, what ran.
pub trait Report: Send {
    /// One line of output; returns what to show as progress, if anything.
    fn line(&mut self, line: &str) -> Option<String>;
    /// What ran, or the failure to report (a failed script with its output).
    fn finish(self: Box<Self>, ended: &Ended) -> Result<Vec<PackageScripts>, ConfigureError>;
}

/// A package format that knows how to configure a root.
pub trait Format: Sync {
    /// Its name, as recorded (`dpkg`).
    fn name(&self) -> &'static str;
    /// Whether the packages are this format's at all.
    fn owns(&self, packages: &[(PackageId, Package)]) -> bool;
    /// Lays the root out for its program, or says why it cannot be configured;
    /// `source_date_epoch` is the caller's, if it fixes one.
    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        source_date_epoch: Option<i64>,
    ) -> Result<Prepared, ConfigureError>;
}

/// The formats canopy configures, in the order they are asked.
pub fn formats() -> &'static [&'static dyn Format] {
    &[&crate::debian::configure::Dpkg]
}

/// How to configure.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The canopy executable to start the worker from (`canopy __configure-worker`).
    pub worker: PathBuf,
    /// How long the format's program may run.
    pub timeout: Duration,
    /// `SOURCE_DATE_EPOCH`, if the caller fixes it; otherwise the newest package's build time.
    pub source_date_epoch: Option<i64>,
}

/// Why configuring failed. The store is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// A maintainer script failed.
    #[error(
        "{package}: {script} failed with exit status {status}; its last lines of output:\n{}",
        indent(output)
    )]
    Script {
        /// Package name.
        package: String,
        /// `postinst`, `preinst`…
        script: String,
        /// Its exit status.
        status: i32,
        /// Its last lines of output.
        output: Vec<String>,
    },
    /// The program failed without a script to blame.
    #[error("{what}; the last lines of output:\n{}", indent(output))]
    Program {
        /// What happened.
        what: String,
        /// The last lines of output.
        output: Vec<String>,
    },
    /// A package lacks what configuring needs.
    #[error("{0}")]
    Package(String),
    /// The sandbox could not be set up.
    #[error("configuring needs a sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The worker failed.
    #[error("configure worker: {0}")]
    Worker(String),
    /// Building the configured tree failed.
    #[error("the configured root: {0}")]
    Tree(#[from] ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What configuring made.
pub struct Outcome {
    /// The configured tree.
    pub tree: TreeId,
    /// What the commit records.
    pub configured: Configured,
    /// How the configured tree differs from the prepared one.
    pub layer: Layer,
}

/// The configuration layer: what scripts changed, after host identity was left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    /// Paths the scripts created.
    pub added: u64,
    /// Paths whose content, kind or metadata they changed.
    pub changed: u64,
    /// Paths they removed.
    pub removed: u64,
    /// Bytes of file content that was not in the prepared root.
    pub new_bytes: u64,
}

/// What configuring reports as it goes.
pub trait Progress: Sync {
    /// The format's progress: a package configured, a trigger processed.
    fn step(&self, message: &str);
    /// One line of the scripts' output.
    fn output(&self, line: &str);
}

/// Configures the root `tree` of `packages` if a format knows how: `Ok(Err(reason))`
/// when none does (no package manager or shell in the root).
pub fn configure(
    txn: &mut Txn<'_>,
    tree: TreeId,
    packages: &[(PackageId, Package)],
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<Result<Outcome, String>, ConfigureError> {
    let Some(format) = formats().iter().find(|f| f.owns(packages)) else {
        return Ok(Err("no package format that canopy configures".into()));
    };
    let (plan, report) = match format.prepare(txn, tree, packages, settings.source_date_epoch)? {
        Prepared::Skip(reason) => return Ok(Err(reason)),
        Prepared::Run(plan, report) => (plan, report),
    };
    let sde = plan.source_date_epoch;
    let (tree, ended, stripped, layer, report) = run(txn, &plan, sde, settings, report, progress)?;
    let packages = report.finish(&ended)?;
    Ok(Ok(Outcome {
        tree,
        configured: Configured {
            format: format.name().to_string(),
            source_date_epoch: sde,
            packages,
            stripped,
        },
        layer,
    }))
}

/// The log lines kept for a failure without a script to blame.
const TAIL: usize = 20;

type RunResult = (TreeId, Ended, Vec<Stripped>, Layer, Box<dyn Report>);

fn run(
    txn: &mut Txn<'_>,
    plan: &Plan,
    sde: i64,
    settings: &Settings,
    report: Box<dyn Report>,
    progress: &dyn Progress,
) -> Result<RunResult, ConfigureError> {
    let tmp = txn.store().path().join("tmp");
    let scratch = tmp.join(format!("configure-{}", std::process::id()));
    let old = leftovers(&tmp, &scratch);
    fs::create_dir(&scratch).map_err(|e| io_err(e, "creating", &scratch))?;
    let users = Users::shifted(SHIFTED_IDS)?.with_caller_at(SHIFTED_IDS);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // The namespace's root must own its scratch directory; root's own ids are
        // never mapped into it.
        let (uid, gid) = (users.host_uid(0), users.host_gid(0));
        std::os::unix::fs::chown(&scratch, uid, gid)
            .map_err(|e| io_err(e, "handing over", &scratch))?;
    }
    let job = Job {
        scratch: scratch.clone(),
        leftovers: old
            .iter()
            .flat_map(|d| [d.join("root"), d.join("io")])
            .filter(|p| p.symlink_metadata().is_ok())
            .collect(),
        program: plan.program.clone(),
        args: plan.args.clone(),
        env: plan.env.clone(),
        files: plan.files.clone(),
        binds: plan.binds.clone(),
        empty: plan.empty.clone(),
        hostname: "localhost".into(),
        mtime: sde,
        timeout_secs: settings.timeout.as_secs().max(1),
        tmpfs: tmpfs_size(txn, &plan.tree)?,
    };
    let result = run_worker(txn, &plan.tree, &job, users, settings, report, progress);
    // The worker emptied them; a worker that died leaves ours for the next configure.
    for dir in old.iter().chain([&scratch]) {
        let _ = fs::remove_dir(dir);
    }
    result
}

/// Scratch directories of configures that did not finish (their process is gone: the
/// store's write lock is ours).
fn leftovers(tmp: &std::path::Path, ours: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(tmp) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p != ours
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("configure-"))
        })
        .collect()
}

fn io_err(e: io::Error, what: &str, p: &std::path::Path) -> ConfigureError {
    ConfigureError::Store(StoreError::Io {
        what: format!("{what} {}", p.display()),
        source: e,
    })
}

/// Starts the worker in its user namespace, streams it the tree, reads the result,
/// and kills it if it outlives the timeout.
fn run_worker(
    txn: &mut Txn<'_>,
    tree: &TreeId,
    job: &Job,
    users: Users,
    settings: &Settings,
    report: Box<dyn Report>,
    progress: &dyn Progress,
) -> Result<RunResult, ConfigureError> {
    let mut sb = Sandbox::new(users);
    sb.namespaces(Namespaces::ALL)
        .env("PATH", canopy_sandbox::DEFAULT_PATH)
        .stdin(Stdio::Piped)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    let mut child = sb.spawn(&settings.worker, [WORKER_COMMAND])?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let limit = settings.timeout + IO_GRACE;
    let deadline = Instant::now() + limit;
    let done = AtomicBool::new(false);
    let worker_said = Mutex::new(Vec::<String>::new());
    let tail = Mutex::new(std::collections::VecDeque::<String>::new());
    let report = Mutex::new(report);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Some(msg) = line.strip_prefix(worker::MESSAGE) {
                    tracing::info!("configure worker: {msg}");
                    worker_said.lock().expect("lock").push(msg.to_string());
                    continue;
                }
                progress.output(&line);
                if let Some(step) = report.lock().expect("lock").line(&line) {
                    progress.step(&step);
                }
                let mut t = tail.lock().expect("lock");
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    let _ = child.signal(libc::SIGKILL);
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = exchange(txn, tree, job, stdin, stdout);
        done.store(true, Ordering::Relaxed);
        r
    });
    let status = child.wait()?;
    let said = worker_said.into_inner().expect("lock");
    let (tree, ended, stripped, layer) = match result {
        Ok(r) if status.success() => r,
        other => {
            let why = said.last().cloned().unwrap_or_else(|| match &other {
                Err(e) => e.to_string(),
                Ok(_) => format!("exited with {status}"),
            });
            if Instant::now() > deadline {
                return Err(ConfigureError::Worker(format!(
                    "did not finish within {}: {why}",
                    humantime::format_duration(limit)
                )));
            }
            return Err(ConfigureError::Worker(why));
        }
    };
    if ended.timed_out {
        return Err(ConfigureError::Program {
            what: format!(
                "the configuration did not finish within {} and was stopped",
                humantime::format_duration(settings.timeout)
            ),
            output: tail.into_inner().expect("lock").into(),
        });
    }
    let report = report.into_inner().expect("lock");
    Ok((tree, ended, stripped, layer, report))
}

/// The size of a tmpfs the scratch root fits in with room for what scripts write, if
/// memory allows: a root in memory configures several times faster (package managers
/// sync their database after every step) and leaves nothing behind if canopy dies.
fn tmpfs_size(txn: &Txn<'_>, tree: &TreeId) -> Result<Option<u64>, ConfigureError> {
    fn size(txn: &Txn<'_>, tree: &TreeId) -> Result<u64, StoreError> {
        let mut total = 0;
        for e in txn.tree(tree)?.entries() {
            total += match &e.kind {
                EntryKind::File { size, .. } => size.div_ceil(4096) * 4096,
                EntryKind::Dir { tree } => 4096 + size(txn, tree)?,
                _ => 0,
            };
        }
        Ok(total)
    }
    let need = size(txn, tree)? * 3 / 2 + (512 << 20);
    let available = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Ok((need < available / 2).then_some(need))
}

type Exchanged = (TreeId, Ended, Vec<Stripped>, Layer);

/// Sends the job and the tree, then reads the configured tree back.
fn exchange(
    txn: &mut Txn<'_>,
    tree: &TreeId,
    job: &Job,
    stdin: fs::File,
    stdout: fs::File,
) -> Result<Exchanged, ConfigureError> {
    let sent = {
        let mut w = BufWriter::with_capacity(1 << 20, stdin);
        let wire = |e: io::Error| ConfigureError::Worker(format!("sending the root: {e}"));
        serde_json::to_writer(&mut w, job).map_err(|e| ConfigureError::Worker(e.to_string()))?;
        w.write_all(b"\n").map_err(wire)?;
        let mut sender = Sender {
            txn,
            out: &mut w,
            sent: HashMap::new(),
            before: HashMap::new(),
        };
        sender.root(tree).map_err(|e| match e {
            SendError::Io(e) => wire(e),
            SendError::Store(e) => e.into(),
        })?;
        let Sender { sent, before, .. } = sender;
        stream::end(&mut w).map_err(wire)?;
        w.flush().map_err(wire)?;
        (sent, before)
    };
    let (sent, before) = sent;
    let mut r = BufReader::with_capacity(1 << 20, stdout);
    let (tree, stripped, layer) = receive(txn, &mut r, &sent, before)?;
    let mut line = Vec::new();
    r.take(1 << 16)
        .read_until(b'\n', &mut line)
        .map_err(|e| ConfigureError::Worker(format!("reading the result: {e}")))?;
    let ended: Ended = serde_json::from_slice(&line)
        .map_err(|e| ConfigureError::Worker(format!("reading the result: {e}")))?;
    Ok((tree, ended, stripped, layer))
}

enum SendError {
    Io(io::Error),
    Store(StoreError),
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(e)
    }
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Store(e)
    }
}

/// Streams a stored tree, each content once.
struct Sender<'a, 't, W> {
    txn: &'a Txn<'t>,
    out: &'a mut W,
    /// Content sent so far.
    sent: HashMap<ObjectId, ()>,
    /// Every path sent with its identity, to measure what configuring changed.
    before: HashMap<Vec<u8>, ObjectId>,
}

/// The identity of a directory's own metadata (its content is compared path by path).
fn dir_identity(meta: &Meta) -> ObjectId {
    identity(
        &EntryKind::Dir {
            tree: TreeId(ObjectId::from_bytes([0; 32])),
        },
        meta,
    )
}

impl<W: Write> Sender<'_, '_, W> {
    fn root(&mut self, tree: &TreeId) -> Result<(), SendError> {
        stream::write(
            self.out,
            &Record {
                path: Vec::new(),
                meta: Meta::ROOT_DIR,
                kind: Kind::Dir,
            },
        )?;
        self.dir(tree, &mut Vec::new())
    }

    fn dir(&mut self, tree: &TreeId, path: &mut Vec<u8>) -> Result<(), SendError> {
        for Entry { name, meta, kind } in self.txn.tree(tree)?.into_entries() {
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let sig = match &kind {
                EntryKind::Dir { .. } => dir_identity(&meta),
                other => identity(other, &meta),
            };
            self.before.insert(path.clone(), sig);
            match kind {
                EntryKind::Dir { tree } => {
                    stream::write(
                        self.out,
                        &Record {
                            path: path.clone(),
                            meta,
                            kind: Kind::Dir,
                        },
                    )?;
                    self.dir(&tree, path)?;
                }
                EntryKind::File { size, blob } => {
                    let inline = self.sent.insert(blob.0, ()).is_none();
                    stream::write(
                        self.out,
                        &Record {
                            path: path.clone(),
                            meta,
                            kind: Kind::File { size, blob, inline },
                        },
                    )?;
                    if inline {
                        let mut reader = HashingReader {
                            inner: self.txn.open_object(&blob.0)?.take(size),
                            hasher: canopy_protocol::Hasher::new(),
                        };
                        let copied = io::copy(&mut reader, self.out)?;
                        let actual = reader.hasher.finish();
                        if copied != size || actual != blob.0 {
                            return Err(SendError::Store(StoreError::Corrupt {
                                id: blob.0,
                                actual,
                            }));
                        }
                    }
                }
                other => stream::write(
                    self.out,
                    &Record {
                        path: path.clone(),
                        meta,
                        kind: Kind::Other(other),
                    },
                )?,
            }
            path.truncate(len);
        }
        Ok(())
    }
}

/// Hashes what passes through, so a damaged object is caught as it is sent.
struct HashingReader<R> {
    inner: R,
    hasher: canopy_protocol::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Builds the configured tree from the worker's stream, leaving out host identity.
fn receive(
    txn: &mut Txn<'_>,
    r: &mut impl Read,
    sent: &HashMap<ObjectId, ()>,
    mut before: HashMap<Vec<u8>, ObjectId>,
) -> Result<(TreeId, Vec<Stripped>, Layer), ConfigureError> {
    let bad = |e: io::Error| ConfigureError::Worker(format!("reading the configured root: {e}"));
    let mut builder = TreeBuilder::new(Limits::default().max_entries);
    let mut stripped = Vec::new();
    let mut layer = Layer::default();
    let mut skipping: Option<Vec<u8>> = None;
    let (empty, _) = txn
        .put_blob(&b""[..])
        .map_err(|e| ImportError::from_blob(e, "an empty file"))?;
    while let Some(rec) = stream::read(r).map_err(bad)? {
        let inline_size = match &rec.kind {
            Kind::File {
                size, inline: true, ..
            } => *size,
            _ => 0,
        };
        if rec.path.is_empty() {
            continue;
        }
        let under_skipped = skipping
            .as_ref()
            .is_some_and(|s| rec.path.starts_with(s) && rec.path.get(s.len()) == Some(&b'/'));
        if under_skipped {
            io::copy(&mut r.take(inline_size), &mut io::sink()).map_err(bad)?;
            continue;
        }
        skipping = None;
        let shown = format!("/{}", String::from_utf8_lossy(&rec.path));
        let (meta, kind) = match (host_identity(&shown), &rec.kind) {
            (Some(rule), kind) => {
                let file = matches!(kind, Kind::File { .. });
                let size = match kind {
                    Kind::File { size, .. } => *size,
                    _ => 0,
                };
                let action = match rule.keep {
                    Keep::Nothing => Some("removed"),
                    Keep::EmptyFile if file && size == 0 => None,
                    Keep::EmptyFile if file => Some("emptied"),
                    Keep::EmptyFile => Some("removed"),
                    Keep::EmptyFiles if file && size > 0 => Some("removed"),
                    Keep::EmptyFiles => None,
                };
                if let Some(action) = action {
                    io::copy(&mut r.take(inline_size), &mut io::sink()).map_err(bad)?;
                    stripped.push(Stripped {
                        path: shown.clone(),
                        what: rule.what.to_string(),
                        action: action.to_string(),
                    });
                    if action == "removed" {
                        if matches!(kind, Kind::Dir) {
                            skipping = Some(rec.path.clone());
                        }
                        continue;
                    }
                    (
                        rec.meta.clone(),
                        EntryKind::File {
                            size: 0,
                            blob: empty,
                        },
                    )
                } else {
                    content(txn, r, &rec, sent)?
                }
            }
            _ => content(txn, r, &rec, sent)?,
        };
        let sig = match &kind {
            EntryKind::Dir { .. } => dir_identity(&meta),
            other => identity(other, &meta),
        };
        match before.remove(&rec.path) {
            None => layer.added += 1,
            Some(old) if old != sig => layer.changed += 1,
            Some(_) => {}
        }
        if let (EntryKind::File { size, .. }, Kind::File { inline: true, .. }) = (&kind, &rec.kind)
        {
            layer.new_bytes += size;
        }
        let path = ArchivePath::parse(&rec.path)?;
        match kind {
            EntryKind::Dir { .. } => builder.add_dir(&path, meta)?,
            kind => builder.add_leaf(&path, meta, kind)?,
        }
    }
    layer.removed = before.len() as u64;
    stripped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((builder.write(txn)?, stripped, layer))
}

/// The entry a record stands for, its inline content stored and checked.
fn content(
    txn: &mut Txn<'_>,
    r: &mut impl Read,
    rec: &Record,
    sent: &HashMap<ObjectId, ()>,
) -> Result<(Meta, EntryKind), ConfigureError> {
    let kind = match &rec.kind {
        Kind::Dir => EntryKind::Dir {
            tree: TreeId(ObjectId::from_bytes([0; 32])),
        },
        Kind::Other(kind) => kind.clone(),
        Kind::File { size, blob, inline } => {
            if *inline {
                let (stored, got) = txn.put_blob(r.take(*size)).map_err(|e| match e {
                    BlobError::Source(e) => {
                        ConfigureError::Worker(format!("reading the configured root: {e}"))
                    }
                    BlobError::Store(e) => e.into(),
                })?;
                if got != *size || stored != *blob {
                    return Err(ConfigureError::Worker(format!(
                        "/{}: the content sent is not the content announced",
                        String::from_utf8_lossy(&rec.path)
                    )));
                }
            } else if !sent.contains_key(&blob.0) {
                return Err(ConfigureError::Worker(format!(
                    "/{}: refers to content canopy never sent",
                    String::from_utf8_lossy(&rec.path)
                )));
            }
            EntryKind::File {
                size: *size,
                blob: BlobId(blob.0),
            }
        }
    };
    Ok((rec.meta.clone(), kind))
}
