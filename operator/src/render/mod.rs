//! Pure builders: from an OtaGateway and the resources attached to it, the objects the
//! operator applies. No client here; everything is tested from fixtures.
//!
//! One module per thing built: [`config`] (the gateway's `gateway.yaml`, pinned by
//! digest), [`configmap`] (the ConfigMap that holds it), [`deployment`] (the gateway
//! pods) and [`service`] (the Service and the in-cluster URL it gives) and [`mirror`] (the
//! `mirrors` section and the singleton mirror worker Deployment). What they share
//! lives here: ports and paths inside the pod, labels, owner references, quantities.

mod config;
mod configmap;
mod delivery;
mod deployment;
mod mirror;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use updraft_crds::OtaGateway;

pub(crate) use config::{channel_artifact, gateway_config, notifications_config, tls_config};
pub(crate) use configmap::{config_map, config_map_name, stored_text};
pub(crate) use delivery::{config_token_secret, mount_config_token, operator_source};
pub(crate) use deployment::{credential_secrets, deployment, mount_stream_files, restart_on};
pub(crate) use mirror::{mirror_configs, mirror_deployment, mirror_deployment_name, needs_worker, STORE_KEY};
pub(crate) use service::{service, service_url, stream_url};

/// Port the gateway container serves devices on.
const HTTP_PORT: i32 = 8080;
/// Port the gateway serves HTTPS on, under `spec.tls`.
const HTTPS_PORT: i32 = 8443;
/// Port of the gateway's `/healthz`, `/readyz` and `/metrics`.
const ADMIN_PORT: i32 = 9090;
/// Where the rendered `gateway.yaml` is mounted.
const CONFIG_DIR: &str = "/etc/updraft/config";
/// The ConfigMap key (and file name) of the rendered configuration.
const CONFIG_KEY: &str = "gateway.yaml";
/// The gateway's payload cache volume.
const CACHE_DIR: &str = "/var/cache/updraft";
/// Registry-credential Secrets are mounted at `<CREDENTIALS_DIR>/<secret>/`.
const CREDENTIALS_DIR: &str = "/etc/updraft/credentials";
/// The signing-key Secret is mounted here.
const SIGNING_DIR: &str = "/etc/updraft/signing";
/// The `spec.tls` Secret (`tls.crt`, `tls.key`) is mounted here.
const TLS_DIR: &str = "/etc/updraft/tls";
/// The `spec.tls.clientCaSecret` Secret (`ca.crt`) is mounted here.
const CLIENT_CA_DIR: &str = "/etc/updraft/client-ca";
/// The public key of each ImageStream's `spec.verify` is mounted at
/// `<VERIFY_DIR>/<stream>/<key>`.
const VERIFY_DIR: &str = "/etc/updraft/verify";
/// The key file of an ImageStream's `spec.verify.publicKeySecret` when `key` is unset:
/// the one the Deployment mounts and the gateway reads, so the stream controller
/// verifies with it too.
pub(crate) const DEFAULT_PUBLIC_KEY: &str = "cosign.pub";
/// The `ca.crt` of each upstream ImageStream's `caConfigMap` is mounted at
/// `<UPSTREAM_CA_DIR>/<stream>/ca.crt`.
const UPSTREAM_CA_DIR: &str = "/etc/updraft/upstream-ca";
/// The key of a `caConfigMap` that holds the CA certificates.
pub(crate) const UPSTREAM_CA_KEY: &str = "ca.crt";
/// The upload-token Secret is mounted here.
const UPLOAD_TOKEN_DIR: &str = "/etc/updraft/upload-token";
/// Notification Secrets (MQTT CA, client certificate, credentials; webhook keys) are
/// mounted under here, one directory each.
const NOTIFY_DIR: &str = "/etc/updraft/notify";
/// ArtifactMirror store-key Secrets are mounted at `<MIRROR_KEYS_DIR>/<secret>/key`
/// (the mirror worker only).
const MIRROR_KEYS_DIR: &str = "/etc/updraft/mirror-keys";
/// The `spec.store` volume (the PVC) is mounted here.
const STORE_DIR: &str = "/var/lib/updraft/store";
/// The store serves this subdirectory of the volume, so its own state (partial
/// uploads, checksums) sits beside it on the same volume and the served directory
/// holds exactly the users' files. A volume whose root an earlier version served is
/// moved down into it by the gateway at start (`ota-gateway/src/store/layout.rs`).
const STORE_FILES_DIR: &str = "/var/lib/updraft/store/files";
/// The `spec.store` write-key Secret is mounted here.
const STORE_KEY_DIR: &str = "/etc/updraft/store-key";
/// The gateway's config-endpoint token Secret is mounted here.
const OPERATOR_TOKEN_DIR: &str = "/etc/updraft/operator-token";

/// Labels on everything the operator creates for a gateway.
fn labels(gateway: &OtaGateway) -> BTreeMap<String, String> {
    let mut labels = selector(gateway);
    labels.insert("app.kubernetes.io/managed-by".into(), "updraft-operator".into());
    labels
}

/// The labels that select a gateway's pods (a subset of [`labels`]).
fn selector(gateway: &OtaGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "ota-gateway".into()),
        ("app.kubernetes.io/instance".into(), gateway.name_any()),
    ])
}

fn owner(gateway: &OtaGateway) -> OwnerReference {
    gateway.controller_owner_ref(&()).expect("an OtaGateway read from the API has a name and uid")
}

/// Metadata of an object named `name` that belongs to `gateway`: its namespace, labels
/// and a controller owner reference (the garbage collector removes it with the gateway).
fn meta(gateway: &OtaGateway, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gateway.namespace(),
        labels: Some(labels(gateway)),
        owner_references: Some(vec![owner(gateway)]),
        ..Default::default()
    }
}

/// Bytes in a Kubernetes quantity such as `512Mi`, `2Gi`, `1G` or `1048576`.
pub(crate) fn quantity_bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes(&Quantity("512Mi".into())), Some(512 << 20));
        assert_eq!(quantity_bytes(&Quantity("2G".into())), Some(2_000_000_000));
        assert_eq!(quantity_bytes(&Quantity("4096".into())), Some(4096));
        assert_eq!(quantity_bytes(&Quantity("1.5Gi".into())), None);
    }

    #[test]
    fn labels_select_and_mark_the_manager() {
        let gw = crate::fixtures::gateway();
        let labels = labels(&gw);
        assert!(selector(&gw).iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(labels["app.kubernetes.io/managed-by"], "updraft-operator");
        assert_eq!(labels["app.kubernetes.io/instance"], "default");
    }
}
