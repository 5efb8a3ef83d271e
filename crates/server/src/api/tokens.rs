//! Personal access tokens (create for a user or for oneself, list, look at, revoke,
//! rotate) and deploy tokens of projects and groups. Secrets appear in a response
//! only when they are created or rotated.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_core::AccessLevel;
use berth_meta::{DeployToken, PersonalToken, Source};

use super::schemas::{
    CreateDeployToken, CreatePersonalAccessToken, DeployToken as DeployTokenBody,
    DeployTokenListParams, IdOrPath, InvalidOrRefused, InvalidRefusedOrMissing, PageParams,
    PersonalAccessToken, PersonalTokenListParams, RefusedOrMissing, RotatePersonalAccessToken,
};
use super::{
    find_group, find_project, find_user, numeric_id, ApiError, ApiResult, Caller, Kind, Pagination,
    Params, Path, View,
};
use crate::auth::{date_expired, today, Principal, Via};
use crate::org::{self, DEPLOY_SCOPES, PAT_SCOPES};
use crate::state::{now_ms, AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/users/{user_id}/personal_access_tokens",
            post(create_for_user),
        )
        .route("/user/personal_access_tokens", post(create_for_self))
        .route("/personal_access_tokens", get(list_personal))
        .route(
            "/personal_access_tokens/self",
            get(show_self).delete(revoke_self),
        )
        .route("/personal_access_tokens/self/rotate", post(rotate_self))
        .route(
            "/personal_access_tokens/{id}",
            get(show_personal).delete(revoke_personal),
        )
        .route("/personal_access_tokens/{id}/rotate", post(rotate_personal))
        .route(
            "/projects/{id}/deploy_tokens",
            get(project::list).post(project::create),
        )
        .route(
            "/projects/{id}/deploy_tokens/{token_id}",
            get(project::show).delete(project::delete),
        )
        .route(
            "/groups/{id}/deploy_tokens",
            get(group::list).post(group::create),
        )
        .route(
            "/groups/{id}/deploy_tokens/{token_id}",
            get(group::show).delete(group::delete),
        )
        .route("/deploy_tokens", get(deploy_list_all))
}

// ---------------------------------------------------------------------------
// Personal access tokens
// ---------------------------------------------------------------------------

/// Scopes a user may give a token they create for themself.
fn self_service_scope(s: &str) -> bool {
    PAT_SCOPES.contains(&s) && s != "sudo" && s != "admin_mode"
}

/// `YYYY-MM-DD` of `days` from now (UTC).
fn days_from_now(days: u64) -> String {
    let t = SystemTime::now() + Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .take(10)
        .collect()
}

async fn create_personal(
    state: &AppState,
    user_id: i64,
    params: &Params,
    allowed: fn(&str) -> bool,
) -> ApiResult<(PersonalToken, String)> {
    let name = params.required_string("name")?;
    let scopes = params
        .list("scopes")?
        .ok_or_else(|| ApiError::param("scopes is missing"))?;
    if scopes.is_empty() {
        return Err(ApiError::param("scopes is empty"));
    }
    if scopes.iter().any(|s| !allowed(s)) {
        return Err(ApiError::param("scopes does not have a valid value"));
    }
    let expires_at = params.date("expires_at")?;
    if expires_at.as_deref().is_some_and(|d| d <= today().as_str()) {
        return Err(ApiError::validation("expires_at", "must be in the future"));
    }
    let description = params.string("description")?.unwrap_or_default();
    Ok(org::create_personal_token(
        state.meta.as_ref(),
        user_id,
        &name,
        &scopes,
        expires_at.as_deref(),
        &description,
    )
    .await?)
}

fn created_personal(view: &View, (token, secret): (PersonalToken, String)) -> Response {
    (
        StatusCode::CREATED,
        Json(view.personal_token(&token, Some(&secret))),
    )
        .into_response()
}

/// GitLab's default lifetime of a token made in the browser, in days.
pub(crate) const PAT_DEFAULT_DAYS: u64 = 30;
/// GitLab's longest lifetime of a token a user makes for themself, in days.
pub(crate) const PAT_MAX_DAYS: u64 = 365;

/// The default and the latest expiry date of a new token of one's own.
pub(crate) fn own_token_expiry_range() -> (String, String) {
    (days_from_now(PAT_DEFAULT_DAYS), days_from_now(PAT_MAX_DAYS))
}

/// A token the caller creates for themself (the REST API and the tokens page), at
/// most [`PAT_MAX_DAYS`] ahead, as GitLab limits them.
pub(crate) async fn create_own_personal(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<(PersonalToken, String)> {
    let user = caller.require_user()?;
    let (_, max) = own_token_expiry_range();
    if params.date("expires_at")?.is_some_and(|d| d > max) {
        return Err(ApiError::validation(
            "expires_at",
            format!("must be before {}", days_from_now(PAT_MAX_DAYS + 1)),
        ));
    }
    create_personal(state, user.id, params, self_service_scope).await
}

#[utoipa::path(
    post,
    path = "/users/{user_id}/personal_access_tokens",
    operation_id = "createPersonalAccessTokenForUser",
    tag = "tokens",
    params(
        ("user_id" = i64, Path, description = "The user's id"),
    ),
    request_body = CreatePersonalAccessToken,
    responses(
        (status = 201, description = "The new token, with its secret (administrators)", body = PersonalAccessToken),
        InvalidRefusedOrMissing,
    )
)]
async fn create_for_user(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path(user_id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user = find_user(&state, &user_id).await?;
    let created = create_personal(&state, user.id, &params, |s| PAT_SCOPES.contains(&s)).await?;
    Ok(created_personal(&view, created))
}

#[utoipa::path(
    post,
    path = "/user/personal_access_tokens",
    operation_id = "createPersonalAccessToken",
    tag = "tokens",
    request_body = CreatePersonalAccessToken,
    responses(
        (status = 201, description = "The new token, with its secret", body = PersonalAccessToken),
        InvalidOrRefused,
    )
)]
async fn create_for_self(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    params: Params,
) -> ApiResult<Response> {
    let created = create_own_personal(&state, &caller, &params).await?;
    Ok(created_personal(&view, created))
}

#[utoipa::path(
    get,
    path = "/personal_access_tokens",
    operation_id = "listPersonalAccessTokens",
    tag = "tokens",
    params(
        PageParams,
        PersonalTokenListParams,
    ),
    responses(
        (status = 200, description = "Tokens (administrators: anyone's)", body = [PersonalAccessToken]),
        InvalidOrRefused,
    )
)]
async fn list_personal(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    view: View,
    params: Params,
) -> ApiResult<Response> {
    let me = caller.require_user()?;
    let wanted = params.int("user_id")?;
    let owner = if caller.admin {
        wanted
    } else if wanted.is_some_and(|u| u != me.id) {
        return Err(ApiError::unauthorized());
    } else {
        Some(me.id)
    };
    let mut tokens = state.meta.personal_tokens(owner).await?;
    let today = today();
    let active = |t: &PersonalToken| !t.revoked && !date_expired(t.expires_at.as_deref(), &today);
    match params.string("state")?.as_deref() {
        None | Some("") => {}
        Some("active") => tokens.retain(|t| active(t)),
        Some("inactive") => tokens.retain(|t| !active(t)),
        Some(_) => return Err(ApiError::param("state does not have a valid value")),
    }
    if let Some(revoked) = params.bool("revoked")? {
        tokens.retain(|t| t.revoked == revoked);
    }
    if let Some(search) = params.string("search")?.filter(|s| !s.is_empty()) {
        let search = search.to_ascii_lowercase();
        tokens.retain(|t| t.name.to_ascii_lowercase().contains(&search));
    }
    let (page, total) = pg.slice(tokens);
    let body: Vec<_> = page.iter().map(|t| view.personal_token(t, None)).collect();
    Ok(pg.respond(total, body))
}

/// The token the caller authenticated with; GitLab's 400 for any other kind.
fn own_token(caller: &Caller) -> ApiResult<&PersonalToken> {
    match &caller.principal {
        Principal::User {
            via: Via::PersonalToken(t),
            ..
        } => Ok(t),
        Principal::Anonymous => Err(ApiError::unauthorized()),
        _ => Err(ApiError::bad_request(
            "This endpoint requires token type to be a personal access token",
        )),
    }
}

/// A token the caller may manage: their own, or any for an administrator. GitLab
/// tells only administrators that a token does not exist; others get 401.
async fn managed_token(state: &AppState, caller: &Caller, id: &str) -> ApiResult<PersonalToken> {
    let me = caller.require_user()?;
    let token = match numeric_id(id) {
        Some(n) => state.meta.personal_token(n).await?,
        None => None,
    };
    match token {
        Some(t) if caller.admin || t.user_id == me.id => Ok(t),
        None if caller.admin => Err(ApiError::not_found_plain()),
        _ => Err(ApiError::unauthorized()),
    }
}

#[utoipa::path(
    get,
    path = "/personal_access_tokens/self",
    operation_id = "getOwnPersonalAccessToken",
    tag = "tokens",
    responses(
        (status = 200, description = "The token the request was made with", body = PersonalAccessToken),
        InvalidOrRefused,
    )
)]
async fn show_self(caller: Caller, view: View) -> ApiResult<Response> {
    let t = own_token(&caller)?;
    Ok(Json(view.personal_token(t, None)).into_response())
}

#[utoipa::path(
    get,
    path = "/personal_access_tokens/{id}",
    operation_id = "getPersonalAccessToken",
    tag = "tokens",
    params(
        ("id" = i64, Path, description = "The token's id"),
    ),
    responses(
        (status = 200, description = "The token", body = PersonalAccessToken),
        RefusedOrMissing,
    )
)]
async fn show_personal(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = managed_token(&state, &caller, &id).await?;
    Ok(Json(view.personal_token(&t, None)).into_response())
}

async fn revoke(state: &AppState, t: &PersonalToken) -> ApiResult<Response> {
    state.meta.revoke_personal_token(t.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    delete,
    path = "/personal_access_tokens/self",
    operation_id = "revokeOwnPersonalAccessToken",
    tag = "tokens",
    responses(
        (status = 204, description = "Revoked"),
        InvalidOrRefused,
    )
)]
async fn revoke_self(State(state): State<Shared>, caller: Caller) -> ApiResult<Response> {
    let t = own_token(&caller)?.clone();
    revoke(&state, &t).await
}

#[utoipa::path(
    delete,
    path = "/personal_access_tokens/{id}",
    operation_id = "revokePersonalAccessToken",
    tag = "tokens",
    params(
        ("id" = i64, Path, description = "The token's id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        InvalidRefusedOrMissing,
    )
)]
async fn revoke_personal(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    revoke_personal_token(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revoke token `id`: the caller's own, or anyone's for an administrator.
pub(crate) async fn revoke_personal_token(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<()> {
    let me = caller.require_user()?;
    let token = match numeric_id(id) {
        Some(n) => state.meta.personal_token(n).await?,
        None => None,
    }
    .ok_or_else(ApiError::record_not_found)?;
    if !caller.admin && token.user_id != me.id {
        // GitLab's revoke service refuses, answered as a bare 400.
        return Err(ApiError::message(
            StatusCode::BAD_REQUEST,
            "400 Bad request",
        ));
    }
    revoke(state, &token).await.map(|_| ())
}

/// Revoke `old` and create its successor with the same name, description and
/// scopes, expiring on `expires_at` or a week from today.
async fn rotate(
    state: &AppState,
    view: &View,
    old: &PersonalToken,
    params: &Params,
) -> ApiResult<Response> {
    let today = today();
    if old.revoked {
        return Err(ApiError::bad_request("Token already revoked"));
    }
    if date_expired(old.expires_at.as_deref(), &today) {
        return Err(ApiError::bad_request("Token already expired"));
    }
    let expires_at = match params.date("expires_at")? {
        Some(d) if d <= today => {
            return Err(ApiError::bad_request(
                "Expiration date must be in the future",
            ))
        }
        Some(d) => d,
        None => days_from_now(7),
    };
    let (token, secret) = org::create_personal_token(
        state.meta.as_ref(),
        old.user_id,
        &old.name,
        &old.scopes,
        Some(&expires_at),
        &old.description,
    )
    .await?;
    if !state.meta.revoke_personal_token(old.id).await? {
        // Someone revoked it meanwhile: the new token must not outlive that.
        state.meta.revoke_personal_token(token.id).await?;
        return Err(ApiError::bad_request("Token already revoked"));
    }
    Ok(Json(view.personal_token(&token, Some(&secret))).into_response())
}

#[utoipa::path(
    post,
    path = "/personal_access_tokens/self/rotate",
    operation_id = "rotateOwnPersonalAccessToken",
    tag = "tokens",
    request_body = Option<RotatePersonalAccessToken>,
    responses(
        (status = 200, description = "The successor, with its secret; the old token is revoked", body = PersonalAccessToken),
        InvalidOrRefused,
    )
)]
async fn rotate_self(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    params: Params,
) -> ApiResult<Response> {
    let t = own_token(&caller)?.clone();
    rotate(&state, &view, &t, &params).await
}

#[utoipa::path(
    post,
    path = "/personal_access_tokens/{id}/rotate",
    operation_id = "rotatePersonalAccessToken",
    tag = "tokens",
    params(
        ("id" = i64, Path, description = "The token's id"),
    ),
    request_body = Option<RotatePersonalAccessToken>,
    responses(
        (status = 200, description = "The successor, with its secret; the old token is revoked", body = PersonalAccessToken),
        InvalidRefusedOrMissing,
    )
)]
async fn rotate_personal(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let t = managed_token(&state, &caller, &id).await?;
    rotate(&state, &view, &t, &params).await
}

// ---------------------------------------------------------------------------
// Deploy tokens
// ---------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An ISO-8601 date (`2030-01-31`, midnight UTC) or date-time (`2030-01-31T12:00:00Z`,
/// with optional fraction and `Z` or `±HH:MM` offset) as Unix milliseconds.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let date = org::check_date("expires_at", s.get(..10)?).ok()?;
    let y: i64 = date[0..4].parse().ok()?;
    let mo: i64 = date[5..7].parse().ok()?;
    let d: i64 = date[8..10].parse().ok()?;
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(day_ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if rest.len() > 6 && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-') {
        let (c, off) = rest.split_at(rest.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        if off.as_bytes().get(3) != Some(&b':') {
            return None;
        }
        (c, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let h: i64 = parts[0].parse().ok()?;
    let mi: i64 = parts[1].parse().ok()?;
    let sec: i64 = parts
        .get(2)
        .map(|x| x.parse())
        .transpose()
        .ok()?
        .unwrap_or(0);
    if h > 23 || mi > 59 || sec > 60 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    Some(day_ms + ((h * 60 + mi - offset_min) * 60 + sec) * 1000 + ms)
}

/// Where a deploy token belongs, with the caller's right to manage it there.
pub(crate) async fn deploy_source(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    write: bool,
) -> ApiResult<Source> {
    caller.require_user()?;
    if let Kind::Project = kind {
        let p = find_project(state, caller, id).await?;
        caller
            .require_project_level(state, &p, AccessLevel::Maintainer)
            .await?;
        Ok(Source::Project(p.id))
    } else {
        let g = find_group(state, caller, id).await?;
        let min = if write {
            AccessLevel::Owner
        } else {
            AccessLevel::Maintainer
        };
        caller.require_group_level(state, &g, min).await?;
        Ok(Source::Namespace(g.id))
    }
}

/// Deploy tokens as listed: deleted (revoked) ones are gone, as in GitLab; `active`
/// leaves out expired ones; `scopes` keeps those with any of the given scopes.
fn filter_deploy(mut tokens: Vec<DeployToken>, params: &Params) -> ApiResult<Vec<DeployToken>> {
    tokens.retain(|t| !t.revoked);
    if params.bool("active")? == Some(true) {
        let now = now_ms();
        tokens.retain(|t| t.expires_at.is_none_or(|e| e > now));
    }
    if let Some(scopes) = params.list("scopes")?.filter(|s| !s.is_empty()) {
        tokens.retain(|t| t.scopes.iter().any(|s| scopes.contains(s)));
    }
    Ok(tokens)
}

fn respond_deploy(pg: &Pagination, view: &View, tokens: Vec<DeployToken>) -> Response {
    let (page, total) = pg.slice(tokens);
    let body: Vec<_> = page.iter().map(|t| view.deploy_token(t, None)).collect();
    pg.respond(total, body)
}

async fn deploy_list(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    pg: &Pagination,
    view: &View,
    params: &Params,
) -> ApiResult<Response> {
    let tokens = deploy_tokens_of(state, caller, kind, id, params).await?;
    Ok(respond_deploy(pg, view, tokens))
}

/// The live deploy tokens of a project or group the caller may see them of.
pub(crate) async fn deploy_tokens_of(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    params: &Params,
) -> ApiResult<Vec<DeployToken>> {
    let source = deploy_source(state, caller, kind, id, false).await?;
    let tokens = state.meta.deploy_tokens(Some(source)).await?;
    filter_deploy(tokens, params)
}

async fn deploy_create(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    view: &View,
    params: &Params,
) -> ApiResult<Response> {
    let (token, secret) = create_deploy_token(state, caller, kind, id, params).await?;
    Ok((
        StatusCode::CREATED,
        Json(view.deploy_token(&token, Some(&secret))),
    )
        .into_response())
}

/// Create a deploy token of a project or group (the REST API and the settings page).
pub(crate) async fn create_deploy_token(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    params: &Params,
) -> ApiResult<(DeployToken, String)> {
    let source = deploy_source(state, caller, kind, id, true).await?;
    let name = params.required_string("name")?;
    let scopes = params
        .list("scopes")?
        .ok_or_else(|| ApiError::param("scopes is missing"))?;
    if scopes.is_empty() {
        return Err(ApiError::param("scopes is empty"));
    }
    if scopes.iter().any(|s| !DEPLOY_SCOPES.contains(&s.as_str())) {
        return Err(ApiError::param("scopes does not have a valid value"));
    }
    let expires_at = match params
        .string("expires_at")?
        .filter(|s| !s.trim().is_empty())
    {
        Some(s) => {
            Some(parse_datetime_ms(&s).ok_or_else(|| ApiError::param("expires_at is invalid"))?)
        }
        None => None,
    };
    let username = params.string("username")?;
    Ok(org::create_deploy_token(
        state.meta.as_ref(),
        source,
        &name,
        username.as_deref(),
        &scopes,
        expires_at,
    )
    .await?)
}

/// A live deploy token of `source`, or GitLab's 404.
async fn deploy_token_of(
    state: &AppState,
    source: Source,
    token_id: &str,
) -> ApiResult<DeployToken> {
    let id = numeric_id(token_id).ok_or_else(ApiError::record_not_found)?;
    match state.meta.deploy_token(id).await? {
        Some(t) if t.source == source && !t.revoked => Ok(t),
        _ => Err(ApiError::record_not_found()),
    }
}

async fn deploy_show(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    token_id: &str,
    view: &View,
) -> ApiResult<Response> {
    let source = deploy_source(state, caller, kind, id, false).await?;
    let t = deploy_token_of(state, source, token_id).await?;
    Ok(Json(view.deploy_token(&t, None)).into_response())
}

async fn deploy_delete(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    token_id: &str,
) -> ApiResult<Response> {
    revoke_deploy_token(state, caller, kind, id, token_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revoke a deploy token of a project or group (the REST API and the settings page).
pub(crate) async fn revoke_deploy_token(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    token_id: &str,
) -> ApiResult<()> {
    let source = deploy_source(state, caller, kind, id, true).await?;
    let t = deploy_token_of(state, source, token_id).await?;
    state.meta.revoke_deploy_token(t.id).await?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/deploy_tokens",
    operation_id = "listAllDeployTokens",
    tag = "tokens",
    params(
        PageParams,
        DeployTokenListParams,
    ),
    responses(
        (status = 200, description = "Every live deploy token (administrators)", body = [DeployTokenBody]),
        InvalidOrRefused,
    )
)]
async fn deploy_list_all(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    view: View,
    params: Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let tokens = state.meta.deploy_tokens(None).await?;
    Ok(respond_deploy(&pg, &view, filter_deploy(tokens, &params)?))
}

/// The route adapters, written once and expanded for projects and for groups so the
/// two variants cannot drift; each `utoipa::path` documents its own variant.
macro_rules! deploy_token_routes {
    ($module:ident, $kind:expr, $plural:literal, $title:literal, $owner:literal) => {
        pub(crate) mod $module {
            use super::*;

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/deploy_tokens"),
                operation_id = concat!("list", $title, "DeployTokens"),
                tag = "tokens",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    PageParams,
                    DeployTokenListParams,
                ),
                responses(
                    (status = 200, description = "Live deploy tokens", body = [DeployTokenBody]),
                    InvalidRefusedOrMissing,
                )
            )]
            pub(crate) async fn list(
                State(s): State<Shared>,
                c: Caller,
                pg: Pagination,
                v: View,
                Path(id): Path<String>,
                p: Params,
            ) -> ApiResult<Response> {
                deploy_list(&s, &c, $kind, &id, &pg, &v, &p).await
            }

            #[utoipa::path(
                post,
                path = concat!("/", $plural, "/{id}/deploy_tokens"),
                operation_id = concat!("create", $title, "DeployToken"),
                tag = "tokens",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                ),
                request_body = CreateDeployToken,
                responses(
                    (status = 201, description = "The new token, with its secret", body = DeployTokenBody),
                    InvalidRefusedOrMissing,
                )
            )]
            pub(crate) async fn create(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path(id): Path<String>,
                p: Params,
            ) -> ApiResult<Response> {
                deploy_create(&s, &c, $kind, &id, &v, &p).await
            }

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/deploy_tokens/{token_id}"),
                operation_id = concat!("get", $title, "DeployToken"),
                tag = "tokens",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("token_id" = i64, Path, description = "The deploy token's id"),
                ),
                responses(
                    (status = 200, description = "The token", body = DeployTokenBody),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn show(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path((id, t)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                deploy_show(&s, &c, $kind, &id, &t, &v).await
            }

            #[utoipa::path(
                delete,
                path = concat!("/", $plural, "/{id}/deploy_tokens/{token_id}"),
                operation_id = concat!("delete", $title, "DeployToken"),
                tag = "tokens",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("token_id" = i64, Path, description = "The deploy token's id"),
                ),
                responses(
                    (status = 204, description = "Revoked"),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn delete(
                State(s): State<Shared>,
                c: Caller,
                Path((id, t)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                deploy_delete(&s, &c, $kind, &id, &t).await
            }
        }
    };
}

deploy_token_routes!(project, Kind::Project, "projects", "Project", "project's");
deploy_token_routes!(group, Kind::Group, "groups", "Group", "group's");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime_ms("1970-01-01"), Some(0));
        assert_eq!(
            parse_datetime_ms("2019-01-10T13:38:57.391Z"),
            Some(1_547_127_537_391)
        );
        assert_eq!(
            parse_datetime_ms("2019-01-10T13:38:57Z"),
            Some(1_547_127_537_000)
        );
        assert_eq!(
            parse_datetime_ms("2019-01-10T15:38:57.391+02:00"),
            Some(1_547_127_537_391)
        );
        assert_eq!(
            parse_datetime_ms("2019-01-10 13:38"),
            Some(1_547_127_480_000)
        );
        for bad in [
            "2019-13-01",
            "tomorrow",
            "2019-01-10T25:00:00Z",
            "2019-01-10X",
        ] {
            assert_eq!(parse_datetime_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn self_service_scopes() {
        assert!(self_service_scope("api"));
        assert!(self_service_scope("read_registry"));
        assert!(!self_service_scope("sudo"));
        assert!(!self_service_scope("admin_mode"));
        assert!(!self_service_scope("bogus"));
    }
}
