//! What a gateway needs to long-poll the operator for its config (`crate::delivery`):
//! the `operator` section of its `gateway.yaml`, the Secret holding its token, and that
//! Secret mounted into its pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::ByteString;
use kube::ResourceExt;
use updraft_core::config::OperatorSource;
use updraft_crds::OtaGateway;

use super::{meta, OPERATOR_TOKEN_DIR};
use crate::delivery::{config_path, token_secret_name, TOKEN_KEY};

/// The `operator` section: the gateway's config URL under `base` (the endpoint's
/// in-cluster URL, e.g. `http://updraft-operator.updraft-system.svc:8082`) and the
/// mounted token.
pub(crate) fn operator_source(gateway: &OtaGateway, base: &str) -> OperatorSource {
    let ns = gateway.namespace().unwrap_or_default();
    OperatorSource {
        url: format!("{}{}", base.trim_end_matches('/'), config_path(&ns, &gateway.name_any())),
        token_file: format!("{OPERATOR_TOKEN_DIR}/{TOKEN_KEY}").into(),
    }
}

/// The Secret holding `gateway`'s config token (created once, never rewritten).
pub(crate) fn config_token_secret(gateway: &OtaGateway, token: &str) -> Secret {
    Secret {
        metadata: meta(gateway, token_secret_name(&gateway.name_any())),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

/// Mounts the token Secret into the gateway container. Optional: a pod that starts
/// before the Secret exists runs, follows its file and polls once the token appears.
pub(crate) fn mount_config_token(deployment: &mut Deployment, gateway: &OtaGateway) {
    let Some(pod) = deployment.spec.template.spec.as_mut() else { return };
    let name = "operator-token";
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(token_secret_name(&gateway.name_any())),
            items: Some(vec![KeyToPath { key: TOKEN_KEY.into(), path: TOKEN_KEY.into(), ..Default::default() }]),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(container) = pod.containers.first_mut() {
        container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
            name: name.into(),
            mount_path: OPERATOR_TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::gateway;

    #[test]
    fn the_gateway_polls_its_own_url_with_the_token_its_pods_mount() {
        let gw = gateway();
        let source = operator_source(&gw, "http://updraft-operator.updraft-system.svc:8082/");
        let ns = gw.namespace().unwrap_or_default();
        assert_eq!(
            source.url,
            format!("http://updraft-operator.updraft-system.svc:8082/v1/gateways/{ns}/default/config")
        );
        assert_eq!(source.token_file, std::path::Path::new("/etc/updraft/operator-token/token"));
        let secret = config_token_secret(&gw, "abc");
        assert_eq!(secret.metadata.name.as_deref(), Some("default-config-token"));
        assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        let mut pods = crate::render::deployment(&gw, "img", &[]);
        mount_config_token(&mut pods, &gw);
        let pod = pods.spec.template.spec.unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "operator-token").unwrap();
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("default-config-token"));
        assert_eq!(volume.secret.unwrap().optional, Some(true));
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount = mounts.iter().find(|m| m.name == "operator-token").unwrap();
        assert_eq!(std::path::Path::new(&mount.mount_path).join(TOKEN_KEY), source.token_file);
    }
}
