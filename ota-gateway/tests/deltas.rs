//! ESP32 delta patches end to end against the real local registry: the mirror worker
//! (`ota-gateway --mirror`) builds the patch from 1.0.0 to 1.1.0 and pushes it as the
//! artifact `updraft_core::delta` describes; a gateway pinned to that artifact (as the
//! operator renders it) offers it to a device reporting 1.0.0 and its image digest, and
//! serves it; the reference implementation (`detools apply_patch`) turns the base into
//! the target with it, byte for byte. A wrong digest or version gets no patch, OtaFlux
//! without the opt-in is unchanged, and a restarted worker does not build again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use updraft_core::config::{DeltaPatch, GatewayConfig};
use updraft_core::delta;

/// A 256 KiB "firmware" and its next build: the same image with a few small edits (a
/// changed constant table, a string, a function grown by 64 bytes in the middle).
fn firmware_pair() -> (Vec<u8>, Vec<u8>) {
    // Firmware-like: code-ish repeats with variation, not pure noise.
    let noise = random_bytes(64 * 1024);
    let mut base = Vec::with_capacity(256 * 1024);
    for i in 0..(256 * 1024) {
        base.push(noise[(i * 7 + i / 4096) % noise.len()] ^ (i as u8 & 0x0f));
    }
    let mut target = base.clone();
    target[1000..1100].iter_mut().for_each(|b| *b = b.wrapping_add(1));
    target[200_000..200_016].copy_from_slice(b"version 1.1.0\0\0\0");
    let grown = random_bytes(64);
    target.splice(131_072..131_072, grown);
    (base, target)
}

/// 1.0.0 and 1.1.0 of [`firmware_pair`] pushed to a new repository of the registry.
struct Pair {
    reg: &'static Registry,
    repo: String,
    work: tempfile::TempDir,
    base: Vec<u8>,
    target: Vec<u8>,
    base_digest: String,
    target_digest: String,
    /// What a device running 1.0.0 reports (`esp_partition_get_sha256`).
    base_sha256: String,
}

impl Pair {
    fn pushed(name: &str) -> Pair {
        let reg = registry();
        let repo = unique_repo(name);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        let (base, target) = firmware_pair();
        let media = "application/vnd.espressif.esp32.app";
        let base_digest = push_file(&reg.addr, &repo, "v1.0.0", dir, "fw-1.0.0.bin", media, &base);
        let target_digest = push_file(&reg.addr, &repo, "v1.1.0", dir, "fw-1.1.0.bin", media, &target);
        let base_sha256 = hex::encode(updraft_delta::esp::image_digest(&base));
        Pair { reg, repo, work, base, target, base_digest, target_digest, base_sha256 }
    }
}

fn oras(args: &[&str]) -> std::process::Output {
    Command::new("oras").args(args).output().expect("run oras")
}

async fn admin_json(admin: &str, path: &str) -> Option<serde_json::Value> {
    reqwest::get(format!("{admin}{path}")).await.ok()?.json().await.ok()
}

/// Polls `check` until it is true, at most `secs` seconds.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_builds_the_patch_once_and_a_gateway_offers_and_serves_it() {
    let Pair { reg, repo, work, base, target, base_digest, target_digest, base_sha256 } = Pair::pushed("delta");
    let dir = work.path();

    // The worker, told to build 1.0.0 -> 1.1.0.
    let mut ch = channel("esp32", &reg.addr, &repo, ("1.1.0", "v1.1.0", &target_digest));
    ch.deltas.build = vec![pinned(("1.0.0", "v1.0.0", &base_digest))];
    let admin_port = free_port();
    let mut worker_config = config(&dir.join("worker-cache"), vec![ch.clone()]);
    worker_config.admin_listen = format!("127.0.0.1:{admin_port}");
    worker_config.listen = format!("127.0.0.1:{}", free_port());
    let config_path = dir.join("worker.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&worker_config).unwrap()).unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let log = dir.join("worker.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut worker = Proc::gateway(&config_path, &["--mirror"], &log);
    let started = Instant::now();

    let tag = delta::tag(&base_digest, &target_digest);
    let reference = format!("{}/{repo}:{tag}", reg.addr);
    let deadline = Instant::now() + Duration::from_secs(180);
    let manifest = loop {
        let out = oras(&["manifest", "fetch", "--plain-http", &reference]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no {tag} after 180 s; worker log:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let built_after = started.elapsed();
    assert_eq!(manifest["artifactType"], delta::ESP_ARTIFACT_TYPE);
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(manifest["subject"]["digest"], target_digest.as_str());
    let target_manifest = oras(&["manifest", "fetch", "--plain-http", &format!("{}/{repo}@{target_digest}", reg.addr)]);
    assert_eq!(manifest["subject"]["size"], target_manifest.stdout.len());
    assert_eq!(manifest["layers"][0]["mediaType"], delta::ESP_PATCH_MEDIA_TYPE);
    let annotations = &manifest["annotations"];
    assert_eq!(annotations[delta::ANNOTATION_BASE_VERSION], "1.0.0");
    assert_eq!(annotations[delta::ANNOTATION_BASE_DIGEST], base_digest.as_str());
    assert_eq!(annotations[delta::ANNOTATION_BASE_SHA256], base_sha256.as_str());
    assert_eq!(annotations[delta::ANNOTATION_TARGET_VERSION], "1.1.0");
    assert_eq!(annotations[delta::ANNOTATION_TARGET_DIGEST], target_digest.as_str());
    assert_eq!(annotations[delta::ANNOTATION_TARGET_SHA256], sha256_hex(&target).as_str());
    let patch_digest = resolve(&reg.addr, &repo, &tag);

    wait_for(10, "the worker reports the build", || async {
        admin_json(&admin, "/deltas").await.is_some_and(|d| d[0]["state"] == "built")
    })
    .await;
    let status = admin_json(&admin, "/deltas").await.unwrap();
    eprintln!("built {tag} in {built_after:?} (from start, fetches included): {status}");
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("updraft_delta_builds_total{channel=\"esp32\",outcome=\"built\"} 1"), "{metrics}");
    assert!(metrics.contains("updraft_delta_build_seconds_count 1"), "{metrics}");

    // Restarted, the worker finds the tag and builds nothing.
    worker.kill();
    let mut worker = Proc::gateway(&config_path, &["--mirror"], &log);
    wait_for(30, "the restarted worker finds the patch", || async {
        admin_json(&admin, "/deltas").await.is_some_and(|d| d[0]["state"] == "present")
    })
    .await;
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("outcome=\"present\"} 1") && !metrics.contains("outcome=\"built\""), "{metrics}");
    assert_eq!(resolve(&reg.addr, &repo, &tag), patch_digest, "the tag was not pushed again");
    worker.kill();

    // A gateway serving the patch, pinned as the operator renders it.
    let mut ch = channel("esp32", &reg.addr, &repo, ("1.1.0", "v1.1.0", &target_digest));
    ch.deltas.patches = vec![DeltaPatch {
        base: pinned(("1.0.0", "v1.0.0", &base_digest)),
        base_sha256: base_sha256.clone(),
        target: pinned(("1.1.0", "v1.1.0", &target_digest)),
        digest: patch_digest.clone(),
    }];
    let gateway_config: GatewayConfig = config(&dir.join("gateway-cache"), vec![ch]);
    let gw = Gateway::start(gateway_config).await;
    let plain = gw.wait_ok("/firmware?device=esp32").await;
    let plain_headers = plain.headers().clone();
    assert_eq!(plain.bytes().await.unwrap(), target);

    let check = |body: serde_json::Value| {
        let (http, url) = (gw.http.clone(), format!("{}/api/v1/channels/esp32/check", gw.url));
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let asked = serde_json::json!({"version": "v1.0.0", "sha256": base_sha256.to_uppercase()});
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = check(asked.clone()).await;
        if answer.get("delta").is_some() {
            break answer;
        }
        assert!(Instant::now() < deadline, "no delta offered after 60 s: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["version"], "1.1.0");
    assert_eq!(answer["sha256"], sha256_hex(&target).as_str(), "the full image's fields stay");
    let d = &answer["delta"];
    assert_eq!(d["baseSha256"], base_sha256.as_str());

    let url = d["url"].as_str().unwrap();
    let response = gw.get(url).await;
    assert_eq!(response.status(), 200, "{url}");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let patch = response.bytes().await.unwrap().to_vec();
    assert_eq!(d["size"], patch.len());
    assert_eq!(d["sha256"], sha256_hex(&patch).as_str());
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&patch)));
    let ranged = gw.http.get(format!("{}{url}", gw.url)).header("range", "bytes=0-63").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), patch[..64]);

    // The header names the base; the reference implementation applies the rest.
    assert_eq!(patch[..4], updraft_delta::esp::MAGIC.to_le_bytes());
    assert_eq!(hex::encode(&patch[4..36]), base_sha256);
    std::fs::write(dir.join("base.bin"), &base).unwrap();
    std::fs::write(dir.join("body.patch"), &patch[64..]).unwrap();
    let applied = e2e::images::required_tool("detools")
        .arg("apply_patch")
        .args([dir.join("base.bin"), dir.join("body.patch"), dir.join("out.bin")])
        .output()
        .unwrap();
    assert!(applied.status.success(), "detools: {}", String::from_utf8_lossy(&applied.stderr));
    assert!(std::fs::read(dir.join("out.bin")).unwrap() == target, "detools' output is not the target");
    eprintln!(
        "patch {} bytes for a {} byte target ({:.2} %)",
        patch.len(),
        target.len(),
        100.0 * patch.len() as f64 / target.len() as f64
    );

    // Anything else gets the full image only.
    for (version, sha) in [("1.0.0", "00".repeat(32)), ("1.0.1", base_sha256.clone())] {
        let other = check(serde_json::json!({"version": version, "sha256": sha})).await;
        assert!(other.get("delta").is_none(), "{version}: {other}");
        assert_eq!(other["version"], "1.1.0");
    }
    let without = check(serde_json::json!({"version": "1.0.0"})).await;
    assert!(without.get("delta").is_none());
    let wrong = gw.get(&format!("/api/v1/channels/esp32/delta?from=1.0.0&sha256={}", "00".repeat(32))).await;
    assert_eq!(wrong.status(), 404);

    // OtaFlux: current= alone changes nothing, byte for byte; with sha256= the patch.
    let same = gw.get("/firmware?device=esp32&current=1.0.0").await;
    assert_eq!(same.status(), 200);
    for h in ["etag", "content-length", "content-type", "content-disposition"] {
        assert_eq!(same.headers().get(h), plain_headers.get(h), "{h}");
    }
    assert!(same.headers().get("x-updraft-delta").is_none());
    assert_eq!(same.bytes().await.unwrap(), target);
    let wrong = gw.get(&format!("/firmware?device=esp32&current=1.0.0&sha256={}", "00".repeat(32))).await;
    assert!(wrong.headers().get("x-updraft-delta").is_none());
    assert_eq!(wrong.bytes().await.unwrap(), target);
    let opted = gw.get(&format!("/firmware?device=esp32&current=1.0.0&sha256={base_sha256}")).await;
    assert_eq!(opted.headers()["x-updraft-delta"], "1.0.0");
    assert_eq!(opted.bytes().await.unwrap(), patch);
    let version = gw.get(&format!("/version?device=esp32&current=1.0.0&sha256={base_sha256}")).await;
    assert_eq!(version.text().await.unwrap(), format!("1.1.0\n{}\n{}", crc32fast::hash(&target), target.len()));
}

/// A patch is offered only after the gateway applied it to the base it names and got the
/// target it names: a file pushed under the pair's tag by anyone who may push there
/// (here a real patch, but to another release) is refused, and devices get the full image.
#[tokio::test]
async fn a_patch_that_does_not_give_its_target_is_never_offered() {
    let Pair { reg, repo, work, base, target, base_digest, target_digest, base_sha256 } = Pair::pushed("delta-forged");
    let dir = work.path();
    let mut other = target.clone();
    other[1000..1100].fill(0x5a);
    let forged = updraft_delta::esp::patch(&base, &other);
    let tag = delta::tag(&base_digest, &target_digest);
    let forged_digest = push_file(&reg.addr, &repo, &tag, dir, "forged.patch", delta::ESP_PATCH_MEDIA_TYPE, &forged);

    let mut ch = channel("esp32", &reg.addr, &repo, ("1.1.0", "v1.1.0", &target_digest));
    ch.deltas.patches = vec![DeltaPatch {
        base: pinned(("1.0.0", "v1.0.0", &base_digest)),
        base_sha256: base_sha256.clone(),
        target: pinned(("1.1.0", "v1.1.0", &target_digest)),
        digest: forged_digest,
    }];
    let gw = Gateway::start(config(&dir.join("gateway-cache"), vec![ch])).await;
    gw.wait_ok("/firmware?device=esp32").await;
    let url = format!("/api/v1/channels/esp32/delta?from=1.0.0&sha256={base_sha256}&to=1.1.0");
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let r = gw.get(&url).await;
        if r.status() == 502 {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the forged patch was not refused in 60 s: {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused.contains("refused") && refused.contains("SHA-256"), "{refused}");
    let r = gw.http.post(format!("{}/api/v1/channels/esp32/check", gw.url));
    let answer: serde_json::Value = r
        .json(&serde_json::json!({"version": "1.0.0", "sha256": base_sha256}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["version"], "1.1.0");
    assert!(answer.get("delta").is_none(), "a refused patch offered: {answer}");
    let otaflux = gw.get(&format!("/firmware?device=esp32&current=1.0.0&sha256={base_sha256}")).await;
    assert!(otaflux.headers().get("x-updraft-delta").is_none());
    assert_eq!(otaflux.bytes().await.unwrap(), target);
}
