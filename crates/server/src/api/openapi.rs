//! The OpenAPI 3.1 document of `/api/v4`, served at `GET /api/v4/openapi.json`.
//!
//! It is generated from the code: each handler's `#[utoipa::path]` says its method,
//! path, parameters and every status it answers, and the response bodies are the
//! `schemas` types the handlers serialise, so the document and the API cannot drift
//! apart. A unit test compares the documented operations with the router's routes.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{PathItem, RefOr};
use utoipa::{Modify, OpenApi};

use super::{
    cleanup, dependency_proxy, groups, history, members, projects, protection, registry, settings,
    tokens, users,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth REST API",
        description = "GitLab-compatible REST API of the Berth container registry: users, \
                       groups, projects, members, tokens and the container registry. \
                       Parameters may be sent in the query string, as JSON or as a form.",
    ),
    servers((url = "/api/v4")),
    paths(
        super::version,
        document,
        users::current,
        users::list,
        users::create,
        users::show,
        users::update,
        users::block,
        users::unblock,
        groups::list,
        groups::create,
        groups::show,
        groups::update,
        groups::subgroups,
        groups::descendant_groups,
        groups::group_projects,
        groups::delete,
        groups::transfer,
        groups::transfer_project,
        projects::list,
        projects::create,
        projects::show,
        projects::update,
        projects::delete,
        projects::transfer,
        registry::project_repositories,
        registry::delete_repository,
        registry::list_tags,
        registry::bulk_delete,
        registry::show_tag,
        registry::delete_tag,
        registry::group_repositories,
        registry::show_repository,
        cleanup::preview,
        cleanup::log,
        cleanup::run_now,
        protection::repository::list,
        protection::repository::create,
        protection::repository::update,
        protection::repository::delete,
        protection::tag::list,
        protection::tag::create,
        protection::tag::update,
        protection::tag::delete,
        history::tag_history,
        history::deleted_tags,
        history::restore_tag,
        history::restore_run,
        settings::show,
        settings::update,
        members::project::list,
        members::project::add,
        members::project::all,
        members::project::all_one,
        members::project::one,
        members::project::update,
        members::project::remove,
        members::group::list,
        members::group::add,
        members::group::all,
        members::group::all_one,
        members::group::one,
        members::group::update,
        members::group::remove,
        tokens::create_for_user,
        tokens::create_for_self,
        tokens::list_personal,
        tokens::show_self,
        tokens::revoke_self,
        tokens::rotate_self,
        tokens::show_personal,
        tokens::revoke_personal,
        tokens::rotate_personal,
        tokens::project::list,
        tokens::project::create,
        tokens::project::show,
        tokens::project::delete,
        tokens::group::list,
        tokens::group::create,
        tokens::group::show,
        tokens::group::delete,
        tokens::deploy_list_all,
        dependency_proxy::show,
        dependency_proxy::update,
        dependency_proxy::purge,
    ),
    modifiers(&Security, &PageHeaders),
    security((), ("private_token" = []), ("bearer" = []), ("job_token" = [])),
)]
pub struct ApiDoc;

/// The token schemes GitLab accepts: `PRIVATE-TOKEN` and bearer for personal access
/// tokens, `JOB-TOKEN` for CI jobs (which reach only `GET /projects/{id}`).
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "private_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "PRIVATE-TOKEN",
                "A personal access token (`glpat-…`)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A personal access token as a bearer token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "job_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "JOB-TOKEN",
                "A CI job token",
            ))),
        );
    }
}

/// The headers of GitLab's offset pagination, on the 200 answer of every operation
/// that takes `page` (see `pagination`).
const PAGE_HEADERS: [(&str, &str); 7] = [
    ("x-page", "This page's number"),
    ("x-per-page", "Items per page"),
    (
        "x-next-page",
        "The next page's number; empty on the last page",
    ),
    (
        "x-prev-page",
        "The previous page's number; empty on the first page",
    ),
    (
        "x-total",
        "How many items there are; absent, as GitLab does, from a list counted only up \
         to 10,000 items (a group's repositories) that holds more",
    ),
    (
        "x-total-pages",
        "How many pages there are; absent when `x-total` is",
    ),
    (
        "link",
        "Absolute `prev`, `next`, `first` and `last` URLs (RFC 8288); no `last` when \
         `x-total` is absent",
    ),
];

struct PageHeaders;

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

impl Modify for PageHeaders {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let paged = op.parameters.iter().flatten().any(|p| p.name == "page");
                if !paged {
                    continue;
                }
                if let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") {
                    for (name, description) in PAGE_HEADERS {
                        let header = HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some(description))
                            .build();
                        ok.headers.insert(name.to_string(), header);
                    }
                }
            }
        }
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document of `/api/v4`", content_type = "application/json", body = Object),
    )
)]
pub async fn document() -> Response {
    ([(CONTENT_TYPE, "application/json")], document_json()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(document_json()).expect("the document is JSON")
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn document_parses_and_references_resolve() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["servers"][0]["url"], "/api/v4");
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        assert_eq!(schemes["private_token"]["name"], "PRIVATE-TOKEN");
        assert_eq!(schemes["job_token"]["name"], "JOB-TOKEN");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "unresolved {r}");
        }
        // Operation ids are unique, and every operation answers something documented.
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}: no responses");
                for name in path.split('{').skip(1) {
                    let name = name.split('}').next().unwrap();
                    let declared = op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["in"] == "path" && p["name"] == name);
                    assert!(
                        declared,
                        "{method} {path}: path parameter {name} undeclared"
                    );
                }
            }
        }
    }

    #[test]
    fn list_operations_document_the_page_headers() {
        let doc = doc();
        let ok = &doc["paths"]["/projects"]["get"]["responses"]["200"];
        assert!(ok["headers"]["x-total"].is_object(), "{ok}");
        assert!(ok["headers"]["link"].is_object(), "{ok}");
    }

    /// `(METHOD, path)` of every `.route(path, get(…).post(…))` in the API's sources.
    fn routes_in(source: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = source;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            // The call's arguments, up to the matching parenthesis.
            let mut depth = 1;
            let mut end = rest.len();
            for (j, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &rest[..end];
            let path = args.split('"').nth(1).expect("a literal path").to_string();
            let handlers = &args[args.find(',').expect("a handler")..];
            for word in handlers.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                if let Some(m) = ["get", "post", "put", "delete", "patch"]
                    .iter()
                    .find(|m| **m == word)
                {
                    // Only method routers: `get(handler)`, not a handler named `get`.
                    let call = format!("{m}(");
                    if handlers.contains(&call) {
                        out.push((m.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut routed = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                let source = source.split("#[cfg(test)]").next().unwrap();
                routed.extend(routes_in(source));
            }
        }
        assert!(routed.contains(&("GET".to_string(), "/projects/{id}".to_string())));
        let doc = doc();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] in openapi.rs: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented operations the router lacks: {unrouted:?}"
        );
    }

    #[test]
    fn route_parser() {
        let src = r#"
            Router::new()
                .route("/a", get(x).post(y))
                .route(
                    "/b/{id}",
                    axum::routing::delete(z),
                )
        "#;
        assert_eq!(
            routes_in(src),
            vec![
                ("GET".to_string(), "/a".to_string()),
                ("POST".to_string(), "/a".to_string()),
                ("DELETE".to_string(), "/b/{id}".to_string()),
            ]
        );
    }
}
