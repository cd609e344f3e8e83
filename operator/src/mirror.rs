//! ArtifactMirror controller: read → validate → check the Secrets it names → status.
//!
//! The OtaGateway controller renders a valid mirror into its gateway's `mirrors`
//! section and runs the mirror worker Deployment, which forwards. This controller does
//! not observe source and destination yet: a valid mirror whose Secrets exist is
//! reported `Stalled` with reason `NotImplemented` (see [`status::not_implemented`]); an
//! invalid one `Stalled` with reason `InvalidSpec`, and one naming a missing Secret
//! `Stalled` with reason `SecretNotFound`, both naming the field. What is still to come
//! replaces the last step in place: observe (on `ctx.schedules.mirrors`) → status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{instrument, warn};
use updraft_crds::mirror::Endpoint;
use updraft_crds::{ArtifactMirror, ArtifactMirrorSpec, ArtifactMirrorStatus};

use crate::checks;
use crate::context::Context;
use crate::error::{Error, Result, SpecError};
use crate::render::STORE_KEY;
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "artifactmirror";

#[instrument(skip_all, fields(namespace = mirror.namespace().unwrap_or_default(), name = mirror.name_any()))]
pub(crate) async fn reconcile(mirror: Arc<ArtifactMirror>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let status = ArtifactMirrorStatus {
        observed_generation: mirror.metadata.generation,
        ..mirror.status.clone().unwrap_or_default()
    };
    let mut action = Action::await_change();
    let stalled = match validate(&mirror.spec) {
        Ok(_interval) => match missing_secret(&ctx, &mirror).await? {
            None => status::not_implemented::<ArtifactMirror>(),
            Some(e) => {
                warn!(field = %e.field, error = %e, "missing Secret");
                // A Secret's creation triggers nothing here: look again soon.
                action = Action::requeue(SECRET_RECHECK);
                Stall { reason: "SecretNotFound", message: e.to_string(), waiting: "waiting for the Secret" }
            }
        },
        Err(e) => {
            warn!(field = %e.field, error = %e, "invalid spec");
            let stalled =
                Stall { reason: "InvalidSpec", message: e.to_string(), waiting: "waiting for the spec to change" };
            ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(e));
            stalled
        }
    };
    status::stall(&ctx, mirror.as_ref(), status, stalled).await?;
    ctx.schedules.mirrors.succeeded(&mirror);
    Ok(action)
}

/// How soon a mirror naming a missing Secret looks again.
const SECRET_RECHECK: Duration = Duration::from_secs(10);

/// The first Secret the spec names that does not exist (or lacks the key read from
/// it), as the field that names it.
async fn missing_secret(ctx: &Context, mirror: &ArtifactMirror) -> Result<Option<SpecError>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &mirror.namespace().unwrap_or_default());
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
            let found = secrets.get_opt(name).await?;
            let has_key = found.as_ref().is_some_and(|s| s.data.as_ref().is_some_and(|d| d.contains_key(key)));
            if !has_key {
                let problem = if found.is_some() { format!("has no key {key:?}") } else { "not found".to_owned() };
                return Ok(Some(SpecError::new(&field, format!("{field}: Secret {name:?} {problem}"))));
            }
        }
    }
    Ok(None)
}

/// A failed status write is retried soon, growing (1 s… 30 s).
pub(crate) fn error_policy(mirror: Arc<ArtifactMirror>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    warn!(%error, "artifact mirror reconcile failed");
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
    if let Some(max_age) = spec.retention.as_ref().and_then(|r| r.max_age.as_deref()) {
        checks::duration("retention.maxAge", max_age)?;
    }
    checks::duration("interval", &spec.interval)
}

/// A glob the gateway matches as meant: `*`, `?` and `**` only. Classes and braces
/// would be matched literally, never as the user meant, so they are refused.
fn glob(field: &str, pattern: &str) -> Result<(), SpecError> {
    if pattern.trim().is_empty() {
        return Err(SpecError::new(field, format!("{field} is empty")));
    }
    if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
        let message = format!("{field} {pattern:?}: {c:?} is not supported (globs have only *, ? and **)");
        return Err(SpecError::new(field, message));
    }
    Ok(())
}

fn endpoint(endpoint: &Endpoint, at: &str) -> Result<(), SpecError> {
    checks::exactly_one(at, &[("oci", endpoint.oci.is_some()), ("http", endpoint.http.is_some())])?;
    if let Some(oci) = &endpoint.oci {
        checks::oci_source(oci, &format!("{at}.oci"))?;
    }
    if let Some(http) = &endpoint.http {
        checks::http_url(&format!("{at}.http.url"), &http.url)?;
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
    }
}
