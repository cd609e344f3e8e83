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
        last = status(&[
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
        ])
        .await;
        if last != 201 {
            return last;
        }
        from = to + 1;
    }
    last
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under `dir` (relative paths), leaving out the store's own `.updraft`.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == ".updraft" {
                continue;
            }
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
