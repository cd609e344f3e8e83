//! The config reloaded every 100 ms (a kubelet-style symlink swap, picked up by the
//! real watcher) while 64 connections poll `/version` and download `/firmware`: zero
//! errors, every body right, every reload applied.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ota_gateway::reload::Watcher;
use updraft_core::config::GatewayConfig;

const RAW: &str = "application/vnd.updraft.firmware.v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_every_100ms_under_64_connections_cause_no_error() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("reload-load");
    let (firmware, other) = (random_bytes(100_000), random_bytes(5_000));
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "a.bin", RAW, &firmware);
    let d2 = push_file(&reg.addr, &repo, "2.0.0", work.path(), "b.bin", RAW, &other);
    let cache = work.path().join("cache");
    let base = config(&cache, vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "1.0.0", &d1))]);
    let mut with_other = base.clone();
    with_other.channels.push(channel("other", &reg.addr, &repo, ("2.0.0", "2.0.0", &d2)));
    with_other.public_url = Some("http://gw.example".into());
    let link = work.path().join("gateway.yaml");
    swap_config(work.path(), &link, 0, &with_other.to_yaml());
    let gw = Gateway::start(GatewayConfig::load(&link).unwrap()).await;
    gw.wait_ok("/firmware?device=esp32").await;
    gw.wait_ok("/firmware?device=other").await;

    let version = format!("1.0.0\n{}\n{}", crc32fast::hash(&firmware), firmware.len());
    let sha = sha256_hex(&firmware);
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for i in 0..64 {
        let (url, stop, requests, errors) = (gw.url.clone(), stop.clone(), requests.clone(), errors.clone());
        let (version, sha) = (version.clone(), sha.clone());
        // One client per connection: reqwest keeps it alive across requests.
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(10)).build().unwrap();
        clients.push(tokio::spawn(async move {
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let ok = if i % 2 == 0 {
                    match http.get(format!("{url}/version?device=esp32")).send().await {
                        Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t == version),
                        _ => false,
                    }
                } else {
                    match http.get(format!("{url}/firmware?device=esp32")).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| sha256_hex(&b) == sha),
                        other => {
                            first_error.get_or_insert(format!("{other:?}"));
                            false
                        }
                    }
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            first_error
        }));
    }

    let mut watcher = Watcher::new(link.clone(), gw.state.clone());
    let start = Instant::now();
    let mut applied = 0u32;
    let mut generation = 1;
    while start.elapsed() < Duration::from_secs(10) {
        let next = if generation % 2 == 0 { &with_other } else { &base };
        swap_config(work.path(), &link, generation, &next.to_yaml());
        generation += 1;
        if watcher.poll() {
            applied += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut first_errors = Vec::new();
    for c in clients {
        if let Some(e) = c.await.unwrap() {
            first_errors.push(e);
        }
    }
    let (requests, errors) = (requests.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    assert_eq!(applied, generation - 1, "every swap applied");
    assert_eq!(errors, 0, "{errors} of {requests} requests failed; first: {:?}", first_errors.first());
    assert!(requests > 1000, "only {requests} requests in 10 s");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(r#"updraft_gateway_config_reloads_total{{result="applied"}} {applied}"#)),
        "{metrics}"
    );
    println!(
        "FIGURE reload-under-load: {applied} reloads in 10 s (every 100 ms) under 64 connections; {requests} requests \
         (/version and 100 kB downloads), {errors} errors"
    );
}
