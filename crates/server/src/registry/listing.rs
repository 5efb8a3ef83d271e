//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: lexically ordered, paged with
//! `n` and `last`, and a `Link` header when more remain.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;

use super::{query_get, query_pairs};
use std::collections::HashMap;

use berth_core::{allowed_actions, ProjectFacts};

use crate::access::{authenticated, authorize, principal_from_claims, Action};
use crate::auth::jwt::Claims;
use crate::auth::{credential_with, project_roles_for};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::Shared;

/// Without `n`, a tags list returns everything; a catalog returns at most this.
const CATALOG_DEFAULT: u32 = 1000;
pub(super) const MAX_PAGE: u32 = 100_000;

pub(super) struct Page {
    pub(super) n: Option<u32>,
    pub(super) last: Option<String>,
}

pub(super) fn page(query: &str) -> RegistryResult<Page> {
    let q = query_pairs(query);
    let n = match query_get(&q, "n") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            RegistryError::new(
                Code::PaginationNumberInvalid,
                format!("n must be a non-negative integer, got {v:?}"),
            )
        })?),
    };
    Ok(Page {
        n: n.map(|n| n.min(MAX_PAGE)),
        last: query_get(&q, "last").filter(|l| !l.is_empty()),
    })
}

/// Fetch one more than asked to learn whether a next page exists.
fn split_page(mut items: Vec<String>, n: u32) -> (Vec<String>, bool) {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    (items, more)
}

fn with_link(body: serde_json::Value, next: Option<String>) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(url) = next {
        if let Ok(v) = format!("<{url}>; rel=\"next\"").parse() {
            resp.headers_mut().insert("Link", v);
        }
    }
    resp
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn tags(
    state: &Shared,
    headers: &HeaderMap,
    name: &RepoName,
    query: &str,
) -> RegistryResult<Response> {
    authorize(state, headers, name.as_str(), Action::Pull).await?;
    let p = page(query)?;
    if state.meta.repository(name.as_str()).await?.is_none() {
        return Err(
            RegistryError::new(Code::NameUnknown, "repository name not known to registry")
                .detail(serde_json::json!({ "name": name.as_str() })),
        );
    }
    let limit = p.n.unwrap_or(u32::MAX - 1);
    let items = if limit == 0 {
        Vec::new()
    } else {
        state
            .meta
            .tags(name.as_str(), p.last.as_deref(), limit + 1)
            .await?
    };
    let (items, more) = split_page(items, limit);
    let next = match (more, items.last(), p.n) {
        (true, Some(last), Some(n)) => Some(format!(
            "{}/v2/{}/tags/list?n={}&last={}",
            state.base_url(headers),
            name,
            n,
            encode(last)
        )),
        _ => None,
    };
    Ok(with_link(
        serde_json::json!({ "name": name.as_str(), "tags": items }),
        next,
    ))
}

pub async fn catalog(state: &Shared, headers: &HeaderMap, query: &str) -> RegistryResult<Response> {
    let claims = authenticated(state, headers)?;
    let p = page(query)?;
    let n = p.n.unwrap_or(CATALOG_DEFAULT);
    let (items, more) = if n == 0 {
        (Vec::new(), false)
    } else if claims.has_catalog() {
        let items = state.meta.catalog(p.last.as_deref(), n + 1).await?;
        split_page(items, n)
    } else {
        visible_page(state, &claims, p.last, n).await?
    };
    let next = match (more, items.last()) {
        (true, Some(last)) => Some(format!(
            "{}/v2/_catalog?n={}&last={}",
            state.base_url(headers),
            n,
            encode(last)
        )),
        _ => None,
    };
    Ok(with_link(
        serde_json::json!({ "repositories": items }),
        next,
    ))
}

/// One page of the repositories the token's holder may pull, walking the catalog in
/// order and skipping the rest, so pages are full and `Link` is right.
async fn visible_page(
    state: &Shared,
    claims: &Claims,
    mut last: Option<String>,
    n: u32,
) -> RegistryResult<(Vec<String>, bool)> {
    let principal = principal_from_claims(state, claims).await?;
    let mut readable: HashMap<i64, bool> = HashMap::new();
    let mut out = Vec::new();
    loop {
        let batch = state
            .meta
            .catalog_with_projects(last.as_deref(), 500)
            .await?;
        let exhausted = batch.len() < 500;
        // Decide for the batch's new projects together: one projects query and one
        // roles query, not a few queries per project.
        let mut fresh: Vec<i64> = batch
            .iter()
            .filter_map(|(_, pid)| *pid)
            .filter(|pid| !readable.contains_key(pid))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if !fresh.is_empty() {
            let projects = state.meta.projects_by_ids(&fresh).await?;
            let roles = project_roles_for(state.meta.as_ref(), &principal, &fresh).await?;
            for pid in &fresh {
                readable.insert(*pid, false);
            }
            for project in &projects {
                let role = roles.get(&project.id).copied();
                let cred = credential_with(state.meta.as_ref(), &principal, project, role).await?;
                let facts = ProjectFacts {
                    visibility: project.visibility,
                    registry_access: project.registry_access,
                };
                readable.insert(project.id, allowed_actions(facts, &cred).pull);
            }
        }
        for (path, project_id) in batch {
            last = Some(path.clone());
            let Some(pid) = project_id else { continue };
            let ok = readable.get(&pid).copied().unwrap_or(false);
            if ok {
                if out.len() == n as usize {
                    return Ok((out, true));
                }
                out.push(path);
            }
        }
        if exhausted {
            return Ok((out, false));
        }
    }
}
