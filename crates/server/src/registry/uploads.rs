//! Blob uploads: monolithic, two-step, chunked and streamed; status, cancel, and
//! cross-repository mounts. Bytes are hashed as they arrive; the digest the client
//! names is checked before anything becomes visible.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_meta::Upload;
use berth_oci::{Algorithm, Digest, Hasher, RepoName};
use berth_store::PendingHash;
use futures::TryStreamExt;

use super::{digits, empty, finish, parse_digest, query_get, query_pairs, range_header};
use crate::access::{authorize, Action};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::protection::{check_v2, V2Change};
use crate::state::{now_ms, Shared};

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
        .detail(serde_json::json!({ "uuid": id }))
}

fn location(state: &Shared, headers: &HeaderMap, name: &RepoName, id: &str) -> String {
    format!(
        "{}/v2/{}/blobs/uploads/{}",
        state.base_url(headers),
        name,
        id
    )
}

fn session_response(
    state: &Shared,
    headers: &HeaderMap,
    status: StatusCode,
    name: &RepoName,
    id: &str,
    size: u64,
) -> RegistryResult<Response> {
    finish(
        empty(status)
            .header("Location", location(state, headers, name, id))
            .header("Docker-Upload-UUID", id)
            .header("Range", range_header(size)),
    )
}

fn blob_created(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    d: &Digest,
) -> RegistryResult<Response> {
    finish(
        empty(StatusCode::CREATED)
            .header(
                "Location",
                format!("{}/v2/{}/blobs/{}", state.base_url(headers), name, d),
            )
            .header("Docker-Content-Digest", d.as_str()),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Content-Range: <start>-<end>` (the spec's form; `bytes ` and `/total` tolerated).
fn content_range(headers: &HeaderMap) -> RegistryResult<Option<(u64, u64)>> {
    let Some(raw) = headers.get("content-range") else {
        return Ok(None);
    };
    let bad = || RegistryError::new(Code::RangeInvalid, "Content-Range must be <start>-<end>");
    let text = raw.to_str().map_err(|_| bad())?;
    parse_content_range(text).map(Some).ok_or_else(bad)
}

/// The `(start, end)` of a Content-Range value, both inclusive, `end >= start`.
pub(super) fn parse_content_range(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (a, b) = text.split_once('-')?;
    let (start, end) = (digits(a.trim())?, digits(b.trim())?);
    (end >= start).then_some((start, end))
}

/// Bytes in the inclusive range `start..=end`; `None` when that is more than a u64
/// holds (`0-18446744073709551615`), which no Content-Length can match.
pub(super) fn range_len(start: u64, end: u64) -> Option<u64> {
    end.checked_sub(start)?.checked_add(1)
}

async fn new_upload(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    alg: Algorithm,
) -> RegistryResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let created_by =
        crate::access::claims(state, headers).map(|c| crate::access::principal_key(&c));
    // Metadata first: a crash then leaves a row that expiry cleans, never stray bytes.
    state
        .meta
        .create_upload(&Upload {
            id: id.clone(),
            repository_path: name.to_string(),
            created_at: now,
            updated_at: now,
            created_by,
        })
        .await?;
    state.store.upload_create(&id).await?;
    state.uploads.put_hash(&id, 0, Hasher::new(alg).into());
    state.uploads.recorded(&id, now);
    Ok(id)
}

/// Run `work` holding the upload for this request alone: first in this node, then
/// across nodes (another node may be receiving a PATCH of the same upload). The claim
/// is released before the answer goes out, as the client's next request for the
/// upload may reach another node at once.
async fn claimed<T>(
    state: &Shared,
    id: &str,
    work: impl std::future::Future<Output = RegistryResult<T>>,
) -> RegistryResult<T> {
    let busy = || {
        RegistryError::new(
            Code::RangeInvalid,
            "another request is writing to this upload; wait for it, then resume from its Range",
        )
    };
    let _here = state.uploads.claim(id).ok_or_else(busy)?;
    let everywhere = state.meta.claim_upload(id).await?.ok_or_else(busy)?;
    let outcome = work.await;
    everywhere.release().await;
    outcome
}

/// The current size of an upload that belongs to `name`.
async fn current(state: &Shared, name: &RepoName, id: &str) -> RegistryResult<u64> {
    match state.meta.upload(id).await? {
        Some(u) if u.repository_path == name.as_str() => {}
        _ => return Err(upload_unknown(id)),
    }
    state
        .store
        .upload_size(id)
        .await?
        .ok_or_else(|| upload_unknown(id))
}

/// A hash covering exactly the first `offset` bytes of the upload; the one this
/// node kept (which may still be at work on the last request's bytes), or one
/// computed again from storage.
async fn hasher_at(
    state: &Shared,
    id: &str,
    offset: u64,
    alg: Option<Algorithm>,
) -> RegistryResult<PendingHash> {
    if let Some((at, h)) = state.uploads.take_hash(id) {
        if at == offset && alg.is_none_or(|a| a == h.algorithm()) {
            return Ok(h);
        }
    }
    rehashed(state, id, offset, alg)
        .await
        .map(PendingHash::from)
}

/// [`hasher_at`], waited for until it has taken every byte.
async fn hashed(state: &Shared, id: &str, offset: u64, alg: Algorithm) -> RegistryResult<Hasher> {
    match hasher_at(state, id, offset, Some(alg)).await?.wait().await {
        Some(h) => Ok(h),
        // Hashing stopped part-way (it cannot fail otherwise): start over.
        None => rehashed(state, id, offset, Some(alg)).await,
    }
}

/// The hash of the upload's first `offset` bytes, read back from storage.
async fn rehashed(
    state: &Shared,
    id: &str,
    offset: u64,
    alg: Option<Algorithm>,
) -> RegistryResult<Hasher> {
    let fresh = Hasher::new(alg.unwrap_or(Algorithm::Sha256));
    if offset == 0 {
        return Ok(fresh);
    }
    let (size, h) = state.store.upload_rehash(id, fresh).await?;
    if size != offset {
        return Err(RegistryError::new(
            Code::BlobUploadInvalid,
            "upload changed while in use",
        ));
    }
    // A store that keeps the running hash (S3) gives it in the upload's algorithm.
    if let Some(a) = alg.filter(|a| *a != h.algorithm()) {
        return Err(RegistryError::new(
            Code::DigestInvalid,
            format!(
                "this upload was hashed with {}; finish it with a {} digest (or start it with digest-algorithm={})",
                h.algorithm().as_str(),
                h.algorithm().as_str(),
                a.as_str()
            ),
        ));
    }
    Ok(h)
}

async fn append(
    state: &Shared,
    headers: &HeaderMap,
    id: &str,
    offset: u64,
    body: Body,
) -> RegistryResult<u64> {
    let hasher = hasher_at(state, id, offset, None).await?;
    let stream = Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    let (size, hasher) = state
        .store
        .upload_append(id, offset, stream, hasher)
        .await?;
    state.uploads.put_hash(id, size, hasher);
    if content_length(headers).is_none() {
        // Streamed bodies are not seen by the request-size metric.
        metrics::counter!("berth_http_received_bytes_total").increment(size - offset);
    }
    let now = now_ms();
    if state.uploads.should_touch(
        id,
        now,
        crate::jobs::touch_interval(state).as_millis() as i64,
    ) {
        state.meta.touch_upload(id, now).await?;
    }
    Ok(size)
}

/// Verify the upload against `digest`, publish it and link it into the repository.
async fn complete(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
    size: u64,
    digest: &Digest,
) -> RegistryResult<Response> {
    let actual = hashed(state, id, size, digest.algorithm()).await?.finish();
    if &actual != digest {
        discard(state, id).await?;
        return Err(RegistryError::new(
            Code::DigestInvalid,
            format!("uploaded content has digest {actual}, not {digest}; the upload was discarded"),
        )
        .detail(serde_json::json!({ "expected": digest, "actual": actual })));
    }
    let started = {
        // Publishing and linking happen together with respect to garbage collection.
        let _publishing = publishing(state).await?;
        state.store.upload_commit(id, digest).await?;
        state
            .meta
            .publish_upload(id, name.as_str(), digest, size, now_ms())
            .await?
    };
    state.uploads.forget(id);
    if let Some(t0) = started {
        metrics::histogram!("berth_upload_duration_seconds")
            .record((now_ms() - t0) as f64 / 1000.0);
    }
    metrics::counter!("berth_uploaded_blob_bytes_total").increment(size);
    blob_created(state, headers, name, digest)
}

/// The shared side of the blob lock, held while a blob is published and linked so
/// that garbage collection on any node never deletes bytes that just became live.
async fn publishing(state: &Shared) -> RegistryResult<crate::gc::BlobGuard> {
    crate::gc::blob_guard(&*state.meta, &*state.store, false)
        .await
        .map_err(|e| match e {
            crate::gc::GcError::Meta(e) => e.into(),
            crate::gc::GcError::Store(e) => e.into(),
        })
}

async fn discard(state: &Shared, id: &str) -> RegistryResult<()> {
    state.uploads.forget(id);
    state.store.upload_delete(id).await?;
    state.meta.delete_upload(id).await?;
    Ok(())
}

pub async fn start(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    query: &str,
    body: Body,
) -> RegistryResult<Response> {
    let q = query_pairs(query);
    if let Err(refused) = authorize(state, headers, name.as_str(), Action::Push).await {
        return Err(mount_source_challenge(state, headers, name, &q, refused));
    }
    // A repository rule's push level covers its blobs too, mounts included, so a
    // refused pusher learns it on the first request, not after uploading every layer.
    check_v2(state, headers, name.as_str(), V2Change::Upload).await?;
    if let Some(mount) = query_get(&q, "mount") {
        let digest = parse_digest(&mount)?;
        if let Some(resp) = try_mount(state, headers, name, &digest, query_get(&q, "from")).await? {
            return Ok(resp);
        }
    } else if let Some(d) = query_get(&q, "digest") {
        // Monolithic upload: the body is the whole blob.
        let digest = parse_digest(&d)?;
        let id = new_upload(state, headers, name, digest.algorithm()).await?;
        let size = match append(state, headers, &id, 0, body).await {
            Ok(size) => size,
            Err(e) => {
                discard(state, &id).await?;
                return Err(e);
            }
        };
        return complete(state, headers, name, &id, size, &digest).await;
    }
    let alg = match query_get(&q, "digest-algorithm") {
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|e| RegistryError::new(Code::DigestInvalid, e.to_string()))?,
        None => Algorithm::Sha256,
    };
    let id = new_upload(state, headers, name, alg).await?;
    session_response(state, headers, StatusCode::ACCEPTED, name, &id, 0)
}

/// A mount's first challenge names its source too, as the reference registry's does:
/// some clients (the OCI conformance suite's) fetch one token with the challenge's
/// scopes and retry once, so a source named only in a second challenge would never
/// be asked for.
fn mount_source_challenge(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    q: &[(String, String)],
    refused: RegistryError,
) -> RegistryError {
    let from = query_get(q, "from").and_then(|f| RepoName::parse(&f).ok());
    match from {
        Some(from)
            if refused.status == StatusCode::UNAUTHORIZED && query_get(q, "mount").is_some() =>
        {
            let reason = refused.reason.unwrap_or(refused.message);
            crate::access::mount_challenge(state, headers, name.as_str(), from.as_str())
                .because(reason)
        }
        _ => refused,
    }
}

/// Link a blob from another repository the caller may read. `None` means "not
/// mountable": the caller falls back to an ordinary upload session, as the spec says.
async fn try_mount(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    digest: &Digest,
    from: Option<String>,
) -> RegistryResult<Option<Response>> {
    let from = match from {
        Some(from) => match named_mount_source(state, headers, name, &from).await? {
            Some(from) => from,
            None => return Ok(None),
        },
        // Chosen among repositories the caller may read, whatever its token names.
        None => match automatic_mount_source(state, headers, name, digest).await? {
            Some(from) => from,
            None => return Ok(None),
        },
    };
    let _publishing = publishing(state).await?;
    let Some(size) = state.meta.repository_blob(from.as_str(), digest).await? else {
        return Ok(None);
    };
    if state.store.stat(digest).await?.is_none() {
        tracing::error!(%digest, "blob is in metadata but its bytes are missing; not mounting");
        return Ok(None);
    }
    state
        .meta
        .link_blob(name.as_str(), digest, size, now_ms())
        .await?;
    Ok(Some(blob_created(state, headers, name, digest)?))
}

/// The `from` of a mount, if the request's token may pull from it.
async fn named_mount_source(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    from: &str,
) -> RegistryResult<Option<RepoName>> {
    let Ok(from) = RepoName::parse(from) else {
        return Ok(None);
    };
    if crate::access::token_grants(state, headers, from.as_str(), Action::Pull) {
        return Ok(Some(from));
    }
    // The token does not cover the source. When a token for it would be granted, say
    // so, as the reference registry does, so the client asks for one and the mount
    // succeeds; otherwise fall back to an upload, revealing nothing.
    if may_pull(state, headers, from.as_str()).await? {
        return Err(crate::access::mount_challenge(
            state,
            headers,
            name.as_str(),
            from.as_str(),
        ));
    }
    Ok(None)
}

/// How many repositories holding a blob a mount without `from` looks at.
const AUTOMATIC_MOUNT_CANDIDATES: u32 = 20;

/// A repository to mount `digest` from when the client named none (the OCI
/// distribution spec's automatic content discovery): one the caller may pull from
/// that holds the blob, looking first in the target's own top-level namespace. A
/// blob held only where the caller may not read stays unseen: the client gets an
/// ordinary upload session, as for a blob that does not exist.
async fn automatic_mount_source(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    digest: &Digest,
) -> RegistryResult<Option<RepoName>> {
    let namespace = name.as_str().split('/').next().unwrap_or_default();
    let candidates = state
        .meta
        .repositories_with_blob(digest, &format!("{namespace}/"), AUTOMATIC_MOUNT_CANDIDATES)
        .await?;
    for candidate in candidates {
        if candidate == name.as_str() {
            // Already reachable here: "mounting" it just answers 201.
            return Ok(RepoName::parse(&candidate).ok());
        }
        if may_pull(state, headers, &candidate).await? {
            return Ok(RepoName::parse(&candidate).ok());
        }
    }
    Ok(None)
}

/// The push permission for a request on upload session `id` (see
/// [`crate::access::authorize_expired_session`]: an expired token of the session's
/// own principal may finish it).
async fn session_authorized(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
) -> RegistryResult<()> {
    let Err(refused) = authorize(state, headers, name.as_str(), Action::Push).await else {
        return Ok(());
    };
    let upload = state.meta.upload(id).await?;
    crate::access::authorize_expired_session(
        state,
        headers,
        name.as_str(),
        upload.as_ref(),
        refused,
    )
    .await
}

/// Whether the caller's principal would be granted pull on `repository` if it asked.
async fn may_pull(state: &Shared, headers: &HeaderMap, repository: &str) -> RegistryResult<bool> {
    let Some(claims) = crate::access::claims(state, headers) else {
        return Ok(false);
    };
    let principal = crate::access::principal_from_claims(state, &claims).await?;
    let pull = berth_core::ActionSet::parse("pull");
    Ok(
        crate::auth::token::grant_repository(state, &principal, repository, pull)
            .await?
            .is_some(),
    )
}

pub async fn patch(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
    body: Body,
) -> RegistryResult<Response> {
    session_authorized(state, headers, name, id).await?;
    check_v2(state, headers, name.as_str(), V2Change::Upload).await?;
    claimed(state, id, async {
        let size = current(state, name, id).await?;
        if let Some((start, end)) = content_range(headers)? {
            let out_of_order = start != size;
            let length_mismatch =
                content_length(headers).is_some_and(|l| Some(l) != range_len(start, end));
            if out_of_order || length_mismatch {
                return Err(RegistryError::new(
                    Code::RangeInvalid,
                    if out_of_order {
                        format!("chunk starts at {start}, but the upload holds {size} bytes")
                    } else {
                        "Content-Range and Content-Length disagree".to_string()
                    },
                )
                .header("Location", location(state, headers, name, id))
                .header("Range", range_header(size))
                .header("Docker-Upload-UUID", id.to_string()));
            }
        }
        let size = append(state, headers, id, size, body).await?;
        session_response(state, headers, StatusCode::ACCEPTED, name, id, size)
    })
    .await
}

pub async fn finish_upload(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
    query: &str,
    body: Body,
) -> RegistryResult<Response> {
    session_authorized(state, headers, name, id).await?;
    check_v2(state, headers, name.as_str(), V2Change::Upload).await?;
    claimed(state, id, async {
        let q = query_pairs(query);
        let digest = query_get(&q, "digest").ok_or_else(|| {
            RegistryError::new(
                Code::DigestInvalid,
                "the digest query parameter is required to finish an upload",
            )
        })?;
        let digest = parse_digest(&digest)?;
        let mut size = current(state, name, id).await?;
        if let Some((start, _)) = content_range(headers)? {
            if start != size {
                return Err(RegistryError::new(
                    Code::RangeInvalid,
                    format!("final chunk starts at {start}, but the upload holds {size} bytes"),
                )
                .header("Range", range_header(size)));
            }
        }
        if content_length(headers) != Some(0) {
            size = append(state, headers, id, size, body).await?;
        }
        complete(state, headers, name, id, size, &digest).await
    })
    .await
}

pub async fn status(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
) -> RegistryResult<Response> {
    session_authorized(state, headers, name, id).await?;
    let size = current(state, name, id).await?;
    session_response(state, headers, StatusCode::NO_CONTENT, name, id, size)
}

pub async fn cancel(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    id: &str,
) -> RegistryResult<Response> {
    session_authorized(state, headers, name, id).await?;
    claimed(state, id, async {
        current(state, name, id).await?;
        discard(state, id).await?;
        finish(empty(StatusCode::NO_CONTENT))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("content-range", v.parse().unwrap());
        m
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(&HeaderMap::new()).unwrap(), None);
        assert_eq!(content_range(&h("0-9")).unwrap(), Some((0, 9)));
        assert_eq!(content_range(&h("bytes=10-19")).unwrap(), Some((10, 19)));
        assert_eq!(
            content_range(&h("bytes 10-19/100")).unwrap(),
            Some((10, 19))
        );
        assert!(content_range(&h("9-0")).is_err());
        assert!(content_range(&h("abc")).is_err());
    }
}
