//! New groups and projects (`/groups/new`, `/projects/new`). Who may create where is
//! the REST API's rule, called as it is: any user in their own namespace, maintainers
//! and owners in a group (subgroups too). The page only offers what it allows.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_core::AccessLevel;
use minijinja::{context, Value};

use super::forms::field_errors_in;
use super::Viewer;
use crate::api::{groups, projects};
use crate::state::Shared;

const VISIBILITIES: [&str; 3] = ["private", "internal", "public"];

/// Namespaces the viewer may create in: their own, then groups where they are
/// maintainer or more (GitLab's default for projects and subgroups), by path.
pub(crate) async fn namespaces(
    state: &Shared,
    viewer: &Viewer,
) -> Result<Vec<(i64, String)>, Response> {
    let Some(user) = viewer.user.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = vec![(user.namespace_id, user.username.clone())];
    let all = berth_meta::Window {
        offset: 0,
        limit: i64::MAX,
    };
    let (groups, _) = state
        .meta
        .groups(None, all)
        .await
        .map_err(|e| viewer.error(crate::api::ApiError::from(e).status()))?;
    let mut mine = Vec::new();
    for g in groups {
        if matches!(viewer.caller.namespace_level(state, &g).await, Ok(Some(l)) if l >= AccessLevel::Maintainer)
        {
            mine.push((g.id, g.full_path.clone()));
        }
    }
    mine.sort_by(|a, b| a.1.cmp(&b.1));
    out.extend(mine);
    Ok(out)
}

fn query_value(query: &Option<String>, key: &str) -> String {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn group_form(
    state: &Shared,
    viewer: &Viewer,
    status: StatusCode,
    input: Value,
    errors: BTreeMap<String, String>,
) -> Response {
    let parents = match namespaces(state, viewer).await {
        Ok(n) => n.into_iter().skip(1).collect::<Vec<_>>(),
        Err(r) => return r,
    };
    let top_level_allowed = viewer.caller.admin
        || match crate::instance::can_create_group(state.meta.as_ref()).await {
            Ok(on) => on,
            Err(e) => return viewer.error(crate::api::ApiError::from(e).status()),
        };
    viewer.render(
        status,
        "new_group.html",
        context! {
            title => viewer.lang.text("new_group"),
            top_level_allowed => top_level_allowed,
            parents => parents.into_iter().map(|(id, path)| context! { id, path }).collect::<Vec<_>>(),
            visibilities => VISIBILITIES.to_vec(),
            input => input,
            errors => errors,
        },
    )
}

pub async fn new_group(
    State(state): State<Shared>,
    viewer: Viewer,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    let input = context! {
        name => "", path => "", description => "", visibility => "private",
        parent_id => query_value(&q, "parent_id"),
    };
    group_form(&state, &viewer, StatusCode::OK, input, BTreeMap::new()).await
}

pub async fn create_group(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match viewer.signed_in_post(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match groups::create_group(&state, &viewer.caller, &form.params).await {
        Ok(g) => viewer.redirect(&format!("/groups/{}", g.full_path)),
        Err(e) => {
            let input = context! {
                name => form.get("name"), path => form.get("path"),
                description => form.get("description"), visibility => form.get("visibility"),
                parent_id => form.get("parent_id"),
            };
            group_form(
                &state,
                &viewer,
                e.status(),
                input,
                field_errors_in(&e, viewer.lang),
            )
            .await
        }
    }
}

async fn project_form(
    state: &Shared,
    viewer: &Viewer,
    status: StatusCode,
    input: Value,
    errors: BTreeMap<String, String>,
) -> Response {
    let namespaces = match namespaces(state, viewer).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    viewer.render(
        status,
        "new_project.html",
        context! {
            title => viewer.lang.text("new_project"),
            namespaces => namespaces.into_iter().map(|(id, path)| context! { id, path }).collect::<Vec<_>>(),
            visibilities => VISIBILITIES.to_vec(),
            input => input,
            errors => errors,
        },
    )
}

pub async fn new_project(
    State(state): State<Shared>,
    viewer: Viewer,
    RawQuery(q): RawQuery,
) -> Response {
    let user = match viewer.signed_in() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let ns = query_value(&q, "namespace_id");
    let input = context! {
        name => "", path => "", description => "", visibility => "private",
        namespace_id => if ns.is_empty() { user.namespace_id.to_string() } else { ns },
    };
    project_form(&state, &viewer, StatusCode::OK, input, BTreeMap::new()).await
}

pub async fn create_project(
    State(state): State<Shared>,
    viewer: Viewer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match viewer.signed_in_post(&method, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match projects::create_project(&state, &viewer.caller, &form.params).await {
        Ok(p) => viewer.redirect(&format!("/{}", p.full_path)),
        Err(e) => {
            let input = context! {
                name => form.get("name"), path => form.get("path"),
                description => form.get("description"), visibility => form.get("visibility"),
                namespace_id => form.get("namespace_id"),
            };
            project_form(
                &state,
                &viewer,
                e.status(),
                input,
                field_errors_in(&e, viewer.lang),
            )
            .await
        }
    }
}
