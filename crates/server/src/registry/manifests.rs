//! Manifest reads, pushes and deletes, by tag or by digest.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_meta::{ManifestRef, NewManifest};
use berth_oci::manifest::{self, ManifestError, MAX_MANIFEST_BYTES};
use berth_oci::{Digest, RepoName, Tag};

use super::{empty, finish, parse_digest};
use crate::access::{authorize, Action};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::protection::{check_v2, V2Change};
use crate::state::{now_ms, Shared};

pub(super) enum Reference {
    Tag(Tag),
    Digest(Digest),
}

pub(super) fn parse_reference(text: &str) -> RegistryResult<Reference> {
    if text.contains(':') {
        return parse_digest(text).map(Reference::Digest);
    }
    Tag::parse(text).map(Reference::Tag).map_err(|e| {
        RegistryError::new(Code::TagInvalid, e.to_string())
            .detail(serde_json::json!({ "tag": text }))
    })
}

fn manifest_unknown(reference: &str) -> RegistryError {
    RegistryError::new(Code::ManifestUnknown, "manifest unknown to registry")
        .detail(serde_json::json!({ "reference": reference }))
}

/// For reads and deletes an unusable reference simply names nothing.
fn lookup_reference(text: &str) -> RegistryResult<Reference> {
    parse_reference(text).map_err(|e| match e.code {
        Code::TagInvalid => manifest_unknown(text),
        _ => e,
    })
}

pub async fn get(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    reference: &str,
    with_body: bool,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Pull).await?;
    let r = lookup_reference(reference)?;
    let wanted = match &r {
        Reference::Tag(t) => ManifestRef::Tag(t.as_str()),
        Reference::Digest(d) => ManifestRef::Digest(d),
    };
    let m = state
        .meta
        .manifest(name.as_str(), wanted)
        .await?
        .ok_or_else(|| manifest_unknown(reference))?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", &m.media_type)
        .header("Content-Length", m.payload.len())
        .header("Docker-Content-Digest", m.digest.as_str())
        .header("ETag", format!("\"{}\"", m.digest));
    let body = if with_body {
        Body::from(m.payload)
    } else {
        Body::empty()
    };
    builder.body(body).map_err(RegistryError::internal)
}

fn invalid(e: ManifestError) -> RegistryError {
    let status = match e {
        ManifestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    RegistryError::new(Code::ManifestInvalid, format!("manifest invalid: {e}")).status(status)
}

pub async fn put(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    reference: &str,
    body: Body,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Push).await?;
    let r = parse_reference(reference)?;
    let payload = match axum::body::to_bytes(body, MAX_MANIFEST_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            // A length-limit error is the only kind that leaves a source error of this type.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                invalid(ManifestError::TooLarge(MAX_MANIFEST_BYTES + 1))
            } else {
                RegistryError::new(
                    Code::ManifestInvalid,
                    format!("reading the manifest failed: {e}"),
                )
            });
        }
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(content_type, &payload).map_err(invalid)?;

    let (digest, tag) = match r {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &payload);
            if actual != d {
                return Err(RegistryError::new(
                    Code::DigestInvalid,
                    format!("manifest has digest {actual}, not {d}"),
                ));
            }
            (d, None)
        }
        Reference::Tag(t) => (Digest::sha256_of(&payload), Some(t)),
    };

    let blobs: Vec<Digest> = parsed
        .config
        .iter()
        .chain(&parsed.layers)
        .filter(|d| !d.is_foreign())
        .map(|d| d.digest.clone())
        .collect();
    let image_created_at = match &parsed.config {
        Some(c) => image_created(state, c).await,
        None => None,
    };
    let total_size = parsed.layers.iter().map(|l| l.size.max(0)).sum();
    let record = NewManifest {
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        payload: payload.to_vec(),
        blobs,
        children: parsed.children.iter().map(|c| c.digest.clone()).collect(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        config: parsed.config.as_ref().map(|c| c.digest.clone()),
        artifact_type: parsed.referrer_artifact_type(),
        image_created_at,
        total_size,
        annotations: parsed
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok()),
    };
    let change = V2Change::Push {
        tag: tag.as_ref().map(|t| t.as_str()),
        digest: &digest,
    };
    let actor = crate::access::actor(state, headers);
    let mut expect = check_v2(state, headers, name.as_str(), change).await?.tag;
    // The check's view of the tag is made a condition of the write; when a concurrent
    // push changed the tag meanwhile, the check runs again on what it is now (and
    // refuses, naming the rule, when that now forbids this push). An immutable tag
    // settles after one change, so a few rounds always suffice.
    let mut rounds = 0;
    while !state
        .meta
        .put_manifest_if(
            name.as_str(),
            &record,
            tag.as_ref().map(|t| t.as_str()),
            expect.as_ref(),
            now_ms(),
            &actor,
        )
        .await?
    {
        rounds += 1;
        if rounds == MAX_CHECK_ROUNDS {
            return Err(RegistryError::new(
                Code::Denied,
                "the tag kept changing while this push was checked against its protection rules; push again",
            ));
        }
        let change = V2Change::Push {
            tag: tag.as_ref().map(|t| t.as_str()),
            digest: &digest,
        };
        expect = check_v2(state, headers, name.as_str(), change).await?.tag;
    }

    let mut resp = empty(StatusCode::CREATED)
        .header(
            "Location",
            format!(
                "{}/v2/{}/manifests/{}",
                state.base_url(headers),
                name,
                digest
            ),
        )
        .header("Docker-Content-Digest", digest.as_str());
    if let Some(subject) = &parsed.subject {
        resp = resp.header("OCI-Subject", subject.digest.as_str());
    }
    finish(resp)
}

/// How many times a push re-checks protection rules when the tag it decided on
/// changes under it before giving up.
const MAX_CHECK_ROUNDS: u32 = 4;

/// Image configs larger than this are not read for their creation time.
const MAX_CONFIG_READ: i64 = 1024 * 1024;

/// The `created` time of an image config (Unix ms), read from storage at push so
/// listings and cleanup policies never have to. Anything unreadable is simply unknown.
async fn image_created(state: &Shared, config: &berth_oci::Descriptor) -> Option<i64> {
    use futures::TryStreamExt;
    let is_image_config = matches!(
        config.media_type.as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    );
    if !is_image_config || config.size > MAX_CONFIG_READ {
        return None;
    }
    let read = state.store.open(&config.digest, None).await.ok()?;
    let chunks: Vec<bytes::Bytes> = read.body.try_collect().await.ok()?;
    let json: serde_json::Value = serde_json::from_slice(&chunks.concat()).ok()?;
    berth_core::cleanup::parse_rfc3339_ms(json.get("created")?.as_str()?)
}

pub async fn delete(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    reference: &str,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Delete).await?;
    let now = now_ms();
    let r = lookup_reference(reference)?;
    let change = match &r {
        Reference::Tag(t) => V2Change::DeleteTag(t.as_str()),
        Reference::Digest(d) => V2Change::DeleteManifest(d),
    };
    let checked = check_v2(state, headers, name.as_str(), change).await?;
    if matches!(r, Reference::Tag(_)) && checked.tag == Some(berth_meta::TagExpect::Absent) {
        // Not there when the rules were checked: deleting what a concurrent push
        // created since would skip its rules.
        return Err(manifest_unknown(reference));
    }
    let actor = crate::access::actor(state, headers);
    let found = match r {
        // OCI 1.1: deleting by tag removes only the tag.
        Reference::Tag(t) => {
            state
                .meta
                .delete_tag_by(name.as_str(), t.as_str(), now, &actor)
                .await?
        }
        Reference::Digest(d) => {
            // Deleted only with the tags the rules were checked for; a tag pushed
            // onto the manifest meanwhile is checked in another round.
            let mut tags = checked.manifest_tags;
            let mut rounds = 0;
            loop {
                let done = state
                    .meta
                    .delete_manifest_if(name.as_str(), &d, tags.as_deref(), now, &actor)
                    .await?;
                if let Some(found) = done {
                    break found;
                }
                rounds += 1;
                if rounds == MAX_CHECK_ROUNDS {
                    return Err(RegistryError::new(
                        Code::Denied,
                        "the manifest's tags kept changing while this delete was checked against their protection rules; delete again",
                    ));
                }
                tags = check_v2(state, headers, name.as_str(), V2Change::DeleteManifest(&d))
                    .await?
                    .manifest_tags;
            }
        }
    };
    if !found {
        return Err(manifest_unknown(reference));
    }
    finish(empty(StatusCode::ACCEPTED))
}
