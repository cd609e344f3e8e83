//! The resolver against the real registry (`e2e/scripts/cluster.sh registry`) behind
//! the fault proxy: a listed tag whose manifest is not found yet. CNCF distribution
//! sends a push's notification, then lists the tag, then resolves it; a check the
//! notification started could land in that gap (about one push in 90 in the webhook
//! e2e test) and waited out the 5 s check backoff. The proxy answers the HEADs of the
//! tag with the bare 404 the registry gives in the gap.

use std::time::Duration;

use e2e::cosign::{test_registry as registry, TestRepo};
use e2e::faults::{Fault, FaultProxy, Rule as FaultRule};
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use updraft_core::oci;
use updraft_core::version::{resolve_latest, Lookup, ResolveError, Rule};

static ANONYMOUS: RegistryAuth = RegistryAuth::Anonymous;

/// `repo` with `v1.0.0` and `v1.1.0`, and a proxy in front of the registry whose first
/// `misses` HEADs of `v1.1.0`'s manifest are 404.
async fn two_releases(test: &str, misses: u64) -> (TestRepo, [String; 2], FaultProxy) {
    let repo = TestRepo::new(&format!("resolve-{test}"));
    let releases = [repo.release("v1.0.0"), repo.release("v1.1.0")];
    let proxy = FaultProxy::start(registry()).await.unwrap();
    proxy.set_rules(vec![FaultRule::new("/manifests/v1.1.0", NOT_FOUND).method("HEAD").times(misses)]);
    (repo, releases, proxy)
}

const NOT_FOUND: Fault = Fault::Status { code: 404, retry_after: None };

async fn resolve(proxy: &FaultProxy, repo: &TestRepo, pin: Option<&str>) -> Result<(String, String), ResolveError> {
    let addr = proxy.addr();
    let client = oci::build_client("updraft-core-tests", ClientProtocol::HttpsExcept(vec![addr.clone()]));
    let rule = Rule { range: "*", prerelease: false, allow_v_prefix: true, pin };
    let lookup = Lookup { registry: &addr, repository: &repo.name, insecure: true, auth: &ANONYMOUS, rule };
    resolve_latest(&client, lookup).await.map(|r| (r.tag, r.digest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_tag_the_registry_does_not_find_yet_is_asked_again_not_taken_for_an_outage() {
    let (repo, [_, newest], proxy) = two_releases("linking", 3).await;
    let started = std::time::Instant::now();
    let resolved = resolve(&proxy, &repo, None).await.expect("the newest tag resolves once linked");
    assert_eq!(resolved, ("v1.1.0".to_owned(), newest));
    assert_eq!(proxy.count("/manifests/v1.1.0"), 4, "three 404s, then the answer");
    // 50 + 100 + 200 ms of waiting, not the check backoff.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_tag_deleted_since_the_list_gives_way_to_the_next_release() {
    let (repo, [older, _], proxy) = two_releases("deleted", u64::MAX).await;
    let resolved = resolve(&proxy, &repo, None).await.expect("the next release resolves");
    assert_eq!(resolved, ("v1.0.0".to_owned(), older));
    assert_eq!(proxy.count("/manifests/v1.1.0"), 6, "the first HEAD and five more, 1.55 s apart in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_tag_that_is_not_found_is_an_error_at_once() {
    let (repo, _, proxy) = two_releases("pinned", u64::MAX).await;
    let err = resolve(&proxy, &repo, Some("v1.1.0")).await.expect_err("a missing pin is no release");
    assert!(matches!(&err, ResolveError::Registry(e) if oci::is_unknown_repository(e)), "{err}");
    assert_eq!(proxy.count("/manifests/v1.1.0"), 1, "a pin is not a listed tag: no retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_finds_none_of_its_tags_is_not_asked_about_every_one() {
    let repo = TestRepo::new("resolve-none");
    for minor in 0..6 {
        repo.release(&format!("v1.{minor}.0"));
    }
    let proxy = FaultProxy::start(registry()).await.unwrap();
    proxy.set_rules(vec![FaultRule::new("/manifests/", NOT_FOUND).method("HEAD")]);
    let err = resolve(&proxy, &repo, None).await.expect_err("no tag resolves");
    assert!(matches!(&err, ResolveError::Registry(e) if oci::is_unknown_repository(e)), "{err}");
    let heads = proxy.seen().iter().filter(|s| s.method == "HEAD" && s.path.contains("/manifests/")).count();
    assert_eq!(heads, 3 * 6, "the three newest tags, six HEADs each; not all six tags");
}
