//! What the server answers, and how it leaves: a status, headers and a body made of
//! pieces, so object bytes go from the object file to the socket with `sendfile` and
//! never through a buffer of ours.

use super::conn::Conn;
use crate::store::Store;
use bytes::{Bytes, BytesMut};
use canopy_protocol::ObjectId;
use canopy_protocol::api::ErrorBody;
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::Interest;
use tokio::sync::Notify;

/// A piece of a file this small is read into the answer's buffer and leaves with the
/// headers in one system call; larger ones go by `sendfile`.
const INLINE: u64 = 16 * 1024;
/// What an object file being verified as it is sent keeps back until the whole is
/// found right ([`sendfile_checked`]).
const HELD_BACK: u64 = 64 * 1024;

/// How long a client may take to accept more bytes (of the head, of a buffer, of a
/// `sendfile`) before the connection is dropped: slow readers cannot hold a connection
/// and its object file forever.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(30);
/// What a 503 tells the client to wait before asking again, in seconds.
const RETRY_AFTER: &str = "5";

/// The status codes canopy answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Ok,
    PartialContent,
    NotModified,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ExpectationFailed,
    HeaderFieldsTooLarge,
    Internal,
    ServiceUnavailable,
}

impl Status {
    /// The status line's code and reason.
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::PartialContent => "206 Partial Content",
            Status::NotModified => "304 Not Modified",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::RangeNotSatisfiable => "416 Range Not Satisfiable",
            Status::ExpectationFailed => "417 Expectation Failed",
            Status::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            Status::Internal => "500 Internal Server Error",
            Status::ServiceUnavailable => "503 Service Unavailable",
        }
    }

    /// The numeric code, for the access log.
    pub(super) fn code(self) -> u16 {
        self.line()[..3]
            .parse()
            .expect("status lines start with the code")
    }
}

/// Where the bytes that [`Piece::Source`] refers to are.
#[derive(Debug)]
pub(super) enum Source {
    /// No body bytes outside the text pieces.
    None,
    /// An object's file, never written again: its pieces leave by `sendfile`.
    File(File),
    /// An object's file not verified as it is now, sent whole while it is checked
    /// ([`sendfile_checked`]).
    Unverified(File, Box<Check>),
    /// Bytes in memory: a compressed object, a tree pack, an object from a backend
    /// without local files.
    Memory(Bytes),
}

/// One part of a body, in order.
#[derive(Debug)]
pub(super) enum Piece {
    /// Bytes of our own: JSON, multipart boundaries.
    Text(Bytes),
    /// A range of the answer's [`Source`].
    Source(Range<u64>),
    /// The first `len` bytes of an object file, opened only when its turn comes, so an
    /// answer of many objects holds one descriptor at a time.
    Path(PathBuf, u64),
}

/// A complete answer to one request.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: Status,
    pub(super) headers: Vec<(&'static str, Cow<'static, str>)>,
    pub(super) source: Source,
    pub(super) pieces: Vec<Piece>,
}

/// An object file not yet verified, checked as it is sent.
pub(super) struct Check {
    /// The object the file must hold.
    pub(super) id: ObjectId,
    /// The store that verifies it, and remembers it verified.
    pub(super) store: Arc<Store>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Check({})", self.id)
    }
}

impl Answer {
    /// An answer with no body yet.
    pub(super) fn new(status: Status) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            source: Source::None,
            pieces: Vec::new(),
        }
    }

    /// Adds a header.
    pub(super) fn header(
        mut self,
        name: &'static str,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The whole of `source` as the body.
    pub(super) fn body(mut self, source: Source, len: u64) -> Self {
        self.source = source;
        self.pieces = vec![Piece::Source(0..len)];
        self
    }

    /// A JSON body.
    pub(super) fn json(status: Status, value: &impl serde::Serialize) -> Answer {
        let bytes = serde_json::to_vec(value).expect("API types serialize");
        let mut a = Answer::new(status).header("content-type", "application/json");
        a.pieces = vec![Piece::Text(Bytes::from(bytes))];
        a
    }

    /// An error: status, stable code, message; never cached. A 503 says when to try
    /// again.
    pub(super) fn error(status: Status, code: &str, message: impl Into<String>) -> Answer {
        let answer = Answer::json(
            status,
            &ErrorBody {
                code: code.to_string(),
                message: message.into(),
            },
        )
        .header("cache-control", "no-store");
        match status {
            Status::ServiceUnavailable => answer.header("retry-after", RETRY_AFTER),
            _ => answer,
        }
    }

    /// The body's length in bytes.
    pub(super) fn len(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(b) => b.len() as u64,
                Piece::Source(r) => r.end - r.start,
                Piece::Path(_, len) => *len,
            })
            .sum()
    }
}

/// Writes `answer` on `stream`: the head, then the body unless `head_only` (HEAD).
/// `close` adds `connection: close`. Every write the client takes counts as the
/// connection's progress.
pub(super) async fn write(
    stream: &Conn,
    answer: &Answer,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut head = BytesMut::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(answer.status.line().as_bytes());
    head.extend_from_slice(b"\r\nserver: canopy\r\ndate: ");
    super::date::append(&mut head);
    for (name, value) in &answer.headers {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
    }
    if answer.status != Status::NotModified {
        head.extend_from_slice(b"\r\ncontent-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(answer.len()).as_bytes());
    }
    if close {
        head.extend_from_slice(b"\r\nconnection: close");
    }
    head.extend_from_slice(b"\r\n\r\n");
    let mut out = vec![head.freeze()];
    if head_only || answer.status == Status::NotModified {
        return send(stream, &mut out, false).await;
    }
    for piece in &answer.pieces {
        match (piece, &answer.source) {
            (Piece::Text(b), _) => out.push(b.clone()),
            (Piece::Source(r), Source::Memory(m)) => {
                out.push(m.slice(r.start as usize..r.end as usize))
            }
            (Piece::Source(r), Source::File(f)) if r.end - r.start <= INLINE => {
                out.push(read_piece(f, r)?)
            }
            (Piece::Source(r), Source::File(f)) => {
                // What is gathered leaves first, marked as not the end, so the kernel
                // can put it in one segment with the start of the file.
                send(stream, &mut out, true).await?;
                sendfile(stream, f, r.clone()).await?;
            }
            (Piece::Source(r), Source::Unverified(f, check)) => {
                send(stream, &mut out, true).await?;
                sendfile_checked(stream, f, r.clone(), check).await?;
            }
            (Piece::Source(_), Source::None) => {
                unreachable!("answers with source pieces have a source")
            }
            (Piece::Path(path, len), _) => {
                let file = crate::store::local::open_object_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                let r = 0..*len;
                if *len <= INLINE {
                    out.push(read_piece(&file, &r)?);
                } else {
                    send(stream, &mut out, true).await?;
                    sendfile(stream, &file, r).await?;
                }
            }
        }
    }
    send(stream, &mut out, false).await
}

/// A small piece of a file, read whole.
fn read_piece(file: &File, r: &Range<u64>) -> io::Result<Bytes> {
    let mut buf = vec![0u8; (r.end - r.start) as usize];
    file.read_exact_at(&mut buf, r.start).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "reading bytes {}..{} of an object file: {e}",
                r.start, r.end
            ),
        )
    })?;
    Ok(Bytes::from(buf))
}

/// Waits until the socket takes more bytes, or gives up after [`WRITE_STALL`].
async fn writable(stream: &Conn) -> io::Result<()> {
    match tokio::time::timeout(WRITE_STALL, stream.writable()).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took no bytes for {WRITE_STALL:?}"),
        )),
    }
}

/// Sends every buffer in `out`, in order, with as few system calls as the socket
/// allows; `more` tells the kernel more bytes follow at once (`MSG_MORE`). Empties
/// `out`.
async fn send(stream: &Conn, out: &mut Vec<Bytes>, more: bool) -> io::Result<()> {
    out.retain(|b| !b.is_empty());
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    while !out.is_empty() {
        writable(stream).await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let iov: Vec<libc::iovec> = out
                .iter()
                .take(64)
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: an all-zero msghdr is valid (no name, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            // SAFETY: the iovecs point into buffers `out` keeps alive for this call.
            let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(mut n) => {
                stream.progress();
                while n > 0 {
                    let first = &mut out[0];
                    if n >= first.len() {
                        n -= first.len();
                        out.remove(0);
                    } else {
                        bytes::Buf::advance(first, n);
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `r`, the whole of object file `file`, while it is hashed on the blocking pool:
/// bytes leave only once hashed (so from the page cache the hashing filled), and the
/// last [`HELD_BACK`] only once the whole file is found to hold `check`'s object. A
/// damaged file is an error that drops the connection short of the answer's length,
/// which clients and HTTP caches take as a failed transfer, never as the object; an
/// intact one costs no wait for the whole to be hashed before its first byte leaves (a
/// file of gigabytes would otherwise outlast a client's wait for the answer's head).
async fn sendfile_checked(
    stream: &Conn,
    file: &File,
    r: Range<u64>,
    check: &Check,
) -> io::Result<()> {
    #[derive(Default)]
    struct Progress {
        hashed: AtomicU64,
        more: Notify,
    }
    let progress = Arc::new(Progress::default());
    let hashing = {
        let (copy, store, id, p) = (
            file.try_clone()?,
            check.store.clone(),
            check.id,
            progress.clone(),
        );
        tokio::task::spawn_blocking(move || {
            store.verify_file_reporting(&id, &copy, &|n| {
                p.hashed.store(n, Ordering::Release);
                p.more.notify_one();
            })
        })
    };
    tokio::pin!(hashing);
    let held = r.end.saturating_sub(HELD_BACK).max(r.start);
    let mut offset = r.start;
    let mut ended = None;
    while offset < held {
        let hashed = progress.hashed.load(Ordering::Acquire).min(held);
        if hashed > offset {
            sendfile(stream, file, offset..hashed).await?;
            offset = hashed;
            continue;
        }
        if ended.is_some() {
            break;
        }
        // `notify_one` leaves a permit when nobody waits, so progress reported since
        // the load above still wakes this.
        let wait = async {
            tokio::select! {
                _ = progress.more.notified() => None,
                done = &mut hashing => Some(done),
            }
        };
        match tokio::time::timeout(super::STORE_TIMEOUT, wait).await {
            Ok(None) => {}
            Ok(Some(done)) => ended = Some(done),
            Err(_) => return Err(hashing_stalled(check)),
        }
    }
    let done = match ended {
        Some(done) => done,
        None => tokio::time::timeout(super::STORE_TIMEOUT, &mut hashing)
            .await
            .map_err(|_| hashing_stalled(check))?,
    };
    match done {
        Ok(Ok(())) => sendfile(stream, file, offset..r.end).await,
        Ok(Err(e)) => {
            tracing::error!("{e}");
            Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        }
        Err(e) => Err(io::Error::other(format!(
            "verifying object {}: {e}",
            check.id
        ))),
    }
}

fn hashing_stalled(check: &Check) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "reading object {} to verify it made no progress for {:?}",
            check.id,
            super::STORE_TIMEOUT
        ),
    )
}

/// Sends a range of `file` with `sendfile`: the kernel copies from the page cache to
/// the socket, and canopy only waits for the socket to take more.
async fn sendfile(stream: &Conn, file: &File, r: Range<u64>) -> io::Result<()> {
    let mut offset = r.start;
    while offset < r.end {
        writable(stream).await?;
        // Linux sends at most 0x7ffff000 bytes per call.
        let count = (r.end - offset).min(0x7fff_f000) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut off = offset as libc::off_t;
            // SAFETY: two valid descriptors and an offset the kernel updates.
            let n =
                unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("object file ends at {offset}, before {}", r.end),
                ));
            }
            Ok(n) => {
                stream.progress();
                offset += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
