//! The JSON channel API: listing, firmware info with signature, the upgrade check.

mod common;

use base64::Engine as _;
use common::*;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use ota_gateway::firmware::signing::SignedFields;

const RAW: &str = "application/vnd.updraft.firmware.v1";

/// 202 while the fetch is held back by a paused proxy, then 200 with the update,
/// 204 when up to date, 400 for bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_check_answers() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("check");
    let firmware = random_bytes(20_000);
    let digest = push_file(&reg.addr, &repo, "v2.1.0", work.path(), "fw.bin", RAW, &firmware);
    let proxy = Proxy::start(&reg.addr, true, 0).await;
    let c = channel("esp32", &proxy.addr.to_string(), &repo, ("2.1.0", "v2.1.0", &digest));
    let gw = Gateway::start(config(&work.path().join("cache"), vec![c])).await;
    let check = |body: &'static str| gw.http.post(format!("{}/api/v1/channels/esp32/check", gw.url)).body(body).send();

    let pending = check(r#"{"version": "2.0.0", "id": "dev-1"}"#).await.unwrap();
    assert_eq!(pending.status(), 202);
    assert_eq!(pending.headers()["retry-after"], "5");
    let waiting = futures::future::join_all((0..10).map(|_| gw.get("/firmware?device=esp32"))).await;
    assert!(waiting.iter().all(|r| r.status() == 503 && r.headers()["retry-after"] == "5"));

    proxy.resume();
    gw.wait_ok("/api/v1/channels/esp32").await;
    let log = std::fs::read_to_string(reg.dir.parent().unwrap().join("logs/registry.log")).unwrap();
    let blob_gets = log.lines().filter(|l| l.contains(&format!("GET /v2/{repo}/blobs/"))).count();
    assert_eq!(blob_gets, 1, "concurrent requests shared one fetch");
    let update = check(r#"{"version": "2.0.0", "id": "dev-1"}"#).await.unwrap();
    assert_eq!(update.status(), 200);
    let info: serde_json::Value = update.json().await.unwrap();
    assert_eq!(info["version"], "2.1.0");
    assert_eq!(info["sha256"], sha256_hex(&firmware));
    assert_eq!(info["crc32"], crc32fast::hash(&firmware));
    assert_eq!(info["size"], firmware.len());
    let url = info["url"].as_str().unwrap();
    let downloaded = gw.get(url).await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&firmware));

    assert_eq!(check(r#"{"version": "2.1.0"}"#).await.unwrap().status(), 204);
    assert_eq!(check(r#"{"version": "v2.1.0"}"#).await.unwrap().status(), 204);
    for bad in [r#"{"version": ""}"#, r#"{"id": "x"}"#, "not json", r#"{"version": "1", "extra": 1}"#] {
        let r = check(bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let reason: serde_json::Value = r.json().await.unwrap();
        assert!(reason["error"].is_string(), "{bad}: {reason}");
    }
    let unknown = gw.http.post(format!("{}/api/v1/channels/nope/check", gw.url)).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"updraft_gateway_device_checkins_total{channel="esp32",version="2.0.0"} 2"#),
        "{metrics}"
    );
}

/// Channel list and info; the signature verifies with the served public key over
/// the canonical JSON of the documented fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_info_is_signed() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("signed");
    let firmware = random_bytes(4096);
    let digest = push_file(&reg.addr, &repo, "1.0.0", work.path(), "fw.bin", RAW, &firmware);
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let key_file = work.path().join("signing.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let mut cfg =
        config(&work.path().join("cache"), vec![channel("rp2040", &reg.addr, &repo, ("1.0.0", "1.0.0", &digest))]);
    cfg.signing_key_file = Some(key_file);
    cfg.public_url = Some("https://ota.example.com/".into());
    let gw = Gateway::start(cfg).await;

    let info: serde_json::Value = gw.wait_ok("/api/v1/channels/rp2040").await.json().await.unwrap();
    assert_eq!(info["url"], "https://ota.example.com/api/v1/channels/rp2040/firmware?version=1.0.0");
    assert_eq!(info["digest"], digest);
    let pem = gw.get("/.well-known/updraft/signing-key.pub").await.text().await.unwrap();
    let public = VerifyingKey::from_public_key_pem(&pem).unwrap();
    assert_eq!(public, key.verifying_key());
    let sha = sha256_hex(&firmware);
    let fields = SignedFields {
        channel: "rp2040",
        crc32: crc32fast::hash(&firmware),
        sha256: &sha,
        size: 4096,
        version: "1.0.0",
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(info["signature"].as_str().unwrap()).unwrap();
    public.verify(&fields.canonical_json(), &Signature::from_slice(&raw).unwrap()).unwrap();

    let list: serde_json::Value = gw.get("/api/v1/channels").await.json().await.unwrap();
    assert_eq!(list[0]["name"], "rp2040");
    assert_eq!(list[0]["version"], "1.0.0");
    assert_eq!(list[0]["ready"], true);
    assert_eq!(gw.get("/api/v1/channels/nope").await.status(), 404);
    let admin = |p: &'static str| gw.http.get(format!("{}{p}", gw.admin_url)).send();
    assert_eq!(admin("/healthz").await.unwrap().status(), 200);
    assert_eq!(admin("/readyz").await.unwrap().status(), 200);
}
