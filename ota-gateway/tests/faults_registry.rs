//! The gateway's firmware fetch against a registry that misbehaves: the real registry
//! behind `e2e::faults::FaultProxy`. Each scenario asserts the outcome (right bytes or
//! a clear 502/503, never wrong bytes, nothing partial in the cache) and a bound (time
//! to recover, requests made), and prints its figure as `FIGURE <scenario>: …`
//! (`cargo test -p ota-gateway --test faults_registry -- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use e2e::faults::{Fault, FaultProxy, Rule};

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// The registry's read timeout the gateway's client uses (`core::oci::build_client`).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fetch whose blob sends nothing keeps its slot (`fetch::verified::RELEASE_SLOT_AFTER`).
const SLOT_RELEASE: Duration = Duration::from_secs(5);
/// How long the gateway reports a failed fetch before a request retries it.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// One pushed firmware: repository, manifest digest, bytes.
struct Pushed {
    repo: String,
    digest: String,
    bytes: Vec<u8>,
}

impl Pushed {
    fn new(name: &str, work: &std::path::Path, len: usize) -> Pushed {
        let reg = registry();
        let repo = unique_repo(name);
        let bytes = random_bytes(len);
        let digest = push_file(&reg.addr, &repo, "1.0.0", work, &format!("{name}.bin"), RAW, &bytes);
        Pushed { repo, digest, bytes }
    }

    /// The part of the layer's blob URL that names it.
    fn blob_path(&self) -> String {
        format!("/blobs/sha256:{}", sha256_hex(&self.bytes))
    }

    fn channel(&self, name: &str, registry: &str) -> updraft_core::config::ChannelConfig {
        channel(name, registry, &self.repo, ("1.0.0", "1.0.0", &self.digest))
    }
}

/// Polls `/firmware?device=…` every 50 ms until it answers 200 or `bound` passes;
/// every non-200 must be 502 or 503 (a clear failure or pending), and a 200 must carry
/// exactly `want`. Returns the time it took and the statuses seen on the way.
async fn served_within(gw: &Gateway, device: &str, want: &[u8], bound: Duration) -> (Duration, Vec<u16>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let r = gw.get(&format!("/firmware?device={device}")).await;
        let status = r.status().as_u16();
        if status == 200 {
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256_hex(&body), sha256_hex(want), "{device}: a 200 served other bytes");
            return (start.elapsed(), seen);
        }
        assert!(status == 502 || status == 503, "{device}: {status} {}", r.text().await.unwrap());
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        assert!(start.elapsed() < bound, "{device} not served within {bound:?}; statuses {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nothing is left in the cache's temp directory (no partial file kept).
fn no_partial_files(cache: &std::path::Path) {
    let tmp: Vec<_> =
        std::fs::read_dir(cache.join("tmp")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
}

/// A blob stalled mid-body: the fetch times out and is retried, and a channel on the
/// same gateway whose fetch is healthy is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_blob_times_out_and_retries_without_blocking_other_channels() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (stalled, healthy) = (Pushed::new("stall", work.path(), 400_000), Pushed::new("healthy", work.path(), 50_000));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![Rule::new(&stalled.blob_path(), Fault::StallAfter(64 * 1024)).method("GET").times(1)]);
    let cache = work.path().join("cache");
    let channels = vec![stalled.channel("stalled", &proxy.addr()), healthy.channel("healthy", &proxy.addr())];
    let gw = Gateway::start(config(&cache, channels)).await;

    let (other, _) = served_within(&gw, "healthy", &healthy.bytes, Duration::from_secs(5)).await;
    assert_eq!(gw.get("/firmware?device=stalled").await.status(), 503, "still fetching while stalled");
    let bound = READ_TIMEOUT + FAILURE_HOLD + Duration::from_secs(10);
    let (recovered, statuses) = served_within(&gw, "stalled", &stalled.bytes, bound).await;
    let blob_gets = proxy.seen().iter().filter(|s| s.method == "GET" && s.path.contains(&stalled.blob_path())).count();
    assert_eq!(blob_gets, 2, "one stalled attempt, one retry");
    no_partial_files(&cache);
    println!(
        "FIGURE stalled-mid-blob: other channel served in {other:?} during the stall; stalled one served after \
         {recovered:?} (read timeout {READ_TIMEOUT:?}), statuses {statuses:?}, blob GETs {blob_gets}"
    );
}

/// A connection reset mid-blob, and a body cut short with a clean close: the fetch
/// fails with a 502 and the next attempt completes; nothing partial is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_truncated_blobs_fail_cleanly_then_recover() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (reset, cut) = (Pushed::new("reset", work.path(), 300_000), Pushed::new("cut", work.path(), 300_000));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![
        Rule::new(&reset.blob_path(), Fault::ResetAfter(100_000)).method("GET").times(1),
        Rule::new(&cut.blob_path(), Fault::TruncateAfter(100_000)).method("GET").times(1),
    ]);
    let cache = work.path().join("cache");
    let gw =
        Gateway::start(config(&cache, vec![reset.channel("reset", &proxy.addr()), cut.channel("cut", &proxy.addr())]))
            .await;
    let bound = FAILURE_HOLD + Duration::from_secs(10);
    let (r, c) =
        tokio::join!(served_within(&gw, "reset", &reset.bytes, bound), served_within(&gw, "cut", &cut.bytes, bound));
    for ((device, pushed), (took, statuses)) in [("reset", &reset), ("cut", &cut)].into_iter().zip([r, c]) {
        assert!(statuses.contains(&502), "{device}: the failure was visible as a 502: {statuses:?}");
        let gets = proxy.seen().iter().filter(|s| s.method == "GET" && s.path.contains(&pushed.blob_path())).count();
        assert_eq!(gets, 2, "{device}: one failed attempt, one retry");
        println!("FIGURE {device}-mid-blob: served after {took:?}, statuses {statuses:?}, blob GETs {gets}");
    }
    no_partial_files(&cache);
    let metrics = gw.metrics().await;
    assert!(metrics.contains("updraft_gateway_fetch_errors_total"), "{metrics}");
}

/// 5xx and 429 answers for as long as the test polls: the gateway retries no faster
/// than one attempt per failure hold (no hot loop), however hard devices poll, and no
/// sooner than a `Retry-After` longer than the hold asks; devices are told how long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_429_cause_no_hot_loop() {
    const ASKED: Duration = Duration::from_secs(8);
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (busy, broken) = (Pushed::new("busy", work.path(), 10_000), Pushed::new("broken", work.path(), 10_000));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![
        Rule::new(&busy.repo, Fault::Status { code: 429, retry_after: Some(ASKED.as_secs()) }),
        Rule::new(&broken.repo, Fault::Status { code: 503, retry_after: None }),
    ]);
    let cache = work.path().join("cache");
    let gw = Gateway::start(config(
        &cache,
        vec![busy.channel("busy", &proxy.addr()), broken.channel("broken", &proxy.addr())],
    ))
    .await;
    let window = Duration::from_secs(12);
    let start = Instant::now();
    let mut polls = 0u32;
    // What devices of the busy channel were told to wait, once the registry's 429 came.
    let mut busy_waits = std::collections::BTreeSet::new();
    while start.elapsed() < window {
        for device in ["busy", "broken"] {
            let answer = gw.get(&format!("/firmware?device={device}")).await;
            let status = answer.status().as_u16();
            assert!(status == 502 || status == 503, "{device}: {status}");
            let wait = answer.headers().get("retry-after").map(|w| w.to_str().unwrap().parse::<u64>().unwrap());
            if device == "busy" && answer.text().await.unwrap().contains("answered 429") {
                assert_eq!(status, 503, "a throttled fetch is a pending state, not a failure");
                busy_waits.insert(wait.expect("a 503 carries Retry-After"));
            }
            polls += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (device, pushed, hold) in [("busy", &busy, ASKED), ("broken", &broken, FAILURE_HOLD)] {
        let seen: Vec<_> = proxy.seen().into_iter().filter(|s| s.path.contains(&pushed.repo)).collect();
        assert!(!seen.is_empty() && seen.iter().all(|s| s.fault.is_some()));
        // An attempt is one HEAD of the manifest (the gateway's own, which reads
        // Retry-After); requests within a second belong to one attempt.
        let starts: Vec<Instant> = seen
            .iter()
            .enumerate()
            .filter(|(i, s)| *i == 0 || s.at - seen[i - 1].at > Duration::from_secs(1))
            .map(|(_, s)| s.at)
            .collect();
        // One attempt at start, then one per hold after the last failure.
        let max_attempts = (window.as_secs() / hold.as_secs()) as usize + 1;
        assert!(starts.len() <= max_attempts, "{device}: {} attempts in {window:?}: a hot loop", starts.len());
        assert!(starts.len() >= 2, "{device}: {} attempts in {window:?}: never retried", starts.len());
        assert_eq!(seen.len(), starts.len(), "{device}: {} requests in {} attempts", seen.len(), starts.len());
        let gaps: Vec<u128> = starts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        let floor = hold.as_millis() - 100;
        assert!(gaps.iter().all(|&g| g >= floor), "{device}: retried sooner than {hold:?}: {gaps:?} ms");
        println!(
            "FIGURE {device}: {} attempts ({} registry requests) in {window:?} while devices polled {polls} times; \
             gaps {gaps:?} ms",
            starts.len(),
            seen.len()
        );
    }
    // The busy channel's answers counted down from the 8 s the registry asked for
    // (not the gateway's own 5 s).
    let waits: Vec<u64> = busy_waits.into_iter().collect();
    assert!(
        waits.len() >= 3 && waits.iter().all(|&w| (1..=ASKED.as_secs()).contains(&w)) && waits.iter().any(|&w| w > 5),
        "Retry-After given to devices: {waits:?}"
    );
    println!("FIGURE 429 Retry-After {ASKED:?}: devices were told to wait {waits:?} s");
    proxy.clear();
    let (took, _) = served_within(&gw, "busy", &busy.bytes, ASKED + Duration::from_secs(5)).await;
    served_within(&gw, "broken", &broken.bytes, FAILURE_HOLD + Duration::from_secs(5)).await;
    println!("FIGURE 429/5xx-cleared: served {took:?} after the registry recovered");
}

/// A blob whose bytes are altered in flight (same length) is never served nor cached,
/// however often it is tried; once the bytes are right again it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_with_the_right_length_are_never_served() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let pushed = Pushed::new("flip", work.path(), 200_000);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![Rule::new(&pushed.blob_path(), Fault::FlipAt(123_456)).method("GET")]);
    let cache = work.path().join("cache");
    let gw = Gateway::start(config(&cache, vec![pushed.channel("flip", &proxy.addr())])).await;
    let start = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    while start.elapsed() < Duration::from_secs(11) {
        let status = gw.get("/firmware?device=flip").await.status().as_u16();
        assert!(status == 502 || status == 503, "flipped bytes answered {status}");
        *statuses.entry(status).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts = proxy.count(&pushed.blob_path());
    assert!((2..=3).contains(&attempts), "{attempts} attempts in 11 s");
    let blobs: Vec<_> = std::fs::read_dir(cache.join("blobs")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(blobs.is_empty(), "nothing cached");
    no_partial_files(&cache);
    proxy.clear();
    let (took, _) = served_within(&gw, "flip", &pushed.bytes, FAILURE_HOLD + Duration::from_secs(5)).await;
    println!("FIGURE wrong-bytes: 0 bad bodies served, answers {statuses:?}, {attempts} verified-and-refused fetches in 11 s; right bytes served {took:?} after the fault cleared");
}

/// The registry down when the gateway starts: pending answers, a bounded number of
/// connection attempts, and the firmware served soon after the registry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_at_start_then_up() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let pushed = Pushed::new("down", work.path(), 100_000);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_down(true);
    let cache = work.path().join("cache");
    let gw = Gateway::start(config(&cache, vec![pushed.channel("down", &proxy.addr())])).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let r = gw.get("/version?device=down").await;
        let status = r.status().as_u16();
        assert!(status == 502 || status == 503, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = proxy.refused();
    assert!((1..=6).contains(&refused), "{refused} connections in 8 s while down");
    let metrics = gw.metrics().await;
    assert!(metrics.contains(&format!("updraft_gateway_registry_up{{registry=\"{}\"}} 0", proxy.addr())), "{metrics}");
    proxy.set_down(false);
    let (took, _) = served_within(&gw, "down", &pushed.bytes, FAILURE_HOLD + Duration::from_secs(5)).await;
    println!(
        "FIGURE down-at-start: {refused} refused connections in 8 s down; served {took:?} after the registry came up"
    );
}

/// A gzip layer that unpacks to 64 MiB in a gateway whose cache holds 4 MiB: a 502 that
/// names the cap, no file left behind; a payload within the cap is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bomb_is_refused_at_the_cap() {
    use std::io::Write;
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("bomb");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "bomb.gz", "application/gzip", &bomb);
    let fine = random_bytes(100_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fine).unwrap();
    let fine_digest =
        push_file(&reg.addr, &repo, "1.0.1", work.path(), "fine.gz", "application/gzip", &gz.finish().unwrap());
    let cache = work.path().join("cache");
    let mut channels = vec![
        channel("bomb", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest)),
        channel("fine", &reg.addr, &repo, ("1.0.1", "1.0.1", &fine_digest)),
    ];
    for c in &mut channels {
        c.artifact.unpack = updraft_core::config::Unpack::Gzip;
    }
    let mut cfg = config(&cache, channels);
    cfg.cache.max_bytes = 4 << 20;
    let gw = Gateway::start(cfg).await;
    let start = Instant::now();
    let answer = loop {
        let r = gw.get("/firmware?device=bomb").await;
        if r.status() != 503 {
            break (r.status().as_u16(), r.text().await.unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still fetching");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.0, 502, "{}", answer.1);
    assert!(answer.1.contains("decompression bomb"), "the error says why: {}", answer.1);
    served_within(&gw, "fine", &fine, Duration::from_secs(10)).await;
    // Checked once the other channel is served too: its fetch, under way beside the
    // bomb's, has a temp file of its own until then.
    no_partial_files(&cache);
    println!(
        "FIGURE decompression-bomb: {} B of gzip (64 MiB unpacked) refused at the 4 MiB cap after {:?}: {}",
        bomb.len(),
        start.elapsed(),
        answer.1
    );
}

/// A full pool of stalled fetches (as many as the gateway runs at once, 4) does not
/// hold up a healthy channel: a fetch whose blob sends nothing for 5 s gives its slot
/// away while it waits out the read timeout. Before that rule the healthy channel
/// waited the full 30 s read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_of_stalled_fetches_does_not_hold_up_other_channels() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let stalled: Vec<Pushed> = (0..4).map(|i| Pushed::new(&format!("pool{i}"), work.path(), 200_000)).collect();
    let healthy = Pushed::new("late", work.path(), 10_000);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(
        stalled.iter().map(|p| Rule::new(&p.blob_path(), Fault::StallAfter(1000)).method("GET").times(1)).collect(),
    );
    let mut channels: Vec<_> =
        stalled.iter().enumerate().map(|(i, p)| p.channel(&format!("pool{i}"), &proxy.addr())).collect();
    let gw = Gateway::start(config(&work.path().join("cache"), channels.clone())).await;
    // Let the four fetches take every slot and stall.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stalled.iter().any(|p| proxy.count(&p.blob_path()) == 0) {
        assert!(Instant::now() < deadline, "the stalled fetches did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    channels.push(healthy.channel("late", &proxy.addr()));
    gw.state.apply(config(&work.path().join("cache"), channels)).unwrap();
    let (waited, _) = served_within(&gw, "late", &healthy.bytes, SLOT_RELEASE + Duration::from_secs(5)).await;
    println!(
        "FIGURE full-fetch-pool: a healthy channel behind 4 stalled fetches was served after {waited:?} \
         (slots released after {SLOT_RELEASE:?} without progress; read timeout {READ_TIMEOUT:?})"
    );
}

/// A slow registry (200 kB/s on the blob): the fetch completes, devices see 503 with
/// Retry-After meanwhile, and another channel is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_registry_completes_without_holding_up_others() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (slow, quick) = (Pushed::new("slow", work.path(), 1_000_000), Pushed::new("quick", work.path(), 10_000));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![Rule::new(&slow.blob_path(), Fault::Bandwidth(200_000)).method("GET")]);
    let gw = Gateway::start(config(
        &work.path().join("cache"),
        vec![slow.channel("slow", &proxy.addr()), quick.channel("quick", &proxy.addr())],
    ))
    .await;
    let (other, _) = served_within(&gw, "quick", &quick.bytes, Duration::from_secs(5)).await;
    let pending = gw.get("/version?device=slow").await;
    assert_eq!(pending.status(), 503);
    assert!(pending.headers().contains_key("retry-after"), "pending says when to come back");
    let (took, statuses) = served_within(&gw, "slow", &slow.bytes, Duration::from_secs(20)).await;
    assert!(took >= Duration::from_secs(3), "1 MB at 200 kB/s took only {took:?}");
    assert!(!statuses.contains(&502), "a slow fetch is not a failure: {statuses:?}");
    assert_eq!(proxy.count(&slow.blob_path()), 1, "one fetch, no retries");
    println!("FIGURE slow-registry: 1 MB at 200 kB/s served after {took:?} (503 + Retry-After meanwhile); other channel in {other:?}");
}

/// The registry flapping (1 s down, 1 s up) for 20 s: a pinned, cached channel answers
/// every request, a standalone channel keeps its last resolution, registry traffic
/// stays bounded, and a release pushed during the flapping is picked up. Once the new
/// release is resolved the standalone channel keeps serving the previous one until the
/// new payload is fetched, so no request may fail, not even on the standalone channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_registry_fails_no_device_request() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let pinned = Pushed::new("flap-pinned", work.path(), 50_000);
    let repo = unique_repo("flap-policy");
    let v1 = random_bytes(2_000);
    push_file(&reg.addr, &repo, "1.0.0", work.path(), "p1.bin", RAW, &v1);
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    let mut standalone = channel("standalone", &proxy.addr(), &repo, ("", "", ""));
    standalone.current = None;
    standalone.policy = Some(updraft_core::version::VersionPolicy { interval: "1s".into(), ..Default::default() });
    let gw =
        Gateway::start(config(&work.path().join("cache"), vec![pinned.channel("pinned", &proxy.addr()), standalone]))
            .await;
    served_within(&gw, "pinned", &pinned.bytes, Duration::from_secs(10)).await;
    served_within(&gw, "standalone", &v1, Duration::from_secs(10)).await;
    proxy.reset_seen();

    // 20 s in CI; `UPDRAFT_GATEWAY_FLAP_SECS=600` for the 10-minute version by hand.
    let secs: u64 = std::env::var("UPDRAFT_GATEWAY_FLAP_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let start = Instant::now();
    let (mut requests, mut failures) = (0u32, Vec::new());
    let (mut pushed_v2, mut first_v2) = (None, None);
    let v2 = random_bytes(3_000);
    let want = format!("1.1.0\n{}\n3000", crc32fast::hash(&v2));
    while start.elapsed() < Duration::from_secs(secs) {
        proxy.set_down(start.elapsed().as_secs().is_multiple_of(2));
        if pushed_v2.is_none() && start.elapsed() > Duration::from_secs(secs * 2 / 5) {
            push_file(&reg.addr, &repo, "1.1.0", work.path(), "p2.bin", RAW, &v2);
            pushed_v2 = Some(Instant::now());
        }
        for path in ["/version?device=pinned", "/firmware?device=pinned", "/version?device=standalone"] {
            let answer = gw.get(path).await;
            let status = answer.status().as_u16();
            requests += 1;
            if status != 200 {
                failures.push((path, status, start.elapsed()));
            } else if path.ends_with("standalone") && first_v2.is_none() && answer.text().await.unwrap() == want {
                first_v2 = pushed_v2.map(|at: Instant| at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_down(false);
    assert!(
        failures.is_empty(),
        "{} of {requests} device requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let registry_requests = proxy.seen().len() as u64 + proxy.refused();
    assert!(registry_requests <= secs * 6, "{registry_requests} registry requests in {secs} s");
    // Picked up while the registry still flapped: resolved in an "up" second, fetched.
    let first_v2 = first_v2.expect("the release pushed while flapping was not served before the flapping ended");
    assert!(first_v2 < Duration::from_secs(10), "the release pushed while flapping was served {first_v2:?} after");
    println!(
        "FIGURE flapping-registry: {secs} s of 1 s down / 1 s up: {requests} device requests, 0 failed (the previous \
         release served while the one pushed mid-flap was fetched); {registry_requests} registry requests or \
         connection attempts; that release first served {first_v2:?} after the push, the registry still flapping"
    );
}
