//! ONC RPC version 2 (RFC 5531) over TCP: record marking, call headers, reply headers.
//!
//! A record is read whole before it is looked at, and never past a size bound: the
//! record marker's length is checked against what is left of the bound before any
//! buffer grows, so a client claiming a 2 GiB record is disconnected at the cost of
//! four bytes.

use super::xdr::{Garbage, Reader, Writer};
use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The last fragment of a record has this bit set in its marker.
const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Credential flavors accepted: none, and AUTH_SYS (uid, gids; trusted as sent).
const AUTH_NONE: u32 = 0;
const AUTH_SYS: u32 = 1;
/// RFC 5531's bound on a credential or verifier body.
const MAX_AUTH: usize = 400;

/// Why a call gets no result from its procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The arguments do not decode.
    Garbage,
    /// No such procedure in the program.
    NoProcedure,
}

impl From<Garbage> for Fault {
    fn from(_: Garbage) -> Self {
        Fault::Garbage
    }
}

/// Who is calling, as the credential says (AUTH_SYS is not proof of anything; it is
/// used to answer ACCESS as the caller's own kernel would decide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// AUTH_NONE: treated as nobody in particular.
    Anonymous,
    /// AUTH_SYS.
    Unix {
        /// User id.
        uid: u32,
        /// Primary group id.
        gid: u32,
        /// Supplementary groups.
        gids: Vec<u32>,
    },
}

/// A decoded call.
pub struct Call<'a> {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// The credential.
    pub caller: Caller,
    /// The procedure's arguments, undecoded.
    pub args: &'a [u8],
}

/// What a received record turned out to be.
pub enum Received<'a> {
    /// A call to dispatch.
    Call(Call<'a>),
    /// A call refused at the RPC level: send this reply record.
    Refused(Vec<u8>),
    /// Not a call at all (too short, or a reply): dropped without an answer, as RFC
    /// 5531 allows when there is no transaction to answer.
    Ignored,
}

/// A connection that can bound how long each read waits.
pub trait Timed: Read {
    /// Makes reads give up (with `WouldBlock` or `TimedOut`) after `wait`.
    fn read_timeout(&mut self, wait: Duration) -> io::Result<()>;
}

impl Timed for TcpStream {
    fn read_timeout(&mut self, wait: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(wait))
    }
}

/// Fills `buf` before `deadline`. Ok(false) if the peer sent nothing at all (it closed,
/// or stayed silent until the deadline); an error if it stopped part way.
fn fill<R: Timed>(input: &mut R, buf: &mut [u8], deadline: Instant) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let stopped = |kind, what: &str| {
            if got == 0 {
                Ok(false)
            } else {
                Err(io::Error::new(
                    kind,
                    format!("an RPC record {what} after {got} bytes"),
                ))
            }
        };
        if left.is_zero() {
            return stopped(io::ErrorKind::TimedOut, "stalled");
        }
        input.read_timeout(left)?;
        match input.read(&mut buf[got..]) {
            Ok(0) => return stopped(io::ErrorKind::UnexpectedEof, "ended"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads one record of at most `max` bytes. `Ok(None)` when the peer closed the
/// connection between records or stayed silent for `idle`; an error when the record
/// is over `max`, or does not arrive whole within `stall` of its first byte.
pub fn read_record<R: Timed>(
    input: &mut R,
    max: usize,
    idle: Duration,
    stall: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut marker = [0u8; 4];
    if !fill(input, &mut marker, Instant::now() + idle)? {
        return Ok(None);
    }
    let deadline = Instant::now() + stall;
    let mut record = Vec::new();
    loop {
        let m = u32::from_be_bytes(marker);
        let len = (m & !LAST_FRAGMENT) as usize;
        if len > max - record.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an RPC record of more than {max} bytes ({} so far, then a fragment of {len})",
                    record.len()
                ),
            ));
        }
        let start = record.len();
        record.resize(start + len, 0);
        if !fill(input, &mut record[start..], deadline)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "an RPC record ended after its marker",
            ));
        }
        if m & LAST_FRAGMENT != 0 {
            return Ok(Some(record));
        }
        if !fill(input, &mut marker, deadline)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "an RPC record ended between fragments",
            ));
        }
    }
}

fn caller(flavor: u32, body: &[u8]) -> Result<Caller, Garbage> {
    match flavor {
        AUTH_NONE => Ok(Caller::Anonymous),
        AUTH_SYS => {
            let mut r = Reader::new(body);
            let _stamp = r.u32()?;
            let _machine = r.opaque(255)?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let n = r.u32()?;
            if n > 16 {
                return Err(Garbage);
            }
            let gids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            r.finish()?;
            Ok(Caller::Unix { uid, gid, gids })
        }
        _ => Err(Garbage),
    }
}

/// A call header after the xid and message type.
struct Header<'a> {
    rpcvers: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    flavor: u32,
    cred: &'a [u8],
}

fn header<'a>(r: &mut Reader<'a>) -> Result<Header<'a>, Garbage> {
    let h = Header {
        rpcvers: r.u32()?,
        prog: r.u32()?,
        vers: r.u32()?,
        proc_: r.u32()?,
        flavor: r.u32()?,
        cred: r.opaque(MAX_AUTH)?,
    };
    // The verifier: AUTH_NONE or AUTH_SYS callers send an empty one; it is not used.
    r.u32()?;
    r.opaque(MAX_AUTH)?;
    Ok(h)
}

/// Decodes a record's call header.
pub fn receive(record: &[u8]) -> Received<'_> {
    let mut r = Reader::new(record);
    let (Ok(xid), Ok(0)) = (r.u32(), r.u32()) else {
        return Received::Ignored;
    };
    let Ok(h) = header(&mut r) else {
        return Received::Refused(denied_auth(xid, AUTH_BADCRED));
    };
    if h.rpcvers != 2 {
        let mut w = reply(xid, MSG_DENIED);
        w.u32(RPC_MISMATCH).u32(2).u32(2);
        return Received::Refused(finish(w));
    }
    let caller = match caller(h.flavor, h.cred) {
        Ok(c) => c,
        Err(Garbage) if h.flavor == AUTH_NONE || h.flavor == AUTH_SYS => {
            return Received::Refused(denied_auth(xid, AUTH_BADCRED));
        }
        Err(Garbage) => return Received::Refused(denied_auth(xid, AUTH_TOOWEAK)),
    };
    Received::Call(Call {
        xid,
        prog: h.prog,
        vers: h.vers,
        proc_: h.proc_,
        caller,
        args: r.rest(),
    })
}

const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;
const RPC_MISMATCH: u32 = 0;
const AUTH_ERROR: u32 = 1;
const AUTH_BADCRED: u32 = 1;
const AUTH_TOOWEAK: u32 = 5;
const SUCCESS: u32 = 0;
const PROG_UNAVAIL: u32 = 1;
const PROG_MISMATCH: u32 = 2;
const PROC_UNAVAIL: u32 = 3;
const GARBAGE_ARGS: u32 = 4;

/// A reply record's start: room for the record marker, xid, REPLY, the reply status.
fn reply(xid: u32, status: u32) -> Writer {
    let mut w = Writer::with_capacity(128);
    w.u32(0).u32(xid).u32(1).u32(status);
    w
}

fn accepted(xid: u32, stat: u32) -> Writer {
    let mut w = reply(xid, MSG_ACCEPTED);
    // Verifier: AUTH_NONE, empty.
    w.u32(AUTH_NONE).u32(0).u32(stat);
    w
}

fn denied_auth(xid: u32, stat: u32) -> Vec<u8> {
    let mut w = reply(xid, MSG_DENIED);
    w.u32(AUTH_ERROR).u32(stat);
    finish(w)
}

/// A successful reply's header; the procedure's results follow.
pub fn success(xid: u32) -> Writer {
    accepted(xid, SUCCESS)
}

/// The reply to a call whose procedure could not run.
pub fn fault(xid: u32, fault: Fault) -> Vec<u8> {
    finish(accepted(
        xid,
        match fault {
            Fault::Garbage => GARBAGE_ARGS,
            Fault::NoProcedure => PROC_UNAVAIL,
        },
    ))
}

/// The reply to a call of a program not served here.
pub fn no_program(xid: u32) -> Vec<u8> {
    finish(accepted(xid, PROG_UNAVAIL))
}

/// The reply to a call of a program served here in another version.
pub fn wrong_version(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut w = accepted(xid, PROG_MISMATCH);
    w.u32(low).u32(high);
    finish(w)
}

/// A finished reply as one record: the marker filled in (one last fragment).
pub fn finish(w: Writer) -> Vec<u8> {
    let mut bytes = w.into_bytes();
    let len = u32::try_from(bytes.len() - 4).expect("replies are bounded far below 2 GiB");
    bytes[..4].copy_from_slice(&(LAST_FRAGMENT | len).to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// Test input: reads never wait.
    impl Timed for &[u8] {
        fn read_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    /// A record from `input`, bounded at 1 KiB.
    fn record(input: &mut &[u8]) -> io::Result<Option<Vec<u8>>> {
        let wait = Duration::from_secs(5);
        read_record(input, 1024, wait, wait)
    }

    #[test]
    fn records_over_the_bound_are_refused_before_reading_them() {
        let err = record(&mut &[0xff, 0xff, 0xff, 0xff][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Two fragments, each under the bound, together over it.
        let mut two = 600u32.to_be_bytes().to_vec();
        two.extend_from_slice(&[0; 600]);
        two.extend_from_slice(&(LAST_FRAGMENT | 600).to_be_bytes());
        two.extend_from_slice(&[0; 600]);
        assert!(record(&mut &two[..]).is_err());
        // Fragments within the bound make one record; a clean end is no record.
        let mut ok = 2u32.to_be_bytes().to_vec();
        ok.extend_from_slice(b"ab");
        ok.extend_from_slice(&(LAST_FRAGMENT | 1).to_be_bytes());
        ok.extend_from_slice(b"c");
        let mut input = &ok[..];
        assert_eq!(record(&mut input).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(record(&mut input).unwrap(), None);
        // Records cut short, in a marker, in a fragment or between fragments, are errors.
        for cut in [&[0x80, 0][..], &[0x80, 0, 0, 10, 1, 2], &[0, 0, 0, 1, 9]] {
            assert!(record(&mut &cut[..]).is_err(), "{cut:?}");
        }
    }

    #[test]
    fn calls_and_refusals() {
        // xid 7, CALL, rpcvers 2, NFS 3 GETATTR, AUTH_SYS (stamp, "h", uid 1000, gid 100,
        // one gid), verifier AUTH_NONE, then arguments.
        let mut rec = call(&[7, 0, 2, 100003, 3, 1, 1, 28, 0, 1]);
        rec.extend_from_slice(b"h\0\0\0");
        rec.extend(call(&[1000, 100, 1, 27, 0, 0, 42]));
        let Received::Call(c) = receive(&rec) else {
            panic!("not a call")
        };
        assert_eq!((c.xid, c.prog, c.vers, c.proc_), (7, 100003, 3, 1));
        assert_eq!(
            c.caller,
            Caller::Unix {
                uid: 1000,
                gid: 100,
                gids: vec![27]
            }
        );
        assert_eq!(c.args, &42u32.to_be_bytes());
        // RPC version 3: denied with the supported range.
        let Received::Refused(r) = receive(&call(&[8, 0, 3, 100003, 3, 0, 0, 0, 0, 0])) else {
            panic!("not refused")
        };
        assert_eq!(r[4..], call(&[8, 1, MSG_DENIED, RPC_MISMATCH, 2, 2])[..]);
        // RPCSEC_GSS: too weak (we have nothing stronger to offer, but it says why).
        let Received::Refused(r) = receive(&call(&[9, 0, 2, 100003, 3, 0, 6, 0, 0, 0])) else {
            panic!("not refused")
        };
        assert_eq!(
            r[4..],
            call(&[9, 1, MSG_DENIED, AUTH_ERROR, AUTH_TOOWEAK])[..]
        );
        // A reply, or three bytes: no transaction to answer.
        assert!(matches!(receive(&call(&[1, 1])), Received::Ignored));
        assert!(matches!(receive(&[1, 2, 3]), Received::Ignored));
        // A credential claiming 4 GiB: refused as a bad credential.
        let Received::Refused(r) = receive(&call(&[5, 0, 2, 100003, 3, 0, 1, u32::MAX])) else {
            panic!("not refused")
        };
        assert_eq!(
            r[4..],
            call(&[5, 1, MSG_DENIED, AUTH_ERROR, AUTH_BADCRED])[..]
        );
    }
}
