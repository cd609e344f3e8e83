//! An OCI repository as one side of a mirror: its tags with their manifest digests
//! (HEAD requests only), and, in files mode, the titled layers of their manifests.
//! Signature and attestation tags of a digest (`sha256-<hex>.sig`, `.att`, …:
//! [`crate::oci::tags`]) are not
//! artifacts of their own: they are part of the identity of the tag whose digest they
//! name, so a new signature makes that tag pending.

use std::collections::BTreeMap;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use super::error::{error_chain, MirrorError};
use super::rules::Artifact;
use crate::config::SourceConfig;
use crate::oci::tags::attached_to;
use crate::oci::{
    digest_reference, is_unknown_repository, list_repository_tags, registry_auth, tag_reference, OciError,
};

/// Manifest media types pulled as they are.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The annotation that names a layer's file (what `oras push` sets).
pub const TITLE: &str = "org.opencontainers.image.title";

/// The manifest annotation of when an artifact was made (`oras push` sets it).
pub const CREATED: &str = "org.opencontainers.image.created";

/// The parts of a manifest or index that name other content.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Raw {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A content descriptor inside a manifest or index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Where a repository's credentials come from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The source's `dockerConfig` file, read at every use (a mounted Secret).
    FromConfig,
    /// Given (the operator reads them from the Secret).
    Given(RegistryAuth),
}

/// One repository.
pub struct Repository {
    source: SourceConfig,
    credentials: Credentials,
    client: Client,
    side: &'static str,
}

impl Repository {
    /// The repository `source` names, as `side`, through `client`.
    pub fn new(source: &SourceConfig, credentials: Credentials, side: &'static str, client: Client) -> Self {
        Self { source: source.clone(), credentials, client, side }
    }

    /// The registry client (it caches tokens).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Registry, repository, and how to reach them.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// `source` or `destination`.
    pub fn side(&self) -> &'static str {
        self.side
    }

    /// The credentials to use now.
    pub fn auth(&self) -> Result<RegistryAuth, MirrorError> {
        match &self.credentials {
            Credentials::FromConfig => registry_auth(&self.source).map_err(|e| MirrorError::Config(e.to_string())),
            Credentials::Given(auth) => Ok(auth.clone()),
        }
    }

    /// The reference of `tag` in this repository.
    pub fn tag(&self, tag: &str) -> Reference {
        tag_reference(&self.source.registry, &self.source.repository, tag)
    }

    /// The reference of `digest` in this repository.
    pub fn at(&self, digest: &str) -> Reference {
        digest_reference(&self.source.registry, &self.source.repository, digest)
    }

    /// A registry error as a mirror error: a request that did not get through is
    /// `Unreachable`, anything else the registry said is `Registry`.
    pub fn error(&self) -> impl Fn(OciDistributionError) -> MirrorError + '_ {
        move |e| match &e {
            OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                MirrorError::Unreachable { side: self.side, message: error_chain(&e) }
            }
            _ => MirrorError::Registry(format!("{} {}: {}", self.side, self.source.registry, error_chain(&e))),
        }
    }

    /// Tag → manifest digest, for every tag. A repository that does not exist yet
    /// holds nothing.
    pub async fn tags(&self) -> Result<BTreeMap<String, String>, MirrorError> {
        let auth = self.auth()?;
        let tags = match list_repository_tags(&self.client, &self.tag("latest"), self.source.insecure, &auth).await {
            Ok(tags) => tags,
            Err(e) if is_unknown_repository(&e) => return Ok(BTreeMap::new()),
            Err(OciError::Registry { source, .. }) => return Err(self.error()(source)),
            Err(other) => return Err(MirrorError::Registry(format!("{} {other}", self.side))),
        };
        let mut found = BTreeMap::new();
        for tag in tags {
            let digest = self.client.fetch_manifest_digest(&self.tag(&tag), &auth).await.map_err(self.error())?;
            found.insert(tag, digest);
        }
        Ok(found)
    }

    /// Each tag that is not a signature tag, with its digest and the signature tags
    /// of that digest (`tag=digest`, space-separated) as its identity.
    pub async fn list(&self) -> Result<Vec<Artifact>, MirrorError> {
        let tags = self.tags().await?;
        let mut attachments: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tag, digest) in &tags {
            if let Some(subject) = attached_to(tag) {
                attachments.entry(subject).or_default().push(format!("{tag}={digest}"));
            }
        }
        Ok(tags
            .iter()
            .filter(|(tag, _)| attached_to(tag).is_none())
            .map(|(tag, digest)| {
                let mut identity = digest.clone();
                for a in attachments.get(digest).into_iter().flatten() {
                    identity.push(' ');
                    identity.push_str(a);
                }
                Artifact { name: tag.clone(), size: 0, time: 0.0, digest: Some(identity) }
            })
            .collect())
    }

    /// Files mode (the other side is a store): every layer with a title of every
    /// tag's manifest, named by its title, identified by its digest (the file's
    /// SHA-256), its time the manifest's creation annotation when it has one. When
    /// several tags hold the same title, the last tag in order wins.
    pub async fn list_files(&self) -> Result<Vec<Artifact>, MirrorError> {
        let auth = self.auth()?;
        let mut files = BTreeMap::new();
        for (tag, digest) in self.tags().await? {
            if attached_to(&tag).is_some() {
                continue;
            }
            let (raw, _) =
                self.client.pull_manifest_raw(&self.at(&digest), &auth, MANIFEST_TYPES).await.map_err(self.error())?;
            let Ok(parsed) = serde_json::from_slice::<Raw>(&raw) else { continue };
            let time = parsed.annotations.get(CREATED).and_then(|t| rfc3339_seconds(t)).unwrap_or(0.0);
            for layer in parsed.layers {
                let (Some(title), Some(hex)) = (layer.annotations.get(TITLE), layer.digest.strip_prefix("sha256:"))
                else {
                    continue;
                };
                let file = Artifact { name: title.clone(), size: layer.size, time, digest: Some(hex.to_owned()) };
                files.insert(title.clone(), file);
            }
        }
        Ok(files.into_values().collect())
    }
}

/// Seconds since the epoch of an RFC 3339 time such as `2026-11-23T17:00:00Z` or
/// `2026-11-23T18:00:00.5+01:00`; `None` for anything else.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    let num = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<i64>().ok()).flatten();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => return None,
    };
    let offset = match offset {
        "Z" | "z" => 0,
        o => {
            let (h, mi) = o[1..].split_once(':')?;
            let secs = num(h)? * 3600 + num(mi)? * 60;
            if o.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let fraction = if frac.is_empty() { 0.0 } else { format!("0.{}", num(frac).map(|_| frac)?).parse().ok()? };
    // Days from 1970-01-01 to y-m-d (the proleptic Gregorian calendar).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_parse_as_rfc_3339() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_seconds("2023-11-14T22:13:20Z"), Some(1_700_000_000.0));
        assert_eq!(rfc3339_seconds("2023-11-14T23:13:20.5+01:00"), Some(1_700_000_000.5));
        assert_eq!(rfc3339_seconds("2000-02-29T12:00:00-02:30"), Some(951_834_600.0));
        for bad in
            ["", "2023-11-14", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20", "yesterday", "2023-11-14T2x:00:00Z"]
        {
            assert_eq!(rfc3339_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn signature_tags_name_their_digest() {
        let hex = "ab".repeat(32);
        assert_eq!(attached_to(&format!("sha256-{hex}.sig")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to(&format!("sha256-{hex}.att")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to(&format!("sha256-{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(attached_to("v1.2.3"), None);
        assert_eq!(attached_to(&format!("sha256-{hex}x")), None);
        assert_eq!(attached_to("sha256-abc.sig"), None);
        // Not a cosign tag: the mirror forwards it as an artifact of its own.
        assert_eq!(attached_to(&format!("sha256-{hex}.tar")), None);
    }
}
