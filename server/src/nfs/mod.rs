//! Exporting roots read-only over NFSv3, with MOUNT v3 on the same TCP port, for
//! diskless boots and hosts without FUSE.
//!
//! - [`export`]: the roots as NFS sees them: handles and fileids from content, listings,
//!   attributes, reads;
//! - [`nfs3`] and [`mount`]: the two RPC programs' procedures;
//! - [`portmap`]: where they listen, for clients that ask port 111 (TCP and UDP);
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
//! what is left of it, and at most a cap of connections are served at once (from the
//! open-file limit, at most [`MAX_CONNECTIONS`]), so memory is bounded too: one request
//! and one reply of at most 1 MiB per connection. At the cap, the connection idle
//! longest is closed to admit a new one ([`crate::admission`]): idle clients cannot lock
//! out others. A bad connection is closed and logged; the listener goes on.

mod export;
mod mount;
mod nfs3;
mod portmap;
mod register;
mod rpc;
#[cfg(test)]
mod tests;
mod xdr;

use crate::admission::{Admission, Admitted};
use crate::store::Store;
use export::Exports;
use portmap::Map;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

/// Largest request record: every read-only call fits many times over, and so does a
/// WRITE of the size FSINFO allows (refused, but answered).
pub const MAX_REQUEST: usize = 64 << 10;
/// Most connections served at once, each by its own thread (fewer with a low
/// open-file limit, see [`NfsServer::connection_cap`]).
pub const MAX_CONNECTIONS: usize = 4096;
/// Largest portmapper datagram read: its questions are a few dozen bytes.
const MAX_DATAGRAM: usize = 1024;
/// A connection silent this long is closed (clients reconnect when they need to;
/// Linux's own idle timeout is 5 minutes).
const IDLE: Duration = Duration::from_secs(6 * 60);
/// A record must arrive whole within this of its first byte.
const STALL: Duration = Duration::from_secs(30);
/// A reply must be taken by the client within this, or the connection is closed.
const SEND: Duration = Duration::from_secs(60);

/// Which programs a listener answers.
#[derive(Clone)]
enum Service {
    /// NFS and MOUNT, on the NFS port.
    Nfs(Arc<Exports>),
    /// The portmapper, on port 111.
    Portmap(Arc<Map>),
}

/// How the portmapper question is answered for this server.
pub enum Portmap {
    /// Served by this process on port 111 of the NFS address, TCP and UDP.
    Served,
    /// Port 111 was taken (an `rpcbind` runs there): NFS and MOUNT are registered
    /// with it, and unregistered when the server stops.
    Registered,
}

/// An NFS server bound to its port, ready to [`run`](NfsServer::run).
pub struct NfsServer {
    listener: TcpListener,
    exports: Arc<Exports>,
    portmap: Option<PortmapListeners>,
    registered: Option<register::Registration>,
    cap: usize,
}

/// The portmapper's own sockets.
struct PortmapListeners {
    tcp: TcpListener,
    udp: UdpSocket,
    map: Arc<Map>,
}

impl NfsServer {
    /// Binds NFS and MOUNT to `addr` (IPv4 or IPv6; port 0 picks a free one).
    pub async fn bind(store: Store, addr: SocketAddr) -> io::Result<NfsServer> {
        Ok(NfsServer {
            listener: TcpListener::bind(addr).await?,
            exports: Arc::new(Exports::new(store)),
            portmap: None,
            registered: None,
            cap: crate::admission::connection_cap(1).min(MAX_CONNECTIONS),
        })
    }

    /// Serves at most `cap` connections at once (NFS and portmapper together; at most
    /// [`MAX_CONNECTIONS`]). The default is what the open-file limit allows when NFS is
    /// the only listener: give [`crate::admission::connection_cap`] of the number of
    /// listeners when others share the process.
    pub fn connection_cap(&mut self, cap: usize) {
        self.cap = cap.clamp(1, MAX_CONNECTIONS);
    }

    /// Answers the portmapper question for this server: serves it on port 111 of the
    /// NFS address, or, when an `rpcbind` holds that port already, registers NFS and
    /// MOUNT with it. Fails when neither works (port 111 needs root or
    /// CAP_NET_BIND_SERVICE).
    pub async fn portmap(&mut self) -> io::Result<Portmap> {
        let nfs = self.local_addr()?;
        let own = SocketAddr::new(nfs.ip(), portmap::PORT);
        let tcp = match TcpListener::bind(own).await {
            Ok(tcp) => tcp,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let registration = register::register(nfs).await.map_err(|r| {
                    io::Error::new(
                        r.kind(),
                        format!(
                            "port {own} is taken, and registering with the portmapper there failed: {r}"
                        ),
                    )
                })?;
                self.registered = Some(registration);
                return Ok(Portmap::Registered);
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("listening on {own}: {e}"))),
        };
        let udp = UdpSocket::bind(own)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listening on {own}/udp: {e}")))?;
        self.portmap = Some(PortmapListeners {
            tcp,
            udp,
            map: Arc::new(Map::new(nfs, portmap::PORT)),
        });
        Ok(Portmap::Served)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves. Connection threads are not waited for: they
    /// end with the process. A registration with an outside portmapper is withdrawn
    /// on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let NfsServer {
            listener,
            exports,
            portmap,
            registered,
            cap,
        } = self;
        let connections = Admission::new("NFS", cap);
        let nfs = accept(listener, Service::Nfs(exports), connections.clone());
        match portmap {
            None => {
                tokio::select! {
                    () = shutdown => {}
                    () = nfs => {}
                }
            }
            Some(p) => {
                let tcp = accept(p.tcp, Service::Portmap(p.map.clone()), connections);
                tokio::select! {
                    () = shutdown => {}
                    () = nfs => {}
                    () = tcp => {}
                    () = datagrams(p.udp, p.map) => {}
                }
            }
        }
        if let Some(r) = registered {
            r.withdraw().await;
        }
    }
}

/// Accepts connections forever, each served by a thread of its own.
async fn accept(listener: TcpListener, service: Service, connections: Admission) {
    loop {
        let (socket, peer) = connections.accept(&listener).await;
        tracing::debug!("connection from {peer}");
        let started = socket
            .local_addr()
            .and_then(|local| Ok((local.ip(), socket.into_std()?)))
            .and_then(|(local, socket)| {
                socket.set_nonblocking(false)?;
                let socket = connections.admit(socket);
                let service = service.clone();
                std::thread::Builder::new()
                    .name(format!("nfs {peer}"))
                    .spawn(move || serve_connection(socket, peer, local, &service))
                    .map(drop)
            });
        if let Err(e) = started {
            // Out of threads, or a connection reset before it was set up: not the
            // listener's end. Pause so as not to spin.
            tracing::warn!("serving a connection from {peer}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Answers portmapper calls over UDP, one datagram each. Only the portmapper is served
/// this way: NFS and MOUNT are TCP only.
async fn datagrams(socket: UdpSocket, map: Arc<Map>) {
    let local = socket
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let service = Service::Portmap(map);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("receiving a portmapper datagram: {e}");
                continue;
            }
        };
        // A datagram is a record without the TCP record marker.
        if let Some(reply) = answer(&service, local, &buf[..n])
            && let Err(e) = socket.send_to(&reply[4..], peer).await
        {
            tracing::debug!("answering {peer} over UDP: {e}");
        }
    }
}

/// Answers a connection's calls one after the other until it closes, errs or idles.
fn serve_connection(
    mut socket: Admitted<std::net::TcpStream>,
    peer: SocketAddr,
    local: IpAddr,
    service: &Service,
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
        let record = match rpc::read_record(&mut *socket, MAX_REQUEST, IDLE, STALL) {
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
        socket.progress();
        if let Some(reply) = answer(service, local, &record) {
            if let Err(e) = socket.write_all(&reply) {
                tracing::debug!("{peer} does not take replies ({e}); closing");
                break;
            }
            socket.progress();
        }
    }
    tracing::debug!("connection from {peer} ends");
}

/// Answers request records (RPC calls to NFS and MOUNT, without the record marker) as
/// a connection to 127.0.0.1 gets them answered, against a store's roots: what the fuzz
/// targets (`fuzz/`) feed arbitrary bytes to.
#[doc(hidden)]
pub struct Answerer(Service);

impl Answerer {
    /// Answers for the roots of `store`.
    pub fn new(store: Store) -> Answerer {
        Answerer(Service::Nfs(Arc::new(Exports::new(store))))
    }

    /// The reply record to `record`, if it gets one.
    pub fn answer(&self, record: &[u8]) -> Option<Vec<u8>> {
        answer(&self.0, IpAddr::from([127, 0, 0, 1]), record)
    }
}

/// The reply record to a request record, if it gets one. `local` is the address the
/// request arrived on.
fn answer(service: &Service, local: IpAddr, record: &[u8]) -> Option<Vec<u8>> {
    let call = match rpc::receive(record) {
        rpc::Received::Call(c) => c,
        rpc::Received::Refused(reply) => return Some(reply),
        rpc::Received::Ignored => return None,
    };
    tracing::trace!("call {} {}.{}", call.xid, call.prog, call.proc_);
    let mut out = rpc::success(call.xid);
    let (low, high) = portmap::VERSIONS;
    let done = match (service, call.prog, call.vers) {
        (Service::Nfs(exports), nfs3::PROGRAM, 3) => {
            nfs3::call(exports, &call.caller, call.proc_, call.args, &mut out)
        }
        (Service::Nfs(exports), mount::PROGRAM, 3) => {
            mount::call(exports, call.proc_, call.args, &mut out)
        }
        (Service::Nfs(_), nfs3::PROGRAM | mount::PROGRAM, _) => {
            return Some(rpc::wrong_version(call.xid, 3, 3));
        }
        (Service::Portmap(map), portmap::PROGRAM, v) if (low..=high).contains(&v) => {
            portmap::call(map, v, call.proc_, call.args, local, &mut out)
        }
        (Service::Portmap(_), portmap::PROGRAM, _) => {
            return Some(rpc::wrong_version(call.xid, low, high));
        }
        _ => return Some(rpc::no_program(call.xid)),
    };
    Some(match done {
        Ok(()) => rpc::finish(out),
        Err(fault) => rpc::fault(call.xid, fault),
    })
}
