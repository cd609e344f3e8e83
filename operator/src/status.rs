//! Status writes, the same for every kind: one server-side apply of the status
//! subresource, made only when the status changed (conditions keep their timestamps
//! unless they flip, see `updraft_crds::conditions`), and the kstatus shape of a resource
//! that cannot make progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::{ArtifactMirrorStatus, FirmwareChannelStatus, ImageStreamStatus, OtaGatewayStatus};

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, SpecError};

/// Condition that reports, under `spec.verify`, whether what the source offers carries
/// signatures that verify (FirmwareChannel: the newest release; ImageStream: every
/// image version).
pub(crate) const VERIFIED: &str = "Verified";

/// A status with kstatus conditions.
pub(crate) trait Conditions {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

macro_rules! conditions {
    ($($status:ty),*) => {$(
        impl Conditions for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
        }
    )*};
}
conditions!(OtaGatewayStatus, FirmwareChannelStatus, ImageStreamStatus, ArtifactMirrorStatus);

/// A kind whose status the operator writes.
pub(crate) trait WithStatus:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: Conditions + Serialize + PartialEq>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> WithStatus for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + HasStatus<Status: Conditions + Serialize + PartialEq>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Server-side applies `status` to `obj`'s status subresource, unless `obj` already has
/// exactly that status. Returns whether it wrote.
pub(crate) async fn write<K: WithStatus>(client: &Client, obj: &K, status: &K::Status) -> Result<bool, kube::Error> {
    if obj.status() == Some(status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}

/// Why a resource cannot make progress until someone intervenes.
pub(crate) struct Stall<'a> {
    /// The reason of all three conditions, e.g. `InvalidSpec`.
    pub reason: &'a str,
    /// What is wrong, in `Stalled` and `Ready`.
    pub message: String,
    /// What it waits for, in `Reconciling`, e.g. "waiting for the spec to change".
    pub waiting: &'a str,
}

/// Sets the kstatus shape of a resource that cannot make progress: `Stalled=True` and
/// `Ready=False` with the reason and message, `Reconciling=False` (kstatus reads
/// `Reconciling=True` first, so it must not stay `True` from an earlier pass).
pub(crate) fn set_stalled(conditions: &mut Vec<Condition>, stall: &Stall<'_>, generation: Option<i64>) {
    let Stall { reason, message, waiting } = stall;
    set_condition(conditions, NewCondition::new(STALLED, true, reason, message.clone()), generation);
    set_condition(conditions, NewCondition::new(READY, false, reason, message.clone()), generation);
    set_condition(conditions, NewCondition::new(RECONCILING, false, reason, *waiting), generation);
}

/// Reports `obj` stalled ([`set_stalled`] on `status`), writes the status if that changed
/// it, and publishes a Warning event when the resource becomes stalled for this reason.
pub(crate) async fn stall<K: WithStatus>(
    ctx: &Context,
    obj: &K,
    mut status: K::Status,
    stall: Stall<'_>,
) -> Result<(), kube::Error> {
    let was = obj.status().and_then(|s| conditions::find(s.conditions(), STALLED));
    let already = was.is_some_and(|c| c.status == "True" && c.reason == stall.reason);
    set_stalled(status.conditions_mut(), &stall, obj.meta().generation);
    write(&ctx.client, obj, &status).await?;
    if !already {
        ctx.event(obj, EventType::Warning, stall.reason, stall.message).await;
    }
    Ok(())
}

/// Reports `obj`'s spec invalid (`Stalled` with reason `InvalidSpec`, the message naming
/// the field, a Warning event on the transition) and counts the error under
/// `controller`. The caller then forgets the object's schedule and waits for a change.
pub(crate) async fn invalid_spec<K: WithStatus>(
    ctx: &Context,
    obj: &K,
    status: K::Status,
    error: SpecError,
    controller: &str,
) -> Result<(), kube::Error> {
    tracing::warn!(field = %error.field, %error, "invalid spec");
    let stalled =
        Stall { reason: "InvalidSpec", message: error.to_string(), waiting: "waiting for the spec to change" };
    stall(ctx, obj, status, stalled).await?;
    ctx.metrics.error(controller, &Error::InvalidSpec(error));
    Ok(())
}

/// `Reconciling`: True while the source is retried after an error before anything was
/// found, otherwise False with `idle` (what the resource waits for).
pub(crate) fn set_reconciling(conditions: &mut Vec<Condition>, retrying: bool, idle: &str, generation: Option<i64>) {
    let reconciling = if retrying {
        NewCondition::new(RECONCILING, true, "RetryingAfterError", "retrying the source with growing backoff")
    } else {
        NewCondition::new(RECONCILING, false, "Idle", idle)
    };
    set_condition(conditions, reconciling, generation);
}

/// Sets [`VERIFIED`]; returns whether it changed (status, reason or message), i.e.
/// whether its event is due: events on transitions only.
pub(crate) fn set_verified(
    conditions: &mut Vec<Condition>,
    verified: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> bool {
    let same = |c: &Condition| {
        c.status == if verified { "True" } else { "False" } && c.reason == reason && c.message == message
    };
    let changed = !conditions::find(conditions, VERIFIED).is_some_and(same);
    set_condition(conditions, NewCondition::new(VERIFIED, verified, reason, message.to_owned()), generation);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_clears_reconciling_and_keeps_timestamps_when_repeated() {
        let mut status = OtaGatewayStatus::default();
        let conds = status.conditions_mut();
        set_condition(conds, NewCondition::new(RECONCILING, true, "WaitingForReplicas", "0/1"), Some(1));
        let stall = Stall { reason: "InvalidSpec", message: "cache.size \"x\" is bad".into(), waiting: "waiting" };
        set_stalled(conds, &stall, Some(2));
        assert!(conditions::is_true(conds, STALLED));
        assert!(!conditions::is_true(conds, READY));
        assert!(!conditions::is_true(conds, RECONCILING), "kstatus would read InProgress: {conds:?}");
        let before = conds.clone();
        set_stalled(conds, &stall, Some(2));
        assert_eq!(*conds, before, "a repeated stall changes nothing, timestamps included");
        assert_eq!(conditions::find(conds, READY).unwrap().message, stall.message);
    }

    #[test]
    fn verified_reports_a_change_once() {
        let mut conds = Vec::new();
        assert!(set_verified(&mut conds, false, "NoSignature", "no cosign signature for sha256:a", Some(1)));
        assert!(!set_verified(&mut conds, false, "NoSignature", "no cosign signature for sha256:a", Some(1)));
        assert!(set_verified(&mut conds, false, "NoSignature", "no cosign signature for sha256:b", Some(1)));
        assert!(set_verified(&mut conds, true, "Verified", "all signed", Some(1)));
        assert!(conditions::is_true(&conds, VERIFIED));
        set_reconciling(&mut conds, true, "idle", Some(1));
        assert!(conditions::is_true(&conds, RECONCILING));
        set_reconciling(&mut conds, false, "idle", Some(1));
        assert_eq!(conditions::find(&conds, RECONCILING).unwrap().message, "idle");
    }
}
