//! Overview pages: `/<project>`, `/groups/<group>`, and `/<username>` (a user's
//! personal namespace), so breadcrumbs and links after creating something lead to a
//! page. What is listed is what the viewer may read, by the REST API's checks.

use axum::http::StatusCode;
use axum::response::Response;
use berth_core::AccessLevel;
use berth_meta::{Namespace, NamespaceKind, Project};
use minijinja::{context, Value};

use super::nav::{self, Place};
use super::pages::{registry_host, when};
use super::Viewer;
use crate::api::{find_group, find_project};
use crate::state::Shared;

pub async fn project(state: &Shared, viewer: &Viewer, p: Project) -> Response {
    let place = Place::Project(p.clone());
    let nav = nav::context(state, viewer, &place, "overview").await;
    let host = registry_host(viewer);
    let image = format!("{host}/{}", p.full_path.to_ascii_lowercase());
    viewer.render(
        StatusCode::OK,
        "project.html",
        context! {
            title => p.name.clone(),
            nav => nav,
            project => context! {
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                description => p.description.clone(),
                visibility => p.visibility.as_str(),
                created => when(p.created_at),
                image => image.clone(),
            },
            push => format!("docker push {image}:<tag>"),
        },
    )
}

async fn readable_projects(
    state: &Shared,
    viewer: &Viewer,
    ns: &Namespace,
) -> Result<Vec<Value>, Response> {
    let list = state
        .meta
        .projects_in(ns.id, false)
        .await
        .map_err(|e| viewer.error(crate::api::ApiError::from(e).status()))?;
    let mut out = Vec::new();
    for p in list {
        if matches!(viewer.caller.can_read_project(state, &p).await, Ok(true)) {
            out.push(context! {
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                description => p.description.clone(),
                visibility => p.visibility.as_str(),
                url => format!("/{}", p.full_path),
            });
        }
    }
    out.sort_by_key(|v| {
        v.get_attr("name")
            .map(|n| n.to_string().to_lowercase())
            .unwrap_or_default()
    });
    Ok(out)
}

pub async fn group(state: &Shared, viewer: &Viewer, path: &str) -> Response {
    let g = match find_group(state, &viewer.caller, path).await {
        Ok(g) if g.kind == NamespaceKind::Group => g,
        Ok(_) => return viewer.error(StatusCode::NOT_FOUND),
        Err(e) => return viewer.error(e.status()),
    };
    let place = Place::Group(g.clone());
    let mine = nav::level(state, viewer, &place).await;
    let subgroups = match state.meta.subgroups(g.id).await {
        Ok(s) => s,
        Err(e) => return viewer.error(crate::api::ApiError::from(e).status()),
    };
    let mut subs = Vec::new();
    for s in subgroups {
        if matches!(viewer.caller.can_read_group(state, &s).await, Ok(true)) {
            subs.push(context! {
                name => s.name.clone(),
                full_path => s.full_path.clone(),
                visibility => s.visibility.as_str(),
                url => format!("/groups/{}", s.full_path),
            });
        }
    }
    let projects = match readable_projects(state, viewer, &g).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let nav = nav::context(state, viewer, &place, "overview").await;
    let can_create = mine.is_some_and(|l| l >= AccessLevel::Maintainer);
    viewer.render(
        StatusCode::OK,
        "group.html",
        context! {
            title => g.name.clone(),
            nav => nav,
            group => context! {
                name => g.name.clone(),
                full_path => g.full_path.clone(),
                description => g.description.clone(),
                visibility => g.visibility.as_str(),
            },
            subgroups => subs,
            projects => projects,
            new_project_url => can_create.then(|| format!("/projects/new?namespace_id={}", g.id)),
            new_subgroup_url => can_create.then(|| format!("/groups/new?parent_id={}", g.id)),
        },
    )
}

/// `/<path>`: a project's overview, a group's (sent to `/groups/<path>`), or a
/// user's namespace with their projects.
pub async fn any(state: &Shared, viewer: &Viewer, path: &str) -> Response {
    if let Ok(p) = find_project(state, &viewer.caller, path).await {
        return project(state, viewer, p).await;
    }
    let ns = match state.meta.namespace_by_path(path).await {
        Ok(Some(ns)) => ns,
        Ok(None) => return viewer.error(StatusCode::NOT_FOUND),
        Err(e) => return viewer.error(crate::api::ApiError::from(e).status()),
    };
    match ns.kind {
        NamespaceKind::Group => match find_group(state, &viewer.caller, path).await {
            Ok(g) => viewer.redirect(&format!("/groups/{}", g.full_path)),
            Err(e) => viewer.error(e.status()),
        },
        NamespaceKind::User => {
            // As the REST API's user look-up: a blocked user is not there, except
            // for administrators.
            let owner = match ns.owner_id {
                Some(id) => state.meta.user(id).await.ok().flatten(),
                None => None,
            };
            let visible = owner
                .is_some_and(|u| u.state == berth_meta::UserState::Active || viewer.caller.admin);
            if !visible {
                return viewer.error(StatusCode::NOT_FOUND);
            }
            let projects = match readable_projects(state, viewer, &ns).await {
                Ok(p) => p,
                Err(r) => return r,
            };
            let mine = viewer
                .user
                .as_ref()
                .is_some_and(|u| u.namespace_id == ns.id);
            viewer.render(
                StatusCode::OK,
                "user.html",
                context! {
                    title => ns.name.clone(),
                    owner => context! { name => ns.name.clone(), username => ns.full_path.clone() },
                    projects => projects,
                    new_project_url => mine.then(|| format!("/projects/new?namespace_id={}", ns.id)),
                },
            )
        }
    }
}
