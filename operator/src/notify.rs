//! Webhooks the operator sends: a release it refused because its signature did not
//! verify (a FirmwareChannel's newest release, an ImageStream's image version) is
//! announced as `release.failed` to the webhooks of the OtaGateway the resource is
//! attached to (`spec.notifications.webhooks`, each with its HMAC key Secret), in the
//! body, signature and delivery (id, retries with backoff) the gateway uses:
//! [`updraft_core::notify`]. A staged rollout that paused at its step is announced
//! there too, as `rollout.paused` with the figures that stopped it.
//!
//! Off the reconcile path: [`failed_verification`] spawns the Secret reads and only
//! enqueues; a receiver that is down never delays a reconcile.

use std::sync::Arc;

use kube::ResourceExt;
use updraft_core::notify::{FailedRelease, PausedRollout, WebhookEvent, WebhookTarget};
use updraft_crds::OtaGateway;

use crate::context::Context;
use crate::secrets;

/// A release the operator refused.
#[derive(Clone, Debug, Default)]
pub(crate) struct Refused {
    pub namespace: String,
    /// The FirmwareChannel, or
    pub channel: Option<String>,
    /// the ImageStream.
    pub stream: Option<String>,
    pub device: Option<String>,
    pub version: String,
    pub tag: String,
    pub digest: String,
    /// Why, in words.
    pub reason: String,
}

/// Announces `refused` to `gateway`'s webhooks; returns at once.
pub(crate) fn failed_verification(ctx: &Arc<Context>, gateway: Option<Arc<OtaGateway>>, refused: Refused) {
    let Some(gateway) = gateway.filter(|gw| !gw.spec.notifications.webhooks.is_empty()) else { return };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let targets = targets(&ctx, &gateway).await;
        let event = WebhookEvent::failed(&FailedRelease {
            namespace: Some(&refused.namespace),
            channel: refused.channel.as_deref(),
            stream: refused.stream.as_deref(),
            device: refused.device.as_deref(),
            version: &refused.version,
            tag: &refused.tag,
            digest: &refused.digest,
            reason: &refused.reason,
        });
        tracing::info!(digest = %refused.digest, receivers = targets.len(), "webhook: release.failed");
        ctx.clients.webhooks().send_to(&event, &targets);
    });
}

/// A rollout that paused: what [`rollout_paused`] sends.
#[derive(Clone, Debug, Default)]
pub(crate) struct Paused {
    pub namespace: String,
    pub channel: String,
    pub device: String,
    pub version: String,
    pub tag: String,
    pub digest: String,
    pub step: i32,
    pub percentage: i32,
    pub reason: &'static str,
    pub message: String,
    pub downloaded: Option<u64>,
    pub running: Option<u64>,
    pub threshold: i32,
    pub min_devices: i64,
    pub since: i64,
}

/// Announces a paused rollout to `gateway`'s webhooks (`rollout.paused`); returns at once.
pub(crate) fn rollout_paused(ctx: &Arc<Context>, gateway: Option<Arc<OtaGateway>>, paused: Paused) {
    let Some(gateway) = gateway.filter(|gw| !gw.spec.notifications.webhooks.is_empty()) else { return };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let targets = targets(&ctx, &gateway).await;
        let p = &paused;
        let event = WebhookEvent::rollout_paused(&PausedRollout {
            namespace: &p.namespace,
            channel: &p.channel,
            device: &p.device,
            version: &p.version,
            tag: &p.tag,
            digest: &p.digest,
            step: p.step,
            percentage: p.percentage,
            reason: p.reason,
            message: &p.message,
            downloaded: p.downloaded,
            running: p.running,
            threshold: p.threshold,
            min_devices: p.min_devices,
            since: p.since,
        });
        tracing::info!(version = %p.version, step = p.step, reason = p.reason, receivers = targets.len(), "webhook: rollout.paused");
        ctx.clients.webhooks().send_to(&event, &targets);
    });
}

/// The gateway's webhooks with their keys. One whose key Secret cannot be read is left
/// out (and logged): an unsigned POST to a receiver expecting a signature would be
/// refused anyway, and sending it unsigned would be worse.
async fn targets(ctx: &Context, gateway: &OtaGateway) -> Vec<WebhookTarget> {
    let namespace = gateway.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for hook in &gateway.spec.notifications.webhooks {
        let key = match &hook.secret_ref {
            None => None,
            Some(r) => match secrets::get(ctx, &namespace, &r.name).await {
                Ok(Some(secret)) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(key) => Some(key.0.clone()),
                    None => {
                        tracing::warn!(url = %hook.url, secret = %r.name, key = %r.key, "webhook key missing; not sent");
                        continue;
                    }
                },
                Ok(None) => {
                    tracing::warn!(url = %hook.url, secret = %r.name, "webhook Secret not found; not sent");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(url = %hook.url, error = %e, "webhook Secret unreadable; not sent");
                    continue;
                }
            },
        };
        out.push(WebhookTarget { url: hook.url.clone(), key });
    }
    out
}
