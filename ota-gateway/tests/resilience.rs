//! What happens when things change or break: hot reload, a dead registry, a
//! corrupted blob, and standalone resolution from tags.

mod common;

use std::time::Duration;

use common::*;
use ota_gateway::reload::Watcher;
use updraft_core::config::GatewayConfig;
use updraft_core::version::VersionPolicy;

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// A symlink swap to a new version is applied with the cache kept; a broken file
/// is rejected and the last good config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_symlink_swap_and_rejects_bad_files() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("reload");
    let (v1, v2) = (random_bytes(3000), random_bytes(4000));
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "v1.bin", RAW, &v1);
    let d2 = push_file(&reg.addr, &repo, "1.1.0", work.path(), "v2.bin", RAW, &v2);
    let cache = work.path().join("cache");
    let first = config(&cache, vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "1.0.0", &d1))]);
    let link = work.path().join("gateway.yaml");
    swap_config(work.path(), &link, 1, &first.to_yaml());
    let gw = Gateway::start(GatewayConfig::load(&link).unwrap()).await;
    let mut watcher = Watcher::new(link.clone(), gw.state.clone());
    assert!(gw.wait_ok("/version?device=esp32").await.text().await.unwrap().starts_with("1.0.0\n"));

    let mut second = first.clone();
    second.channels[0].current = Some(pinned(("1.1.0", "1.1.0", &d2)));
    second.channels[0].previous = Some(pinned(("1.0.0", "1.0.0", &d1)));
    swap_config(work.path(), &link, 2, &second.to_yaml());
    assert!(watcher.poll(), "new config applied");
    // 1.0.0 keeps serving until 1.1.0 is cached, then the channel switches.
    let want = format!("1.1.0\n{}\n4000", crc32fast::hash(&v2));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
        if body == want {
            break;
        }
        assert!(body.starts_with("1.0.0\n"), "neither release: {body:?}");
        assert!(std::time::Instant::now() < deadline, "1.1.0 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_key = gw.state.firmware().channel("esp32").unwrap().releases().previous.unwrap().job.key();
    assert!(gw.state.cache().lookup(&old_key).unwrap().is_some(), "the old payload stays cached");

    swap_config(work.path(), &link, 3, "channels: [ {name: broken");
    assert!(!watcher.poll());
    let bad_digest = second.to_yaml().replace(&d2, "sha256:1234");
    swap_config(work.path(), &link, 4, &bad_digest);
    assert!(!watcher.poll());
    assert!(gw.get("/version?device=esp32").await.text().await.unwrap().starts_with("1.1.0\n"));
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"updraft_gateway_config_reloads_total{result="rejected"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"updraft_gateway_config_reloads_total{result="applied"} 1"#), "{metrics}");
}

/// Cached payloads keep being served (and survive a restart) with the registry
/// dead; a channel that needs the dead registry answers 502 and shows in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_cached_payloads_while_the_registry_is_down() {
    let work = tempfile::tempdir().unwrap();
    let mut own = OwnRegistry::start(work.path()).await;
    let repo = unique_repo("stale");
    let firmware = random_bytes(50_000);
    let digest = push_file(&own.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &firmware);
    let other = push_file(&own.addr, &repo, "1.0.1", work.path(), "other.bin", RAW, &random_bytes(10));
    let cache = work.path().join("cache");
    let mut cfg = config(&cache, vec![channel("esp32", &own.addr, &repo, ("1.0.0", "1.0.0", &digest))]);
    let gw = Gateway::start(cfg.clone()).await;
    gw.wait_ok("/version?device=esp32").await;
    own.stop();

    let bytes = gw.get("/firmware?device=esp32").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&firmware));
    let restarted = Gateway::start(cfg.clone()).await;
    let bytes = restarted.wait_ok("/firmware?device=esp32").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&firmware), "served from the re-indexed cache");

    cfg.channels.push(channel("new", &own.addr, &repo, ("1.0.1", "1.0.1", &other)));
    restarted.state.apply(cfg).unwrap();
    let status = poll_until_not_503(&restarted, "/version?device=new").await;
    assert_eq!(status, 502);
    let metrics = restarted.metrics().await;
    assert!(metrics.contains(&format!("updraft_gateway_registry_up{{registry=\"{}\"}} 0", own.addr)), "{metrics}");
    assert!(metrics.contains("updraft_gateway_fetch_errors_total"), "{metrics}");
}

async fn poll_until_not_503(gw: &Gateway, path: &str) -> u16 {
    for _ in 0..600 {
        let status = gw.get(path).await.status().as_u16();
        if status != 503 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} still 503 after 30 s");
}

/// A blob whose bytes were altered in the registry's storage (same length) is
/// never served nor cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_never_served() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("corrupt");
    let firmware = random_bytes(64_000);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &firmware);
    let hex = sha256_hex(&firmware);
    let blob = reg.dir.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    std::fs::write(&blob, random_bytes(firmware.len())).unwrap();
    let cache = work.path().join("cache");
    let gw =
        Gateway::start(config(&cache, vec![channel("esp32", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest))])).await;

    assert_eq!(poll_until_not_503(&gw, "/firmware?device=esp32").await, 502);
    assert_eq!(gw.get("/version?device=esp32").await.status(), 502);
    let cached: Vec<_> = std::fs::read_dir(cache.join("blobs")).unwrap().collect();
    assert!(cached.is_empty(), "nothing cached: {cached:?}");
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0, "temp file removed");
}

/// Without a pinned digest, the gateway picks the newest tag the policy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_policy_resolves_from_tags() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("policy");
    let newest = random_bytes(2000);
    push_file(&reg.addr, &repo, "v1.0.0", work.path(), "a.bin", RAW, &random_bytes(10));
    push_file(&reg.addr, &repo, "v1.4.0", work.path(), "b.bin", RAW, &newest);
    push_file(&reg.addr, &repo, "v1.5.0-rc.1", work.path(), "c.bin", RAW, &random_bytes(10));
    push_file(&reg.addr, &repo, "v2.0.0", work.path(), "d.bin", RAW, &random_bytes(10));
    let mut c = channel("esp32", &reg.addr, &repo, ("", "", ""));
    c.current = None;
    c.policy =
        Some(VersionPolicy { range: "^1".into(), prerelease: false, interval: "1h".into(), ..Default::default() });
    let gw = Gateway::start(config(&work.path().join("cache"), vec![c])).await;
    let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
    assert_eq!(body, format!("1.4.0\n{}\n2000", crc32fast::hash(&newest)));
}

/// A standalone channel is resolved again on its interval, and no more once a reload
/// removes it (its snapshot's resolver stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_resolution_follows_the_interval_and_stops_on_reload() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("interval");
    push_file(&reg.addr, &repo, "1.0.0", work.path(), "a.bin", RAW, &random_bytes(100));
    let mut c = channel("esp32", &reg.addr, &repo, ("", "", ""));
    c.current = None;
    c.policy = Some(VersionPolicy { interval: "1s".into(), ..Default::default() });
    let cfg = config(&work.path().join("cache"), vec![c]);
    let gw = Gateway::start(cfg.clone()).await;
    gw.wait_ok("/version?device=esp32").await;
    let log = reg.dir.parent().unwrap().join("logs/registry.log");
    let tag_lists = || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines().filter(|l| l.contains(&format!("GET /v2/{repo}/tags/list"))).count()
    };
    let first = tag_lists();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = tag_lists();
    assert!(later >= first + 2, "resolved {first} then {later} times: not every second");

    let mut without = cfg.clone();
    without.channels.clear();
    gw.state.apply(without).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = tag_lists();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(tag_lists(), removed, "the replaced snapshot's resolver kept running");
}
