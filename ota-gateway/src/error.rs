//! The one error type of the HTTP surface. Each variant knows its status code and
//! renders its own body: plain text for the OtaFlux device API (devices parse it
//! verbatim), JSON `{"error": "..."}` everywhere else.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// OtaFlux: `/version` or `/firmware` without `?device=`.
    #[error("Missing required query parameter: 'device'")]
    MissingDevice,
    /// OtaFlux: no channel serves this device id.
    #[error("Unknown device: '{0}'")]
    UnknownDevice(String),
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// Malformed input from a client (JSON API).
    #[error("{0}")]
    BadRequest(String),
    /// The payload is being fetched; try again after the given delay.
    #[error("the firmware is being fetched; retry later")]
    Fetching { retry_after: Duration },
    /// The registry could not deliver a verified payload.
    #[error("upstream: {0}")]
    Upstream(String),
    /// A Range header that selects no byte of a payload of this size.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// The channel has nothing resolved yet (standalone mode before the first tag list).
    #[error("channel {0:?} has no resolved version yet")]
    NotResolved(String),
}

impl Error {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MissingDevice | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::UnknownDevice(_) | Error::UnknownChannel(_) => StatusCode::NOT_FOUND,
            Error::Fetching { .. } | Error::NotResolved(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    /// Whether the body is plain text (the OtaFlux device API) rather than JSON.
    fn is_plain(&self) -> bool {
        matches!(self, Error::MissingDevice | Error::UnknownDevice(_))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = if self.is_plain() {
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
        } else {
            let body = serde_json::json!({ "error": self.to_string() });
            (status, axum::Json(body)).into_response()
        };
        let headers = response.headers_mut();
        match self {
            Error::Fetching { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            Error::NotResolved(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::RangeNotSatisfiable { size } => {
                let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii header");
                headers.insert(header::CONTENT_RANGE, value);
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otaflux_errors_are_plain_text() {
        let r = Error::MissingDevice.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    }

    #[test]
    fn fetching_carries_retry_after() {
        let r = Error::Fetching { retry_after: Duration::from_secs(3) }.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn unsatisfiable_range_names_the_size() {
        let r = Error::RangeNotSatisfiable { size: 10 }.into_response();
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */10");
    }
}
