//! Standalone channels under `policy.verify`: the gateway serves the newest release
//! whose cosign signature verifies with one of the configured key files (the same
//! resolver and verifier as the operator); newer ones that do not verify are skipped.
//! Releases are signed by the real `cosign` CLI ([`e2e::cosign::CosignCli`]) and, for
//! what it cannot make, as cosign does by [`e2e::cosign`] (openssl keys and signatures,
//! pushed with oras) against the real registry.

mod common;

use std::time::Duration;

use common::*;
use e2e::cosign::{CosignCli, Key, Repository};
use updraft_core::cosign::VerifyConfig;
use updraft_core::version::VersionPolicy;

const RAW: &str = "application/vnd.updraft.firmware.v1";

fn verifying(key: &Key) -> VersionPolicy {
    let verify = VerifyConfig { public_key_files: vec![key.public_file().to_owned()] };
    VersionPolicy { interval: "1s".into(), verify: Some(verify), ..Default::default() }
}

/// What `/version?device=esp32` answers: status and body.
async fn version(gw: &Gateway) -> (u16, String) {
    let r = gw.get("/version?device=esp32").await;
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until the resolver has listed the registry's tags at least once (its gauge
/// says the registry answered), so what follows happens after a resolution.
async fn wait_resolved_once(gw: &Gateway, registry: &str) {
    let series = format!("updraft_gateway_registry_up{{registry=\"{registry}\"}} 1");
    for _ in 0..300 {
        if gw.metrics().await.contains(&series) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the resolver never reached the registry: {}", gw.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_releases_are_pinned() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("verify");
    let signing = Repository { registry: &reg.addr, name: &repo, dir: work.path() };
    let (ours, theirs) = (Key::generate(work.path(), "ours"), Key::generate(work.path(), "theirs"));

    let first = random_bytes(1000);
    let d1 = push_file(&reg.addr, &repo, "1.0.0", work.path(), "a.bin", RAW, &first);
    signing.sign_with_tag(&ours, &d1);
    let mut c = channel("esp32", &reg.addr, &repo, ("", "", ""));
    c.current = None;
    c.policy = Some(verifying(&ours));
    let gw = Gateway::start(config(&work.path().join("cache"), vec![c])).await;
    let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
    assert_eq!(body, format!("1.0.0\n{}\n1000", crc32fast::hash(&first)));

    // Unsigned, then signed with a key the gateway does not trust: 1.0.0 keeps serving
    // through several resolutions (one a second).
    push_file(&reg.addr, &repo, "1.1.0", work.path(), "b.bin", RAW, &random_bytes(10));
    let d2 = push_file(&reg.addr, &repo, "1.2.0", work.path(), "c.bin", RAW, &random_bytes(10));
    signing.sign_with_tag(&theirs, &d2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(version(&gw).await, (200, body.clone()));

    // Signed as cosign 3 does (a bundle referrer): picked up.
    let newest = random_bytes(3000);
    let d3 = push_file(&reg.addr, &repo, "1.3.0", work.path(), "d.bin", RAW, &newest);
    signing.sign_with_bundle(&ours, &d3);
    let expected = format!("1.3.0\n{}\n3000", crc32fast::hash(&newest));
    for _ in 0..200 {
        if version(&gw).await == (200, expected.clone()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("1.3.0 was never served: {:?}", version(&gw).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_release_is_served_once_its_signature_arrives() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("verify-later");
    let ours = Key::generate(work.path(), "ours");
    let firmware = random_bytes(500);
    let digest = push_file(&reg.addr, &repo, "2.0.0", work.path(), "a.bin", RAW, &firmware);
    let mut c = channel("esp32", &reg.addr, &repo, ("", "", ""));
    c.current = None;
    c.policy = Some(verifying(&ours));
    let gw = Gateway::start(config(&work.path().join("cache"), vec![c])).await;

    wait_resolved_once(&gw, &reg.addr).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing to serve yet: the OtaFlux routes answer as OtaFlux does, in its words and
    // type, not with the gateway's JSON.
    for path in ["/version?device=esp32", "/firmware?device=esp32"] {
        let r = gw.get(path).await;
        assert_eq!(r.status(), 404, "{path}: an unsigned release is not served");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8", "{path}");
        assert_eq!(r.text().await.unwrap(), "No firmware for device 'esp32'", "{path}");
    }
    let metrics = gw.metrics().await;
    let refused = r#"updraft_gateway_firmware_unverified_total{channel="esp32",reason="NoSignature"} 1"#;
    assert!(metrics.contains(refused), "refused once, though resolved every second: {metrics}");

    Repository { registry: &reg.addr, name: &repo, dir: work.path() }.sign_with_tag(&ours, &digest);
    let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
    assert_eq!(body, format!("2.0.0\n{}\n500", crc32fast::hash(&firmware)));
}

/// Issue #19: v1.0.0 signed by the real `cosign sign --key`, v1.1.0 pushed unsigned
/// before the gateway starts. The gateway serves v1.0.0 (it used to serve nothing for
/// as long as v1.1.0 stayed unsigned, while a replica started earlier kept serving
/// v1.0.0), reports v1.1.0 once however often it resolves, and moves to v1.1.0 once
/// cosign signs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_unsigned_tag_is_skipped_not_a_reason_to_serve_nothing() {
    assert!(CosignCli::available(), "needs the cosign CLI (Debian: apt-get install -t trixie cosign)");
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let repo = unique_repo("verify-skip");
    let cosign = CosignCli::generate(work.path());
    let first = random_bytes(700);
    let d1 = push_file(&reg.addr, &repo, "v1.0.0", work.path(), "a.bin", RAW, &first);
    cosign.sign(&reg.addr, &repo, &d1, &[]);
    let newer = random_bytes(900);
    let d2 = push_file(&reg.addr, &repo, "v1.1.0", work.path(), "b.bin", RAW, &newer);

    let mut c = channel("esp32", &reg.addr, &repo, ("", "", ""));
    c.current = None;
    c.policy = Some(VersionPolicy {
        interval: "1s".into(),
        verify: Some(VerifyConfig { public_key_files: vec![cosign.public.clone()] }),
        ..Default::default()
    });
    let gw = Gateway::start(config(&work.path().join("cache"), vec![c])).await;
    let body = gw.wait_ok("/version?device=esp32").await.text().await.unwrap();
    assert_eq!(body, format!("1.0.0\n{}\n700", crc32fast::hash(&first)));

    // Several resolutions later: still 1.0.0, and 1.1.0 was reported once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(version(&gw).await, (200, body));
    let metrics = gw.metrics().await;
    let refused = r#"updraft_gateway_firmware_unverified_total{channel="esp32",reason="NoSignature"} 1"#;
    assert!(metrics.contains(refused), "{metrics}");

    cosign.sign(&reg.addr, &repo, &d2, &[]);
    let expected = format!("1.1.0\n{}\n900", crc32fast::hash(&newer));
    for _ in 0..200 {
        if version(&gw).await == (200, expected.clone()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("1.1.0 was never served once signed: {:?}", version(&gw).await);
}

#[test]
fn a_policy_with_an_unreadable_key_file_is_refused() {
    let mut c = channel("esp32", "127.0.0.1:15000", "fw", ("", "", ""));
    c.current = None;
    let verify = VerifyConfig { public_key_files: vec!["/nonexistent/cosign.pub".into()] };
    c.policy = Some(VersionPolicy { verify: Some(verify), ..Default::default() });
    let err = config(std::path::Path::new("/tmp/unused"), vec![c]).validate().unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cosign.pub"), "{err}");
}
