//! Manifests through the proxy. By digest they are immutable: cached once, served
//! from the database ever after. By tag they are revalidated with a HEAD upstream
//! (which Docker Hub does not count against its pull limit) at most every
//! `manifest_revalidate`; a changed digest fetches the new manifest, and an upstream
//! that is down or rate-limiting leaves the cached copy to be served.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use berth_meta::ProxyManifest;
use berth_oci::manifest::MAX_MANIFEST_BYTES;
use berth_oci::Digest;
use futures::StreamExt;

use super::upstream::{self, Target, UpstreamError};
use super::{upstream_error, Group};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::{now_ms, Shared};

/// Every manifest kind, as docker asks; the cache keeps what the upstream chose.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub async fn get(
    state: &Shared,
    group: &Group,
    image: &str,
    reference: &str,
    with_body: bool,
) -> RegistryResult<Response> {
    let ns = group.namespace.id;
    let target = upstream::target(&state.proxy.config, image);
    let by_digest = match reference.contains(':') {
        true => Some(crate::registry::parse_digest(reference)?),
        false => None,
    };
    let now = now_ms();
    let cached = state.meta.proxy_manifest(ns, image, reference, now).await?;
    if let Some(c) = cached.as_ref() {
        let fresh = now - c.checked_at < state.proxy.config.manifest_revalidate.as_millis() as i64;
        if by_digest.is_some() || fresh {
            return respond(c, with_body);
        }
        match head(state, &target, reference).await {
            Ok(Some(d)) if d == c.digest => {
                state
                    .meta
                    .proxy_manifest_checked(ns, image, reference, now)
                    .await?;
                return respond(c, with_body);
            }
            Ok(_) => {}
            Err(e) if e.is_outage() => {
                tracing::warn!(image, reference, error = %e, "serving the cached manifest: the upstream is unavailable");
                return respond(c, with_body);
            }
            Err(e) => return Err(upstream_error(&e, Code::ManifestUnknown)),
        }
    }
    let fetched = match fetch(state, &target, reference, by_digest.as_ref()).await {
        Ok(m) => m,
        Err(Fetch::Upstream(e)) => {
            if let Some(c) = cached.as_ref().filter(|_| e.is_outage()) {
                tracing::warn!(image, reference, error = %e, "serving the cached manifest: the upstream is unavailable");
                return respond(c, with_body);
            }
            return Err(upstream_error(&e, Code::ManifestUnknown));
        }
        Err(Fetch::Invalid(why)) => {
            return Err(
                RegistryError::new(Code::ManifestInvalid, why).status(StatusCode::BAD_GATEWAY)
            )
        }
    };
    state
        .meta
        .put_proxy_manifest(ns, image, reference, &fetched, now_ms())
        .await?;
    tracing::info!(image, reference, digest = %fetched.digest, group = %group.namespace.full_path, "dependency proxy cached a manifest");
    respond(&fetched, with_body)
}

/// The digest the upstream has under `reference` now, if it says.
async fn head(
    state: &Shared,
    target: &Target,
    reference: &str,
) -> Result<Option<Digest>, UpstreamError> {
    let resp = state
        .proxy
        .client
        .send(
            target,
            Method::HEAD,
            &format!("manifests/{reference}"),
            Some(ACCEPT),
        )
        .await?;
    Ok(upstream::header(resp.headers(), "docker-content-digest")
        .and_then(|d| Digest::parse(d).ok()))
}

enum Fetch {
    Upstream(UpstreamError),
    /// What the upstream sent is not what was asked for.
    Invalid(String),
}

async fn fetch(
    state: &Shared,
    target: &Target,
    reference: &str,
    by_digest: Option<&Digest>,
) -> Result<ProxyManifest, Fetch> {
    let resp = state
        .proxy
        .client
        .send(
            target,
            Method::GET,
            &format!("manifests/{reference}"),
            Some(ACCEPT),
        )
        .await
        .map_err(Fetch::Upstream)?;
    let media_type = upstream::header(resp.headers(), "content-type")
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
        .unwrap_or_else(|| "application/vnd.docker.distribution.manifest.v2+json".into());
    let mut payload = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Fetch::Upstream(UpstreamError::Unreachable(format!(
                "reading the manifest: {e}"
            )))
        })?;
        if payload.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(Fetch::Invalid(format!(
                "the upstream manifest is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        payload.extend_from_slice(&chunk);
    }
    let algorithm = by_digest.map_or(berth_oci::Algorithm::Sha256, Digest::algorithm);
    let digest = Digest::of(algorithm, &payload);
    if let Some(wanted) = by_digest {
        if &digest != wanted {
            return Err(Fetch::Invalid(format!(
                "the upstream sent a manifest with digest {digest}, not {wanted}"
            )));
        }
    }
    Ok(ProxyManifest {
        digest,
        media_type,
        payload,
        checked_at: now_ms(),
    })
}

fn respond(m: &ProxyManifest, with_body: bool) -> RegistryResult<Response> {
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", &m.media_type)
        .header("Content-Length", m.payload.len())
        .header("Docker-Content-Digest", m.digest.as_str())
        .header("ETag", format!("\"{}\"", m.digest));
    let body = if with_body {
        Body::from(m.payload.clone())
    } else {
        Body::empty()
    };
    builder.body(body).map_err(RegistryError::internal)
}
