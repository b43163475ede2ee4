//! `GET /v1/packs/{tree}/{part}`: the contents of a directory's small files in one
//! answer (see [`canopy_protocol::pack`] for the plan and the format).
//!
//! The plan comes from the tree alone, so the URL names the answer for good: it is
//! cached as objects are (`immutable`, an `ETag`), unless a member was missing, which
//! a later answer may have. Members leave as objects do: from the object file by
//! `sendfile`, each file opened only when its turn comes (an answer holds one
//! descriptor at a time however many members it has), small ones from memory. A
//! backend without files has its members read into memory first, a few packs at a time
//! ([`IN_MEMORY`]), so memory stays bounded.

use super::answer::{Answer, Piece, Status};
use super::conn::Request;
use super::wire::Kind;
use super::{App, IMMUTABLE, bad_id, blocking, store_error};
use bytes::Bytes;
use canopy_protocol::TreeId;
use canopy_protocol::pack::{self, MISSING, Member};
use std::sync::Arc;

/// Packs of a backend without files built at once (each up to [`pack::PART_MAX`] bytes
/// in memory).
pub(super) const IN_MEMORY: usize = 8;

/// Answers a request for part `part` of tree `tree`'s pack.
pub(super) async fn answer(
    app: &Arc<App>,
    req: &Request,
    tree: &str,
    part: &str,
) -> Result<Answer, Answer> {
    let id = TreeId(tree.parse().map_err(|e| bad_id(tree, e))?);
    let index = part_number(part)?;
    let etag = format!("\"{}-{index}\"", id.0.to_hex());
    if let Some(same) = not_modified(req, &etag) {
        return Ok(same);
    }
    let store = app.store.clone();
    let tree = blocking(move || store.tree(&id).map_err(store_error)).await?;
    let parts = pack::parts(&tree);
    let members = part_of(&parts, index, format_args!("tree {id}"))?;
    answer_members(app, members, etag).await
}

/// Part `index` of `parts`, the pack parts of `whose`; past the last one, 404.
pub(super) fn part_of<'a>(
    parts: &'a [Vec<Member>],
    index: usize,
    whose: std::fmt::Arguments,
) -> Result<&'a [Member], Answer> {
    parts.get(index).map(Vec::as_slice).ok_or_else(|| {
        Answer::error(
            Status::NotFound,
            "not-found",
            format!("{whose} has {} pack parts, not {}", parts.len(), index + 1),
        )
    })
}

/// The part number a URL's last segment gives.
pub(super) fn part_number(part: &str) -> Result<usize, Answer> {
    part.parse().map_err(|_| {
        Answer::error(
            Status::BadRequest,
            "bad-request",
            format!("{part:?} is not a part number"),
        )
    })
}

/// The answer to a request that holds the pack named `etag` already, if it does.
pub(super) fn not_modified(req: &Request, etag: &str) -> Option<Answer> {
    req.if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        .then(|| {
            Answer::new(Status::NotModified)
                .header("etag", etag.to_string())
                .header("cache-control", IMMUTABLE)
        })
}

/// A pack of `members` (in the format of [`canopy_protocol::pack`]) whose URL names it
/// for good as `etag`: cached as objects are, unless a member was missing.
pub(super) async fn answer_members(
    app: &Arc<App>,
    members: &[Member],
    etag: String,
) -> Result<Answer, Answer> {
    let mut pieces = vec![Piece::Text(Bytes::copy_from_slice(&pack::head(
        members.len(),
    )))];
    let mut complete = true;
    // Held while the members of a backend without files are in memory.
    let mut _permit = None;
    for m in members {
        let oid = m.blob.0;
        let body = if let Some(Some(bytes)) = app.wire.peek(Kind::Small, oid) {
            Some(Piece::Text(bytes))
        } else if let Some(path) = app.store.local_path(&oid) {
            match std::fs::metadata(&path) {
                Ok(meta) if app.store.file_verified(&oid, &meta) => Some(Piece::Path(path, m.size)),
                // Hashed once before it is first sent (see `store::verified`); a
                // damaged member is sent as missing, so the client fetches it
                // alone and hears why.
                Ok(_) => {
                    let store = app.store.clone();
                    blocking(move || {
                        Ok(store
                            .verify_local(&oid)
                            .map_err(|e| tracing::error!("{e}"))
                            .is_ok())
                    })
                    .await?
                    .then_some(Piece::Path(path, m.size))
                }
                Err(_) => None,
            }
        } else {
            if _permit.is_none() {
                _permit = Some(
                    app.packs_in_memory
                        .acquire()
                        .await
                        .map_err(|e| Answer::error(Status::Internal, "internal", e.to_string()))?,
                );
            }
            let store = app.store.clone();
            blocking(move || match store.read_object(&oid) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(crate::store::StoreError::Missing { .. }) => Ok(None),
                Err(e) => Err(store_error(e)),
            })
            .await?
            .map(|b| Piece::Text(Bytes::from(b)))
        };
        match body {
            // The tree's size: a damaged object of another length is the client's
            // hash mismatch (or a connection cut short), never a member of another size.
            Some(body) => {
                let len = match &body {
                    Piece::Text(b) => b.len() as u64,
                    _ => m.size,
                };
                pieces.push(Piece::Text(Bytes::copy_from_slice(&pack::member_head(
                    &oid, len,
                ))));
                pieces.push(body);
            }
            None => {
                complete = false;
                pieces.push(Piece::Text(Bytes::copy_from_slice(&pack::member_head(
                    &oid, MISSING,
                ))));
            }
        }
    }
    let mut answer = Answer::new(Status::Ok).header("content-type", "application/vnd.canopy.pack");
    answer = if complete {
        answer
            .header("etag", etag)
            .header("cache-control", IMMUTABLE)
    } else {
        answer.header("cache-control", "no-store")
    };
    answer.pieces = pieces;
    Ok(answer)
}
