//! The life of a `canopy mount` process: mount anew, or take a live mount over from
//! the process serving it ([`crate::handover`]); then serve, follow, and end by
//! unmounting or by handing the mount over.

use crate::fs::CanopyFs;
use crate::handover::{self, Shown};
use crate::mount::{
    MountConfig, MountError, detach, find_commit, fuse_session, load, parse_commit, refresh,
    session_config, unmount,
};
use crate::objects::Fetched;
use crate::open_files::Files;
use crate::remote::Remote;
use crate::view::{Scope, View};
use canopy_cache::Cache;
use canopy_protocol::VerifyingKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The versions a view has shown, as a hand-over lists them.
fn shown(view: &View) -> Vec<Shown> {
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
async fn show_history(
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
        let (version, _, trees) = load(remote, trust, root, commit).await?;
        view.install(&s.entry, version, trees);
        any = true;
    }
    Ok(any)
}

/// Mounts and serves until unmounted (`umount`) or until `shutdown` resolves (then
/// unmounts cleanly), or until a successor takes the mount over (then exits, the
/// mount staying). With `take_over`, takes the mount over from the live process
/// serving it instead of mounting. `on_ready` runs once the mount is live.
pub fn run(
    cfg: MountConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), MountError> {
    let (rt, remote) = cfg.host.connect()?;
    let view = Arc::new(View::new(cfg.scope.clone()).keeping_versions());
    let pinned = match (&cfg.scope, &cfg.commit) {
        (Scope::One(root), Some(prefix)) => Some(rt.block_on(find_commit(&remote, root, prefix))?),
        _ => None,
    };
    let options = cfg.handover_options();
    let pending = if cfg.take_over {
        let Some(pending) = handover::ask(&cfg.mountpoint, &options)? else {
            return Err(MountError::Mount {
                path: cfg.mountpoint.clone(),
                reason: format!(
                    "it is a canopy mount whose process does not answer at {} (an older canopy?): \
                     stop it (`umount {}`) and mount again",
                    handover::socket_path(&cfg.mountpoint).display(),
                    cfg.mountpoint.display()
                ),
            });
        };
        rt.block_on(show_history(
            &remote,
            &view,
            &cfg.host.trust,
            &pending.offer.history,
        ))?;
        Some(pending)
    } else {
        None
    };
    rt.block_on(refresh(&remote, &view, &cfg.host.trust, pinned))?;

    let following = cfg.follow.is_some() && pinned.is_none();
    let (mut session, files, resumed) = match pending {
        None => {
            let cache = Arc::new(Cache::open(&cfg.host.cache_dir, cfg.host.cache_size)?);
            let fs = filesystem(&cfg, &view, &remote, &rt, cache, following);
            let files = fs.files();
            (fuse_session(fs, &cfg.mountpoint)?, files, false)
        }
        Some(pending) => {
            let taken = pending.take()?;
            if rt.block_on(show_history(
                &remote,
                &view,
                &cfg.host.trust,
                &taken.history,
            ))? {
                rt.block_on(refresh(&remote, &view, &cfg.host.trust, pinned))?;
            }
            let (session, files) = resume(&cfg, &view, &remote, &rt, following, taken)?;
            (session, files, true)
        }
    };
    let listening = handover::listen(&handover::socket_path(&cfg.mountpoint), options, files, {
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
    rt.spawn(async move {
        if !fired {
            shutdown.await;
        }
        if resumed {
            // This process did not mount: fuser knows no mount to take away.
            unmount_path(&mountpoint);
        } else {
            unmount(&mut unmounter, &mountpoint);
        }
    });
    if let (true, Some(interval)) = (following, cfg.follow) {
        let trust = cfg.host.trust;
        rt.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = refresh(&remote, &view, &trust, None).await {
                    tracing::warn!("following: {e}; keeping the current versions");
                }
            }
        });
    }
    on_ready();
    let result = session.run();
    drop(listening);
    rt.shutdown_timeout(Duration::from_secs(1));
    result.map_err(|e| MountError::Mount {
        path: cfg.mountpoint,
        reason: e.to_string(),
    })
}

/// The filesystem a session serves: `view`, with file contents fetched from `remote`
/// into `cache`.
fn filesystem(
    cfg: &MountConfig,
    view: &Arc<View>,
    remote: &Arc<Remote>,
    rt: &tokio::runtime::Runtime,
    cache: Arc<Cache>,
    following: bool,
) -> CanopyFs {
    let objects = Fetched::new(cache, remote.clone(), rt.handle().clone());
    CanopyFs::new(
        view.clone(),
        Arc::new(objects),
        following,
        cfg.host.passthrough,
    )
}

/// Serves a connection taken over: numbers every node the kernel may hold, opens the
/// cache (the predecessor has let go of it), adopts the open files, and has the
/// requests the predecessor left unanswered sent again.
fn resume(
    cfg: &MountConfig,
    view: &Arc<View>,
    remote: &Arc<Remote>,
    rt: &tokio::runtime::Runtime,
    following: bool,
    taken: handover::Taken,
) -> Result<(fuser::Session<CanopyFs>, Arc<Files>), MountError> {
    let failed = |reason: String| MountError::Mount {
        path: cfg.mountpoint.clone(),
        reason,
    };
    view.index();
    let cache = cfg.host.open_cache_released()?;
    let fs = filesystem(cfg, view, remote, rt, cache, following);
    let files = fs.files();
    let device = taken
        .device
        .try_clone()
        .map_err(|e| failed(format!("duplicating the FUSE descriptor: {e}")))?;
    files.attach(device);
    let session = handover::resume(fs, taken.device, &taken.init, session_config())
        .map_err(|e| failed(format!("resuming the FUSE session: {e}")))?;
    let (open, through) = files.adopt(taken.files).map_err(failed)?;
    let device = files.device().expect("attached above");
    handover::resend(&*device).map_err(|e| failed(format!("asking the kernel to resend: {e}")))?;
    tracing::info!(
        "took the mount over: serving {} ({open} open files taken over, {through} of them read through passthrough)",
        cfg.mountpoint.display()
    );
    Ok((session, files))
}

/// Unmounts the mount at `mountpoint` (one still in use is detached, see [`detach`]).
fn unmount_path(mountpoint: &Path) {
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
