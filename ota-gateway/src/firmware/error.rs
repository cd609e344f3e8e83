//! What the firmware surface answers other than success. The OtaFlux device API's
//! errors are plain text, byte for byte what OtaFlux sends (devices parse them); the
//! rest become the gateway's generic JSON error ([`crate::http::Error`]), which the
//! OtaFlux routes turn into plain text too (`otaflux::plain_text`).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::RETRY_AFTER;
use crate::http;

/// An error of a firmware handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// OtaFlux: `/version` or `/firmware` without `?device=`.
    #[error("Missing required query parameter: 'device'")]
    MissingDevice,
    /// OtaFlux: no channel serves this device id.
    #[error("No firmware for device '{0}'")]
    NoFirmware(String),
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The channel has nothing resolved yet (standalone mode before the first tag list).
    #[error("channel {0:?} has no resolved version yet")]
    NotResolved(String),
    /// The payload is being fetched.
    #[error("the firmware is being fetched; retry later")]
    Fetching,
    #[error(transparent)]
    Http(#[from] http::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let generic = match self {
            Error::MissingDevice => return plain(StatusCode::BAD_REQUEST, self.to_string()),
            Error::NoFirmware(_) => return plain(StatusCode::NOT_FOUND, self.to_string()),
            Error::UnknownChannel(_) => http::Error::NotFound(self.to_string()),
            Error::NotResolved(_) | Error::Fetching => {
                http::Error::Unavailable { message: self.to_string(), retry_after: RETRY_AFTER }
            }
            Error::Http(e) => e,
        };
        generic.into_response()
    }
}

/// The content type of OtaFlux's answers other than `/version`'s success.
pub(super) const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// An OtaFlux error answer.
fn plain(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, PLAIN_TEXT)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        String::from_utf8(axum::body::to_bytes(r.into_body(), 1024).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn otaflux_errors_are_its_exact_plain_text() {
        let r = Error::MissingDevice.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(body(r).await, "Missing required query parameter: 'device'");
        let r = Error::NoFirmware("nope".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(body(r).await, "No firmware for device 'nope'");
    }

    #[tokio::test]
    async fn the_rest_is_json() {
        let r = Error::Fetching.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(r).await, r#"{"error":"the firmware is being fetched; retry later"}"#);
        let r = Error::NotResolved("esp32".into()).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(Error::UnknownChannel("x".into()).into_response().status(), StatusCode::NOT_FOUND);
    }
}
