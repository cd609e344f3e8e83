//! A release the operator refuses because its signature does not verify is announced
//! to the webhooks of the OtaGateway it is attached to: the real operator against
//! kube-apiserver 1.20 and the real registry, a FirmwareChannel under `spec.verify`, a
//! gateway whose `spec.notifications.webhooks` points at a receiver in this test (plain
//! TCP, every request recorded). An unsigned release gives one `release.failed` POST,
//! signed with the key in the webhook's Secret: the test checks the HMAC with
//! `openssl dgst -hmac`, independently of the code that made it. The same for an
//! ImageStream: each image version left out of the index for its signature is posted
//! once, naming the stream, tag and digest.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::conditions::has_status;
use e2e::cosign::{Key, Repository};
use e2e::hooks::{receiver, Request};
use e2e::procs::{operator, oras_push, wait_for, Proc, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const HMAC_KEY: &str = "hook-s3cret";

/// `sha256=<hex>` by `openssl dgst -sha256 -hmac`.
fn openssl_hmac(dir: &std::path::Path, key: &str, body: &[u8]) -> String {
    let file = dir.join("body.json");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("openssl").args(["dgst", "-sha256", "-hmac", key, "-r"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256={}", text.split_whitespace().next().unwrap())
}

/// A namespace with the real operator, a cosign key in Secret `cosign`, and an
/// OtaGateway whose webhook (HMAC key [`HMAC_KEY`] in Secret `hook`) posts to a
/// [`receiver`] recording into `seen`.
struct Hooked {
    ns: String,
    dir: TempDir,
    operator: Proc,
    seen: Arc<Mutex<Vec<Request>>>,
    key: Key,
}

impl Hooked {
    fn new(name: &str) -> Self {
        install_crds();
        let ns = namespace(name);
        let dir = TempDir::new(name);
        let (operator, _admin): (Proc, u16) = operator(&ns, &dir.0, "operator", &[]);
        let (port, seen) = receiver();
        let key = Key::generate(&dir.0, "cosign");
        let key_file = format!("--from-file=cosign.pub={}", key.public_file().display());
        kubectl(&["create", "secret", "generic", "cosign", "-n", &ns, &key_file], None).ok();
        let hmac = format!("--from-literal=hmac={HMAC_KEY}");
        kubectl(&["create", "secret", "generic", "hook", "-n", &ns, &hmac], None).ok();
        apply(
            &ns,
            &format!(
                "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {{name: default}}\nspec:\n  notifications:\n    webhooks:\n    - url: http://127.0.0.1:{port}/hooks\n      secretRef: {{name: hook, key: hmac}}\n"
            ),
        );
        Hooked { ns, dir, operator, seen, key }
    }
}

/// `kubectl apply --server-side` in `ns`, again while the API server does not know a
/// field yet (a CRD applied a moment ago).
fn apply(ns: &str, yaml: &str) {
    wait_for(Duration::from_secs(20), "kubectl apply", || {
        let out = kubectl(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(yaml));
        (out.success || !out.stderr.contains("unknown field")).then_some(out)
    })
    .ok();
}

#[test]
fn an_unsigned_release_is_posted_once_with_a_signature_the_receiver_can_check() {
    let Hooked { ns, dir, operator, seen, key } = Hooked::new("verify-hook");
    let repository = format!("e2e/{ns}/firmware");
    let registry = &cluster().registry;
    let apply = |yaml: &str| apply(&ns, yaml);
    let push = |tag: &str| {
        let file = dir.0.join(format!("fw-{tag}.bin"));
        std::fs::write(&file, format!("firmware {tag} of {ns}")).unwrap();
        oras_push(&repository, tag, &file, MEDIA_TYPE)
    };
    let first = push("1.0.0");
    Repository { registry, name: &repository, dir: &dir.0 }.sign_with_tag(&key, &first);
    apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true}}\n  verify: {{provider: cosign, publicKeySecret: {{name: cosign}}}}\n"
    ));
    let channel = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(WAIT, what, || {
                let out = kubectl(&["get", "-n", &ns, "fwc/esp32", "-o", "json"], None);
                let v: Value = serde_json::from_str(&out.stdout).ok()?;
                pred(&v).then_some(v)
            })
        }));
        found.unwrap_or_else(|_| panic!("{what} never happened; operator log:\n{}", operator.output()))
    };
    let verified = |v: &Value, status: &str| has_status(v, "Verified", status);
    channel(&|v| v["status"]["latest"]["digest"] == first.as_str() && verified(v, "True"), "1.0.0 pinned");
    assert!(seen.lock().unwrap().is_empty(), "a verified release posts nothing from the operator");

    // An unsigned release: refused, announced once.
    let unsigned = push("1.1.0");
    channel(&|v| verified(v, "False"), "1.1.0 refused");
    let requests = wait_for(Duration::from_secs(30), "the webhook POST", || {
        let seen = seen.lock().unwrap();
        (!seen.is_empty()).then(|| seen.clone())
    });
    // The channel is re-checked every 2 s; the refusal is announced on its transition only.
    std::thread::sleep(Duration::from_secs(8));
    let requests_later = seen.lock().unwrap().clone();
    assert_eq!(requests_later.len(), 1, "one POST per refusal: {requests_later:#?}");
    let request = &requests[0];
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["event"], "release.failed", "{body}");
    assert_eq!((body["namespace"].as_str(), body["channel"].as_str()), (Some(ns.as_str()), Some("esp32")), "{body}");
    assert_eq!((body["tag"].as_str(), body["digest"].as_str()), (Some("1.1.0"), Some(unsigned.as_str())), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("no cosign signature"), "{body}");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-updraft-event"), Some("release.failed"));
    let delivery = request.header("x-updraft-delivery").unwrap_or_default();
    assert!(delivery.len() == 36 && delivery.as_bytes()[14] == b'4', "a v4 UUID: {delivery:?}");
    assert_eq!(
        request.header("x-updraft-signature"),
        Some(openssl_hmac(&dir.0, HMAC_KEY, &request.body).as_str()),
        "the signature is HMAC-SHA256 of the exact body with the Secret's key"
    );
}

#[test]
fn an_unsigned_image_version_is_posted_once_naming_the_stream() {
    let Hooked { ns, dir, operator, seen, key } = Hooked::new("verify-hook-stream");
    let repository = format!("e2e/{ns}/images");
    let registry = &cluster().registry;
    let apply = |yaml: &str| apply(&ns, yaml);
    // Two versions stored as the gateway stores uploads (annotations name them); one signed.
    let file = dir.0.join("lxd.tar.xz");
    std::fs::write(&file, b"metadata tarball stand-in: the annotations name the version").unwrap();
    // A version without a rootfs is not one the gateway lists, so it is not counted.
    std::fs::write(dir.0.join("rootfs.squashfs"), b"rootfs stand-in").unwrap();
    let push = |serial: &str| {
        let tag = format!("debian_bookworm_amd64_default_{}", serial.replace(':', ""));
        let out = Command::new("oras")
            .current_dir(&dir.0)
            .args(["push", "--plain-http", &format!("{registry}/{repository}:{tag}")])
            .args(["--annotation", "dev.updraft.simplestreams.product=debian:bookworm:amd64:default"])
            .args(["--annotation", &format!("dev.updraft.simplestreams.serial={serial}")])
            .arg("lxd.tar.xz:application/vnd.updraft.simplestreams.metadata.v1.tar+xz")
            .arg("rootfs.squashfs:application/vnd.updraft.simplestreams.rootfs.v1.squashfs")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let digest = text.lines().find_map(|l| l.strip_prefix("Digest: ")).unwrap().trim().to_owned();
        (tag, digest)
    };
    let (_, signed) = push("20260101_00:00");
    Repository { registry, name: &repository, dir: &dir.0 }.sign_with_tag(&key, &signed);
    let (tag, unsigned) = push("20260102_00:00");
    apply(&format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: ImageStream\nmetadata: {{name: lab}}\nspec:\n  interval: 2s\n  source: {{oci: {{registry: \"{registry}\", repository: \"{repository}\", insecure: true}}}}\n  verify: {{publicKeySecret: {{name: cosign}}}}\n"
    ));
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(WAIT, "the webhook POST", || {
            let seen = seen.lock().unwrap();
            (!seen.is_empty()).then(|| seen.clone())
        })
    }));
    let requests = found.unwrap_or_else(|_| panic!("no POST; operator log:\n{}", operator.output()));
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(seen.lock().unwrap().len(), 1, "one POST per refused version: {:#?}", seen.lock().unwrap());
    let request = &requests[0];
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["event"], "release.failed", "{body}");
    assert_eq!((body["namespace"].as_str(), body["stream"].as_str()), (Some(ns.as_str()), Some("lab")), "{body}");
    assert!(body.get("channel").is_none(), "{body}");
    assert_eq!(
        (body["tag"].as_str(), body["digest"].as_str()),
        (Some(tag.as_str()), Some(unsigned.as_str())),
        "{body}"
    );
    assert!(body["reason"].as_str().unwrap().contains("no cosign signature"), "{body}");
    assert_eq!(
        request.header("x-updraft-signature"),
        Some(openssl_hmac(&dir.0, HMAC_KEY, &request.body).as_str()),
        "the signature is HMAC-SHA256 of the exact body with the Secret's key"
    );
    let out = kubectl(&["get", "-n", &ns, "imgs/lab", "-o", "json"], None).ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["versions"], 1, "only the signed version is indexed: {v:#}");
}
