//! ImageStream controller: read → validate → observe the source (registry metadata, on
//! the stream's schedule) → status. The OtaGateway controller renders the stream's
//! source (never its versions) into the gateway's `streams` section; the gateway builds
//! and serves the simplestreams index.
//!
//! What is observed, from metadata only: for an `oci` or `upload` source the tags of the
//! repository (one tag, one version; a tag named as the gateway names uploads,
//! `<os>_<release>_<arch>_<variant>_<YYYYMMDD>_<HHMM>`, also names its product). An
//! `upstream` is observed by the gateway, which mirrors it; its counts stay 0 here.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tracing::{info, instrument, warn};
use updraft_core::oci;
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, RECONCILING, STALLED};
use updraft_crds::stream::ImageSource;
use updraft_crds::{ImageStream, ImageStreamSpec, ImageStreamStatus, OciSource, OtaGateway};

use crate::attach::gateway_of;
use crate::checks;
use crate::context::{Context, Observation};
use crate::error::{Error, Result, SpecError};
use crate::render;
use crate::status::{self, Stall};

pub(crate) const CONTROLLER: &str = "imagestream";
const USER_AGENT: &str = concat!("updraft-operator/", env!("CARGO_PKG_VERSION"));
/// The keys a filter may test (what the gateway's upstream filters accept).
const FILTER_KEYS: [&str; 4] = ["os", "release", "arch", "variant"];

#[instrument(skip_all, fields(namespace = stream.namespace().unwrap_or_default(), name = stream.name_any()))]
pub(crate) async fn reconcile(stream: Arc<ImageStream>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let schedule = &ctx.schedules.streams;
    let old = stream.status.clone().unwrap_or_default();
    let generation = stream.metadata.generation;
    let mut status = ImageStreamStatus { observed_generation: generation, ..old.clone() };
    let gateway = ctx.gateways.get(&gateway_of(stream.as_ref()));

    let interval = match validate(&stream.name_any(), &stream.spec, gateway.as_deref()) {
        Ok(interval) => interval,
        Err(e) => {
            warn!(field = %e.field, error = %e, "invalid spec");
            let stalled =
                Stall { reason: "InvalidSpec", message: e.to_string(), waiting: "waiting for the spec to change" };
            status::stall(&ctx, stream.as_ref(), status, stalled).await?;
            schedule.forget(stream.as_ref());
            ctx.metrics.error(CONTROLLER, &Error::InvalidSpec(e));
            return Ok(Action::await_change());
        }
    };
    set_condition(
        &mut status.conditions,
        NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"),
        generation,
    );

    let observes = stream.spec.source.upstream.is_none();
    if observes && !stream.spec.suspend && schedule.due_in(&stream).is_none() {
        let result = observe(&stream, &ctx).await;
        ctx.metrics.registry_check(result.is_ok());
        if let Err(e) = &result {
            ctx.metrics.error(CONTROLLER, e);
            warn!(error = %e, "listing the stream's repository failed");
        }
        schedule.checked(&stream, result.map_err(|e| (&e).into()), interval);
    }
    let observation = schedule.last_result(&stream);
    let failure = schedule.last_failure(&stream);
    let mut indexed = None;
    if let Some(o) = &observation {
        ctx.metrics.stream_images(&stream.namespace().unwrap_or_default(), &stream.name_any(), o.versions, o.products);
        status.products = o.products.try_into().unwrap_or(i32::MAX);
        status.versions = o.versions.try_into().unwrap_or(i32::MAX);
        let changed = status.versions != old.versions || status.products != old.products;
        if changed || old.last_indexed.is_none() {
            status.last_indexed = Some(conditions::now());
        }
        if changed && old.last_indexed.is_some() {
            indexed = Some(format!(
                "{} versions of {} products (were {} of {})",
                o.versions, o.products, old.versions, old.products
            ));
        }
    }
    let (url, remote_add, https) = match &gateway {
        Some(gw) => {
            let url = render::stream_url(gw, &stream.name_any());
            (Some(url.clone()), remote_add(&stream.name_any(), &url), gw.spec.tls.is_some())
        }
        None => (None, Vec::new(), false),
    };
    status.url = url;
    status.remote_add = remote_add;

    let (ready, reason, message) = match (&gateway, failure, &observation) {
        (None, _, _) => (false, "GatewayNotFound", missing_gateway(&stream.spec.gateway_ref, &stream)),
        (Some(_), Some(f), _) => (false, f.reason, f.message),
        (Some(_), None, None) if observes && stream.spec.suspend => {
            (false, "Suspended", "suspended before the repository was listed".to_owned())
        }
        (Some(_), None, None) if observes => (false, "Observing", "waiting for the first listing".to_owned()),
        (Some(_), None, _) => {
            let what = match &observation {
                Some(o) => format!("{} versions of {} products", o.versions, o.products),
                None => "the upstream's products (observed by the gateway, which mirrors it)".to_owned(),
            };
            let mut message = format!("gateway {:?} serves {what}", stream.spec.gateway_ref);
            if !https {
                message.push_str(
                    "; lxc and incus add simplestreams remotes over https only: set spec.tls on the OtaGateway",
                );
            }
            (true, "Serving", message)
        }
    };
    let became_ready = ready && !conditions::is_true(&old.conditions, READY);
    let was_failing = conditions::find(&old.conditions, READY).is_some_and(|c| c.reason == reason);
    set_condition(&mut status.conditions, NewCondition::new(READY, ready, reason, message.clone()), generation);
    let retrying = !ready && observation.is_none() && schedule.last_failure(&stream).is_some();
    let reconciling = if retrying {
        NewCondition::new(RECONCILING, true, "RetryingAfterError", "retrying the registry with growing backoff")
    } else {
        NewCondition::new(RECONCILING, false, "Idle", "nothing to do until the next listing")
    };
    set_condition(&mut status.conditions, reconciling, generation);

    status::write(&ctx.client, stream.as_ref(), &status).await?;
    schedule.succeeded(&stream);
    if let Some(note) = indexed {
        info!(%note, "indexed");
        ctx.event(stream.as_ref(), false, "Indexed", note).await;
    }
    if became_ready {
        info!(%message, "ready");
        ctx.event(stream.as_ref(), false, "Ready", message).await;
    } else if !ready && !was_failing && reason != "Observing" {
        ctx.event(stream.as_ref(), true, reason, message).await;
    }
    if stream.spec.suspend || !observes {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(schedule.due_in(&stream).unwrap_or(interval)))
}

/// A failed status write is retried soon, growing (1 s… 30 s).
pub(crate) fn error_policy(stream: Arc<ImageStream>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error);
    warn!(%error, "image stream reconcile failed");
    if error.is_permanent() {
        return Action::await_change();
    }
    Action::requeue(ctx.schedules.streams.failed(&stream))
}

/// Whether the gateway may render `stream`: what [`validate`] accepts, so one bad
/// stream never makes the gateway's whole configuration invalid.
pub(crate) fn servable(stream: &ImageStream, gateway: &OtaGateway) -> bool {
    validate(&stream.name_any(), &stream.spec, Some(gateway)).is_ok()
}

/// Checks what the schema cannot (with the gateway, when known: an upload source needs
/// its upload token); returns the re-index interval.
fn validate(name: &str, spec: &ImageStreamSpec, gateway: Option<&OtaGateway>) -> Result<Duration, SpecError> {
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    if name.is_empty() || name.starts_with('.') || !name.bytes().all(plain) {
        let message = format!("metadata.name {name:?} must be [a-z0-9.-] and not start with '.': it is the URL path");
        return Err(SpecError::new("metadata.name", message));
    }
    let ImageSource { oci, upload, upstream } = &spec.source;
    checks::exactly_one(
        "source",
        &[("oci", oci.is_some()), ("upload", upload.is_some()), ("upstream", upstream.is_some())],
    )?;
    if let Some(oci) = oci {
        checks::oci_source(oci, "source.oci")?;
    }
    if let Some(upload) = upload {
        checks::oci_source(&upload.repository, "source.upload")?;
        if let Some(max) = &upload.max_bytes {
            if render::quantity_bytes(max).is_none_or(|b| b == 0) {
                let message = format!("source.upload.maxBytes {:?} is not a byte quantity such as 8Gi", max.0);
                return Err(SpecError::new("source.upload.maxBytes", message));
            }
        }
        if gateway.is_some_and(|gw| gw.spec.upload_token_secret.is_none()) {
            let message = format!(
                "source.upload needs an upload token, and OtaGateway {:?} has no spec.uploadTokenSecret",
                spec.gateway_ref
            );
            return Err(SpecError::new("source.upload", message));
        }
    }
    if let Some(upstream) = upstream {
        checks::http_url("source.upstream.url", &upstream.url)?;
    }
    for filter in &spec.filters {
        let ok = filter.split_once('=').is_some_and(|(key, value)| FILTER_KEYS.contains(&key) && !value.is_empty());
        if !ok {
            let message = format!("filters: {filter:?} is not key=value with key os, release, arch or variant");
            return Err(SpecError::new("filters", message));
        }
    }
    if !spec.filters.is_empty() && upstream.is_none() {
        let message = "filters apply to an upstream source only; an oci or upload source serves all it holds";
        return Err(SpecError::new("filters", message));
    }
    checks::duration("interval", &spec.interval)
}

/// `incus remote add` and `lxc remote add` of the stream at `url`.
fn remote_add(name: &str, url: &str) -> Vec<String> {
    ["incus", "lxc"].map(|cli| format!("{cli} remote add {name} {url} --protocol simplestreams --public")).into()
}

/// Counts the versions and products in the stream's repository.
async fn observe(stream: &ImageStream, ctx: &Context) -> Result<Observation> {
    let source = match (&stream.spec.source.oci, &stream.spec.source.upload) {
        (Some(oci), _) => oci,
        (_, Some(upload)) => &upload.repository,
        _ => return Ok(Observation::default()),
    };
    let auth = registry_auth(stream, source, ctx).await?;
    let reference = oci::tag_reference(&source.registry, &source.repository, "latest");
    match oci::list_repository_tags(client(source.insecure), &reference, &auth).await {
        Ok(tags) => Ok(count(&tags)),
        // No upload yet: the repository does not exist until the first one.
        Err(e) if is_unknown_repository(&e) => Ok(Observation::default()),
        Err(e) => Err(Error::RegistryUnreachable(format!("{}: {e}", source.reference()))),
    }
}

/// The registry does not know the repository (`NAME_UNKNOWN`, or a bare 404).
fn is_unknown_repository(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError, OciErrorCode};
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::NameUnknown | OciErrorCode::NotFound))
        }
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// One registry client per protocol, shared by every stream.
fn client(insecure: bool) -> &'static Client {
    static HTTPS: OnceLock<Client> = OnceLock::new();
    static HTTP: OnceLock<Client> = OnceLock::new();
    if insecure {
        HTTP.get_or_init(|| oci::build_client(USER_AGENT, ClientProtocol::Http))
    } else {
        HTTPS.get_or_init(|| oci::build_client(USER_AGENT, ClientProtocol::Https))
    }
}

/// Versions are tags; a tag named `<os>_<release>_<arch>_<variant>_<date>_<time>` (the
/// gateway's upload naming) names its product too.
fn count(tags: &[String]) -> Observation {
    let products: BTreeSet<Vec<&str>> = tags
        .iter()
        .filter_map(|tag| {
            let parts: Vec<&str> = tag.split('_').collect();
            let serial = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
            (parts.len() == 6 && serial(parts[4], 8) && serial(parts[5], 4)).then(|| parts[..4].to_vec())
        })
        .collect();
    Observation { products: products.len(), versions: tags.len() }
}

/// Credentials from the source's dockerconfigjson Secret; anonymous without one.
async fn registry_auth(stream: &ImageStream, source: &OciSource, ctx: &Context) -> Result<RegistryAuth> {
    let Some(name) = &source.credentials_secret else { return Ok(RegistryAuth::Anonymous) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &stream.namespace().unwrap_or_default());
    let secret =
        secrets.get_opt(name).await?.ok_or_else(|| Error::Credentials(format!("Secret {name:?} not found")))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| Error::Credentials(format!("Secret {name:?} has no .dockerconfigjson key")))?;
    let text =
        std::str::from_utf8(&bytes.0).map_err(|_| Error::Credentials(format!("Secret {name:?} is not UTF-8")))?;
    oci::auth_from_docker_config(text, &source.registry)
        .map_err(|e| Error::Credentials(format!("Secret {name:?}: {e}")))
}

fn missing_gateway(name: &str, stream: &ImageStream) -> String {
    let ns = stream.namespace().unwrap_or_default();
    format!(
        "OtaGateway {name:?} not found in namespace {ns:?}; create it, or set spec.gatewayRef to an existing gateway"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ImageStreamSpec {
        serde_json::from_value(json).unwrap()
    }

    fn upload() -> serde_json::Value {
        serde_json::json!({"upload": {"registry": "127.0.0.1:15000", "repository": "images/up", "insecure": true}})
    }

    fn gateway(token: bool) -> OtaGateway {
        let mut gw = crate::fixtures::gateway();
        if token {
            gw.spec.upload_token_secret = Some(updraft_crds::SecretKeyRef { name: "up".into(), key: "token".into() });
        }
        gw
    }

    #[test]
    fn valid_specs_give_their_interval() {
        let up = spec(serde_json::json!({"source": upload()}));
        assert_eq!(validate("images", &up, Some(&gateway(true))).unwrap(), Duration::from_secs(3600));
        assert_eq!(validate("images", &up, None).unwrap(), Duration::from_secs(3600));
        let oci = spec(serde_json::json!({
            "source": {"oci": {"registry": "127.0.0.1:15000", "repository": "images/debian"}}, "interval": "10m",
        }));
        assert_eq!(validate("lab.images", &oci, None).unwrap(), Duration::from_secs(600));
        let upstream = spec(serde_json::json!({
            "source": {"upstream": {"url": "https://images.linuxcontainers.org"}},
            "filters": ["os=debian", "arch=amd64", "release=bookworm", "variant=cloud"],
        }));
        validate("mirror", &upstream, None).unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let field = |json| validate("images", &spec(json), Some(&gateway(true))).unwrap_err().field;
        assert_eq!(field(serde_json::json!({"source": {}})), "source");
        let both = serde_json::json!({"source": {"upload": upload()["upload"], "upstream": {"url": "https://x"}}});
        assert_eq!(field(both), "source");
        assert_eq!(
            field(serde_json::json!({"source": {"oci": {"registry": "https://r", "repository": "x"}}})),
            "source.oci.registry"
        );
        assert_eq!(
            field(serde_json::json!({"source": {"upload": {"registry": "r:5000", "repository": "Images"}}})),
            "source.upload.repository"
        );
        let mut big = upload();
        big["upload"]["maxBytes"] = "lots".into();
        assert_eq!(field(serde_json::json!({"source": big})), "source.upload.maxBytes");
        assert_eq!(field(serde_json::json!({"source": {"upstream": {"url": "images.org"}}})), "source.upstream.url");
        let mirror = |filters| serde_json::json!({"source": {"upstream": {"url": "https://x"}}, "filters": filters});
        assert_eq!(field(mirror(serde_json::json!(["debian"]))), "filters");
        assert_eq!(field(mirror(serde_json::json!(["color=red"]))), "filters");
        assert_eq!(field(mirror(serde_json::json!(["os="]))), "filters");
        assert_eq!(field(serde_json::json!({"source": upload(), "filters": ["os=debian"]})), "filters");
        assert_eq!(field(serde_json::json!({"source": upload(), "interval": "daily"})), "interval");
    }

    #[test]
    fn an_upload_stream_needs_the_gateways_upload_token_and_a_url_safe_name() {
        let up = spec(serde_json::json!({"source": upload()}));
        let err = validate("images", &up, Some(&gateway(false))).unwrap_err();
        assert_eq!(err.field, "source.upload");
        assert!(err.to_string().contains("uploadTokenSecret"), "{err}");
        assert_eq!(validate("My_Images", &up, None).unwrap_err().field, "metadata.name");
        assert_eq!(validate(".hidden", &up, None).unwrap_err().field, "metadata.name");
    }

    #[test]
    fn tags_count_versions_and_upload_named_tags_count_products() {
        let tags: Vec<String> = [
            "debian_bookworm_amd64_default_20260101_0000",
            "debian_bookworm_amd64_default_20260102_0000",
            "debian_bookworm_arm64_default_20260101_0000",
            "alpine_3.20_amd64_cloud_20260101_1200",
            "latest",
            "a_b_c_d_e_f",
        ]
        .map(String::from)
        .into();
        assert_eq!(count(&tags), Observation { products: 3, versions: 6 });
        assert_eq!(count(&[]), Observation::default());
    }

    #[test]
    fn the_counts_are_exported_and_dropped_with_the_stream() {
        let metrics = crate::metrics::Metrics::default();
        metrics.stream_images("fleet", "images", 6, 3);
        let text = metrics.render();
        assert!(
            text.contains(r#"image_stream_images{count="versions",namespace="fleet",stream="images"} 6"#),
            "{text}"
        );
        assert!(
            text.contains(r#"image_stream_images{count="products",namespace="fleet",stream="images"} 3"#),
            "{text}"
        );
        metrics.forget_stream("fleet", "images");
        assert!(!metrics.render().contains("stream=\"images\""));
    }

    #[test]
    fn remote_add_commands_name_the_stream_and_url() {
        let url = "https://default.fleet.svc:8443/streams/images";
        assert_eq!(
            remote_add("images", url),
            [
                "incus remote add images https://default.fleet.svc:8443/streams/images --protocol simplestreams --public",
                "lxc remote add images https://default.fleet.svc:8443/streams/images --protocol simplestreams --public",
            ]
        );
    }
}
