//! OtaGateway controller: read → validate → render (pure, see `render`) → server-side
//! apply ConfigMap, Service and Deployment → status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::{de::DeserializeOwned, Serialize};
use tracing::instrument;
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::{AttachedResource, OtaGateway, OtaGatewaySpec, OtaGatewayStatus};

use crate::context::{apply_status, backoff, Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::render;

pub const CONTROLLER: &str = "otagateway";

#[instrument(skip_all, fields(namespace = gateway.namespace().unwrap_or_default(), name = gateway.name_any()))]
pub async fn reconcile(gateway: Arc<OtaGateway>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = gateway.namespace().unwrap_or_default();
    let api: Api<OtaGateway> = Api::namespaced(ctx.client.clone(), &ns);
    let old = gateway.status.clone().unwrap_or_default();
    let generation = gateway.metadata.generation;
    let mut status = OtaGatewayStatus { observed_generation: generation, ..old.clone() };

    if let Err(message) = validate(&gateway.spec) {
        let stalled = !conditions::is_true(&old.conditions, STALLED);
        set_condition(
            &mut status.conditions,
            NewCondition::new(STALLED, true, "InvalidSpec", message.clone()),
            generation,
        );
        set_condition(
            &mut status.conditions,
            NewCondition::new(READY, false, "InvalidSpec", message.clone()),
            generation,
        );
        if status != old {
            apply_status(&api, &gateway, &status).await?;
        }
        if stalled {
            ctx.event(gateway.as_ref(), true, "InvalidSpec", message.clone()).await;
        }
        ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(message));
        return Ok(Action::await_change());
    }

    // Render from every channel attached to this gateway, in one pass: two channels can
    // never overwrite each other's part of the configuration.
    // The shared channel cache: the change that triggered this reconcile is in it.
    let channels = ctx.channels.state();
    let siblings = channels.iter().map(|c| c.as_ref()).filter(|c| c.namespace().as_deref() == Some(&ns));
    let attachment = render::attach(&gateway.name_any(), siblings);
    let config = render::gateway_config(&gateway, &attachment.served);
    let secrets: BTreeSet<String> =
        attachment.served.iter().filter_map(|c| c.spec.source.credentials_secret.clone()).collect();
    let secrets: Vec<String> = secrets.into_iter().collect();

    apply(&ctx, &ns, &render::config_map(&gateway, &config)).await?;
    apply(&ctx, &ns, &render::service(&gateway)).await?;
    let deployment = apply(&ctx, &ns, &render::deployment(&gateway, &ctx.gateway_image, &secrets)).await?;

    let ready_replicas = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    status.ready_replicas = ready_replicas;
    status.url = Some(render::service_url(&gateway));
    status.attached = attachment
        .served
        .iter()
        .map(|c| AttachedResource { kind: "FirmwareChannel".into(), name: c.name_any() })
        .collect();
    set_conditions(&mut status, &gateway.spec, generation, config.channels.len());

    if status != old {
        apply_status(&api, &gateway, &status).await?;
        if conditions::is_true(&status.conditions, READY) && !conditions::is_true(&old.conditions, READY) {
            ctx.event(gateway.as_ref(), false, "Ready", format!("{ready_replicas} replicas ready")).await;
        }
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

pub fn error_policy(_gateway: Arc<OtaGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    tracing::warn!(%error, "gateway reconcile failed");
    if error.is_permanent() {
        Action::await_change()
    } else {
        Action::requeue(backoff(2))
    }
}

/// Checks what the schema cannot.
pub fn validate(spec: &OtaGatewaySpec) -> Result<(), String> {
    if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&spec.service.type_.as_str()) {
        return Err(format!("service.type {:?} must be ClusterIP, NodePort or LoadBalancer", spec.service.type_));
    }
    if render::quantity_bytes(&spec.cache.size).is_none_or(|b| b == 0) {
        return Err(format!("cache.size {:?} is not a byte quantity such as 512Mi or 2Gi", spec.cache.size.0));
    }
    Ok(())
}

fn set_conditions(status: &mut OtaGatewayStatus, spec: &OtaGatewaySpec, generation: Option<i64>, channels: usize) {
    let ready = status.ready_replicas >= spec.replicas;
    let message = format!("{}/{} replicas ready, serving {channels} channels", status.ready_replicas, spec.replicas);
    let conditions = &mut status.conditions;
    set_condition(conditions, NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"), generation);
    let reason = if ready { "ReplicasReady" } else { "ReplicasNotReady" };
    set_condition(conditions, NewCondition::new(READY, ready, reason, message.clone()), generation);
    let reason = if ready { "Idle" } else { "WaitingForReplicas" };
    let detail = if ready { "all replicas ready".to_owned() } else { message };
    set_condition(conditions, NewCondition::new(RECONCILING, !ready, reason, detail), generation);
}

/// Annotation holding a hash of the applied object, so an unchanged object is not
/// applied again.
pub const APPLIED_HASH: &str = "updraft.dev/applied-hash";

/// Server-side applies one child object (force, one field manager) and returns it as
/// the API server now has it. An object whose last apply was identical is not applied
/// again: on 1.20, applying unchanged content to a Deployment still rewrites its
/// managedFields timestamp, and that write would trigger the next reconcile.
async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let hash = applied_hash(obj);
    if let Some(live) = api.get_opt(&obj.name_any()).await? {
        if live.annotations().get(APPLIED_HASH) == Some(&hash) {
            return Ok(live);
        }
    }
    let mut obj = obj.clone();
    obj.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&obj.name_any(), &params, &Patch::Apply(&obj)).await?)
}

/// SHA-256 (first 16 hex digits) of the object's JSON.
fn applied_hash<K: Serialize>(obj: &K) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(obj).expect("Kubernetes objects serialize");
    hex::encode(&sha2::Sha256::digest(&json)[..8])
}
