//! Exporting roots read-only over NFSv3, with MOUNT v3 on the same TCP port, for
//! diskless boots and hosts without FUSE.
//!
//! - [`export`]: the roots as NFS sees them: handles and fileids from content, listings,
//!   attributes, reads;
//! - [`nfs3`] and [`mount`]: the two RPC programs' procedures;
//! - [`rpc`] and [`xdr`]: ONC RPC records and headers, and their encoding;
//! - here: the listener and its connections.
//!
//! Each connection is served by a thread of its own, which reads a call, answers it and
//! writes the reply before reading the next: no hand-offs between threads per call,
//! which on small metadata calls cost more than the call. Clients wanting parallel
//! calls open more connections (Linux: `nconnect=`).
//!
//! What a client sends is bounded before it costs anything: records over
//! [`MAX_REQUEST`] close the connection, lengths inside a record are checked against
//! what is left of it, and at most [`MAX_CONNECTIONS`] connections are served at once
//! (more wait in the kernel's accept queue), so memory is bounded too: one request and
//! one reply of at most 1 MiB per connection. A bad connection is closed and logged;
//! the listener goes on.

mod export;
mod mount;
mod nfs3;
mod rpc;
#[cfg(test)]
mod tests;
mod xdr;

use crate::store::Store;
use export::Exports;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest request record: every read-only call fits many times over, and so does a
/// WRITE of the size FSINFO allows (refused, but answered).
pub const MAX_REQUEST: usize = 64 << 10;
/// Connections served at once, each by its own thread.
pub const MAX_CONNECTIONS: usize = 256;
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

    /// Serves until `shutdown` resolves. Connection threads are not waited for: they
    /// end with the process.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
            let started = accepted.and_then(|(socket, peer, permit)| {
                tracing::debug!("connection from {peer}");
                let socket = socket.into_std()?;
                socket.set_nonblocking(false)?;
                let exports = self.exports.clone();
                std::thread::Builder::new()
                    .name(format!("nfs {peer}"))
                    .spawn(move || serve_connection(socket, peer, &exports, permit))
                    .map(drop)
            });
            if let Err(e) = started {
                // Out of file descriptors or threads, or a connection reset before it
                // was accepted: not the listener's end. Pause so as not to spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers a connection's calls one after the other until it closes, errs or idles.
fn serve_connection(
    mut socket: std::net::TcpStream,
    peer: SocketAddr,
    exports: &Exports,
    _connection: OwnedSemaphorePermit,
) {
    // Replies leave in one write each; without this the last segment of one can wait
    // for the client's delayed ACK.
    let set = socket
        .set_nodelay(true)
        .and_then(|()| socket.set_write_timeout(Some(SEND)));
    if let Err(e) = set {
        tracing::warn!("setting up the connection from {peer}: {e}");
        return;
    }
    loop {
        let record = match rpc::read_record(&mut socket, MAX_REQUEST, IDLE, STALL) {
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
        if let Some(reply) = answer(exports, &record)
            && let Err(e) = socket.write_all(&reply)
        {
            tracing::debug!("{peer} does not take replies ({e}); closing");
            break;
        }
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
