//! The plugin's mount server: the process that serves the plugin's one FUSE mount, and
//! shows in it the entries the plugin asks for ([`super::control`]).
//!
//! The plugin starts it and it outlives the plugin: containers read from this process
//! only, so a plugin restarted, upgraded or killed with `kill -9` leaves every mount
//! served, and the next plugin finds the server at its socket. A server started while
//! another serves the mount (a plugin upgraded to a new canopy binary starts one) takes
//! the mount over from it live, as `canopy mount` does ([`crate::handover`]). It stops
//! when the plugin stops with no volume mounted (the plugin asks it to), on SIGTERM or
//! SIGINT (then it unmounts, detaching the mount if containers still use it), or when
//! the mount is unmounted from outside.

use super::control::{self, Answer, Request};
use super::{VolumeConfig, VolumeError, prepare_mount_dir};
use crate::fs::forget_stale;
use crate::handover::{self, Options};
use crate::mount::{MountError, current, fuse_session, show, unmount};
use crate::remote::Remote;
use crate::service::{self, Resumable, Stored};
use crate::session::{
    Kept, keep_in_store, resume, resume_stored, show_history, shown, unmount_path,
};
use crate::view::{Scope, View};
use canopy_protocol::{CommitId, RootName, VerifyingKey};
use std::io::BufReader;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the plugin may take to send one request.
const REQUEST_WAIT: Duration = Duration::from_secs(30);

/// The control socket, removed when the server ends (unless it is another server's by
/// then: a server that was asked to stop lets go of the name at once).
struct Listening {
    path: PathBuf,
    ino: u64,
}

impl Listening {
    /// Removes the socket file if it is still this server's.
    fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds the control socket; a live server answering there is another server of the
/// same mount directory, and is left alone.
fn listen(path: &Path) -> Result<(UnixListener, Listening), VolumeError> {
    use std::os::unix::fs::DirBuilderExt;
    let refuse = |reason: String| VolumeError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(format!("creating {}: {e}", dir.display())))?;
    if handover::connect_now(path).is_ok() {
        return Err(refuse(
            "a mount server for this mount directory runs already".into(),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| refuse(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| refuse(format!("setting its mode: {e}")))?;
    let ino = std::fs::symlink_metadata(path)
        .map_err(|e| refuse(e.to_string()))?
        .ino();
    Ok((
        listener,
        Listening {
            path: path.to_path_buf(),
            ino,
        },
    ))
}

/// What requests are answered with.
struct Served {
    view: Arc<View>,
    remote: Arc<Remote>,
    trust: VerifyingKey,
    rt: tokio::runtime::Handle,
    unmounter: Arc<Mutex<Unmounter>>,
    mount_dir: PathBuf,
    listening: Arc<Listening>,
    options: Options,
    /// The state file a successor resumes from, under the plugin's descriptor store.
    kept: Option<Arc<Kept>>,
    /// Replays the profile of each version shown (see [`crate::profile`]).
    replay: Option<Arc<crate::profile::Replay>>,
}

impl Served {
    fn answer(&self, request: Request) -> Answer {
        let failed = |reason: String| Answer::Failed { reason };
        match request {
            Request::Hello => Answer::Hello {
                pid: std::process::id(),
                program: control::program(),
                options: self.options.clone(),
            },
            Request::Current { root } => match self.rt.block_on(current(&self.remote, &root)) {
                Ok(commit) => Answer::Commit {
                    commit: commit.to_string(),
                },
                Err(e) => failed(e.to_string()),
            },
            Request::Show {
                entry,
                root,
                commit,
            } => match self.show(&entry, &root, &commit) {
                Ok(()) => {
                    self.keep_state();
                    if let Some(r) = &self.replay {
                        r.shown();
                    }
                    Answer::Done
                }
                Err(reason) => failed(reason),
            },
            Request::Remove { entry } => {
                self.view.remove(&entry);
                tracing::info!("{entry}: no longer shown");
                Answer::Done
            }
            Request::Entries => Answer::Entries {
                entries: self
                    .view
                    .shown()
                    .into_iter()
                    .filter_map(|e| {
                        let commit = self.view.root(&e)?.commit.to_string();
                        Some((e, commit))
                    })
                    .collect(),
            },
            Request::Store { socket } => {
                let Some(kept) = &self.kept else {
                    return failed("this mount server keeps no descriptors".into());
                };
                service::store_at(&socket);
                match kept.store() {
                    Ok(_) => {
                        tracing::info!("the FUSE connection is kept by the plugin at {socket}");
                        Answer::Done
                    }
                    Err(e) => failed(format!("storing the FUSE connection at {socket}: {e}")),
                }
            }
            Request::Stop => {
                // A plugin starting from now on starts a new server rather than asking
                // this one, which is going.
                self.listening.remove();
                tracing::info!("the plugin stopped with no volume mounted: unmounting");
                self.unmounter
                    .lock()
                    .expect("unmounter lock")
                    .unmount(&self.mount_dir);
                Answer::Done
            }
        }
    }

    /// Records the versions shown for a successor resuming the mount (before the plugin
    /// hears that an entry is shown, so a successor shows it too).
    fn keep_state(&self) {
        if let Some(kept) = &self.kept {
            kept.update(shown(&self.view));
        }
    }

    /// Shows `commit` of `root` as `entry`, which must be `root` or `root@commit`.
    fn show(&self, entry: &str, root: &str, commit: &str) -> Result<(), String> {
        let name: RootName = root.parse().map_err(|e| format!("root {root:?}: {e}"))?;
        let id: CommitId = commit
            .parse()
            .map_err(|e| format!("commit {commit:?}: {e}"))?;
        if entry != name.as_str() && entry != format!("{name}@{id}") {
            return Err(format!("entry {entry:?} is neither {name} nor {name}@{id}"));
        }
        self.rt
            .block_on(show(&self.remote, &self.view, &self.trust, entry, root, id))
            .map_err(|e: MountError| e.to_string())
    }
}

/// Most connections answered at once (each its own thread): a `hello` is answered
/// while a `show` fetches.
const MAX_CONNECTIONS: usize = 16;

/// Answers the plugin until the process ends, each connection in a thread of its own;
/// `answering` counts the requests read and not yet answered.
fn answer_requests(listener: UnixListener, served: Arc<Served>, answering: Arc<AtomicUsize>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            tracing::warn!(
                "{} connections to {} at once: closing a new one",
                MAX_CONNECTIONS,
                served.listening.path.display()
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (served, answering, open) = (served.clone(), answering.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                answer_one(&served, &stream, &answering);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::warn!("answering the plugin: {e}");
        }
    }
}

/// Reads one request from `stream` and answers it.
fn answer_one(served: &Served, stream: &std::os::unix::net::UnixStream, answering: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let _ = stream.set_write_timeout(Some(REQUEST_WAIT));
    let request: Request = match control::read_line(&mut BufReader::new(stream)) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("a bad request on {}: {e}", served.listening.path.display());
            return;
        }
    };
    answering.fetch_add(1, Ordering::SeqCst);
    let answer = served.answer(request);
    if let Err(e) = control::write_line(&mut &*stream, &answer) {
        tracing::warn!("answering on {}: {e}", served.listening.path.display());
    }
    answering.fetch_sub(1, Ordering::SeqCst);
}

/// What a mount server taking this one's mount over must share with it.
pub(crate) fn handover_options(cfg: &VolumeConfig) -> Options {
    let mut options = cfg.host.handover_options();
    options.0.extend([
        ("volume-plugin".into(), cfg.mount_dir.display().to_string()),
        (
            "state-dir".into(),
            std::fs::canonicalize(&cfg.state_dir)
                .unwrap_or_else(|_| cfg.state_dir.clone())
                .display()
                .to_string(),
        ),
    ]);
    options
}

/// How this server comes to serve the mount.
enum Start {
    /// Mount anew.
    Fresh,
    /// Take the mount over from the live server (one of an older canopy, which the
    /// plugin replaces).
    Live(handover::Pending),
    /// Resume the connection of a server that died, kept by the plugin (its
    /// descriptor store), with the state beside it.
    Stored(Resumable),
}

/// A connection the plugin kept from a server that died is resumed (if served with
/// the same options); else a live server answering at `socket` hands its mount over;
/// else the mount is made anew.
fn start(cfg: &VolumeConfig, socket: &Path) -> Result<Start, VolumeError> {
    if let Some(mut stored) = Stored::from_env().filter(|s| s.has_connection()) {
        tracing::info!("the plugin passed {}", stored.describe());
        let kept = stored.resume(&cfg.mount_dir, &handover_options(cfg), "the plugin");
        return Ok(kept.map_or(Start::Fresh, Start::Stored));
    }
    if handover::connect_now(socket).is_err() {
        return Ok(Start::Fresh);
    }
    match handover::ask(&cfg.mount_dir, &handover_options(cfg)).map_err(MountError::from)? {
        Some(pending) => Ok(Start::Live(pending)),
        None => Err(VolumeError::Socket {
            path: socket.to_path_buf(),
            reason: "a mount server for this mount directory runs already, and does not hand \
                     its mount over"
                .into(),
        }),
    }
}

/// Serves the plugin's mount until it is unmounted (asked by the plugin, by `umount`,
/// or on `shutdown`), or until a newer server takes it over. A server started while
/// another serves the mount takes the mount over from it, live.
pub(crate) fn serve(
    cfg: VolumeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), VolumeError> {
    let socket = control::socket_path(&cfg.mount_dir);
    let how = start(&cfg, &socket)?;
    let (rt, remote) = cfg.host.connect()?;
    let trust = cfg.host.trust;
    let handover_socket = handover::socket_path(&cfg.mount_dir);
    if service::has_store() {
        service::keep_versions_in(service::versions_path(&handover_socket));
    }
    // Entries come and go as volumes are mounted and released: the kernel is told to
    // forget what each change makes stale, so they show at once.
    let view = Arc::new(View::new(Scope::All));
    let replay = cfg.host.replay(&view, &remote);
    let fs = |cache| {
        cfg.host
            .filesystem(&view, &remote, rt.handle(), cache, replay.as_ref())
    };
    let failed = |reason: String| MountError::Mount {
        path: cfg.mount_dir.clone(),
        reason,
    };
    let (mut session, files, resumed, table) = match how {
        Start::Fresh => {
            prepare_mount_dir(&cfg.mount_dir)?;
            // A server that was just asked to stop may still hold the cache a moment.
            let fs = fs(cfg.host.open_cache_released()?);
            let files = fs.files();
            (fuse_session(fs, &cfg.mount_dir)?, files, false, None)
        }
        Start::Stored(Resumable {
            device,
            modes,
            state,
        }) => {
            rt.block_on(show_history(&remote, &view, &trust, &state.history))?;
            view.index();
            let fs = fs(cfg.host.open_cache_released()?);
            let files = fs.files();
            let (session, table) =
                resume_stored(fs, &files, device, modes, &state).map_err(failed)?;
            let device = files.device().expect("attached with the session");
            // Requests the dead server had read and not answered come again.
            handover::resend(&*device)
                .map_err(|e| failed(format!("asking the kernel to resend: {e}")))?;
            tracing::info!(
                "resumed the plugin's mount at {} from the connection the plugin kept",
                cfg.mount_dir.display()
            );
            (session, files, true, table)
        }
        Start::Live(pending) => {
            rt.block_on(show_history(&remote, &view, &trust, &pending.offer.history))?;
            let taken = pending.take().map_err(MountError::from)?;
            rt.block_on(show_history(&remote, &view, &trust, &taken.history))?;
            view.index();
            let fs = fs(cfg.host.open_cache_released()?);
            let files = fs.files();
            let session = resume(fs, &files, taken.device, &taken.init).map_err(failed)?;
            let (open, _) = files.adopt(taken.files).map_err(failed)?;
            let device = files.device().expect("attached with the session");
            handover::resend(&*device)
                .map_err(|e| failed(format!("asking the kernel to resend: {e}")))?;
            tracing::info!(
                "took the plugin's mount at {} over ({open} open files)",
                cfg.mount_dir.display()
            );
            (session, files, true, None)
        }
    };
    forget_stale(&view, session.notifier(), files.clone());
    let kept = keep_in_store(
        handover_options(&cfg),
        &files,
        table,
        &view,
        &handover_socket,
    );
    // The server before has exited by now, when there was one.
    let (listener, listening) = listen(&socket)?;
    let listening = Arc::new(listening);
    let handing_over = handover::listen(&handover_socket, handover_options(&cfg), files, {
        let view = view.clone();
        move || shown(&view)
    });
    if let Err(e) = &handing_over {
        tracing::warn!("no live hand-over for the plugin's mount: {e}");
    }
    let unmounter = Arc::new(Mutex::new(Unmounter {
        session: session.unmount_callable(),
        resumed,
    }));
    let served = Served {
        view,
        remote,
        trust,
        rt: rt.handle().clone(),
        unmounter: unmounter.clone(),
        mount_dir: cfg.mount_dir.clone(),
        listening: listening.clone(),
        options: handover_options(&cfg),
        kept,
        replay: replay.clone(),
    };
    let answering = Arc::new(AtomicUsize::new(0));
    let counted = answering.clone();
    let served = Arc::new(served);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || answer_requests(listener, served, counted))
        .map_err(|e| VolumeError::Socket {
            path: listening.path.clone(),
            reason: format!("starting its thread: {e}"),
        })?;
    let mount_dir = cfg.mount_dir.clone();
    rt.spawn(async move {
        shutdown.await;
        unmounter
            .lock()
            .expect("unmounter lock")
            .unmount(&mount_dir);
    });
    if let Err(e) = service::notify("READY=1", &[]) {
        tracing::warn!("telling the plugin the mount server is ready: {e}");
    }
    tracing::info!(
        "serving the plugin's volumes at {}",
        cfg.mount_dir.display()
    );
    if let Some(r) = &replay {
        r.shown();
    }
    let result = session.run();
    // Ended cleanly (unmounted): the plugin keeps no connection of a mount that is gone.
    service::forget();
    // The plugin that asked for the unmount hears that it is done before this ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while answering.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    listening.remove();
    drop(handing_over);
    rt.shutdown_timeout(Duration::from_secs(1));
    result.map_err(|e| {
        VolumeError::Mount(MountError::Mount {
            path: cfg.mount_dir,
            reason: e.to_string(),
        })
    })
}

/// Takes the mount away: through the FUSE session that mounted it, or by its path
/// when this server took it over (its session did not mount it).
struct Unmounter {
    session: fuser::SessionUnmounter,
    resumed: bool,
}

impl Unmounter {
    fn unmount(&mut self, mount_dir: &Path) {
        // The plugin keeps no connection of a mount that is gone.
        service::forget();
        if self.resumed {
            unmount_path(mount_dir);
        } else {
            unmount(&mut self.session, mount_dir);
        }
    }
}
