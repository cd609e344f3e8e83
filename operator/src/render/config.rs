//! The gateway's configuration (`gateway.yaml`) from an OtaGateway and the channels it
//! serves, each pinned to the digests its status shows: what status says is what
//! devices get.

use std::collections::BTreeMap;

use kube::ResourceExt;
use updraft_core::config::{
    ArtifactConfig, CacheConfig, ChannelConfig, Downgrade, GatewayConfig, MqttConfig, NotificationsConfig,
    PinnedArtifact, SourceConfig, Unpack, WebhookConfig, CONFIG_VERSION,
};
use updraft_crds::channel::{ArtifactSelector, Downgrade as SpecDowngrade, Unpack as SpecUnpack};
use updraft_crds::gateway::GatewayNotifications;
use updraft_crds::{FirmwareChannel, OtaGateway, ResolvedVersion};

use super::{quantity_bytes, ADMIN_PORT, CACHE_DIR, CREDENTIALS_DIR, HTTP_PORT, NOTIFY_DIR, SIGNING_DIR};
use crate::attach::device_id;

/// The gateway configuration for `gateway` serving `served` channels. Channels with no
/// resolved version yet are left out: the gateway only serves what status pins.
pub(crate) fn gateway_config(gateway: &OtaGateway, served: &[&FirmwareChannel]) -> GatewayConfig {
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
        ..Default::default()
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

/// The `notifications` section: the spec's Secrets become the files the Deployment
/// mounts.
pub(crate) fn notifications_config(spec: &GatewayNotifications) -> NotificationsConfig {
    use notify_paths::*;
    let file = |dir: String, key: &str| Some(format!("{dir}/{key}").into());
    NotificationsConfig {
        mqtt: spec.mqtt.as_ref().map(|m| MqttConfig {
            url: m.url.clone(),
            topic_prefix: m.topic_prefix.clone().unwrap_or_else(|| "firmware/updates".into()),
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
        rollout: spec.rollout.percentage.clamp(0, 100) as u8,
        highest_served: status.highest_served.clone(),
        downgrade: match spec.downgrade.unwrap_or_default() {
            SpecDowngrade::Never => Downgrade::Never,
            SpecDowngrade::PinnedBack => Downgrade::PinnedBack,
            SpecDowngrade::Always => Downgrade::Always,
        },
    })
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
    use crate::fixtures::{channel, gateway, resolved, DIGEST_A};

    #[test]
    fn notifications_point_at_the_mounted_secrets() {
        use updraft_crds::gateway::{GatewayMqtt, GatewayWebhook};
        use updraft_crds::SecretKeyRef;
        let mut gw = gateway();
        assert!(!gateway_config(&gw, &[]).to_yaml().contains("notifications"), "omitted while empty");
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
        let config = gateway_config(&gw, &[]);
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
    fn config_pins_latest_and_previous_and_skips_unresolved() {
        let channels = [channel("esp32", None, Some(resolved("1.2.0", DIGEST_A))), channel("stm32", None, None)];
        let attachment = attach::channels(&ObjectRef::from(&gateway()), channels.iter());
        let config = gateway_config(&gateway(), &attachment.served);
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
        assert_eq!(config.to_yaml(), gateway_config(&gateway(), &attachment.served).to_yaml());
    }
}
