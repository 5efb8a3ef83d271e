//! The GitLab-compatible REST API under `/api/v4`: users, groups, projects, members
//! and tokens, with GitLab's field names, status codes and error bodies, so tools
//! written for GitLab (python-gitlab, curl scripts) work unchanged.
//!
//! This file holds what every endpoint shares: the router, the caller (who is asking,
//! with GitLab's token-scope rules), the error type, and the permission look-ups.
//! Each resource lives in its own file; handlers stay short: read parameters, load and
//! authorise, call `crate::org` or the metadata store, render with `entities`.

pub(crate) mod cleanup;
mod dependency_proxy;
mod entities;
pub(crate) mod groups;
pub(crate) mod history;
pub(crate) mod members;
pub mod openapi;
pub mod pagination;
pub mod params;
pub(crate) mod policy;
pub(crate) mod projects;
pub(crate) mod protection;
pub(crate) mod registry;
pub mod schemas;
pub(crate) mod settings;
pub(crate) mod tokens;
pub(crate) mod users;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::{AccessLevel, Visibility};
pub use berth_meta::Window;
use berth_meta::{MetaError, Namespace, NamespaceKind, Project, User};
use schemas::{ApiErrorBody, MessageError, MessageValue, ParamError};

use crate::auth::{self, Principal, Via};
use crate::org::OrgError;
use crate::state::{AppState, Shared};

pub use entities::View;
pub use pagination::Pagination;
pub use params::Params;

/// What `GET /version` reports: a GitLab version python-gitlab accepts, marked as Berth.
pub const GITLAB_VERSION: &str = "17.0.0-berth";

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/version", get(version))
        .route("/openapi.json", get(openapi::document))
        .merge(users::routes())
        .merge(groups::routes())
        .merge(projects::routes())
        .merge(registry::routes())
        .merge(settings::routes())
        .merge(cleanup::routes())
        .merge(protection::routes())
        .merge(history::routes())
        .merge(members::routes())
        .merge(tokens::routes())
        .merge(dependency_proxy::routes())
        .fallback(|| async { ApiError::message(StatusCode::NOT_FOUND, "404 Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::message(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed")
        })
}

/// The GitLab version Berth answers as, and its own revision.
#[utoipa::path(
    get,
    path = "/version",
    operation_id = "getVersion",
    tag = "meta",
    responses(
        (status = 200, description = "The version", body = schemas::Version),
        (status = 401, description = "Not signed in, or a bad token", body = ApiErrorBody),
        (status = 403, description = "The token may not read the API", body = ApiErrorBody),
    )
)]
async fn version(caller: Caller) -> ApiResult<Response> {
    caller.require_user()?;
    let revision = option_env!("BERTH_GIT_REVISION").unwrap_or(env!("CARGO_PKG_VERSION"));
    Ok(Json(schemas::Version {
        version: GITLAB_VERSION.to_string(),
        revision: revision.to_string(),
    })
    .into_response())
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error answered in GitLab's shape: `{"message": …}` for most refusals,
/// `{"error": …}` for parameter validation (as Grape does).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ApiErrorBody,
    headers: Vec<(HeaderName, String)>,
    /// Whether the refusal was logged with its reason already ([`ApiError::because`]).
    logged: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, body: ApiErrorBody) -> Self {
        ApiError {
            status,
            body,
            headers: Vec::new(),
            logged: false,
        }
    }

    /// Log why the request is refused (the client sees GitLab's terse message). It
    /// is logged here rather than kept: every handler returns this type, so it stays
    /// small.
    pub fn because(mut self, reason: impl std::fmt::Display) -> Self {
        tracing::info!(status = self.status.as_u16(), %reason, "API request refused");
        self.logged = true;
        self
    }

    /// `{"message": msg}` with `status`.
    pub fn message(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError::new(
            status,
            ApiErrorBody::Message(MessageError {
                message: MessageValue::Text(msg.into()),
            }),
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::message(StatusCode::UNAUTHORIZED, "401 Unauthorized")
    }

    pub fn forbidden() -> Self {
        ApiError::message(StatusCode::FORBIDDEN, "403 Forbidden")
    }

    /// `404 <What> Not Found`, as GitLab's `not_found!(what)`.
    pub fn not_found(what: &str) -> Self {
        ApiError::message(StatusCode::NOT_FOUND, format!("404 {what} Not Found"))
    }

    /// GitLab's bare `not_found!`.
    pub fn not_found_plain() -> Self {
        ApiError::message(StatusCode::NOT_FOUND, "404 Not Found")
    }

    /// What GitLab answers when a record lookup fails (`ActiveRecord::RecordNotFound`).
    pub fn record_not_found() -> Self {
        ApiError::message(StatusCode::NOT_FOUND, "404 Not found")
    }

    /// Grape's parameter errors: 400 `{"error": "<param> is missing"}` and the like.
    pub fn param(msg: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiErrorBody::Error(ParamError {
                error: msg.into(),
                error_description: None,
                scope: None,
            }),
        )
    }

    /// GitLab's `bad_request!(reason)`.
    pub fn bad_request(reason: &str) -> Self {
        ApiError::message(
            StatusCode::BAD_REQUEST,
            format!("400 Bad request - {reason}"),
        )
    }

    /// GitLab's `render_validation_error!`: `{"message": {"<field>": ["<problem>"]}}`.
    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let fields = [(field.to_string(), vec![problem.into()])].into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiErrorBody::Message(MessageError {
                message: MessageValue::Fields(fields),
            }),
        )
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        ApiError::message(StatusCode::CONFLICT, msg)
    }

    /// A token without the scope the endpoint needs, as GitLab's OAuth guard answers.
    pub fn insufficient_scope(needed: &[&str]) -> Self {
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorBody::Error(ParamError {
                error: "insufficient_scope".to_string(),
                error_description: Some(
                    "The request requires higher privileges than provided by the access token."
                        .to_string(),
                ),
                scope: Some(needed.join(" ")),
            }),
        );
        e.headers.push((
            HeaderName::from_static("www-authenticate"),
            format!(
                "Bearer realm=\"Protected by OAuth 2.0\", error=\"insufficient_scope\", \
                 error_description=\"The request requires higher privileges than provided by \
                 the access token.\", scope=\"{}\"",
                needed.join(" ")
            ),
        ));
        e
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error in the REST API");
        ApiError::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problems this error reports, each with the field it names (if any), for
    /// pages that show them next to the field.
    pub fn problems(&self) -> Vec<(Option<String>, String)> {
        match &self.body {
            ApiErrorBody::Message(MessageError {
                message: MessageValue::Text(t),
            }) => vec![(None, t.clone())],
            ApiErrorBody::Message(MessageError {
                message: MessageValue::Fields(fields),
            }) => fields
                .iter()
                .flat_map(|(f, ps)| ps.iter().map(move |p| (Some(f.clone()), p.clone())))
                .collect(),
            ApiErrorBody::Error(e) => vec![(None, e.error.clone())],
        }
    }

    /// The body as JSON, for tests.
    #[cfg(test)]
    pub(crate) fn body_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.body).expect("serialisable")
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        ApiError::from(OrgError::from(e))
    }
}

/// `field` when `word` could be a parameter name.
fn field_name(word: &str) -> Option<String> {
    let ok = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| word.to_ascii_lowercase())
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::Invalid(m) => {
                if m.ends_with(" is missing") {
                    return ApiError::param(m);
                }
                // "<field>: <problem>" and "<field> <is …|can't …>" become GitLab's
                // validation hash.
                if let Some((f, rest)) = m.split_once(": ") {
                    if let Some(f) = field_name(f) {
                        return ApiError::validation(&f, rest);
                    }
                }
                if let Some((f, rest)) = m.split_once(' ') {
                    let verb = ["is ", "can't ", "has ", "must "];
                    if let Some(f) =
                        field_name(f).filter(|_| verb.iter().any(|v| rest.starts_with(v)))
                    {
                        return ApiError::validation(&f, rest);
                    }
                }
                ApiError::message(StatusCode::BAD_REQUEST, m)
            }
            OrgError::Conflict(m) => match m.strip_suffix(" has already been taken") {
                Some(f) => match field_name(f) {
                    Some(f) => ApiError::validation(&f, "has already been taken"),
                    None => ApiError::message(StatusCode::BAD_REQUEST, m),
                },
                None => ApiError::message(StatusCode::BAD_REQUEST, m),
            },
            OrgError::NotFound(m) => ApiError::message(StatusCode::NOT_FOUND, format!("404 {m}")),
            OrgError::Meta(e) if crate::error::meta_is_storage_full(&e) => {
                tracing::warn!(error = %e, "refused a write: storage is full");
                ApiError::message(
                    StatusCode::INSUFFICIENT_STORAGE,
                    crate::error::STORAGE_FULL_MESSAGE,
                )
            }
            OrgError::Meta(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if !self.logged
            && matches!(
                self.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        {
            // The request's span names the client and the caller; without a reason
            // given, the message the client gets is the best there is.
            let reason = serde_json::to_string(&self.body).unwrap_or_default();
            tracing::info!(status = self.status.as_u16(), reason, "API request refused");
        }
        let mut resp = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// Path parameters, refused in GitLab's shape: axum's own rejection is plain text,
/// and a parameter that cannot be decoded (not UTF-8) names nothing, so 404.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => {
                tracing::debug!(error = %e, "undecodable path parameter");
                Err(ApiError::not_found_plain())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The caller
// ---------------------------------------------------------------------------

/// Who is calling the API: anonymous, a user (personal access token), or a CI job.
/// Extracting it checks the token and GitLab's scope rules for the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// An instance administrator acting with a token that may act as one.
    pub admin: bool,
}

/// The request path below `/api/v4` (still percent-encoded).
fn api_path(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| &o.0)
        .unwrap_or(&parts.uri);
    let path = uri.path();
    path.strip_prefix("/api/v4").unwrap_or(path).to_string()
}

/// The token a request carries, and whether it is a job token. Headers first, then
/// GitLab's query parameters.
fn request_token(parts: &Parts) -> Option<(String, bool)> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(t) = header("private-token") {
        return Some((t, false));
    }
    if let Some(t) = header("job-token") {
        return Some((t, true));
    }
    if let Some(v) = header("authorization") {
        if let Some((scheme, t)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some((t.trim().to_string(), false));
            }
        }
    }
    let query = parts.uri.query().unwrap_or("");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "private_token" | "access_token" if !v.is_empty() => {
                return Some((v.into_owned(), false))
            }
            "job_token" if !v.is_empty() => return Some((v.into_owned(), true)),
            _ => {}
        }
    }
    None
}

/// Which token scopes let a request through (any one of them), as GitLab's API
/// guard: reads need `api` or `read_api`, writes need `api`; user reads also accept
/// `read_user`, and a token may always look at and revoke itself (and rotate it with `self_rotate`).
fn accepted_scopes(method: &Method, path: &str) -> Option<&'static [&'static str]> {
    let read = method == Method::GET || method == Method::HEAD;
    // Any token may look at and revoke itself.
    if path == "/personal_access_tokens/self" && (read || method == Method::DELETE) {
        return None;
    }
    if path == "/personal_access_tokens/self/rotate" && method == Method::POST {
        return Some(&["api", "self_rotate"]);
    }
    if read {
        let user_read = path == "/user"
            || path == "/version"
            || path == "/users"
            || path.starts_with("/users/");
        return Some(if user_read {
            &["api", "read_api", "read_user"]
        } else {
            &["api", "read_api"]
        });
    }
    Some(&["api"])
}

/// A CI job token reaches only its own project: `GET /projects/:id`. Handlers
/// check that the project is the job's (see [`Caller::can_read_project`]).
fn job_token_allowed(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    method == Method::GET && segments.len() == 2 && segments[0] == "projects"
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        let Some((token, job)) = request_token(parts) else {
            return Ok(Caller {
                principal: Principal::Anonymous,
                admin: false,
            });
        };
        let principal = auth::from_api_token(state.meta.as_ref(), &token, job)
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized().because(if job {
                    "the job token is unknown or its job is not running"
                } else {
                    "the token is unknown, revoked or expired, or its user is blocked"
                })
            })?;
        auth::note_caller(&principal);
        let path = api_path(parts);
        let admin = match &principal {
            Principal::User { user, via } => {
                if let Via::PersonalToken(t) = via {
                    if let Some(needed) = accepted_scopes(&parts.method, &path) {
                        if !t.scopes.iter().any(|s| needed.contains(&s.as_str())) {
                            return Err(ApiError::insufficient_scope(needed).because(format!(
                                "the token's scopes {:?} include none of {needed:?}",
                                t.scopes
                            )));
                        }
                    }
                }
                user.admin
            }
            Principal::Job { .. } => {
                if !job_token_allowed(&parts.method, &path) {
                    return Err(ApiError::forbidden()
                        .because("a CI job token may only read its own project"));
                }
                false
            }
            _ => false,
        };
        Ok(Caller { principal, admin })
    }
}

impl Caller {
    /// The signed-in user (for a job, the user it runs as).
    pub fn user(&self) -> Option<&User> {
        self.principal.user()
    }

    /// 401 unless someone is signed in.
    pub fn require_user(&self) -> ApiResult<&User> {
        self.user()
            .ok_or_else(|| ApiError::unauthorized().because("needs a signed-in user"))
    }

    /// 401 for anonymous callers, 403 for everyone but administrators.
    pub fn require_admin(&self) -> ApiResult<&User> {
        let user = self.require_user()?;
        if self.admin {
            Ok(user)
        } else {
            Err(ApiError::forbidden().because("needs an administrator"))
        }
    }

    /// The job's project, when a CI job token is calling.
    pub fn job_project(&self) -> Option<i64> {
        match &self.principal {
            Principal::Job { job, .. } => Some(job.project_id),
            _ => None,
        }
    }

    /// The caller's effective level in a project (administrators act as owners).
    pub async fn project_level(
        &self,
        state: &AppState,
        project: &Project,
    ) -> ApiResult<Option<AccessLevel>> {
        if self.admin {
            return Ok(Some(AccessLevel::Owner));
        }
        match self.user() {
            Some(u) => Ok(state
                .meta
                .project_role(u.id, project.id, &auth::today())
                .await?),
            None => Ok(None),
        }
    }

    /// The caller's effective level in a group or user namespace.
    pub async fn namespace_level(
        &self,
        state: &AppState,
        ns: &Namespace,
    ) -> ApiResult<Option<AccessLevel>> {
        if self.admin {
            return Ok(Some(AccessLevel::Owner));
        }
        match self.user() {
            Some(u) => Ok(state.meta.group_role(u.id, ns.id, &auth::today()).await?),
            None => Ok(None),
        }
    }

    /// Whether the caller may see a project: public to all, internal to anyone signed
    /// in, private to members; a job token only its own project.
    pub async fn can_read_project(&self, state: &AppState, project: &Project) -> ApiResult<bool> {
        if let Some(own) = self.job_project() {
            return Ok(own == project.id);
        }
        if self.admin {
            return Ok(true);
        }
        let role = match project.visibility {
            Visibility::Private => self.project_level(state, project).await?,
            Visibility::Public | Visibility::Internal => None,
        };
        Ok(self.can_read_project_with(project, role))
    }

    /// [`Caller::can_read_project`] given the caller's user's role in the project
    /// (fetched for many projects at once by `auth::project_roles_for`).
    pub fn can_read_project_with(&self, project: &Project, role: Option<AccessLevel>) -> bool {
        if let Some(own) = self.job_project() {
            return own == project.id;
        }
        if self.admin {
            return true;
        }
        match project.visibility {
            Visibility::Public => true,
            Visibility::Internal => self.user().is_some(),
            Visibility::Private => role.is_some(),
        }
    }

    /// Whether the caller may see a group (members of it or of a group above it see
    /// a private group).
    pub async fn can_read_group(&self, state: &AppState, ns: &Namespace) -> ApiResult<bool> {
        if self.job_project().is_some() {
            return Ok(false);
        }
        if self.admin {
            return Ok(true);
        }
        Ok(match ns.visibility {
            Visibility::Public => true,
            Visibility::Internal => self.user().is_some(),
            Visibility::Private => self.namespace_level(state, ns).await?.is_some(),
        })
    }

    /// 403 unless the caller has at least `min` in the project.
    pub async fn require_project_level(
        &self,
        state: &AppState,
        project: &Project,
        min: AccessLevel,
    ) -> ApiResult<AccessLevel> {
        match self.project_level(state, project).await? {
            Some(l) if l >= min => Ok(l),
            has => Err(ApiError::forbidden().because(format!(
                "needs {min:?} or higher in project {}, has {has:?}",
                project.full_path
            ))),
        }
    }

    /// 403 unless the caller has at least `min` in the group.
    pub async fn require_group_level(
        &self,
        state: &AppState,
        ns: &Namespace,
        min: AccessLevel,
    ) -> ApiResult<AccessLevel> {
        match self.namespace_level(state, ns).await? {
            Some(l) if l >= min => Ok(l),
            has => Err(ApiError::forbidden().because(format!(
                "needs {min:?} or higher in group {}, has {has:?}",
                ns.full_path
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// Lookups by `:id` (an integer or a URL-encoded full path)
// ---------------------------------------------------------------------------

fn numeric_id(id: &str) -> Option<i64> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

/// What a resource that exists for projects and for groups alike (members, deploy
/// tokens) belongs to; one implementation serves both, told which it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Project,
    Group,
}

/// The `name` an update of a project or a group asks for; a blank one is refused.
pub(crate) fn new_name(params: &params::Params) -> ApiResult<Option<String>> {
    let name = params.string("name")?;
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::validation("name", "can't be blank"));
    }
    Ok(name)
}

/// The path an update of a project or a group asks for (`None`: absent, empty or
/// `current`). Renaming needs `owner` to pass, a valid path, and that `refused` (the
/// instance's refusal to move registry tags) does not hold, else 400 with `refusal`.
pub(crate) async fn new_path(
    params: &params::Params,
    current: &str,
    owner: impl std::future::Future<Output = ApiResult<AccessLevel>>,
    refused: impl std::future::Future<Output = ApiResult<bool>>,
    refusal: &str,
) -> ApiResult<Option<String>> {
    let path = params.string("path")?;
    let Some(path) = path.filter(|p| p != current && !p.is_empty()) else {
        return Ok(None);
    };
    owner.await?;
    crate::org::check_path("path", &path)?;
    if refused.await? {
        return Err(ApiError::message(StatusCode::BAD_REQUEST, refusal));
    }
    Ok(Some(path))
}

/// The project `id` names, if the caller may see it; otherwise 404 (GitLab does not
/// reveal projects the caller cannot see).
pub async fn find_project(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Project> {
    let project = match numeric_id(id) {
        Some(n) => state.meta.project(n).await?,
        None => state.meta.project_by_path(id.trim_matches('/')).await?,
    };
    match project {
        Some(p) if caller.can_read_project(state, &p).await? => Ok(p),
        _ => Err(ApiError::not_found("Project")),
    }
}

/// The group `id` names, if the caller may see it; otherwise 404.
pub async fn find_group(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Namespace> {
    let ns = match numeric_id(id) {
        Some(n) => state.meta.namespace(n).await?,
        None => state.meta.namespace_by_path(id.trim_matches('/')).await?,
    };
    match ns {
        Some(g) if g.kind == NamespaceKind::Group && caller.can_read_group(state, &g).await? => {
            Ok(g)
        }
        _ => Err(ApiError::not_found("Group")),
    }
}

/// A user by numeric id; 404 `User Not Found` otherwise.
pub async fn find_user(state: &AppState, id: &str) -> ApiResult<User> {
    let n = numeric_id(id).ok_or_else(|| ApiError::not_found("User"))?;
    state
        .meta
        .user(n)
        .await?
        .ok_or_else(|| ApiError::not_found("User"))
}

/// `ns` and its ancestors, nearest first.
pub async fn ancestry(state: &AppState, ns: &Namespace) -> ApiResult<Vec<Namespace>> {
    let mut chain = vec![ns.clone()];
    let mut next = ns.parent_id;
    // Nesting is limited to 20 ancestors; the bound guards against corrupt cycles.
    while let Some(id) = next {
        if chain.len() > 64 {
            break;
        }
        match state.meta.namespace(id).await? {
            Some(parent) => {
                next = parent.parent_id;
                chain.push(parent);
            }
            None => break,
        }
    }
    Ok(chain)
}

/// GitLab's visibility ordering (private < internal < public).
pub fn visibility_rank(v: Visibility) -> i64 {
    v.level()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_by_method_and_path() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            accepted_scopes(&get, "/projects"),
            Some(&["api", "read_api"][..])
        );
        assert_eq!(accepted_scopes(&post, "/projects"), Some(&["api"][..]));
        assert!(accepted_scopes(&get, "/users/3").is_some_and(|s| s.contains(&"read_user")));
        assert_eq!(accepted_scopes(&get, "/personal_access_tokens/self"), None);
        assert!(
            accepted_scopes(&post, "/personal_access_tokens/self/rotate")
                .is_some_and(|s| s.contains(&"self_rotate"))
        );
    }

    #[test]
    fn job_tokens_reach_only_a_project() {
        assert!(job_token_allowed(&Method::GET, "/projects/7"));
        assert!(job_token_allowed(&Method::GET, "/projects/a%2Fb"));
        assert!(!job_token_allowed(&Method::PUT, "/projects/7"));
        assert!(!job_token_allowed(&Method::GET, "/projects/7/members"));
        assert!(!job_token_allowed(&Method::GET, "/user"));
    }

    #[test]
    fn org_errors_in_gitlab_shape() {
        let e = ApiError::from(OrgError::Conflict("Path has already been taken".into()));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body_json(),
            json!({"message": {"path": ["has already been taken"]}})
        );
        let e = ApiError::from(OrgError::Invalid("name is missing".into()));
        assert_eq!(e.body_json(), json!({"error": "name is missing"}));
        let e = ApiError::from(OrgError::Invalid(
            "password is too short (minimum is 8 characters)".into(),
        ));
        assert_eq!(
            e.body_json(),
            json!({"message": {"password": ["is too short (minimum is 8 characters)"]}})
        );
        let e = ApiError::from(OrgError::Invalid("path: path must not be empty".into()));
        assert_eq!(
            e.body_json(),
            json!({"message": {"path": ["path must not be empty"]}})
        );
    }
}
