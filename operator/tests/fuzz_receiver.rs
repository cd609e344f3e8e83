//! Bad input at the operator's webhook receiver: the payload parser of `POST /webhook`
//! (CNCF distribution notification envelopes and Harbor `PUSH_ARTIFACT` events) takes
//! any bytes, any JSON and mutated real payloads without panicking, and on generated
//! envelopes names exactly the repositories a model says were pushed as manifests.
//! Each target runs through `e2e::fuzz::check` (`UPDRAFT_FUZZ_SECS` for a long
//! campaign).

use e2e::fuzz;
use proptest::prelude::*;
use updraft_operator::receiver::pushed_repositories;

const DISTRIBUTION: &str = r#"{"events":[{"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","repository":"fw/esp32","url":"http://r:5000/v2/fw/esp32/manifests/sha256:bb","tag":"1.2.0"},"request":{"host":"r:5000","method":"PUT"}}]}"#;
const HARBOR: &str = r#"{"type":"PUSH_ARTIFACT","occur_at":1700000000,"operator":"ci","event_data":{"resources":[{"digest":"sha256:cc","tag":"2.0.0","resource_url":"harbor.example.com/library/fw:2.0.0"}],"repository":{"name":"fw","namespace":"library","repo_full_name":"library/fw"}}}"#;

/// Any JSON value, a few levels deep, with the receiver's field names likely.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(vec![
        "events",
        "action",
        "target",
        "repository",
        "mediaType",
        "tag",
        "url",
        "request",
        "host",
        "type",
        "event_data",
        "resources",
        "resource_url",
        "repo_full_name",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec!["push", "pull", "PUSH_ARTIFACT", "fw/esp32", "r:5000", "/manifests/", ""])
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

#[test]
fn any_body_never_panics() {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        fuzz::mutated(DISTRIBUTION).prop_map(String::into_bytes),
        fuzz::mutated(HARBOR).prop_map(String::into_bytes),
        json().prop_map(|v| v.to_string().into_bytes()),
    ];
    fuzz::check("webhook-payloads", body, |body| {
        let _ = pushed_repositories(&body);
        Ok(())
    });
}

/// One distribution event: action, repository, whether it names a manifest (by tag,
/// URL or media type), host.
type Event = (&'static str, &'static str, u8, Option<&'static str>);

#[test]
fn distribution_envelopes_name_exactly_the_pushed_manifests() {
    let event = (
        prop::sample::select(vec!["push", "pull", "delete"]),
        prop::sample::select(vec!["fw/esp32", "fw/stm32", "library/fw"]),
        0u8..4,
        prop::option::of(prop::sample::select(vec!["r:5000", "registry.example"])),
    );
    fuzz::check("webhook-distribution-model", prop::collection::vec(event, 0..6), |events: Vec<Event>| {
        let json: Vec<_> = events
            .iter()
            .map(|(action, repo, manifest, host)| {
                let mut target = serde_json::json!({"repository": repo, "mediaType": "application/octet-stream",
                    "url": format!("http://r/v2/{repo}/blobs/sha256:aa")});
                match manifest {
                    1 => target["tag"] = serde_json::json!("1.0.0"),
                    2 => target["url"] = serde_json::json!(format!("http://r/v2/{repo}/manifests/sha256:bb")),
                    3 => target["mediaType"] = serde_json::json!("application/vnd.oci.image.manifest.v1+json"),
                    _ => {}
                }
                let mut e = serde_json::json!({"action": action, "target": target});
                if let Some(h) = host {
                    e["request"] = serde_json::json!({"host": h});
                }
                e
            })
            .collect();
        let body = serde_json::json!({ "events": json }).to_string();
        let got = pushed_repositories(body.as_bytes()).expect("a well-formed envelope parses");
        let mut want: Vec<(Option<String>, String)> = Vec::new();
        for (action, repo, manifest, host) in &events {
            let push = (host.map(str::to_owned), repo.to_string());
            if *action == "push" && *manifest > 0 && !want.contains(&push) {
                want.push(push);
            }
        }
        prop_assert_eq!(got, want);
        Ok(())
    });
}
