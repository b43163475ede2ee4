//! Serving the store over HTTP (protocol v1, see [`canopy_protocol::api`]).
//!
//! Objects are immutable, so their responses say so (`Cache-Control: immutable`,
//! `ETag` = id) and any HTTP cache can sit between server and hosts. Root refs change,
//! so they are cached for seconds only and read from disk on every request: a commit
//! made by `canopy assemble` on the same store is served at once, without a restart.

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
use std::sync::Arc;
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeFile;
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

/// Serves until `shutdown` resolves.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without TCP_NODELAY the end of a response can wait ~40 ms for the client's
    // delayed ACK: headers and body leave in separate writes.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("setting TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(Arc::new(store)))
        .with_graceful_shutdown(shutdown)
        .await
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
    let local = store.local_path(&oid);
    match &local {
        Some(path) if tokio::fs::metadata(path).await.is_err() => return Err(not_found()),
        Some(_) => {}
        None => {
            let s = store.clone();
            if !blocking(move || Ok(s.has(&oid)?)).await? {
                return Err(not_found());
            }
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
    } else if let Some(path) = local {
        let served = ServeFile::new(&path).try_call(req).await.map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("reading object {oid}: {e}"),
            )
        })?;
        served.map(Body::new)
    } else {
        // No file to serve ranges from: the whole object, verified.
        blocking(move || Ok(store.read_object(&oid)?))
            .await?
            .into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.remove(header::LAST_MODIFIED);
    Ok(with_cache(res, IMMUTABLE))
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
        let server = tokio::spawn(serve(store, listener, async {
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
