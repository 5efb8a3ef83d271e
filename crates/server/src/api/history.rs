//! Tag history and restore (Berth's extension of GitLab's registry API): a tag's
//! changes, the deleted tags that can still be put back, restoring one, and undoing a
//! whole cleanup run. The undo window is the GC review delay: until then garbage
//! collection keeps the manifest a tag left.
//!
//! Reading needs what reading the registry needs; restoring a tag needs push (a
//! developer), undoing a cleanup run needs what running cleanup needs (a maintainer).

use super::entities::timestamp;
use super::registry::{readable, repository_of, tag_details};
use super::schemas::{
    CleanupRunRestore, DeletedTag, IdOrPath, InvalidRefusedOrMissing, PageParams, RefusedOrMissing,
    RestoreTagParams, TagActor, TagDetails, TagHistoryEvent,
};
use super::{numeric_id, ApiError, ApiResult, Caller, Pagination, Params, Path, View};
use crate::state::{now_ms, AppState, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_meta::{Actor, RepositoryInfo, Restore, RunRestore, TagInfo};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}/history",
            get(tag_history),
        )
        .route(
            "/projects/{id}/registry/repositories/{repository_id}/deleted_tags",
            get(deleted_tags),
        )
        .route(
            "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}/restore",
            post(restore_tag),
        )
        .route(
            "/projects/{id}/registry/cleanup_runs/{run_id}/restore",
            post(restore_run),
        )
}

/// Changes listed at most (the history is kept for `tag_history.retention`).
const HISTORY_LIMIT: i64 = 1000;

pub(crate) fn actor(a: Option<Actor>) -> Option<TagActor> {
    a.map(|a| TagActor {
        kind: a.kind,
        id: a.id,
        username: a.username,
    })
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}/history",
    operation_id = "getTagHistory",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        ("tag_name" = String, Path, description = "The tag"),
    ),
    responses(
        (status = 200, description = "The tag's changes, newest first (at most 1,000, kept for tag_history.retention)", body = [TagHistoryEvent]),
        RefusedOrMissing,
    )
)]
async fn tag_history(
    State(state): State<Shared>,
    caller: Caller,
    Path((id, rid, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (p, _) = readable(&state, &caller, &id).await?;
    let r = repository_of(&state, &p, &rid).await?;
    let events = state.meta.tag_history(r.id, &tag, HISTORY_LIMIT).await?;
    if events.is_empty() {
        return Err(ApiError::not_found("Tag"));
    }
    let body: Vec<TagHistoryEvent> = events
        .into_iter()
        .map(|e| TagHistoryEvent {
            action: e.action,
            digest: e.digest,
            previous_digest: e.previous_digest,
            created_at: timestamp(e.at),
            actor: actor(e.actor),
            cleanup_run_id: e.cleanup_run_id,
        })
        .collect();
    Ok(Json(body).into_response())
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/repositories/{repository_id}/deleted_tags",
    operation_id = "listDeletedTags",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        PageParams,
    ),
    responses(
        (status = 200, description = "Tags deleted whose manifests are still there, by name", body = [DeletedTag]),
        InvalidRefusedOrMissing,
    )
)]
async fn deleted_tags(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (p, _) = readable(&state, &caller, &id).await?;
    let r = repository_of(&state, &p, &rid).await?;
    let (tags, total) = state.meta.deleted_tags(r.id, pg.window()).await?;
    let window = state.settings.gc_review_delay.as_millis() as i64;
    let body: Vec<DeletedTag> = tags
        .into_iter()
        .map(|t| DeletedTag {
            name: t.name,
            digest: t.digest,
            deleted_at: timestamp(t.deleted_at),
            deleted_by: actor(t.deleted_by),
            cleanup_run_id: t.cleanup_run_id,
            restorable_until: timestamp(t.deleted_at.saturating_add(window)),
        })
        .collect();
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    post,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}/restore",
    operation_id = "restoreTag",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        ("tag_name" = String, Path, description = "The tag"),
        RestoreTagParams,
    ),
    responses(
        (status = 201, description = "The tag, back on its digest", body = TagDetails),
        (status = 409, description = "The tag exists on another digest (`force=true` moves it)", body = super::schemas::MessageError),
        (status = 410, description = "The manifest is gone (garbage collected)", body = super::schemas::MessageError),
        InvalidRefusedOrMissing,
    )
)]
async fn restore_tag(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path((id, rid, tag)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let digest = params.string("digest")?;
    let force = params.bool("force")?.unwrap_or(false);
    let (r, t) = restore(&state, &caller, &id, &rid, &tag, digest, force).await?;
    Ok((StatusCode::CREATED, Json(tag_details(&view, &r.path, &t))).into_response())
}

/// Restore tag `tag` of repository `rid` of project `id` (whoever may push there);
/// the REST API and the web UI both restore through here. Returns the repository and
/// the tag as it is now.
pub(crate) async fn restore(
    state: &AppState,
    caller: &Caller,
    id: &str,
    rid: &str,
    tag: &str,
    digest: Option<String>,
    force: bool,
) -> ApiResult<(RepositoryInfo, TagInfo)> {
    let (p, actions) = readable(state, caller, id).await?;
    if !actions.push {
        return Err(ApiError::forbidden());
    }
    let r = repository_of(state, &p, rid).await?;
    if let Some(d) = &digest {
        if d.parse::<berth_oci::Digest>().is_err() {
            return Err(ApiError::param("digest is invalid"));
        }
    }
    let who = crate::auth::actor_of(&caller.principal);
    let outcome = state
        .meta
        .restore_tag(r.id, tag, digest.as_deref(), force, &who, now_ms())
        .await?;
    match outcome {
        Restore::Restored(_) | Restore::Unchanged(_) => {}
        Restore::Conflict { current } => {
            return Err(ApiError::message(
                StatusCode::CONFLICT,
                format!(
                    "tag {tag} points at {current} now; restore with force=true to move it back"
                ),
            ))
        }
        Restore::Gone(d) => {
            return Err(ApiError::message(
                StatusCode::GONE,
                format!("manifest {d} is gone (garbage collected); tag {tag} cannot be restored"),
            ))
        }
        Restore::Unknown => {
            return Err(match digest {
                Some(d) => ApiError::message(
                    StatusCode::NOT_FOUND,
                    format!("404 tag {tag} never pointed at {d}"),
                ),
                None => ApiError::not_found("Deleted tag"),
            })
        }
    }
    let t = state
        .meta
        .repository_tag(r.id, tag)
        .await?
        .ok_or_else(|| ApiError::not_found("Tag"))?;
    Ok((r, t))
}

#[utoipa::path(
    post,
    path = "/projects/{id}/registry/cleanup_runs/{run_id}/restore",
    operation_id = "restoreCleanupRun",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("run_id" = i64, Path, description = "The cleanup run (its id is in the cleanup log)"),
    ),
    responses(
        (status = 201, description = "Every tag the run deleted that could be restored is back", body = CleanupRunRestore),
        RefusedOrMissing,
    )
)]
async fn restore_run(
    State(state): State<Shared>,
    caller: Caller,
    Path((id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (run, done) = undo_run(&state, &caller, &id, &run_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CleanupRunRestore {
            run_id: run,
            restored: done.restored,
            gone: done.gone,
            skipped: done.skipped,
        }),
    )
        .into_response())
}

/// Undo cleanup run `run_id` of project `id` (maintainers); the REST API and the web
/// UI both undo through here.
pub(crate) async fn undo_run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    run_id: &str,
) -> ApiResult<(i64, RunRestore)> {
    let (p, actions) = readable(state, caller, id).await?;
    if !actions.delete {
        return Err(ApiError::forbidden());
    }
    let not_found = || ApiError::not_found("Cleanup run");
    let run = numeric_id(run_id).ok_or_else(not_found)?;
    match state.meta.cleanup_run(run).await? {
        Some(r) if r.project_id == p.id => {}
        _ => return Err(not_found()),
    }
    let who = crate::auth::actor_of(&caller.principal);
    let done = state.meta.restore_cleanup_run(run, &who, now_ms()).await?;
    tracing::info!(
        project = %p.full_path,
        run,
        restored = done.restored,
        gone = done.gone,
        skipped = done.skipped,
        "cleanup run undone"
    );
    Ok((run, done))
}
