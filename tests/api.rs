//! End-to-end tests of the GitLab-compatible REST API (`/api/v4`): users, groups,
//! projects, members, personal access tokens and deploy tokens, over real HTTP
//! against the real `berth` binary, and driven by python-gitlab 8.6.0. Expected
//! shapes and codes come from shared/reference/gitlab-api.md §1.1, §2, §6 and §7.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use support::{run, Berth};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fully read API response.
struct Resp {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or_else(|| panic!("{}: no {name} header", self.what))
    }

    /// Assert the status and hand back the body.
    fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} {}",
            self.what, self.status, self.body
        );
        self.body
    }
}

/// Talks to `/api/v4` of one server.
struct Api {
    base: String,
    client: Client,
}

impl Api {
    fn new(berth: &Berth) -> Api {
        Api {
            base: format!("{}/api/v4", berth.url),
            client: Client::new(),
        }
    }

    fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req: RequestBuilder = self.client.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.header("PRIVATE-TOKEN", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.finish(format!("{method} {path}"), req)
    }

    fn finish(&self, what: String, req: RequestBuilder) -> Resp {
        let resp = req.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("body");
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Resp {
            what,
            status,
            headers,
            body,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, None)
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::POST, path, token, Some(body))
    }

    fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::PUT, path, token, Some(body))
    }

    fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::DELETE, path, token, None)
    }
}

/// A personal access token for `user` with `scopes` (comma-separated), via the CLI.
fn pat(berth: &Berth, user: &str, scopes: &str) -> String {
    berth.admin(&[
        "token", "create", "--user", user, "--name", "t", "--scopes", scopes,
    ])
}

fn root_token(berth: &Berth) -> String {
    pat(berth, "root", "api")
}

/// A user with an `api` token; returns (user id, token).
fn user_with_token(berth: &Berth, api: &Api, root: &str, username: &str) -> (i64, String) {
    let u = api
        .post(
            "/users",
            Some(root),
            json!({"username": username, "name": username, "password": "password-123"}),
        )
        .expect(201);
    (u["id"].as_i64().expect("id"), pat(berth, username, "api"))
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

fn paths(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|x| x[key].as_str().expect("string").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn version_and_current_user() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);

    let v = api.get("/version", Some(&root)).expect(200);
    assert!(v["version"].as_str().unwrap().contains("berth"), "{v}");
    assert!(v["revision"].is_string());
    assert_eq!(
        api.get("/version", None).expect(401),
        json!({"message": "401 Unauthorized"})
    );

    let me = api.get("/user", Some(&root)).expect(200);
    assert_eq!(me["username"], "root");
    assert_eq!(me["is_admin"], true);
    assert_eq!(me["state"], "active");
    assert_eq!(me["web_url"], format!("{}/root", berth.url));
    let created = me["created_at"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[19] == b'.',
        "ISO-8601 with milliseconds: {created}"
    );

    // The other ways to present a token.
    let bearer = api.finish(
        "bearer".into(),
        api.client
            .get(format!("{}/user", api.base))
            .bearer_auth(&root),
    );
    assert_eq!(bearer.expect(200)["username"], "root");
    let query = api.get(&format!("/user?private_token={root}"), None);
    assert_eq!(query.expect(200)["username"], "root");
    let query = api.get(&format!("/user?access_token={root}"), None);
    assert_eq!(query.expect(200)["username"], "root");

    assert_eq!(
        api.get("/user", None).expect(401),
        json!({"message": "401 Unauthorized"})
    );
    assert_eq!(
        api.get("/user", Some("glpat-not-a-real-token0"))
            .expect(401),
        json!({"message": "401 Unauthorized"})
    );
    // An invalid token is refused even where anonymous callers are welcome.
    api.get("/projects", Some("glpat-not-a-real-token0"))
        .expect(401);
}

#[test]
fn users_create_get_update_block() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);

    let alice = api
        .post(
            "/users",
            Some(&root),
            json!({"username": "alice", "name": "Alice A", "email": "alice@example.com",
                   "password": "alice-password", "admin": false}),
        )
        .expect(201);
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["is_admin"], false);
    let alice_id = id(&alice);
    let alice_tok = pat(&berth, "alice", "api");

    // Validation and conflicts, in GitLab's shapes.
    assert_eq!(
        api.post("/users", Some(&root), json!({"username": "bob"}))
            .expect(400),
        json!({"error": "name is missing"})
    );
    assert_eq!(
        api.post(
            "/users",
            Some(&root),
            json!({"username": "bob", "name": "Bob", "password": "short"})
        )
        .expect(400),
        json!({"message": {"password": ["is too short (minimum is 8 characters)"]}})
    );
    assert_eq!(
        api.post(
            "/users",
            Some(&root),
            json!({"username": "ALICE", "name": "Again"})
        )
        .expect(409),
        json!({"message": "Username has already been taken"})
    );
    // Only administrators create users.
    assert_eq!(
        api.post(
            "/users",
            Some(&alice_tok),
            json!({"username": "mallory", "name": "M"})
        )
        .expect(403),
        json!({"message": "403 Forbidden"})
    );
    // A form-encoded body works too (curl users), with `1` as a boolean.
    let form = api.finish(
        "form".into(),
        api.client
            .post(format!("{}/users", api.base))
            .header("PRIVATE-TOKEN", &root)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("username=carol&name=Carol+C&admin=1"),
    );
    let carol = form.expect(201);
    assert_eq!(carol["name"], "Carol C");
    assert_eq!(carol["is_admin"], true);

    // Get: others see public fields only.
    let seen = api
        .get(&format!("/users/{alice_id}"), Some(&root))
        .expect(200);
    assert_eq!(seen["email"], "alice@example.com");
    let public = api
        .get(&format!("/users/{}", id(&carol)), Some(&alice_tok))
        .expect(200);
    assert_eq!(public["username"], "carol");
    assert!(public.get("email").is_none() && public.get("is_admin").is_none());
    assert_eq!(
        api.get("/users/9999", Some(&root)).expect(404),
        json!({"message": "404 User Not Found"})
    );

    // Update.
    let updated = api
        .put(
            &format!("/users/{alice_id}"),
            Some(&root),
            json!({"name": "Alice B", "email": "b@example.com"}),
        )
        .expect(200);
    assert_eq!(updated["name"], "Alice B");
    assert_eq!(updated["email"], "b@example.com");
    api.put(
        &format!("/users/{alice_id}"),
        Some(&alice_tok),
        json!({"admin": true}),
    )
    .expect(403);

    // Search.
    let found = api.get("/users?search=alice", Some(&root)).expect(200);
    assert_eq!(paths(&found, "username"), vec!["alice"]);
    let found = api
        .get("/users?username=carol", Some(&alice_tok))
        .expect(200);
    assert_eq!(paths(&found, "username"), vec!["carol"]);

    // Block: 201 true, and the user's tokens stop working.
    let blocked = api.post(&format!("/users/{alice_id}/block"), Some(&root), json!({}));
    assert_eq!(blocked.expect(201), json!(true));
    api.get("/user", Some(&alice_tok)).expect(401);
    let carol_tok = pat(&berth, "carol", "read_api");
    let visible = api.get("/users", Some(&carol_tok)).expect(200);
    // carol is an admin: she sees blocked users; a non-admin would not.
    assert!(paths(&visible, "username").contains(&"alice".to_string()));
    let as_admin = api.get("/users?blocked=true", Some(&root)).expect(200);
    assert_eq!(paths(&as_admin, "username"), vec!["alice"]);
    let unblocked = api.post(
        &format!("/users/{alice_id}/unblock"),
        Some(&root),
        json!({}),
    );
    assert_eq!(unblocked.expect(201), json!(true));
    assert_eq!(
        api.get("/user", Some(&alice_tok)).expect(200)["username"],
        "alice"
    );
}

#[test]
fn nested_groups_by_id_and_encoded_path() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (_, dave) = user_with_token(&berth, &api, &root, "dave");

    let top = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Acme", "path": "acme", "visibility": "public", "description": "top"}),
        )
        .expect(201);
    assert_eq!(top["full_path"], "acme");
    assert_eq!(top["parent_id"], Value::Null);
    assert_eq!(top["web_url"], format!("{}/groups/acme", berth.url));
    let sub = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Platform", "path": "platform", "parent_id": id(&top), "visibility": "public"}),
        )
        .expect(201);
    assert_eq!(sub["full_path"], "acme/platform");
    assert_eq!(sub["full_name"], "Acme / Platform");
    assert_eq!(sub["parent_id"], id(&top));
    let deep = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Tools", "path": "tools", "parent_id": id(&sub)}),
        )
        .expect(201);
    assert_eq!(deep["visibility"], "private");

    // By id, and by URL-encoded full path (one segment with %2F inside).
    let by_id = api.get(&format!("/groups/{}", id(&sub)), None).expect(200);
    let by_path = api.get("/groups/acme%2Fplatform", None).expect(200);
    assert_eq!(by_id, by_path);
    assert_eq!(by_path["name"], "Platform");

    // Update.
    let updated = api
        .put(
            "/groups/acme%2Fplatform",
            Some(&root),
            json!({"name": "Platform Team", "description": "d"}),
        )
        .expect(200);
    assert_eq!(updated["full_name"], "Acme / Platform Team");
    assert_eq!(updated["description"], "d");
    // A path change moves the group (and everything below it); move it back.
    let moved = api
        .put(
            "/groups/acme%2Fplatform",
            Some(&root),
            json!({"path": "elsewhere"}),
        )
        .expect(200);
    assert_eq!(moved["full_path"], "acme/elsewhere");
    api.get("/groups/acme%2Fplatform", Some(&root)).expect(404);
    api.put(
        "/groups/acme%2Felsewhere",
        Some(&root),
        json!({"path": "platform"}),
    )
    .expect(200);
    // A group may not be less visible than what it contains.
    let refused = api
        .put(
            "/groups/acme",
            Some(&root),
            json!({"visibility": "private"}),
        )
        .expect(400);
    assert!(
        refused["message"]["visibility_level"][0]
            .as_str()
            .unwrap()
            .contains("sub-groups"),
        "{refused}"
    );
    // ... nor more visible than its parent.
    let refused = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Open", "path": "open", "parent_id": id(&deep), "visibility": "public"}),
        )
        .expect(400);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("Failed to save group {:visibility_level=>"),
        "{refused}"
    );

    // Conflicts, as GitLab words them.
    assert_eq!(
        api.post(
            "/groups",
            Some(&root),
            json!({"name": "Acme", "path": "ACME"})
        )
        .expect(400),
        json!({"message": "Failed to save group {:path=>[\"has already been taken\"]}"})
    );
    assert_eq!(
        api.post("/groups", Some(&root), json!({"name": "x"}))
            .expect(400),
        json!({"error": "path is missing"})
    );

    // Subgroups and descendants.
    let subs = api.get("/groups/acme/subgroups", Some(&root)).expect(200);
    assert_eq!(paths(&subs, "full_path"), vec!["acme/platform"]);
    let all = api
        .get("/groups/acme/descendant_groups", Some(&root))
        .expect(200);
    assert_eq!(
        paths(&all, "full_path"),
        vec!["acme/platform", "acme/platform/tools"]
    );
    // Anonymous callers see the public ones only.
    let anon = api.get("/groups/acme/descendant_groups", None).expect(200);
    assert_eq!(paths(&anon, "full_path"), vec!["acme/platform"]);
    assert_eq!(
        api.get("/groups/acme%2Fplatform%2Ftools", None).expect(404),
        json!({"message": "404 Group Not Found"})
    );
    let listed = api.get("/groups?search=tool", Some(&root)).expect(200);
    assert_eq!(paths(&listed, "full_path"), vec!["acme/platform/tools"]);

    // Anyone signed in creates top-level groups; subgroups need maintainer+ above.
    let own = api
        .post(
            "/groups",
            Some(&dave),
            json!({"name": "Dave's", "path": "daves"}),
        )
        .expect(201);
    let members = api
        .get(&format!("/groups/{}/members", id(&own)), Some(&dave))
        .expect(200);
    assert_eq!(paths(&members, "username"), vec!["dave"]);
    assert_eq!(members[0]["access_level"], 50);
    assert_eq!(
        api.post(
            "/groups",
            Some(&dave),
            json!({"name": "Sneaky", "path": "sneaky", "parent_id": id(&top)})
        )
        .expect(403),
        json!({"message": "403 Forbidden"})
    );
    api.put("/groups/acme", Some(&dave), json!({"name": "Mine"}))
        .expect(403);
    api.post("/groups", None, json!({"name": "anon", "path": "anon"}))
        .expect(401);

    // The group's projects.
    api.post(
        "/projects",
        Some(&root),
        json!({"name": "api", "namespace_id": "acme/platform", "visibility": "public"}),
    )
    .expect(201);
    api.post(
        "/projects",
        Some(&root),
        json!({"name": "cli", "namespace_id": id(&deep)}),
    )
    .expect(201);
    let direct = api
        .get("/groups/acme%2Fplatform/projects", Some(&root))
        .expect(200);
    assert_eq!(
        paths(&direct, "path_with_namespace"),
        vec!["acme/platform/api"]
    );
    let nested = api
        .get(
            "/groups/acme%2Fplatform/projects?include_subgroups=true&order_by=path&sort=asc",
            Some(&root),
        )
        .expect(200);
    assert_eq!(
        paths(&nested, "path_with_namespace"),
        vec!["acme/platform/api", "acme/platform/tools/cli"]
    );
    let nested_anon = api
        .get(
            "/groups/acme%2Fplatform/projects?include_subgroups=True",
            None,
        )
        .expect(200);
    assert_eq!(
        paths(&nested_anon, "path_with_namespace"),
        vec!["acme/platform/api"]
    );
}

#[test]
fn projects_create_get_update() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (erin_id, erin) = user_with_token(&berth, &api, &root, "erin");

    let g = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Shop", "path": "Shop"}),
        )
        .expect(201);
    let sub = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "Back End", "path": "backend", "parent_id": id(&g)}),
        )
        .expect(201);
    let p = api
        .post(
            "/projects",
            Some(&root),
            json!({"name": "Order Service", "namespace_id": id(&sub),
                   "description": "orders", "container_registry_access_level": "enabled"}),
        )
        .expect(201);
    assert_eq!(p["path"], "order-service");
    assert_eq!(p["name"], "Order Service");
    assert_eq!(p["path_with_namespace"], "Shop/backend/order-service");
    assert_eq!(p["name_with_namespace"], "Shop / Back End / Order Service");
    assert_eq!(p["description"], "orders");
    assert_eq!(p["visibility"], "private");
    assert_eq!(p["default_branch"], Value::Null);
    assert_eq!(
        p["web_url"],
        format!("{}/Shop/backend/order-service", berth.url)
    );
    assert_eq!(
        p["container_registry_image_prefix"],
        format!("{}/shop/backend/order-service", berth.addr)
    );
    assert_eq!(p["container_registry_enabled"], true);
    assert_eq!(p["container_registry_access_level"], "enabled");
    assert_eq!(p["namespace"]["kind"], "group");
    assert_eq!(p["namespace"]["full_path"], "Shop/backend");
    assert_eq!(p["namespace"]["parent_id"], id(&g));
    assert_eq!(p["creator_id"], 1);
    assert_eq!(p["permissions"]["project_access"]["access_level"], 50);
    let pid = id(&p);

    // By id and by encoded path (case-insensitive, as GitLab routes).
    let by_id = api
        .get(&format!("/projects/{pid}"), Some(&root))
        .expect(200);
    let by_path = api
        .get("/projects/shop%2Fbackend%2Forder-service", Some(&root))
        .expect(200);
    assert_eq!(by_id, by_path);

    // Update the registry settings.
    let u = api
        .put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"container_registry_access_level": "private", "name": "Orders"}),
        )
        .expect(200);
    assert_eq!(u["container_registry_access_level"], "private");
    assert_eq!(u["container_registry_enabled"], true);
    assert_eq!(u["name"], "Orders");
    let u = api
        .put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"container_registry_enabled": false}),
        )
        .expect(200);
    assert_eq!(u["container_registry_access_level"], "disabled");
    assert_eq!(u["container_registry_enabled"], false);
    assert_eq!(
        api.put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"container_registry_access_level": "sometimes"})
        )
        .expect(400),
        json!({"error": "container_registry_access_level does not have a valid value"})
    );
    assert_eq!(
        api.put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"visibility": "secret"})
        )
        .expect(400),
        json!({"error": "visibility does not have a valid value"})
    );
    // A path change renames the project; the next update renames it back.
    let renamed = api
        .put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"path": "renamed"}),
        )
        .expect(200);
    assert_eq!(renamed["path_with_namespace"], "Shop/backend/renamed");
    api.put(
        &format!("/projects/{pid}"),
        Some(&root),
        json!({"path": "order-service", "container_registry_access_level": "enabled"}),
    )
    .expect(200);
    // A project is no more visible than its group.
    let refused = api
        .put(
            &format!("/projects/{pid}"),
            Some(&root),
            json!({"visibility": "public"}),
        )
        .expect(400);
    assert_eq!(
        refused,
        json!({"message": {"visibility_level": ["public is not allowed in a private group."]}})
    );

    // Conflicts and missing parameters.
    assert_eq!(
        api.post(
            "/projects",
            Some(&root),
            json!({"path": "ORDER-SERVICE", "namespace_id": "shop/backend"})
        )
        .expect(400),
        json!({"message": {"path": ["has already been taken"]}})
    );
    assert_eq!(
        api.post("/projects", Some(&root), json!({"description": "x"}))
            .expect(400),
        json!({"error": "name, path are missing, at least one parameter must be provided"})
    );
    assert_eq!(
        api.post(
            "/projects",
            Some(&root),
            json!({"name": "x", "namespace_id": "no/such"})
        )
        .expect(404),
        json!({"message": "404 Namespace Not Found"})
    );

    // A user's own namespace is the default; a group needs maintainer+.
    let mine = api
        .post("/projects", Some(&erin), json!({"path": "sandbox"}))
        .expect(201);
    assert_eq!(mine["path_with_namespace"], "erin/sandbox");
    assert_eq!(mine["namespace"]["kind"], "user");
    assert_eq!(mine["namespace"]["web_url"], format!("{}/erin", berth.url));
    assert_eq!(mine["creator_id"], erin_id);
    // erin cannot see the private group at all, and cannot create in root's namespace.
    api.post(
        "/projects",
        Some(&erin),
        json!({"name": "x", "namespace_id": id(&sub)}),
    )
    .expect(404);
    api.post(
        "/projects",
        Some(&erin),
        json!({"name": "x", "namespace_id": "root"}),
    )
    .expect(403);
    // Nor change a project she can only see.
    api.post(
        &format!("/projects/{pid}/members"),
        Some(&root),
        json!({"user_id": erin_id, "access_level": 30}),
    )
    .expect(201);
    api.put(
        &format!("/projects/{pid}"),
        Some(&erin),
        json!({"description": "mine now"}),
    )
    .expect(403);
    let seen = api
        .get(&format!("/projects/{pid}"), Some(&erin))
        .expect(200);
    assert_eq!(seen["permissions"]["project_access"]["access_level"], 30);
    // Anonymous callers do not get `permissions`.
    let public = api
        .post(
            "/projects",
            Some(&erin),
            json!({"path": "open", "visibility": "public"}),
        )
        .expect(201);
    let anon = api
        .get(&format!("/projects/{}", id(&public)), None)
        .expect(200);
    assert!(anon.get("permissions").is_none(), "{anon}");
}

#[test]
fn project_list_visibility_by_caller() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (member_id, member) = user_with_token(&berth, &api, &root, "member");
    let (_, stranger) = user_with_token(&berth, &api, &root, "stranger");

    let g = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "vis", "path": "vis", "visibility": "public"}),
        )
        .expect(201);
    for v in ["public", "internal", "private"] {
        api.post(
            "/projects",
            Some(&root),
            json!({"name": v, "namespace_id": id(&g), "visibility": v}),
        )
        .expect(201);
    }
    let private = api.get("/projects/vis%2Fprivate", Some(&root)).expect(200);
    api.post(
        &format!("/projects/{}/members", id(&private)),
        Some(&root),
        json!({"user_id": member_id, "access_level": 20}),
    )
    .expect(201);

    let listed = |token: Option<&str>| {
        let mut names = paths(
            &api.get("/projects?order_by=path&sort=asc", token)
                .expect(200),
            "path_with_namespace",
        );
        names.retain(|n| n.starts_with("vis/"));
        names
    };
    assert_eq!(listed(None), vec!["vis/public"]);
    assert_eq!(listed(Some(&stranger)), vec!["vis/internal", "vis/public"]);
    assert_eq!(
        listed(Some(&member)),
        vec!["vis/internal", "vis/private", "vis/public"]
    );
    assert_eq!(
        listed(Some(&root)),
        vec!["vis/internal", "vis/private", "vis/public"]
    );
    // membership=true: only projects with a role.
    let mine = api
        .get("/projects?membership=true", Some(&member))
        .expect(200);
    assert_eq!(paths(&mine, "path_with_namespace"), vec!["vis/private"]);
    let searched = api
        .get("/projects?search=inter", Some(&stranger))
        .expect(200);
    assert_eq!(
        paths(&searched, "path_with_namespace"),
        vec!["vis/internal"]
    );

    // A project the caller cannot see is indistinguishable from a missing one.
    let hidden = json!({"message": "404 Project Not Found"});
    assert_eq!(
        api.get("/projects/vis%2Fprivate", Some(&stranger))
            .expect(404),
        hidden
    );
    assert_eq!(
        api.get("/projects/vis%2Finternal", None).expect(404),
        hidden
    );
    assert_eq!(api.get("/projects/424242", Some(&root)).expect(404), hidden);
    api.get("/projects/vis%2Fprivate", Some(&member))
        .expect(200);
    api.get("/projects/vis%2Finternal", Some(&stranger))
        .expect(200);
}

#[test]
fn members_and_inherited_access() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (alice, _) = user_with_token(&berth, &api, &root, "alice");
    let (bob, bob_tok) = user_with_token(&berth, &api, &root, "bob");
    let (carol, carol_tok) = user_with_token(&berth, &api, &root, "carol");
    let (dan, _) = user_with_token(&berth, &api, &root, "dan");

    let g = api
        .post(
            "/groups",
            Some(&root),
            json!({"name": "team", "path": "team"}),
        )
        .expect(201);
    let p = api
        .post(
            "/projects",
            Some(&root),
            json!({"name": "app", "namespace_id": id(&g)}),
        )
        .expect(201);
    let pm = format!("/projects/{}/members", id(&p));
    let gm = format!("/groups/{}/members", id(&g));

    // alice is a developer of the group; the project inherits her.
    let a = api
        .post(
            &gm,
            Some(&root),
            json!({"user_id": alice, "access_level": 30, "expires_at": "2099-12-31"}),
        )
        .expect(201);
    assert_eq!(a["username"], "alice");
    assert_eq!(a["access_level"], 30);
    assert_eq!(a["expires_at"], "2099-12-31");
    assert_eq!(a["web_url"], format!("{}/alice", berth.url));

    // bob joins the project by username as reporter.
    let b = api
        .post(
            &pm,
            Some(&root),
            json!({"username": "bob", "access_level": 20}),
        )
        .expect(201);
    assert_eq!(b["id"], bob);
    assert_eq!(
        api.post(
            &pm,
            Some(&root),
            json!({"user_id": bob, "access_level": 30})
        )
        .expect(409),
        json!({"message": "Member already exists"})
    );
    assert_eq!(
        api.post(
            &pm,
            Some(&root),
            json!({"user_id": carol, "access_level": 35})
        )
        .expect(400),
        json!({"error": "access_level does not have a valid value"})
    );
    assert_eq!(
        api.post(&pm, Some(&root), json!({"user_id": carol}))
            .expect(400),
        json!({"error": "access_level is missing"})
    );
    assert_eq!(
        api.post(
            &pm,
            Some(&root),
            json!({"user_id": 999, "access_level": 30})
        )
        .expect(404),
        json!({"message": "404 User Not Found"})
    );
    // A direct role below the inherited one is refused.
    let below = api
        .post(
            &pm,
            Some(&root),
            json!({"user_id": alice, "access_level": 20}),
        )
        .expect(400);
    assert!(
        below["message"]["access_level"][0]
            .as_str()
            .unwrap()
            .contains("inherited membership from group team"),
        "{below}"
    );

    // Direct members vs everyone with access.
    let direct = api.get(&pm, Some(&root)).expect(200);
    assert_eq!(paths(&direct, "username"), vec!["root", "bob"]);
    let all = api.get(&format!("{pm}/all"), Some(&root)).expect(200);
    let levels: Vec<(String, i64)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().to_string(),
                m["access_level"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        levels,
        vec![
            ("root".to_string(), 50),
            ("alice".to_string(), 30),
            ("bob".to_string(), 20)
        ]
    );
    let one = api
        .get(&format!("{pm}/all/{alice}"), Some(&root))
        .expect(200);
    assert_eq!(one["access_level"], 30);
    assert_eq!(
        api.get(&format!("{pm}/{alice}"), Some(&root)).expect(404),
        json!({"message": "404 Not found"})
    );

    // Promote bob to maintainer; he may then manage members below owner.
    let up = api
        .put(
            &format!("{pm}/{bob}"),
            Some(&root),
            json!({"access_level": 40}),
        )
        .expect(200);
    assert_eq!(up["access_level"], 40);
    assert_eq!(
        api.get(&format!("{pm}/{bob}"), Some(&bob_tok)).expect(200)["access_level"],
        40
    );
    api.post(
        &pm,
        Some(&bob_tok),
        json!({"user_id": carol, "access_level": 30}),
    )
    .expect(201);
    assert_eq!(
        api.post(
            &pm,
            Some(&bob_tok),
            json!({"user_id": dan, "access_level": 50})
        )
        .expect(403),
        json!({"message": "403 Forbidden"})
    );
    api.delete(&format!("{pm}/1"), Some(&bob_tok)).expect(403);
    // A developer manages nobody.
    api.post(
        &pm,
        Some(&carol_tok),
        json!({"user_id": dan, "access_level": 10}),
    )
    .expect(403);
    // The effective level is what the registry sees: carol may now read the project.
    assert_eq!(
        api.get(&format!("/projects/{}", id(&p)), Some(&carol_tok))
            .expect(200)["permissions"]["project_access"]["access_level"],
        30
    );

    // Remove: 204, then 404; a member may leave on their own.
    let gone = api.delete(&format!("{pm}/{carol}"), Some(&bob_tok));
    assert_eq!(gone.status, 204);
    api.delete(&format!("{pm}/{carol}"), Some(&bob_tok))
        .expect(404);
    api.get(&format!("/projects/{}", id(&p)), Some(&carol_tok))
        .expect(404);
    assert_eq!(
        api.delete(&format!("{pm}/{bob}"), Some(&bob_tok)).status,
        204
    );

    // Group members: a maintainer adds up to maintainer, an owner anything.
    api.post(
        &gm,
        Some(&root),
        json!({"user_id": bob, "access_level": 40}),
    )
    .expect(201);
    api.post(
        &gm,
        Some(&bob_tok),
        json!({"user_id": carol, "access_level": 40}),
    )
    .expect(201);
    api.post(
        &gm,
        Some(&bob_tok),
        json!({"user_id": dan, "access_level": 50}),
    )
    .expect(403);
    api.put(
        &format!("{gm}/{carol}"),
        Some(&bob_tok),
        json!({"access_level": 10}),
    )
    .expect(200);
    let all = api.get(&format!("{gm}/all"), Some(&bob_tok)).expect(200);
    assert_eq!(
        paths(&all, "username"),
        vec!["root", "alice", "bob", "carol"]
    );
    // The last owner of a top-level group stays, and stays an owner.
    let refused = api.delete(&format!("{gm}/1"), Some(&root)).expect(403);
    assert_eq!(
        refused["message"],
        "403 Forbidden - a top-level group must keep at least one owner"
    );
    api.put(&format!("{gm}/1"), Some(&root), json!({"access_level": 40}))
        .expect(403);
}

#[test]
fn personal_access_tokens_lifecycle() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (uid, _) = user_with_token(&berth, &api, &root, "frank");

    let created = api
        .post(
            &format!("/users/{uid}/personal_access_tokens"),
            Some(&root),
            json!({"name": "ci", "scopes": ["api", "read_registry"], "expires_at": "2099-01-01",
                   "description": "for CI"}),
        )
        .expect(201);
    let tok = created["token"].as_str().unwrap().to_string();
    assert!(tok.starts_with("glpat-"), "{created}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["api", "read_registry"]));
    assert_eq!(created["user_id"], uid);
    assert_eq!(created["active"], true);
    assert_eq!(created["revoked"], false);
    assert_eq!(created["expires_at"], "2099-01-01");
    assert_eq!(created["description"], "for CI");
    let tid = id(&created);

    // The token looks at itself; the secret is never shown again.
    api.get("/user", Some(&tok)).expect(200);
    let me = api
        .get("/personal_access_tokens/self", Some(&tok))
        .expect(200);
    assert_eq!(me["id"], tid);
    assert!(me.get("token").is_none());
    assert!(me["last_used_at"].is_string());
    let by_id = api
        .get(&format!("/personal_access_tokens/{tid}"), Some(&tok))
        .expect(200);
    assert_eq!(by_id["name"], "ci");

    // Listing: an admin sees everyone's (or one user's), others their own.
    let own = api.get("/personal_access_tokens", Some(&tok)).expect(200);
    assert!(own.as_array().unwrap().iter().all(|t| t["user_id"] == uid));
    api.get("/personal_access_tokens?user_id=1", Some(&tok))
        .expect(401);
    let filtered = api
        .get(
            &format!("/personal_access_tokens?user_id={uid}"),
            Some(&root),
        )
        .expect(200);
    assert!(filtered.as_array().unwrap().len() >= 2);
    let everyone = api.get("/personal_access_tokens", Some(&root)).expect(200);
    assert!(everyone
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["user_id"] == 1));
    // Someone else's token: 401 for a non-admin, as GitLab.
    api.get("/personal_access_tokens/1", Some(&tok)).expect(401);
    assert_eq!(
        api.get("/personal_access_tokens/9999", Some(&root))
            .expect(404),
        json!({"message": "404 Not Found"})
    );

    // Self-service creation; sudo is not self-service.
    let mine = api
        .post(
            "/user/personal_access_tokens",
            Some(&tok),
            json!({"name": "mine", "scopes": ["read_api"]}),
        )
        .expect(201);
    let mine_tok = mine["token"].as_str().unwrap().to_string();
    assert_eq!(
        api.post(
            "/user/personal_access_tokens",
            Some(&tok),
            json!({"name": "boss", "scopes": ["sudo"]})
        )
        .expect(400),
        json!({"error": "scopes does not have a valid value"})
    );
    assert_eq!(
        api.post(
            "/user/personal_access_tokens",
            Some(&tok),
            json!({"scopes": ["api"]})
        )
        .expect(400),
        json!({"error": "name is missing"})
    );
    // Only admins create tokens for users.
    api.post(
        &format!("/users/{uid}/personal_access_tokens"),
        Some(&tok),
        json!({"name": "x", "scopes": ["api"]}),
    )
    .expect(403);

    // Rotate itself: the old token dies, the new one works, name and scopes kept,
    // expiry a week out by default.
    let rotated = api
        .post("/personal_access_tokens/self/rotate", Some(&tok), json!({}))
        .expect(200);
    let new_tok = rotated["token"].as_str().unwrap().to_string();
    assert_ne!(new_tok, tok);
    assert_eq!(rotated["name"], "ci");
    assert_eq!(rotated["scopes"], json!(["api", "read_registry"]));
    assert!(rotated["expires_at"].is_string());
    assert_eq!(
        api.get("/user", Some(&tok)).expect(401),
        json!({"message": "401 Unauthorized"})
    );
    assert_eq!(api.get("/user", Some(&new_tok)).expect(200)["id"], uid);
    let old = api
        .get(&format!("/personal_access_tokens/{tid}"), Some(&root))
        .expect(200);
    assert_eq!(old["revoked"], true);
    assert_eq!(old["active"], false);

    // Rotate by id (admin), with an explicit expiry.
    let again = api
        .post(
            &format!("/personal_access_tokens/{}/rotate", id(&rotated)),
            Some(&root),
            json!({"expires_at": "2098-06-30"}),
        )
        .expect(200);
    assert_eq!(again["expires_at"], "2098-06-30");
    let third = again["token"].as_str().unwrap().to_string();
    api.get("/user", Some(&new_tok)).expect(401);
    assert_eq!(
        api.post(
            &format!("/personal_access_tokens/{}/rotate", id(&rotated)),
            Some(&root),
            json!({})
        )
        .expect(400),
        json!({"message": "400 Bad request - Token already revoked"})
    );

    // Revoke by id, then self.
    assert_eq!(
        api.delete(
            &format!("/personal_access_tokens/{}", id(&again)),
            Some(&root)
        )
        .status,
        204
    );
    api.get("/user", Some(&third)).expect(401);
    assert_eq!(
        api.delete("/personal_access_tokens/self", Some(&mine_tok))
            .status,
        204
    );
    api.get("/user", Some(&mine_tok)).expect(401);
}

#[test]
fn deploy_tokens_create_list_delete() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (gina, gina_tok) = user_with_token(&berth, &api, &root, "gina");

    let g = api
        .post("/groups", Some(&root), json!({"name": "dt", "path": "dt"}))
        .expect(201);
    let p = api
        .post(
            "/projects",
            Some(&root),
            json!({"name": "svc", "namespace_id": id(&g)}),
        )
        .expect(201);
    let pd = format!("/projects/{}/deploy_tokens", id(&p));

    let t = api
        .post(
            &pd,
            Some(&root),
            json!({"name": "pull", "scopes": ["read_registry"]}),
        )
        .expect(201);
    assert!(t["token"].as_str().unwrap().starts_with("gldt-"), "{t}");
    assert_eq!(t["username"], format!("gitlab+deploy-token-{}", id(&t)));
    assert_eq!(t["expires_at"], Value::Null);
    assert_eq!(t["revoked"], false);
    assert_eq!(t["expired"], false);
    assert_eq!(t["scopes"], json!(["read_registry"]));
    let named = api
        .post(
            &pd,
            Some(&root),
            json!({"name": "push", "scopes": ["read_registry", "write_registry"],
                   "username": "pusher", "expires_at": "2099-01-01T12:30:00.000Z"}),
        )
        .expect(201);
    assert_eq!(named["username"], "pusher");
    assert_eq!(named["expires_at"], "2099-01-01T12:30:00.000Z");
    let expired = api
        .post(
            &pd,
            Some(&root),
            json!({"name": "old", "scopes": ["read_registry"], "expires_at": "2001-01-01"}),
        )
        .expect(201);
    assert_eq!(expired["expired"], true);

    // The token signs in to the registry with its username.
    let jwt = berth.token(
        Some(("pusher", named["token"].as_str().unwrap())),
        &["repository:dt/svc:pull,push"],
    );
    assert_eq!(jwt.status().as_u16(), 200);

    let list = api.get(&pd, Some(&root)).expect(200);
    assert_eq!(paths(&list, "name"), vec!["pull", "push", "old"]);
    assert!(list[0].get("token").is_none());
    let active = api
        .get(&format!("{pd}?active=true"), Some(&root))
        .expect(200);
    assert_eq!(paths(&active, "name"), vec!["pull", "push"]);
    // python-gitlab's `scopes[]` filter.
    let writers = api
        .get(&format!("{pd}?scopes%5B%5D=write_registry"), Some(&root))
        .expect(200);
    assert_eq!(paths(&writers, "name"), vec!["push"]);
    let one = api
        .get(&format!("{pd}/{}", id(&named)), Some(&root))
        .expect(200);
    assert_eq!(one["name"], "push");

    // Validation.
    assert_eq!(
        api.post(&pd, Some(&root), json!({"name": "x", "scopes": ["api"]}))
            .expect(400),
        json!({"error": "scopes does not have a valid value"})
    );
    assert_eq!(
        api.post(&pd, Some(&root), json!({"name": "x"})).expect(400),
        json!({"error": "scopes is missing"})
    );
    assert_eq!(
        api.post(
            &pd,
            Some(&root),
            json!({"name": "x", "scopes": ["read_registry"], "expires_at": "soon"})
        )
        .expect(400),
        json!({"error": "expires_at is invalid"})
    );

    // Delete: 204, gone from lists, and no longer signs in.
    assert_eq!(
        api.delete(&format!("{pd}/{}", id(&named)), Some(&root))
            .status,
        204
    );
    let list = api.get(&pd, Some(&root)).expect(200);
    assert_eq!(paths(&list, "name"), vec!["pull", "old"]);
    api.get(&format!("{pd}/{}", id(&named)), Some(&root))
        .expect(404);
    let jwt = berth.token(
        Some(("pusher", named["token"].as_str().unwrap())),
        &["repository:dt/svc:pull"],
    );
    assert_eq!(jwt.status().as_u16(), 401);

    // Project deploy tokens need maintainer+; a developer gets 403.
    api.post(
        &format!("/projects/{}/members", id(&p)),
        Some(&root),
        json!({"user_id": gina, "access_level": 30}),
    )
    .expect(201);
    api.get(&pd, Some(&gina_tok)).expect(403);

    // Group deploy tokens: maintainers list, owners create and delete.
    let gd = format!("/groups/{}/deploy_tokens", id(&g));
    api.post(
        &format!("/groups/{}/members", id(&g)),
        Some(&root),
        json!({"user_id": gina, "access_level": 40}),
    )
    .expect(201);
    let gt = api
        .post(
            &gd,
            Some(&root),
            json!({"name": "group-pull", "scopes": ["read_registry"]}),
        )
        .expect(201);
    let seen = api.get(&gd, Some(&gina_tok)).expect(200);
    assert_eq!(paths(&seen, "name"), vec!["group-pull"]);
    api.post(
        &gd,
        Some(&gina_tok),
        json!({"name": "mine", "scopes": ["read_registry"]}),
    )
    .expect(403);
    api.delete(&format!("{gd}/{}", id(&gt)), Some(&gina_tok))
        .expect(403);
    // A group token is not one of the project's.
    api.get(&format!("{pd}/{}", id(&gt)), Some(&root))
        .expect(404);

    // Every deploy token of the instance: administrators only.
    let all = api.get("/deploy_tokens", Some(&root)).expect(200);
    assert_eq!(paths(&all, "name"), vec!["pull", "old", "group-pull"]);
    api.get("/deploy_tokens", Some(&gina_tok)).expect(403);
    assert_eq!(
        api.delete(&format!("{gd}/{}", id(&gt)), Some(&root)).status,
        204
    );
}

#[test]
fn pagination_headers_and_links() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    for i in 0..25 {
        api.post(
            "/groups",
            Some(&root),
            json!({"name": format!("pg{i:02}"), "path": format!("pg{i:02}")}),
        )
        .expect(201);
    }
    api.post(
        "/groups",
        Some(&root),
        json!({"name": "other", "path": "other"}),
    )
    .expect(201);

    let r = api.get("/groups?search=pg&per_page=10&page=2", Some(&root));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-page"), "2");
    assert_eq!(r.header("x-per-page"), "10");
    assert_eq!(r.header("x-next-page"), "3");
    assert_eq!(r.header("x-prev-page"), "1");
    assert_eq!(r.header("x-total"), "25");
    assert_eq!(r.header("x-total-pages"), "3");
    let link = r.header("link").to_string();
    let base = format!("{}/api/v4/groups?search=pg", berth.url);
    for (rel, page) in [("prev", 1), ("next", 3), ("first", 1), ("last", 3)] {
        let want = format!("<{base}&page={page}&per_page=10>; rel=\"{rel}\"");
        assert!(link.contains(&want), "{want} not in {link}");
    }
    assert_eq!(
        paths(&r.body, "name"),
        (10..20).map(|i| format!("pg{i}")).collect::<Vec<_>>()
    );

    // Following rel="next" from the first page visits every item exactly once.
    let mut url = format!("{}/api/v4/groups?search=pg&per_page=10", berth.url);
    let mut seen = HashSet::new();
    let mut pages = 0;
    loop {
        let r = api.get(&url, Some(&root));
        assert_eq!(r.status, 200);
        pages += 1;
        for n in paths(&r.body, "name") {
            assert!(seen.insert(n));
        }
        let link = r.header("link").to_string();
        let next = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| {
                l.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            });
        match next {
            Some(n) => url = n,
            None => {
                assert_eq!(r.header("x-next-page"), "");
                break;
            }
        }
    }
    assert_eq!((pages, seen.len()), (3, 25));

    // Bounds: per_page is capped at 100; a bad page number is a 400.
    let r = api.get("/groups?per_page=500", Some(&root));
    assert_eq!(r.header("x-per-page"), "100");
    assert_eq!(r.header("x-total-pages"), "1");
    assert_eq!(r.header("x-prev-page"), "");
    assert_eq!(
        api.get("/groups?page=abc", Some(&root)).expect(400),
        json!({"error": "page is invalid"})
    );
    // The default page size is 20.
    let r = api.get("/groups", Some(&root));
    assert_eq!(r.header("x-per-page"), "20");
    assert_eq!(r.body.as_array().unwrap().len(), 20);
}

#[test]
fn errors_and_token_scopes() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (_, helen) = user_with_token(&berth, &api, &root, "helen");
    let read_api = pat(&berth, "helen", "read_api");
    let registry_only = pat(&berth, "helen", "read_registry,write_registry");
    let read_user = pat(&berth, "helen", "read_user");

    // 404s name what is missing.
    assert_eq!(
        api.get("/projects/nope%2Fnope", Some(&root)).expect(404),
        json!({"message": "404 Project Not Found"})
    );
    assert_eq!(
        api.get("/groups/nope", Some(&root)).expect(404),
        json!({"message": "404 Group Not Found"})
    );
    assert_eq!(
        api.get("/users/77", Some(&root)).expect(404),
        json!({"message": "404 User Not Found"})
    );
    assert_eq!(
        api.get("/no/such/endpoint", Some(&root)).expect(404),
        json!({"message": "404 Not Found"})
    );
    // 403 for a signed-in user without the right, 401 without a user.
    assert_eq!(
        api.get("/deploy_tokens", Some(&helen)).expect(403),
        json!({"message": "403 Forbidden"})
    );
    assert_eq!(
        api.get("/deploy_tokens", None).expect(401),
        json!({"message": "401 Unauthorized"})
    );
    // 400 for bad parameters, and for a body that is not JSON.
    assert_eq!(
        api.post("/groups", Some(&helen), json!({"path": "x"}))
            .expect(400),
        json!({"error": "name is missing"})
    );
    let bad = api.finish(
        "bad json".into(),
        api.client
            .post(format!("{}/groups", api.base))
            .header("PRIVATE-TOKEN", &helen)
            .header("Content-Type", "application/json")
            .body("{not json"),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"].is_string());
    // python-gitlab sends Content-Type: application/json with an empty GET body.
    let empty = api.finish(
        "empty json".into(),
        api.client
            .get(format!("{}/user", api.base))
            .header("PRIVATE-TOKEN", &helen)
            .header("Content-Type", "application/json"),
    );
    assert_eq!(empty.expect(200)["username"], "helen");

    // read_api reads but does not write.
    api.get("/projects", Some(&read_api)).expect(200);
    api.get("/user", Some(&read_api)).expect(200);
    let refused = api
        .post(
            "/groups",
            Some(&read_api),
            json!({"name": "x", "path": "x"}),
        )
        .expect(403);
    assert_eq!(refused["error"], "insufficient_scope");
    assert_eq!(refused["scope"], "api");
    // Registry scopes do not reach the API at all.
    let refused = api.get("/projects", Some(&registry_only)).expect(403);
    assert_eq!(refused["error"], "insufficient_scope");
    api.get("/user", Some(&registry_only)).expect(403);
    // read_user reads users only.
    api.get("/user", Some(&read_user)).expect(200);
    api.get("/users", Some(&read_user)).expect(200);
    api.get("/projects", Some(&read_user)).expect(403);
    // Any token may look at itself.
    api.get("/personal_access_tokens/self", Some(&registry_only))
        .expect(200);

    // A CI job token reads its own project only.
    berth.project("ci/app", "private");
    berth.project("ci/other", "private");
    berth.admin(&[
        "member",
        "add",
        "--project",
        "ci/app",
        "--user",
        "helen",
        "--role",
        "developer",
    ]);
    berth.admin(&[
        "member",
        "add",
        "--project",
        "ci/other",
        "--user",
        "helen",
        "--role",
        "developer",
    ]);
    let env = berth.ci_env(&["--project", "ci/app", "--user", "helen"]);
    let job = env
        .lines()
        .find_map(|l| l.strip_prefix("export CI_JOB_TOKEN="))
        .expect("CI_JOB_TOKEN in ci-env output")
        .trim_matches('\'')
        .to_string();
    let job_get = |path: &str| {
        api.finish(
            format!("job GET {path}"),
            api.client
                .get(format!("{}{path}", api.base))
                .header("JOB-TOKEN", &job),
        )
    };
    assert_eq!(job_get("/projects/ci%2Fapp").expect(200)["path"], "app");
    assert_eq!(
        job_get("/projects/ci%2Fother").expect(404),
        json!({"message": "404 Project Not Found"})
    );
    job_get("/user").expect(403);
    job_get("/projects").expect(403);
    let query = api.get(&format!("/projects/ci%2Fapp?job_token={job}"), None);
    query.expect(200);
    let bogus = api.finish(
        "bogus job".into(),
        api.client
            .get(format!("{}/projects/ci%2Fapp", api.base))
            .header("JOB-TOKEN", "glcbt-bogus"),
    );
    assert_eq!(bogus.expect(401), json!({"message": "401 Unauthorized"}));
}

// ---------------------------------------------------------------------------
// python-gitlab
// ---------------------------------------------------------------------------

/// The venv's Python with python-gitlab (see `tests/requirements.txt`); under CI a
/// missing venv fails the test, elsewhere the test is skipped.
fn gitlab_python() -> Option<PathBuf> {
    support::venv_python("gitlab")
}

/// Drives python-gitlab the way GitLab users script it; prints `PYTHON-GITLAB OK`.
const PYTHON_GITLAB: &str = r#"
import sys, warnings
import gitlab
from gitlab.const import AccessLevel

url, tok = sys.argv[1], sys.argv[2]
warnings.simplefilter("error", UserWarning)  # e.g. a Link header whose base URL differs

gl = gitlab.Gitlab(url, private_token=tok)
gl.auth()
assert gl.user.username == "root" and gl.user.is_admin, gl.user
version, revision = gl.version()
assert "berth" in version, version

g = gl.groups.create({"name": "Py Group", "path": "pyg", "visibility": "public"})
sub = gl.groups.create({"name": "Py Sub", "path": "sub", "parent_id": g.id})
assert sub.full_path == "pyg/sub" and sub.full_name == "Py Group / Py Sub", sub
assert [s.id for s in g.subgroups.list(get_all=True)] == [sub.id]
assert gl.groups.get("pyg/sub").id == sub.id

p = gl.projects.create({"name": "Py App", "namespace_id": sub.id})
assert p.path_with_namespace == "pyg/sub/py-app", p.path_with_namespace
proj = gl.projects.get("pyg/sub/py-app")
assert proj.id == p.id
assert proj.container_registry_access_level == "enabled"
proj.container_registry_access_level = "private"
proj.save()
assert gl.projects.get(p.id).container_registry_access_level == "private"
proj.description = "from python"
proj.save()
assert gl.projects.get(p.id).description == "from python"

u = gl.users.create({"username": "pyuser", "name": "Py User",
                     "email": "py@example.com", "password": "py-password-1"})
assert gl.users.get(u.id).username == "pyuser"
m = proj.members.create({"user_id": u.id, "access_level": AccessLevel.DEVELOPER})
assert m.access_level == 30
m.access_level = AccessLevel.MAINTAINER
m.save()
assert proj.members.get(u.id).access_level == 40
everyone = {x.username: x.access_level for x in proj.members_all.list(get_all=True)}
assert everyone == {"root": 50, "pyuser": 40}, everyone
try:
    proj.members.create({"user_id": u.id, "access_level": 30})
    raise SystemExit("duplicate member accepted")
except gitlab.exceptions.GitlabCreateError as e:
    assert e.response_code == 409, e

dt = proj.deploytokens.create({"name": "ci", "scopes": ["read_registry", "write_registry"],
                               "expires_at": "2099-01-01T00:00:00Z"})
assert dt.token.startswith("gldt-") and dt.username.startswith("gitlab+deploy-token-"), dt
assert [t.id for t in proj.deploytokens.list(scopes=["read_registry"])] == [dt.id]
gdt = g.deploytokens.create({"name": "grp", "scopes": ["read_registry"]})
assert [t.name for t in gl.deploytokens.list(get_all=True)] == ["ci", "grp"]
proj.deploytokens.delete(dt.id)
assert proj.deploytokens.list(get_all=True) == []
gdt.delete()

pat = u.personal_access_tokens.create({"name": "py", "scopes": ["api"], "expires_at": "2099-01-01"})
assert pat.token.startswith("glpat-"), pat
gl2 = gitlab.Gitlab(url, private_token=pat.token)
gl2.auth()
assert gl2.user.username == "pyuser"
me = gl2.personal_access_tokens.get("self")
assert me.name == "py" and me.active
assert [t.id for t in gl.personal_access_tokens.list(user_id=u.id)] == [me.id]
rotated = gl2.personal_access_tokens.rotate(me.id)
try:
    gl2.auth()
    raise SystemExit("old token still works after rotation")
except gitlab.exceptions.GitlabAuthenticationError:
    pass
gl3 = gitlab.Gitlab(url, private_token=rotated["token"])
gl3.auth()
assert gl3.user.id == u.id
gl3.personal_access_tokens.delete("self")
try:
    gl3.auth()
    raise SystemExit("revoked token still works")
except gitlab.exceptions.GitlabAuthenticationError:
    pass

# Paging by Link headers across several pages.
for i in range(5):
    gl.groups.create({"name": f"many{i}", "path": f"many{i}"})
names = [x.name for x in gl.groups.list(search="many", per_page=2, get_all=True)]
assert sorted(names) == [f"many{i}" for i in range(5)], names
pages = gl.groups.list(search="many", per_page=2, iterator=True)
assert pages.total == 5 and pages.total_pages == 3, (pages.total, pages.total_pages)

try:
    gl.projects.get("no/such/project")
    raise SystemExit("missing project found")
except gitlab.exceptions.GitlabGetError as e:
    assert e.response_code == 404 and "Project Not Found" in str(e), e

print("PYTHON-GITLAB OK")
"#;

#[test]
fn python_gitlab_client() {
    let Some(python) = gitlab_python() else {
        return;
    };
    let berth = Berth::start();
    let root = root_token(&berth);
    let out = run(Command::new(&python)
        .args(["-c", PYTHON_GITLAB, &berth.url, &root])
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning"));
    assert_eq!(out.lines().last(), Some("PYTHON-GITLAB OK"), "{out}");
}

/// GitLab's `can_create_group` application setting: off, only administrators create
/// top-level groups, while subgroups still follow the parent's roles; on again,
/// anyone may.
#[test]
fn top_level_groups_follow_the_setting() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let root = root_token(&berth);
    let (_, dana) = user_with_token(&berth, &api, &root, "dana");
    let settings = api.get("/application/settings", Some(&root)).expect(200);
    assert_eq!(settings["can_create_group"], true, "on by default");
    let parent = api
        .post(
            "/groups",
            Some(&dana),
            json!({"name": "Dana", "path": "dana-team"}),
        )
        .expect(201);

    let s = api
        .put(
            "/application/settings",
            Some(&root),
            json!({"can_create_group": false}),
        )
        .expect(200);
    assert_eq!(s["can_create_group"], false);
    // The user entity says so too (GitLab's `can_create_group` of `/user`), but not
    // of administrators, whom the setting does not bind.
    let me = api.get("/user", Some(&dana)).expect(200);
    assert_eq!(me["can_create_group"], false, "{me}");
    let admin = api.get("/user", Some(&root)).expect(200);
    assert_eq!(admin["can_create_group"], true, "{admin}");
    let refused = api
        .post(
            "/groups",
            Some(&dana),
            json!({"name": "Two", "path": "dana-two"}),
        )
        .expect(403);
    assert_eq!(refused["message"], "403 Forbidden", "{refused}");
    // A subgroup of a group she owns is still hers to make; root makes anything.
    api.post(
        "/groups",
        Some(&dana),
        json!({"name": "Sub", "path": "sub", "parent_id": id(&parent)}),
    )
    .expect(201);
    api.post(
        "/groups",
        Some(&root),
        json!({"name": "Ops", "path": "ops"}),
    )
    .expect(201);

    api.put(
        "/application/settings",
        Some(&root),
        json!({"can_create_group": true}),
    )
    .expect(200);
    let me = api.get("/user", Some(&dana)).expect(200);
    assert_eq!(me["can_create_group"], true, "{me}");
    api.post(
        "/groups",
        Some(&dana),
        json!({"name": "Two", "path": "dana-two"}),
    )
    .expect(201);
}
