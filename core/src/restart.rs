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
    /// Mutual TLS: the client CA bundle and whether a certificate is required, read
    /// when the listener starts. Omitted while unset, so that a config without mutual
    /// TLS keeps the hash it had before the field existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_auth: Option<(PathBuf, crate::config::ClientAuth)>,
    /// Each store's listener and directory, by name (its keys and limits are live).
    stores: Vec<(String, String, PathBuf)>,
    /// The operator endpoint the gateway long-polls (`crate::config::delivery`), started
    /// once. Omitted while unset, so a config without it keeps its hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<crate::config::OperatorSource>,
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
            tls_client_auth: config.tls.as_ref().and_then(|t| Some((t.client_ca_file.clone()?, t.client_auth()?))),
            stores,
            operator: config.operator.clone(),
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
        check(self.tls_client_auth != other.tls_client_auth, "tls.clientCaFile or tls.clientAuth");
        check(self.stores != other.stores, "stores (added, removed, or a listen or dir)");
        check(self.operator != other.operator, "operator");
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

    fn tls(cert_file: &str) -> TlsConfig {
        TlsConfig {
            listen: "0.0.0.0:8443".into(),
            cert_file: cert_file.into(),
            key_file: "k".into(),
            client_ca_file: None,
            client_auth: None,
        }
    }

    /// The hash of a config without mutual TLS is the one it had before the client CA
    /// settings existed (no pod rolls on upgrade); adding or changing them is a restart.
    #[test]
    fn client_ca_settings_are_restart_settings_and_absent_ones_keep_the_old_hash() {
        let mut base = config();
        base.tls = Some(tls("c"));
        let json = serde_json::to_string(&RestartSettings::of(&base)).unwrap();
        assert!(!json.contains("tlsClientAuth"), "{json}");
        let mut mtls = base.clone();
        mtls.tls.as_mut().unwrap().client_ca_file = Some("/ca/ca.crt".into());
        assert_eq!(
            RestartSettings::of(&mtls).changed(&RestartSettings::of(&base)),
            ["tls.clientCaFile or tls.clientAuth"]
        );
        let mut required = mtls.clone();
        required.tls.as_mut().unwrap().client_auth = Some(crate::config::ClientAuth::Required);
        assert_ne!(RestartSettings::of(&required).hash(), RestartSettings::of(&mtls).hash());
        // `optional` spelled out or left out is the same setting.
        let mut spelled = mtls.clone();
        spelled.tls.as_mut().unwrap().client_auth = Some(crate::config::ClientAuth::Optional);
        assert_eq!(RestartSettings::of(&spelled).hash(), RestartSettings::of(&mtls).hash());
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
            ("tls (added, removed or its listen)", |c| c.tls = Some(tls("c"))),
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
        with_tls.tls = Some(tls("c"));
        let mut renamed = with_tls.clone();
        renamed.tls.as_mut().unwrap().cert_file = "other".into();
        assert_eq!(RestartSettings::of(&renamed).hash(), RestartSettings::of(&with_tls).hash());
    }
}
