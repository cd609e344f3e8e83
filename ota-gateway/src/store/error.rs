//! The store's errors: each a status code and a JSON `{"error": "..."}` body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything a store request can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A path that is not a plain relative path inside the store.
    #[error("bad path {0}")]
    BadPath(String),
    /// Malformed request (query, header, body length).
    #[error("{0}")]
    BadRequest(String),
    /// No key where the store wants one.
    #[error("this store needs a key (`key` header or `Authorization: Bearer`)")]
    Unauthorized,
    /// A key that is not the store's.
    #[error("wrong key")]
    Forbidden,
    /// The file exists and the upload did not say `force=true` (filuxe's 403).
    #[error("{0} exists; upload with force=true to replace it")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A chunk that does not fit the upload under way.
    #[error("{0}")]
    Conflict(String),
    /// A file larger than the store's `maxUploadBytes`.
    #[error("{size} bytes is more than this store accepts ({limit})")]
    TooLarge { size: u64, limit: u64 },
    /// The assembled file does not match the size or sha256 the client announced.
    #[error("{0}")]
    Mismatch(String),
    /// A Range header that selects no byte of the file.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// The store volume is full.
    #[error("the store volume is full")]
    Full,
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            StoreError::BadPath(_) | StoreError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StoreError::Unauthorized => StatusCode::UNAUTHORIZED,
            StoreError::Forbidden | StoreError::Exists(_) => StatusCode::FORBIDDEN,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::Mismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            StoreError::Full => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An I/O error, with a full disk told apart.
    pub fn io(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full
        } else {
            StoreError::Io(e)
        }
    }
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "store request failed");
        }
        let mut response = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        match self {
            StoreError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StoreError::RangeNotSatisfiable { size } => {
                let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii header");
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            _ => {}
        }
        response
    }
}
