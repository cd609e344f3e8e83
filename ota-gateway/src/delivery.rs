//! The long-poll of the operator's config endpoint (`operator` in the config; the
//! operator side is `updraft-operator`'s `delivery` module): a new release or a rollback
//! reaches the gateway within a second, instead of at kubelet's next sync of the mounted
//! ConfigMap (up to a minute and more).
//!
//! `GET <url>?revision=R` with the token of `tokenFile`: the operator answers at once
//! when its rendering is not revision R, else holds the request and answers when one is
//! published (200) or after its hold (304). What arrives is offered to the same gate as
//! the file ([`Gate::offer`]: the serving gateway's [`Applier`], the mirror worker's
//! `crate::mirror::reload::Reloader`): refused whole when invalid, ignored when older than
//! what is in use. The endpoint is a shortcut, never a dependency: while it cannot be
//! reached (or refuses the token) the process keeps running on its current config and
//! follows its file, and polls again on a backoff ([`retry_after`]).

use std::time::Duration;

use updraft_core::config::OperatorSource;

use crate::reload::{Applier, Outcome, Source};

/// How long one request may take: the operator holds it 30 s; more for slow networks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The wait before polling again after the operator sent a config older than the one
/// served (the operator's hold: what a poll takes when nothing changes).
const STALE_PAUSE: Duration = Duration::from_secs(30);

/// The largest config accepted (the operator's rendering of thousands of channels is a
/// few MiB: see the operator's `render::config` size test).
const MAX_CONFIG_BYTES: usize = 64 << 20;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("cannot read the token file {path}: {source}")]
    Token { path: String, source: std::io::Error },
    #[error("the token file {0} is empty")]
    EmptyToken(String),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the operator answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the config is over {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
}

/// The wait before poll number `failures + 1` after `failures` failures in a row: 1 s,
/// doubling, at most 30 s.
pub(crate) fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Where a [`Poller`] offers what the operator sends: the one gate its file goes through
/// too, with the same rules (`updraft_core::config::delivery::supersedes`).
pub trait Gate: Send + 'static {
    /// The revision of the config in use.
    fn revision(&self) -> u64;
    /// Offers a config from `source` (invalid, older or the same: not applied).
    fn offer(&self, content: &[u8], source: Source) -> Outcome;
    /// Counts a request to the endpoint that failed.
    fn poll_failed(&self);
}

impl Gate for Applier {
    fn revision(&self) -> u64 {
        Applier::revision(self)
    }

    fn offer(&self, content: &[u8], source: Source) -> Outcome {
        Applier::offer(self, content, source)
    }

    fn poll_failed(&self) {
        self.metrics().config_poll_errors.inc();
    }
}

/// Long-polls one gateway's config endpoint, offering what it sends to `G`.
pub struct Poller<G: Gate = Applier> {
    source: OperatorSource,
    applier: G,
    http: reqwest::Client,
    /// The revision of the last config received (applied or not), so a refused config
    /// is not sent again at once: the next request waits for a newer one.
    seen: u64,
}

impl<G: Gate> Poller<G> {
    pub fn new(source: OperatorSource, applier: G) -> Self {
        let http = reqwest::Client::builder()
            .user_agent("updraft-gateway")
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a client without custom TLS builds");
        let seen = applier.revision();
        Self { source, applier, http, seen }
    }

    /// Polls until the process ends.
    pub async fn run(mut self) {
        tracing::info!(url = %self.source.url, "following the operator's config endpoint");
        let mut failures = 0u32;
        loop {
            match self.once().await {
                Ok(outcome) => {
                    if failures > 0 {
                        tracing::info!(failures, "the operator's config endpoint answers again");
                    }
                    failures = 0;
                    if let Some(outcome) = outcome {
                        tracing::debug!(?outcome, revision = self.seen, "config from the operator");
                    }
                    if outcome == Some(Outcome::Stale) {
                        // The operator's rendering is older than the config served (its
                        // ConfigMap was re-created, counting from 1 again): it answers at
                        // once while the revisions differ, so asking again at once would
                        // spin. Ask again after the operator's hold instead.
                        let serving = self.applier.revision();
                        tracing::warn!(serving, "the operator's config is older than the one served; ignored");
                        tokio::time::sleep(STALE_PAUSE).await;
                    }
                }
                Err(error) => {
                    failures += 1;
                    self.applier.poll_failed();
                    // Told on the first failure and then every 10th, not every retry.
                    if failures % 10 == 1 {
                        tracing::warn!(%error, failures, url = %self.source.url,
                            "cannot get the config from the operator; keeping the current config and following the file");
                    }
                    tokio::time::sleep(retry_after(failures)).await;
                }
            }
        }
    }

    /// One request: `Some(outcome)` when a config arrived, `None` when nothing changed.
    async fn once(&mut self) -> Result<Option<Outcome>, PollError> {
        let path = self.source.token_file.display().to_string();
        let raw =
            std::fs::read(&self.source.token_file).map_err(|source| PollError::Token { path: path.clone(), source })?;
        let token = updraft_core::secret::key(&raw).ok_or(PollError::EmptyToken(path))?;
        let token = String::from_utf8_lossy(token);
        let since = self.seen.max(self.applier.revision());
        let url = format!("{}?revision={since}", self.source.url);
        let mut response = self.http.get(url).bearer_auth(token).send().await?;
        match response.status() {
            reqwest::StatusCode::NOT_MODIFIED => return Ok(None),
            reqwest::StatusCode::OK => {}
            other => return Err(PollError::Status(other)),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_CONFIG_BYTES {
                return Err(PollError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let outcome = self.applier.offer(&body, Source::Operator);
        // What the operator sent counts as seen even when refused: it is sent again only
        // once it changes.
        self.seen = revision_of(&body).unwrap_or(since).max(since);
        Ok(Some(outcome))
    }
}

/// The `revision` of a config text, also of one that does not parse as a whole.
fn revision_of(text: &[u8]) -> Option<u64> {
    let value: serde_yaml::Value = serde_yaml::from_slice(text).ok()?;
    value.get("revision")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=8).map(|f| retry_after(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn the_revision_is_read_from_a_config_that_is_otherwise_refused() {
        assert_eq!(revision_of(b"revision: 7\nchannels: nonsense\n"), Some(7));
        assert_eq!(revision_of(b"listen: x\n"), None);
        assert_eq!(revision_of(b"[not yaml"), None);
    }
}
