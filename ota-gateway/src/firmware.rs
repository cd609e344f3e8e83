//! The device API: OtaFlux-compatible `/version` and `/firmware`, and named
//! channels with JSON answers and an upgrade check.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::download;
use crate::error::Error;
use crate::state::{AppState, Channel, Ready, Release, RETRY_AFTER};

/// Routes of the public listener.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/version", get(otaflux_version))
        .route("/firmware", get(otaflux_firmware))
        .route("/api/v1/channels", get(list_channels))
        .route("/api/v1/channels/{name}", get(channel_info))
        .route("/api/v1/channels/{name}/firmware", get(channel_firmware))
        .route("/api/v1/channels/{name}/check", post(check))
        .route("/.well-known/updraft/signing-key.pub", get(public_key))
}

/// The value of query parameter `name`, percent-decoded; `None` when absent or empty.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let raw = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })?;
    let value = if raw.contains(['%', '+']) { Cow::Owned(percent_decode(raw)) } else { Cow::Borrowed(raw) };
    (!value.is_empty()).then_some(value)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex()) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The channel serving `?device=` and the release for `?id=`.
fn otaflux_target(state: &AppState, uri: &Uri) -> Result<(Arc<Channel>, Arc<Release>), Error> {
    let query = uri.query().unwrap_or("");
    let device = query_param(query, "device").ok_or(Error::MissingDevice)?;
    let snapshot = state.snapshot();
    let channel = snapshot.device(&device).ok_or_else(|| Error::UnknownDevice(device.into_owned()))?.clone();
    let release = channel.pick(query_param(query, "id").as_deref())?;
    Ok((channel, release))
}

/// OtaFlux `GET /version?device=ID[&id=UNIQUE]`: `VERSION\nCRC32\nSIZE`.
#[instrument(level = "debug", skip_all, fields(query = uri.query()))]
async fn otaflux_version(State(state): State<AppState>, uri: Uri) -> Result<Response, Error> {
    let (channel, release) = otaflux_target(&state, &uri)?;
    channel.otaflux_checkins.inc();
    let ready = state.ready(&channel, &release)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], ready.version_body.clone()).into_response())
}

/// OtaFlux `GET /firmware?device=ID[&id=UNIQUE]`: the binary.
#[instrument(level = "debug", skip_all, fields(query = uri.query()))]
async fn otaflux_firmware(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Result<Response, Error> {
    let (channel, release) = otaflux_target(&state, &uri)?;
    let ready = state.ready(&channel, &release)?;
    download_of(&state, &headers, &ready)
}

fn download_of(state: &AppState, headers: &HeaderMap, ready: &Ready) -> Result<Response, Error> {
    state.cache().touch(&ready.payload.summary.sha256);
    download::respond(headers, ready)
}

/// One line of `GET /api/v1/channels`.
#[derive(Serialize)]
struct ChannelSummary {
    name: String,
    device: String,
    version: Option<String>,
    previous: Option<String>,
    rollout: u8,
    ready: bool,
    url: String,
}

/// `GET /api/v1/channels`: every channel with its versions.
#[instrument(level = "debug", skip_all)]
async fn list_channels(State(state): State<AppState>) -> Json<Vec<ChannelSummary>> {
    let summaries = state
        .snapshot()
        .channels
        .iter()
        .map(|c| {
            let releases = c.releases();
            let version = |r: &Option<Arc<Release>>| r.as_ref().map(|r| r.pinned.version.clone());
            ChannelSummary {
                name: c.name().to_owned(),
                device: c.config.device_id().to_owned(),
                version: version(&releases.current),
                previous: version(&releases.previous),
                rollout: c.config.rollout,
                ready: releases.current.as_ref().is_some_and(|r| r.is_ready()),
                url: format!("/api/v1/channels/{}", c.name()),
            }
        })
        .collect();
    Json(summaries)
}

fn named_channel(state: &AppState, name: &str) -> Result<Arc<Channel>, Error> {
    state.channel(name).ok_or_else(|| Error::UnknownChannel(name.to_owned()))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `GET /api/v1/channels/{name}[?id=UNIQUE]`: the release this device gets.
#[instrument(level = "debug", skip(state, uri))]
async fn channel_info(State(state): State<AppState>, Path(name): Path<String>, uri: Uri) -> Result<Response, Error> {
    let channel = named_channel(&state, &name)?;
    let release = channel.pick(query_param(uri.query().unwrap_or(""), "id").as_deref())?;
    let ready = state.ready(&channel, &release)?;
    Ok(json_bytes(ready.info_json.clone()))
}

/// `GET /api/v1/channels/{name}/firmware[?version=V|?id=UNIQUE]`: the binary. The
/// URLs in JSON answers name the version, so a device downloads what it was told.
#[instrument(level = "debug", skip(state, uri, headers))]
async fn channel_firmware(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let channel = named_channel(&state, &name)?;
    let query = uri.query().unwrap_or("");
    let release = match query_param(query, "version") {
        Some(v) => channel
            .by_version(&v)
            .ok_or_else(|| Error::BadRequest(format!("channel {name:?} does not serve version {v:?}")))?,
        None => channel.pick(query_param(query, "id").as_deref())?,
    };
    let ready = state.ready(&channel, &release)?;
    download_of(&state, &headers, &ready)
}

/// Body of `POST /api/v1/channels/{name}/check`: what the device runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub version: String,
    #[serde(default)]
    pub id: Option<String>,
}

/// Whether a device running `running` needs nothing from `offered`: same version,
/// or (both being semver) a newer one. Never offers a downgrade.
pub fn is_up_to_date(running: &str, offered: &str) -> bool {
    let (running, offered) = (running.trim().trim_start_matches('v'), offered.trim_start_matches('v'));
    match (semver::Version::parse(running), semver::Version::parse(offered)) {
        (Ok(r), Ok(o)) => r >= o,
        _ => running == offered,
    }
}

/// `POST /api/v1/channels/{name}/check` with `{"version": "...", "id": "..."}`: 200
/// with the update, 204 when up to date, 202 while the update is being fetched.
#[instrument(level = "debug", skip(state, body))]
async fn check(State(state): State<AppState>, Path(name): Path<String>, body: Bytes) -> Result<Response, Error> {
    let channel = named_channel(&state, &name)?;
    let request: CheckRequest =
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("invalid check request: {e}")))?;
    if request.version.trim().is_empty() {
        return Err(Error::BadRequest("version must not be empty".into()));
    }
    state.metrics().checkin(&name, Some(request.version.trim()));
    let release = channel.pick(request.id.as_deref())?;
    let ready = match state.ready(&channel, &release) {
        Ok(ready) => ready,
        Err(Error::Fetching { .. }) => return Ok(accepted()),
        Err(e) => return Err(e),
    };
    if is_up_to_date(&request.version, &ready.version) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_bytes(ready.info_json.clone()))
}

/// 202: the update exists but is still being fetched.
fn accepted() -> Response {
    let body = serde_json::json!({ "status": "fetching", "retryAfter": RETRY_AFTER.as_secs() });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    response
}

/// `GET /.well-known/updraft/signing-key.pub`: the PEM public key, 404 without one.
#[instrument(level = "debug", skip_all)]
async fn public_key(State(state): State<AppState>) -> Response {
    match &state.snapshot().signer {
        Some(signer) => {
            ([(header::CONTENT_TYPE, "application/x-pem-file")], signer.public_pem().to_owned()).into_response()
        }
        None => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": "no signing key configured" }))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param("device=esp32&id=a%2Fb", "id").as_deref(), Some("a/b"));
        assert_eq!(query_param("device=esp32", "device").as_deref(), Some("esp32"));
        assert_eq!(query_param("device=", "device"), None);
        assert_eq!(query_param("devices=x", "device"), None);
        assert_eq!(query_param("id=a+b", "id").as_deref(), Some("a b"));
        assert_eq!(query_param("id=%zz", "id").as_deref(), Some("%zz"));
    }

    #[test]
    fn up_to_date() {
        assert!(is_up_to_date("1.2.0", "1.2.0"));
        assert!(is_up_to_date("v1.2.0", "1.2.0"));
        assert!(is_up_to_date("1.3.0", "1.2.0"));
        assert!(!is_up_to_date("1.1.9", "1.2.0"));
        assert!(!is_up_to_date("1.2.0-rc.1", "1.2.0"));
        assert!(is_up_to_date("build-7", "build-7"));
        assert!(!is_up_to_date("build-6", "build-7"));
    }
}
