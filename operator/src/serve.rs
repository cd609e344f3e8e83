//! The connection loop of the operator's listeners (admin, webhook receiver), in place
//! of `axum::serve`, whose hyper builder has no timer and so no header read timeout: an
//! idle or slow-header connection would be held forever, and enough of them exhaust the
//! pod's descriptors. Here a connection must send a complete request head within
//! [`HEADER_READ_TIMEOUT`] of opening or of its previous answer, a head over
//! [`MAX_HEAD_BYTES`] gets 431, and a client that half-closes after its request is still
//! answered. The gateway's listeners (`ota-gateway/src/server.rs`) use the same limits.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a connection may take to send a request head.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read; larger gets 431.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on every connection `listener` accepts, until the process ends.
pub(crate) async fn serve(listener: TcpListener, app: Router) {
    serve_with(listener, app, HEADER_READ_TIMEOUT).await
}

async fn serve_with(listener: TcpListener, app: Router, header_read_timeout: Duration) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .half_close(true);
    loop {
        let io = match listener.accept().await {
            Ok((io, _)) => io,
            Err(e) => {
                // Out of descriptors, typically: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn started(timeout: Duration) -> std::net::SocketAddr {
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, app, timeout));
        addr
    }

    /// An idle connection (no request head) is closed after the timeout, so idle
    /// connections cannot pile up; `axum::serve` held it open forever.
    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_header_timeout() {
        let addr = started(Duration::from_millis(300)).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the idle connection was still open after 5 s");
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a connection that never finished its head was still open after 5 s");
    }

    /// A request followed by a half-close is answered.
    #[tokio::test]
    async fn requests_are_answered_and_half_closed_ones_too() {
        let addr = started(HEADER_READ_TIMEOUT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer:?}");
    }
}
