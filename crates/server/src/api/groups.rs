//! Groups: listing what the caller may see, creating (top level or nested) and
//! updating groups, and their subgroups, descendants and projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::{AccessLevel, Visibility};
use berth_meta::{GroupUpdate, Namespace, Source, Window};

use super::schemas::{
    ApiErrorBody, CreateGroup, Group, GroupListParams, IdOrPath, InvalidOrRefused,
    InvalidRefusedOrMissing, MessageError, MessageValue, PageParams, Project as ProjectBody,
    ProjectListParams, TransferGroup, UpdateGroup,
};
use super::{
    find_group, projects, visibility_rank, ApiError, ApiResult, Caller, Pagination, Params, Path,
    View,
};
use crate::org::{self, OrgError};
use crate::state::{now_ms, AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/groups", get(list).post(create))
        .route("/groups/{id}", get(show).put(update).delete(delete))
        .route("/groups/{id}/subgroups", get(subgroups))
        .route("/groups/{id}/descendant_groups", get(descendant_groups))
        .route("/groups/{id}/projects", get(group_projects))
        .route("/groups/{id}/transfer", axum::routing::post(transfer))
        .route(
            "/groups/{id}/projects/{project_id}",
            axum::routing::post(transfer_project),
        )
}

/// The caller's own membership level in a group (no administrator override), for
/// the `owned` and `min_access_level` filters.
async fn member_level(
    state: &AppState,
    caller: &Caller,
    g: &Namespace,
) -> ApiResult<Option<AccessLevel>> {
    match caller.user() {
        Some(u) => Ok(state
            .meta
            .group_role(u.id, g.id, &crate::auth::today())
            .await?),
        None => Ok(None),
    }
}

/// Filter `groups` to what the caller may see and what the list parameters ask for,
/// sorted as asked (GitLab's default: by name, ascending).
async fn filter_and_sort(
    state: &AppState,
    caller: &Caller,
    groups: Vec<Namespace>,
    params: &Params,
) -> ApiResult<Vec<Namespace>> {
    let search = params
        .string("search")?
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let owned = params.bool("owned")? == Some(true);
    let min_level = params.int("min_access_level")?;
    let members_only = params.bool("all_available")? == Some(false) && !caller.admin;
    let top_level = params.bool("top_level_only")? == Some(true);
    let mut out = Vec::new();
    for g in groups {
        if let Some(s) = &search {
            if !g.name.to_ascii_lowercase().contains(s)
                && !g.full_path.to_ascii_lowercase().contains(s)
            {
                continue;
            }
        }
        if top_level && g.parent_id.is_some() {
            continue;
        }
        if !caller.can_read_group(state, &g).await? {
            continue;
        }
        if owned || min_level.is_some() || members_only {
            let level = member_level(state, caller, &g)
                .await?
                .map(AccessLevel::value);
            let wanted = if owned {
                Some(AccessLevel::Owner.value())
            } else {
                min_level
            };
            match (level, wanted) {
                (None, _) => continue,
                (Some(l), Some(w)) if l < w => continue,
                _ => {}
            }
        }
        out.push(g);
    }
    match params.string("order_by")?.as_deref().unwrap_or("name") {
        "name" | "similarity" => out.sort_by_key(|g| (g.name.to_ascii_lowercase(), g.id)),
        "path" => out.sort_by_key(|g| (g.full_path.to_ascii_lowercase(), g.id)),
        "id" => out.sort_by_key(|g| g.id),
        _ => return Err(ApiError::param("order_by does not have a valid value")),
    }
    match params.string("sort")?.as_deref().unwrap_or("asc") {
        "asc" => {}
        "desc" => out.reverse(),
        _ => return Err(ApiError::param("sort does not have a valid value")),
    }
    Ok(out)
}

async fn respond_groups(
    pg: &Pagination,
    view: &mut View,
    groups: Vec<Namespace>,
) -> ApiResult<Response> {
    let (page, total) = pg.slice(groups);
    let mut body = Vec::with_capacity(page.len());
    for g in &page {
        body.push(view.group(g).await?);
    }
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    get,
    path = "/groups",
    operation_id = "listGroups",
    tag = "groups",
    params(
        PageParams,
        GroupListParams,
    ),
    responses(
        (status = 200, description = "Groups the caller may see", body = [Group]),
        InvalidOrRefused,
    )
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    mut view: View,
    params: Params,
) -> ApiResult<Response> {
    let (groups, _) = state
        .meta
        .groups(
            None,
            Window {
                offset: 0,
                limit: i64::MAX,
            },
        )
        .await?;
    let groups = filter_and_sort(&state, &caller, groups, &params).await?;
    respond_groups(&pg, &mut view, groups).await
}

#[utoipa::path(
    get,
    path = "/groups/{id}",
    operation_id = "getGroup",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        ("statistics" = Option<bool>, Query, description = "Include storage statistics (dependency_proxy_size; Reporter or higher)"),
    ),
    responses(
        (status = 200, description = "The group", body = Group),
        InvalidRefusedOrMissing,
    )
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    let mut body = view.group(&g).await?;
    if params.bool("statistics")? == Some(true) {
        caller
            .require_group_level(&state, &g, AccessLevel::Reporter)
            .await?;
        body.statistics = Some(super::schemas::GroupStatistics {
            dependency_proxy_size: state.meta.proxy_usage_below(g.id).await?,
        });
    }
    Ok(Json(body).into_response())
}

/// GitLab's answer when a group cannot be saved: 400 with the model errors written
/// as a Ruby hash, `Failed to save group {:path=>["has already been taken"]}`.
fn failed_to_save(e: ApiError) -> ApiError {
    let ApiErrorBody::Message(MessageError {
        message: MessageValue::Fields(errors),
    }) = &e.body
    else {
        return e;
    };
    let fields: Vec<String> = errors
        .iter()
        .map(|(field, problems)| {
            // Each problem quoted as a JSON (and Ruby) string.
            let list: Vec<String> = problems
                .iter()
                .map(|p| serde_json::Value::from(p.as_str()).to_string())
                .collect();
            format!(":{field}=>[{}]", list.join(", "))
        })
        .collect();
    ApiError::message(
        StatusCode::BAD_REQUEST,
        format!("Failed to save group {{{}}}", fields.join(", ")),
    )
}

fn visibility_problem(v: Visibility, parent: Visibility) -> Option<ApiError> {
    (visibility_rank(v) > visibility_rank(parent)).then(|| {
        ApiError::validation(
            "visibility_level",
            format!(
                "{} is not allowed since the parent group has a {} visibility.",
                v.as_str(),
                parent.as_str()
            ),
        )
    })
}

#[utoipa::path(
    post,
    path = "/groups",
    operation_id = "createGroup",
    tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, description = "The new group; the caller owns it", body = Group),
        InvalidRefusedOrMissing,
    )
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    params: Params,
) -> ApiResult<Response> {
    let group = create_group(&state, &caller, &params)
        .await
        .map_err(failed_to_save)?;
    Ok((StatusCode::CREATED, Json(view.group(&group).await?)).into_response())
}

/// Create a group the caller owns (the REST API and the new-group page); a subgroup
/// needs maintainer or more in its parent. Refusals name their field; the REST API
/// words them as GitLab's "Failed to save group".
pub(crate) async fn create_group(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<Namespace> {
    let user = caller.require_user()?.clone();
    let name = params.required_string("name")?;
    let path = params.required_string("path")?;
    let visibility = params
        .choice::<Visibility>("visibility")?
        .unwrap_or(Visibility::Private);
    let description = params.string("description")?.unwrap_or_default();
    let parent = match params.int("parent_id")? {
        Some(id) => {
            let parent = find_group(state, caller, &id.to_string()).await?;
            // GitLab's default "roles allowed to create subgroups": maintainers.
            caller
                .require_group_level(state, &parent, AccessLevel::Maintainer)
                .await?;
            if let Some(e) = visibility_problem(visibility, parent.visibility) {
                return Err(e);
            }
            Some(parent)
        }
        None => {
            if !caller.admin && !crate::instance::can_create_group(state.meta.as_ref()).await? {
                return Err(ApiError::forbidden().because("top-level groups: administrators only"));
            }
            None
        }
    };
    let group = org::create_group(
        state.meta.as_ref(),
        &name,
        &path,
        parent.as_ref().map(|p| p.id),
        visibility,
        &description,
    )
    .await
    .map_err(|e: OrgError| ApiError::from(e))?;
    state
        .meta
        .set_member(
            Source::Namespace(group.id),
            user.id,
            AccessLevel::Owner,
            None,
            now_ms(),
        )
        .await?;
    Ok(group)
}

#[utoipa::path(
    put,
    path = "/groups/{id}",
    operation_id = "updateGroup",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
    ),
    request_body = UpdateGroup,
    responses(
        (status = 200, description = "The updated group", body = Group),
        InvalidRefusedOrMissing,
    )
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = update_group(&state, &caller, &id, &params).await?;
    Ok(Json(view.group(&g).await?).into_response())
}

/// Change a group's name, description, visibility or path (the REST API and the
/// group settings page): maintainers, and owners for the path, which moves every
/// project and image below it.
pub(crate) async fn update_group(
    state: &AppState,
    caller: &Caller,
    id: &str,
    params: &Params,
) -> ApiResult<Namespace> {
    let g = find_group(state, caller, id).await?;
    caller
        .require_group_level(state, &g, AccessLevel::Maintainer)
        .await?;
    let new_path = super::new_path(
        params,
        &g.path,
        caller.require_group_level(state, &g, AccessLevel::Owner),
        refuse_move(state, &g),
        "Cannot update the path because there are projects under this group that contain Docker images in their Container Registry. Please remove the images from your projects first and try again.",
    )
    .await?;
    let name = super::new_name(params)?;
    let visibility = params.choice::<Visibility>("visibility")?;
    if let Some(v) = visibility {
        check_new_visibility(state, &g, v).await?;
    }
    let update = GroupUpdate {
        name,
        visibility,
        description: params.string("description")?,
    };
    let mut g = state
        .meta
        .update_group(g.id, &update)
        .await?
        .ok_or_else(|| ApiError::not_found("Group"))?;
    if let Some(path) = new_path {
        // Every group, project and container repository below moves with it.
        g = state.meta.move_group(g.id, None, &path).await?;
    }
    Ok(g)
}

/// Whether GitLab's refusal applies: the instance refuses to move groups with
/// registry tags below them (off by default: Berth moves the repositories along).
async fn refuse_move(state: &AppState, g: &Namespace) -> ApiResult<bool> {
    if !state.settings.refuse_moves_with_tags {
        return Ok(false);
    }
    for p in state.meta.projects_in(g.id, true).await? {
        if state.meta.project_tags_count(p.id).await? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `DELETE /groups/:id`: owners (and administrators) delete a group with its
/// subgroups and all their projects (as `DELETE /projects/:id` does), memberships,
/// deploy tokens and dependency-proxy caches, in one transaction. Storage is freed
/// by garbage collection afterwards.
#[utoipa::path(
    delete,
    path = "/groups/{id}",
    operation_id = "deleteGroup",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
    ),
    responses(
        (status = 202, description = "Deleted (refused with 403 while a project below holds a repository or tag a protection rule forbids the caller to delete)", body = super::schemas::Accepted),
        super::schemas::RefusedOrMissing,
    )
)]
async fn delete(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_group(&state, &caller, &id).await?;
    Ok(super::schemas::Accepted::response())
}

/// Delete a group and everything below it (owners; the REST API and the general
/// settings page).
pub(crate) async fn delete_group(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Namespace> {
    let g = find_group(state, caller, id).await?;
    caller
        .require_group_level(state, &g, AccessLevel::Owner)
        .await?;
    let projects = state.meta.projects_in(g.id, true).await?;
    super::registry::check_projects_deletable(state, caller, &projects).await?;
    state.meta.delete_group(g.id, now_ms()).await?;
    Ok(g)
}

/// `POST /groups/:id/transfer` (`group_id`: the new parent; none makes it top-level).
#[utoipa::path(
    post,
    path = "/groups/{id}/transfer",
    operation_id = "transferGroup",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
    ),
    request_body = Option<TransferGroup>,
    responses(
        (status = 201, description = "The moved group", body = Group),
        InvalidRefusedOrMissing,
    )
)]
async fn transfer(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let moved = transfer_group(&state, &caller, &id, params.int("group_id")?).await?;
    Ok((StatusCode::CREATED, Json(view.group(&moved).await?)).into_response())
}

/// Move group `id` under group `parent` (`None`: to the top level), everything
/// below it following, in one transaction (owners of both; the REST API and the
/// general settings page).
pub(crate) async fn transfer_group(
    state: &AppState,
    caller: &Caller,
    id: &str,
    parent: Option<i64>,
) -> ApiResult<Namespace> {
    let g = find_group(state, caller, id).await?;
    caller
        .require_group_level(state, &g, AccessLevel::Owner)
        .await?;
    let parent = match parent {
        Some(pid) => {
            let parent = find_group(state, caller, &pid.to_string()).await?;
            caller
                .require_group_level(state, &parent, AccessLevel::Owner)
                .await?;
            Some(parent.id)
        }
        // Owners may make their group top-level.
        None => None,
    };
    if refuse_move(state, &g).await? {
        return Err(ApiError::message(
            StatusCode::BAD_REQUEST,
            "Transfer failed: Cannot update the path because there are projects under this group that contain Docker images in their Container Registry. Please remove the images from your projects first and try again.",
        ));
    }
    Ok(state.meta.move_group(g.id, Some(parent), &g.path).await?)
}

/// `POST /groups/:id/projects/:project_id`: an administrator moves a project into the group.
#[utoipa::path(
    post,
    path = "/groups/{id}/projects/{project_id}",
    operation_id = "transferProjectToGroup",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        ("project_id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    responses(
        (status = 201, description = "The moved project (administrators)", body = ProjectBody),
        InvalidRefusedOrMissing,
    )
)]
async fn transfer_project(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path((id, project_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let g = find_group(&state, &caller, &id).await?;
    let p = crate::api::find_project(&state, &caller, &project_id).await?;
    super::projects::check_transfer(&state, &p).await?;
    let moved = state
        .meta
        .move_project(p.id, g.id, &p.path, &p.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view.project(&moved, &caller).await?),
    )
        .into_response())
}

/// A group's visibility stays within its parent's and above its subgroups' and
/// projects', as GitLab validates.
async fn check_new_visibility(state: &AppState, g: &Namespace, v: Visibility) -> ApiResult<()> {
    if let Some(parent_id) = g.parent_id {
        if let Some(parent) = state.meta.namespace(parent_id).await? {
            if let Some(e) = visibility_problem(v, parent.visibility) {
                return Err(e);
            }
        }
    }
    let rank = visibility_rank(v);
    let subgroups = state.meta.subgroups(g.id).await?;
    if subgroups
        .iter()
        .any(|s| visibility_rank(s.visibility) > rank)
    {
        return Err(ApiError::validation(
            "visibility_level",
            format!(
                "{} is not allowed since there are sub-groups with higher visibility.",
                v.as_str()
            ),
        ));
    }
    let projects = state.meta.projects_in(g.id, false).await?;
    if projects
        .iter()
        .any(|p| visibility_rank(p.visibility) > rank)
    {
        return Err(ApiError::validation(
            "visibility_level",
            format!(
                "{} is not allowed since this group contains projects with higher visibility.",
                v.as_str()
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/groups/{id}/subgroups",
    operation_id = "listSubgroups",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        PageParams,
        GroupListParams,
    ),
    responses(
        (status = 200, description = "The group's direct subgroups", body = [Group]),
        InvalidRefusedOrMissing,
    )
)]
async fn subgroups(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    let groups = state.meta.subgroups(g.id).await?;
    let groups = filter_and_sort(&state, &caller, groups, &params).await?;
    respond_groups(&pg, &mut view, groups).await
}

#[utoipa::path(
    get,
    path = "/groups/{id}/descendant_groups",
    operation_id = "listDescendantGroups",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        PageParams,
        GroupListParams,
    ),
    responses(
        (status = 200, description = "Every group below the group", body = [Group]),
        InvalidRefusedOrMissing,
    )
)]
async fn descendant_groups(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    let groups = state.meta.descendant_groups(g.id).await?;
    let groups = filter_and_sort(&state, &caller, groups, &params).await?;
    respond_groups(&pg, &mut view, groups).await
}

#[utoipa::path(
    get,
    path = "/groups/{id}/projects",
    operation_id = "listGroupProjects",
    tag = "groups",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        PageParams,
        ProjectListParams,
        ("include_subgroups" = Option<bool>, Query, description = "Include projects of subgroups"),
    ),
    responses(
        (status = 200, description = "The group's projects", body = [ProjectBody]),
        InvalidRefusedOrMissing,
    )
)]
async fn group_projects(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    let include_subgroups = params.bool("include_subgroups")?.unwrap_or(false);
    let list = state.meta.projects_in(g.id, include_subgroups).await?;
    let list = projects::filter_and_sort(&state, &caller, list, &params).await?;
    projects::respond_projects(&pg, &mut view, &caller, list).await
}
