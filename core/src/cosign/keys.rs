//! What a signature must verify with: the trusted keys, and the one primitive every
//! check uses (an ECDSA P-256 signature over a SHA-256 digest).

use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

/// Why a trusted key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM is not an ECDSA P-256 `PUBLIC KEY` (SPKI), which is what
    /// `cosign generate-key-pair` writes to `cosign.pub`.
    #[error("key {name}: not a PEM ECDSA P-256 public key (cosign.pub): {reason}")]
    Pem { name: String, reason: String },
    /// The key file could not be read.
    #[error("key {name}: {source}")]
    Read { name: String, source: std::io::Error },
    /// A verifier needs at least one key.
    #[error("no key to verify signatures with")]
    Empty,
    /// A key set (a Secret) lacks the key asked for, or holds no `*.pub` key at all.
    #[error("{source_name} has no key {key:?}")]
    Missing { source_name: String, key: String },
}

/// One trusted public key: what `cosign sign --key` signs for.
#[derive(Clone, Debug)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
    hint: String,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI) holding an ECDSA P-256 key. `name` says where it
    /// came from (a Secret key, a file) in messages and in [`super::Verified`].
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<Self, KeyError> {
        let name = name.into();
        let fail = |reason: String| KeyError::Pem { name: name.clone(), reason };
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| fail(e.to_string()))?;
        let der = key.to_public_key_der().map_err(|e| fail(e.to_string()))?;
        let hint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(der.as_bytes()));
        Ok(Self { name, key, hint })
    }

    /// Reads and parses a PEM public key file (named by its path).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let name = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read { name: name.clone(), source })?;
        Self::from_pem(name, &pem)
    }

    /// Where the key came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's fingerprint as sigstore bundles name it in
    /// `verificationMaterial.publicKey.hint`: base64 of the SHA-256 of its DER SPKI.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    fn verifies(&self, prehash: &[u8; 32], signature: &Signature) -> bool {
        self.key.verify_prehash(prehash, signature).is_ok()
    }
}

/// A way a signature can be trusted. Key-based only for now; keyless (a Fulcio
/// certificate for an issuer and subject, logged in Rekor) would be another variant.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Trust {
    /// A signature made with this key's private half.
    Key(PublicKey),
}

impl Trust {
    fn name(&self) -> &str {
        match self {
            Trust::Key(key) => key.name(),
        }
    }
}

/// The trusted keys of one verifier, never empty.
#[derive(Clone, Debug)]
pub(super) struct Keys(Vec<Trust>);

impl Keys {
    pub(super) fn new(trust: Vec<Trust>) -> Result<Self, KeyError> {
        if trust.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(trust))
    }

    /// The first key under which `signature` (DER) verifies over `prehash` (a SHA-256).
    pub(super) fn verifying(&self, prehash: &[u8; 32], signature: &Signature) -> Option<&str> {
        self.0.iter().find_map(|t| match t {
            Trust::Key(key) => key.verifies(prehash, signature).then(|| key.name()),
        })
    }

    /// The key a bundle's `publicKey.hint` names, if it is one of ours.
    pub(super) fn by_hint(&self, hint: &str) -> Option<&str> {
        self.0.iter().find_map(|t| match t {
            Trust::Key(key) => (key.hint() == hint).then(|| key.name()),
        })
    }

    /// The keys' names, for messages.
    pub(super) fn names(&self) -> String {
        self.0.iter().map(Trust::name).collect::<Vec<_>>().join(", ")
    }
}

/// Why a piece of signature material (a signature, a digest, a payload) does not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum MaterialError {
    #[error("not base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("the signature is not an ASN.1 DER ECDSA P-256 signature")]
    NotDer,
}

/// Decodes base64 as cosign and protobuf JSON write it: standard alphabet, padded or
/// not; the URL-safe alphabet is accepted too (protobuf JSON parsers do).
pub(super) fn decode_base64(text: &str) -> Result<Vec<u8>, MaterialError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let text = text.trim();
    STANDARD.decode(text).or_else(|_| URL_SAFE.decode(text)).map_err(MaterialError::Base64)
}

/// Parses a base64 ASN.1 DER ECDSA signature, as cosign stores them.
pub(super) fn parse_signature(text: &str) -> Result<Signature, MaterialError> {
    let der = decode_base64(text)?;
    Signature::from_der(&der).map_err(|_| MaterialError::NotDer)
}

/// SHA-256 of `data`, the prehash every cosign signature is over.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
pub(super) mod testkey {
    //! A key pair made in the test, signing the way cosign does (ECDSA P-256 over
    //! SHA-256, DER, base64).
    use base64::Engine as _;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    pub struct TestKey(SigningKey);

    impl TestKey {
        /// A deterministic key from `seed` (1..): tests stay reproducible.
        pub fn new(seed: u8) -> Self {
            let mut bytes = [0u8; 32];
            bytes[31] = seed;
            bytes[0] = 0x11;
            Self(SigningKey::from_bytes(&bytes.into()).expect("valid scalar"))
        }

        pub fn public_pem(&self) -> String {
            self.0.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
        }

        pub fn public(&self, name: &str) -> super::PublicKey {
            super::PublicKey::from_pem(name, &self.public_pem()).unwrap()
        }

        /// base64 DER signature over SHA-256(`data`).
        pub fn sign(&self, data: &[u8]) -> String {
            self.sign_prehash(&super::sha256(data))
        }

        pub fn sign_prehash(&self, prehash: &[u8; 32]) -> String {
            let signature: Signature = self.0.sign_prehash(prehash).unwrap();
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkey::TestKey;
    use super::*;

    #[test]
    fn parses_pem_and_computes_the_bundle_hint() {
        let key = TestKey::new(1);
        let public = key.public("cosign.pub");
        let der = base64::engine::general_purpose::STANDARD
            .decode(key.public_pem().lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&der));
        assert_eq!(public.hint(), expected);
        assert_eq!(public.name(), "cosign.pub");
    }

    #[test]
    fn rejects_what_is_not_a_p256_public_key() {
        let err = PublicKey::from_pem("k", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap_err();
        assert!(matches!(err, KeyError::Pem { ref name, .. } if name == "k"), "{err}");
        assert!(PublicKey::from_pem("k", "not pem").is_err());
        assert!(matches!(Keys::new(vec![]), Err(KeyError::Empty)));
    }

    #[test]
    fn finds_the_key_a_signature_verifies_with() {
        let (a, b) = (TestKey::new(1), TestKey::new(2));
        let keys = Keys::new(vec![Trust::Key(a.public("a")), Trust::Key(b.public("b"))]).unwrap();
        let data = b"payload";
        let by_b = parse_signature(&b.sign(data)).unwrap();
        assert_eq!(keys.verifying(&sha256(data), &by_b), Some("b"));
        assert_eq!(keys.verifying(&sha256(b"other payload"), &by_b), None);
        let only_a = Keys::new(vec![Trust::Key(a.public("a"))]).unwrap();
        assert_eq!(only_a.verifying(&sha256(data), &by_b), None);
        assert_eq!(keys.by_hint(b.public("x").hint()), Some("b"));
        assert_eq!(keys.names(), "a, b");
    }

    #[test]
    fn decodes_padded_unpadded_and_url_safe_base64() {
        assert_eq!(decode_base64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_base64("+/8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_base64("-_8=").unwrap(), vec![0xfb, 0xff]);
        assert!(matches!(decode_base64("!!"), Err(MaterialError::Base64(_))));
    }

    #[test]
    fn a_signature_that_does_not_read_says_which_layer_failed() {
        assert!(matches!(parse_signature("!!"), Err(MaterialError::Base64(_))));
        assert_eq!(parse_signature("AAAA"), Err(MaterialError::NotDer), "base64, but not DER");
        assert!(MaterialError::NotDer.to_string().contains("DER"));
        let key = TestKey::new(1);
        assert!(parse_signature(&key.sign(b"payload")).is_ok());
    }
}
