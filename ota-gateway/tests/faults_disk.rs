//! Disk full: the gateway's cache on a small tmpfs (mounted by the test; it needs root,
//! which the CI sandbox has) filled to the last byte. Fetches fail cleanly (a clear 502
//! on a channel with nothing cached, the previous release kept on a channel with a new
//! one), what is cached keeps being served byte-exact, nothing partial is left, and
//! everything recovers once space returns; a gateway restarted on that cache serves
//! every payload intact. Figures printed as `FIGURE …` (`-- --nocapture`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const RAW: &str = "application/vnd.updraft.firmware.v1";
const MOUNT_BYTES: u64 = 4 << 20;

/// A tmpfs mounted for the test, unmounted when it ends however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={MOUNT_BYTES}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the filesystem refuses (ENOSPC); returns its size.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
    }
    let _ = file.sync_all();
    written
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

async fn body_sha(gw: &Gateway, path: &str) -> (u16, String) {
    let r = gw.get(path).await;
    let status = r.status().as_u16();
    (status, sha256_hex(&r.bytes().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_fetches_cleanly_keeps_serving_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let _mount = match Tmpfs::mount(&cache) {
        Ok(m) => m,
        // Not silently green: the figure line says the scenario did not run.
        Err(e) => panic!("cannot mount a tmpfs for the disk-full test (needs root): {e}"),
    };
    let reg = registry();
    let repo = unique_repo("diskfull");
    let (a1, a2, b) = (random_bytes(1_000_000), random_bytes(1_000_000), random_bytes(1_500_000));
    let d_a1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "a1.bin", RAW, &a1);
    let d_a2 = push_file(&reg.addr, &repo, "1.1.0", work.path(), "a2.bin", RAW, &a2);
    let d_b = push_file(&reg.addr, &repo, "2.0.0", work.path(), "b.bin", RAW, &b);
    let a_v1 = channel("a", &reg.addr, &repo, ("1.0.0", "1.0.0", &d_a1));
    let mut cfg = config(&cache, vec![a_v1.clone()]);
    cfg.cache.max_bytes = 64 << 20; // far above the filesystem: the disk fills, not the budget
    let gw = Gateway::start(cfg.clone()).await;
    gw.wait_ok("/firmware?device=a").await;

    // Fill the filesystem to the last byte, then ask for two payloads that need space:
    // a new release of `a`, and channel `b` (nothing cached).
    let filler = cache.join("filler");
    let filled = fill(&filler);
    let mut full = cfg.clone();
    full.channels = vec![
        channel("a", &reg.addr, &repo, ("1.1.0", "1.1.0", &d_a2)),
        channel("b", &reg.addr, &repo, ("2.0.0", "2.0.0", &d_b)),
    ];
    let errors_before = fetch_errors(&gw).await;
    gw.state.apply(full).unwrap();
    let start = Instant::now();
    let (mut served_a, mut b_statuses, mut b_error) = (0u32, std::collections::BTreeMap::new(), String::new());
    while start.elapsed() < Duration::from_secs(8) {
        let (status, sha) = body_sha(&gw, "/firmware?device=a").await;
        assert_eq!((status, sha), (200, sha256_hex(&a1)), "the cached release stops being served on a full disk");
        served_a += 1;
        let r = gw.get("/firmware?device=b").await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status == 502 || status == 503, "b on a full disk: {status} {text}");
        if status == 502 {
            b_error = text;
        }
        *b_statuses.entry(status).or_insert(0u32) += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: serde_json::Value = gw.get("/api/v1/channels").await.json().await.unwrap();
    let a = listed.as_array().unwrap().iter().find(|c| c["name"] == "a").unwrap().clone();
    assert_eq!(a["serving"], "1.0.0", "{a}");
    assert_eq!(a["ready"], false, "{a}");
    let a_error = a["error"].as_str().unwrap_or_default().to_owned();
    assert!(!a_error.is_empty(), "the failure is not shown: {a}");
    assert!(b_statuses.contains_key(&502), "b never reported the failure: {b_statuses:?}");
    let errors = fetch_errors(&gw).await - errors_before;
    assert!(errors >= 2, "{errors} fetch errors counted");
    assert!(files_in(&cache.join("tmp")).is_empty(), "partial files left: {:?}", files_in(&cache.join("tmp")));

    // Space returns: both fetches succeed at their next attempt.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(20);
    loop {
        let (sa, sha_a) = body_sha(&gw, "/firmware?device=a").await;
        let (sb, sha_b) = body_sha(&gw, "/firmware?device=b").await;
        assert_eq!(sa, 200, "a failed while recovering");
        assert!(sha_a == sha256_hex(&a1) || sha_a == sha256_hex(&a2), "a served other bytes");
        if sb == 200 && sha_a == sha256_hex(&a2) {
            assert_eq!(sha_b, sha256_hex(&b));
            break;
        }
        assert!(Instant::now() < deadline, "not recovered 20 s after space returned (b: {sb})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = freed.elapsed();
    assert!(files_in(&cache.join("tmp")).is_empty());

    // A gateway started afresh on this cache finds every payload intact.
    let mut again = cfg.clone();
    again.channels = vec![a_v1, channel("b", &reg.addr, &repo, ("2.0.0", "2.0.0", &d_b))];
    let restarted = Gateway::start(again).await;
    for (device, want) in [("a", &a1), ("b", &b)] {
        let (status, sha) = body_sha(&restarted, &format!("/firmware?device={device}")).await;
        assert_eq!((status, sha), (200, sha256_hex(want)), "{device} after a restart on the cache");
    }
    println!(
        "FIGURE disk-full: {MOUNT_BYTES}-byte tmpfs filled ({filled} filler bytes); for 8 s: {served_a} downloads of \
         the cached 1.0.0 of a, all byte-exact; a's new 1.1.0 not served, shown as error {a_error:?}; b answered \
         {b_statuses:?} (502: {b_error}); {errors} fetch errors, no partial file; after space returned both served in \
         {recovered:?}; a restart on the cache served every payload intact"
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
