//! The CRDs against a real kube-apiserver 1.20: they install with server-side apply,
//! the samples are accepted, and the schema rejects malformed resources.

use e2e::{install_crds, kubectl, namespace, repo_root};

const MINIMAL_CHANNEL: &str = "apiVersion: updraft.dev/v1alpha1
kind: FirmwareChannel
metadata:
  name: minimal
spec:
  source:
    registry: 127.0.0.1:15000
    repository: firmware/minimal
";

#[test]
fn samples_apply_and_read_back_with_defaults() {
    install_crds();
    let ns = namespace("crds-samples");
    let samples = repo_root().join("crds/samples");
    let out = kubectl(&["apply", "--server-side", "-n", &ns, "-f", samples.to_str().unwrap()], None).ok();
    for kind in ["otagateway", "firmwarechannel", "imagestream", "artifactmirror"] {
        assert!(out.contains(&format!("{kind}.updraft.dev/")), "{kind} not applied: {out}");
    }
    // A second apply of the same files changes nothing.
    let before =
        kubectl(&["get", "-n", &ns, "fwc/esp32-stable", "-o", "jsonpath={.metadata.resourceVersion}"], None).ok();
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", samples.to_str().unwrap()], None).ok();
    let after =
        kubectl(&["get", "-n", &ns, "fwc/esp32-stable", "-o", "jsonpath={.metadata.resourceVersion}"], None).ok();
    assert_eq!(before, after, "re-applying the samples must not write");

    // Defaults come from the schema, applied by the API server.
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(MINIMAL_CHANNEL)).ok();
    let spec = kubectl(&["get", "-n", &ns, "fwc/minimal", "-o", "jsonpath={.spec}"], None).ok();
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["gatewayRef"], "default");
    assert_eq!(spec["interval"], "5m");
    // No percentage is written: a fixed share defaults to 100 in the operator, and
    // `steps` may be set instead (the two do not mix).
    assert_eq!(spec["rollout"], serde_json::json!({}));
    assert_eq!(spec["version"]["range"], "*");
    assert_eq!(spec["version"]["allowVPrefix"], true);
    assert_eq!(spec["artifact"]["unpack"], "raw");
}

#[test]
fn printer_columns_and_short_names() {
    install_crds();
    let ns = namespace("crds-columns");
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(MINIMAL_CHANNEL)).ok();
    let table = kubectl(&["get", "-n", &ns, "fwc"], None).ok();
    let header = table.lines().next().unwrap();
    for column in ["NAME", "LATEST", "ROLLOUT", "PAUSED", "READY", "AGE"] {
        assert!(header.contains(column), "column {column} missing: {header}");
    }
    // Rollout reads `status.rollout.percentage`: empty until an operator resolves it.
    assert!(table.lines().nth(1).is_some_and(|row| row.starts_with("minimal ")), "{table}");
    let wide = kubectl(&["get", "-n", &ns, "fwc", "-o", "wide"], None).ok();
    for column in ["DEVICE", "PREVIOUS", "STEP", "DEVICES", "GATEWAY"] {
        assert!(wide.lines().next().unwrap().contains(column), "column {column} missing: {wide}");
    }
    for short in ["otagw", "imgs", "amir"] {
        kubectl(&["get", "-n", &ns, short], None).ok();
    }
}

#[test]
fn explain_reads_like_documentation() {
    install_crds();
    // The API server publishes CRD schemas to OpenAPI a moment after they are established.
    let mut out = kubectl(&["explain", "firmwarechannel.spec.source"], None);
    for _ in 0..50 {
        if out.success {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = kubectl(&["explain", "firmwarechannel.spec.source"], None);
    }
    let text = out.ok();
    assert!(text.contains("The OCI repository whose tags are the firmware versions"), "{text}");
    assert!(text.contains("credentialsSecret\t<string>"), "{text}");
    assert!(text.contains("registry\t<string> -required-"), "{text}");
    let delta = kubectl(&["explain", "firmwarechannel.spec.delta"], None).ok();
    assert!(delta.contains("Absent: no deltas") && delta.contains("maxDeltas\t<integer>"), "{delta}");
    assert!(delta.contains("Default 5.") && delta.contains("Default 3."), "{delta}");
}

fn rejected(ns: &str, yaml: &str) -> String {
    let out = kubectl(&["apply", "--server-side", "--validate=false", "-n", ns, "-f", "-"], Some(yaml));
    assert!(!out.success, "the API server accepted:\n{yaml}");
    out.stderr
}

#[test]
fn schema_rejects_malformed_resources() {
    install_crds();
    let ns = namespace("crds-invalid");

    let wrong_type = MINIMAL_CHANNEL.replace("  source:", "  rollout: {percentage: lots}\n  source:");
    let err = rejected(&ns, &wrong_type);
    assert!(err.contains("spec.rollout.percentage") && err.contains("expected numeric"), "{err}");

    let out_of_range = MINIMAL_CHANNEL.replace("  source:", "  rollout: {percentage: 150}\n  source:");
    let err = rejected(&ns, &out_of_range);
    assert!(err.contains("spec.rollout.percentage") && err.contains("less than or equal to 100"), "{err}");

    let too_many_deltas = MINIMAL_CHANNEL.replace("  source:", "  delta: {maxDeltas: 17}\n  source:");
    let err = rejected(&ns, &too_many_deltas);
    assert!(err.contains("spec.delta.maxDeltas") && err.contains("less than or equal to 16"), "{err}");
    let negative_share = MINIMAL_CHANNEL.replace("  source:", "  delta: {minShare: -1}\n  source:");
    let err = rejected(&ns, &negative_share);
    assert!(err.contains("spec.delta.minShare") && err.contains("greater than or equal to 0"), "{err}");

    let missing_source =
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {name: nosource}\nspec: {device: esp32}\n";
    let err = rejected(&ns, missing_source);
    assert!(err.contains("spec.source") && err.contains("Required value"), "{err}");

    let missing_repository = MINIMAL_CHANNEL.replace("    repository: firmware/minimal\n", "");
    let err = rejected(&ns, &missing_repository);
    assert!(err.contains("spec.source.repository") && err.contains("Required value"), "{err}");

    let bad_unpack = MINIMAL_CHANNEL.replace("  source:", "  artifact: {unpack: rar}\n  source:");
    let err = rejected(&ns, &bad_unpack);
    assert!(err.contains("spec.artifact.unpack") && err.contains("Unsupported value"), "{err}");

    let mirror_without_destination = "apiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {name: m}\nspec:\n  source: {oci: {registry: r, repository: x}}\n";
    let err = rejected(&ns, mirror_without_destination);
    assert!(err.contains("spec.destination") && err.contains("Required value"), "{err}");
}
