//! ArtifactMirror controller: read → validate → status.
//!
//! This release does not forward artifacts yet. A valid mirror is reported `Stalled`
//! with reason `NotImplemented` (see [`status::not_implemented`] for why `Stalled` and
//! not an idle `Ready=False`), an invalid one `Stalled` with reason `InvalidSpec`. The
//! controller that observes destinations replaces the last step in place: validate →
//! observe (on `ctx.schedules.mirrors`) → status.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{instrument, warn};
use updraft_crds::mirror::Endpoint;
use updraft_crds::{ArtifactMirror, ArtifactMirrorSpec, ArtifactMirrorStatus};

use crate::checks;
use crate::context::Context;
use crate::error::{Error, Result, SpecError};
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "artifactmirror";

#[instrument(skip_all, fields(namespace = mirror.namespace().unwrap_or_default(), name = mirror.name_any()))]
pub(crate) async fn reconcile(mirror: Arc<ArtifactMirror>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let status = ArtifactMirrorStatus {
        observed_generation: mirror.metadata.generation,
        ..mirror.status.clone().unwrap_or_default()
    };
    let stalled = match validate(&mirror.spec) {
        Ok(_interval) => status::not_implemented::<ArtifactMirror>(),
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
    Ok(Action::await_change())
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
    if let Some(max_age) = spec.retention.as_ref().and_then(|r| r.max_age.as_deref()) {
        checks::duration("retention.maxAge", max_age)?;
    }
    checks::duration("interval", &spec.interval)
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
    }
}
