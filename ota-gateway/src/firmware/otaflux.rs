//! The OtaFlux-compatible device API, byte for byte: `GET /version?device=ID` answers
//! `VERSION\nCRC32\nSIZE` (text/plain, CRC32 IEEE in decimal, no trailing newline),
//! `GET /firmware?device=ID` the binary. `&id=UNIQUE` places the device in the
//! channel's staged rollout.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use tracing::instrument;

use super::model::Ready;
use super::{Channel, Error, Firmware};
use crate::http::query;

/// The channel serving `?device=` and what it serves the device with `?id=`.
fn target(firmware: &Firmware, uri: &Uri) -> Result<(Arc<Channel>, Arc<Ready>), Error> {
    let query = uri.query().unwrap_or("");
    let device = query::param(query, "device").ok_or(Error::MissingDevice)?;
    let snapshot = firmware.snapshot();
    let channel = snapshot.device(&device).ok_or_else(|| Error::NoFirmware(device.into_owned()))?.clone();
    let ready = firmware.serve(&channel, query::param(query, "id").as_deref())?;
    Ok((channel, ready))
}

/// `GET /version?device=ID[&id=UNIQUE]`: `VERSION\nCRC32\nSIZE`.
#[instrument(level = "debug", skip_all, fields(query = uri.query()))]
pub(super) async fn version(State(firmware): State<Firmware>, uri: Uri) -> Result<Response, Error> {
    let (channel, ready) = target(&firmware, &uri)?;
    channel.otaflux_checkins.inc();
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], ready.version_body.clone()).into_response())
}

/// `GET /firmware?device=ID[&id=UNIQUE]`: the binary.
#[instrument(level = "debug", skip_all, fields(query = uri.query()))]
pub(super) async fn firmware(
    State(firmware): State<Firmware>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (_, ready) = target(&firmware, &uri)?;
    firmware.touch(&ready);
    Ok(ready.download.respond(&headers)?)
}
