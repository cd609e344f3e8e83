//! A TCP relay for faults below HTTP: it passes bytes through untouched (so TLS between
//! the operator and the API server stays end to end), counts the connections clients
//! open, and can cut every live connection at once (watches end as when the API server
//! or a load balancer drops them) or refuse new ones (the server unreachable).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A running relay; it stops accepting when dropped.
pub struct TcpRelay {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    cuts: watch::Sender<u64>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    /// Listens on an ephemeral loopback port and relays to `upstream` (`host:port`).
    /// Needs a tokio runtime.
    pub async fn start(upstream: &str) -> std::io::Result<TcpRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (cuts, _) = watch::channel(0u64);
        let (task_shared, task_cuts, upstream) = (shared.clone(), cuts.clone(), upstream.to_owned());
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if task_shared.down.load(Ordering::SeqCst) {
                    task_shared.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_zero_linger();
                    continue;
                }
                task_shared.accepted.fetch_add(1, Ordering::SeqCst);
                let (mut cut, upstream) = (task_cuts.subscribe(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {
                            let _ = client.set_zero_linger();
                        }
                    }
                });
            }
        });
        Ok(TcpRelay { addr, shared, cuts, acceptor })
    }

    /// `host:port` clients connect to.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Resets every connection open now; new ones are accepted as before.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// While down, new connections are reset at once (and counted as refused).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Connections relayed so far (each one a connection the client opened).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections reset while down.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn relays_counts_cuts_and_refuses() {
        let relay = TcpRelay::start(&echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(relay.accepted(), 1);

        relay.cut();
        let mut rest = Vec::new();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut rest)).await.unwrap();
        assert!(end.is_err() || rest.is_empty(), "the cut connection ends");

        relay.set_down(true);
        let mut d = TcpStream::connect(relay.addr()).await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), d.read(&mut buf)).await.unwrap();
        assert!(n.is_err() || n.unwrap() == 0, "refused while down");
        assert_eq!(relay.refused(), 1);

        relay.set_down(false);
        let mut e = TcpStream::connect(relay.addr()).await.unwrap();
        e.write_all(b"pong").await.unwrap();
        e.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(relay.accepted(), 2);
    }
}
