//! Notifications: who is told when a release becomes ready to serve.
//!
//! - `mqtt`: devices. Each channel's release (the one OtaFlux's `/firmware?device=ID`
//!   hands out) is published on `<topicPrefix>/<device id>` as OtaFlux publishes it:
//!   JSON with `version` and `size` (plus `sha256`, `crc32`, `url`), QoS 1, retained.
//! - `webhook`: people and CI. A JSON POST per ready release or failed fetch or
//!   verification, signed with HMAC-SHA256, retried with backoff from a bounded queue.
//!
//! Nothing here blocks a request handler or a fetch: [`Notifier::release`] and
//! [`Notifier::failed`] only record and enqueue. Every replica notifies on its own (the
//! gateway never talks to the API server, so there is no leader): the MQTT payload is a
//! pure function of the config and the payload, so N replicas publish the same retained
//! message, which is idempotent; each replica publishes a topic's payload once, and again
//! only when it changes (a new release, a rollback) or the broker connection is new.

mod mqtt;
mod webhook;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use updraft_core::config::{GatewayConfig, NotificationsConfig};

/// A release that is ready to serve: its payload cached and verified.
#[derive(Clone, Debug)]
pub(crate) struct Release {
    pub channel: String,
    pub device: String,
    pub version: String,
    pub tag: String,
    pub digest: String,
    pub size: u64,
    pub sha256: String,
    pub crc32: u32,
    /// Where an OtaFlux device downloads it (`/firmware?device=ID`, absolute when the
    /// config has a `publicUrl`).
    pub url: String,
}

/// A release whose payload could not be fetched, unpacked or verified.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub channel: String,
    pub device: String,
    pub version: String,
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

/// The message a device gets, field for field what OtaFlux publishes (`version`,
/// `size`) and what the JSON channel API adds.
#[derive(Serialize)]
struct DeviceMessage<'a> {
    version: &'a str,
    size: u64,
    sha256: &'a str,
    crc32: u32,
    url: &'a str,
}

/// A notification config that cannot be used; the previous config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications: cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("notifications.mqtt.url {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
}

/// Sends notifications; cheap to clone.
#[derive(Clone)]
pub(crate) struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    mqtt: Mutex<Option<(mqtt::Settings, mqtt::Publisher)>>,
    webhooks: webhook::Sender,
    /// Channel and digest of failures already reported, so a release that keeps
    /// failing is reported once (until it becomes ready).
    failed: Mutex<HashSet<(String, String)>>,
    /// The digest and version last announced per channel, so a reload that rebuilds a
    /// channel without changing what it hands out announces nothing to webhooks, and a
    /// move to a lower version is flagged as a rollback.
    announced: Mutex<HashMap<String, (String, String)>>,
}

/// The notification part of a new config: files read, not yet live.
pub(crate) struct Prepared {
    mqtt: Option<mqtt::Settings>,
    webhooks: Vec<webhook::Target>,
}

impl Notifier {
    /// A notifier with nowhere to send yet. Needs a Tokio runtime (it starts the webhook
    /// worker).
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                mqtt: Mutex::new(None),
                webhooks: webhook::Sender::start(),
                failed: Mutex::new(HashSet::new()),
                announced: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Reads the files the `notifications` section names (CA, client certificate,
    /// credentials, HMAC keys).
    pub(crate) fn prepare(&self, config: &GatewayConfig) -> Result<Prepared, NotifyError> {
        let NotificationsConfig { mqtt, webhooks } = &config.notifications;
        let mqtt = match mqtt {
            Some(m) => Some(mqtt::Settings::load(m)?),
            None => None,
        };
        let webhooks = webhooks
            .iter()
            .map(|w| {
                let key = w.secret_file.as_deref().map(read_secret).transpose()?;
                Ok(webhook::Target { url: w.url.clone(), key })
            })
            .collect::<Result<_, NotifyError>>()?;
        Ok(Prepared { mqtt, webhooks })
    }

    /// Makes prepared settings live. An unchanged MQTT config keeps its connection; a
    /// changed one reconnects and publishes the latest message of every topic again.
    pub(crate) fn install(&self, prepared: Prepared) {
        let mut live = self.inner.mqtt.lock().expect("mqtt lock");
        let next = prepared.mqtt;
        if live.as_ref().map(|(s, _)| s) != next.as_ref() {
            // The latest message of each topic carries over unless the topics moved.
            let latest = match live.take() {
                Some((old, publisher)) => {
                    let latest = publisher.stop();
                    if next.as_ref().is_some_and(|n| n.prefix == old.prefix) {
                        latest
                    } else {
                        Default::default()
                    }
                }
                None => Default::default(),
            };
            *live = next.map(|settings| {
                let publisher = mqtt::Publisher::start(&settings, latest);
                (settings, publisher)
            });
        }
        drop(live);
        self.inner.webhooks.set_targets(prepared.webhooks);
    }

    /// A release became ready to serve: tells devices (MQTT) and receivers (webhooks),
    /// unless it is what the channel already announced (MQTT compares the message on
    /// the topic, webhooks the channel's last digest).
    pub(crate) fn release(&self, release: Release) {
        self.inner.failed.lock().expect("failed lock").remove(&(release.channel.clone(), release.digest.clone()));
        if let Some((settings, publisher)) = self.inner.mqtt.lock().expect("mqtt lock").as_ref() {
            let message = DeviceMessage {
                version: &release.version,
                size: release.size,
                sha256: &release.sha256,
                crc32: release.crc32,
                url: &release.url,
            };
            let payload = serde_json::to_vec(&message).expect("message serializes");
            publisher.publish(format!("{}/{}", settings.prefix, release.device), payload.into());
        }
        let entry = (release.digest.clone(), release.version.clone());
        let previous = self.inner.announced.lock().expect("announced lock").insert(release.channel.clone(), entry);
        match previous {
            Some((digest, _)) if digest == release.digest => {}
            previous => {
                let rollback = previous.is_some_and(|(_, v)| is_lower(&release.version, &v));
                self.inner.webhooks.send(webhook::Event::ready(&release, rollback));
            }
        }
    }

    /// A release could not be fetched, unpacked or verified: tells the webhooks, once
    /// per release until it becomes ready.
    pub(crate) fn failed(&self, failure: Failure) {
        if self.inner.failed.lock().expect("failed lock").insert((failure.channel.clone(), failure.digest.clone())) {
            self.inner.webhooks.send(webhook::Event::failed(&failure));
        }
    }
}

/// Whether `version` is a lower semver than `than` (false when either is not semver).
fn is_lower(version: &str, than: &str) -> bool {
    match (semver::Version::parse(version), semver::Version::parse(than)) {
        (Ok(v), Ok(t)) => v < t,
        _ => false,
    }
}

/// A secret file's bytes without the trailing newline an editor or `echo` leaves.
pub(super) fn read_secret(path: &Path) -> Result<Vec<u8>, NotifyError> {
    let mut bytes = read(path)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, NotifyError> {
    std::fs::read(path).map_err(|source| NotifyError::Read { path: path.to_owned(), source })
}
