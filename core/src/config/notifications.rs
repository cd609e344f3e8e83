//! Who is told when a release becomes ready to serve: devices over MQTT (retained
//! messages, as OtaFlux publishes them), people and CI over signed webhooks. The
//! operator checks a rendered section with [`NotificationsConfig::validate`] before it
//! reaches a gateway.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Notifications sent when a release becomes ready to serve (its payload cached and
/// verified).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Retained MQTT messages for devices, as OtaFlux publishes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    /// Signed JSON POSTs for people and CI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
}

impl NotificationsConfig {
    /// Nothing to notify.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_none() && self.webhooks.is_empty()
    }
}

/// The MQTT broker devices listen on. Each channel's current release is published,
/// retained with QoS 1, on `<topicPrefix>/<device id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS, default
    /// port 8883), optionally `?client_id=ID` as OtaFlux takes it.
    pub url: String,
    /// Topic prefix; a device listens on `<topicPrefix>/<device id>`. Default
    /// `firmware/updates`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// PEM CA bundle the broker's certificate must chain to (`mqtts://`). Default: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; needs `clientKeyFile` and `caFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `clientCertFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// File holding the MQTT user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    /// File holding the MQTT password; needs `usernameFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// One receiver of signed webhook POSTs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// File holding the HMAC-SHA256 key; the body's signature goes in
    /// `X-Updraft-Signature: sha256=<hex>`. Unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl NotificationsConfig {
    /// URL schemes, topic prefix, and files that only work in pairs (the operator checks
    /// a rendered section with it before it reaches a gateway).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(m) = &self.mqtt {
            if !(m.url.starts_with("mqtt://") || m.url.starts_with("mqtts://")) {
                return invalid(format!("notifications.mqtt.url {:?} must start with mqtt:// or mqtts://", m.url));
            }
            if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
                return invalid(format!(
                    "notifications.mqtt.topicPrefix {:?} must be non-empty, without wildcards",
                    m.topic_prefix
                ));
            }
            if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                return invalid("notifications.mqtt: clientCertFile and clientKeyFile go together".into());
            }
            if m.client_cert_file.is_some() && m.ca_file.is_none() {
                return invalid("notifications.mqtt: a client certificate needs caFile".into());
            }
            if m.password_file.is_some() && m.username_file.is_none() {
                return invalid("notifications.mqtt: passwordFile needs usernameFile".into());
            }
        }
        for w in &self.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return invalid(format!("notifications.webhooks: url {:?} must start with http:// or https://", w.url));
            }
        }
        Ok(())
    }
}

impl MqttConfig {
    /// `topicPrefix` when left out.
    pub const DEFAULT_TOPIC_PREFIX: &str = "firmware/updates";
}

fn default_topic_prefix() -> String {
    MqttConfig::DEFAULT_TOPIC_PREFIX.into()
}
