//! [`ConfigSync`]: kubelet's part for a gateway run locally from what the operator
//! renders. One home for the tests that run the real gateway binary next to the
//! operator (`rollback.rs`, `webhook.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::kubectl;

/// Emulates kubelet for a gateway run locally: copies the rendered ConfigMap into the
/// gateway's config file (with local listeners and cache) whenever it changes. Stops
/// on drop.
pub struct ConfigSync {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConfigSync {
    /// Starts copying `configmap/default-config` of namespace `ns` to `config_path`
    /// every 100 ms, with `listen` on 127.0.0.1:`port`, `adminListen` on
    /// 127.0.0.1:`admin` and the cache in `cache`.
    pub fn start(ns: &str, config_path: &Path, port: u16, admin: u16, cache: &Path) -> ConfigSync {
        Self::start_on(ns, "127.0.0.1", config_path, port, admin, cache)
    }

    /// [`ConfigSync::start`] with the listeners on `host` (another loopback address,
    /// e.g. `127.0.0.2`, for a second replica with the same ports).
    pub fn start_on(ns: &str, host: &str, config_path: &Path, port: u16, admin: u16, cache: &Path) -> ConfigSync {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, config_path, cache, flag) = (ns.to_owned(), config_path.to_owned(), cache.to_owned(), stop.clone());
        let host = host.to_owned();
        let thread = std::thread::spawn(move || {
            let mut last = String::new();
            while !flag.load(Ordering::Relaxed) {
                let out = kubectl(
                    &["get", "-n", &ns, "configmap/default-config", "-o", "jsonpath={.data.gateway\\.yaml}"],
                    None,
                );
                if out.success && !out.stdout.is_empty() && out.stdout != last {
                    let mut config: Value = serde_yaml::from_str(&out.stdout).unwrap();
                    config["listen"] = format!("{host}:{port}").into();
                    config["adminListen"] = format!("{host}:{admin}").into();
                    config["cache"]["dir"] = cache.to_str().unwrap().into();
                    let tmp = config_path.with_extension("tmp");
                    std::fs::write(&tmp, serde_yaml::to_string(&config).unwrap()).unwrap();
                    std::fs::rename(&tmp, &config_path).unwrap();
                    last = out.stdout;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        ConfigSync { stop, thread: Some(thread) }
    }
}

impl Drop for ConfigSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
