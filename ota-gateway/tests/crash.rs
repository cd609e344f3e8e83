//! The binary: `--help`/`--version`, and kill -9 in the middle of a fetch leaves
//! nothing that could be served; the restart fetches again, correctly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ota-gateway");

fn files_in(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())).collect()
        })
        .unwrap_or_default()
}

#[test]
fn cli_has_help_and_version() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--config") && text.contains("--log-format"), "{text}");
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ota-gateway "));
    let missing = Command::new(BIN).args(["--config", "/nonexistent.yaml"]).stderr(Stdio::piped()).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_fetch_leaves_no_partial_payload() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("crash");
    let firmware = random_bytes(16 << 20);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "big.bin", "application/octet-stream", &firmware);
    // 4 MiB/s: the fetch takes about four seconds, time enough to kill it.
    let proxy = Proxy::start(&reg.addr, false, 4 << 20).await;
    let cache = work.path().join("cache");
    let (port, admin_port) = (free_port(), free_port());
    let write_config = |registry: &str| {
        let mut cfg = config(&cache, vec![channel("big", registry, &repo, ("1.0.0", "1.0.0", &digest))]);
        cfg.listen = format!("127.0.0.1:{port}");
        cfg.admin_listen = format!("127.0.0.1:{admin_port}");
        let path = work.path().join("gateway.yaml");
        std::fs::write(&path, cfg.to_yaml()).unwrap();
        path
    };

    let mut gateway = Proc::gateway(
        &write_config(&proxy.addr.to_string()),
        &["--log-format", "json"],
        &work.path().join("first.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files_in(&cache.join("tmp")).iter().any(|(_, len)| *len > 0) {
        assert!(Instant::now() < deadline, "no fetch started; see first.log");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.kill(); // SIGKILL
    assert!(!files_in(&cache.join("tmp")).is_empty(), "the killed fetch left its temp file");
    assert!(files_in(&cache.join("blobs")).is_empty(), "nothing reached the cache");

    let mut gateway =
        Proc::gateway(&write_config(&reg.addr), &["--log-format", "json"], &work.path().join("second.log"));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/firmware?device=big");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status() == 200 {
                break r.bytes().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "restarted gateway never served; see second.log");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sha256_hex(&body), sha256_hex(&firmware));
    assert!(files_in(&cache.join("tmp")).is_empty(), "start-up removed the stray temp file");
    let blobs = files_in(&cache.join("blobs"));
    assert!(blobs.contains(&(sha256_hex(&firmware), firmware.len() as u64)), "{blobs:?}");
    Command::new("kill").args(["-TERM", &gateway.0.id().to_string()]).status().unwrap();
    assert!(gateway.0.wait().unwrap().success(), "SIGTERM shuts down cleanly");
}
