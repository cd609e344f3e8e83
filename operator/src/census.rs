//! The device census, merged: every gateway replica's sketches (read from its admin
//! port's `GET /census`) merged per OtaGateway, for each FirmwareChannel's
//! `status.devices`, its rollout's adoption figures and Prometheus.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use updraft_crds::DeviceCensus;

/// Unique devices that downloaded a version and that report running it, over a
/// rollout step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(dead_code)] // filled by the census gatherer (next commits)
pub(crate) struct Adoption {
    pub downloaded: u64,
    pub running: u64,
}

/// One OtaGateway, by namespace and name.
pub(crate) type GatewayKey = (String, String);

/// The merged figures of every OtaGateway whose replicas were read.
#[derive(Default)]
pub(crate) struct Census {
    gateways: RwLock<HashMap<GatewayKey, ()>>,
}

impl Census {
    /// `status.devices` of `channel` served by `gateway`, when the gateway's replicas were read.
    pub(crate) fn devices(&self, gateway: &GatewayKey, channel: &str) -> Option<DeviceCensus> {
        let _ = (self.gateways.read().expect("census lock").get(gateway), channel);
        None
    }

    /// Unique devices that downloaded `version` of `channel` since `since` and that
    /// reported running it since then, when the gateway's replicas were read.
    pub(crate) fn adoption(
        &self,
        gateway: &GatewayKey,
        channel: &str,
        version: &str,
        since: SystemTime,
    ) -> Option<Adoption> {
        let _ = (self.gateways.read().expect("census lock").get(gateway), channel, version, since);
        None
    }
}
