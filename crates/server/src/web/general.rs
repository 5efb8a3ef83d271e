//! A project's general settings (`/<project>/edit`): name, description, visibility
//! and registry access (maintainers), the path and the namespace (owners; the
//! registry moves with the project, atomically, after a confirmation naming every
//! image path that changes), and deleting it (owners, typing its full path). Saved
//! through the REST API's own functions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_core::AccessLevel;
use berth_meta::{Project, Window};
use minijinja::{context, Value};

use super::forms::{field_errors_in, Posted};
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

/// How many container repositories (images) `projects` hold, for the delete section.
async fn image_count(state: &Shared, projects: &[i64]) -> i64 {
    let one = Window {
        offset: 0,
        limit: 1,
    };
    match state.meta.repositories_of(projects, one).await {
        Ok((_, total)) => total,
        Err(_) => 0,
    }
}

/// The page's errors for a refused delete: a protection rule (403; the viewer is an
/// owner, so that is the only refusal left) or whatever the API said.
fn delete_errors(viewer: &Viewer, e: &crate::api::ApiError) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    let text = if e.status() == StatusCode::FORBIDDEN {
        viewer.lang.text("delete_refused_protected").to_string()
    } else {
        field_errors_in(e, viewer.lang)
            .into_values()
            .collect::<Vec<_>>()
            .join(" ")
    };
    errors.insert("delete".to_string(), text);
    errors
}

/// The typed confirmation of a delete, or the page's error for it.
fn delete_confirmed(
    viewer: &Viewer,
    form: &Posted,
    full_path: &str,
) -> Result<(), BTreeMap<String, String>> {
    if form.get("confirm_path").trim() == full_path {
        return Ok(());
    }
    let mut errors = BTreeMap::new();
    errors.insert(
        "confirm_path".to_string(),
        viewer.lang.text("delete_path_mismatch").to_string(),
    );
    Err(errors)
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
                .map(|(id, path)| context! { id, path => format!("{path}/") })
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
            delete_images => image_count(state, &[p.id]).await,
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
    if form.get("form") == "delete" {
        if level < AccessLevel::Owner {
            return viewer.error(StatusCode::NOT_FOUND);
        }
        if let Err(errors) = delete_confirmed(viewer, form, &p.full_path) {
            return page(
                state,
                viewer,
                &p,
                level,
                StatusCode::BAD_REQUEST,
                errors,
                None,
            )
            .await;
        }
        return match projects::delete_project(state, &viewer.caller, &p.id.to_string()).await {
            Ok(_) => viewer.redirect("/?notice=project_deleted"),
            Err(e) => {
                let errors = delete_errors(viewer, &e);
                page(state, viewer, &p, level, e.status(), errors, None).await
            }
        };
    }
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
        Err(e) => {
            page(
                state,
                viewer,
                &p,
                level,
                e.status(),
                field_errors_in(&e, viewer.lang),
                None,
            )
            .await
        }
    }
}

/// A group's general settings (`/groups/<group>/-/edit`): name, description,
/// visibility (maintainers, as the REST API allows), the path and the parent group
/// (owners), after a confirmation naming every image path below it that changes,
/// and deleting it (owners, typing its full path).
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

    /// Where the viewer may move the group: groups they own outside it (the REST API
    /// asks for owner of the new parent), and the top level (id 0), its current
    /// parent left out. `(id, full path)`; the top level's path is empty.
    async fn parents(state: &Shared, viewer: &Viewer, g: &Namespace) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        if g.parent_id.is_some() {
            out.push((0, String::new()));
        }
        let all = Window {
            offset: 0,
            limit: i64::MAX,
        };
        let Ok((groups, _)) = state.meta.groups(None, all).await else {
            return out;
        };
        let below = format!("{}/", g.full_path.to_ascii_lowercase());
        let mut mine = Vec::new();
        for c in groups {
            let lower = c.full_path.to_ascii_lowercase();
            if c.id == g.id || Some(c.id) == g.parent_id || lower.starts_with(&below) {
                continue;
            }
            if matches!(viewer.caller.namespace_level(state, &c).await, Ok(Some(l)) if l >= AccessLevel::Owner)
            {
                mine.push((c.id, c.full_path.clone()));
            }
        }
        mine.sort_by(|a, b| a.1.cmp(&b.1));
        out.extend(mine);
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn page(
        state: &Shared,
        viewer: &Viewer,
        g: &Namespace,
        level: AccessLevel,
        status: StatusCode,
        errors: BTreeMap<String, String>,
        confirm: Option<Value>,
    ) -> Response {
        let owner = level >= AccessLevel::Owner;
        let (parents, delete_projects, delete_images) = if owner {
            let top = viewer.lang.text("top_level").to_string();
            let parents: Vec<Value> = parents(state, viewer, g)
                .await
                .into_iter()
                .map(|(id, path)| {
                    let path = if id == 0 {
                        top.clone()
                    } else {
                        format!("{path}/")
                    };
                    context! { id, path }
                })
                .collect();
            let ids: Vec<i64> = match state.meta.projects_in(g.id, true).await {
                Ok(p) => p.iter().map(|p| p.id).collect(),
                Err(_) => Vec::new(),
            };
            let images = image_count(state, &ids).await;
            (parents, ids.len(), images)
        } else {
            (Vec::new(), 0, 0)
        };
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
                owner => owner,
                parents => parents,
                delete_projects => delete_projects,
                delete_images => delete_images,
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
        let confirmed = form.get("confirm") == "yes";
        match form.get("form") {
            "delete" => {
                if level < AccessLevel::Owner {
                    return viewer.error(StatusCode::NOT_FOUND);
                }
                if let Err(errors) = delete_confirmed(viewer, form, &g.full_path) {
                    return page(
                        state,
                        viewer,
                        &g,
                        level,
                        StatusCode::BAD_REQUEST,
                        errors,
                        None,
                    )
                    .await;
                }
                return match groups::delete_group(state, &viewer.caller, &g.id.to_string()).await {
                    Ok(_) => viewer.redirect("/?notice=group_deleted"),
                    Err(e) => {
                        let errors = delete_errors(viewer, &e);
                        page(state, viewer, &g, level, e.status(), errors, None).await
                    }
                };
            }
            "transfer" => {
                if level < AccessLevel::Owner {
                    return viewer.error(StatusCode::NOT_FOUND);
                }
                // Only a parent the page offered (the top level is 0).
                let Some((parent, parent_path)) = parents(state, viewer, &g)
                    .await
                    .into_iter()
                    .find(|(id, _)| id.to_string() == form.get("namespace"))
                else {
                    return viewer.error(StatusCode::NOT_FOUND);
                };
                if !confirmed {
                    let new_full = if parent == 0 {
                        g.path.clone()
                    } else {
                        format!("{parent_path}/{}", g.path)
                    };
                    let confirm = context! {
                        form => "transfer",
                        group => true,
                        path => "",
                        namespace => parent.to_string(),
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
                let parent = (parent != 0).then_some(parent);
                return match groups::transfer_group(
                    state,
                    &viewer.caller,
                    &g.id.to_string(),
                    parent,
                )
                .await
                {
                    Ok(moved) => {
                        viewer.redirect(&format!("{}?notice=saved", edit_url(&moved.full_path)))
                    }
                    Err(e) if e.status() == StatusCode::FORBIDDEN => {
                        viewer.error(StatusCode::NOT_FOUND)
                    }
                    Err(e) => {
                        page(
                            state,
                            viewer,
                            &g,
                            level,
                            e.status(),
                            field_errors_in(&e, viewer.lang),
                            None,
                        )
                        .await
                    }
                };
            }
            _ => {}
        }
        let mut params = Params::default();
        if form.get("form") == "path" {
            let new_path = form.get("path").trim();
            if !confirmed {
                let new_full = match g.full_path.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/{new_path}"),
                    None => new_path.to_string(),
                };
                let confirm = context! {
                    form => "path",
                    group => true,
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
            Err(e) => {
                page(
                    state,
                    viewer,
                    &g,
                    level,
                    e.status(),
                    field_errors_in(&e, viewer.lang),
                    None,
                )
                .await
            }
        }
    }
}
