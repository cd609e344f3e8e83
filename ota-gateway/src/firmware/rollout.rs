//! Staged rollout: which of a channel's two artifacts a device gets.
//!
//! A device with a unique id lands in a stable bucket `0..100` derived from
//! `sha256(channel name + id)`; it gets `current` when its bucket is below the
//! rollout percentage. The bucket depends on the channel, so the same early
//! adopters are not picked for every product line.

use sha2::{Digest, Sha256};

/// Which pinned artifact of a channel to hand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Current,
    Previous,
}

/// The device's bucket in `0..100`: the first 8 bytes of `sha256(channel + id)`
/// read big-endian, modulo 100.
pub fn bucket(channel: &str, id: &str) -> u8 {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_bytes());
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let first = u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"));
    (first % 100) as u8
}

/// Picks the side for a device. Devices without an id stay on `previous` until the
/// rollout reaches 100%; without a `previous` everyone gets `current`.
pub fn choose(channel: &str, id: Option<&str>, rollout: u8, has_previous: bool) -> Side {
    if !has_previous || rollout >= 100 {
        return Side::Current;
    }
    match id {
        Some(id) if !id.is_empty() && bucket(channel, id) < rollout => Side::Current,
        _ => Side::Previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable_and_known() {
        // Pinning the formula keeps devices from flipping sides between releases.
        let b = bucket("esp32", "dev-1");
        assert_eq!(b, bucket("esp32", "dev-1"));
        let digest = Sha256::digest(b"esp32dev-1");
        assert_eq!(u64::from(b), u64::from_be_bytes(digest[..8].try_into().unwrap()) % 100);
    }

    #[test]
    fn thirty_percent_of_a_thousand() {
        let current =
            (0..1000).filter(|i| choose("esp32", Some(&format!("device-{i}")), 30, true) == Side::Current).count();
        assert!((250..=350).contains(&current), "{current} devices got current");
    }

    #[test]
    fn edges() {
        assert_eq!(choose("c", None, 99, true), Side::Previous);
        assert_eq!(choose("c", None, 100, true), Side::Current);
        assert_eq!(choose("c", None, 0, false), Side::Current);
        assert_eq!(choose("c", Some("x"), 0, true), Side::Previous);
        assert_eq!(choose("c", Some(""), 50, true), Side::Previous);
    }
}
