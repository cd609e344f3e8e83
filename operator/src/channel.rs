//! FirmwareChannel controller: read → validate → resolve (registry metadata) → status.
//! The OtaGateway controller renders the resolved digests into gateway configuration.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use oci_client::secrets::RegistryAuth;
use tracing::{info, instrument, warn};
use updraft_core::version::{parse_duration, parse_range};
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::{FirmwareChannel, FirmwareChannelSpec, FirmwareChannelStatus, OtaGateway, ResolvedVersion};

use crate::context::{apply_status, backoff, Context, Failure};
use crate::error::{Error, Result};
use crate::render::{self, attach};
use crate::resolve::{validate_source, Resolution, ResolveRequest};

pub const CONTROLLER: &str = "firmwarechannel";
/// Condition that reports whether the last registry check reached the registry.
pub const REGISTRY_REACHABLE: &str = "RegistryReachable";

#[instrument(skip_all, fields(namespace = channel.namespace().unwrap_or_default(), name = channel.name_any()))]
pub async fn reconcile(channel: Arc<FirmwareChannel>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let api: Api<FirmwareChannel> = Api::namespaced(ctx.client.clone(), &channel.namespace().unwrap_or_default());
    let old = channel.status.clone().unwrap_or_default();
    let generation = channel.metadata.generation;
    let mut status = FirmwareChannelStatus { observed_generation: generation, ..old.clone() };

    let interval = match validate(&channel.spec) {
        Ok(interval) => interval,
        Err(message) => return stall(&api, &channel, &ctx, status, message).await,
    };
    set_condition(
        &mut status.conditions,
        NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"),
        generation,
    );

    let outcome = match ctx.check_wait(&channel) {
        _ if channel.spec.suspend => None,
        Some(_) => None,
        None => Some(check_registry(&channel, &ctx, interval).await),
    };
    let error = match outcome {
        Some(Ok(resolution)) => {
            record_resolution(&channel, &ctx, &mut status, resolution).await;
            None
        }
        Some(Err(e)) => Some(e),
        None => None,
    };
    // This pass's error, or the last check's when this pass did not ask the registry.
    let failure = ctx.last_failure(&channel);
    set_registry_condition(&mut status, failure.as_ref(), generation);
    set_ready(&channel, &ctx, &mut status, failure.as_ref());

    if status != old {
        apply_status(&api, &channel, &status).await?;
    }
    if let Some(latest) = &status.latest {
        let old_version = old.latest.as_ref().map(|l| l.version.as_str());
        ctx.metrics.resolved(
            &channel.namespace().unwrap_or_default(),
            &channel.name_any(),
            old_version,
            &latest.version,
        );
    }
    match error {
        Some(e) => {
            ctx.metrics.error(CONTROLLER, &e);
            warn!(error = %e, "registry check failed");
            Err(e)
        }
        None if channel.spec.suspend => Ok(Action::await_change()),
        None => Ok(Action::requeue(ctx.check_wait(&channel).unwrap_or(interval))),
    }
}

/// Retry policy: a bad spec waits for a change; anything else backs off, growing to 5 min.
pub fn error_policy(channel: Arc<FirmwareChannel>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_permanent() {
        return Action::await_change();
    }
    // The failed check recorded when the next one is due (backoff, capped at the interval).
    Action::requeue(ctx.check_wait(&channel).unwrap_or_else(|| backoff(1)))
}

/// Checks what the schema cannot; returns the registry check interval.
pub fn validate(spec: &FirmwareChannelSpec) -> Result<Duration, String> {
    validate_source(&spec.source)?;
    parse_range(&spec.version.range).map_err(|e| format!("version.range: {e}"))?;
    let interval = parse_duration(&spec.interval).map_err(|e| format!("interval: {e}"))?;
    if let Some(pin) = spec.version.pin.as_deref() {
        if pin.starts_with("sha256:") && !updraft_core::config::is_digest(pin) {
            return Err(format!("version.pin {pin:?} is not a digest (sha256:<64 lowercase hex>)"));
        }
        if pin.is_empty() || pin.contains(['/', ':', ' ']) && !pin.starts_with("sha256:") {
            return Err(format!("version.pin {pin:?} is neither a tag nor a digest"));
        }
    }
    if spec.artifact.unpack == updraft_crds::channel::Unpack::Tar && spec.artifact.path.is_none() {
        return Err("artifact.unpack is tar but artifact.path (the binary inside the archive) is not set".into());
    }
    if let Some(platform) = &spec.artifact.platform {
        if !(2..=3).contains(&platform.split('/').count()) {
            return Err(format!("artifact.platform {platform:?} must be os/arch or os/arch/variant"));
        }
    }
    if let Some(device) = &spec.device {
        if device.is_empty() || !device.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("device {device:?} may only hold letters, digits, '-', '_' and '.'"));
        }
    }
    Ok(interval)
}

/// Reports a bad spec as `Stalled` and waits for the spec to change.
async fn stall(
    api: &Api<FirmwareChannel>,
    channel: &FirmwareChannel,
    ctx: &Context,
    mut status: FirmwareChannelStatus,
    message: String,
) -> Result<Action> {
    let generation = channel.metadata.generation;
    let was_stalled = conditions::is_true(&status.conditions, STALLED);
    let conditions = &mut status.conditions;
    set_condition(conditions, NewCondition::new(STALLED, true, "InvalidSpec", message.clone()), generation);
    set_condition(conditions, NewCondition::new(READY, false, "InvalidSpec", message.clone()), generation);
    set_condition(
        conditions,
        NewCondition::new(RECONCILING, false, "InvalidSpec", "waiting for the spec to change"),
        generation,
    );
    if Some(&status) != channel.status.as_ref() {
        apply_status(api, channel, &status).await?;
    }
    if !was_stalled {
        ctx.event(channel, true, "InvalidSpec", message.clone()).await;
    }
    ctx.forget(channel);
    ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(message));
    Ok(Action::await_change())
}

/// Asks the registry which artifact the channel should serve now.
async fn check_registry(channel: &FirmwareChannel, ctx: &Context, interval: Duration) -> Result<Resolution> {
    let result = resolve(channel, ctx).await;
    ctx.checked(channel, result.as_ref().err().map(Failure::from), interval);
    ctx.metrics.registry_check(result.is_ok());
    result
}

async fn resolve(channel: &FirmwareChannel, ctx: &Context) -> Result<Resolution> {
    let spec = &channel.spec;
    let auth = registry_auth(channel, ctx).await?;
    let artifact = render::channel_artifact(&spec.artifact);
    let known = channel.status.as_ref().and_then(|s| s.latest.as_ref());
    let request = ResolveRequest { source: &spec.source, auth, policy: &spec.version, artifact, known };
    ctx.resolver.resolve(request).await
}

/// Credentials from the channel's dockerconfigjson Secret; anonymous without one.
async fn registry_auth(channel: &FirmwareChannel, ctx: &Context) -> Result<RegistryAuth> {
    let Some(name) = &channel.spec.source.credentials_secret else { return Ok(RegistryAuth::Anonymous) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &channel.namespace().unwrap_or_default());
    let secret =
        secrets.get_opt(name).await?.ok_or_else(|| Error::Credentials(format!("Secret {name:?} not found")))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| Error::Credentials(format!("Secret {name:?} has no .dockerconfigjson key")))?;
    let text =
        std::str::from_utf8(&bytes.0).map_err(|_| Error::Credentials(format!("Secret {name:?} is not UTF-8")))?;
    updraft_core::oci::auth_from_docker_config(text, &channel.spec.source.registry)
        .map_err(|e| Error::Credentials(format!("Secret {name:?}: {e}")))
}

/// A new digest moves `latest` to `previous` and emits an event.
async fn record_resolution(
    channel: &FirmwareChannel,
    ctx: &Context,
    status: &mut FirmwareChannelStatus,
    r: Resolution,
) {
    if status.latest.as_ref().is_some_and(|l| l.digest == r.digest && l.tag == r.tag) {
        return;
    }
    let note = match &status.latest {
        Some(old) => format!("{} ({}) replaces {} ({})", r.version, r.digest, old.version, old.digest),
        None => format!("resolved {} ({})", r.version, r.digest),
    };
    info!(version = %r.version, digest = %r.digest, "new version");
    let new = ResolvedVersion {
        version: r.version,
        tag: r.tag,
        digest: r.digest,
        size: r.size,
        resolved_at: conditions::now(),
    };
    status.previous = status.latest.replace(new);
    ctx.event(channel, false, "NewVersion", note).await;
}

fn set_registry_condition(status: &mut FirmwareChannelStatus, failure: Option<&Failure>, generation: Option<i64>) {
    let condition = match failure {
        Some(f) if f.unreachable => NewCondition::new(REGISTRY_REACHABLE, false, f.reason, f.message.clone()),
        _ if conditions::find(&status.conditions, REGISTRY_REACHABLE).is_some() || status.latest.is_some() => {
            NewCondition::new(REGISTRY_REACHABLE, true, "Reachable", "the last registry check succeeded")
        }
        _ => return,
    };
    set_condition(&mut status.conditions, condition, generation);
}

/// `Ready` and `Reconciling` from what is known now: a resolved version, the gateway,
/// device-id conflicts and the last error.
fn set_ready(channel: &FirmwareChannel, ctx: &Context, status: &mut FirmwareChannelStatus, failure: Option<&Failure>) {
    let generation = channel.metadata.generation;
    let ns = channel.namespace().unwrap_or_default();
    let gateway_name = &channel.spec.gateway_ref;
    let gateway = ctx.gateways.get(&ObjectRef::<OtaGateway>::new(gateway_name).within(&ns));
    status.url =
        gateway.as_ref().map(|gw| format!("{}/api/v1/channels/{}", render::service_url(gw), channel.name_any()));
    let siblings = ctx.channels.state();
    let conflict =
        attach(gateway_name, siblings.iter().map(|c| c.as_ref()).filter(|c| c.namespace() == channel.namespace()))
            .conflicts
            .remove(&channel.name_any());

    let (ready, reason, message) = match (&status.latest, failure, gateway, conflict) {
        (None, Some(f), _, _) => (false, f.reason, f.message.clone()),
        (None, None, _, _) if channel.spec.suspend => {
            (false, "Suspended", "suspended before a version was resolved".into())
        }
        (None, None, _, _) => (false, "Resolving", "waiting for the first registry check".into()),
        (Some(_), _, None, _) => (false, "GatewayNotFound", missing_gateway(gateway_name, &ns)),
        (Some(_), _, _, Some(conflict)) => (false, "DeviceConflict", conflict),
        (Some(latest), _, Some(_), None) => {
            let mut message =
                format!("serving {} ({}) through gateway {gateway_name:?}", latest.version, latest.digest);
            if let Some(f) = failure {
                message.push_str(&format!("; last registry check failed: {}", f.message));
            }
            (true, "Resolved", message)
        }
    };
    set_condition(&mut status.conditions, NewCondition::new(READY, ready, reason, message), generation);
    let retrying = status.latest.is_none() && failure.is_some();
    let reconciling = if retrying {
        NewCondition::new(RECONCILING, true, "RetryingAfterError", "retrying the registry with growing backoff")
    } else {
        NewCondition::new(RECONCILING, false, "Idle", "nothing to do until the next registry check")
    };
    set_condition(&mut status.conditions, reconciling, generation);
}

fn missing_gateway(name: &str, ns: &str) -> String {
    format!(
        "OtaGateway {name:?} not found in namespace {ns:?}; create it with \
         `kubectl apply -n {ns} -f -` of `{{apiVersion: updraft.dev/v1alpha1, kind: OtaGateway, metadata: {{name: {name}}}, spec: {{}}}}`, \
         or set spec.gatewayRef to an existing gateway"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(patch: serde_json::Value) -> FirmwareChannelSpec {
        let mut base = serde_json::json!({"source": {"registry": "127.0.0.1:15000", "repository": "fw/esp32"}});
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn valid_specs_give_their_interval() {
        assert_eq!(validate(&spec(serde_json::json!({}))).unwrap(), Duration::from_secs(300));
        assert_eq!(validate(&spec(serde_json::json!({"interval": "30s"}))).unwrap(), Duration::from_secs(30));
        validate(&spec(serde_json::json!({"version": {"pin": "v1.2.3"}}))).unwrap();
    }

    #[test]
    fn invalid_specs_say_which_field() {
        let err = |p| validate(&spec(p)).unwrap_err();
        assert!(err(serde_json::json!({"version": {"range": ">=banana"}})).starts_with("version.range"));
        assert!(err(serde_json::json!({"interval": "often"})).starts_with("interval"));
        assert!(err(serde_json::json!({"source": {"registry": "https://r", "repository": "x"}}))
            .contains("source.registry"));
        assert!(
            err(serde_json::json!({"source": {"registry": "r", "repository": "UPPER"}})).contains("source.repository")
        );
        assert!(err(serde_json::json!({"version": {"pin": "sha256:abc"}})).contains("not a digest"));
        assert!(err(serde_json::json!({"artifact": {"unpack": "tar"}})).contains("artifact.path"));
        assert!(err(serde_json::json!({"device": "esp 32"})).contains("device"));
    }
}
