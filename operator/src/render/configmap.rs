//! The ConfigMap holding a gateway's rendered `gateway.yaml`, which its pods mount and
//! reload when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use updraft_core::config::GatewayConfig;
use updraft_crds::OtaGateway;

use super::{meta, CONFIG_KEY};

/// Name of the ConfigMap holding the gateway's configuration.
pub(super) fn config_map_name(gateway: &OtaGateway) -> String {
    format!("{}-config", gateway.name_any())
}

pub(crate) fn config_map(gateway: &OtaGateway, config: &GatewayConfig) -> ConfigMap {
    ConfigMap {
        metadata: meta(gateway, config_map_name(gateway)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config.to_yaml())])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::gateway;
    use crate::render::gateway_config;

    #[test]
    fn config_map_is_named_after_the_gateway_and_holds_the_config() {
        let gw = gateway();
        let cm = config_map(&gw, &gateway_config(&gw, &[], &[]));
        assert_eq!(cm.metadata.name.as_deref(), Some("default-config"));
        assert_eq!(cm.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        assert!(cm.data.unwrap()[CONFIG_KEY].contains("listen: 0.0.0.0:8080"));
    }
}
