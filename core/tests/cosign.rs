//! Cosign verification against the real registry (`e2e/scripts/cluster.sh registry`).
//!
//! Signatures are made independently of the code under test: keys and ECDSA signatures
//! by `openssl`, payloads and bundles written here from cosign's documented formats
//! (`specs/SIGNATURE_SPEC.md`, `specs/BUNDLE_SPEC.md`, DSSE and in-toto), pushed with the
//! real `oras` CLI: `oras push` for the tag scheme, `oras attach` for bundles (the local
//! registry has no referrers API, so oras writes the referrers tag schema and the
//! verifier reads it back).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::Engine as _;
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde_json::json;
use updraft_core::cosign::{Scheme, Verifier, VerifyError, BUNDLE_MEDIA_TYPE, SIMPLE_SIGNING_MEDIA_TYPE};
use updraft_core::oci;

// ---- the registry, keys, and the CLI tools -------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// The registry's address, started (or reused) through the project script.
fn registry() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let script = workspace().join("e2e/scripts/cluster.sh");
        let out = Command::new("bash").arg(&script).arg("registry").output().expect("run cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cluster.sh registry failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !Command::new("oras").arg("version").output().is_ok_and(|o| o.status.success()) {
            let out = Command::new("bash").arg(&script).arg("tools").output().expect("run cluster.sh tools");
            assert!(
                Command::new("oras").arg("version").output().is_ok_and(|o| o.status.success()),
                "oras is missing and `cluster.sh tools` did not install it:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export UPDRAFT_REGISTRY="))
            .unwrap_or_else(|| panic!("cluster.sh printed no UPDRAFT_REGISTRY:\n{stdout}"))
            .to_owned()
    })
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd)).unwrap().trim().to_owned()
}

/// A key pair made by `openssl ecparam -genkey -name prime256v1`.
struct Key {
    private: PathBuf,
    public_pem: String,
}

impl Key {
    fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(format!("{name}.key"));
        run(Command::new("openssl")
            .args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"])
            .arg(&private));
        let public = dir.join(format!("{name}.pub"));
        run(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public));
        Self { private, public_pem: std::fs::read_to_string(public).unwrap() }
    }

    /// `openssl dgst -sha256 -sign`: base64 of the DER ECDSA signature over SHA-256(data).
    fn sign(&self, dir: &Path, data: &[u8]) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let input = dir.join(format!("to-sign-{n}"));
        std::fs::write(&input, data).unwrap();
        let der = run(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&self.private).arg(&input));
        b64(&der)
    }
}

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

fn client() -> Client {
    oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![registry().to_owned()]))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A fresh repository with one release pushed as `v1`.
struct Repo {
    name: String,
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            name: format!("test/cosign-{test}-{}-{nanos}-{n}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn reference(&self, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") { "@" } else { ":" };
        format!("{}/{}{sep}{tag_or_digest}", registry(), self.name)
    }

    /// Pushes a release (random firmware bytes) at `tag`; returns its manifest digest.
    fn release(&self, tag: &str) -> String {
        let bytes: Vec<u8> = (0..64).map(|i| (COUNTER.fetch_add(1, Ordering::Relaxed) as u8).wrapping_mul(i)).collect();
        let nonce =
            format!("{tag}-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        std::fs::write(self.dir().join("firmware.bin"), [bytes.as_slice(), nonce.as_bytes()].concat()).unwrap();
        run(Command::new("oras").current_dir(self.dir()).args([
            "push",
            "--plain-http",
            &self.reference(tag),
            "firmware.bin:application/vnd.updraft.firmware.v1",
        ]));
        text(Command::new("oras").args(["resolve", "--plain-http", &self.reference(tag)]))
    }

    /// The raw manifest bytes of `digest`, as the registry serves them.
    fn manifest(&self, digest: &str) -> Vec<u8> {
        run(Command::new("oras").args(["manifest", "fetch", "--plain-http", &self.reference(digest)]))
    }

    /// Cosign 2's tag scheme: `payload` as a simple-signing layer of the manifest at
    /// `sha256-<hex>.sig`, its signature in the layer's annotation (absent when `None`).
    fn push_tag_signature(&self, signed: &str, payload: &[u8], signature: Option<&str>) {
        std::fs::write(self.dir().join("payload.json"), payload).unwrap();
        let mut annotations = json!({});
        if let Some(signature) = signature {
            annotations["payload.json"] = json!({ "dev.cosignproject.cosign/signature": signature });
        }
        std::fs::write(self.dir().join("annotations.json"), annotations.to_string()).unwrap();
        let tag = format!("{}.sig", signed.replace(':', "-"));
        run(Command::new("oras").current_dir(self.dir()).args([
            "push",
            "--plain-http",
            "--annotation-file",
            "annotations.json",
            &self.reference(&tag),
            &format!("payload.json:{SIMPLE_SIGNING_MEDIA_TYPE}"),
        ]));
    }

    /// Cosign 3's place: `bundle` attached to `subject` as an OCI 1.1 referrer.
    fn attach_bundle(&self, subject: &str, bundle: &serde_json::Value) {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let file = format!("bundle-{n}.sigstore.json");
        std::fs::write(self.dir().join(&file), serde_json::to_vec(bundle).unwrap()).unwrap();
        run(Command::new("oras").current_dir(self.dir()).args([
            "attach",
            "--plain-http",
            "--artifact-type",
            BUNDLE_MEDIA_TYPE,
            &self.reference(subject),
            &format!("{file}:{BUNDLE_MEDIA_TYPE}"),
        ]));
    }

    async fn verify(&self, verifier: &Verifier, digest: &str) -> Result<updraft_core::cosign::Verified, VerifyError> {
        verifier.verify(&client(), registry(), &self.name, &RegistryAuth::Anonymous, digest).await
    }
}

// ---- cosign's formats, written here from the specs ------------------------------------------

/// A simple-signing payload (containers-signature JSON with cosign's critical.type).
fn simple_signing(repo: &Repo, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", registry(), repo.name)},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// The public key's fingerprint as bundles carry it: base64(SHA-256(DER SPKI)), by
/// `openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary`.
fn hint(key: &Key) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let der = std::env::temp_dir().join(format!("updraft-cosign-hint-{}-{n}.der", std::process::id()));
    let public = der.with_extension("pem");
    std::fs::write(&public, &key.public_pem).unwrap();
    run(Command::new("openssl")
        .args(["pkey", "-pubin", "-in"])
        .arg(&public)
        .args(["-outform", "DER", "-out"])
        .arg(&der));
    let sha = run(Command::new("openssl").args(["dgst", "-sha256", "-binary"]).arg(&der));
    let _ = (std::fs::remove_file(der), std::fs::remove_file(public));
    b64(&sha)
}

fn bundle(key: &Key, content: (&str, serde_json::Value)) -> serde_json::Value {
    let mut bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint(key)}, "tlogEntries": []},
    });
    bundle[content.0] = content.1;
    bundle
}

/// A bundle with a message signature over the manifest bytes themselves (their SHA-256
/// is the manifest digest).
fn message_bundle(repo: &Repo, key: &Key, digest: &str) -> serde_json::Value {
    let manifest = repo.manifest(digest);
    let hex = digest.trim_start_matches("sha256:");
    let raw: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let signature = key.sign(repo.dir(), &manifest);
    bundle(
        key,
        (
            "messageSignature",
            json!({"messageDigest": {"algorithm": "SHA2_256", "digest": b64(&raw)}, "signature": signature}),
        ),
    )
}

/// What `cosign sign` (v3) signs: an in-toto statement about the manifest.
fn statement(repo: &Repo, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{}/{}", registry(), repo.name), "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {}
    }))
    .unwrap()
}

/// DSSE pre-authentication encoding, per the DSSE protocol.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    [format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).as_bytes(), payload].concat()
}

/// A DSSE bundle carrying `payload`, signed over `signed_payload` (the same unless the
/// test tampers with it).
fn dsse_bundle(repo: &Repo, key: &Key, payload: &[u8], signed_payload: &[u8]) -> serde_json::Value {
    let payload_type = "application/vnd.in-toto+json";
    let sig = key.sign(repo.dir(), &pae(payload_type, signed_payload));
    bundle(
        key,
        (
            "dsseEnvelope",
            json!({"payload": b64(payload), "payloadType": payload_type, "signatures": [{"sig": sig, "keyid": ""}]}),
        ),
    )
}

// ---- the tests --------------------------------------------------------------------------------

#[tokio::test]
async fn tag_scheme_signature_verifies() {
    let repo = Repo::new("tag-ok");
    let digest = repo.release("1.0.0");
    let payload = simple_signing(&repo, &digest);
    repo.push_tag_signature(&digest, &payload, Some(&ours().sign(repo.dir(), &payload)));

    let verified = repo.verify(&verifier(&[("theirs", theirs()), ("ours", ours())]), &digest).await.unwrap();
    assert_eq!(verified.key, "ours");
    assert_eq!(verified.scheme, Scheme::Tag);
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    assert_eq!(
        verified.signature,
        text(Command::new("oras").args(["resolve", "--plain-http", &repo.reference(&sig_tag)]))
    );
}

#[tokio::test]
async fn bundles_verify_through_the_referrers_tag_schema() {
    let repo = Repo::new("bundle-ok");
    let (message, dsse) = (repo.release("1.0.0"), repo.release("1.1.0"));
    repo.attach_bundle(&message, &message_bundle(&repo, ours(), &message));
    let statement = statement(&repo, &dsse);
    repo.attach_bundle(&dsse, &dsse_bundle(&repo, ours(), &statement, &statement));

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
    let payload = simple_signing(&repo, &tagged);
    repo.push_tag_signature(&tagged, &payload, Some(&theirs().sign(repo.dir(), &payload)));
    let statement = statement(&repo, &bundled);
    repo.attach_bundle(&bundled, &dsse_bundle(&repo, theirs(), &statement, &statement));

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
    let payload = simple_signing(&repo, &signed);
    repo.push_tag_signature(&unsigned, &payload, Some(&ours().sign(repo.dir(), &payload)));
    let trusted = verifier(&[("ours", ours())]);
    let err = repo.verify(&trusted, &unsigned).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::OtherDigest { signed: s, wanted: w } if *s == signed && *w == unsigned),
        "{err}"
    );

    // And a bundle signing v1.0.0 attached to v1.2.0.
    let third = repo.release("1.2.0");
    let statement = statement(&repo, &signed);
    repo.attach_bundle(&third, &dsse_bundle(&repo, ours(), &statement, &statement));
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
    let payload = String::from_utf8(simple_signing(&repo, &edited)).unwrap().replace("cosign container image", "any");
    repo.push_tag_signature(&edited, payload.as_bytes(), Some(&ours().sign(repo.dir(), payload.as_bytes())));
    let err = repo.verify(&trusted, &edited).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("critical.type")), "{err}");

    // A truncated payload, and a payload layer stripped of its signature.
    let truncated = repo.release("1.1.0");
    let payload = simple_signing(&repo, &truncated);
    let cut = &payload[..payload.len() / 2];
    repo.push_tag_signature(&truncated, cut, Some(&ours().sign(repo.dir(), &payload)));
    let err = repo.verify(&trusted, &truncated).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("simple-signing")), "{err}");
    let stripped = repo.release("1.2.0");
    repo.push_tag_signature(&stripped, &simple_signing(&repo, &stripped), None);
    let err = repo.verify(&trusted, &stripped).await.unwrap_err();
    assert!(matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("annotation")), "{err}");

    // A bundle our key signed for v1.0.0, its statement swapped for one naming v1.3.0:
    // the bundle names our key, which no longer verifies it.
    let swapped = repo.release("1.3.0");
    let (genuine, forged) = (statement(&repo, &edited), statement(&repo, &swapped));
    repo.attach_bundle(&swapped, &dsse_bundle(&repo, ours(), &forged, &genuine));
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
    let statement = statement(&repo, &digest);
    repo.attach_bundle(&digest, &dsse_bundle(&repo, ours(), &statement, &statement));
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
