//! A project's general settings (`/<project>/edit`): name, description, visibility
//! and registry access (maintainers), the path and the namespace (owners; the
//! registry moves with the project, atomically, after a confirmation naming every
//! image path that changes). Saved through the REST API's own functions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_core::AccessLevel;
use berth_meta::{Project, Window};
use minijinja::{context, Value};

use super::forms::{field_errors, Posted};
use super::nav::{self, Place};
use super::Viewer;
use crate::api::{find_project, projects, Params};
use crate::state::Shared;

const VISIBILITIES: [&str; 3] = ["private", "internal", "public"];
const ACCESS: [&str; 3] = ["enabled", "private", "disabled"];

pub fn edit_url(path: &str) -> String {
    format!("/{path}/edit")
}

/// The project, if the viewer may change its settings (maintainer); 404 otherwise.
async fn editable(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
) -> Result<(Project, AccessLevel), Response> {
    let p = find_project(state, &viewer.caller, path)
        .await
        .map_err(|e| viewer.error(e.status()))?;
    match nav::level(state, viewer, &Place::Project(p.clone())).await {
        Some(l) if l >= AccessLevel::Maintainer => Ok((p, l)),
        _ => Err(viewer.error(StatusCode::NOT_FOUND)),
    }
}

/// Image paths of `projects` now, and what they become when `old_prefix` (a project
/// or group path) becomes `new_prefix`.
async fn moved_images(
    state: &Shared,
    projects: &[i64],
    old_prefix: &str,
    new_prefix: &str,
) -> Vec<Value> {
    let all = Window {
        offset: 0,
        limit: i64::MAX,
    };
    let repos = match state.meta.repositories_of(projects, all).await {
        Ok((r, _)) => r,
        Err(_) => Vec::new(),
    };
    let old = old_prefix.to_ascii_lowercase();
    let new = new_prefix.to_ascii_lowercase();
    repos
        .iter()
        .map(|r| {
            let rest = r.path.strip_prefix(&old).unwrap_or("");
            context! { from => r.path.clone(), to => format!("{new}{rest}") }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn page(
    state: &Shared,
    viewer: &Viewer,
    p: &Project,
    level: AccessLevel,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    confirm: Option<Value>,
) -> Response {
    let owner = level >= AccessLevel::Owner;
    let namespaces = if owner {
        match super::create::namespaces(state, viewer).await {
            Ok(n) => n
                .into_iter()
                .filter(|(id, _)| *id != p.namespace_id)
                .map(|(id, path)| context! { id, path })
                .collect(),
            Err(r) => return r,
        }
    } else {
        Vec::new()
    };
    let nav = nav::context(state, viewer, &Place::Project(p.clone()), "general").await;
    let (ns_path, _) = p.full_path.rsplit_once('/').unwrap_or(("", ""));
    viewer.render(
        status,
        "project_edit.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("settings_general"), p.name),
            nav => nav,
            project => context! {
                name => p.name.clone(),
                path => p.path.clone(),
                namespace => ns_path,
                full_path => p.full_path.clone(),
                description => p.description.clone(),
                visibility => p.visibility.as_str(),
                access => p.registry_access.as_str(),
            },
            action => edit_url(&p.full_path),
            visibilities => VISIBILITIES.to_vec(),
            access_levels => ACCESS.to_vec(),
            owner => owner,
            namespaces => namespaces,
            errors => errors,
            confirm => confirm,
            notice => viewer.notice(),
        },
    )
}

pub async fn show(state: &Shared, viewer: &Viewer, path: &str) -> Response {
    match editable(state, viewer, path).await {
        Ok((p, level)) => {
            page(
                state,
                viewer,
                &p,
                level,
                StatusCode::OK,
                BTreeMap::new(),
                None,
            )
            .await
        }
        Err(r) => r,
    }
}

pub async fn save(state: &Shared, viewer: &Viewer, path: &str, form: &Posted) -> Response {
    let (p, level) = match editable(state, viewer, path).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let confirmed = form.get("confirm") == "yes";
    let result = match form.get("form") {
        "path" | "transfer" if !confirmed => {
            // First the confirmation, naming every image path that changes.
            let (prefix, what) = if form.get("form") == "path" {
                let (ns, _) = p.full_path.rsplit_once('/').unwrap_or(("", ""));
                (format!("{ns}/{}", form.get("path").trim()), "path")
            } else {
                let target = super::create::namespaces(state, viewer)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(id, _)| id.to_string() == form.get("namespace"));
                match target {
                    Some((_, ns)) => (format!("{ns}/{}", p.path), "transfer"),
                    None => return viewer.error(StatusCode::NOT_FOUND),
                }
            };
            let confirm = context! {
                form => what,
                path => form.get("path"),
                namespace => form.get("namespace"),
                new_full_path => prefix.clone(),
                images => moved_images(state, &[p.id], &p.full_path, &prefix).await,
            };
            return page(
                state,
                viewer,
                &p,
                level,
                StatusCode::OK,
                BTreeMap::new(),
                Some(confirm),
            )
            .await;
        }
        "path" => {
            let mut params = Params::default();
            params.set("path", form.get("path").trim());
            projects::update_project(state, &viewer.caller, &p.id.to_string(), &params).await
        }
        "transfer" => {
            let mut params = Params::default();
            params.set("namespace", form.get("namespace"));
            projects::transfer_project(state, &viewer.caller, &p.id.to_string(), &params).await
        }
        _ => {
            let mut params = form.params.clone();
            // A blank description clears it.
            params.set("description", form.get("description"));
            params.set("name", form.get("name"));
            projects::update_project(state, &viewer.caller, &p.id.to_string(), &params).await
        }
    };
    match result {
        Ok(saved) => viewer.redirect(&format!("{}?notice=saved", edit_url(&saved.full_path))),
        Err(e) if e.status() == StatusCode::FORBIDDEN => viewer.error(StatusCode::NOT_FOUND),
        Err(e) => page(state, viewer, &p, level, e.status(), field_errors(&e), None).await,
    }
}

/// A group's general settings (`/groups/<group>/-/edit`): name, description,
/// visibility (maintainers, as the REST API allows), and the path (owners), after a
/// confirmation naming every image path below it that changes.
pub mod group {
    use super::*;
    use crate::api::{find_group, groups};
    use berth_meta::Namespace;

    pub fn edit_url(path: &str) -> String {
        format!("/groups/{path}/-/edit")
    }

    async fn editable(
        state: &Shared,
        viewer: &Viewer,
        path: &str,
    ) -> Result<(Namespace, AccessLevel), Response> {
        let g = find_group(state, &viewer.caller, path)
            .await
            .map_err(|e| viewer.error(e.status()))?;
        match nav::level(state, viewer, &Place::Group(g.clone())).await {
            Some(l) if l >= AccessLevel::Maintainer => Ok((g, l)),
            _ => Err(viewer.error(StatusCode::NOT_FOUND)),
        }
    }

    /// Image paths below the group now, and under `new_full_path`.
    async fn images_below(state: &Shared, g: &Namespace, new_full_path: &str) -> Vec<Value> {
        let ids: Vec<i64> = match state.meta.projects_in(g.id, true).await {
            Ok(p) => p.iter().map(|p| p.id).collect(),
            Err(_) => Vec::new(),
        };
        moved_images(state, &ids, &g.full_path, new_full_path).await
    }

    async fn page(
        state: &Shared,
        viewer: &Viewer,
        g: &Namespace,
        level: AccessLevel,
        status: StatusCode,
        errors: BTreeMap<String, String>,
        confirm: Option<Value>,
    ) -> Response {
        let nav = nav::context(state, viewer, &Place::Group(g.clone()), "general").await;
        let parent = g.full_path.rsplit_once('/').map(|(p, _)| p.to_string());
        viewer.render(
            status,
            "group_edit.html",
            context! {
                title => format!("{} · {}", viewer.lang.text("settings_general"), g.name),
                nav => nav,
                group => context! {
                    name => g.name.clone(),
                    path => g.path.clone(),
                    parent => parent,
                    full_path => g.full_path.clone(),
                    description => g.description.clone(),
                    visibility => g.visibility.as_str(),
                },
                action => edit_url(&g.full_path),
                visibilities => VISIBILITIES.to_vec(),
                owner => level >= AccessLevel::Owner,
                errors => errors,
                confirm => confirm,
                notice => viewer.notice(),
            },
        )
    }

    pub async fn show(state: &Shared, viewer: &Viewer, path: &str) -> Response {
        match editable(state, viewer, path).await {
            Ok((g, level)) => {
                page(
                    state,
                    viewer,
                    &g,
                    level,
                    StatusCode::OK,
                    BTreeMap::new(),
                    None,
                )
                .await
            }
            Err(r) => r,
        }
    }

    pub async fn save(state: &Shared, viewer: &Viewer, path: &str, form: &Posted) -> Response {
        let (g, level) = match editable(state, viewer, path).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut params = Params::default();
        if form.get("form") == "path" {
            let new_path = form.get("path").trim();
            if form.get("confirm") != "yes" {
                let new_full = match g.full_path.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/{new_path}"),
                    None => new_path.to_string(),
                };
                let confirm = context! {
                    form => "path",
                    path => new_path,
                    namespace => "",
                    new_full_path => new_full.clone(),
                    images => images_below(state, &g, &new_full).await,
                };
                return page(
                    state,
                    viewer,
                    &g,
                    level,
                    StatusCode::OK,
                    BTreeMap::new(),
                    Some(confirm),
                )
                .await;
            }
            params.set("path", new_path);
        } else {
            params = form.params.clone();
            params.set("name", form.get("name"));
            params.set("description", form.get("description"));
        }
        match groups::update_group(state, &viewer.caller, &g.id.to_string(), &params).await {
            Ok(saved) => viewer.redirect(&format!("{}?notice=saved", edit_url(&saved.full_path))),
            Err(e) if e.status() == StatusCode::FORBIDDEN => viewer.error(StatusCode::NOT_FOUND),
            Err(e) => page(state, viewer, &g, level, e.status(), field_errors(&e), None).await,
        }
    }
}
