//! Attachment rules: which resources a gateway serves, and which it cannot.
//!
//! A FirmwareChannel, ImageStream or ArtifactMirror names its gateway in
//! `spec.gatewayRef` (default `default`), in its own namespace. A gateway serves every
//! resource that names it, except where two would collide: two channels with the same
//! device id on one gateway (the one first by name wins; the other is reported as a
//! conflict in its status).
//!
//! Both directions live here: the gateway controller asks what is attached to a gateway,
//! the watches ask which gateway a changed resource belongs to (and back).

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use updraft_crds::{ArtifactMirror, AttachedResource, FirmwareChannel, ImageStream, OtaGateway};

/// A resource a gateway serves, attached by its `spec.gatewayRef`.
pub(crate) trait Attached: Resource<DynamicType = (), Scope = NamespaceResourceScope> {
    /// The name of the OtaGateway (same namespace) that serves it.
    fn gateway_ref(&self) -> &str;
}

impl Attached for FirmwareChannel {
    fn gateway_ref(&self) -> &str {
        &self.spec.gateway_ref
    }
}

impl Attached for ImageStream {
    fn gateway_ref(&self) -> &str {
        &self.spec.gateway_ref
    }
}

impl Attached for ArtifactMirror {
    fn gateway_ref(&self) -> &str {
        &self.spec.gateway_ref
    }
}

/// The gateway `obj` attaches to.
pub(crate) fn gateway_of<K: Attached>(obj: &K) -> ObjectRef<OtaGateway> {
    let namespace = obj.namespace().unwrap_or_default();
    ObjectRef::new(obj.gateway_ref()).within(&namespace)
}

/// Whether `obj` attaches to `gateway`.
pub(crate) fn is_attached<K: Attached>(obj: &K, gateway: &ObjectRef<OtaGateway>) -> bool {
    gateway_of(obj) == *gateway
}

/// The objects in `store` attached to `gateway`: what a change of the gateway (created,
/// changed, deleted) triggers again.
pub(crate) fn attached_refs<K: Attached + Clone>(store: &Store<K>, gateway: &OtaGateway) -> Vec<ObjectRef<K>> {
    let gateway = ObjectRef::from(gateway);
    store.state().iter().filter(|o| is_attached(o.as_ref(), &gateway)).map(|o| ObjectRef::from(o.as_ref())).collect()
}

/// How a gateway's status lists an attached resource.
pub(crate) fn attached_resource<K: Attached>(obj: &K) -> AttachedResource {
    AttachedResource { kind: K::kind(&()).into_owned(), name: obj.name_any() }
}

/// The channels of one gateway, split into those it serves and those it cannot.
#[derive(Debug, Default)]
pub(crate) struct Attachment<'a> {
    /// Attached channels, sorted by name, at most one per device id.
    pub served: Vec<&'a FirmwareChannel>,
    /// Attached channels left out, by name, with why: another channel (earlier by name)
    /// already serves their device id.
    pub conflicts: BTreeMap<String, String>,
}

/// Which of `channels` attach to `gateway`, and which of those conflict.
pub(crate) fn channels<'a>(
    gateway: &ObjectRef<OtaGateway>,
    channels: impl IntoIterator<Item = &'a FirmwareChannel>,
) -> Attachment<'a> {
    let mut mine: Vec<&FirmwareChannel> = channels.into_iter().filter(|c| is_attached(*c, gateway)).collect();
    mine.sort_by_cached_key(|c| c.name_any());
    let mut attachment = Attachment::default();
    let mut devices: BTreeMap<String, String> = BTreeMap::new();
    for channel in mine {
        let device = device_id(channel);
        if let Some(owner) = devices.get(&device) {
            attachment.conflicts.insert(channel.name_any(), conflict_message(&device, owner, &gateway.name));
            continue;
        }
        devices.insert(device, channel.name_any());
        attachment.served.push(channel);
    }
    attachment
}

/// Why `channel` is left out of its gateway, if it is: [`channels`]'s rule (the channel
/// first by name serves a device id), answered for one channel. A channel reconcile asks
/// this of a cache that may hold 10,000 channels, so it scans without sorting or copying
/// them (sorting every sibling on every reconcile made status writes quadratic; see
/// `e2e/scripts/scale.sh`): a conflict is an earlier-named sibling with the same device
/// id, and the one served is the first of those by name.
pub(crate) fn conflict(store: &Store<FirmwareChannel>, channel: &FirmwareChannel) -> Option<String> {
    let name = channel.metadata.name.as_deref().unwrap_or_default();
    let device = channel.spec.device.as_deref().unwrap_or(name);
    let earlier = store.state_filter(|c| {
        let c_name = c.metadata.name.as_deref().unwrap_or_default();
        c.spec.gateway_ref == channel.spec.gateway_ref
            && c.metadata.namespace == channel.metadata.namespace
            && c_name < name
            && c.spec.device.as_deref().unwrap_or(c_name) == device
    });
    let owner = earlier.iter().filter_map(|c| c.metadata.name.as_deref()).min()?;
    Some(conflict_message(device, owner, &channel.spec.gateway_ref))
}

fn conflict_message(device: &str, owner: &str, gateway: &str) -> String {
    format!("device id {device:?} is already served by FirmwareChannel {owner:?} on gateway {gateway:?}")
}

/// The OtaFlux device id of a channel: `spec.device`, else its name.
pub(crate) fn device_id(channel: &FirmwareChannel) -> String {
    channel.spec.device.clone().unwrap_or_else(|| channel.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{channel, gateway};

    #[test]
    fn channels_sorts_filters_and_reports_device_conflicts() {
        let mut other = channel("other-gw", None, None);
        other.spec.gateway_ref = "lab".into();
        let mut elsewhere = channel("elsewhere", None, None);
        elsewhere.metadata.namespace = Some("other-namespace".into());
        let channels = [
            channel("b", Some("esp32"), None),
            channel("a", Some("esp32"), None),
            channel("c", None, None),
            other,
            elsewhere,
        ];
        let attachment = super::channels(&ObjectRef::from(&gateway()), channels.iter());
        let names: Vec<_> = attachment.served.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(attachment.conflicts["b"].contains("already served by FirmwareChannel \"a\""));
        assert_eq!(attachment.conflicts.len(), 1);
    }

    #[test]
    fn one_channels_conflict_is_what_the_whole_attachment_says() {
        let mut other = channel("a-other-gw", Some("esp32"), None);
        other.spec.gateway_ref = "lab".into();
        let mut elsewhere = channel("a-elsewhere", Some("esp32"), None);
        elsewhere.metadata.namespace = Some("other-namespace".into());
        let named_like_a_device = channel("stm32", None, None);
        let channels = [
            channel("d", Some("esp32"), None),
            channel("b", Some("esp32"), None),
            channel("c", Some("esp32"), None),
            channel("e", Some("stm32"), None),
            channel("f", None, None),
            named_like_a_device,
            other,
            elsewhere,
        ];
        let (store, mut writer) = kube::runtime::reflector::store();
        for c in &channels {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(c.clone()));
        }
        let whole = super::channels(&ObjectRef::from(&gateway()), channels.iter());
        for c in &channels {
            let expected = match is_attached(c, &ObjectRef::from(&gateway())) {
                true => whole.conflicts.get(&c.name_any()).cloned(),
                false => None,
            };
            assert_eq!(conflict(&store, c), expected, "channel {}", c.name_any());
        }
        assert_eq!(whole.conflicts.len(), 3, "c and d (esp32, served by b), stm32 (served by e): {whole:?}");
    }

    #[test]
    fn every_kind_attaches_to_its_gateway_ref_in_its_namespace() {
        let stream: ImageStream = serde_json::from_value(serde_json::json!({
            "apiVersion": "updraft.dev/v1alpha1", "kind": "ImageStream",
            "metadata": {"name": "images", "namespace": "fleet"},
            "spec": {"gatewayRef": "lab", "source": {"upload": {"registry": "r:5000", "repository": "images"}}},
        }))
        .unwrap();
        assert_eq!(gateway_of(&stream), ObjectRef::new("lab").within("fleet"));
        assert!(!is_attached(&stream, &ObjectRef::from(&gateway())));
        let entry = attached_resource(&stream);
        assert_eq!((entry.kind.as_str(), entry.name.as_str()), ("ImageStream", "images"));
        assert_eq!(gateway_of(&channel("esp32", None, None)), ObjectRef::from(&gateway()));
    }
}
