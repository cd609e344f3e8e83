//! The delta builder of the forwarding worker: for every channel with a `current`
//! release and bases in `deltas.build`, the `esp_delta_ota` patch from each base to
//! `current`, built once and pushed to the channel's own repository as the artifact
//! [`updraft_core::delta`] describes (tag [`delta::tag`], `subject` the target's
//! manifest), where the operator finds it and every gateway replica serves it.
//!
//! Level-triggered, like the mirrors: a pass HEADs each pair's tag first (a patch in the
//! registry is never built again, by this process or the next one), fetches both
//! payloads the way the gateway does ([`crate::fetch`]: the channel's layer selection
//! and unpacking, size and digest verified, into a cache of the worker's own under
//! `<cache.dir>/deltas`), builds the patch on a blocking thread and pushes it, the tag
//! last (a push cut short leaves no tag, only blobs the next push reuses). A pass that
//! failed anywhere is retried after a backoff doubling from one second to five minutes;
//! a pass that left nothing to do ends the task until the config changes. A pair this
//! process built or found is remembered and never asked about again.
//!
//! Seen on the worker's admin listener: `/deltas` (JSON, one [`DeltaStatus`] per pair)
//! and `updraft_delta_*` on `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use updraft_core::backoff::Backoff;
use updraft_core::config::{ChannelConfig, GatewayConfig, PinnedArtifact, SourceConfig};
use updraft_core::delta;
use updraft_core::mirror::registry::{MANIFEST_TYPES, TITLE};
use updraft_core::oci::{self, OciError};

use crate::cache::{Cache, Payload};
use crate::fetch::{Fetcher, Job};
use crate::metrics::Metrics;

/// The longest wait between two passes that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One patch to have in the registry: from `base` to the channel's `current`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Wanted {
    pub(crate) channel: ChannelConfig,
    pub(crate) base: PinnedArtifact,
    pub(crate) target: PinnedArtifact,
}

impl Wanted {
    pub(crate) fn tag(&self) -> String {
        delta::tag(&self.base.digest, &self.target.digest)
    }

    /// What makes the pair unique: the repository and both manifests.
    fn key(&self) -> String {
        let s = &self.channel.source;
        format!("{}/{}:{}", s.registry, s.repository, self.tag())
    }
}

/// The pairs `config` asks for: every base of `deltas.build` other than `current`, of
/// every channel with a `current`, each pair once.
pub(crate) fn wanted(config: &GatewayConfig) -> Vec<Wanted> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for channel in &config.channels {
        let Some(target) = &channel.current else { continue };
        for base in channel.deltas.build.iter().filter(|b| b.digest != target.digest) {
            let w = Wanted { channel: channel.clone(), base: base.clone(), target: target.clone() };
            if seen.insert(w.key()) {
                out.push(w);
            }
        }
    }
    out
}

/// Why a pair is not in the registry yet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeltaError {
    #[error(transparent)]
    Registry(#[from] OciError),
    #[error("fetching {what}: {reason}")]
    Fetch { what: &'static str, reason: String },
    #[error("building the patch: {0}")]
    Build(String),
    #[error("pushing the patch: {0}")]
    Push(String),
    #[error("cache: {0}")]
    Cache(String),
}

impl DeltaError {
    /// The `outcome` label of `updraft_delta_builds_total`.
    fn outcome(&self) -> &'static str {
        match self {
            DeltaError::Registry(_) => "registry_failed",
            DeltaError::Fetch { .. } => "fetch_failed",
            DeltaError::Build(_) => "build_failed",
            DeltaError::Push(_) => "push_failed",
            DeltaError::Cache(_) => "cache_failed",
        }
    }
}

/// What the builder knows of one pair (`GET /deltas` on the admin port).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeltaStatus {
    pub(crate) channel: String,
    /// The base release's version and the target's.
    pub(crate) base: String,
    pub(crate) target: String,
    pub(crate) tag: String,
    /// `pending`, `built` (by this process), `present` (found in the registry), `failed`.
    pub(crate) state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) patch_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) build_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A patch built and pushed.
struct Built {
    patch_bytes: u64,
    target_bytes: u64,
    build: Duration,
}

/// The builder: its own payload cache, what it has done, its metrics. One per worker
/// process; it outlives config reloads (what was built stays known).
pub(crate) struct Builder {
    cache_dir: PathBuf,
    max_bytes: u64,
    /// Opened at the first build, so a worker with nothing to build writes nothing.
    fetcher: Mutex<Option<Arc<Fetcher>>>,
    /// Keys ([`Wanted::key`]) of pairs built or found in the registry.
    done: Mutex<HashSet<String>>,
    statuses: Mutex<BTreeMap<String, DeltaStatus>>,
    registry: Registry,
    builds: IntCounterVec,
    build_seconds: Histogram,
    patch_bytes: IntCounterVec,
    target_bytes: IntCounterVec,
}

impl Builder {
    /// A builder caching payloads under `cache_dir` (created at the first build).
    pub(crate) fn new(cache_dir: PathBuf, max_bytes: u64) -> Self {
        let registry = Registry::new_custom(Some("updraft_delta".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let build_seconds = Histogram::with_opts(
            HistogramOpts::new("build_seconds", "Time to compute one patch (fetching and pushing excluded)")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(build_seconds.clone())).expect("unique metric");
        Self {
            cache_dir,
            max_bytes,
            fetcher: Mutex::default(),
            done: Mutex::default(),
            statuses: Mutex::default(),
            builds: counter(
                "builds_total",
                "Pairs handled, by outcome: built, present (already in the registry), or why not",
                &["channel", "outcome"],
            ),
            build_seconds,
            patch_bytes: counter("patch_bytes_total", "Bytes of the patches built", &["channel"]),
            target_bytes: counter("target_bytes_total", "Bytes of the full images those patches replace", &["channel"]),
            registry,
        }
    }

    /// The Prometheus text exposition of the `updraft_delta_*` metrics.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }

    pub(crate) fn statuses(&self) -> Vec<DeltaStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn update(&self, w: &Wanted, change: impl FnOnce(&mut DeltaStatus)) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let status = statuses.entry(format!("{}/{}", w.channel.name, w.tag())).or_insert_with(|| DeltaStatus {
            channel: w.channel.name.clone(),
            base: w.base.version.clone(),
            target: w.target.version.clone(),
            tag: w.tag(),
            state: "pending",
            ..Default::default()
        });
        change(status);
    }

    /// Runs passes over the pairs of `config` until none is left to do.
    pub(crate) async fn run(self: Arc<Self>, config: Arc<GatewayConfig>) {
        let wanted = wanted(&config);
        {
            let keep: HashSet<String> = wanted.iter().map(|w| format!("{}/{}", w.channel.name, w.tag())).collect();
            self.statuses.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| keep.contains(k));
        }
        if wanted.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
        loop {
            let failed = self.pass(&wanted, &config).await;
            if failed == 0 {
                tracing::info!(pairs = wanted.len(), "every delta patch is in the registry");
                return;
            }
            let wait = backoff.wait();
            tracing::warn!(failed, retry_in_s = wait.as_secs_f64(), "delta pass incomplete; retrying after a backoff");
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass: every pair not known done is checked, and built when missing. Returns
    /// how many failed.
    pub(crate) async fn pass(&self, wanted: &[Wanted], config: &GatewayConfig) -> usize {
        let mut failed = 0;
        for w in wanted {
            if self.done.lock().unwrap_or_else(|e| e.into_inner()).contains(&w.key()) {
                continue;
            }
            let channel = w.channel.name.as_str();
            match self.ensure(w, config).await {
                Ok(None) => {
                    tracing::info!(
                        channel,
                        base = w.base.version,
                        target = w.target.version,
                        tag = w.tag(),
                        "delta patch already in the registry"
                    );
                    self.builds.with_label_values(&[channel, "present"]).inc();
                    self.update(w, |s| {
                        s.state = "present";
                        s.error = None;
                    });
                    self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(w.key());
                }
                Ok(Some(built)) => {
                    self.builds.with_label_values(&[channel, "built"]).inc();
                    self.build_seconds.observe(built.build.as_secs_f64());
                    self.patch_bytes.with_label_values(&[channel]).inc_by(built.patch_bytes);
                    self.target_bytes.with_label_values(&[channel]).inc_by(built.target_bytes);
                    self.update(w, |s| {
                        s.state = "built";
                        s.patch_bytes = Some(built.patch_bytes);
                        s.target_bytes = Some(built.target_bytes);
                        s.build_ms = Some(built.build.as_millis() as u64);
                        s.error = None;
                    });
                    self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(w.key());
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(channel, base = w.base.version, target = w.target.version, error = %e,
                        "delta patch not built; the next pass retries");
                    self.builds.with_label_values(&[channel, e.outcome()]).inc();
                    self.update(w, |s| {
                        s.state = "failed";
                        s.error = Some(e.to_string());
                    });
                }
            }
        }
        failed
    }

    /// The builder's fetcher, its cache opened at the first call.
    fn fetcher(&self) -> Result<Arc<Fetcher>, DeltaError> {
        let mut fetcher = self.fetcher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &*fetcher {
            return Ok(f.clone());
        }
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::open(&self.cache_dir, self.max_bytes, metrics.clone())
            .map_err(|e| DeltaError::Cache(format!("{}: {e}", self.cache_dir.display())))?;
        let f = Arc::new(Fetcher::new(Arc::new(cache), metrics));
        *fetcher = Some(f.clone());
        Ok(f)
    }

    /// Makes sure the pair's patch is in the registry: `None` when it already was.
    async fn ensure(&self, w: &Wanted, config: &GatewayConfig) -> Result<Option<Built>, DeltaError> {
        let fetcher = self.fetcher()?;
        let client = fetcher.client_for(config.channels.iter().map(|c| &c.source));
        let source = &w.channel.source;
        let auth = oci::registry_auth(source)?;
        let tag = oci::tag_reference(&source.registry, &source.repository, &w.tag());
        match oci::probe().manifest_digest(&client, &tag, source.insecure, &auth).await {
            Ok(_) => return Ok(None),
            Err(e) if oci::is_unknown_repository(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let fetch = |what: &'static str, pinned: &PinnedArtifact| {
            let job = Job::new(source, pinned, &w.channel.artifact);
            let fetcher = fetcher.clone();
            async move { fetcher.fetch(job).await.map_err(|e| DeltaError::Fetch { what, reason: e.to_string() }) }
        };
        let (base, target) = tokio::try_join!(fetch("base", &w.base), fetch("target", &w.target))?;
        let subject = self.subject(&client, source, &auth, &w.target.digest).await?;
        let base_bytes = base.summary.size;
        let (patch, base_sha256, build) = build(base, target.clone()).await?;
        let (patch_bytes, target_bytes) = (patch.len() as u64, target.summary.size);
        let artifact = Artifact { w, subject, base_sha256, target_sha256: target.summary.sha256.clone() };
        push(source, &artifact, patch).await?;
        tracing::info!(
            channel = w.channel.name,
            base = w.base.version,
            target = w.target.version,
            tag = w.tag(),
            base_bytes,
            target_bytes,
            patch_bytes,
            build_ms = build.as_millis() as u64,
            "delta patch built and pushed"
        );
        Ok(Some(Built { patch_bytes, target_bytes, build }))
    }

    /// The descriptor of the target's manifest (as the registry holds it, index or not).
    async fn subject(
        &self,
        client: &oci_client::Client,
        source: &SourceConfig,
        auth: &oci_client::secrets::RegistryAuth,
        digest: &str,
    ) -> Result<serde_json::Value, DeltaError> {
        let reference = oci::digest_reference(&source.registry, &source.repository, digest);
        let registry = |e| OciError::Registry { registry: source.registry.clone(), source: e };
        let (raw, pulled) = client.pull_manifest_raw(&reference, auth, MANIFEST_TYPES).await.map_err(registry)?;
        if pulled != digest {
            return Err(DeltaError::Fetch {
                what: "target manifest",
                reason: format!("{digest} came back as {pulled}"),
            });
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Typed {
            media_type: Option<String>,
        }
        let media_type = serde_json::from_slice::<Typed>(&raw)
            .ok()
            .and_then(|t| t.media_type)
            .unwrap_or_else(|| MANIFEST_TYPES[0].to_owned());
        Ok(serde_json::json!({"mediaType": media_type, "digest": digest, "size": raw.len()}))
    }
}

/// Computes the patch and the base's image digest on a blocking thread. A panic in the
/// patch code is a failed build, not a dead worker.
async fn build(base: Arc<Payload>, target: Arc<Payload>) -> Result<(Vec<u8>, String, Duration), DeltaError> {
    let task = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let patch = updraft_delta::esp::patch(&base.bytes, &target.bytes);
        let took = started.elapsed();
        let base_sha256 = hex::encode(updraft_delta::esp::image_digest(&base.bytes));
        (patch, base_sha256, took)
    });
    task.await.map_err(|e| {
        let reason = match e.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into()),
            Err(e) => e.to_string(),
        };
        DeltaError::Build(reason)
    })
}

/// What the patch's manifest says besides the layer.
struct Artifact<'a> {
    w: &'a Wanted,
    /// The target manifest's descriptor.
    subject: serde_json::Value,
    base_sha256: String,
    target_sha256: String,
}

impl Artifact<'_> {
    /// The artifact manifest over the patch layer `layer` of `size` bytes.
    fn manifest(&self, layer: &str, size: u64) -> serde_json::Value {
        let w = self.w;
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPES[0],
            "artifactType": delta::ESP_ARTIFACT_TYPE,
            "config": {"mediaType": super::oci::EMPTY_TYPE, "digest": super::oci::empty_config_digest(), "size": super::oci::EMPTY_CONFIG.len()},
            "layers": [{
                "mediaType": delta::ESP_PATCH_MEDIA_TYPE,
                "digest": layer,
                "size": size,
                "annotations": {TITLE: format!("{}.patch", w.tag())},
            }],
            "subject": self.subject,
            "annotations": {
                delta::ANNOTATION_BASE_VERSION: w.base.version,
                delta::ANNOTATION_BASE_DIGEST: w.base.digest,
                delta::ANNOTATION_BASE_SHA256: self.base_sha256,
                delta::ANNOTATION_TARGET_VERSION: w.target.version,
                delta::ANNOTATION_TARGET_DIGEST: w.target.digest,
                delta::ANNOTATION_TARGET_SHA256: self.target_sha256,
            },
        })
    }
}

/// Pushes the patch layer, the empty config, then the manifest under the pair's tag.
async fn push(source: &SourceConfig, artifact: &Artifact<'_>, patch: Vec<u8>) -> Result<(), DeltaError> {
    let failed = |e: &dyn std::fmt::Display| DeltaError::Push(e.to_string());
    let repo = super::oci::repository(source, "channel");
    let auth = repo.auth().map_err(|e| failed(&e))?;
    let tag = repo.tag(&artifact.w.tag());
    let client = repo.client();
    client.store_auth_if_needed(&source.registry, &auth).await;
    client.auth(&tag, &auth, oci_client::RegistryOperation::Push).await.map_err(|e| failed(&e))?;
    let size = patch.len() as u64;
    let layer = format!("sha256:{}", hex::encode(Sha256::digest(&patch)));
    oci::push_blob_once(client, &repo.at(&layer), &layer, patch).await.map_err(|e| failed(&e))?;
    let empty = super::oci::empty_config_digest();
    oci::push_blob_once(client, &repo.at(&empty), &empty, super::oci::EMPTY_CONFIG).await.map_err(|e| failed(&e))?;
    let body = serde_json::to_vec(&artifact.manifest(&layer, size)).expect("a manifest serializes");
    let content_type = MANIFEST_TYPES[0].parse().expect("a valid header");
    client.push_manifest_raw(&tag, body, content_type).await.map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn config(yaml_channels: &str) -> GatewayConfig {
        let config = GatewayConfig::parse(format!("channels:\n{yaml_channels}").as_bytes()).unwrap();
        config.validate().unwrap();
        config
    }

    fn channel(name: &str, current: Option<&str>, build: &[(&str, &str)]) -> String {
        let mut s =
            format!("- name: {name}\n  source: {{registry: 127.0.0.1:1, repository: fw/{name}, insecure: true}}\n");
        match current {
            Some(d) => s += &format!("  current: {{version: 2.0.0, tag: v2.0.0, digest: \"{d}\"}}\n"),
            None => s += "  policy: {range: '*'}\n",
        }
        if !build.is_empty() {
            s += "  deltas:\n    build:\n";
            for (version, digest) in build {
                s += &format!("    - {{version: {version}, tag: v{version}, digest: \"{digest}\"}}\n");
            }
        }
        s
    }

    #[test]
    fn each_base_other_than_current_is_wanted_once_per_channel_with_a_current() {
        let c = config(
            &[
                channel("a", Some(C), &[("1.0.0", A), ("1.1.0", B), ("2.0.0", C), ("1.0.0", A)]),
                channel("b", None, &[("1.0.0", A)]),
                channel("c", Some(C), &[]),
            ]
            .concat(),
        );
        let wanted = wanted(&c);
        let pairs: Vec<_> =
            wanted.iter().map(|w| (w.channel.name.as_str(), w.base.version.as_str(), w.tag())).collect();
        assert_eq!(
            pairs,
            [
                ("a", "1.0.0", "delta-aaaaaaaaaaaaaaaa-cccccccccccccccc".to_owned()),
                ("a", "1.1.0", "delta-bbbbbbbbbbbbbbbb-cccccccccccccccc".to_owned())
            ]
        );
    }

    #[test]
    fn the_manifest_is_an_artifact_of_the_target_with_every_annotation() {
        let c = config(&channel("a", Some(C), &[("1.0.0", A)]));
        let w = &wanted(&c)[0];
        let subject = serde_json::json!({"mediaType": MANIFEST_TYPES[0], "digest": C, "size": 400});
        let artifact =
            Artifact { w, subject: subject.clone(), base_sha256: "11".repeat(32), target_sha256: "22".repeat(32) };
        let m = artifact.manifest("sha256:00", 1234);
        assert_eq!(m["artifactType"], delta::ESP_ARTIFACT_TYPE);
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
        assert_eq!(m["config"]["digest"], format!("sha256:{}", hex::encode(Sha256::digest(b"{}"))));
        assert_eq!(m["layers"][0]["mediaType"], delta::ESP_PATCH_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["size"], 1234);
        assert_eq!(m["subject"], subject);
        let a = &m["annotations"];
        assert_eq!(
            (&a[delta::ANNOTATION_BASE_VERSION], &a[delta::ANNOTATION_BASE_DIGEST]),
            (&"1.0.0".into(), &A.into())
        );
        assert_eq!(a[delta::ANNOTATION_BASE_SHA256], "11".repeat(32));
        assert_eq!(
            (&a[delta::ANNOTATION_TARGET_VERSION], &a[delta::ANNOTATION_TARGET_DIGEST]),
            (&"2.0.0".into(), &C.into())
        );
        assert_eq!(a[delta::ANNOTATION_TARGET_SHA256], "22".repeat(32));
    }

    #[tokio::test]
    async fn a_registry_that_does_not_answer_fails_the_pair_and_it_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let builder = Builder::new(dir.path().join("deltas"), 1 << 20);
        let c = config(&channel("a", Some(C), &[("1.0.0", A)]));
        assert_eq!(builder.pass(&wanted(&c), &c).await, 1);
        let status = &builder.statuses()[0];
        assert_eq!((status.state, status.base.as_str(), status.target.as_str()), ("failed", "1.0.0", "2.0.0"));
        assert!(builder.render().contains("updraft_delta_builds_total{channel=\"a\",outcome=\"registry_failed\"} 1"));
    }
}
