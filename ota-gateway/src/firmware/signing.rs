//! Detached signatures of the JSON firmware manifests.
//!
//! The signed bytes are the canonical JSON of `{channel, crc32, sha256, size,
//! version}`: keys sorted, no whitespace, as `serde_json` writes the
//! [`SignedFields`] struct. A device verifies with the public key served at
//! `/.well-known/updraft/signing-key.pub`.

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

/// The fields a signature covers, in canonical (alphabetical) order.
#[derive(Serialize)]
pub struct SignedFields<'a> {
    pub channel: &'a str,
    pub crc32: u32,
    pub sha256: &'a str,
    pub size: u64,
    pub version: &'a str,
}

impl SignedFields<'_> {
    /// The exact bytes that are signed.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain fields serialize")
    }
}

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a PKCS#8 ed25519 private key: {0}")]
    NotPkcs8(#[from] ed25519_dalek::pkcs8::Error),
    #[error("cannot encode the public key: {0}")]
    Encode(#[from] ed25519_dalek::pkcs8::spki::Error),
}

/// The gateway's signing key and its public half, PEM-encoded.
pub(crate) struct Signer25519 {
    key: SigningKey,
    public_pem: String,
}

impl std::fmt::Debug for Signer25519 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer25519").field("public_pem", &self.public_pem).finish_non_exhaustive()
    }
}

impl Signer25519 {
    /// Loads a PKCS#8 PEM ed25519 private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&std::fs::read_to_string(path).map_err(KeyError::Read)?)
    }

    /// Parses a PKCS#8 PEM ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem)?;
        let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF)?;
        Ok(Self { key, public_pem })
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Base64 (standard, padded) of the ed25519 signature of the fields.
    pub fn sign(&self, fields: &SignedFields) -> String {
        let signature = self.key.sign(&fields.canonical_json());
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePrivateKey};
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    fn fields() -> SignedFields<'static> {
        SignedFields { channel: "esp32", crc32: 7, sha256: "ab", size: 3, version: "1.2.0" }
    }

    #[test]
    fn canonical_json_is_sorted_and_compact() {
        assert_eq!(
            String::from_utf8(fields().canonical_json()).unwrap(),
            r#"{"channel":"esp32","crc32":7,"sha256":"ab","size":3,"version":"1.2.0"}"#
        );
    }

    #[test]
    fn signature_verifies_with_the_served_public_key() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let signer = Signer25519::from_pem(&pem).unwrap();
        let public = VerifyingKey::from_public_key_pem(signer.public_pem()).unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(signer.sign(&fields())).unwrap();
        let signature = Signature::from_slice(&raw).unwrap();
        public.verify(&fields().canonical_json(), &signature).unwrap();
        assert!(Signer25519::from_pem("junk").is_err());
    }
}
