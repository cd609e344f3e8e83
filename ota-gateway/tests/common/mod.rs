//! Shared helpers of the integration tests: the real registry (started once per
//! test process through the project script), pushing with the real `oras` CLI,
//! an in-process gateway, the gateway binary run on a config file, and a throttling
//! TCP proxy for slow-registry cases.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use e2e::run;
use ota_gateway::AppState;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use updraft_core::config::{ArtifactConfig, ChannelConfig, GatewayConfig, PinnedArtifact, SourceConfig};

/// The shared registry: address and storage directory.
pub struct Registry {
    pub addr: String,
    pub dir: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Starts (or reuses) the registry with `e2e/scripts/cluster.sh registry` and makes
/// sure `oras` is installed. Panics with the script's output when it fails.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let script = workspace().join("e2e/scripts/cluster.sh");
        let out = Command::new("bash").arg(&script).arg("registry").output().expect("run cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{} registry` failed:\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let export = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("cluster.sh printed no {name}:\n{stdout}"))
                .to_owned()
        };
        ensure_oras(&script);
        Registry { addr: export("UPDRAFT_REGISTRY"), dir: export("UPDRAFT_REGISTRY_DIR").into() }
    })
}

fn ensure_oras(script: &Path) {
    if Command::new("oras").arg("version").output().is_ok_and(|o| o.status.success()) {
        return;
    }
    // `tools` also installs helm, which may fail on its own; only oras matters here.
    let out = Command::new("bash").arg(script).arg("tools").output().expect("run cluster.sh tools");
    let ok = Command::new("oras").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "oras is not installed and `cluster.sh tools` did not install it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository name no other test (or earlier run) uses.
pub fn unique_repo(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("test/{name}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Random bytes, so no two tests (or runs) share a blob in the registry's storage.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    data
}

/// `oras push --plain-http REGISTRY/REPO:TAG file:mediatype…` from `dir`; returns
/// the manifest digest.
pub fn oras_push(registry: &str, repo: &str, tag: &str, dir: &Path, files: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("oras");
    cmd.current_dir(dir).args(["push", "--plain-http", &format!("{registry}/{repo}:{tag}")]);
    for (file, media_type) in files {
        cmd.arg(format!("{file}:{media_type}"));
    }
    run(&mut cmd);
    resolve(registry, repo, tag)
}

/// The digest a tag points at, per `oras resolve`.
pub fn resolve(registry: &str, repo: &str, tag: &str) -> String {
    run(Command::new("oras").args(["resolve", "--plain-http", &format!("{registry}/{repo}:{tag}")])).trim().to_owned()
}

/// Writes `data` to `dir/name` and pushes it as the single layer of `repo:tag`.
pub fn push_file(
    registry: &str,
    repo: &str,
    tag: &str,
    dir: &Path,
    name: &str,
    media_type: &str,
    data: &[u8],
) -> String {
    std::fs::write(dir.join(name), data).unwrap();
    oras_push(registry, repo, tag, dir, &[(name, media_type)])
}

/// Pushes an OCI image index over existing manifests with `oras manifest push`.
/// Each entry: manifest digest, platform JSON (or null), annotations JSON (or null).
pub fn push_index(
    registry: &str,
    repo: &str,
    tag: &str,
    dir: &Path,
    entries: &[(&str, serde_json::Value, serde_json::Value)],
) -> String {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(digest, platform, annotations)| {
            let raw = run(Command::new("oras").args([
                "manifest",
                "fetch",
                "--plain-http",
                &format!("{registry}/{repo}@{digest}"),
            ]));
            let mut entry = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": raw.len(),
            });
            if !platform.is_null() {
                entry["platform"] = platform.clone();
            }
            if !annotations.is_null() {
                entry["annotations"] = annotations.clone();
            }
            entry
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let path = dir.join(format!("index-{tag}.json"));
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    run(Command::new("oras")
        .args([
            "manifest",
            "push",
            "--plain-http",
            "--media-type",
            "application/vnd.oci.image.index.v1+json",
            &format!("{registry}/{repo}:{tag}"),
        ])
        .arg(&path));
    resolve(registry, repo, tag)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A pinned channel over `registry/repo`.
pub fn channel(name: &str, registry: &str, repo: &str, current: (&str, &str, &str)) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        device: None,
        source: SourceConfig {
            registry: registry.into(),
            repository: repo.into(),
            insecure: true,
            docker_config: None,
        },
        artifact: ArtifactConfig::default(),
        current: Some(pinned(current)),
        previous: None,
        policy: None,
        rollout: 100,
        highest_served: None,
        downgrade: Default::default(),
        deltas: Default::default(),
    }
}

/// `(version, tag, digest)` → a pinned artifact.
pub fn pinned((version, tag, digest): (&str, &str, &str)) -> PinnedArtifact {
    PinnedArtifact { version: version.into(), tag: tag.into(), digest: digest.into() }
}

/// A config with a cache in `cache_dir` and the given channels.
pub fn config(cache_dir: &Path, channels: Vec<ChannelConfig>) -> GatewayConfig {
    let mut c = GatewayConfig { channels, ..Default::default() };
    c.cache.dir = cache_dir.to_owned();
    c.listen = "127.0.0.1:0".into();
    c.admin_listen = "127.0.0.1:0".into();
    c
}

/// A gateway served in-process on ephemeral ports.
pub struct Gateway {
    pub url: String,
    pub admin_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
}

impl Gateway {
    pub async fn start(config: GatewayConfig) -> Self {
        let state = AppState::from_config(config).expect("config applies");
        Self::serve(state).await
    }

    /// Serves `state` as `ota_gateway::serve` would (the config's `sendfile` switch
    /// included), on ephemeral ports.
    pub async fn serve(state: AppState) -> Self {
        let public = ota_gateway::DeviceListener::bind("127.0.0.1:0").await.unwrap();
        let public = public.with_sendfile(state.config().sendfile);
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", public.local_addr().unwrap());
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        tokio::spawn(axum::serve(public, ota_gateway::app(state.clone())).into_future());
        tokio::spawn(axum::serve(admin, ota_gateway::admin_app(state.clone())).into_future());
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { url, admin_url, state, http }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.unwrap()
    }

    /// Polls `path` until it answers 200 (the artifact got fetched), at most 60 s.
    pub async fn wait_ok(&self, path: &str) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(path).await;
            if r.status() == 200 {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {} after 60 s: {}",
                r.status(),
                r.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin_url)).send().await.unwrap().text().await.unwrap()
    }
}

use std::future::IntoFuture;

/// A TCP proxy in front of the registry that can hold traffic (paused) or
/// throttle it, to make a fetch observable while it is under way.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
}

impl Proxy {
    /// Starts paused when `paused`; `bytes_per_sec` 0 means unthrottled.
    pub async fn start(upstream: &str, paused: bool, bytes_per_sec: u64) -> Arc<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = watch::channel(paused);
        let proxy = Arc::new(Proxy { addr: listener.local_addr().unwrap(), paused: tx });
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, rx) = (upstream.clone(), rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, rx.clone(), 0), pipe(sr, cw, rx, bytes_per_sec));
                });
            }
        });
        proxy
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    bytes_per_sec: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let _ = paused.wait_for(|p| !p).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if bytes_per_sec > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64)).await;
        }
    }
    let _ = to.shutdown().await;
}

/// Bytes sent with sendfile since `before`, once at least `at_least` (or after 5 s).
/// The counter moves just after the syscall, which can be after a client has read the
/// bytes, so a check right after a download may see it a little late.
pub async fn zero_copied_since(before: u64, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ota_gateway::sendfile::bytes_sent() - before < at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ota_gateway::sendfile::bytes_sent() - before
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A registry process of a test's own (own port and storage), killed on drop, for
/// cases that stop the registry without disturbing the shared one.
pub struct OwnRegistry {
    pub addr: String,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl OwnRegistry {
    pub async fn start(dir: &Path) -> Self {
        registry(); // installs docker-registry and oras
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}\n", storage.display()),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("http://{addr}/v2/")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "own registry on {addr} did not start; see {}",
                dir.join("registry.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { addr, dir: storage, child }
    }

    /// Kills the registry (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Swaps the config symlink `link` to a fresh directory (under `dir`) holding
/// `content`, as kubelet does with a mounted ConfigMap.
pub fn swap_config(dir: &Path, link: &Path, generation: u32, content: &str) {
    let data = dir.join(format!("..data-{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("gateway.yaml"), content).unwrap();
    let tmp = dir.join("gateway.yaml.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.join("gateway.yaml"), &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// A child process, killed (SIGKILL) and reaped when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Self(child)
    }

    /// Starts the gateway binary on `config` with `args` after it.
    pub fn gateway(config: &Path, args: &[&str], log: &Path) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_ota-gateway")).arg("--config").arg(config).args(args), log)
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Downloads the `len` bytes at `url`, reading about `bytes_per_sec` (so a kill finds
/// it mid-body); after any failure it resumes from the bytes it has with `Range` and
/// `If-Range: etag`. An answer other than 200 (first) or 206 (resumed) is retried when
/// its status is in `retry_on`, and fails the test otherwise. Returns the SHA-256 of
/// what it got and how many times it resumed.
pub async fn download_resuming(
    url: &str,
    etag: &str,
    len: usize,
    bytes_per_sec: f64,
    retry_on: &[u16],
) -> (String, u32) {
    use futures::StreamExt;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut sha = Sha256::new();
    let (mut got, mut resumes) = (0usize, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    while got < len {
        assert!(Instant::now() < deadline, "download of {url} stuck at {got} bytes");
        let mut req = http.get(url);
        if got != 0 {
            req = req.header("Range", format!("bytes={got}-")).header("If-Range", etag);
        }
        let Ok(response) = req.send().await else {
            pause().await;
            continue;
        };
        let expected = if got == 0 { 200 } else { 206 };
        if response.status() != expected {
            assert!(retry_on.contains(&response.status().as_u16()), "{url}: {} at {got} bytes", response.status());
            pause().await;
            continue;
        }
        if got != 0 {
            resumes += 1;
            let range = response.headers()["content-range"].to_str().unwrap().to_owned();
            assert_eq!(range, format!("bytes {got}-{}/{len}", len - 1));
        }
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            got += chunk.len();
            sha.update(&chunk);
            tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / bytes_per_sec)).await;
        }
    }
    (hex::encode(sha.finalize()), resumes)
}

/// The gateway binary running on the config file `dir/gateway.yaml`, its output in
/// `dir/gateway.log`; killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Runs `cmd` (the binary and its environment) with `--config dir/gateway.yaml`,
    /// already written, and waits up to 20 s until it listens on `port`.
    pub fn start(mut cmd: Command, dir: &Path, port: u16) -> Self {
        let log = dir.join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .arg("--config")
            .arg(dir.join("gateway.yaml"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let gateway = Self { child, dir: dir.to_owned(), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "gateway did not listen: {}", gateway.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `curl -sS -m 10 ARGS`: its stdout and stderr, whatever its exit status.
pub fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "-m", "10"]).args(args).stderr(Stdio::piped()).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The subject of the certificate served on `port` now, per `openssl s_client`.
pub fn served_cn(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
