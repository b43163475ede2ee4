//! The live process's side: listening for successors, and handing the connection
//! over to one.

use super::wire::{Message, STEP_WAIT, receive, send, send_fd};
use super::{Offer, Options, Shown};
use crate::open_files::Files;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLockWriteGuard};
use std::time::Duration;

/// How long a successor may take to load the versions offered before saying `go`.
const LOAD_WAIT: Duration = Duration::from_secs(300);

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Removes the socket when the listening process ends normally.
pub(crate) struct Listening {
    path: PathBuf,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens for successors at `path` in a thread of its own; a successful hand-over
/// ends this process (without unmounting: the successor serves the mount now).
pub(crate) fn listen(
    path: &Path,
    options: Options,
    files: Arc<Files>,
    history: impl Fn() -> Vec<Shown> + Send + 'static,
) -> std::io::Result<Listening> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A socket left by a process that is gone answers nobody: replace it.
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                match serve_one(&mut stream, &options, &files, &history) {
                    Ok(None) => {}
                    Ok(Some(_frozen)) => {
                        tracing::info!("handed the mount over to a new canopy process; exiting");
                        // Still frozen until the end: an open or a release waiting at
                        // the gate must not run here any more (a release would close a
                        // passthrough registration the successor took over, an open
                        // would bind a file the successor does not know of); the
                        // kernel resends them to the successor. No destructor runs:
                        // nothing unmounts, nothing closes the connection the successor
                        // now serves.
                        std::process::exit(0);
                    }
                    Err(e) => tracing::warn!("hand-over not done: {e}; serving on"),
                }
            }
        })?;
    Ok(Listening {
        path: path.to_path_buf(),
    })
}

/// Answers one connection: a query, or a hand-over (then returns once the successor
/// has the connection, with opens and releases still frozen, for good).
fn serve_one<'a>(
    stream: &mut UnixStream,
    options: &Options,
    files: &'a Files,
    history: &impl Fn() -> Vec<Shown>,
) -> Result<Option<RwLockWriteGuard<'a, ()>>, String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let uid = peer_uid(stream).map_err(|e| format!("peer credentials: {e}"))?;
    if uid != me && uid != 0 {
        return Err(format!("refused a hand-over to uid {uid}"));
    }
    let io = |e: std::io::Error| e.to_string();
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_WAIT)).map_err(io)?;
    let (theirs, pid) = match receive(stream).map_err(io)? {
        Message::Hello { options, pid } => (options, pid),
        Message::Query => {
            let serves = Message::Serves {
                options: options.clone(),
                history: history(),
            };
            send(stream, &serves).map_err(io)?;
            return Ok(None);
        }
        _ => return Err("a successor spoke out of turn".into()),
    };
    let differences = options.differences(&theirs);
    if !differences.is_empty() {
        let reason = differences.join(", ");
        let _ = send(
            stream,
            &Message::Refused {
                reason: reason.clone(),
            },
        );
        return Err(format!("process {pid} asked with other options: {reason}"));
    }
    let (Some(init), Some(device)) = (files.kernel(), files.device()) else {
        let reason = "the running process has no connection to hand over yet".to_string();
        let _ = send(
            stream,
            &Message::Refused {
                reason: reason.clone(),
            },
        );
        return Err(reason);
    };
    send(stream, &Message::Offer(Offer { history: history() })).map_err(io)?;
    stream.set_read_timeout(Some(LOAD_WAIT)).map_err(io)?;
    let Message::Go = receive(stream).map_err(io)? else {
        return Err("a successor spoke out of turn".into());
    };
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    tracing::info!("handing the mount over to process {pid}");
    // Opens and releases wait from here until this process exits (the kernel resends
    // them to the successor), or until the hand-over fails.
    let frozen = files.freeze();
    // Registrations no open file reads through are this process's to close: the
    // successor is told only of those its open files need.
    files.close_kept();
    send_fd(stream, &*device).map_err(io)?;
    send(
        stream,
        &Message::Take {
            init,
            files: files.state(),
            history: history(),
        },
    )
    .map_err(io)?;
    match receive(stream).map_err(io)? {
        Message::Taken => Ok(Some(frozen)),
        _ => Err("a successor spoke out of turn".into()),
    }
}
