//! Users: the caller (`GET /user`), listing and looking up users, and the
//! administrator's create, update, block and unblock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_meta::{User, UserState, UserUpdate, Window};

use super::schemas::{
    ApiErrorBody, CreateUser, InvalidOrRefused, InvalidRefusedOrMissing, PageParams, Refused,
    RefusedOrMissing, UpdateUser, User as UserBody, UserListParams,
};
use super::{find_user, ApiError, ApiResult, Caller, Pagination, Params, Path, View};
use crate::auth::secrets;
use crate::org::{self, OrgError};
use crate::state::{AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/user", get(current))
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(show).put(update))
        .route("/users/{id}/block", post(block))
        .route("/users/{id}/unblock", post(unblock))
}

#[utoipa::path(
    get,
    path = "/user",
    operation_id = "getCurrentUser",
    tag = "users",
    responses(
        (status = 200, description = "The signed-in user, with private fields", body = UserBody),
        Refused,
    )
)]
async fn current(caller: Caller, mut view: View) -> ApiResult<Response> {
    let user = caller.require_user()?;
    Ok(Json(view.user(user, true).await?).into_response())
}

/// Whether the caller sees a user's private fields (e-mail, admin flag).
fn sees_everything(caller: &Caller, user: &User) -> bool {
    caller.admin || caller.user().is_some_and(|c| c.id == user.id)
}

#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    tag = "users",
    params(
        PageParams,
        UserListParams,
    ),
    responses(
        (status = 200, description = "Users; others than administrators see active users only, and private fields only of themself", body = [UserBody]),
        InvalidOrRefused,
    )
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    mut view: View,
    params: Params,
) -> ApiResult<Response> {
    let search = params.string("search")?;
    let (mut users, _) = state
        .meta
        .users(
            search.as_deref().filter(|s| !s.is_empty()),
            Window {
                offset: 0,
                limit: i64::MAX,
            },
        )
        .await?;
    if let Some(username) = params.string("username")? {
        users.retain(|u| u.username.eq_ignore_ascii_case(&username));
    }
    // Others see active users only, as GitLab hides blocked ones from non-admins.
    if !caller.admin {
        users.retain(|u| u.state == UserState::Active);
    }
    if params.bool("active")? == Some(true) {
        users.retain(|u| u.state == UserState::Active);
    }
    if params.bool("blocked")? == Some(true) {
        users.retain(|u| u.state == UserState::Blocked);
    }
    if params.bool("admins")? == Some(true) {
        users.retain(|u| u.admin);
    }
    match params.string("order_by")?.as_deref().unwrap_or("id") {
        "id" => users.sort_by_key(|u| u.id),
        "username" => users.sort_by_key(|u| u.username.to_ascii_lowercase()),
        "name" => users.sort_by_key(|u| u.name.to_ascii_lowercase()),
        "created_at" | "updated_at" | "last_activity_on" => {
            users.sort_by_key(|u| (u.created_at, u.id))
        }
        _ => return Err(ApiError::param("order_by does not have a valid value")),
    }
    match params.string("sort")?.as_deref().unwrap_or("desc") {
        "desc" => users.reverse(),
        "asc" => {}
        _ => return Err(ApiError::param("sort does not have a valid value")),
    }
    let (page, total) = pg.slice(users);
    let mut body = Vec::with_capacity(page.len());
    for u in page.iter() {
        body.push(view.user(u, sees_everything(&caller, u)).await?);
    }
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    get,
    path = "/users/{id}",
    operation_id = "getUser",
    tag = "users",
    params(
        ("id" = i64, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The user", body = UserBody),
        RefusedOrMissing,
    )
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user = find_user(&state, &id).await?;
    if user.state != UserState::Active && !caller.admin {
        return Err(ApiError::not_found("User"));
    }
    Ok(Json(view.user(&user, sees_everything(&caller, &user)).await?).into_response())
}

/// GitLab answers a taken username with 409 (not a validation error).
fn user_conflict(e: OrgError) -> ApiError {
    match e {
        OrgError::Conflict(m) => ApiError::conflict(m),
        other => other.into(),
    }
}

#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The new user", body = UserBody),
        InvalidOrRefused,
        (status = 409, description = "Already exists", body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    params: Params,
) -> ApiResult<Response> {
    let user = create_user(&state, &caller, &params).await?;
    Ok((StatusCode::CREATED, Json(view.user(&user, true).await?)).into_response())
}

/// Create a user (administrators; the REST API and the admin area).
pub(crate) async fn create_user(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<User> {
    caller.require_admin()?;
    new_user(state, params, true).await
}

/// An e-mail address has one `@` with something on both sides and no spaces
/// (GitLab's `email: is invalid` otherwise). Whether it receives mail is not checked.
fn check_email(email: Option<&str>) -> ApiResult<()> {
    let Some(e) = email else { return Ok(()) };
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation("email", "is invalid"))
    }
}

/// Create one's own account at `/users/sign_up` (when an administrator allows it):
/// never an administrator, and a password is required.
pub(crate) async fn sign_up(state: &AppState, params: &Params) -> ApiResult<User> {
    params.required_string("password")?;
    new_user(state, params, false).await
}

async fn new_user(state: &AppState, params: &Params, by_admin: bool) -> ApiResult<User> {
    let username = params.required_string("username")?;
    let name = params.required_string("name")?;
    let email = params.string("email")?.filter(|e| !e.trim().is_empty());
    check_email(email.as_deref())?;
    let random = by_admin
        && (params.bool("force_random_password")? == Some(true)
            || params.bool("reset_password")? == Some(true));
    let password = match params.string("password")? {
        Some(p) => Some(p),
        None if random => Some(secrets::generate_password()),
        None => None,
    };
    let admin = by_admin && params.bool("admin")?.unwrap_or(false);
    let user = org::create_user(
        state.meta.as_ref(),
        &username,
        &name,
        email,
        password.as_deref(),
        admin,
    )
    .await
    .map_err(user_conflict)?;
    if random {
        // Nobody knows a generated password: whoever resets it must choose their own.
        return require_password_change(state, &user).await;
    }
    Ok(user)
}

/// The user is asked to set a password of their own at the next sign-in (GitLab's
/// rule for a password an administrator chose or that was generated).
pub(crate) async fn require_password_change(state: &AppState, user: &User) -> ApiResult<User> {
    let update = UserUpdate {
        password_change_required: Some(true),
        ..Default::default()
    };
    state
        .meta
        .update_user(user.id, &update)
        .await?
        .ok_or_else(|| ApiError::not_found("User"))
}

#[utoipa::path(
    put,
    path = "/users/{id}",
    operation_id = "updateUser",
    tag = "users",
    params(
        ("id" = i64, Path, description = "The user's id"),
    ),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The updated user", body = UserBody),
        InvalidRefusedOrMissing,
    )
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let user = find_user(&state, &id).await?;
    let user = update_user(&state, &user, &params, true).await?;
    Ok(Json(view.user(&user, true).await?).into_response())
}

/// Change a user's name, e-mail, password and (when `as_admin`) admin flag: the REST
/// API's administrators, the admin area, and a user's own profile (`as_admin` false:
/// only name and e-mail are read). A new password ends the user's web sessions.
pub(crate) async fn update_user(
    state: &AppState,
    user: &User,
    params: &Params,
    as_admin: bool,
) -> ApiResult<User> {
    if let Some(username) = params.string("username")? {
        if username != user.username {
            return Err(ApiError::message(
                StatusCode::BAD_REQUEST,
                "username changes are handled by the namespace moves feature, not yet available",
            ));
        }
    }
    let password_hash = match params.string("password")?.filter(|_| as_admin) {
        Some(p) => Some(password_hash(&p)?),
        None => None,
    };
    let name = params.string("name")?;
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::validation("name", "can't be blank"));
    }
    let new_password = password_hash.is_some();
    let email = params.string("email")?;
    check_email(email.as_deref().filter(|e| !e.is_empty()))?;
    let update = UserUpdate {
        name,
        email,
        password_hash,
        admin: if as_admin {
            params.bool("admin")?
        } else {
            None
        },
        state: None,
        password_change_required: None,
    };
    let user = state
        .meta
        .update_user(user.id, &update)
        .await?
        .ok_or_else(|| ApiError::not_found("User"))?;
    if new_password {
        // Whoever knew the old password may be signed in with it: a new password
        // is often set precisely to shut them out.
        end_web_sessions(state, &user, "password changed").await?;
    }
    Ok(user)
}

pub(crate) async fn set_state(
    state: &AppState,
    caller: &Caller,
    id: &str,
    to: UserState,
) -> ApiResult<()> {
    caller.require_admin()?;
    let user = find_user(state, id).await?;
    state
        .meta
        .update_user(
            user.id,
            &UserUpdate {
                state: Some(to),
                ..Default::default()
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found("User"))?;
    if to == UserState::Blocked {
        // Sessions are refused while blocked anyway; ending them means unblocking
        // later does not bring back browsers signed in before the block.
        end_web_sessions(state, &user, "blocked").await?;
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/users/{id}/block",
    operation_id = "blockUser",
    tag = "users",
    params(
        ("id" = i64, Path, description = "The user's id"),
    ),
    responses(
        (status = 201, description = "Blocked (GitLab answers a bare `true`)", body = bool),
        RefusedOrMissing,
    )
)]
async fn block(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_state(&state, &caller, &id, UserState::Blocked).await?;
    // GitLab answers both with 201 and a bare `true`.
    Ok((StatusCode::CREATED, Json(true)).into_response())
}

#[utoipa::path(
    post,
    path = "/users/{id}/unblock",
    operation_id = "unblockUser",
    tag = "users",
    params(
        ("id" = i64, Path, description = "The user's id"),
    ),
    responses(
        (status = 201, description = "Unblocked (GitLab answers a bare `true`)", body = bool),
        RefusedOrMissing,
    )
)]
async fn unblock(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_state(&state, &caller, &id, UserState::Active).await?;
    Ok((StatusCode::CREATED, Json(true)).into_response())
}

/// The stored hash of a new password, refused when too short.
fn password_hash(password: &str) -> ApiResult<String> {
    if password.len() < 8 {
        return Err(ApiError::validation(
            "password",
            "is too short (minimum is 8 characters)",
        ));
    }
    secrets::hash_password(password).map_err(ApiError::internal)
}

/// A user's own new password (the password page): every other web session of theirs
/// ends, the one that changed it (`keep`, a session digest) stays.
pub(crate) async fn change_own_password(
    state: &AppState,
    user: &User,
    password: &str,
    keep: Option<&str>,
) -> ApiResult<()> {
    let update = UserUpdate {
        password_hash: Some(password_hash(password)?),
        password_change_required: Some(false),
        ..Default::default()
    };
    state
        .meta
        .update_user(user.id, &update)
        .await?
        .ok_or_else(|| ApiError::not_found("User"))?;
    let ended = state.meta.delete_user_web_sessions(user.id, keep).await?;
    tracing::info!(username = %user.username, ended, "password changed by its user; other web sessions ended");
    Ok(())
}

/// End every web session of `user` (an administrator acted on the account, so no
/// session of theirs made the change and none is kept).
async fn end_web_sessions(state: &AppState, user: &User, why: &str) -> ApiResult<()> {
    let ended = state.meta.delete_user_web_sessions(user.id, None).await?;
    tracing::info!(username = %user.username, user_id = user.id, ended, why, "ended web sessions");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_one_at_with_both_sides() {
        for ok in [None, Some("a@b"), Some("alice@example.com")] {
            assert!(check_email(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "a@b@c",
            "al ice@example.com",
            "alice@.example",
            "alice@example.",
        ] {
            let e = check_email(Some(bad)).unwrap_err();
            assert_eq!(
                e.problems(),
                [(Some("email".to_string()), "is invalid".to_string())],
                "{bad}"
            );
        }
    }
}
