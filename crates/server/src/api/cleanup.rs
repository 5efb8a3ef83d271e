//! `GET /projects/:id/registry/cleanup_preview` (beyond GitLab): what a cleanup run
//! would do now, per repository — the tags it would delete and the tags it keeps,
//! each with the step that decided it. The policy is the saved one, or the one given
//! in the query (`name_regex`, `name_regex_keep`, `keep_n`, `older_than`), so a
//! policy can be tried before it is saved. Also the log of past deletions.

use super::entities::timestamp;
use super::registry::registry_actions;
use super::schemas::{
    BulkDeleteParams, CleanupLogEntry, CleanupPreview, CleanupPreviewRepository, CleanupPreviewTag,
    IdOrPath, InvalidRefusedOrMissing, RefusedOrMissing,
};
use super::{find_project, ApiError, ApiResult, Caller, Params, Path, Window};
use crate::cleanup::{plan, rules_of};
use crate::state::{now_ms, AppState, Shared};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::cleanup::Rules;
use berth_meta::Project;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/projects/{id}/registry/cleanup_preview", get(preview))
        .route("/projects/{id}/registry/cleanup_log", get(log))
        .route(
            "/projects/{id}/registry/cleanup_run",
            axum::routing::post(run_now),
        )
}

const POLICY_KEYS: [&str; 5] = [
    "name_regex",
    "name_regex_delete",
    "name_regex_keep",
    "keep_n",
    "older_than",
];

/// Rules from the query when it names any policy field, else from the saved policy.
pub(crate) async fn rules_for(
    state: &AppState,
    project_id: i64,
    params: &Params,
) -> ApiResult<Rules> {
    if POLICY_KEYS.iter().any(|k| params.has(k)) {
        let delete = match params.string("name_regex_delete")? {
            Some(r) => Some(r),
            None => params.string("name_regex")?,
        };
        let keep = params.string("name_regex_keep")?;
        let older = params.string("older_than")?;
        return Rules::new(
            delete.as_deref(),
            keep.as_deref(),
            params.int("keep_n")?,
            older.as_deref(),
        )
        .map_err(|e| ApiError::validation(e.field, e.message));
    }
    let policy = state
        .meta
        .expiration_policy(project_id)
        .await?
        .unwrap_or_else(crate::cleanup::default_policy);
    rules_of(&policy).map_err(|e| ApiError::validation(e.field, e.message))
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/cleanup_preview",
    operation_id = "previewCleanup",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        BulkDeleteParams,
    ),
    responses(
        (status = 200, description = "Per repository, the tags a cleanup run would delete and keep now", body = CleanupPreview),
        InvalidRefusedOrMissing,
    )
)]
async fn preview(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let p = find_project(&state, &caller, &id).await?;
    if !registry_actions(&state, &caller, &p).await?.pull {
        return Err(ApiError::forbidden());
    }
    let rules = rules_for(&state, p.id, &params).await?;
    Ok(Json(preview_of(&state, &p, &rules).await?).into_response())
}

/// What a cleanup run under `rules` would delete and keep now in every repository of
/// `p` (for the REST API and the web UI's live preview).
pub(crate) async fn preview_of(
    state: &AppState,
    p: &Project,
    rules: &Rules,
) -> ApiResult<CleanupPreview> {
    let now = now_ms();
    let mut repositories = Vec::new();
    let (repos, _) = state
        .meta
        .repositories_of(
            &[p.id],
            Window {
                offset: 0,
                limit: i64::MAX,
            },
        )
        .await?;
    for r in repos {
        let plan = plan(state.meta.as_ref(), r.id, rules, now).await?;
        let mut delete = Vec::new();
        let mut keep = Vec::new();
        for (t, step) in plan.tags.iter().zip(&plan.steps) {
            let entry = CleanupPreviewTag {
                name: t.name.clone(),
                digest: t.digest.clone(),
                created_at: timestamp(t.created_at),
                pushed_at: timestamp(t.pushed_at),
                step: step.describe(),
            };
            if step.deletes() {
                delete.push(entry);
            } else {
                keep.push(entry);
            }
        }
        repositories.push(CleanupPreviewRepository {
            id: r.id,
            path: r.path,
            delete,
            keep,
        });
    }
    Ok(CleanupPreview {
        name_regex: rules.name_regex.as_str().to_string(),
        repositories,
    })
}

/// `POST /projects/:id/registry/cleanup_run` (maintainers): make the saved, enabled
/// policy due now instead of at its `next_run_at`; the scheduler starts it at once.
#[utoipa::path(
    post,
    path = "/projects/{id}/registry/cleanup_run",
    operation_id = "runCleanupNow",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    responses(
        (status = 202, description = "The policy is due now; the scheduler starts it"),
        InvalidRefusedOrMissing,
    )
)]
async fn run_now(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let p = find_project(&state, &caller, &id).await?;
    if !registry_actions(&state, &caller, &p).await?.delete {
        return Err(ApiError::forbidden());
    }
    let Some(mut policy) = state
        .meta
        .expiration_policy(p.id)
        .await?
        .filter(|p| p.enabled)
    else {
        return Err(ApiError::message(
            axum::http::StatusCode::BAD_REQUEST,
            "the project's cleanup policy is not enabled",
        ));
    };
    policy.next_run_at = Some(now_ms());
    state
        .meta
        .set_expiration_policy(p.id, &policy, now_ms())
        .await?;
    state.jobs.wake();
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/cleanup_log",
    operation_id = "getCleanupLog",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    responses(
        (status = 200, description = "The latest 500 deletions by cleanup (and tags protection rules kept from it), newest first", body = [CleanupLogEntry]),
        RefusedOrMissing,
    )
)]
async fn log(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let p = find_project(&state, &caller, &id).await?;
    if !registry_actions(&state, &caller, &p).await?.pull {
        return Err(ApiError::forbidden());
    }
    let entries: Vec<CleanupLogEntry> = state
        .meta
        .cleanup_log(p.id, 500)
        .await?
        .into_iter()
        .map(|e| CleanupLogEntry {
            repository_id: e.repository_id,
            repository_path: e.repository_path,
            tag: e.tag,
            digest: e.digest,
            reason: e.reason,
            deleted_at: timestamp(e.deleted_at),
            cleanup_run_id: e.run_id,
            outcome: if e.kept_by_rule.is_some() {
                "kept"
            } else {
                "deleted"
            }
            .into(),
            step: e
                .kept_by_rule
                .map(|r| berth_core::cleanup::Step::Protected(r).describe()),
            protected_by_rule: e.kept_by_rule,
        })
        .collect();
    Ok(Json(entries).into_response())
}
