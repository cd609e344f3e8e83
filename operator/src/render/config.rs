//! The gateway's configuration (`gateway.yaml`) from an OtaGateway and the channels it
//! serves, each pinned to the digests its status shows: what status says is what
//! devices get.

use std::collections::BTreeMap;

use kube::ResourceExt;
use updraft_core::config::{
    ArtifactConfig, CacheConfig, ChannelConfig, ClientAuth, DeltaPatch, Deltas, Downgrade, GatewayConfig, MqttConfig,
    NotificationsConfig, OciStreamSource, PinnedArtifact, SourceConfig, StoreConfig, StreamConfig, StreamSource,
    TlsConfig, Unpack, UploadStreamSource, UpstreamStreamSource, WebhookConfig, CONFIG_VERSION,
};
use updraft_core::cosign::VerifyConfig;
use updraft_crds::channel::{ArtifactSelector, Downgrade as SpecDowngrade, Unpack as SpecUnpack};
use updraft_crds::gateway::{GatewayClientAuth, GatewayNotifications, GatewayTls};
use updraft_crds::{FirmwareChannel, ImageStream, OciSource, OtaGateway, ResolvedVersion};

use super::{
    quantity_bytes, ADMIN_PORT, CACHE_DIR, CLIENT_CA_DIR, CREDENTIALS_DIR, HTTPS_PORT, HTTP_PORT, NOTIFY_DIR,
    SIGNING_DIR, STORE_FILES_DIR, STORE_KEY_DIR, TLS_DIR, UPLOAD_TOKEN_DIR, UPSTREAM_CA_DIR, UPSTREAM_CA_KEY,
    VERIFY_DIR,
};
use crate::attach::device_id;

/// The gateway configuration for `gateway` serving `served` channels and `streams`.
/// Channels with no resolved version yet are left out: the gateway only serves what
/// status pins. A stream is rendered as its source only (the gateway lists the versions
/// itself), so the ConfigMap stays small however many images a stream holds.
pub(crate) fn gateway_config(
    gateway: &OtaGateway,
    served: &[&FirmwareChannel],
    streams: &[&ImageStream],
) -> GatewayConfig {
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
        notifications: notifications_config(&gateway.spec.notifications),
        tls: gateway.spec.tls.as_ref().map(tls_config),
        streams: streams.iter().filter_map(|s| stream_config(gateway, s)).collect(),
        stores: gateway.spec.store.iter().map(store_config).collect(),
        ..Default::default()
    }
}

/// The `stores` entry of `spec.store`: the PVC and write-key Secret as the Deployment
/// mounts them.
fn store_config(store: &updraft_crds::gateway::GatewayStore) -> StoreConfig {
    StoreConfig {
        name: "store".into(),
        listen: format!("0.0.0.0:{}", store.port),
        dir: STORE_FILES_DIR.into(),
        write_key: None,
        write_key_file: Some(format!("{STORE_KEY_DIR}/{}", store.write_key_secret.key).into()),
        public_reads: true,
        read_key_file: None,
        max_upload_bytes: StoreConfig::DEFAULT_MAX_UPLOAD_BYTES,
        allow_plain_writes: store.allow_plain_writes,
    }
}

/// Where the Secret files of notifications are mounted (see `deployment`): the MQTT
/// CA, client certificate and credentials, and webhook `index`'s HMAC key.
pub(super) mod notify_paths {
    use super::NOTIFY_DIR;

    pub(crate) fn mqtt_ca() -> String {
        format!("{NOTIFY_DIR}/mqtt-ca")
    }
    pub(crate) fn mqtt_client() -> String {
        format!("{NOTIFY_DIR}/mqtt-client")
    }
    pub(crate) fn mqtt_credentials() -> String {
        format!("{NOTIFY_DIR}/mqtt-credentials")
    }
    pub(crate) fn webhook(index: usize) -> String {
        format!("{NOTIFY_DIR}/webhook-{index}")
    }
}

/// The `tls` section: the certificate Secret and the client CA Secret (mutual TLS)
/// become the files the Deployment mounts.
pub(crate) fn tls_config(tls: &GatewayTls) -> TlsConfig {
    TlsConfig {
        listen: format!("0.0.0.0:{HTTPS_PORT}"),
        cert_file: format!("{TLS_DIR}/tls.crt").into(),
        key_file: format!("{TLS_DIR}/tls.key").into(),
        client_ca_file: tls.client_ca_secret.as_ref().map(|_| format!("{CLIENT_CA_DIR}/ca.crt").into()),
        client_auth: tls.client_auth.map(|mode| match mode {
            GatewayClientAuth::Optional => ClientAuth::Optional,
            GatewayClientAuth::Required => ClientAuth::Required,
        }),
    }
}

/// The `notifications` section: the spec's Secrets become the files the Deployment
/// mounts.
pub(crate) fn notifications_config(spec: &GatewayNotifications) -> NotificationsConfig {
    use notify_paths::*;
    let file = |dir: String, key: &str| Some(format!("{dir}/{key}").into());
    NotificationsConfig {
        mqtt: spec.mqtt.as_ref().map(|m| MqttConfig {
            url: m.url.clone(),
            topic_prefix: m.topic_prefix.clone().unwrap_or_else(|| MqttConfig::DEFAULT_TOPIC_PREFIX.into()),
            ca_file: m.ca_secret.as_ref().and_then(|_| file(mqtt_ca(), "ca.crt")),
            client_cert_file: m.client_cert_secret.as_ref().and_then(|_| file(mqtt_client(), "tls.crt")),
            client_key_file: m.client_cert_secret.as_ref().and_then(|_| file(mqtt_client(), "tls.key")),
            username_file: m.credentials_secret.as_ref().and_then(|_| file(mqtt_credentials(), "username")),
            password_file: m.credentials_secret.as_ref().and_then(|_| file(mqtt_credentials(), "password")),
        }),
        webhooks: spec
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| WebhookConfig {
                url: w.url.clone(),
                secret_file: w.secret_ref.as_ref().and_then(|r| file(webhook(i), &r.key)),
            })
            .collect(),
    }
}

/// One stream of the gateway configuration: its source, never its versions. `None` for
/// a spec the gateway cannot take (the stream controller reports it `Stalled`).
pub(super) fn stream_config(gateway: &OtaGateway, stream: &ImageStream) -> Option<StreamConfig> {
    let spec = &stream.spec;
    let source = match (&spec.source.oci, &spec.source.upload, &spec.source.upstream) {
        (Some(oci), None, None) => StreamSource {
            oci: Some(OciStreamSource { repository: repository(oci), interval: spec.interval.clone() }),
            ..Default::default()
        },
        (None, Some(upload), None) => {
            let token = gateway.spec.upload_token_secret.as_ref()?;
            StreamSource {
                upload: Some(UploadStreamSource {
                    repository: repository(&upload.repository),
                    token_file: format!("{UPLOAD_TOKEN_DIR}/{}", token.key).into(),
                    allow_overwrite: upload.allow_overwrite,
                    allow_delete: upload.allow_delete,
                    max_bytes: match &upload.max_bytes {
                        Some(q) => quantity_bytes(q)?,
                        None => UploadStreamSource::DEFAULT_MAX_BYTES,
                    },
                    interval: UploadStreamSource::DEFAULT_INTERVAL.into(),
                    allow_plain_writes: upload.allow_plain_writes,
                }),
                ..Default::default()
            }
        }
        (None, None, Some(upstream)) => StreamSource {
            upstream: Some(UpstreamStreamSource {
                url: upstream.url.clone(),
                filters: spec.filters.clone(),
                ca_file: upstream
                    .ca_config_map
                    .as_ref()
                    .map(|_| format!("{UPSTREAM_CA_DIR}/{}/{UPSTREAM_CA_KEY}", stream.name_any()).into()),
                interval: spec.interval.clone(),
            }),
            ..Default::default()
        },
        _ => return None,
    };
    Some(StreamConfig {
        name: stream.name_any(),
        source,
        keep_versions: u32::try_from(spec.keep_versions).unwrap_or(0),
        verify: spec
            .verify
            .as_ref()
            .filter(|_| spec.source.upstream.is_none())
            .map(|v| VerifyConfig { public_key_files: vec![stream_key_file(&stream.name_any(), v).into()] }),
    })
}

/// Where the Deployment mounts the public key of a stream's `spec.verify`:
/// `<VERIFY_DIR>/<stream>/<key>` (key default `cosign.pub`, the one file the gateway reads).
pub(super) fn stream_key_file(stream: &str, verify: &updraft_crds::Verification) -> String {
    let key = verify.public_key_secret.key.as_deref().unwrap_or(super::DEFAULT_PUBLIC_KEY);
    format!("{VERIFY_DIR}/{stream}/{key}")
}

fn repository(source: &OciSource) -> SourceConfig {
    SourceConfig {
        registry: source.registry.clone(),
        repository: source.repository.clone(),
        insecure: source.insecure,
        docker_config: source
            .credentials_secret
            .as_ref()
            .map(|s| format!("{CREDENTIALS_DIR}/{s}/.dockerconfigjson").into()),
    }
}

/// One channel of the gateway configuration, pinned to the digests in its status.
pub(super) fn channel_config(channel: &FirmwareChannel) -> Option<ChannelConfig> {
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
        rollout: crate::rollout::share(channel),
        highest_served: status.highest_served.clone(),
        downgrade: match spec.downgrade.unwrap_or_default() {
            SpecDowngrade::Never => Downgrade::Never,
            SpecDowngrade::PinnedBack => Downgrade::PinnedBack,
            SpecDowngrade::Always => Downgrade::Always,
        },
        deltas: deltas(channel),
    })
}

/// With `spec.delta`, `status.deltas` to `latest` (never an entry left from another
/// target): built ones are served, the others built by the gateway's worker.
fn deltas(channel: &FirmwareChannel) -> Deltas {
    let status = channel.status.as_ref();
    let Some(latest) = status.and_then(|s| s.latest.as_ref()).filter(|_| channel.spec.delta.is_some()) else {
        return Deltas::default();
    };
    let mut deltas = Deltas::default();
    for entry in status.map(|s| s.deltas.as_slice()).unwrap_or_default().iter().filter(|d| d.to_digest == latest.digest)
    {
        let base = PinnedArtifact {
            version: entry.from.clone(),
            tag: entry.from_tag.clone(),
            digest: entry.from_digest.clone(),
        };
        match (&entry.digest, &entry.base_sha256) {
            (Some(digest), Some(base_sha256)) => deltas.patches.push(DeltaPatch {
                base,
                base_sha256: base_sha256.clone(),
                target: pinned(latest),
                digest: digest.clone(),
            }),
            _ => deltas.build.push(base),
        }
    }
    deltas
}

/// The gateway's view of a channel's artifact selector (the resolver uses it too, so
/// both pick the same layer).
pub(crate) fn channel_artifact(selector: &ArtifactSelector) -> ArtifactConfig {
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

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::ObjectRef;

    use super::*;
    use crate::attach;
    use crate::fixtures::{channel, gateway, resolved, DIGEST_A, DIGEST_B};

    /// Where the ConfigMap limit bites: channels named and pinned as a real fleet's are
    /// (model, region and stage in the name, a registry host with a port, distinct
    /// random digests, a previous release, a rollout share, the high-water mark),
    /// rendered and stored as the operator stores them. The figures are the chart
    /// README's ("The ConfigMap limit").
    #[test]
    fn how_many_channels_a_configmap_holds() {
        use sha2::{Digest, Sha256};
        use updraft_core::config::delivery::{store, Stored, CONFIGMAP_LIMIT};
        let digest = |seed: String| format!("sha256:{}", hex::encode(Sha256::digest(seed.as_bytes())));
        let fleet = |n: usize| -> Vec<FirmwareChannel> {
            (0..n)
                .map(|i| {
                    let name = format!("esp32-s3-devkitc-{:04}-eu-west-prod", i);
                    let mut ch = channel(&name, Some(&format!("acme-sensor-v2-{i:04}")), None);
                    ch.spec.source.registry = "registry.firmware.example.com:5000".into();
                    ch.spec.source.repository = format!("acme/sensors/esp32-s3/{name}");
                    let mut status = updraft_crds::FirmwareChannelStatus {
                        latest: Some(resolved("2.14.3", &digest(format!("{i}-latest")))),
                        previous: Some(resolved("2.14.2", &digest(format!("{i}-previous")))),
                        highest_served: Some("2.14.3".into()),
                        ..Default::default()
                    };
                    status.latest.as_mut().unwrap().size = Some(1_572_864);
                    ch.status = Some(status);
                    ch
                })
                .collect()
        };
        let gw = gateway();
        let rendered = |n: usize| {
            let channels = fleet(n);
            let served: Vec<&FirmwareChannel> = channels.iter().collect();
            gateway_config(&gw, &served, &[]).to_yaml()
        };
        let per_channel = (rendered(1000).len() - rendered(0).len()) as f64 / 1000.0;
        // The first count whose text no longer fits, found by bisection.
        let first_over = |fits: &dyn Fn(usize) -> bool| {
            let mut high = 1000usize;
            while fits(high) {
                high *= 2;
            }
            let mut low = high / 2;
            while low < high {
                let mid = (low + high) / 2;
                if fits(mid) {
                    low = mid + 1
                } else {
                    high = mid
                }
            }
            low
        };
        let text_over = first_over(&|n| rendered(n).len() + "gateway.yaml".len() <= CONFIGMAP_LIMIT);
        let over_at = rendered(text_over);
        let compressed = match store("gateway.yaml", over_at.clone()).unwrap() {
            Stored::Gzip(bytes) => bytes.len(),
            Stored::Text(_) => panic!("{text_over} channels stored as text"),
        };
        let gzip_over = first_over(&|n| store("gateway.yaml", rendered(n)).is_ok());
        println!(
            "{per_channel:.0} bytes a channel; text over {CONFIGMAP_LIMIT} bytes at {text_over} channels \
             ({compressed} bytes compressed, {:.1}x); over even compressed at {gzip_over} channels",
            over_at.len() as f64 / compressed as f64
        );
        // Measured: 555 bytes a channel, text over at 1,890, compressed 5.9x, over at 11,187.
        assert!((1_700..2_100).contains(&text_over), "text limit at {text_over} channels");
        assert!(gzip_over > 5 * text_over, "compressed limit at {gzip_over} channels");
    }

    #[test]
    fn notifications_point_at_the_mounted_secrets() {
        use updraft_crds::gateway::{GatewayMqtt, GatewayWebhook};
        use updraft_crds::SecretKeyRef;
        let mut gw = gateway();
        assert!(!gateway_config(&gw, &[], &[]).to_yaml().contains("notifications"), "omitted while empty");
        gw.spec.notifications = GatewayNotifications {
            mqtt: Some(GatewayMqtt {
                url: "mqtts://broker:8883".into(),
                topic_prefix: None,
                ca_secret: Some("broker-ca".into()),
                client_cert_secret: Some("gateway-tls".into()),
                credentials_secret: Some("mqtt-login".into()),
            }),
            webhooks: vec![GatewayWebhook {
                url: "https://ci.example/hook".into(),
                secret_ref: Some(SecretKeyRef { name: "hook".into(), key: "hmac".into() }),
            }],
        };
        let config = gateway_config(&gw, &[], &[]);
        config.validate().unwrap();
        let mqtt = config.notifications.mqtt.unwrap();
        assert_eq!(mqtt.topic_prefix, "firmware/updates");
        assert_eq!(mqtt.ca_file.unwrap().to_str(), Some("/etc/updraft/notify/mqtt-ca/ca.crt"));
        assert_eq!(mqtt.client_key_file.unwrap().to_str(), Some("/etc/updraft/notify/mqtt-client/tls.key"));
        assert_eq!(mqtt.password_file.unwrap().to_str(), Some("/etc/updraft/notify/mqtt-credentials/password"));
        assert_eq!(
            config.notifications.webhooks[0].secret_file.as_ref().unwrap().to_str(),
            Some("/etc/updraft/notify/webhook-0/hmac")
        );
    }

    fn stream(name: &str, source: serde_json::Value) -> ImageStream {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "updraft.dev/v1alpha1", "kind": "ImageStream",
            "metadata": {"name": name, "namespace": "fleet"},
            "spec": {"source": source, "keepVersions": 2},
        }))
        .unwrap()
    }

    /// `spec.tls.clientCaSecret` becomes the mounted `ca.crt`, `clientAuth` the mode; a
    /// mode without a CA is what the gateway refuses (the operator's validation says so).
    #[test]
    fn client_certificate_settings_are_rendered_where_the_secret_is_mounted() {
        use updraft_crds::gateway::GatewayTls;
        let mut gw = gateway();
        gw.spec.tls = Some(GatewayTls {
            secret_name: "gw-cert".into(),
            client_ca_secret: Some("device-ca".into()),
            client_auth: None,
        });
        let config = gateway_config(&gw, &[], &[]);
        config.validate().unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.client_ca_file.as_deref().and_then(|p| p.to_str()), Some("/etc/updraft/client-ca/ca.crt"));
        assert_eq!(tls.client_auth(), Some(ClientAuth::Optional));
        assert!(config.to_yaml().contains("clientCaFile: /etc/updraft/client-ca/ca.crt"), "{}", config.to_yaml());
        gw.spec.tls.as_mut().unwrap().client_auth = Some(GatewayClientAuth::Required);
        let config = gateway_config(&gw, &[], &[]);
        assert_eq!(config.tls.as_ref().unwrap().client_auth(), Some(ClientAuth::Required));
        assert!(config.to_yaml().contains("clientAuth: required"));
        gw.spec.tls.as_mut().unwrap().client_ca_secret = None;
        assert!(gateway_config(&gw, &[], &[]).validate().is_err());
    }

    #[test]
    fn streams_and_tls_are_rendered_as_sources_the_gateway_accepts() {
        use updraft_crds::gateway::GatewayTls;
        use updraft_crds::SecretKeyRef;
        let mut gw = gateway();
        let plain = gateway_config(&gw, &[], &[]).to_yaml();
        assert!(!plain.contains("tls") && !plain.contains("streams"), "{plain}");
        gw.spec.tls = Some(GatewayTls { secret_name: "gw-cert".into(), ..Default::default() });
        gw.spec.upload_token_secret = Some(SecretKeyRef { name: "upload".into(), key: "token".into() });
        let up = stream(
            "images",
            serde_json::json!({"upload": {"registry": "127.0.0.1:15000", "repository": "images/up", "insecure": true,
                "credentialsSecret": "regcred", "allowDelete": true, "maxBytes": "8Gi"}}),
        );
        let oci = stream("lab", serde_json::json!({"oci": {"registry": "ghcr.io", "repository": "acme/images"}}));
        let mut mirror = stream("mirror", serde_json::json!({"upstream": {"url": "https://images.example"}}));
        mirror.spec.filters = vec!["os=debian".into()];
        let config = gateway_config(&gw, &[], &[&up, &oci, &mirror]);
        config.validate().unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.listen, "0.0.0.0:8443");
        assert_eq!(tls.cert_file.to_str(), Some("/etc/updraft/tls/tls.crt"));
        assert_eq!(tls.key_file.to_str(), Some("/etc/updraft/tls/tls.key"));
        assert_eq!((tls.client_ca_file.as_ref(), tls.client_auth), (None, None), "no mutual TLS unless asked");
        let upload = config.streams[0].source.upload.as_ref().unwrap();
        assert_eq!(upload.token_file.to_str(), Some("/etc/updraft/upload-token/token"));
        assert_eq!((upload.max_bytes, upload.allow_delete, upload.allow_overwrite), (8 << 30, true, false));
        assert_eq!(upload.interval, "5s", "the gateway's own default: other replicas' uploads show soon");
        assert_eq!(
            upload.repository.docker_config.as_ref().unwrap().to_str(),
            Some("/etc/updraft/credentials/regcred/.dockerconfigjson")
        );
        assert_eq!(config.streams[0].keep_versions, 2);
        assert_eq!(config.streams[1].source.oci.as_ref().unwrap().repository.repository, "acme/images");
        assert_eq!(config.streams[2].source.upstream.as_ref().unwrap().filters, ["os=debian"]);
        // Read back as the gateway reads it.
        let back = GatewayConfig::parse(config.to_yaml().as_bytes()).unwrap();
        assert_eq!(back.streams, config.streams);
        // Without the upload token an upload stream is left out, never rendered broken.
        gw.spec.upload_token_secret = None;
        assert_eq!(gateway_config(&gw, &[], &[&up, &oci]).streams.len(), 1);
    }

    #[test]
    fn stream_verify_and_plain_writes_are_rendered_where_the_deployment_mounts_them() {
        let mut gw = gateway();
        gw.spec.upload_token_secret = Some(updraft_crds::SecretKeyRef { name: "upload".into(), key: "token".into() });
        let mut up = stream("images", serde_json::json!({"upload": {"registry": "r:5000", "repository": "images/up"}}));
        let config = gateway_config(&gw, &[], &[&up]);
        let source = config.streams[0].source.upload.as_ref().unwrap();
        assert!(!source.allow_plain_writes, "writes need TLS unless the spec says otherwise");
        assert_eq!(config.streams[0].verify, None);
        up.spec.source.upload.as_mut().unwrap().allow_plain_writes = true;
        up.spec.verify =
            Some(serde_json::from_value(serde_json::json!({"publicKeySecret": {"name": "keys"}})).unwrap());
        let mut oci = stream("lab", serde_json::json!({"oci": {"registry": "ghcr.io", "repository": "acme/images"}}));
        oci.spec.verify = Some(
            serde_json::from_value(serde_json::json!({"publicKeySecret": {"name": "keys", "key": "lab.pub"}})).unwrap(),
        );
        // (`validate` would read the key files, which exist only in the pod.)
        let config = gateway_config(&gw, &[], &[&up, &oci]);
        assert!(config.streams[0].source.upload.as_ref().unwrap().allow_plain_writes);
        let files = |i: usize| config.streams[i].verify.as_ref().unwrap().public_key_files.clone();
        assert_eq!(files(0), [std::path::PathBuf::from("/etc/updraft/verify/images/cosign.pub")]);
        assert_eq!(files(1), [std::path::PathBuf::from("/etc/updraft/verify/lab/lab.pub")]);
        let back = GatewayConfig::parse(config.to_yaml().as_bytes()).unwrap();
        assert_eq!(back.streams, config.streams);

        let mut deployment = crate::render::deployment(&gw, "img", &[]);
        crate::render::mount_stream_files(&mut deployment, &[&up, &oci]);
        let pod = deployment.spec.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        for (stream, key) in [("images", "cosign.pub"), ("lab", "lab.pub")] {
            let dir = format!("/etc/updraft/verify/{stream}");
            let mount = mounts.iter().find(|m| m.mount_path == dir).unwrap_or_else(|| panic!("{dir}: {mounts:#?}"));
            let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
            let secret = volume.secret.as_ref().unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("keys"));
            assert_eq!(secret.items.as_ref().unwrap()[0].key, key);
            assert_eq!(mount.read_only, Some(true));
        }

        // An upstream's caConfigMap: its ca.crt is mounted where ca_file points.
        let mirror = stream(
            "mirror",
            serde_json::json!({"upstream": {"url": "https://images.example", "caConfigMap": "lab-ca"}}),
        );
        let config = gateway_config(&gw, &[], &[&mirror]);
        let ca_file = config.streams[0].source.upstream.as_ref().unwrap().ca_file.clone();
        assert_eq!(ca_file, Some(std::path::PathBuf::from("/etc/updraft/upstream-ca/mirror/ca.crt")));
        let mut deployment = crate::render::deployment(&gw, "img", &[]);
        crate::render::mount_stream_files(&mut deployment, &[&mirror]);
        let pod = deployment.spec.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount = mounts.iter().find(|m| m.mount_path == "/etc/updraft/upstream-ca/mirror").expect("CA mounted");
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
        let config_map = volume.config_map.as_ref().unwrap();
        assert_eq!(config_map.name, "lab-ca");
        assert_eq!(config_map.items.as_ref().unwrap()[0].key, "ca.crt");
    }

    #[test]
    fn the_store_is_served_from_the_volume_with_the_mounted_write_key() {
        use updraft_crds::gateway::GatewayStore;
        use updraft_crds::SecretKeyRef;
        let mut gw = gateway();
        assert!(gateway_config(&gw, &[], &[]).stores.is_empty());
        let key = SecretKeyRef { name: "store-key".into(), key: "write".into() };
        let store: GatewayStore = serde_json::from_value(serde_json::json!({
            "claimName": "artifacts", "writeKeySecret": key,
        }))
        .unwrap();
        assert_eq!(store.port, 8081);
        gw.spec.store = Some(store);
        let config = gateway_config(&gw, &[], &[]);
        config.validate().unwrap();
        let store = &config.stores[0];
        // Writes need TLS unless the spec says otherwise.
        assert!(!store.allow_plain_writes);
        assert!(!config.to_yaml().contains("allowPlainWrites"));
        let mut plain = gw.clone();
        plain.spec.store.as_mut().unwrap().allow_plain_writes = true;
        let plain = gateway_config(&plain, &[], &[]);
        assert!(plain.stores[0].allow_plain_writes);
        assert!(plain.to_yaml().contains("allowPlainWrites: true"));
        // The volume is mounted at /var/lib/updraft/store; its `files/` is served, the
        // store's state kept beside it on the volume.
        assert_eq!((store.listen.as_str(), store.dir.to_str()), ("0.0.0.0:8081", Some("/var/lib/updraft/store/files")));
        assert_eq!(store.write_key_file.as_ref().unwrap().to_str(), Some("/etc/updraft/store-key/write"));
        assert_eq!(store.max_upload_bytes, 16 << 30);
        let pod = crate::render::deployment(&gw, "img", &[]).spec.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let volumes = pod.volumes.unwrap();
        let data = mounts.iter().find(|m| m.mount_path == "/var/lib/updraft/store").unwrap();
        assert_eq!(data.read_only, Some(false));
        let claim = volumes.iter().find(|v| v.name == data.name).unwrap().persistent_volume_claim.clone().unwrap();
        assert_eq!(claim.claim_name, "artifacts");
        let key = mounts.iter().find(|m| m.mount_path == "/etc/updraft/store-key").unwrap();
        let secret = volumes.iter().find(|v| v.name == key.name).unwrap().secret.clone().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("store-key"));
        let ports = crate::render::service(&gw).spec.unwrap().ports.unwrap();
        let port = ports.iter().find(|p| p.name.as_deref() == Some("store")).unwrap();
        assert_eq!((port.port, port.protocol.as_deref()), (8081, Some("TCP")));
    }

    #[test]
    fn ten_thousand_versions_do_not_grow_the_config() {
        // A stream is rendered as its source; what it holds never reaches the ConfigMap.
        let mut gw = gateway();
        gw.spec.upload_token_secret = Some(updraft_crds::SecretKeyRef { name: "upload".into(), key: "token".into() });
        let mut up = stream("images", serde_json::json!({"upload": {"registry": "r:5000", "repository": "images/up"}}));
        let small = gateway_config(&gw, &[], &[&up]).to_yaml();
        up.status = Some(updraft_crds::ImageStreamStatus { products: 500, versions: 10_000, ..Default::default() });
        assert_eq!(gateway_config(&gw, &[], &[&up]).to_yaml(), small);
        assert!(small.len() < 2048, "{}", small.len());
    }

    #[test]
    fn the_high_water_mark_and_downgrade_policy_reach_the_gateway() {
        let mut ch = channel("esp32", None, Some(resolved("1.0.0", DIGEST_A)));
        ch.status.as_mut().unwrap().highest_served = Some("1.1.0".into());
        ch.spec.downgrade = Some(SpecDowngrade::Always);
        let c = channel_config(&ch).unwrap();
        assert_eq!((c.highest_served.as_deref(), c.downgrade), (Some("1.1.0"), Downgrade::Always));
        ch.spec.downgrade = Some(SpecDowngrade::Never);
        assert_eq!(channel_config(&ch).unwrap().downgrade, Downgrade::Never);
    }

    #[test]
    fn delta_patches_are_rendered_built_or_to_build_for_latest_only() {
        use updraft_crds::{ChannelDelta, DeltaPolicy};
        let (base_a, base_b, patch) = (
            format!("sha256:{}", "0a".repeat(32)),
            format!("sha256:{}", "0b".repeat(32)),
            format!("sha256:{}", "0c".repeat(32)),
        );
        let mut ch = channel("esp32", None, Some(resolved("1.2.0", DIGEST_A)));
        let entry = |from: &str, digest: &str| ChannelDelta {
            from: from.into(),
            from_tag: format!("v{from}"),
            from_digest: digest.into(),
            to: "1.2.0".into(),
            to_digest: DIGEST_A.into(),
            tag: updraft_core::delta::tag(digest, DIGEST_A),
            ..Default::default()
        };
        let built = ChannelDelta {
            digest: Some(patch.clone()),
            base_sha256: Some("ee".repeat(32)),
            size: Some(4096),
            ..entry("1.1.0", &base_a)
        };
        let stale = ChannelDelta { to_digest: DIGEST_B.into(), ..entry("1.0.0", &base_a) };
        ch.status.as_mut().unwrap().deltas = vec![built, entry("1.0.0", &base_b), stale];

        // Without spec.delta nothing is rendered, whatever status holds.
        assert_eq!(channel_config(&ch).unwrap().deltas, Deltas::default());

        ch.spec.delta = Some(DeltaPolicy::default());
        let c = channel_config(&ch).unwrap();
        let pin = |version: &str, digest: &str| PinnedArtifact {
            version: version.into(),
            tag: format!("v{version}"),
            digest: digest.into(),
        };
        assert_eq!(c.deltas.build, [pin("1.0.0", &base_b)], "the entry to another target is left out");
        let target = pin("1.2.0", DIGEST_A);
        assert_eq!(
            c.deltas.patches,
            [DeltaPatch { base: pin("1.1.0", &base_a), base_sha256: "ee".repeat(32), target, digest: patch }]
        );
        // What the operator renders, the gateway accepts.
        let gw = gateway();
        let config = gateway_config(&gw, &[&ch], &[]);
        updraft_core::config::GatewayConfig::parse(config.to_yaml().as_bytes()).unwrap();
    }

    #[test]
    fn config_pins_latest_and_previous_and_skips_unresolved() {
        let channels = [channel("esp32", None, Some(resolved("1.2.0", DIGEST_A))), channel("stm32", None, None)];
        let attachment = attach::channels(&ObjectRef::from(&gateway()), channels.iter());
        let config = gateway_config(&gateway(), &attachment.served, &[]);
        config.validate().unwrap();
        assert_eq!(config.channels.len(), 1);
        let c = &config.channels[0];
        assert_eq!(c.current.as_ref().unwrap().digest, DIGEST_A);
        assert_eq!(c.previous.as_ref().unwrap().version, "0.9.0");
        assert_eq!(c.rollout, 30);
        assert_eq!(c.device.as_deref(), Some("esp32"));
        assert_eq!(config.cache.max_bytes, 1 << 30);
        assert_eq!((c.highest_served.as_deref(), c.downgrade), (None, Downgrade::PinnedBack));
        // Rendering is deterministic: the same input gives byte-identical YAML.
        assert_eq!(config.to_yaml(), gateway_config(&gateway(), &attachment.served, &[]).to_yaml());
    }
}
