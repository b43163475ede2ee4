//! The portmapper (program 100000, RFC 1833: PMAP version 2, RPCBIND versions 3 and 4)
//! for the two programs this server exports.
//!
//! Stock NFS clients ask the portmapper on port 111 where NFS and MOUNT listen:
//! Debian's initramfs mounts `nfsroot=` with klibc's `nfsmount`, which refuses
//! `mountport=` and asks port 111 for MOUNT; so do `mount -t nfs` without `port=` and
//! libnfs URLs without `nfsport`/`mountport`. Answering those questions here keeps one
//! process and no registration step: the map holds exactly NFS v3 and MOUNT v3 over TCP
//! at the NFS port, and the portmapper itself. Nothing can register with it (SET and
//! UNSET answer false), and the indirect-call procedures, which make a portmapper an
//! amplifier, are not served.

use super::rpc::Fault;
use super::xdr::{Reader, Writer};
use super::{mount, nfs3};
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// The program number of the portmapper.
pub const PROGRAM: u32 = 100_000;
/// The port clients ask.
pub const PORT: u16 = 111;
/// Versions served: PMAP 2, RPCBIND 3 and 4.
pub const VERSIONS: (u32, u32) = (2, 4);

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Bound on the strings of an RPCBIND request (netids, universal addresses, owners).
const MAX_STRING: usize = 256;

/// One program this server answers: program, version, protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    prog: u32,
    vers: u32,
    proto: u32,
    port: u16,
}

/// What the portmapper knows: where NFS and MOUNT listen, and where it listens itself.
#[derive(Clone, Debug)]
pub struct Map {
    /// The NFS (and MOUNT) listener's address.
    nfs: SocketAddr,
    /// The portmapper's own TCP and UDP port.
    own: u16,
}

impl Map {
    /// The map for NFS and MOUNT on `nfs`, with the portmapper itself on port `own`.
    pub fn new(nfs: SocketAddr, own: u16) -> Map {
        Map { nfs, own }
    }

    fn mappings(&self) -> Vec<Mapping> {
        let mut out = Vec::new();
        for vers in VERSIONS.0..=VERSIONS.1 {
            for proto in [IPPROTO_TCP, IPPROTO_UDP] {
                out.push(Mapping {
                    prog: PROGRAM,
                    vers,
                    proto,
                    port: self.own,
                });
            }
        }
        for prog in [nfs3::PROGRAM, mount::PROGRAM] {
            out.push(Mapping {
                prog,
                vers: 3,
                proto: IPPROTO_TCP,
                port: self.nfs.port(),
            });
        }
        out
    }

    /// The port of `prog` version `vers` over `proto`, or 0 (PMAP's "not registered").
    fn port(&self, prog: u32, vers: u32, proto: u32) -> u16 {
        self.mappings()
            .into_iter()
            .find(|m| (m.prog, m.vers, m.proto) == (prog, vers, proto))
            .map_or(0, |m| m.port)
    }

    /// RPCBIND's answer to "where is `prog`", as a universal address, or "" when it is
    /// not served. With `any_version`, another version of the program is an answer too
    /// (GETADDR's rule; GETVERSADDR wants the exact one). `local` is the address the
    /// question arrived on, given instead of a wildcard listener address.
    fn address(
        &self,
        prog: u32,
        vers: u32,
        netid: &[u8],
        any_version: bool,
        local: IpAddr,
    ) -> String {
        let proto = match netid {
            b"tcp" | b"tcp6" => IPPROTO_TCP,
            b"udp" | b"udp6" => IPPROTO_UDP,
            _ => return String::new(),
        };
        let family_ok = matches!(
            (netid, self.nfs.ip()),
            (b"tcp" | b"udp", IpAddr::V4(_)) | (b"tcp6" | b"udp6", IpAddr::V6(_))
        );
        if !family_ok {
            return String::new();
        }
        let found = self
            .mappings()
            .into_iter()
            .filter(|m| m.prog == prog && m.proto == proto)
            .find(|m| m.vers == vers || any_version);
        let ip = if self.nfs.ip().is_unspecified() {
            local
        } else {
            self.nfs.ip()
        };
        found.map_or_else(String::new, |m| universal(ip, m.port))
    }

    /// Every mapping as RPCBIND lists them: program, version, netid, address, owner.
    fn entries(&self, local: IpAddr) -> Vec<(u32, u32, &'static str, String)> {
        let v6 = self.nfs.is_ipv6();
        let ip = if self.nfs.ip().is_unspecified() {
            local
        } else {
            self.nfs.ip()
        };
        self.mappings()
            .into_iter()
            .map(|m| {
                let netid = match (m.proto == IPPROTO_TCP, v6) {
                    (true, false) => "tcp",
                    (true, true) => "tcp6",
                    (false, false) => "udp",
                    (false, true) => "udp6",
                };
                (m.prog, m.vers, netid, universal(ip, m.port))
            })
            .collect()
    }
}

/// A universal address (RFC 5665): the IP address, then the port's two bytes.
fn universal(ip: IpAddr, port: u16) -> String {
    format!("{ip}.{}.{}", port >> 8, port & 0xff)
}

/// Runs procedure `proc_` of version `vers` with `args`, writing its results to `out`.
/// `local` is the address the call arrived on.
pub fn call(
    map: &Map,
    vers: u32,
    proc_: u32,
    args: &[u8],
    local: IpAddr,
    out: &mut Writer,
) -> Result<(), Fault> {
    let mut r = Reader::new(args);
    match (vers, proc_) {
        (_, 0) => r.finish()?,
        // SET, UNSET: nobody registers here.
        (2, 1 | 2) => {
            mapping(&mut r)?;
            r.finish()?;
            out.bool(false);
        }
        (3 | 4, 1 | 2) => {
            rpcb(&mut r)?;
            r.finish()?;
            out.bool(false);
        }
        (2, 3) => {
            let m = mapping(&mut r)?;
            r.finish()?;
            out.u32(u32::from(map.port(m.prog, m.vers, m.proto)));
        }
        (2, 4) => {
            r.finish()?;
            for m in map.mappings() {
                out.bool(true)
                    .u32(m.prog)
                    .u32(m.vers)
                    .u32(m.proto)
                    .u32(u32::from(m.port));
            }
            out.bool(false);
        }
        // GETADDR (3, 4) and GETVERSADDR (4).
        (3 | 4, 3) | (4, 10) => {
            let (prog, vers, netid) = rpcb(&mut r)?;
            r.finish()?;
            let any = proc_ == 3;
            out.opaque(map.address(prog, vers, netid, any, local).as_bytes());
        }
        (3 | 4, 4) => {
            r.finish()?;
            for (prog, vers, netid, addr) in map.entries(local) {
                out.bool(true)
                    .u32(prog)
                    .u32(vers)
                    .opaque(netid.as_bytes())
                    .opaque(addr.as_bytes())
                    .opaque(b"superuser");
            }
            out.bool(false);
        }
        // GETTIME.
        (3 | 4, 6) => {
            r.finish()?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            out.u32(now as u32);
        }
        _ => return Err(Fault::NoProcedure),
    }
    Ok(())
}

/// PMAP's `mapping`: program, version, protocol, port.
fn mapping(r: &mut Reader<'_>) -> Result<Mapping, Fault> {
    let (prog, vers, proto, port) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    Ok(Mapping {
        prog,
        vers,
        proto,
        port: port as u16,
    })
}

/// RPCBIND's `rpcb`: program, version, netid, address, owner; the address and owner of
/// a question are not used.
fn rpcb<'a>(r: &mut Reader<'a>) -> Result<(u32, u32, &'a [u8]), Fault> {
    let prog = r.u32()?;
    let vers = r.u32()?;
    let netid = r.opaque(MAX_STRING)?;
    r.opaque(MAX_STRING)?;
    r.opaque(MAX_STRING)?;
    Ok((prog, vers, netid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out.resize(4 + s.len().div_ceil(4) * 4, 0);
        out
    }

    fn answer(map: &Map, vers: u32, proc_: u32, args: &[u8]) -> Result<Vec<u8>, Fault> {
        let mut out = Writer::with_capacity(64);
        let local = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        call(map, vers, proc_, args, local, &mut out)?;
        Ok(out.into_bytes())
    }

    #[test]
    fn getport_answers_nfs_and_mount_over_tcp_only() {
        let map = Map::new("127.0.0.3:2049".parse().unwrap(), 111);
        let port = |prog, vers, proto| answer(&map, 2, 3, &words(&[prog, vers, proto, 0])).unwrap();
        assert_eq!(port(100_003, 3, 6), words(&[2049]));
        assert_eq!(port(100_005, 3, 6), words(&[2049]));
        assert_eq!(port(100_005, 3, 17), words(&[0]));
        assert_eq!(port(100_005, 1, 6), words(&[0]));
        assert_eq!(port(100_000, 2, 17), words(&[111]));
        assert_eq!(port(100_021, 4, 6), words(&[0]));
    }

    #[test]
    fn getaddr_gives_universal_addresses() {
        let map = Map::new("0.0.0.0:2049".parse().unwrap(), 111);
        let mut args = words(&[100_005, 3]);
        args.extend(string("tcp"));
        args.extend(string(""));
        args.extend(string(""));
        // The wildcard listener answers with the address the question came to.
        assert_eq!(answer(&map, 3, 3, &args).unwrap(), string("10.0.0.7.8.1"));
        let mut v1 = words(&[100_005, 1]);
        v1.extend(&args[8..]);
        // GETADDR accepts another version of the program; GETVERSADDR does not.
        assert_eq!(answer(&map, 4, 3, &v1).unwrap(), string("10.0.0.7.8.1"));
        assert_eq!(answer(&map, 4, 10, &v1).unwrap(), string(""));
        let mut udp = words(&[100_003, 3]);
        udp.extend(string("udp"));
        udp.extend(string(""));
        udp.extend(string(""));
        assert_eq!(answer(&map, 3, 3, &udp).unwrap(), string(""));
    }

    #[test]
    fn registrations_and_indirect_calls_are_refused() {
        let map = Map::new("127.0.0.3:2049".parse().unwrap(), 111);
        assert_eq!(
            answer(&map, 2, 1, &words(&[100_099, 1, 6, 999])).unwrap(),
            words(&[0])
        );
        assert_eq!(
            answer(&map, 2, 5, &words(&[100_003, 3, 0, 0])),
            Err(Fault::NoProcedure)
        );
        assert_eq!(answer(&map, 2, 3, &words(&[1, 2])), Err(Fault::Garbage));
    }

    #[test]
    fn dump_lists_every_mapping() {
        let map = Map::new("127.0.0.3:2049".parse().unwrap(), 111);
        let out = answer(&map, 2, 4, &[]).unwrap();
        // 6 portmapper entries + NFS + MOUNT, 5 words each, then the end marker.
        assert_eq!(out.len(), (8 * 5 + 1) * 4);
    }
}
