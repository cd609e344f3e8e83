//! ImageStream controller: read → validate → observe the source (metadata only, on the
//! stream's schedule; `observe`) → status. The OtaGateway controller renders the
//! stream's source (never its versions) into the gateway's `streams` section; the
//! gateway builds and serves the simplestreams index.
//!
//! Every source kind is observed and counted as the gateway indexes it: an `oci` or
//! `upload` repository (products from manifest annotations or the image's
//! `metadata.yaml`), an `upstream` server (its index and products document, filters
//! and `keepVersions` applied). A source that cannot be reached keeps the last counts;
//! `SourceReachable=False` says why. Under `spec.verify` every image version's
//! signature is checked with the code channels use: `Verified` True/False, an event on
//! each change naming tag, digest and why, and a `release.failed` webhook to the
//! gateway's receivers for each version newly left out.

mod observe;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, instrument, warn};
use updraft_core::cosign::Verifier;
use updraft_crds::conditions::{self, set_condition, NewCondition, READY, STALLED};
use updraft_crds::stream::ImageSource;
use updraft_crds::{ImageStream, ImageStreamSpec, ImageStreamStatus, OtaGateway};

use crate::attach::gateway_of;
use crate::checks;
use crate::context::{Context, Observation};
use crate::error::{Error, Result, SpecError};
use crate::notify::{self, Refused};
use crate::render;
use crate::schedule::Failure;
use crate::secrets;
use crate::status::{self, Stall, VERIFIED};

pub(crate) const CONTROLLER: &str = "imagestream";
/// The keys a filter may test (what the gateway's upstream filters accept).
const FILTER_KEYS: [&str; 4] = ["os", "release", "arch", "variant"];
/// Condition that reports whether the last look at the source reached it.
const SOURCE_REACHABLE: &str = "SourceReachable";
/// How often a stream whose public-key Secret is missing looks again.
const SECRET_RECHECK: Duration = Duration::from_secs(10);

#[instrument(skip_all, fields(namespace = stream.namespace().unwrap_or_default(), name = stream.name_any()))]
pub(crate) async fn reconcile(stream: Arc<ImageStream>, ctx: Arc<Context>) -> Result<Action> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let schedule = &ctx.schedules.streams;
    let old = stream.status.clone().unwrap_or_default();
    let generation = stream.metadata.generation;
    let mut status = ImageStreamStatus { observed_generation: generation, ..old.clone() };
    let gateway = ctx.gateways.get(&gateway_of(stream.as_ref()));

    let interval = match validate(&stream.name_any(), &stream.spec, gateway.as_deref()) {
        Ok(interval) => interval,
        Err(e) => {
            status::invalid_spec(&ctx, stream.as_ref(), status, e, CONTROLLER).await?;
            schedule.forget(stream.as_ref());
            return Ok(Action::await_change());
        }
    };
    let verifier = match verifier(&stream, &ctx).await? {
        Ok(verifier) => verifier,
        Err(stall) => {
            status::stall(&ctx, stream.as_ref(), status, stall).await?;
            return Ok(Action::requeue(SECRET_RECHECK));
        }
    };
    set_condition(
        &mut status.conditions,
        NewCondition::new(STALLED, false, "SpecValid", "the spec is valid"),
        generation,
    );

    let before = schedule.last_result(&stream);
    if !stream.spec.suspend && schedule.due_in(&stream).is_none() {
        let result = observe(&stream, &ctx, verifier.as_ref()).await;
        ctx.metrics.registry_check(result.is_ok());
        if let Err(e) = &result {
            ctx.metrics.error(CONTROLLER, e);
            warn!(error = %e, "observing the stream's source failed");
        }
        schedule.checked(&stream, result.map_err(|e| (&e).into()), interval);
    }
    let observation = schedule.last_result(&stream);
    let failure = schedule.last_failure(&stream);
    // An index the gateway refuses is not what it serves: the last counts are kept.
    let counted = observation.as_ref().filter(|o| o.refused.is_none());
    let indexed = counted.and_then(|o| record_counts(&ctx, &stream, &mut status, &old, o));
    set_source_condition(&mut status, failure.as_ref(), observation.is_some(), generation);
    let verification = set_verified(&stream.spec, &mut status, observation.as_ref(), generation);
    let (url, remote_add, https) = match &gateway {
        Some(gw) => {
            let url = render::stream_url(gw, &stream.name_any());
            (Some(url.clone()), remote_add(&stream.name_any(), &url), gw.spec.tls.is_some())
        }
        None => (None, Vec::new(), false),
    };
    status.url = url;
    status.remote_add = remote_add;
    let (ready, reason, message) = readiness(&stream, gateway.is_some(), https, failure.as_ref(), &observation, &old);
    let became_ready = ready && !conditions::is_true(&old.conditions, READY);
    let was_failing = conditions::find(&old.conditions, READY).is_some_and(|c| c.reason == reason);
    set_condition(&mut status.conditions, NewCondition::new(READY, ready, reason, message.clone()), generation);
    let retrying = observation.is_none() && failure.is_some();
    status::set_reconciling(
        &mut status.conditions,
        retrying,
        "nothing to do until the next look at the source",
        generation,
    );

    status::write(&ctx.client, stream.as_ref(), &status).await?;
    schedule.succeeded(&stream);
    if let Some(note) = indexed {
        info!(%note, "indexed");
        ctx.event(stream.as_ref(), EventType::Normal, "Indexed", note).await;
    }
    if let Some((verified, note)) = verification {
        ctx.event(
            stream.as_ref(),
            if verified { EventType::Normal } else { EventType::Warning },
            if verified { "Verified" } else { "Unverified" },
            note,
        )
        .await;
        announce_refused(&ctx, &stream, gateway, before.as_ref(), observation.as_ref());
    }
    if became_ready {
        info!(%message, "ready");
        ctx.event(stream.as_ref(), EventType::Normal, "Ready", message).await;
    } else if !ready && !was_failing && reason != "Observing" {
        ctx.event(stream.as_ref(), EventType::Warning, reason, message).await;
    }
    if stream.spec.suspend {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(schedule.due_in(&stream).unwrap_or(interval)))
}

/// Copies the observed counts into status (and metrics); `lastIndexed` moves when they
/// change. Returns the note of the `Indexed` event when they changed.
fn record_counts(
    ctx: &Context,
    stream: &ImageStream,
    status: &mut ImageStreamStatus,
    old: &ImageStreamStatus,
    o: &Observation,
) -> Option<String> {
    ctx.metrics.stream_images(&stream.namespace().unwrap_or_default(), &stream.name_any(), o.versions, o.products);
    status.products = o.products.try_into().unwrap_or(i32::MAX);
    status.versions = o.versions.try_into().unwrap_or(i32::MAX);
    let changed = status.versions != old.versions || status.products != old.products;
    if changed || old.last_indexed.is_none() {
        status.last_indexed = Some(conditions::now());
    }
    (changed && old.last_indexed.is_some()).then(|| {
        format!("{} versions of {} products (were {} of {})", o.versions, o.products, old.versions, old.products)
    })
}

/// `SourceReachable`: False with the failure while the source cannot be reached, True
/// once a look succeeded.
fn set_source_condition(
    status: &mut ImageStreamStatus,
    failure: Option<&Failure>,
    seen: bool,
    generation: Option<i64>,
) {
    let condition = match failure {
        Some(f) if f.unreachable => {
            let kept = format!(
                "{}; the last counts ({} versions of {} products) are kept",
                f.message, status.versions, status.products
            );
            NewCondition::new(SOURCE_REACHABLE, false, f.reason, kept)
        }
        _ if seen => NewCondition::new(SOURCE_REACHABLE, true, "Reachable", "the last look at the source succeeded"),
        _ => return,
    };
    set_condition(&mut status.conditions, condition, generation);
}

/// `Verified` under `spec.verify`, from the last observation; none without it. Returns
/// the event to publish (verified or not, and its note) when the condition changed.
fn set_verified(
    spec: &ImageStreamSpec,
    status: &mut ImageStreamStatus,
    observation: Option<&Observation>,
    generation: Option<i64>,
) -> Option<(bool, String)> {
    if spec.verify.is_none() {
        status.conditions.retain(|c| c.type_ != VERIFIED);
        return None;
    }
    let o = observation?;
    let (verified, reason, message) = match o.unverified.as_slice() {
        [] => (true, "Verified", format!("all {} image versions are signed and verify", o.verified)),
        refused @ [first, ..] => {
            let mut message = format!(
                "{} of {} image versions are not indexed, their signatures do not verify: ",
                refused.len(),
                refused.len() + o.verified
            );
            let shown: Vec<&str> = refused.iter().take(3).map(|u| u.message.as_str()).collect();
            message.push_str(&shown.join("; "));
            if refused.len() > 3 {
                message.push_str(&format!("; and {} more", refused.len() - 3));
            }
            (false, first.reason, message)
        }
    };
    let changed = status::set_verified(&mut status.conditions, verified, reason, &message, generation);
    changed.then_some((verified, message))
}

/// A `release.failed` webhook for each version the last observation left out that the
/// one before did not.
fn announce_refused(
    ctx: &Arc<Context>,
    stream: &ImageStream,
    gateway: Option<Arc<OtaGateway>>,
    before: Option<&Observation>,
    now: Option<&Observation>,
) {
    let Some(now) = now else { return };
    let known: BTreeSet<&str> = before.iter().flat_map(|o| o.unverified.iter().map(|u| u.digest.as_str())).collect();
    for u in now.unverified.iter().filter(|u| !known.contains(u.digest.as_str())) {
        let refused = Refused {
            namespace: stream.namespace().unwrap_or_default(),
            stream: Some(stream.name_any()),
            version: u.tag.clone(),
            tag: u.tag.clone(),
            digest: u.digest.clone(),
            reason: u.message.clone(),
            ..Default::default()
        };
        notify::failed_verification(ctx, gateway.clone(), refused);
    }
}

/// `Ready`: whether the gateway serves the stream, and what.
fn readiness(
    stream: &ImageStream,
    gateway: bool,
    https: bool,
    failure: Option<&Failure>,
    observation: &Option<Observation>,
    old: &ImageStreamStatus,
) -> (bool, &'static str, String) {
    let indexed_before = old.last_indexed.is_some();
    match (gateway, failure, observation) {
        (false, _, _) => (false, "GatewayNotFound", missing_gateway(&stream.spec.gateway_ref, stream)),
        (true, Some(f), None) if !indexed_before || !f.unreachable => (false, f.reason, f.message.clone()),
        (true, None, None) if stream.spec.suspend => {
            (false, "Suspended", "suspended before the source was looked at".to_owned())
        }
        (true, None, None) => (false, "Observing", "waiting for the first look at the source".to_owned()),
        (true, _, Some(Observation { refused: Some(why), .. })) => {
            let message = format!(
                "gateway {:?} refuses the index: {why}; it keeps serving the last one it published ({} versions of \
                 {} products)",
                stream.spec.gateway_ref, old.versions, old.products
            );
            (false, "IndexRefused", message)
        }
        (true, _, _) => {
            let (versions, products) = match observation {
                Some(o) => (o.versions, o.products),
                None => (old.versions.try_into().unwrap_or(0), old.products.try_into().unwrap_or(0)),
            };
            let mut message =
                format!("gateway {:?} serves {versions} versions of {products} products", stream.spec.gateway_ref);
            if let Some(o) = observation.as_ref().filter(|o| !o.left_out.is_empty()) {
                message.push_str(&left_out_note(&o.left_out));
            }
            if let Some(f) = failure {
                message.push_str(&format!(" (as last seen; the last look at the source failed: {})", f.message));
            }
            if !https {
                message.push_str(
                    "; lxc and incus add simplestreams remotes over https only: set spec.tls on the OtaGateway",
                );
            }
            (true, "Serving", message)
        }
    }
}

/// What `Ready` adds about tags that are not image versions: how many, and the first
/// three with their reasons (a metadata tarball refused as a bomb, no metadata layer…).
fn left_out_note(left_out: &[String]) -> String {
    let tags = if left_out.len() == 1 { "tag" } else { "tags" };
    let mut note = format!("; {} {tags} left out of the index: ", left_out.len());
    note.push_str(&left_out.iter().take(3).map(String::as_str).collect::<Vec<_>>().join("; "));
    if left_out.len() > 3 {
        note.push_str(&format!("; and {} more", left_out.len() - 3));
    }
    note
}

/// Under `spec.verify`: the verifier of the key the gateway reads too
/// (`publicKeySecret.key`, default [`render::DEFAULT_PUBLIC_KEY`]), or the stall of a Secret
/// that is missing or holds no usable key (rechecked every [`SECRET_RECHECK`]).
async fn verifier(stream: &ImageStream, ctx: &Context) -> Result<Result<Option<(Verifier, String)>, Stall<'static>>> {
    let Some(verify) = &stream.spec.verify else { return Ok(Ok(None)) };
    let name = &verify.public_key_secret.name;
    let ns = stream.namespace().unwrap_or_default();
    let waiting = "rechecking the Secret every 10 s";
    let Some(secret) = secrets::get(ctx, &ns, name).await? else {
        let message = format!("spec.verify.publicKeySecret: Secret {name:?} not found in namespace {ns:?}");
        return Ok(Err(Stall { reason: "SecretNotFound", message, waiting }));
    };
    match secrets::verifier(&secret, verify, Some(render::DEFAULT_PUBLIC_KEY)) {
        Ok(verifier) => {
            let mut hash = Sha256::new();
            for (key, value) in secret.data.iter().flatten() {
                hash.update(key.as_bytes());
                hash.update([0]);
                hash.update(&value.0);
                hash.update([0]);
            }
            Ok(Ok(Some((verifier, hex::encode(hash.finalize())))))
        }
        Err(e) => {
            let message = format!("spec.verify.publicKeySecret: {e}");
            Ok(Err(Stall { reason: "PublicKeyError", message, waiting }))
        }
    }
}

/// The PEM certificates under `ca.crt` of the upstream's `caConfigMap`, which the
/// gateway trusts too (mounted where the rendered `caFile` points).
async fn upstream_ca(ctx: &Context, namespace: &str, name: &str) -> Result<Vec<u8>> {
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let field = "spec.source.upstream.caConfigMap";
    let config_map = config_maps
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::CaBundle(format!("{field}: ConfigMap {name:?} not found in namespace {namespace:?}")))?;
    config_map
        .data
        .and_then(|mut data| data.remove(render::UPSTREAM_CA_KEY))
        .map(String::into_bytes)
        .ok_or_else(|| Error::CaBundle(format!("{field}: ConfigMap {name:?} has no key {:?}", render::UPSTREAM_CA_KEY)))
}

/// Looks at the stream's source: what [`observe`] counts.
async fn observe(stream: &ImageStream, ctx: &Context, verifier: Option<&(Verifier, String)>) -> Result<Observation> {
    let spec = &stream.spec;
    let keep = usize::try_from(spec.keep_versions).unwrap_or(0);
    if let Some(upstream) = &spec.source.upstream {
        let ca = match &upstream.ca_config_map {
            Some(name) => Some(upstream_ca(ctx, &stream.namespace().unwrap_or_default(), name).await?),
            None => None,
        };
        return observe::upstream(&ctx.clients, &upstream.url, ca.as_deref(), &spec.filters, keep).await;
    }
    let source = match (&spec.source.oci, &spec.source.upload) {
        (Some(oci), _) => oci,
        (_, Some(upload)) => &upload.repository,
        _ => return Ok(Observation::default()),
    };
    let auth = secrets::registry_auth(ctx, &stream.namespace().unwrap_or_default(), source).await?;
    let verify = verifier.map(|(verifier, keys)| observe::Verify { verifier, keys: keys.clone() });
    observe::repository(&ctx.clients, source, &auth, keep, verify).await
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
        if spec.verify.is_some() {
            let message = "verify: an upstream source serves the upstream's images as they are; signatures are \
                           checked on oci and upload sources only";
            return Err(SpecError::new("verify", message));
        }
    }
    if spec.verify.as_ref().is_some_and(|v| v.public_key_secret.name.is_empty()) {
        return Err(SpecError::new("verify.publicKeySecret.name", "verify.publicKeySecret.name is empty"));
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
    fn tags_left_out_are_named_with_their_reasons_three_at_most() {
        let left: Vec<String> = (1..=5).map(|i| format!("tag t{i} (sha256:{i}): why {i}")).collect();
        assert_eq!(left_out_note(&left[..1]), "; 1 tag left out of the index: tag t1 (sha256:1): why 1");
        assert_eq!(
            left_out_note(&left),
            "; 5 tags left out of the index: tag t1 (sha256:1): why 1; tag t2 (sha256:2): why 2; \
             tag t3 (sha256:3): why 3; and 2 more"
        );
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
    fn verify_is_for_oci_and_upload_sources_and_names_a_secret() {
        let field = |json| validate("images", &spec(json), Some(&gateway(true))).map(|_| ()).map_err(|e| e.field);
        let key = serde_json::json!({"publicKeySecret": {"name": "cosign"}});
        assert_eq!(field(serde_json::json!({"source": upload(), "verify": key})), Ok(()));
        let oci = serde_json::json!({"oci": {"registry": "r:5000", "repository": "images"}});
        assert_eq!(field(serde_json::json!({"source": oci, "verify": key})), Ok(()));
        let mirror = serde_json::json!({"upstream": {"url": "https://images.example"}});
        assert_eq!(field(serde_json::json!({"source": mirror, "verify": key})), Err("verify".into()));
        let unnamed = serde_json::json!({"publicKeySecret": {"name": ""}});
        assert_eq!(
            field(serde_json::json!({"source": upload(), "verify": unnamed})),
            Err("verify.publicKeySecret.name".into())
        );
    }

    fn observed(versions: usize, unverified: &[(&str, &str)]) -> Observation {
        Observation {
            products: 1,
            versions,
            verified: versions,
            unverified: unverified
                .iter()
                .map(|(tag, digest)| crate::context::Unverified {
                    tag: (*tag).into(),
                    digest: (*digest).into(),
                    reason: "NoSignature",
                    message: format!("tag {tag} ({digest}) is left out: no cosign signature for {digest}"),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn verified_names_tag_digest_and_why_and_changes_only_on_transitions() {
        let verifying = spec(serde_json::json!({"source": upload(), "verify": {"publicKeySecret": {"name": "k"}}}));
        let mut status = ImageStreamStatus::default();
        assert_eq!(set_verified(&verifying, &mut status, None, Some(1)), None, "nothing observed yet");
        let (ok, note) = set_verified(&verifying, &mut status, Some(&observed(2, &[])), Some(1)).unwrap();
        assert!(ok && note.contains("all 2 image versions"), "{note}");
        let refused = observed(2, &[("v3", "sha256:c")]);
        let (ok, note) = set_verified(&verifying, &mut status, Some(&refused), Some(1)).unwrap();
        assert!(!ok);
        assert!(note.contains("1 of 3") && note.contains("tag v3 (sha256:c)") && note.contains("no cosign"), "{note}");
        let condition = conditions::find(&status.conditions, VERIFIED).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "NoSignature"));
        assert_eq!(set_verified(&verifying, &mut status, Some(&refused), Some(1)), None, "the same again: no event");
        let plain = spec(serde_json::json!({"source": upload()}));
        assert_eq!(set_verified(&plain, &mut status, Some(&refused), Some(1)), None);
        assert!(conditions::find(&status.conditions, VERIFIED).is_none());
    }

    #[test]
    fn an_index_the_gateway_refuses_is_not_ready_and_keeps_the_last_counts() {
        let stream = ImageStream::new("images", spec(serde_json::json!({"source": upload()})));
        let old =
            ImageStreamStatus { products: 2, versions: 5, last_indexed: Some(conditions::now()), ..Default::default() };
        let why = r#"alias "edge" is claimed by products a and b of the same architecture"#;
        let refused = Observation { products: 3, versions: 6, refused: Some(why.into()), ..Default::default() };
        let (ready, reason, message) = readiness(&stream, true, true, None, &Some(refused), &old);
        assert_eq!((ready, reason), (false, "IndexRefused"));
        assert!(message.contains(why) && message.contains("(5 versions of 2 products)"), "{message}");
    }

    #[test]
    fn an_unreachable_source_keeps_the_last_counts_and_says_so() {
        let stream =
            ImageStream::new("mirror", spec(serde_json::json!({"source": {"upstream": {"url": "https://x"}}})));
        let down = Failure::from(&Error::UpstreamUnreachable("https://x/streams/v1/index.json: refused".into()));
        let old =
            ImageStreamStatus { products: 2, versions: 5, last_indexed: Some(conditions::now()), ..Default::default() };
        let (ready, reason, message) = readiness(&stream, true, true, Some(&down), &None, &old);
        assert!(ready, "the gateway keeps serving its last index");
        assert_eq!(reason, "Serving");
        assert!(message.contains("5 versions of 2 products") && message.contains("refused"), "{message}");
        let mut status = old.clone();
        set_source_condition(&mut status, Some(&down), false, Some(1));
        let c = conditions::find(&status.conditions, SOURCE_REACHABLE).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "UpstreamUnreachable"));
        assert!(c.message.contains("last counts (5 versions of 2 products) are kept"), "{}", c.message);
        // Never indexed: not ready, with the failure.
        let (ready, reason, _) = readiness(&stream, true, true, Some(&down), &None, &ImageStreamStatus::default());
        assert_eq!((ready, reason), (false, "UpstreamUnreachable"));
        set_source_condition(&mut status, None, true, Some(1));
        assert!(conditions::is_true(&status.conditions, SOURCE_REACHABLE));
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
