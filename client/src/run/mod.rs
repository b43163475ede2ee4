//! `canopy run`: a command in a root, in its own namespaces, with per-host writable
//! state.
//!
//! - [`source`]: the root — a pinned view of a root (local store, server) served over
//!   FUSE inside the run, or a host directory;
//! - [`command`]: what runs, as whom, where: the caller's command or the image's,
//!   labels, users of the root's own account files;
//! - [`state`]: `/etc` and `/var` as overlays over the root, kept in `--state DIR`;
//! - [`container`]: the mounts and namespaces, on `canopy-sandbox`;
//! - [`runtime`]: the directories `/run` starts with;
//! - [`signals`]: signals for canopy go to the command.
//!
//! By default a run is unprivileged: a user namespace in which the caller is root
//! (ids around it mapped from `/etc/subuid`; for root an identity map), its own mount,
//! PID, IPC and UTS namespaces, the host's network unless `--network none`. `--spc`
//! (root only) shares the host's network, IPC and PID namespaces and shows the host's
//! `/` at `/host`.

pub mod command;
mod container;
mod runtime;
pub mod signals;
pub mod source;
pub mod state;

use crate::host::HostConfig;
use crate::mount::{MountError, current, load, verified_commit};
use crate::objects::Fetched;
use crate::view::{Scope, View};
use canopy_cache::Cache;
use canopy_protocol::{CommitId, HOST_IDENTITY, PerHost};
use canopy_sandbox::SandboxError;
pub use command::Label;
pub use source::Source;
use state::State;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a run could not start (its command's own failures are its exit status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// Preparing the run failed.
    #[error("{0}")]
    Setup(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory cannot be used by this run.
    #[error("state directory {dir}: {detail}")]
    State {
        /// The directory.
        dir: PathBuf,
        /// Why, and what to do.
        detail: String,
    },
    /// The command does not exist in the root (exit status 127).
    #[error("{0}")]
    NotFound(String),
    /// The command exists but cannot be executed (exit status 126).
    #[error("{0}")]
    CannotRun(String),
    /// The sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Loading the root from a server failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}

impl RunError {
    /// The exit status canopy ends with for this error, as shells and `docker run` do:
    /// 127 command not found, 126 not executable, 125 anything else of canopy's.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::NotFound(_) => 127,
            RunError::CannotRun(_) => 126,
            _ => 125,
        }
    }

    fn from_spawn(e: SandboxError, program: &str) -> RunError {
        match &e {
            SandboxError::Setup { step, source } if step.starts_with("running ") => {
                let msg = format!("cannot run {program} in the root: {}", source.desc());
                match source {
                    nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {
                        RunError::NotFound(msg)
                    }
                    _ => RunError::CannotRun(msg),
                }
            }
            _ => RunError::Sandbox(e),
        }
    }
}

/// A `--bind SRC:DST[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the run.
    pub target: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// A run, validated.
pub struct RunConfig {
    /// The name: `NAME` of labels and the default hostname (the root's name).
    pub name: String,
    /// `IMAGE` of labels: the root's name.
    pub image_name: String,
    /// The command after `--` (arguments to the image's entrypoint, if it has one).
    pub args: Vec<String>,
    /// Run one of the image's labels instead.
    pub label: Option<Label>,
    /// `--user USER[:GROUP]`.
    pub user: Option<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--env KEY=VALUE`, in order (they override the image's).
    pub env: Vec<(String, String)>,
    /// The hostname inside.
    pub hostname: String,
    /// The host's network (false: `--network none`, loopback only).
    pub host_network: bool,
    /// `--bind`s.
    pub binds: Vec<Bind>,
    /// `--state DIR`; none: a temporary state.
    pub state: Option<PathBuf>,
    /// `--spc`.
    pub spc: bool,
    /// Where the run's FUSE view of a [`Source::View`] reads file contents, instead of
    /// the source's objects: what the program reads, and nothing canopy reads itself
    /// (`/etc/passwd`, `/etc/group`, `/etc/machine-id`), goes through it
    /// (`canopy profile record` notes those reads).
    pub view_objects: Option<Arc<dyn crate::objects::Objects>>,
}

/// Blocks the signals a run hands to its command; call it first, before any thread
/// (a runtime, a FUSE session) is started.
pub fn prepare() {
    signals::block();
}

/// A root `name` on a server, at `commit` or its current one, verified with the
/// host's trusted key. As root, a canopy mount of the host that shows that commit is
/// used as it is (sharing its cache and inodes); otherwise the root is read through
/// the host's cache by a view of the run's own. The runtime must live as long as the
/// source.
pub fn server_source(
    host: &HostConfig,
    name: &str,
    commit: Option<CommitId>,
) -> Result<(Source, tokio::runtime::Runtime), RunError> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| RunError::Setup(format!("starting the runtime: {e}")))?;
    let remote = Arc::new(
        host.remote()
            .map_err(|e| RunError::Setup(format!("HTTP client: {e}")))?,
    );
    let commit = match commit {
        Some(c) => c,
        None => rt.block_on(current(&remote, name))?,
    };
    if is_root() {
        let body = rt.block_on(verified_commit(&remote, &host.trust, name, commit))?;
        if let Some(path) = source::host_mount_of(name, &commit) {
            tracing::info!("running {name} from the host's mount {}", path.display());
            return Ok((
                Source::Dir {
                    path,
                    image: image_of(&body.body),
                },
                rt,
            ));
        }
    }
    let (version, body, trees) = rt.block_on(load(&remote, &host.trust, name, commit, None))?;
    let view = Arc::new(View::new(Scope::One(name.to_string())));
    view.install(name, version, trees);
    let cache = Arc::new(Cache::open(&host.cache_dir, host.cache_size).map_err(MountError::from)?);
    // A cold cache fills in profile order while the run sets up and starts.
    let replay = host.replay(&view, &remote);
    let objects = Fetched::new(cache, remote, rt.handle().clone()).with_replay(replay.clone());
    if let Some(r) = &replay {
        r.shown();
    }
    let source = Source::View {
        view,
        objects: Arc::new(objects),
        commit,
        image: image_of(&body.body),
    };
    Ok((source, rt))
}

fn image_of(body: &canopy_protocol::CommitBody) -> Option<Box<canopy_protocol::ImageConfig>> {
    body.extensions
        .get(canopy_protocol::IMAGE_EXTENSION)
        .and_then(|v| canopy_protocol::ImageConfig::from_json(v).ok())
        .map(Box::new)
}

/// Where a run keeps its scratch directory: `$XDG_RUNTIME_DIR`, else `/run` for
/// root, else the temporary directory.
fn run_dir() -> Result<PathBuf, RunError> {
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ if is_root() => PathBuf::from("/run"),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("canopy-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

/// Removes the run's scratch directory when the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the command; returns its exit status (128 + N if killed by signal N).
/// `announce` hears the command line of a label before it runs.
pub fn run(cfg: &RunConfig, source: &Source, announce: &dyn Fn(&str)) -> Result<i32, RunError> {
    if cfg.spc && !is_root() {
        return Err(RunError::Usage(
            "--spc needs root: a super-privileged run shares the host's namespaces and sees its whole filesystem at /host".into(),
        ));
    }
    let image = source.image();
    let argv = match cfg.label {
        Some(label) => {
            let words = command::label_command(image, label, &cfg.image_name, &cfg.name)?;
            announce(&format!(
                "{}: {}",
                label.key(),
                shlex::try_join(words.iter().map(String::as_str)).unwrap_or_default()
            ));
            words
        }
        None => command::command(image, &cfg.args)?,
    };
    let passwd = source.read("/etc/passwd", 4 << 20).unwrap_or_default();
    let group = source.read("/etc/group", 4 << 20).unwrap_or_default();
    let (passwd, group) = (
        String::from_utf8_lossy(&passwd),
        String::from_utf8_lossy(&group),
    );
    let spec = cfg
        .user
        .clone()
        .or_else(|| image.map(|i| i.user.clone()))
        .unwrap_or_default();
    let ids = command::resolve_user(&spec, &passwd, &group)?;
    let user_name = passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&ids.uid.to_string()))
        .and_then(|l| l.split(':').next());
    let groups = command::groups(user_name, &group);
    let home = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == ids.uid.to_string())
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| {
            if ids.uid == 0 {
                "/root".into()
            } else {
                "/".into()
            }
        });
    let cwd = cfg
        .workdir
        .clone()
        .or_else(|| {
            image
                .map(|i| i.working_dir.clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".into());
    let env = environment(cfg, image, &home);

    let users = container::users(cfg.spc)?;
    if users.host_uid(ids.uid).is_none() || users.host_gid(ids.gid).is_none() {
        return Err(RunError::Usage(format!(
            "user {}:{} does not exist in the run: its user namespace maps ids 0 to {} \
             (and, for a caller without /etc/subuid and /etc/subgid ranges, only 0)",
            ids.uid,
            ids.gid,
            canopy_sandbox::SHIFTED_IDS - 1
        )));
    }
    let root_ids = (
        users.host_uid(0).unwrap_or(0),
        users.host_gid(0).unwrap_or(0),
    );
    let scratch = Scratch(run_dir()?);
    let xattrs = container::xattrs(cfg.spc);
    let mut state = match &cfg.state {
        Some(dir) => State::open(dir, xattrs, root_ids)?,
        None => State::temporary(&scratch.0, xattrs, root_ids)?,
    };
    for name in state::WRITABLE {
        if let Some(s) = source.stat(&format!("/{name}")).filter(|s| s.dir) {
            let host = |inside: u32, f: &dyn Fn(u32) -> Option<u32>| f(inside).unwrap_or(inside);
            state.match_root_dir(
                name,
                s.mode,
                host(s.uid, &|i| users.host_uid(i)),
                host(s.gid, &|i| users.host_gid(i)),
            )?;
        }
    }
    identity(cfg, source, &mut state, &users, &scratch.0)?;
    let process = container::Process {
        argv: &argv,
        env: &env,
        ids: (ids.uid, ids.gid, groups),
        cwd: &cwd,
        quiet: false,
    };
    let status = container::execute(cfg, source, &state, &users, &scratch.0, &process)?;
    drop(state);
    drop(scratch);
    Ok(exit_code(status))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The command's environment: the image's (or a default `PATH`), `HOME`, `TERM` and
/// `container`, then `--env`.
fn environment(
    cfg: &RunConfig,
    image: Option<&canopy_protocol::ImageConfig>,
    home: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    set("PATH", canopy_sandbox::DEFAULT_PATH);
    set("HOME", home);
    set("HOSTNAME", &cfg.hostname);
    set("container", "canopy");
    if let Ok(term) = std::env::var("TERM") {
        set("TERM", &term);
    }
    for kv in image.map(|i| i.env.as_slice()).unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            set(k, v);
        }
    }
    if cfg.spc {
        set("HOST", "/host");
        set("NAME", &cfg.name);
        set("IMAGE", &cfg.image_name);
    }
    for (k, v) in &cfg.env {
        set(k, v);
    }
    env
}

/// Creates what each host needs of its own (the host identity list) where the root
/// expects it: a machine id in an empty `/etc/machine-id`, on every run; with a
/// `--state`, once, SSH host keys and the like, by running the root's own tools.
fn identity(
    cfg: &RunConfig,
    source: &Source,
    state: &mut State,
    users: &canopy_sandbox::Users,
    scratch: &Path,
) -> Result<(), RunError> {
    let mut commands: Vec<(&str, &str)> = Vec::new();
    for rule in HOST_IDENTITY {
        match rule.per_host {
            PerHost::MachineId => {
                let empty = source
                    .stat(rule.pattern)
                    .is_some_and(|s| !s.dir && !s.symlink)
                    && source.read(rule.pattern, 1).is_some_and(|b| b.is_empty());
                let rel = rule.pattern.trim_start_matches("/etc/");
                let target = state.upper("etc").join(rel);
                if empty && !target.exists() {
                    let id: [u8; 16] = rand_bytes()?;
                    let mut text: String = id.iter().map(|b| format!("{b:02x}")).collect();
                    text.push('\n');
                    std::fs::write(&target, text)
                        .and_then(|()| {
                            std::fs::set_permissions(
                                &target,
                                std::os::unix::fs::PermissionsExt::from_mode(0o444),
                            )
                        })
                        .map_err(|source| RunError::Io {
                            what: format!("writing {}", target.display()),
                            source,
                        })?;
                    state.add_identity(rule.pattern)?;
                }
            }
            PerHost::Command(line) => {
                let program = line.split_whitespace().next().unwrap_or_default();
                let dir = rule.pattern.rsplit_once('/').map_or("/", |(d, _)| d);
                let expects =
                    source.has_program(program) && source.stat(dir).is_some_and(|s| s.dir);
                if cfg.state.is_some()
                    && expects
                    && !state.has_identity(rule.pattern)
                    && !commands.iter().any(|(l, _)| *l == line)
                {
                    commands.push((line, rule.pattern));
                }
            }
            PerHost::Created => {}
        }
    }
    for (line, _) in &commands {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        tracing::info!(
            "creating host identity in {}: {line}",
            state.dir().display()
        );
        let mut env = environment(cfg, None, "/root");
        // Tools such as make-ssl-cert ask debconf, which has no terminal here.
        env.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        let process = container::Process {
            argv: &argv,
            env: &env,
            ids: (0, 0, Vec::new()),
            cwd: "/",
            quiet: true,
        };
        let status = container::execute(cfg, source, state, users, scratch, &process)?;
        if !status.success() {
            tracing::warn!("{line} failed ({status}) in the root; its files are not in the state");
            continue;
        }
        let done: Vec<&str> = HOST_IDENTITY
            .iter()
            .filter(|r| r.per_host == PerHost::Command(line))
            .map(|r| r.pattern)
            .collect();
        for pattern in done {
            state.add_identity(pattern)?;
        }
    }
    Ok(())
}

fn rand_bytes() -> Result<[u8; 16], RunError> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|source| RunError::Io {
            what: "reading /dev/urandom".into(),
            source,
        })?;
    Ok(b)
}

/// What the host changed in state directory `dir` against `source`'s root.
pub fn diff(dir: &Path, source: &Source) -> Result<Vec<(char, String)>, RunError> {
    state::diff(dir, &|p| source.stat(p).is_some())
}
