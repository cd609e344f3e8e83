//! Keeping the live config in step with its file.
//!
//! The file is polled, not watched: kubelet updates a mounted ConfigMap by swapping
//! a symlink, which inotify on the file misses. Each poll stats the resolved path;
//! when identity, size or mtime changed, the content is read and, if it differs
//! from what was last seen, parsed and applied. A bad file is logged and counted;
//! the last good config keeps serving.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::state::{AppState, ApplyError};
use updraft_core::config::{ConfigError, GatewayConfig};

/// Why a new config file was rejected.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Parse(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// How often the config file is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Watches one config file and applies its changes.
pub struct Watcher {
    path: PathBuf,
    state: AppState,
    stamp: Option<Stamp>,
    /// SHA-256 of the content last applied or rejected.
    seen: [u8; 32],
}

impl Watcher {
    /// A watcher for a file whose content `state` already serves.
    pub fn new(path: PathBuf, state: AppState) -> Self {
        let stamp = stamp(&path);
        let seen = std::fs::read(&path).map(|b| Sha256::digest(&b).into()).unwrap_or_default();
        Self { path, state, stamp, seen }
    }

    /// Polls forever.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.poll();
        }
    }

    /// One check; returns whether a new config was applied.
    pub fn poll(&mut self) -> bool {
        let now = stamp(&self.path);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        let Ok(content) = std::fs::read(&self.path) else {
            tracing::warn!(path = %self.path.display(), "config file unreadable; keeping the last good config");
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(&content).into();
        if digest == self.seen {
            return false;
        }
        self.seen = digest;
        match self.load(&content) {
            Ok(()) => {
                self.state.metrics().config_reloads.with_label_values(&["applied"]).inc();
                tracing::info!(path = %self.path.display(), "config reloaded");
                true
            }
            Err(reason) => {
                self.state.metrics().config_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(path = %self.path.display(), %reason, "new config rejected; keeping the last good config");
                false
            }
        }
    }

    fn load(&self, content: &[u8]) -> Result<(), ReloadError> {
        let config = GatewayConfig::parse(content)?;
        let live = self.state.config();
        if config.listen != live.listen || config.admin_listen != live.admin_listen || config.sendfile != live.sendfile
        {
            tracing::warn!("listen addresses and sendfile change on restart only");
        }
        Ok(self.state.apply(config)?)
    }
}
