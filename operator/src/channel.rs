//! FirmwareChannel controller: read → validate → resolve (registry metadata, on the
//! channel's schedule; under `spec.verify`, the release's signature) → rollout (the
//! step `rollout::assess` decides from the gateway's device census) → deltas (with
//! `spec.delta`, after a check: the patches to build and those built, see `delta`) → status. The
//! OtaGateway controller renders the resolved digests, and the rollout's share, into
//! gateway configuration. A release refused because its signature did not verify, and
//! a rollout that paused, are announced to the gateway's webhooks (`notify`).

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, instrument, warn};
use updraft_core::cosign::Verifier;
use updraft_core::version::{describe_skipped, parse_range, Skipped};
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, STALLED};
use updraft_crds::{FirmwareChannel, FirmwareChannelSpec, FirmwareChannelStatus, ResolvedVersion};

use crate::attach::{self, gateway_of};
use crate::checks;
use crate::context::Context;
use crate::delta;
use crate::error::{Error, Result, SpecError};
use crate::notify::{self, Paused, Refused};
use crate::render;
use crate::resolve::{DeltaRequest, Resolution, ResolveRequest};
use crate::rollout::{self, Happened, Steps};
use crate::schedule::Failure;
use crate::secrets;
use crate::status::{self, VERIFIED};

pub(crate) const CONTROLLER: &str = "firmwarechannel";
/// Condition that reports whether the last registry check reached the registry.
const REGISTRY_REACHABLE: &str = "RegistryReachable";
/// Condition that reports, with `spec.rollout.steps`, whether the rollout stopped at its
/// step (True, with the figures) or goes on (False: `Progressing` or `Complete`).
const ROLLOUT_PAUSED: &str = "RolloutPaused";
/// The longest a rolling channel waits before it looks at its census again.
const ROLLOUT_LOOK: Duration = Duration::from_secs(60);

#[instrument(skip_all, fields(namespace = channel.namespace().unwrap_or_default(), name = channel.name_any()))]
pub(crate) async fn reconcile(channel: Arc<FirmwareChannel>, ctx: Arc<Context>) -> Result<Action> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let schedule = &ctx.schedules.channels;
    let old = channel.status.clone().unwrap_or_default();
    let generation = channel.metadata.generation;
    let mut status = FirmwareChannelStatus { observed_generation: generation, ..old.clone() };

    let (interval, steps) = match validate(&channel.spec) {
        Ok(valid) => valid,
        Err(e) => {
            status::invalid_spec(&ctx, channel.as_ref(), status, e, CONTROLLER).await?;
            schedule.forget(channel.as_ref());
            return Ok(Action::await_change());
        }
    };
    set_condition(
        &mut status.conditions,
        NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"),
        generation,
    );

    // Ask the registry when due; otherwise (a watch event, or the retry of a status write
    // that failed) report what the last check found, without asking again.
    let skipped_before = skipped(schedule.last_result(&channel).as_ref(), schedule.last_failure(&channel).as_ref());
    let asked = schedule.due_in(&channel).is_none() && !channel.spec.suspend;
    let error = if asked { check_registry(&channel, &ctx, interval).await.err() } else { None };
    let (result, failure) = (schedule.last_result(&channel), schedule.last_failure(&channel));
    announce_skipped(&channel, &ctx, &skipped_before, &skipped(result.as_ref(), failure.as_ref()));
    let new_version = result.clone().and_then(|r| record_resolution(&mut status, r));
    raise_high_water_mark(&mut status);
    set_registry_condition(&mut status, failure.as_ref(), generation);
    let verification = set_verified(&channel.spec, &mut status, result.as_ref(), failure.as_ref(), generation);
    set_ready(&channel, &ctx, &mut status, failure.as_ref());
    let now = conditions::now();
    let happened = set_rollout(&channel, &ctx, &mut status, steps.as_ref(), now.clone());
    let built = set_deltas(&channel, &ctx, &mut status, asked && error.is_none()).await;

    status::write(&ctx.client, channel.as_ref(), &status).await?;
    schedule.succeeded(&channel);
    if let Some((verified, note)) = verification {
        ctx.event(
            channel.as_ref(),
            if verified { EventType::Normal } else { EventType::Warning },
            if verified { "Verified" } else { "Unverified" },
            note,
        )
        .await;
    }
    if let Some(note) = new_version {
        ctx.event(channel.as_ref(), EventType::Normal, "NewVersion", note).await;
    }
    for note in built {
        ctx.event(channel.as_ref(), EventType::Normal, "DeltaBuilt", note).await;
    }
    announce_rollout(&channel, &ctx, &status, steps.as_ref(), &happened).await;
    if let Some(latest) = &status.latest {
        let old_version = old.latest.as_ref().map(|l| l.version.as_str());
        ctx.metrics.resolved(
            &channel.namespace().unwrap_or_default(),
            &channel.name_any(),
            old_version,
            &latest.version,
        );
    }
    // A failed check is reported in status and retried on the schedule's backoff (a spec
    // the registry shows to be unworkable waits for a change); it is not a failed reconcile.
    // A rolling channel looks at its census again when its step's dwell or timeout
    // ends, and at least every minute after the dwell (figures can pass at any time).
    let look = rollout::next_look(status.rollout.as_ref(), steps.as_ref(), now.0).map(|d| d.min(ROLLOUT_LOOK));
    match (error, look) {
        (Some(e), None) if e.is_permanent() => Ok(Action::await_change()),
        (None, None) if channel.spec.suspend => Ok(Action::await_change()),
        (Some(e), Some(look)) if e.is_permanent() => Ok(Action::requeue(look)),
        (None, Some(look)) if channel.spec.suspend => Ok(Action::requeue(look)),
        (_, look) => {
            let check = schedule.due_in(&channel).unwrap_or(interval);
            Ok(Action::requeue(look.map_or(check, |l| l.min(check))))
        }
    }
}

/// Retry policy for a failed reconcile (the API server refused a read or the status
/// write; failed registry checks are not errors, see [`reconcile`]): soon, growing.
pub(crate) fn error_policy(channel: Arc<FirmwareChannel>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    if error.is_permanent() {
        return Action::await_change();
    }
    warn!(%error, "channel reconcile failed");
    Action::requeue(ctx.schedules.channels.failed(&channel))
}

/// Checks what the schema cannot; returns the registry check interval and the rollout's
/// steps (none with a fixed share).
fn validate(spec: &FirmwareChannelSpec) -> Result<(Duration, Option<Steps>), SpecError> {
    checks::oci_source(&spec.source, "source")?;
    parse_range(&spec.version.range).map_err(|e| SpecError::new("version.range", format!("version.range: {e}")))?;
    let interval = checks::duration("interval", &spec.interval)?;
    if let Some(pin) = spec.version.pin.as_deref() {
        if pin.starts_with("sha256:") && !updraft_core::config::is_digest(pin) {
            let message = format!("version.pin {pin:?} is not a digest (sha256:<64 lowercase hex>)");
            return Err(SpecError::new("version.pin", message));
        }
        if pin.is_empty() || pin.contains(['/', ':', ' ']) && !pin.starts_with("sha256:") {
            return Err(SpecError::new("version.pin", format!("version.pin {pin:?} is neither a tag nor a digest")));
        }
    }
    if spec.artifact.unpack == updraft_crds::channel::Unpack::Tar && spec.artifact.path.is_none() {
        let message = "artifact.unpack is tar but artifact.path (the binary inside the archive) is not set";
        return Err(SpecError::new("artifact.path", message));
    }
    if let Some(platform) = &spec.artifact.platform {
        if !(2..=3).contains(&platform.split('/').count()) {
            let message = format!("artifact.platform {platform:?} must be os/arch or os/arch/variant");
            return Err(SpecError::new("artifact.platform", message));
        }
    }
    if spec.verify.as_ref().is_some_and(|v| v.public_key_secret.name.is_empty()) {
        let message = "verify.publicKeySecret.name is empty";
        return Err(SpecError::new("verify.publicKeySecret.name", message));
    }
    if let Some(device) = &spec.device {
        if device.is_empty() || !device.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            let message = format!("device {device:?} may only hold letters, digits, '-', '_' and '.'");
            return Err(SpecError::new("device", message));
        }
    }
    let steps = rollout::steps(&spec.rollout)?;
    delta::policy(spec.delta.as_ref())?;
    Ok((interval, steps))
}

/// `status.deltas` with `spec.delta` (cleared without): after a registry check that
/// succeeded, one entry per base chosen from the census ([`delta::choose_bases`]) with
/// what the registry holds for it; between checks, what the last check found. A lookup
/// that fails keeps what was found for the same target, and is tried at the next check.
/// Returns a note for each patch found that was not before (its `DeltaBuilt` event).
async fn set_deltas(
    channel: &FirmwareChannel,
    ctx: &Context,
    status: &mut FirmwareChannelStatus,
    checked: bool,
) -> Vec<String> {
    let policy = delta::policy(channel.spec.delta.as_ref()).ok().flatten();
    let (Some(policy), Some(latest)) = (policy, status.latest.clone()) else {
        status.deltas.clear();
        return Vec::new();
    };
    if !checked {
        return Vec::new();
    }
    let previous = status.previous.as_ref().map(|p| p.version.as_str());
    let chosen = delta::choose_bases(status.devices.as_ref(), &latest.version, previous, policy);
    let bases = delta::known_bases(chosen, status);
    let spec = &channel.spec;
    let found = match secrets::registry_auth(ctx, &channel.namespace().unwrap_or_default(), &spec.source).await {
        Ok(auth) => {
            let request = DeltaRequest {
                source: &spec.source,
                auth,
                allow_v_prefix: spec.version.allow_v_prefix,
                bases,
                target: &latest,
                known: &status.deltas,
            };
            ctx.resolver.deltas(request).await
        }
        Err(e) => Err(e),
    };
    match found {
        Ok(deltas) => {
            let notes = delta::newly_built(&status.deltas, &deltas);
            status.deltas = deltas;
            notes
        }
        Err(e) => {
            warn!(error = %e, "delta patches not looked up; trying again at the next check");
            status.deltas.retain(|d| d.to_digest == latest.digest);
            Vec::new()
        }
    }
}

/// `status.devices` and `status.rollout` from the gateway's census, and the
/// `RolloutPaused` condition (with steps only); returns what happened to the rollout
/// (its event and webhook are published once the status is written).
fn set_rollout(
    channel: &FirmwareChannel,
    ctx: &Context,
    status: &mut FirmwareChannelStatus,
    steps: Option<&Steps>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Happened {
    let gateway = (channel.namespace().unwrap_or_default(), channel.spec.gateway_ref.clone());
    let name = channel.name_any();
    let generation = channel.metadata.generation;
    status.devices = ctx.census.devices(&gateway, &name).or(status.devices.take());
    let latest = status.latest.as_ref().map(|l| l.version.as_str());
    let old = status.rollout.as_ref();
    let figures = rollout::figures_since(old, latest)
        .and_then(|since| ctx.census.adoption(&gateway, &name, latest.unwrap_or_default(), since));
    let seen = rollout::Seen {
        steps,
        percentage: channel.spec.rollout.percentage,
        old,
        latest,
        previous: status.previous.as_ref().map(|p| p.version.as_str()),
        generation,
        now: now.0,
        figures,
    };
    let (rollout, happened) = rollout::assess(&seen);
    status.rollout = rollout;
    let condition = match (steps, &status.rollout) {
        (Some(steps), Some(r)) if r.paused => {
            let reason = rollout::pause_reason(r, steps);
            Some(NewCondition::new(
                ROLLOUT_PAUSED,
                true,
                reason.as_str(),
                rollout::paused_message(r, reason, steps, &gateway.1),
            ))
        }
        (Some(steps), Some(r)) => {
            let reason = if r.complete { "Complete" } else { "Progressing" };
            Some(NewCondition::new(ROLLOUT_PAUSED, false, reason, rollout::progress_message(r, steps)))
        }
        _ => None,
    };
    match condition {
        Some(c) => {
            set_condition(&mut status.conditions, c, generation);
        }
        None => status.conditions.retain(|c| c.type_ != ROLLOUT_PAUSED),
    }
    happened
}

/// The rollout's metrics, and for a transition its event (and, for a pause, the
/// `rollout.paused` webhook to the gateway's receivers).
async fn announce_rollout(
    channel: &FirmwareChannel,
    ctx: &Arc<Context>,
    status: &FirmwareChannelStatus,
    steps: Option<&Steps>,
    happened: &Happened,
) {
    let Some(r) = &status.rollout else { return };
    let namespace = channel.namespace().unwrap_or_default();
    ctx.metrics.rollout(&namespace, &channel.name_any(), r.percentage, r.step.unwrap_or(0), r.paused);
    let Some(steps) = steps.filter(|_| happened.is_transition()) else { return };
    let note = rollout::describe(happened, r, steps, &channel.spec.gateway_ref);
    let (type_, reason) = match happened {
        Happened::Paused { .. } => (EventType::Warning, "RolloutPaused"),
        Happened::Advanced { .. } => (EventType::Normal, "RolloutAdvanced"),
        Happened::Resumed => (EventType::Normal, "RolloutResumed"),
        Happened::Completed(_) => (EventType::Normal, "RolloutComplete"),
        _ => (EventType::Normal, "RolloutStarted"),
    };
    info!(version = %r.version, step = r.step, percentage = r.percentage, reason, "{note}");
    if let Happened::Paused { reason, figures } = happened {
        let latest = status.latest.as_ref();
        let paused = Paused {
            namespace,
            channel: channel.name_any(),
            device: attach::device_id(channel),
            version: r.version.clone(),
            tag: latest.map(|l| l.tag.clone()).unwrap_or_default(),
            digest: latest.map(|l| l.digest.clone()).unwrap_or_default(),
            step: r.step.unwrap_or(0),
            percentage: r.percentage,
            reason: reason.as_str(),
            message: note.clone(),
            downloaded: figures.map(|f| f.downloaded),
            running: figures.map(|f| f.running),
            threshold: steps.threshold,
            min_devices: steps.min_devices,
            since: r.step_started.as_ref().map_or(0, |t| t.0.as_second()),
        };
        notify::rollout_paused(ctx, ctx.gateways.get(&gateway_of(channel)), paused);
    }
    ctx.event(channel, type_, reason, note).await;
}

/// Asks the registry which artifact the channel should serve now, and records the
/// outcome in the channel's schedule.
async fn check_registry(channel: &FirmwareChannel, ctx: &Context, interval: Duration) -> Result<Resolution> {
    let result = resolve(channel, ctx).await;
    let outcome = result.as_ref().cloned().map_err(Failure::from);
    ctx.schedules.channels.checked(channel, outcome, interval);
    ctx.metrics.registry_check(result.is_ok());
    if let Err(e) = &result {
        ctx.metrics.error(CONTROLLER, e);
        warn!(error = %e, "registry check failed");
    }
    result
}

async fn resolve(channel: &FirmwareChannel, ctx: &Context) -> Result<Resolution> {
    let spec = &channel.spec;
    let auth = secrets::registry_auth(ctx, &channel.namespace().unwrap_or_default(), &spec.source).await?;
    let artifact = render::channel_artifact(&spec.artifact);
    let known = channel.status.as_ref().and_then(|s| s.latest.as_ref());
    let verifier = verifier(channel, ctx).await?;
    let verifier = verifier.as_ref();
    let request = ResolveRequest { source: &spec.source, auth, policy: &spec.version, artifact, known, verifier };
    ctx.resolver.resolve(request).await
}

/// Under `spec.verify`, a verifier of the public keys in the named Secret: its `key`, or
/// every `*.pub` key.
async fn verifier(channel: &FirmwareChannel, ctx: &Context) -> Result<Option<Verifier>> {
    let Some(verify) = &channel.spec.verify else { return Ok(None) };
    let name = &verify.public_key_secret.name;
    let secret = secrets::get(ctx, &channel.namespace().unwrap_or_default(), name)
        .await?
        .ok_or_else(|| Error::PublicKeys(format!("Secret {name:?} not found")))?;
    secrets::verifier(&secret, verify, None).map(Some)
}

/// What the last check skipped (its signature did not verify), newest first: beside
/// the release it resolved, or every release it tried when none verified.
fn skipped(result: Option<&Resolution>, failure: Option<&Failure>) -> Vec<Skipped> {
    match (result, failure) {
        (_, Some(f)) if f.unverified => f.skipped.clone(),
        (Some(r), None) => r.skipped.clone(),
        _ => Vec::new(),
    }
}

/// Each release the last check skipped that the one before did not (once per digest):
/// logged, counted, and announced to the gateway's webhooks (`release.failed`). The
/// `Verified` condition names them; its event is published when it changes.
fn announce_skipped(channel: &FirmwareChannel, ctx: &Arc<Context>, before: &[Skipped], now: &[Skipped]) {
    let known: std::collections::BTreeSet<&str> = before.iter().map(|s| s.release.digest.as_str()).collect();
    let namespace = channel.namespace().unwrap_or_default();
    for s in now.iter().filter(|s| !known.contains(s.release.digest.as_str())) {
        let release = &s.release;
        warn!(version = %release.display_version(), tag = %release.tag, digest = %release.digest, reason = s.reason, error = %s.error, "skipped a release: its signature does not verify");
        ctx.metrics.skipped_release(&namespace, &channel.name_any(), s.reason);
        let refused = Refused {
            namespace: namespace.clone(),
            channel: Some(channel.name_any()),
            device: Some(crate::attach::device_id(channel)),
            version: release.display_version(),
            tag: release.tag.clone(),
            digest: release.digest.clone(),
            reason: s.to_string(),
            ..Default::default()
        };
        notify::failed_verification(ctx, ctx.gateways.get(&gateway_of(channel)), refused);
    }
}

/// A new digest moves `latest` to `previous`; returns the note of the `NewVersion` event,
/// published once the status is written. The same resolution again changes nothing.
fn record_resolution(status: &mut FirmwareChannelStatus, r: Resolution) -> Option<String> {
    if status.latest.as_ref().is_some_and(|l| l.digest == r.digest && l.tag == r.tag) {
        return None;
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
    Some(note)
}

/// `highestServed` follows `latest` up, never down: after a pin back it still names
/// the newest version devices were served, which the gateway's check API needs to tell
/// a device to roll back from a development build it leaves alone.
fn raise_high_water_mark(status: &mut FirmwareChannelStatus) {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    let Some(latest) = status.latest.as_ref().and_then(|l| Some((parse(&l.version)?, l.version.clone()))) else {
        return;
    };
    if status.highest_served.as_deref().and_then(parse).is_none_or(|h| latest.0 > h) {
        status.highest_served = Some(latest.1);
    }
}

/// `Verified` under `spec.verify`, from the last check: True naming the key and where
/// the signature was; False naming the newer releases skipped because their signatures
/// do not verify (beside the verified one served), or every release refused when none
/// verifies; left as it is when the check failed for another reason. Without `spec.verify` there is no such condition.
/// Returns the event to publish (verified or not, and its note) when the condition changed.
fn set_verified(
    spec: &FirmwareChannelSpec,
    status: &mut FirmwareChannelStatus,
    result: Option<&Resolution>,
    failure: Option<&Failure>,
    generation: Option<i64>,
) -> Option<(bool, String)> {
    if spec.verify.is_none() {
        status.conditions.retain(|c| c.type_ != VERIFIED);
        return None;
    }
    let (verified, reason, message) = match (failure, result.and_then(|r| r.verified.as_ref().map(|v| (r, v)))) {
        (Some(f), _) if f.unverified => {
            let serving = status.latest.as_ref().map(|l| format!("; still serving {} ({})", l.version, l.digest));
            (false, f.reason, format!("{}{}", f.message, serving.unwrap_or_default()))
        }
        (None, Some((r, v))) => {
            let (release, key, scheme) = (format!("{} ({})", r.version, r.digest), &v.key, v.scheme);
            match r.skipped.first() {
                None => (true, "Verified", format!("{release} is signed: key {key} verifies its {scheme}")),
                Some(newest) => {
                    let skipped = describe_skipped(&r.skipped);
                    (false, newest.reason, format!("{skipped}; serving {release}, its {scheme} verified by key {key}"))
                }
            }
        }
        _ => return None,
    };
    let changed = status::set_verified(&mut status.conditions, verified, reason, &message, generation);
    changed.then_some((verified, message))
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
    let gateway_ref = gateway_of(channel);
    let gateway = ctx.gateways.get(&gateway_ref);
    status.url =
        gateway.as_ref().map(|gw| format!("{}/api/v1/channels/{}", render::service_url(gw), channel.name_any()));
    let conflict = attach::conflict(&ctx.channels, channel);
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
    status::set_reconciling(
        &mut status.conditions,
        retrying,
        "nothing to do until the next registry check",
        generation,
    );
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
    use crate::fixtures::{DIGEST_A, DIGEST_B};

    fn spec(patch: serde_json::Value) -> FirmwareChannelSpec {
        let mut base = serde_json::json!({"source": {"registry": "127.0.0.1:15000", "repository": "fw/esp32"}});
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn valid_specs_give_their_interval() {
        assert_eq!(validate(&spec(serde_json::json!({}))).unwrap(), (Duration::from_secs(300), None));
        assert_eq!(validate(&spec(serde_json::json!({"interval": "30s"}))).unwrap().0, Duration::from_secs(30));
        validate(&spec(serde_json::json!({"version": {"pin": "v1.2.3"}}))).unwrap();
    }

    #[test]
    fn invalid_specs_say_which_field() {
        let err = |p| validate(&spec(p)).unwrap_err().to_string();
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

    #[test]
    fn invalid_specs_name_the_field_at_fault() {
        let field = |p| validate(&spec(p)).unwrap_err().field;
        assert_eq!(field(serde_json::json!({"version": {"range": ">=banana"}})), "version.range");
        assert_eq!(field(serde_json::json!({"version": {"pin": "a/b"}})), "version.pin");
        assert_eq!(field(serde_json::json!({"source": {"registry": "r", "repository": "UPPER"}})), "source.repository");
        assert_eq!(field(serde_json::json!({"artifact": {"platform": "linux"}})), "artifact.platform");
        assert_eq!(field(serde_json::json!({"rollout": {"steps": [5, 50]}})), "rollout.steps");
        assert_eq!(field(serde_json::json!({"delta": {"minShare": 101}})), "delta.minShare");
        assert_eq!(field(serde_json::json!({"delta": {"maxDeltas": 0}})), "delta.maxDeltas");
        assert_eq!(field(serde_json::json!({"delta": {"maxDeltas": 17}})), "delta.maxDeltas");
        validate(&spec(serde_json::json!({"delta": {}}))).unwrap();
        validate(&spec(serde_json::json!({"delta": {"minShare": 0, "maxDeltas": 16}}))).unwrap();
        assert_eq!(field(serde_json::json!({"rollout": {"steps": [100], "percentage": 5}})), "rollout.steps");
        assert_eq!(
            field(serde_json::json!({"rollout": {"steps": [100], "dwell": "1h", "timeout": "5m"}})),
            "rollout.timeout"
        );
        let (_, steps) =
            validate(&spec(serde_json::json!({"rollout": {"steps": [5, 100], "dwell": "5s", "timeout": "30s"}})))
                .unwrap();
        assert_eq!(steps.unwrap().shares, [5, 100]);
    }

    #[test]
    fn the_high_water_mark_rises_and_survives_a_pin_back() {
        let mut status = FirmwareChannelStatus::default();
        raise_high_water_mark(&mut status);
        assert_eq!(status.highest_served, None);
        let version = |v: &str| ResolvedVersion {
            version: v.into(),
            tag: v.into(),
            digest: DIGEST_A.into(),
            size: None,
            resolved_at: conditions::now(),
        };
        for (latest, highest) in [("1.0.0", "1.0.0"), ("1.1.0", "1.1.0"), ("1.0.0", "1.1.0"), ("1.2.0", "1.2.0")] {
            status.latest = Some(version(latest));
            raise_high_water_mark(&mut status);
            assert_eq!(status.highest_served.as_deref(), Some(highest), "after {latest}");
        }
        status.latest = Some(version("nightly"));
        raise_high_water_mark(&mut status);
        assert_eq!(status.highest_served.as_deref(), Some("1.2.0"), "a version that is not semver changes nothing");
    }

    #[test]
    fn a_resolution_moves_latest_to_previous_once() {
        let r = |version: &str, digest: &str| Resolution {
            version: version.into(),
            tag: version.into(),
            digest: digest.into(),
            size: Some(1),
            verified: None,
            skipped: Vec::new(),
        };
        let mut status = FirmwareChannelStatus::default();
        let note = record_resolution(&mut status, r("1.0.0", DIGEST_A)).unwrap();
        assert!(note.starts_with("resolved 1.0.0"), "{note}");
        // The same result again (a pass that did not ask the registry) changes nothing.
        let before = status.clone();
        assert_eq!(record_resolution(&mut status, r("1.0.0", DIGEST_A)), None);
        assert_eq!(status, before);
        let note = record_resolution(&mut status, r("1.1.0", DIGEST_B)).unwrap();
        assert!(note.contains("replaces 1.0.0"), "{note}");
        assert_eq!(status.latest.unwrap().version, "1.1.0");
        assert_eq!(status.previous.unwrap().version, "1.0.0");
    }

    #[test]
    fn verified_reports_the_last_check_and_changes_make_events() {
        use updraft_core::cosign::{Scheme, Verified};
        let verifying = spec(serde_json::json!({"verify": {"publicKeySecret": {"name": "cosign"}}}));
        let signed = Resolution {
            version: "1.0.0".into(),
            tag: "v1.0.0".into(),
            digest: DIGEST_A.into(),
            size: Some(1),
            verified: Some(Verified {
                key: "Secret cosign/cosign.pub".into(),
                scheme: Scheme::Tag,
                signature: "sha256:5".into(),
            }),
            skipped: Vec::new(),
        };
        let unsigned = Skipped {
            release: updraft_core::version::Resolved {
                version: Some("1.1.0".into()),
                tag: "v1.1.0".into(),
                digest: DIGEST_B.into(),
            },
            reason: "NoSignature",
            error: format!("no cosign signature for {DIGEST_B}"),
        };
        let refused = Failure::from(&Error::Unverified {
            reason: "NoSignature",
            message: format!("no release of r/fw verifies (its only version tried): {unsigned}"),
            skipped: vec![unsigned.clone()],
        });
        let unreachable = Failure::from(&Error::RegistryUnreachable("down".into()));
        let mut status = FirmwareChannelStatus::default();
        let verified = |s: &FirmwareChannelStatus| conditions::find(&s.conditions, VERIFIED).cloned();

        let (ok, note) = set_verified(&verifying, &mut status, Some(&signed), None, Some(1)).unwrap();
        assert!(ok);
        assert_eq!(
            note,
            format!("1.0.0 ({DIGEST_A}) is signed: key Secret cosign/cosign.pub verifies its tag signature")
        );
        assert_eq!(verified(&status).unwrap().reason, "Verified");
        // The same result again: no event.
        assert_eq!(set_verified(&verifying, &mut status, Some(&signed), None, Some(1)), None);

        record_resolution(&mut status, signed.clone());
        let (ok, note) = set_verified(&verifying, &mut status, None, Some(&refused), Some(1)).unwrap();
        assert!(!ok);
        assert!(
            note.contains("tag v1.1.0") && note.contains(DIGEST_B) && note.contains("no cosign signature"),
            "{note}"
        );
        assert!(note.ends_with(&format!("still serving 1.0.0 ({DIGEST_A})")), "{note}");
        let condition = verified(&status).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "NoSignature"));
        assert_eq!(set_verified(&verifying, &mut status, None, Some(&refused), Some(1)), None);
        // Another kind of failure says nothing about signatures: the condition stays.
        assert_eq!(set_verified(&verifying, &mut status, None, Some(&unreachable), Some(1)), None);
        assert_eq!(verified(&status).unwrap(), condition);

        // 1.0.0 verifies, newer 1.1.0 does not: 1.0.0 is what status serves, and
        // Verified=False names 1.1.0, as an ImageStream names the versions it leaves out.
        let beside = Resolution { skipped: vec![unsigned.clone()], ..signed.clone() };
        let (ok, note) = set_verified(&verifying, &mut status, Some(&beside), None, Some(1)).unwrap();
        assert!(!ok);
        assert_eq!(
            note,
            format!(
                "1.1.0 (tag v1.1.0, {DIGEST_B}) is skipped: no cosign signature for {DIGEST_B}; \
                 serving 1.0.0 ({DIGEST_A}), its tag signature verified by key Secret cosign/cosign.pub"
            )
        );
        assert_eq!(verified(&status).unwrap().reason, "NoSignature");
        assert_eq!(skipped(Some(&beside), None), std::slice::from_ref(&unsigned));
        assert_eq!(skipped(Some(&beside), Some(&refused)), std::slice::from_ref(&unsigned));
        assert_eq!(skipped(Some(&beside), Some(&unreachable)), []);

        // Without spec.verify there is no Verified condition.
        let plain = spec(serde_json::json!({}));
        assert_eq!(set_verified(&plain, &mut status, Some(&signed), None, Some(1)), None);
        assert_eq!(verified(&status), None);
    }

    #[test]
    fn verify_needs_a_secret_name() {
        let field =
            validate(&spec(serde_json::json!({"verify": {"publicKeySecret": {"name": ""}}}))).unwrap_err().field;
        assert_eq!(field, "verify.publicKeySecret.name");
        let ok = spec(
            serde_json::json!({"verify": {"provider": "cosign", "publicKeySecret": {"name": "k", "key": "a.pub"}}}),
        );
        validate(&ok).unwrap();
    }

    #[tokio::test]
    async fn the_rollout_paused_condition_follows_the_steps() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use k8s_openapi::jiff::Timestamp;
        let client = crate::fixtures::api(|_, _, body| (201, body.to_vec()));
        let ctx = crate::fixtures::context(client, Arc::new(CountingRegistry::default()));
        let mut channel = crate::fixtures::channel("esp32", None, Some(crate::fixtures::resolved("1.1.0", DIGEST_A)));
        channel.metadata.generation = Some(1);
        channel.spec.rollout = serde_json::from_value(serde_json::json!({
            "steps": [50, 100], "dwell": "5s", "timeout": "30s"
        }))
        .unwrap();
        let (_, steps) = validate(&channel.spec).unwrap();
        let mut status = channel.status.clone().unwrap();
        let at = |secs: i64| Time(Timestamp::from_second(1_800_000_000 + secs).unwrap());
        let paused = |s: &FirmwareChannelStatus| conditions::find(&s.conditions, ROLLOUT_PAUSED).cloned();

        assert_eq!(set_rollout(&channel, &ctx, &mut status, steps.as_ref(), at(0)), Happened::Started);
        let condition = paused(&status).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "Progressing"));
        assert_eq!(condition.message, "1.1.0 at step 1 (50 %) of 2 since 08:00 UTC");
        assert_eq!(status.rollout.as_ref().map(|r| r.percentage), Some(50));

        // No census for the gateway: after the timeout the rollout pauses, saying so.
        channel.status = Some(status.clone());
        let happened = set_rollout(&channel, &ctx, &mut status, steps.as_ref(), at(30));
        assert_eq!(happened, Happened::Paused { reason: rollout::PauseReason::NoFigures, figures: None });
        let condition = paused(&status).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "NoFigures"));
        assert!(condition.message.starts_with("paused at step 1 (50 %): no device census"), "{}", condition.message);
        channel.status = Some(status.clone());
        let before = status.clone();
        assert_eq!(set_rollout(&channel, &ctx, &mut status, steps.as_ref(), at(90)), Happened::StillPaused);
        assert_eq!(status, before, "a held pause writes nothing");

        // A fixed share has no such condition.
        channel.spec.rollout = Default::default();
        let (_, steps) = validate(&channel.spec).unwrap();
        assert_eq!(set_rollout(&channel, &ctx, &mut status, steps.as_ref(), at(120)), Happened::Fixed);
        assert_eq!(paused(&status), None);
        assert_eq!(status.rollout.map(|r| (r.percentage, r.step)), Some((100, None)));
    }

    /// A registry that always resolves the same artifact, counting how often it is asked.
    #[derive(Default)]
    struct CountingRegistry(std::sync::atomic::AtomicUsize);

    impl crate::resolve::Resolver for CountingRegistry {
        fn resolve<'a>(&'a self, _request: ResolveRequest<'a>) -> futures::future::BoxFuture<'a, Result<Resolution>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resolution = Resolution {
                version: "1.0.0".into(),
                tag: "v1.0.0".into(),
                digest: DIGEST_A.into(),
                size: Some(4),
                verified: None,
                skipped: Vec::new(),
            };
            Box::pin(async move { Ok(resolution) })
        }
    }

    #[tokio::test]
    async fn a_failed_status_write_is_retried_soon_without_asking_the_registry_again() {
        let mut channel = crate::fixtures::channel("esp32", None, None);
        channel.metadata.generation = Some(1);
        channel.spec.interval = "1h".into();
        let object = serde_json::to_vec(&channel).unwrap();
        // The API server refuses the first two status writes, then accepts.
        let writes = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
        let seen = writes.clone();
        let client = crate::fixtures::api(move |method, uri, body| {
            if method == "PATCH" && uri.contains("/firmwarechannels/esp32/status") {
                let mut writes = seen.lock().unwrap();
                writes.push(serde_json::from_slice(body).unwrap());
                if writes.len() <= 2 {
                    return (500, crate::fixtures::refusal(500));
                }
                return (200, object.clone());
            }
            (201, body.to_vec()) // events
        });
        let registry = Arc::new(CountingRegistry::default());
        let ctx = Arc::new(crate::fixtures::context(client, registry.clone()));
        let channel = Arc::new(channel);

        let mut retries = Vec::new();
        for _ in 0..2 {
            let error = reconcile(channel.clone(), ctx.clone()).await.unwrap_err();
            assert!(matches!(error, Error::Kube(_)), "{error}");
            retries.push(error_policy(channel.clone(), &error, ctx.clone()));
        }
        assert_eq!(retries, [Action::requeue(Duration::from_secs(1)), Action::requeue(Duration::from_secs(2))]);
        assert_eq!(
            ctx.metrics.errors(CONTROLLER, "kube_api"),
            2,
            "each failed reconcile is counted, as in every controller"
        );

        reconcile(channel.clone(), ctx.clone()).await.unwrap();
        assert_eq!(registry.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the registry was asked again");
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 3);
        for write in writes.iter() {
            assert_eq!(write["status"]["latest"]["digest"], DIGEST_A, "every write carries what the check found");
        }
        // The write succeeded: the next failure starts again at the shortest wait.
        assert_eq!(ctx.schedules.channels.failed(&channel), Duration::from_secs(1));
    }
}
