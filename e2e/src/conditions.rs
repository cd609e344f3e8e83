//! The Flux-style conditions of a resource's status, as `kubectl get -o json` shows them.

use serde_json::Value;

/// The condition of type `type_` in `v`'s `status.conditions`.
pub fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Whether the condition `type_` has `status` (`True`, `False`, `Unknown`), whichever
/// generation it was written for.
pub fn has_status(v: &Value, type_: &str, status: &str) -> bool {
    condition(v, type_).is_some_and(|c| c["status"] == status)
}

/// Whether the condition `type_` has `status` and was written for the resource's
/// current generation (its `observedGeneration` is `metadata.generation`).
pub fn is(v: &Value, type_: &str, status: &str) -> bool {
    condition(v, type_).is_some_and(|c| c["status"] == status && c["observedGeneration"] == v["metadata"]["generation"])
}
