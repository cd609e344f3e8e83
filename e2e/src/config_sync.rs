//! [`ConfigSync`]: kubelet's part for a gateway run locally from what the operator
//! renders. One home for the tests that run the real gateway binary next to the
//! operator (`rollback.rs`, `rollout.rs`, `census.rs`, `webhook.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubectl;

/// Kubelet's sync period of mounted ConfigMaps and Secrets (`--sync-frequency`,
/// default 1 m): a mounted file changes only at a sync, never as soon as the object.
pub const SYNC_PERIOD: Duration = Duration::from_secs(60);

/// The most each sync comes later than [`SYNC_PERIOD`] (kubelet's pod worker jitter and
/// its object cache's TTL).
pub const SYNC_JITTER: Duration = Duration::from_secs(10);

/// Emulates kubelet for a gateway run locally: writes the rendered ConfigMap into the
/// gateway's config file (with local listeners and cache) and the gateway's config
/// token Secret into a token file, as mounted volumes: at once when started (a pod
/// starts once its volumes are there), then only every [`SYNC_PERIOD`] plus up to
/// [`SYNC_JITTER`]. A new release reaches the gateway sooner only through the operator's
/// config endpoint, as in a cluster; tests start the operator with
/// [`crate::procs::config_endpoint`]. Stops on drop.
pub struct ConfigSync {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One gateway's mounted files.
struct Mount {
    ns: String,
    host: String,
    port: u16,
    admin: u16,
    cache: PathBuf,
    config_path: PathBuf,
    token_path: PathBuf,
}

impl Mount {
    /// Copies what the API server holds now; returns whether the config was there, and
    /// its token when it names the operator's endpoint (a pod starts once its volumes
    /// are there: the token Secret is created just before the ConfigMap, and reading the
    /// Secret first could miss it and mount the config alone, leaving the gateway
    /// without its token until the next sync a minute later).
    fn sync(&self) -> bool {
        let token =
            kubectl(&["get", "-n", &self.ns, "secret/default-config-token", "-o", "jsonpath={.data.token}"], None);
        let have_token = token.success && !token.stdout.is_empty();
        if have_token {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(token.stdout.trim()).unwrap();
            replace(&self.token_path, &bytes);
        }
        let out = kubectl(
            &["get", "-n", &self.ns, "configmap/default-config", "-o", "jsonpath={.data.gateway\\.yaml}"],
            None,
        );
        if !out.success || out.stdout.is_empty() {
            return false;
        }
        let mut config: Value = serde_yaml::from_str(&out.stdout).unwrap();
        config["listen"] = format!("{}:{}", self.host, self.port).into();
        config["adminListen"] = format!("{}:{}", self.host, self.admin).into();
        config["cache"]["dir"] = self.cache.to_str().unwrap().into();
        if config.get("operator").is_some() {
            if !have_token {
                return false;
            }
            config["operator"]["tokenFile"] = self.token_path.to_str().unwrap().into();
        }
        let text = serde_yaml::to_string(&config).unwrap();
        if std::fs::read_to_string(&self.config_path).ok().as_deref() != Some(text.as_str()) {
            replace(&self.config_path, text.as_bytes());
        }
        true
    }
}

/// Replaces `path` by rename, as kubelet swaps a volume's files.
fn replace(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl ConfigSync {
    /// Starts syncing `configmap/default-config` of namespace `ns` to `config_path`,
    /// with `listen` on 127.0.0.1:`port`, `adminListen` on 127.0.0.1:`admin` and the
    /// cache in `cache`.
    pub fn start(ns: &str, config_path: &Path, port: u16, admin: u16, cache: &Path) -> ConfigSync {
        Self::start_on(ns, "127.0.0.1", config_path, port, admin, cache)
    }

    /// [`ConfigSync::start`] with the listeners on `host` (another loopback address,
    /// e.g. `127.0.0.2`, for a second replica with the same ports).
    pub fn start_on(ns: &str, host: &str, config_path: &Path, port: u16, admin: u16, cache: &Path) -> ConfigSync {
        let stop = Arc::new(AtomicBool::new(false));
        let name = config_path.file_name().unwrap().to_str().unwrap();
        let mount = Mount {
            ns: ns.to_owned(),
            host: host.to_owned(),
            port,
            admin,
            cache: cache.to_owned(),
            config_path: config_path.to_owned(),
            token_path: config_path.with_file_name(format!("{name}.operator-token")),
        };
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // The first mount, as soon as the ConfigMap exists.
            while !flag.load(Ordering::Relaxed) && !mount.sync() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut next = Instant::now() + SYNC_PERIOD + jitter();
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    mount.sync();
                    next = Instant::now() + SYNC_PERIOD + jitter();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        ConfigSync { stop, thread: Some(thread) }
    }
}

/// A delay in `[0, SYNC_JITTER)`.
fn jitter() -> Duration {
    SYNC_JITTER.mul_f64(rand::random::<f64>())
}

impl Drop for ConfigSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
