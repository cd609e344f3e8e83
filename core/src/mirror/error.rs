//! Why a pass, or one copy, did not succeed. Variants double as metric labels.

use std::time::Duration;

/// A forwarding failure.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A side could not be reached or answered with a server error: transient.
    #[error("{side} unreachable: {message}")]
    Unreachable { side: &'static str, message: String },
    /// A side answered a request with an unexpected status.
    #[error("{side} answered {status} to {what}")]
    Refused { side: &'static str, status: u16, what: String },
    /// A side answered 429 or 503 with a `Retry-After`: nothing more is asked of it
    /// before `retry_after` has passed.
    #[error("{side} answered {status} to {what}, asking to retry after {} s", retry_after.as_secs())]
    Throttled { side: &'static str, status: u16, what: String, retry_after: Duration },
    /// Bytes that arrived differ from what the source announced.
    #[error("{0}")]
    Verify(String),
    /// The source changed while it was copied; the next pass copies the new content.
    #[error("{0} changed at the source during the copy")]
    Changed(String),
    /// An OCI registry error.
    #[error("{0}")]
    Registry(String),
    /// The mirror's config cannot be used (a key file that cannot be read, ...).
    #[error("{0}")]
    Config(String),
}

impl MirrorError {
    /// The metric label of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            MirrorError::Unreachable { .. } => "unreachable",
            MirrorError::Refused { .. } => "refused",
            MirrorError::Throttled { .. } => "throttled",
            MirrorError::Verify(_) => "verify",
            MirrorError::Changed(_) => "changed",
            MirrorError::Registry(_) => "registry",
            MirrorError::Config(_) => "config",
        }
    }

    /// How long the side asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MirrorError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn http(side: &'static str) -> impl Fn(reqwest::Error) -> MirrorError {
        move |e| MirrorError::Unreachable { side, message: error_chain(&e) }
    }
}

/// An error with its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
