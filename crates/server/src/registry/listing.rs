//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: lexically ordered, paged with
//! `n` and `last`, and a `Link` header when more remain.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;

use super::{query_get, query_pairs};
use crate::access::{authorize, Action};
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::Shared;

/// Without `n`, a tags list returns everything; a catalog returns at most this.
const CATALOG_DEFAULT: u32 = 1000;
const MAX_PAGE: u32 = 100_000;

struct Page {
    n: Option<u32>,
    last: Option<String>,
}

fn page(query: &str) -> RegistryResult<Page> {
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
    authorize(state, headers, name.as_str(), Action::Pull)?;
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
    let p = page(query)?;
    let n = p.n.unwrap_or(CATALOG_DEFAULT);
    let items = if n == 0 {
        Vec::new()
    } else {
        state.meta.catalog(p.last.as_deref(), n + 1).await?
    };
    let (items, more) = split_page(items, n);
    // Listing is filtered per repository once permissions exist.
    let items: Vec<String> = items
        .into_iter()
        .filter(|r| authorize(state, headers, r, Action::Pull).is_ok())
        .collect();
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
