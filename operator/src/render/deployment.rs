//! The gateway Deployment: its pods mount the rendered configuration, the cache volume
//! and the Secrets the configuration points at, and are probed on the admin port.
//!
//! The gateway applies a changed config file live, except the settings it bound or
//! opened at start (`updraft_core::restart`): the pod template carries their hash
//! ([`RESTART_HASH`]), so a change of one of them rolls the pods, and an edit the
//! gateway applies live (a store's `allowPlainWrites`, a new release) does not.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use updraft_core::config::GatewayConfig;
use updraft_core::restart::RestartSettings;
use updraft_crds::{FirmwareChannel, ImageStream, OtaGateway};

use super::config::notify_paths;
use super::configmap::config_map_name;
use super::{
    labels, meta, selector, ADMIN_PORT, CACHE_DIR, CLIENT_CA_DIR, CONFIG_DIR, CONFIG_KEY, CREDENTIALS_DIR, HTTPS_PORT,
    HTTP_PORT, SIGNING_DIR, STORE_DIR, STORE_KEY_DIR, TLS_DIR, UPLOAD_TOKEN_DIR, UPSTREAM_CA_DIR, UPSTREAM_CA_KEY,
    VERIFY_DIR,
};

/// The registry-credential Secrets of `served` channels and `streams`, each once,
/// sorted: what [`deployment`] mounts.
pub(crate) fn credential_secrets(served: &[&FirmwareChannel], streams: &[&ImageStream]) -> Vec<String> {
    let mut secrets: BTreeSet<String> =
        served.iter().filter_map(|c| c.spec.source.credentials_secret.clone()).collect();
    for s in streams {
        let source = &s.spec.source;
        let repository = source.oci.as_ref().or(source.upload.as_ref().map(|u| &u.repository));
        secrets.extend(repository.and_then(|r| r.credentials_secret.clone()));
    }
    secrets.into_iter().collect()
}

/// Pod template annotation: the hash of the rendered config's restart-only settings.
pub(crate) const RESTART_HASH: &str = "updraft.dev/restart-hash";

/// Puts the hash of `config`'s restart-only settings on the pod template of
/// `deployment` ([`RESTART_HASH`]): the gateway's pods roll when one of them changes.
pub(crate) fn restart_on(deployment: &mut Deployment, config: &GatewayConfig) {
    let meta = deployment.spec.template.metadata.get_or_insert_with(Default::default);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RESTART_HASH.to_owned(), RestartSettings::of(config).hash());
}

/// The gateway Deployment. `credential_secrets` are the registry-credential Secrets of
/// the served channels, each mounted where the rendered config expects it.
pub(crate) fn deployment(gateway: &OtaGateway, default_image: &str, credential_secrets: &[String]) -> Deployment {
    let spec = &gateway.spec;
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: config_map_name(gateway), ..Default::default() }),
            ..Default::default()
        },
        cache_volume(gateway),
    ];
    let mut mounts = vec![mount("config", CONFIG_DIR), mount("cache", CACHE_DIR)];
    for secret in credential_secrets {
        let name = format!("cred-{}", short_hash(secret));
        volumes.push(secret_volume(&name, secret, ".dockerconfigjson"));
        mounts.push(mount(&name, &format!("{CREDENTIALS_DIR}/{secret}")));
    }
    if let Some(key) = &spec.signing_key_secret {
        volumes.push(secret_volume("signing-key", &key.name, &key.key));
        mounts.push(mount("signing-key", SIGNING_DIR));
    }
    // Mounted whole (no subPath), so a renewed certificate reaches the running pod.
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume_keys("tls", &tls.secret_name, &["tls.crt".into(), "tls.key".into()]));
        mounts.push(mount("tls", TLS_DIR));
        if let Some(ca) = &tls.client_ca_secret {
            volumes.push(secret_volume_keys("client-ca", ca, &["ca.crt".into()]));
            mounts.push(mount("client-ca", CLIENT_CA_DIR));
        }
    }
    if let Some(token) = &spec.upload_token_secret {
        volumes.push(secret_volume("upload-token", &token.name, &token.key));
        mounts.push(mount("upload-token", UPLOAD_TOKEN_DIR));
    }
    let mut ports = vec![container_port("http", HTTP_PORT), container_port("admin", ADMIN_PORT)];
    if spec.tls.is_some() {
        ports.insert(1, container_port("https", HTTPS_PORT));
    }
    // The store's files live on the PVC: every replica and the mirror worker see them.
    if let Some(store) = &spec.store {
        volumes.push(Volume {
            name: "store".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: store.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(mount("store", STORE_DIR));
        volumes.push(secret_volume("store-key", &store.write_key_secret.name, &store.write_key_secret.key));
        mounts.push(mount("store-key", STORE_KEY_DIR));
        ports.push(container_port("store", store.port));
    }
    for (name, secret, keys, dir) in notification_secrets(gateway) {
        volumes.push(secret_volume_keys(&name, &secret, &keys));
        mounts.push(mount(&name, &dir));
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    };
    let container = Container {
        name: "gateway".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| default_image.to_owned())),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_KEY}"), "--log-format".into(), "json".into()]),
        ports: Some(ports),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Deployment {
        metadata: meta(gateway, gateway.name_any()),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(gateway)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(gateway)), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    // The data plane never talks to the API server (SECURITY.md).
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn cache_volume(gateway: &OtaGateway) -> Volume {
    let cache = &gateway.spec.cache;
    match &cache.persistent_volume_claim {
        Some(claim) => Volume {
            name: "cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        None => Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(cache.size.clone()), ..Default::default() }),
            ..Default::default()
        },
    }
}

/// The notification Secrets: volume name, Secret, keys, mount directory (what the
/// rendered `notifications` section points at).
fn notification_secrets(gateway: &OtaGateway) -> Vec<(String, String, Vec<String>, String)> {
    let notifications = &gateway.spec.notifications;
    let mut out = Vec::new();
    let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    if let Some(mqtt) = &notifications.mqtt {
        if let Some(s) = &mqtt.ca_secret {
            out.push(("mqtt-ca".into(), s.clone(), keys(&["ca.crt"]), notify_paths::mqtt_ca()));
        }
        if let Some(s) = &mqtt.client_cert_secret {
            out.push(("mqtt-client".into(), s.clone(), keys(&["tls.crt", "tls.key"]), notify_paths::mqtt_client()));
        }
        if let Some(s) = &mqtt.credentials_secret {
            let dir = notify_paths::mqtt_credentials();
            out.push(("mqtt-credentials".into(), s.clone(), keys(&["username", "password"]), dir));
        }
    }
    for (i, hook) in notifications.webhooks.iter().enumerate() {
        if let Some(r) = &hook.secret_ref {
            out.push((format!("webhook-{i}"), r.name.clone(), vec![r.key.clone()], notify_paths::webhook(i)));
        }
    }
    out
}

/// Mounts the files each stream's rendered config points at: the public key of
/// `spec.verify` (an `oci` or `upload` source) at `<VERIFY_DIR>/<stream>/<key>` (see
/// `config::stream_key_file`), and the `ca.crt` of an upstream's `caConfigMap` at
/// `<UPSTREAM_CA_DIR>/<stream>/ca.crt`.
pub(crate) fn mount_stream_files(deployment: &mut Deployment, streams: &[&ImageStream]) {
    let Some(pod) = deployment.spec.template.spec.as_mut() else { return };
    for stream in streams {
        let (volume, dir) = match (&stream.spec.verify, &stream.spec.source.upstream) {
            (Some(verify), None) => {
                let key = verify.public_key_secret.key.as_deref().unwrap_or(super::DEFAULT_PUBLIC_KEY);
                let name = format!("verify-{}", short_hash(&stream.name_any()));
                (
                    secret_volume(&name, &verify.public_key_secret.name, key),
                    format!("{VERIFY_DIR}/{}", stream.name_any()),
                )
            }
            (_, Some(upstream)) => {
                let Some(config_map) = &upstream.ca_config_map else { continue };
                let name = format!("upstream-ca-{}", short_hash(&stream.name_any()));
                let item =
                    KeyToPath { key: UPSTREAM_CA_KEY.into(), path: UPSTREAM_CA_KEY.into(), ..Default::default() };
                let volume = Volume {
                    name,
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map.clone(),
                        items: Some(vec![item]),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (volume, format!("{UPSTREAM_CA_DIR}/{}", stream.name_any()))
            }
            _ => continue,
        };
        for container in &mut pod.containers {
            container.volume_mounts.get_or_insert_with(Vec::new).push(mount(&volume.name, &dir));
        }
        pod.volumes.get_or_insert_with(Vec::new).push(volume);
    }
}

fn secret_volume(name: &str, secret: &str, key: &str) -> Volume {
    secret_volume_keys(name, secret, &[key.to_owned()])
}

fn secret_volume_keys(name: &str, secret: &str, keys: &[String]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                keys.iter().map(|k| KeyToPath { key: k.clone(), path: k.clone(), ..Default::default() }).collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(name != "cache" && name != "store"),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, protocol: Some("TCP".into()), ..Default::default() }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("50m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
        ..Default::default()
    }
}

/// First 8 hex digits of the SHA-256 of `s`: a DNS-label-safe stand-in for a name.
fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{channel, gateway, resolved, DIGEST_A};
    use crate::render::config::channel_config;

    /// The config rendered for `gw` with nothing attached.
    fn config_of(gw: &OtaGateway) -> GatewayConfig {
        crate::render::gateway_config(gw, &[], &[])
    }

    fn restart_hash(gw: &OtaGateway) -> String {
        let mut deploy = deployment(gw, "img", &[]);
        restart_on(&mut deploy, &config_of(gw));
        let meta = deploy.spec.template.metadata.unwrap();
        assert_eq!(meta.labels, Some(crate::render::labels(gw)), "labels kept");
        meta.annotations.unwrap()[RESTART_HASH].clone()
    }

    /// An edit the gateway applies live leaves the pod template as it was; an edit of a
    /// setting it reads at start only changes the template, so the pods roll.
    #[test]
    fn the_pod_template_changes_exactly_when_a_restart_only_setting_does() {
        let mut gw = gateway();
        gw.spec.store = Some(updraft_crds::gateway::GatewayStore {
            claim_name: "files".into(),
            port: 8081,
            write_key_secret: updraft_crds::SecretKeyRef { name: "store".into(), key: "key".into() },
            allow_plain_writes: false,
        });
        let hash = restart_hash(&gw);
        assert_eq!(hash, RestartSettings::of(&config_of(&gw)).hash());
        // Applied live by the running gateway: no roll.
        let mut live = gw.clone();
        live.spec.store.as_mut().unwrap().allow_plain_writes = true;
        live.spec.store.as_mut().unwrap().write_key_secret.key = "other".into();
        assert_eq!(restart_hash(&live), hash);
        // Bound at start: a new listener, so the pods roll.
        let mut moved = gw.clone();
        moved.spec.store.as_mut().unwrap().port = 9000;
        assert_ne!(restart_hash(&moved), hash);
        let mut removed = gw.clone();
        removed.spec.store = None;
        assert_ne!(restart_hash(&removed), hash);
    }

    #[test]
    fn credentials_are_mounted_where_the_config_points() {
        let mut ch = channel("esp32", None, Some(resolved("1.2.0", DIGEST_A)));
        ch.spec.source.credentials_secret = Some("regcred".into());
        let config = channel_config(&ch).unwrap();
        let path = config.source.docker_config.unwrap();
        let deploy = deployment(&gateway(), "updraft/ota-gateway:dev", &["regcred".into()]);
        let pod = deploy.spec.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount =
            mounts.iter().find(|m| path.starts_with(&m.mount_path) && m.mount_path.contains("regcred")).unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
        assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("regcred"));
    }

    #[test]
    fn notification_secrets_are_mounted_where_the_config_points() {
        use updraft_crds::gateway::{GatewayMqtt, GatewayNotifications, GatewayWebhook};
        use updraft_crds::SecretKeyRef;
        let mut gw = gateway();
        gw.spec.notifications = GatewayNotifications {
            mqtt: Some(GatewayMqtt {
                url: "mqtts://broker:8883".into(),
                ca_secret: Some("broker-ca".into()),
                client_cert_secret: Some("gateway-tls".into()),
                credentials_secret: Some("mqtt-login".into()),
                ..Default::default()
            }),
            webhooks: vec![GatewayWebhook {
                url: "https://ci.example/hook".into(),
                secret_ref: Some(SecretKeyRef { name: "hook".into(), key: "hmac".into() }),
            }],
        };
        let config = crate::render::gateway_config(&gw, &[], &[]);
        let n = config.notifications;
        let mqtt = n.mqtt.unwrap();
        let files = [
            (mqtt.ca_file.unwrap(), "broker-ca"),
            (mqtt.client_cert_file.unwrap(), "gateway-tls"),
            (mqtt.client_key_file.unwrap(), "gateway-tls"),
            (mqtt.username_file.unwrap(), "mqtt-login"),
            (mqtt.password_file.unwrap(), "mqtt-login"),
            (n.webhooks[0].secret_file.clone().unwrap(), "hook"),
        ];
        let pod = deployment(&gw, "updraft/ota-gateway:dev", &[]).spec.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let volumes = pod.volumes.unwrap();
        for (path, secret) in files {
            let (dir, file) = (path.parent().unwrap().to_str().unwrap(), path.file_name().unwrap().to_str().unwrap());
            let mount = mounts.iter().find(|m| m.mount_path == dir).unwrap_or_else(|| panic!("{dir} not mounted"));
            assert_eq!(mount.read_only, Some(true));
            let volume = volumes.iter().find(|v| v.name == mount.name).unwrap().secret.clone().unwrap();
            assert_eq!(volume.secret_name.as_deref(), Some(secret));
            assert!(volume.items.unwrap().iter().any(|i| i.key == file && i.path == file), "{file} in {secret}");
        }
    }

    /// The chart's NetworkPolicies admit gateway and mirror-worker pods by label and
    /// by port name: every port the operator renders is named there, and the labels
    /// they select are on the pods.
    #[test]
    fn the_charts_network_policies_name_every_rendered_port() {
        use updraft_crds::gateway::{GatewayStore, GatewayTls};
        let chart = include_str!("../../../charts/updraft/templates/networkpolicy.yaml");
        let mut gw = gateway();
        gw.spec.tls = Some(GatewayTls { secret_name: "gw-cert".into(), ..Default::default() });
        gw.spec.store = Some(
            serde_json::from_value::<GatewayStore>(serde_json::json!({
                "claimName": "artifacts", "writeKeySecret": {"name": "k", "key": "write"},
            }))
            .unwrap(),
        );
        let pods = deployment(&gw, "img", &[]);
        let worker = crate::render::mirror_deployment(&gw, "img", &[], &[]);
        for (what, d, name) in [("gateway", &pods, "ota-gateway"), ("mirror worker", &worker, "ota-gateway-mirror")] {
            let template = d.spec.template.clone();
            let labels = template.metadata.unwrap().labels.unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], name, "{what}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "updraft-operator", "{what}");
            assert!(chart.contains(&format!("app.kubernetes.io/name: {name}\n")), "{what}: selector not in the chart");
            for port in template.spec.unwrap().containers[0].ports.iter().flatten() {
                let port = port.name.as_deref().expect("ports are named");
                assert!(chart.contains(&format!("- port: {port}\n")), "{what} port {port} not admitted by the chart");
            }
        }
        assert!(chart.contains("app.kubernetes.io/managed-by: updraft-operator"));
        // Both long-poll the operator's config endpoint.
        let config_rule = chart.split("- port: config\n").nth(1).and_then(|r| r.split("{{-").next()).unwrap();
        for name in ["ota-gateway", "ota-gateway-mirror"] {
            let selector = format!("app.kubernetes.io/name: {name}\n");
            assert!(config_rule.contains(&selector), "{name} may not reach the config endpoint");
        }
    }

    #[test]
    fn pods_are_hardened() {
        let pod = deployment(&gateway(), "updraft/ota-gateway:dev", &[]).spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false), "no API token in the data plane");
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_ne!(psc.run_as_user, Some(0));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, None);
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    }

    #[test]
    fn tls_the_client_ca_and_the_upload_token_are_mounted_where_the_config_points() {
        use updraft_crds::gateway::GatewayTls;
        use updraft_crds::SecretKeyRef;
        let mut gw = crate::fixtures::gateway();
        let plain = deployment(&gw, "img", &[]).spec.template.spec.unwrap();
        assert!(plain.volumes.unwrap().iter().all(|v| v.name != "tls" && v.name != "upload-token"));
        assert_eq!(plain.containers[0].ports.as_ref().unwrap().len(), 2);
        gw.spec.tls = Some(GatewayTls { secret_name: "gw-cert".into(), ..Default::default() });
        let without_ca = deployment(&gw, "img", &[]).spec.template.spec.unwrap();
        assert!(without_ca.volumes.unwrap().iter().all(|v| v.name != "client-ca"));
        gw.spec.tls.as_mut().unwrap().client_ca_secret = Some("device-ca".into());
        gw.spec.upload_token_secret = Some(SecretKeyRef { name: "upload".into(), key: "token".into() });
        let pod = deployment(&gw, "img", &[]).spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let https = container.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("https")).unwrap();
        assert_eq!(https.container_port, 8443);
        let volumes = pod.volumes.unwrap();
        let mounts = container.volume_mounts.as_ref().unwrap();
        for (name, secret, dir, keys) in [
            ("tls", "gw-cert", "/etc/updraft/tls", vec!["tls.crt", "tls.key"]),
            ("client-ca", "device-ca", "/etc/updraft/client-ca", vec!["ca.crt"]),
            ("upload-token", "upload", "/etc/updraft/upload-token", vec!["token"]),
        ] {
            let volume = volumes.iter().find(|v| v.name == name).unwrap().secret.as_ref().unwrap();
            assert_eq!(volume.secret_name.as_deref(), Some(secret));
            let items: Vec<&str> = volume.items.as_ref().unwrap().iter().map(|i| i.key.as_str()).collect();
            assert_eq!(items, keys);
            let mount = mounts.iter().find(|m| m.name == name).unwrap();
            // No subPath: kubelet swaps the files of a renewed Secret in place.
            assert_eq!((mount.mount_path.as_str(), mount.sub_path.as_deref()), (dir, None));
        }
    }

    #[test]
    fn credential_secrets_are_listed_once_each() {
        let mut a = channel("a", None, None);
        let mut b = channel("b", None, None);
        let c = channel("c", None, None);
        a.spec.source.credentials_secret = Some("regcred".into());
        b.spec.source.credentials_secret = Some("regcred".into());
        assert_eq!(credential_secrets(&[&a, &b, &c], &[]), ["regcred"]);
    }

    #[test]
    fn workloads_are_owned_labelled_and_probe_the_admin_port() {
        let gw = gateway();
        let deploy = deployment(&gw, "updraft/ota-gateway:dev", &[]);
        assert_eq!(deploy.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        assert_eq!(deploy.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let container = &deploy.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("updraft/ota-gateway:dev"));
        let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((probe.path.as_deref(), &probe.port), (Some("/readyz"), &IntOrString::String("admin".into())));
    }
}
