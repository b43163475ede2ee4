//! Docker's volume plugin protocol: JSON requests POSTed to `/Plugin.Activate` and
//! `/VolumeDriver.*` over a unix socket, answered with
//! `Content-Type: application/vnd.docker.plugins.v1+json`. Every refusal is status 200
//! with the reason in `Err`, as the protocol wants; only an unknown method is a 404,
//! still with `Err`. Docker sends its requests as `application/json` or with no type,
//! and `List` and `Capabilities` sometimes with no body: the type is not checked and an
//! empty body is `{}`, but the fields a request needs must be there.

use super::driver::{Driver, DriverError, Info, checked_definition};
use super::state::Definition;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The media type of every answer.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// The driver, one request at a time: a mount may wait on the server, and requests for
/// one volume must not interleave.
pub(crate) type Shared = Arc<Mutex<Driver>>;

/// `Create`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    name: String,
    /// `-o KEY=VALUE` options; Docker sends null when there are none.
    #[serde(default)]
    opts: Option<HashMap<String, String>>,
}

/// `Remove`, `Path`, `Get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameRequest {
    name: String,
}

/// `Mount`, `Unmount`: the volume and the caller (a container) that mounts it.
#[derive(Deserialize)]
struct MountRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ID")]
    id: String,
}

/// The plugin's HTTP routes over `driver`.
pub(crate) fn router(driver: Shared) -> Router {
    Router::new()
        .route("/{method}", any(call))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, json!({"Err": "no such method"})) })
        .with_state(driver)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

async fn call(State(driver): State<Shared>, Path(method): Path<String>, body: Bytes) -> Response {
    match dispatch(&driver, &method, &body).await {
        Ok(body) => reply(StatusCode::OK, body),
        Err(e) => {
            tracing::warn!("{method}: {e}");
            let status = match e {
                DriverError::UnknownMethod(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            reply(status, json!({ "Err": e.to_string() }))
        }
    }
}

/// Parses a request body; no body at all is `{}`.
fn request<T: DeserializeOwned>(body: &[u8]) -> Result<T, DriverError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        DriverError::BadRequest(if e.is_data() {
            e.to_string()
        } else {
            format!("the body is not JSON ({e})")
        })
    })
}

/// A `Create` body read and checked as [`dispatch`] does, creating nothing.
pub(crate) fn create_definition(body: &[u8]) -> Result<Definition, DriverError> {
    let r: CreateRequest = request(body)?;
    checked_definition(&r.name, &r.opts.unwrap_or_default())
}

fn volume(info: Info) -> Value {
    json!({
        "Name": info.name,
        "Mountpoint": info.mountpoint.map(|p| p.display().to_string()).unwrap_or_default(),
        "Status": info.status,
    })
}

/// Answers one call.
async fn dispatch(driver: &Shared, method: &str, body: &[u8]) -> Result<Value, DriverError> {
    let ok = json!({ "Err": "" });
    match method {
        "Plugin.Activate" => Ok(json!({ "Implements": ["VolumeDriver"] })),
        "VolumeDriver.Capabilities" => Ok(json!({ "Capabilities": { "Scope": "local" } })),
        "VolumeDriver.Create" => {
            let r: CreateRequest = request(body)?;
            let opts = r.opts.unwrap_or_default();
            driver.lock().await.create(&r.name, &opts).map(|()| ok)
        }
        "VolumeDriver.Remove" => {
            let r: NameRequest = request(body)?;
            driver.lock().await.remove(&r.name).map(|()| ok)
        }
        "VolumeDriver.Mount" => {
            let r: MountRequest = request(body)?;
            let path = driver.lock().await.mount(&r.name, &r.id).await?;
            Ok(json!({ "Mountpoint": path.display().to_string(), "Err": "" }))
        }
        "VolumeDriver.Unmount" => {
            let r: MountRequest = request(body)?;
            driver
                .lock()
                .await
                .unmount(&r.name, &r.id)
                .await
                .map(|()| ok)
        }
        "VolumeDriver.Path" => {
            let r: NameRequest = request(body)?;
            let path = driver.lock().await.path(&r.name)?;
            let path = path.map(|p| p.display().to_string()).unwrap_or_default();
            Ok(json!({ "Mountpoint": path, "Err": "" }))
        }
        "VolumeDriver.Get" => {
            let r: NameRequest = request(body)?;
            let info = driver.lock().await.get(&r.name)?;
            Ok(json!({ "Volume": volume(info), "Err": "" }))
        }
        "VolumeDriver.List" => {
            request::<Value>(body)?;
            let volumes: Vec<Value> = driver.lock().await.list().into_iter().map(volume).collect();
            Ok(json!({ "Volumes": volumes, "Err": "" }))
        }
        other => Err(DriverError::UnknownMethod(other.to_string())),
    }
}
