//! What every reconcile shares: the client, the resolver, the caches of both
//! controllers, metrics, the event recorder and the per-object retry bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use updraft_crds::{FirmwareChannel, OtaGateway};

use crate::metrics::Metrics;
use crate::resolve::Resolver;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "updraft-operator";

pub struct Context {
    pub client: Client,
    pub resolver: Arc<dyn Resolver>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Image of OtaGateways that name none.
    pub gateway_image: String,
    pub channels: Store<FirmwareChannel>,
    pub gateways: Store<OtaGateway>,
    /// When each channel last asked its registry, and when it may ask again.
    checks: Mutex<HashMap<ObjectRef<FirmwareChannel>, Check>>,
}

#[derive(Clone, Debug)]
struct Check {
    generation: Option<i64>,
    next: Instant,
    failures: u32,
    /// What the last check failed with, until one succeeds: passes that do not ask the
    /// registry (watch events between checks) report the same state, so conditions
    /// do not flap.
    failure: Option<Failure>,
}

/// The last failed registry check of a channel, as its conditions report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub unreachable: bool,
}

impl From<&crate::Error> for Failure {
    fn from(e: &crate::Error) -> Self {
        Self {
            reason: e.reason(),
            message: e.to_string(),
            unreachable: matches!(e, crate::Error::RegistryUnreachable(_)),
        }
    }
}

/// Backoff after `failures` consecutive failures: 5s, 10s, 20s… up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.saturating_sub(1).min(6))).min(Duration::from_secs(300))
}

impl Context {
    pub fn new(
        client: Client,
        resolver: Arc<dyn Resolver>,
        metrics: Metrics,
        recorder: Recorder,
        gateway_image: String,
        channels: Store<FirmwareChannel>,
        gateways: Store<OtaGateway>,
    ) -> Self {
        Self { client, resolver, metrics, recorder, gateway_image, channels, gateways, checks: Mutex::default() }
    }

    /// Whether `channel` should ask its registry now: never asked, spec changed since,
    /// or its interval (or backoff after failures) has passed. `None` when it is due;
    /// otherwise how long until it is.
    pub fn check_wait(&self, channel: &FirmwareChannel) -> Option<Duration> {
        let checks = self.checks.lock().expect("checks lock");
        let check = checks.get(&ObjectRef::from(channel))?;
        if check.generation != channel.metadata.generation {
            return None;
        }
        check.next.checked_duration_since(Instant::now())
    }

    /// Records a registry check and when the next one is due: after the interval, or
    /// after a backoff that grows with the failures in a row.
    pub fn checked(&self, channel: &FirmwareChannel, failure: Option<Failure>, interval: Duration) {
        let mut checks = self.checks.lock().expect("checks lock");
        let key = ObjectRef::from(channel);
        let failures = match failure {
            None => 0,
            Some(_) => checks.get(&key).map_or(0, |c| c.failures) + 1,
        };
        let wait = if failure.is_none() { interval } else { backoff(failures).min(interval) };
        let check = Check { generation: channel.metadata.generation, next: Instant::now() + wait, failures, failure };
        checks.insert(key, check);
    }

    /// How the last registry check of `channel` failed, if it did.
    pub fn last_failure(&self, channel: &FirmwareChannel) -> Option<Failure> {
        self.checks.lock().expect("checks lock").get(&ObjectRef::from(channel)).and_then(|c| c.failure.clone())
    }

    pub fn forget(&self, channel: &FirmwareChannel) {
        self.checks.lock().expect("checks lock").remove(&ObjectRef::from(channel));
    }

    /// Publishes an event about `obj`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// Server-side applies `status` to `obj`'s status subresource.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
