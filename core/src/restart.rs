//! Which settings of a gateway config a running gateway cannot change.
//!
//! The gateway applies a new config file live (channels, streams, notifications, the
//! stores' keys and limits, the TLS certificate files), except what it bound or opened
//! at start: its listeners and the directories behind them, and `sendfile`. Two sides
//! must agree on that list, so it lives here once: the gateway logs which of these a
//! reload changed (they wait for a restart), and the operator puts
//! [`RestartSettings::hash`] on the pod template, so a change of any of them rolls the
//! pods and nothing else does.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::GatewayConfig;

/// The restart-only settings of one config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartSettings {
    listen: String,
    admin_listen: String,
    sendfile: bool,
    cache_dir: PathBuf,
    /// The HTTPS listener, when there is one (its certificate files are live).
    tls_listen: Option<String>,
    /// Each store's listener and directory, by name (its keys and limits are live).
    stores: Vec<(String, String, PathBuf)>,
}

impl RestartSettings {
    /// The restart-only settings of `config`.
    pub fn of(config: &GatewayConfig) -> Self {
        let mut stores: Vec<_> =
            config.stores.iter().map(|s| (s.name.clone(), s.listen.clone(), s.dir.clone())).collect();
        stores.sort();
        Self {
            listen: config.listen.clone(),
            admin_listen: config.admin_listen.clone(),
            sendfile: config.sendfile,
            cache_dir: config.cache.dir.clone(),
            tls_listen: config.tls.as_ref().map(|t| t.listen.clone()),
            stores,
        }
    }

    /// The names of the settings that differ between `self` and `other` (config file
    /// spelling), for a log line.
    pub fn changed(&self, other: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |differs: bool, name: &'static str| {
            if differs {
                changed.push(name);
            }
        };
        check(self.listen != other.listen, "listen");
        check(self.admin_listen != other.admin_listen, "adminListen");
        check(self.sendfile != other.sendfile, "sendfile");
        check(self.cache_dir != other.cache_dir, "cache.dir");
        check(self.tls_listen != other.tls_listen, "tls (added, removed or its listen)");
        check(self.stores != other.stores, "stores (added, removed, or a listen or dir)");
        changed
    }

    /// A short, stable hash of these settings (hex, 16 digits): equal configs give equal
    /// hashes, and a change of any restart-only setting changes it.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain data serializes");
        hex::encode(&Sha256::digest(&json)[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StoreConfig, TlsConfig};

    fn config() -> GatewayConfig {
        let store: StoreConfig =
            serde_json::from_value(serde_json::json!({"name": "s", "listen": "0.0.0.0:8081", "dir": "/srv/files"}))
                .unwrap();
        GatewayConfig { stores: vec![store], ..Default::default() }
    }

    #[test]
    fn live_settings_leave_the_hash_alone_and_restart_settings_change_it() {
        let base = config();
        let hash = RestartSettings::of(&base).hash();
        assert_eq!(hash.len(), 16);
        // Applied live: no restart.
        let mut live = base.clone();
        live.stores[0].allow_plain_writes = true;
        live.stores[0].write_key = Some("k".into());
        live.stores[0].max_upload_bytes = 1;
        live.cache.max_bytes = 1;
        assert_eq!(RestartSettings::of(&live).hash(), hash);
        assert!(RestartSettings::of(&live).changed(&RestartSettings::of(&base)).is_empty());
        // Bound or opened at start: a restart.
        type Edit = fn(&mut GatewayConfig);
        let edits: [(&str, Edit); 7] = [
            ("listen", |c| c.listen = "0.0.0.0:1".into()),
            ("adminListen", |c| c.admin_listen = "0.0.0.0:2".into()),
            ("sendfile", |c| c.sendfile = false),
            ("cache.dir", |c| c.cache.dir = "/elsewhere".into()),
            ("tls (added, removed or its listen)", |c| {
                c.tls = Some(TlsConfig { listen: "0.0.0.0:8443".into(), cert_file: "c".into(), key_file: "k".into() })
            }),
            ("stores (added, removed, or a listen or dir)", |c| c.stores[0].listen = "0.0.0.0:9".into()),
            ("stores (added, removed, or a listen or dir)", |c| c.stores[0].dir = "/srv/other".into()),
        ];
        for (name, edit) in edits {
            let mut edited = base.clone();
            edit(&mut edited);
            assert_ne!(RestartSettings::of(&edited).hash(), hash, "{name}");
            assert_eq!(RestartSettings::of(&edited).changed(&RestartSettings::of(&base)), [name]);
        }
        // Certificate files are live.
        let mut with_tls = base.clone();
        with_tls.tls = Some(TlsConfig { listen: "0.0.0.0:8443".into(), cert_file: "c".into(), key_file: "k".into() });
        let mut renamed = with_tls.clone();
        renamed.tls.as_mut().unwrap().cert_file = "other".into();
        assert_eq!(RestartSettings::of(&renamed).hash(), RestartSettings::of(&with_tls).hash());
    }
}
