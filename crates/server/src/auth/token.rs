//! `GET /jwt/auth`: the Docker token service. Credentials (HTTP Basic, or none for
//! anonymous access) are checked, each requested scope is intersected with what the
//! principal may do, and a short-lived signed token carrying the result is issued.
//! A partial grant is not an error: refused actions are simply left out.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_core::paths::project_candidates;
use berth_core::{allowed_actions, ActionSet, ProjectFacts};
use berth_oci::RepoName;
use serde_json::json;

use super::jwt::{Claims, ResourceAccess, TokenUser};
use super::{authenticate, credential_for, AuthError, Principal, Via};
use crate::client_addr::ClientAddr;
use crate::state::{now_ms, Shared};

const UNAUTHORIZED_MESSAGE: &str = "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect or you're required to use a token instead of a password. If a token was provided, it was either incorrect, expired, or improperly scoped.";

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errors": [{ "code": code, "message": message }], "http_status": status.as_u16() })),
    )
        .into_response()
}

/// `type:name:actions`; the name may not contain `:` (as GitLab splits at most 3 ways).
fn parse_scope(scope: &str) -> Option<(&str, &str, ActionSet)> {
    let mut parts = scope.splitn(3, ':');
    let kind = parts.next()?;
    let name = parts.next()?;
    let actions = parts.next()?;
    Some((kind, name, ActionSet::parse(actions)))
}

fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((u, p)) => Ok((u.to_string(), p.to_string())),
        None => Err(()),
    })
}

pub async fn issue(
    State(state): State<Shared>,
    client: ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match issue_inner(&state, client, &headers, query.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "issuing a registry token failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal server error",
            )
        }
    }
}

async fn issue_inner(
    state: &Shared,
    client: ClientAddr,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response, berth_meta::MetaError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    if service.is_some_and(|s| s != state.signer.service()) {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "UNAVAILABLE",
            "registry not enabled",
        ));
    }
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();

    let principal = match basic_credentials(headers) {
        None => Principal::Anonymous,
        Some(Err(())) => {
            tracing::info!(
                status = 401,
                reason = "malformed basic credentials",
                "token request refused"
            );
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                UNAUTHORIZED_MESSAGE,
            ));
        }
        Some(Ok((user, secret))) => {
            let ip = client.to_string();
            match authenticate(state.meta.as_ref(), &state.login, &ip, &user, &secret).await {
                Ok(p) => p,
                Err(AuthError::Invalid) => {
                    return Ok(error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        UNAUTHORIZED_MESSAGE,
                    ))
                }
                Err(AuthError::RateLimited(wait)) => {
                    let mut r = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                        &format!("too many failed sign-in attempts; try again in {wait} seconds"),
                    );
                    if let Ok(v) = wait.to_string().parse() {
                        r.headers_mut().insert("Retry-After", v);
                    }
                    return Ok(r);
                }
                Err(AuthError::Meta(e)) => return Err(e),
            }
        }
    };
    super::note_caller(&principal);
    if (matches!(principal, Principal::Anonymous) && scopes.is_empty())
        || !principal.has_registry_ability()
    {
        let reason = if principal.has_registry_ability() {
            "anonymous request without a scope"
        } else {
            "the token has no registry scope"
        };
        tracing::info!(status = 403, reason, "token request refused");
        return Ok(error(StatusCode::FORBIDDEN, "DENIED", "access forbidden"));
    }

    let now = now_ms();
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((kind, name, requested)) = parse_scope(scope) else {
            continue;
        };
        match kind {
            "repository" => {
                let grant = grant_repository(state, &principal, name, requested).await?;
                let granted = grant
                    .as_ref()
                    .map(|g| g.actions.join(","))
                    .unwrap_or_default();
                if grant.as_ref().map_or(0, |g| g.actions.len()) < requested.iter().count() {
                    // Not an error to the client (it gets a token with what it may
                    // do, and the registry refuses the rest): the reason is here.
                    tracing::info!(
                        scope = %scope,
                        granted = %granted,
                        "token grants less than asked: the caller may not do the rest"
                    );
                }
                if let Some(grant) = grant {
                    access.push(grant);
                }
            }
            "registry" if name == "catalog" && principal.is_admin() => {
                let star = scope.ends_with(":*");
                if star {
                    access.push(ResourceAccess {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                        meta: None,
                    });
                }
            }
            _ => {}
        }
    }

    let issued = now / 1000;
    let ttl = state.settings.token_ttl.as_secs() as i64;
    let claims = Claims {
        iss: state.settings.token_issuer.clone(),
        sub: principal.subject(),
        aud: state.signer.service().to_string(),
        exp: issued + ttl,
        nbf: issued - 5,
        iat: issued,
        jti: uuid::Uuid::new_v4().to_string(),
        access,
        auth_type: principal.auth_type().to_string(),
        user: token_user(&principal),
    };
    let token = match state.signer.sign(&claims) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing a registry token failed");
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal server error",
            ));
        }
    };
    let issued_at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued as u64),
    );
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl,
            "issued_at": issued_at.to_string(),
        })),
    )
        .into_response())
}

fn token_user(p: &Principal) -> TokenUser {
    let (kind, user_id, token_id) = match p {
        Principal::Anonymous => ("anonymous", None, None),
        Principal::User {
            user,
            via: Via::Password,
        } => ("user", Some(user.id), None),
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => ("personal_access_token", Some(user.id), Some(t.id)),
        Principal::Deploy(t) => ("deploy_token", None, Some(t.id)),
        Principal::Job { job, user } => ("build", Some(user.id), Some(job.id)),
    };
    TokenUser {
        kind: kind.into(),
        user_id,
        token_id,
    }
}

async fn grant_repository(
    state: &Shared,
    principal: &Principal,
    name: &str,
    requested: ActionSet,
) -> Result<Option<ResourceAccess>, berth_meta::MetaError> {
    if RepoName::parse(name).is_err() {
        return Ok(None);
    }
    let Some(project) = state
        .meta
        .project_for_paths(&project_candidates(name))
        .await?
    else {
        return Ok(None);
    };
    let facts = ProjectFacts {
        visibility: project.visibility,
        registry_access: project.registry_access,
    };
    let credential = credential_for(state.meta.as_ref(), principal, &project).await?;
    let granted = requested.intersect(allowed_actions(facts, &credential));
    if granted.is_empty() {
        return Ok(None);
    }
    Ok(Some(ResourceAccess {
        kind: "repository".into(),
        name: name.to_string(),
        actions: granted.iter().map(|a| a.as_str().to_string()).collect(),
        meta: Some(json!({
            "project_path": project.full_path,
            "project_id": project.id,
            "root_namespace_id": root_namespace_id(state, &project.full_path).await?,
        })),
    }))
}

/// The id of the top-level namespace of a project path (GitLab puts it in the claims).
async fn root_namespace_id(
    state: &Shared,
    full_path: &str,
) -> Result<Option<i64>, berth_meta::MetaError> {
    let root = full_path.split('/').next().unwrap_or(full_path);
    Ok(state.meta.namespace_by_path(root).await?.map(|n| n.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let (k, n, a) = parse_scope("repository:g/p/img:pull,push").unwrap();
        assert_eq!((k, n), ("repository", "g/p/img"));
        assert!(a.pull && a.push && !a.delete);
        assert_eq!(parse_scope("registry:catalog:*").unwrap().2, ActionSet::ALL);
        assert!(parse_scope("nonsense").is_none());
    }
}
