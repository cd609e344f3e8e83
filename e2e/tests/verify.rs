//! Signature verification end to end: the real operator against kube-apiserver 1.20 and
//! the real registry. Releases are signed as cosign does by [`e2e::cosign`] (openssl keys
//! and signatures, pushed with oras); the channel's `spec.verify` names a Secret of public
//! keys. An unsigned (or wrongly signed) release is refused with `Verified=False` and an
//! event naming its tag, digest and why, while the release before keeps serving; a signed
//! one pushed after it is picked up.

use std::time::Duration;

use e2e::conditions::{condition, has_status};
use e2e::cosign::{CosignCli, Key, Repository};
use e2e::procs::{oras_push, wait_for, TempDir};
use e2e::world::{OnUnknownField, World};
use e2e::{cluster, kubectl};
use serde_json::Value;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const WAIT: Duration = Duration::from_secs(90);

/// The steps only this file takes.
trait Signing {
    fn registry(&self) -> Repository<'_>;
    fn push(&self, tag: &str) -> String;
    fn events(&self, reason: &str) -> Vec<String>;
    fn rendered_current(&self) -> Option<String>;
}

impl Signing for World {
    fn registry(&self) -> Repository<'_> {
        Repository { registry: &cluster().registry, name: &self.repository, dir: &self.dir.0 }
    }

    /// Pushes firmware bytes unique to `tag`; returns the manifest digest.
    fn push(&self, tag: &str) -> String {
        let file = self.dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, format!("firmware {tag} of {}", self.ns)).unwrap();
        oras_push(&self.repository, tag, &file, MEDIA_TYPE)
    }

    /// The notes of the channel's events with `reason`.
    fn events(&self, reason: &str) -> Vec<String> {
        let out = kubectl(&["get", "events.events.k8s.io", "-n", &self.ns, "-o", "json"], None).ok();
        let events: Value = serde_json::from_str(&out).unwrap();
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == "esp32")
            .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The digest the rendered gateway config pins as the channel's current release.
    fn rendered_current(&self) -> Option<String> {
        let out = kubectl(&["get", "-n", &self.ns, "configmap/default-config", "-o", "json"], None);
        let cm: Value = serde_json::from_str(&out.stdout).ok()?;
        let config: Value = serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str()?).ok()?;
        config["channels"][0]["current"]["digest"].as_str().map(str::to_owned)
    }
}

/// The operator started (not waited for); waits of 90 s; applying retries for up to
/// 20 s while kubectl reports an unknown field.
fn world(name: &str) -> World {
    World::new(name).patience(WAIT).on_unknown_field(OnUnknownField::Retry(Duration::from_secs(20)))
}

fn verified(v: &Value) -> Option<&Value> {
    condition(v, "Verified")
}

fn verified_is(v: &Value, status: &str, reason: &str) -> bool {
    verified(v).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

#[test]
fn only_signed_releases_are_pinned() {
    let w = world("op-verify");
    let keys = TempDir::new("op-verify-keys");
    let (ours, theirs) = (Key::generate(&keys.0, "ours"), Key::generate(&keys.0, "theirs"));
    // A Secret with two entries: the trusted key (*.pub) and a note that is not a key.
    let public = ours.public_file().to_str().unwrap();
    let key_file = format!("--from-file=cosign.pub={public}");
    kubectl(
        &["create", "secret", "generic", "cosign", "-n", &w.ns, &key_file, "--from-literal=README=not a key"],
        None,
    )
    .ok();

    let first = w.push("1.0.0");
    w.registry().sign_with_tag(&ours, &first);
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n  verify: {{provider: cosign, publicKeySecret: {{name: cosign}}}}\n",
        cluster().registry,
        w.repository
    ));
    let ch = w.wait("fwc/esp32", "1.0.0 pinned and Verified", |v| {
        v["status"]["latest"]["digest"] == first.as_str() && verified_is(v, "True", "Verified")
    });
    assert!(verified(&ch).unwrap()["message"].as_str().unwrap().contains("tag signature"), "{ch:#}");

    // An unsigned release is refused; 1.0.0 keeps serving.
    let unsigned = w.push("1.1.0");
    let ch = w.wait("fwc/esp32", "1.1.0 refused", |v| verified_is(v, "False", "NoSignature"));
    let message = verified(&ch).unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("tag 1.1.0") && message.contains(&unsigned), "{message}");
    assert_eq!(ch["status"]["latest"]["digest"], first.as_str());
    assert!(has_status(&ch, "Ready", "True"), "{ch:#}");
    let refusals = w.events("Unverified");
    assert!(refusals.iter().any(|n| n.contains("tag 1.1.0") && n.contains(&unsigned)), "{refusals:?}");
    wait_for(WAIT, "the gateway config still pins 1.0.0", || (w.rendered_current()? == first).then_some(()));

    // Signed, but with a key the channel does not trust.
    let wrong = w.push("1.2.0");
    w.registry().sign_with_tag(&theirs, &wrong);
    let ch = w.wait("fwc/esp32", "1.2.0 refused", |v| verified_is(v, "False", "WrongKey"));
    assert!(verified(&ch).unwrap()["message"].as_str().unwrap().contains(&wrong));
    assert_eq!(ch["status"]["latest"]["digest"], first.as_str());

    // A release signed as cosign 3 does (a bundle referrer) is picked up.
    let signed = w.push("1.3.0");
    w.registry().sign_with_bundle(&ours, &signed);
    let ch = w.wait("fwc/esp32", "1.3.0 pinned", |v| {
        v["status"]["latest"]["digest"] == signed.as_str() && verified_is(v, "True", "Verified")
    });
    assert_eq!(ch["status"]["previous"]["digest"], first.as_str());
    assert!(verified(&ch).unwrap()["message"].as_str().unwrap().contains("sigstore bundle"), "{ch:#}");
    assert!(!w.events("Verified").is_empty());
    wait_for(WAIT, "the gateway config pins 1.3.0", || (w.rendered_current()? == signed).then_some(()));
}

/// Issue #19 on the operator's side, signed by the real `cosign sign --key`: a channel
/// created after an unsigned v1.1.0 was pushed over a signed v1.0.0 resolves v1.0.0
/// (`status.latest`, Ready), and `Verified=False` names v1.1.0 as skipped. It used to
/// resolve nothing for as long as v1.1.0 stayed unsigned.
#[test]
fn a_channel_created_after_an_unsigned_push_serves_the_newest_signed_release() {
    assert!(CosignCli::available(), "needs the cosign CLI (Debian: apt-get install -t trixie cosign)");
    let w = world("op-verify-skip");
    let keys = TempDir::new("op-verify-skip-keys");
    let cosign = CosignCli::generate(&keys.0);
    let public = format!("--from-file=cosign.pub={}", cosign.public.display());
    kubectl(&["create", "secret", "generic", "cosign", "-n", &w.ns, &public], None).ok();
    let signed = w.push("v1.0.0");
    cosign.sign(&cluster().registry, &w.repository, &signed, &[]);
    let unsigned = w.push("v1.1.0");

    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n  verify: {{provider: cosign, publicKeySecret: {{name: cosign}}}}\n",
        cluster().registry,
        w.repository
    ));
    let ch = w.wait("fwc/esp32", "1.0.0 pinned beside the skipped 1.1.0", |v| {
        v["status"]["latest"]["digest"] == signed.as_str() && verified_is(v, "False", "NoSignature")
    });
    let message = verified(&ch).unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("tag v1.1.0") && message.contains(&unsigned) && message.contains("skipped"), "{message}");
    assert!(message.contains(&format!("serving 1.0.0 ({signed})")), "{message}");
    assert!(has_status(&ch, "Ready", "True"), "{ch:#}");
    wait_for(WAIT, "the gateway config pins 1.0.0", || (w.rendered_current()? == signed).then_some(()));

    // cosign signs 1.1.0: picked up, nothing skipped any more.
    cosign.sign(&cluster().registry, &w.repository, &unsigned, &[]);
    w.wait("fwc/esp32", "1.1.0 pinned and Verified", |v| {
        v["status"]["latest"]["digest"] == unsigned.as_str() && verified_is(v, "True", "Verified")
    });
}

#[test]
fn a_missing_key_secret_is_explained() {
    let w = world("op-verify-nokey");
    w.push("1.0.0");
    w.apply("apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n");
    w.apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n  verify: {{publicKeySecret: {{name: absent}}}}\n",
        cluster().registry,
        w.repository
    ));
    let ch = w.wait("fwc/esp32", "Ready=False PublicKeyError", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "PublicKeyError")
    });
    assert!(ch["status"]["latest"].is_null(), "nothing pinned without keys: {ch:#}");
}
