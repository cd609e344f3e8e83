//! Pure builders: from an OtaGateway and the channels attached to it, the gateway
//! configuration and the ConfigMap, Deployment and Service the operator applies.
//! No client here; everything is tested from fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use updraft_core::config::{
    ArtifactConfig, CacheConfig, ChannelConfig, GatewayConfig, PinnedArtifact, SourceConfig, Unpack, CONFIG_VERSION,
};
use updraft_crds::channel::{ArtifactSelector, Unpack as SpecUnpack};
use updraft_crds::{FirmwareChannel, OtaGateway, ResolvedVersion};

/// Port the gateway container serves devices on.
pub const HTTP_PORT: i32 = 8080;
/// Port of the gateway's `/healthz`, `/readyz` and `/metrics`.
pub const ADMIN_PORT: i32 = 9090;
/// Where the rendered `gateway.yaml` is mounted.
pub const CONFIG_DIR: &str = "/etc/updraft/config";
pub const CONFIG_KEY: &str = "gateway.yaml";
const CACHE_DIR: &str = "/var/cache/updraft";
const CREDENTIALS_DIR: &str = "/etc/updraft/credentials";
const SIGNING_DIR: &str = "/etc/updraft/signing";

/// The channels of one gateway, split into those it serves and those it cannot.
#[derive(Debug, Default)]
pub struct Attachment<'a> {
    /// Attached channels, sorted by name, at most one per device id.
    pub served: Vec<&'a FirmwareChannel>,
    /// Attached channels left out, with why: another channel (earlier by name)
    /// already serves their device id.
    pub conflicts: BTreeMap<String, String>,
}

/// Which of `channels` (one namespace) attach to the gateway named `gateway`.
pub fn attach<'a>(gateway: &str, channels: impl IntoIterator<Item = &'a FirmwareChannel>) -> Attachment<'a> {
    let mut mine: Vec<&FirmwareChannel> = channels.into_iter().filter(|c| c.spec.gateway_ref == gateway).collect();
    mine.sort_by_cached_key(|c| c.name_any());
    let mut attachment = Attachment::default();
    let mut devices: BTreeMap<String, String> = BTreeMap::new();
    for channel in mine {
        let device = device_id(channel);
        if let Some(owner) = devices.get(&device) {
            let why =
                format!("device id {device:?} is already served by FirmwareChannel {owner:?} on gateway {gateway:?}");
            attachment.conflicts.insert(channel.name_any(), why);
            continue;
        }
        devices.insert(device, channel.name_any());
        attachment.served.push(channel);
    }
    attachment
}

/// The OtaFlux device id of a channel: `spec.device`, else its name.
pub fn device_id(channel: &FirmwareChannel) -> String {
    channel.spec.device.clone().unwrap_or_else(|| channel.name_any())
}

/// The gateway configuration for `gateway` serving `served` channels. Channels with no
/// resolved version yet are left out: the gateway only serves what status pins.
pub fn gateway_config(gateway: &OtaGateway, served: &[&FirmwareChannel]) -> GatewayConfig {
    GatewayConfig {
        version: CONFIG_VERSION,
        listen: format!("0.0.0.0:{HTTP_PORT}"),
        admin_listen: format!("0.0.0.0:{ADMIN_PORT}"),
        public_url: None,
        cache: CacheConfig {
            dir: CACHE_DIR.into(),
            max_bytes: quantity_bytes(&gateway.spec.cache.size).unwrap_or(CacheConfig::default().max_bytes),
        },
        signing_key_file: gateway.spec.signing_key_secret.as_ref().map(|k| format!("{SIGNING_DIR}/{}", k.key).into()),
        channels: served.iter().filter_map(|c| channel_config(c)).collect(),
    }
}

/// One channel of the gateway configuration, pinned to the digests in its status.
pub fn channel_config(channel: &FirmwareChannel) -> Option<ChannelConfig> {
    let status = channel.status.as_ref()?;
    let spec = &channel.spec;
    Some(ChannelConfig {
        name: channel.name_any(),
        device: Some(device_id(channel)),
        source: SourceConfig {
            registry: spec.source.registry.clone(),
            repository: spec.source.repository.clone(),
            insecure: spec.source.insecure,
            docker_config: spec
                .source
                .credentials_secret
                .as_ref()
                .map(|s| format!("{CREDENTIALS_DIR}/{s}/.dockerconfigjson").into()),
        },
        artifact: channel_artifact(&spec.artifact),
        current: Some(pinned(status.latest.as_ref()?)),
        previous: status.previous.as_ref().map(pinned),
        policy: None,
        rollout: spec.rollout.percentage.clamp(0, 100) as u8,
    })
}

/// The gateway's view of a channel's artifact selector.
pub fn channel_artifact(selector: &ArtifactSelector) -> ArtifactConfig {
    ArtifactConfig {
        media_type: selector.media_type.clone(),
        unpack: match selector.unpack {
            SpecUnpack::Raw => Unpack::Raw,
            SpecUnpack::Gzip => Unpack::Gzip,
            SpecUnpack::Zstd => Unpack::Zstd,
            SpecUnpack::Tar => Unpack::Tar,
        },
        path: selector.path.clone(),
        platform: selector.platform.clone(),
        annotations: BTreeMap::new(),
    }
}

fn pinned(v: &ResolvedVersion) -> PinnedArtifact {
    PinnedArtifact { version: v.version.clone(), tag: v.tag.clone(), digest: v.digest.clone() }
}

/// Labels on everything the operator creates for a gateway.
pub fn labels(gateway: &OtaGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "ota-gateway".into()),
        ("app.kubernetes.io/instance".into(), gateway.name_any()),
        ("app.kubernetes.io/managed-by".into(), "updraft-operator".into()),
    ])
}

fn selector(gateway: &OtaGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "ota-gateway".into()),
        ("app.kubernetes.io/instance".into(), gateway.name_any()),
    ])
}

fn owner(gateway: &OtaGateway) -> OwnerReference {
    gateway.controller_owner_ref(&()).expect("an OtaGateway read from the API has a name and uid")
}

fn meta(gateway: &OtaGateway, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gateway.namespace(),
        labels: Some(labels(gateway)),
        owner_references: Some(vec![owner(gateway)]),
        ..Default::default()
    }
}

/// Name of the ConfigMap holding the gateway's configuration.
pub fn config_map_name(gateway: &OtaGateway) -> String {
    format!("{}-config", gateway.name_any())
}

pub fn config_map(gateway: &OtaGateway, config: &GatewayConfig) -> ConfigMap {
    ConfigMap {
        metadata: meta(gateway, config_map_name(gateway)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config.to_yaml())])),
        ..Default::default()
    }
}

pub fn service(gateway: &OtaGateway) -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        // Server-side apply on 1.20 needs the protocol on every port.
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(gateway, gateway.name_any()),
        spec: Some(ServiceSpec {
            type_: Some(gateway.spec.service.type_.clone()),
            selector: Some(selector(gateway)),
            ports: Some(vec![
                port("http", gateway.spec.service.port, HTTP_PORT),
                port("admin", ADMIN_PORT, ADMIN_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// In-cluster URL of the gateway's Service.
pub fn service_url(gateway: &OtaGateway) -> String {
    let ns = gateway.namespace().unwrap_or_else(|| "default".into());
    format!("http://{}.{ns}.svc:{}", gateway.name_any(), gateway.spec.service.port)
}

/// The gateway Deployment. `credential_secrets` are the registry-credential Secrets of
/// the served channels, each mounted where the rendered config expects it.
pub fn deployment(gateway: &OtaGateway, default_image: &str, credential_secrets: &[String]) -> Deployment {
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
        ports: Some(vec![container_port("http", HTTP_PORT), container_port("admin", ADMIN_PORT)]),
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
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
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

fn secret_volume(name: &str, secret: &str, key: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath { key: key.into(), path: key.into(), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(name != "cache"), ..Default::default() }
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

/// Bytes in a Kubernetes quantity such as `512Mi`, `2Gi`, `1G` or `1048576`.
pub fn quantity_bytes(q: &Quantity) -> Option<u64> {
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
    use updraft_crds::{FirmwareChannelSpec, FirmwareChannelStatus, OtaGatewaySpec};

    const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn gateway() -> OtaGateway {
        let mut gw = OtaGateway::new("default", OtaGatewaySpec::default());
        gw.metadata.namespace = Some("fleet".into());
        gw.metadata.uid = Some("uid-1".into());
        gw
    }

    fn resolved(version: &str, digest: &str) -> ResolvedVersion {
        ResolvedVersion {
            version: version.into(),
            tag: format!("v{version}"),
            digest: digest.into(),
            size: Some(10),
            resolved_at: updraft_crds::conditions::now(),
        }
    }

    fn channel(name: &str, device: Option<&str>, latest: Option<ResolvedVersion>) -> FirmwareChannel {
        let spec: FirmwareChannelSpec = serde_json::from_value(serde_json::json!({
            "source": {"registry": "127.0.0.1:15000", "repository": format!("fw/{name}"), "insecure": true},
            "rollout": {"percentage": 30},
        }))
        .unwrap();
        let mut ch = FirmwareChannel::new(name, FirmwareChannelSpec { device: device.map(Into::into), ..spec });
        ch.metadata.namespace = Some("fleet".into());
        ch.status = latest.map(|l| FirmwareChannelStatus {
            latest: Some(l),
            previous: Some(resolved("0.9.0", DIGEST_B)),
            ..Default::default()
        });
        ch
    }

    #[test]
    fn attach_sorts_filters_and_reports_device_conflicts() {
        let mut other = channel("other-gw", None, None);
        other.spec.gateway_ref = "lab".into();
        let channels =
            [channel("b", Some("esp32"), None), channel("a", Some("esp32"), None), channel("c", None, None), other];
        let attachment = attach("default", channels.iter());
        let names: Vec<_> = attachment.served.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(attachment.conflicts["b"].contains("already served by FirmwareChannel \"a\""));
    }

    #[test]
    fn config_pins_latest_and_previous_and_skips_unresolved() {
        let channels = [channel("esp32", None, Some(resolved("1.2.0", DIGEST_A))), channel("stm32", None, None)];
        let attachment = attach("default", channels.iter());
        let config = gateway_config(&gateway(), &attachment.served);
        config.validate().unwrap();
        assert_eq!(config.channels.len(), 1);
        let c = &config.channels[0];
        assert_eq!(c.current.as_ref().unwrap().digest, DIGEST_A);
        assert_eq!(c.previous.as_ref().unwrap().version, "0.9.0");
        assert_eq!(c.rollout, 30);
        assert_eq!(c.device.as_deref(), Some("esp32"));
        assert_eq!(config.cache.max_bytes, 1 << 30);
        // Rendering is deterministic: the same input gives byte-identical YAML.
        assert_eq!(config.to_yaml(), gateway_config(&gateway(), &attachment.served).to_yaml());
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
    fn workloads_are_owned_labelled_and_probe_the_admin_port() {
        let gw = gateway();
        let deploy = deployment(&gw, "updraft/ota-gateway:dev", &[]);
        assert_eq!(deploy.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        assert_eq!(deploy.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let container = &deploy.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("updraft/ota-gateway:dev"));
        let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((probe.path.as_deref(), &probe.port), (Some("/readyz"), &IntOrString::String("admin".into())));
        let svc = service(&gw);
        let ports = svc.spec.unwrap().ports.unwrap();
        assert!(ports.iter().all(|p| p.protocol.as_deref() == Some("TCP")));
        assert_eq!(ports[0].port, 8080);
        assert_eq!(service_url(&gw), "http://default.fleet.svc:8080");
        let cm = config_map(&gw, &gateway_config(&gw, &[]));
        assert_eq!(cm.metadata.name.as_deref(), Some("default-config"));
        assert!(cm.data.unwrap()[CONFIG_KEY].contains("listen: 0.0.0.0:8080"));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes(&Quantity("512Mi".into())), Some(512 << 20));
        assert_eq!(quantity_bytes(&Quantity("2G".into())), Some(2_000_000_000));
        assert_eq!(quantity_bytes(&Quantity("4096".into())), Some(4096));
        assert_eq!(quantity_bytes(&Quantity("1.5Gi".into())), None);
    }
}
