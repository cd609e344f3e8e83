//! The pure half of verification: given one piece of signature material fetched from
//! the registry, does it sign the wanted digest with a trusted key?
//!
//! Two shapes, as cosign's specs describe them:
//! - a simple-signing payload (tag scheme, `specs/SIGNATURE_SPEC.md`): JSON whose
//!   `critical.image.docker-manifest-digest` names the image and whose `critical.type`
//!   is `cosign container image signature`, signed as is;
//! - a sigstore bundle (`specs/BUNDLE_SPEC.md`, protobuf-specs JSON) holding either a
//!   `messageSignature` over the manifest (its `messageDigest` is the manifest digest)
//!   or a `dsseEnvelope` whose in-toto statement has the manifest as subject and
//!   cosign's signing predicate type (what `cosign sign` writes from v3 on).
//!
//! Each check parses before it verifies, so material that does not hold together is
//! [`Check::Tampered`] whoever signed it, and names the digest only after the signature
//! verified, so [`Check::OtherDigest`] means "a trusted key signed another release".

use serde::Deserialize;

use super::keys::{decode_base64, parse_signature, sha256, Keys};

/// `critical.type` of a cosign image signature payload.
pub(super) const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// `payloadType` of a DSSE envelope carrying an in-toto statement.
pub(super) const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type `cosign sign` gives an image signature in a DSSE bundle.
pub(super) const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Media types of sigstore bundles start with this (`…bundle.v0.3+json`, or the older
/// `…bundle+json;version=0.x`).
pub(super) const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// What one piece of signature material says about the wanted digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Signed by the named key, for the wanted digest.
    Verified { key: String },
    /// Signed by a trusted key, for another digest (`sha256:…`).
    OtherDigest { signed: String },
    /// Well formed, but no trusted key verifies it: made with another key, or altered
    /// after signing (ECDSA cannot tell these apart).
    WrongKey,
    /// Malformed, not what it claims to be, or (for a bundle that names one of our keys)
    /// not verifying with the key it names.
    Tampered(String),
    /// Not a signature at all (an attestation with another predicate type): ignored.
    NotASignature,
}

// ---- simple signing (tag scheme) -------------------------------------------------------

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: CriticalImage,
}

#[derive(Deserialize)]
struct CriticalImage {
    // Cosign writes the lower-case key; the containers-signature spec's examples
    // capitalise it, and Go's JSON decoding (cosign's own) accepts both.
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks a simple-signing payload and the base64 signature its layer carries in the
/// `dev.cosignproject.cosign/signature` annotation.
pub(super) fn check_simple_signing(keys: &Keys, payload: &[u8], signature: Option<&str>, wanted: &str) -> Check {
    let Some(signature) = signature else {
        return Check::Tampered(format!("the payload layer has no {} annotation", super::SIGNATURE_ANNOTATION));
    };
    let signature = match parse_signature(signature) {
        Ok(s) => s,
        Err(e) => return Check::Tampered(e.to_string()),
    };
    let parsed: SimpleSigning = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => return Check::Tampered(format!("the payload is not a simple-signing document: {e}")),
    };
    if parsed.critical.kind != SIMPLE_SIGNING_TYPE {
        return Check::Tampered(format!(
            "the payload's critical.type is {:?}, not {SIMPLE_SIGNING_TYPE:?}",
            parsed.critical.kind
        ));
    }
    let Some(key) = keys.verifying(&sha256(payload), &signature) else { return Check::WrongKey };
    name_digest(key, &parsed.critical.image.docker_manifest_digest, wanted)
}

fn name_digest(key: &str, signed: &str, wanted: &str) -> Check {
    if signed == wanted {
        Check::Verified { key: key.to_owned() }
    } else {
        Check::OtherDigest { signed: signed.to_owned() }
    }
}

// ---- sigstore bundle (OCI 1.1 referrers) -------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    #[serde(default)]
    verification_material: Option<VerificationMaterial>,
    message_signature: Option<MessageSignature>,
    dsse_envelope: Option<DsseEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    public_key: Option<PublicKeyIdentifier>,
}

#[derive(Deserialize)]
struct PublicKeyIdentifier {
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: HashOutput,
    signature: String,
}

#[derive(Deserialize)]
struct HashOutput {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<DsseSignature>,
}

#[derive(Deserialize)]
struct DsseSignature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// Checks a sigstore bundle (its JSON bytes) against the wanted digest.
pub(super) fn check_bundle(keys: &Keys, bundle: &[u8], wanted: &str) -> Check {
    let bundle: Bundle = match serde_json::from_slice(bundle) {
        Ok(b) => b,
        Err(e) => return Check::Tampered(format!("not a sigstore bundle: {e}")),
    };
    if !bundle.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
        return Check::Tampered(format!("the bundle's mediaType is {:?}", bundle.media_type));
    }
    // A bundle that names one of our keys and does not verify with it was altered.
    let hint = bundle.verification_material.and_then(|m| m.public_key).and_then(|k| k.hint);
    let claimed = hint.as_deref().and_then(|h| keys.by_hint(h)).map(str::to_owned);
    let unverified = || match &claimed {
        Some(key) => Check::Tampered(format!("the bundle names key {key} but its signature does not verify with it")),
        None => Check::WrongKey,
    };
    match (bundle.message_signature, bundle.dsse_envelope) {
        (Some(message), None) => check_message_signature(keys, &message, wanted).unwrap_or_else(unverified),
        (None, Some(envelope)) => check_dsse(keys, &envelope, wanted).unwrap_or_else(unverified),
        (Some(_), Some(_)) => Check::Tampered("the bundle has both a messageSignature and a dsseEnvelope".into()),
        (None, None) => Check::Tampered("the bundle has neither a messageSignature nor a dsseEnvelope".into()),
    }
}

/// `None` when no key verifies the signature.
fn check_message_signature(keys: &Keys, message: &MessageSignature, wanted: &str) -> Option<Check> {
    if message.message_digest.algorithm != "SHA2_256" {
        return Some(Check::Tampered(format!(
            "messageDigest.algorithm is {:?}; manifest digests are SHA2_256",
            message.message_digest.algorithm
        )));
    }
    let digest: [u8; 32] = match decode_base64(&message.message_digest.digest).map(<[u8; 32]>::try_from) {
        Ok(Ok(d)) => d,
        Ok(Err(_)) => return Some(Check::Tampered("messageDigest.digest is not 32 bytes".into())),
        Err(e) => return Some(Check::Tampered(format!("messageDigest.digest is {e}"))),
    };
    let signature = match parse_signature(&message.signature) {
        Ok(s) => s,
        Err(e) => return Some(Check::Tampered(e.to_string())),
    };
    // The signature is over the message (the manifest) itself; its SHA-256 is the
    // messageDigest, so the digest is the prehash.
    let key = keys.verifying(&digest, &signature)?;
    Some(name_digest(key, &format!("sha256:{}", hex::encode(digest)), wanted))
}

/// DSSE's pre-authentication encoding: what each envelope signature is over.
pub(super) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `None` when no key verifies any of the envelope's signatures.
fn check_dsse(keys: &Keys, envelope: &DsseEnvelope, wanted: &str) -> Option<Check> {
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Some(Check::Tampered(format!("the envelope's payloadType is {:?}", envelope.payload_type)));
    }
    let payload = match decode_base64(&envelope.payload) {
        Ok(p) => p,
        Err(e) => return Some(Check::Tampered(format!("the envelope's payload is {e}"))),
    };
    let statement: Statement = match serde_json::from_slice(&payload) {
        Ok(s) => s,
        Err(e) => return Some(Check::Tampered(format!("the envelope's payload is not an in-toto statement: {e}"))),
    };
    if !statement.kind.starts_with("https://in-toto.io/Statement/") {
        return Some(Check::Tampered(format!("the statement's _type is {:?}", statement.kind)));
    }
    if statement.predicate_type != SIGN_PREDICATE_TYPE {
        return Some(Check::NotASignature);
    }
    if envelope.signatures.is_empty() {
        return Some(Check::Tampered("the envelope has no signatures".into()));
    }
    let prehash = sha256(&pae(&envelope.payload_type, &payload));
    let mut key = None;
    for signature in &envelope.signatures {
        match parse_signature(&signature.sig) {
            Ok(s) => key = key.or_else(|| keys.verifying(&prehash, &s)),
            Err(e) => return Some(Check::Tampered(e.to_string())),
        }
    }
    let key = key?;
    let wanted_hex = wanted.trim_start_matches("sha256:");
    let subjects: Vec<&str> =
        statement.subject.iter().filter_map(|s| s.digest.get("sha256")).map(String::as_str).collect();
    Some(match subjects.iter().find(|s| **s == wanted_hex) {
        Some(_) => Check::Verified { key: key.to_owned() },
        None => match subjects.first() {
            Some(other) => Check::OtherDigest { signed: format!("sha256:{other}") },
            None => Check::Tampered("the statement has no sha256 subject".into()),
        },
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::json;

    use super::super::keys::testkey::TestKey;
    use super::super::keys::Trust;
    use super::*;

    const WANTED: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn keys(of: &[(&TestKey, &str)]) -> Keys {
        Keys::new(of.iter().map(|(k, name)| Trust::Key(k.public(name))).collect()).unwrap()
    }

    fn simple_signing(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "critical": {
                "identity": {"docker-reference": "registry.test/fw"},
                "image": {"docker-manifest-digest": digest},
                "type": SIMPLE_SIGNING_TYPE
            },
            "optional": null
        }))
        .unwrap()
    }

    #[test]
    fn simple_signing_verifies_and_names_each_failure() {
        let (ours, theirs) = (TestKey::new(1), TestKey::new(2));
        let trusted = keys(&[(&ours, "ours")]);
        let payload = simple_signing(WANTED);
        let check = |payload: &[u8], sig: Option<&str>| check_simple_signing(&trusted, payload, sig, WANTED);

        assert_eq!(check(&payload, Some(&ours.sign(&payload))), Check::Verified { key: "ours".into() });
        assert_eq!(check(&payload, Some(&theirs.sign(&payload))), Check::WrongKey);
        let other = simple_signing(OTHER);
        assert_eq!(check(&other, Some(&ours.sign(&other))), Check::OtherDigest { signed: OTHER.into() });
        // Edited after signing, still well formed: no key verifies it.
        let edited = simple_signing(WANTED).into_iter().chain(*b" ").collect::<Vec<_>>();
        assert_eq!(check(&edited, Some(&ours.sign(&payload))), Check::WrongKey);
        // Not a cosign payload, or no signature at all on the layer.
        let garbled = b"{\"critical\": 1}";
        assert!(
            matches!(check(garbled, Some(&ours.sign(garbled))), Check::Tampered(m) if m.contains("simple-signing"))
        );
        let wrong_type = String::from_utf8(payload.clone()).unwrap().replace(SIMPLE_SIGNING_TYPE, "atomic container");
        let wrong_type = wrong_type.as_bytes();
        assert!(
            matches!(check(wrong_type, Some(&ours.sign(wrong_type))), Check::Tampered(m) if m.contains("critical.type"))
        );
        assert!(matches!(check(&payload, None), Check::Tampered(m) if m.contains("annotation")));
        assert!(matches!(check(&payload, Some("bm90IGRlcg==")), Check::Tampered(m) if m.contains("DER")));
    }

    #[test]
    fn simple_signing_accepts_the_capitalised_digest_key() {
        let key = TestKey::new(1);
        let payload = String::from_utf8(simple_signing(WANTED)).unwrap().replace("docker-manifest", "Docker-manifest");
        let check = check_simple_signing(
            &keys(&[(&key, "k")]),
            payload.as_bytes(),
            Some(&key.sign(payload.as_bytes())),
            WANTED,
        );
        assert_eq!(check, Check::Verified { key: "k".into() });
    }

    fn message_bundle(key: &TestKey, digest: &str, hint: Option<&str>) -> Vec<u8> {
        let raw: [u8; 32] = hex::decode(digest.trim_start_matches("sha256:")).unwrap().try_into().unwrap();
        let mut bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": hint.unwrap_or("")}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&raw)},
                "signature": key.sign_prehash(&raw)
            }
        });
        if hint.is_none() {
            bundle["verificationMaterial"] = json!({"tlogEntries": []});
        }
        serde_json::to_vec(&bundle).unwrap()
    }

    #[test]
    fn message_signature_bundles() {
        let (ours, theirs) = (TestKey::new(1), TestKey::new(2));
        let trusted = keys(&[(&ours, "ours")]);
        let check = |bundle: &[u8]| check_bundle(&trusted, bundle, WANTED);
        assert_eq!(check(&message_bundle(&ours, WANTED, None)), Check::Verified { key: "ours".into() });
        assert_eq!(check(&message_bundle(&theirs, WANTED, None)), Check::WrongKey);
        let their_hint = theirs.public("t").hint().to_owned();
        assert_eq!(check(&message_bundle(&theirs, WANTED, Some(&their_hint))), Check::WrongKey);
        assert_eq!(check(&message_bundle(&ours, OTHER, None)), Check::OtherDigest { signed: OTHER.into() });
        // Signed by ours for OTHER, then its digest edited to WANTED: the hint names our
        // key, which no longer verifies it.
        let our_hint = ours.public("o").hint().to_owned();
        let forged = String::from_utf8(message_bundle(&ours, OTHER, Some(&our_hint))).unwrap();
        let wanted_b64 = b64(&hex::decode(WANTED.trim_start_matches("sha256:")).unwrap());
        let other_b64 = b64(&hex::decode(OTHER.trim_start_matches("sha256:")).unwrap());
        let forged = forged.replace(&other_b64, &wanted_b64);
        assert!(matches!(check(forged.as_bytes()), Check::Tampered(m) if m.contains("names key ours")));
        assert!(matches!(check(b"[]"), Check::Tampered(_)));
        let neither = json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"});
        assert!(matches!(check(&serde_json::to_vec(&neither).unwrap()), Check::Tampered(m) if m.contains("neither")));
        let sha512 = String::from_utf8(message_bundle(&ours, WANTED, None)).unwrap().replace("SHA2_256", "SHA2_512");
        assert!(matches!(check(sha512.as_bytes()), Check::Tampered(m) if m.contains("SHA2_512")));
    }

    fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.test/fw", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
            "predicateType": predicate_type,
            "predicate": {}
        }))
        .unwrap()
    }

    fn dsse_bundle(key: &TestKey, payload: &[u8], signed_payload: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": key.public("k").hint()}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": b64(payload),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, signed_payload)), "keyid": ""}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // DSSE protocol.md: DSSEv1 SP LEN(type) SP type SP LEN(body) SP body.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn dsse_bundles() {
        let (ours, theirs) = (TestKey::new(1), TestKey::new(2));
        let trusted = keys(&[(&ours, "ours")]);
        let check = |bundle: &[u8]| check_bundle(&trusted, bundle, WANTED);
        let good = statement(WANTED, SIGN_PREDICATE_TYPE);
        assert_eq!(check(&dsse_bundle(&ours, &good, &good)), Check::Verified { key: "ours".into() });
        assert_eq!(check(&dsse_bundle(&theirs, &good, &good)), Check::WrongKey);
        let other = statement(OTHER, SIGN_PREDICATE_TYPE);
        assert_eq!(check(&dsse_bundle(&ours, &other, &other)), Check::OtherDigest { signed: OTHER.into() });
        // Our signature over OTHER's statement, the payload swapped for WANTED's.
        assert!(matches!(check(&dsse_bundle(&ours, &good, &other)), Check::Tampered(m) if m.contains("names key")));
        let sbom = statement(WANTED, "https://cyclonedx.org/bom");
        assert_eq!(check(&dsse_bundle(&ours, &sbom, &sbom)), Check::NotASignature);
        assert!(matches!(check(&dsse_bundle(&ours, b"{]", b"{]")), Check::Tampered(m) if m.contains("in-toto")));
    }
}
