//! The registry requests whose answers' headers matter, sent by us rather than by
//! oci-client: the manifest HEAD that starts every pull and every resolution, the blob
//! HEAD before a blob is pulled on its own, and the tag list. oci-client keeps a failed answer's headers to itself, and a registry that
//! is throttling (429) or unavailable (503) says in `Retry-After` when to come back.
//!
//! Bearer tokens come from oci-client's own token dance ([`Client::auth`]), which also
//! leaves them in its cache for the pulls that follow; the probe keeps its own copy per
//! repository, so that a check costs one request, as oci-client's own did.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;

use super::OciError;

/// The manifest kinds a pull accepts, as oci-client asks for them.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Tags asked for per page of a tag list.
const TAG_PAGE: usize = 1000;

/// The process's probe: like the shared [`Client`], one per process, so tokens are
/// fetched once per repository.
pub fn probe() -> &'static Probe {
    static PROBE: LazyLock<Probe> = LazyLock::new(Probe::new);
    &PROBE
}

/// Sends the requests of this module.
pub struct Probe {
    http: reqwest::Client,
    /// Bearer tokens by `registry/repository`, dropped when the registry refuses one.
    tokens: Mutex<HashMap<String, String>>,
}

impl Probe {
    /// The same timeouts as [`super::build_client`]'s.
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("updraft/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client without custom roots always builds");
        Self { http, tokens: Mutex::default() }
    }

    /// The digest of the manifest at `reference`, in one HEAD (two more when a token
    /// must be fetched first); `None` when the registry names none (or has no HEAD on
    /// manifests), for the caller to pull and hash it.
    pub async fn manifest_digest(
        &self,
        client: &Client,
        reference: &Reference,
        insecure: bool,
        auth: &RegistryAuth,
    ) -> Result<Option<String>, OciError> {
        let target = reference.digest().or(reference.tag()).unwrap_or("latest");
        let path = format!("manifests/{target}");
        let answer = self.send(client, Method::HEAD, reference, &path, insecure, auth).await?;
        let digest = answer.headers().get("docker-content-digest").and_then(|d| d.to_str().ok());
        Ok(digest.filter(|d| super::is_digest(d)).map(str::to_owned))
    }

    /// Whether the registry will serve the blob `reference` names (by digest), in one
    /// HEAD before it is pulled: a throttling registry's `Retry-After` is seen here,
    /// where oci-client's pull would hide it.
    pub async fn blob(
        &self,
        client: &Client,
        reference: &Reference,
        insecure: bool,
        auth: &RegistryAuth,
    ) -> Result<(), OciError> {
        let digest = reference.digest().unwrap_or_default();
        self.send(client, Method::HEAD, reference, &format!("blobs/{digest}"), insecure, auth).await.map(drop)
    }

    /// All tags of `image`'s repository, following the registry's pagination.
    pub async fn tags(
        &self,
        client: &Client,
        image: &Reference,
        insecure: bool,
        auth: &RegistryAuth,
    ) -> Result<Vec<String>, OciError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags: Vec<String> = Vec::new();
        loop {
            let mut path = format!("tags/list?n={TAG_PAGE}");
            if let Some(last) = tags.last() {
                path.push_str(&format!("&last={}", utf8_percent_encode(last, NON_ALPHANUMERIC)));
            }
            let answer = self.send(client, Method::GET, image, &path, insecure, auth).await?;
            let registry = || image.registry().to_owned();
            let body =
                answer.bytes().await.map_err(|e| OciError::Registry { registry: registry(), source: e.into() })?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| OciError::Registry {
                registry: registry(),
                source: OciDistributionError::SpecViolationError(format!("tag list: {e}")),
            })?;
            let page = page.tags.unwrap_or_default();
            let full = page.len() >= TAG_PAGE;
            tags.extend(page);
            if !full {
                return Ok(tags);
            }
        }
    }

    /// Sends `method` to `/v2/<repository>/<path>` of `reference`'s registry, fetching
    /// a token once when the registry asks for one. A success (or a 405 to a HEAD) is
    /// returned; 429 and 5xx become [`OciError::Unavailable`] with the `Retry-After`
    /// asked for; anything else the error oci-client would have given.
    async fn send(
        &self,
        client: &Client,
        method: Method,
        reference: &Reference,
        path: &str,
        insecure: bool,
        auth: &RegistryAuth,
    ) -> Result<Response, OciError> {
        let registry = reference.registry().to_owned();
        let scheme = if insecure { "http" } else { "https" };
        let url = format!("{scheme}://{}/v2/{}/{path}", reference.resolve_registry(), reference.repository());
        let key = format!("{}/{}", reference.resolve_registry(), reference.repository());
        let failed = |source| OciError::Registry { registry: registry.clone(), source };
        let mut token = self.tokens.lock().expect("token lock").get(&key).cloned();
        let mut asked_for_token = false;
        let answer = loop {
            let request = self.http.request(method.clone(), &url).header(ACCEPT, MANIFEST_TYPES);
            let request = match (&token, auth) {
                (Some(token), _) | (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
                (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
                (None, RegistryAuth::Anonymous) => request,
            };
            let answer = request.send().await.map_err(|e| failed(e.into()))?;
            if answer.status() != StatusCode::UNAUTHORIZED || asked_for_token {
                break answer;
            }
            asked_for_token = true;
            self.tokens.lock().expect("token lock").remove(&key);
            token = client.auth(reference, auth, RegistryOperation::Pull).await.map_err(failed)?;
            match &token {
                Some(fresh) => self.tokens.lock().expect("token lock").insert(key.clone(), fresh.clone()),
                // No token service: the credentials already sent were refused.
                None => break answer,
            };
        };
        let status = answer.status();
        if status.is_success() || (method == Method::HEAD && status == StatusCode::METHOD_NOT_ALLOWED) {
            return Ok(answer);
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = retry_after(answer.headers(), SystemTime::now());
            return Err(OciError::Unavailable { registry, status: status.as_u16(), retry_after });
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(failed(OciDistributionError::UnauthorizedError { url }));
        }
        let code = status.as_u16();
        let body = answer.bytes().await.unwrap_or_default();
        Err(failed(match serde_json::from_slice::<OciEnvelope>(&body) {
            Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
            Err(_) => {
                OciDistributionError::ServerError { url, code, message: String::from_utf8_lossy(&body).into_owned() }
            }
        }))
    }
}

/// What a `Retry-After` header asks for, as of `now`: delta-seconds or an HTTP date
/// (RFC 9110 §10.2.3). A date already past asks for no wait; garbage for nothing.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Mon, 23 Nov 2026 23:00:00 GMT").unwrap();
        assert_eq!(retry_after(&headers("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(&headers(" 7 "), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers("Mon, 23 Nov 2026 23:01:30 GMT"), now), Some(Duration::from_secs(90)));
        assert_eq!(retry_after(&headers("Mon, 23 Nov 2026 22:00:00 GMT"), now), Some(Duration::ZERO));
        for garbage in ["-5", "soon", "1.5", "Mon, 99 Nov 2026 23:01:30 GMT", ""] {
            assert_eq!(retry_after(&headers(garbage), now), None, "{garbage:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
