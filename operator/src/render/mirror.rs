//! The forwarding side of a gateway: the `mirrors` section of `gateway.yaml` from the
//! ArtifactMirrors attached to it, and the singleton worker Deployment
//! (`<gateway>-mirror`, replicas 1, strategy Recreate) that runs them with `--mirror`
//! and builds the channels' delta patches ([`needs_worker`]). The worker uses the
//! gateway's image, ConfigMap, registry credentials and pod hardening (and, when the
//! config endpoint is on, the gateway's config token: `gateway.rs` mounts it, as in the
//! gateway's pods, and the worker long-polls the endpoint as they do); it serves only its
//! admin port and never talks to the Kubernetes API.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;
use updraft_core::config::{
    GatewayConfig, HttpStoreConfig, MirrorConfig, MirrorEndpoint, RetentionConfig, SourceConfig, VersionFilter,
};
use updraft_crds::mirror::Endpoint;
use updraft_crds::{ArtifactMirror, OtaGateway};

use super::{deployment, CREDENTIALS_DIR, MIRROR_KEYS_DIR};

/// The key of a store's key Secret (`HttpStore::key_secret`) the worker reads.
pub(crate) const STORE_KEY: &str = "key";

/// Whether a gateway with `config` needs its worker: a mirror to run, or a channel with
/// delta patches (to build, or built: kept while the channel has deltas, so a new release
/// does not create the worker anew each time).
pub(crate) fn needs_worker(config: &GatewayConfig) -> bool {
    !config.mirrors.is_empty() || config.channels.iter().any(|c| !c.deltas.is_empty())
}

/// Name of a gateway's mirror worker Deployment.
pub(crate) fn mirror_deployment_name(gateway: &OtaGateway) -> String {
    format!("{}-mirror", gateway.name_any())
}

/// The `mirrors` section for `mirrors` (already validated, sorted by the caller). Each is
/// named `namespace/name`; a store's key Secret becomes the file the worker mounts.
pub(crate) fn mirror_configs(mirrors: &[&ArtifactMirror]) -> Vec<MirrorConfig> {
    mirrors
        .iter()
        .map(|m| {
            let spec = &m.spec;
            MirrorConfig {
                name: format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()),
                source: endpoint(&spec.source),
                destination: endpoint(&spec.destination),
                include: spec.include.clone(),
                exclude: spec.exclude.clone(),
                version: spec.version.as_ref().map(|v| VersionFilter {
                    regex: v.regex.clone(),
                    groups: v.groups.clone(),
                    range: v.range.clone(),
                    prerelease: v.prerelease,
                }),
                retention: spec.retention.as_ref().map(|r| RetentionConfig {
                    keep_last: r.keep_last.and_then(|n| u32::try_from(n).ok()),
                    max_age: r.max_age.clone(),
                }),
                interval: spec.interval.clone(),
                suspend: spec.suspend,
                dry_run: spec.dry_run,
            }
        })
        .collect()
}

fn endpoint(e: &Endpoint) -> MirrorEndpoint {
    MirrorEndpoint {
        oci: e.oci.as_ref().map(|o| SourceConfig {
            registry: o.registry.clone(),
            repository: o.repository.clone(),
            insecure: o.insecure,
            docker_config: o
                .credentials_secret
                .as_ref()
                .map(|s| format!("{CREDENTIALS_DIR}/{s}/.dockerconfigjson").into()),
        }),
        http: e.http.as_ref().map(|h| HttpStoreConfig {
            url: h.url.clone(),
            path: None,
            key_file: h.key_secret.as_ref().map(|s| format!("{MIRROR_KEYS_DIR}/{s}/{STORE_KEY}").into()),
            allow_plain_http: h.allow_plain_http,
        }),
    }
}

/// Registry-credential Secrets and store-key Secrets of `mirrors`, each once, sorted.
fn mirror_secrets(mirrors: &[&ArtifactMirror]) -> (Vec<String>, Vec<String>) {
    let mut credentials = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for m in mirrors {
        for e in [&m.spec.source, &m.spec.destination] {
            credentials.extend(e.oci.as_ref().and_then(|o| o.credentials_secret.clone()));
            keys.extend(e.http.as_ref().and_then(|h| h.key_secret.clone()));
        }
    }
    (credentials.into_iter().collect(), keys.into_iter().collect())
}

/// The worker Deployment: the gateway's pod (image, ConfigMap, Secrets, hardening) with
/// one replica, Recreate (never two workers at once), args `--mirror`, only the admin
/// port, its own pod labels (the gateway's Service and Deployment do not select it),
/// and the mirrors' registry credentials and store keys mounted.
pub(crate) fn mirror_deployment(
    gateway: &OtaGateway,
    default_image: &str,
    credential_secrets: &[String],
    mirrors: &[&ArtifactMirror],
) -> Deployment {
    let (mirror_credentials, keys) = mirror_secrets(mirrors);
    let mut credentials: BTreeSet<String> = credential_secrets.iter().cloned().collect();
    credentials.extend(mirror_credentials);
    let credentials: Vec<String> = credentials.into_iter().collect();
    let mut d = deployment(gateway, default_image, &credentials);
    let name = mirror_deployment_name(gateway);
    d.metadata.name = Some(name);
    let worker_labels = |labels: &mut std::collections::BTreeMap<String, String>| {
        labels.insert("app.kubernetes.io/name".into(), "ota-gateway-mirror".into());
        labels.insert("app.kubernetes.io/component".into(), "mirror".into());
    };
    if let Some(labels) = d.metadata.labels.as_mut() {
        worker_labels(labels);
    }
    let spec = &mut d.spec;
    spec.replicas = Some(1);
    spec.strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    if let Some(labels) = spec.selector.match_labels.as_mut() {
        worker_labels(labels);
    }
    if let Some(labels) = spec.template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        worker_labels(labels);
    }
    let pod = spec.template.spec.as_mut().expect("the gateway pod has a spec");
    let container = &mut pod.containers[0];
    container.name = "mirror".into();
    container.args.get_or_insert_with(Vec::new).push("--mirror".into());
    if let Some(ports) = container.ports.as_mut() {
        ports.retain(|p| p.name.as_deref() == Some("admin"));
    }
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    for (i, secret) in keys.iter().enumerate() {
        let volume = format!("store-key-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath { key: STORE_KEY.into(), path: STORE_KEY.into(), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{MIRROR_KEYS_DIR}/{secret}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::gateway;

    fn mirror(name: &str, source: serde_json::Value, destination: serde_json::Value) -> ArtifactMirror {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "updraft.dev/v1alpha1", "kind": "ArtifactMirror",
            "metadata": {"name": name, "namespace": "fleet"},
            "spec": {"source": source, "destination": destination, "include": ["*.bin"],
                "retention": {"keepLast": 3}, "interval": "30s", "dryRun": true,
                "version": {"regex": ":(\\d+\\.\\d+\\.\\d+):", "groups": ["(.*?):\\d+\\.\\d+\\.\\d+:(.*)"], "range": ">=1"}},
        }))
        .unwrap()
    }

    fn two() -> (ArtifactMirror, ArtifactMirror) {
        let oci = serde_json::json!({"oci": {"registry": "127.0.0.1:15000", "repository": "fw/a", "insecure": true,
            "credentialsSecret": "regcred"}});
        let wan = serde_json::json!({"http": {"url": "https://wan.example:8081", "keySecret": "wan-key"}});
        let lan = serde_json::json!({"http": {"url": "http://lan:8081"}});
        (mirror("to-wan", oci, wan.clone()), mirror("lan-wan", lan, wan))
    }

    #[test]
    fn the_worker_is_needed_for_a_mirror_or_a_channel_with_deltas() {
        let mut config = crate::render::gateway_config(&gateway(), &[], &[]);
        assert!(!needs_worker(&config), "nothing to forward or build");
        let (a, _) = two();
        config.mirrors = mirror_configs(&[&a]);
        assert!(needs_worker(&config));
        config.mirrors.clear();
        let channel = |deltas| {
            let yaml = "name: esp32\nsource: {registry: r, repository: fw}\npolicy: {}\n";
            updraft_core::config::ChannelConfig { deltas, ..serde_yaml::from_str(yaml).unwrap() }
        };
        config.channels = vec![channel(Default::default())];
        assert!(!needs_worker(&config), "a channel without deltas");
        let base = updraft_core::config::PinnedArtifact {
            version: "1.0.0".into(),
            tag: "v1.0.0".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
        };
        let deltas = updraft_core::config::Deltas { build: vec![base], patches: vec![] };
        config.channels = vec![channel(deltas)];
        assert!(needs_worker(&config), "a patch to build");
    }

    #[test]
    fn mirrors_render_as_the_gateway_accepts_them() {
        let (a, b) = two();
        let mut config = crate::render::gateway_config(&gateway(), &[], &[]);
        config.mirrors = mirror_configs(&[&a, &b]);
        config.validate().unwrap();
        let back = updraft_core::config::GatewayConfig::parse(config.to_yaml().as_bytes()).unwrap();
        assert_eq!(back.mirrors, config.mirrors);
        let m = &config.mirrors[0];
        assert_eq!(m.name, "fleet/to-wan");
        assert_eq!((m.include.as_slice(), m.interval.as_str()), (["*.bin".to_owned()].as_slice(), "30s"));
        assert_eq!(m.retention.as_ref().unwrap().keep_last, Some(3));
        assert!(m.dry_run);
        let version = m.version.as_ref().unwrap();
        assert_eq!(version.regex.as_deref(), Some(r":(\d+\.\d+\.\d+):"));
        assert_eq!((version.groups.len(), version.range.as_deref(), version.prerelease), (1, Some(">=1"), false));
        assert_eq!(
            m.source.oci.as_ref().unwrap().docker_config.as_ref().unwrap().to_str(),
            Some("/etc/updraft/credentials/regcred/.dockerconfigjson")
        );
        let key = m.destination.http.as_ref().unwrap().key_file.as_ref().unwrap();
        assert_eq!(key.to_str(), Some("/etc/updraft/mirror-keys/wan-key/key"));
        assert_eq!(config.mirrors[1].source.http.as_ref().unwrap().key_file, None);
    }

    #[test]
    fn the_worker_is_one_recreated_pod_of_the_gateway_image_with_its_keys() {
        let (a, b) = two();
        let gw = gateway();
        let serving = deployment(&gw, "updraft/ota-gateway:dev", &[]);
        let d = mirror_deployment(&gw, "updraft/ota-gateway:dev", &[], &[&a, &b]);
        assert_eq!(d.metadata.name.as_deref(), Some("default-mirror"));
        assert_eq!(d.metadata.owner_references, serving.metadata.owner_references);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        // Neither the gateway's Deployment nor its Service (same selector) picks the worker.
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        let gateway_selector = serving.spec.selector.match_labels.clone().unwrap();
        assert!(!gateway_selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert!(spec.selector.match_labels.unwrap().iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        let pod = spec.template.spec.unwrap();
        let serving_pod = serving.spec.template.spec.unwrap();
        assert_eq!(pod.security_context, serving_pod.security_context);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image, serving_pod.containers[0].image);
        assert_eq!(c.security_context, serving_pod.containers[0].security_context);
        assert_eq!(c.args.as_ref().unwrap().last().map(String::as_str), Some("--mirror"));
        let ports: Vec<_> = c.ports.iter().flatten().filter_map(|p| p.name.clone()).collect();
        assert_eq!(ports, ["admin"]);
        let volumes = pod.volumes.unwrap();
        let secret_of = |mount_path: &str| {
            let m = c.volume_mounts.iter().flatten().find(|m| m.mount_path == mount_path).unwrap();
            volumes.iter().find(|v| v.name == m.name).unwrap().secret.clone().unwrap().secret_name.unwrap()
        };
        assert_eq!(secret_of("/etc/updraft/mirror-keys/wan-key"), "wan-key");
        assert_eq!(secret_of("/etc/updraft/credentials/regcred"), "regcred");
        assert!(volumes.iter().any(|v| v.config_map.is_some()), "the gateway's ConfigMap");
        assert!(!volumes.iter().any(|v| v.name == "operator-token"), "no config endpoint, no token");
    }

    /// With the config endpoint on, the worker mounts the gateway's config token where
    /// the rendered `operator.tokenFile` names it, as the gateway's pods do (`gateway.rs`).
    #[test]
    fn with_the_config_endpoint_on_the_worker_mounts_the_config_token() {
        let (a, _) = two();
        let gw = gateway();
        let mut d = mirror_deployment(&gw, "updraft/ota-gateway:dev", &[], &[&a]);
        crate::render::mount_config_token(&mut d, &gw);
        let pod = d.spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.name, "mirror");
        let token_file = crate::render::operator_source(&gw, "http://op:8082").token_file;
        let mount = c.volume_mounts.iter().flatten().find(|m| token_file.starts_with(&m.mount_path)).unwrap();
        assert_eq!(mount.read_only, Some(true));
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("default-config-token"));
        assert_eq!(secret.optional, Some(true), "a worker started before its token follows its file");
    }
}
