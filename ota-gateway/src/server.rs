//! The HTTP/1.1 connection loop of the gateway's listeners, in place of `axum::serve`,
//! whose hyper builder has no timer (so no header read timeout: an idle or slow-header
//! connection is held forever) and reads request heads up to hyper's ~400 KiB buffer.
//! Here every connection must send a complete request head within
//! [`HEADER_READ_TIMEOUT`] of the connection opening or of its previous response (an
//! idle keep-alive connection is closed then too), and a head larger than
//! [`MAX_HEAD_BYTES`] is answered 431. Any `axum::serve::Listener` whose connections
//! are a [`Connection`] works, so the device listener keeps its `sendfile` writes.
//!
//! Every request carries a [`Transport`] extension saying whether its connection was
//! TLS; write handlers that need TLS take it as an extractor. A request on a connection
//! whose client presented a verified certificate (mutual TLS) carries its subject, a
//! [`ClientSubject`]. A client that half-closes
//! its connection after its request still gets the answer.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

/// How long a connection may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read (request line and headers); larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a request reached the gateway. [`serve`] puts it in every request's extensions;
/// as an extractor it is never missing (a request that did not come through [`serve`],
/// as in a router test, counts as plain).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: the device and admin listeners.
    #[default]
    Plain,
    /// The TLS listener.
    Tls,
}

impl Transport {
    /// Whether the connection was TLS.
    pub fn is_tls(self) -> bool {
        self == Transport::Tls
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Transport {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Transport>().copied().unwrap_or_default())
    }
}

/// The subject (RFC 4514) of the verified client certificate of a request's
/// connection, when its client presented one (mutual TLS); the census counts it as the
/// device when the request names no `id`. As an extractor it is never missing (empty
/// without a certificate). Its `Debug` never shows the subject: it identifies a device
/// and must not reach a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientSubject(Option<std::sync::Arc<str>>);

impl ClientSubject {
    /// A subject; an empty one (a certificate naming its device only in an extension)
    /// is no subject.
    pub fn new(subject: String) -> Self {
        Self((!subject.is_empty()).then(|| subject.into()))
    }

    /// The subject, when the client presented a verified certificate.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl std::fmt::Debug for ClientSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ClientSubject(<redacted>)" } else { "ClientSubject(None)" })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientSubject {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<ClientSubject>().cloned().unwrap_or_default())
    }
}

/// A connection type a listener hands out, and which [`Transport`] it is.
pub trait Connection {
    const TRANSPORT: Transport;

    /// The subject of the client's verified certificate, read once per connection.
    fn client_subject(&self) -> ClientSubject {
        ClientSubject::default()
    }
}

impl Connection for tokio::net::TcpStream {
    const TRANSPORT: Transport = Transport::Plain;
}

impl Connection for crate::sendfile::DeviceStream {
    const TRANSPORT: Transport = Transport::Plain;
}

impl Connection for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    const TRANSPORT: Transport = Transport::Tls;

    /// rustls hands out the peer's chain only once the verifier accepted it, leaf
    /// first. A subject that does not parse counts as none.
    fn client_subject(&self) -> ClientSubject {
        let leaf = self.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        leaf.and_then(|cert| crate::tls::subject(cert).ok()).map(ClientSubject::new).unwrap_or_default()
    }
}

/// Serves `app` on every connection `listener` accepts until `shutdown` resolves, then
/// lets requests in flight finish (idle connections are closed) and returns. Every
/// request carries the listener's [`Transport`].
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Io: Connection,
{
    let app = app.layer(axum::Extension(<L::Io as Connection>::TRANSPORT));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        // A client may shut down its write side once its request is sent and wait for
        // the answer (netcat does, and so do small TCP stacks); without this hyper
        // closes the connection at that end of input, unanswered, whenever the answer
        // was not ready at once.
        .half_close(true);
    // Told to shut down: the sender sends; every connection task holds a `done` receiver.
    let (stop, stopping) = watch::channel(());
    let (all_done, done) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // The client's certificate subject, when it has one, on each of its requests.
        let subject = io.client_subject();
        let service = tower::util::MapRequest::new(app.clone(), move |mut request: axum::http::Request<_>| {
            if subject.get().is_some() {
                request.extensions_mut().insert(subject.clone());
            }
            request
        });
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).with_upgrades();
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn which(t: Transport) -> String {
        format!("{t:?}")
    }

    #[tokio::test]
    async fn requests_carry_their_listeners_transport() {
        let app = Router::new().route("/", get(which));
        // Through no listener at all (a router test): plain.
        let direct =
            tower::ServiceExt::oneshot(app.clone(), axum::http::Request::new(axum::body::Body::empty())).await.unwrap();
        let body = axum::body::to_bytes(direct.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"Plain");
        // Through `serve` on a plain listener: the extension says plain too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));
        let answer = reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap();
        assert_eq!(answer, "Plain");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// A client that shuts down its write side after the request (netcat, small TCP
    /// stacks) is answered, even when the answer takes a while: hyper's default closes
    /// such a connection at the end of input, which made `fuzz_http` flaky.
    #[tokio::test]
    async fn a_half_closed_connection_is_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            "late"
        };
        let app = Router::new().route("/slow", get(slow));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "answer: {answer:?}");
        assert!(answer.ends_with("late"), "answer: {answer:?}");
        let _ = stop.send(());
        server.await.unwrap();
    }
}
