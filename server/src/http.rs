//! Serving the store over HTTP (protocol v1, see [`canopy_protocol::api`]).
//!
//! Objects are immutable, so their responses say so (`Cache-Control: immutable`,
//! `ETag` = id) and any HTTP cache can sit between server and hosts. Root refs change,
//! so they are cached for seconds only and read from the store on every request: a
//! commit made by `canopy assemble` on the same store is served at once, without a
//! restart (on a store in a bucket, within a second: see [`crate::store::cached`]).
//! Objects are answered from a file where there is one — the store's own, or the read
//! cache's verified copy — so ranges and sendfile work on every backend that has files.

use crate::admission::Admission;
use crate::netboot;
use crate::range::{self, Ranges};
use crate::store::{Store, StoreError};
use crate::view::{self, history};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use canopy_protocol::api::{ErrorBody, LogEntry, RootInfo, encode_tree_pack};
use canopy_protocol::{ObjectId, RootName, TreeId};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite};
use tokio_util::io::ReaderStream;
use tower_http::compression::CompressionLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Objects never change: cache them for a year, anywhere.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Root refs move: caches may keep them only briefly, so `--follow` sees new commits.
const SHORT: &str = "public, max-age=2";
/// Requests handled at once; more wait in the accept queue.
const MAX_CONCURRENT: usize = 512;
/// A request that takes longer than this is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A request head must be complete this long after the connection opened or the
/// previous answer ended.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that takes no answer bytes for this long loses its connection.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long connections may take to finish their answers when the server stops.
const GRACE: Duration = Duration::from_secs(10);

/// An error answer: status, stable code, message.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.1.to_string(),
            message: self.2,
        };
        let mut res = (self.0, Json(body)).into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Missing { id, .. } => ApiError(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("object {id} not found"),
            ),
            // Asking for a tree by a commit's id: there is no tree of that id.
            StoreError::Decode { id, kind, .. } => ApiError(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("object {id} is not a {kind}"),
            ),
            // The bucket is unreachable and the object not cached here: another server
            // (or this one, shortly) may answer.
            e @ StoreError::Backend { .. } => {
                tracing::warn!("{e}");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend-unavailable",
                    format!(
                        "{e} (objects this server has cached are still served; try again \
                         shortly or another server)"
                    ),
                )
            }
            other => {
                tracing::error!("{other}");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

fn bad_id(s: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "bad-id",
        format!("{s:?} is not an object id: {e}"),
    )
}

fn root_name(s: &str) -> Result<RootName, ApiError> {
    s.parse().map_err(|e: canopy_protocol::RootNameError| {
        ApiError(StatusCode::BAD_REQUEST, "bad-name", e.to_string())
    })
}

/// Runs blocking store reads off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

fn with_cache(mut res: Response, policy: &'static str) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    res
}

/// The HTTP service over a store.
pub fn router(store: Arc<Store>) -> axum::Router {
    // Range responses stay uncompressed: their byte ranges refer to the object itself.
    let compress = CompressionLayer::new()
        .no_br()
        .no_deflate()
        .no_gzip()
        .compress_when(
            |status: StatusCode,
             _: axum::http::Version,
             _: &HeaderMap,
             _: &axum::http::Extensions| { status == StatusCode::OK },
        );
    axum::Router::new()
        .route("/v1/objects/{id}", get(object))
        .route("/v1/roots", get(roots))
        .route("/v1/roots/{name}", get(root))
        .route("/v1/roots/{name}/log", get(log))
        .route("/v1/trees/{id}", get(tree_pack))
        .route("/v1/roots/{name}/boot.ipxe", get(boot_ipxe))
        .route("/v1/netboot/{file}", get(boot_script))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint; see /v1/roots".into(),
            )
        })
        .layer(compress)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .layer(
            // The access log: one line per request at info, seen with `canopy -v serve`.
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(store)
}

/// How the HTTP server runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections served at once; at the cap, the one idle longest is closed to admit
    /// a new one (see [`crate::admission`]).
    pub connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: crate::admission::connection_cap(1),
        }
    }
}

/// Serves until `shutdown` resolves; then stops accepting and lets connections finish
/// the answers they are writing (for at most [`GRACE`]).
///
/// Every wait on a client is bounded: a request head must be complete within
/// [`HEAD_TIMEOUT`] of the connection's start or of the previous answer (which is also
/// how long an idle keep-alive connection lives), handlers are cut at
/// [`REQUEST_TIMEOUT`], and an answer the client stops taking for [`WRITE_STALL`] ends
/// its connection.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::new(store));
    let admission = Admission::new("HTTP", options.connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = admission.accept(&listener) => accepted,
        };
        // Without TCP_NODELAY the end of a response can wait ~40 ms for the client's
        // delayed ACK: headers and body leave in separate writes.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("setting TCP_NODELAY: {e}");
        }
        let io = hyper_util::rt::TokioIo::new(Stalls::new(admission.admit(tcp)));
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection ends: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after {GRACE:?}: closed");
    }
    Ok(())
}

/// A stream whose writes fail once they have waited [`WRITE_STALL`] for a client that
/// takes no bytes: slow readers cannot hold a connection and its object file forever.
struct Stalls<S> {
    inner: S,
    /// When the current wait for the client runs out.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Stalls<S> {
    fn new(inner: S) -> Self {
        Stalls {
            inner,
            stalled: None,
        }
    }

    /// Passes a write's result on, starting the stall clock when it must wait and
    /// failing it when that wait has lasted too long.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {WRITE_STALL:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalls<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalls<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn object(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let oid: ObjectId = id.parse().map_err(|e| bad_id(&id, e))?;
    let not_found = || {
        ApiError(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("object {oid} not found"),
        )
    };
    // A file to serve ranges from: the store's own, or the read cache's copy (fetched
    // and verified first, on a store in a bucket).
    let s = store.clone();
    let local = blocking(move || Ok(s.open_file(&oid)?)).await?;
    if local.is_none() {
        let s = store.clone();
        if !blocking(move || Ok(s.has(&oid)?)).await? {
            return Err(not_found());
        }
    }
    let etag = HeaderValue::from_str(&format!("\"{oid}\"")).expect("hex is a valid header value");
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == etag.to_str().unwrap_or_default() || t.trim() == "*")
        });
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if let Some(file) = local {
        object_body(tokio::fs::File::from_std(file), &oid, req.headers(), &etag).await?
    } else {
        // No file to serve ranges from: the whole object, verified.
        blocking(move || Ok(store.read_object(&oid)?))
            .await?
            .into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/octet-stream"));
    Ok(with_cache(res, IMMUTABLE))
}

/// The object's bytes: whole, or the pieces a `Range` header asks for (see
/// [`crate::range`]).
async fn object_body(
    file: tokio::fs::File,
    oid: &ObjectId,
    headers: &HeaderMap,
    etag: &HeaderValue,
) -> Result<Response, ApiError> {
    let io_err = |e: std::io::Error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("reading object {oid}: {e}"),
        )
    };
    let len = file.metadata().await.map_err(io_err)?.len();
    // If-Range with another validator (or a date: objects have none) asks for all.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let ranges = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) if if_range_ok => range::parse(h, len),
        _ => Ranges::Whole,
    };
    let mut res = match ranges {
        Ranges::Whole => {
            let mut res = Body::from_stream(ReaderStream::new(file)).into_response();
            res.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            res
        }
        Ranges::Unsatisfiable => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            res.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            res
        }
        Ranges::Partial(pieces) if pieces.len() == 1 => {
            let piece = &pieces[0];
            let mut res = piece_body(file, piece).await.map_err(io_err)?;
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = res.headers_mut();
            h.insert(header::CONTENT_LENGTH, (piece.end - piece.start).into());
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range::content_range(piece, len)).expect("ascii"),
            );
            res
        }
        Ranges::Partial(pieces) => multipart(file, &pieces, len, oid).await.map_err(io_err)?,
    };
    res.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(res)
}

/// One piece of a file as a streamed body.
async fn piece_body(
    mut file: tokio::fs::File,
    piece: &std::ops::Range<u64>,
) -> std::io::Result<Response> {
    file.seek(std::io::SeekFrom::Start(piece.start)).await?;
    let reader = file.take(piece.end - piece.start);
    Ok(Body::from_stream(ReaderStream::new(reader)).into_response())
}

/// What a multipart answer is made of.
enum Segment {
    /// Boundary and part headers.
    Text(String),
    /// Bytes of the object.
    File(std::ops::Range<u64>),
}

/// How much of a piece is read at a time.
const CHUNK: u64 = 256 * 1024;

/// Several pieces as `multipart/byteranges` (RFC 9110 §14.6), streamed from one file.
async fn multipart(
    file: tokio::fs::File,
    pieces: &[std::ops::Range<u64>],
    len: u64,
    oid: &ObjectId,
) -> std::io::Result<Response> {
    // A boundary needs only to differ from every line of the part headers.
    let boundary = format!("canopy-{}", oid.short());
    let mut parts = Vec::with_capacity(pieces.len());
    let mut total = 0u64;
    for piece in pieces {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}\r\n\r\n",
            range::content_range(piece, len)
        );
        total += head.len() as u64 + (piece.end - piece.start);
        parts.push((head, piece.clone()));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    total += tail.len() as u64;
    // Part headers and file pieces, in order; file pieces are read in chunks.
    let mut queue: std::collections::VecDeque<Segment> = parts
        .into_iter()
        .flat_map(|(head, piece)| [Segment::Text(head), Segment::File(piece)])
        .collect();
    queue.push_back(Segment::Text(tail));
    let stream =
        futures_util::stream::try_unfold((file, queue), |(mut file, mut queue)| async move {
            let chunk = match queue.pop_front() {
                None => return Ok(None),
                Some(Segment::Text(text)) => bytes::Bytes::from(text),
                Some(Segment::File(piece)) => {
                    let n = (piece.end - piece.start).min(CHUNK);
                    let mut data = vec![0u8; n as usize];
                    file.seek(std::io::SeekFrom::Start(piece.start)).await?;
                    file.read_exact(&mut data).await?;
                    if piece.start + n < piece.end {
                        queue.push_front(Segment::File(piece.start + n..piece.end));
                    }
                    bytes::Bytes::from(data)
                }
            };
            Ok::<_, std::io::Error>(Some((chunk, (file, queue))))
        });
    let mut res = Body::from_stream(stream).into_response();
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, total.into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            .expect("ascii"),
    );
    Ok(res)
}

async fn roots(State(store): State<Arc<Store>>) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(store.roots()?)).await?;
    let body: Vec<RootInfo> = list
        .into_iter()
        .map(|(name, id)| RootInfo {
            name: name.to_string(),
            commit: id.to_string(),
        })
        .collect();
    Ok(with_cache(Json(body).into_response(), SHORT))
}

async fn root(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = root_name(&name)?;
    let found = blocking({
        let name = name.clone();
        move || Ok(store.root_ref(&name)?)
    })
    .await?;
    let id = found.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no root named {name}"),
        )
    })?;
    Ok(with_cache(
        Json(RootInfo {
            name: name.to_string(),
            commit: id.to_string(),
        })
        .into_response(),
        SHORT,
    ))
}

async fn log(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = root_name(&name)?;
    let entries = blocking(move || {
        let Some(head) = store.root_ref(&name)? else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no root named {name}"),
            ));
        };
        let mut out = Vec::new();
        for entry in history::log(&store, head) {
            let (id, c) = entry?;
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
    Ok(with_cache(Json(entries).into_response(), SHORT))
}

/// An iPXE script that boots a diskless node from the root's current commit: kernel
/// and initramfs by their object URLs, `/` from `/NAME@COMMIT` of the NFS server named
/// by `?nfs=HOST[:PORT]`, else by the host the script was asked from; `?args=` puts
/// more arguments first (`console=ttyS0`). The commit is
/// pinned, so a node runs on one version until it reboots, and gets the newest then.
async fn boot_ipxe(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = root_name(&name)?;
    let query = uri.query().unwrap_or("");
    let asked = netboot::query_value(query, "nfs");
    let args = netboot::query_value(query, "args");
    if let Some(args) = args.as_ref().filter(|a| !netboot::valid_args(a)) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!(
                "args={args:?}: kernel arguments are words of letters, digits and ,.=_:/@+- \
                 separated by single spaces"
            ),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| netboot::host_of(h).to_string());
    let Some(server) = asked.or(host).filter(|s| netboot::valid_server(s)) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "name the NFS server: ?nfs=HOST or ?nfs=HOST:PORT".into(),
        ));
    };
    let script = blocking(move || {
        let Some(head) = store.root_ref(&name)? else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no root named {name}"),
            ));
        };
        let tree = store.commit(&head)?.body.tree;
        let files = netboot::boot_files(&store, &tree, &name.to_string())
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, "not-bootable", e.to_string()))?;
        let at = netboot::Locations {
            kernel: format!("/v1/objects/{}", files.kernel.blob),
            initrd: format!("/v1/objects/{}", files.initrd.blob),
            boot_script: format!("/v1/netboot/{}", netboot::boot_script_name()),
        };
        let mut cmdline = netboot::cmdline(&server, &format!("/{name}@{head}"));
        if let Some(args) = args {
            cmdline = format!("{args} {cmdline}");
        }
        Ok(netboot::ipxe_script(
            &at,
            &cmdline,
            &format!(
                "canopy: root {name}, commit {head}, kernel {}",
                files.version
            ),
        ))
    })
    .await?;
    let mut res = script.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Each boot must see the root's current commit.
    Ok(with_cache(res, "no-store"))
}

/// canopy's boot script archive, the second initramfs of a netbooted node.
async fn boot_script(Path(file): Path<String>) -> Result<Response, ApiError> {
    if file != netboot::boot_script_name() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not-found",
            format!(
                "no netboot file {file:?}; this server has {}",
                netboot::boot_script_name()
            ),
        ));
    }
    let mut res = netboot::boot_script_cpio().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(with_cache(res, IMMUTABLE))
}

async fn tree_pack(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let root = TreeId(id.parse().map_err(|e| bad_id(&id, e))?);
    let pack = blocking(move || {
        let trees = view::trees_under(&store, root)?;
        Ok(encode_tree_pack(trees.iter().map(|(id, b)| (*id, &b[..]))))
    })
    .await?;
    let mut res = pack.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.canopy.tree-pack"),
    );
    Ok(with_cache(res, IMMUTABLE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture;

    /// Serves a memory store with one root, as `canopy serve` would, and asks for what
    /// a mount asks for.
    #[tokio::test(flavor = "multi_thread")]
    async fn serves_roots_logs_objects_and_tree_packs_from_any_backend() {
        let (_state, store, tree) = fixture::memory_with(&[("file", b"content")]);
        let commit = fixture::commit(&store, "web", tree);
        let blob = ObjectId::of(b"content");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(store, listener, Options::default(), async {
            let _ = stopped.await;
        }));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let get = |path: String| client.get(format!("{url}{path}")).send();

        let json = |b: axum::body::Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let roots = json(
            get("/v1/roots".into())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
        let roots: Vec<RootInfo> = serde_json::from_value(roots).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].commit, commit.to_string());
        let log = json(
            get("/v1/roots/web/log".into())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
        let log: Vec<LogEntry> = serde_json::from_value(log).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].subject, "commit 1");
        let res = get(format!("/v1/objects/{blob}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::ETAG], format!("\"{blob}\"").as_str());
        assert_eq!(&res.bytes().await.unwrap()[..], b"content");
        let pack = get(format!("/v1/trees/{tree}")).await.unwrap();
        assert_eq!(pack.status(), StatusCode::OK);
        let missing = get(format!("/v1/objects/{}", ObjectId::of(b"none")))
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let bad = get("/v1/objects/xyz".into()).await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
