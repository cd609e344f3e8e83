//! A fault-injecting HTTP/1.1 proxy for reliability tests.
//!
//! [`FaultProxy`] sits between a client (the gateway, the operator) and a real server
//! (the registry, the API server). Each request gets a connection of its own upstream
//! (the proxy rewrites the request's `Connection` header to `close`), so a fault can be
//! chosen per request from the request line: [`Rule`]s match a method and a path
//! substring, optionally only the first N times, and apply one [`Fault`] — added
//! latency, a bandwidth limit, a stall after N body bytes, a TCP reset after N body
//! bytes, a truncated body, an answer of the proxy's own (5xx, 429 with `Retry-After`),
//! or a flipped byte that keeps the length. [`FaultProxy::set_down`] refuses every
//! connection, as a server that is not running. Rules change at run time; every request
//! is recorded with its time and the fault it got, so tests can count requests and
//! check backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The largest request or response head the proxy reads before giving up.
const MAX_HEAD: usize = 64 * 1024;
/// How long a stalled response holds its connection when the client never gives up.
const STALL_AT_MOST: Duration = Duration::from_secs(600);

/// What the proxy does to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Waits this long before forwarding the request.
    Latency(Duration),
    /// Sends the response at most this many bytes per second.
    Bandwidth(u64),
    /// Sends the response head and this many body bytes, then nothing, holding the
    /// connection open until the client closes it.
    StallAfter(u64),
    /// Sends the response head and this many body bytes, then resets the connection.
    ResetAfter(u64),
    /// Sends the response head and this many body bytes, then closes cleanly (FIN).
    TruncateAfter(u64),
    /// Inverts the body byte at this offset; the length stays right.
    FlipAt(u64),
    /// Answers with this status itself (never reaching upstream), with a
    /// `Retry-After` header of that many seconds when given.
    Status { code: u16, retry_after: Option<u64> },
    /// Resets the connection as soon as the request head is read.
    Reset,
    /// Answers 401 with `WWW-Authenticate: Basic realm="fault-proxy"`, as a registry
    /// that wants credentials does.
    BasicChallenge,
}

/// Which requests get a fault, and how many times.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    path_contains: String,
    exact: bool,
    fault: Fault,
    remaining: Option<u64>,
}

impl Rule {
    /// Every request whose path (with query) contains `path_contains` gets `fault`.
    pub fn new(path_contains: &str, fault: Fault) -> Rule {
        Rule { method: None, path_contains: path_contains.to_owned(), exact: false, fault, remaining: None }
    }

    /// Only requests whose path is exactly the rule's (e.g. `/v2/`).
    pub fn exact(mut self) -> Rule {
        self.exact = true;
        self
    }

    /// Only requests with this method (`GET`, `HEAD`…).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only the first `n` matching requests; later ones pass untouched.
    pub fn times(mut self, n: u64) -> Rule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining != Some(0)
            && self.method.as_deref().is_none_or(|m| m == method)
            && if self.exact { path == self.path_contains } else { path.contains(&self.path_contains) }
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query as the client sent them.
    pub path: String,
    /// The request head as received (request line and headers).
    pub head: String,
    pub at: Instant,
    /// The fault it got, if any (`Some(Fault::Reset)` too while the proxy is down).
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    down: AtomicBool,
    refused: std::sync::atomic::AtomicU64,
}

/// A running proxy; it stops accepting when dropped (connections under way finish).
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream` (`host:port`).
    /// Needs a tokio runtime.
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (task_shared, task_upstream) = (shared.clone(), upstream.to_owned());
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (shared, upstream) = (task_shared.clone(), task_upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &shared).await;
                });
            }
        });
        Ok(FaultProxy { addr, upstream: upstream.to_owned(), shared, acceptor })
    }

    /// `host:port` clients connect to.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The server behind the proxy.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Replaces the rules; the first matching rule applies.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().expect("rules lock") = rules;
    }

    /// Adds a rule after the existing ones.
    pub fn push_rule(&self, rule: Rule) {
        self.shared.rules.lock().expect("rules lock").push(rule);
    }

    /// Removes every rule: requests pass untouched.
    pub fn clear(&self) {
        self.set_rules(Vec::new());
    }

    /// While down, every new connection is reset before a byte is read.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Connections refused while down.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// Requests so far whose path contains `path_contains`.
    pub fn count(&self, path_contains: &str) -> usize {
        self.shared.seen.lock().expect("seen lock").iter().filter(|s| s.path.contains(path_contains)).count()
    }

    /// Forgets the requests seen so far.
    pub fn reset_seen(&self) {
        self.shared.seen.lock().expect("seen lock").clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// One client connection: one request, forwarded with its fault.
async fn serve(mut client: TcpStream, upstream: &str, shared: &Shared) -> std::io::Result<()> {
    if shared.down.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return reset(client);
    }
    let Some((head, rest)) = read_head(&mut client).await? else { return Ok(()) };
    let (method, path) = request_line(&head);
    let fault = {
        let mut rules = shared.rules.lock().expect("rules lock");
        rules.iter_mut().find(|r| r.matches(&method, &path)).map(|rule| {
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            rule.fault.clone()
        })
    };
    let seen = Seen {
        method,
        path,
        head: String::from_utf8_lossy(&head).into_owned(),
        at: Instant::now(),
        fault: fault.clone(),
    };
    shared.seen.lock().expect("seen lock").push(seen);
    match fault {
        Some(Fault::Reset) => return reset(client),
        Some(Fault::Status { code, retry_after }) => return answer(client, code, retry_after, None).await,
        Some(Fault::BasicChallenge) => {
            return answer(client, 401, None, Some("WWW-Authenticate: Basic realm=\"fault-proxy\"")).await
        }
        Some(Fault::Latency(delay)) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&with_connection_close(&head)).await?;
    server.write_all(&rest).await?;

    let client_gone = Notify::new();
    let outcome = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let request_body = async {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            let _ = server_write.shutdown().await;
            client_gone.notify_one();
            std::future::pending::<()>().await;
        };
        let response = respond(&mut server_read, &mut client_write, fault.as_ref(), &client_gone);
        tokio::select! {
            outcome = response => outcome,
            _ = request_body => unreachable!("the request side never finishes on its own"),
        }
    };
    match outcome? {
        End::Clean => client.shutdown().await,
        End::Reset => reset(client),
    }
}

/// How a response ended.
enum End {
    Clean,
    Reset,
}

/// Copies the response to the client, applying the fault to its body.
async fn respond<R, W>(
    server: &mut R,
    client: &mut W,
    fault: Option<&Fault>,
    client_gone: &Notify,
) -> std::io::Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some((head, mut pending)) = read_head(server).await? else { return Ok(End::Clean) };
    let bytes_per_sec = match fault {
        Some(Fault::Bandwidth(b)) => *b,
        _ => 0,
    };
    write_paced(client, &head, bytes_per_sec).await?;
    let cut = match fault {
        Some(Fault::StallAfter(n) | Fault::ResetAfter(n) | Fault::TruncateAfter(n)) => Some(*n),
        _ => None,
    };
    let flip = match fault {
        Some(Fault::FlipAt(n)) => Some(*n),
        _ => None,
    };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if pending.is_empty() {
            let n = server.read(&mut buf).await?;
            if n == 0 {
                return Ok(End::Clean);
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let mut chunk = std::mem::take(&mut pending);
        if let Some(limit) = cut {
            let room = limit.saturating_sub(sent) as usize;
            if chunk.len() >= room {
                chunk.truncate(room);
                write_paced(client, &chunk, bytes_per_sec).await?;
                client.flush().await?;
                return match fault {
                    Some(Fault::StallAfter(_)) => {
                        let _ = tokio::time::timeout(STALL_AT_MOST, client_gone.notified()).await;
                        Ok(End::Clean)
                    }
                    Some(Fault::ResetAfter(_)) => Ok(End::Reset),
                    _ => Ok(End::Clean),
                };
            }
        }
        if let Some(at) = flip {
            if (sent..sent + chunk.len() as u64).contains(&at) {
                chunk[(at - sent) as usize] ^= 0xff;
            }
        }
        sent += chunk.len() as u64;
        write_paced(client, &chunk, bytes_per_sec).await?;
    }
}

/// Writes `data`, at most `bytes_per_sec` per second when it is not 0.
async fn write_paced<W: AsyncWrite + Unpin>(out: &mut W, data: &[u8], bytes_per_sec: u64) -> std::io::Result<()> {
    if bytes_per_sec == 0 {
        return out.write_all(data).await;
    }
    let step = (bytes_per_sec / 20).clamp(1, 16 * 1024) as usize;
    for piece in data.chunks(step) {
        out.write_all(piece).await?;
        out.flush().await?;
        tokio::time::sleep(Duration::from_secs_f64(piece.len() as f64 / bytes_per_sec as f64)).await;
    }
    Ok(())
}

/// Reads up to the end of an HTTP head; returns the head and the bytes read past it,
/// or `None` when the peer closed first.
async fn read_head<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = data.split_off(end + 4);
            return Ok(Some((data, rest)));
        }
        if data.len() > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "HTTP head too large"));
        }
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Method and path of a request head.
fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_ascii_uppercase();
    let path = parts.next().unwrap_or_default().to_owned();
    (method, path)
}

/// The head with its `Connection` (and `Keep-Alive`) headers replaced by
/// `Connection: close`, so the server closes after one response.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&head[..head.len() - 4]);
    let mut out = String::with_capacity(text.len() + 24);
    for (i, line) in text.split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if i > 0 && matches!(name.as_str(), "connection" | "keep-alive" | "proxy-connection") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// The proxy's own answer, in the registry's error format.
async fn answer(
    mut client: TcpStream,
    code: u16,
    retry_after: Option<u64>,
    extra: Option<&str>,
) -> std::io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {code} by the fault proxy"}}]}}"#);
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    if let Some(line) = extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

fn reason(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

/// Closes with a TCP RST instead of a FIN.
fn reset(stream: TcpStream) -> std::io::Result<()> {
    stream.set_zero_linger()?;
    drop(stream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY_LEN: usize = 100_000;

    fn body() -> Vec<u8> {
        (0..BODY_LEN).map(|i| (i % 251) as u8).collect()
    }

    /// A minimal HTTP server (unit test only): answers every request with `body()`
    /// and closes; counts the requests it got.
    async fn upstream() -> (String, Arc<std::sync::atomic::AtomicU64>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (h, hd) = (hits.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (h, hd) = (h.clone(), hd.clone());
                tokio::spawn(async move {
                    let Ok(Some((head, _))) = read_head(&mut s).await else { return };
                    h.fetch_add(1, Ordering::SeqCst);
                    hd.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let b = body();
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&b).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, hits, heads)
    }

    /// Sends one GET with keep-alive asked for; returns the response head, the body
    /// bytes read and how reading ended.
    async fn get(addr: &str, path: &str) -> (String, Vec<u8>, std::io::Result<()>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let end = s.read_to_end(&mut all).await.map(drop);
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(all.len());
        let body = all.split_off(split);
        (String::from_utf8_lossy(&all).into_owned(), body, end)
    }

    #[tokio::test]
    async fn passes_through_one_request_per_connection() {
        let (up, hits, heads) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        let (head, body, end) = get(&proxy.addr(), "/v2/a/blobs/x").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, super::tests::body());
        end.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let seen = &heads.lock().unwrap()[0];
        assert!(seen.contains("Connection: close") && !seen.contains("keep-alive"), "{seen}");
        assert_eq!(proxy.count("/blobs/"), 1);
        assert_eq!(proxy.seen()[0].method, "GET");
        assert!(proxy.seen()[0].head.contains("Connection: keep-alive"), "the head as the client sent it");
    }

    #[tokio::test]
    async fn status_with_retry_after_for_the_first_n_matches() {
        let (up, hits, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![Rule::new("/blobs/", Fault::Status { code: 429, retry_after: Some(7) }).times(2)]);
        for _ in 0..2 {
            let (head, body, _) = get(&proxy.addr(), "/v2/a/blobs/x").await;
            assert!(head.starts_with("HTTP/1.1 429 Too Many Requests"), "{head}");
            assert!(head.contains("Retry-After: 7\r\n"), "{head}");
            assert!(String::from_utf8_lossy(&body).contains("injected 429"));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the server never saw them");
        let (head, _, _) = get(&proxy.addr(), "/v2/a/blobs/x").await;
        assert!(head.starts_with("HTTP/1.1 200"), "the third passes: {head}");
        let (head, _, _) = get(&proxy.addr(), "/v2/a/manifests/x").await;
        assert!(head.starts_with("HTTP/1.1 200"), "other paths pass: {head}");
        let faults: Vec<_> = proxy.seen().into_iter().map(|s| s.fault.is_some()).collect();
        assert_eq!(faults, [true, true, false, false]);
    }

    #[tokio::test]
    async fn method_filter() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![Rule::new("/", Fault::Status { code: 503, retry_after: None }).method("head")]);
        let (head, _, _) = get(&proxy.addr(), "/x").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    #[tokio::test]
    async fn exact_path_and_basic_challenge() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![Rule::new("/v2/", Fault::BasicChallenge).exact()]);
        let (head, _, _) = get(&proxy.addr(), "/v2/").await;
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized"), "{head}");
        assert!(head.contains("WWW-Authenticate: Basic realm=\"fault-proxy\"\r\n"), "{head}");
        let (head, _, _) = get(&proxy.addr(), "/v2/a/manifests/x").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    #[tokio::test]
    async fn truncate_and_reset_after_n_body_bytes() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy
            .set_rules(vec![Rule::new("/cut", Fault::TruncateAfter(1000)), Rule::new("/rst", Fault::ResetAfter(1000))]);
        let (head, body, end) = get(&proxy.addr(), "/cut").await;
        assert!(head.contains(&format!("Content-Length: {BODY_LEN}")), "the head is intact: {head}");
        assert_eq!(body, super::tests::body()[..1000]);
        end.expect("a truncated body ends with a clean close");
        let (_, body, end) = get(&proxy.addr(), "/rst").await;
        assert!(body.len() <= 1000);
        assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn flip_keeps_the_length() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![Rule::new("/", Fault::FlipAt(50_000))]);
        let (_, got, end) = get(&proxy.addr(), "/x").await;
        end.unwrap();
        let want = super::tests::body();
        assert_eq!(got.len(), want.len());
        let differ: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
        assert_eq!(differ, [50_000]);
        assert_eq!(got[50_000], !want[50_000]);
    }

    #[tokio::test]
    async fn stall_holds_until_the_client_leaves() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![Rule::new("/", Fault::StallAfter(10))]);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_millis(700), s.read_to_end(&mut got)).await;
        assert!(read.is_err(), "no end while stalled");
        let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(got.len() - body_at, 10);
    }

    #[tokio::test]
    async fn latency_and_bandwidth() {
        let (up, _, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_rules(vec![
            Rule::new("/slow-start", Fault::Latency(Duration::from_millis(400))),
            Rule::new("/thin", Fault::Bandwidth(200_000)),
        ]);
        let t = Instant::now();
        let (_, body, _) = get(&proxy.addr(), "/slow-start").await;
        assert!(t.elapsed() >= Duration::from_millis(400) && body.len() == BODY_LEN);
        let t = Instant::now();
        let (_, body, _) = get(&proxy.addr(), "/thin").await;
        let took = t.elapsed();
        assert_eq!(body.len(), BODY_LEN);
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "100 kB at 200 kB/s took {took:?}"
        );
    }

    #[tokio::test]
    async fn down_refuses_then_recovers() {
        let (up, hits, _) = upstream().await;
        let proxy = FaultProxy::start(&up).await.unwrap();
        proxy.set_down(true);
        let (head, _, end) = get(&proxy.addr(), "/x").await;
        assert!(head.is_empty());
        assert!(end.is_err() || head.is_empty());
        assert_eq!(proxy.refused(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        proxy.set_down(false);
        let (head, _, _) = get(&proxy.addr(), "/x").await;
        assert!(head.starts_with("HTTP/1.1 200"));
        proxy.set_rules(vec![Rule::new("/x", Fault::Reset)]);
        let (head, _, _) = get(&proxy.addr(), "/x").await;
        assert!(head.is_empty());
    }

    #[test]
    fn rewrites_the_connection_header() {
        let head =
            b"GET /a HTTP/1.1\r\nHost: h\r\nconnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX: connection\r\n\r\n";
        let out = String::from_utf8(with_connection_close(head)).unwrap();
        assert_eq!(out, "GET /a HTTP/1.1\r\nHost: h\r\nX: connection\r\nConnection: close\r\n\r\n");
        assert_eq!(request_line(head), ("GET".to_owned(), "/a".to_owned()));
    }
}
