//! The operator's errors. Each variant's [`Error::metric_label`] is the `error` label of
//! `updraft_operator_reconcile_errors_total`, and [`Error::is_permanent`] decides the
//! error policy: a bad spec waits for a change, anything else backs off and retries.

use std::time::Duration;

use updraft_core::oci::OciError;

/// Why a reconcile (or a registry check within it) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The spec cannot work as written; fixed only by editing it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// The registry could not be reached or refused the request.
    #[error("registry unreachable: {0}")]
    RegistryUnreachable(String),
    /// The registry is throttling (429) or failing (5xx) and said in `Retry-After`
    /// when to ask again; the next check waits at least that long.
    #[error("registry unreachable: {message}")]
    RegistryBusy { message: String, retry_after: Duration },
    /// An upstream simplestreams server could not be reached or answered nonsense.
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The registry answered, but no tag or artifact fits the spec (yet).
    #[error("{0}")]
    NoMatchingVersion(String),
    /// A referenced Secret is missing or malformed.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The CA bundle an upstream names (`caConfigMap`) is missing or holds no certificate.
    #[error("CA bundle: {0}")]
    CaBundle(String),
    /// The Secret of public keys (`spec.verify`) is missing or holds no usable key.
    #[error("public keys: {0}")]
    PublicKeys(String),
    /// No release's signature verifies, so nothing new is pinned. `reason` says why for
    /// the newest ([`updraft_core::cosign::VerifyError::reason`]); `skipped` names each
    /// release tried (for the webhooks that announce them), newest first.
    #[error("{message}")]
    Unverified { reason: &'static str, message: String, skipped: Vec<updraft_core::version::Skipped> },
    /// A mirror's source could not be listed.
    #[error("source: {0}")]
    SourceUnreachable(String),
    /// A mirror's destination could not be listed.
    #[error("destination: {0}")]
    DestinationUnreachable(String),
    /// The Kubernetes API refused a read or write.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::RegistryUnreachable(_) => "registry_unreachable",
            Error::RegistryBusy { .. } => "registry_busy",
            Error::UpstreamUnreachable(_) => "upstream_unreachable",
            Error::NoMatchingVersion(_) => "no_matching_version",
            Error::Credentials(_) => "credentials",
            Error::CaBundle(_) => "ca_bundle",
            Error::PublicKeys(_) => "public_keys",
            Error::Unverified { .. } => "unverified",
            Error::SourceUnreachable(_) => "source_unreachable",
            Error::DestinationUnreachable(_) => "destination_unreachable",
            Error::Kube(_) => "kube_api",
        }
    }

    /// The `reason` of the condition that reports this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::RegistryUnreachable(_) | Error::RegistryBusy { .. } => "RegistryUnreachable",
            Error::UpstreamUnreachable(_) => "UpstreamUnreachable",
            Error::NoMatchingVersion(_) => "NoMatchingVersion",
            Error::Credentials(_) => "CredentialsError",
            Error::CaBundle(_) => "CaBundleError",
            Error::PublicKeys(_) => "PublicKeyError",
            Error::Unverified { reason, .. } => reason,
            Error::SourceUnreachable(_) => "SourceUnreachable",
            Error::DestinationUnreachable(_) => "DestinationUnreachable",
            Error::Kube(_) => "KubernetesApiError",
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_))
    }

    /// A registry's error about `reference`: [`Error::RegistryBusy`] when the registry
    /// asked to be left alone for a while, else [`Error::RegistryUnreachable`].
    pub fn registry(reference: &str, e: &OciError) -> Error {
        let message = format!("{reference}: {e}");
        match e.retry_after() {
            Some(retry_after) => Error::RegistryBusy { message, retry_after },
            None => Error::RegistryUnreachable(message),
        }
    }

    /// How long the registry asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RegistryBusy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// A spec that cannot work as written, found by a controller's `validate` (what the
/// schema cannot check: kube-apiserver 1.20 has no CEL rules). The message names the
/// field, so it reads on its own in a condition or an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SpecError {
    /// The spec field at fault, as a path such as `version.range`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    /// A problem with `field`; `message` is the whole sentence, field included.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
