//! One HTTP/1.1 connection: requests read with `httparse` and answered in order
//! (pipelined ones too), kept open until the client closes or asks to, sends no
//! request for [`HEAD_TIMEOUT`], the server stops, or admission closes it at the cap.
//!
//! canopy's API is read-only, so requests carry no bodies: a small one is read and
//! dropped, a large or chunked one is refused and the connection closed (its end could
//! not be found otherwise). Every wait is bounded: a request head must be complete
//! within [`HEAD_TIMEOUT`] of the connection's start or of the previous answer, and a
//! client that stops taking an answer is dropped after
//! [`super::answer::WRITE_STALL`]. A whole request is progress for admission (bytes
//! trickling in are not), as is every write the client takes.

use super::App;
use super::answer::{self, Answer, Status};
use crate::admission::Admitted;
use bytes::{Buf, BytesMut};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// A request head must be complete this long after the connection opened or the
/// previous answer ended; a connection that has sent nothing by then is closed quietly.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 100;
/// Largest request body read (and dropped); larger ones are refused.
const MAX_BODY: u64 = 64 * 1024;

/// The request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    /// Anything else: answered 405.
    Other,
}

/// An admitted client connection.
pub(super) type Conn = Admitted<TcpStream>;

/// What canopy reads of a request.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: Method,
    /// The path, without the query, still percent-encoded.
    pub(super) path: String,
    /// The query, without the `?`, still percent-encoded ("" if none).
    pub(super) query: String,
    /// The `Host` field: how the client reached this server.
    pub(super) host: Option<String>,
    pub(super) range: Option<String>,
    pub(super) if_range: Option<String>,
    pub(super) if_none_match: Option<String>,
    pub(super) accept_encoding: Option<String>,
}

/// A parsed request and how its connection goes on.
struct Parsed {
    request: Request,
    /// The client asked to close (or spoke HTTP/1.0 without keep-alive).
    close: bool,
    /// Body bytes to read and drop before the next request.
    body: u64,
}

/// Serves requests on `stream` until it closes.
pub(super) async fn serve(app: Arc<App>, stream: Conn, mut stop: watch::Receiver<bool>) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let parsed = match read_request(&stream, &mut buf, &mut stop).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(refusal) => {
                if answer::write(&stream, &refusal, false, true).await.is_ok() {
                    linger(&stream).await;
                }
                return;
            }
        };
        if let Err(e) = drop_body(&stream, &mut buf, parsed.body).await {
            tracing::debug!("reading a request body: {e}");
            return;
        }
        stream.progress();
        let req = &parsed.request;
        let started = std::time::Instant::now();
        let answer = app.answer(req).await;
        let close = parsed.close || *stop.borrow();
        let written = answer::write(&stream, &answer, req.method == Method::Head, close).await;
        // The access log (`-v`): one line per answer, as `key=value` fields.
        tracing::info!(
            method = ?req.method,
            uri = %req.path,
            status = answer.status.code(),
            bytes = answer.len(),
            ms = format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
            "answered"
        );
        if let Err(e) = written {
            tracing::debug!("answering {}: {e}", req.path);
            return;
        }
        if close {
            linger(&stream).await;
            return;
        }
    }
}

/// Reads the next request head. `None` when the connection ends (closed, idle, the
/// server stopping) between requests; an answer to send before closing when the
/// request is refused.
async fn read_request(
    stream: &TcpStream,
    buf: &mut BytesMut,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Parsed>, Answer> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let parsed = parse(&req)?;
                    buf.advance(n);
                    return Ok(Some(parsed));
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Err(too_large_head());
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(too_large_head()),
                Err(e) => {
                    return Err(Answer::error(
                        Status::BadRequest,
                        "bad-request",
                        format!("malformed HTTP/1.1 request: {e}"),
                    ));
                }
            }
        }
        let idle = buf.is_empty();
        let wait = tokio::time::timeout_at(deadline, read_more(stream, buf));
        tokio::select! {
            read = wait => match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
                Err(_) if idle => return Ok(None),
                Err(_) => {
                    return Err(Answer::error(
                        Status::RequestTimeout,
                        "timeout",
                        "the request head did not arrive within 30 s",
                    ));
                }
            },
            _ = stop.wait_for(|&s| s), if idle => return Ok(None),
        }
    }
}

fn too_large_head() -> Answer {
    Answer::error(
        Status::HeaderFieldsTooLarge,
        "too-large",
        format!("request heads are limited to {MAX_HEAD} bytes and {MAX_HEADERS} fields"),
    )
}

/// Reads what the socket has into `buf`; 0 at the end of the stream.
async fn read_more(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(8 * 1024);
    loop {
        stream.readable().await?;
        let mut got = 0;
        let read = stream.try_io(Interest::READABLE, || {
            let spare = buf.spare_capacity_mut();
            let (ptr, room) = (spare.as_mut_ptr(), spare.len());
            // SAFETY: recv writes at most `room` bytes into memory `buf` owns.
            let n = unsafe { libc::recv(stream.as_raw_fd(), ptr.cast(), room, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            got = n as usize;
            // SAFETY: the kernel initialised the `got` bytes it wrote.
            unsafe { buf.set_len(buf.len() + got) };
            if got > 0 && got < room {
                // A short read drained the socket: say so, so the next wait sleeps
                // until more arrives instead of costing a read that finds nothing.
                // (tokio keeps any readiness that arrived meanwhile.)
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        match read {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => return Ok(got),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Takes what canopy needs from a parsed head, or the answer that refuses it.
fn parse(req: &httparse::Request) -> Result<Parsed, Answer> {
    let bad = |message: &str| Answer::error(Status::BadRequest, "bad-request", message);
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or_default();
    // The absolute form (`http://host/path`), as sent to proxies, names the same path.
    let origin = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    if !origin.starts_with('/') {
        return Err(bad("the request target must be a path"));
    }
    let origin = origin.split('#').next().unwrap_or("/");
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let http10 = req.version == Some(0);
    let mut request = Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        host: None,
        range: None,
        if_range: None,
        if_none_match: None,
        accept_encoding: None,
    };
    let mut close = http10;
    let mut body: Option<u64> = None;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        let name = h.name;
        let append = |slot: &mut Option<String>| match slot {
            Some(old) => {
                old.push_str(", ");
                old.push_str(value);
            }
            None => *slot = Some(value.to_string()),
        };
        if name.eq_ignore_ascii_case("range") {
            if request.range.is_some() {
                // Two Range fields make no sense together: serve the whole object.
                request.range = Some(String::new());
            } else {
                request.range = Some(value.to_string());
            }
        } else if name.eq_ignore_ascii_case("host") {
            request.host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("if-range") {
            request.if_range = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("if-none-match") {
            append(&mut request.if_none_match);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            append(&mut request.accept_encoding);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                "request bodies are not accepted: canopy's API is read-only",
            ));
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .map_err(|_| bad("Content-Length is not a number"))?;
            if body.is_some_and(|b| b != n) {
                return Err(bad("two different Content-Length fields"));
            }
            body = Some(n);
        } else if name.eq_ignore_ascii_case("expect") && !value.is_empty() {
            return Err(Answer::error(
                Status::ExpectationFailed,
                "bad-request",
                "request bodies are not accepted: canopy's API is read-only",
            ));
        }
    }
    let body = body.unwrap_or(0);
    if body > MAX_BODY {
        return Err(Answer::error(
            Status::PayloadTooLarge,
            "too-large",
            "request bodies are not accepted: canopy's API is read-only",
        ));
    }
    Ok(Parsed {
        request,
        close,
        body,
    })
}

/// Reads and drops a request body of `len` bytes.
async fn drop_body(stream: &TcpStream, buf: &mut BytesMut, mut len: u64) -> io::Result<()> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        let have = (buf.len() as u64).min(len);
        buf.advance(have as usize);
        len -= have;
        if len == 0 {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, read_more(stream, buf)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Closes our side, then reads (and drops) what the client still sends for a moment,
/// so that closing with unread bytes does not reset the connection before the client
/// has read the last answer.
async fn linger(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown only takes a descriptor, which `stream` keeps open.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    let mut sink = BytesMut::with_capacity(8 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut total = 0;
        while total < MAX_HEAD {
            sink.clear();
            match read_more(stream, &mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
