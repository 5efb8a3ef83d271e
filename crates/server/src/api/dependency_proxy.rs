//! A group's dependency proxy: its settings (with what its cache holds) and purging
//! its cache, at GitLab's paths.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_core::AccessLevel;
use berth_meta::ProxySettings;
use serde::Serialize;
use utoipa::ToSchema;

use super::schemas::{IdOrPath, InvalidRefusedOrMissing, RefusedOrMissing};
use super::{find_group, ApiError, ApiResult, Caller, Params, Path};
use crate::state::{AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/groups/{id}/dependency_proxy/settings",
            get(show).put(update),
        )
        .route("/groups/{id}/dependency_proxy/cache", delete(purge))
}

/// A group's dependency proxy settings, and what its cache holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyProxySettings {
    /// Whether the group's dependency proxy serves pulls.
    pub enabled: bool,
    /// Whether items not pulled within `ttl_days` are removed.
    pub ttl_policy_enabled: bool,
    /// Days an item stays without being pulled (GitLab's default: 90).
    pub ttl_days: i64,
    /// Cached manifests (by tag or digest).
    pub manifests_count: i64,
    /// Cached blobs.
    pub blobs_count: i64,
    /// Bytes of the cached blobs.
    pub size: i64,
}

/// What a purge removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyProxyPurge {
    pub manifests_removed: i64,
    pub blobs_removed: i64,
    /// Bytes of blobs no longer referenced by anything, deleted from storage (blobs
    /// still used elsewhere stay).
    pub bytes_freed: u64,
}

async fn body(state: &AppState, ns: i64) -> ApiResult<DependencyProxySettings> {
    let s = state.meta.proxy_settings(ns).await?;
    let usage = state.meta.proxy_usage(ns).await?;
    Ok(DependencyProxySettings {
        enabled: s.enabled,
        ttl_policy_enabled: s.ttl_policy_enabled,
        ttl_days: s.ttl_days,
        manifests_count: usage.manifests,
        blobs_count: usage.blobs,
        size: usage.blob_bytes,
    })
}

#[utoipa::path(
    get,
    path = "/groups/{id}/dependency_proxy/settings",
    operation_id = "getGroupDependencyProxySettings",
    tag = "dependency_proxy",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
    ),
    responses(
        (status = 200, description = "The settings and the cache's contents (Reporter or higher)", body = DependencyProxySettings),
        RefusedOrMissing,
    )
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    caller
        .require_group_level(&state, &g, AccessLevel::Reporter)
        .await?;
    Ok(Json(body(&state, g.id).await?).into_response())
}

#[utoipa::path(
    put,
    path = "/groups/{id}/dependency_proxy/settings",
    operation_id = "updateGroupDependencyProxySettings",
    tag = "dependency_proxy",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        ("enabled" = Option<bool>, Query, description = "Turn the group's dependency proxy on or off"),
        ("ttl_policy_enabled" = Option<bool>, Query, description = "Remove items not pulled within ttl_days"),
        ("ttl_days" = Option<i64>, Query, description = "Days, at least 1"),
    ),
    responses(
        (status = 200, description = "The new settings (Maintainer or higher)", body = DependencyProxySettings),
        InvalidRefusedOrMissing,
    )
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    caller
        .require_group_level(&state, &g, AccessLevel::Maintainer)
        .await?;
    let old = state.meta.proxy_settings(g.id).await?;
    let ttl_days = params.int("ttl_days")?.unwrap_or(old.ttl_days);
    if ttl_days < 1 {
        return Err(ApiError::validation("ttl_days", "must be greater than 0"));
    }
    let new = ProxySettings {
        enabled: params.bool("enabled")?.unwrap_or(old.enabled),
        ttl_policy_enabled: params
            .bool("ttl_policy_enabled")?
            .unwrap_or(old.ttl_policy_enabled),
        ttl_days,
    };
    state.meta.set_proxy_settings(g.id, &new).await?;
    Ok(Json(body(&state, g.id).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/groups/{id}/dependency_proxy/cache",
    operation_id = "purgeGroupDependencyProxyCache",
    tag = "dependency_proxy",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
    ),
    responses(
        (status = 202, description = "The cache was emptied (Owner)", body = DependencyProxyPurge),
        RefusedOrMissing,
    )
)]
async fn purge(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    caller
        .require_group_level(&state, &g, AccessLevel::Owner)
        .await?;
    let (p, bytes) = crate::proxy::cache::purge(&state, g.id, None)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(group = %g.full_path, manifests = p.removed.manifests, blobs = p.removed.blobs, bytes_freed = bytes, "dependency proxy cache purged");
    Ok((
        StatusCode::ACCEPTED,
        Json(DependencyProxyPurge {
            manifests_removed: p.removed.manifests,
            blobs_removed: p.removed.blobs,
            bytes_freed: bytes,
        }),
    )
        .into_response())
}
