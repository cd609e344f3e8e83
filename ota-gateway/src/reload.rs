//! Keeping the live config in step with its file.
//!
//! The file is followed by [`crate::watch`]: when its content changed, it is parsed and
//! applied ([`AppState::apply`], which makes everything live it can and logs which
//! restart-only settings the new file changed). A bad file is logged and counted; the
//! last good config keeps serving.

use std::path::PathBuf;

use crate::state::{AppState, ApplyError};
use crate::watch::{self, ConfigFile};
use updraft_core::config::{ConfigError, GatewayConfig};

/// Why a new config file was rejected.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Parse(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Watches one config file and applies its changes.
pub struct Watcher {
    file: ConfigFile,
    state: AppState,
}

impl Watcher {
    /// A watcher for a file whose content `state` already serves.
    pub fn new(path: PathBuf, state: AppState) -> Self {
        Self { file: ConfigFile::new(path), state }
    }

    /// Polls forever.
    pub(crate) async fn run(mut self) {
        watch::poll_every(watch::POLL_INTERVAL, || {
            self.poll();
            true
        })
        .await
    }

    /// One check; returns whether a new config was applied.
    pub fn poll(&mut self) -> bool {
        let Some(content) = self.file.changed() else { return false };
        let path = self.file.path().display();
        match self.load(&content) {
            Ok(()) => {
                self.state.metrics().config_reloads.with_label_values(&["applied"]).inc();
                tracing::info!(path = %path, "config reloaded");
                true
            }
            Err(reason) => {
                self.state.metrics().config_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(path = %path, %reason, "new config rejected; keeping the last good config");
                false
            }
        }
    }

    fn load(&self, content: &[u8]) -> Result<(), ReloadError> {
        Ok(self.state.apply(GatewayConfig::parse(content)?)?)
    }
}
