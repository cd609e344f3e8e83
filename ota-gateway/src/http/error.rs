//! The generic error answer of every surface: a status code, a JSON body
//! `{"error": "..."}`, and the headers the status calls for (`Retry-After`,
//! `Content-Range`, `WWW-Authenticate`). Surfaces with a wire format of their own
//! (the OtaFlux device API's plain text) render those answers themselves and convert
//! everything else into this type.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An answer other than success, shared by the surfaces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: malformed input from a client.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the thing named does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// 401: a write without credentials (`WWW-Authenticate: Bearer`).
    #[error("authorization required")]
    Unauthorized,
    /// 403: credentials that do not grant this.
    #[error("{0}")]
    Forbidden(String),
    /// 413: a body beyond the configured limit.
    #[error("body larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: u64 },
    /// 503 with `Retry-After`: the answer exists soon (a payload being fetched, a
    /// version not resolved yet).
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration },
    /// 502: the upstream (registry, mirror) could not deliver.
    #[error("upstream: {0}")]
    Upstream(String),
    /// 416 with `Content-Range: bytes */SIZE`: a Range that selects no byte.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
}

impl Error {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Error::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            Error::RangeNotSatisfiable { size } => {
                let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii header");
                headers.insert(header::CONTENT_RANGE, value);
            }
            Error::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
    fn unavailable_carries_retry_after() {
        let e = Error::Unavailable { message: "soon".into(), retry_after: Duration::from_secs(3) };
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let sub_second = Error::Unavailable { message: "soon".into(), retry_after: Duration::from_millis(10) };
        assert_eq!(sub_second.into_response().headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn unsatisfiable_range_names_the_size() {
        let r = Error::RangeNotSatisfiable { size: 10 }.into_response();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */10");
    }

    #[test]
    fn statuses() {
        assert_eq!(Error::Unauthorized.into_response().headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(Error::Forbidden("no".into()).status(), StatusCode::FORBIDDEN);
        assert_eq!(Error::PayloadTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Error::NotFound("x".into()).status(), StatusCode::NOT_FOUND);
        assert_eq!(Error::Upstream("x".into()).status(), StatusCode::BAD_GATEWAY);
    }
}
