//! "The registry has no such thing": the one answer every caller treats as a fact
//! rather than a failure (no upload yet, a version deleted, no signature pushed, nothing
//! to delete). One rule, read from the error's structure, never from its text: a
//! message that merely mentions "404" or "not found" (a digest holding `404`, a 502
//! page saying "upstream not found") is an outage and must stay one.
//!
//! What registries answer, as `oci-client` hands it over:
//!
//! - a 4xx with an error envelope: `RegistryError`, with the codes `MANIFEST_UNKNOWN`,
//!   `NAME_UNKNOWN` (no such repository) or `NOT_FOUND`; a GET or HEAD of a missing
//!   tag ends here (`fetch_manifest_digest` falls back to a GET when the HEAD has no
//!   digest header);
//! - a 404 without an envelope (a bare 404, e.g. a proxy): `ServerError { code: 404 }`;
//! - `ImageManifestNotFoundError`: no entry of an image index for the platform.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::OciError;

/// Whether a registry request failed because the manifest, tag or repository does not
/// exist.
pub fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound)
        }),
        _ => false,
    }
}

/// [`is_not_found`] of a registry error wrapped by this crate (e.g. a tag list of a
/// repository no upload has made yet).
pub fn is_unknown_repository(e: &OciError) -> bool {
    matches!(e, OciError::Registry { source, .. } if is_not_found(source))
}

#[cfg(test)]
mod tests {
    use oci_client::errors::{OciEnvelope, OciError as Envelope};

    use super::*;

    fn registry(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![Envelope { code, message: "x".into(), detail: serde_json::Value::Null }],
            },
            url: "https://r.example/v2/a/manifests/latest".into(),
        }
    }

    fn server(code: u16, message: &str) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: format!("https://r.example/v2/a/manifests/sha256:{}", "404".repeat(21) + "0"),
            message: message.into(),
        }
    }

    #[test]
    fn unknown_manifests_names_and_bare_404s_are_not_found() {
        assert!(is_not_found(&registry(OciErrorCode::ManifestUnknown)));
        assert!(is_not_found(&registry(OciErrorCode::NameUnknown)));
        assert!(is_not_found(&registry(OciErrorCode::NotFound)));
        assert!(is_not_found(&server(404, "")));
        assert!(is_not_found(&OciDistributionError::ImageManifestNotFoundError("no platform".into())));
    }

    #[test]
    fn an_outage_whose_text_mentions_404_or_not_found_is_not_not_found() {
        // The gateway's old text match read both of these as "no such version".
        assert!(!is_not_found(&server(502, "upstream not found")));
        assert!(!is_not_found(&server(500, "")), "the url holds 404 in its digest");
        assert!(!is_not_found(&registry(OciErrorCode::Denied)));
        assert!(!is_not_found(&OciDistributionError::UnauthorizedError { url: "https://r.example/404".into() }));
    }

    #[test]
    fn a_wrapped_not_found_is_an_unknown_repository() {
        let wrapped = |source| OciError::Registry { registry: "r.example".into(), source };
        assert!(is_unknown_repository(&wrapped(registry(OciErrorCode::NameUnknown))));
        assert!(is_unknown_repository(&wrapped(server(404, ""))));
        assert!(!is_unknown_repository(&wrapped(server(503, "not found"))));
        assert!(!is_unknown_repository(&OciError::Select("not found".into())));
    }
}
