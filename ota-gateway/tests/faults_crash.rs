//! kill -9 of the gateway binary under 64 concurrent downloads, then a restart with the
//! registry gone: the cache is intact (served without the registry), and every client
//! that retries with `Range` + `If-Range` completes with exactly the right bytes.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use e2e::faults::FaultProxy;

const RAW: &str = "application/vnd.updraft.firmware.v1";
const LEN: usize = 32 << 20;
/// Each client reads this fast, so every download is under way when the gateway dies
/// (more than the loopback socket buffers can hold ahead of it).
const CLIENT_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_64_downloads_then_restart_without_registry() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("kill9");
    let firmware = random_bytes(LEN);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &firmware);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    let cache = work.path().join("cache");
    let mut cfg = config(&cache, vec![channel("esp32", &proxy.addr(), &repo, ("1.0.0", "1.0.0", &digest))]);
    let port = free_port();
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.admin_listen = format!("127.0.0.1:{}", free_port());
    let config_file = work.path().join("gateway.yaml");
    std::fs::write(&config_file, cfg.to_yaml()).unwrap();
    let log = work.path().join("gateway.log");
    let mut gw = Proc::gateway(&config_file, &[], &log);
    let url = format!("http://127.0.0.1:{port}/firmware?device=esp32");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "never served:\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From now on the registry is gone: whatever is served comes from the cache.
    proxy.set_down(true);
    let etag = format!("\"{}\"", sha256_hex(&firmware));

    let resumed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (url, etag, resumed) = (url.clone(), etag.clone(), resumed.clone());
            tokio::spawn(async move {
                let (sha, resumes) = download_resuming(&url, &etag, LEN, CLIENT_BYTES_PER_SEC, &[502, 503]).await;
                resumed.fetch_add(u64::from(resumes), Ordering::Relaxed);
                (sha, resumes)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    gw.kill(); // SIGKILL
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _restarted = Proc::gateway(&config_file, &[], &log);
    let restart_to_ready = {
        let start = Instant::now();
        while !http.get(&url).header("Range", "bytes=0-0").send().await.is_ok_and(|r| r.status() == 206) {
            assert!(start.elapsed() < Duration::from_secs(30), "restart never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    };
    let mut interrupted = 0;
    for c in clients {
        let (sha, resumes) = c.await.unwrap();
        assert_eq!(sha, sha256_hex(&firmware), "a client got wrong bytes");
        if resumes > 0 {
            interrupted += 1;
        }
    }
    let total = killed_at.elapsed();
    assert!(interrupted > 0, "the kill interrupted no download; the test proved nothing");
    assert_eq!(proxy.refused(), 0, "the restarted gateway never needed the registry: the cache was intact");
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("tmp")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    println!(
        "FIGURE kill-9: 64 downloads of 32 MiB, {interrupted} interrupted and resumed with Range ({} resumes), all \
         byte-exact; restarted gateway served from its cache {restart_to_ready:?} after start, registry unused; all \
         done {total:?} after the kill",
        resumed.load(Ordering::Relaxed)
    );
}
