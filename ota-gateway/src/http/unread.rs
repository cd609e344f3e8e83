//! Refusals that reach the client.
//!
//! A write refused before its body is read (no TLS, a wrong key, a file that exists
//! without `force`) is answered at once, and hyper then closes the connection with the
//! body still arriving. The kernel answers those late bytes with a reset, which can
//! reach the client before it has read the answer: the client sees "connection reset"
//! instead of the 403 and its reason. [`read_unread_body`] wraps a write route so
//! that, after an unsuccessful answer, what is left of a small body (up to
//! [`DRAIN_LIMIT`] bytes, for up to [`DRAIN_TIME`]) is read and dropped before the
//! answer goes out. A larger body is not read: the connection is closed as before.
//! A client that asked `Expect: 100-continue` and whose body was never asked for has
//! sent nothing, so nothing is read.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// At most this much of a refused body is read.
pub const DRAIN_LIMIT: u64 = 8 << 20;

/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The request body, shared between the handler and the middleware, which reads what
/// the handler left.
#[derive(Clone)]
struct Shared {
    body: Arc<Mutex<Body>>,
    polled: Arc<AtomicBool>,
}

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.polled.store(true, Ordering::Relaxed);
        let mut body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).size_hint()
    }
}

/// Middleware for write routes: see the module's text.
pub async fn read_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let expects_continue =
        parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let shared = Shared { body: Arc::new(Mutex::new(body)), polled: Arc::default() };
    let response = next.run(Request::from_parts(parts, Body::new(shared.clone()))).await;
    if response.status().is_success() || (expects_continue && !shared.polled.load(Ordering::Relaxed)) {
        return response;
    }
    if declared.is_none_or(|n| n <= DRAIN_LIMIT) {
        let _ = tokio::time::timeout(DRAIN_TIME, drain(shared)).await;
    }
    response
}

/// Reads and drops up to [`DRAIN_LIMIT`] bytes.
async fn drain(mut body: Shared) {
    let mut read = 0u64;
    while read <= DRAIN_LIMIT {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn refuse() -> StatusCode {
        StatusCode::FORBIDDEN
    }

    /// A 6 MiB body sent in full to a route that refuses without reading it: the
    /// client reads the whole 403 answer every time (without the middleware, the
    /// connection is reset while the body is still being sent).
    #[tokio::test]
    async fn a_refused_body_is_read_so_the_answer_arrives() {
        let app = Router::new().route("/upload", post(refuse)).layer(axum::middleware::from_fn(read_unread_body));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let body = vec![7u8; 6 << 20];
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&answer));
        }
    }

    /// A body larger than the limit is not read: the answer still goes out at once.
    #[tokio::test]
    async fn a_large_refused_body_is_not_read() {
        let app = Router::new().route("/upload", post(refuse)).layer(axum::middleware::from_fn(read_unread_body));
        let response = tower::ServiceExt::oneshot(
            app,
            Request::post("/upload")
                .header(header::CONTENT_LENGTH, (DRAIN_LIMIT + 1).to_string())
                .body(Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>()))
                .unwrap(),
        );
        let response = tokio::time::timeout(Duration::from_secs(1), response).await.expect("answered at once");
        assert_eq!(response.unwrap().status(), StatusCode::FORBIDDEN);
    }
}
