//! The HTTPS listener, beside the plain one.
//!
//! LXD and Incus accept only `https://` simplestreams remotes and insist on TLS 1.3;
//! rustls (aws-lc-rs provider) offers 1.3 and 1.2. The certificate and key are PEM files,
//! typically a mounted `kubernetes.io/tls` Secret that cert-manager renews: they are
//! followed like the config file ([`crate::watch`]) and a renewed pair is used for the
//! next handshake, without a restart and without touching open connections. A pair
//! that does not load (half-written, key not matching) is logged and the previous one
//! keeps serving. A reloaded config that names other files swaps them the same way
//! ([`CertStore::prepare`], then [`CertStore::install`]: files that do not load reject
//! that config). One [`CertStore`] resolves the handshakes of every TLS listener (the
//! HTTPS one and the stores'); whether there is a TLS section, and its listener
//! address, are read at start only.
//!
//! Both clients first try each image file over plain HTTP on the same port, and fall
//! back to HTTPS when that fails. The first byte of a TLS connection is a handshake
//! record (0x16); anything else is answered at once with a short HTTP 400 and closed,
//! never left to hang until a handshake timeout. These refusals are expected traffic,
//! so they are counted and logged at most once a minute, not once each.
//!
//! Handshakes run in their own tasks, so a slow or silent client never delays
//! another's accept.
//!
//! **Mutual TLS.** With a client CA bundle (`tls.clientCaFile`) the HTTPS listener asks
//! for a client certificate and verifies it with rustls's `WebPkiClientVerifier`
//! against that bundle; `clientAuth: optional` (the default) also serves a client that
//! sends none, `required` refuses its handshake. A certificate that does not verify is
//! always refused. The verified certificate's subject ([`subject`], RFC 4514) is what
//! the firmware surface counts as the device in the census when a request names no
//! `id` (see [`crate::server::ClientSubject`]); it is hashed there and never stored or
//! logged. The bundle and the mode are read at start (a change is logged as waiting
//! for a restart, `updraft_core::restart`); the stores' listeners never ask for a
//! client certificate (their writes are authorized by key).
//!
//! The served certificate's notAfter is exported
//! (`updraft_gateway_tls_certificate_expiry_timestamp_seconds`), set whenever a pair is
//! loaded or swapped, so an alert can say a renewal did not happen before devices refuse
//! the handshake. A certificate whose validity cannot be read is refused like a
//! malformed one: clients would refuse it too.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use der::asn1::ObjectIdentifier;
use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use prometheus::{IntCounter, IntGauge};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use updraft_core::config::ClientAuth;

use crate::watch;

/// A connection must finish its handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals and handshake failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// The answer to a plain-HTTP request on the TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 34\r\nConnection: close\r\n\r\nThis port speaks HTTPS, not HTTP.\n";

/// Why a certificate pair does not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("{path}: cannot read the certificate's validity: {reason}")]
    Validity { path: PathBuf, reason: der::Error },
    #[error("{path}: unsupported private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client CA bundle {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// Plain-HTTP requests refused on the TLS port since start. One process-wide counter,
/// exported by every [`crate::metrics::Metrics`] registry.
pub(crate) static PLAIN_HTTP_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "tls_plain_http_refused_total",
        "Plain-HTTP requests refused on a TLS port (LXD/Incus try one first)",
    )
    .expect("valid metric")
});
/// Handshakes that failed or timed out since start (exported like [`PLAIN_HTTP_REFUSED`]).
pub(crate) static HANDSHAKE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new("tls_handshake_failures_total", "TLS handshakes that failed or timed out").expect("valid metric")
});

/// The served certificate's notAfter in Unix seconds; 0 until one is loaded (no TLS
/// section). Process-wide like [`PLAIN_HTTP_REFUSED`]: one [`CertStore`] serves every
/// TLS listener.
pub(crate) static CERT_EXPIRY: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new(
        "tls_certificate_expiry_timestamp_seconds",
        "When the served TLS certificate expires (its notAfter), in Unix seconds; 0 without TLS",
    )
    .expect("valid metric")
});

/// The live certificate, swapped when its files change or the config names other files.
/// Resolves every handshake of every TLS listener.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    /// The certificate and key files, followed.
    files: Mutex<watch::Files>,
}

/// A pair loaded from other files than the live ones, ready to install.
pub struct Prepared {
    pair: Pair,
    files: watch::Files,
}

/// A loaded pair and its certificate's notAfter (Unix seconds).
#[derive(Debug)]
struct Pair {
    key: CertifiedKey,
    not_after: u64,
}

impl Pair {
    /// Exports its expiry and returns the key to serve.
    fn export(self) -> Arc<CertifiedKey> {
        CERT_EXPIRY.set(i64::try_from(self.not_after).unwrap_or(i64::MAX));
        Arc::new(self.key)
    }

    /// Installs the pair as the live one and exports its expiry.
    fn serve(self, current: &RwLock<Arc<CertifiedKey>>) {
        *current.write().unwrap_or_else(|e| e.into_inner()) = self.export();
    }
}

impl CertStore {
    /// Loads the pair; fails when it does not load (at start, the gateway exits).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let Prepared { pair, files } = Self::read(cert_file, key_file)?;
        Ok(Arc::new(Self { current: RwLock::new(pair.export()), files: Mutex::new(files) }))
    }

    fn read(cert_file: &Path, key_file: &Path) -> Result<Prepared, TlsError> {
        let files = watch::Files::new(vec![cert_file.to_owned(), key_file.to_owned()]);
        Ok(Prepared { pair: load_pair(cert_file, key_file)?, files })
    }

    /// The first phase of a config reload: when the config names other files than the
    /// live ones, loads them (an error rejects the config); `None` when they are the same
    /// (their content is followed by [`CertStore::poll`]).
    pub fn prepare(&self, cert_file: &Path, key_file: &Path) -> Result<Option<Prepared>, TlsError> {
        let same = self.files.lock().unwrap_or_else(|e| e.into_inner()).paths() == [cert_file, key_file];
        if same {
            return Ok(None);
        }
        Self::read(cert_file, key_file).map(Some)
    }

    /// The second phase: the next handshake uses the prepared pair, and its files are
    /// the ones followed from now on.
    pub fn install(&self, prepared: Prepared) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        prepared.pair.serve(&self.current);
        *files = prepared.files;
        tracing::info!(cert = %files.paths()[0].display(), "TLS certificate files changed by the config");
    }

    /// One check of the files; returns whether a new pair was loaded. A pair that
    /// fails to load is logged and tried again on the next change.
    pub fn poll(&self) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if !files.changed() {
            return false;
        }
        let (cert_file, key_file) = (&files.paths()[0], &files.paths()[1]);
        match load_pair(cert_file, key_file) {
            Ok(pair) => {
                pair.serve(&self.current);
                tracing::info!(cert = %cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS certificate does not load; keeping the previous one");
                false
            }
        }
    }

    /// Polls until the store is dropped.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(watch::poll_every(watch::POLL_INTERVAL, move || match weak.upgrade() {
            Some(store) => {
                store.poll();
                true
            }
            None => false,
        }));
    }

    /// The certificate chain now served.
    #[cfg(test)]
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Pair, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem { path, reason: e.to_string() }
    };
    let certs =
        CertificateDer::pem_slice_iter(&read(cert_file)?).collect::<Result<Vec<_>, _>>().map_err(pem_err(cert_file))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_owned()));
    }
    let not_after = not_after(&certs[0]).map_err(|reason| TlsError::Validity { path: cert_file.to_owned(), reason })?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(pem_err(key_file))?;
    let signing = aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key { path: key_file.to_owned(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Pair { key: certified, not_after })
}

/// The fields of a DER certificate's tbsCertificate after its optional version:
/// RFC 5280's `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity, subject, … }, … }`, walked with
/// `der` (already in the tree through the key parsers) rather than adding an X.509
/// crate for two fields.
fn tbs_fields(cert: &[u8]) -> Result<SliceReader<'_>, der::Error> {
    let cert = AnyRef::from_der(cert)?;
    sequence(cert)?;
    let tbs = AnyRef::decode(&mut SliceReader::new(cert.value())?)?;
    sequence(tbs)?;
    let mut fields = SliceReader::new(tbs.value())?;
    if fields.peek_tag()? == (Tag::ContextSpecific { constructed: true, number: TagNumber::N0 }) {
        AnyRef::decode(&mut fields)?;
    }
    Ok(fields)
}

fn sequence(any: AnyRef<'_>) -> Result<(), der::Error> {
    any.tag().assert_eq(Tag::Sequence).map(|_| ())
}

/// The notAfter of a DER certificate, in Unix seconds.
fn not_after(cert: &[u8]) -> Result<u64, der::Error> {
    let mut fields = tbs_fields(cert)?;
    // serialNumber, signature, issuer
    for _ in 0..3 {
        AnyRef::decode(&mut fields)?;
    }
    let validity = AnyRef::decode(&mut fields)?;
    sequence(validity)?;
    let mut times = SliceReader::new(validity.value())?;
    AnyRef::decode(&mut times)?;
    let not_after = AnyRef::decode(&mut times)?;
    let since_epoch = match not_after.tag() {
        Tag::UtcTime => not_after.decode_as::<UtcTime>()?.to_unix_duration(),
        _ => not_after.decode_as::<GeneralizedTime>()?.to_unix_duration(),
    };
    Ok(since_epoch.as_secs())
}

/// The subject of a DER certificate as an RFC 4514 string (`CN=dev-42,O=Acme`): the
/// RDNs last first, joined by `,`, the attributes of a multi-valued RDN by `+` (last
/// first as well, as openssl prints them); the
/// usual attribute types by name (CN, L, ST, O, OU, C, STREET, DC, UID), others as a
/// dotted OID with the value as `#` and its DER in hex, as are values that are not a
/// UTF8String, PrintableString, IA5String or BMPString. An empty subject is "".
pub(crate) fn subject(cert: &[u8]) -> Result<String, der::Error> {
    let mut fields = tbs_fields(cert)?;
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        AnyRef::decode(&mut fields)?;
    }
    let name = AnyRef::decode(&mut fields)?;
    sequence(name)?;
    let mut rdns = Vec::new();
    let mut reader = SliceReader::new(name.value())?;
    while !reader.is_finished() {
        let rdn = AnyRef::decode(&mut reader)?;
        rdn.tag().assert_eq(Tag::Set)?;
        let mut attributes = Vec::new();
        let mut inner = SliceReader::new(rdn.value())?;
        while !inner.is_finished() {
            let attribute = AnyRef::decode(&mut inner)?;
            sequence(attribute)?;
            let mut parts = SliceReader::new(attribute.value())?;
            let oid = ObjectIdentifier::decode(&mut parts)?;
            let value = AnyRef::decode(&mut parts)?;
            attributes.push(attribute_text(&oid, value)?);
        }
        // RFC 4514 allows any order within an RDN; openssl's (last first too) lets
        // an operator compare with `openssl x509 -subject -nameopt RFC2253`.
        attributes.reverse();
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// `TYPE=value` of one attribute (RFC 4514 §2.3, §2.4).
fn attribute_text(oid: &ObjectIdentifier, value: AnyRef<'_>) -> Result<String, der::Error> {
    const NAMES: [(&str, &str); 9] = [
        ("2.5.4.3", "CN"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.6", "C"),
        ("2.5.4.9", "STREET"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("0.9.2342.19200300.100.1.1", "UID"),
    ];
    let dotted = oid.to_string();
    let name = NAMES.iter().find(|(o, _)| *o == dotted).map(|(_, n)| *n);
    let text = match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        Tag::BmpString => {
            let units: Vec<u16> = value.value().chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
            (value.value().len() % 2 == 0).then(|| String::from_utf16(&units).ok()).flatten()
        }
        _ => None,
    };
    Ok(match (name, text) {
        (Some(name), Some(text)) => format!("{name}={}", escape(&text)),
        (name, _) => {
            let mut der = Vec::new();
            value.encode_to_vec(&mut der)?;
            format!("{}=#{}", name.unwrap_or(&dotted), hex::encode_upper(der))
        }
    })
}

/// RFC 4514 §2.4: `"+,;<>\` escaped with a backslash, and a leading `#` or space, a
/// trailing space; NUL as `\00`.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => out.push('\\'),
            '#' if i == 0 => out.push('\\'),
            ' ' if i == 0 || i == last => out.push('\\'),
            '\0' => {
                out.push_str("\\00");
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The verifier of client certificates: the CAs of `file` (PEM), a certificate
/// optional or required.
fn client_verifier(file: &Path, mode: ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let invalid = |reason: String| TlsError::ClientCa { path: file.to_owned(), reason };
    let pem = std::fs::read(file).map_err(|source| TlsError::Read { path: file.to_owned(), source })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| invalid(e.to_string()))?).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(file.to_owned()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(aws_lc_rs::default_provider()));
    let builder = match mode {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder.build().map_err(|e| invalid(e.to_string()))
}

/// The rustls server configuration: TLS 1.3 and 1.2, HTTP/1.1, certificates from
/// `store`; with `client_ca` (the bundle and the mode), mutual TLS.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<(&Path, ClientAuth)>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some((file, mode)) => builder.with_client_cert_verifier(client_verifier(file, mode)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections for `axum::serve`; handshakes run in their own tasks.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: &str, config: Arc<ServerConfig>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (it only does when this listener is gone).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let log = Arc::new(RateLimitedLog::default());
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let (acceptor, ready, log) = (acceptor.clone(), ready.clone(), log.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, &acceptor)).await {
                Ok(Ok(Some(stream))) => {
                    let _ = ready.send((stream, addr)).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(Refused::PlainHttp)) => {
                    PLAIN_HTTP_REFUSED.inc();
                    log.note(addr, "plain HTTP on the TLS port refused (LXD/Incus try it before HTTPS)");
                }
                Ok(Err(Refused::Handshake(e))) => {
                    HANDSHAKE_FAILURES.inc();
                    log.note(addr, &format!("TLS handshake failed: {e}"));
                }
                Err(_) => {
                    HANDSHAKE_FAILURES.inc();
                    log.note(addr, "TLS handshake timed out");
                }
            }
        });
    }
}

enum Refused {
    PlainHttp,
    Handshake(io::Error),
}

/// Looks at the first byte: a TLS record goes on to the handshake, anything else is
/// answered with a 400 and closed. `None` when the peer closed before sending.
async fn handshake(tcp: TcpStream, acceptor: &TlsAcceptor) -> Result<Option<TlsStream<TcpStream>>, Refused> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(Refused::Handshake(e)),
    }
    if first[0] != TLS_HANDSHAKE {
        refuse_plain(tcp).await;
        return Err(Refused::PlainHttp);
    }
    acceptor.accept(tcp).await.map(Some).map_err(Refused::Handshake)
}

/// Reads what the client already sent (so closing does not reset the connection
/// before the answer arrives), answers 400 and closes.
async fn refuse_plain(mut tcp: TcpStream) {
    let mut buf = [0u8; 8192];
    for _ in 0..4 {
        match tcp.try_read(&mut buf) {
            Ok(n) if n == buf.len() => continue,
            _ => break,
        }
    }
    let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
    let _ = tcp.shutdown().await;
}

/// Logs the first event, then at most once per [`LOG_EVERY`] with how many happened
/// in between.
#[derive(Default)]
struct RateLimitedLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    fn note(&self, peer: SocketAddr, what: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::info!(%peer, suppressed, "{what} (logged at most once a minute; `suppressed` counts the others)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and key made by openssl(1).
    fn openssl_pair(dir: &Path, name: &str, cn: &str) -> Option<(PathBuf, PathBuf)> {
        let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .ok()?
            .status
            .success();
        ok.then_some((crt, key))
    }

    /// The store tests load pairs, which sets the process-wide expiry gauge: one at a time.
    static STORES: Mutex<()> = Mutex::new(());

    /// openssl's reading of a certificate's notAfter, in Unix seconds.
    fn openssl_not_after(crt: &Path) -> u64 {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
            .arg(crt)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let date = text.trim().strip_prefix("notAfter=").unwrap_or_else(|| panic!("{text}"));
        let parsed = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%SZ").unwrap();
        u64::try_from(parsed.and_utc().timestamp()).unwrap()
    }

    /// The notAfter read from the DER is openssl's, for a UTCTime (before 2050) and a
    /// GeneralizedTime (after) certificate; loading a pair exports it, and a reload
    /// exports the new one.
    #[test]
    fn the_served_certificates_expiry_is_exported() {
        let _serial = STORES.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = openssl_pair(dir.path(), "a", "soon").expect("openssl is needed for this test");
        let soon = openssl_not_after(&crt);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(soon > now + 86_400 && soon <= now + 2 * 86_400 + 60, "{soon} vs {now}");
        let store = CertStore::load(&crt, &key).unwrap();
        assert_eq!(CERT_EXPIRY.get(), i64::try_from(soon).unwrap());
        let metrics = crate::metrics::Metrics::new().render();
        assert!(metrics.contains(&format!("updraft_gateway_tls_certificate_expiry_timestamp_seconds {soon}")));

        let (far_crt, far_key) = (dir.path().join("far.crt"), dir.path().join("far.key"));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-days", "36500", "-subj", "/CN=far", "-keyout"])
            .arg(&far_key)
            .arg("-out")
            .arg(&far_crt)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let far = openssl_not_after(&far_crt);
        assert!(far > 2_524_608_000, "after 2050, a GeneralizedTime: {far}");
        std::fs::copy(&far_crt, &crt).unwrap();
        std::fs::copy(&far_key, &key).unwrap();
        assert!(store.poll());
        assert_eq!(CERT_EXPIRY.get(), i64::try_from(far).unwrap());

        // A SEQUENCE holding an INTEGER is no certificate: no validity to read.
        let garbage = [0x30, 0x03, 0x02, 0x01, 0x01];
        assert!(not_after(&garbage).is_err());
    }

    /// The subject of `crt` as openssl prints it in RFC 2253 form (RFC 4514's
    /// predecessor, the same string here), UTF-8 left as is.
    fn openssl_subject(crt: &Path) -> String {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb", "-in"])
            .arg(crt)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim_end_matches('\n').strip_prefix("subject=").unwrap_or_else(|| panic!("{text}")).to_owned()
    }

    /// The subject string is openssl's RFC 2253 rendering: RDNs last first, a
    /// multi-valued RDN joined by `+`, special characters escaped, UTF-8 kept; an
    /// attribute type without a name is a dotted OID with its value's DER in hex.
    #[test]
    fn client_certificate_subjects_read_as_rfc_4514() {
        let dir = tempfile::tempdir().unwrap();
        let subjects = [
            ("/C=DE/O=Acme, Inc./OU=fleet/CN=dev-42", "CN=dev-42,OU=fleet,O=Acme\\, Inc.,C=DE"),
            ("/O=Acme/CN=dev-7+UID=7", "UID=7+CN=dev-7,O=Acme"),
            ("/CN=#lead;<x>\"q\"\\\\b", "CN=\\#lead\\;\\<x\\>\\\"q\\\"\\\\b"),
            ("/DC=example/CN=dév", "CN=dév,DC=example"),
            ("/ST=Bayern/L=München/CN=a b", "CN=a b,L=München,ST=Bayern"),
        ];
        for (i, (subj, expected)) in subjects.into_iter().enumerate() {
            let (crt, key) = (dir.path().join(format!("{i}.crt")), dir.path().join(format!("{i}.key")));
            let ok = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
                .args(["-multivalue-rdn", "-utf8", "-subj", subj, "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .status()
                .expect("openssl is needed for this test")
                .success();
            assert!(ok, "{subj}");
            let der = CertificateDer::from_pem_file(&crt).unwrap();
            assert_eq!(openssl_subject(&crt), expected, "openssl's reading of {subj}");
            assert_eq!(subject(&der).unwrap(), expected, "{subj}");
        }
        // What openssl(1) cannot make: an attribute type without a name, a value that is
        // not a string, spaces at either end.
        let oid = ObjectIdentifier::new_unwrap("1.2.3.4");
        let utf8 = AnyRef::new(Tag::Utf8String, b"xyz").unwrap();
        assert_eq!(attribute_text(&oid, utf8).unwrap(), "1.2.3.4=#0C0378797A");
        let cn = ObjectIdentifier::new_unwrap("2.5.4.3");
        let octets = AnyRef::new(Tag::OctetString, &[1, 2]).unwrap();
        assert_eq!(attribute_text(&cn, octets).unwrap(), "CN=#04020102");
        assert_eq!(escape(" a b "), "\\ a b\\ ");
        assert_eq!(escape("a\0b"), "a\\00b");
        let bmp = AnyRef::new(Tag::BmpString, &[0, b'h', 0, b'i']).unwrap();
        assert_eq!(attribute_text(&cn, bmp).unwrap(), "CN=hi");
        // Not a certificate: no subject.
        assert!(subject(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }

    #[test]
    fn the_plain_http_answer_is_well_framed() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn loads_reloads_and_keeps_the_last_good_pair() {
        let _serial = STORES.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let Some((crt, key)) = openssl_pair(dir.path(), "a", "first") else {
            panic!("openssl is needed for this test");
        };
        let store = CertStore::load(&crt, &key).unwrap();
        let first = store.chain();
        assert!(!store.poll(), "nothing changed");
        // A renewed pair replaces it.
        let (crt2, key2) = openssl_pair(dir.path(), "b", "second").unwrap();
        std::fs::copy(&crt2, &crt).unwrap();
        std::fs::copy(&key2, &key).unwrap();
        assert!(store.poll());
        assert_ne!(store.chain(), first);
        let second = store.chain();
        // A half-renewed pair (new cert, old key) is refused; the last good pair stays.
        let (crt3, _) = openssl_pair(dir.path(), "c", "third").unwrap();
        std::fs::copy(&crt3, &crt).unwrap();
        assert!(!store.poll());
        assert_eq!(store.chain(), second);
        // Garbage is refused at load.
        std::fs::write(dir.path().join("junk"), "not pem").unwrap();
        assert!(CertStore::load(&dir.path().join("junk"), &key).is_err());
        assert!(matches!(CertStore::load(&crt3, &key2), Err(TlsError::Mismatch(_))));
    }

    #[test]
    fn a_config_naming_other_files_swaps_the_pair_in_two_phases() {
        let _serial = STORES.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = openssl_pair(dir.path(), "a", "first").expect("openssl is needed for this test");
        let (crt2, key2) = openssl_pair(dir.path(), "b", "second").unwrap();
        let store = CertStore::load(&crt, &key).unwrap();
        let first = store.chain();
        assert!(store.prepare(&crt, &key).unwrap().is_none(), "the same files: nothing to do");
        // Files that do not load refuse the config; nothing changes.
        assert!(matches!(store.prepare(&crt, &key2), Err(TlsError::Mismatch(_))));
        let prepared = store.prepare(&crt2, &key2).unwrap().unwrap();
        assert_eq!(store.chain(), first, "prepared, not installed");
        store.install(prepared);
        assert_ne!(store.chain(), first);
        // The new files are the ones followed from now on.
        assert!(store.prepare(&crt2, &key2).unwrap().is_none());
        std::fs::copy(&crt, &crt2).unwrap();
        std::fs::copy(&key, &key2).unwrap();
        assert!(store.poll());
        assert_eq!(store.chain(), first);
    }
}
