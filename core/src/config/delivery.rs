//! Config delivery: a gateway's config reaches it two ways, the ConfigMap kubelet mounts
//! (the boot config and the fallback, synced up to a minute late) and the operator's
//! long-poll endpoint (within a second). Both carry the same rendering with the same
//! [`GatewayConfig::revision`]; the rules both sides share live here: which of two
//! configs wins ([`supersedes`]) and how the operator numbers a new rendering
//! ([`next_revision`]).

use std::borrow::Cow;
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, GatewayConfig};

/// The most a ConfigMap may hold: the API server refuses one whose keys and values
/// (`data` and `binaryData`) add up to more (`ConfigMap ... must have at most 1048576
/// bytes`).
pub const CONFIGMAP_LIMIT: usize = 1 << 20;

/// The largest config a gateway reads once decompressed (about 60,000 channels; a
/// gzip-compressed file claiming more is refused, not inflated).
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// How a rendered config is stored in its ConfigMap under `key`.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// As YAML text in `data` (readable with kubectl), while it fits.
    Text(String),
    /// Gzip-compressed in `binaryData`, when the text would not fit; the gateway reads
    /// both ([`GatewayConfig::parse`]).
    Gzip(Vec<u8>),
}

/// A rendering too large for a ConfigMap even compressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the rendered gateway.yaml is {text} bytes, {compressed} compressed with gzip, over the ConfigMap limit of \
     {CONFIGMAP_LIMIT} bytes; serve fewer channels from this gateway (about 11,000 fit: see the chart README)"
)]
pub struct TooLarge {
    pub text: usize,
    pub compressed: usize,
}

/// How `yaml` is stored under `key`: as text when key and text fit
/// [`CONFIGMAP_LIMIT`], else compressed, else [`TooLarge`].
pub fn store(key: &str, yaml: String) -> Result<Stored, TooLarge> {
    if key.len() + yaml.len() <= CONFIGMAP_LIMIT {
        return Ok(Stored::Text(yaml));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, yaml.as_bytes()).expect("writing to memory");
    let compressed = encoder.finish().expect("writing to memory");
    if key.len() + compressed.len() <= CONFIGMAP_LIMIT {
        Ok(Stored::Gzip(compressed))
    } else {
        Err(TooLarge { text: yaml.len(), compressed: compressed.len() })
    }
}

/// `text` itself, or its decompression when it is gzip (a config [`store`]d
/// compressed), at most [`MAX_CONFIG_BYTES`].
pub(crate) fn inflate(text: &[u8]) -> Result<Cow<'_, [u8]>, ConfigError> {
    if !text.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(text)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| ConfigError::Invalid(format!("gzip-compressed config: {e}")))?;
    if out.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Invalid(format!("gzip-compressed config over {MAX_CONFIG_BYTES} bytes decompressed")));
    }
    Ok(Cow::Owned(out))
}

/// The operator's config endpoint for one gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorSource {
    /// The gateway's config URL, e.g.
    /// `http://updraft-operator.updraft-system.svc:8082/v1/gateways/NS/NAME/config`; the
    /// gateway adds `?revision=R` (the revision it serves).
    pub url: String,
    /// File holding the bearer token the endpoint requires (a Secret the operator owns,
    /// mounted into the pods); read again on every request, so a new token needs no
    /// restart.
    pub token_file: PathBuf,
}

/// Whether a config of revision `new` may replace the live one of revision `live`: an
/// equal revision is the same rendering (or a hand-written file, revision 0), a lower
/// one is stale (a ConfigMap kubelet syncs after the long-poll already delivered a newer
/// config) and is ignored.
pub fn supersedes(new: u64, live: u64) -> bool {
    new >= live
}

/// The revision of `rendered`, given the config the operator last stored (the live
/// ConfigMap's, `None` when there is none): the same revision when the content did not
/// change, the next one when it did. The ConfigMap is the memory, so the count survives
/// an operator restart and stays monotonic.
pub fn next_revision(stored: Option<&GatewayConfig>, rendered: &GatewayConfig) -> u64 {
    let Some(stored) = stored else { return 1 };
    let unchanged = GatewayConfig { revision: stored.revision, ..rendered.clone() } == *stored;
    if unchanged {
        stored.revision
    } else {
        stored.revision + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_stored_as_text_while_it_fits_then_compressed() {
        let small = GatewayConfig::default().to_yaml();
        assert_eq!(store("gateway.yaml", small.clone()), Ok(Stored::Text(small)));
        let big = GatewayConfig { public_url: Some("x".repeat(CONFIGMAP_LIMIT)), ..Default::default() };
        let Ok(Stored::Gzip(bytes)) = store("gateway.yaml", big.to_yaml()) else { panic!("not compressed") };
        assert!(bytes.len() < 10_000, "{}", bytes.len());
        assert_eq!(GatewayConfig::parse(&bytes).unwrap(), big, "the gateway reads it back");
        // Random text does not compress: too large, with the numbers.
        let mut state = 1u64;
        let noise: String = (0..2 * CONFIGMAP_LIMIT)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                char::from(b'a' + (state >> 59) as u8 % 26)
            })
            .collect();
        let err = store("gateway.yaml", noise).unwrap_err();
        assert_eq!(err.text, 2 * CONFIGMAP_LIMIT);
        assert!(err.compressed > CONFIGMAP_LIMIT);
        assert!(err.to_string().contains("over the ConfigMap limit of 1048576 bytes"), "{err}");
    }

    #[test]
    fn a_compressed_config_is_inflated_within_its_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; (MAX_CONFIG_BYTES + 1) as usize];
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 200_000);
        let err = GatewayConfig::parse(&bomb).unwrap_err();
        assert!(err.to_string().contains("over 67108864 bytes decompressed"), "{err}");
        assert!(GatewayConfig::parse(&[0x1f, 0x8b, 0, 0]).is_err(), "broken gzip is refused");
    }

    #[test]
    fn a_rendering_is_numbered_after_the_stored_one() {
        let mut rendered = GatewayConfig::default();
        assert_eq!(next_revision(None, &rendered), 1, "first rendering");
        let stored = GatewayConfig { revision: 7, ..rendered.clone() };
        assert_eq!(next_revision(Some(&stored), &rendered), 7, "same content, same revision");
        rendered.public_url = Some("https://x".into());
        assert_eq!(next_revision(Some(&stored), &rendered), 8, "new content, next revision");
    }

    #[test]
    fn a_late_older_config_never_wins() {
        assert!(supersedes(8, 7));
        assert!(supersedes(7, 7), "the same rendering from the other source");
        assert!(!supersedes(6, 7), "kubelet's late copy");
        assert!(supersedes(0, 0), "hand-written files");
    }

    #[test]
    fn the_fields_round_trip_and_are_omitted_when_unset() {
        let plain = GatewayConfig::default().to_yaml();
        assert!(!plain.contains("revision") && !plain.contains("operator"), "{plain}");
        let config = GatewayConfig {
            revision: 3,
            operator: Some(OperatorSource {
                url: "http://op:8082/v1/gateways/ns/gw/config".into(),
                token_file: "/t".into(),
            }),
            ..Default::default()
        };
        let text = config.to_yaml();
        assert!(text.contains("revision: 3") && text.contains("tokenFile: /t"), "{text}");
        assert_eq!(GatewayConfig::parse(text.as_bytes()).unwrap(), config);
    }
}
