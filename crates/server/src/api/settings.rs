//! `GET`/`PUT /application/settings` (administrators): the container registry's
//! instance settings, with GitLab's names.

use super::schemas::{ApplicationSettings, InvalidOrRefused, Refused, UpdateApplicationSettings};
use super::{ApiError, ApiResult, Caller, Params};
use crate::cleanup::Limits;
use crate::instance;
use crate::state::{AppState, Shared};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub fn routes() -> Router<Shared> {
    Router::new().route("/application/settings", get(show).put(update))
}

fn render(state: &AppState, limits: Limits) -> Response {
    Json(ApplicationSettings {
        container_registry_expiration_policies_worker_capacity: limits.worker_capacity as u64,
        container_registry_delete_tags_service_timeout: limits.delete_timeout_secs,
        container_registry_cleanup_tags_service_max_list_size: limits.max_list_size as u64,
        container_registry_token_expire_delay: state.settings.token_ttl.as_secs() / 60,
    })
    .into_response()
}

#[utoipa::path(
    get,
    path = "/application/settings",
    operation_id = "getApplicationSettings",
    tag = "settings",
    responses(
        (status = 200, description = "The settings (administrators)", body = ApplicationSettings),
        Refused,
    )
)]
async fn show(State(state): State<Shared>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let limits = instance::cleanup_limits(state.meta.as_ref(), state.settings.cleanup).await?;
    Ok(render(&state, limits))
}

/// A setting that must be a whole number of at least 1.
fn positive(params: &Params, key: &str) -> ApiResult<Option<i64>> {
    match params.int(key)? {
        Some(n) if n < 1 => Err(ApiError::param(format!(
            "{key} must be greater than or equal to 1"
        ))),
        other => Ok(other),
    }
}

#[utoipa::path(
    put,
    path = "/application/settings",
    operation_id = "updateApplicationSettings",
    tag = "settings",
    request_body = UpdateApplicationSettings,
    responses(
        (status = 200, description = "The updated settings (administrators)", body = ApplicationSettings),
        InvalidOrRefused,
    )
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    params: Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let mut limits = instance::cleanup_limits(state.meta.as_ref(), state.settings.cleanup).await?;
    if let Some(n) = positive(
        &params,
        "container_registry_expiration_policies_worker_capacity",
    )? {
        limits.worker_capacity = n as usize;
    }
    if let Some(n) = positive(&params, "container_registry_delete_tags_service_timeout")? {
        limits.delete_timeout_secs = n as u64;
    }
    if let Some(n) = positive(
        &params,
        "container_registry_cleanup_tags_service_max_list_size",
    )? {
        limits.max_list_size = n as usize;
    }
    instance::set_cleanup_limits(state.meta.as_ref(), limits).await?;
    state.jobs.wake();
    Ok(render(&state, limits))
}
