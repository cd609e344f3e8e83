//! Simplestreams files against a registry that asks to wait: the real registry behind
//! `e2e::faults::FaultProxy`, a stream served by an in-process gateway. Stream files
//! are fetched by the gateway's one fetcher, so a 429 with `Retry-After` holds a
//! stream's blob exactly as it holds a firmware artifact: the registry is not asked
//! again before the time it named, however often the stream's sync loop wants it.
//! Prints its figure as `FIGURE <scenario>: …` (`-- --nocapture`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use e2e::faults::{Fault, FaultProxy, Rule};
use updraft_core::config::{OciStreamSource, SourceConfig, StreamConfig, StreamSource};

/// What the throttled registry asks for (longer than the 5 s failure hold).
const ASKED: Duration = Duration::from_secs(8);
/// The stream's sync interval: each round wants the blob again.
const INTERVAL: &str = "1s";

/// Pushes a two-file version, identified by annotations, with `oras`.
fn push_version(dir: &std::path::Path, registry: &str, repo: &str, meta: &[u8], root: &[u8]) {
    std::fs::write(dir.join("incus.tar.xz"), meta).unwrap();
    std::fs::write(dir.join("root.tar.xz"), root).unwrap();
    let out = Command::new("oras")
        .current_dir(dir)
        .args([
            "push",
            "--plain-http",
            &format!("{registry}/{repo}:v1"),
            "--annotation",
            "dev.updraft.simplestreams.product=held:1:amd64:default",
            "--annotation",
            "dev.updraft.simplestreams.serial=20260101_00:00",
            "--annotation",
            "dev.updraft.simplestreams.os=held",
            "incus.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz",
            "root.tar.xz:application/vnd.updraft.simplestreams.rootfs.v1.tar+xz",
        ])
        .output()
        .expect("run oras");
    assert!(out.status.success(), "oras push: {}", String::from_utf8_lossy(&out.stderr));
}

/// The path of the first file the stream's `images.json` lists, once it lists one.
async fn listed_path(gw: &Gateway) -> Option<String> {
    let images: serde_json::Value = gw.get("/streams/held/streams/v1/images.json").await.json().await.ok()?;
    let versions = images["products"].as_object()?.values().next()?["versions"].as_object()?.clone();
    let items = versions.values().next()?["items"].as_object()?.clone();
    let meta = items.values().find(|i| i["ftype"] == "incus.tar.xz")?;
    meta["path"].as_str().map(str::to_owned)
}

/// The stream's sync loop needs the metadata blob every second while the registry
/// answers it 429 with `Retry-After: 8`: one request reaches the registry in those
/// 8 s (before the shared fetcher, every round asked again), the status says why the
/// version is missing, and the version is listed and its file served once the
/// registry stops throttling and the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_blob_fetch_honours_retry_after() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("stream-retry-after");
    let (meta, root) = (random_bytes(3000), random_bytes(7000));
    push_version(work.path(), &reg.addr, &repo, &meta, &root);
    let blob = format!("/blobs/sha256:{}", sha256_hex(&meta));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![Rule::new(&blob, Fault::Status { code: 429, retry_after: Some(ASKED.as_secs()) })]);

    let mut config = config(&work.path().join("cache"), vec![]);
    let repository = SourceConfig { registry: proxy.addr(), repository: repo, insecure: true, docker_config: None };
    config.streams = vec![StreamConfig {
        name: "held".into(),
        source: StreamSource {
            oci: Some(OciStreamSource { repository, interval: INTERVAL.into() }),
            upload: None,
            upstream: None,
        },
        keep_versions: 0,
        verify: None,
    }];
    let gw = Gateway::start(config).await;

    let started = Instant::now();
    while proxy.count(&blob) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the stream never asked for its metadata blob");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = proxy.seen().iter().find(|s| s.path.contains(&blob)).unwrap().at;
    // Most of the wait, while the stream's rounds (one a second) keep wanting the blob.
    tokio::time::sleep(ASKED - Duration::from_secs(2)).await;
    let throttled = proxy.count(&blob);
    let status: serde_json::Value = gw.get("/streams/held/status").await.json().await.unwrap();
    assert!(status.to_string().contains("429"), "the status names the throttling: {status}");
    assert_eq!(throttled, 1, "one request to a registry that asked to wait {ASKED:?}: {:?}", proxy.seen());
    proxy.clear();

    let path = loop {
        if let Some(path) = listed_path(&gw).await {
            break path;
        }
        assert!(first.elapsed() < ASKED + Duration::from_secs(10), "not listed after the wait: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let retried = proxy.seen().iter().filter(|s| s.path.contains(&blob)).map(|s| s.at).nth(1).unwrap();
    assert!(retried - first >= ASKED - Duration::from_millis(200), "asked again after {:?}", retried - first);
    let file = gw.get(&format!("/streams/held/{path}")).await;
    assert_eq!(file.status(), 200);
    assert_eq!(sha256_hex(&file.bytes().await.unwrap()), sha256_hex(&meta));
    println!(
        "FIGURE stream-429-retry-after: {throttled} request in {:?} of rounds every {INTERVAL}; asked again after \
         {:?} (Retry-After {ASKED:?}); listed after {:?}",
        ASKED - Duration::from_secs(2),
        retried - first,
        first.elapsed()
    );
}
