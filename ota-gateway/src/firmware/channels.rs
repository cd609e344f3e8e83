//! Named channels with JSON answers: the list, a channel's release for a device, its
//! download by version, the upgrade check (200 with the update, 204 up to date, 202
//! while fetching) with a delta patch when one matches what the device runs, the patch's
//! download, and the public key that verifies the manifests' signatures.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::deltas::{self, DeltaInfo, Running};
use super::{Channel, Error, Firmware, Release, Seen, RETRY_AFTER};
use crate::http::{self, query};
use crate::server::ClientSubject;
use updraft_core::config::Downgrade;

/// One line of `GET /api/v1/channels`.
#[derive(Serialize)]
pub(super) struct ChannelSummary {
    name: String,
    device: String,
    version: Option<String>,
    previous: Option<String>,
    rollout: u8,
    /// Whether `version` is cached, verified and served.
    ready: bool,
    /// The version OtaFlux devices (no id) are served now: `version` once it is ready,
    /// until then the release they got before (none: they get 503 or 502).
    serving: Option<String>,
    /// Why `version` is not served yet, when its last fetch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    url: String,
}

/// `GET /api/v1/channels`: every channel with its versions.
#[instrument(level = "debug", skip_all)]
pub(super) async fn list(State(firmware): State<Firmware>) -> Json<Vec<ChannelSummary>> {
    let summaries = firmware
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
                serving: firmware.serve(c, None).ok().map(|r| r.version.clone()),
                error: firmware.failure(c),
                url: format!("/api/v1/channels/{}", c.name()),
            }
        })
        .collect();
    Json(summaries)
}

fn named(firmware: &Firmware, name: &str) -> Result<Arc<Channel>, Error> {
    firmware.channel(name).ok_or_else(|| Error::UnknownChannel(name.to_owned()))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `GET /api/v1/channels/{name}[?id=UNIQUE]`: the release this device gets (counted
/// in the census as offered to it: by `id`, else by its client certificate's subject).
#[instrument(level = "debug", skip(firmware, client, uri))]
pub(super) async fn info(
    State(firmware): State<Firmware>,
    Path(name): Path<String>,
    client: ClientSubject,
    uri: Uri,
) -> Result<Response, Error> {
    let channel = named(&firmware, &name)?;
    let id = query::param(uri.query().unwrap_or(""), "id");
    let ready = firmware.serve(&channel, id.as_deref())?;
    let device = id.as_deref().or(client.get());
    firmware.census(channel.name(), device, &[(Seen::Offered, ready.version.as_str())]);
    Ok(json_bytes(ready.info_json.clone()))
}

/// `GET /api/v1/channels/{name}/firmware[?version=V|?id=UNIQUE]`: the binary. The
/// URLs in JSON answers name the version, so a device downloads what it was told. With
/// an `id` (beside `version` or alone), a GET answered with the body counts the device
/// in the census as having downloaded the version served (as `/firmware` does).
#[instrument(level = "debug", skip(firmware, client, method, uri, headers))]
pub(super) async fn firmware(
    State(firmware): State<Firmware>,
    Path(name): Path<String>,
    client: ClientSubject,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let channel = named(&firmware, &name)?;
    let query = uri.query().unwrap_or("");
    let ready = match query::param(query, "version") {
        Some(v) => {
            let release = channel
                .by_version(&v)
                .ok_or_else(|| http::Error::BadRequest(format!("channel {name:?} does not serve version {v:?}")))?;
            firmware.ready(&channel, &release)?
        }
        None => firmware.serve(&channel, query::param(query, "id").as_deref())?,
    };
    firmware.touch(&ready);
    let response = ready.download.respond(&headers)?;
    if super::otaflux::served_a_body(&method, response.status()) {
        let id = query::param(query, "id");
        let device = id.as_deref().or(client.get());
        firmware.census(channel.name(), device, &[(Seen::Downloaded, ready.version.as_str())]);
    }
    Ok(response)
}

/// Body of `POST /api/v1/channels/{name}/check`: what the device runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    version: String,
    #[serde(default)]
    id: Option<String>,
    /// SHA-256 (hex) of the running image, as `esp_partition_get_sha256` gives it: asks
    /// for a delta patch beside the full image.
    #[serde(default)]
    sha256: Option<String>,
}

/// What the check answers a device running `running` when it should run `offered`.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// 204: nothing to do.
    UpToDate,
    /// 200 with `offered`.
    Update,
    /// 200 with `offered` and `"downgrade": true`.
    Downgrade,
}

/// The same version (ignoring a `v` prefix) is up to date; an older semver one gets the
/// update; a newer one gets the older release only as `policy` allows (with
/// `PinnedBack`, when the channel served it: it is at most `highest`, else it is a
/// development build). Versions that are not semver get `offered` unless equal.
fn offer(running: &str, offered: &str, policy: Downgrade, highest: Option<&semver::Version>) -> Offer {
    let (running, offered) = (running.trim().trim_start_matches('v'), offered.trim_start_matches('v'));
    if running == offered {
        return Offer::UpToDate;
    }
    let (Ok(r), Ok(o)) = (semver::Version::parse(running), semver::Version::parse(offered)) else {
        return Offer::Update;
    };
    if r < o {
        return Offer::Update;
    }
    if r == o {
        return Offer::UpToDate; // equal up to build metadata
    }
    let served = match policy {
        Downgrade::Never => false,
        Downgrade::Always => true,
        Downgrade::PinnedBack => highest.is_some_and(|h| r <= *h),
    };
    if served {
        Offer::Downgrade
    } else {
        Offer::UpToDate
    }
}

/// `POST /api/v1/channels/{name}/check` with `{"version": "...", "id": "...", "sha256":
/// "..."}`: 200 with the update, 204 when up to date, 202 while the update is being
/// fetched. With `sha256`, the 200 carries `"delta"` when a cached patch turns what the
/// device runs into the update (see [`deltas`]); the full image fields stay. A
/// device running a newer version than it should (the channel was pinned back, or its
/// rollout lowered) gets the older release with `"downgrade": true`, as the channel's
/// `downgrade` policy allows (see [`offer`]).
#[instrument(level = "debug", skip(firmware, client, body))]
pub(super) async fn check(
    State(firmware): State<Firmware>,
    Path(name): Path<String>,
    client: ClientSubject,
    body: Bytes,
) -> Result<Response, Error> {
    let channel = named(&firmware, &name)?;
    let request: CheckRequest =
        serde_json::from_slice(&body).map_err(|e| http::Error::BadRequest(format!("invalid check request: {e}")))?;
    if request.version.trim().is_empty() {
        return Err(http::Error::BadRequest("version must not be empty".into()).into());
    }
    firmware.inner.metrics.checkin(&name, Some(request.version.trim()));
    // The census counts the device by its `id`, else by its client certificate.
    let device = request.id.as_deref().or(client.get());
    let ready = match firmware.serve(&channel, request.id.as_deref()) {
        Ok(ready) => ready,
        Err(Error::Fetching) => {
            firmware.census(channel.name(), device, &[(Seen::Running, request.version.as_str())]);
            return Ok(accepted());
        }
        Err(e) => return Err(e),
    };
    // The version it runs, and the one it is offered (or up to date with).
    let seen = [(Seen::Running, request.version.as_str()), (Seen::Offered, ready.version.as_str())];
    firmware.census(channel.name(), device, &seen);
    let highest = channel.highest_served();
    let info = match offer(&request.version, &ready.version, channel.config.downgrade, highest.as_ref()) {
        Offer::UpToDate => return Ok(StatusCode::NO_CONTENT.into_response()),
        Offer::Update => ready.info_json.clone(),
        Offer::Downgrade => ready.downgrade_json.clone(),
    };
    let Some(sha256) = request.sha256.as_deref() else { return Ok(json_bytes(info)) };
    let running = Running { version: &request.version, sha256 };
    let Some((patch, cached)) = firmware.delta(&channel, &ready, running) else { return Ok(json_bytes(info)) };
    let delta = DeltaInfo {
        url: firmware.delta_url(&channel, patch),
        size: cached.size,
        sha256: &cached.sha256,
        base_sha256: patch.config.base_sha256.to_ascii_lowercase(),
    };
    Ok(json_bytes(with_delta(&info, &delta)))
}

/// The precomputed answer `info` (a JSON object) with `"delta"` added last, the bytes
/// before it unchanged (its signature covers the full image's fields only).
fn with_delta(info: &[u8], delta: &DeltaInfo<'_>) -> Bytes {
    let end = info.iter().rposition(|b| *b == b'}').expect("an answer is a JSON object");
    let mut out = Vec::with_capacity(info.len() + 256);
    out.extend_from_slice(&info[..end]);
    out.extend_from_slice(b",\"delta\":");
    serde_json::to_writer(&mut out, delta).expect("delta serializes");
    out.push(b'}');
    Bytes::from(out)
}

/// `GET /api/v1/channels/{name}/delta?from=BASE&sha256=HEX[&to=TARGET][&id=UNIQUE]`: the
/// patch file from the base version `from` whose image digest is `sha256` to `to` (by
/// default the release this device is offered), with Range and ETag as firmware
/// downloads. 404 when no patch matches, 503 while it is fetched.
#[instrument(level = "debug", skip(firmware, client, method, uri, headers))]
pub(super) async fn delta(
    State(firmware): State<Firmware>,
    Path(name): Path<String>,
    client: ClientSubject,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let channel = named(&firmware, &name)?;
    let query = uri.query().unwrap_or("");
    let required = |key: &str| {
        query::param(query, key).ok_or_else(|| http::Error::BadRequest(format!("query parameter {key:?} is required")))
    };
    let (from, sha256) = (required("from")?, required("sha256")?);
    let running = Running { version: &from, sha256: &sha256 };
    let id = query::param(query, "id");
    let patch = match query::param(query, "to") {
        Some(to) => {
            let to = to.trim_start_matches('v');
            channel
                .patches
                .iter()
                .find(|p| p.target_version() == to && deltas::applies(&p.config, &p.config.target.digest, running))
        }
        None => {
            let offered = channel.pick(id.as_deref())?;
            deltas::matching(&channel.patches, &offered.pinned.digest, running)
        }
    };
    let patch = patch.ok_or_else(|| {
        http::Error::NotFound(format!("channel {name:?} has no delta patch from {from:?} with that image digest"))
    })?;
    let ready = firmware.patch_ready(patch)?;
    firmware.inner.fetcher.cache().touch(&ready.sha256);
    let response = ready.download.respond(&headers)?;
    if super::otaflux::served_a_body(&method, response.status()) {
        let device = id.as_deref().or(client.get());
        firmware.census(channel.name(), device, &[(Seen::Downloaded, patch.target_version())]);
    }
    Ok(response)
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
pub(super) async fn public_key(State(firmware): State<Firmware>) -> Response {
    match &firmware.snapshot().signer {
        Some(signer) => {
            ([(header::CONTENT_TYPE, "application/x-pem-file")], signer.public_pem().to_owned()).into_response()
        }
        None => http::Error::NotFound("no signing key configured".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn upgrades_and_up_to_date() {
        let up = |running, offered| offer(running, offered, Downgrade::PinnedBack, None);
        assert_eq!(up("1.2.0", "1.2.0"), Offer::UpToDate);
        assert_eq!(up("v1.2.0", "1.2.0"), Offer::UpToDate);
        assert_eq!(up("1.3.0", "1.2.0"), Offer::UpToDate, "nothing served above 1.2.0: a dev build");
        assert_eq!(up("1.1.9", "1.2.0"), Offer::Update);
        assert_eq!(up("1.2.0-rc.1", "1.2.0"), Offer::Update);
        assert_eq!(up("build-7", "build-7"), Offer::UpToDate);
        assert_eq!(up("build-6", "build-7"), Offer::Update);
    }

    #[test]
    fn a_pinned_back_channel_offers_the_downgrade_to_what_it_served() {
        let highest = v("1.1.0");
        let pinned_back = |running| offer(running, "1.0.0", Downgrade::PinnedBack, Some(&highest));
        assert_eq!(pinned_back("1.1.0"), Offer::Downgrade);
        assert_eq!(pinned_back("v1.0.5"), Offer::Downgrade);
        assert_eq!(pinned_back("1.0.0"), Offer::UpToDate);
        assert_eq!(pinned_back("1.2.0"), Offer::UpToDate, "a development build newer than anything served");
        assert_eq!(pinned_back("1.1.1-dev"), Offer::UpToDate);
        assert_eq!(pinned_back("0.9.0"), Offer::Update);
    }

    #[test]
    fn a_delta_is_added_last_and_the_answer_before_it_is_unchanged() {
        let info = br#"{"channel":"esp32","version":"1.1.0"}"#;
        let delta = DeltaInfo { url: "/d".into(), size: 7, sha256: "ab", base_sha256: "cd".into() };
        let out = with_delta(info, &delta);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"channel":"esp32","version":"1.1.0","delta":{"url":"/d","size":7,"sha256":"ab","baseSha256":"cd"}}"#
        );
    }

    #[test]
    fn the_policy_decides_other_downgrades() {
        let highest = v("1.1.0");
        assert_eq!(offer("1.1.0", "1.0.0", Downgrade::Never, Some(&highest)), Offer::UpToDate);
        assert_eq!(offer("9.0.0", "1.0.0", Downgrade::Always, Some(&highest)), Offer::Downgrade);
        assert_eq!(offer("9.0.0", "1.0.0", Downgrade::Always, None), Offer::Downgrade);
        assert_eq!(offer("1.0.0", "1.0.0", Downgrade::Always, None), Offer::UpToDate);
    }
}
