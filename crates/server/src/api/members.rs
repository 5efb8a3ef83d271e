//! Members of projects and groups: direct members, everyone with access through a
//! group above (`members/all`), and adding, changing and removing members.
//!
//! Who may manage: for a project, maintainers and owners (only owners may grant or
//! touch the Owner role); for a group, owners, and maintainers up to Maintainer. A
//! member may always leave. A direct role may not be lower than the one a user
//! already inherits from a group above, as GitLab validates.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::AccessLevel;
use berth_meta::{Member, Namespace, NamespaceKind, Project, Source, User};

use super::entities::level_name;
use super::schemas::{
    AddMember, ApiErrorBody, IdOrPath, InvalidRefusedOrMissing, Member as MemberBody,
    MemberListParams, PageParams, RefusedOrMissing, UpdateMember,
};
use super::{
    ancestry, find_group, find_project, find_user, ApiError, ApiResult, Caller, Kind, Pagination,
    Params, Path, View,
};
use crate::auth::today;
use crate::state::{now_ms, AppState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/projects/{id}/members",
            get(project::list).post(project::add),
        )
        .route("/projects/{id}/members/all", get(project::all))
        .route(
            "/projects/{id}/members/all/{user_id}",
            get(project::all_one),
        )
        .route(
            "/projects/{id}/members/{user_id}",
            get(project::one)
                .put(project::update)
                .delete(project::remove),
        )
        .route("/groups/{id}/members", get(group::list).post(group::add))
        .route("/groups/{id}/members/all", get(group::all))
        .route("/groups/{id}/members/all/{user_id}", get(group::all_one))
        .route(
            "/groups/{id}/members/{user_id}",
            get(group::one).put(group::update).delete(group::remove),
        )
}

/// What members belong to.
pub(crate) enum Target {
    Project(Project),
    Group(Namespace),
}

impl Target {
    pub(crate) async fn load(
        state: &AppState,
        caller: &Caller,
        kind: Kind,
        id: &str,
    ) -> ApiResult<Target> {
        Ok(match kind {
            Kind::Project => Target::Project(find_project(state, caller, id).await?),
            Kind::Group => Target::Group(find_group(state, caller, id).await?),
        })
    }

    fn source(&self) -> Source {
        match self {
            Target::Project(p) => Source::Project(p.id),
            Target::Group(g) => Source::Namespace(g.id),
        }
    }

    pub(crate) async fn caller_level(
        &self,
        state: &AppState,
        caller: &Caller,
    ) -> ApiResult<Option<AccessLevel>> {
        match self {
            Target::Project(p) => caller.project_level(state, p).await,
            Target::Group(g) => caller.namespace_level(state, g).await,
        }
    }
}

fn live(m: &Member, today: &str) -> bool {
    m.expires_at.as_deref().is_none_or(|d| d > today)
}

/// Direct members whose membership has not expired.
async fn direct_members(state: &AppState, target: &Target) -> ApiResult<Vec<Member>> {
    let today = today();
    let mut list = state.meta.members(target.source()).await?;
    list.retain(|m| live(m, &today));
    Ok(list)
}

/// Memberships a user gets from above the target: groups above a project or group,
/// and ownership of the user namespace a project is in. Each with the full path of
/// where it comes from.
async fn inherited_members(state: &AppState, target: &Target) -> ApiResult<Vec<(Member, String)>> {
    let today = today();
    let groups = match target {
        Target::Project(p) => match state.meta.namespace(p.namespace_id).await? {
            Some(ns) => ancestry(state, &ns).await?,
            None => Vec::new(),
        },
        Target::Group(g) => ancestry(state, g).await?.into_iter().skip(1).collect(),
    };
    let mut out = Vec::new();
    for ns in groups {
        if ns.kind == NamespaceKind::User {
            if let Some(owner) = ns.owner_id {
                if let Some(user) = state.meta.user(owner).await? {
                    let m = Member {
                        source: Source::Namespace(ns.id),
                        user,
                        access_level: AccessLevel::Owner,
                        expires_at: None,
                        created_at: ns.created_at,
                    };
                    out.push((m, ns.full_path.clone()));
                }
            }
            continue;
        }
        for m in state.meta.members(Source::Namespace(ns.id)).await? {
            if live(&m, &today) {
                out.push((m, ns.full_path.clone()));
            }
        }
    }
    Ok(out)
}

/// Everyone with access, each once with their highest level, ordered by user id.
async fn all_members(state: &AppState, target: &Target) -> ApiResult<Vec<Member>> {
    let mut best: BTreeMap<i64, Member> = BTreeMap::new();
    let direct = direct_members(state, target).await?;
    let inherited = inherited_members(state, target)
        .await?
        .into_iter()
        .map(|(m, _)| m);
    for m in direct.into_iter().chain(inherited) {
        match best.get(&m.user.id) {
            Some(b) if b.access_level >= m.access_level => {}
            _ => {
                best.insert(m.user.id, m);
            }
        }
    }
    Ok(best.into_values().collect())
}

/// GitLab's `query` (name or username contains) and `user_ids` filters.
fn filter_members(mut list: Vec<Member>, params: &Params) -> ApiResult<Vec<Member>> {
    if let Some(q) = params.string("query")?.filter(|q| !q.is_empty()) {
        let q = q.to_ascii_lowercase();
        list.retain(|m| {
            m.user.username.to_ascii_lowercase().contains(&q)
                || m.user.name.to_ascii_lowercase().contains(&q)
        });
    }
    if let Some(ids) = params.list("user_ids")? {
        let ids: Vec<i64> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        list.retain(|m| ids.contains(&m.user.id));
    }
    Ok(list)
}

fn respond_members(pg: &Pagination, view: &View, list: Vec<Member>) -> Response {
    let (page, total) = pg.slice(list);
    let body: Vec<_> = page.iter().map(|m| view.member(m)).collect();
    pg.respond(total, body)
}

fn parse_level(params: &Params) -> ApiResult<AccessLevel> {
    let v = params.required_int("access_level")?;
    AccessLevel::from_value(v)
        .ok_or_else(|| ApiError::param("access_level does not have a valid value"))
}

fn parse_expiry(params: &Params) -> ApiResult<Option<String>> {
    let d = params.date("expires_at")?;
    if d.as_deref().is_some_and(|d| d <= today().as_str()) {
        return Err(ApiError::validation(
            "expires_at",
            "cannot be a date in the past or today",
        ));
    }
    Ok(d)
}

/// 403 unless the caller may give `new` to (or take it from) a member who now has
/// `existing`.
async fn check_manage(
    state: &AppState,
    caller: &Caller,
    target: &Target,
    new: Option<AccessLevel>,
    existing: Option<AccessLevel>,
) -> ApiResult<()> {
    let mine = target.caller_level(state, caller).await?;
    if manage_allowed(mine, new, existing) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether someone with level `mine` may give `new` to (or take it from) a member
/// who now has `existing`: maintainers manage up to Maintainer, owners everything.
pub(crate) fn manage_allowed(
    mine: Option<AccessLevel>,
    new: Option<AccessLevel>,
    existing: Option<AccessLevel>,
) -> bool {
    let Some(mine) = mine.filter(|l| *l >= AccessLevel::Maintainer) else {
        return false;
    };
    let touches_owner = new == Some(AccessLevel::Owner) || existing == Some(AccessLevel::Owner);
    !(touches_owner && mine < AccessLevel::Owner)
}

/// Direct members (source `None`) and memberships inherited from above (with the
/// full path they come from), each user once, as the members page lists them.
pub(crate) async fn members_with_source(
    state: &AppState,
    target: &Target,
) -> ApiResult<Vec<(Member, Option<String>)>> {
    let mut out: Vec<(Member, Option<String>)> = direct_members(state, target)
        .await?
        .into_iter()
        .map(|m| (m, None))
        .collect();
    // Each user once: their direct membership, else the highest inherited one.
    let mut inherited = inherited_members(state, target).await?;
    inherited.sort_by_key(|(m, _)| std::cmp::Reverse(m.access_level));
    for (m, from) in inherited {
        if !out.iter().any(|(o, _)| o.user.id == m.user.id) {
            out.push((m, Some(from)));
        }
    }
    Ok(out)
}

/// A direct role below an inherited one is refused, as GitLab validates.
async fn check_not_below_inherited(
    state: &AppState,
    target: &Target,
    user: &User,
    level: AccessLevel,
) -> ApiResult<()> {
    let above = inherited_members(state, target)
        .await?
        .into_iter()
        .filter(|(m, _)| m.user.id == user.id)
        .max_by_key(|(m, _)| m.access_level);
    match above {
        Some((m, from)) if m.access_level > level => Err(ApiError::validation(
            "access_level",
            format!(
                "should be greater than or equal to {} inherited membership from group {from}",
                level_name(m.access_level)
            ),
        )),
        _ => Ok(()),
    }
}

/// The direct, live membership of `user_id`, or GitLab's 404.
async fn direct_member(state: &AppState, target: &Target, user_id: &str) -> ApiResult<Member> {
    let id: i64 = user_id.parse().map_err(|_| ApiError::record_not_found())?;
    direct_members(state, target)
        .await?
        .into_iter()
        .find(|m| m.user.id == id)
        .ok_or_else(ApiError::record_not_found)
}

async fn list(
    state: &AppState,
    caller: &Caller,
    (kind, id): (Kind, &str),
    pg: &Pagination,
    view: &View,
    params: &Params,
    all: bool,
) -> ApiResult<Response> {
    let target = Target::load(state, caller, kind, id).await?;
    let members = if all {
        all_members(state, &target).await?
    } else {
        direct_members(state, &target).await?
    };
    Ok(respond_members(pg, view, filter_members(members, params)?))
}

async fn one(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    user_id: &str,
    view: &View,
    all: bool,
) -> ApiResult<Response> {
    let target = Target::load(state, caller, kind, id).await?;
    let member = if all {
        let uid: i64 = user_id.parse().map_err(|_| ApiError::not_found("Member"))?;
        all_members(state, &target)
            .await?
            .into_iter()
            .find(|m| m.user.id == uid)
            .ok_or_else(|| ApiError::not_found("Member"))?
    } else {
        direct_member(state, &target, user_id).await?
    };
    Ok(Json(view.member(&member)).into_response())
}

/// Add an existing user as a direct member (the REST API and the members page).
pub(crate) async fn add_member(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    params: &Params,
) -> ApiResult<Member> {
    let target = Target::load(state, caller, kind, id).await?;
    let level = parse_level(params)?;
    let user = match (params.string("user_id")?, params.string("username")?) {
        (Some(uid), _) => find_user(state, uid.trim()).await?,
        (None, Some(name)) => state
            .meta
            .user_by_username(name.trim())
            .await?
            .ok_or_else(|| ApiError::not_found("User"))?,
        (None, None) => {
            return Err(ApiError::param(
                "user_id, username are missing, at least one parameter must be provided",
            ))
        }
    };
    let expires_at = parse_expiry(params)?;
    check_manage(state, caller, &target, Some(level), None).await?;
    let today = today();
    let existing = state.meta.members(target.source()).await?;
    if existing
        .iter()
        .any(|m| m.user.id == user.id && live(m, &today))
    {
        return Err(ApiError::conflict("Member already exists"));
    }
    check_not_below_inherited(state, &target, &user, level).await?;
    state
        .meta
        .set_member(
            target.source(),
            user.id,
            level,
            expires_at.as_deref(),
            now_ms(),
        )
        .await?;
    direct_member(state, &target, &user.id.to_string()).await
}

/// Change a direct member's role or expiry (the REST API and the members page).
pub(crate) async fn update_member(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    user_id: &str,
    params: &Params,
) -> ApiResult<Member> {
    let target = Target::load(state, caller, kind, id).await?;
    let current = direct_member(state, &target, user_id).await?;
    let level = parse_level(params)?;
    let expires_at = if params.has("expires_at") {
        parse_expiry(params)?
    } else {
        current.expires_at.clone()
    };
    check_manage(
        state,
        caller,
        &target,
        Some(level),
        Some(current.access_level),
    )
    .await?;
    check_not_below_inherited(state, &target, &current.user, level).await?;
    if level != AccessLevel::Owner && is_last_owner(state, &target, &current).await? {
        return Err(last_owner_refused());
    }
    state
        .meta
        .set_member(
            target.source(),
            current.user.id,
            level,
            expires_at.as_deref(),
            now_ms(),
        )
        .await?;
    direct_member(state, &target, user_id).await
}

/// Why removing or demoting the last owner of a top-level group is refused (403, as
/// GitLab). Projects and subgroups always have the owners of the groups above.
pub(crate) const LAST_OWNER: &str =
    "403 Forbidden - a top-level group must keep at least one owner";

fn last_owner_refused() -> ApiError {
    ApiError::message(StatusCode::FORBIDDEN, LAST_OWNER)
        .because("the member is the last owner of a top-level group")
}

/// Whether `member` is the only direct owner of a top-level group.
pub(crate) async fn is_last_owner(
    state: &AppState,
    target: &Target,
    member: &Member,
) -> ApiResult<bool> {
    let Target::Group(g) = target else {
        return Ok(false);
    };
    if g.parent_id.is_some() || member.access_level != AccessLevel::Owner {
        return Ok(false);
    }
    let owners = direct_members(state, target)
        .await?
        .iter()
        .filter(|m| m.access_level == AccessLevel::Owner)
        .count();
    Ok(owners <= 1)
}

/// Remove a direct member, or leave (the REST API and the members page).
pub(crate) async fn remove_member(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    user_id: &str,
) -> ApiResult<()> {
    let target = Target::load(state, caller, kind, id).await?;
    let current = direct_member(state, &target, user_id).await?;
    let leaving = caller.user().is_some_and(|u| u.id == current.user.id);
    if !leaving {
        check_manage(state, caller, &target, None, Some(current.access_level)).await?;
    }
    if is_last_owner(state, &target, &current).await? {
        return Err(last_owner_refused());
    }
    state
        .meta
        .remove_member(target.source(), current.user.id)
        .await?;
    Ok(())
}

/// The route adapters, written once and expanded for projects and for groups so the
/// two variants cannot drift; each `utoipa::path` documents its own variant.
macro_rules! member_routes {
    ($module:ident, $kind:expr, $plural:literal, $title:literal, $owner:literal) => {
        pub(crate) mod $module {
            use super::*;

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/members"),
                operation_id = concat!("list", $title, "Members"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    PageParams,
                    MemberListParams,
                ),
                responses(
                    (status = 200, description = "Direct members", body = [MemberBody]),
                    InvalidRefusedOrMissing,
                )
            )]
            pub(crate) async fn list(
                State(s): State<Shared>,
                c: Caller,
                pg: Pagination,
                v: View,
                Path(id): Path<String>,
                p: Params,
            ) -> ApiResult<Response> {
                super::list(&s, &c, ($kind, &id), &pg, &v, &p, false).await
            }

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/members/all"),
                operation_id = concat!("list", $title, "MembersAll"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    PageParams,
                    MemberListParams,
                ),
                responses(
                    (status = 200, description = "Everyone with access, inherited included, each with their highest level", body = [MemberBody]),
                    InvalidRefusedOrMissing,
                )
            )]
            pub(crate) async fn all(
                State(s): State<Shared>,
                c: Caller,
                pg: Pagination,
                v: View,
                Path(id): Path<String>,
                p: Params,
            ) -> ApiResult<Response> {
                super::list(&s, &c, ($kind, &id), &pg, &v, &p, true).await
            }

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/members/{user_id}"),
                operation_id = concat!("get", $title, "Member"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("user_id" = i64, Path, description = "The member's user id"),
                ),
                responses(
                    (status = 200, description = "The direct member", body = MemberBody),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn one(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path((id, user)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                super::one(&s, &c, $kind, &id, &user, &v, false).await
            }

            #[utoipa::path(
                get,
                path = concat!("/", $plural, "/{id}/members/all/{user_id}"),
                operation_id = concat!("get", $title, "MemberAll"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("user_id" = i64, Path, description = "The member's user id"),
                ),
                responses(
                    (status = 200, description = "The member, direct or inherited", body = MemberBody),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn all_one(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path((id, user)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                super::one(&s, &c, $kind, &id, &user, &v, true).await
            }

            #[utoipa::path(
                post,
                path = concat!("/", $plural, "/{id}/members"),
                operation_id = concat!("add", $title, "Member"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                ),
                request_body = AddMember,
                responses(
                    (status = 201, description = "The new member", body = MemberBody),
                    InvalidRefusedOrMissing,
                    (status = 409, description = "Already exists", body = ApiErrorBody),
                )
            )]
            pub(crate) async fn add(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path(id): Path<String>,
                p: Params,
            ) -> ApiResult<Response> {
                let m = super::add_member(&s, &c, $kind, &id, &p).await?;
                Ok((StatusCode::CREATED, Json(v.member(&m))).into_response())
            }

            #[utoipa::path(
                put,
                path = concat!("/", $plural, "/{id}/members/{user_id}"),
                operation_id = concat!("update", $title, "Member"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("user_id" = i64, Path, description = "The member's user id"),
                ),
                request_body = UpdateMember,
                responses(
                    (status = 200, description = "The updated member", body = MemberBody),
                    InvalidRefusedOrMissing,
                )
            )]
            pub(crate) async fn update(
                State(s): State<Shared>,
                c: Caller,
                v: View,
                Path((id, user)): Path<(String, String)>,
                p: Params,
            ) -> ApiResult<Response> {
                let m = super::update_member(&s, &c, $kind, &id, &user, &p).await?;
                Ok(Json(v.member(&m)).into_response())
            }

            #[utoipa::path(
                delete,
                path = concat!("/", $plural, "/{id}/members/{user_id}"),
                operation_id = concat!("remove", $title, "Member"),
                tag = "members",
                params(
                    ("id" = inline(IdOrPath), Path, description = concat!("The ", $owner, " id or URL-encoded full path")),
                    ("user_id" = i64, Path, description = "The member's user id"),
                ),
                responses(
                    (status = 204, description = "Removed"),
                    RefusedOrMissing,
                )
            )]
            pub(crate) async fn remove(
                State(s): State<Shared>,
                c: Caller,
                Path((id, user)): Path<(String, String)>,
            ) -> ApiResult<Response> {
                super::remove_member(&s, &c, $kind, &id, &user).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
        }
    };
}

member_routes!(project, Kind::Project, "projects", "Project", "project's");
member_routes!(group, Kind::Group, "groups", "Group", "group's");
