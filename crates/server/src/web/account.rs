//! Your account, at GitLab's URLs: profile (name and e-mail), password (the current
//! one asked for; other sessions end), and personal access tokens (create, shown
//! once with the `docker login` line, list, revoke). Every change goes through the
//! REST API's own functions.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_meta::PersonalToken;
use minijinja::{context, Value};

use super::forms::{field_errors_in, Posted};
use super::pages::{registry_host, when};
use super::Viewer;
use crate::api::{tokens, users};
use crate::auth::{date_expired, today};
use crate::state::{now_ms, Shared};

/// Scopes offered on the tokens page (GitLab's, those that matter to a registry).
pub const PAGE_SCOPES: [&str; 4] = ["api", "read_api", "read_registry", "write_registry"];

fn profile_page(
    viewer: &Viewer,
    status: StatusCode,
    name: &str,
    email: &str,
    errors: BTreeMap<String, String>,
) -> Response {
    viewer.render(
        status,
        "account_profile.html",
        context! {
            title => viewer.lang.text("profile_title"),
            section => "profile",
            name => name,
            email => email,
            errors => errors,
            notice => viewer.notice(),
        },
    )
}

pub async fn profile(viewer: Viewer) -> Response {
    let user = match viewer.signed_in() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    profile_page(
        &viewer,
        StatusCode::OK,
        &user.name,
        user.email.as_deref().unwrap_or(""),
        BTreeMap::new(),
    )
}

pub async fn save_profile(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match viewer.signed_in() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let form: Posted = match viewer.posted(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut params = form.params.clone();
    // A blank name is refused (not skipped), a blank e-mail clears it.
    params.set("name", form.get("name"));
    params.set("email", form.get("email").trim());
    match users::update_user(&state, &user, &params, false).await {
        Ok(_) => viewer.redirect("/-/user_settings/profile?notice=profile_saved"),
        Err(e) => profile_page(
            &viewer,
            e.status(),
            form.get("name"),
            form.get("email"),
            field_errors_in(&e, viewer.lang),
        ),
    }
}

fn password_page(
    viewer: &Viewer,
    status: StatusCode,
    errors: BTreeMap<String, String>,
) -> Response {
    viewer.render(
        status,
        "account_password.html",
        context! {
            title => viewer.lang.text("password_title"),
            section => "password",
            errors => errors,
            notice => viewer.notice(),
        },
    )
}

pub async fn password(viewer: Viewer) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    password_page(&viewer, StatusCode::OK, BTreeMap::new())
}

/// A new password needs the current one (a session left open on a shared computer
/// must not take the account over); other sessions end, this one stays.
pub async fn change_password(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match viewer.signed_in() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let form = match viewer.posted(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = BTreeMap::new();
    let current_ok = match &user.password_hash {
        Some(h) => {
            state
                .login
                .passwords
                .verify(form.get("current_password"), h, now_ms())
                .await
        }
        None => false,
    };
    if !current_ok {
        errors.insert(
            "current_password".to_string(),
            viewer.lang.text("password_current_wrong"),
        );
    }
    if form.get("new_password") != form.get("password_confirmation") {
        errors.insert(
            "password_confirmation".to_string(),
            viewer.lang.text("password_mismatch"),
        );
    }
    if !errors.is_empty() {
        return password_page(&viewer, StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    match users::change_own_password(
        &state,
        &user,
        form.get("new_password"),
        viewer.session.as_deref(),
    )
    .await
    {
        Ok(()) => viewer.redirect("/-/user_settings/password/edit?notice=password_changed"),
        Err(e) => {
            let mut errors = field_errors_in(&e, viewer.lang);
            if let Some(p) = errors.remove("password") {
                errors.insert("new_password".into(), p);
            }
            password_page(&viewer, e.status(), errors)
        }
    }
}

fn token_row(viewer: &Viewer, t: &PersonalToken, today: &str) -> Value {
    let expired = date_expired(t.expires_at.as_deref(), today);
    context! {
        id => t.id,
        name => t.name.clone(),
        scopes => t.scopes.join(", "),
        created => when(t.created_at),
        last_used => t.last_used_at.map(when),
        expires => t.expires_at.clone(),
        state => if t.revoked { "revoked" } else if expired { "expired" } else { "active" },
        revoke_url => format!("/-/user_settings/personal_access_tokens/{}/revoke", t.id),
        revoke_confirm => viewer.lang.text("token_revoke_confirm").replace("{name}", &t.name),
    }
}

struct NewToken {
    name: String,
    scopes: Vec<String>,
    expires_at: String,
}

async fn tokens_page(
    state: &Shared,
    viewer: &Viewer,
    status: StatusCode,
    input: Option<NewToken>,
    created: Option<(PersonalToken, String)>,
    errors: BTreeMap<String, String>,
) -> Response {
    let Some(user) = viewer.user.as_ref() else {
        return viewer.error(StatusCode::NOT_FOUND);
    };
    let tokens = match state.meta.personal_tokens(Some(user.id)).await {
        Ok(t) => t,
        Err(e) => return viewer.error(crate::api::ApiError::from(e).status()),
    };
    let today = today();
    let (active, inactive): (Vec<_>, Vec<_>) = tokens
        .iter()
        .partition(|t| !t.revoked && !date_expired(t.expires_at.as_deref(), &today));
    let (default_expiry, max_expiry) = tokens::own_token_expiry_range();
    let input = input.unwrap_or(NewToken {
        name: String::new(),
        scopes: vec!["read_registry".into(), "write_registry".into()],
        expires_at: default_expiry,
    });
    let host = registry_host(viewer);
    let created = created.map(|(t, secret)| {
        context! {
            name => t.name.clone(),
            secret => secret.clone(),
            login => format!("docker login {host} -u {} -p {secret}", user.username),
            login_stdin => format!("echo {secret} | docker login {host} -u {} --password-stdin", user.username),
        }
    });
    viewer.render(
        status,
        "account_tokens.html",
        context! {
            title => viewer.lang.text("tokens_title"),
            section => "tokens",
            scopes => PAGE_SCOPES.to_vec(),
            input => context! {
                name => input.name,
                scopes => input.scopes,
                expires_at => input.expires_at,
            },
            min_expiry => today,
            max_expiry => max_expiry,
            created => created,
            active => active.iter().map(|t| token_row(viewer, t, &today)).collect::<Vec<_>>(),
            inactive => inactive.iter().map(|t| token_row(viewer, t, &today)).collect::<Vec<_>>(),
            errors => errors,
            notice => viewer.notice(),
        },
    )
}

pub async fn personal_tokens(
    State(state): State<Shared>,
    mut viewer: Viewer,
    headers: HeaderMap,
) -> Response {
    let user = match viewer.signed_in() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    // A token just created: shown with its secret, this once.
    let mut created = None;
    if let Some((id, secret)) = viewer.take_secret(&headers, "pat") {
        if let Ok(Some(t)) = state.meta.personal_token(id).await {
            if t.user_id == user.id {
                created = Some((t, secret));
            }
        }
    }
    let status = StatusCode::OK;
    tokens_page(&state, &viewer, status, None, created, BTreeMap::new()).await
}

/// Create a token; the page that answers shows its secret, the only time it is shown.
pub async fn create_token(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match viewer.signed_in_post(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let input = NewToken {
        name: form.get("name").to_string(),
        scopes: form.all("scopes[]"),
        expires_at: form.get("expires_at").to_string(),
    };
    match tokens::create_own_personal(&state, &viewer.caller, &form.params).await {
        Ok((token, secret)) => {
            tracing::info!(token = %token.name, "personal access token created in the browser");
            viewer.redirect_with_secret(
                "/-/user_settings/personal_access_tokens",
                "pat",
                token.id,
                &secret,
            )
        }
        Err(e) => {
            tokens_page(
                &state,
                &viewer,
                e.status(),
                Some(input),
                None,
                field_errors_in(&e, viewer.lang),
            )
            .await
        }
    }
}

pub async fn revoke_token(
    State(state): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = viewer.signed_in_post(&method, &headers, &body) {
        return r;
    }
    match tokens::revoke_personal_token(&state, &viewer.caller, &id).await {
        Ok(()) => viewer.redirect("/-/user_settings/personal_access_tokens?notice=token_revoked"),
        Err(e) => viewer.error(e.status()),
    }
}
