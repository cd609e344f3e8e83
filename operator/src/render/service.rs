//! The Service in front of a gateway's pods, and the in-cluster URL it gives them.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use updraft_crds::OtaGateway;

use super::{meta, selector, ADMIN_PORT, HTTPS_PORT, HTTP_PORT};

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
            ports: Some(
                [
                    Some(port("http", gateway.spec.service.port, HTTP_PORT)),
                    gateway.spec.tls.as_ref().map(|_| port("https", HTTPS_PORT, HTTPS_PORT)),
                    Some(port("admin", ADMIN_PORT, ADMIN_PORT)),
                    gateway.spec.store.as_ref().map(|s| port("store", s.port, s.port)),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
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

/// In-cluster base URL of the ImageStream `name` on `gateway`: over HTTPS when the
/// gateway has `spec.tls` (what `lxc` and `incus` need), else over plain HTTP.
pub(crate) fn stream_url(gateway: &OtaGateway, name: &str) -> String {
    match &gateway.spec.tls {
        Some(_) => {
            let ns = gateway.namespace().unwrap_or_else(|| "default".into());
            format!("https://{}.{ns}.svc:{HTTPS_PORT}/streams/{name}", gateway.name_any())
        }
        None => format!("{}/streams/{name}", service_url(gateway)),
    }
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
        assert_eq!(ports.len(), 2, "no https port without spec.tls");
        assert_eq!(stream_url(&gw, "images"), "http://default.fleet.svc:8080/streams/images");
    }

    #[test]
    fn tls_adds_the_https_port_and_streams_use_it() {
        let mut gw = gateway();
        gw.spec.tls = Some(updraft_crds::gateway::GatewayTls { secret_name: "gw-cert".into(), ..Default::default() });
        let ports = service(&gw).spec.unwrap().ports.unwrap();
        let https = ports.iter().find(|p| p.name.as_deref() == Some("https")).unwrap();
        assert_eq!((https.port, https.protocol.as_deref()), (8443, Some("TCP")));
        assert_eq!(https.target_port, Some(IntOrString::Int(8443)));
        assert_eq!(stream_url(&gw, "images"), "https://default.fleet.svc:8443/streams/images");
    }
}
