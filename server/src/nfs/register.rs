//! Registering NFS and MOUNT with a portmapper that already holds port 111 (an
//! `rpcbind` of the host), the way other user-space NFS servers do, and withdrawing
//! the registration when the server stops.
//!
//! PMAP version 2 over TCP to the host's loopback address: `rpcbind` takes SET and
//! UNSET only from local callers, and from root only on a reserved source port, so one
//! is used when this process may bind it. A mapping another server holds is never
//! replaced: that is an error saying what to do instead.

use super::{mount, nfs3, portmap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Each exchange with the portmapper must be over within this.
const WAIT: Duration = Duration::from_secs(5);
const IPPROTO_TCP: u32 = 6;
const SET: u32 = 1;
const UNSET: u32 = 2;
const GETPORT: u32 = 3;

/// NFS and MOUNT as registered; [`Registration::withdraw`] undoes it.
pub struct Registration {
    portmapper: SocketAddr,
}

/// Registers NFS v3 and MOUNT v3 over TCP at `nfs`'s port with the portmapper on this
/// host. A mapping already there for that very port (left by an earlier run) is kept.
pub async fn register(nfs: SocketAddr) -> io::Result<Registration> {
    let loopback = match nfs.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let portmapper = SocketAddr::new(loopback, portmap::PORT);
    let port = u32::from(nfs.port());
    for prog in [nfs3::PROGRAM, mount::PROGRAM] {
        let set = call(portmapper, SET, [prog, 3, IPPROTO_TCP, port]).await?;
        if set == 0 {
            let held = call(portmapper, GETPORT, [prog, 3, IPPROTO_TCP, 0]).await?;
            if held != port {
                return Err(io::Error::other(format!(
                    "the portmapper at {portmapper} has program {prog} version 3 at port \
                     {held} already (another NFS server?): stop that server, or serve with \
                     --no-portmap and give clients port= and mountport="
                )));
            }
        }
    }
    tracing::info!("registered NFS and MOUNT at port {port} with the portmapper at {portmapper}");
    Ok(Registration { portmapper })
}

impl Registration {
    /// Removes the NFS and MOUNT mappings; failures are logged, not returned, as the
    /// server is stopping anyway.
    pub async fn withdraw(self) {
        for prog in [nfs3::PROGRAM, mount::PROGRAM] {
            if let Err(e) = call(self.portmapper, UNSET, [prog, 3, IPPROTO_TCP, 0]).await {
                tracing::warn!(
                    "withdrawing program {prog} from the portmapper at {}: {e}",
                    self.portmapper
                );
            }
        }
    }
}

/// One PMAP v2 call with a `mapping` argument; returns the u32 result.
async fn call(portmapper: SocketAddr, proc_: u32, mapping: [u32; 4]) -> io::Result<u32> {
    tokio::time::timeout(WAIT, exchange(portmapper, proc_, mapping))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the portmapper at {portmapper} did not answer within {WAIT:?}"),
            )
        })?
}

async fn exchange(portmapper: SocketAddr, proc_: u32, mapping: [u32; 4]) -> io::Result<u32> {
    let mut stream = connect(portmapper).await?;
    // Record marker (last fragment, 56 bytes), xid, CALL, RPC 2, program, version,
    // procedure, AUTH_NONE credential and verifier, then the mapping.
    let words = [
        0x8000_0000 | 56,
        proc_,
        0,
        2,
        portmap::PROGRAM,
        2,
        proc_,
        0,
        0,
        0,
        0,
        mapping[0],
        mapping[1],
        mapping[2],
        mapping[3],
    ];
    let request: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    stream.write_all(&request).await?;
    // Marker, xid, REPLY, MSG_ACCEPTED, verifier flavor and length, SUCCESS, result.
    let mut reply = [0u8; 32];
    stream.read_exact(&mut reply).await?;
    let word = |i: usize| u32::from_be_bytes(reply[i * 4..i * 4 + 4].try_into().unwrap());
    if word(1) != proc_ || word(2) != 1 || word(3) != 0 || word(5) != 0 || word(6) != 0 {
        return Err(io::Error::other(format!(
            "the portmapper at {portmapper} refused the call (reply words {:?})",
            (0..8).map(word).collect::<Vec<_>>()
        )));
    }
    Ok(word(7))
}

/// Connects from a reserved port where this process may bind one (rpcbind wants that
/// of root's registrations), else from any port.
async fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    for port in (600..1024).rev() {
        let socket = match to {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        match socket.bind(SocketAddr::new(to.ip(), port)) {
            Ok(()) => return socket.connect(to).await,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => break,
            Err(_) => continue,
        }
    }
    TcpStream::connect(to).await
}
