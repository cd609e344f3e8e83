//! Standalone mode: channels with a version `policy` instead of a pinned digest get
//! their `current` from the registry's tags, with the resolver the operator uses
//! ([`resolve_latest`]); under `policy.verify`, the newest release whose cosign signature
//! verifies, with the resolver and verifier the operator uses ([`resolve_verified`]):
//! newer releases that do not verify are skipped and reported once per digest, never a
//! reason to serve nothing.
//!
//! One task per live snapshot starts each of its policy channels' resolutions on the
//! channel's interval (each resolution runs on its own, so a slow registry holds up
//! no other channel). The task stops as soon as its snapshot is replaced; the next
//! snapshot's task continues the schedule of every channel the reload kept.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Channel, Firmware, Snapshot};
use updraft_core::config::PinnedArtifact;
use updraft_core::cosign::KeyError;
use updraft_core::oci::{self, OciError};
use updraft_core::version::{parse_duration, resolve_latest, resolve_verified, Lookup, ResolveError, Skipped};

/// Interval of a policy whose own does not parse (validation refuses those).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Starts the resolver task of `snapshot`, which must be live.
pub(super) fn spawn(firmware: Firmware, snapshot: &Arc<Snapshot>) {
    let snapshot = Arc::downgrade(snapshot);
    let mut installed = firmware.inner.installed.subscribe();
    tokio::spawn(async move {
        while let Some(next) = run_due(&firmware, &snapshot) {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                replaced = installed.changed() => {
                    if replaced.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Starts resolving every channel of the snapshot that is due; returns when the next
/// one is, or `None` once the snapshot is no longer live.
fn run_due(firmware: &Firmware, snapshot: &Weak<Snapshot>) -> Option<Instant> {
    let live = snapshot.upgrade().filter(|s| firmware.is_live(s))?;
    let policy_channels = || live.channels.iter().filter(|c| c.config.policy.is_some());
    let now = Instant::now();
    for channel in policy_channels().filter(|c| claim(c, now)) {
        let (firmware, channel) = (firmware.clone(), channel.clone());
        tokio::spawn(async move { resolve_logged(&firmware, &channel).await });
    }
    policy_channels().filter_map(|c| *c.next_resolve.lock().expect("schedule lock")).min()
}

/// If `channel` is due at `now`, schedules its next resolution (before this one runs,
/// so a task taking over after a reload does not resolve it twice) and returns true.
fn claim(channel: &Channel, now: Instant) -> bool {
    let mut next = channel.next_resolve.lock().expect("schedule lock");
    if next.is_some_and(|at| at > now) {
        return false;
    }
    let interval = channel.config.policy.as_ref().and_then(|p| parse_duration(&p.interval).ok());
    *next = Some(now + interval.unwrap_or(DEFAULT_INTERVAL));
    true
}

async fn resolve_logged(firmware: &Firmware, channel: &Channel) {
    if let Err(reason) = resolve_once(firmware, channel).await {
        if reason.is_registry() {
            firmware.inner.metrics.registry_result(&channel.config.source.registry, false);
        }
        // When no release verifies, each one was reported as it was skipped (once).
        if !matches!(reason, StandaloneError::Resolve(ResolveError::Unverified { .. })) {
            tracing::warn!(channel = %channel.name(), %reason, "cannot resolve the channel's version; keeping what it has");
        }
    }
}

/// Why a standalone resolution left the channel as it was.
#[derive(Debug, thiserror::Error)]
enum StandaloneError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("verification keys: {0}")]
    Keys(#[from] KeyError),
}

impl StandaloneError {
    fn is_registry(&self) -> bool {
        matches!(self, StandaloneError::Resolve(e) if e.is_transient())
    }
}

impl From<OciError> for StandaloneError {
    fn from(e: OciError) -> Self {
        StandaloneError::Resolve(e.into())
    }
}

/// Resolves the channel's policy and, when the result is new, makes it the channel's
/// `current`: pinned in the cache and fetched at once. Under `policy.verify` that is the
/// newest release whose signature verifies ([`resolve_verified`]); each newer one it
/// skips is reported once per digest (log and `updraft_gateway_firmware_unverified_total`).
async fn resolve_once(firmware: &Firmware, channel: &Channel) -> Result<(), StandaloneError> {
    let Some(policy) = channel.config.policy.as_ref() else { return Ok(()) };
    let source = &channel.config.source;
    let client = firmware.inner.fetcher.client();
    let auth = oci::registry_auth(source)?;
    let registry = &source.registry;
    let lookup = Lookup {
        registry,
        repository: &source.repository,
        insecure: source.insecure,
        auth: &auth,
        rule: policy.rule(),
    };
    let resolved = match policy.verify.as_ref() {
        None => resolve_latest(&client, lookup).await?,
        Some(verify) => {
            let verifier = verify.verifier()?;
            let result = resolve_verified(&client, lookup, &verifier).await;
            let skipped = match &result {
                Ok(release) => Some(release.skipped.as_slice()),
                Err(ResolveError::Unverified { skipped, .. }) => Some(skipped.as_slice()),
                Err(_) => None,
            };
            if skipped.is_some() {
                firmware.inner.metrics.registry_result(registry, true); // it answered every question
            }
            let reported = skipped.map_or(0, |skipped| report_skipped(firmware, channel, skipped));
            if let (Err(e), 1..) = (&result, reported) {
                tracing::warn!(channel = %channel.name(), reason = %e, "no release verifies; keeping what the channel has");
            }
            let release = result?;
            if channel.releases().current.is_none_or(|c| c.pinned.digest != release.resolved.digest) {
                let verified = &release.verified;
                tracing::info!(channel = %channel.name(), digest = %release.resolved.digest, key = %verified.key, scheme = %verified.scheme, "signature verified");
            }
            release.resolved
        }
    };
    firmware.inner.metrics.registry_result(registry, true);
    let pinned = PinnedArtifact { version: resolved.display_version(), tag: resolved.tag, digest: resolved.digest };
    if channel.advance(pinned.clone()) {
        tracing::info!(channel = %channel.name(), version = %pinned.version, digest = %pinned.digest, "resolved a new version");
        firmware.repin();
        firmware.prefetch();
    }
    Ok(())
}

/// Logs and counts each skipped release whose digest (and reason) the channel has not
/// reported yet; returns how many that was.
fn report_skipped(firmware: &Firmware, channel: &Channel, skipped: &[Skipped]) -> usize {
    let new = channel.note_skipped(skipped);
    for s in &new {
        let release = &s.release;
        tracing::warn!(
            channel = %channel.name(),
            version = %release.display_version(),
            tag = %release.tag,
            digest = %release.digest,
            reason = s.reason,
            error = %s.error,
            "skipped a release: its signature does not verify"
        );
        firmware.inner.metrics.firmware_unverified.with_label_values(&[channel.name(), s.reason]).inc();
    }
    new.len()
}
