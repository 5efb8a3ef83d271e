//! The group's Dependency Proxy page (`/groups/<group>/-/dependency_proxy`), as
//! GitLab's: the image prefix to pull with, what the cache holds, the TTL policy
//! (maintainers) and purging the cache (owners).

use axum::http::StatusCode;
use axum::response::Response;
use berth_core::AccessLevel;
use berth_meta::ProxySettings;
use minijinja::context;

use super::field;
use super::pages::human_size;
use super::session::Viewer;
use crate::api;
use crate::state::Shared;

/// The `notice` a redirect after a form put in the query string.
fn notice(here: &str) -> Option<String> {
    let query = here.split_once('?').map_or("", |x| x.1);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "notice")
        .map(|(_, v)| v.into_owned())
}

fn page_url(full_path: &str) -> String {
    format!("/groups/{full_path}/-/dependency_proxy")
}

pub async fn show(state: &Shared, viewer: &Viewer, path: &str) -> Response {
    let g = match api::find_group(state, &viewer.caller, path).await {
        Ok(g) => g,
        Err(e) => return viewer.error(e.status()),
    };
    let level = match viewer.caller.namespace_level(state, &g).await {
        Ok(l) => l,
        Err(e) => return viewer.error(e.status()),
    };
    // Pulling needs Reporter; so does seeing the proxy, as in GitLab.
    if level.is_none_or(|l| l < AccessLevel::Reporter) {
        return viewer.error(StatusCode::NOT_FOUND);
    }
    let (settings, usage) = match (
        state.meta.proxy_settings(g.id).await,
        state.meta.proxy_usage(g.id).await,
    ) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return viewer.error(api::ApiError::from(e).status()),
    };
    let host = viewer
        .base
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(&viewer.base)
        .to_string();
    let prefix = format!(
        "{host}/{}/dependency_proxy/containers",
        g.full_path.to_ascii_lowercase()
    );
    viewer.render(
        StatusCode::OK,
        "dependency_proxy.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("dependency_proxy"), g.name),
            group => context! { name => g.name.clone(), full_path => g.full_path.clone() },
            instance_enabled => state.proxy.config.enabled,
            prefix => prefix.clone(),
            pull_example => format!("docker pull {prefix}/alpine:latest"),
            login_example => format!("docker login {host}"),
            settings => context! {
                enabled => settings.enabled,
                ttl_policy_enabled => settings.ttl_policy_enabled,
                ttl_days => settings.ttl_days,
            },
            count => usage.manifests + usage.blobs,
            size => human_size(usage.blob_bytes),
            can_edit => level.is_some_and(|l| l >= AccessLevel::Maintainer),
            can_purge => level.is_some_and(|l| l >= AccessLevel::Owner),
            url => page_url(&g.full_path),
            notice => notice(&viewer.here),
        },
    )
}

pub async fn save(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    fields: &[(String, String)],
) -> Response {
    let g = match api::find_group(state, &viewer.caller, path).await {
        Ok(g) => g,
        Err(e) => return viewer.error(e.status()),
    };
    let back = page_url(&g.full_path);
    match field(fields, "form") {
        Some("settings") => {
            if let Err(e) = viewer
                .caller
                .require_group_level(state, &g, AccessLevel::Maintainer)
                .await
            {
                return viewer.error(e.status());
            }
            let Some(ttl_days) = field(fields, "ttl_days")
                .and_then(|d| d.trim().parse::<i64>().ok())
                .filter(|d| *d >= 1)
            else {
                return viewer.error(StatusCode::BAD_REQUEST);
            };
            // Unticked checkboxes send nothing: they mean "off".
            let new = ProxySettings {
                enabled: field(fields, "enabled").is_some(),
                ttl_policy_enabled: field(fields, "ttl_policy_enabled").is_some(),
                ttl_days,
            };
            match state.meta.set_proxy_settings(g.id, &new).await {
                Ok(()) => viewer.redirect(&format!("{back}?notice=saved")),
                Err(e) => viewer.error(api::ApiError::from(e).status()),
            }
        }
        Some("purge") => {
            if let Err(e) = viewer
                .caller
                .require_group_level(state, &g, AccessLevel::Owner)
                .await
            {
                return viewer.error(e.status());
            }
            match crate::proxy::cache::purge(state, g.id, None).await {
                Ok(_) => viewer.redirect(&format!("{back}?notice=purged")),
                Err(e) => {
                    tracing::error!(error = %e, "purging the dependency proxy cache failed");
                    viewer.error(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }
        _ => viewer.error(StatusCode::BAD_REQUEST),
    }
}
