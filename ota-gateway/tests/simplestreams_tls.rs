//! The HTTPS listener of the real binary, checked with real clients: `curl` over TLS
//! 1.3 with a test CA made by `openssl`, a plain-HTTP request on the TLS port refused
//! at once (what LXD and Incus send before each image file), and a renewed
//! certificate picked up without a restart while an open connection keeps working.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{curl, free_port, served_cn, GatewayProcess};
use e2e::images::Pki;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_ota-gateway");

/// The binary on a config file, and the ports its config names.
struct Gateway {
    process: GatewayProcess,
    http: u16,
    https: u16,
}

fn start(dir: &Path, cert: &Path, key: &Path) -> Gateway {
    let (http, admin, https) = (free_port(), free_port(), free_port());
    let config = format!(
        "listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: {}}}\ntls:\n  listen: 127.0.0.1:{https}\n  certFile: {}\n  keyFile: {}\n",
        dir.join("cache").display(),
        cert.display(),
        key.display()
    );
    std::fs::write(dir.join("gateway.yaml"), config).unwrap();
    Gateway { process: GatewayProcess::start(Command::new(BIN), dir, https), http, https }
}

/// Sends one HTTP/1.1 request on an open stream and returns the status line.
async fn request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test]
async fn https_beside_http_with_tls13_plain_refusal_and_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let (crt, key) = pki.leaf("first", "gateway-first");
    let (live_crt, live_key) = (d.join("tls.crt"), d.join("tls.key"));
    std::fs::copy(&crt, &live_crt).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let gw = start(d, &live_crt, &live_key);
    let ca = d.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // HTTPS with TLS 1.3 only (what LXD and Incus insist on), trusted through the test CA.
    let url = format!("https://127.0.0.1:{}/api/v1/channels", gw.https);
    let (code, err) =
        curl(&["--cacert", ca, "--tlsv1.3", "--tls-max", "1.3", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(code, "200", "{err}");
    // Plain HTTP keeps working on its own port.
    let (code, _) =
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{}/api/v1/channels", gw.http)]);
    assert_eq!(code, "200");

    // Plain HTTP on the TLS port: a 400 at once, not a hang until a timeout.
    for _ in 0..20 {
        let started = Instant::now();
        let (code, err) =
            curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{}/images/x", gw.https)]);
        assert_eq!(code, "400", "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
    // ... and logged once, not twenty times.
    let log = gw.process.log_text();
    assert_eq!(log.matches("plain HTTP on the TLS port refused").count(), 1, "{log}");

    // An open TLS connection, made with rustls against the same CA.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(d.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.https)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut open = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
    assert_eq!(open.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(request(&mut open, "/api/v1/channels").await, "HTTP/1.1 200 OK");

    // Renewal, as cert-manager and kubelet do it: new files appear; no restart.
    assert!(served_cn(gw.https).contains("gateway-first"));
    let (crt2, key2) = pki.leaf("second", "gateway-second");
    std::fs::copy(&key2, d.join("tls.key.new")).unwrap();
    std::fs::copy(&crt2, d.join("tls.crt.new")).unwrap();
    std::fs::rename(d.join("tls.key.new"), &live_key).unwrap();
    std::fs::rename(d.join("tls.crt.new"), &live_crt).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_cn(gw.https).contains("gateway-second") {
        assert!(Instant::now() < deadline, "renewed certificate not picked up: {}", served_cn(gw.https));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New connections verify against the renewed certificate; the open one still works.
    let (code, err) = curl(&["--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(code, "200", "{err}");
    assert_eq!(request(&mut open, "/api/v1/channels").await, "HTTP/1.1 200 OK");
}
