//! Staged rollout of a channel's `latest`: the share of devices that get it.

use updraft_crds::FirmwareChannel;

/// The share of devices (0-100) that get `status.latest`: the fixed
/// `spec.rollout.percentage` (default 100), or with `spec.rollout.steps` the step
/// `status.rollout` reached for that version (the first step for a version it has not
/// seen yet).
pub(crate) fn share(channel: &FirmwareChannel) -> u8 {
    let spec = &channel.spec.rollout;
    let status = channel.status.as_ref();
    let percentage = match spec.steps.first() {
        None => spec.percentage.unwrap_or(100),
        Some(&first) => {
            let latest = status.and_then(|s| s.latest.as_ref()).map(|l| l.version.as_str());
            match status.and_then(|s| s.rollout.as_ref()) {
                Some(rollout) if Some(rollout.version.as_str()) == latest => rollout.percentage,
                _ => first,
            }
        }
    };
    percentage.clamp(0, 100) as u8
}
