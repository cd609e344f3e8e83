//! A config reload changes what it says it changes: a store's keys, `allowPlainWrites`
//! and limits, and the TLS certificate files, are live on the next request, on the real
//! binary with its config file rewritten under it (before, they were read at start only
//! and a reload ignored them silently).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{curl, free_port, served_cn, GatewayProcess};
use e2e::images::Pki;

/// The binary under test; `UPDRAFT_TEST_GATEWAY_BIN` runs another build (an earlier
/// commit's, to see these tests fail on it).
fn bin() -> String {
    std::env::var("UPDRAFT_TEST_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ota-gateway").into())
}

/// How long a reload may take to show (the file is polled every second).
const RELOAD_WITHIN: Duration = Duration::from_secs(15);

/// The binary on a config file, and the admin port its config names.
struct Gateway {
    process: GatewayProcess,
    admin: u16,
}

impl Gateway {
    /// Runs the binary on `config` (written to `dir/gateway.yaml`) and waits for `port`.
    fn start(dir: &Path, config: &str, port: u16) -> Self {
        std::fs::write(dir.join("gateway.yaml"), config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.env("RUST_LOG", "info");
        let admin = config
            .lines()
            .find_map(|l| l.strip_prefix("adminListen: 127.0.0.1:"))
            .and_then(|p| p.parse().ok())
            .expect("the config names adminListen");
        Self { process: GatewayProcess::start(cmd, dir, port), admin }
    }

    /// Rewrites the config file the way kubelet does (a new file renamed over it).
    fn rewrite(&self, config: &str) {
        let next = self.process.dir.join("gateway.yaml.next");
        std::fs::write(&next, config).unwrap();
        std::fs::rename(&next, self.process.dir.join("gateway.yaml")).unwrap();
    }

    fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// `updraft_gateway_config_reloads_total{result="applied"}` on the admin port.
    fn reloads_applied(&self) -> u64 {
        let (metrics, _) = curl(&[&format!("http://127.0.0.1:{}/metrics", self.admin)]);
        metrics
            .lines()
            .find(|l| l.starts_with("updraft_gateway_config_reloads_total") && l.contains("applied"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Rewrites the config and waits until the gateway says it applied it.
    fn reload(&self, config: &str) {
        let before = self.reloads_applied();
        self.rewrite(config);
        let deadline = Instant::now() + RELOAD_WITHIN;
        while self.reloads_applied() <= before {
            assert!(Instant::now() < deadline, "the reload was not applied: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Uploads `size` bytes to `path` on the store at `base` with `key`; the status.
fn upload(base: &str, key: &str, path: &str, size: usize, extra: &[&str]) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; size]).unwrap();
    let (key, body) = (format!("key: {key}"), format!("@{}", body.display()));
    let url = format!("{base}/upload/{path}?time=1700000000.5&force=True");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", &key, "--data-binary", &body];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, err) = curl(&args);
    code.parse().unwrap_or_else(|_| panic!("curl: {err}"))
}

fn store_config(http: u16, admin: u16, store: u16, dir: &Path, settings: &str) -> String {
    format!(
        "listen: 127.0.0.1:{http}\nadminListen: 127.0.0.1:{admin}\ncache: {{dir: {}}}\nstores:\n  - name: files\n    listen: 127.0.0.1:{store}\n    dir: {}\n{settings}",
        dir.join("cache").display(),
        dir.join("files").display(),
    )
}

#[test]
fn a_reload_changes_a_stores_key_plain_writes_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (http, admin, port) = (free_port(), free_port(), free_port());
    let config = |settings: &str| store_config(http, admin, port, d, settings);
    let base = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(d, &config("    writeKey: one\n"), port);

    // Plain writes are refused until the store allows them.
    assert_eq!(upload(&base, "one", "a.bin", 10, &[]), 403);
    gw.reload(&config("    writeKey: one\n    allowPlainWrites: true\n"));
    assert_eq!(upload(&base, "one", "a.bin", 10, &[]), 201, "allowPlainWrites was not applied: {}", gw.log_text());

    // A new write key replaces the old one at once.
    gw.reload(&config("    writeKey: two\n    allowPlainWrites: true\n"));
    assert_eq!(upload(&base, "one", "b.bin", 10, &[]), 403, "the old key still writes");
    assert_eq!(upload(&base, "two", "b.bin", 10, &[]), 201);

    // A lower limit refuses what it allowed before.
    gw.reload(&config("    writeKey: two\n    allowPlainWrites: true\n    maxUploadBytes: 100\n"));
    assert_eq!(upload(&base, "two", "c.bin", 1000, &[]), 413, "maxUploadBytes was not applied");
    assert_eq!(upload(&base, "two", "c.bin", 100, &[]), 201);

    // And back: plain writes closed again.
    gw.reload(&config("    writeKey: two\n"));
    assert_eq!(upload(&base, "two", "d.bin", 10, &[]), 403);

    // A new listener waits for a restart: the reload says so, the rest of it is live,
    // and the store keeps serving where it was.
    gw.reload(&store_config(http, admin, free_port(), d, "    writeKey: three\n    allowPlainWrites: true\n"));
    assert!(gw.log_text().contains("take effect on restart"), "{}", gw.log_text());
    assert_eq!(upload(&base, "three", "e.bin", 10, &[]), 201);
    assert!(!gw.log_text().contains("rejected"), "{}", gw.log_text());
}

#[test]
fn a_reload_changes_the_served_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let (first_crt, first_key) = pki.leaf("first", "gateway-first");
    let (second_crt, second_key) = pki.leaf("second", "gateway-second");
    let (http, admin, https, port) = (free_port(), free_port(), free_port(), free_port());
    let config = |crt: &Path, key: &Path| {
        format!(
            "{}tls:\n  listen: 127.0.0.1:{https}\n  certFile: {}\n  keyFile: {}\n",
            store_config(http, admin, port, d, "    writeKey: one\n"),
            crt.display(),
            key.display()
        )
    };
    let gw = Gateway::start(d, &config(&first_crt, &first_key), https);
    assert!(served_cn(https).contains("gateway-first"), "{}", served_cn(https));
    assert!(served_cn(port).contains("gateway-first"), "the store: {}", served_cn(port));
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    assert_eq!(upload(&format!("https://127.0.0.1:{port}"), "one", "a.bin", 10, &["--cacert", ca]), 201);

    // Other files named by the config: both listeners serve them from the next handshake.
    gw.reload(&config(&second_crt, &second_key));
    assert!(served_cn(https).contains("gateway-second"), "{} {}", served_cn(https), gw.log_text());
    assert!(served_cn(port).contains("gateway-second"), "the store: {}", served_cn(port));
    assert_eq!(upload(&format!("https://127.0.0.1:{port}"), "one", "b.bin", 10, &["--cacert", ca]), 201);

    // Files that do not load (a key not matching the certificate) reject the whole config:
    // the previous certificate keeps serving.
    gw.rewrite(&config(&first_crt, &second_key));
    let deadline = Instant::now() + RELOAD_WITHIN;
    while !gw.log_text().contains("new config rejected") {
        assert!(Instant::now() < deadline, "a bad pair was not rejected: {}", gw.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served_cn(https).contains("gateway-second"), "{}", served_cn(https));
}
