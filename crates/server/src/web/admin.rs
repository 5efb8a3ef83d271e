//! The admin area (`/admin`, administrators only; 404 for everyone else, as for a
//! page that is not there): users (create, block and unblock, make admin), instance
//! settings (sign-up, cleanup throttling), storage per project, background work.
//! Also sign-up at `/users/sign_up`, when an administrator turned it on.
//! Every change goes through the REST API's functions.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_meta::{User, UserState, Window};
use minijinja::{context, Value};

use super::forms::{field_errors_in, Posted};
use super::pages::{human_size, when};
use super::Viewer;
use crate::api::{settings, users, ApiError, Params};
use crate::instance;
use crate::state::Shared;

/// Cleanup runs the dashboard lists.
const RECENT_RUNS: i64 = 10;

/// The viewer, if an administrator; the 404 page otherwise.
fn admin_only(viewer: &Viewer) -> Result<(), Response> {
    match &viewer.user {
        Some(u) if u.admin => Ok(()),
        _ => Err(viewer.error(StatusCode::NOT_FOUND)),
    }
}

/// A form posted by an administrator (404 for anyone else, as `admin_only`).
fn admin_post(
    viewer: &Viewer,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Posted, Response> {
    admin_only(viewer)?;
    viewer.posted(method, headers, body)
}

fn internal(viewer: &Viewer, e: impl Into<ApiError>) -> Response {
    viewer.error(e.into().status())
}

/// The dashboard: settings, storage and background work.
pub async fn dashboard(State(state): State<Shared>, viewer: Viewer) -> Response {
    if let Err(r) = admin_only(&viewer) {
        return r;
    }
    dashboard_page(&state, &viewer, StatusCode::OK, BTreeMap::new(), None).await
}

async fn dashboard_page(
    state: &Shared,
    viewer: &Viewer,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    input: Option<Value>,
) -> Response {
    let meta = state.meta.as_ref();
    let limits = match instance::cleanup_limits(meta, state.settings.cleanup).await {
        Ok(l) => l,
        Err(e) => return internal(viewer, e),
    };
    let signup = match instance::signup_enabled(meta).await {
        Ok(s) => s,
        Err(e) => return internal(viewer, e),
    };
    let can_create_group = match instance::can_create_group(meta).await {
        Ok(s) => s,
        Err(e) => return internal(viewer, e),
    };
    let token_minutes = match instance::token_ttl(meta, state.settings.token_ttl).await {
        Ok(t) => t.as_secs() / 60,
        Err(e) => return internal(viewer, e),
    };
    let projects = match meta.projects(None).await {
        Ok(p) => p,
        Err(e) => return internal(viewer, e),
    };
    let ids: Vec<i64> = projects.iter().map(|p| p.id).collect();
    let by_id = match meta.project_registry_sizes(&ids).await {
        Ok(s) => s,
        Err(e) => return internal(viewer, e),
    };
    let mut sizes: Vec<(String, i64)> = projects
        .iter()
        .map(|p| (p.full_path.clone(), by_id.get(&p.id).copied().unwrap_or(0)))
        .collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = sizes.iter().map(|s| s.1).max().unwrap_or(0).max(1);
    let total: i64 = sizes.iter().map(|s| s.1).sum();
    let storage: Vec<Value> = sizes
        .iter()
        .map(|(path, size)| {
            context! {
                path => path.clone(),
                url => format!("/{path}"),
                size => human_size(*size),
                percent => (*size as f64 * 100.0 / max as f64).round() as i64,
            }
        })
        .collect();
    // The same by top-level namespace (a group with its subgroups, or a user's own),
    // as GitLab sums a group's registry: the deduplicated sizes of its projects.
    let mut by_namespace: BTreeMap<String, i64> = BTreeMap::new();
    for (path, size) in &sizes {
        let top = path.split('/').next().unwrap_or(path).to_string();
        *by_namespace.entry(top).or_default() += size;
    }
    let mut by_namespace: Vec<(String, i64)> = by_namespace.into_iter().collect();
    by_namespace.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let ns_max = by_namespace.iter().map(|s| s.1).max().unwrap_or(0).max(1);
    let namespace_storage: Vec<Value> = by_namespace
        .iter()
        .map(|(path, size)| {
            context! {
                path => path.clone(),
                size => human_size(*size),
                percent => (*size as f64 * 100.0 / ns_max as f64).round() as i64,
            }
        })
        .collect();
    let (manifest_reviews, blob_reviews) = match meta.review_queue_lengths().await {
        Ok(x) => x,
        Err(e) => return internal(viewer, e),
    };
    let cleanup_queue = match meta.cleanup_queue(1000).await {
        Ok(q) => q.len(),
        Err(e) => return internal(viewer, e),
    };
    let runs: Vec<Value> = match meta.recent_cleanup_runs(RECENT_RUNS).await {
        Ok(runs) => runs
            .iter()
            .map(|r| {
                let status = if r.repositories_running > 0 {
                    "running"
                } else if r.repositories_waiting > 0 {
                    "waiting"
                } else {
                    "finished"
                };
                context! {
                    id => r.id,
                    project => r.project_path.clone(),
                    url => format!("/{}/-/settings/packages_and_registries", r.project_path),
                    reason => r.reason.clone(),
                    when => when(r.started_at),
                    tags_deleted => r.tags_deleted,
                    status => status,
                }
            })
            .collect(),
        Err(e) => return internal(viewer, e),
    };
    let now = crate::state::now_ms();
    let gc_freed = |since: i64| async move {
        meta.gc_freed_since(since).await.map(|f| {
            context! {
                manifests => f.manifests,
                blobs => f.blobs,
                bytes => human_size(f.bytes),
            }
        })
    };
    let gc_day = match gc_freed(now - 24 * 3600 * 1000).await {
        Ok(f) => f,
        Err(e) => return internal(viewer, e),
    };
    let gc_total = match gc_freed(0).await {
        Ok(f) => f,
        Err(e) => return internal(viewer, e),
    };
    let (users, users_total) = match meta
        .users(
            None,
            Window {
                offset: 0,
                limit: 1,
            },
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return internal(viewer, e),
    };
    drop(users);
    let input = input.unwrap_or_else(|| {
        context! {
            signup_enabled => signup,
            can_create_group => can_create_group,
            worker_capacity => limits.worker_capacity.to_string(),
            delete_timeout => limits.delete_timeout_secs.to_string(),
            max_list_size => limits.max_list_size.to_string(),
            token_expiry => token_minutes.to_string(),
        }
    });
    viewer.render(
        status,
        "admin.html",
        context! {
            title => viewer.lang.text("admin_area"),
            section => "dashboard",
            counts => context! { users => users_total, projects => projects.len() },
            input => input,
            storage => storage,
            namespace_storage => namespace_storage,
            storage_total => human_size(total),
            manifest_reviews => manifest_reviews,
            blob_reviews => blob_reviews,
            cleanup_queue => cleanup_queue,
            runs => runs,
            gc_day => gc_day,
            gc_total => gc_total,
            errors => errors,
            notice => viewer.notice(),
        },
    )
}

pub async fn save_settings(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match admin_post(&viewer, &method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut params = Params::default();
    // Checkboxes: an unticked box is not posted at all.
    for name in ["can_create_group", "signup_enabled"] {
        params.set(
            name,
            if form.get(name) == "true" {
                "true"
            } else {
                "false"
            },
        );
    }
    for (field, key) in [
        (
            "worker_capacity",
            "container_registry_expiration_policies_worker_capacity",
        ),
        (
            "delete_timeout",
            "container_registry_delete_tags_service_timeout",
        ),
        (
            "max_list_size",
            "container_registry_cleanup_tags_service_max_list_size",
        ),
    ] {
        params.set(key, form.get(field).trim());
    }
    // The token lifetime is stored only when changed: a configured one shorter than a
    // minute shows as 0 and must not stop the other settings from being saved.
    let shown = match instance::token_ttl(state.meta.as_ref(), state.settings.token_ttl).await {
        Ok(t) => (t.as_secs() / 60).to_string(),
        Err(e) => return internal(&viewer, e),
    };
    if form.get("token_expiry").trim() != shown {
        params.set(
            "container_registry_token_expire_delay",
            form.get("token_expiry").trim(),
        );
    }
    match settings::update_settings(&state, &viewer.caller, &params).await {
        Ok(_) => viewer.redirect("/admin?notice=settings_saved"),
        Err(e) => {
            // The API names its parameters; the page's fields are shorter.
            let errors = field_errors_in(&e, viewer.lang)
                .into_iter()
                .map(|(k, v)| {
                    let k = match k.as_str() {
                        "container_registry_expiration_policies_worker_capacity" => {
                            "worker_capacity".to_string()
                        }
                        "container_registry_delete_tags_service_timeout" => {
                            "delete_timeout".to_string()
                        }
                        "container_registry_cleanup_tags_service_max_list_size" => {
                            "max_list_size".to_string()
                        }
                        "container_registry_token_expire_delay" => "token_expiry".to_string(),
                        _ => k,
                    };
                    (k, v)
                })
                .collect();
            let input = context! {
                signup_enabled => form.get("signup_enabled") == "true",
                can_create_group => form.get("can_create_group") == "true",
                worker_capacity => form.get("worker_capacity"),
                delete_timeout => form.get("delete_timeout"),
                max_list_size => form.get("max_list_size"),
                token_expiry => form.get("token_expiry"),
            };
            dashboard_page(&state, &viewer, e.status(), errors, Some(input)).await
        }
    }
}

async fn users_page(
    state: &Shared,
    viewer: &Viewer,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    input: Value,
) -> Response {
    let (list, _) = match state
        .meta
        .users(
            None,
            Window {
                offset: 0,
                limit: 1000,
            },
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return internal(viewer, e),
    };
    let me = viewer.user.as_ref().map(|u| u.id);
    let rows: Vec<Value> = list
        .iter()
        .map(|u| {
            context! {
                id => u.id,
                username => u.username.clone(),
                name => u.name.clone(),
                email => u.email.clone(),
                admin => u.admin,
                blocked => u.state == UserState::Blocked,
                created => when(u.created_at),
                is_me => me == Some(u.id),
                url => format!("/admin/users/{}", u.id),
                edit_url => format!("/admin/users/{}/edit", u.username),
            }
        })
        .collect();
    viewer.render(
        status,
        "admin_users.html",
        context! {
            title => viewer.lang.text("admin_users"),
            section => "users",
            users => rows,
            errors => errors,
            input => input,
            notice => viewer.notice(),
        },
    )
}

pub async fn user_list(State(state): State<Shared>, viewer: Viewer) -> Response {
    if let Err(r) = admin_only(&viewer) {
        return r;
    }
    users_page(
        &state,
        &viewer,
        StatusCode::OK,
        BTreeMap::new(),
        Value::from(()),
    )
    .await
}

pub async fn create_user(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match admin_post(&viewer, &method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match users::create_user(&state, &viewer.caller, &form.params).await {
        Ok(u) => {
            tracing::info!(username = %u.username, "user created in the admin area");
            // A password the administrator chose is changed at the first sign-in.
            if u.password_hash.is_some() {
                if let Err(e) = users::require_password_change(&state, &u).await {
                    return viewer.error(e.status());
                }
            }
            viewer.redirect("/admin/users?notice=user_created")
        }
        Err(e) => {
            let mut errors = field_errors_in(&e, viewer.lang);
            if e.status() == StatusCode::CONFLICT {
                if let Some(m) = errors.remove("form") {
                    errors.insert("username".into(), m);
                }
            }
            let input = context! {
                username => form.get("username"),
                name => form.get("name"),
                email => form.get("email"),
                admin => form.get("admin") == "true",
            };
            users_page(&state, &viewer, e.status(), errors, input).await
        }
    }
}

/// Block, unblock, make admin or not, set a password (`action=…`).
pub async fn change_user(
    State(state): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match admin_post(&viewer, &method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let user = match crate::api::find_user(&state, &id).await {
        Ok(u) => u,
        Err(e) => return viewer.error(e.status()),
    };
    let mut params = Params::default();
    let result = match form.get("action") {
        "block" => users::set_state(&state, &viewer.caller, &id, UserState::Blocked).await,
        "unblock" => users::set_state(&state, &viewer.caller, &id, UserState::Active).await,
        "make_admin" | "revoke_admin" => {
            params.set(
                "admin",
                if form.get("action") == "make_admin" {
                    "true"
                } else {
                    "false"
                },
            );
            users::update_user(&state, &user, &params, true)
                .await
                .map(|_| ())
        }
        "password" => {
            params.set("password", form.get("password"));
            match users::update_user(&state, &user, &params, true).await {
                Ok(u) => users::require_password_change(&state, &u).await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        _ => Err(ApiError::param("action does not have a valid value")),
    };
    match result {
        Ok(()) => viewer.redirect("/admin/users?notice=user_updated"),
        Err(e) => {
            let mut errors = field_errors_in(&e, viewer.lang);
            errors.insert("user".into(), user.username.clone());
            users_page(&state, &viewer, e.status(), errors, Value::from(())).await
        }
    }
}

/// The user `/admin/users/<username>/edit` names (404 page otherwise).
async fn user_named(state: &Shared, viewer: &Viewer, username: &str) -> Result<User, Response> {
    match state.meta.user_by_username(username).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(viewer.error(StatusCode::NOT_FOUND)),
        Err(e) => Err(internal(viewer, e)),
    }
}

fn edit_user_form(
    viewer: &Viewer,
    user: &User,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    name: &str,
    email: &str,
) -> Response {
    viewer.render(
        status,
        "admin_user_edit.html",
        context! {
            title => viewer.lang.text("admin_user_edit_title").replace("{username}", &user.username),
            section => "users",
            edited => context! {
                username => user.username.clone(),
                admin => user.admin,
                blocked => user.state == UserState::Blocked,
            },
            action => format!("/admin/users/{}/edit", user.username),
            name => name,
            email => email,
            errors => errors,
        },
    )
}

/// `/admin/users/<username>/edit`: an administrator changes a user's name and e-mail.
pub async fn edit_user(
    State(state): State<Shared>,
    viewer: Viewer,
    Path(username): Path<String>,
) -> Response {
    if let Err(r) = admin_only(&viewer) {
        return r;
    }
    let user = match user_named(&state, &viewer, &username).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    edit_user_form(
        &viewer,
        &user,
        StatusCode::OK,
        BTreeMap::new(),
        &user.name,
        user.email.as_deref().unwrap_or(""),
    )
}

pub async fn save_user(
    State(state): State<Shared>,
    viewer: Viewer,
    Path(username): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match admin_post(&viewer, &method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let user = match user_named(&state, &viewer, &username).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    // Only these two fields: a blank name is refused, a blank e-mail clears it.
    let mut params = Params::default();
    params.set("name", form.get("name"));
    params.set("email", form.get("email").trim());
    match users::update_user(&state, &user, &params, true).await {
        Ok(u) => {
            tracing::info!(username = %u.username, "user edited in the admin area");
            viewer.redirect("/admin/users?notice=user_updated")
        }
        Err(e) => edit_user_form(
            &viewer,
            &user,
            e.status(),
            field_errors_in(&e, viewer.lang),
            form.get("name"),
            form.get("email"),
        ),
    }
}

/// `/users/sign_up`: 404 unless an administrator turned sign-up on.
pub async fn sign_up_page(State(state): State<Shared>, viewer: Viewer) -> Response {
    match instance::signup_enabled(state.meta.as_ref()).await {
        Ok(true) => {}
        Ok(false) => return viewer.error_page(StatusCode::NOT_FOUND),
        Err(e) => return internal(&viewer, e),
    }
    if viewer.user.is_some() {
        return viewer.redirect("/");
    }
    sign_up_form(&viewer, StatusCode::OK, BTreeMap::new(), Value::from(()))
}

fn sign_up_form(
    viewer: &Viewer,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    input: Value,
) -> Response {
    viewer.render(
        status,
        "sign_up.html",
        context! {
            title => viewer.lang.text("sign_up_title"),
            errors => errors,
            input => input,
        },
    )
}

pub async fn sign_up(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match instance::signup_enabled(state.meta.as_ref()).await {
        Ok(true) => {}
        Ok(false) => return viewer.error_page(StatusCode::NOT_FOUND),
        Err(e) => return internal(&viewer, e),
    }
    let form = match viewer.posted(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match users::sign_up(&state, &form.params).await {
        Ok(u) => {
            tracing::info!(username = %u.username, "signed up");
            viewer.redirect("/users/sign_in?notice=signed_up")
        }
        Err(e) => {
            let mut errors = field_errors_in(&e, viewer.lang);
            if e.status() == StatusCode::CONFLICT {
                if let Some(m) = errors.remove("form") {
                    errors.insert("username".into(), m);
                }
            }
            let input = context! {
                username => form.get("username"),
                name => form.get("name"),
                email => form.get("email"),
            };
            sign_up_form(&viewer, e.status(), errors, input)
        }
    }
}
