//! Version policy: which tag of a repository is "the latest".
//!
//! [`resolve_latest`] is the one resolver: the operator calls it for a
//! FirmwareChannel's status and the gateway for a standalone channel, so both pick the
//! same tag from the same list under the same rules (range, pre-releases, `v` prefix,
//! pin).

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::cosign::VerifyConfig;
use crate::oci::{self, OciError};

/// Standalone resolution policy for a channel in `gateway.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionPolicy {
    /// Semver range, e.g. `>=1.2, <2` or `^1.4` (npm-style spaces also accepted). Default `*`.
    #[serde(default = "default_range")]
    pub range: String,
    /// Whether pre-releases (`1.3.0-rc.1`) may be picked.
    #[serde(default)]
    pub prerelease: bool,
    /// Whether tags written `v1.2.3` count as versions. Default true.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub allow_v_prefix: bool,
    /// Pin to one tag (`v1.2.3`) or manifest digest (`sha256:…`); wins over `range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// How often to list tags, e.g. `30s`, `5m`, `1h`. Default `5m`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Pin a resolved release only when its cosign signature verifies with one of these
    /// keys; otherwise the channel keeps what it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyConfig>,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self {
            range: default_range(),
            prerelease: false,
            allow_v_prefix: true,
            pin: None,
            interval: default_interval(),
            verify: None,
        }
    }
}

impl VersionPolicy {
    /// Checks the rule and the interval, and reads the verification keys.
    pub fn validate(&self) -> Result<(), String> {
        self.rule().validate()?;
        parse_duration(&self.interval)?;
        if let Some(verify) = &self.verify {
            verify.verifier().map_err(|e| format!("verify: {e}"))?;
        }
        Ok(())
    }

    /// The selection rule of this policy.
    pub fn rule(&self) -> Rule<'_> {
        Rule {
            range: &self.range,
            prerelease: self.prerelease,
            allow_v_prefix: self.allow_v_prefix,
            pin: self.pin.as_deref(),
        }
    }
}

/// How one repository's "latest" is chosen: what [`resolve_latest`] needs of a
/// policy, borrowed from the operator's CRD or the gateway's config alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule<'a> {
    /// Semver range (cargo or npm syntax).
    pub range: &'a str,
    pub prerelease: bool,
    pub allow_v_prefix: bool,
    /// A tag or a `sha256:` digest; wins over `range`.
    pub pin: Option<&'a str>,
}

impl Rule<'_> {
    /// Checks the range, and a digest pin's spelling.
    pub fn validate(&self) -> Result<(), String> {
        match self.pin {
            Some(pin) if pin.starts_with("sha256:") && !crate::oci::is_digest(pin) => {
                Err(format!("pin {pin:?} is not sha256:<64 hex>"))
            }
            Some(_) => Ok(()),
            None => parse_range(self.range).map(drop),
        }
    }
}

/// What [`resolve_latest`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The version the tag spells (without `v`); `None` when pinned by digest, or
    /// pinned to a tag that is not a version.
    pub version: Option<String>,
    /// The tag; empty when pinned by digest.
    pub tag: String,
    /// The manifest digest, `sha256:…`.
    pub digest: String,
}

impl Resolved {
    /// The version to show: the tag's version, else the tag, else a short digest.
    pub fn display_version(&self) -> String {
        match (&self.version, self.tag.is_empty()) {
            (Some(v), _) => v.clone(),
            (None, false) => self.tag.clone(),
            (None, true) => short_digest(&self.digest),
        }
    }
}

/// The first 12 hex digits of a digest.
pub fn short_digest(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Why [`resolve_latest`] found nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The registry did not answer, or refused.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// The rule itself is wrong (a bad range): retrying will not help.
    #[error("{0}")]
    InvalidRule(String),
    /// The repository has no tag the rule admits.
    #[error("none of the {tags} tags of {repository} satisfies range {range:?}{}", if *.prerelease { "" } else { " (pre-releases excluded)" })]
    NoMatch { repository: String, range: String, prerelease: bool, tags: usize },
}

/// Resolves a repository's "latest" under `rule`, from registry metadata only: the tag
/// list (unless pinned) and a HEAD of the chosen tag's manifest (unless pinned by
/// digest). Nothing is pulled.
pub async fn resolve_latest(
    client: &Client,
    registry: &str,
    repository: &str,
    insecure: bool,
    auth: &RegistryAuth,
    rule: Rule<'_>,
) -> Result<Resolved, ResolveError> {
    rule.validate().map_err(ResolveError::InvalidRule)?;
    let (version, tag) = match rule.pin {
        Some(digest) if digest.starts_with("sha256:") => {
            return Ok(Resolved { version: None, tag: String::new(), digest: digest.to_owned() });
        }
        Some(tag) => (parse_tag(tag, rule.allow_v_prefix).map(|v| v.to_string()), tag.to_owned()),
        None => {
            let image = oci::tag_reference(registry, repository, "latest");
            let tags = oci::list_repository_tags(client, &image, insecure, auth).await?;
            let range = parse_range(rule.range).map_err(ResolveError::InvalidRule)?;
            let selected = select_latest(tags.iter().map(String::as_str), &range, rule.prerelease, rule.allow_v_prefix)
                .ok_or_else(|| ResolveError::NoMatch {
                    repository: format!("{registry}/{repository}"),
                    range: rule.range.to_owned(),
                    prerelease: rule.prerelease,
                    tags: tags.len(),
                })?;
            (Some(selected.version.to_string()), selected.tag)
        }
    };
    let reference = oci::tag_reference(registry, repository, &tag);
    let digest = match oci::probe().manifest_digest(client, &reference, insecure, auth).await? {
        Some(digest) => digest,
        // No digest header: oci-client pulls the manifest and hashes it.
        None => client.fetch_manifest_digest(&reference, auth).await.map_err(oci::registry_error(registry))?,
    };
    Ok(Resolved { version, tag, digest })
}

fn default_range() -> String {
    "*".into()
}
fn default_interval() -> String {
    "5m".into()
}
fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A tag that matched a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    pub version: Version,
    pub tag: String,
}

/// Parses a semver range. Accepts cargo syntax (`>=1.2, <2`) and npm-style
/// space-separated comparators (`>=1.2 <2`).
pub fn parse_range(range: &str) -> Result<VersionReq, String> {
    let range = range.trim();
    if let Ok(req) = VersionReq::parse(range) {
        return Ok(req);
    }
    // Join operators to their versions, then comparators with commas.
    let mut joined = String::new();
    for token in range.split_whitespace() {
        let ends_with_operator = joined.ends_with(['<', '>', '=', '~', '^']);
        if !joined.is_empty() && !ends_with_operator {
            joined.push_str(", ");
        }
        joined.push_str(token);
    }
    VersionReq::parse(&joined).map_err(|e| format!("invalid semver range {range:?}: {e}"))
}

/// Parses a tag as a version: `1.2.3` or, when `allow_v_prefix`, `v1.2.3`.
pub fn parse_tag(tag: &str, allow_v_prefix: bool) -> Option<Version> {
    let bare = match tag.strip_prefix(['v', 'V']) {
        Some(rest) if allow_v_prefix => rest,
        Some(_) => return None,
        None => tag,
    };
    Version::parse(bare).ok()
}

/// Whether `version` satisfies `req`; with `prerelease`, a pre-release also counts
/// when its release would (so `>=1.2` admits `1.3.0-rc.1`).
pub fn matches(req: &VersionReq, version: &Version, prerelease: bool) -> bool {
    if version.pre.is_empty() {
        return req.matches(version);
    }
    if !prerelease {
        return false;
    }
    let release = Version::new(version.major, version.minor, version.patch);
    req.matches(version) || req.matches(&release)
}

/// The highest version among `tags` that satisfies the policy. Tags that are not
/// versions are ignored. Between `v1.2.3` and `1.2.3` the bare one wins (stable order).
pub fn select_latest<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    req: &VersionReq,
    prerelease: bool,
    allow_v_prefix: bool,
) -> Option<Selected> {
    tags.into_iter()
        .filter_map(|tag| parse_tag(tag, allow_v_prefix).map(|v| (v, tag)))
        .filter(|(v, _)| matches(req, v, prerelease))
        .max_by(|(a, ta), (b, tb)| a.cmp(b).then_with(|| tb.len().cmp(&ta.len())))
        .map(|(version, tag)| Selected { version, tag: tag.to_owned() })
}

/// Parses `90s`, `5m`, `1h`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 5m, 1h30m");
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        // A number too large for the unit is as invalid as a wrong unit (no overflow).
        total = n.checked_mul(unit).and_then(|secs| total.checked_add(secs)).ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: &[&str] = &["latest", "v1.0.0", "1.1.0", "v1.2.0", "v1.3.0-rc.1", "2.0.0", "junk-1"];

    fn pick(range: &str, pre: bool, v: bool) -> Option<String> {
        select_latest(TAGS.iter().copied(), &parse_range(range).unwrap(), pre, v).map(|s| s.tag)
    }

    #[test]
    fn picks_highest_in_range() {
        assert_eq!(pick("*", false, true).as_deref(), Some("2.0.0"));
        assert_eq!(pick("^1", false, true).as_deref(), Some("v1.2.0"));
        assert_eq!(pick(">=1.0, <1.2", false, true).as_deref(), Some("1.1.0"));
    }

    #[test]
    fn prereleases_only_when_allowed() {
        assert_eq!(pick("^1", true, true).as_deref(), Some("v1.3.0-rc.1"));
        assert_eq!(pick("^1", false, true).as_deref(), Some("v1.2.0"));
    }

    #[test]
    fn v_prefix_can_be_refused() {
        assert_eq!(pick("^1", false, false).as_deref(), Some("1.1.0"));
        assert_eq!(parse_tag("v1.2.3", true), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_tag("v1.2.3", false), None);
    }

    #[test]
    fn npm_style_ranges() {
        assert_eq!(pick(">=1.0.0 <1.2.0", false, true).as_deref(), Some("1.1.0"));
        assert_eq!(pick(">= 1.0.0 < 1.2.0", false, true).as_deref(), Some("1.1.0"));
        assert!(parse_range("not a range").unwrap_err().contains("invalid semver range"));
    }

    #[test]
    fn nothing_matches() {
        assert_eq!(pick(">=3", true, true), None);
    }

    #[test]
    fn rules_check_range_and_digest_pins() {
        let rule = |range, pin| Rule { range, prerelease: false, allow_v_prefix: true, pin };
        assert!(rule("not a range", None).validate().is_err());
        assert!(rule("not a range", Some("v1.0.0")).validate().is_ok());
        assert!(rule("*", Some("sha256:abc")).validate().unwrap_err().contains("sha256:<64 hex>"));
        let resolved = Resolved { version: None, tag: String::new(), digest: format!("sha256:{}", "ab".repeat(32)) };
        assert_eq!(resolved.display_version(), "abababababab");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
