//! How the plugin talks to its mount server ([`super::server`]), the process that serves
//! the plugin's FUSE mount: one JSON request and one JSON answer per line, on a unix
//! socket named after the mount directory (mode 0600 in a 0700 directory beside the
//! hand-over sockets, so only the same user reaches it).
//!
//! The plugin starts the server when none answers, and finds the one a previous plugin
//! started otherwise: the server is what containers read from, and it outlives the
//! plugin, so restarting, upgrading or killing the plugin never touches a mount.

mod launcher;

use super::store::FdStore;
use crate::handover::Options;
use launcher::{Launcher, Server, pidfd_open};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Longest request or answer line: the entries of a mount are a few hundred bytes each.
pub(crate) const MAX_LINE: u64 = 4 << 20;

/// What the plugin asks its mount server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Who the server is.
    Hello,
    /// The commit `root` is at on the canopy server.
    Current {
        /// The root.
        root: String,
    },
    /// Show `commit` of `root` as the top-level entry `entry` (`ROOT` or `ROOT@COMMIT`).
    Show {
        /// The entry.
        entry: String,
        /// The root.
        root: String,
        /// The commit, 64 hex digits.
        commit: String,
    },
    /// Stop showing `entry`.
    Remove {
        /// The entry.
        entry: String,
    },
    /// The entries shown, with their commits.
    Entries,
    /// Unmount and exit.
    Stop,
    /// Keep the FUSE connection in the descriptor store at `socket` (the plugin's, a
    /// plugin started after the one that started the server) from now on.
    Store {
        /// Its address, as `NOTIFY_SOCKET` gives one.
        socket: String,
    },
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Answer {
    /// To `Hello`.
    Hello {
        /// Its process id.
        pid: u32,
        /// The program file it runs, as `DEV:INODE` (an upgrade replaces the file).
        program: String,
        /// The options it serves with (servers, key, cache…).
        #[serde(default)]
        options: Options,
    },
    /// To `Current`.
    Commit {
        /// 64 hex digits.
        commit: String,
    },
    /// To `Show`, `Remove`, `Stop`.
    Done,
    /// To `Entries`: (entry, commit) pairs.
    Entries {
        /// The entries.
        entries: Vec<(String, String)>,
    },
    /// The request could not be done.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The program this process runs, as `DEV:INODE`: what tells a mount server started
/// from an older canopy binary apart.
pub(crate) fn program() -> String {
    std::fs::metadata("/proc/self/exe")
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
        .unwrap_or_default()
}

/// The control socket of the mount server of `mount_dir`.
pub(crate) fn socket_path(mount_dir: &Path) -> PathBuf {
    let hash = canopy_protocol::inode::hash(&[
        b"volume-plugin",
        crate::mount::resolved(mount_dir)
            .as_os_str()
            .as_encoded_bytes(),
    ]);
    crate::handover::runtime_dir().join(format!("volumes-{hash:016x}.sock"))
}

/// Whether the plugin's mount server serving `point` (a mount directory as
/// `/proc/self/mountinfo` gives it) shows the top-level `entry`, asked at its socket so
/// that nothing touches the mount: `None` if no server answers within `wait`.
pub fn shows(point: &Path, entry: &str, wait: Duration) -> Option<bool> {
    let stream = crate::handover::connect_now(&socket_path(point)).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.set_write_timeout(Some(wait)).ok()?;
    write_line(&mut &stream, &Request::Entries).ok()?;
    match read_line(&mut io::BufReader::new(&stream)).ok()?? {
        Answer::Entries { entries } => Some(entries.iter().any(|(e, _)| e == entry)),
        _ => None,
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes as a `T`; `None` if the other end
/// closed without a word (as a check of whether anyone listens does).
pub(crate) fn read_line<T: serde::de::DeserializeOwned>(
    reader: &mut impl BufRead,
) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the line ended early or is too long",
        ));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(io::Error::other)
}

/// Writes `message` as one line.
pub(crate) fn write_line(writer: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)
}

/// Why the mount server could not do what the plugin asked.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// It does not answer (not running, hung, or gone in the middle).
    #[error("the plugin's mount server at {socket} does not answer: {reason}")]
    Unreachable {
        /// Its socket.
        socket: PathBuf,
        /// What happened.
        reason: String,
    },
    /// It answered that it could not.
    #[error("{0}")]
    Failed(String),
    /// It could not be started.
    #[error("starting the plugin's mount server: {0}")]
    Start(String),
}

/// Who a mount server is.
pub(crate) struct Identity {
    /// Its process.
    pub(crate) pid: u32,
    /// Its program file (see [`program`]).
    pub(crate) program: String,
    /// The options it serves with.
    pub(crate) options: Options,
}

/// The plugin's handle on its mount server.
pub(crate) struct MountServer {
    socket: PathBuf,
    mount_dir: PathBuf,
    /// How to start one: the arguments for this program.
    args: Vec<OsString>,
    /// The options a server started now serves with.
    pub(crate) options: Options,
    /// Where the servers this plugin starts keep their FUSE connection.
    store: Option<Arc<FdStore>>,
    /// Set while a server that died is being started again on its kept connection.
    restarting: Arc<AtomicBool>,
    /// Set when one was: it shows every entry it was ever asked to.
    restarted: Arc<Restarted>,
}

/// Whether a server that died was started again on its kept connection, and a signal
/// for whoever brings it in line: such a server shows every entry it was ever asked
/// to, released volumes' too, until the plugin hides them again.
#[derive(Default)]
pub(crate) struct Restarted {
    flag: AtomicBool,
    signal: tokio::sync::Notify,
}

impl Restarted {
    /// Records a restart and wakes [`Restarted::wait`] (now, or at its next call).
    pub(super) fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.signal.notify_one();
    }

    /// Waits until a server is started again (returns at once for one started since
    /// the last wait).
    pub(crate) async fn wait(&self) {
        self.signal.notified().await
    }
}

/// How long a server started again on its kept connection may take to say it serves.
const RESTART_WAIT: Duration = Duration::from_secs(60);
/// How long the connection a server sent before it answered may take to reach the
/// plugin's store.
const STORE_WAIT: Duration = Duration::from_secs(10);

impl MountServer {
    /// The server of `mount_dir`, started when needed as this program with `args`.
    pub(crate) fn new(mount_dir: &Path, args: Vec<OsString>, options: Options) -> MountServer {
        let store = match FdStore::bind(mount_dir) {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::warn!(
                    "no descriptor store for the mount server ({e}): a mount server killed \
                     loses the mount"
                );
                None
            }
        };
        MountServer {
            socket: socket_path(mount_dir),
            mount_dir: mount_dir.to_path_buf(),
            args,
            options,
            store,
            restarting: Arc::new(AtomicBool::new(false)),
            restarted: Arc::new(Restarted::default()),
        }
    }

    /// Whether a server was started again on its kept connection since the last call.
    pub(crate) fn was_restarted(&self) -> bool {
        self.restarted.flag.swap(false, Ordering::SeqCst)
    }

    /// What signals that a server was started again on its kept connection.
    pub(crate) fn restarts(&self) -> Arc<Restarted> {
        self.restarted.clone()
    }

    /// Sends `request` and waits at most `wait` for the answer.
    pub(crate) async fn call(
        &self,
        request: &Request,
        wait: Duration,
    ) -> Result<Answer, ServerError> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket).await?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
            line.push(b'\n');
            write.write_all(&line).await?;
            let mut answer = Vec::new();
            tokio::io::BufReader::new(read.take(MAX_LINE))
                .read_until(b'\n', &mut answer)
                .await?;
            if answer.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "it closed the connection without answering",
                ));
            }
            serde_json::from_slice::<Answer>(&answer).map_err(io::Error::other)
        };
        let unreachable = |reason: String| ServerError::Unreachable {
            socket: self.socket.clone(),
            reason,
        };
        match tokio::time::timeout(wait, exchange).await {
            Err(_) => Err(unreachable(format!("no answer within {wait:?}"))),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Ok(Ok(Answer::Failed { reason })) => Err(ServerError::Failed(reason)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Who the server is, if one answers.
    pub(crate) async fn hello(&self) -> Result<Identity, ServerError> {
        match self.call(&Request::Hello, Duration::from_secs(10)).await? {
            Answer::Hello {
                pid,
                program,
                options,
            } => Ok(Identity {
                pid,
                program,
                options,
            }),
            other => Err(ServerError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Makes sure a server answers: the one running, or a new one. Returns whether it
    /// had to start one (which shows nothing yet).
    pub(crate) async fn ensure(&self) -> Result<bool, ServerError> {
        match self.hello().await {
            Ok(_) => return Ok(false),
            Err(ServerError::Unreachable { reason, .. }) => {
                // A server that died is being started again on its connection: a new
                // one must not replace the mount meanwhile.
                let deadline = Instant::now() + RESTART_WAIT;
                while self.restarting.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if self.hello().await.is_ok() {
                    return Ok(false);
                }
                tracing::info!("no mount server answers ({reason}): starting one");
            }
            Err(e) => return Err(e),
        }
        self.start().await?;
        Ok(true)
    }

    /// Starts a server in a session of its own (a signal to the plugin's terminal or
    /// process group does not reach it) and waits until it answers. A server running
    /// already hands its mount over to the new one.
    pub(crate) async fn start(&self) -> Result<(), ServerError> {
        let launcher = Launcher {
            exe: std::env::current_exe()
                .map_err(|e| ServerError::Start(format!("finding this program: {e}")))?,
            args: self.args.clone(),
            store: self.store.clone(),
            mount_dir: self.mount_dir.clone(),
        };
        let mut child = launcher
            .spawn(Vec::new())
            .map_err(|e| ServerError::Start(format!("{}: {e}", launcher.exe.display())))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ServerError::Start(format!(
                    "it exited ({status}) before answering; its errors are in this log"
                )));
            }
            match self.hello().await {
                Ok(answering) if answering.pid == pid => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ServerError::Start(format!(
                        "process {pid} did not answer within 60 s: {e}"
                    )));
                }
            }
        }
        // Kept once this store holds its connection, as for a server this plugin
        // finds running (see [`MountServer::keep_store`]).
        if let Some(store) = &self.store
            && let Err(e) = holds_connection(store, pid).await
        {
            tracing::warn!(
                "the mount server (process {pid}) does not keep its FUSE connection with this \
                 plugin ({e}): if it dies, containers lose their volumes"
            );
            store.clear();
        }
        tracing::info!("started the mount server, process {pid}");
        // Reaped when it ends, if this plugin still runs then; started again on its
        // kept connection if it dies.
        let (restarting, restarted) = (self.restarting.clone(), self.restarted.clone());
        std::thread::spawn(move || {
            launcher.supervise(Server::Child(child), &restarting, &restarted)
        });
        Ok(())
    }

    /// Keeps the connection of a server this plugin did not start (a plugin before it
    /// did) in this plugin's store, and watches that server: if it dies, it is started
    /// again on the connection, as one this plugin started would be.
    pub(crate) async fn keep_store(&self) {
        let Some(store) = &self.store else { return };
        let Ok(running) = self.hello().await else {
            return;
        };
        if store.is_main(running.pid) {
            return;
        }
        let Some(pidfd) = pidfd_open(running.pid) else {
            return;
        };
        store.expect(running.pid);
        let asked = Request::Store {
            socket: store.name().to_string(),
        };
        let kept = match self.call(&asked, Duration::from_secs(10)).await {
            // Kept once this store holds it, not once the server says it sent it.
            Ok(_) => holds_connection(store, running.pid).await,
            Err(e) => Err(e),
        };
        match kept {
            Ok(()) => tracing::info!(
                "keeping the FUSE connection of the mount server (process {})",
                running.pid
            ),
            Err(e) => {
                tracing::warn!(
                    "the mount server (process {}) does not keep its FUSE connection with this \
                     plugin ({e}): if it dies, containers lose their volumes",
                    running.pid
                );
                store.clear();
                return;
            }
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let launcher = Launcher {
            exe,
            args: self.args.clone(),
            store: self.store.clone(),
            mount_dir: self.mount_dir.clone(),
        };
        let (restarting, restarted) = (self.restarting.clone(), self.restarted.clone());
        let server = Server::Adopted(running.pid, pidfd);
        std::thread::spawn(move || launcher.supervise(server, &restarting, &restarted));
    }

    /// Has the server unmount and exit; returns once the server no longer answers and
    /// its process has ended (at most 10 s after its answer): it answers before it
    /// ends, a plugin started meanwhile would take the ending server for a live one,
    /// and a server started meanwhile would find the cache still locked by it.
    pub(crate) async fn stop(&self) -> Result<(), ServerError> {
        let pid = self.hello().await.ok().map(|running| running.pid);
        self.call(&Request::Stop, Duration::from_secs(30)).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && (self.hello().await.is_ok() || pid.is_some_and(running))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Whether process `pid` still runs: neither gone nor a zombie (which has let go of
/// everything it held, the cache's lock included).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits, off the async threads and at most [`STORE_WAIT`], until `store` holds the
/// FUSE connection (and table of I/O modes) of server `pid`, sent before it answers.
async fn holds_connection(store: &Arc<FdStore>, pid: u32) -> Result<(), ServerError> {
    let waiting = store.clone();
    let held = tokio::task::spawn_blocking(move || waiting.wait_connection(pid, STORE_WAIT)).await;
    if matches!(held, Ok(true)) {
        Ok(())
    } else {
        Err(ServerError::Failed(format!(
            "its connection did not reach this plugin within {STORE_WAIT:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_an_unused_pid_does_not() {
        assert!(running(std::process::id()));
        assert!(!running(u32::MAX));
    }

    #[test]
    fn lines_round_trip_and_are_bounded() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            &Request::Show {
                entry: "a@b".into(),
                root: "a".into(),
                commit: "b".into(),
            },
        )
        .unwrap();
        let back: Request = read_line(&mut out.as_slice()).unwrap().unwrap();
        assert!(read_line::<Request>(&mut &b""[..]).unwrap().is_none());
        assert!(matches!(back, Request::Show { entry, .. } if entry == "a@b"));
        assert!(read_line::<Request>(&mut &b"{\"request\": \"hello\"}"[..]).is_err());
        assert!(read_line::<Request>(&mut &b"{\"request\": \"explode\"}\n"[..]).is_err());
    }
}
