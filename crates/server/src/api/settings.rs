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

async fn render(state: &AppState, limits: Limits) -> ApiResult<Response> {
    let signup_enabled = instance::signup_enabled(state.meta.as_ref()).await?;
    let can_create_group = instance::can_create_group(state.meta.as_ref()).await?;
    Ok(Json(ApplicationSettings {
        container_registry_expiration_policies_worker_capacity: limits.worker_capacity as u64,
        container_registry_delete_tags_service_timeout: limits.delete_timeout_secs,
        container_registry_cleanup_tags_service_max_list_size: limits.max_list_size as u64,
        container_registry_token_expire_delay: instance::token_ttl(
            state.meta.as_ref(),
            state.settings.token_ttl,
        )
        .await?
        .as_secs()
            / 60,
        signup_enabled,
        can_create_group,
    })
    .into_response())
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
    render(&state, limits).await
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
    let limits = update_settings(&state, &caller, &params).await?;
    render(&state, limits).await
}

/// Change the instance settings (administrators; the REST API and the admin area).
pub(crate) async fn update_settings(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<Limits> {
    caller.require_admin()?;
    let mut limits = instance::cleanup_limits(state.meta.as_ref(), state.settings.cleanup).await?;
    if let Some(n) = positive(
        params,
        "container_registry_expiration_policies_worker_capacity",
    )? {
        limits.worker_capacity = n as usize;
    }
    if let Some(n) = positive(params, "container_registry_delete_tags_service_timeout")? {
        limits.delete_timeout_secs = n as u64;
    }
    if let Some(n) = positive(
        params,
        "container_registry_cleanup_tags_service_max_list_size",
    )? {
        limits.max_list_size = n as usize;
    }
    let token_minutes = match positive(params, "container_registry_token_expire_delay")? {
        Some(n) if n as u64 > instance::MAX_TOKEN_MINUTES => {
            return Err(ApiError::param(format!(
                "container_registry_token_expire_delay must be less than or equal to {}",
                instance::MAX_TOKEN_MINUTES
            )))
        }
        other => other,
    };
    let signup = params.bool("signup_enabled")?;
    let create_group = params.bool("can_create_group")?;
    // Everything checked: now stored.
    if let Some(n) = token_minutes {
        instance::set_token_ttl_minutes(state.meta.as_ref(), n as u64).await?;
    }
    if let Some(on) = create_group {
        instance::set_can_create_group(state.meta.as_ref(), on).await?;
    }
    if let Some(on) = signup {
        instance::set_signup_enabled(state.meta.as_ref(), on).await?;
    }
    instance::set_cleanup_limits(state.meta.as_ref(), limits).await?;
    state.jobs.wake();
    Ok(limits)
}
