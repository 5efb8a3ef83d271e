//! Blob reads (with HTTP ranges) and deletes.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_oci::{Digest, RepoName};
use berth_store::ByteRange;

use super::{digits, empty, finish};
use crate::access::{authorize, Action};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::{now_ms, Shared};

fn blob_unknown(d: &Digest) -> RegistryError {
    RegistryError::new(Code::BlobUnknown, "blob unknown to registry")
        .detail(serde_json::json!({ "digest": d }))
}

/// Parse a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against `size`.
/// `Ok(None)`: no usable Range header (serve everything); `Err`: unsatisfiable.
pub(super) fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, ()> {
    // The range unit is case-insensitive (RFC 9110 §14.1).
    let Some(spec) = header.map(str::trim).and_then(|h| {
        h.get(..6)
            .filter(|u| u.eq_ignore_ascii_case("bytes="))
            .and_then(|_| h.get(6..))
    }) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multipart ranges: serve the whole blob, as allowed
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let num = |t: &str| digits(t).ok_or(());
    // A last position past the end means "to the end" (RFC 9110 §14.1.2): 206 with
    // what there is, not 416.
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n = num(n)?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
        }
        (s, "") => (num(s)?, size.checked_sub(1).ok_or(())?),
        (s, e) => (num(s)?, num(e)?.min(size.saturating_sub(1))),
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some(ByteRange { start, end }))
}

pub async fn get(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    digest: &Digest,
    with_body: bool,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Pull).await?;
    let size = state
        .meta
        .repository_blob(name.as_str(), digest)
        .await?
        .ok_or_else(|| blob_unknown(digest))?;
    // A client that just saw this blob may be about to reference it in a manifest:
    // keep garbage collection off it for another review delay.
    state.meta.postpone_blob_review(digest, now_ms()).await?;
    let base = Response::builder()
        .header("Docker-Content-Digest", digest.as_str())
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{digest}\""))
        .header("Cache-Control", "max-age=31536000");
    if with_body {
        // Object storage can serve the bytes itself; the client follows the redirect
        // with the Range header it sent here. HEAD is still answered here.
        if let Some(url) = state.store.presigned_get(digest).await? {
            return finish(
                empty(StatusCode::TEMPORARY_REDIRECT)
                    .header("Location", url)
                    .header("Docker-Content-Digest", digest.as_str()),
            );
        }
    }
    let range_header = headers.get("range").and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, size) {
        Ok(r) => r,
        Err(()) => {
            return Err(
                RegistryError::new(Code::RangeInvalid, "requested range not satisfiable")
                    .header("Content-Range", format!("bytes */{size}")),
            );
        }
    };
    let (status, len, builder) = match range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            r.end - r.start + 1,
            base.header(
                "Content-Range",
                format!("bytes {}-{}/{}", r.start, r.end, size),
            ),
        ),
        None => (StatusCode::OK, size, base),
    };
    let builder = builder
        .status(status)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", len);
    if !with_body {
        return builder.body(Body::empty()).map_err(RegistryError::internal);
    }
    let read = state.store.open(digest, range).await.map_err(|e| match e {
        berth_store::StoreError::NotFound => {
            tracing::error!(%digest, "blob is in metadata but its bytes are missing");
            blob_unknown(digest)
        }
        other => other.into(),
    })?;
    builder
        .body(Body::from_stream(read.body))
        .map_err(RegistryError::internal)
}

pub async fn delete(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    digest: &Digest,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Delete).await?;
    // Only the repository's link goes; the bytes are freed by garbage collection
    // once nothing references them.
    if !state.meta.unlink_blob(name.as_str(), digest).await? {
        return Err(blob_unknown(digest));
    }
    finish(empty(StatusCode::ACCEPTED).header("Docker-Content-Digest", digest.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Result<Option<ByteRange>, ()> {
        Ok(Some(ByteRange { start, end }))
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse_range(Some("Bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse_range(Some("items=0-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=5-"), 10), r(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), r(7, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), r(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Err(()));
        assert_eq!(parse_range(Some("items=1-2"), 10), Ok(None));
    }
}
