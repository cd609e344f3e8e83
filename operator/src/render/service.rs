//! The Service in front of a gateway's pods, and the in-cluster URL it gives them.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use updraft_crds::OtaGateway;

use super::{meta, selector, ADMIN_PORT, HTTP_PORT};

pub(crate) fn service(gateway: &OtaGateway) -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        // Server-side apply on 1.20 needs the protocol on every port.
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(gateway, gateway.name_any()),
        spec: Some(ServiceSpec {
            type_: Some(gateway.spec.service.type_.clone()),
            selector: Some(selector(gateway)),
            ports: Some(vec![
                port("http", gateway.spec.service.port, HTTP_PORT),
                port("admin", ADMIN_PORT, ADMIN_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// In-cluster URL of the gateway's Service.
pub(crate) fn service_url(gateway: &OtaGateway) -> String {
    let ns = gateway.namespace().unwrap_or_else(|| "default".into());
    format!("http://{}.{ns}.svc:{}", gateway.name_any(), gateway.spec.service.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::gateway;

    #[test]
    fn service_ports_carry_a_protocol_and_the_url_names_the_port() {
        let gw = gateway();
        let svc = service(&gw);
        assert_eq!(svc.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        let ports = svc.spec.unwrap().ports.unwrap();
        assert!(ports.iter().all(|p| p.protocol.as_deref() == Some("TCP")));
        assert_eq!(ports[0].port, 8080);
        assert_eq!(service_url(&gw), "http://default.fleet.svc:8080");
    }
}
