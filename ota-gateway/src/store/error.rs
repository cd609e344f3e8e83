//! The store's errors. Those every surface shares (400, 401, 403, 404, 413, 416) are
//! answered through the gateway's generic [`crate::http::Error`]; the store's own
//! (409 a chunk that does not fit, 422 a checksum that does not match, 503 an upload
//! whose chunks all arrived but whose file could not be committed, 507 a full volume,
//! 500) in the same JSON shape, `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::Error as HttpError;

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
    /// A write (upload, delete) that did not arrive over TLS, on a store that does not
    /// allow plain writes.
    #[error(
        "writes to this store need TLS (the store listens with HTTPS when the gateway has a `tls` section); \
         set allowPlainWrites: true on the store to accept them over plain HTTP"
    )]
    PlainWrite,
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
    /// The assembled file does not match the SHA-256 the client announced.
    #[error("{0}")]
    Mismatch(String),
    /// Every chunk of an upload arrived but its file could not be committed (another
    /// upload of the same path restarted it, or the replica that took it over failed):
    /// nothing is stored. A 503, which clients (and the mirror worker) retry.
    #[error("{0}")]
    NotCommitted(String),
    /// The store volume is full.
    #[error("the store volume is full")]
    Full,
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An answer of the shared download path (a Range that selects nothing).
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl StoreError {
    /// An I/O error, with a full disk told apart.
    pub fn io(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full
        } else {
            StoreError::Io(e)
        }
    }

    /// The shared error this one is answered as, or the store's own status.
    fn answer(self) -> Result<HttpError, (StatusCode, String)> {
        let text = self.to_string();
        match self {
            StoreError::BadPath(_) | StoreError::BadRequest(_) => Ok(HttpError::BadRequest(text)),
            StoreError::Unauthorized => Ok(HttpError::Unauthorized),
            StoreError::Forbidden | StoreError::Exists(_) | StoreError::PlainWrite => Ok(HttpError::Forbidden(text)),
            StoreError::NotFound(_) => Ok(HttpError::NotFound(text)),
            StoreError::TooLarge { limit, .. } => Ok(HttpError::PayloadTooLarge { limit }),
            StoreError::Http(e) => Ok(e),
            StoreError::Conflict(_) => Err((StatusCode::CONFLICT, text)),
            StoreError::Mismatch(_) => Err((StatusCode::UNPROCESSABLE_ENTITY, text)),
            StoreError::Full => Err((StatusCode::INSUFFICIENT_STORAGE, text)),
            StoreError::NotCommitted(_) => Err((StatusCode::SERVICE_UNAVAILABLE, text)),
            // A path the kernel finds too long (the store's root plus a path under
            // PATH_MAX can still be) is the client's.
            StoreError::Io(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                Ok(HttpError::BadRequest(format!("bad path: {e}")))
            }
            StoreError::Io(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, text)),
        }
    }
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        match self.answer() {
            Ok(shared) => shared.into_response(),
            Err((status, text)) => {
                if status.is_server_error() {
                    tracing::warn!(error = text, "store request failed");
                }
                (status, axum::Json(serde_json::json!({ "error": text }))).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |e: StoreError| e.into_response().status().as_u16();
        assert_eq!(status(StoreError::BadPath("x".into())), 400);
        assert_eq!(status(StoreError::Unauthorized), 401);
        assert_eq!(status(StoreError::Exists("x".into())), 403);
        assert_eq!(status(StoreError::PlainWrite), 403);
        assert!(StoreError::PlainWrite.to_string().contains("allowPlainWrites"));
        assert_eq!(status(StoreError::TooLarge { size: 2, limit: 1 }), 413);
        assert_eq!(status(StoreError::Conflict("x".into())), 409);
        assert_eq!(status(StoreError::Mismatch("x".into())), 422);
        assert_eq!(status(StoreError::Full), 507);
        assert_eq!(status(StoreError::NotCommitted("x".into())), 503);
        assert_eq!(status(StoreError::io(std::io::Error::from_raw_os_error(28))), 507);
        assert_eq!(status(StoreError::io(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))), 400);
        assert_eq!(status(HttpError::RangeNotSatisfiable { size: 3 }.into()), 416);
    }
}
