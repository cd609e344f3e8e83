//! Version policy: which tag of a repository is "the latest".
//!
//! Shared by the gateway's standalone mode and the operator's FirmwareChannel
//! resolution, so both pick the same tag from the same list.

use std::time::Duration;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

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
    /// How often to list tags, e.g. `30s`, `5m`, `1h`. Default `5m`.
    #[serde(default = "default_interval")]
    pub interval: String,
}

impl VersionPolicy {
    pub fn validate(&self) -> Result<(), String> {
        parse_range(&self.range)?;
        parse_duration(&self.interval)?;
        Ok(())
    }
}

fn default_range() -> String {
    "*".into()
}
fn default_interval() -> String {
    "5m".into()
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
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
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
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
