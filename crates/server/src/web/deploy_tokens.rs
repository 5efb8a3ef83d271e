//! The "Deploy tokens" section of `/<project>/-/settings/repository` and
//! `/groups/<group>/-/settings/repository`: create (shown once), list, revoke,
//! through the REST API's own functions and rules (maintainers of a project, owners
//! of a group create and revoke).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_meta::DeployToken;
use minijinja::{context, Value};

use super::forms::{field_errors_in, Posted};
use super::nav::{self, Place};
use super::pages::{registry_host, when};
use super::Viewer;
use crate::api::{find_group, find_project, tokens, Kind, Params};
use crate::state::Shared;

/// Scopes offered for deploy tokens (those a registry uses).
const SCOPES: [&str; 2] = ["read_registry", "write_registry"];

pub fn settings_url(kind: Kind, path: &str) -> String {
    match kind {
        Kind::Project => format!("/{path}/-/settings/repository"),
        Kind::Group => format!("/groups/{path}/-/settings/repository"),
    }
}

fn row(viewer: &Viewer, url: &str, t: &DeployToken) -> Value {
    context! {
        id => t.id,
        name => t.name.clone(),
        username => t.username.clone(),
        scopes => t.scopes.join(", "),
        created => when(t.created_at),
        expires => t.expires_at.map(when),
        revoke_url => format!("{url}/deploy_token/{}/revoke", t.id),
        revoke_confirm => viewer.lang.text("deploy_token_revoke_confirm").replace("{name}", &t.name),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn page(
    state: &Shared,
    viewer: &Viewer,
    kind: Kind,
    path: &str,
    status: StatusCode,
    created: Option<(DeployToken, String)>,
    errors: BTreeMap<String, String>,
    input: Value,
) -> Response {
    let place = match kind {
        Kind::Project => find_project(state, &viewer.caller, path)
            .await
            .map(Place::Project),
        Kind::Group => find_group(state, &viewer.caller, path)
            .await
            .map(Place::Group),
    };
    let place = match place {
        Ok(p) => p,
        Err(e) => return viewer.error(e.status()),
    };
    // Listing needs what the API's listing needs (maintainer); 404 otherwise, as
    // GitLab answers settings pages to those who may not see them.
    let list = match tokens::deploy_tokens_of(state, &viewer.caller, kind, path, &Params::default())
        .await
    {
        Ok(l) => l,
        Err(_) => return viewer.error(StatusCode::NOT_FOUND),
    };
    let can_create = match &place {
        Place::Project(_) => true,
        Place::Group(_) => nav::level(state, viewer, &place)
            .await
            .is_some_and(|l| l >= berth_core::AccessLevel::Owner),
    };
    let source = match &place {
        Place::Project(p) => berth_meta::Source::Project(p.id),
        Place::Group(g) => berth_meta::Source::Namespace(g.id),
    };
    // Only a token of this project or group (the id came from the browser).
    let created = created.filter(|(t, _)| t.source == source);
    let url = settings_url(kind, place.full_path());
    let host = registry_host(viewer);
    let image = format!("{host}/{}", place.full_path().to_ascii_lowercase());
    let created = created.map(|(t, secret)| {
        context! {
            name => t.name.clone(),
            username => t.username.clone(),
            secret => secret.clone(),
            login => format!("echo {secret} | docker login {host} -u {} --password-stdin", t.username),
            pull => format!("docker pull {image}/<image>:<tag>"),
        }
    });
    let rows: Vec<Value> = list.iter().map(|t| row(viewer, &url, t)).collect();
    let nav = nav::context(state, viewer, &place, "repository").await;
    viewer.render(
        status,
        "deploy_tokens.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("repository_settings_title"), place.name()),
            nav => nav,
            action => url,
            scopes => SCOPES.to_vec(),
            tokens => rows,
            created => created,
            can_create => can_create,
            errors => errors,
            input => input,
            notice => viewer.notice(),
        },
    )
}

pub async fn show(
    state: &Shared,
    viewer: &mut Viewer,
    kind: Kind,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Response {
    // A token just created here: shown with its secret, this once.
    let mut created = None;
    if let Some((id, secret)) = viewer.take_secret(headers, "deploy") {
        if let Ok(Some(t)) = state.meta.deploy_token(id).await {
            created = Some((t, secret));
        }
    }
    page(
        state,
        viewer,
        kind,
        path,
        StatusCode::OK,
        created,
        BTreeMap::new(),
        Value::from(()),
    )
    .await
}

pub async fn create(
    state: &Shared,
    viewer: &Viewer,
    kind: Kind,
    path: &str,
    form: &Posted,
) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    match tokens::create_deploy_token(state, &viewer.caller, kind, path, &form.params).await {
        Ok((token, secret)) => {
            tracing::info!(token = %token.name, "deploy token created in the browser");
            viewer.redirect_with_secret(&settings_url(kind, path), "deploy", token.id, &secret)
        }
        Err(e) if e.status() == StatusCode::FORBIDDEN || e.status() == StatusCode::NOT_FOUND => {
            viewer.error(StatusCode::NOT_FOUND)
        }
        Err(e) => {
            let input = context! {
                name => form.get("name"),
                username => form.get("username"),
                expires_at => form.get("expires_at"),
                scopes => form.all("scopes[]"),
            };
            page(
                state,
                viewer,
                kind,
                path,
                e.status(),
                None,
                field_errors_in(&e, viewer.lang),
                input,
            )
            .await
        }
    }
}

pub async fn revoke(state: &Shared, viewer: &Viewer, kind: Kind, path: &str, id: &str) -> Response {
    if let Err(r) = viewer.signed_in() {
        return r;
    }
    match tokens::revoke_deploy_token(state, &viewer.caller, kind, path, id).await {
        Ok(()) => viewer.redirect(&format!(
            "{}?notice=deploy_token_revoked",
            settings_url(kind, path)
        )),
        Err(e) => viewer.error(e.status()),
    }
}
