//! A FirmwareChannel's delta patches (`spec.delta`, #23), operator side, against
//! kube-apiserver 1.20 and a real registry: without a census the base is the previous
//! release, rendered for the gateway's worker to build (`deltas.build`); a patch
//! artifact pushed with oras under `updraft_core::delta::tag` (subject the target,
//! annotations naming the pair) is found, shown in `status.deltas` and rendered for the
//! gateways to serve (`deltas.patches`); one whose annotations name another pair is not.

use std::process::Command;

use e2e::conditions::is;
use e2e::procs::oras_push;
use e2e::world::World;
use e2e::{cluster, kubectl, rendered_config};
use serde_json::Value;
use updraft_core::delta;

const MEDIA_TYPE: &str = "application/vnd.updraft.firmware.v1+octet-stream";
const GATEWAY: &str = "apiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec: {}\n";

fn push(w: &World, tag: &str, seed: u8) -> String {
    let file = w.dir.0.join(format!("fw-{tag}.bin"));
    std::fs::write(&file, vec![seed; 2048]).unwrap();
    oras_push(&w.repository, tag, &file, MEDIA_TYPE)
}

fn oras(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("oras").args(args).current_dir(dir).output().expect("oras runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "oras {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Attaches a patch file to `target` (its `subject`) with `annotations`, tags it `tag`,
/// and returns its manifest digest.
fn push_patch(w: &World, target: &str, tag: &str, annotations: &[(&str, &str)]) -> String {
    let registry = &cluster().registry;
    std::fs::write(w.dir.0.join("patch.bin"), [0xd5u8; 300]).unwrap();
    let subject = format!("{registry}/{}@{target}", w.repository);
    let layer = format!("patch.bin:{}", delta::ESP_PATCH_MEDIA_TYPE);
    let annotations: Vec<String> = annotations.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["attach", "--plain-http", "--artifact-type", delta::ESP_ARTIFACT_TYPE];
    for a in &annotations {
        args.extend(["--annotation", a]);
    }
    args.extend([subject.as_str(), layer.as_str()]);
    let out = oras(&args, &w.dir.0);
    let digest = out.lines().find_map(|l| l.strip_prefix("Digest: ")).expect("oras attach prints the digest");
    let digest = digest.trim().to_owned();
    oras(&["tag", "--plain-http", &format!("{registry}/{}@{digest}", w.repository), tag], &w.dir.0);
    digest
}

#[test]
fn the_previous_release_is_built_and_a_pushed_patch_is_served() {
    let w = World::new("op-deltas").ready();
    let base = push(&w, "v1.0.0", 1);
    w.apply(GATEWAY);
    let channel = format!(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {{name: esp32}}\nspec:\n  interval: 2s\n  source: {{registry: \"{}\", repository: \"{}\", insecure: true}}\n  delta: {{}}\n",
        cluster().registry,
        w.repository
    );
    w.apply(&channel);
    let ch = w.wait("fwc/esp32", "1.0.0 resolved", |v| v["status"]["latest"]["version"] == "1.0.0");
    assert!(ch["status"]["deltas"].is_null(), "a first release has no base: {ch:#}");

    // A new release: without a census the base is the previous release, to build.
    let target = push(&w, "v1.1.0", 2);
    let ch = w.wait("fwc/esp32", "a delta from 1.0.0 pending", |v| v["status"]["deltas"][0]["from"] == "1.0.0");
    let patch_tag = delta::tag(&base, &target);
    let entry = &ch["status"]["deltas"][0];
    assert_eq!(ch["status"]["deltas"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&entry["fromTag"], &entry["fromDigest"], &entry["to"], &entry["toDigest"], &entry["tag"]),
        (&"v1.0.0".into(), &base.clone().into(), &"1.1.0".into(), &target.clone().into(), &patch_tag.clone().into())
    );
    assert!(entry["digest"].is_null(), "not built yet: {entry:#}");
    let cm = w.wait("configmap/default-config", "deltas.build rendered", |v| {
        rendered_config(v)["channels"][0]["deltas"]["build"][0]["digest"] == base.as_str()
    });
    let build = &rendered_config(&cm)["channels"][0]["deltas"];
    assert_eq!(build["build"][0]["version"], "1.0.0");
    assert_eq!(build["build"][0]["tag"], "v1.0.0");
    assert!(build["patches"].is_null(), "{build:#}");

    // An artifact under the pair's tag whose annotations name another base is not taken.
    let sha = "5e".repeat(32);
    let wrong = [
        (delta::ANNOTATION_BASE_VERSION, "1.0.0"),
        (delta::ANNOTATION_BASE_DIGEST, target.as_str()),
        (delta::ANNOTATION_BASE_SHA256, sha.as_str()),
        (delta::ANNOTATION_TARGET_VERSION, "1.1.0"),
        (delta::ANNOTATION_TARGET_DIGEST, target.as_str()),
    ];
    push_patch(&w, &target, &patch_tag, &wrong);
    w.wait_until("the wrong patch read", || w.operator.output().contains("not taken for the delta from 1.0.0"));
    let ch = w.get("fwc/esp32").unwrap();
    assert!(ch["status"]["deltas"][0]["digest"].is_null(), "{ch:#}");

    // The right one, under the same tag, is found, shown and served.
    let right = [(delta::ANNOTATION_BASE_DIGEST, base.as_str()), wrong[2], wrong[3], wrong[4], wrong[0]];
    let patch = push_patch(&w, &target, &patch_tag, &right);
    let ch = w.wait("fwc/esp32", "the patch found", |v| v["status"]["deltas"][0]["digest"] == patch.as_str());
    let entry = &ch["status"]["deltas"][0];
    assert_eq!((&entry["baseSha256"], &entry["size"]), (&sha.clone().into(), &300.into()));
    assert!(is(&ch, "Ready", "True"));
    w.wait_until("a DeltaBuilt event", || {
        let events = kubectl(&["get", "events", "-n", &w.ns, "-o", "json"], None).ok();
        events.contains("DeltaBuilt") && events.contains(&format!("found: {patch_tag} ({patch}, 300 bytes)"))
    });
    let cm = w.wait("configmap/default-config", "deltas.patches rendered", |v| {
        rendered_config(v)["channels"][0]["deltas"]["patches"][0]["digest"] == patch.as_str()
    });
    let deltas = &rendered_config(&cm)["channels"][0]["deltas"];
    assert!(deltas["build"].is_null(), "built: nothing left to build: {deltas:#}");
    let served = &deltas["patches"][0];
    assert_eq!((&served["base"]["digest"], &served["target"]["digest"]), (&base.into(), &target.into()));
    assert_eq!(served["baseSha256"], sha);

    // A steady channel writes nothing, though the registry is checked every 2 s.
    let version = |v: &Value| v["metadata"]["resourceVersion"].clone();
    let before = version(&w.get("fwc/esp32").unwrap());
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(version(&w.get("fwc/esp32").unwrap()), before, "status rewritten while nothing changed");

    // Without spec.delta, status and config carry no deltas.
    kubectl(
        &["patch", "-n", &w.ns, "fwc/esp32", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/delta"}]"#],
        None,
    )
    .ok();
    w.wait("fwc/esp32", "deltas cleared", |v| v["status"]["deltas"].is_null());
    w.wait("configmap/default-config", "deltas no longer rendered", |v| {
        rendered_config(v)["channels"][0]["deltas"].is_null()
    });
}
