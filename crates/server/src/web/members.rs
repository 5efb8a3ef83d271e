//! Members of a project or group (`/<project>/-/project_members`,
//! `/groups/<group>/-/group_members`): who has access, with role and where it comes
//! from; add an existing user, change a role, remove. The rules (maintainers manage
//! up to Maintainer, owners manage owners, a top-level group keeps an owner, no
//! direct role below an inherited one) are the REST API's functions, called as they
//! are; the page only shows controls those rules allow.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_core::AccessLevel;
use minijinja::{context, Value};

use super::forms::{field_errors_in, Posted};
use super::nav::{self, Place};
use super::Viewer;
use crate::api::members::{self, manage_allowed, Target};
use crate::api::{ApiError, Kind};
use crate::state::Shared;

const LEVELS: [AccessLevel; 5] = [
    AccessLevel::Guest,
    AccessLevel::Reporter,
    AccessLevel::Developer,
    AccessLevel::Maintainer,
    AccessLevel::Owner,
];

fn level_key(l: AccessLevel) -> &'static str {
    match l {
        AccessLevel::Guest => "role_guest",
        AccessLevel::Reporter => "role_reporter",
        AccessLevel::Developer => "role_developer",
        AccessLevel::Maintainer => "role_maintainer",
        AccessLevel::Owner => "role_owner",
    }
}

pub fn members_url(kind: Kind, path: &str) -> String {
    match kind {
        Kind::Project => format!("/{path}/-/project_members"),
        Kind::Group => format!("/groups/{path}/-/group_members"),
    }
}

/// The members page, with `errors` from a refused form and what was typed in it.
pub async fn page(
    state: &Shared,
    viewer: &Viewer,
    kind: Kind,
    path: &str,
    status: StatusCode,
    errors: BTreeMap<String, String>,
    input: Value,
) -> Response {
    let target = match Target::load(state, &viewer.caller, kind, path).await {
        Ok(t) => t,
        Err(e) => return viewer.error(e.status()),
    };
    let mine = match target.caller_level(state, &viewer.caller).await {
        Ok(l) => l,
        Err(e) => return viewer.error(e.status()),
    };
    let list = match members::members_with_source(state, &target).await {
        Ok(l) => l,
        Err(e) => return viewer.error(e.status()),
    };
    let place = match &target {
        Target::Project(p) => Place::Project(p.clone()),
        Target::Group(g) => Place::Group(g.clone()),
    };
    let full_path = place.full_path().to_string();
    let here = members_url(kind, &full_path);
    let me = viewer.user.as_ref().map(|u| u.id);
    // The only direct owner of a top-level group can be neither removed nor demoted
    // (the API refuses it too): no controls, a note instead.
    let top_level_group = matches!(&target, Target::Group(g) if g.parent_id.is_none());
    let owners: Vec<i64> = list
        .iter()
        .filter(|(m, from)| from.is_none() && m.access_level == AccessLevel::Owner)
        .map(|(m, _)| m.user.id)
        .collect();
    let last_owner = match owners.as_slice() {
        [only] if top_level_group => Some(*only),
        _ => None,
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|(m, from)| {
            let direct = from.is_none();
            let last = last_owner == Some(m.user.id);
            let manage = direct && !last && manage_allowed(mine, None, Some(m.access_level));
            // Roles this viewer may give: up to Maintainer, Owner for owners.
            let roles: Vec<Value> = LEVELS
                .iter()
                .filter(|l| manage_allowed(mine, Some(**l), Some(m.access_level)))
                .map(|l| context! { value => l.value(), label => viewer.lang.text(level_key(*l)), selected => *l == m.access_level })
                .collect();
            context! {
                user_id => m.user.id,
                username => m.user.username.clone(),
                name => m.user.name.clone(),
                role => viewer.lang.text(level_key(m.access_level)),
                level => m.access_level.value(),
                source => from.clone(),
                direct => direct,
                expires => m.expires_at.clone(),
                can_manage => manage,
                can_leave => direct && !last && me == Some(m.user.id) && !manage,
                last_owner => last,
                roles => roles,
                url => format!("{here}/{}", m.user.id),
                remove_confirm => viewer.lang.text("member_remove_confirm").replace("{username}", &m.user.username),
            }
        })
        .collect();
    let can_add = mine.is_some_and(|l| l >= AccessLevel::Maintainer);
    let add_roles: Vec<Value> = LEVELS
        .iter()
        .filter(|l| manage_allowed(mine, Some(**l), None))
        .map(|l| context! { value => l.value(), label => viewer.lang.text(level_key(*l)) })
        .collect();
    let nav = nav::context(state, viewer, &place, "members").await;
    viewer.render(
        status,
        "members.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("members_title"), place.name()),
            nav => nav,
            scope => if matches!(kind, Kind::Project) { "project" } else { "group" },
            members => rows,
            can_add => can_add,
            add_roles => add_roles,
            action => here,
            errors => errors,
            input => input,
            notice => viewer.notice(),
        },
    )
}

/// Add a member (`POST …/project_members`).
pub async fn add(
    state: &Shared,
    viewer: &Viewer,
    kind: Kind,
    path: &str,
    form: &Posted,
) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    let mut params = form.params.clone();
    params.set(
        "username",
        form.get("username").trim().trim_start_matches('@'),
    );
    match members::add_member(state, &viewer.caller, kind, path, &params).await {
        Ok(_) => viewer.redirect(&format!("{}?notice=member_added", members_url(kind, path))),
        Err(e) => {
            let mut errors = field_errors_in(&e, viewer.lang);
            if e.status() == StatusCode::NOT_FOUND && errors.contains_key("form") {
                // The user (not the page) was not found: say so next to the field.
                errors.remove("form");
                errors.insert("username".into(), viewer.lang.text("member_user_not_found"));
            }
            if e.status() == StatusCode::CONFLICT {
                errors.remove("form");
                errors.insert("username".into(), viewer.lang.text("member_exists"));
            }
            let input = context! {
                username => form.get("username"),
                access_level => form.get("access_level"),
                expires_at => form.get("expires_at"),
            };
            page(state, viewer, kind, path, status_of(&e), errors, input).await
        }
    }
}

fn is_last_owner_refusal(e: &ApiError) -> bool {
    e.problems()
        .iter()
        .any(|(_, p)| p.as_str() == members::LAST_OWNER)
}

fn status_of(e: &ApiError) -> StatusCode {
    match e.status() {
        StatusCode::NOT_FOUND | StatusCode::CONFLICT => StatusCode::UNPROCESSABLE_ENTITY,
        s => s,
    }
}

/// Change a role or remove (`POST …/project_members/<user id>`, `action=update|remove`).
pub async fn change(
    state: &Shared,
    viewer: &Viewer,
    kind: Kind,
    path: &str,
    user_id: &str,
    form: &Posted,
) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    let result = match form.get("action") {
        "remove" => members::remove_member(state, &viewer.caller, kind, path, user_id)
            .await
            .map(|_| "member_removed"),
        _ => members::update_member(state, &viewer.caller, kind, path, user_id, &form.params)
            .await
            .map(|_| "member_updated"),
    };
    match result {
        Ok(notice) => {
            // Someone who left may no longer see the page.
            viewer.redirect(&format!("{}?notice={notice}", members_url(kind, path)))
        }
        Err(e) if is_last_owner_refusal(&e) => {
            let errors =
                BTreeMap::from([("form".to_string(), viewer.lang.text("member_last_owner"))]);
            page(
                state,
                viewer,
                kind,
                path,
                e.status(),
                errors,
                Value::from(()),
            )
            .await
        }
        Err(e) if e.status() == StatusCode::FORBIDDEN || e.status() == StatusCode::NOT_FOUND => {
            viewer.error(e.status())
        }
        Err(e) => {
            page(
                state,
                viewer,
                kind,
                path,
                e.status(),
                field_errors_in(&e, viewer.lang),
                Value::from(()),
            )
            .await
        }
    }
}
