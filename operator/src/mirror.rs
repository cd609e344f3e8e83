//! ArtifactMirror controller: read → validate → read the Secrets it names → observe
//! source and destination (metadata only, on `ctx.schedules.mirrors`: at the spec's
//! interval, backing off after failures) → status.
//!
//! The OtaGateway controller renders a valid mirror into its gateway's `mirrors`
//! section and runs the mirror worker Deployment, which forwards. This controller
//! lists both sides with the same code and compares them under the same rules as the
//! worker ([`updraft_core::mirror`]), so the status says what the worker's next pass
//! does: `inSync`, `pending`, the oldest pending item, the destination's newest version,
//! `lastSync`, and in a dry run the plan itself. [`assess`] turns an observation into
//! status and conditions: `Ready=True` in sync (or in a dry run); while items are
//! pending, `Ready=True` (`Forwarding`) until they have been pending for more than two
//! intervals, then `Ready=False` (`Behind`); `pendingSince` is kept in status, so a
//! restarted operator does not forget how long. A side that cannot be listed is
//! `Ready=False` with reason `SourceUnreachable` or `DestinationUnreachable`. Events
//! are published when `Ready`'s reason changes, never on a repeated pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use oci_client::secrets::RegistryAuth;
use tracing::{info, instrument, warn};
use updraft_core::config::{plain_http_key, HttpStoreConfig, SourceConfig, VersionFilter};
use updraft_core::mirror::registry::{Credentials, Repository};
use updraft_core::mirror::rules::{self, Rules};
use updraft_core::mirror::store::{Key, Store};
use updraft_core::mirror::{ObserveError, Side};
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::mirror::{Endpoint, MirrorPlan};
use updraft_crds::{ArtifactMirror, ArtifactMirrorSpec, ArtifactMirrorStatus};

use crate::attach::gateway_of;
use crate::checks;
use crate::clients::Clients;
use crate::context::{Context, MirrorObservation};
use crate::error::{Error, Result, SpecError};
use crate::render::{self, STORE_KEY};
use crate::schedule::Failure;
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "artifactmirror";
/// Names listed in a dry run's plan, each of copy and delete (the totals say the rest).
const PLAN_CAP: usize = 50;

#[instrument(skip_all, fields(namespace = mirror.namespace().unwrap_or_default(), name = mirror.name_any()))]
pub(crate) async fn reconcile(mirror: Arc<ArtifactMirror>, ctx: Arc<Context>) -> Result<Action> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let schedule = &ctx.schedules.mirrors;
    let old = mirror.status.clone().unwrap_or_default();
    let status = ArtifactMirrorStatus { observed_generation: mirror.metadata.generation, ..old.clone() };
    let interval = match validate(&mirror.spec) {
        Ok(interval) => interval,
        Err(e) => {
            warn!(field = %e.field, error = %e, "invalid spec");
            let stalled =
                Stall { reason: "InvalidSpec", message: e.to_string(), waiting: "waiting for the spec to change" };
            status::stall(&ctx, mirror.as_ref(), status, stalled).await?;
            schedule.forget(mirror.as_ref());
            ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(e));
            return Ok(Action::await_change());
        }
    };
    let secrets = match read_secrets(&ctx, &mirror).await? {
        Ok(secrets) => secrets,
        Err(e) => {
            warn!(field = %e.field, error = %e, "missing Secret");
            let stalled = Stall { reason: "SecretNotFound", message: e.to_string(), waiting: "waiting for the Secret" };
            status::stall(&ctx, mirror.as_ref(), status, stalled).await?;
            schedule.succeeded(&mirror);
            // A Secret's creation triggers nothing here: look again soon.
            return Ok(Action::requeue(SECRET_RECHECK));
        }
    };
    if !mirror.spec.suspend && schedule.due_in(&mirror).is_none() {
        let result = observe(&mirror, &secrets, &ctx.clients).await;
        ctx.metrics.registry_check(result.is_ok());
        if let Err(e) = &result {
            ctx.metrics.error(CONTROLLER, e);
            warn!(error = %e, "observing the mirror failed");
        }
        schedule.checked(&mirror, result.map_err(|e| (&e).into()), interval);
    }
    let seen = Seen {
        observation: schedule.last_result(&mirror),
        failure: schedule.last_failure(&mirror),
        gateway: ctx.gateways.get(&gateway_of(mirror.as_ref())).is_some(),
        suspended: mirror.spec.suspend,
        dry_run: mirror.spec.dry_run,
        interval,
    };
    let (status, transition) = assess(&old, status, &seen, mirror.metadata.generation);
    let (ns, name) = (mirror.namespace().unwrap_or_default(), mirror.name_any());
    let behind = conditions::find(&status.conditions, READY).is_some_and(|c| c.reason == BEHIND);
    ctx.metrics.mirror(&ns, &name, status.pending, status.in_sync, behind);
    clear_removed(&ctx, &mirror, &old, &status).await?;
    status::write(&ctx.client, mirror.as_ref(), &status).await?;
    schedule.succeeded(&mirror);
    if let Some(t) = transition {
        info!(reason = t.reason, message = %t.message, "ready changed");
        ctx.event(mirror.as_ref(), t.type_, t.reason, t.message).await;
    }
    if mirror.spec.suspend {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(schedule.due_in(&mirror).unwrap_or(interval)))
}

/// Removes the optional status fields `new` no longer has. A server-side apply that
/// leaves out a field it owned turns it into `null` on kube-apiserver 1.20, which the
/// schema refuses (`status.plan in body must be of type object`); a merge patch with
/// `null` removes it on every version. Nothing is sent when nothing was removed.
async fn clear_removed(
    ctx: &Context,
    mirror: &ArtifactMirror,
    old: &ArtifactMirrorStatus,
    new: &ArtifactMirrorStatus,
) -> Result<()> {
    let removed = [
        ("plan", old.plan.is_some() && new.plan.is_none()),
        ("pendingSince", old.pending_since.is_some() && new.pending_since.is_none()),
        ("oldestPending", old.oldest_pending.is_some() && new.oldest_pending.is_none()),
        ("latestVersion", old.latest_version.is_some() && new.latest_version.is_none()),
        ("lastSync", old.last_sync.is_some() && new.last_sync.is_none()),
    ];
    let nulls: serde_json::Map<String, serde_json::Value> = removed
        .iter()
        .filter(|(_, gone)| *gone)
        .map(|(field, _)| (field.to_string(), serde_json::Value::Null))
        .collect();
    if nulls.is_empty() {
        return Ok(());
    }
    let api: Api<ArtifactMirror> = Api::namespaced(ctx.client.clone(), &mirror.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": nulls });
    api.patch_status(&mirror.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// How soon a mirror naming a missing Secret looks again.
const SECRET_RECHECK: Duration = Duration::from_secs(10);

/// The reason of `Ready=False` while items stay pending beyond two intervals.
const BEHIND: &str = "Behind";

/// What the Secrets a mirror names hold: per side, registry credentials or a store key.
#[derive(Default)]
struct Secrets {
    source: Option<String>,
    destination: Option<String>,
}

/// Reads the Secret each side names (registry credentials or a store key). The inner
/// error is the field naming a Secret that does not exist or lacks the key read.
async fn read_secrets(ctx: &Context, mirror: &ArtifactMirror) -> Result<Result<Secrets, SpecError>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &mirror.namespace().unwrap_or_default());
    let mut found = Secrets::default();
    for (at, endpoint) in [("source", &mirror.spec.source), ("destination", &mirror.spec.destination)] {
        let named = [
            endpoint
                .oci
                .as_ref()
                .and_then(|o| o.credentials_secret.as_ref())
                .map(|s| (format!("{at}.oci.credentialsSecret"), s, ".dockerconfigjson")),
            endpoint
                .http
                .as_ref()
                .and_then(|h| h.key_secret.as_ref())
                .map(|s| (format!("{at}.http.keySecret"), s, STORE_KEY)),
        ];
        for (field, name, key) in named.into_iter().flatten() {
            let secret = secrets.get_opt(name).await?;
            let value = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(key));
            let Some(value) = value else {
                let problem = if secret.is_some() { format!("has no key {key:?}") } else { "not found".to_owned() };
                return Ok(Err(SpecError::new(&field, format!("{field}: Secret {name:?} {problem}"))));
            };
            let text = String::from_utf8_lossy(&value.0).into_owned();
            *if at == "source" { &mut found.source } else { &mut found.destination } = Some(text);
        }
    }
    Ok(Ok(found))
}

/// Lists both sides (metadata only) and plans under the mirror's rules.
async fn observe(mirror: &ArtifactMirror, secrets: &Secrets, clients: &Clients) -> Result<MirrorObservation> {
    let spec = &mirror.spec;
    // The rules exactly as the worker gets them.
    let config = render::mirror_configs(&[mirror]).remove(0);
    let rules = Rules::new(&config).map_err(|e| Error::InvalidSpec(SpecError::new("version", e.to_string())))?;
    let source = side(&spec.source, secrets.source.as_deref(), "source", clients)?;
    let destination = side(&spec.destination, secrets.destination.as_deref(), "destination", clients)?;
    let now = Timestamp::now();
    let at = now.as_second() as f64;
    let plan = updraft_core::mirror::observe(&source, &destination, &rules, at).await.map_err(|e| match e {
        ObserveError { side: "source", error } => Error::SourceUnreachable(error.to_string()),
        ObserveError { error, .. } => Error::DestinationUnreachable(error.to_string()),
    })?;
    let names = |list: &[rules::Artifact]| list.iter().map(|a| (a.name.clone(), a.time)).collect::<Vec<_>>();
    Ok(MirrorObservation {
        in_sync: plan.in_sync.len(),
        copy: names(&plan.copy),
        delete: names(&plan.delete),
        // What the destination holds now (the plan's is what it keeps after the pass).
        latest_version: plan.in_sync.iter().filter_map(|n| rules.version_of(n)).max().map(|v| v.to_string()),
        at: now.as_second(),
    })
}

/// One side, ready to list with what its Secret holds.
fn side(endpoint: &Endpoint, secret: Option<&str>, at: &'static str, clients: &Clients) -> Result<Side> {
    if let Some(oci) = &endpoint.oci {
        let auth = match secret {
            Some(text) => updraft_core::oci::auth_from_docker_config(text, &oci.registry)
                .map_err(|e| Error::Credentials(format!("{at}.oci.credentialsSecret: {e}")))?,
            None => RegistryAuth::Anonymous,
        };
        let source = SourceConfig {
            registry: oci.registry.clone(),
            repository: oci.repository.clone(),
            insecure: oci.insecure,
            docker_config: None,
        };
        return Ok(Side::Registry(Repository::new(
            &source,
            Credentials::Given(auth),
            at,
            clients.registry(oci.insecure).clone(),
        )));
    }
    let http = endpoint.http.as_ref().ok_or_else(|| SpecError::new(at, format!("{at} sets neither oci nor http")))?;
    let config =
        HttpStoreConfig { url: http.url.clone(), path: None, key_file: None, allow_plain_http: http.allow_plain_http };
    let key = secret.map_or(Key::None, |k| Key::Value(k.to_owned()));
    Ok(Side::Store(Store::new(&config, key, at, clients.store.clone())))
}

/// What the reconcile knows when it writes status.
struct Seen {
    /// The last successful observation of this generation.
    observation: Option<MirrorObservation>,
    /// The last observation's failure, until one succeeds.
    failure: Option<Failure>,
    /// Whether the gateway the mirror names exists (it runs the worker).
    gateway: bool,
    suspended: bool,
    dry_run: bool,
    interval: Duration,
}

/// An event to publish: `Ready`'s reason changed.
#[derive(Debug, PartialEq, Eq)]
struct Transition {
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// The status `seen` gives, from `status` (the old one with this generation), and the
/// event to publish if `Ready`'s reason changed since `old`. Pure: times come from the
/// observation, so a pass that did not observe again changes nothing.
fn assess(
    old: &ArtifactMirrorStatus,
    mut status: ArtifactMirrorStatus,
    seen: &Seen,
    generation: Option<i64>,
) -> (ArtifactMirrorStatus, Option<Transition>) {
    set_condition(
        &mut status.conditions,
        NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"),
        generation,
    );
    if let Some(o) = &seen.observation {
        let at = time(o.at as f64);
        let pending = o.copy.len() + o.delete.len();
        status.in_sync = o.in_sync.try_into().unwrap_or(i32::MAX);
        status.pending = pending.try_into().unwrap_or(i32::MAX);
        status.latest_version = o.latest_version.clone();
        if pending == 0 {
            status.pending_since = None;
            status.oldest_pending = None;
            // When it caught up: kept while it stays in sync, so a steady mirror's
            // passes write nothing.
            let caught_up = old.last_sync.clone().filter(|_| old.pending == 0);
            status.last_sync = Some(caught_up.unwrap_or(at));
        } else {
            let since = old.pending_since.clone().filter(|_| old.pending > 0).unwrap_or(at);
            // Items whose side gives no time count from when pending began.
            let oldest = o
                .copy
                .iter()
                .chain(&o.delete)
                .map(|(_, t)| if *t > 0.0 { time(*t) } else { since.clone() })
                .min_by_key(|t| t.0)
                .unwrap_or_else(|| since.clone());
            status.pending_since = Some(since);
            status.oldest_pending = Some(oldest);
        }
        status.plan = seen.dry_run.then(|| plan(o));
    }
    if !seen.dry_run {
        status.plan = None;
    }
    let (ready, reason, message) = readiness(&status, seen);
    set_condition(&mut status.conditions, NewCondition::new(READY, ready, reason, message.clone()), generation);
    let forwarding = ready && reason == "Forwarding";
    let reconciling = match (seen.failure.is_some(), forwarding || reason == BEHIND) {
        (true, _) => NewCondition::new(RECONCILING, true, "RetryingAfterError", "observing again with growing backoff"),
        (false, true) => NewCondition::new(RECONCILING, true, "Forwarding", "the worker is forwarding what is pending"),
        (false, false) => NewCondition::new(RECONCILING, false, "Idle", "nothing to do until the next observation"),
    };
    set_condition(&mut status.conditions, reconciling, generation);
    let was = conditions::find(&old.conditions, READY).map(|c| c.reason.as_str());
    let transition = (was != Some(reason) && reason != "Observing").then_some(Transition {
        type_: if !ready && reason != "Suspended" { EventType::Warning } else { EventType::Normal },
        reason,
        message,
    });
    (status, transition)
}

/// `Ready`: its status, reason and message.
fn readiness(status: &ArtifactMirrorStatus, seen: &Seen) -> (bool, &'static str, String) {
    if !seen.gateway {
        return (
            false,
            "GatewayNotFound",
            "the OtaGateway named by spec.gatewayRef (it runs the worker) is not found".into(),
        );
    }
    if let Some(f) = &seen.failure {
        return (false, f.reason, f.message.clone());
    }
    if seen.suspended {
        return (false, "Suspended", "suspended: nothing is observed, copied or deleted".into());
    }
    if seen.observation.is_none() {
        return (false, "Observing", "waiting for the first observation".into());
    }
    let latest = status.latest_version.as_deref().map(|v| format!("; latest {v}")).unwrap_or_default();
    if seen.dry_run {
        let (copy, delete) = status.plan.as_ref().map_or((0, 0), |p| (p.copy_total, p.delete_total));
        let message = format!("dry run: {copy} to copy and {delete} to delete, nothing changes{latest}");
        return (true, "DryRun", message);
    }
    if status.pending == 0 {
        return (true, "InSync", format!("{} in sync{latest}", status.in_sync));
    }
    let since = status.pending_since.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let observed = seen.observation.as_ref().map_or(since, |o| Timestamp::from_second(o.at).unwrap_or(since));
    let window = seen.interval.as_secs().saturating_mul(2) as i64;
    let message = format!("{} pending since {since} ({} in sync{latest})", status.pending, status.in_sync);
    if observed.as_second() - since.as_second() > window {
        return (false, BEHIND, format!("{message}: more than two intervals"));
    }
    (true, "Forwarding", message)
}

/// A dry run's plan, names capped.
fn plan(o: &MirrorObservation) -> MirrorPlan {
    let capped = |list: &[(String, f64)]| {
        let names: BTreeMap<&str, ()> = list.iter().map(|(n, _)| (n.as_str(), ())).collect();
        names.into_keys().take(PLAN_CAP).map(str::to_owned).collect()
    };
    MirrorPlan {
        copy: capped(&o.copy),
        delete: capped(&o.delete),
        copy_total: o.copy.len().try_into().unwrap_or(i32::MAX),
        delete_total: o.delete.len().try_into().unwrap_or(i32::MAX),
    }
}

/// Seconds since the epoch as a Kubernetes time (whole seconds, as the API keeps them).
fn time(secs: f64) -> Time {
    Time(Timestamp::from_second(secs as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A failed status write is retried soon, growing (1 s… 30 s).
pub(crate) fn error_policy(mirror: Arc<ArtifactMirror>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    warn!(%error, "artifact mirror reconcile failed");
    if error.is_permanent() {
        return Action::await_change();
    }
    Action::requeue(ctx.schedules.mirrors.failed(&mirror))
}

/// Checks what the schema cannot; returns the comparison interval.
pub(crate) fn validate(spec: &ArtifactMirrorSpec) -> Result<Duration, SpecError> {
    endpoint(&spec.source, "source")?;
    endpoint(&spec.destination, "destination")?;
    if spec.source == spec.destination {
        return Err(SpecError::new("destination", "destination is the same as source"));
    }
    for (list, globs) in [("include", &spec.include), ("exclude", &spec.exclude)] {
        for (i, g) in globs.iter().enumerate() {
            glob(&format!("{list}[{i}]"), g)?;
        }
    }
    if let Some(version) = &spec.version {
        let filter = VersionFilter {
            regex: version.regex.clone(),
            groups: version.groups.clone(),
            range: version.range.clone(),
            prerelease: version.prerelease,
        };
        filter.check().map_err(|e| SpecError::new(&e.field, e.to_string()))?;
    }
    if let Some(max_age) = spec.retention.as_ref().and_then(|r| r.max_age.as_deref()) {
        checks::duration("retention.maxAge", max_age)?;
    }
    checks::duration("interval", &spec.interval)
}

/// A glob the worker matches as meant ([`rules::check_glob`]).
fn glob(field: &str, pattern: &str) -> Result<(), SpecError> {
    rules::check_glob(pattern).map_err(|e| SpecError::new(field, format!("{field} {e}")))
}

fn endpoint(endpoint: &Endpoint, at: &str) -> Result<(), SpecError> {
    checks::exactly_one(at, &[("oci", endpoint.oci.is_some()), ("http", endpoint.http.is_some())])?;
    if let Some(oci) = &endpoint.oci {
        checks::oci_source(oci, &format!("{at}.oci"))?;
    }
    if let Some(http) = &endpoint.http {
        checks::http_url(&format!("{at}.http.url"), &http.url)?;
        plain_http_key(&http.url, http.key_secret.is_some(), http.allow_plain_http)
            .map_err(|e| SpecError::new(format!("{at}.http.keySecret"), e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: serde_json::Value, destination: serde_json::Value, extra: serde_json::Value) -> ArtifactMirrorSpec {
        let mut json = serde_json::json!({"source": source, "destination": destination});
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        serde_json::from_value(json).unwrap()
    }

    fn oci(repository: &str) -> serde_json::Value {
        serde_json::json!({"oci": {"registry": "127.0.0.1:15000", "repository": repository}})
    }

    #[test]
    fn valid_specs_give_their_interval() {
        let store = serde_json::json!({"http": {"url": "https://wan.example.com:8090"}});
        let s = spec(oci("releases/app"), store, serde_json::json!({"retention": {"maxAge": "720h"}}));
        assert_eq!(validate(&s).unwrap(), Duration::from_secs(600));
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let none = serde_json::json!({});
        let field = |s: ArtifactMirrorSpec| validate(&s).unwrap_err().field;
        assert_eq!(field(spec(none.clone(), oci("b"), none.clone())), "source");
        assert_eq!(
            field(spec(oci("a"), serde_json::json!({"http": {"url": "wan:8090"}}), none.clone())),
            "destination.http.url"
        );
        assert_eq!(field(spec(oci("a"), oci("A"), none.clone())), "destination.oci.repository");
        assert_eq!(field(spec(oci("a"), oci("a"), none.clone())), "destination");
        assert_eq!(
            field(spec(oci("a"), oci("b"), serde_json::json!({"retention": {"maxAge": "old"}}))),
            "retention.maxAge"
        );
        assert_eq!(field(spec(oci("a"), oci("b"), serde_json::json!({"interval": "often"}))), "interval");
        assert_eq!(
            field(spec(oci("a"), oci("b"), serde_json::json!({"include": ["*.bin", "fw-[ab]*"]}))),
            "include[1]"
        );
        assert_eq!(field(spec(oci("a"), oci("b"), serde_json::json!({"exclude": [" "]}))), "exclude[0]");
        validate(&spec(oci("a"), oci("b"), serde_json::json!({"include": ["**/*.bin", "fw-?.img"]}))).unwrap();
        // A key goes to plain http:// only when that is asked for explicitly.
        let plain = |allow: bool| serde_json::json!({"http": {"url": "http://wan:8090", "keySecret": "wan-key", "allowPlainHttp": allow}});
        assert_eq!(field(spec(oci("a"), plain(false), none.clone())), "destination.http.keySecret");
        assert_eq!(field(spec(plain(false), oci("b"), none.clone())), "source.http.keySecret");
        let refused = validate(&spec(oci("a"), plain(false), none.clone())).unwrap_err().to_string();
        assert!(refused.contains("allowPlainHttp"), "{refused}");
        validate(&spec(oci("a"), plain(true), none.clone())).unwrap();
        let keyless = serde_json::json!({"http": {"url": "http://wan:8090"}});
        validate(&spec(oci("a"), keyless, none.clone())).unwrap();
        let tls = serde_json::json!({"http": {"url": "https://wan:8090", "keySecret": "wan-key"}});
        validate(&spec(oci("a"), tls, none.clone())).unwrap();
    }

    fn seen(observation: Option<MirrorObservation>) -> Seen {
        Seen {
            observation,
            failure: None,
            gateway: true,
            suspended: false,
            dry_run: false,
            interval: Duration::from_secs(60),
        }
    }

    fn observed(at: i64, copy: &[(&str, f64)]) -> MirrorObservation {
        MirrorObservation {
            in_sync: 3,
            copy: copy.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            delete: vec![],
            latest_version: Some("1.2.0".into()),
            at,
        }
    }

    /// One reconcile: the status written and the event published.
    fn pass(old: &ArtifactMirrorStatus, seen: &Seen) -> (ArtifactMirrorStatus, Option<Transition>) {
        assess(old, ArtifactMirrorStatus { observed_generation: Some(1), ..old.clone() }, seen, Some(1))
    }

    fn ready(status: &ArtifactMirrorStatus) -> (String, String) {
        let c = conditions::find(&status.conditions, READY).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    const T0: i64 = 1_800_000_000;

    #[test]
    fn pending_turns_behind_after_two_intervals_and_in_sync_clears_it() {
        // Pending with no file time: counted from when it was first seen.
        let (s1, e1) = pass(&ArtifactMirrorStatus::default(), &seen(Some(observed(T0, &[("a-1.3.0.zip", 0.0)]))));
        assert_eq!(ready(&s1), ("True".into(), "Forwarding".into()));
        assert_eq!((s1.pending, s1.in_sync, s1.latest_version.as_deref()), (1, 3, Some("1.2.0")));
        assert_eq!(s1.pending_since, Some(time(T0 as f64)));
        assert_eq!(s1.oldest_pending, Some(time(T0 as f64)));
        assert_eq!(e1.unwrap().reason, "Forwarding");
        // One and two intervals later: still within the window.
        let (s2, e2) = pass(&s1, &seen(Some(observed(T0 + 120, &[("a-1.3.0.zip", 0.0)]))));
        assert_eq!(ready(&s2).1, "Forwarding");
        assert_eq!(e2, None, "no event without a transition");
        assert_eq!(s2.pending_since, s1.pending_since, "pendingSince is kept across passes (and restarts)");
        // Beyond two intervals: Behind, once.
        let late = seen(Some(observed(T0 + 121, &[("a-1.3.0.zip", 0.0), ("b-2.0.0.zip", (T0 - 50) as f64)])));
        let (s3, e3) = pass(&s2, &late);
        assert_eq!(ready(&s3), ("False".into(), BEHIND.into()));
        assert_eq!(s3.oldest_pending, Some(time((T0 - 50) as f64)), "a file's own time when the side gives one");
        let e3 = e3.unwrap();
        assert!(e3.type_ == EventType::Warning && e3.message.contains("2 pending"), "{e3:?}");
        assert!(conditions::is_true(&s3.conditions, RECONCILING));
        let (s4, e4) = pass(&s3, &late);
        assert_eq!((s4 == s3, e4), (true, None), "a repeated pass writes nothing and publishes nothing");
        // In sync: Ready, lastSync, no pending time; one event.
        let (s5, e5) = pass(&s4, &seen(Some(observed(T0 + 200, &[]))));
        assert_eq!(ready(&s5), ("True".into(), "InSync".into()));
        assert_eq!((s5.pending, s5.pending_since.clone(), s5.oldest_pending.clone()), (0, None, None));
        assert_eq!(s5.last_sync, Some(time((T0 + 200) as f64)));
        assert_eq!(e5.map(|e| (e.type_, e.reason)), Some((EventType::Normal, "InSync")));
        // Still in sync a pass later: lastSync is when it caught up; nothing to write.
        let (s5b, e5b) = pass(&s5, &seen(Some(observed(T0 + 260, &[]))));
        assert_eq!((s5b == s5, e5b), (true, None), "a steady mirror's pass writes nothing");
        // New pending work starts a new window.
        let (s6, _) = pass(&s5, &seen(Some(observed(T0 + 300, &[("c-1.0.0.zip", 0.0)]))));
        assert_eq!(s6.pending_since, Some(time((T0 + 300) as f64)));
        assert_eq!(s6.last_sync, s5.last_sync, "lastSync stays at the last time nothing was pending");
    }

    #[test]
    fn unreachable_sides_dry_runs_and_missing_gateways() {
        let (synced, _) = pass(&ArtifactMirrorStatus::default(), &seen(Some(observed(T0, &[]))));
        let mut down = seen(Some(observed(T0, &[])));
        down.failure = Some(Failure::from(&Error::DestinationUnreachable("connection refused".into())));
        let (s, e) = pass(&synced, &down);
        assert_eq!(ready(&s), ("False".into(), "DestinationUnreachable".into()));
        assert!(conditions::find(&s.conditions, READY).unwrap().message.contains("connection refused"));
        assert_eq!(e.map(|e| e.type_), Some(EventType::Warning));
        assert_eq!(pass(&s, &down).1, None, "still down: no second event");
        assert_eq!(s.in_sync, 3, "the last observation's counts stay");

        let mut dry = seen(Some(observed(T0, &[("b.zip", 0.0), ("a.zip", 0.0)])));
        dry.dry_run = true;
        let (s, _) = pass(&ArtifactMirrorStatus::default(), &dry);
        assert_eq!(ready(&s), ("True".into(), "DryRun".into()));
        let plan = s.plan.unwrap();
        assert_eq!((plan.copy, plan.copy_total, plan.delete_total), (vec!["a.zip".to_owned(), "b.zip".into()], 2, 0));

        let mut paused = seen(Some(observed(T0, &[])));
        paused.suspended = true;
        let (s, e) = pass(&synced, &paused);
        assert_eq!(ready(&s), ("False".into(), "Suspended".into()));
        assert_eq!(e.map(|e| (e.type_, e.reason)), Some((EventType::Normal, "Suspended")), "asked for: not a warning");

        let mut lost = seen(None);
        lost.gateway = false;
        assert_eq!(ready(&pass(&ArtifactMirrorStatus::default(), &lost).0).1, "GatewayNotFound");
        let (s, e) = pass(&ArtifactMirrorStatus::default(), &seen(None));
        assert_eq!((ready(&s).1.as_str(), e), ("Observing", None));
    }

    #[test]
    fn a_dry_run_plan_is_capped_with_totals() {
        let many: Vec<(String, f64)> = (0..120).map(|i| (format!("f{i:03}"), 0.0)).collect();
        let o = MirrorObservation { copy: many, ..Default::default() };
        let p = plan(&o);
        assert_eq!((p.copy.len(), p.copy_total, p.copy[0].as_str()), (PLAN_CAP, 120, "f000"));
    }

    #[test]
    fn version_filters_are_checked_field_by_field() {
        let field = |version: serde_json::Value| {
            validate(&spec(oci("a"), oci("b"), serde_json::json!({"version": version}))).unwrap_err().field
        };
        assert_eq!(field(serde_json::json!({"regex": "("})), "version.regex");
        assert_eq!(field(serde_json::json!({"regex": "\\d+"})), "version.regex");
        assert_eq!(field(serde_json::json!({"groups": ["(a)", "("]})), "version.groups[1]");
        assert_eq!(field(serde_json::json!({"range": "soon"})), "version.range");
        let ok = serde_json::json!({"version": {"regex": ":(\\d+\\.\\d+\\.\\d+):", "range": ">=1.2, <2"}});
        validate(&spec(oci("a"), oci("b"), ok)).unwrap();
    }
}
