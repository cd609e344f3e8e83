//! The Secrets a spec names, read when a check needs them (never cached: a rotated
//! Secret is picked up by the next check): registry credentials
//! (`kubernetes.io/dockerconfigjson`) and cosign public keys (`spec.verify`). Shared by
//! the FirmwareChannel and ImageStream controllers.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use oci_client::secrets::RegistryAuth;
use updraft_core::cosign::Verifier;
use updraft_crds::{OciSource, Verification};

use crate::context::Context;
use crate::error::{Error, Result};

/// The Secret `name` in `namespace`, if it exists.
pub(crate) async fn get(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(secrets.get_opt(name).await?)
}

/// Credentials for `source` from its dockerconfigjson Secret; anonymous without one.
pub(crate) async fn registry_auth(ctx: &Context, namespace: &str, source: &OciSource) -> Result<RegistryAuth> {
    let Some(name) = &source.credentials_secret else { return Ok(RegistryAuth::Anonymous) };
    let secret =
        get(ctx, namespace, name).await?.ok_or_else(|| Error::Credentials(format!("Secret {name:?} not found")))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| Error::Credentials(format!("Secret {name:?} has no .dockerconfigjson key")))?;
    let text =
        std::str::from_utf8(&bytes.0).map_err(|_| Error::Credentials(format!("Secret {name:?} is not UTF-8")))?;
    updraft_core::oci::auth_from_docker_config(text, &source.registry)
        .map_err(|e| Error::Credentials(format!("Secret {name:?}: {e}")))
}

/// A verifier of the public keys in `secret` (the one `verify` names): its `key`, else
/// `default_key`, else every key whose name ends in `.pub`.
pub(crate) fn verifier(secret: &Secret, verify: &Verification, default_key: Option<&str>) -> Result<Verifier> {
    let name = &verify.public_key_secret.name;
    let data = secret.data.clone().unwrap_or_default();
    let entries = data.iter().map(|(key, value)| (key.as_str(), value.0.as_slice()));
    let key = verify.public_key_secret.key.as_deref().or(default_key);
    Verifier::from_key_set(&format!("Secret {name}"), entries, key).map_err(|e| Error::PublicKeys(e.to_string()))
}
