//! NFS version 3 (RFC 1813), read-only: the procedures' arguments and results over
//! [`Exports`]. Every procedure that would change something answers `NFS3ERR_ROFS`.

use super::export::{Attr, Error, Exports, Kind, Listing};
use super::rpc::{Caller, Fault};
use super::xdr::{Reader, Writer, opaque_size};

/// The program number of NFS.
pub const PROGRAM: u32 = 100_003;
/// Largest READ answered (FSINFO's `rtmax`), and largest listing reply.
pub const MAX_READ: u32 = 1 << 20;
/// Largest WRITE a client may send (FSINFO's `wtmax`); all are refused, but a request
/// of this size must fit in a record.
pub const MAX_WRITE: u32 = 32 << 10;
/// NFSv3's bound on a file handle.
const FHSIZE: usize = 64;
/// Longest name or path accepted in arguments (longer is garbage, not a lookup).
const MAX_NAME: usize = 1024;
/// Encoded size of `fattr3`.
const FATTR_SIZE: usize = 84;
/// The `fsid` of every file: the whole export is one file system to a client.
const FSID: u64 = 0x63616e6f7079;

const NFS3_OK: u32 = 0;
const ROFS: u32 = 30;

fn status(e: Error) -> u32 {
    match e {
        Error::NoEnt => 2,
        Error::Io => 5,
        Error::NotDir => 20,
        Error::IsDir => 21,
        Error::Inval => 22,
        Error::NameTooLong => 63,
        Error::Stale => 70,
        Error::BadHandle => 10001,
        Error::BadCookie => 10003,
        Error::TooSmall => 10005,
    }
}

fn ftype(k: Kind) -> u32 {
    match k {
        Kind::File => 1,
        Kind::Dir => 2,
        Kind::Block => 3,
        Kind::Char => 4,
        Kind::Symlink => 5,
        Kind::Socket => 6,
        Kind::Fifo => 7,
    }
}

fn fattr(w: &mut Writer, a: &Attr) {
    w.u32(ftype(a.kind))
        .u32(a.mode)
        .u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid)
        .u64(a.size)
        .u64(a.size)
        .u32(a.rdev.0)
        .u32(a.rdev.1)
        .u64(FSID)
        .u64(a.fileid);
    for _ in 0..3 {
        w.u32(a.time.0).u32(a.time.1);
    }
}

fn post_op_attr(w: &mut Writer, a: Option<&Attr>) {
    match a {
        Some(a) => {
            w.bool(true);
            fattr(w, a);
        }
        None => {
            w.bool(false);
        }
    }
}

fn handle(r: &mut Reader) -> Result<Vec<u8>, Fault> {
    Ok(r.opaque(FHSIZE)?.to_vec())
}

/// Runs procedure `proc_` with `args`, writing its results to `out`. Arguments are
/// decoded whole before anything is written, so a fault leaves `out` to be discarded.
pub fn call(
    exports: &Exports,
    caller: &Caller,
    proc_: u32,
    args: &[u8],
    out: &mut Writer,
) -> Result<(), Fault> {
    let mut r = Reader::new(args);
    match proc_ {
        0 => r.finish()?,
        1 => {
            let fh = handle(&mut r)?;
            r.finish()?;
            match exports.resolve_handle(&fh).and_then(|f| exports.attr(&f)) {
                Ok(a) => {
                    out.u32(NFS3_OK);
                    fattr(out, &a);
                }
                Err(e) => {
                    out.u32(status(e));
                }
            }
        }
        3 => {
            let dir = handle(&mut r)?;
            let name = r.opaque(MAX_NAME)?.to_vec();
            r.finish()?;
            lookup(exports, &dir, &name, out);
        }
        4 => {
            let fh = handle(&mut r)?;
            let wanted = r.u32()?;
            r.finish()?;
            match exports.resolve_handle(&fh).and_then(|f| exports.attr(&f)) {
                Ok(a) => {
                    out.u32(NFS3_OK);
                    post_op_attr(out, Some(&a));
                    out.u32(wanted & access(caller, &a));
                }
                Err(e) => fail(out, e),
            }
        }
        5 => {
            let fh = handle(&mut r)?;
            r.finish()?;
            let link = exports.resolve_handle(&fh).and_then(|f| {
                let target = exports.readlink(&f)?;
                Ok((exports.attr(&f)?, target))
            });
            match link {
                Ok((a, target)) => {
                    out.u32(NFS3_OK);
                    post_op_attr(out, Some(&a));
                    out.opaque(&target);
                }
                Err(e) => fail(out, e),
            }
        }
        6 => {
            let fh = handle(&mut r)?;
            let offset = r.u64()?;
            let count = r.u32()?.min(MAX_READ);
            r.finish()?;
            let read = exports
                .resolve_handle(&fh)
                .and_then(|f| Ok((exports.read(&f, offset, count)?, exports.attr(&f)?)));
            match read {
                Ok((chunk, a)) => {
                    let start = out.len();
                    out.u32(NFS3_OK);
                    post_op_attr(out, Some(&a));
                    out.u32(chunk.len as u32).bool(chunk.eof);
                    // The data goes from the store's file straight into the reply.
                    if let Err(e) = out.opaque_from(chunk.len, |buf| chunk.read_into(buf)) {
                        out.truncate(start);
                        fail(out, e);
                    }
                }
                Err(e) => fail(out, e),
            }
        }
        16 | 17 => {
            let fh = handle(&mut r)?;
            let cookie = r.u64()?;
            let verifier: [u8; 8] = r.fixed(8)?.try_into().expect("8 bytes");
            let plus = proc_ == 17;
            // READDIR bounds the reply; READDIRPLUS bounds the names and cookies
            // (dircount) and the whole reply (maxcount).
            let (dircount, maxcount) = if plus {
                (r.u32()?, r.u32()?)
            } else {
                let count = r.u32()?;
                (count, count)
            };
            r.finish()?;
            let budget = Budget {
                names: dircount.min(MAX_READ) as usize,
                reply: maxcount.min(MAX_READ) as usize,
            };
            let listed = exports
                .resolve_handle(&fh)
                .and_then(|f| exports.list(&f))
                .and_then(|l| readdir(exports, &l, cookie, verifier, plus, budget, out));
            if let Err(e) = listed {
                fail(out, e);
            }
        }
        18..=20 => {
            let fh = handle(&mut r)?;
            r.finish()?;
            match exports.resolve_handle(&fh).and_then(|f| exports.attr(&f)) {
                Ok(a) => {
                    out.u32(NFS3_OK);
                    post_op_attr(out, Some(&a));
                    match proc_ {
                        18 => fsstat(exports, out),
                        19 => fsinfo(out),
                        _ => pathconf(out),
                    }
                }
                Err(e) => fail(out, e),
            }
        }
        // SETATTR, WRITE, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK,
        // COMMIT: read-only. Their failure results are weak cache consistency data,
        // sent empty (no attributes before or after): two words each, twice for the two
        // directories of RENAME, and LINK's file attributes before its directory's.
        2 | 7..=13 | 21 => {
            out.u32(ROFS).bool(false).bool(false);
        }
        14 => {
            out.u32(ROFS)
                .bool(false)
                .bool(false)
                .bool(false)
                .bool(false);
        }
        15 => {
            out.u32(ROFS).bool(false).bool(false).bool(false);
        }
        _ => return Err(Fault::NoProcedure),
    }
    Ok(())
}

/// A failure with no attributes, as most procedures' failure results carry.
fn fail(out: &mut Writer, e: Error) {
    out.u32(status(e));
    post_op_attr(out, None);
}

fn lookup(exports: &Exports, dir: &[u8], name: &[u8], out: &mut Writer) {
    let dir = match exports.resolve_handle(dir) {
        Ok(d) => d,
        Err(e) => return fail(out, e),
    };
    let dir_attr = exports.attr(&dir).ok();
    let found = exports
        .lookup(&dir, name)
        .and_then(|f| Ok((exports.attr(&f)?, f)));
    match found {
        Ok((attr, f)) => {
            out.u32(NFS3_OK).opaque(&Exports::handle(&f));
            post_op_attr(out, Some(&attr));
            post_op_attr(out, dir_attr.as_ref());
        }
        Err(e) => {
            out.u32(status(e));
            post_op_attr(out, dir_attr.as_ref());
        }
    }
}

/// What a directory listing reply may hold.
#[derive(Clone, Copy)]
struct Budget {
    /// Bytes of entry names, fileids and cookies (READDIRPLUS's `dircount`).
    names: usize,
    /// Bytes of the whole result (READDIR's `count`, READDIRPLUS's `maxcount`).
    reply: usize,
}

/// Writes a listing page from `cookie` on: as many entries as `budget` allows, at least
/// one or `NFS3ERR_TOOSMALL`.
fn readdir(
    exports: &Exports,
    listing: &Listing,
    cookie: u64,
    verifier: [u8; 8],
    plus: bool,
    budget: Budget,
    out: &mut Writer,
) -> Result<(), Error> {
    // A cookie is a position in the listing the verifier names; a client resuming a
    // listing that has changed since must start over. (Zero verifiers are clients that
    // do not keep them.)
    if cookie != 0 && verifier != [0; 8] && verifier != listing.verifier {
        return Err(Error::BadCookie);
    }
    let start = usize::try_from(cookie).map_err(|_| Error::BadCookie)?;
    if start > listing.len() {
        return Err(Error::BadCookie);
    }
    let dir_attr = exports.entry_attr(listing, 0)?;
    // status, directory attributes, verifier, end of list, eof
    let fixed = 4 + 4 + FATTR_SIZE + 8 + 4 + 4;
    let mut entries = Writer::default();
    let (mut names, mut used, mut count) = (0usize, fixed, 0usize);
    let mut index = start;
    while index < listing.len() {
        let (name, found) = exports.named_entry(listing, index);
        // value-follows, fileid, name, cookie
        let name_size = 4 + 8 + opaque_size(name.len()) + 8;
        let mut entry = Writer::default();
        entry
            .bool(true)
            .u64(found.id)
            .opaque(&name)
            .u64(index as u64 + 1);
        if plus {
            let attr = exports.entry_attr(listing, index)?;
            post_op_attr(&mut entry, Some(&attr));
            entry.bool(true).opaque(&Exports::handle(&found));
        }
        if names + name_size > budget.names || used + entry.len() > budget.reply {
            if count == 0 {
                return Err(Error::TooSmall);
            }
            break;
        }
        names += name_size;
        used += entry.len();
        entries.append(entry);
        count += 1;
        index += 1;
    }
    out.u32(NFS3_OK);
    post_op_attr(out, Some(&dir_attr));
    out.fixed(&listing.verifier)
        .append(entries)
        .bool(false)
        .bool(index == listing.len());
    Ok(())
}

/// ACCESS bits the caller has on a file: read, lookup and execute as its mode allows
/// them to the caller's uid and groups (root: all three, execute only if someone may);
/// never modify, extend or delete.
fn access(caller: &Caller, a: &Attr) -> u32 {
    const READ: u32 = 0x01;
    const LOOKUP: u32 = 0x02;
    const EXECUTE: u32 = 0x20;
    let bits = match caller {
        // Root may read anything and search any directory, and execute what anyone may.
        Caller::Unix { uid: 0, .. } if a.kind == Kind::Dir || a.mode & 0o111 != 0 => 0o7,
        Caller::Unix { uid: 0, .. } => 0o6,
        Caller::Unix { uid, .. } if *uid == a.uid => (a.mode >> 6) & 0o7,
        Caller::Unix { gid, gids, .. } if *gid == a.gid || gids.contains(&a.gid) => {
            (a.mode >> 3) & 0o7
        }
        _ => a.mode & 0o7,
    };
    let mut out = 0;
    if bits & 0o4 != 0 {
        out |= READ;
    }
    if bits & 0o1 != 0 {
        out |= if a.kind == Kind::Dir { LOOKUP } else { EXECUTE };
    }
    out
}

fn fsstat(exports: &Exports, out: &mut Writer) {
    // The store's file system, as the export's size; nothing is free to clients.
    let (bytes, files) = statvfs(exports.store().path()).unwrap_or((0, 0));
    out.u64(bytes).u64(0).u64(0).u64(files).u64(0).u64(0).u32(0);
}

fn statvfs(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by statvfs on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some((st.f_blocks.saturating_mul(st.f_frsize), st.f_files))
}

fn fsinfo(out: &mut Writer) {
    const LINK: u32 = 0x1;
    const SYMLINK: u32 = 0x2;
    const HOMOGENEOUS: u32 = 0x8;
    // rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref, maxfilesize, time_delta
    // (1 ns), properties
    out.u32(MAX_READ)
        .u32(MAX_READ)
        .u32(4096)
        .u32(MAX_WRITE)
        .u32(MAX_WRITE)
        .u32(4096)
        .u32(64 << 10)
        .u64(u64::MAX >> 1)
        .u32(0)
        .u32(1)
        .u32(LINK | SYMLINK | HOMOGENEOUS);
}

fn pathconf(out: &mut Writer) {
    // linkmax, name_max, no_trunc, chown_restricted, case_insensitive, case_preserving
    out.u32(u32::MAX)
        .u32(canopy_protocol::NAME_MAX as u32)
        .bool(true)
        .bool(true)
        .bool(false)
        .bool(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: Kind, mode: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            kind,
            mode,
            nlink: 1,
            uid,
            gid,
            size: 0,
            rdev: (0, 0),
            fileid: 9,
            time: (0, 0),
        }
    }

    #[test]
    fn access_follows_mode_and_caller() {
        let user = |uid, gid, gids: Vec<u32>| Caller::Unix { uid, gid, gids };
        let shadow = attr(Kind::File, 0o640, 0, 42);
        assert_eq!(access(&user(1000, 100, vec![]), &shadow), 0);
        assert_eq!(access(&user(1000, 100, vec![42]), &shadow), 0x01);
        assert_eq!(access(&user(0, 0, vec![]), &shadow), 0x01);
        assert_eq!(access(&Caller::Anonymous, &shadow), 0);
        let bin = attr(Kind::File, 0o755, 0, 0);
        assert_eq!(access(&Caller::Anonymous, &bin), 0x21);
        let dir = attr(Kind::Dir, 0o711, 0, 0);
        assert_eq!(access(&user(1000, 100, vec![]), &dir), 0x02);
        assert_eq!(access(&user(0, 0, vec![]), &dir), 0x03);
    }
}
