//! A new release must not take a channel down: when a channel's pinned `current`
//! changes (the operator renders a new one, a reload applies it), devices keep getting
//! the release they got before until the new payload is cached and verified, then
//! switch; a new release that cannot be fetched or verified keeps the old one serving,
//! and says why in `/api/v1/channels`. The real registry behind `e2e::faults::FaultProxy`;
//! figures printed as `FIGURE …` (`-- --nocapture`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use e2e::faults::{Fault, FaultProxy, Rule};

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// One release pushed to a repository: its version, manifest digest and bytes.
struct Version {
    version: &'static str,
    digest: String,
    bytes: Vec<u8>,
}

impl Version {
    fn push(repo: &str, version: &'static str, work: &std::path::Path, len: usize) -> Version {
        let bytes = random_bytes(len);
        let digest = push_file(&registry().addr, repo, version, work, &format!("{version}.bin"), RAW, &bytes);
        Version { version, digest, bytes }
    }

    fn blob_path(&self) -> String {
        format!("/blobs/sha256:{}", sha256_hex(&self.bytes))
    }

    fn pinned(&self) -> (&str, &str, &str) {
        (self.version, self.version, &self.digest)
    }

    /// The OtaFlux `/version` body of this release.
    fn version_body(&self) -> String {
        format!("{}\n{}\n{}", self.version, crc32fast::hash(&self.bytes), self.bytes.len())
    }
}

/// The config the operator renders for a channel: `current`, and `previous` if any.
fn rendered(
    cache: &std::path::Path,
    registry: &str,
    repo: &str,
    current: &Version,
    previous: Option<&Version>,
) -> updraft_core::config::GatewayConfig {
    let mut c = channel("fw", registry, repo, current.pinned());
    c.previous = previous.map(|p| pinned(p.pinned()));
    config(cache, vec![c])
}

/// What the device pollers saw: per request kind, bodies of the old and new release,
/// and anything else (a failure).
#[derive(Default, Debug)]
struct Seen {
    requests: u64,
    old: u64,
    new: u64,
    /// (what, status or wrong body, when)
    failures: Vec<(String, String, Duration)>,
    /// When the first answer of the new release came.
    first_new: Option<Duration>,
    /// An old answer after a new one (a device flipping back).
    back_to_old: u64,
}

/// Polls `/version`, `/firmware` and the JSON manifest as a device with no id until
/// `stop`: every answer must be 200 and carry exactly the old or the new release.
async fn poll(gw: Arc<Gateway>, old: Arc<Version>, new: Arc<Version>, start: Instant, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let record = |seen: &mut Seen, what: &str, is_old: bool, is_new: bool, detail: String| {
        seen.requests += 1;
        if is_new {
            seen.new += 1;
            seen.first_new.get_or_insert(start.elapsed());
        } else if is_old {
            seen.old += 1;
            if seen.first_new.is_some() && what == "/version" {
                seen.back_to_old += 1;
            }
        } else {
            seen.failures.push((what.to_owned(), detail, start.elapsed()));
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let r = gw.get("/version?device=fw").await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        record(
            &mut seen,
            "/version",
            body == old.version_body(),
            body == new.version_body(),
            format!("{status} {body}"),
        );

        let r = gw.get("/firmware?device=fw").await;
        let status = r.status();
        let sha = sha256_hex(&r.bytes().await.unwrap_or_default());
        let (is_old, is_new) = (sha == sha256_hex(&old.bytes), sha == sha256_hex(&new.bytes));
        record(&mut seen, "/firmware", status == 200 && is_old, status == 200 && is_new, format!("{status} sha {sha}"));

        let r = gw.get("/api/v1/channels/fw").await;
        let status = r.status();
        let json: serde_json::Value = r.json().await.unwrap_or_default();
        let sha = json["sha256"].as_str().unwrap_or_default().to_owned();
        let (is_old, is_new) = (sha == sha256_hex(&old.bytes), sha == sha256_hex(&new.bytes));
        record(
            &mut seen,
            "/api/v1/channels/fw",
            status == 200 && is_old,
            status == 200 && is_new,
            format!("{status} {json}"),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

/// The channel's line of `/api/v1/channels`.
async fn summary(gw: &Gateway) -> serde_json::Value {
    let all: serde_json::Value = gw.get("/api/v1/channels").await.json().await.unwrap();
    all.as_array().unwrap().iter().find(|c| c["name"] == "fw").cloned().unwrap()
}

/// Two releases in a fresh repository behind the fault proxy: 1.0.0 (50 kB) and 1.1.0
/// (1 MB), whose blob the proxy sends at 200 kB/s.
struct SlowSwitch {
    work: tempfile::TempDir,
    cache: std::path::PathBuf,
    repo: String,
    old: Arc<Version>,
    new: Arc<Version>,
    proxy: FaultProxy,
}

impl SlowSwitch {
    async fn start(name: &str) -> SlowSwitch {
        let reg = registry();
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let repo = unique_repo(name);
        let old = Arc::new(Version::push(&repo, "1.0.0", work.path(), 50_000));
        let new = Arc::new(Version::push(&repo, "1.1.0", work.path(), 1_000_000));
        let proxy = FaultProxy::start(&reg.addr).await.unwrap();
        proxy.set_rules(vec![Rule::new(&new.blob_path(), Fault::Bandwidth(200_000)).method("GET")]);
        SlowSwitch { work, cache, repo, old, new, proxy }
    }

    /// The rendered config serving `current` (and `previous`).
    fn rendered(&self, current: &Version, previous: Option<&Version>) -> updraft_core::config::GatewayConfig {
        rendered(&self.cache, &self.proxy.addr(), &self.repo, current, previous)
    }
}

/// Waits (up to `within`) until the channel's new release is ready.
async fn wait_ready(gw: &Gateway, within: Duration) {
    let deadline = Instant::now() + within;
    while summary(gw).await["ready"] != true {
        assert!(Instant::now() < deadline, "the new release was not ready within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lets the poller go on for `after`, stops it and returns what it saw: no failure,
/// and no device back on the old release after the new one.
async fn stop_polling(poller: tokio::task::JoinHandle<Seen>, stop: &AtomicBool, after: Duration) -> Seen {
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        seen.failures.len(),
        seen.requests,
        seen.failures
    );
    assert_eq!(seen.back_to_old, 0, "a device got the old release after the new one");
    seen
}

/// A new release whose 1 MB payload comes at 200 kB/s: while it is fetched every device
/// request is answered 200 with the previous release; then every one switches to the
/// new release, none flips back, and the old payload was served meanwhile from cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_release_keeps_the_previous_one_serving_until_it_is_cached() {
    let switch = SlowSwitch::start("switch").await;
    let (old, new) = (&switch.old, &switch.new);
    let gw = Arc::new(Gateway::start(switch.rendered(old, None)).await);
    gw.wait_ok("/firmware?device=fw").await;

    let (start, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let poller = tokio::spawn(poll(gw.clone(), old.clone(), new.clone(), start, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied = start.elapsed();
    gw.state.apply(switch.rendered(new, Some(old))).unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending = summary(&gw).await;
    assert_eq!(pending["version"], "1.1.0", "{pending}");
    assert_eq!(pending["ready"], false, "the new release is not cached yet: {pending}");
    assert_eq!(pending["serving"], "1.0.0", "{pending}");

    wait_ready(&gw, Duration::from_secs(30)).await;
    let seen = stop_polling(poller, &stop, Duration::from_millis(1000)).await;
    assert!(seen.old > 20 && seen.new > 20, "{seen:?}");
    let ready = summary(&gw).await;
    assert_eq!(ready["serving"], "1.1.0", "{ready}");
    let switched = seen.first_new.expect("the new release was never served") - applied;
    assert!(switched >= Duration::from_secs(3), "1 MB at 200 kB/s cannot be cached after {switched:?}");
    assert!(switched < Duration::from_secs(15), "switched only after {switched:?}");
    assert_eq!(switch.proxy.count(&new.blob_path()), 1, "one fetch of the new payload");
    println!(
        "FIGURE new-release-switch: {} device requests (/version, /firmware, JSON manifest) across the switch, 0 failed; \
         {} answered with 1.0.0 while 1.1.0 (1 MB at 200 kB/s) was fetched, {} with 1.1.0 after; switched {switched:?} \
         after the reload, never back",
        seen.requests, seen.old, seen.new
    );
}

/// A new release applied together with a new signing key and public URL (a key
/// rotation): while the new payload is fetched, devices keep the previous release,
/// its manifest now signed with the new key and pointing at the new URL (before, the
/// previous release could not serve across such a change, and devices got 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_with_a_new_release_keeps_the_previous_one_serving_signed_anew() {
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::{Signature, SigningKey, Verifier};
    use ota_gateway::firmware::signing::SignedFields;

    let switch = SlowSwitch::start("rotate").await;
    let (old, new) = (&switch.old, &switch.new);
    let keys: Vec<(SigningKey, std::path::PathBuf)> = (0..2)
        .map(|i| {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let file = switch.work.path().join(format!("signing-{i}.pem"));
            std::fs::write(&file, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
            (key, file)
        })
        .collect();
    let signed = |current: &Version, previous: Option<&Version>, key: usize, url: &str| {
        let mut cfg = switch.rendered(current, previous);
        cfg.signing_key_file = Some(keys[key].1.clone());
        cfg.public_url = Some(url.to_owned());
        cfg
    };
    let gw = Arc::new(Gateway::start(signed(old, None, 0, "https://ota-a.example.com")).await);
    gw.wait_ok("/firmware?device=fw").await;

    let (start, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let poller = tokio::spawn(poll(gw.clone(), old.clone(), new.clone(), start, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.state.apply(signed(new, Some(old), 1, "https://ota-b.example.com")).unwrap();

    // Meanwhile: the previous release, signed with the new key, at the new URL.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending = summary(&gw).await;
    assert_eq!((pending["ready"].as_bool(), pending["serving"].as_str()), (Some(false), Some("1.0.0")), "{pending}");
    let info: serde_json::Value = gw.get("/api/v1/channels/fw").await.json().await.unwrap();
    assert_eq!(info["version"], "1.0.0", "{info}");
    assert!(info["url"].as_str().unwrap().starts_with("https://ota-b.example.com/"), "{info}");
    let sha = sha256_hex(&old.bytes);
    let fields = SignedFields {
        channel: "fw",
        crc32: crc32fast::hash(&old.bytes),
        sha256: &sha,
        size: 50_000,
        version: "1.0.0",
    };
    let signature = base64::engine::general_purpose::STANDARD.decode(info["signature"].as_str().unwrap()).unwrap();
    let signature = Signature::from_slice(&signature).unwrap();
    keys[1].0.verifying_key().verify(&fields.canonical_json(), &signature).expect("signed with the new key");
    assert!(keys[0].0.verifying_key().verify(&fields.canonical_json(), &signature).is_err(), "not the old key");

    wait_ready(&gw, Duration::from_secs(30)).await;
    let seen = stop_polling(poller, &stop, Duration::from_millis(500)).await;
    assert!(seen.old > 20 && seen.new > 20, "{seen:?}");
    println!(
        "FIGURE key-rotation-switch: {} device requests across a new release applied with a new signing key and \
         public URL, 0 failed; {} answered with 1.0.0 (signed again with the new key) while 1.1.0 was fetched, {} \
         with 1.1.0 after",
        seen.requests, seen.old, seen.new
    );
}

/// A new release whose payload arrives altered (one byte flipped, length right): it is
/// never served; devices keep the previous release (0 failed requests);
/// `/api/v1/channels` shows it not ready with the reason, the fetch errors count; once the
/// registry serves the right bytes the channel switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_release_keeps_the_previous_one_serving_and_says_why() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let repo = unique_repo("failing");
    let old = Arc::new(Version::push(&repo, "1.0.0", work.path(), 50_000));
    let new = Arc::new(Version::push(&repo, "1.1.0", work.path(), 60_000));
    let proxy = FaultProxy::start(&reg.addr).await.unwrap();
    proxy.set_rules(vec![Rule::new(&new.blob_path(), Fault::FlipAt(1_000)).method("GET")]);
    let gw = Arc::new(Gateway::start(rendered(&cache, &proxy.addr(), &repo, &old, None)).await);
    gw.wait_ok("/firmware?device=fw").await;
    let errors_before = fetch_errors(&gw).await;

    let (start, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let poller = tokio::spawn(poll(gw.clone(), old.clone(), new.clone(), start, stop.clone()));
    gw.state.apply(rendered(&cache, &proxy.addr(), &repo, &new, None)).unwrap();

    // Long enough for two failed fetches (a failure is held 5 s before a retry).
    let mut error = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let s = summary(&gw).await;
        assert_eq!(s["ready"], false, "altered bytes made the release ready: {s}");
        assert_eq!(s["serving"], "1.0.0", "{s}");
        if let Some(e) = s["error"].as_str() {
            error = Some(e.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = error.expect("the failure is never shown in /api/v1/channels");
    let errors = fetch_errors(&gw).await - errors_before;
    assert!(errors >= 1, "no fetch error counted");
    let during = start.elapsed();

    proxy.clear();
    // Once the registry serves the right bytes, the release recovers.
    wait_ready(&gw, Duration::from_secs(15)).await;
    let recovered = start.elapsed() - during;
    let seen = stop_polling(poller, &stop, Duration::from_millis(500)).await;
    assert!(seen.new > 0 && seen.old > 50, "{seen:?}");
    no_partial_files(&cache);
    println!(
        "FIGURE failing-new-release: altered payload for {during:?}: {} device requests, 0 failed, {} with the previous \
         release; {errors} fetch error(s) counted; /api/v1/channels error: {error:?}; switched {recovered:?} after the \
         registry served the right bytes",
        seen.requests, seen.old
    );
}

async fn fetch_errors(gw: &Gateway) -> u64 {
    gw.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("updraft_gateway_fetch_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn no_partial_files(cache: &std::path::Path) {
    let tmp: Vec<_> =
        std::fs::read_dir(cache.join("tmp")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
}
