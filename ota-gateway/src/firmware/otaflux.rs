//! The OtaFlux-compatible device API, byte for byte: `GET /version?device=ID` answers
//! `VERSION\nCRC32\nSIZE` (text/plain, CRC32 IEEE in decimal, no trailing newline),
//! `GET /firmware?device=ID` the binary. `&id=UNIQUE` places the device in the
//! channel's staged rollout and counts it in the census (offered the version answered,
//! downloaded the binary served); `&current=VERSION`, the version the device runs,
//! counts it running that version. Without `id`, a device that presented a verified
//! client certificate (mutual TLS) is counted by its certificate's subject (the rollout
//! does not use it). The answers do not depend on `current`, and a device sending
//! neither is served as before, counted only as an anonymous poll.
//!
//! Delta patches are an opt-in of `/firmware` alone: a device that sends both
//! `current=VERSION` and `sha256=HEX` (its running image's `esp_partition_get_sha256`)
//! gets the `esp_delta_ota` patch from that image to the release `/version` names, with
//! the header `X-Updraft-Delta: <base version>`, when a cached patch matches exactly
//! (see [`super::deltas`]); otherwise the full image, as without them. `current=` alone
//! changes nothing (OtaFlux devices send it for the census), nor does `/version`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::instrument;

use super::deltas::Running;
use super::model::Ready;
use super::{Channel, Error, Firmware, Seen};
use crate::http::query;
use crate::server::ClientSubject;

/// The channel serving `?device=` and what it serves the device with `?id=`. A channel
/// with nothing resolved yet (standalone, before its first release verifies) answers
/// as OtaFlux does for a device it has no firmware for.
fn target(firmware: &Firmware, uri: &Uri) -> Result<(Arc<Channel>, Arc<Ready>), Error> {
    let query = uri.query().unwrap_or("");
    let device = query::param(query, "device").ok_or(Error::MissingDevice)?;
    let snapshot = firmware.snapshot();
    let no_firmware = || Error::NoFirmware(device.clone().into_owned());
    let channel = snapshot.device(&device).ok_or_else(no_firmware)?.clone();
    let ready = match firmware.serve(&channel, query::param(query, "id").as_deref()) {
        Err(Error::NotResolved(_)) => return Err(no_firmware()),
        result => result?,
    };
    Ok((channel, ready))
}

/// `GET /version?device=ID[&id=UNIQUE][&current=VERSION]`: `VERSION\nCRC32\nSIZE`.
/// The query is logged (at debug level) without the id; the client subject never.
#[instrument(level = "debug", skip_all, fields(query = %query::redacted(uri.query().unwrap_or(""))))]
pub(super) async fn version(State(firmware): State<Firmware>, client: ClientSubject, uri: Uri) -> Response {
    let answer = target(&firmware, &uri).map(|(channel, ready)| {
        channel.otaflux_checkins.inc();
        let query = uri.query().unwrap_or("");
        let (id, current) = (query::param(query, "id"), query::param(query, "current"));
        let id = id.as_deref().or(client.get());
        let offered = (Seen::Offered, ready.version.as_str());
        match current.as_deref() {
            Some(current) => firmware.census(channel.name(), id, &[offered, (Seen::Running, current)]),
            None => firmware.census(channel.name(), id, &[offered]),
        }
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], ready.version_body.clone()).into_response()
    });
    answer.unwrap_or_else(plain_text)
}

/// `GET /firmware?device=ID[&id=UNIQUE][&current=VERSION&sha256=HEX]`: the binary, or
/// the delta patch from what the device runs when it asks for one with both `current`
/// and `sha256` and one matches (marked `X-Updraft-Delta`). A GET answered with the
/// body (200, or 206 for a range) counts the device as having downloaded the version;
/// HEAD and 304 do not (no binary was served).
#[instrument(level = "debug", skip_all, fields(query = %query::redacted(uri.query().unwrap_or(""))))]
pub(super) async fn firmware(
    State(firmware): State<Firmware>,
    client: ClientSubject,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let answer = target(&firmware, &uri).and_then(|(channel, ready)| {
        let query = uri.query().unwrap_or("");
        let (current, sha256) = (query::param(query, "current"), query::param(query, "sha256"));
        let delta = match (current.as_deref(), sha256.as_deref()) {
            (Some(version), Some(sha256)) => firmware
                .delta(&channel, &ready, Running { version, sha256 })
                .map(|(patch, cached)| (cached, patch.base_version().to_owned())),
            _ => None,
        };
        let response = match delta {
            Some((patch, base)) => {
                firmware.inner.fetcher.cache().touch(&patch.sha256);
                let mut response = patch.download.respond(&headers)?;
                let base = HeaderValue::from_str(&base).map_err(|_| {
                    crate::http::Error::Upstream(format!("base version {base:?} is not a header value"))
                })?;
                response.headers_mut().insert(DELTA_HEADER, base);
                response
            }
            None => {
                firmware.touch(&ready);
                ready.download.respond(&headers)?
            }
        };
        if served_a_body(&method, response.status()) {
            let id = query::param(uri.query().unwrap_or(""), "id");
            let id = id.as_deref().or(client.get());
            firmware.census(channel.name(), id, &[(Seen::Downloaded, ready.version.as_str())]);
        }
        Ok(response)
    });
    answer.unwrap_or_else(plain_text)
}

/// Marks a `/firmware` answer that is a delta patch; its value is the base version.
pub(super) const DELTA_HEADER: &str = "x-updraft-delta";

/// Whether a download answer carried (part of) the binary: what counts as downloaded.
pub(super) fn served_a_body(method: &Method, status: StatusCode) -> bool {
    method == Method::GET && matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT)
}

/// An error of the OtaFlux routes, always in text as OtaFlux answers: its own 400 and
/// 404 byte for byte; the gateway's other answers (503 with `Retry-After` while the
/// payload is fetched, 502 when the registry fails, 416 for a bad Range) keep their
/// status and headers, their message as the plain-text body instead of JSON.
fn plain_text(error: Error) -> Response {
    let message = error.to_string();
    let mut response = error.into_response();
    let headers = response.headers_mut();
    if headers.get(header::CONTENT_TYPE) != Some(&HeaderValue::from_static(super::error::PLAIN_TEXT)) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(super::error::PLAIN_TEXT));
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = axum::body::Body::from(message);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    async fn text(r: Response) -> String {
        String::from_utf8(axum::body::to_bytes(r.into_body(), 1024).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_error_is_plain_text() {
        let r = plain_text(Error::NoFirmware("esp32".into()));
        assert_eq!(
            (r.status(), r.headers()[header::CONTENT_TYPE].clone()),
            (StatusCode::NOT_FOUND, "text/plain; charset=utf-8".parse().unwrap())
        );
        assert_eq!(text(r).await, "No firmware for device 'esp32'");
        let r = plain_text(Error::Fetching);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(text(r).await, "the firmware is being fetched; retry later");
        let r = plain_text(crate::http::Error::Upstream("registry down".into()).into());
        assert_eq!(
            (r.status(), r.headers()[header::CONTENT_TYPE].to_str().unwrap()),
            (StatusCode::BAD_GATEWAY, "text/plain; charset=utf-8")
        );
        assert_eq!(text(r).await, "upstream: registry down");
    }
}
