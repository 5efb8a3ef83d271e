//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is a digest,
//! as an OCI index, optionally filtered by `artifactType`.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{media, Digest, RepoName};
use serde_json::{json, Map, Value};

use super::{query_get, query_pairs};
use crate::access::{authorize, Action};
use crate::error::RegistryResult;
use crate::state::Shared;

pub async fn list(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    subject: &Digest,
    query: &str,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Pull).await?;
    let q = query_pairs(query);
    let filter = query_get(&q, "artifactType").filter(|t| !t.is_empty());
    let rows = state
        .meta
        .referrers(name.as_str(), subject, filter.as_deref())
        .await?;
    let manifests: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), json!(r.media_type));
            d.insert("digest".into(), json!(r.digest));
            d.insert("size".into(), json!(r.size));
            if let Some(t) = r.artifact_type {
                d.insert("artifactType".into(), json!(t));
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                d.insert("annotations".into(), a);
            }
            Value::Object(d)
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = (
        StatusCode::OK,
        [("Content-Type", media::OCI_INDEX)],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    if filter.is_some() {
        resp.headers_mut().insert(
            "OCI-Filters-Applied",
            axum::http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
