//! OtaGateway controller: read → validate → render (pure, see `render`) → server-side
//! apply ConfigMap, Service and Deployment → status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::{de::DeserializeOwned, Serialize};
use tracing::instrument;
use updraft_core::config::delivery::next_revision;
use updraft_core::config::{GatewayConfig, TlsConfigError};
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::gateway::GatewayStore;
use updraft_crds::{OtaGateway, OtaGatewaySpec, OtaGatewayStatus};

use crate::attach::{self, attached_resource};
use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result, SpecError};
use crate::render;
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "otagateway";

#[instrument(skip_all, fields(namespace = gateway.namespace().unwrap_or_default(), name = gateway.name_any()))]
pub(crate) async fn reconcile(gateway: Arc<OtaGateway>, ctx: Arc<Context>) -> Result<Action> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = gateway.namespace().unwrap_or_default();
    let old = gateway.status.clone().unwrap_or_default();
    let generation = gateway.metadata.generation;
    let mut status = OtaGatewayStatus { observed_generation: generation, ..old.clone() };

    if let Err(e) = validate(&gateway.spec) {
        let stalled =
            Stall { reason: "InvalidSpec", message: e.to_string(), waiting: "waiting for the spec to change" };
        status::stall(&ctx, gateway.as_ref(), status, stalled).await?;
        ctx.schedules.gateways.succeeded(&gateway);
        ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(e));
        return Ok(Action::await_change());
    }
    if let Some(store) = &gateway.spec.store {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let claim = claims.get_opt(&store.claim_name).await?;
        if let Some(stalled) = store_claim(&gateway.spec, store, claim.as_ref()) {
            tracing::warn!(reason = stalled.reason, message = %stalled.message, "store volume");
            status::stall(&ctx, gateway.as_ref(), status, stalled).await?;
            ctx.schedules.gateways.succeeded(&gateway);
            // A claim's creation or change triggers nothing here: look again soon.
            return Ok(Action::requeue(CLAIM_RECHECK));
        }
    }

    // Render from every channel attached to this gateway, in one pass: two channels can
    // never overwrite each other's part of the configuration.
    // The shared channel cache: the change that triggered this reconcile is in it.
    let channels = ctx.channels.state();
    let attachment = attach::channels(&ObjectRef::from(gateway.as_ref()), channels.iter().map(|c| c.as_ref()));
    let all_streams = ctx.streams.state();
    let gateway_ref = ObjectRef::from(gateway.as_ref());
    let mut streams: Vec<&updraft_crds::ImageStream> = all_streams
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| attach::is_attached(*s, &gateway_ref) && crate::stream::servable(s, &gateway))
        .collect();
    streams.sort_by_cached_key(|s| s.name_any());
    let all_mirrors = ctx.mirrors.state();
    let mut mirrors: Vec<&updraft_crds::ArtifactMirror> = all_mirrors
        .iter()
        .map(|m| m.as_ref())
        .filter(|m| attach::is_attached(*m, &gateway_ref) && crate::mirror::validate(&m.spec).is_ok())
        .collect();
    mirrors.sort_by_cached_key(|m| m.name_any());
    let mut config = render::gateway_config(&gateway, &attachment.served, &streams);
    config.mirrors = render::mirror_configs(&mirrors);
    let secrets = render::credential_secrets(&attachment.served, &streams);
    let token = match &ctx.delivery {
        Some(delivery) => {
            config.operator = Some(render::operator_source(&gateway, &delivery.url));
            Some(crate::delivery::token(&ctx.client, &gateway).await?)
        }
        None => None,
    };

    let key = (ns.clone(), gateway.name_any());
    // While its channels keep changing, the gateway gets each rendering at once through
    // the endpoint, and its ConfigMap and status at most every `WRITE_EVERY`.
    if let (Some(delivery), Some(token)) = (&ctx.delivery, &token) {
        let hold = delivery.hold_writes(&key, generation);
        if let (Some(wait), Some(revision)) = (hold, delivery.published.next_revision(&ns, &key.1, &config)) {
            config.revision = revision;
            let yaml = config.to_yaml();
            // One too large for its ConfigMap takes the full pass, which stalls.
            if render::config_map(&gateway, yaml.clone()).is_ok() {
                delivery.published.publish(&ns, &key.1, token.as_bytes(), revision, yaml);
                ctx.schedules.gateways.succeeded(&gateway);
                return Ok(Action::requeue(wait));
            }
        }
    }

    // Counting on from what the ConfigMap holds and what the endpoint served, whichever
    // is newer: a revision never goes back below one the gateways were given.
    config.revision = next_revision(stored_config(&ctx, &ns, &gateway).await?.as_ref(), &config);
    if let Some(delivery) = &ctx.delivery {
        config.revision = config.revision.max(delivery.published.next_revision(&ns, &key.1, &config).unwrap_or(0));
    }
    let yaml = config.to_yaml();
    let config_map = match render::config_map(&gateway, yaml.clone()) {
        Ok(map) => map,
        Err(too_large) => {
            let message = format!("{} channels: {too_large}", config.channels.len());
            let stalled = Stall { reason: "ConfigTooLarge", message, waiting: "waiting for fewer channels" };
            tracing::warn!(reason = stalled.reason, message = %stalled.message, "gateway config");
            status::stall(&ctx, gateway.as_ref(), status, stalled).await?;
            ctx.schedules.gateways.succeeded(&gateway);
            // A channel detaching triggers this reconcile again.
            return Ok(Action::await_change());
        }
    };
    apply(&ctx, &ns, &config_map).await?;
    // The same rendering, now that the ConfigMap holds it, to the gateways' long-polls.
    if let (Some(delivery), Some(token)) = (&ctx.delivery, &token) {
        delivery.published.publish(&ns, &key.1, token.as_bytes(), config.revision, yaml);
    }
    apply(&ctx, &ns, &render::service(&gateway)).await?;
    let mut pods = render::deployment(&gateway, &ctx.gateway_image, &secrets);
    if ctx.delivery.is_some() {
        render::mount_config_token(&mut pods, &gateway);
    }
    render::mount_stream_files(&mut pods, &streams);
    render::restart_on(&mut pods, &config);
    let deployment = apply(&ctx, &ns, &pods).await?;
    // The worker runs only while a mirror is attached or a channel has deltas. Not
    // rendering it is not enough (the owner reference only removes it with the gateway):
    // delete it.
    if !render::needs_worker(&config) {
        delete_mirror_worker(&ctx, &ns, &gateway).await?;
    } else {
        let mut worker = render::mirror_deployment(&gateway, &ctx.gateway_image, &secrets, &mirrors);
        // The worker follows the config endpoint too (a release's `deltas.build` within a
        // second, not at kubelet's sync).
        if ctx.delivery.is_some() {
            render::mount_config_token(&mut worker, &gateway);
        }
        apply(&ctx, &ns, &worker).await?;
    }

    let ready_replicas = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    status.ready_replicas = ready_replicas;
    status.url = Some(render::service_url(&gateway));
    status.attached = attachment.served.iter().map(|c| attached_resource(*c)).collect();
    status.attached.extend(streams.iter().map(|s| attached_resource(*s)));
    status.attached.extend(mirrors.iter().map(|m| attached_resource(*m)));
    set_conditions(&mut status, &gateway.spec, generation, config.channels.len());

    let became_ready = conditions::is_true(&status.conditions, READY) && !conditions::is_true(&old.conditions, READY);
    if status::write(&ctx.client, gateway.as_ref(), &status).await? && became_ready {
        ctx.event(gateway.as_ref(), EventType::Normal, "Ready", format!("{ready_replicas} replicas ready")).await;
    }
    if let Some(delivery) = &ctx.delivery {
        delivery.wrote(key, generation);
    }
    ctx.schedules.gateways.succeeded(&gateway);
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Retry policy: a bad spec waits for a change; a failed apply or status write is
/// retried soon, with a wait that grows with the failures in a row (1 s… 30 s).
pub(crate) fn error_policy(gateway: Arc<OtaGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    tracing::warn!(%error, "gateway reconcile failed");
    if error.is_permanent() {
        Action::await_change()
    } else {
        Action::requeue(ctx.schedules.gateways.failed(&gateway))
    }
}

/// Checks what the schema cannot.
fn validate(spec: &OtaGatewaySpec) -> Result<(), SpecError> {
    if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&spec.service.type_.as_str()) {
        let message = format!("service.type {:?} must be ClusterIP, NodePort or LoadBalancer", spec.service.type_);
        return Err(SpecError::new("service.type", message));
    }
    if render::quantity_bytes(&spec.cache.size).is_none_or(|b| b == 0) {
        let message = format!("cache.size {:?} is not a byte quantity such as 512Mi or 2Gi", spec.cache.size.0);
        return Err(SpecError::new("cache.size", message));
    }
    if let Err(e) = render::notifications_config(&spec.notifications).validate() {
        return Err(SpecError::new("notifications", e.to_string()));
    }
    // The gateway's own check of its `tls` section, told in the spec's field names.
    if let Some(Err(e)) = spec.tls.as_ref().map(|tls| render::tls_config(tls).check()) {
        let message = match e {
            TlsConfigError::ClientAuthWithoutCa(mode) => {
                format!(
                    "tls.clientAuth {mode} needs tls.clientCaSecret (the CA bundle device certificates verify against)"
                )
            }
            other => format!("tls: {other}"),
        };
        return Err(SpecError::new("tls.clientAuth", message));
    }
    if let Some(store) = &spec.store {
        if [8080, 8443, 9090].contains(&store.port) {
            let message = format!("store.port {} is taken by the gateway (8080, 8443, 9090)", store.port);
            return Err(SpecError::new("store.port", message));
        }
    }
    Ok(())
}

/// How soon a gateway waiting for its store's claim looks again.
const CLAIM_RECHECK: Duration = Duration::from_secs(10);

/// Why the store's claim cannot serve the gateway, if it cannot: it does not exist (a
/// waiting state), or several replicas (and the mirror worker) would mount a volume
/// that is not `ReadWriteMany`. The access modes are the bound volume's when bound,
/// else the claim's request.
fn store_claim(
    spec: &OtaGatewaySpec,
    store: &GatewayStore,
    claim: Option<&PersistentVolumeClaim>,
) -> Option<Stall<'static>> {
    let name = &store.claim_name;
    let Some(claim) = claim else {
        return Some(Stall {
            reason: "ClaimNotFound",
            message: format!("spec.store.claimName: PersistentVolumeClaim {name:?} not found"),
            waiting: "waiting for the PersistentVolumeClaim",
        });
    };
    if spec.replicas <= 1 {
        return None;
    }
    let modes = claim
        .status
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| claim.spec.as_ref().and_then(|s| s.access_modes.clone()))
        .unwrap_or_default();
    if modes.iter().any(|m| m == "ReadWriteMany") {
        return None;
    }
    Some(Stall {
        reason: "StoreNotShared",
        message: format!(
            "spec.store: {} replicas share the store, but PersistentVolumeClaim {name:?} is {} rather than \
             ReadWriteMany; use a ReadWriteMany claim or replicas: 1",
            spec.replicas,
            if modes.is_empty() { "without access modes".to_owned() } else { modes.join(", ") },
        ),
        waiting: "waiting for a ReadWriteMany claim or one replica",
    })
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

/// Deletes the gateway's mirror worker Deployment if it exists (and is ours).
async fn delete_mirror_worker(ctx: &Context, ns: &str, gateway: &updraft_crds::OtaGateway) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let name = render::mirror_deployment_name(gateway);
    let Some(live) = api.get_opt(&name).await? else { return Ok(()) };
    let ours = live.owner_references().iter().any(|o| Some(&o.uid) == gateway.uid().as_ref());
    if ours {
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The config the gateway's ConfigMap holds now (`None` when there is none), for the
/// next revision. A ConfigMap that does not parse as a config (edited by hand, or by a
/// newer operator) still gives its `revision`, with default content: the rendering that
/// replaces it then counts on from there, never back below what gateways serve.
async fn stored_config(ctx: &Context, ns: &str, gateway: &OtaGateway) -> Result<Option<GatewayConfig>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) = api.get_opt(&render::config_map_name(gateway)).await? else { return Ok(None) };
    let Some(text) = render::stored_text(&live) else { return Ok(None) };
    Ok(Some(GatewayConfig::parse(text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the gateway's ConfigMap does not parse as a config; replacing it");
        let revision = serde_yaml::from_slice::<serde_yaml::Value>(text)
            .ok()
            .and_then(|v| v.get("revision").and_then(serde_yaml::Value::as_u64))
            .unwrap_or(0);
        GatewayConfig { revision, ..Default::default() }
    })))
}

/// Annotation holding a hash of the applied object, so an unchanged object is not
/// applied again.
const APPLIED_HASH: &str = "updraft.dev/applied-hash";

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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    #[test]
    fn validate_names_the_field_at_fault() {
        let mut spec = OtaGatewaySpec::default();
        spec.service.type_ = "ClusterIP".into();
        spec.cache.size = Quantity("1Gi".into());
        validate(&spec).unwrap();
        spec.cache.size = Quantity("lots".into());
        assert_eq!(validate(&spec).unwrap_err().field, "cache.size");
        let mut hooked = OtaGatewaySpec::default();
        hooked
            .notifications
            .webhooks
            .push(updraft_crds::gateway::GatewayWebhook { url: "ftp://x".into(), secret_ref: None });
        assert_eq!(validate(&hooked).unwrap_err().field, "notifications");
        let mut mtls = spec.clone();
        mtls.cache.size = Quantity("1Gi".into());
        mtls.tls = Some(updraft_crds::gateway::GatewayTls {
            secret_name: "gw-cert".into(),
            client_ca_secret: None,
            client_auth: Some(updraft_crds::gateway::GatewayClientAuth::Required),
        });
        let err = validate(&mtls).unwrap_err();
        assert_eq!(err.field, "tls.clientAuth");
        assert!(err.to_string().starts_with("tls.clientAuth required needs tls.clientCaSecret"), "{err}");
        mtls.tls.as_mut().unwrap().client_ca_secret = Some("device-ca".into());
        validate(&mtls).unwrap();
        spec.service.type_ = "Ingress".into();
        let err = validate(&spec).unwrap_err();
        assert_eq!(err.field, "service.type");
        assert!(err.to_string().starts_with("service.type \"Ingress\""), "{err}");
    }

    #[test]
    fn a_store_shared_by_several_replicas_needs_a_read_write_many_claim() {
        let store = GatewayStore { claim_name: "files".into(), port: 8081, ..Default::default() };
        let mut spec = OtaGatewaySpec { replicas: 2, ..Default::default() };
        let claim = |requested: &[&str], bound: Option<&[&str]>| {
            let mut c = PersistentVolumeClaim::default();
            c.spec.get_or_insert_default().access_modes = Some(requested.iter().map(|m| m.to_string()).collect());
            if let Some(bound) = bound {
                c.status.get_or_insert_default().access_modes = Some(bound.iter().map(|m| m.to_string()).collect());
            }
            c
        };
        let missing = store_claim(&spec, &store, None).unwrap();
        assert_eq!(missing.reason, "ClaimNotFound");
        assert!(missing.message.starts_with("spec.store.claimName"), "{}", missing.message);
        let rwo = store_claim(&spec, &store, Some(&claim(&["ReadWriteOnce"], None))).unwrap();
        assert_eq!(rwo.reason, "StoreNotShared");
        assert!(rwo.message.starts_with("spec.store:") && rwo.message.contains("ReadWriteOnce"), "{}", rwo.message);
        assert!(store_claim(&spec, &store, Some(&claim(&["ReadWriteMany"], None))).is_none());
        // The bound volume's modes win over the request.
        let bound = claim(&["ReadWriteMany"], Some(&["ReadWriteOnce"]));
        assert_eq!(store_claim(&spec, &store, Some(&bound)).unwrap().reason, "StoreNotShared");
        spec.replicas = 1;
        assert!(store_claim(&spec, &store, Some(&claim(&["ReadWriteOnce"], None))).is_none());
        assert_eq!(store_claim(&spec, &store, None).unwrap().reason, "ClaimNotFound", "missing with one replica too");
    }

    #[test]
    fn the_applied_hash_follows_the_content() {
        let gw = crate::fixtures::gateway();
        let a = applied_hash(&render::service(&gw));
        assert_eq!(a, applied_hash(&render::service(&gw)));
        let mut other = gw.clone();
        other.spec.service.port = 80;
        assert_ne!(a, applied_hash(&render::service(&other)));
        assert_eq!(a.len(), 16);
    }

    #[tokio::test]
    async fn failed_reconciles_back_off_growing() {
        let client = crate::fixtures::api(|_, _, _| (500, crate::fixtures::refusal(500)));
        let ctx = Arc::new(crate::fixtures::context(
            client,
            Arc::new(crate::resolve::OciResolver::new(&crate::clients::Clients::new())),
        ));
        let gateway = Arc::new(crate::fixtures::gateway());
        let mut retries = Vec::new();
        for _ in 0..4 {
            let error = reconcile(gateway.clone(), ctx.clone()).await.unwrap_err();
            retries.push(error_policy(gateway.clone(), &error, ctx.clone()));
        }
        let expected: Vec<Action> = [1, 2, 4, 8].map(|s| Action::requeue(Duration::from_secs(s))).into();
        assert_eq!(retries, expected);
    }
}
