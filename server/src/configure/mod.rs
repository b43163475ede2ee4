//! Configuring a root: running its packages' scripts once, at assemble time, so that
//! users, alternatives, the package database and generated files are part of the root
//! every host gets.
//!
//! A package format's [`Configurer`] (Debian's is [`crate::debian::configure`]) lays the
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

mod exchange;
mod stream;
pub mod worker;

use crate::import::ImportError;
use crate::store::{StoreError, Txn};
use canopy_protocol::{EntryKind, Package, PackageId, TreeId};
use canopy_sandbox::{Namespaces, SHIFTED_IDS, Sandbox, SandboxError, Stdio, Users};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
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
    /// What the format has to say beyond the scripts that ran (a scriptlet it could not
    /// run, an owner given to root), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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
    /// The script running now, as `PACKAGE's SCRIPT (ARGS)`, if the output says.
    fn running(&self) -> Option<String>;
    /// What the record should note besides what ran (see [`Configured::notes`]).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// What ran, or the failure to report (a failed script with its output).
    fn finish(self: Box<Self>, ended: &Ended) -> Result<Vec<PackageScripts>, ConfigureError>;
}

/// What comes after a run of the format's program.
pub enum Next {
    /// Another run on the tree it made (RPM: `%post` after owners are set).
    Run(Plan, Box<dyn Report>),
    /// The configured tree.
    Done(TreeId),
}

/// How a package format configures a root ([`crate::format::Format::configurer`]).
pub trait Configurer: Sync {
    /// Its name, as recorded (`dpkg`).
    fn name(&self) -> &'static str;
    /// Lays the root out for its program, or says why it cannot be configured.
    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        settings: &Settings,
    ) -> Result<Prepared, ConfigureError>;

    /// What follows run number `runs` (from 1), which made `tree`: another run, or
    /// the configured tree; with notes for the record. By default, nothing follows.
    fn then(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        settings: &Settings,
        runs: usize,
    ) -> Result<(Next, Vec<String>), ConfigureError> {
        let _ = (txn, packages, settings, runs);
        Ok((Next::Done(tree), Vec::new()))
    }

    /// Whether [`Configurer::unpacked`] changes the union (RPM: owners by name and
    /// directory modes from the headers); by default it does not.
    fn lays_out(&self) -> bool {
        false
    }

    /// The root as the package manager leaves it when no script runs (the recipe says
    /// `no-configure`, or the root cannot be configured), with warnings to show; by
    /// default the union itself.
    fn unpacked(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        unknown_owner_root: bool,
    ) -> Result<(TreeId, Vec<String>), ConfigureError> {
        let _ = (txn, packages, unknown_owner_root);
        Ok((tree, Vec::new()))
    }
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
    /// Give files whose owner the root does not know (by name, as RPM headers name
    /// them) to root, with a warning, instead of failing.
    pub unknown_owner_root: bool,
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
    let format = crate::format::of_packages(packages).map_err(ConfigureError::Package)?;
    let Some(format) = format.and_then(|f| f.configurer()) else {
        return Ok(Err("no package format that canopy configures".into()));
    };
    let (mut plan, mut report) = match format.prepare(txn, tree, packages, settings)? {
        Prepared::Skip(reason) => return Ok(Err(reason)),
        Prepared::Run(plan, report) => (plan, report),
    };
    let sde = plan.source_date_epoch;
    let mut ran: Vec<PackageScripts> = Vec::new();
    let mut stripped: Vec<Stripped> = Vec::new();
    let mut notes = Vec::new();
    let mut layer = Layer::default();
    let mut runs = 0;
    let tree = loop {
        let (tree, ended, more_stripped, more, finished) =
            run(txn, &plan, sde, settings, report, progress)?;
        runs += 1;
        notes.extend(finished.notes());
        for p in finished.finish(&ended)? {
            match ran.iter_mut().find(|q| q.name == p.name) {
                Some(q) => q.scripts.extend(p.scripts),
                None => ran.push(p),
            }
        }
        for s in more_stripped {
            if !stripped.iter().any(|t| t.path == s.path) {
                stripped.push(s);
            }
        }
        layer.added += more.added;
        layer.changed += more.changed;
        layer.removed += more.removed;
        layer.new_bytes += more.new_bytes;
        let (next, more_notes) = format.then(txn, tree, packages, settings, runs)?;
        notes.extend(more_notes);
        match next {
            Next::Done(tree) => break tree,
            Next::Run(p, r) => (plan, report) = (p, r),
        }
    };
    ran.sort_by(|a, b| a.name.cmp(&b.name));
    stripped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Ok(Outcome {
        tree,
        configured: Configured {
            format: format.name().to_string(),
            source_date_epoch: sde,
            packages: ran,
            stripped,
            notes,
        },
        layer,
    }))
}

/// Whether the package manager of `packages` changes the union when no script runs
/// ([`Configurer::lays_out`]).
pub fn lays_out(packages: &[(PackageId, Package)]) -> bool {
    crate::format::of_packages(packages)
        .ok()
        .flatten()
        .and_then(|f| f.configurer())
        .is_some_and(|c| c.lays_out())
}

/// The root of `packages` as their package manager leaves it when no script runs
/// ([`Configurer::unpacked`]), with warnings to show.
pub fn unpacked(
    txn: &mut Txn<'_>,
    tree: TreeId,
    packages: &[(PackageId, Package)],
    unknown_owner_root: bool,
) -> Result<(TreeId, Vec<String>), ConfigureError> {
    let format = crate::format::of_packages(packages).map_err(ConfigureError::Package)?;
    match format.and_then(|f| f.configurer()) {
        None => Ok((tree, Vec::new())),
        Some(c) => c.unpacked(txn, tree, packages, unknown_owner_root),
    }
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
    // Absolute: the worker starts in another directory (a store given as `--store s`).
    let tmp = std::path::absolute(txn.store().path().join("tmp"))
        .map_err(|e| io_err(e, "resolving", txn.store().path()))?;
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
    // The worker's ids may not search the directories above the executable and the
    // scratch directory (canopy in `/root/.cargo/bin`, a store in a home of mode 0700):
    // it runs the executable through a descriptor opened here and enters the scratch
    // directory with the caller's ids.
    let exe = File::open(&settings.worker).map_err(|e| io_err(e, "opening", &settings.worker))?;
    let program = format!("/proc/self/fd/{}", exe.as_raw_fd());
    let mut sb = Sandbox::new(users);
    sb.namespaces(Namespaces::ALL)
        .cwd(&job.scratch)
        .cwd_first()
        .env("PATH", canopy_sandbox::DEFAULT_PATH)
        .stdin(Stdio::Piped)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    let mut child = sb.spawn(&program, [WORKER_COMMAND])?;
    drop(exe);
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
        let r = exchange::exchange(txn, tree, job, stdin, stdout);
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
    let report = report.into_inner().expect("lock");
    if ended.timed_out {
        let running = report
            .running()
            .map(|r| format!(" while {r} ran"))
            .unwrap_or_default();
        return Err(ConfigureError::Program {
            what: format!(
                "the configuration did not finish within {} and was stopped{running} \
                 (--configure-timeout sets the limit)",
                humantime::format_duration(settings.timeout)
            ),
            output: tail.into_inner().expect("lock").into(),
        });
    }
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
