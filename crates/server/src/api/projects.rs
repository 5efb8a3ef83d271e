//! Projects: listing what the caller may see, creating projects in a group or a user
//! namespace, and changing a project's name, description, visibility and registry
//! access level. Path changes belong to project moves (not here).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::{AccessLevel, RegistryAccess, Visibility};
use berth_meta::{Namespace, NamespaceKind, Project, ProjectUpdate, Source};

use super::schemas::{
    Accepted, ApiErrorBody, CreateProject, IdOrPath, InvalidOrRefused, InvalidRefusedOrMissing,
    PageParams, Project as ProjectBody, ProjectListParams, RefusedOrMissing, TransferProject,
    UpdateProject,
};
use super::{
    find_project, numeric_id, visibility_rank, ApiError, ApiResult, Caller, Pagination, Params,
    Path, View,
};
use crate::org;
use crate::state::{now_ms, AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(show).put(update).delete(delete))
        .route("/projects/{id}/transfer", axum::routing::put(transfer))
}

/// Filter `projects` to what the caller may see and what the list parameters ask
/// for, sorted as asked (GitLab's default: newest first).
pub(super) async fn filter_and_sort(
    state: &AppState,
    caller: &Caller,
    projects: Vec<Project>,
    params: &Params,
) -> ApiResult<Vec<Project>> {
    let search = params
        .string("search")?
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let visibility = params.choice::<Visibility>("visibility")?;
    let owned = params.bool("owned")? == Some(true);
    let membership = params.bool("membership")? == Some(true);
    let min_level = params.int("min_access_level")?;
    let today = crate::auth::today();
    let mut out = Vec::new();
    for p in projects {
        if let Some(s) = &search {
            if !p.name.to_ascii_lowercase().contains(s)
                && !p.full_path.to_ascii_lowercase().contains(s)
            {
                continue;
            }
        }
        if visibility.is_some_and(|v| v != p.visibility) {
            continue;
        }
        if !caller.can_read_project(state, &p).await? {
            continue;
        }
        if owned || membership || min_level.is_some() {
            // The caller's own role, without the administrator override.
            let level = match caller.user() {
                Some(u) => state.meta.project_role(u.id, p.id, &today).await?,
                None => None,
            };
            let Some(level) = level.map(AccessLevel::value) else {
                continue;
            };
            if owned && level < AccessLevel::Owner.value() {
                continue;
            }
            if min_level.is_some_and(|m| level < m) {
                continue;
            }
        }
        out.push(p);
    }
    let lower = |s: &str| s.to_ascii_lowercase();
    match params
        .string("order_by")?
        .as_deref()
        .unwrap_or("created_at")
    {
        "id" => out.sort_by_key(|p| p.id),
        "name" | "similarity" => out.sort_by_key(|p| (lower(&p.name), p.id)),
        "path" => out.sort_by_key(|p| (lower(&p.full_path), p.id)),
        "created_at" | "updated_at" | "last_activity_at" => {
            out.sort_by_key(|p| (p.created_at, p.id))
        }
        _ => return Err(ApiError::param("order_by does not have a valid value")),
    }
    match params.string("sort")?.as_deref().unwrap_or("desc") {
        "asc" => {}
        "desc" => out.reverse(),
        _ => return Err(ApiError::param("sort does not have a valid value")),
    }
    Ok(out)
}

pub(super) async fn respond_projects(
    pg: &Pagination,
    view: &mut View,
    caller: &Caller,
    projects: Vec<Project>,
) -> ApiResult<Response> {
    let (page, total) = pg.slice(projects);
    let mut body = Vec::with_capacity(page.len());
    for p in &page {
        body.push(view.project(p, caller).await?);
    }
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    get,
    path = "/projects",
    operation_id = "listProjects",
    tag = "projects",
    params(
        PageParams,
        ProjectListParams,
    ),
    responses(
        (status = 200, description = "Projects the caller may see", body = [ProjectBody]),
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
    let all = state.meta.projects(None).await?;
    let list = filter_and_sort(&state, &caller, all, &params).await?;
    respond_projects(&pg, &mut view, &caller, list).await
}

#[utoipa::path(
    get,
    path = "/projects/{id}",
    operation_id = "getProject",
    tag = "projects",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("statistics" = Option<bool>, Query, description = "Include storage statistics (container_registry_size)"),
    ),
    responses(
        (status = 200, description = "The project", body = ProjectBody),
        (status = 400, description = "An invalid parameter", body = ApiErrorBody),
        RefusedOrMissing,
    )
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let p = find_project(&state, &caller, &id).await?;
    let mut body = view.project(&p, &caller).await?;
    if params.bool("statistics")? == Some(true) {
        body.statistics = Some(super::schemas::ProjectStatistics {
            container_registry_size: state.meta.project_registry_size(p.id).await?,
        });
    }
    Ok(Json(body).into_response())
}

/// `container_registry_access_level`, or its deprecated boolean alias
/// `container_registry_enabled` (true: enabled, false: disabled).
fn registry_access(params: &Params) -> ApiResult<Option<RegistryAccess>> {
    if let Some(a) = params.choice::<RegistryAccess>("container_registry_access_level")? {
        return Ok(Some(a));
    }
    Ok(params.bool("container_registry_enabled")?.map(|on| {
        if on {
            RegistryAccess::Enabled
        } else {
            RegistryAccess::Disabled
        }
    }))
}

/// A project path made from its name, as GitLab does when only a name is given:
/// lower case, runs of other characters turned into one `-`.
fn path_from_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(|c| c == '-' || c == '_' || c == '.')
        .to_string()
}

/// A project's visibility may not exceed its group's.
fn visibility_problem(v: Visibility, ns: &Namespace) -> Option<ApiError> {
    (ns.kind == NamespaceKind::Group && visibility_rank(v) > visibility_rank(ns.visibility)).then(
        || {
            ApiError::validation(
                "visibility_level",
                format!(
                    "{} is not allowed in a {} group.",
                    v.as_str(),
                    ns.visibility.as_str()
                ),
            )
        },
    )
}

/// The namespace a new project goes into: `namespace_id` (an id or a full path), or
/// the caller's own. 404 when it does not exist or the caller cannot see it, 403
/// when the caller may not create projects there.
async fn target_namespace(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<Namespace> {
    let user = caller.require_user()?;
    let not_found = || ApiError::not_found("Namespace");
    let ns = match params
        .string("namespace_id")?
        .filter(|s| !s.trim().is_empty())
    {
        None => state.meta.namespace(user.namespace_id).await?,
        Some(s) => match numeric_id(s.trim()) {
            Some(id) => state.meta.namespace(id).await?,
            None => {
                state
                    .meta
                    .namespace_by_path(s.trim().trim_matches('/'))
                    .await?
            }
        },
    }
    .ok_or_else(not_found)?;
    match ns.kind {
        NamespaceKind::User => {
            if ns.owner_id != Some(user.id) && !caller.admin {
                return Err(ApiError::forbidden());
            }
        }
        NamespaceKind::Group => {
            if !caller.can_read_group(state, &ns).await? {
                return Err(not_found());
            }
            caller
                .require_group_level(state, &ns, AccessLevel::Maintainer)
                .await?;
        }
    }
    Ok(ns)
}

#[utoipa::path(
    post,
    path = "/projects",
    operation_id = "createProject",
    tag = "projects",
    request_body = CreateProject,
    responses(
        (status = 201, description = "The new project; the caller owns it", body = ProjectBody),
        InvalidRefusedOrMissing,
    )
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    mut view: View,
    params: Params,
) -> ApiResult<Response> {
    let project = create_project(&state, &caller, &params).await?;
    Ok((
        StatusCode::CREATED,
        Json(view.project(&project, &caller).await?),
    )
        .into_response())
}

/// Create a project the caller owns (the REST API and the new-project page): in
/// their own namespace, or in a group where they are maintainer or more.
pub(crate) async fn create_project(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> ApiResult<Project> {
    let user = caller.require_user()?.clone();
    let non_blank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let name = non_blank(params.string("name")?);
    let path = non_blank(params.string("path")?);
    let (name, path) = match (name, path) {
        (None, None) => {
            return Err(ApiError::param(
                "name, path are missing, at least one parameter must be provided",
            ))
        }
        (Some(n), None) => {
            let p = path_from_name(&n);
            (n, p)
        }
        (None, Some(p)) => (p.clone(), p),
        (Some(n), Some(p)) => (n, p),
    };
    let visibility = params
        .choice::<Visibility>("visibility")?
        .unwrap_or(Visibility::Private);
    let access = registry_access(params)?.unwrap_or(RegistryAccess::Enabled);
    let description = params.string("description")?.unwrap_or_default();
    let ns = target_namespace(state, caller, params).await?;
    if let Some(e) = visibility_problem(visibility, &ns) {
        return Err(e);
    }
    let meta = state.meta.as_ref();
    let mut project =
        org::create_project(meta, ns.id, &name, &path, visibility, access, Some(user.id)).await?;
    if !description.is_empty() {
        let update = ProjectUpdate {
            description: Some(description),
            ..Default::default()
        };
        if let Some(p) = meta.update_project(project.id, &update).await? {
            project = p;
        }
    }
    meta.set_member(
        Source::Project(project.id),
        user.id,
        AccessLevel::Owner,
        None,
        now_ms(),
    )
    .await?;
    Ok(project)
}

#[utoipa::path(
    put,
    path = "/projects/{id}",
    operation_id = "updateProject",
    tag = "projects",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    request_body = UpdateProject,
    responses(
        (status = 200, description = "The updated project", body = ProjectBody),
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
    let p = update_project(&state, &caller, &id, &params).await?;
    Ok(Json(view.project(&p, &caller).await?).into_response())
}

/// Change a project's settings, path included (the REST API and the general settings
/// page): maintainers, and owners for the path, which moves its registry along.
pub(crate) async fn update_project(
    state: &AppState,
    caller: &Caller,
    id: &str,
    params: &Params,
) -> ApiResult<Project> {
    let p = find_project(state, caller, id).await?;
    caller
        .require_project_level(state, &p, AccessLevel::Maintainer)
        .await?;
    let name = super::new_name(params)?;
    let visibility = params.choice::<Visibility>("visibility")?;
    if let Some(v) = visibility {
        if let Some(ns) = state.meta.namespace(p.namespace_id).await? {
            if let Some(e) = visibility_problem(v, &ns) {
                return Err(e);
            }
        }
    }
    let policy = match params.nested("container_expiration_policy_attributes")? {
        Some(attrs) => Some(super::policy::apply(
            super::policy::current(state, &p).await?,
            &attrs,
        )?),
        None => None,
    };
    // Renaming the path moves the project's registry with it.
    let new_path = super::new_path(
        params,
        &p.path,
        caller.require_project_level(state, &p, AccessLevel::Owner),
        refuse_move(state, &p),
        "Cannot rename project because it contains container registry tags!",
    )
    .await?;
    let update = ProjectUpdate {
        name: name.clone(),
        description: params.string("description")?,
        visibility,
        registry_access: registry_access(params)?,
    };
    if let Some(policy) = &policy {
        state
            .meta
            .set_expiration_policy(p.id, policy, now_ms())
            .await?;
    }
    let mut p = state
        .meta
        .update_project(p.id, &update)
        .await?
        .ok_or_else(|| ApiError::not_found("Project"))?;
    if let Some(path) = new_path {
        p = state
            .meta
            .move_project(p.id, p.namespace_id, &path, &p.name)
            .await?;
    }
    Ok(p)
}

/// Whether GitLab's refusal applies: the instance refuses moves of projects whose
/// registry holds tags (off by default: Berth moves the repositories along).
/// Refuse a transfer with GitLab's message when [`refuse_move`] applies.
pub(super) async fn check_transfer(state: &AppState, p: &Project) -> ApiResult<()> {
    if refuse_move(state, p).await? {
        return Err(ApiError::message(
            StatusCode::BAD_REQUEST,
            "Failed to transfer project {:base=>[\"Project cannot be transferred, because tags are present in its container registry\"]}",
        ));
    }
    Ok(())
}

async fn refuse_move(state: &AppState, p: &Project) -> ApiResult<bool> {
    Ok(state.settings.refuse_moves_with_tags && state.meta.project_tags_count(p.id).await? > 0)
}

/// `PUT /projects/:id/transfer` (`namespace`: an id or a path): move the project, and
/// its container repositories, into another namespace.
#[utoipa::path(
    put,
    path = "/projects/{id}/transfer",
    operation_id = "transferProject",
    tag = "projects",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    request_body = TransferProject,
    responses(
        (status = 200, description = "The moved project", body = ProjectBody),
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
    let moved = transfer_project(&state, &caller, &id, &params).await?;
    Ok(Json(view.project(&moved, &caller).await?).into_response())
}

/// Move a project into another namespace (`namespace`), its repositories with it, in
/// one transaction (owners; the REST API and the general settings page).
pub(crate) async fn transfer_project(
    state: &AppState,
    caller: &Caller,
    id: &str,
    params: &Params,
) -> ApiResult<Project> {
    let p = find_project(state, caller, id).await?;
    caller
        .require_project_level(state, &p, AccessLevel::Owner)
        .await?;
    let target = params.required_string("namespace")?;
    let mut target_params = Params::default();
    target_params.set("namespace_id", &target);
    let ns = target_namespace(state, caller, &target_params).await?;
    check_transfer(state, &p).await?;
    Ok(state
        .meta
        .move_project(p.id, ns.id, &p.path, &p.name)
        .await?)
}

/// `DELETE /projects/:id`: owners (and administrators) delete a project with its
/// container repositories, tags and their history, members, deploy tokens, cleanup
/// policy and protection rules, in one transaction. Storage is freed by garbage
/// collection afterwards (the blobs nothing else references).
#[utoipa::path(
    delete,
    path = "/projects/{id}",
    operation_id = "deleteProject",
    tag = "projects",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
    ),
    responses(
        (status = 202, description = "Deleted (refused with 403 while its registry holds a repository or tag a protection rule forbids the caller to delete)", body = Accepted),
        RefusedOrMissing,
    )
)]
async fn delete(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_project(&state, &caller, &id).await?;
    Ok(Accepted::response())
}

/// Delete a project (owners; the REST API and the general settings page).
pub(crate) async fn delete_project(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Project> {
    let p = find_project(state, caller, id).await?;
    caller
        .require_project_level(state, &p, AccessLevel::Owner)
        .await?;
    super::registry::check_projects_deletable(state, caller, std::slice::from_ref(&p)).await?;
    state.meta.delete_project(p.id, now_ms()).await?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_names() {
        assert_eq!(path_from_name("My Project"), "my-project");
        assert_eq!(path_from_name("  a -- b!  "), "a-b");
        assert_eq!(path_from_name("web_app.v2"), "web_app.v2");
    }
}
