//! Serving the store over HTTP (protocol v1, see [`canopy_protocol::api`]).
//!
//! Objects are immutable, so their responses say so (`Cache-Control: immutable`,
//! `ETag` = id) and any HTTP cache can sit between server and hosts. Root refs change,
//! so they are cached for seconds only and read from the store on every request: a
//! commit made by `canopy assemble` on the same store is served at once, without a
//! restart (on a store in a bucket, within a second: see [`crate::store::cached`]).
//! Objects are answered from a file where there is one — the store's own, or the read
//! cache's verified copy — so ranges and sendfile work on every backend that has files.
//!
//! Connections are admitted within the open-file limit ([`crate::admission`]); every
//! wait on a client is bounded: a request head must be complete within
//! [`conn::HEAD_TIMEOUT`] of the connection's start or of the previous answer (which is
//! also how long an idle keep-alive connection lives), store reads are cut at
//! [`STORE_TIMEOUT`], and an answer the client stops taking for
//! [`answer::WRITE_STALL`] ends its connection.
//!
//! canopy speaks HTTP/1.1 itself ([`conn`]) rather than through a framework, for one
//! reason: object bytes leave by `sendfile`, from the object file to the socket, which
//! no Rust HTTP stack offers. Answers are built whole ([`answer`]) with their length,
//! so every response has a `Content-Length`; what is costly to compute (zstd forms,
//! tree packs) is computed once and kept ([`wire`]).

mod answer;
mod boot;
mod conn;
mod date;
mod object;
mod pack;
mod profile;
mod range;
mod wire;

use crate::admission::Admission;
use crate::store::{Store, StoreError};
use crate::view::{self, history};
use answer::{Answer, Source, Status};
use bytes::Bytes;
use canopy_protocol::api::{LogEntry, RootInfo, encode_tree_pack};
use canopy_protocol::{RootName, TreeId};
use conn::{Method, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use wire::{Kind, WireCache};

/// Objects never change: cache them for a year, anywhere.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Root refs move: caches may keep them only briefly, so `--follow` sees new commits.
const SHORT: &str = "public, max-age=2";
/// A store read that takes longer than this is answered 500 (the read goes on).
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connections may take to finish the request they are answering when the
/// server stops.
const GRACE: Duration = Duration::from_secs(10);

/// How the HTTP server runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections served at once; at the cap, the one idle longest is closed to admit
    /// a new one (see [`crate::admission`]).
    pub connections: usize,
    /// Bytes of memory for answers computed once (zstd forms, tree packs, small
    /// objects).
    pub wire_cache: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: crate::admission::connection_cap(1),
            wire_cache: 256 * 1024 * 1024,
        }
    }
}

/// What every connection shares.
struct App {
    store: Arc<Store>,
    wire: WireCache,
    /// Packs whose members are read into memory (a backend without files) being built
    /// at once: see [`pack::IN_MEMORY`].
    packs_in_memory: tokio::sync::Semaphore,
    /// Plans of commits' profiles, computed once.
    profile_plans: profile::Plans,
}

/// Serves `store` on `listener` until `shutdown` resolves; then stops accepting, lets
/// connections finish the answer they are writing (for at most [`GRACE`]) and returns.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        store: Arc::new(store),
        wire: WireCache::new(options.wire_cache),
        packs_in_memory: tokio::sync::Semaphore::new(pack::IN_MEMORY),
        profile_plans: profile::Plans::default(),
    });
    let admission = Admission::new("HTTP", options.connections);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = admission.accept(&listener) => accepted,
        };
        // Without TCP_NODELAY the end of an answer could wait for the client's
        // delayed ACK; the answer's pieces are coalesced with MSG_MORE instead.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("setting TCP_NODELAY: {e}");
        }
        let (app, stop) = (app.clone(), stop_rx.clone());
        let admitted = admission.admit(tcp);
        connections.spawn(conn::serve(app, admitted, stop));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        // Dropping the set aborts them and closes their sockets.
        tracing::debug!(
            "{} connections still open after {GRACE:?}: closed",
            connections.len()
        );
    }
    Ok(())
}

impl App {
    /// The answer to one request.
    async fn answer(self: &Arc<Self>, req: &Request) -> Answer {
        if req.method == Method::Other {
            return Answer::error(
                Status::MethodNotAllowed,
                "method-not-allowed",
                "canopy's API is read-only: GET and HEAD only",
            )
            .header("allow", "GET, HEAD");
        }
        // Ids and names need no escaping; decode only what is escaped.
        let segments: Option<Vec<std::borrow::Cow<str>>> = req.path[1..]
            .split('/')
            .map(|s| {
                if s.contains('%') {
                    percent_encoding::percent_decode_str(s).decode_utf8().ok()
                } else {
                    Some(s.into())
                }
            })
            .collect();
        let Some(segments) = segments else {
            return Answer::error(
                Status::BadRequest,
                "bad-request",
                "the path is not UTF-8 once decoded",
            );
        };
        let segments: Vec<&str> = segments.iter().map(|s| &**s).collect();
        match segments.as_slice() {
            ["v1", "objects", id] => object::answer(self, req, id).await,
            ["v1", "trees", id] => either(self.tree_pack(req, id).await),
            ["v1", "packs", tree, part] => either(pack::answer(self, req, tree, part).await),
            ["v1", "packs", "profile", commit, part] => {
                either(profile::answer(self, req, commit, part).await)
            }
            ["v1", "roots"] => either(self.roots().await),
            ["v1", "roots", name] => either(self.root(name).await),
            ["v1", "roots", name, "log"] => either(self.log(name).await),
            ["v1", "roots", name, "boot.ipxe"] => either(boot::ipxe(self, req, name).await),
            ["v1", "netboot", file] => either(boot::script(file)),
            _ => Answer::error(
                Status::NotFound,
                "not-found",
                "no such endpoint; see /v1/roots",
            ),
        }
    }

    /// `GET /v1/trees/{id}`: every tree under tree `id` in one answer, computed once.
    async fn tree_pack(&self, req: &Request, id: &str) -> Result<Answer, Answer> {
        let root = TreeId(id.parse().map_err(|e| bad_id(id, e))?);
        let store = self.store.clone();
        let pack = self
            .wire
            .get(Kind::TreePack, root.0, move || {
                let trees = view::trees_under(&store, root).map_err(store_error)?;
                let pack = encode_tree_pack(trees.iter().map(|(id, b)| (*id, &b[..])));
                Ok(Some(Bytes::from(pack)))
            })
            .await?
            .expect("tree packs are always computed");
        let mut answer = Answer::new(Status::Ok)
            .header("content-type", "application/vnd.canopy.tree-pack")
            .header("cache-control", IMMUTABLE)
            .header("vary", "accept-encoding");
        if wire::accepts_zstd(req.accept_encoding.as_deref()) {
            let plain = pack.clone();
            let packed = self
                .wire
                .get(Kind::TreePackZstd, root.0, move || {
                    wire::compress(&plain).map_err(|e| {
                        Answer::error(Status::Internal, "internal", format!("compressing: {e}"))
                    })
                })
                .await?;
            if let Some(z) = packed {
                let n = z.len() as u64;
                return Ok(answer
                    .header("content-encoding", "zstd")
                    .body(Source::Memory(z), n));
            }
        }
        let n = pack.len() as u64;
        answer = answer.body(Source::Memory(pack), n);
        Ok(answer)
    }

    /// `GET /v1/roots`: every root and its commit.
    async fn roots(&self) -> Result<Answer, Answer> {
        let store = self.store.clone();
        let list = blocking(move || store.served_roots().map_err(store_error)).await?;
        let body: Vec<RootInfo> = list
            .into_iter()
            .map(|(name, id)| RootInfo {
                name: name.to_string(),
                commit: id.to_string(),
            })
            .collect();
        Ok(Answer::json(Status::Ok, &body).header("cache-control", SHORT))
    }

    /// `GET /v1/roots/{name}`: one root's current commit.
    async fn root(&self, name: &str) -> Result<Answer, Answer> {
        let name = root_name(name)?;
        let store = self.store.clone();
        let found = blocking({
            let name = name.clone();
            move || store.root_ref(&name).map_err(store_error)
        })
        .await?;
        let id = found.ok_or_else(|| no_root(&name))?;
        let info = RootInfo {
            name: name.to_string(),
            commit: id.to_string(),
        };
        Ok(Answer::json(Status::Ok, &info).header("cache-control", SHORT))
    }

    /// `GET /v1/roots/{name}/log`: a root's commits, newest first.
    async fn log(&self, name: &str) -> Result<Answer, Answer> {
        let name = root_name(name)?;
        let store = self.store.clone();
        let entries = blocking(move || {
            let head = store
                .root_ref(&name)
                .map_err(store_error)?
                .ok_or_else(|| no_root(&name))?;
            let mut out = Vec::new();
            for entry in history::log(&store, head) {
                let (id, c) = entry.map_err(store_error)?;
                out.push(LogEntry {
                    commit: id.to_string(),
                    parent: c.body.parent.map(|p| p.to_string()),
                    timestamp: c.body.timestamp,
                    subject: c.body.subject,
                });
            }
            Ok(out)
        })
        .await?;
        Ok(Answer::json(Status::Ok, &entries).header("cache-control", SHORT))
    }
}

/// An answer, whether the handler succeeded or refused.
fn either(r: Result<Answer, Answer>) -> Answer {
    r.unwrap_or_else(|refusal| refusal)
}

/// Runs a blocking store read off the connections' tasks, bounded by [`STORE_TIMEOUT`].
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Answer> + Send + 'static,
) -> Result<T, Answer> {
    match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Answer::error(Status::Internal, "internal", e.to_string())),
        Err(_) => Err(Answer::error(
            Status::Internal,
            "internal",
            "the store did not answer within 300 s",
        )),
    }
}

/// The answer to a store failure: 404 for what is missing, 503 while a bucket is out of
/// reach, 500 (logged) otherwise.
fn store_error(e: StoreError) -> Answer {
    match e {
        StoreError::Missing { id, .. } => Answer::error(
            Status::NotFound,
            "not-found",
            format!("object {id} not found"),
        ),
        // Asking for a tree by a commit's id: there is no tree of that id.
        StoreError::Decode { id, kind, .. } => Answer::error(
            Status::NotFound,
            "not-found",
            format!("object {id} is not a {kind}"),
        ),
        // The bucket is unreachable and the object not cached here: another server
        // (or this one, shortly) may answer.
        e @ StoreError::Backend { .. } => {
            tracing::warn!("{e}");
            Answer::error(
                Status::ServiceUnavailable,
                "backend-unavailable",
                format!(
                    "{e} (objects this server has cached are still served; try again \
                     shortly or another server)"
                ),
            )
        }
        other => {
            tracing::error!("{other}");
            Answer::error(Status::Internal, "internal", other.to_string())
        }
    }
}

fn bad_id(s: &str, e: impl std::fmt::Display) -> Answer {
    Answer::error(
        Status::BadRequest,
        "bad-id",
        format!("{s:?} is not an object id: {e}"),
    )
}

fn root_name(s: &str) -> Result<RootName, Answer> {
    s.parse().map_err(|e: canopy_protocol::RootNameError| {
        Answer::error(Status::BadRequest, "bad-name", e.to_string())
    })
}

fn no_root(name: &RootName) -> Answer {
    Answer::error(
        Status::NotFound,
        "not-found",
        format!("no root named {name}"),
    )
}

#[cfg(test)]
mod tests;
