//! The ConfigMap holding a gateway's rendered `gateway.yaml`, which its pods mount and
//! reload when it changes: as text while it fits the ConfigMap limit, gzip-compressed
//! in `binaryData` beyond (`updraft_core::config::delivery::store`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;
use kube::ResourceExt;
use updraft_core::config::delivery::{store, Stored, TooLarge};
use updraft_crds::OtaGateway;

use super::{meta, CONFIG_KEY};

/// Name of the ConfigMap holding the gateway's configuration.
pub(crate) fn config_map_name(gateway: &OtaGateway) -> String {
    format!("{}-config", gateway.name_any())
}

/// The ConfigMap holding `yaml`, a rendering's `GatewayConfig::to_yaml` (serialized once
/// by the caller, which also publishes it to the config endpoint).
pub(crate) fn config_map(gateway: &OtaGateway, yaml: String) -> Result<ConfigMap, TooLarge> {
    let mut map = ConfigMap { metadata: meta(gateway, config_map_name(gateway)), ..Default::default() };
    match store(CONFIG_KEY, yaml)? {
        Stored::Text(text) => map.data = Some(BTreeMap::from([(CONFIG_KEY.to_owned(), text)])),
        Stored::Gzip(bytes) => map.binary_data = Some(BTreeMap::from([(CONFIG_KEY.to_owned(), ByteString(bytes))])),
    }
    Ok(map)
}

/// The config a ConfigMap built by [`config_map`] holds (text or compressed), as bytes
/// for `GatewayConfig::parse`.
pub(crate) fn stored_text(map: &ConfigMap) -> Option<&[u8]> {
    let text = map.data.as_ref().and_then(|d| d.get(CONFIG_KEY)).map(|t| t.as_bytes());
    text.or_else(|| map.binary_data.as_ref().and_then(|d| d.get(CONFIG_KEY)).map(|b| b.0.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::gateway;
    use crate::render::gateway_config;
    use updraft_core::config::GatewayConfig;

    #[test]
    fn config_map_is_named_after_the_gateway_and_holds_the_config() {
        let gw = gateway();
        let config = gateway_config(&gw, &[], &[]);
        let cm = config_map(&gw, config.to_yaml()).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("default-config"));
        assert_eq!(cm.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        assert_eq!(GatewayConfig::parse(stored_text(&cm).unwrap()).unwrap(), config);
        assert!(cm.data.unwrap()[CONFIG_KEY].contains("listen: 0.0.0.0:8080"));
    }
}
