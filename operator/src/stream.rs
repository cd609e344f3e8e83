//! ImageStream controller: read → validate → status.
//!
//! This release does not index or serve ImageStreams yet. A valid stream is reported
//! `Stalled` with reason `NotImplemented` (see [`status::not_implemented`] for why
//! `Stalled` and not an idle `Ready=False`), an invalid one `Stalled` with reason
//! `InvalidSpec`, so `kubectl get`, `kubectl describe` and kstatus-based health checks
//! say so instead of showing nothing. The controller that indexes streams replaces the
//! last step in place: validate → index (on `ctx.schedules.streams`) → status.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{instrument, warn};
use updraft_crds::stream::ImageSource;
use updraft_crds::{ImageStream, ImageStreamSpec, ImageStreamStatus};

use crate::checks;
use crate::context::Context;
use crate::error::{Error, Result, SpecError};
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "imagestream";

#[instrument(skip_all, fields(namespace = stream.namespace().unwrap_or_default(), name = stream.name_any()))]
pub(crate) async fn reconcile(stream: Arc<ImageStream>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let status = ImageStreamStatus {
        observed_generation: stream.metadata.generation,
        ..stream.status.clone().unwrap_or_default()
    };
    let stalled = match validate(&stream.spec) {
        Ok(_interval) => status::not_implemented::<ImageStream>(),
        Err(e) => {
            warn!(field = %e.field, error = %e, "invalid spec");
            let stalled =
                Stall { reason: "InvalidSpec", message: e.to_string(), waiting: "waiting for the spec to change" };
            ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(e));
            stalled
        }
    };
    status::stall(&ctx, stream.as_ref(), status, stalled).await?;
    ctx.schedules.streams.succeeded(&stream);
    Ok(Action::await_change())
}

/// A failed status write is retried soon, growing (1 s… 30 s).
pub(crate) fn error_policy(stream: Arc<ImageStream>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    warn!(%error, "image stream reconcile failed");
    Action::requeue(ctx.schedules.streams.failed(&stream))
}

/// Checks what the schema cannot; returns the re-index interval.
fn validate(spec: &ImageStreamSpec) -> Result<Duration, SpecError> {
    let ImageSource { oci, upload, upstream } = &spec.source;
    checks::exactly_one(
        "source",
        &[("oci", oci.is_some()), ("upload", upload.is_some()), ("upstream", upstream.is_some())],
    )?;
    if let Some(oci) = oci {
        checks::oci_source(oci, "source.oci")?;
    }
    if let Some(upstream) = upstream {
        checks::http_url("source.upstream.url", &upstream.url)?;
    }
    for filter in &spec.filters {
        if !filter.split_once('=').is_some_and(|(key, value)| !key.is_empty() && !value.is_empty()) {
            return Err(SpecError::new("filters", format!("filters: {filter:?} is not key=value, e.g. os=debian")));
        }
    }
    checks::duration("interval", &spec.interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ImageStreamSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn valid_specs_give_their_interval() {
        let upload = spec(serde_json::json!({"source": {"upload": {}}}));
        assert_eq!(validate(&upload).unwrap(), Duration::from_secs(3600));
        let oci = spec(serde_json::json!({
            "source": {"oci": {"registry": "127.0.0.1:15000", "repository": "images/debian"}},
            "filters": ["os=debian", "arch=amd64"], "interval": "10m",
        }));
        assert_eq!(validate(&oci).unwrap(), Duration::from_secs(600));
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let field = |json| validate(&spec(json)).unwrap_err().field;
        assert_eq!(field(serde_json::json!({"source": {}})), "source");
        assert_eq!(field(serde_json::json!({"source": {"upload": {}, "upstream": {"url": "https://x"}}})), "source");
        assert_eq!(
            field(serde_json::json!({"source": {"oci": {"registry": "https://r", "repository": "x"}}})),
            "source.oci.registry"
        );
        assert_eq!(field(serde_json::json!({"source": {"upstream": {"url": "images.org"}}})), "source.upstream.url");
        assert_eq!(field(serde_json::json!({"source": {"upload": {}}, "filters": ["debian"]})), "filters");
        assert_eq!(field(serde_json::json!({"source": {"upload": {}}, "interval": "daily"})), "interval");
    }
}
