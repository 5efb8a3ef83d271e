//! The container registry REST API: repositories of projects and groups, their tags,
//! tag and repository deletion, and bulk tag deletion with GitLab's rules (the same
//! engine as cleanup policies; `latest` is never deleted; one call per repository
//! per hour).

use super::entities::timestamp;
use super::pagination::{Keyset, COUNT_LIMIT};
use super::schemas::{
    BulkDeleteAccepted, BulkDeleteParams, IdOrPath, InvalidRefusedOrMissing, PageParams,
    RefusedOrMissing, Repository, RepositoryListParams, RepositoryParams, Tag, TagDetails,
    TagListParams,
};
use super::{
    find_group, find_project, numeric_id, ApiError, ApiResult, Caller, Pagination, Params, Path,
    View,
};
use crate::auth::credential_for;
use crate::protection::{standing, Guard};
use crate::state::{now_ms, AppState, Shared};
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_core::cleanup::Rules;
use berth_core::protection::Op;
use berth_core::{allowed_actions, ActionSet, ProjectFacts};
use berth_meta::{Project, RepositoryInfo, TagInfo, TagPage};
use std::collections::HashMap;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/projects/{id}/registry/repositories",
            get(project_repositories),
        )
        .route(
            "/projects/{id}/registry/repositories/{repository_id}",
            delete(delete_repository),
        )
        .route(
            "/projects/{id}/registry/repositories/{repository_id}/tags",
            get(list_tags).delete(bulk_delete),
        )
        .route(
            "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
            get(show_tag).delete(delete_tag),
        )
        .route(
            "/groups/{id}/registry/repositories",
            get(group_repositories),
        )
        .route("/registry/repositories/{id}", get(show_repository))
}

/// What the caller may do with a project's registry (pull = read, push = developer
/// actions such as deleting a tag, delete = maintainer actions).
pub async fn registry_actions(
    state: &AppState,
    caller: &Caller,
    p: &Project,
) -> ApiResult<ActionSet> {
    let cred = credential_for(state.meta.as_ref(), &caller.principal, p).await?;
    Ok(allowed_actions(
        ProjectFacts {
            visibility: p.visibility,
            registry_access: p.registry_access,
        },
        &cred,
    ))
}

/// A project the caller may see and whose registry they may read.
pub(crate) async fn readable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(Project, ActionSet)> {
    let p = find_project(state, caller, id).await?;
    let actions = registry_actions(state, caller, &p).await?;
    if !actions.pull {
        return Err(ApiError::forbidden());
    }
    Ok((p, actions))
}

/// A repository of project `p` by id; 404 when it is another project's or unknown.
pub(crate) async fn repository_of(
    state: &AppState,
    p: &Project,
    rid: &str,
) -> ApiResult<RepositoryInfo> {
    let not_found = || ApiError::not_found("Repository");
    let id = numeric_id(rid).ok_or_else(not_found)?;
    match state.meta.repository_info(id).await? {
        Some(r) if r.project_id == Some(p.id) && r.status.is_none() => Ok(r),
        _ => Err(not_found()),
    }
}

/// The repository's name inside its project (`""` for the project's own image).
pub(crate) fn repository_name(r: &RepositoryInfo, p: &Project) -> String {
    berth_core::paths::repository_name(&r.path, &p.full_path.to_ascii_lowercase()).to_string()
}

fn tag(view: &View, repo_path: &str, t: &TagInfo) -> Tag {
    Tag {
        name: t.name.clone(),
        path: format!("{repo_path}:{}", t.name),
        location: format!("{}/{repo_path}:{}", view.registry_host(), t.name),
    }
}

pub(crate) fn tag_details(view: &View, repo_path: &str, t: &TagInfo) -> TagDetails {
    let Tag {
        name,
        path,
        location,
    } = tag(view, repo_path, t);
    let revision = t
        .config_digest
        .as_deref()
        .map(|d| d.split_once(':').map(|(_, h)| h).unwrap_or(d).to_string());
    TagDetails {
        name,
        path,
        location,
        short_revision: revision
            .as_deref()
            .map(|r| r.get(..9).unwrap_or(r).to_string()),
        revision,
        digest: t.digest.clone(),
        created_at: timestamp(t.created_at),
        pushed_at: timestamp(t.pushed_at),
        total_size: t.total_size,
    }
}

/// Which optional parts a repository's JSON carries.
struct Extras {
    tags: bool,
    tags_count: bool,
    size: bool,
    delete_path: bool,
}

async fn repository(
    state: &AppState,
    view: &View,
    r: &RepositoryInfo,
    p: &Project,
    extras: &Extras,
) -> ApiResult<Repository> {
    let tags = if extras.tags {
        let tags = state.meta.all_tags(r.id).await?;
        Some(tags.iter().map(|t| tag(view, &r.path, t)).collect())
    } else {
        None
    };
    let size = if extras.size {
        Some(state.meta.repository_size(r.id).await?)
    } else {
        None
    };
    Ok(Repository {
        id: r.id,
        name: repository_name(r, p),
        path: r.path.clone(),
        project_id: p.id,
        location: format!("{}/{}", view.registry_host(), r.path),
        created_at: timestamp(r.created_at),
        cleanup_policy_started_at: r.cleanup_started_at.map(timestamp),
        status: r.status.clone(),
        expiration_policy_cleanup_status: r.cleanup_status.clone(),
        tags_count: extras.tags_count.then_some(r.tags_count),
        tags,
        delete_api_path: extras.delete_path.then(|| {
            format!(
                "{}/api/v4/projects/{}/registry/repositories/{}",
                view.base, p.id, r.id
            )
        }),
        size,
    })
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/repositories",
    operation_id = "listProjectRepositories",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        PageParams,
        RepositoryListParams,
    ),
    responses(
        (status = 200, description = "The project's container repositories", body = [Repository]),
        InvalidRefusedOrMissing,
    )
)]
async fn project_repositories(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (p, actions) = readable(&state, &caller, &id).await?;
    let extras = Extras {
        tags: params.bool("tags")?.unwrap_or(false),
        tags_count: params.bool("tags_count")?.unwrap_or(false),
        size: false,
        delete_path: actions.delete,
    };
    let projects = std::collections::HashMap::from([(p.id, p)]);
    repositories_page(&state, &view, &pg, &projects, &extras).await
}

#[utoipa::path(
    get,
    path = "/groups/{id}/registry/repositories",
    operation_id = "listGroupRepositories",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The group's id or URL-encoded full path"),
        PageParams,
    ),
    responses(
        (status = 200, description = "Container repositories of the group's projects the caller may read", body = [Repository]),
        InvalidRefusedOrMissing,
    )
)]
async fn group_repositories(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    view: View,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let g = find_group(&state, &caller, &id).await?;
    let (projects, hidden) = group_registry_projects(&state, &caller, g.id).await?;
    let extras = Extras {
        tags: false,
        tags_count: false,
        size: false,
        delete_path: false,
    };
    // Counted only up to GitLab's limit: a group may hold 100,000 repositories.
    let visible: Vec<i64> = projects.keys().copied().collect();
    // Repository paths are lower case.
    let path = g.full_path.to_ascii_lowercase();
    let (repos, total) = state
        .meta
        .search_repositories(
            group_scope(&path, &visible, &hidden),
            &berth_meta::RepoQuery::by_path(pg.window_and_one(), COUNT_LIMIT),
        )
        .await?;
    let mut body = Vec::with_capacity(repos.len());
    for r in &repos {
        if let Some((p, _)) = r.project_id.and_then(|pid| projects.get(&pid)) {
            body.push(repository(&state, &view, r, p, &extras).await?);
        }
    }
    Ok(pg.respond_counted(total, body))
}

/// The projects of group `group_id` and its subgroups whose registry the caller may
/// read, each with what the caller may do in it, and the ids of the others. Every
/// project's role comes from one query (per few hundred projects), not a few queries
/// per project: a group holds up to thousands.
pub(crate) async fn group_registry_projects(
    state: &AppState,
    caller: &Caller,
    group_id: i64,
) -> ApiResult<(HashMap<i64, (Project, ActionSet)>, Vec<i64>)> {
    let all = state.meta.projects_in(group_id, true).await?;
    let ids: Vec<i64> = all.iter().map(|p| p.id).collect();
    // An administrator acts as an owner everywhere: no role changes what they see.
    let roles = if caller.admin {
        HashMap::new()
    } else {
        crate::auth::project_roles_for(state.meta.as_ref(), &caller.principal, &ids).await?
    };
    let mut readable = HashMap::new();
    let mut hidden = Vec::new();
    for p in all {
        let role = roles.get(&p.id).copied();
        let actions = if caller.can_read_project_with(&p, role) {
            let cred =
                crate::auth::credential_with(state.meta.as_ref(), &caller.principal, &p, role)
                    .await?;
            let facts = ProjectFacts {
                visibility: p.visibility,
                registry_access: p.registry_access,
            };
            Some(allowed_actions(facts, &cred)).filter(|a| a.pull)
        } else {
            None
        };
        match actions {
            Some(a) => {
                readable.insert(p.id, (p, a));
            }
            None => hidden.push(p.id),
        }
    }
    Ok((readable, hidden))
}

/// Where to look for the repositories of the projects `visible` of the group whose
/// path (lower case) is `group_path`, the others of the group being `hidden`: when
/// most of the group is visible, a walk of the group's paths leaving the hidden ones
/// out; otherwise the visible projects' ids.
pub(crate) fn group_scope<'a>(
    group_path: &'a str,
    visible: &'a [i64],
    hidden: &'a [i64],
) -> berth_meta::RepoScope<'a> {
    if hidden.len() < visible.len() {
        berth_meta::RepoScope::Under {
            group_path,
            except: hidden,
        }
    } else {
        berth_meta::RepoScope::Projects(visible)
    }
}

/// One page of the container repositories of `projects` (a project's, or those of a
/// group's projects the caller may pull from), each shown with `extras`.
async fn repositories_page(
    state: &AppState,
    view: &View,
    pg: &Pagination,
    projects: &std::collections::HashMap<i64, Project>,
    extras: &Extras,
) -> ApiResult<Response> {
    let ids: Vec<i64> = projects.keys().copied().collect();
    let (repos, total) = state.meta.repositories_of(&ids, pg.window()).await?;
    let mut body = Vec::with_capacity(repos.len());
    for r in &repos {
        if let Some(p) = r.project_id.and_then(|pid| projects.get(&pid)) {
            body.push(repository(state, view, r, p, extras).await?);
        }
    }
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    get,
    path = "/registry/repositories/{id}",
    operation_id = "getRepository",
    tag = "registry",
    params(
        ("id" = i64, Path, description = "The repository's id"),
        RepositoryParams,
    ),
    responses(
        (status = 200, description = "The repository", body = Repository),
        InvalidRefusedOrMissing,
    )
)]
async fn show_repository(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found("Repository");
    let rid = numeric_id(&id).ok_or_else(not_found)?;
    let r = state
        .meta
        .repository_info(rid)
        .await?
        .ok_or_else(not_found)?;
    let p = match r.project_id {
        Some(pid) => state.meta.project(pid).await?,
        None => None,
    }
    .ok_or_else(not_found)?;
    if !caller.can_read_project(&state, &p).await? {
        return Err(not_found());
    }
    let actions = registry_actions(&state, &caller, &p).await?;
    if !actions.pull {
        return Err(ApiError::forbidden());
    }
    let extras = Extras {
        tags: params.bool("tags")?.unwrap_or(false),
        tags_count: params.bool("tags_count")?.unwrap_or(false),
        size: params.bool("size")?.unwrap_or(false),
        delete_path: actions.delete,
    };
    Ok(Json(repository(&state, &view, &r, &p, &extras).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/projects/{id}/registry/repositories/{repository_id}",
    operation_id = "deleteRepository",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
    ),
    responses(
        (status = 202, description = "Scheduled for deletion (refused with 403 while it holds a tag a protection rule forbids the caller to delete)"),
        RefusedOrMissing,
    )
)]
async fn delete_repository(
    State(state): State<Shared>,
    caller: Caller,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<Response> {
    schedule_repository_delete(&state, &caller, &id, &rid).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// As GitLab: a repository is not deleted while it (or a tag in it) is protected
/// from the caller's deletes; repository deletes and project and group deletes all
/// ask here, so each refuses the same thing with the same message.
async fn check_repository_deletable(
    state: &AppState,
    caller: &Caller,
    p: &Project,
    r: &RepositoryInfo,
) -> ApiResult<()> {
    let guard = Guard::load(state.meta.as_ref(), &r.path).await?;
    if !guard.is_empty() {
        let who = standing(state.meta.as_ref(), &caller.principal, p.id).await?;
        let tags = state.meta.all_tags(r.id).await?;
        let tags: Vec<(&str, bool)> = tags.iter().map(|t| (t.name.as_str(), true)).collect();
        guard
            .check(&r.path, &tags, Op::Delete, who)
            .map_err(protected)?;
    }
    Ok(())
}

/// Refuse (403, naming the rule) to delete projects whose registry holds a
/// repository or tag a protection rule keeps from the caller.
pub(crate) async fn check_projects_deletable(
    state: &AppState,
    caller: &Caller,
    projects: &[Project],
) -> ApiResult<()> {
    use berth_core::protection::RuleKind;
    for p in projects {
        let mut ruled = false;
        for kind in [RuleKind::Repository, RuleKind::Tag] {
            ruled |= !state.meta.protection_rules(p.id, kind).await?.is_empty();
        }
        if !ruled {
            continue;
        }
        let all = berth_meta::Window {
            offset: 0,
            limit: i64::MAX,
        };
        let (repos, _) = state.meta.repositories_of(&[p.id], all).await?;
        for r in &repos {
            check_repository_deletable(state, caller, p, r).await?;
        }
    }
    Ok(())
}

/// Queue repository `rid` of project `id` for deletion (maintainers); the REST API
/// and the web UI both delete through here.
pub(crate) async fn schedule_repository_delete(
    state: &AppState,
    caller: &Caller,
    id: &str,
    rid: &str,
) -> ApiResult<RepositoryInfo> {
    let (p, actions) = readable(state, caller, id).await?;
    if !actions.delete {
        return Err(ApiError::forbidden());
    }
    let r = repository_of(state, &p, rid).await?;
    check_repository_deletable(state, caller, &p, &r).await?;
    // The repository disappears from listings now; a background job removes it.
    state.meta.schedule_repository_delete(r.id).await?;
    state.jobs.wake();
    Ok(r)
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags",
    operation_id = "listTags",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        PageParams,
        TagListParams,
    ),
    responses(
        (status = 200, description = "The repository's tags, by name", body = [Tag]),
        InvalidRefusedOrMissing,
    )
)]
async fn list_tags(
    State(state): State<Shared>,
    caller: Caller,
    pg: Pagination,
    view: View,
    OriginalUri(uri): OriginalUri,
    Path((id, rid)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (p, _) = readable(&state, &caller, &id).await?;
    let r = repository_of(&state, &p, &rid).await?;
    if Keyset::requested(&params)? {
        if caller.user().is_none() {
            return Err(ApiError::unauthorized());
        }
        let Keyset { descending, last } = Keyset::from_params(&params)?;
        let limit = pg.per_page;
        let (tags, _) = state
            .meta
            .repository_tags(
                r.id,
                TagPage::After {
                    last,
                    limit: limit + 1,
                    descending,
                },
            )
            .await?;
        let more = tags.len() as i64 > limit;
        let page: Vec<&TagInfo> = tags.iter().take(limit as usize).collect();
        let body: Vec<Tag> = page.iter().map(|t| tag(&view, &r.path, t)).collect();
        let mut resp = Json(body).into_response();
        if let (true, Some(last)) = (more, page.last()) {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("pagination", "keyset");
            q.append_pair("order_by", "name");
            q.append_pair("sort", if descending { "desc" } else { "asc" });
            q.append_pair("per_page", &limit.to_string());
            q.append_pair("last", &last.name);
            let link = format!("<{}{}?{}>; rel=\"next\"", view.base, uri.path(), q.finish());
            if let Ok(v) = link.parse() {
                resp.headers_mut().insert("link", v);
            }
        }
        return Ok(resp);
    }
    let (tags, total) = state
        .meta
        .repository_tags(r.id, TagPage::Offset(pg.window()))
        .await?;
    let body: Vec<Tag> = tags.iter().map(|t| tag(&view, &r.path, t)).collect();
    Ok(pg.respond(total, body))
}

#[utoipa::path(
    get,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
    operation_id = "getTag",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        ("tag_name" = String, Path, description = "The tag"),
    ),
    responses(
        (status = 200, description = "The tag", body = TagDetails),
        RefusedOrMissing,
    )
)]
async fn show_tag(
    State(state): State<Shared>,
    caller: Caller,
    view: View,
    Path((id, rid, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (p, _) = readable(&state, &caller, &id).await?;
    let r = repository_of(&state, &p, &rid).await?;
    let t = state
        .meta
        .repository_tag(r.id, &tag)
        .await?
        .ok_or_else(|| ApiError::not_found("Tag"))?;
    Ok(Json(tag_details(&view, &r.path, &t)).into_response())
}

#[utoipa::path(
    delete,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
    operation_id = "deleteTag",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        ("tag_name" = String, Path, description = "The tag"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        RefusedOrMissing,
    )
)]
async fn delete_tag(
    State(state): State<Shared>,
    caller: Caller,
    Path((id, rid, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    if delete_tags(&state, &caller, &id, &rid, &[tag])
        .await?
        .deleted
        == 0
    {
        return Err(ApiError::not_found("Tag"));
    }
    Ok(StatusCode::OK.into_response())
}

/// What a tag deletion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagDeletion {
    /// Tags that existed and were deleted.
    pub deleted: u64,
    /// Tags of a bulk deletion left alone because a protection rule forbids the
    /// caller to delete them.
    pub protected: u64,
}

/// A protection rule's refusal, as GitLab answers it on the REST API.
pub(crate) fn protected(r: berth_core::protection::Refusal) -> ApiError {
    ApiError::message(StatusCode::FORBIDDEN, format!("403 Forbidden - {r}"))
        .because(format!("protection rule {}", r.protection.rule_id))
}

/// Delete the named tags of repository `rid` of project `id` (the manifests stay).
/// A tag a protection rule keeps from the caller is refused when it is the only one
/// named, and skipped (and counted) among several. The REST API and the web UI both
/// delete tags through here.
pub(crate) async fn delete_tags(
    state: &AppState,
    caller: &Caller,
    id: &str,
    rid: &str,
    names: &[String],
) -> ApiResult<TagDeletion> {
    let (p, actions) = readable(state, caller, id).await?;
    // Deleting named tags, one or several, is GitLab's `destroy_container_image`:
    // developers may (its GraphQL `destroyContainerRepositoryTags`); the regex bulk
    // delete of the REST API stays with maintainers.
    if !actions.push {
        return Err(ApiError::forbidden());
    }
    let r = repository_of(state, &p, rid).await?;
    let guard = Guard::load(state.meta.as_ref(), &r.path).await?;
    let mut allowed: Vec<String> = names.to_vec();
    if !guard.is_empty() {
        let who = standing(state.meta.as_ref(), &caller.principal, p.id).await?;
        if let [one] = names {
            guard
                .check(&r.path, &[(one.as_str(), true)], Op::Delete, who)
                .map_err(protected)?;
        } else {
            allowed.retain(|n| {
                guard
                    .check(&r.path, &[(n.as_str(), true)], Op::Delete, who)
                    .is_ok()
            });
        }
    }
    let actor = crate::auth::actor_of(&caller.principal);
    let deleted = state
        .meta
        .delete_tags_by(r.id, &allowed, now_ms(), &actor)
        .await?;
    Ok(TagDeletion {
        deleted,
        protected: (names.len() - allowed.len()) as u64,
    })
}

const BULK_ALREADY: &str = "This request has already been made. You can run this at most once an hour for a given container repository";

/// The bulk-delete rules from request parameters; refusals name the field.
pub fn bulk_rules(params: &Params) -> ApiResult<Rules> {
    let (delete, delete_field) = match params.string("name_regex_delete")? {
        Some(r) => (Some(r), "name_regex_delete"),
        None => (params.string("name_regex")?, "name_regex"),
    };
    let Some(delete) = delete else {
        return Err(ApiError::param(
            "name_regex, name_regex_delete are missing, at least one parameter must be provided",
        ));
    };
    let keep = params.string("name_regex_keep")?;
    let keep_n = params.int("keep_n")?;
    let older_than = params.string("older_than")?;
    Rules::new(
        Some(&delete),
        keep.as_deref(),
        keep_n,
        older_than.as_deref(),
    )
    .map_err(|e| {
        // The engine calls the delete pattern `name_regex`; name the field as sent.
        let field = if e.field == "name_regex" {
            delete_field
        } else {
            e.field
        };
        ApiError::param(format!("{field} {}", e.message))
    })
}

#[utoipa::path(
    delete,
    path = "/projects/{id}/registry/repositories/{repository_id}/tags",
    operation_id = "deleteTagsInBulk",
    tag = "registry",
    params(
        ("id" = inline(IdOrPath), Path, description = "The project's id or URL-encoded full path"),
        ("repository_id" = i64, Path, description = "The repository's id"),
        BulkDeleteParams,
    ),
    responses(
        (status = 202, description = "Deletion started; the body says how many protected tags it leaves", body = BulkDeleteAccepted),
        InvalidRefusedOrMissing,
    )
)]
async fn bulk_delete(
    State(state): State<Shared>,
    caller: Caller,
    Path((id, rid)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (p, actions) = readable(&state, &caller, &id).await?;
    if !actions.delete {
        return Err(ApiError::forbidden());
    }
    let r = repository_of(&state, &p, &rid).await?;
    let rules = bulk_rules(&params)?;
    let now = now_ms();
    let key = format!("container_repository:cleanup_tags:{}", r.id);
    let interval = state.settings.bulk_delete_interval.as_millis() as i64;
    if interval > 0 && !state.meta.try_lease(&key, now + interval, now).await? {
        return Err(ApiError::message(StatusCode::BAD_REQUEST, BULK_ALREADY));
    }
    // Protected tags the caller may not delete stay; the answer says how many.
    let who = standing(state.meta.as_ref(), &caller.principal, p.id).await?;
    let planned = crate::cleanup::plan_as(state.meta.as_ref(), r.id, &rules, now, who).await?;
    let skipped = planned
        .steps
        .iter()
        .filter(|s| matches!(s, berth_core::cleanup::Step::Protected(_)))
        .count();
    // One cleanup run, so the whole deletion can be undone in one call.
    let actor = crate::auth::actor_of(&caller.principal);
    let run = state
        .meta
        .start_cleanup_run(p.id, "bulk_delete", &actor, now)
        .await?;
    let meta = state.meta.clone();
    tokio::spawn(async move {
        // Bulk deletion removes everything the rules select, in one go.
        let limits = crate::cleanup::Limits {
            worker_capacity: 1,
            delete_timeout_secs: u64::MAX / 2,
            max_list_size: usize::MAX,
        };
        let result = crate::cleanup::run_turn(
            meta.as_ref(),
            r.id,
            &rules,
            limits,
            crate::cleanup::RunBy {
                reason: "bulk_delete",
                run: Some(run),
                actor: &actor,
                who,
            },
            |_, _| {},
        )
        .await;
        match result {
            Ok(o) => {
                tracing::info!(repository = %r.path, deleted = o.deleted, protected = o.protected, "bulk tag deletion done")
            }
            Err(e) => tracing::error!(repository = %r.path, error = %e, "bulk tag deletion failed"),
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(BulkDeleteAccepted {
            protected_tags_skipped: skipped as u64,
        }),
    )
        .into_response())
}
