//! `GET /v1/objects/{id}`: an object's bytes, whole, in ranges, or in zstd.
//!
//! With a local backend the object's file is opened on the connection's own task (a
//! local open and `fstat` cost microseconds, as nginx does them) and its bytes leave by
//! `sendfile`. A store in a bucket hands over its read cache's verified copy (fetched
//! first if need be, on the blocking pool), sent the same way; a backend without files
//! reads the object whole, verified, on the blocking pool.
//! Small objects, once read, are answered from memory ([`SMALL`]); objects never
//! change, so a copy in memory is never stale (an object deleted by `gc` may be served
//! from it a while longer: the bytes are still those of its id).
//! The zstd form is computed once per object ([`super::wire`]) and sent with its
//! length, so a request costs the same whichever form it gets.

use super::answer::{Answer, Check, Piece, Source, Status};
use super::conn::Request;
use super::range::{self, Ranges};
use super::wire::{self, Kind};
use super::{App, IMMUTABLE, bad_id, blocking};
use bytes::Bytes;
use canopy_protocol::ObjectId;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Objects up to this size are kept in memory once read ([`Kind::Small`]): most files
/// of a root are small, and for them the open, `fstat` and read of a file would cost
/// more than sending the bytes.
const SMALL: u64 = 16 * 1024;

/// Answers a request for object `id`.
pub(super) async fn answer(app: &Arc<App>, req: &Request, id: &str) -> Answer {
    let oid: ObjectId = match id.parse() {
        Ok(o) => o,
        Err(e) => return bad_id(id, e),
    };
    let (source, len, verified) = match open(app, oid).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let hex = oid.to_hex();
    let etag = format!("\"{hex}\"");
    let finish = |a: Answer, tag: String| {
        a.header("etag", tag)
            .header("cache-control", IMMUTABLE)
            .header("vary", "accept-encoding")
    };
    if req
        .if_none_match
        .as_deref()
        .is_some_and(|v| matches_etag(v, &hex))
    {
        return finish(Answer::new(Status::NotModified), etag);
    }
    // If-Range with another validator (or a date: objects have none) asks for all.
    let if_range_ok = req.if_range.as_deref().is_none_or(|v| v == etag);
    let ranges = match req.range.as_deref() {
        Some(h) if if_range_ok => range::parse(h, len),
        _ => Ranges::Whole,
    };
    // Never the wrong bytes: an object file is verified before its bytes first leave
    // (an HTTP cache in front would otherwise keep a damaged file's bytes for good; see
    // `store::verified`): as it is sent when sent whole, else first.
    let whole_file = matches!(ranges, Ranges::Whole)
        && !(wire::accepts_zstd(req.accept_encoding.as_deref())
            && (wire::MIN_COMPRESS..=wire::MAX_COMPRESS).contains(&len));
    let mut verified = verified;
    if !verified && !whole_file {
        if let Err(answer) = verify(app, oid, &source).await {
            return answer;
        }
        // Not checked again if zstd does not shrink it and it goes as it is.
        verified = true;
    }
    let answer = match ranges {
        Ranges::Whole => {
            if !whole_file {
                match compressed(app, oid, &source).await {
                    Ok(Some(z)) => {
                        let n = z.len() as u64;
                        return finish(
                            Answer::new(Status::Ok)
                                .header("content-type", "application/octet-stream")
                                .header("content-encoding", "zstd")
                                .body(Source::Memory(z), n),
                            format!("\"{hex}-zstd\""),
                        );
                    }
                    Ok(None) => {}
                    Err(answer) => return answer,
                }
            }
            let source = match source {
                Source::File(file) if !verified => Source::Unverified(
                    file,
                    Box::new(Check {
                        id: oid,
                        store: app.store.clone(),
                    }),
                ),
                source => source,
            };
            Answer::new(Status::Ok)
                .header("content-type", "application/octet-stream")
                .body(source, len)
        }
        Ranges::Unsatisfiable => Answer::new(Status::RangeNotSatisfiable)
            .header("content-range", format!("bytes */{len}")),
        Ranges::Partial(pieces) if pieces.len() == 1 => {
            let piece = pieces[0].clone();
            let mut a = Answer::new(Status::PartialContent)
                .header("content-type", "application/octet-stream")
                .header("content-range", range::content_range(&piece, len));
            a.source = source;
            a.pieces = vec![Piece::Source(piece)];
            a
        }
        Ranges::Partial(pieces) => multipart(source, &pieces, len, &oid),
    };
    finish(answer.header("accept-ranges", "bytes"), etag)
}

/// Whether an `If-None-Match` value names either form of the object (`"HEX"`,
/// `"HEX-zstd"`; weakly, as RFC 9110 §13.1.2 compares) or is `*`.
fn matches_etag(value: &str, hex: &str) -> bool {
    value.split(',').map(str::trim).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*"
            || t.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .is_some_and(|t| t.strip_suffix("-zstd").unwrap_or(t) == hex)
    })
}

/// The object's bytes (a file, or memory), its length, and whether those bytes are
/// known to be the object's (a file not verified as it is now is not); 404 if absent.
async fn open(app: &Arc<App>, oid: ObjectId) -> Result<(Source, u64, bool), Answer> {
    let not_found = || {
        Answer::error(
            Status::NotFound,
            "not-found",
            format!("object {oid} not found"),
        )
    };
    let internal = |what: &str, e: io::Error| {
        tracing::error!("{what} object {oid}: {e}");
        Answer::error(
            Status::Internal,
            "internal",
            format!("{what} object {oid}: {e}"),
        )
    };
    if let Some(Some(bytes)) = app.wire.peek(Kind::Small, oid) {
        let len = bytes.len() as u64;
        return Ok((Source::Memory(bytes), len, true));
    }
    let file = match app.store.local_path(&oid) {
        Some(path) => match crate::store::local::open_object_file(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(internal("opening", e)),
        },
        // A read cache's copy, or none (a backend without files).
        None => {
            let store = app.store.clone();
            blocking(move || store.open_file(&oid).map_err(super::store_error)).await?
        }
    };
    let Some(file) = file else {
        // No file to send from: the whole object, verified, in memory.
        let store = app.store.clone();
        let found = blocking(move || match store.read_object(&oid) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(crate::store::StoreError::Missing { .. }) => Ok(None),
            Err(e) => Err(super::store_error(e)),
        })
        .await?;
        let bytes = Bytes::from(found.ok_or_else(not_found)?);
        let len = bytes.len() as u64;
        if len <= SMALL {
            app.wire.insert(Kind::Small, oid, Some(bytes.clone()));
        }
        return Ok((Source::Memory(bytes), len, true));
    };
    let meta = file
        .metadata()
        .map_err(|e| internal("reading the size of", e))?;
    let len = meta.len();
    // A small object is read whole, so checked at once.
    if len <= SMALL {
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| internal("reading", e))?;
        let actual = ObjectId::of(&bytes);
        if actual != oid {
            let e = crate::store::StoreError::Corrupt { id: oid, actual };
            tracing::error!("{e}");
            return Err(super::store_error(e));
        }
        let bytes = Bytes::from(bytes);
        app.wire.insert(Kind::Small, oid, Some(bytes.clone()));
        return Ok((Source::Memory(bytes), len, true));
    }
    let verified = app.store.file_verified(&oid, &meta);
    Ok((Source::File(file), len, verified))
}

/// Verifies an object file before any of its bytes leave (on the blocking pool): a
/// damaged one is a 500 naming the object.
async fn verify(app: &Arc<App>, oid: ObjectId, source: &Source) -> Result<(), Answer> {
    let Source::File(file) = source else {
        return Ok(());
    };
    let copy = file.try_clone().map_err(|e| {
        Answer::error(
            Status::Internal,
            "internal",
            format!("opening object {oid} to verify it: {e}"),
        )
    })?;
    let store = app.store.clone();
    blocking(move || store.verify_file(&oid, &copy).map_err(super::store_error)).await
}

/// The object in zstd, computed once; `None` if that does not make it smaller.
async fn compressed(
    app: &Arc<App>,
    oid: ObjectId,
    source: &Source,
) -> Result<Option<Bytes>, Answer> {
    if let Some(done) = app.wire.peek(Kind::ObjectZstd, oid) {
        return Ok(done);
    }
    let internal = move |what: &str, e: io::Error| {
        Answer::error(
            Status::Internal,
            "internal",
            format!("{what} object {oid} to compress it: {e}"),
        )
    };
    // What the computation reads, owned: the bytes, or the file (a second descriptor,
    // only while it is first computed).
    let data = match source {
        Source::Memory(b) => Ok(b.clone()),
        Source::File(f) | Source::Unverified(f, _) => {
            Err(f.try_clone().map_err(|e| internal("opening", e))?)
        }
        Source::None => return Ok(None),
    };
    app.wire
        .get(Kind::ObjectZstd, oid, move || {
            let data = match data {
                Ok(bytes) => bytes,
                Err(file) => {
                    // Positioned reads: the descriptor's offset is shared with the
                    // answer's.
                    let read = |file: &std::fs::File| {
                        let mut bytes = vec![
                            0u8;
                            usize::try_from(file.metadata()?.len())
                                .map_err(io::Error::other)?
                        ];
                        file.read_exact_at(&mut bytes, 0)?;
                        Ok(Bytes::from(bytes))
                    };
                    read(&file).map_err(|e| internal("reading", e))?
                }
            };
            wire::compress(&data).map_err(|e| internal("compressing", e))
        })
        .await
}

/// Several pieces as `multipart/byteranges` (RFC 9110 §14.6).
fn multipart(source: Source, pieces: &[std::ops::Range<u64>], len: u64, oid: &ObjectId) -> Answer {
    // A boundary needs only to differ from every line of the part headers.
    let boundary = format!("canopy-{}", oid.short());
    let mut body = Vec::with_capacity(2 * pieces.len() + 1);
    for piece in pieces {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}\r\n\r\n",
            range::content_range(piece, len)
        );
        body.push(Piece::Text(Bytes::from(head)));
        body.push(Piece::Source(piece.clone()));
    }
    body.push(Piece::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    let mut a = Answer::new(Status::PartialContent).header(
        "content-type",
        format!("multipart/byteranges; boundary={boundary}"),
    );
    a.source = source;
    a.pieces = body;
    a
}
