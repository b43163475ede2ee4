//! Admitting connections within the process's file-descriptor budget, for HTTP and
//! NFS alike.
//!
//! Every connection costs a descriptor (two while it sends an object's file), and a
//! process out of descriptors fails every `accept`, every object open, every log
//! rotation. So each listener serves at most a cap of connections derived from
//! `RLIMIT_NOFILE` ([`connection_cap`]), and when a new one arrives at the cap, the
//! connection that has made no progress for the longest time is closed to make room
//! (as Linux's own NFS server does), rather than the newcomer being left in the
//! kernel's queue behind idle ones: a few hundred idle or dribbling clients can no
//! longer lock everyone else out, and the connections that are doing work go on.
//!
//! Progress is what the protocol says it is ([`Admitted::progress`]): a whole request
//! received, or answer bytes taken by the client. Bytes trickling in without ever
//! making a request do not count, so a slow-header client is the first to go.
//!
//! Closing is `shutdown(2)` on the socket: whatever task or thread serves it sees the
//! end of its stream or an error at once, and drops it. The table and the socket are
//! torn down in that order ([`Admitted`]'s `Drop`), under one lock, so a socket is
//! never shut down after its descriptor number was closed and reused.

use std::collections::HashMap;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Descriptors kept out of every connection budget: the store's files, the runtime,
/// logs, the listeners themselves.
const RESERVE: u64 = 64;
/// Descriptors one connection may hold at once: its socket and an object file.
const PER_CONNECTION: u64 = 2;
/// The fewest connections a listener is given, however low the limit.
const MIN_CAP: usize = 8;
/// How long an accept loop waits after an error (out of descriptors, a connection
/// reset before it was accepted) before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How many connections each of `listeners` listeners may serve at once, given the
/// process's current `RLIMIT_NOFILE` soft limit (raise it first).
pub fn connection_cap(listeners: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid resource and a pointer to a local rlimit.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    // A low limit keeps a quarter for the process itself, a high one RESERVE.
    let reserve = RESERVE.min(limit / 4);
    let per_listener = (limit - reserve) / PER_CONNECTION / listeners.max(1) as u64;
    usize::try_from(per_listener)
        .unwrap_or(usize::MAX)
        .max(MIN_CAP)
}

/// The connections one listener serves, at most `cap` at once.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    /// What is served, for the log: "HTTP", "NFS".
    what: &'static str,
    cap: usize,
    /// The instant progress times count from.
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    live: HashMap<u64, Arc<Slot>>,
    /// When a connection was last closed to make room, to rate-limit the warning.
    warned: Option<Instant>,
}

/// One admitted connection as the table sees it.
struct Slot {
    fd: RawFd,
    /// Milliseconds from the epoch to its last progress.
    last: AtomicU64,
}

impl Admission {
    /// A table of at most `cap` connections; `what` names the service in the log.
    pub fn new(what: &'static str, cap: usize) -> Admission {
        Admission {
            shared: Arc::new(Shared {
                what,
                cap: cap.max(1),
                epoch: Instant::now(),
                table: Mutex::new(Table::default()),
            }),
        }
    }

    /// The cap this table was made with.
    pub fn cap(&self) -> usize {
        self.shared.cap
    }

    /// Connections admitted and not yet closed.
    pub fn len(&self) -> usize {
        self.shared.lock().live.len()
    }

    /// Whether no connection is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits `stream`, closing the connection with the oldest progress first if the
    /// table is full.
    pub fn admit<S: AsRawFd>(&self, stream: S) -> Admitted<S> {
        let slot = Arc::new(Slot {
            fd: stream.as_raw_fd(),
            last: AtomicU64::new(self.shared.now()),
        });
        let mut table = self.shared.lock();
        while table.live.len() >= self.shared.cap {
            if !self.shared.evict(&mut table) {
                break;
            }
        }
        let id = table.next;
        table.next += 1;
        table.live.insert(id, slot.clone());
        drop(table);
        Admitted {
            stream,
            slot,
            id,
            shared: self.shared.clone(),
        }
    }

    /// Closes the connection with the oldest progress, if there is one: what to do
    /// when `accept` fails for want of descriptors.
    pub fn make_room(&self) -> bool {
        let mut table = self.shared.lock();
        self.shared.evict(&mut table)
    }

    /// Accepts the next connection (to be [`admit`](Admission::admit)ted). Errors of
    /// `accept` are not the listener's end: out of descriptors, a connection is closed
    /// to make room; after any error the loop pauses briefly (rather than spin) and
    /// goes on.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
    ) -> (tokio::net::TcpStream, std::net::SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    let out_of_descriptors =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if !(out_of_descriptors && self.make_room()) {
                        tracing::warn!("{}: accepting a connection: {e}", self.shared.what);
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes the connection with the oldest progress from `table` and shuts its
    /// socket down. False when the table is empty.
    fn evict(&self, table: &mut Table) -> bool {
        let Some((&id, _)) = table
            .live
            .iter()
            .min_by_key(|(id, slot)| (slot.last.load(Ordering::Relaxed), **id))
        else {
            return false;
        };
        let slot = table.live.remove(&id).expect("the key was just found");
        // SAFETY: the descriptor is open: its owner removes it from the table (under
        // the lock held here) before closing it, and it was still in the table.
        unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
        let now = Instant::now();
        if table
            .warned
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
        {
            table.warned = Some(now);
            tracing::warn!(
                "{}: {} connections (the cap, from the open-file limit): closing the one \
                 idle longest to admit another (repeats are not logged for a minute)",
                self.what,
                self.cap
            );
        }
        true
    }
}

/// A connection in an [`Admission`] table: derefs to the stream, and leaves the table
/// when dropped, before the stream is closed. Used as an async stream, every write
/// that moves bytes records progress; otherwise the server calls
/// [`progress`](Admitted::progress).
pub struct Admitted<S: AsRawFd> {
    stream: S,
    slot: Arc<Slot>,
    id: u64,
    shared: Arc<Shared>,
}

impl<S: AsRawFd> Admitted<S> {
    /// Records progress: a whole request received, or answer bytes taken. The
    /// connection with the oldest progress is the first closed at the cap.
    pub fn progress(&self) {
        self.slot.last.store(self.shared.now(), Ordering::Relaxed);
    }

    /// Answer bytes written through the async stream count as progress.
    fn written(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.progress();
        }
    }
}

impl<S: AsRawFd> Drop for Admitted<S> {
    fn drop(&mut self) {
        // Runs before `stream` is dropped (and its descriptor closed): after this, no
        // eviction can reach the descriptor number.
        self.shared.lock().live.remove(&self.id);
    }
}

impl<S: AsRawFd> Deref for Admitted<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsRawFd> DerefMut for Admitted<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: AsRawFd + tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsRawFd + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn at_the_cap_the_connection_idle_longest_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Admission::new("test", 2);
        let (mut c1, s1) = pair(&listener);
        let a1 = admission.admit(s1);
        std::thread::sleep(Duration::from_millis(5));
        let (mut c2, s2) = pair(&listener);
        let a2 = admission.admit(s2);
        std::thread::sleep(Duration::from_millis(5));
        // The first makes progress: the second is now the one idle longest.
        a1.progress();
        let (_c3, s3) = pair(&listener);
        let _a3 = admission.admit(s3);
        assert_eq!(admission.len(), 2);
        // The evicted connection's peer sees the end of the stream.
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c2.read(&mut [0u8; 1]).unwrap(), 0);
        c1.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(c1.read(&mut [0u8; 1]).is_err(), "the busy one stays open");
        // Dropping an evicted connection leaves the table as it is.
        drop(a2);
        assert_eq!(admission.len(), 2);
        drop(a1);
        assert_eq!(admission.len(), 1);
    }

    #[test]
    fn caps_follow_the_descriptor_limit() {
        assert!(connection_cap(1) >= connection_cap(2));
        assert!(connection_cap(8) >= MIN_CAP);
    }
}
