//! The sample resources parse as the types, with the defaults filled in.

use std::path::Path;

use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream, OtaGateway};

fn sample<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn smallest_gateway_gets_defaults() {
    let gw: OtaGateway = sample("otagateway.yaml");
    assert_eq!(gw.spec.replicas, 1);
    assert_eq!(gw.spec.service.port, 8080);
    assert_eq!(gw.spec.service.type_, "ClusterIP");
    assert_eq!(gw.spec.cache.size.0, "1Gi");
}

#[test]
fn channel_sample_and_defaults() {
    let ch: FirmwareChannel = sample("firmwarechannel.yaml");
    assert_eq!(ch.spec.gateway_ref, "default");
    assert_eq!(ch.spec.source.repository, "firmware/esp32");
    assert_eq!(ch.spec.version.range, ">=1.0.0, <2");
    assert!(ch.spec.version.allow_v_prefix);
    assert!(!ch.spec.version.prerelease);
    assert_eq!(ch.spec.artifact.unpack, updraft_crds::channel::Unpack::Raw);

    let minimal: FirmwareChannel = serde_yaml::from_str(
        "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {name: m}\nspec:\n  source: {registry: r, repository: x}\n",
    )
    .unwrap();
    assert_eq!(minimal.spec.interval, "5m");
    assert_eq!((minimal.spec.rollout.percentage, minimal.spec.rollout.steps.len()), (None, 0));
    assert_eq!(minimal.spec.version.range, "*");
}

#[test]
fn stream_and_mirror_samples() {
    let s: ImageStream = sample("imagestream.yaml");
    assert!(s.spec.source.oci.is_some() && s.spec.source.upload.is_none());
    let upload: ImageStream = serde_yaml::from_str(
        "apiVersion: updraft.dev/v1alpha1\nkind: ImageStream\nmetadata: {name: up}\nspec:\n  source: {upload: {registry: r, repository: images/up, maxBytes: 8Gi}}\n",
    )
    .unwrap();
    let up = upload.spec.source.upload.unwrap();
    assert_eq!((up.repository.repository.as_str(), up.max_bytes.unwrap().0.as_str()), ("images/up", "8Gi"));
    assert!(!up.allow_overwrite && !up.allow_delete);
    assert_eq!(s.spec.keep_versions, 2);
    let m: ArtifactMirror = sample("artifactmirror.yaml");
    assert_eq!(m.spec.retention.unwrap().keep_last, Some(5));
    assert_eq!(m.spec.interval, "10m");
}

#[test]
fn status_round_trips_without_nulls() {
    let mut ch: FirmwareChannel = sample("firmwarechannel.yaml");
    let mut status = updraft_crds::FirmwareChannelStatus { observed_generation: Some(3), ..Default::default() };
    updraft_crds::conditions::set_condition(
        &mut status.conditions,
        updraft_crds::conditions::NewCondition::new("Ready", true, "Resolved", "1.2.0"),
        Some(3),
    );
    status.latest = Some(updraft_crds::ResolvedVersion {
        version: "1.2.0".into(),
        tag: "v1.2.0".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        size: Some(1024),
        resolved_at: updraft_crds::conditions::now(),
    });
    ch.status = Some(status);
    let json = serde_json::to_string(&ch).unwrap();
    assert!(!json.contains("null"), "{json}");
    let back: FirmwareChannel = serde_json::from_str(&json).unwrap();
    assert_eq!(back.spec, ch.spec);
    assert_eq!(back.status, ch.status);
}
