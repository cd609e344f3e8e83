//! Version policy: which tag of a repository is "the latest".
//!
//! [`resolve_latest`] is the one resolver, and [`resolve_verified`] the one resolver
//! under signature verification, both of a [`Lookup`]: the operator calls them for a
//! FirmwareChannel's status and the gateway for a standalone channel, so both pick the
//! same tag from the same list under the same rules (range, pre-releases, `v` prefix,
//! pin; the newest release whose signature verifies, skipping newer ones that do not).

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::cosign::{KeyError, Verified, Verifier, VerifyConfig, VerifyError};
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
    /// Resolve to the newest release whose cosign signature verifies with one of these
    /// keys ([`resolve_verified`]); newer releases that do not verify are skipped.
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
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.rule().validate()?;
        parse_duration(&self.interval)?;
        if let Some(verify) = &self.verify {
            verify.verifier().map_err(PolicyError::Verify)?;
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
    pub fn validate(&self) -> Result<(), PolicyError> {
        match self.pin {
            Some(pin) if pin.starts_with("sha256:") && !crate::oci::is_digest(pin) => {
                Err(PolicyError::DigestPin(pin.to_owned()))
            }
            Some(_) => Ok(()),
            None => parse_range(self.range).map(drop),
        }
    }
}

/// Why a policy, or one of its parts (a range, a pin, an interval, the keys), is refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid semver range {range:?}: {source}")]
    Range { range: String, source: semver::Error },
    #[error("pin {0:?} is not sha256:<64 hex>")]
    DigestPin(String),
    #[error("invalid duration {0:?}: use e.g. 30s, 5m, 1h30m")]
    Duration(String),
    #[error("verify: {0}")]
    Verify(#[source] KeyError),
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
pub(crate) fn short_digest(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// What to resolve: a repository, how to reach it, and the rule that picks its
/// "latest"; the operator fills it from a FirmwareChannel, the gateway from a
/// standalone channel.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    /// Registry host[:port].
    pub registry: &'a str,
    pub repository: &'a str,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub auth: &'a RegistryAuth,
    pub rule: Rule<'a>,
}

/// Why [`resolve_latest`] found nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The registry did not answer, or refused.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// The rule itself is wrong (a bad range): retrying will not help.
    #[error(transparent)]
    InvalidRule(PolicyError),
    /// The repository has no tag the rule admits.
    #[error("none of the {tags} tags of {repository} satisfies range {range:?}{}", if *.prerelease { "" } else { " (pre-releases excluded)" })]
    NoMatch { repository: String, range: String, prerelease: bool, tags: usize },
    /// Under verification: no candidate's signature verifies (the newest
    /// [`MAX_VERIFY_CANDIDATES`] of `total` were tried; `skipped` says why, newest first).
    #[error("{}", unverified_message(repository, *total, skipped))]
    Unverified { repository: String, total: usize, skipped: Vec<Skipped> },
}

fn unverified_message(repository: &str, total: usize, skipped: &[Skipped]) -> String {
    let tried = match skipped.len() {
        n if n < total => format!("the newest {n} of {total} versions"),
        1 => "its only version".to_owned(),
        n => format!("all {n} versions"),
    };
    format!("no release of {repository} verifies ({tried} tried): {}", describe_skipped(skipped))
}

/// The first three skipped releases, `; `-separated, and how many more there are: how
/// messages and conditions name them.
pub fn describe_skipped(skipped: &[Skipped]) -> String {
    let mut message: Vec<String> = skipped.iter().take(3).map(Skipped::to_string).collect();
    if skipped.len() > 3 {
        message.push(format!("and {} more", skipped.len() - 3));
    }
    message.join("; ")
}

impl ResolveError {
    /// Whether asking again later may give another answer without anyone changing the
    /// registry's content or the rule (the registry failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, ResolveError::Registry(_))
    }
}

/// Resolves a repository's "latest" under its rule, from registry metadata only: the
/// tag list (unless pinned) and a HEAD of the chosen tag's manifest (unless pinned by
/// digest). Nothing is pulled.
pub async fn resolve_latest(client: &Client, lookup: Lookup<'_>) -> Result<Resolved, ResolveError> {
    let mut gone = None;
    for candidate in candidate_list(client, lookup).await?.into_iter().take(MAX_GONE) {
        match candidate.resolve(client, lookup).await? {
            Head::Found(resolved) => return Ok(resolved),
            Head::Gone(not_found) => gone = Some(not_found),
        }
    }
    Err(ResolveError::Registry(gone.expect("candidate_list returns at least one")))
}

/// Listed tags tried, newest first, while each is not found: a tag deleted since the
/// list gives way to the next, but a registry that finds none of the tags it lists is
/// failing, and is not asked about every one ([`LISTED_TAG_RETRIES`] each).
const MAX_GONE: usize = 3;

/// How long a tag the list names is asked for again while its manifest is not found:
/// 50 ms, then twice as long each time, 1.55 s in all. A registry lists a tag before it
/// resolves, and notifies a push before either: distribution sends the push event, then
/// links the tag into its index (the tag list sees it), then links the manifest (a HEAD
/// finds it). A check the notification started landed in that gap about one push in 90
/// in the webhook e2e test; taking it for an outage waited out the 5 s check backoff.
const LISTED_TAG_RETRIES: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// At most this many candidates (newest first) are verified in one resolution under
/// `verify`: past them the repository is not a release line but a flood of refused tags,
/// and the channel keeps what it has. Each one costs a HEAD and three or four small
/// signature lookups.
pub(crate) const MAX_VERIFY_CANDIDATES: usize = 100;

/// What [`resolve_verified`] found: the newest release whose signature verifies, and the
/// newer ones it skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRelease {
    pub resolved: Resolved,
    pub verified: Verified,
    /// Releases newer than `resolved` (newest first) whose signature did not verify.
    pub skipped: Vec<Skipped>,
}

/// A release left out because its signature did not verify (never because the registry
/// failed: that stops the resolution, see [`resolve_verified`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub release: Resolved,
    /// `NoSignature`, `WrongKey`, … ([`VerifyError::reason`]).
    pub reason: &'static str,
    /// The verification error, in words.
    pub error: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Resolved { tag, digest, .. } = &self.release;
        let version = self.release.display_version();
        match tag.as_str() {
            "" => write!(f, "{version} ({digest}) is skipped: {}", self.error),
            tag => write!(f, "{version} (tag {tag}, {digest}) is skipped: {}", self.error),
        }
    }
}

/// Resolves a repository's newest release under its rule whose cosign signature
/// verifies with `verifier`: the rule's candidates are tried newest first, and each one
/// that does not verify (unsigned, signed by another key, tampered) is skipped and
/// reported in the result, never a reason to serve nothing. A registry failure (listing, HEAD or a
/// signature lookup) stops the resolution: what was verified before stays valid. When
/// no candidate verifies (among the newest [`MAX_VERIFY_CANDIDATES`]), the error lists
/// the skipped ones. Reads registry metadata and small signature blobs only.
pub async fn resolve_verified(
    client: &Client,
    lookup: Lookup<'_>,
    verifier: &Verifier,
) -> Result<VerifiedRelease, ResolveError> {
    let Lookup { registry, repository, auth, .. } = lookup;
    let candidates = candidate_list(client, lookup).await?;
    let total = candidates.len();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut gone = 0;
    for candidate in candidates.into_iter().take(MAX_VERIFY_CANDIDATES) {
        // A tag deleted since the list is no release: the next one is tried.
        let resolved = match candidate.resolve(client, lookup).await? {
            Head::Found(resolved) => resolved,
            Head::Gone(not_found) if gone + 1 >= MAX_GONE => return Err(ResolveError::Registry(not_found)),
            Head::Gone(_) => {
                gone += 1;
                continue;
            }
        };
        // `v1.2.0` and `1.2.0` on one digest: one verification.
        if let Some(earlier) = skipped.iter().find(|s| s.release.digest == resolved.digest) {
            let (reason, error) = (earlier.reason, earlier.error.clone());
            skipped.push(Skipped { release: resolved, reason, error });
            continue;
        }
        match verifier.verify(client, registry, repository, auth, &resolved.digest).await {
            Ok(verified) => return Ok(VerifiedRelease { resolved, verified, skipped }),
            Err(VerifyError::Registry(e)) => return Err(ResolveError::Registry(e)),
            Err(e) => skipped.push(Skipped { release: resolved, reason: e.reason(), error: e.to_string() }),
        }
    }
    Err(ResolveError::Unverified { repository: format!("{registry}/{repository}"), total, skipped })
}

/// One release [`candidate_list`] offers, its digest not known yet (unless pinned by
/// digest).
struct Candidate {
    version: Option<String>,
    tag: String,
    digest: Option<String>,
    /// Read from the tag list (not a pin): a manifest not found may be one the registry
    /// is still linking, or a tag deleted since.
    listed: bool,
}

/// What a candidate's HEAD found.
enum Head {
    Found(Resolved),
    /// A listed tag the registry no longer finds (deleted since the list): the next
    /// candidate is the newest.
    Gone(OciError),
}

impl Candidate {
    /// The candidate with its manifest digest, from a HEAD (or a pull of the manifest
    /// when the registry sends no digest header). A listed tag whose manifest is still
    /// not found after [`LISTED_TAG_RETRIES`] is [`Head::Gone`]; a pin that is not found
    /// is an error.
    async fn resolve(self, client: &Client, lookup: Lookup<'_>) -> Result<Head, ResolveError> {
        let Lookup { registry, repository, insecure, auth, .. } = lookup;
        let Candidate { version, tag, digest, listed } = self;
        if let Some(digest) = digest {
            return Ok(Head::Found(Resolved { version, tag, digest }));
        }
        let reference = oci::tag_reference(registry, repository, &tag);
        let head = || async {
            match oci::probe().manifest_digest(client, &reference, insecure, auth).await? {
                Some(digest) => Ok(digest),
                // No digest header: oci-client pulls the manifest and hashes it.
                None => client.fetch_manifest_digest(&reference, auth).await.map_err(oci::registry_error(registry)),
            }
        };
        let mut waits = LISTED_TAG_RETRIES.iter().filter(|_| listed);
        loop {
            match head().await {
                Ok(digest) => return Ok(Head::Found(Resolved { version, tag, digest })),
                Err(e) if listed && oci::is_unknown_repository(&e) => match waits.next() {
                    Some(wait) => {
                        tracing::debug!(%reference, "a listed tag not found yet; asking again");
                        tokio::time::sleep(*wait).await
                    }
                    None => return Ok(Head::Gone(e)),
                },
                Err(e) => return Err(ResolveError::Registry(e)),
            }
        }
    }
}

/// The releases the lookup's rule admits, newest first (never empty): the pin alone, or
/// the tags in [`candidates`] order.
async fn candidate_list(client: &Client, lookup: Lookup<'_>) -> Result<Vec<Candidate>, ResolveError> {
    let Lookup { registry, repository, insecure, auth, rule } = lookup;
    rule.validate().map_err(ResolveError::InvalidRule)?;
    match rule.pin {
        Some(digest) if digest.starts_with("sha256:") => {
            Ok(vec![Candidate { version: None, tag: String::new(), digest: Some(digest.to_owned()), listed: false }])
        }
        Some(tag) => Ok(vec![Candidate {
            version: parse_tag(tag, rule.allow_v_prefix).map(|v| v.to_string()),
            tag: tag.to_owned(),
            digest: None,
            listed: false,
        }]),
        None => {
            let image = oci::tag_reference(registry, repository, "latest");
            let tags = oci::list_repository_tags(client, &image, insecure, auth).await?;
            let range = parse_range(rule.range).map_err(ResolveError::InvalidRule)?;
            let admitted = candidates(tags.iter().map(String::as_str), &range, rule.prerelease, rule.allow_v_prefix);
            if admitted.is_empty() {
                return Err(ResolveError::NoMatch {
                    repository: format!("{registry}/{repository}"),
                    range: rule.range.to_owned(),
                    prerelease: rule.prerelease,
                    tags: tags.len(),
                });
            }
            let candidate = |s: Selected| Candidate {
                version: Some(s.version.to_string()),
                tag: s.tag,
                digest: None,
                listed: true,
            };
            Ok(admitted.into_iter().map(candidate).collect())
        }
    }
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
pub fn parse_range(range: &str) -> Result<VersionReq, PolicyError> {
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
    VersionReq::parse(&joined).map_err(|source| PolicyError::Range { range: range.to_owned(), source })
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

/// The highest version among `tags` that satisfies the policy: the first of
/// [`candidates`].
pub fn select_latest<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    req: &VersionReq,
    prerelease: bool,
    allow_v_prefix: bool,
) -> Option<Selected> {
    candidates(tags, req, prerelease, allow_v_prefix).into_iter().next()
}

/// Every tag that satisfies the policy, newest first. Tags that are not versions are
/// ignored. Between `v1.2.3` and `1.2.3` the bare one comes first (stable order).
pub fn candidates<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    req: &VersionReq,
    prerelease: bool,
    allow_v_prefix: bool,
) -> Vec<Selected> {
    let mut admitted: Vec<Selected> = tags
        .into_iter()
        .filter_map(|tag| parse_tag(tag, allow_v_prefix).map(|version| Selected { version, tag: tag.to_owned() }))
        .filter(|s| matches(req, &s.version, prerelease))
        .collect();
    admitted.sort_by(|a, b| {
        b.version.cmp(&a.version).then_with(|| a.tag.len().cmp(&b.tag.len())).then_with(|| a.tag.cmp(&b.tag))
    });
    admitted
}

/// Parses `90s`, `5m`, `1h`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, PolicyError> {
    let bad = || PolicyError::Duration(s.to_owned());
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
        assert!(parse_range("not a range").unwrap_err().to_string().contains("invalid semver range"));
    }

    #[test]
    fn candidates_come_newest_first_and_the_first_is_the_latest() {
        let all: Vec<String> = candidates(TAGS.iter().copied(), &parse_range("*").unwrap(), true, true)
            .into_iter()
            .map(|s| s.tag)
            .collect();
        assert_eq!(all, ["2.0.0", "v1.3.0-rc.1", "v1.2.0", "1.1.0", "v1.0.0"]);
        let both = ["v1.2.0", "1.2.0", "1.1.0"];
        let tags: Vec<String> =
            candidates(both, &parse_range("*").unwrap(), false, true).into_iter().map(|s| s.tag).collect();
        assert_eq!(tags, ["1.2.0", "v1.2.0", "1.1.0"], "the bare tag first, as select_latest picks it");
        assert_eq!(select_latest(both, &parse_range("*").unwrap(), false, true).unwrap().tag, "1.2.0");
    }

    fn skipped(version: &str, reason: &'static str) -> Skipped {
        let release = Resolved {
            version: Some(version.into()),
            tag: format!("v{version}"),
            digest: format!("sha256:{}", "ab".repeat(32)),
        };
        Skipped { release, reason, error: "no cosign signature".into() }
    }

    #[test]
    fn skipped_releases_name_version_tag_digest_and_why() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let one = skipped("1.1.0", "NoSignature");
        assert_eq!(one.to_string(), format!("1.1.0 (tag v1.1.0, {digest}) is skipped: no cosign signature"));
        let by_digest =
            Skipped { release: Resolved { version: None, tag: String::new(), digest: digest.clone() }, ..one };
        assert_eq!(by_digest.to_string(), format!("abababababab ({digest}) is skipped: no cosign signature"));
        let five: Vec<Skipped> = (0..5).rev().map(|n| skipped(&format!("1.{n}.0"), "WrongKey")).collect();
        let described = describe_skipped(&five);
        assert!(described.starts_with("1.4.0 (tag v1.4.0"), "{described}");
        assert!(described.ends_with("; and 2 more"), "{described}");
        let err = ResolveError::Unverified { repository: "r/fw".into(), total: 7, skipped: five[..2].to_vec() };
        assert!(err.to_string().starts_with("no release of r/fw verifies (the newest 2 of 7 versions tried): 1.4.0"));
        assert!(!err.is_transient());
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
        assert!(rule("*", Some("sha256:abc")).validate().unwrap_err().to_string().contains("sha256:<64 hex>"));
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
