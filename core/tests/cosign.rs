//! Cosign verification against the real registry (`e2e/scripts/cluster.sh registry`).
//!
//! Signatures are made independently of the code under test, by [`e2e::cosign`]: keys
//! and ECDSA signatures by `openssl`, payloads and bundles written from cosign's
//! documented formats, pushed with the real `oras` CLI (`oras push` for the tag scheme,
//! `oras attach` for bundles: the local registry has no referrers API, so oras writes the
//! referrers tag schema and the verifier reads it back).

use std::process::Command;
use std::sync::OnceLock;

use e2e::cosign::{dsse_bundle, message_bundle, simple_signing, statement, test_registry as registry, Key, TestRepo};
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use updraft_core::cosign::{Scheme, Verified, Verifier, VerifyError};
use updraft_core::oci;

/// Two keys for the whole test process: ours (trusted) and theirs (not).
struct Keys {
    ours: Key,
    theirs: Key,
    _dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        Keys { ours: Key::generate(dir.path(), "ours"), theirs: Key::generate(dir.path(), "theirs"), _dir: dir }
    })
}

fn ours() -> &'static Key {
    &keys().ours
}

fn theirs() -> &'static Key {
    &keys().theirs
}

fn verifier(trusted: &[(&str, &Key)]) -> Verifier {
    Verifier::from_pems(trusted.iter().map(|(name, key)| (*name, key.public_pem.as_str()))).unwrap()
}

/// A fresh repository ([`TestRepo`]) and what these tests do with it.
struct Repo(TestRepo);

impl std::ops::Deref for Repo {
    type Target = TestRepo;
    fn deref(&self) -> &TestRepo {
        &self.0
    }
}

impl Repo {
    fn new(test: &str) -> Self {
        Self(TestRepo::new(&format!("cosign-{test}")))
    }

    /// `registry/name`, the reference payloads and statements name.
    fn docker_reference(&self) -> String {
        format!("{}/{}", registry(), self.name)
    }

    async fn verify(&self, verifier: &Verifier, digest: &str) -> Result<Verified, VerifyError> {
        let client = oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![registry().to_owned()]));
        verifier.verify(&client, registry(), &self.name, &RegistryAuth::Anonymous, digest).await
    }
}

/// Runs `cmd`; its trimmed stdout.
fn text(cmd: &mut Command) -> String {
    e2e::run(cmd).trim().to_owned()
}

// ---- the tests --------------------------------------------------------------------------------

#[tokio::test]
async fn tag_scheme_signature_verifies() {
    let repo = Repo::new("tag-ok");
    let digest = repo.release("1.0.0");
    repo.at().sign_with_tag(ours(), &digest);

    let verified = repo.verify(&verifier(&[("theirs", theirs()), ("ours", ours())]), &digest).await.unwrap();
    assert_eq!(verified.key, "ours");
    assert_eq!(verified.scheme, Scheme::Tag);
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    assert_eq!(verified.signature, repo.at().resolve(&sig_tag));
}

#[tokio::test]
async fn bundles_verify_through_the_referrers_tag_schema() {
    let repo = Repo::new("bundle-ok");
    let (message, dsse) = (repo.release("1.0.0"), repo.release("1.1.0"));
    repo.at().attach_bundle(&message, &message_bundle(ours(), &repo.at().manifest(&message)));
    let statement = statement(&repo.docker_reference(), &dsse);
    repo.at().attach_bundle(&dsse, &dsse_bundle(ours(), &statement, &statement));

    // The local registry has no referrers API (404): oras wrote, and the verifier read,
    // the index at tag sha256-<hex>.
    let referrers = format!("http://{}/v2/{}/referrers/{message}", registry(), repo.name);
    assert_eq!(text(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &referrers])), "404");
    let tags =
        text(Command::new("oras").args(["repo", "tags", "--plain-http", &format!("{}/{}", registry(), repo.name)]));
    assert!(tags.lines().any(|t| t == message.replace(':', "-")), "no referrers tag in {tags}");

    let trusted = verifier(&[("ours", ours())]);
    for digest in [&message, &dsse] {
        let verified = repo.verify(&trusted, digest).await.unwrap();
        assert_eq!((verified.key.as_str(), verified.scheme), ("ours", Scheme::Bundle));
    }
}

#[tokio::test]
async fn no_signature() {
    let repo = Repo::new("none");
    let digest = repo.release("1.0.0");
    let err = repo.verify(&verifier(&[("ours", ours())]), &digest).await.unwrap_err();
    assert!(matches!(&err, VerifyError::NoSignature { digest: d } if *d == digest), "{err}");
    assert_eq!(err.reason(), "NoSignature");
}

#[tokio::test]
async fn wrong_key_in_either_place() {
    let repo = Repo::new("wrong-key");
    let (tagged, bundled) = (repo.release("1.0.0"), repo.release("1.1.0"));
    let payload = simple_signing(&repo.docker_reference(), &tagged);
    repo.at().push_tag_signature(&tagged, &payload, Some(&theirs().sign(&payload)));
    let statement = statement(&repo.docker_reference(), &bundled);
    repo.at().attach_bundle(&bundled, &dsse_bundle(theirs(), &statement, &statement));

    let trusted = verifier(&[("ours", ours())]);
    for digest in [&tagged, &bundled] {
        let err = repo.verify(&trusted, digest).await.unwrap_err();
        assert!(matches!(&err, VerifyError::WrongKey { digest: d, found: 1, .. } if d == digest), "{err}");
    }
    // The same signatures verify for whoever trusts their key.
    assert!(repo.verify(&verifier(&[("theirs", theirs())]), &tagged).await.is_ok());
    assert!(repo.verify(&verifier(&[("theirs", theirs())]), &bundled).await.is_ok());
}

#[tokio::test]
async fn signature_for_another_digest() {
    let repo = Repo::new("other-digest");
    let (signed, unsigned) = (repo.release("1.0.0"), repo.release("1.1.0"));
    // v1.0.0's genuine signature copied to v1.1.0's signature tag.
    let payload = simple_signing(&repo.docker_reference(), &signed);
    repo.at().push_tag_signature(&unsigned, &payload, Some(&ours().sign(&payload)));
    let trusted = verifier(&[("ours", ours())]);
    let err = repo.verify(&trusted, &unsigned).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::OtherDigest { signed: s, wanted: w } if *s == signed && *w == unsigned),
        "{err}"
    );

    // And a bundle signing v1.0.0 attached to v1.2.0.
    let third = repo.release("1.2.0");
    let statement = statement(&repo.docker_reference(), &signed);
    repo.at().attach_bundle(&third, &dsse_bundle(ours(), &statement, &statement));
    let err = repo.verify(&trusted, &third).await.unwrap_err();
    assert!(matches!(&err, VerifyError::OtherDigest { signed: s, .. } if *s == signed), "{err}");
    assert_eq!(err.reason(), "OtherDigest");
}

#[tokio::test]
async fn tampered_payloads() {
    let repo = Repo::new("tampered");
    let trusted = verifier(&[("ours", ours())]);

    // A tag-scheme payload that is not a cosign payload any more (its type edited).
    let edited = repo.release("1.0.0");
    let payload = String::from_utf8(simple_signing(&repo.docker_reference(), &edited))
        .unwrap()
        .replace("cosign container image", "any");
    repo.at().push_tag_signature(&edited, payload.as_bytes(), Some(&ours().sign(payload.as_bytes())));
    let err = repo.verify(&trusted, &edited).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("critical.type")), "{err}");

    // A truncated payload, and a payload layer stripped of its signature.
    let truncated = repo.release("1.1.0");
    let payload = simple_signing(&repo.docker_reference(), &truncated);
    let cut = &payload[..payload.len() / 2];
    repo.at().push_tag_signature(&truncated, cut, Some(&ours().sign(&payload)));
    let err = repo.verify(&trusted, &truncated).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("simple-signing")), "{err}");
    let stripped = repo.release("1.2.0");
    repo.at().push_tag_signature(&stripped, &simple_signing(&repo.docker_reference(), &stripped), None);
    let err = repo.verify(&trusted, &stripped).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("annotation")), "{err}");

    // A bundle our key signed for v1.0.0, its statement swapped for one naming v1.3.0:
    // the bundle names our key, which no longer verifies it.
    let swapped = repo.release("1.3.0");
    let (genuine, forged) =
        (statement(&repo.docker_reference(), &edited), statement(&repo.docker_reference(), &swapped));
    repo.at().attach_bundle(&swapped, &dsse_bundle(ours(), &forged, &genuine));
    let err = repo.verify(&trusted, &swapped).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("names key ours")), "{err}");
    assert_eq!(err.reason(), "Tampered");
}

#[tokio::test]
async fn a_signature_pushed_later_is_picked_up() {
    let repo = Repo::new("later");
    let trusted = verifier(&[("ours", ours())]);
    let digest = repo.release("1.0.0");
    assert!(matches!(repo.verify(&trusted, &digest).await, Err(VerifyError::NoSignature { .. })));
    let statement = statement(&repo.docker_reference(), &digest);
    repo.at().attach_bundle(&digest, &dsse_bundle(ours(), &statement, &statement));
    assert_eq!(repo.verify(&trusted, &digest).await.unwrap().scheme, Scheme::Bundle);
}

#[tokio::test]
async fn an_unreachable_registry_is_a_registry_error() {
    let trusted = verifier(&[("ours", ours())]);
    let client = oci::build_client("updraft-core-tests", ClientProtocol::Http);
    let digest = format!("sha256:{}", "0".repeat(64));
    let err = trusted.verify(&client, "127.0.0.1:9", "fw", &RegistryAuth::Anonymous, &digest).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "RegistryError");
}
