//! Authorisation of registry requests. Every `/v2` handler states what it needs (an
//! action on a repository) and calls [`authorize`] before touching data. Decisions
//! were made when the bearer token was issued (`/jwt/auth`); here the token's
//! signature and lifetime are checked and its grants consulted.
//!
//! Refusals follow the token spec: 401 with a `WWW-Authenticate` challenge naming the
//! scope to ask for, so clients fetch a token and retry. When no token could ever
//! help (the path belongs to no project, is too deep, or the project's registry is
//! disabled) the answer is 403 with a message that says why, but only to a caller
//! who may see the project; to anyone else it looks like any project they may not
//! see, existing or not.

use axum::http::HeaderMap;
use berth_core::paths::{all_prefixes, project_candidates, MAX_IMAGE_DEPTH};
use berth_core::RegistryAccess;
use serde_json::json;

use crate::auth::jwt::Claims;
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::{now_ms, AppState};

pub use berth_core::Action;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The verified claims of the request's bearer token, if it has a valid one.
pub fn claims(state: &AppState, headers: &HeaderMap) -> Option<std::sync::Arc<Claims>> {
    state.signer.verify(bearer(headers)?, now_ms() / 1000)
}

/// The claims of the request's token, also when it expired within the upload
/// expiry: who continues an upload session that [`authorize_expired_session`] let
/// through.
pub fn session_claims(state: &AppState, headers: &HeaderMap) -> Option<std::sync::Arc<Claims>> {
    let max_age = state.settings.upload_expiry.as_secs() as i64;
    state
        .signer
        .verify_expired_within(bearer(headers)?, now_ms() / 1000, max_age)
}

/// Who sends a registry request, as tag history records it: the token's principal
/// kind, user (or deploy token) id and subject.
pub fn actor(state: &AppState, headers: &HeaderMap) -> berth_meta::Actor {
    match claims(state, headers) {
        Some(c) => {
            let u = &c.user;
            let id = if u.kind == "deploy_token" {
                u.token_id
            } else {
                u.user_id
            };
            berth_meta::Actor::new(&u.kind, id, c.sub.as_deref())
        }
        None => berth_meta::Actor::system("anonymous"),
    }
}

fn challenge(
    state: &AppState,
    headers: &HeaderMap,
    scope: Option<String>,
    error: Option<&str>,
) -> String {
    let mut c = format!(
        "Bearer realm=\"{}/jwt/auth\",service=\"{}\"",
        state.base_url(headers),
        state.signer.service()
    );
    if let Some(scope) = scope {
        c.push_str(&format!(",scope=\"{scope}\""));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

fn unauthorized(
    state: &AppState,
    headers: &HeaderMap,
    scope: Option<String>,
    detail: serde_json::Value,
) -> RegistryError {
    let error = if bearer(headers).is_some() {
        Some(
            if state
                .signer
                .verify(bearer(headers).unwrap_or_default(), now_ms() / 1000)
                .is_some()
            {
                "insufficient_scope"
            } else {
                "invalid_token"
            },
        )
    } else {
        None
    };
    RegistryError::new(Code::Unauthorized, "authentication required")
        .detail(detail)
        .header("WWW-Authenticate", challenge(state, headers, scope, error))
}

/// A cross-repository mount whose token lacks the source's pull: the challenge names
/// every scope the request needs (the target's push and the source's pull), as the
/// reference registry does, so the client fetches a token with both and retries.
pub fn mount_challenge(
    state: &AppState,
    headers: &HeaderMap,
    target: &str,
    from: &str,
) -> RegistryError {
    unauthorized(
        state,
        headers,
        Some(format!(
            "repository:{target}:pull,push repository:{from}:pull"
        )),
        json!([
            { "Type": "repository", "Name": target, "Action": "push" },
            { "Type": "repository", "Name": from, "Action": "pull" },
        ]),
    )
}

/// Require a valid token of any kind (`GET /v2/`, `_catalog`).
pub fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
) -> RegistryResult<std::sync::Arc<Claims>> {
    let c = claims(state, headers).ok_or_else(|| {
        let refused = unauthorized(state, headers, None, serde_json::Value::Null)
            .because(token_problem(state, headers));
        // Every client's first request (`GET /v2/` with no credentials) asks where to
        // get a token; that is no refusal worth an operator's attention.
        if headers.contains_key(axum::http::header::AUTHORIZATION) {
            refused
        } else {
            refused.routine()
        }
    })?;
    note_claims(&c);
    Ok(c)
}

/// Why the request's bearer token (if any) is no good, for the log.
fn token_problem(state: &AppState, headers: &HeaderMap) -> &'static str {
    match bearer(headers) {
        None => "no bearer token",
        Some(t) if state.signer.verify(t, now_ms() / 1000).is_none() => {
            "the bearer token is invalid or expired"
        }
        Some(_) => "the bearer token does not grant this",
    }
}

/// Name the token's holder on the request's log lines (kind and ids, from claims).
fn note_claims(c: &Claims) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        // Nothing would show it (the request span is off at this log level).
        return;
    }
    let u = &c.user;
    let mut who = u.kind.clone();
    if let Some(sub) = &c.sub {
        who.push_str(&format!(" {sub}"));
    }
    if let Some(id) = u.user_id {
        who.push_str(&format!(" (user id {id})"));
    }
    if let Some(id) = u.token_id {
        who.push_str(&format!(" (token/job id {id})"));
    }
    span.record("principal", who);
}

/// The actions a client asks for when challenged for `action`: pushing clients ask for
/// pull too, as docker does.
fn scope_actions(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    }
}

pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    repository: &str,
    action: Action,
) -> RegistryResult<()> {
    let claims = claims(state, headers);
    if let Some(c) = &claims {
        note_claims(c);
        if grants(c, repository, action) {
            return Ok(());
        }
    }
    let what = format!("{} on repository {repository}", action.as_str());
    // Explain refusals no token can lift, to those allowed to know the project.
    if let Some(reason) = hopeless(state, claims.as_deref(), repository).await? {
        return Err(RegistryError::new(Code::Denied, reason.clone())
            .detail(json!({ "name": repository }))
            .because(format!("{what}: {reason}")));
    }
    Err(unauthorized(
        state,
        headers,
        Some(format!("repository:{repository}:{}", scope_actions(action))),
        json!([{ "Type": "repository", "Name": repository, "Action": action.as_str() }]),
    )
    .because(format!("{what}: {}", token_problem(state, headers))))
}

fn grants(c: &Claims, repository: &str, action: Action) -> bool {
    c.actions_on(repository)
        .any(|a| a == action.as_str() || a == "*")
}

/// Whether the request's token grants `action` on `repository`, as [`authorize`]
/// finds, for a second repository of one request (a mount's source): nothing is
/// looked up, and the caller, named once by `authorize`, is not named again.
pub(crate) fn token_grants(
    state: &AppState,
    headers: &HeaderMap,
    repository: &str,
    action: Action,
) -> bool {
    claims(state, headers).is_some_and(|c| grants(&c, repository, action))
}

/// Why no credential could give access to `repository`, if that is so and the
/// caller may know it. A caller who may not see the project gets the same challenge
/// whether it exists or not (the registry disabled, the path too deep under it, or
/// no project at all): anything else would tell outsiders which private projects
/// exist. Only administrators, who see every project, learn that none owns a path.
async fn hopeless(
    state: &AppState,
    claims: Option<&Claims>,
    repository: &str,
) -> RegistryResult<Option<String>> {
    // A dependency proxy path belongs to a group: a token is all that can help.
    if crate::proxy::split_name(repository).is_some() {
        return Ok(None);
    }
    let project = state
        .meta
        .project_for_paths(&project_candidates(repository))
        .await?;
    let reason = match project {
        Some(p) if p.registry_access == RegistryAccess::Disabled => {
            let why = format!(
                "the container registry is disabled for project {}",
                p.full_path
            );
            (Some(p), why)
        }
        Some(_) => return Ok(None),
        None => {
            let mut deep = None;
            for prefix in all_prefixes(repository).iter().skip(MAX_IMAGE_DEPTH + 1) {
                if let Some(p) = state.meta.project_by_path(prefix).await? {
                    deep = Some(p);
                    break;
                }
            }
            match deep {
                Some(p) => {
                    let why = format!(
                        "image path {repository} is too deep: at most {MAX_IMAGE_DEPTH} path segments may follow the project path {}",
                        p.full_path
                    );
                    (Some(p), why)
                }
                None => (
                    None,
                    format!(
                        "no project owns the image path {repository}; create the project first (an image path is a project's full path followed by up to {MAX_IMAGE_DEPTH} more segments)"
                    ),
                ),
            }
        }
    };
    let caller = match claims {
        Some(c) => principal_from_claims(state, c).await?,
        None => crate::auth::Principal::Anonymous,
    };
    let may_know = match &reason.0 {
        Some(p) => may_see_project(state, &caller, p).await?,
        None => is_admin(&caller),
    };
    Ok(may_know.then_some(reason.1))
}

fn is_admin(caller: &crate::auth::Principal) -> bool {
    matches!(caller, crate::auth::Principal::User { user, .. } if user.admin)
}

/// Whether `caller` may see `project` at all (its page, that it exists), as the REST
/// API decides; a deploy token sees the projects it covers.
async fn may_see_project(
    state: &AppState,
    caller: &crate::auth::Principal,
    project: &berth_meta::Project,
) -> RegistryResult<bool> {
    use crate::auth::Principal;
    if let Principal::Deploy(t) = caller {
        if state.meta.deploy_token_covers(t.source, project.id).await? {
            return Ok(true);
        }
    }
    let api_caller = crate::api::Caller {
        principal: caller.clone(),
        admin: is_admin(caller),
    };
    api_caller
        .can_read_project(state, project)
        .await
        .map_err(|e| RegistryError::internal(format!("{e:?}")))
}

/// Who holds a token, as recorded on the uploads it starts: `kind:user:credential`.
pub fn principal_key(claims: &Claims) -> String {
    let u = &claims.user;
    format!(
        "{}:{}:{}",
        u.kind,
        u.user_id.unwrap_or(0),
        u.token_id.unwrap_or(0)
    )
}

/// A request on an upload session whose token did not pass [`authorize`] (`refused`)
/// may still go on when that token has expired (within the session's lifetime), was
/// issued to the principal that started the session, granted push here, and the
/// principal still may push here now (checked on each request, so a revoked
/// credential or a demoted user is stopped). A long push then never fails because
/// its token expired mid-way.
pub async fn authorize_expired_session(
    state: &AppState,
    headers: &HeaderMap,
    repository: &str,
    upload: Option<&berth_meta::Upload>,
    refused: RegistryError,
) -> RegistryResult<()> {
    let (Some(upload), Some(token)) = (upload, bearer(headers)) else {
        return Err(refused);
    };
    let max_age = state.settings.upload_expiry.as_secs() as i64;
    let Some(claims) = state
        .signer
        .verify_expired_within(token, now_ms() / 1000, max_age)
    else {
        return Err(refused);
    };
    let same_holder = upload.created_by.as_deref() == Some(principal_key(&claims).as_str());
    let granted_push = claims
        .actions_on(repository)
        .any(|a| a == Action::Push.as_str() || a == "*");
    if upload.repository_path != repository || !same_holder || !granted_push {
        return Err(refused);
    }
    let principal = principal_from_claims(state, &claims).await?;
    let still = crate::auth::still_valid(&principal, now_ms())
        && crate::auth::token::grant_repository(
            state,
            &principal,
            repository,
            berth_core::ActionSet::parse("push"),
        )
        .await?
        .is_some();
    if !still {
        return Err(refused);
    }
    tracing::debug!(
        upload = %upload.id,
        "upload continued with its expired token: the same principal still may push"
    );
    Ok(())
}

/// Rebuild the principal a token was issued to (for listings filtered per caller).
pub async fn principal_from_claims(
    state: &AppState,
    claims: &Claims,
) -> RegistryResult<crate::auth::Principal> {
    let u = &claims.user;
    let meta = state.meta.as_ref();
    let found = crate::auth::principal_from_ids(meta, &u.kind, u.user_id, u.token_id).await?;
    Ok(found.unwrap_or(crate::auth::Principal::Anonymous))
}
