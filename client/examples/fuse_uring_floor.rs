//! How much FUSE-over-io-uring lowers the FUSE round trip, for `benches/uring.sh`: a
//! tiny read-only FUSE server, written against the kernel's wire format without fuser
//! (fuser 0.18 speaks only `/dev/fuse` read/write), serving one file `f` (the bytes of
//! a given file) from memory with the open flags a canopy mount uses
//! (`FOPEN_KEEP_CACHE | FOPEN_NOFLUSH`, one-hour TTLs, no OPENDIR), over either
//! transport:
//!
//! - `dev`: threads reading requests from `/dev/fuse` and writing answers to it, as
//!   fuser (and canopy) do;
//! - `uring`: one io_uring per CPU queue, each request fetched and answered by one
//!   `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` command (the kernel's
//!   Documentation/filesystems/fuse-io-uring.rst); needs
//!   `/sys/module/fuse/parameters/enable_uring` set to Y before the mount.
//!
//! Not part of canopy: a benchmark prototype only (no hand-over, no passthrough, one
//! file).
//!
//! ```sh
//! cargo run --release -p canopy-client --example fuse_uring_floor -- uring FILE MOUNTPOINT
//! ```
//!
//! Prints `mounted at MOUNTPOINT` once serving; unmounts at SIGTERM or SIGINT.

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

const FOPEN_KEEP_CACHE: u32 = 1 << 1;
const FOPEN_NOFLUSH: u32 = 1 << 5;
/// `FUSE_OVER_IO_URING` (bit 41 of the INIT flags) within `flags2`.
const OVER_IO_URING2: u32 = 1 << 9;
const ASYNC_READ: u32 = 1;
const BIG_WRITES: u32 = 1 << 5;
const MAX_PAGES: u32 = 1 << 22;
const INIT_EXT: u32 = 1 << 30;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `struct fuse_uring_req_header`: the in/out header (128), the op header (128), and
/// `struct fuse_uring_ent_in_out` (32).
const RING_HEADER: usize = 288;
const PAYLOAD: usize = 1 << 20;
/// One hour, as canopy's TTLs.
const TTL: u64 = 3600;

/// What the server serves: inode 1 the root, inode 2 the file `f`.
struct Tree {
    content: Vec<u8>,
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

impl Tree {
    /// `struct fuse_attr` of inode `ino`.
    fn attr(&self, ino: u64, out: &mut Vec<u8>) {
        let (size, mode, nlink) = if ino == 1 {
            (0, 0o40755, 2)
        } else {
            (self.content.len() as u64, 0o100644, 1)
        };
        for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
            put64(out, v);
        }
        for v in [0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
            put32(out, v);
        }
    }

    /// Answers one request (`header`: `struct fuse_in_header`; `arg`: what follows it)
    /// into `out`: `Ok(Some(args))`, `Ok(None)` for no answer, `Err(errno)`.
    fn answer(&self, header: &[u8], arg: &[u8], out: &mut Vec<u8>) -> Result<bool, i32> {
        let opcode = get32(header, 4);
        let nodeid = get64(header, 16);
        match opcode {
            LOOKUP => {
                let name = arg.split(|b| *b == 0).next().unwrap_or_default();
                if nodeid != 1 || name != b"f" {
                    return Err(libc::ENOENT);
                }
                for v in [2, 0, TTL, TTL] {
                    put64(out, v);
                }
                put64(out, 0);
                self.attr(2, out);
            }
            GETATTR => {
                if nodeid > 2 {
                    return Err(libc::ENOENT);
                }
                put64(out, TTL);
                put64(out, 0);
                self.attr(nodeid, out);
            }
            OPEN => {
                if nodeid != 2 {
                    return Err(libc::EISDIR);
                }
                put64(out, 0);
                put32(out, FOPEN_KEEP_CACHE | FOPEN_NOFLUSH);
                put32(out, 0);
            }
            READ => {
                let (offset, size) = (get64(arg, 8) as usize, get32(arg, 16) as usize);
                let start = offset.min(self.content.len());
                let end = start.saturating_add(size).min(self.content.len());
                out.extend_from_slice(&self.content[start..end]);
            }
            RELEASE | FLUSH => {}
            STATFS => {
                for v in [0u64; 5] {
                    put64(out, v);
                }
                for v in [4096, 255, 4096, 0, 0, 0, 0, 0, 0, 0] {
                    put32(out, v);
                }
            }
            FORGET | BATCH_FORGET | INTERRUPT => return Ok(false),
            DESTROY => {}
            _ => return Err(libc::ENOSYS),
        }
        Ok(true)
    }
}

/// `struct fuse_out_header`.
fn out_header(len: usize, error: i32, unique: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(-error).to_le_bytes());
    h[8..].copy_from_slice(&unique.to_le_bytes());
    h
}

/// Writes one answer to `/dev/fuse`.
fn reply_dev(fd: RawFd, unique: u64, result: Result<bool, i32>, args: &[u8]) {
    let (error, args) = match result {
        Ok(true) => (0, args),
        Ok(false) => return,
        Err(e) => (e, &[][..]),
    };
    let h = out_header(16 + args.len(), error, unique);
    let iov = [
        libc::iovec {
            iov_base: h.as_ptr() as *mut _,
            iov_len: 16,
        },
        libc::iovec {
            iov_base: args.as_ptr() as *mut _,
            iov_len: args.len(),
        },
    ];
    // SAFETY: both iovecs point into live buffers of the given lengths.
    unsafe { libc::writev(fd, iov.as_ptr(), 2) };
}

/// Serves requests read from `/dev/fuse` until the connection ends; answers INIT
/// (asking for io_uring if `uring`).
fn serve_dev(fd: RawFd, tree: &Tree, uring: bool, init_done: &std::sync::Barrier) {
    let mut buf = vec![0u8; PAYLOAD + 4096];
    let mut out = Vec::with_capacity(PAYLOAD);
    let mut initialised = false;
    loop {
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
                _ => return,
            }
        }
        let req = &buf[..n as usize];
        let unique = get64(req, 8);
        out.clear();
        if get32(req, 4) == INIT {
            let arg = &req[40..];
            let (minor, readahead, flags2) = (get32(arg, 4), get32(arg, 8), get32(arg, 16));
            for v in [7, minor, readahead] {
                put32(&mut out, v);
            }
            put32(&mut out, ASYNC_READ | BIG_WRITES | MAX_PAGES | INIT_EXT);
            out.extend_from_slice(&16u16.to_le_bytes());
            out.extend_from_slice(&12u16.to_le_bytes());
            put32(&mut out, 128 * 1024);
            put32(&mut out, 1);
            out.extend_from_slice(&32u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            put32(&mut out, if uring { flags2 & OVER_IO_URING2 } else { 0 });
            out.resize(64, 0);
            if uring && flags2 & OVER_IO_URING2 == 0 {
                eprintln!("fuse_uring_floor: the kernel does not offer io_uring");
            }
            reply_dev(fd, unique, Ok(true), &out);
            if !initialised {
                initialised = true;
                init_done.wait();
            }
            continue;
        }
        let result = tree.answer(&req[..40], &req[40..], &mut out);
        reply_dev(fd, unique, result, &out);
    }
}

/// One ring entry: its header and payload buffers, and the iovecs naming them.
struct Entry {
    header: Box<[u8; RING_HEADER]>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
}

/// A `URING_CMD` for queue `qid` naming `entry` (`len` = 2 iovecs, which the crate's
/// builder cannot set).
fn command(
    fd: RawFd,
    op: u32,
    qid: u16,
    commit_id: u64,
    entry: &Entry,
    i: usize,
) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
    cmd[16..18].copy_from_slice(&qid.to_le_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(fd), op)
        .cmd(cmd)
        .addr(Some(entry.iov.as_ptr() as u64))
        .build()
        .user_data(i as u64);
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[24..28].copy_from_slice(&2u32.to_le_bytes());
    // SAFETY: Entry128 is repr(C), 128 bytes: the same SQE with its `len` set.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
}

/// Serves queue `qid` (CPU `qid`) through its own ring of `depth` entries until the
/// connection ends.
fn serve_ring(fd: RawFd, qid: u16, depth: usize, tree: &Tree) -> std::io::Result<()> {
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        IoUring::builder().build(depth as u32 * 2)?;
    let mut entries: Vec<Entry> = (0..depth)
        .map(|_| {
            let mut header = Box::new([0u8; RING_HEADER]);
            let mut payload = vec![0u8; PAYLOAD];
            let iov = Box::new([
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: RING_HEADER,
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: PAYLOAD,
                },
            ]);
            Entry {
                header,
                payload,
                iov,
            }
        })
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let sqe = command(fd, CMD_REGISTER, qid, 0, e, i);
        // SAFETY: the entry's buffers live as long as the ring (this function).
        unsafe { ring.submission().push(&sqe) }.map_err(std::io::Error::other)?;
    }
    let mut out = Vec::with_capacity(PAYLOAD);
    loop {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (i, res) in done {
            if res < 0 {
                return Err(std::io::Error::from_raw_os_error(-res));
            }
            let e = &mut entries[i as usize];
            let h = &e.header;
            let payload_sz = get32(&h[..], 256 + 16) as usize;
            let commit_id = get64(&h[..], 256 + 8);
            let unique = get64(&h[..], 8);
            out.clear();
            // The op's own header is in `op_in`; names and the like in the payload.
            let opcode = get32(&h[..], 4);
            let arg: &[u8] = if opcode == LOOKUP {
                &e.payload[..payload_sz]
            } else {
                &h[128..256]
            };
            let result = tree.answer(&h[..40], arg, &mut out);
            let (error, len) = match result {
                Ok(_) => (0, out.len()),
                Err(err) => (err, 0),
            };
            e.payload[..len].copy_from_slice(&out[..len]);
            e.header[..16].copy_from_slice(&out_header(16 + len, error, unique));
            e.header[256 + 16..256 + 20].copy_from_slice(&(len as u32).to_le_bytes());
            let sqe = command(fd, CMD_COMMIT_AND_FETCH, qid, commit_id, e, i as usize);
            // SAFETY: as above.
            unsafe { ring.submission().push(&sqe) }.map_err(std::io::Error::other)?;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, file, mountpoint] = args.as_slice() else {
        eprintln!("usage: fuse_uring_floor dev|uring FILE MOUNTPOINT");
        std::process::exit(2);
    };
    if let Err(e) = serve(mode == "uring", file, mountpoint) {
        eprintln!("fuse_uring_floor: {e}");
        std::process::exit(1);
    }
}

fn serve(uring: bool, file: &str, mountpoint: &str) -> std::io::Result<()> {
    let tree = Arc::new(Tree {
        content: std::fs::read(file)?,
    });
    // SAFETY: plain signal-set calls on a local set; blocked before threads start.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd = dev.as_raw_fd();
    let data = CString::new(format!(
        "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"
    ))?;
    let target = CString::new(mountpoint)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    // SAFETY: valid C strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            c"uring_floor".as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor of ours, kept by `dev` as well.
    let _keep: OwnedFd = unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) };
    let init = Arc::new(std::sync::Barrier::new(2));
    let threads = if uring { 1 } else { 2 };
    for _ in 0..threads {
        let (tree, init) = (tree.clone(), init.clone());
        std::thread::spawn(move || serve_dev(fd, &tree, uring, &init));
    }
    init.wait();
    if uring {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as u16;
        for qid in 0..cpus {
            let tree = tree.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve_ring(fd, qid, 4, &tree)
                    && e.raw_os_error() != Some(libc::ENOTCONN)
                {
                    eprintln!("fuse_uring_floor: queue {qid}: {e}");
                }
            });
        }
    }
    println!("mounted at {mountpoint}");
    let mut sig = 0;
    // SAFETY: waits on the set built above.
    unsafe { libc::sigwait(&set, &mut sig) };
    // SAFETY: a valid C string.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    std::process::exit(0);
}
