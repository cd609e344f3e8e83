//! Idle and slow-header connections against the gateway binary: thousands of
//! connections that send nothing, or a request head one byte a second, must not stop a
//! normal client from being served fast, must be closed by the header read timeout
//! (`ota_gateway::server::HEADER_READ_TIMEOUT`), and must cost bounded memory; a
//! request head over `ota_gateway::server::MAX_HEAD_BYTES` is answered 431.
//!
//! CI opens 2,000 connections; `UPDRAFT_IDLE_CONNS=10000` by hand. Figures printed as
//! `FIGURE …` (`-- --nocapture`): the gateway's RssAnon before, with the connections
//! open, and after they are closed; `/version` latency idle and under the load.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ota_gateway::server::{HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// A field of `/proc/PID/status` in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// `n` sequential `/version` requests on one keep-alive client: the 50th and 99th
/// percentile latency; every answer must be 200.
async fn version_latency(http: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

/// Whether the server has closed `conn` (EOF, a reset, or an answer such as 408
/// followed by EOF), waiting at most `wait`.
async fn closed_by_server(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_timed_out_while_clients_are_served() {
    let n: usize = std::env::var("UPDRAFT_IDLE_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    // This process holds every client socket: make room (the gateway raises its own).
    let _ = Command::new("prlimit")
        .args([format!("--pid={}", std::process::id()), format!("--nofile={}:{}", n + 1024, n + 1024)])
        .status();

    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("idle");
    let bytes = random_bytes(100_000);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &bytes);
    let mut cfg =
        config(&work.path().join("cache"), vec![channel("fw", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest))]);
    let port = free_port();
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.admin_listen = format!("127.0.0.1:{}", free_port());
    let config_path = work.path().join("gateway.yaml");
    std::fs::write(&config_path, cfg.to_yaml()).unwrap();
    let gw = Proc::gateway(&config_path, &[], &work.path().join("gateway.log"));
    let pid = gw.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/version?device=fw");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "the gateway never served /version");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The device listener still sends payloads with sendfile through this server.
    let body = http.get(format!("{base}/firmware?device=fw")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
    // The counter moves just after the syscall, maybe after the client read the bytes.
    let admin = format!("http://{}/metrics", cfg.admin_listen);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http.get(&admin).send().await.unwrap().text().await.unwrap();
        let zero_copied: u64 = metrics
            .lines()
            .find(|l| l.starts_with("updraft_gateway_sendfile_bytes_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0);
        if zero_copied > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sendfile not used: {zero_copied} bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Idle figures, after a warm-up.
    version_latency(&http, &url, 200).await;
    let (idle_p50, idle_p99) = version_latency(&http, &url, 500).await;
    let rss_before = status_kb(pid, "RssAnon:");

    // Half the connections send nothing; half start a request head and add one byte
    // a second, never finishing it.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(n / 2);
    let mut slow = Vec::with_capacity(n - n / 2);
    for i in 0..n {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 1 {
            conn.write_all(b"GET /version?device=fw HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            slow.push(conn);
        } else {
            idle.push((conn, Instant::now()));
        }
    }
    let open_took = opened.elapsed();
    let trickle_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = trickle_stop.clone();
    let trickler = tokio::spawn(async move {
        let mut sent = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for conn in slow.iter_mut() {
                if conn.write_all(b"X").await.is_ok() {
                    sent += 1;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (slow, sent)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_loaded = open_fds(pid);
    let rss_loaded = status_kb(pid, "RssAnon:");
    let (load_p50, load_p99) = version_latency(&http, &url, 500).await;
    assert!(fds_loaded >= n, "the gateway holds {fds_loaded} descriptors, fewer than the {n} connections");

    // A head over the limit: 431; one just under it: served.
    let big = format!("GET /version?device=fw HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(big.as_bytes()).await.unwrap_or_default();
    let mut answer = vec![0u8; 64];
    let got = conn.read(&mut answer).await.unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..got]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "a {} KiB head: {answer:?}", big.len() / 1024);
    let fits = http.get(&url).header("x-big", "a".repeat(MAX_HEAD_BYTES - 2048)).send().await.unwrap();
    assert_eq!(fits.status(), 200, "a head just under the limit is served");

    // Every one of them is closed by the header read timeout, counted from when it
    // opened (the slow ones although they keep sending). Each idle connection's
    // deadline is its own: opening 2,000 took 5.2 s on a loaded CI machine, and a
    // deadline counted from the first one failed the last ones closed on time.
    let mut idle_closed = 0;
    for (conn, its_opening) in idle.iter_mut() {
        let deadline = *its_opening + HEADER_READ_TIMEOUT + Duration::from_secs(5);
        if closed_by_server(conn, deadline.saturating_duration_since(Instant::now())).await {
            idle_closed += 1;
        }
    }
    let timeout_wait = opened.elapsed();
    trickle_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut slow, trickled) = trickler.await.unwrap();
    let mut slow_closed = 0;
    for conn in slow.iter_mut() {
        if closed_by_server(conn, Duration::from_secs(2)).await {
            slow_closed += 1;
        }
    }
    let closed_after = opened.elapsed();
    drop((idle, slow));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = status_kb(pid, "RssAnon:");
    let fds_after = open_fds(pid);
    let (after_p50, after_p99) = version_latency(&http, &url, 200).await;

    println!(
        "FIGURE idle-connections: {n} connections ({} idle, {} slow-header, {trickled} bytes trickled) opened in \
         {open_took:?}; gateway fds {fds_loaded} with them, {fds_after} after; RssAnon {rss_before} kB before, \
         {rss_loaded} kB with them open (+{} kB, ~{} B per connection), {rss_after} kB after they were closed; \
         /version p50/p99 idle {idle_p50:?}/{idle_p99:?}, under the load {load_p50:?}/{load_p99:?}, after \
         {after_p50:?}/{after_p99:?}; {idle_closed} idle and {slow_closed} slow-header connections closed by the \
         server, all by {closed_after:?} after opening ({timeout_wait:?} for the idle ones; timeout \
         {HEADER_READ_TIMEOUT:?})",
        n / 2,
        n - n / 2,
        rss_loaded.saturating_sub(rss_before),
        rss_loaded.saturating_sub(rss_before) * 1024 / n as u64,
    );
    assert_eq!(idle_closed, n / 2, "idle connections left open past the header read timeout");
    assert_eq!(slow_closed, n - n / 2, "slow-header connections left open past the header read timeout");
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(10),
        "closing took {closed_after:?} (timeout {HEADER_READ_TIMEOUT:?})"
    );
    assert!(load_p99 < Duration::from_millis(250).max(idle_p99 * 10), "p99 under load {load_p99:?}, idle {idle_p99:?}");
    // Bounded memory: far below the ~400 KiB read buffer a connection could hold
    // before, and given back once they are closed.
    let per_conn = rss_loaded.saturating_sub(rss_before) * 1024 / n as u64;
    assert!(per_conn < 24 * 1024, "{per_conn} B per idle connection");
    assert!(fds_after < 200, "{fds_after} descriptors left open after the timeout");
}
