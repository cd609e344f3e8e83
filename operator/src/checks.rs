//! Spec checks shared by the controllers' `validate` functions: what the schema cannot
//! check (kube-apiserver 1.20 has no CEL rules), each failing with a [`SpecError`] that
//! names the field.

use std::time::Duration;

use oci_client::Reference;
use updraft_core::version::parse_duration;
use updraft_crds::OciSource;

use crate::error::SpecError;

/// A duration such as `30s`, `5m` or `1h30m` at `field`.
pub(crate) fn duration(field: &str, value: &str) -> Result<Duration, SpecError> {
    parse_duration(value).map_err(|e| SpecError::new(field, format!("{field}: {e}")))
}

/// An OCI source found at `at` in a spec (e.g. `source`, `source.oci`): checked before
/// anything talks to a registry.
pub(crate) fn oci_source(source: &OciSource, at: &str) -> Result<(), SpecError> {
    if source.registry.is_empty() || source.registry.contains('/') || source.registry.contains("://") {
        let message = format!("{at}.registry {:?} must be a host[:port] without scheme or path", source.registry);
        return Err(SpecError::new(format!("{at}.registry"), message));
    }
    let reference = format!("{}/{}:latest", source.registry, source.repository);
    reference.parse::<Reference>().map_err(|e| {
        let message = format!("{at}.repository {:?} is not a valid repository: {e}", source.repository);
        SpecError::new(format!("{at}.repository"), message)
    })?;
    if source.repository.is_empty() || source.repository != source.repository.to_ascii_lowercase() {
        let message = format!("{at}.repository {:?} must be non-empty lowercase", source.repository);
        return Err(SpecError::new(format!("{at}.repository"), message));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host at `field`.
pub(crate) fn http_url(field: &str, url: &str) -> Result<(), SpecError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => Ok(()),
        _ => Err(SpecError::new(field, format!("{field} {url:?} must be an http:// or https:// URL with a host"))),
    }
}

/// Exactly one of `options` (name, whether it is set) at `at`.
pub(crate) fn exactly_one(at: &str, options: &[(&str, bool)]) -> Result<(), SpecError> {
    let set: Vec<&str> = options.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
    if set.len() == 1 {
        return Ok(());
    }
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    let found = if set.is_empty() { "none is".to_owned() } else { format!("{} are", set.join(" and ")) };
    Err(SpecError::new(at, format!("{at} must set exactly one of {}; {found} set", names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(registry: &str, repository: &str) -> OciSource {
        OciSource { registry: registry.into(), repository: repository.into(), ..Default::default() }
    }

    #[test]
    fn oci_sources_name_the_field_where_they_sit() {
        oci_source(&oci("127.0.0.1:15000", "fw/esp32"), "source").unwrap();
        let err = oci_source(&oci("https://r", "x"), "source.oci").unwrap_err();
        assert_eq!(err.field, "source.oci.registry");
        assert!(err.to_string().starts_with("source.oci.registry \"https://r\""), "{err}");
        assert_eq!(oci_source(&oci("r", "UPPER"), "destination.oci").unwrap_err().field, "destination.oci.repository");
    }

    #[test]
    fn urls_durations_and_choices() {
        http_url("url", "https://images.example.com/streams").unwrap();
        http_url("url", "http://10.0.0.1:8080").unwrap();
        for bad in ["ftp://x", "https://", "https:///path", "images.example.com", "http://a b"] {
            assert_eq!(http_url("source.upstream.url", bad).unwrap_err().field, "source.upstream.url", "{bad}");
        }
        assert_eq!(duration("interval", "1h").unwrap(), Duration::from_secs(3600));
        assert!(duration("interval", "often").unwrap_err().to_string().starts_with("interval: "));
        exactly_one("source", &[("oci", false), ("upload", true)]).unwrap();
        let err = exactly_one("source", &[("oci", true), ("upload", true), ("upstream", false)]).unwrap_err();
        assert_eq!(err.to_string(), "source must set exactly one of oci, upload, upstream; oci and upload are set");
        let err = exactly_one("source", &[("oci", false), ("http", false)]).unwrap_err();
        assert_eq!(err.to_string(), "source must set exactly one of oci, http; none is set");
    }
}
