//! Signing releases the way cosign does, independently of Updraft's verifier: keys and
//! ECDSA P-256 signatures by `openssl`, payloads and bundles written here from cosign's
//! documented formats (`specs/SIGNATURE_SPEC.md`, `specs/BUNDLE_SPEC.md`, the DSSE
//! protocol and in-toto statements), pushed with the real `oras` CLI: `oras push` for
//! the tag scheme (cosign 2) and `oras attach` for sigstore bundles (cosign 3; on a
//! registry without the referrers API oras maintains the referrers tag schema).
//!
//! Tests of every layer use it: `updraft-core`'s verifier, the gateway's standalone
//! channels and the operator end to end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::procs::TempDir;
use crate::run_bytes;

/// Media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Artifact type and layer media type of a sigstore bundle.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The predicate type of a `cosign sign` (v3) statement.
pub const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
const IN_TOTO: &str = "application/vnd.in-toto+json";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Base64, standard alphabet, padded: how cosign and protobuf JSON write bytes.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A cosign-style key pair made by `openssl ecparam -genkey -name prime256v1`, kept in
/// a directory the caller owns.
pub struct Key {
    dir: PathBuf,
    private: PathBuf,
    public: PathBuf,
    /// The PEM `PUBLIC KEY` (SPKI), as `cosign.pub` holds it.
    pub public_pem: String,
}

impl Key {
    /// Generates `dir/name.key` and `dir/name.pub`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(format!("{name}.key"));
        run_bytes(
            Command::new("openssl").args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"]).arg(&private),
        );
        let public = dir.join(format!("{name}.pub"));
        run_bytes(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public));
        let public_pem = std::fs::read_to_string(&public).unwrap();
        Self { dir: dir.to_owned(), private, public, public_pem }
    }

    /// The public key file.
    pub fn public_file(&self) -> &Path {
        &self.public
    }

    /// `openssl dgst -sha256 -sign`: base64 of the DER ECDSA signature over SHA-256(data).
    pub fn sign(&self, data: &[u8]) -> String {
        let input = self.dir.join(format!("to-sign-{}-{}", std::process::id(), unique()));
        std::fs::write(&input, data).unwrap();
        let der = run_bytes(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&self.private).arg(&input));
        let _ = std::fs::remove_file(input);
        b64(&der)
    }

    /// The key's fingerprint as a bundle's `verificationMaterial.publicKey.hint` carries
    /// it: base64(SHA-256(DER SPKI)), by `openssl pkey -outform DER | openssl dgst`.
    pub fn hint(&self) -> String {
        let der = self.dir.join(format!("hint-{}-{}.der", std::process::id(), unique()));
        run_bytes(
            Command::new("openssl")
                .args(["pkey", "-pubin", "-in"])
                .arg(&self.public)
                .args(["-outform", "DER", "-out"])
                .arg(&der),
        );
        let sha = run_bytes(Command::new("openssl").args(["dgst", "-sha256", "-binary"]).arg(&der));
        let _ = std::fs::remove_file(der);
        b64(&sha)
    }
}

/// A simple-signing payload for `digest`: containers-signature JSON with cosign's
/// `critical.type`.
pub fn simple_signing(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// What `cosign sign` (v3) signs: an in-toto statement with the manifest as subject.
pub fn statement(name: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": SIGN_PREDICATE_TYPE,
        "predicate": {}
    }))
    .unwrap()
}

/// DSSE's pre-authentication encoding: `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    [format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).as_bytes(), payload].concat()
}

fn bundle(key: &Key, content: &str, value: Value) -> Value {
    let mut bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.hint()}, "tlogEntries": []},
    });
    bundle[content] = value;
    bundle
}

/// A bundle with a message signature over `manifest` (raw bytes, as the registry serves
/// them: their SHA-256 is the manifest digest).
pub fn message_bundle(key: &Key, manifest: &[u8]) -> Value {
    use sha2::Digest as _;
    let sha = sha2::Sha256::digest(manifest);
    let value =
        json!({"messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha)}, "signature": key.sign(manifest)});
    bundle(key, "messageSignature", value)
}

/// A DSSE bundle carrying `payload` with a signature over `signed_payload` (the same,
/// unless a test tampers with the payload after signing).
pub fn dsse_bundle(key: &Key, payload: &[u8], signed_payload: &[u8]) -> Value {
    let value = json!({
        "payload": b64(payload),
        "payloadType": IN_TOTO,
        "signatures": [{"sig": key.sign(&pae(IN_TOTO, signed_payload)), "keyid": ""}]
    });
    bundle(key, "dsseEnvelope", value)
}

/// The address of the project's test registry, started (or reused) through
/// `cluster.sh registry`, which also installs `oras` when missing; once per test process.
pub fn test_registry() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let exports = crate::cluster_script("registry");
        if !Command::new("oras").arg("version").output().is_ok_and(|o| o.status.success()) {
            crate::cluster_script("tools");
        }
        exports.into_iter().find(|(k, _)| k == "UPDRAFT_REGISTRY").expect("cluster.sh printed UPDRAFT_REGISTRY").1
    })
}

/// A fresh repository of [`test_registry`], `test/<prefix>-<pid>-<time>-<n>`, with a
/// scratch directory of its own.
pub struct TestRepo {
    pub name: String,
    dir: TempDir,
}

impl TestRepo {
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Self { name: format!("test/{prefix}-{}-{nanos}-{}", std::process::id(), unique()), dir: TempDir::new("repo") }
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    pub fn at(&self) -> Repository<'_> {
        Repository { registry: test_registry(), name: &self.name, dir: self.dir() }
    }

    /// Pushes a release (bytes unique to this repository and tag) at `tag`; returns its
    /// manifest digest.
    pub fn release(&self, tag: &str) -> String {
        std::fs::write(self.dir().join("firmware.bin"), format!("{} {tag}", self.name)).unwrap();
        run_bytes(Command::new("oras").current_dir(self.dir()).args([
            "push",
            "--plain-http",
            &self.at().reference(tag),
            "firmware.bin:application/vnd.updraft.firmware.v1",
        ]));
        self.at().resolve(tag)
    }
}

/// A repository of a plain-HTTP registry that tests push signatures to, with a scratch
/// directory for the files `oras` uploads.
pub struct Repository<'a> {
    pub registry: &'a str,
    pub name: &'a str,
    pub dir: &'a Path,
}

impl Repository<'_> {
    /// `registry/name:tag` or `registry/name@digest`.
    pub fn reference(&self, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") { "@" } else { ":" };
        format!("{}/{}{sep}{tag_or_digest}", self.registry, self.name)
    }

    /// The raw manifest bytes at `digest`, by `oras manifest fetch`.
    pub fn manifest(&self, digest: &str) -> Vec<u8> {
        run_bytes(Command::new("oras").args(["manifest", "fetch", "--plain-http", &self.reference(digest)]))
    }

    /// The digest `tag` points at, by `oras resolve`.
    pub fn resolve(&self, tag: &str) -> String {
        let out = run_bytes(Command::new("oras").args(["resolve", "--plain-http", &self.reference(tag)]));
        String::from_utf8(out).unwrap().trim().to_owned()
    }

    /// Cosign 2's tag scheme: `payload` as the simple-signing layer of a manifest at tag
    /// `sha256-<hex>.sig` of `signed`, the signature in the layer's
    /// `dev.cosignproject.cosign/signature` annotation (left out when `None`).
    pub fn push_tag_signature(&self, signed: &str, payload: &[u8], signature: Option<&str>) {
        let n = unique();
        let (file, annotations_file) = (format!("payload-{n}.json"), format!("annotations-{n}.json"));
        std::fs::write(self.dir.join(&file), payload).unwrap();
        let mut annotations = json!({});
        if let Some(signature) = signature {
            annotations[&file] = json!({ "dev.cosignproject.cosign/signature": signature });
        }
        std::fs::write(self.dir.join(&annotations_file), annotations.to_string()).unwrap();
        let tag = format!("{}.sig", signed.replace(':', "-"));
        run_bytes(Command::new("oras").current_dir(self.dir).args([
            "push",
            "--plain-http",
            "--annotation-file",
            &annotations_file,
            &self.reference(&tag),
            &format!("{file}:{SIMPLE_SIGNING_MEDIA_TYPE}"),
        ]));
    }

    /// Signs `digest` with `key` in cosign 2's tag scheme.
    pub fn sign_with_tag(&self, key: &Key, digest: &str) {
        let payload = simple_signing(&format!("{}/{}", self.registry, self.name), digest);
        self.push_tag_signature(digest, &payload, Some(&key.sign(&payload)));
    }

    /// Cosign 3's place: `bundle` attached to `subject` as an OCI 1.1 referrer.
    pub fn attach_bundle(&self, subject: &str, bundle: &Value) {
        let file = format!("bundle-{}.sigstore.json", unique());
        std::fs::write(self.dir.join(&file), serde_json::to_vec(bundle).unwrap()).unwrap();
        run_bytes(Command::new("oras").current_dir(self.dir).args([
            "attach",
            "--plain-http",
            "--artifact-type",
            BUNDLE_MEDIA_TYPE,
            &self.reference(subject),
            &format!("{file}:{BUNDLE_MEDIA_TYPE}"),
        ]));
    }

    /// Signs `digest` with `key` as `cosign sign` v3 does: a DSSE bundle referrer.
    pub fn sign_with_bundle(&self, key: &Key, digest: &str) {
        let statement = statement(&format!("{}/{}", self.registry, self.name), digest);
        self.attach_bundle(digest, &dsse_bundle(key, &statement, &statement));
    }
}

/// The real `cosign` CLI (Debian's `cosign` package): a key pair it generated and
/// signatures it pushes itself, with no transparency log (`--tlog-upload=false`) to a
/// plain-HTTP registry. What Updraft verifies must be what cosign writes, not only what
/// this module writes from cosign's specs.
pub struct CosignCli {
    dir: PathBuf,
    /// `cosign.pub`, the PEM public key.
    pub public: PathBuf,
}

impl CosignCli {
    /// Whether `cosign` runs here.
    pub fn available() -> bool {
        Command::new("cosign").arg("version").output().is_ok_and(|o| o.status.success())
    }

    /// `COSIGN_PASSWORD= cosign generate-key-pair` in `dir` (writes `cosign.key` and
    /// `cosign.pub` there).
    pub fn generate(dir: &Path) -> Self {
        run_bytes(Command::new("cosign").current_dir(dir).env("COSIGN_PASSWORD", "").arg("generate-key-pair"));
        Self { dir: dir.to_owned(), public: dir.join("cosign.pub") }
    }

    /// `cosign sign --key cosign.key` of `registry/repository@digest`, with `extra` flags
    /// (e.g. the bundle format's); cosign 2 writes the tag scheme (`sha256-<hex>.sig`).
    pub fn sign(&self, registry: &str, repository: &str, digest: &str, extra: &[&str]) {
        let output = self.try_sign(registry, repository, digest, extra);
        assert!(
            output.status.success(),
            "cosign sign failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// [`CosignCli::sign`], its output whether it succeeded or not.
    pub fn try_sign(&self, registry: &str, repository: &str, digest: &str, extra: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("cosign");
        cmd.current_dir(&self.dir)
            .env("COSIGN_PASSWORD", "")
            .args(["sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry"])
            .args(["--allow-http-registry", "--yes"])
            .args(extra)
            .arg(format!("{registry}/{repository}@{digest}"));
        cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// `cosign attest --key cosign.key` of `registry/repository@digest` with `flags`
    /// (`--predicate`, `--type`, `--new-bundle-format`…).
    pub fn attest(&self, registry: &str, repository: &str, digest: &str, flags: &[&str]) {
        let mut cmd = Command::new("cosign");
        cmd.current_dir(&self.dir)
            .env("COSIGN_PASSWORD", "")
            .args(["attest", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry"])
            .args(["--allow-http-registry", "--yes"])
            .args(flags)
            .arg(format!("{registry}/{repository}@{digest}"));
        run_bytes(&mut cmd);
    }

    /// `cosign verify --key cosign.pub` of `registry/repository@digest` (no transparency
    /// log): whether cosign itself accepts what it signed.
    pub fn verify(&self, registry: &str, repository: &str, digest: &str, extra: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("cosign");
        cmd.current_dir(&self.dir)
            .args(["verify", "--key", "cosign.pub", "--insecure-ignore-tlog=true", "--allow-insecure-registry"])
            .args(["--allow-http-registry"])
            .args(extra)
            .arg(format!("{registry}/{repository}@{digest}"));
        cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }
}
