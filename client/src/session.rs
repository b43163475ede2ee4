//! The life of a `canopy mount` process: mount anew, take a live mount over from the
//! process serving it ([`crate::handover`]), or resume one whose process is gone from
//! the service manager's descriptor store ([`crate::service`]); then serve, follow,
//! and end by unmounting, by handing the mount over, or (under a service manager that
//! holds the connection) by leaving it to the next process.

use crate::fs::{CanopyFs, forget_stale};
use crate::handover::{self, Shown};
use crate::mode_table::ModeTable;
use crate::mount::{
    MountConfig, MountError, detach, find_commit, fuse_session, load, parse_commit, refresh,
    session_config, unmount,
};
use crate::open_files::Files;
use crate::remote::Remote;
use crate::service::{self, Resumable, State, Stored};
use crate::view::{Scope, View};
use canopy_cache::Cache;
use canopy_protocol::VerifyingKey;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The versions a view has shown, as a hand-over lists them.
pub(crate) fn shown(view: &View) -> Vec<Shown> {
    view.history()
        .into_iter()
        .map(|i| Shown {
            entry: i.entry,
            commit: i.version.commit.to_string(),
        })
        .collect()
}

/// Shows, in order, the versions a predecessor showed that `view` has not shown yet
/// (the kernel may hold inodes of any of them). Returns whether it showed any.
pub(crate) async fn show_history(
    remote: &Remote,
    view: &View,
    trust: &VerifyingKey,
    history: &[Shown],
) -> Result<bool, MountError> {
    let known = shown(view);
    let mut any = false;
    for s in history.iter().filter(|s| !known.contains(s)) {
        let root = s.entry.split('@').next().unwrap_or(&s.entry);
        let commit = parse_commit(root, &s.commit)?;
        let (version, _, trees) = load(remote, trust, root, commit, Some(view)).await?;
        view.install(&s.entry, version, trees);
        any = true;
    }
    Ok(any)
}

/// How this process comes to serve the mount.
enum Start {
    /// Mount anew.
    Fresh,
    /// Take it over from the live process serving it.
    Live(handover::Pending),
    /// Resume the connection the service manager kept, with the state beside it.
    Stored(Resumable),
}

/// Decides how to start: a live process answering at the mount's socket hands it over;
/// else a connection kept by the service manager is resumed if it was served with the
/// same options (else it is let go and the mount made anew).
fn start(cfg: &MountConfig, stored: Option<Stored>) -> Result<Start, MountError> {
    let options = cfg.handover_options();
    let mut stored = stored.filter(|s| s.has_connection());
    if cfg.take_over
        && let Some(pending) = handover::ask(&cfg.mountpoint, &options)?
    {
        return Ok(Start::Live(pending));
    }
    let Some(stored) = stored.as_mut() else {
        if cfg.take_over {
            return Err(MountError::Mount {
                path: cfg.mountpoint.clone(),
                reason: format!(
                    "it is a canopy mount whose process does not answer at {} (an older canopy?): \
                     stop it (`umount {}`) and mount again",
                    handover::socket_path(&cfg.mountpoint).display(),
                    cfg.mountpoint.display()
                ),
            });
        }
        return Ok(Start::Fresh);
    };
    Ok(stored
        .resume(&cfg.mountpoint, &options, "the service manager")
        .map_or(Start::Fresh, Start::Stored))
}

/// Mounts and serves until unmounted (`umount`) or until `shutdown` resolves (then
/// unmounts cleanly), or until a successor takes the mount over (then exits, the
/// mount staying). With `take_over`, takes the mount over from the live process
/// serving it instead of mounting; with a connection kept by the service manager,
/// resumes it. `on_ready` runs once the mount is live.
pub fn run(
    mut cfg: MountConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), MountError> {
    let (rt, remote) = cfg.host.connect()?;
    let view = Arc::new(View::new(cfg.scope.clone()).keeping_versions());
    let found = match (&cfg.scope, &cfg.commit) {
        (Scope::One(root), Some(prefix)) => {
            let found = rt.block_on(find_commit(&remote, root, prefix));
            // Resuming from the store, the commit shown before does when no server
            // answers (below); otherwise a commit not found is an error at once.
            if cfg.stored.is_none() {
                Some(Ok(found?))
            } else {
                Some(found)
            }
        }
        _ => None,
    };
    let trust = cfg.host.trust;
    let stored = cfg.stored.take();
    let how = start(&cfg, stored)?;
    let history = match &how {
        Start::Fresh => Vec::new(),
        Start::Live(pending) => pending.offer.history.clone(),
        Start::Stored(Resumable { state, .. }) => state.history.clone(),
    };
    let pinned = match found {
        Some(Ok(commit)) => Some(commit),
        Some(Err(e)) => {
            let prefix = cfg
                .commit
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let shown = history.iter().rev().find(|s| s.commit.starts_with(&prefix));
            let Some(shown) = shown else {
                return Err(e);
            };
            tracing::warn!("{e}: showing commit {} as before", shown.commit);
            Some(parse_commit(&shown.entry, &shown.commit)?)
        }
        None => None,
    };
    if service::has_store() {
        service::keep_versions_in(service::versions_path(&handover::socket_path(
            &cfg.mountpoint,
        )));
    }
    rt.block_on(show_history(&remote, &view, &trust, &history))?;
    // A process taking a mount over shows what the kernel saw until it serves, and
    // moves on to the server's versions then, when the kernel can be told what that
    // makes stale (see below).
    let moves_on_later = !history.is_empty();
    if !moves_on_later {
        rt.block_on(refresh(&remote, &view, &trust, pinned))?;
    }

    let following = cfg.follow.is_some() && pinned.is_none();
    let replay = cfg.host.replay(&view, &remote);
    let fs = |cache| {
        cfg.host
            .filesystem(&view, &remote, rt.handle(), cache, replay.as_ref())
    };
    let failed = |reason: String| MountError::Mount {
        path: cfg.mountpoint.clone(),
        reason,
    };
    let (mut session, files, resumed, table) = match how {
        Start::Fresh => {
            let cache = Arc::new(Cache::open(&cfg.host.cache_dir, cfg.host.cache_size)?);
            let fs = fs(cache);
            let files = fs.files();
            (fuse_session(fs, &cfg.mountpoint)?, files, false, None)
        }
        Start::Live(pending) => {
            let taken = pending.take()?;
            rt.block_on(show_history(&remote, &view, &trust, &taken.history))?;
            view.index();
            let fs = fs(cfg.host.open_cache_released()?);
            let files = fs.files();
            let session = resume(fs, &files, taken.device, &taken.init).map_err(failed)?;
            let (open, through) = files.adopt(taken.files).map_err(failed)?;
            tracing::info!(
                "took the mount over: serving {} ({open} open files taken over, {through} of them \
                 read through passthrough)",
                cfg.mountpoint.display()
            );
            (session, files, true, None)
        }
        Start::Stored(Resumable {
            device,
            modes,
            state,
        }) => {
            view.index();
            let fs = fs(cfg.host.open_cache_released()?);
            let files = fs.files();
            let (session, table) =
                resume_stored(fs, &files, device, modes, &state).map_err(failed)?;
            tracing::info!(
                "resumed the mount at {} from the connection the service manager kept",
                cfg.mountpoint.display()
            );
            (session, files, true, table)
        }
    };
    forget_stale(&view, session.notifier(), files.clone());
    let device = files.device().expect("attached with the session");
    if resumed {
        // Requests the process before had read and not answered come again.
        handover::resend(&*device)
            .map_err(|e| failed(format!("asking the kernel to resend: {e}")))?;
    }
    let socket = handover::socket_path(&cfg.mountpoint);
    let stored = keep_in_store(cfg.handover_options(), &files, table, &view, &socket);
    if let Err(e) = service::notify("READY=1", &[]) {
        tracing::warn!("telling the service manager the mount is ready: {e}");
    }
    let listening = handover::listen(&socket, cfg.handover_options(), files, {
        let view = view.clone();
        move || shown(&view)
    });
    if let Err(e) = &listening {
        tracing::warn!("no live hand-over for this mount: {e}");
    }
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    // Poll `shutdown` once before saying the mount is ready: signal handlers register
    // on the first poll, and a SIGTERM sent right after "mounted" must find them (not
    // the default action, which kills the process and leaves the mount behind).
    let mut shutdown = Box::pin(shutdown);
    let fired = rt.block_on(std::future::poll_fn(|cx| {
        std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready())
    }));
    let in_store = stored.is_some();
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    rt.spawn(async move {
        if !fired {
            shutdown.await;
        }
        stop.store(true, Ordering::SeqCst);
        if in_store {
            tracing::info!(
                "leaving the mount at {} to the service manager, which keeps its connection: \
                 the next canopy mount resumes it (umount it to take it away)",
                mountpoint.display()
            );
            // No destructor runs: nothing unmounts.
            std::process::exit(0);
        }
        if resumed {
            // This process did not mount: fuser knows no mount to take away.
            unmount_path(&mountpoint);
        } else {
            unmount(&mut unmounter, &mountpoint);
        }
    });
    let follow = cfg.follow.filter(|_| following);
    if moves_on_later || follow.is_some() {
        let view = view.clone();
        let replay = replay.clone();
        rt.spawn(async move {
            let mut now = moves_on_later;
            loop {
                match follow {
                    _ if now => now = false,
                    Some(interval) => tokio::time::sleep(interval).await,
                    None => break,
                }
                let before = view.history().len();
                if let Err(e) = refresh(&remote, &view, &trust, pinned).await {
                    tracing::warn!("following: {e}; keeping the current versions");
                }
                if let Some(r) = &replay {
                    r.shown();
                }
                if let Some(state) = &stored
                    && view.history().len() != before
                {
                    state.update(shown(&view));
                }
            }
        });
    }
    if let Some(r) = &replay {
        // Right as the mount serves: a cold cache fills in the order programs read.
        r.shown();
    }
    on_ready();
    let result = session.run();
    drop(listening);
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        // Aborted (through /sys/fs/fuse/connections) once asked to stop, as while a
        // mount detached busy waits for its last open file to close: it was ending.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            if stopping.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(MountError::Mount {
                    path: cfg.mountpoint,
                    reason: "its FUSE connection was aborted (through \
                             /sys/fs/fuse/connections/N/abort): the mount is gone; mount it again"
                        .into(),
                })
            }
        }
        other => other.map_err(|e| MountError::Mount {
            path: cfg.mountpoint,
            reason: e.to_string(),
        }),
    }
}

/// A FUSE session on a live connection `device` for `fs`, whose open files are
/// `files`.
pub(crate) fn resume(
    fs: CanopyFs,
    files: &Files,
    device: OwnedFd,
    init: &crate::open_files::KernelInit,
) -> Result<fuser::Session<CanopyFs>, String> {
    let copy = device
        .try_clone()
        .map_err(|e| format!("duplicating the FUSE descriptor: {e}"))?;
    files.attach(copy);
    handover::resume(fs, device, init, session_config())
        .map_err(|e| format!("resuming the FUSE session: {e}"))
}

/// A FUSE session for `fs` on a connection `device` kept by the service manager, with
/// the table of I/O modes kept beside it (`modes`), whose recorded open files `files`
/// adopts; `state` is the state file the process before wrote.
pub(crate) fn resume_stored(
    fs: CanopyFs,
    files: &Files,
    device: OwnedFd,
    modes: Option<OwnedFd>,
    state: &State,
) -> Result<(fuser::Session<CanopyFs>, Option<Arc<ModeTable>>), String> {
    let session = resume(fs, files, device, &state.init)?;
    let table = match modes.map(ModeTable::open) {
        Some(Ok((table, recorded))) => {
            let table = Arc::new(table);
            let a = files.adopt_recorded(table.clone(), recorded, state.handles);
            tracing::info!(
                "{} inodes with open files recorded by the process before; closed the {} \
                 passthrough registrations it kept for files opened again and the {} no open \
                 file read through; {} open files hold the registrations they read through \
                 until released, {} open files read through canopy are counted off at their \
                 release, {} registrations are kept until unmount",
                a.inodes,
                a.kept_closed,
                a.unused_closed,
                a.open_files,
                a.cached_files,
                a.held
            );
            Some(table)
        }
        Some(Err(e)) => {
            tracing::warn!("the table of I/O modes kept by the service manager: {e}");
            None
        }
        None => None,
    };
    Ok((session, table))
}

/// The state file a service manager's next process reads, kept up to date.
pub(crate) struct Kept {
    path: std::path::PathBuf,
    state: std::sync::Mutex<State>,
    device: Arc<OwnedFd>,
    table: Arc<ModeTable>,
}

impl Kept {
    /// Sends the connection and the table of I/O modes to the service manager;
    /// `Ok(false)` when not run by one.
    pub(crate) fn store(&self) -> std::io::Result<bool> {
        service::notify(
            &format!("FDSTORE=1\nFDNAME={}", service::CONNECTION),
            &[self.device.as_fd()],
        )?;
        // A memfd cannot be polled: the manager is told not to try.
        service::notify(
            &format!("FDSTORE=1\nFDNAME={}\nFDPOLL=0", service::MODES),
            &[self.table.fd()],
        )
    }

    /// Records `history` as the versions shown.
    pub(crate) fn update(&self, history: Vec<Shown>) {
        let mut state = self.state.lock().expect("state lock");
        service::prune_versions(&history);
        state.history = history;
        if let Err(e) = state.write(&self.path) {
            tracing::warn!("writing {}: {e}", self.path.display());
        }
    }
}

/// Under a service manager with a descriptor store: stores the connection and the
/// table of I/O modes (`table`, resumed, or a new one) and writes the state file.
/// `None` when not run by one, or when it does not keep descriptors.
pub(crate) fn keep_in_store(
    options: crate::handover::Options,
    files: &Files,
    table: Option<Arc<ModeTable>>,
    view: &View,
    socket: &Path,
) -> Option<Arc<Kept>> {
    if !service::has_store() {
        return None;
    }
    let device = files.device()?;
    let init = files.kernel()?;
    let fresh = table.is_none();
    let table = match table {
        Some(t) => t,
        None => match ModeTable::create() {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::warn!("no table of I/O modes for a restart: {e}");
                return None;
            }
        },
    };
    files.record_in(table.clone());
    let kept = Arc::new(Kept {
        path: service::state_path(socket),
        state: std::sync::Mutex::new(State {
            options,
            init,
            history: Vec::new(),
            handles: true,
        }),
        device,
        table,
    });
    kept.update(shown(view));
    if fresh {
        // Anything kept before belongs to another connection.
        service::forget();
    }
    match kept.store() {
        Ok(true) => Some(kept),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(
                "the service manager did not take the FUSE connection ({e}): a restart will \
                 remount (FileDescriptorStoreMax= in the unit?)"
            );
            None
        }
    }
}

/// Unmounts the mount at `mountpoint` (one still in use is detached).
pub(crate) fn unmount_path(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    tracing::info!("unmounting {}", mountpoint.display());
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; no other preconditions.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return;
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EBUSY) => detach(mountpoint),
        e => tracing::error!("unmounting {}: {e}", mountpoint.display()),
    }
}
