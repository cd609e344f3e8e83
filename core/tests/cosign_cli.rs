//! What the real `cosign` CLI writes, verified and resolved against the real registry
//! (`e2e/scripts/cluster.sh registry`): signatures made by `cosign sign --key` (Debian's
//! `cosign` package, no transparency log), not only by this repository's openssl-based
//! helpers ([`e2e::cosign`], tests in `cosign.rs`). Also the resolver's rule under
//! verification (the newest release that verifies; newer ones skipped) and a registry
//! that sends more signature bytes than the descriptor declares.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use e2e::cosign::{simple_signing, test_registry as registry, CosignCli, TestRepo, SIGN_PREDICATE_TYPE};
use e2e::faults::{Fault, FaultProxy, Rule as FaultRule};
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use updraft_core::cosign::{Scheme, Verifier, VerifyError};
use updraft_core::oci;
use updraft_core::version::{resolve_verified, Lookup, ResolveError, Rule};

/// One key pair made by `cosign generate-key-pair` for the whole test process.
fn cosign() -> &'static CosignCli {
    static COSIGN: OnceLock<(CosignCli, tempfile::TempDir)> = OnceLock::new();
    &COSIGN
        .get_or_init(|| {
            assert!(CosignCli::available(), "needs the cosign CLI (Debian: apt-get install -t trixie cosign)");
            let dir = tempfile::tempdir().unwrap();
            (CosignCli::generate(dir.path()), dir)
        })
        .0
}

fn trusted() -> Verifier {
    Verifier::from_pems([("cosign.pub", std::fs::read_to_string(&cosign().public).unwrap().as_str())]).unwrap()
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
        Self(TestRepo::new(&format!("cosign-cli-{test}")))
    }

    /// `cosign sign --key` of `digest` (tag scheme).
    fn sign(&self, digest: &str) {
        cosign().sign(registry(), &self.name, digest, &[]);
    }

    fn tags(&self) -> Vec<String> {
        let out = Command::new("oras")
            .args(["repo", "tags", "--plain-http", &format!("{}/{}", registry(), self.name)])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
    }
}

fn client() -> Client {
    oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![registry().to_owned()]))
}

fn rule() -> Rule<'static> {
    Rule { range: "*", prerelease: false, allow_v_prefix: true, pin: None }
}

/// Every release of `repo` on `registry`, anonymously, over plain HTTP.
fn lookup<'a>(registry: &'a str, repo: &'a Repo) -> Lookup<'a> {
    static ANONYMOUS: RegistryAuth = RegistryAuth::Anonymous;
    Lookup { registry, repository: &repo.name, insecure: true, auth: &ANONYMOUS, rule: rule() }
}

async fn resolve(repo: &Repo) -> Result<updraft_core::version::VerifiedRelease, ResolveError> {
    resolve_verified(&client(), lookup(registry(), repo), &trusted()).await
}

// ---- the tests --------------------------------------------------------------------------------

#[tokio::test]
async fn cosign_sign_tag_scheme_verifies() {
    let repo = Repo::new("tag");
    let digest = repo.release("v1.0.0");
    repo.sign(&digest);
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    assert!(repo.tags().contains(&sig_tag), "cosign 2 writes the tag scheme: {:?}", repo.tags());

    let verified = trusted().verify(&client(), registry(), &repo.name, &RegistryAuth::Anonymous, &digest).await;
    let verified = verified.unwrap();
    assert_eq!((verified.key.as_str(), verified.scheme), ("cosign.pub", Scheme::Tag));
    assert_eq!(verified.signature, repo.at().resolve(&sig_tag));
    // And cosign agrees.
    let out = cosign().verify(registry(), &repo.name, &digest, &[]);
    assert!(out.status.success(), "cosign verify: {}", String::from_utf8_lossy(&out.stderr));
}

/// The issue's repository: v1.0.0 signed by cosign, v1.1.0 (newer) unsigned. The
/// resolver picks v1.0.0 and names v1.1.0 as skipped; once cosign signs v1.1.0, v1.1.0.
#[tokio::test]
async fn the_newest_release_that_verifies_wins_and_newer_unsigned_ones_are_skipped() {
    let repo = Repo::new("skip");
    let signed = repo.release("v1.0.0");
    repo.sign(&signed);
    let unsigned = repo.release("v1.1.0");
    let older = repo.release("v0.9.0");
    repo.sign(&older);

    let release = resolve(&repo).await.unwrap();
    assert_eq!((release.resolved.tag.as_str(), release.resolved.digest.as_str()), ("v1.0.0", signed.as_str()));
    assert_eq!(release.verified.scheme, Scheme::Tag);
    assert_eq!(release.skipped.len(), 1, "{:?}", release.skipped);
    let skipped = &release.skipped[0];
    assert_eq!((skipped.release.tag.as_str(), skipped.release.digest.as_str()), ("v1.1.0", unsigned.as_str()));
    assert_eq!(skipped.reason, "NoSignature");
    assert_eq!(
        skipped.to_string(),
        format!("1.1.0 (tag v1.1.0, {unsigned}) is skipped: no cosign signature for {unsigned}")
    );

    repo.sign(&unsigned);
    let release = resolve(&repo).await.unwrap();
    assert_eq!(release.resolved.digest, unsigned);
    assert!(release.skipped.is_empty());
}

/// Nothing verifies: the error names each release tried, newest first.
#[tokio::test]
async fn when_nothing_verifies_the_error_names_what_was_tried() {
    let repo = Repo::new("none");
    let (a, b) = (repo.release("1.0.0"), repo.release("1.1.0"));
    let err = resolve(&repo).await.unwrap_err();
    let ResolveError::Unverified { total, skipped, .. } = &err else { panic!("{err}") };
    assert_eq!(*total, 2);
    let digests: Vec<&str> = skipped.iter().map(|s| s.release.digest.as_str()).collect();
    assert_eq!(digests, [b.as_str(), a.as_str()]);
    assert!(!err.is_transient());
    assert!(
        err.to_string().starts_with(&format!(
            "no release of {}/{} verifies (all 2 versions tried): 1.1.0",
            registry(),
            repo.name
        )),
        "{err}"
    );
}

/// A sigstore bundle as an OCI 1.1 referrer, written by the packaged cosign. Its `sign`
/// (2.5) cannot write one (no `--new-bundle-format`; `--registry-referrers-mode=oci-1-1`
/// puts a simple-signing manifest in the referrers, not a bundle), but `cosign attest
/// --new-bundle-format --type https://sigstore.dev/cosign/sign/v1` writes what cosign 3's
/// `sign` does: a DSSE bundle over a statement with cosign's signing predicate. On a
/// registry without the referrers API, cosign's referrers tag schema index gives the
/// entry the artifact type `application/vnd.oci.empty.v1+json` (the config's), the
/// bundle type only inside the manifest.
#[tokio::test]
async fn cosign_attest_new_bundle_format_verifies_through_the_referrers_tag_schema() {
    let repo = Repo::new("bundle");
    let digest = repo.release("v1.0.0");
    std::fs::write(repo.dir().join("empty.json"), "{}").unwrap();
    let predicate = repo.dir().join("empty.json");
    let predicate = predicate.to_str().unwrap();
    cosign().attest(
        registry(),
        &repo.name,
        &digest,
        &["--new-bundle-format", "--type", SIGN_PREDICATE_TYPE, "--predicate", predicate],
    );
    assert!(repo.tags().contains(&digest.replace(':', "-")), "no referrers tag: {:?}", repo.tags());

    let verified = trusted().verify(&client(), registry(), &repo.name, &RegistryAuth::Anonymous, &digest).await;
    let verified = verified.unwrap();
    assert_eq!((verified.key.as_str(), verified.scheme), ("cosign.pub", Scheme::Bundle));
    let release = resolve(&repo).await.unwrap();
    assert_eq!(release.resolved.digest, digest);
}

/// An attestation with another predicate is not a signature, whoever signed it.
#[tokio::test]
async fn a_cosign_attestation_of_another_type_is_not_a_signature() {
    let repo = Repo::new("attestation");
    let digest = repo.release("v1.0.0");
    std::fs::write(repo.dir().join("sbom.json"), r#"{"packages":[]}"#).unwrap();
    let predicate = repo.dir().join("sbom.json");
    let flags = ["--new-bundle-format", "--type", "spdxjson", "--predicate", predicate.to_str().unwrap()];
    cosign().attest(registry(), &repo.name, &digest, &flags);
    let verified = trusted().verify(&client(), registry(), &repo.name, &RegistryAuth::Anonymous, &digest).await;
    assert!(matches!(verified, Err(VerifyError::NoSignature { .. })), "{verified:?}");
}

/// A signature blob whose descriptor declares 200 bytes, served by a registry that sends
/// 3 MiB and then stalls: the verifier stops at byte 201 and calls it tampered. Read to
/// the end (as it used to be, the declared size only compared afterwards), it would wait
/// on the stalled body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_blob_longer_than_declared_is_cut_off() {
    let repo = Repo::new("lying-size");
    let digest = repo.release("1.0.0");
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    // A simple-signing layer of 3 MiB, pushed honestly, then its manifest pushed again
    // with the layer's size edited down to 200.
    let mut payload = simple_signing(&repo.at().reference(&digest), &digest);
    payload.resize(3 << 20, b' ');
    repo.at().push_tag_signature(&digest, &payload, Some("MEUCIQ=="));
    let manifest = repo.at().manifest(&sig_tag);
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blob = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    manifest["layers"][0]["size"] = 200.into();
    let file = repo.dir().join("lying.json");
    std::fs::write(&file, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = Command::new("oras")
        .args(["manifest", "push", "--plain-http", "--media-type", "application/vnd.oci.image.manifest.v1+json"])
        .arg(repo.at().reference(&sig_tag))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "the registry refused the edited manifest: {}", String::from_utf8_lossy(&out.stderr));

    let proxy = FaultProxy::start(registry()).await.unwrap();
    proxy.set_rules(vec![FaultRule::new(&format!("/blobs/{blob}"), Fault::StallAfter(1 << 20))]);
    let client = oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![proxy.addr()]));
    let (verifier, addr) = (trusted(), proxy.addr());
    let verify = verifier.verify(&client, &addr, &repo.name, &RegistryAuth::Anonymous, &digest);
    let err = tokio::time::timeout(Duration::from_secs(20), verify)
        .await
        .expect("the verifier read past the declared size into the stalled body")
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Tampered { reason, .. } if reason.contains("more than the 200 bytes its descriptor declares")),
        "{err}"
    );
    assert_eq!(proxy.count(&format!("/blobs/{blob}")), 1);
}

/// What skipping costs: each newer unsigned release is one HEAD and the lookups of the
/// two places a signature may be (its `.sig` tag, its referrers and the referrers tag
/// schema), all metadata; nothing is asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_skipped_release_costs_a_handful_of_metadata_requests() {
    let repo = Repo::new("cost");
    let signed = repo.release("v1.0.0");
    repo.sign(&signed);
    let unsigned: Vec<String> = (1..=4).map(|n| repo.release(&format!("v1.{n}.0"))).collect();
    let proxy = FaultProxy::start(registry()).await.unwrap();
    let client = oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![proxy.addr()]));
    let (verifier, addr) = (trusted(), proxy.addr());
    let release = resolve_verified(&client, lookup(&addr, &repo), &verifier).await.unwrap();
    assert_eq!(release.resolved.digest, signed);
    assert_eq!(release.skipped.len(), unsigned.len());
    let seen = proxy.seen();
    let per_skipped = |digest: &str| {
        seen.iter().filter(|s| s.path.contains(&digest.replace(':', "-")) || s.path.contains(digest)).count()
    };
    for digest in &unsigned {
        assert!(per_skipped(digest) <= 4, "{digest}: {:#?}", seen.iter().map(|s| &s.path).collect::<Vec<_>>());
    }
    let blobs = seen.iter().filter(|s| s.path.contains("/blobs/")).count();
    assert_eq!(blobs, 1, "only the verified release's signature payload is read");
    println!(
        "FIGURE skip-cost: {} requests for 1 tag list + {} skipped + 1 verified (blobs read: {blobs})",
        seen.len(),
        unsigned.len()
    );
}
