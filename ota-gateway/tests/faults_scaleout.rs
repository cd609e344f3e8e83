//! Scale-out: three gateway processes (the binary) with the same channels, each with
//! its own cache as pods have, behind nginx round robin (Debian's nginx, installed by
//! `cluster.sh tools`). One is killed with -9 under load: `/version` pollers through
//! nginx see no failure (nginx passes a request that met a dead upstream to the next),
//! and every download the kill cut resumes with `Range` + `If-Range` through another
//! gateway (the ETag is the payload's SHA-256, the same on every gateway) and ends
//! byte-exact. Figures printed as `FIGURE …` (`-- --nocapture`).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const RAW: &str = "application/vnd.updraft.firmware.v1";
const LEN: usize = 32 << 20;
const DOWNLOADS: usize = 16;
/// Each client reads this fast, so downloads are under way when a gateway dies (more
/// than the gateway's and nginx's socket buffers hold ahead of it).
const CLIENT_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_behind_nginx_one_killed_under_load() {
    let work = tempfile::tempdir().unwrap();
    let reg = registry();
    let repo = unique_repo("scaleout");
    let bytes = random_bytes(LEN);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &bytes);
    let channels = vec![channel("fw", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest))];

    let mut gateways = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let mut cfg = config(&work.path().join(format!("cache-{i}")), channels.clone());
        let port = free_port();
        cfg.listen = format!("127.0.0.1:{port}");
        cfg.admin_listen = format!("127.0.0.1:{}", free_port());
        let path = work.path().join(format!("gateway-{i}.yaml"));
        std::fs::write(&path, cfg.to_yaml()).unwrap();
        gateways.push(Some(Proc::gateway(&path, &[], &work.path().join(format!("gateway-{i}.log")))));
        ports.push(port);
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for port in &ports {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{port}/firmware?device=fw");
        while !http.head(&url).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "gateway on {port} never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let nginx_dir = work.path().join("nginx");
    std::fs::create_dir_all(nginx_dir.join("tmp")).unwrap();
    let nginx_port = free_port();
    let servers: String =
        ports.iter().map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n")).collect();
    let conf = format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\ndaemon off;\nevents {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir}/tmp/body;\n proxy_temp_path {dir}/tmp/proxy;\n\
         upstream gateways {{\n{servers} keepalive 16;\n }}\n\
         server {{\n  listen 127.0.0.1:{nginx_port};\n  location / {{\n   proxy_pass http://gateways;\n\
           proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n   proxy_buffering off;\n\
           proxy_connect_timeout 1s;\n   proxy_next_upstream error timeout;\n  }}\n }}\n}}\n",
        dir = nginx_dir.display()
    );
    std::fs::write(nginx_dir.join("nginx.conf"), conf).unwrap();
    let nginx_bin = ["/usr/sbin/nginx", "nginx"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nginx");
    let mut cmd = Command::new(nginx_bin);
    cmd.arg("-p")
        .arg(&nginx_dir)
        .arg("-c")
        .arg(nginx_dir.join("nginx.conf"))
        .arg("-e")
        .arg(nginx_dir.join("error.log"));
    let _nginx = Proc::spawn(&mut cmd, &nginx_dir.join("stdout.log"));
    let base = format!("http://127.0.0.1:{nginx_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http.get(format!("{base}/version?device=fw")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "nginx never answered: {:?}",
            std::fs::read_to_string(nginx_dir.join("error.log"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Load: downloads and /version pollers through nginx.
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let resumed = Arc::new(AtomicU64::new(0));
    let url = format!("{base}/firmware?device=fw");
    let downloads: Vec<_> = (0..DOWNLOADS)
        .map(|_| {
            let (url, etag, resumed) = (url.clone(), etag.clone(), resumed.clone());
            tokio::spawn(async move {
                // Through nginx every answer is 200/206: a dead upstream's request goes to the next.
                let (sha, resumes) = download_resuming(&url, &etag, LEN, CLIENT_BYTES_PER_SEC, &[]).await;
                resumed.fetch_add(u64::from(resumes), Ordering::Relaxed);
                sha
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let want_version = format!("1.0.0\n{}\n{LEN}", crc32fast::hash(&bytes));
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, stop, want) =
                (http.clone(), format!("{base}/version?device=fw"), stop.clone(), want_version.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let body = r.text().await.unwrap_or_default();
                            if body == want {
                                ok += 1;
                            } else {
                                failed.push(format!("body {body:?}"));
                            }
                        }
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("error {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (ok, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    let mut victim = gateways[1].take().unwrap();
    victim.kill(); // SIGKILL

    let mut shas = Vec::new();
    for d in downloads {
        shas.push(d.await.unwrap());
    }
    let downloads_done = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut polled, mut failures) = (0u64, Vec::new());
    for p in pollers {
        let (ok, failed) = p.await.unwrap();
        polled += ok;
        failures.extend(failed);
    }
    let resumed = resumed.load(Ordering::Relaxed);
    assert!(shas.iter().all(|s| *s == sha256_hex(&bytes)), "a download ended with other bytes");
    assert!(resumed > 0, "the kill interrupted no download: the test proved nothing");
    assert!(
        failures.is_empty(),
        "{} of {} /version requests failed: {:?}",
        failures.len(),
        polled,
        &failures[..failures.len().min(5)]
    );
    println!(
        "FIGURE scale-out-kill-9: 3 gateways behind nginx round robin, one killed with -9 2 s into {DOWNLOADS} downloads \
         of {} MiB (2 MiB/s each): {resumed} downloads resumed with Range + If-Range through another gateway, all \
         {DOWNLOADS} byte-exact, done {downloads_done:?} after the kill; {polled} /version requests through nginx, 0 failed",
        LEN >> 20
    );
}
