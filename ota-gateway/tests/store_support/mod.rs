//! Helpers of the store and mirror tests: stores served in-process on loopback, and
//! `curl` run the way filuxe users run it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use ota_gateway::store::{self, Store};
use sha2::{Digest, Sha256};
use updraft_core::config::StoreConfig;

pub const KEY: &str = "s3cret-write-key";

/// A store served in-process; stopped when dropped.
pub struct TestStore {
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn store_config(dir: &Path, listen: &str, max_upload_bytes: u64) -> StoreConfig {
    StoreConfig {
        name: "test".into(),
        listen: listen.into(),
        dir: dir.to_owned(),
        write_key: Some(KEY.into()),
        write_key_file: None,
        public_reads: true,
        read_key_file: None,
        max_upload_bytes,
        // The tests write over loopback HTTP; refusing plain writes has its own test.
        allow_plain_writes: true,
    }
}

impl TestStore {
    /// Serves a store over `dir` on `listen` (e.g. `127.0.0.1:0`).
    pub async fn start(config: StoreConfig) -> Self {
        let dir = config.dir.clone();
        let listener = ota_gateway::DeviceListener::bind(&config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = Store::open(config).unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, store::router(store)).await;
        });
        Self { url: format!("http://{addr}"), addr, dir, server }
    }
}

/// Runs curl with `args`; returns its output (`-w '%{http_code}'` makes stdout end
/// with the status).
pub async fn curl(args: &[&str]) -> Output {
    tokio::process::Command::new("curl").args(["-sS", "--path-as-is"]).args(args).output().await.expect("run curl")
}

/// The status code curl reports for a request (body sent to /dev/null).
pub async fn status(args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all).await;
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("curl {args:?}: {out:?}"))
}

/// filuxe's chunked upload with curl: chunks of `chunk` bytes, each a POST with
/// `Content-Range`, the key header, `time` and `force`. Stops at the first answer
/// other than 201 and returns it (filuxe's client does the same).
pub async fn upload_chunked(url: &str, path: &str, file: &Path, chunk: usize, time: f64, force: bool) -> u16 {
    upload_chunked_with(url, path, file, chunk, time, force, &[]).await
}

/// [`upload_chunked`] with more curl arguments (e.g. `--cacert`).
pub async fn upload_chunked_with(
    url: &str,
    path: &str,
    file: &Path,
    chunk: usize,
    time: f64,
    force: bool,
    extra: &[&str],
) -> u16 {
    let size = std::fs::metadata(file).unwrap().len() as usize;
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(file).unwrap();
    let force = if force { "True" } else { "False" };
    let mut from = 0;
    let mut last = 0;
    while from < size {
        let to = (from + chunk).min(size) - 1;
        let piece = dir.path().join("piece");
        std::fs::write(&piece, &data[from..=to]).unwrap();
        let range = format!("Content-Range: bytes {from}-{to}/{size}");
        let key = format!("key: {KEY}");
        let target = format!("{url}/upload/{path}?time={time}&force={force}");
        let body = format!("@{}", piece.display());
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            &key,
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            &range,
            "--data-binary",
            &body,
            &target,
        ];
        args.extend_from_slice(extra);
        last = status(&args).await;
        if last != 201 {
            return last;
        }
        from = to + 1;
    }
    last
}

/// The state directory of the store served from `dir` (see `store/layout.rs`).
pub fn state_of(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap().to_string_lossy();
    dir.with_file_name(format!(".{name}.updraft"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under `dir` (relative paths). The store keeps its own state beside its
/// directory, so this is exactly what users uploaded.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

/// Deterministic, incompressible-looking bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A child process of the test, killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    /// Runs the gateway binary with `args`, its output in `log`.
    pub fn gateway(args: &[&str], log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ota-gateway"))
            .args(args)
            .env("RUST_LOG", "info,ota_gateway=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start ota-gateway");
        Self { child, log: log.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Anonymous resident memory (kB), from /proc.
    pub fn rss_anon_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gateway process serving one store (`store_port`) over `dir`.
pub struct Gateway {
    pub proc: Proc,
    pub url: String,
    pub dir: PathBuf,
}

/// How [`Gateway::start_with`] sets up the gateway's store.
#[derive(Clone, Debug, Default)]
pub struct StoreSetup {
    /// `allowPlainWrites` of the store.
    pub allow_plain_writes: bool,
    /// The gateway's `tls` section (certificate, key): the store then speaks HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Gateway {
    /// Starts the binary with a config of one store that accepts plain writes (the
    /// tests write over loopback HTTP) and waits until it answers.
    pub async fn start(work: &Path, name: &str, store_port: u16) -> Self {
        Self::start_with(work, name, store_port, StoreSetup { allow_plain_writes: true, tls: None }).await
    }

    /// Starts the binary with a config of one store set up as `setup` says and waits
    /// until it answers (over HTTPS, trusting the certificate, when `tls` is set).
    pub async fn start_with(work: &Path, name: &str, store_port: u16, setup: StoreSetup) -> Self {
        let dir = work.join(format!("{name}-store"));
        let config = work.join(format!("{name}.yaml"));
        let mut text = format!(
            "listen: 127.0.0.1:{}\nadminListen: 127.0.0.1:{}\ncache: {{dir: {}}}\nstores:\n- name: {name}\n  listen: 127.0.0.1:{store_port}\n  dir: {}\n  writeKey: {KEY}\n  allowPlainWrites: {}\n",
            free_port(),
            free_port(),
            work.join(format!("{name}-cache")).display(),
            dir.display(),
            setup.allow_plain_writes,
        );
        if let Some((cert, key)) = &setup.tls {
            text += &format!(
                "tls: {{listen: '127.0.0.1:{}', certFile: {}, keyFile: {}}}\n",
                free_port(),
                cert.display(),
                key.display()
            );
        }
        std::fs::write(&config, text).unwrap();
        let proc = Proc::gateway(&["--config", config.to_str().unwrap()], &work.join(format!("{name}.log")));
        let scheme = if setup.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{store_port}");
        let ready = wait_for(std::time::Duration::from_secs(30), || async {
            let status_url = format!("{url}/api/status");
            let mut args = vec!["-f", "-o", "/dev/null", status_url.as_str()];
            if let Some((cert, _)) = &setup.tls {
                args.extend(["--cacert", cert.to_str().unwrap()]);
            }
            curl(&args).await.status.success()
        })
        .await;
        assert!(ready, "gateway {name} did not start:\n{}", proc.log_text());
        Self { proc, url, dir }
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` made by openssl(1), and
/// its key: `(cert, key)` in `dir`. Clients trust it with `--cacert <cert>`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=updraft-store-test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The worker's `/mirrors` status of `name` (JSON), if it answers.
pub async fn mirror_status(admin: &str, name: &str) -> Option<serde_json::Value> {
    let all: serde_json::Value = reqwest::get(format!("{admin}/mirrors")).await.ok()?.json().await.ok()?;
    all.as_array()?.iter().find(|s| s["name"] == name).cloned()
}

/// A TCP proxy that passes at most `bytes_per_sec` in each direction.
pub async fn throttle(upstream: String, bytes_per_sec: u64) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, rate: u64) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let _ = to.shutdown().await;
    }
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pipe(cr, sw, bytes_per_sec), pipe(sr, cw, bytes_per_sec));
            });
        }
    });
    (addr, task)
}

/// The shared registry of the test suite (`e2e/scripts/cluster.sh registry`): its address.
pub fn registry() -> String {
    static REGISTRY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/scripts/cluster.sh");
            let out = std::process::Command::new("bash").arg(&script).arg("registry").output().expect("cluster.sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "cluster.sh registry failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let works = |tool: &str, arg: &str| {
                std::process::Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success())
            };
            if !works("oras", "version") || !works("skopeo", "--version") {
                // `tools` installs oras and skopeo (and more); only those two matter here.
                let _ = std::process::Command::new("bash").arg(&script).arg("tools").output();
                assert!(
                    works("oras", "version") && works("skopeo", "--version"),
                    "cluster.sh tools did not install oras and skopeo"
                );
            }
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("export UPDRAFT_REGISTRY="))
                .expect("cluster.sh printed UPDRAFT_REGISTRY")
                .to_owned()
        })
        .clone()
}
