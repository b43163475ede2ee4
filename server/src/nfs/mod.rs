//! Exporting roots read-only over NFSv3, with MOUNT v3 on the same TCP port, for
//! diskless boots and hosts without FUSE.
//!
//! - [`export`]: the roots as NFS sees them: handles and fileids from content, listings,
//!   attributes, reads;
//! - [`nfs3`] and [`mount`]: the two RPC programs' procedures;
//! - [`rpc`] and [`xdr`]: ONC RPC records and headers, and their encoding;
//! - here: the listener and its connections.
//!
//! What a client sends is bounded before it costs anything: records over
//! [`MAX_REQUEST`] close the connection, lengths inside a record are checked against
//! what is left of it, at most [`MAX_CONNECTIONS`] connections are served and at most
//! [`MAX_CALLS`] calls are answered at once ([`MAX_CALLS_PER_CONNECTION`] from one
//! connection), so replies in memory are bounded too. A bad connection is closed and
//! logged; the listener goes on.

mod export;
mod mount;
mod nfs3;
mod rpc;
mod xdr;

use crate::store::Store;
use export::Exports;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Largest request record: every read-only call fits many times over, and so does a
/// WRITE of the size FSINFO allows (refused, but answered).
pub const MAX_REQUEST: usize = 64 << 10;
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Calls answered at once over all connections; each may hold a reply of up to 1 MiB
/// until it is sent.
pub const MAX_CALLS: usize = 64;
/// Calls answered at once for one connection, so that one client cannot take every
/// slot; the connection is not read further until one finishes.
pub const MAX_CALLS_PER_CONNECTION: usize = 16;
/// A connection silent this long is closed (clients reconnect when they need to;
/// Linux's own idle timeout is 5 minutes).
const IDLE: Duration = Duration::from_secs(6 * 60);
/// A record must arrive whole within this of its first byte.
const STALL: Duration = Duration::from_secs(30);
/// A reply must be taken by the client within this, or the connection is closed.
const SEND: Duration = Duration::from_secs(60);

/// An NFS server bound to its port, ready to [`run`](NfsServer::run).
pub struct NfsServer {
    listener: TcpListener,
    exports: Arc<Exports>,
}

impl NfsServer {
    /// Binds NFS and MOUNT to `addr` (IPv4 or IPv6; port 0 picks a free one).
    pub async fn bind(store: Store, addr: SocketAddr) -> io::Result<NfsServer> {
        Ok(NfsServer {
            listener: TcpListener::bind(addr).await?,
            exports: Arc::new(Exports::new(store)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let calls = Arc::new(Semaphore::new(MAX_CALLS));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                permit = connections.clone().acquire_owned() => {
                    let permit = permit.expect("the semaphore is never closed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        r = self.listener.accept() => r.map(|(s, peer)| (s, peer, permit)),
                    }
                }
            };
            match accepted {
                Ok((socket, peer, permit)) => {
                    tracing::debug!("connection from {peer}");
                    let (exports, calls) = (self.exports.clone(), calls.clone());
                    tokio::spawn(serve_connection(socket, peer, exports, calls, permit));
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: not the listener's end. Pause so as not to spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Reads a connection's calls and answers each as it completes (clients match replies
/// to calls by xid, so order does not matter).
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    exports: Arc<Exports>,
    calls: Arc<Semaphore>,
    _connection: OwnedSemaphorePermit,
) {
    // Replies leave in one write each; without this the last segment of one can wait
    // for the client's delayed ACK.
    if let Err(e) = socket.set_nodelay(true) {
        tracing::warn!("setting TCP_NODELAY for {peer}: {e}");
    }
    let (mut input, output) = socket.into_split();
    let output = Arc::new(tokio::sync::Mutex::new(output));
    let mine = Arc::new(Semaphore::new(MAX_CALLS_PER_CONNECTION));
    let broken = Arc::new(Notify::new());
    loop {
        let own = mine.clone().acquire_owned().await.expect("never closed");
        let record = tokio::select! {
            r = rpc::read_record(&mut input, MAX_REQUEST, IDLE, STALL) => r,
            () = broken.notified() => break,
        };
        let record = match record {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                // Oversized or stalled records say something is wrong with the client;
                // resets and records cut short are how some clients hang up.
                match e.kind() {
                    io::ErrorKind::InvalidData | io::ErrorKind::TimedOut => {
                        tracing::warn!("closing the connection from {peer}: {e}")
                    }
                    _ => tracing::debug!("connection from {peer} ends: {e}"),
                }
                break;
            }
        };
        let global = calls.clone().acquire_owned().await.expect("never closed");
        let (exports, output, broken) = (exports.clone(), output.clone(), broken.clone());
        tokio::spawn(async move {
            let reply = tokio::task::spawn_blocking(move || answer(&exports, &record)).await;
            match reply {
                Ok(Some(bytes)) => {
                    let mut out = output.lock().await;
                    let sent = tokio::time::timeout(SEND, out.write_all(&bytes)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::debug!("{peer} does not take replies; closing");
                        let _ = out.shutdown().await;
                        broken.notify_one();
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!("answering a call from {peer} failed: {e}"),
            }
            drop((own, global));
        });
    }
    tracing::debug!("connection from {peer} ends");
}

/// The reply record to a request record, if it gets one.
fn answer(exports: &Exports, record: &[u8]) -> Option<Vec<u8>> {
    let call = match rpc::receive(record) {
        rpc::Received::Call(c) => c,
        rpc::Received::Refused(reply) => return Some(reply),
        rpc::Received::Ignored => return None,
    };
    tracing::trace!("call {} {}.{}", call.xid, call.prog, call.proc_);
    let mut out = rpc::success(call.xid);
    let done = match (call.prog, call.vers) {
        (nfs3::PROGRAM, 3) => nfs3::call(exports, &call.caller, call.proc_, call.args, &mut out),
        (mount::PROGRAM, 3) => mount::call(exports, call.proc_, call.args, &mut out),
        (nfs3::PROGRAM | mount::PROGRAM, _) => return Some(rpc::wrong_version(call.xid, 3, 3)),
        _ => return Some(rpc::no_program(call.xid)),
    };
    Some(match done {
        Ok(()) => rpc::finish(out),
        Err(fault) => rpc::fault(call.xid, fault),
    })
}
