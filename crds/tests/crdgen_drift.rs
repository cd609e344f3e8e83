//! `crds/crds.yaml` (and the chart's copy) must be exactly what `crdgen` prints.

use std::path::Path;

fn assert_matches_generated(relative: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let generated = updraft_crds::crds_yaml();
    assert!(
        on_disk == generated,
        "{} is stale: regenerate it with `cargo run -p updraft-crds --bin crdgen > {}`",
        path.display(),
        relative
    );
}

#[test]
fn crds_yaml_is_what_crdgen_prints() {
    assert_matches_generated("crds.yaml");
}

#[test]
fn the_charts_crds_are_what_crdgen_prints() {
    assert_matches_generated("../charts/updraft/crds/crds.yaml");
}

#[test]
fn every_kind_is_namespaced_with_status_and_short_name() {
    for crd in updraft_crds::crds() {
        assert_eq!(crd.spec.scope, "Namespaced", "{}", crd.spec.names.kind);
        assert_eq!(crd.spec.group, "updraft.dev");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{} has no status subresource",
            crd.spec.names.kind
        );
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{columns:?}");
    }
}

#[test]
fn every_schema_property_is_documented() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let inherited = ["metadata", "apiVersion", "kind"].contains(&name.as_str()) && !path.contains('.');
                if prop.get("description").is_none() && !inherited {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in updraft_crds::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:#?}");
}
