//! The web UI: server-rendered pages at GitLab's URLs (so bookmarks and habits carry
//! over), in English and Simplified Chinese, with one small script for copy buttons,
//! confirmation dialogs and the live cleanup preview. Templates, styles, script and
//! catalogs live in `web/` and are embedded at build time: no CDN, nothing fetched
//! at run time.
//!
//! Pages decide what a viewer may do with the same code as the REST API (`Caller`,
//! `registry_actions`, the shared delete and policy functions), so a button that is
//! not shown is also refused when its form is posted anyway.

// A page's early answer (sign in first, 404, a refused form) is a whole Response,
// returned once per request: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod account;
mod admin;
mod api_errors;
mod create;
mod dependency_proxy;
mod deploy_tokens;
mod forms;
mod general;
mod i18n;
mod members;
mod nav;
mod overview;
mod pages;
mod policy_errors;
mod session;

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_meta::{UserState, WebSession};
use minijinja::{context, Environment, Value};

pub use i18n::Lang;
pub use session::Viewer;

use crate::api::Kind;
use crate::auth::secrets;
use crate::state::{now_ms, Shared};
use session::{set_cookie, LANG_COOKIE, SESSION_COOKIE, SESSION_TTL_MS};

/// Every template, by the name pages render it with.
pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "dependency_proxy.html",
        include_str!("../../../../web/templates/dependency_proxy.html"),
    ),
    (
        "base.html",
        include_str!("../../../../web/templates/base.html"),
    ),
    (
        "macros.html",
        include_str!("../../../../web/templates/macros.html"),
    ),
    (
        "error.html",
        include_str!("../../../../web/templates/error.html"),
    ),
    (
        "sign_in.html",
        include_str!("../../../../web/templates/sign_in.html"),
    ),
    (
        "home.html",
        include_str!("../../../../web/templates/home.html"),
    ),
    (
        "registry.html",
        include_str!("../../../../web/templates/registry.html"),
    ),
    (
        "repository.html",
        include_str!("../../../../web/templates/repository.html"),
    ),
    (
        "tag.html",
        include_str!("../../../../web/templates/tag.html"),
    ),
    (
        "deleted.html",
        include_str!("../../../../web/templates/deleted.html"),
    ),
    (
        "settings.html",
        include_str!("../../../../web/templates/settings.html"),
    ),
    (
        "preview.html",
        include_str!("../../../../web/templates/preview.html"),
    ),
    (
        "account_nav.html",
        include_str!("../../../../web/templates/account_nav.html"),
    ),
    (
        "account_profile.html",
        include_str!("../../../../web/templates/account_profile.html"),
    ),
    (
        "account_password.html",
        include_str!("../../../../web/templates/account_password.html"),
    ),
    (
        "account_tokens.html",
        include_str!("../../../../web/templates/account_tokens.html"),
    ),
    (
        "new_group.html",
        include_str!("../../../../web/templates/new_group.html"),
    ),
    (
        "new_project.html",
        include_str!("../../../../web/templates/new_project.html"),
    ),
    (
        "sidebar.html",
        include_str!("../../../../web/templates/sidebar.html"),
    ),
    (
        "crumbs.html",
        include_str!("../../../../web/templates/crumbs.html"),
    ),
    (
        "members.html",
        include_str!("../../../../web/templates/members.html"),
    ),
    (
        "deploy_tokens.html",
        include_str!("../../../../web/templates/deploy_tokens.html"),
    ),
    (
        "project.html",
        include_str!("../../../../web/templates/project.html"),
    ),
    (
        "group.html",
        include_str!("../../../../web/templates/group.html"),
    ),
    (
        "user.html",
        include_str!("../../../../web/templates/user.html"),
    ),
    (
        "admin_nav.html",
        include_str!("../../../../web/templates/admin_nav.html"),
    ),
    (
        "admin.html",
        include_str!("../../../../web/templates/admin.html"),
    ),
    (
        "admin_users.html",
        include_str!("../../../../web/templates/admin_users.html"),
    ),
    (
        "project_edit.html",
        include_str!("../../../../web/templates/project_edit.html"),
    ),
    (
        "group_edit.html",
        include_str!("../../../../web/templates/group_edit.html"),
    ),
    (
        "move_confirm.html",
        include_str!("../../../../web/templates/move_confirm.html"),
    ),
    (
        "admin_user_edit.html",
        include_str!("../../../../web/templates/admin_user_edit.html"),
    ),
    (
        "sign_up.html",
        include_str!("../../../../web/templates/sign_up.html"),
    ),
];

const CSS: &str = include_str!("../../../../web/static/berth.css");
const JS: &str = include_str!("../../../../web/static/berth.js");

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(pages::home))
        .route("/users/sign_in", get(sign_in_page).post(sign_in))
        .route("/users/sign_out", post(sign_out))
        .route("/-/lang", get(switch_language))
        .route(
            "/-/user_settings/profile",
            get(account::profile).post(account::save_profile),
        )
        .route("/-/user_settings/password/edit", get(account::password))
        .route("/-/user_settings/password", post(account::change_password))
        .route(
            "/-/user_settings/personal_access_tokens",
            get(account::personal_tokens).post(account::create_token),
        )
        .route(
            "/-/user_settings/personal_access_tokens/{id}/revoke",
            post(account::revoke_token),
        )
        .route(
            "/groups/new",
            get(create::new_group).post(create::create_group),
        )
        .route("/admin", get(admin::dashboard))
        .route("/admin/application_settings", post(admin::save_settings))
        .route(
            "/admin/users",
            get(admin::user_list).post(admin::create_user),
        )
        .route("/admin/users/{id}", post(admin::change_user))
        .route(
            "/admin/users/{username}/edit",
            get(admin::edit_user).post(admin::save_user),
        )
        .route(
            "/users/sign_up",
            get(admin::sign_up_page).post(admin::sign_up),
        )
        .route(
            "/projects/new",
            get(create::new_project).post(create::create_project),
        )
        .route("/-/static/{file}", get(asset))
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Printing something undefined is an error (caught by tests), not a blank.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        // `"{n} tags" | fill(n=3)`: placeholders of translated texts; with
        // `one=t.<key>_one`, that text when n is 1 ("1 tag", not "1 tags").
        env.add_filter("fill", |text: String, kwargs: minijinja::value::Kwargs| {
            let n: Option<Value> = kwargs.get("n")?;
            let one: Option<String> = kwargs.get("one")?;
            let mut out = match (one, n.and_then(|n| i64::try_from(n).ok())) {
                (Some(one), Some(1)) => one,
                _ => text,
            };
            for key in kwargs.args() {
                if key == "one" {
                    continue;
                }
                let v: Value = kwargs.get(key)?;
                out = out.replace(&format!("{{{key}}}"), &v.to_string());
            }
            Ok::<_, minijinja::Error>(out)
        });
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        env
    })
}

/// A bare error for when even the viewer could not be read.
pub(crate) fn plain_error(status: StatusCode) -> Response {
    (status, status.canonical_reason().unwrap_or("error")).into_response()
}

impl Viewer {
    /// What every page's template sees.
    fn base_context(&self) -> Value {
        let user = self.user.as_ref().map(|u| {
            context! {
                username => u.username.clone(),
                name => u.name.clone(),
                admin => u.admin,
            }
        });
        let mut switch = form_urlencoded::Serializer::new(String::new());
        switch.append_pair("to", self.lang.other().code());
        switch.append_pair("back", &self.here);
        context! {
            t => Value::from_serialize(self.lang.catalog()),
            lang => self.lang.code(),
            switch_url => format!("/-/lang?{}", switch.finish()),
            user => user,
            csrf => self.csrf.clone(),
            here => self.here.clone(),
        }
    }

    /// Render `template` with the base context and `extra`.
    pub fn render(&self, status: StatusCode, template: &str, extra: Value) -> Response {
        let ctx = context! { ..extra, ..self.base_context() };
        let html = environment()
            .get_template(template)
            .and_then(|t| t.render(ctx));
        let resp = match html {
            Ok(html) => (
                status,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "rendering a page");
                plain_error(StatusCode::INTERNAL_SERVER_ERROR)
            }
        };
        let mut resp = self.finish(resp);
        resp.headers_mut().insert(
            header::CONTENT_LANGUAGE,
            header::HeaderValue::from_static(self.lang.code()),
        );
        resp.headers_mut()
            .insert("x-frame-options", header::HeaderValue::from_static("DENY"));
        // Everything a page uses comes from this server; nothing inline runs.
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                 base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
        resp
    }

    /// A readable error page in the viewer's language. Anonymous viewers of pages
    /// that may exist are sent to sign in first (GitLab does the same).
    pub fn error(&self, status: StatusCode) -> Response {
        if matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
            // Pages answer 404 for what the viewer may not see as for what is not
            // there; the log (not the viewer) gets to know it was a refusal or a miss.
            tracing::info!(
                status = status.as_u16(),
                viewer = self
                    .user
                    .as_ref()
                    .map(|u| u.username.as_str())
                    .unwrap_or("anonymous"),
                "page refused or not found"
            );
        }
        if self.user.is_none()
            && matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN)
            && !self.here.starts_with("/-/")
        {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("redirect_to", &self.here);
            return self
                .finish(Redirect::to(&format!("/users/sign_in?{}", q.finish())).into_response());
        }
        self.error_page(status)
    }

    /// A readable error page in the viewer's language.
    pub fn error_page(&self, status: StatusCode) -> Response {
        let (title, message) = match status {
            StatusCode::NOT_FOUND => ("error_404_title", "error_404_text"),
            StatusCode::FORBIDDEN => ("error_403_title", "error_403_text"),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                ("error_400_title", "error_400_text")
            }
            StatusCode::TOO_MANY_REQUESTS => ("error_429_title", "error_429_text"),
            _ => ("error_500_title", "error_500_text"),
        };
        self.render(
            status,
            "error.html",
            context! {
                title => self.lang.text(title),
                message => self.lang.text(message),
                status => status.as_u16(),
            },
        )
    }

    /// Redirect after a form (303, so a reload does not post again).
    pub fn redirect(&self, to: &str) -> Response {
        self.finish(Redirect::to(to).into_response())
    }
}

/// The one check of every redirect target a client chooses (`back`, `redirect_to`):
/// only a path on this site is followed, anything else goes to `/`.
///
/// Browsers drop tabs and newlines from URLs and read `\\` as `/`, so `/\t/evil`
/// and `/\\evil` are really `//evil`, another site; control characters would
/// not even fit in a `Location` header. The paths this site hands out are URIs
/// (always printable ASCII, spaces encoded), so anything else is refused whole
/// rather than cleaned up.
pub(crate) fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Form fields in order (a name may repeat, as the tag checkboxes do).
pub(crate) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "berth.css" => (CSS, "text/css; charset=utf-8"),
        "berth.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return plain_error(StatusCode::NOT_FOUND),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LangQuery {
    to: Option<String>,
    back: Option<String>,
}

/// Remember a language for a year and go back to the page it was chosen on.
async fn switch_language(viewer: Viewer, Query(q): Query<LangQuery>) -> Response {
    let lang = q.to.as_deref().and_then(Lang::parse).unwrap_or(viewer.lang);
    let mut resp = viewer.redirect(&local_path(q.back.as_deref()));
    if let Ok(v) = header::HeaderValue::from_str(&set_cookie(
        LANG_COOKIE,
        lang.code(),
        365 * 86_400,
        false,
        viewer.secure,
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    redirect_to: Option<String>,
    notice: Option<String>,
}

fn sign_in_form(
    viewer: &Viewer,
    status: StatusCode,
    username: &str,
    error: Option<String>,
    redirect_to: &str,
) -> Response {
    let extra = context! { signup => false, notice => Value::from(()) };
    sign_in_with(viewer, status, username, error, redirect_to, extra)
}

fn sign_in_with(
    viewer: &Viewer,
    status: StatusCode,
    username: &str,
    error: Option<String>,
    redirect_to: &str,
    extra: Value,
) -> Response {
    viewer.render(
        status,
        "sign_in.html",
        context! {
            title => viewer.lang.text("sign_in_title"),
            username => username,
            error => error,
            redirect_to => redirect_to,
            ..extra
        },
    )
}

async fn sign_in_page(
    State(state): State<Shared>,
    viewer: Viewer,
    Query(q): Query<SignInQuery>,
) -> Response {
    let back = local_path(q.redirect_to.as_deref());
    if viewer.user.is_some() {
        return viewer.redirect(&back);
    }
    let signup = crate::instance::signup_enabled(state.meta.as_ref())
        .await
        .unwrap_or(false);
    let notice = (q.notice.as_deref() == Some("signed_up")).then_some("signed_up");
    sign_in_with(
        &viewer,
        StatusCode::OK,
        "",
        None,
        &back,
        context! { signup => signup, notice => notice },
    )
}

/// Username and password only (tokens are for clients, not browsers), behind the same
/// failed-attempt limit as `/jwt/auth`.
async fn sign_in(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form_fields(&body);
    let back = local_path(field(&fields, "redirect_to"));
    if !viewer.csrf_ok(&method, &headers, field(&fields, "csrf_token")) {
        return viewer.error(StatusCode::FORBIDDEN);
    }
    let username = field(&fields, "username").unwrap_or("").trim().to_string();
    let password = field(&fields, "password").unwrap_or("");
    let now = now_ms();
    let guard = &state.login;
    let limiter = &guard.limiter;
    let meta = &*state.meta;
    let wait = match limiter
        .address_blocked(meta, &viewer.client_ip, now / 1000)
        .await
    {
        Some(wait) => Some(wait),
        None => limiter.password_blocked(meta, &username, now / 1000).await,
    };
    if let Some(wait) = wait {
        tracing::warn!(ip = %viewer.client_ip, username, wait, "web sign-in refused: too many failed attempts");
        let msg = viewer
            .lang
            .text("sign_in_rate_limited")
            .replace("{n}", &wait.to_string());
        return sign_in_form(
            &viewer,
            StatusCode::TOO_MANY_REQUESTS,
            &username,
            Some(msg),
            &back,
        );
    }
    let user = match state.meta.user_by_username(&username).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "sign-in lookup");
            return viewer.error(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let ok = match &user {
        Some(u) => match &u.password_hash {
            Some(h) => guard.passwords.verify(password, h, now).await,
            None => false,
        },
        None => {
            // Same work as a real check, so timing does not reveal which users exist.
            guard
                .passwords
                .verify(password, secrets::DUMMY_HASH, now)
                .await;
            false
        }
    };
    let user = match user {
        Some(u) if ok && u.state == UserState::Active => u,
        _ => {
            limiter
                .failed(meta, &viewer.client_ip, Some(&username), now / 1000)
                .await;
            tracing::warn!(ip = %viewer.client_ip, username, "failed web sign-in");
            let msg = viewer.lang.text("sign_in_invalid");
            return sign_in_form(
                &viewer,
                StatusCode::UNAUTHORIZED,
                &username,
                Some(msg),
                &back,
            );
        }
    };
    // A fresh id on every sign-in, so an id planted before cannot be used after.
    let id = format!("{}{}", secrets::generate("bs_"), secrets::generate(""));
    let session = WebSession {
        user_id: user.id,
        csrf_token: secrets::generate(""),
        created_at: now,
        expires_at: now + SESSION_TTL_MS,
    };
    if let Err(e) = state
        .meta
        .create_web_session(&secrets::digest(&id), &session)
        .await
    {
        tracing::error!(error = %e, "creating a web session");
        return viewer.error(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if let Err(e) = state.meta.delete_expired_web_sessions(now).await {
        tracing::warn!(error = %e, "forgetting expired web sessions");
    }
    if let Some(old) = &viewer.session {
        let _ = state.meta.delete_web_session(old).await;
    }
    tracing::info!(username = %user.username, "signed in to the web UI");
    // A password someone else chose: first a password of one's own.
    let to = if user.password_change_required {
        "/-/user_settings/password/edit?notice=password_required".to_string()
    } else {
        back
    };
    let mut resp = Redirect::to(&to).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        &id,
        SESSION_TTL_MS / 1000,
        true,
        viewer.secure,
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn sign_out(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form_fields(&body);
    if !viewer.csrf_ok(&method, &headers, field(&fields, "csrf_token")) {
        return viewer.error(StatusCode::FORBIDDEN);
    }
    if let Some(digest) = &viewer.session {
        if let Err(e) = state.meta.delete_web_session(digest).await {
            tracing::error!(error = %e, "ending a web session");
            return viewer.error(StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) =
        header::HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, true, viewer.secure))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Which page a path below `/` names. GitLab's URLs put fixed words after a path of
/// any depth, which axum's routes cannot express, so they are parsed here.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    GroupRegistry(String),
    DependencyProxy(String),
    ProjectRegistry(String),
    Repository(String, String),
    DeleteRepository(String, String),
    DeleteTags(String, String),
    DeletedTags(String, String),
    RestoreTag(String, String),
    Tag(String, String, String),
    RestoreRun(String),
    Settings(String),
    SettingsPreview(String),
    SettingsMatches(String),
    Members(Kind, String),
    Member(Kind, String, String),
    RepositorySettings(Kind, String),
    RevokeDeployToken(Kind, String, String),
    GroupOverview(String),
    /// `/<project>/edit`: general settings (else the overview of a project "edit").
    EditProject(String),
    /// `/groups/<group>/-/edit`.
    EditGroup(String),
    /// `/<path>`: a project, a group or a user namespace.
    Overview(String),
}

/// `<owner>/-/<what>[/<id>[/<verb>]]` for members and deploy tokens, of a project
/// (`rest` after `/`) or a group (`rest` after `/groups/`).
fn owned_route(kind: Kind, rest: &str) -> Option<Route> {
    let (owner, tail) = rest.split_once("/-/")?;
    if owner.is_empty() {
        return None;
    }
    let o = owner.to_string();
    let members = match kind {
        Kind::Project => "project_members",
        Kind::Group => "group_members",
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let segs: Vec<&str> = tail.split('/').collect();
    match segs.as_slice() {
        [m] if *m == members => Some(Route::Members(kind, o)),
        [m, id] if *m == members && numeric(id) => Some(Route::Member(kind, o, id.to_string())),
        ["settings", "repository"] => Some(Route::RepositorySettings(kind, o)),
        ["edit"] if kind == Kind::Group => Some(Route::EditGroup(o)),
        ["settings", "repository", "deploy_token", id, "revoke"] if numeric(id) => {
            Some(Route::RevokeDeployToken(kind, o, id.to_string()))
        }
        _ => None,
    }
}

fn route(path: &str) -> Option<Route> {
    let decoded: String = percent_decode(path)?;
    let path = decoded.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("/groups/") {
        if let Some(group) = rest.strip_suffix("/-/dependency_proxy") {
            return (!group.is_empty()).then(|| Route::DependencyProxy(group.to_string()));
        }
        if let Some(group) = rest.strip_suffix("/-/container_registries") {
            return (!group.is_empty()).then(|| Route::GroupRegistry(group.to_string()));
        }
        if rest.contains("/-/") {
            return owned_route(Kind::Group, rest);
        }
        return (!rest.is_empty()).then(|| Route::GroupOverview(rest.to_string()));
    }
    let path = path.strip_prefix('/')?;
    if let Some(r) = owned_route(Kind::Project, path) {
        return Some(r);
    }
    if let Some(p) = path.strip_suffix("/-/settings/packages_and_registries") {
        return Some(Route::Settings(p.to_string()));
    }
    if let Some(p) = path.strip_suffix("/-/settings/packages_and_registries/preview") {
        return Some(Route::SettingsPreview(p.to_string()));
    }
    if let Some(p) = path.strip_suffix("/-/settings/packages_and_registries/protection_matches") {
        return Some(Route::SettingsMatches(p.to_string()));
    }
    if let Some(p) = path.strip_suffix("/-/settings/packages_and_registries/restore_run") {
        return Some(Route::RestoreRun(p.to_string()));
    }
    let segs: Vec<&str> = path.split('/').collect();
    // The last `container_registry` segment that has a valid suffix after it.
    for i in (1..segs.len()).rev() {
        if segs[i] != "container_registry" {
            continue;
        }
        let project = segs[..i].join("/");
        let rest = &segs[i + 1..];
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let r = match rest {
            [] => Some(Route::ProjectRegistry(project)),
            [id] if numeric(id) => Some(Route::Repository(project, id.to_string())),
            [id, "delete"] if numeric(id) => Some(Route::DeleteRepository(project, id.to_string())),
            [id, "delete_tags"] if numeric(id) => Some(Route::DeleteTags(project, id.to_string())),
            [id, "deleted"] if numeric(id) => Some(Route::DeletedTags(project, id.to_string())),
            [id, "restore"] if numeric(id) => Some(Route::RestoreTag(project, id.to_string())),
            [id, "-", "tags", tag] if numeric(id) && !tag.is_empty() => {
                Some(Route::Tag(project, id.to_string(), tag.to_string()))
            }
            _ => None,
        };
        if r.is_some() {
            return r;
        }
    }
    if let Some(p) = path.strip_suffix("/edit") {
        if p.contains('/') && !p.contains("/-/") {
            return Some(Route::EditProject(p.to_string()));
        }
    }
    let plain = !path.is_empty()
        && !path.contains("/-/")
        && !path
            .split('/')
            .any(|s| s.is_empty() || s == "container_registry");
    plain.then(|| Route::Overview(path.to_string()))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Everything below `/` that no fixed route took: GitLab-shaped pages, else 404.
pub async fn dispatch(
    State(state): State<Shared>,
    mut viewer: Viewer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(r) = route(uri.path()) else {
        // Not a page at all: no point signing in for it.
        return viewer.error_page(StatusCode::NOT_FOUND);
    };
    let get = method == Method::GET || method == Method::HEAD;
    if !get {
        if method != Method::POST {
            return viewer.error(StatusCode::METHOD_NOT_ALLOWED);
        }
        let form = match viewer.posted(&method, &headers, &body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        return match r {
            Route::Members(k, p) => members::add(&state, &viewer, k, &p, &form).await,
            Route::EditProject(p) => general::save(&state, &viewer, &p, &form).await,
            Route::EditGroup(g) => general::group::save(&state, &viewer, &g, &form).await,
            Route::Member(k, p, id) => members::change(&state, &viewer, k, &p, &id, &form).await,
            Route::RepositorySettings(k, p) => {
                deploy_tokens::create(&state, &viewer, k, &p, &form).await
            }
            Route::RevokeDeployToken(k, p, id) => {
                deploy_tokens::revoke(&state, &viewer, k, &p, &id).await
            }
            Route::DeleteRepository(p, id) => {
                pages::delete_repository(&state, &viewer, &p, &id).await
            }
            Route::DeleteTags(p, id) => {
                pages::delete_tags(&state, &viewer, &p, &id, &form.fields).await
            }
            Route::Settings(p) => {
                pages::save_settings(&state, &viewer, &p, &form.fields, &body).await
            }
            Route::RestoreTag(p, id) => {
                pages::restore_tag(&state, &viewer, &p, &id, &form.fields).await
            }
            Route::RestoreRun(p) => pages::restore_run(&state, &viewer, &p, &form.fields).await,
            Route::DependencyProxy(g) => {
                dependency_proxy::save(&state, &viewer, &g, &form.fields).await
            }
            _ => viewer.error(StatusCode::METHOD_NOT_ALLOWED),
        };
    }
    let query = uri.query().unwrap_or("");
    match r {
        Route::GroupRegistry(g) => pages::group_registry(&state, &viewer, &g, query).await,
        Route::DependencyProxy(g) => dependency_proxy::show(&state, &viewer, &g).await,
        Route::ProjectRegistry(p) => pages::project_registry(&state, &viewer, &p, query).await,
        Route::Repository(p, id) => pages::repository(&state, &viewer, &p, &id, query).await,
        Route::Tag(p, id, tag) => pages::tag(&state, &viewer, &p, &id, &tag, query).await,
        Route::Settings(p) => pages::settings(&state, &viewer, &p, None).await,
        Route::SettingsPreview(p) => pages::settings_preview(&state, &viewer, &p, query).await,
        Route::SettingsMatches(p) => pages::protection_matches(&state, &viewer, &p, query).await,
        Route::DeletedTags(p, id) => pages::deleted_tags(&state, &viewer, &p, &id, query).await,
        Route::Members(k, p) => {
            members::page(
                &state,
                &viewer,
                k,
                &p,
                StatusCode::OK,
                Default::default(),
                Value::from(()),
            )
            .await
        }
        Route::RepositorySettings(k, p) => {
            deploy_tokens::show(&state, &mut viewer, k, &p, &headers).await
        }
        Route::GroupOverview(g) => overview::group(&state, &viewer, &g).await,
        Route::EditGroup(g) => general::group::show(&state, &viewer, &g).await,
        Route::EditProject(p) => {
            // A project may itself be called "edit": its overview then.
            let whole = format!("{p}/edit");
            if matches!(state.meta.project_by_path(&whole).await, Ok(Some(_))) {
                overview::any(&state, &viewer, &whole).await
            } else {
                general::show(&state, &viewer, &p).await
            }
        }
        Route::Overview(p) => overview::any(&state, &viewer, &p).await,
        Route::DeleteRepository(..)
        | Route::DeleteTags(..)
        | Route::RestoreTag(..)
        | Route::RestoreRun(..)
        | Route::Member(..)
        | Route::RevokeDeployToken(..) => viewer.error(StatusCode::METHOD_NOT_ALLOWED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_urls_are_parsed() {
        let s = String::from;
        assert_eq!(
            route("/g/sub/p/container_registry"),
            Some(Route::ProjectRegistry(s("g/sub/p")))
        );
        assert_eq!(
            route("/g/p/container_registry/12"),
            Some(Route::Repository(s("g/p"), s("12")))
        );
        assert_eq!(
            route("/g/p/container_registry/12/delete_tags"),
            Some(Route::DeleteTags(s("g/p"), s("12")))
        );
        assert_eq!(
            route("/g/p/container_registry/12/-/tags/v1.0"),
            Some(Route::Tag(s("g/p"), s("12"), s("v1.0")))
        );
        // A project may itself be called container_registry.
        assert_eq!(
            route("/g/container_registry/container_registry"),
            Some(Route::ProjectRegistry(s("g/container_registry")))
        );
        assert_eq!(
            route("/groups/g/sub/-/dependency_proxy"),
            Some(Route::DependencyProxy(s("g/sub")))
        );
        assert_eq!(
            route("/groups/g/sub/-/container_registries"),
            Some(Route::GroupRegistry(s("g/sub")))
        );
        assert_eq!(
            route("/g/p/-/settings/packages_and_registries"),
            Some(Route::Settings(s("g/p")))
        );
        assert_eq!(
            route("/g/p/-/settings/packages_and_registries/preview"),
            Some(Route::SettingsPreview(s("g/p")))
        );
        assert_eq!(route("/container_registry"), None);
        assert_eq!(route("/g/p/container_registry/abc"), None);
        assert_eq!(route("/g/p"), Some(Route::Overview(s("g/p"))));
        assert_eq!(
            route("/g/p/-/project_members"),
            Some(Route::Members(Kind::Project, s("g/p")))
        );
        assert_eq!(
            route("/g/p/-/project_members/7"),
            Some(Route::Member(Kind::Project, s("g/p"), s("7")))
        );
        assert_eq!(
            route("/groups/g/s/-/group_members"),
            Some(Route::Members(Kind::Group, s("g/s")))
        );
        assert_eq!(
            route("/groups/g/-/settings/repository/deploy_token/3/revoke"),
            Some(Route::RevokeDeployToken(Kind::Group, s("g"), s("3")))
        );
        assert_eq!(route("/groups/g/s"), Some(Route::GroupOverview(s("g/s"))));
        assert_eq!(route("/g/p/-/nothing"), None);
        assert_eq!(route("/g/p/edit"), Some(Route::EditProject(s("g/p"))));
        assert_eq!(
            route("/groups/g/s/-/edit"),
            Some(Route::EditGroup(s("g/s")))
        );
        assert_eq!(
            route("/g/p/container_registry/1/-/tags/a%2Bb"),
            Some(Route::Tag(s("g/p"), s("1"), s("a+b")))
        );
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(
            local_path(Some("/g/p/container_registry?x=1")),
            "/g/p/container_registry?x=1"
        );
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
        // Browsers drop tabs and newlines: `/\t/evil.example` is `//evil.example`.
        for bad in [
            "/\t/evil.example/x",
            "/\n/x",
            "/\r/x",
            "/x\u{7f}",
            "/ /x",
            "/\u{0}",
            "/é",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
