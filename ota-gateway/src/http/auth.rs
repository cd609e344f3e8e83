//! Write authorization for the upload surfaces: a request presents a secret as
//! `Authorization: Bearer <token>` or, as filuxe's clients do, in a `key` header; it
//! is compared with the configured secret in constant time.
//!
//! Surfaces check writes through the guard in [`super::write`], which calls
//! [`authorize`] after its TLS rule.

use std::path::Path;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use super::Error;

/// A write secret (upload token, store key). Never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// The secret `raw` holds, as `updraft_core::secret::key` reads every key (trimmed;
    /// whitespace only is no secret and grants nothing).
    pub fn new(raw: impl AsRef<[u8]>) -> Self {
        Self(updraft_core::secret::key(raw.as_ref()).unwrap_or_default().into())
    }

    /// The secret in a file (a mounted Secret's key), read by the same rule as an
    /// inline one.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(std::fs::read(path)?))
    }

    /// Whether there is no secret (nothing, or whitespace only, was configured).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is the secret. Takes the same time for every value of
    /// the same length (only the length can leak, as with any comparison).
    pub fn matches(&self, presented: &[u8]) -> bool {
        !self.0.is_empty() && bool::from(self.0.ct_eq(presented))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The credential a request presents: a bearer token, else filuxe's `key` header.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        let (scheme, token) = v.split_at(v.iter().position(|b| *b == b' ')?);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii())
    });
    bearer.or_else(|| headers.get("key").map(|v| v.as_bytes()))
}

/// Checks a request's credential against `secret`: 401 without one, 403 when wrong.
pub fn authorize(headers: &HeaderMap, secret: &Secret) -> Result<(), Error> {
    match presented(headers) {
        None => Err(Error::Unauthorized),
        Some(token) if secret.matches(token) => Ok(()),
        Some(_) => Err(Error::Forbidden("invalid write key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(header::HeaderName::from_static(name), HeaderValue::from_static(value))])
    }

    #[test]
    fn bearer_or_key_header() {
        let secret = Secret::new("s3cret");
        assert!(authorize(&headers("authorization", "Bearer s3cret"), &secret).is_ok());
        assert!(authorize(&headers("authorization", "bearer  s3cret "), &secret).is_ok());
        assert!(authorize(&headers("key", "s3cret"), &secret).is_ok());
        assert!(matches!(authorize(&HeaderMap::new(), &secret), Err(Error::Unauthorized)));
        assert!(matches!(authorize(&headers("authorization", "Basic czNjcmV0"), &secret), Err(Error::Unauthorized)));
        assert!(matches!(authorize(&headers("key", "s3cre"), &secret), Err(Error::Forbidden(_))));
        assert!(matches!(authorize(&headers("key", "s3cret!"), &secret), Err(Error::Forbidden(_))));
        assert!(matches!(authorize(&headers("authorization", "Bearer S3CRET"), &secret), Err(Error::Forbidden(_))));
    }

    #[test]
    fn an_empty_or_whitespace_secret_grants_nothing() {
        for configured in ["", " ", " \n", "\t\r\n"] {
            let secret = Secret::new(configured);
            assert!(secret.is_empty(), "{configured:?}");
            for presented in ["", " ", "\t"] {
                let h = HeaderMap::from_iter([(
                    header::HeaderName::from_static("key"),
                    HeaderValue::from_str(presented).unwrap(),
                )]);
                assert!(matches!(authorize(&h, &secret), Err(Error::Forbidden(_))), "{configured:?} / {presented:?}");
            }
        }
    }

    /// A key file and an inline key are read by one rule: a file's newline (or a
    /// hand-written value's spaces) is not part of the key.
    #[test]
    fn file_and_inline_secrets_are_trimmed_alike_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for written in ["tok en\n", " tok en\r\n", "\ttok en"] {
            std::fs::write(&path, written).unwrap();
            let secret = Secret::from_file(&path).unwrap();
            assert!(secret.matches(b"tok en"), "{written:?}");
            assert!(Secret::new(written).matches(b"tok en"), "{written:?}");
            assert_eq!(format!("{secret:?}"), "Secret(..)");
        }
        std::fs::write(&path, "  \n").unwrap();
        assert!(Secret::from_file(&path).unwrap().is_empty());
    }
}
