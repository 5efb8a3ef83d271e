//! Blobs through the proxy: immutable, so a cached one is served from the blob store
//! (with ranges, or a redirect to object storage) without asking upstream; an
//! uncached one is fetched once and streamed to every client that asked (`fetch`).

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_oci::Digest;

use super::fetch::{self, Failure};
use super::upstream::{self, UpstreamError};
use super::{upstream_error, Group};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::registry::blobs::serve;
use crate::state::{now_ms, Shared};

pub async fn get(
    state: &Shared,
    headers: &HeaderMap,
    group: &Group,
    image: &str,
    digest: &Digest,
    with_body: bool,
) -> RegistryResult<Response> {
    let ns = group.namespace.id;
    if let Some(size) = state.meta.proxy_blob(ns, digest, now_ms()).await? {
        return serve(state, headers, digest, size, with_body).await;
    }
    let target = upstream::target(&state.proxy.config, image);
    if !with_body {
        // A HEAD is answered by the upstream's HEAD; nothing is fetched for it.
        let resp = state
            .proxy
            .client
            .send(&target, Method::HEAD, &format!("blobs/{digest}"), None)
            .await
            .map_err(|e| upstream_error(&e, Code::BlobUnknown))?;
        let mut b = Response::builder()
            .status(StatusCode::OK)
            .header("Docker-Content-Digest", digest.as_str())
            .header("Content-Type", "application/octet-stream");
        if let Some(len) = upstream::header(resp.headers(), "content-length") {
            b = b.header("Content-Length", len);
        }
        return b.body(Body::empty()).map_err(RegistryError::internal);
    }
    let joined = fetch::join(state, ns, &target, digest)
        .await
        .map_err(|f| match f {
            Failure::Upstream(e) => upstream_error(&e, Code::BlobUnknown),
            Failure::Other(why) => {
                upstream_error(&UpstreamError::Unreachable(why), Code::BlobUnknown)
            }
        })?;
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header("Docker-Content-Digest", digest.as_str())
        .header("Content-Type", "application/octet-stream")
        .header("ETag", format!("\"{digest}\""));
    if let Some(size) = joined.size {
        b = b.header("Content-Length", size);
    }
    b.body(Body::from_stream(joined.body))
        .map_err(RegistryError::internal)
}
