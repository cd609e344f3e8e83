//! Which tags of a repository are not artifacts of their own but things attached to
//! another manifest: cosign's signatures, attestations and SBOMs, and the OCI 1.1
//! referrers tag schema's fallback index. The mirror, the simplestreams surface and the
//! ImageStream controller all skip (or follow) the same tags through [`attached_to`].
//!
//! What the tools push, and so the whole rule:
//!
//! | tag | pushed by |
//! | --- | --- |
//! | `sha256-<hex>.sig` | `cosign sign` (tag scheme) |
//! | `sha256-<hex>.att` | `cosign attest` |
//! | `sha256-<hex>.sbom` | `cosign attach sbom` |
//! | `sha256-<hex>` | a registry without the referrers API (OCI 1.1's fallback tag) |
//!
//! `<hex>` is the 64 lowercase hex digits of the subject's SHA-256 digest, the way the
//! OCI image spec spells digests. Any other suffix (`sha256-<hex>.tar`, say) is an
//! ordinary tag a person chose: an artifact, an image version, never skipped.

/// cosign's attachment suffixes (`ociremote.SignatureTagSuffix`, `AttestationTagSuffix`,
/// `SBOMTagSuffix`).
pub(crate) const ATTACHMENT_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// The digest (`sha256:<hex>`) `tag` is attached to, when it is a cosign or referrers
/// fallback tag; `None` for every other tag.
pub fn attached_to(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.get(..64)?;
    let suffix = &rest[64..];
    let attachment = suffix.is_empty() || ATTACHMENT_SUFFIXES.contains(&suffix);
    (attachment && super::is_sha256_hex(hex)).then(|| format!("sha256:{hex}"))
}

/// Whether `tag` is attached to another manifest (see [`attached_to`]).
pub fn is_attached(tag: &str) -> bool {
    attached_to(tag).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "0123456789abcdef".repeat(4)
    }

    #[test]
    fn cosign_signatures_attestations_and_sboms_are_attached_to_their_digest() {
        let hex = hex();
        for suffix in ["", ".sig", ".att", ".sbom"] {
            assert_eq!(attached_to(&format!("sha256-{hex}{suffix}")), Some(format!("sha256:{hex}")), "{suffix:?}");
        }
    }

    #[test]
    fn a_tar_suffixed_digest_tag_is_an_ordinary_tag() {
        // The gateway listed it as a version while the operator skipped it as a
        // signature; cosign never pushes such a tag, so it is an artifact.
        assert_eq!(attached_to(&format!("sha256-{}.tar", hex())), None);
        assert!(!is_attached(&format!("sha256-{}.tar", hex())));
    }

    #[test]
    fn anything_else_is_an_ordinary_tag() {
        let hex = hex();
        for tag in [
            "debian_bookworm_amd64_default_20260101_0000".to_owned(),
            "v1.2.3".to_owned(),
            "sha256-".to_owned(),
            "sha256-abc.sig".to_owned(),
            format!("sha256-{}.sig", &hex[..63]),
            format!("sha256-{hex}x"),
            format!("sha256-{hex}.sig.sig"),
            format!("sha256-{hex}."),
            format!("sha256-{}.sig", hex.to_ascii_uppercase()),
            format!("sha512-{hex}.sig"),
        ] {
            assert_eq!(attached_to(&tag), None, "{tag}");
        }
    }
}
