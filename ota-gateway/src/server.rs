//! The HTTP/1.1 connection loop of the gateway's listeners, in place of `axum::serve`,
//! whose hyper builder has no timer (so no header read timeout: an idle or slow-header
//! connection is held forever) and reads request heads up to hyper's ~400 KiB buffer.
//! Here every connection must send a complete request head within
//! [`HEADER_READ_TIMEOUT`] of the connection opening or of its previous response (an
//! idle keep-alive connection is closed then too), and a head larger than
//! [`MAX_HEAD_BYTES`] is answered 431. Any `axum::serve::Listener` works, so the
//! device listener keeps its `sendfile` writes.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

/// How long a connection may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read (request line and headers); larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on every connection `listener` accepts until `shutdown` resolves, then
/// lets requests in flight finish (idle connections are closed) and returns.
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
{
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_header_size(MAX_HEAD_BYTES);
    // Told to shut down: the sender sends; every connection task holds a `done` receiver.
    let (stop, stopping) = watch::channel(());
    let (all_done, done) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone())).with_upgrades();
        let (mut stopping, done) = (stopping.clone(), done.clone());
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended");
                    }
                }
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(done);
        });
    }
    drop(listener);
    drop(done);
    let _ = stop.send(());
    all_done.closed().await;
}
