//! Mutual TLS and the device census, through the real binary and real `curl`: a CA and
//! client certificates made by `openssl`; a device that names no `id` is counted by
//! its verified certificate's subject (two certificates, three requests: two devices),
//! an explicit `id` wins over it, a client without a certificate is served and counted
//! anonymous (`clientAuth: optional`), a certificate of another CA is refused, and
//! `clientAuth: required` refuses a handshake without a certificate. The subject never
//! reaches the log, even at debug level.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{channel, config, curl, free_port, push_file, random_bytes, registry, unique_repo, GatewayProcess};
use e2e::images::Pki;
use updraft_core::census::{Merged, Report, State};
use updraft_core::config::{ClientAuth, TlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_ota-gateway");
const RAW: &str = "application/vnd.updraft.firmware.v1";
const HOUR: Duration = Duration::from_secs(3600);

/// The binary serving channel `esp32` (1.0.0 from `repo`) over HTTP and HTTPS, asking
/// for client certificates of `client_ca` as `mode` says.
struct Gateway {
    process: GatewayProcess,
    http: u16,
    admin: u16,
    https: u16,
}

impl Gateway {
    fn start(dir: &Path, pki: &Pki, repo: &str, digest: &str, mode: ClientAuth) -> Self {
        let (http, admin, https) = (free_port(), free_port(), free_port());
        let mut c =
            config(&dir.join("cache"), vec![channel("esp32", &registry().addr, repo, ("1.0.0", "v1.0.0", digest))]);
        c.listen = format!("127.0.0.1:{http}");
        c.admin_listen = format!("127.0.0.1:{admin}");
        let (cert_file, key_file) = pki.cert();
        c.tls = Some(TlsConfig {
            listen: format!("127.0.0.1:{https}"),
            cert_file,
            key_file,
            client_ca_file: Some(pki.ca()),
            client_auth: Some(mode),
        });
        std::fs::write(dir.join("gateway.yaml"), c.to_yaml()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.env("RUST_LOG", "debug");
        let gateway = Self { process: GatewayProcess::start(cmd, dir, https), http, admin, https };
        gateway.wait_ready();
        gateway
    }

    /// Waits until the release is fetched and served (over plain HTTP: no census).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (channels, _) = curl(&[&format!("http://127.0.0.1:{}/api/v1/channels", self.http)]);
            if channels.contains("\"ready\":true") {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {channels}\n{}", self.process.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /version?device=esp32[&id=…]` over HTTPS with `curl`, with the client
    /// certificate and key given (none: no certificate); the status (000 when the
    /// handshake failed) and curl's stderr.
    fn version(&self, pki: &Pki, cert: Option<&(PathBuf, PathBuf)>, id: Option<&str>) -> (String, String) {
        let ca = pki.ca();
        let url = match id {
            Some(id) => format!("https://127.0.0.1:{}/version?device=esp32&id={id}", self.https),
            None => format!("https://127.0.0.1:{}/version?device=esp32", self.https),
        };
        let mut args = vec!["--cacert", ca.to_str().unwrap(), "-o", "/dev/null", "-w", "%{http_code}"];
        if let Some((crt, key)) = cert {
            args.extend(["--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        }
        args.push(&url);
        curl(&args)
    }

    /// Unique devices offered 1.0.0 in the last hour, from `GET /census` merged as the
    /// operator merges replicas.
    fn offered(&self) -> u64 {
        let (body, err) = curl(&[&format!("http://127.0.0.1:{}/census", self.admin)]);
        let report: Report = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body} {err}"));
        let mut merged = Merged::default();
        merged.add(&report).unwrap();
        merged.devices("esp32", "1.0.0", State::Offered, HOUR, SystemTime::now())
    }

    /// `updraft_gateway_anonymous_polls_total{channel="esp32"}`.
    fn anonymous(&self) -> u64 {
        let (metrics, _) = curl(&[&format!("http://127.0.0.1:{}/metrics", self.admin)]);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("updraft_gateway_anonymous_polls_total{channel=\"esp32\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// A client certificate of `pki`'s CA with subject `/O=Acme/CN={cn}`.
fn client_cert(pki: &Pki, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (ec, key, crt) = (format!("{name}.ec"), format!("{name}.key"), format!("{name}.crt"));
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl").args(args).current_dir(&pki.dir).status().unwrap().success();
        assert!(ok, "openssl {args:?}");
    };
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &ec]);
    openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &ec, "-out", &key]);
    openssl(&["req", "-new", "-key", &key, "-subj", &format!("/O=Acme/CN={cn}"), "-out", &format!("{name}.csr")]);
    std::fs::write(pki.dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
        "-out",
        &crt,
    ]);
    (pki.dir.join(crt), pki.dir.join(key))
}

#[test]
fn client_certificate_subjects_count_as_devices() {
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("mtls");
    let digest = push_file(&registry().addr, &repo, "v1.0.0", work.path(), "fw.bin", RAW, &random_bytes(4096));
    let pki = Pki::new(&work.path().join("pki"));
    let (one, two) = (client_cert(&pki, "one", "dev-mtls-1"), client_cert(&pki, "two", "dev-mtls-2"));
    let other_pki = Pki::new(&work.path().join("other-pki"));
    let stranger = client_cert(&other_pki, "stranger", "dev-mtls-stranger");

    let dir = work.path().join("optional");
    std::fs::create_dir_all(&dir).unwrap();
    let gw = Gateway::start(&dir, &pki, &repo, &digest, ClientAuth::Optional);
    assert_eq!(gw.offered(), 0);

    // Certificate one twice, two once: two devices.
    for cert in [&one, &one, &two] {
        let (code, err) = gw.version(&pki, Some(cert), None);
        assert_eq!(code, "200", "{err}");
    }
    assert_eq!(gw.offered(), 2);

    // An explicit id wins over the subject: certificate one with an id is a third device.
    let (code, err) = gw.version(&pki, Some(&one), Some("dev-explicit-3"));
    assert_eq!(code, "200", "{err}");
    assert_eq!(gw.offered(), 3);

    // Optional: no certificate is served, counted as an anonymous poll, not a device.
    let anonymous = gw.anonymous();
    let (code, err) = gw.version(&pki, None, None);
    assert_eq!(code, "200", "{err}");
    assert_eq!(gw.anonymous(), anonymous + 1);
    assert_eq!(gw.offered(), 3);

    // A certificate of another CA is refused, whatever the mode.
    let (code, _) = gw.version(&pki, Some(&stranger), None);
    assert_eq!(code, "000", "a certificate of another CA must fail the handshake");
    assert_eq!(gw.offered(), 3);

    // Never logged, even at debug level.
    assert_nothing_identifying_logged(&gw);
    drop(gw);

    // Required: no certificate, no handshake; a verified one is served and counted.
    let dir = work.path().join("required");
    std::fs::create_dir_all(&dir).unwrap();
    let gw = Gateway::start(&dir, &pki, &repo, &digest, ClientAuth::Required);
    let (code, _) = gw.version(&pki, None, None);
    assert_eq!(code, "000", "required mode must refuse a client without a certificate");
    let (code, _) = gw.version(&pki, Some(&stranger), None);
    assert_eq!(code, "000");
    let (code, err) = gw.version(&pki, Some(&two), None);
    assert_eq!(code, "200", "{err}");
    assert_eq!(gw.offered(), 1);
    assert_nothing_identifying_logged(&gw);
}

/// No subject, CN or id of the test's devices in the gateway's debug-level log.
fn assert_nothing_identifying_logged(gw: &Gateway) {
    let log = gw.process.log_text();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the log is at debug level: {log}");
    for secret in ["dev-mtls-1", "dev-mtls-2", "dev-mtls-stranger", "dev-explicit-3", "Acme"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
