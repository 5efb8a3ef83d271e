//! GitLab's container registry protection rules API: protected container
//! repositories (`/projects/:id/registry/protection/repository/rules`) and protected
//! or immutable container tags (`/projects/:id/registry/protection/tag/rules`).
//! Maintainers manage them; a rule that asks for `owner` or `admin` may only be
//! created, changed or deleted by someone who has that level. Enforcement is in
//! `crate::protection`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use berth_core::protection::{
    check_repository_pattern, compile_tag_pattern, ProtectionLevel, RuleKind, Standing,
    MAX_TAG_RULES,
};
use berth_core::AccessLevel;
use berth_meta::{MetaError, Project, ProtectionRule, RuleFields};
use serde::Serialize;
use utoipa::ToSchema;

use super::schemas::{IdOrPath, InvalidRefusedOrMissing, RefusedOrMissing};
use super::{find_project, numeric_id, ApiError, ApiResult, Caller, Params, Path};
use crate::state::{now_ms, AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/projects/{id}/registry/protection/repository/rules",
            get(repository::list).post(repository::create),
        )
        .route(
            "/projects/{id}/registry/protection/repository/rules/{protection_rule_id}",
            patch(repository::update).delete(repository::delete),
        )
        .route(
            "/projects/{id}/registry/protection/tag/rules",
            get(tag::list).post(tag::create),
        )
        .route(
            "/projects/{id}/registry/protection/tag/rules/{protection_rule_id}",
            patch(tag::update).delete(tag::delete),
        )
}

/// The four handlers of one kind of rule (list, create, update, delete), each a thin
/// call of the shared function; `$json` renders a rule as GitLab does for the kind.
macro_rules! rule_routes {
    ($module:ident, $kind:expr, $word:literal, $title:literal, $body:ty, $out:ty, $json:path, $what:literal, $invalid:literal) => {
        pub(crate) mod $module {
            use super::*;

            #[utoipa::path(
                get,
                path = concat!("/projects/{id}/registry/protection/", $word, "/rules"),
                operation_id = concat!("list", $title, "ProtectionRules"),
                tag = "registry",
                params(("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path")),
                responses(
                    (status = 200, description = concat!("The project's ", $what, " rules"), body = [$out]),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn list(
                State(state): State<Shared>,
                caller: Caller,
                Path(id): Path<String>,
            ) -> ApiResult<Response> {
                let (p, _) = maintained(&state, &caller, &id).await?;
                let rules = state.meta.protection_rules(p.id, $kind).await?;
                Ok(Json(rules.iter().map($json).collect::<Vec<_>>()).into_response())
            }

            #[utoipa::path(
                post,
                path = concat!("/projects/{id}/registry/protection/", $word, "/rules"),
                operation_id = concat!("create", $title, "ProtectionRule"),
                tag = "registry",
                params(("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path")),
                request_body = $body,
                responses(
                    (status = 201, description = "The new rule", body = $out),
                    InvalidRefusedOrMissing,
                    (status = 422, description = $invalid, body = super::super::ApiErrorBody),
                )
            )]
            pub(crate) async fn create(
                State(state): State<Shared>,
                caller: Caller,
                Path(id): Path<String>,
                params: Params,
            ) -> ApiResult<Response> {
                let rule = create_rule(&state, &caller, &id, $kind, &params).await?;
                Ok((StatusCode::CREATED, Json($json(&rule))).into_response())
            }

            #[utoipa::path(
                patch,
                path = concat!("/projects/{id}/registry/protection/", $word, "/rules/{protection_rule_id}"),
                operation_id = concat!("update", $title, "ProtectionRule"),
                tag = "registry",
                params(
                    ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
                    ("protection_rule_id" = i64, Path, description = "The rule's id"),
                ),
                request_body = $body,
                responses(
                    (status = 200, description = "The changed rule", body = $out),
                    InvalidRefusedOrMissing,
                    (status = 422, description = $invalid, body = super::super::ApiErrorBody),
                )
            )]
            pub(crate) async fn update(
                State(state): State<Shared>,
                caller: Caller,
                Path((id, rule)): Path<(String, String)>,
                params: Params,
            ) -> ApiResult<Response> {
                let rule = update_rule(&state, &caller, &id, $kind, &rule, &params).await?;
                Ok(Json($json(&rule)).into_response())
            }

            #[utoipa::path(
                delete,
                path = concat!("/projects/{id}/registry/protection/", $word, "/rules/{protection_rule_id}"),
                operation_id = concat!("delete", $title, "ProtectionRule"),
                tag = "registry",
                params(
                    ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
                    ("protection_rule_id" = i64, Path, description = "The rule's id"),
                ),
                responses(
                    (status = 204, description = "Deleted"),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn delete(
                State(state): State<Shared>,
                caller: Caller,
                Path((id, rule)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                delete_rule(&state, &caller, &id, $kind, &rule).await
            }
        }
    };
}

rule_routes!(
    repository,
    RuleKind::Repository,
    "repository",
    "Repository",
    RepositoryRuleBody,
    RepositoryRule,
    repository_json,
    "protected container repository",
    "The rule is invalid or already exists"
);
rule_routes!(
    tag,
    RuleKind::Tag,
    "tag",
    "Tag",
    TagRuleBody,
    TagRule,
    tag_json,
    "protected and immutable container tag",
    "The rule is invalid or already exists, the project has 5 tag rules, or an immutable rule was to change"
);

/// A minimum level: `maintainer`, `owner` or `admin`; `null` when not set.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionAccessLevel {
    Maintainer,
    Owner,
    Admin,
}

fn level(l: Option<ProtectionLevel>) -> Option<ProtectionAccessLevel> {
    l.map(|l| match l {
        ProtectionLevel::Maintainer => ProtectionAccessLevel::Maintainer,
        ProtectionLevel::Owner => ProtectionAccessLevel::Owner,
        ProtectionLevel::Admin => ProtectionAccessLevel::Admin,
    })
}

/// A protected container repository rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepositoryRule {
    pub id: i64,
    pub project_id: i64,
    /// The full repository path; `*` matches any characters.
    pub repository_path_pattern: String,
    pub minimum_access_level_for_push: Option<ProtectionAccessLevel>,
    pub minimum_access_level_for_delete: Option<ProtectionAccessLevel>,
}

/// A protected (or immutable) container tag rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagRule {
    pub id: i64,
    pub project_id: i64,
    /// An RE2 pattern matched against the whole tag name.
    pub tag_name_pattern: String,
    pub minimum_access_level_for_push: Option<ProtectionAccessLevel>,
    pub minimum_access_level_for_delete: Option<ProtectionAccessLevel>,
    /// Nobody may move or delete a matching tag once it exists.
    pub immutable: bool,
}

/// Fields of a repository rule (at least one level is needed).
#[derive(Serialize, ToSchema)]
pub struct RepositoryRuleBody {
    pub repository_path_pattern: Option<String>,
    pub minimum_access_level_for_push: Option<ProtectionAccessLevel>,
    pub minimum_access_level_for_delete: Option<ProtectionAccessLevel>,
}

/// Fields of a tag rule: both levels, or `immutable: true` and neither.
#[derive(Serialize, ToSchema)]
pub struct TagRuleBody {
    pub tag_name_pattern: Option<String>,
    pub minimum_access_level_for_push: Option<ProtectionAccessLevel>,
    pub minimum_access_level_for_delete: Option<ProtectionAccessLevel>,
    pub immutable: Option<bool>,
}

fn repository_json(r: &ProtectionRule) -> RepositoryRule {
    RepositoryRule {
        id: r.id,
        project_id: r.project_id,
        repository_path_pattern: r.pattern.clone(),
        minimum_access_level_for_push: level(r.push),
        minimum_access_level_for_delete: level(r.delete),
    }
}

fn tag_json(r: &ProtectionRule) -> TagRule {
    TagRule {
        id: r.id,
        project_id: r.project_id,
        tag_name_pattern: r.pattern.clone(),
        minimum_access_level_for_push: level(r.push),
        minimum_access_level_for_delete: level(r.delete),
        immutable: r.immutable,
    }
}

fn unprocessable(msg: impl Into<String>) -> ApiError {
    ApiError::message(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

/// The project, if the caller maintains it, and the caller's standing there.
async fn maintained(state: &AppState, caller: &Caller, id: &str) -> ApiResult<(Project, Standing)> {
    let p = find_project(state, caller, id).await?;
    let role = caller
        .require_project_level(state, &p, AccessLevel::Maintainer)
        .await?;
    Ok((
        p,
        Standing {
            role: Some(role),
            admin: caller.admin,
        },
    ))
}

/// A level parameter: `Ok(None)` when absent, `Ok(Some(None))` when sent as null
/// or empty (cleared).
fn level_param(params: &Params, key: &str) -> ApiResult<Option<Option<ProtectionLevel>>> {
    if !params.given(key) {
        return Ok(None);
    }
    match params.string(key)? {
        None => Ok(Some(None)),
        Some(s) if s.is_empty() => Ok(Some(None)),
        Some(s) => match ProtectionLevel::parse(&s) {
            Some(l) => Ok(Some(Some(l))),
            None => Err(ApiError::param(format!(
                "{key} does not have a valid value"
            ))),
        },
    }
}

/// Refuse a rule whose levels the caller does not have themselves.
fn within_reach(who: Standing, levels: &[Option<ProtectionLevel>]) -> ApiResult<()> {
    for l in levels.iter().flatten() {
        if !who.meets(*l) {
            return Err(ApiError::forbidden().because(format!(
                "a rule with the {l} level needs the {l} role or higher"
            )));
        }
    }
    Ok(())
}

fn rule_id(text: &str) -> ApiResult<i64> {
    numeric_id(text).ok_or_else(|| ApiError::not_found("Protection rule"))
}

async fn find_rule(
    state: &AppState,
    p: &Project,
    kind: RuleKind,
    id: i64,
) -> ApiResult<ProtectionRule> {
    state
        .meta
        .protection_rules(p.id, kind)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("Protection rule"))
}

fn meta_refusal(e: MetaError) -> ApiError {
    match e {
        MetaError::Conflict(m) => unprocessable(m),
        other => other.into(),
    }
}

/// The relative pattern stored for a repository rule of `p`.
fn relative(pattern: &str, p: &Project) -> String {
    pattern
        .get(p.full_path.len()..)
        .unwrap_or_default()
        .to_string()
}

/// Validate repository rule fields: the pattern names this project's repositories,
/// at least one level is set.
fn repository_fields(
    p: &Project,
    pattern: &str,
    push: Option<ProtectionLevel>,
    delete: Option<ProtectionLevel>,
) -> ApiResult<RuleFields> {
    let full = check_repository_pattern(pattern, &p.full_path)
        .map_err(|e| unprocessable(format!("Repository path pattern {}", e.message)))?;
    if push.is_none() && delete.is_none() {
        return Err(unprocessable(
            "A rule must have at least a minimum access role for push or delete.",
        ));
    }
    Ok(RuleFields {
        pattern: relative(&full, p),
        push,
        delete,
        immutable: false,
    })
}

/// Validate tag rule fields: an anchored RE2 pattern of at most 100 characters;
/// both levels, or immutable and neither.
fn tag_fields(
    pattern: &str,
    push: Option<ProtectionLevel>,
    delete: Option<ProtectionLevel>,
    immutable: bool,
) -> ApiResult<RuleFields> {
    compile_tag_pattern(pattern)
        .map_err(|e| unprocessable(format!("Tag name pattern {}", e.message)))?;
    if immutable && (push.is_some() || delete.is_some()) {
        return Err(unprocessable(
            "An immutable tag rule cannot have minimum access levels",
        ));
    }
    if !immutable && (push.is_none() || delete.is_none()) {
        return Err(unprocessable(
            "A protected tag rule needs both minimum_access_level_for_push and minimum_access_level_for_delete (or immutable: true)",
        ));
    }
    Ok(RuleFields {
        pattern: pattern.to_string(),
        push,
        delete,
        immutable,
    })
}

/// Create a rule of `kind` from request parameters (the REST API and the web UI).
pub(crate) async fn create_rule(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: RuleKind,
    params: &Params,
) -> ApiResult<ProtectionRule> {
    let (p, who) = maintained(state, caller, id).await?;
    let push = level_param(params, "minimum_access_level_for_push")?.flatten();
    let delete = level_param(params, "minimum_access_level_for_delete")?.flatten();
    let (fields, max) = match kind {
        RuleKind::Repository => {
            let pattern = params.required_string("repository_path_pattern")?;
            (repository_fields(&p, &pattern, push, delete)?, None)
        }
        RuleKind::Tag => {
            let pattern = params.required_string("tag_name_pattern")?;
            let immutable = params.bool("immutable")?.unwrap_or(false);
            (
                tag_fields(&pattern, push, delete, immutable)?,
                Some(MAX_TAG_RULES),
            )
        }
    };
    within_reach(who, &[push, delete])?;
    state
        .meta
        .create_protection_rule(p.id, kind, &fields, max, now_ms())
        .await
        .map_err(meta_refusal)
}

/// Change a rule of `kind` from request parameters; what is not sent stays.
pub(crate) async fn update_rule(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: RuleKind,
    rule: &str,
    params: &Params,
) -> ApiResult<ProtectionRule> {
    let (p, who) = maintained(state, caller, id).await?;
    let old = find_rule(state, &p, kind, rule_id(rule)?).await?;
    within_reach(who, &[old.push, old.delete])?;
    let push = level_param(params, "minimum_access_level_for_push")?.unwrap_or(old.push);
    let delete = level_param(params, "minimum_access_level_for_delete")?.unwrap_or(old.delete);
    let fields = match kind {
        RuleKind::Repository => {
            let pattern = params
                .string("repository_path_pattern")?
                .unwrap_or_else(|| old.pattern.clone());
            repository_fields(&p, &pattern, push, delete)?
        }
        RuleKind::Tag => {
            if old.immutable {
                return Err(unprocessable(
                    "Immutable tag rules cannot be updated; delete it and create another",
                ));
            }
            if params.bool("immutable")? == Some(true) {
                return Err(unprocessable(
                    "A protected tag rule cannot become immutable; create an immutable rule instead",
                ));
            }
            let pattern = params
                .string("tag_name_pattern")?
                .unwrap_or_else(|| old.pattern.clone());
            tag_fields(&pattern, push, delete, false)?
        }
    };
    within_reach(who, &[push, delete])?;
    state
        .meta
        .update_protection_rule(p.id, kind, old.id, &fields)
        .await
        .map_err(meta_refusal)?
        .ok_or_else(|| ApiError::not_found("Protection rule"))
}

/// Delete a rule of `kind` (the REST API and the web UI).
pub(crate) async fn delete_rule(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: RuleKind,
    rule: &str,
) -> ApiResult<Response> {
    let (p, who) = maintained(state, caller, id).await?;
    let old = find_rule(state, &p, kind, rule_id(rule)?).await?;
    within_reach(who, &[old.push, old.delete])?;
    if !state
        .meta
        .delete_protection_rule(p.id, kind, old.id)
        .await?
    {
        return Err(ApiError::not_found("Protection rule"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How many live tags of `p` a rule pattern of `kind` covers now (the web UI's
/// "matches N existing tags"); `None` when the pattern is not valid.
pub(crate) async fn matching_tags(
    state: &AppState,
    p: &Project,
    kind: RuleKind,
    pattern: &str,
) -> ApiResult<Option<i64>> {
    let (repos, _) = state
        .meta
        .repositories_of(
            &[p.id],
            berth_meta::Window {
                offset: 0,
                limit: i64::MAX,
            },
        )
        .await?;
    match kind {
        RuleKind::Repository => {
            let Ok(full) = check_repository_pattern(pattern, &p.full_path) else {
                return Ok(None);
            };
            Ok(Some(
                repos
                    .iter()
                    .filter(|r| berth_core::protection::repository_matches(&full, &r.path))
                    .map(|r| r.tags_count)
                    .sum(),
            ))
        }
        RuleKind::Tag => {
            let Ok(re) = compile_tag_pattern(pattern) else {
                return Ok(None);
            };
            let mut n = 0;
            for r in &repos {
                n += state
                    .meta
                    .all_tags(r.id)
                    .await?
                    .iter()
                    .filter(|t| re.is_match(&t.name))
                    .count() as i64;
            }
            Ok(Some(n))
        }
    }
}
