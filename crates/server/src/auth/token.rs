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
    let params = form_params(query.as_deref().unwrap_or(""));
    let credentials = match basic_credentials(&headers) {
        None => Credentials::None,
        Some(Err(())) => Credentials::Malformed,
        Some(Ok((user, secret))) => Credentials::Secret(user, secret),
    };
    // Docker's login asks for a refresh token (its "identity token") this way.
    let offline = param(&params, "offline_token") == Some("true");
    answer(&state, client, &params, credentials, offline, Format::Get).await
}

/// `POST /jwt/auth`: the OAuth2 form of the token service (the distribution token
/// specification): `grant_type=password` with `username` and `password` (a
/// password or any token, as with Basic auth) or `grant_type=refresh_token` with a
/// `refresh_token` issued before; `access_type=offline` asks for a refresh token.
pub async fn issue_oauth(
    State(state): State<Shared>,
    client: ClientAddr,
    body: axum::body::Bytes,
) -> Response {
    let params = form_params(&String::from_utf8_lossy(&body));
    let credentials = match param(&params, "grant_type") {
        Some("password") => match (param(&params, "username"), param(&params, "password")) {
            (Some(u), Some(p)) => Credentials::Secret(u.to_string(), p.to_string()),
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type=password needs username and password",
                )
            }
        },
        Some("refresh_token") => match param(&params, "refresh_token") {
            Some(t) => Credentials::Refresh(t.to_string()),
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type=refresh_token needs refresh_token",
                )
            }
        },
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?} is not supported; use password or refresh_token"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )
        }
    };
    // A refresh grant keeps its refresh token; only a sign-in gets a new one.
    let offline = param(&params, "access_type") == Some("offline")
        && !matches!(credentials, Credentials::Refresh(_));
    answer(&state, client, &params, credentials, offline, Format::OAuth).await
}

/// What a token request proves its caller with.
enum Credentials {
    None,
    Malformed,
    /// A username with a password or token secret.
    Secret(String, String),
    /// A refresh token issued earlier.
    Refresh(String),
}

/// Which form of the token service answers: GET (Docker token auth) or POST (OAuth2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Get,
    OAuth,
}

fn form_params(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An OAuth2 error answer (RFC 6749 section 5.2), with the registry's `errors` list
/// beside it, which docker reads to show the user why.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let registry_code = if code == "invalid_grant" {
        "UNAUTHORIZED"
    } else {
        "UNSUPPORTED"
    };
    (
        status,
        axum::Json(json!({
            "error": code,
            "error_description": description,
            "errors": [{ "code": registry_code, "message": description }],
        })),
    )
        .into_response()
}

async fn answer(
    state: &Shared,
    client: ClientAddr,
    params: &[(String, String)],
    credentials: Credentials,
    offline: bool,
    format: Format,
) -> Response {
    match issue_inner(state, client, params, credentials, offline, format).await {
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
    params: &[(String, String)],
    credentials: Credentials,
    offline: bool,
    format: Format,
) -> Result<Response, berth_meta::MetaError> {
    let service = param(params, "service");
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
    let refused = |status: StatusCode, code: &str, message: &str| match format {
        Format::Get => error(status, code, message),
        Format::OAuth => oauth_error(status, "invalid_grant", message),
    };

    let principal = match credentials {
        Credentials::None => Principal::Anonymous,
        Credentials::Malformed => {
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
        Credentials::Refresh(secret) => match refreshed_principal(state, &secret).await? {
            Some(p) => p,
            None => {
                tracing::warn!(ip = %client, "refused a refresh token: unknown, expired, or its credential was revoked or changed");
                return Ok(refused(
                    StatusCode::BAD_REQUEST,
                    "UNAUTHORIZED",
                    "the refresh token is invalid, expired, or its credential was revoked; sign in again",
                ));
            }
        },
        Credentials::Secret(user, secret) => {
            let ip = client.to_string();
            match authenticate(state.meta.as_ref(), &state.login, &ip, &user, &secret).await {
                Ok(p) => p,
                Err(AuthError::Invalid) => {
                    return Ok(refused(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        UNAUTHORIZED_MESSAGE,
                    ))
                }
                Err(AuthError::PasswordExpired) => {
                    return Ok(refused(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        super::PASSWORD_EXPIRED_MESSAGE,
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
    let ttl = crate::instance::token_ttl(state.meta.as_ref(), state.settings.token_ttl)
        .await?
        .as_secs() as i64;
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
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": issued_at.to_string(),
    });
    if format == Format::OAuth {
        body["scope"] = json!(scopes.join(" "));
    }
    if offline {
        let client_id = param(params, "client_id").unwrap_or("unknown");
        if let Some(refresh) = new_refresh_token(state, &principal, client_id).await? {
            body["refresh_token"] = json!(refresh);
        }
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// How long a refresh token lasts (docker keeps it as the identity token of a
/// login); its credential's own expiry or revocation ends it sooner.
const REFRESH_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// A fingerprint of a password hash: a new password gives a new one, which ends the
/// refresh tokens issued under the old.
fn password_fingerprint(hash: &str) -> String {
    super::secrets::digest(hash)
}

/// Issue a refresh token bound to the principal's credential; `None` for callers
/// that get none (anonymous, CI jobs: their credentials live for one job).
async fn new_refresh_token(
    state: &Shared,
    principal: &Principal,
    client_id: &str,
) -> Result<Option<String>, berth_meta::MetaError> {
    let (kind, user_id, credential_id, fingerprint) = match principal {
        Principal::User {
            user,
            via: Via::Password,
        } => (
            "password",
            Some(user.id),
            None,
            user.password_hash.as_deref().map(password_fingerprint),
        ),
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => ("personal_access_token", Some(user.id), Some(t.id), None),
        Principal::Deploy(t) => ("deploy_token", None, Some(t.id), None),
        Principal::Anonymous | Principal::Job { .. } => return Ok(None),
    };
    let secret = super::secrets::generate("brt-");
    let now = now_ms();
    let client_id: String = client_id.chars().take(100).collect();
    state
        .meta
        .create_refresh_token(
            &super::secrets::digest(&secret),
            &berth_meta::RefreshToken {
                id: 0,
                kind: kind.to_string(),
                user_id,
                credential_id,
                fingerprint,
                client_id,
                created_at: now,
                expires_at: now + REFRESH_TOKEN_TTL_MS,
            },
        )
        .await?;
    // Expired ones are forgotten as new ones come, as web sessions are.
    if let Err(e) = state.meta.delete_expired_refresh_tokens(now).await {
        tracing::warn!(error = %e, "forgetting expired refresh tokens");
    }
    Ok(Some(secret))
}

/// The principal a refresh token stands for, if it and its credential are still
/// good: the user active, the token not revoked or expired, the password unchanged.
async fn refreshed_principal(
    state: &Shared,
    secret: &str,
) -> Result<Option<Principal>, berth_meta::MetaError> {
    let meta = state.meta.as_ref();
    let now = now_ms();
    let Some(t) = meta
        .refresh_token(&super::secrets::digest(secret), now)
        .await?
    else {
        return Ok(None);
    };
    // Issued for passwords (a "user" principal), personal access and deploy tokens.
    let kind = match t.kind.as_str() {
        "password" => "user",
        kind @ ("personal_access_token" | "deploy_token") => kind,
        _ => return Ok(None),
    };
    let principal = super::principal_from_ids(meta, kind, t.user_id, t.credential_id).await?;
    Ok(principal.filter(|p| {
        super::still_valid(p, now)
            && match p {
                // A new password ends the refresh tokens issued under the old.
                Principal::User {
                    user,
                    via: Via::Password,
                } => {
                    let current = user.password_hash.as_deref().map(password_fingerprint);
                    current.is_some() && current == t.fingerprint
                }
                _ => true,
            }
    }))
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

/// What the token service would grant `principal` of `requested` on repository
/// `name`; `None` when nothing (unknown path, no project, no permission).
pub(crate) async fn grant_repository(
    state: &crate::state::AppState,
    principal: &Principal,
    name: &str,
    requested: ActionSet,
) -> Result<Option<ResourceAccess>, berth_meta::MetaError> {
    if RepoName::parse(name).is_err() {
        return Ok(None);
    }
    // A group's dependency proxy: the group decides, not a project.
    if let Some((group, _)) = crate::proxy::split_name(name) {
        return crate::proxy::grant(state, principal, name, group, requested).await;
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
    state: &crate::state::AppState,
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
