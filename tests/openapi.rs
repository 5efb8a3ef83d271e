//! End-to-end tests of the OpenAPI document of `/api/v4`: it is served without
//! authentication, and schemathesis (from the test venv, see `tests/requirements.txt`)
//! run against the live server with it finds no 5xx answer and no answer that breaks
//! the document (status codes and response schemas).

mod support;

use std::path::PathBuf;
use std::process::Command;

use reqwest::blocking::Client;
use serde_json::{json, Value};

use support::{sha256_hex, Berth, ROOT_PASSWORD};

/// Examples per operation and phase: the whole run takes about a minute on two
/// cores. `BERTH_SCHEMATHESIS_EXAMPLES` asks for a deeper search.
fn max_examples() -> String {
    std::env::var("BERTH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_string())
}

/// A fixed seed, so a run is reproducible; `BERTH_SCHEMATHESIS_SEED` tries another.
fn seed() -> String {
    std::env::var("BERTH_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261127".to_string())
}

/// Operations that change or remove the data the others are pointed at (the
/// project's registry access and path, its repositories and tags, the groups, the
/// project and groups themselves).
const FIXTURE_CHANGES: &[&str] = &[
    "updateProject",
    "transferProject",
    "transferProjectToGroup",
    "updateGroup",
    "transferGroup",
    "deleteRepository",
    "deleteTagsInBulk",
    "deleteTag",
    "deleteProject",
    "deleteGroup",
];

/// Operations that may take the test's credentials away: the caller's own token
/// (each alone, as it ends the token), and anyone's token or account (which a
/// generated id may make the test's own).
const OWN_TOKEN: &[&str] = &[
    "rotateOwnPersonalAccessToken",
    "revokeOwnPersonalAccessToken",
];
const CREDENTIALS: &[&str] = &[
    "revokePersonalAccessToken",
    "rotatePersonalAccessToken",
    "blockUser",
    "updateUser",
];

fn client() -> Client {
    Client::new()
}

fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.header("PRIVATE-TOKEN", t);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn post_json(berth: &Berth, path: &str, token: &str, body: Value) -> Value {
    let url = format!("{}/api/v4{path}", berth.url);
    let resp = client()
        .post(&url)
        .header("PRIVATE-TOKEN", token)
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("JSON");
    assert_eq!(status, 201, "POST {path}: {body}");
    body
}

#[test]
fn document_is_served_without_authentication() {
    let berth = Berth::start();
    let url = format!("{}/api/v4/openapi.json", berth.url);
    let (status, doc) = get_json(&url, None);
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/projects/{id}",
        "/groups/{id}/members/{user_id}",
        "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
        "/personal_access_tokens/self",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("private_token") && schemes.contains_key("job_token"));
    // A bad token does not stand in the way either.
    let (status, _) = get_json(&url, Some("glpat-not-a-token"));
    assert_eq!(status, 200);
}

/// What the router itself refuses is answered in GitLab's shape too, as the document
/// says: an undecodable path parameter names nothing (404), and an unsupported method
/// is 405 with `Allow`.
#[test]
fn router_refusals_are_gitlab_json() {
    let berth = Berth::start();
    let root = berth.admin(&[
        "token", "create", "--user", "root", "--name", "t", "--scopes", "api",
    ]);
    for path in ["/projects/%FF", "/users/%FF", "/groups/1/members/%C0"] {
        let (status, body) = get_json(&format!("{}/api/v4{path}", berth.url), Some(&root));
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Not Found"})),
            "{path}"
        );
    }
    let resp = client()
        .patch(format!("{}/api/v4/user", berth.url))
        .header("PRIVATE-TOKEN", &root)
        .send()
        .expect("PATCH");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET,HEAD");
    let body: Value = resp.json().expect("JSON");
    assert_eq!(body, json!({"message": "405 Method Not Allowed"}));
}

/// The venv's `st` (schemathesis); see `support::venv_python`.
fn schemathesis() -> Option<PathBuf> {
    support::venv_python("schemathesis").map(|python| python.with_file_name("st"))
}

/// Push a one-layer image to `repo:tag` over `/v2` as root.
fn push_image(berth: &Berth, repo: &str, tag: &str) {
    let resp = berth.token(
        Some(("root", ROOT_PASSWORD)),
        &[&format!("repository:{repo}:pull,push")],
    );
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().expect("token JSON");
    let bearer = body["token"].as_str().expect("token").to_string();
    let http = client();
    let blob = |data: &[u8]| {
        let digest = format!("sha256:{}", sha256_hex(data));
        let resp = http
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                berth.url
            ))
            .bearer_auth(&bearer)
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .expect("blob upload");
        assert_eq!(resp.status().as_u16(), 201, "blob upload");
        digest
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
    }))
    .unwrap();
    let layer = b"a layer".to_vec();
    let (c, l) = (blob(&config), blob(&layer));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    }))
    .unwrap();
    let resp = http
        .put(format!("{}/v2/{repo}/manifests/{tag}", berth.url))
        .bearer_auth(&bearer)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .expect("manifest upload");
    assert_eq!(resp.status().as_u16(), 201, "manifest upload");
}

/// A TOML list of values (numbers bare, strings quoted).
fn toml_values(values: &[Value]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// schemathesis's configuration: path parameters are drawn half of the time from
/// the data the test made, so operations reach past their 404s.
fn config(dictionaries: &[(&str, Vec<Value>)], bindings: &[(&str, &[(&str, &str)])]) -> String {
    let mut out = String::new();
    for (name, values) in dictionaries {
        out.push_str(&format!(
            "[dictionaries.{name}]\nvalues = {}\n\n",
            toml_values(values)
        ));
    }
    for (path_regex, params) in bindings {
        let params: Vec<String> = params
            .iter()
            .map(|(param, dict)| {
                format!("\"path.{param}\" = {{ dictionary = \"{dict}\", probability = 0.5 }}")
            })
            .collect();
        out.push_str(&format!(
            "[[operations]]\ninclude-path-regex = {}\nparameters = {{ {} }}\n\n",
            Value::from(*path_regex),
            params.join(", ")
        ));
    }
    out
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let Some(st) = schemathesis() else {
        return;
    };
    let berth = Berth::start();
    let root = berth.admin(&[
        "token", "create", "--user", "root", "--name", "setup", "--scopes", "api",
    ]);

    // Some data for the operations to find: a group with a subgroup, a project with
    // an image, a second user who is a member, deploy tokens and a token of theirs.
    let group = post_json(
        &berth,
        "/groups",
        &root,
        json!({"name": "Fuzz", "path": "fuzz", "visibility": "public"}),
    );
    let sub = post_json(
        &berth,
        "/groups",
        &root,
        json!({"name": "Sub", "path": "sub", "parent_id": group["id"], "visibility": "internal"}),
    );
    let project = post_json(
        &berth,
        "/projects",
        &root,
        json!({"name": "app", "namespace_id": sub["id"], "visibility": "internal"}),
    );
    let user = post_json(
        &berth,
        "/users",
        &root,
        json!({"username": "dev", "name": "Dev", "password": "password-123"}),
    );
    post_json(
        &berth,
        &format!("/projects/{}/members", project["id"]),
        &root,
        json!({"user_id": user["id"], "access_level": 30}),
    );
    let deploy = post_json(
        &berth,
        &format!("/projects/{}/deploy_tokens", project["id"]),
        &root,
        json!({"name": "ci", "scopes": ["read_registry"]}),
    );
    let group_deploy = post_json(
        &berth,
        &format!("/groups/{}/deploy_tokens", group["id"]),
        &root,
        json!({"name": "grp", "scopes": ["read_registry"]}),
    );
    let dev_token = post_json(
        &berth,
        &format!("/users/{}/personal_access_tokens", user["id"]),
        &root,
        json!({"name": "dev", "scopes": ["api"]}),
    );
    push_image(&berth, "fuzz/sub/app", "latest");
    push_image(&berth, "fuzz/sub/app/tools", "v1");
    let (status, repos) = get_json(
        &format!(
            "{}/api/v4/projects/{}/registry/repositories",
            berth.url, project["id"]
        ),
        Some(&root),
    );
    assert_eq!(status, 200, "{repos}");
    let repo_ids: Vec<Value> = repos
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(repo_ids.len(), 2, "{repos}");

    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("schemathesis.toml");
    let config = config(
        &[
            (
                "project",
                vec![project["id"].clone(), json!("fuzz/sub/app")],
            ),
            (
                "group",
                vec![group["id"].clone(), sub["id"].clone(), json!("fuzz/sub")],
            ),
            // Root (1) is left out of user operations: blocking or demoting the
            // test's own administrator would end the run early.
            ("user", vec![user["id"].clone()]),
            ("member", vec![json!(1), user["id"].clone()]),
            ("repository", repo_ids),
            ("tag", vec![json!("latest"), json!("v1")]),
            (
                "deploy_token",
                vec![deploy["id"].clone(), group_deploy["id"].clone()],
            ),
            ("token", vec![dev_token["id"].clone()]),
        ],
        &[
            (
                "^/projects/\\{id\\}",
                &[
                    ("id", "project"),
                    ("user_id", "member"),
                    ("repository_id", "repository"),
                    ("tag_name", "tag"),
                    ("token_id", "deploy_token"),
                ],
            ),
            (
                "^/groups/\\{id\\}",
                &[
                    ("id", "group"),
                    ("user_id", "member"),
                    ("project_id", "project"),
                    ("token_id", "deploy_token"),
                ],
            ),
            ("^/users/\\{", &[("id", "user"), ("user_id", "user")]),
            ("^/registry/repositories/", &[("id", "repository")]),
            ("^/personal_access_tokens/\\{id\\}", &[("id", "token")]),
        ],
    );
    std::fs::write(&config_path, &config).expect("write config");

    let api = format!("{}/api/v4", berth.url);
    // `only`: the operations to test; none: every operation but the late ones.
    let run = |only: Option<&[&str]>| {
        // A fresh token for each pass: an earlier one may have revoked its own.
        let token = berth.admin(&[
            "token", "create", "--user", "root", "--name", "st", "--scopes", "api",
        ]);
        let mut cmd = Command::new(&st);
        cmd.current_dir(dir.path())
            .arg("--config-file")
            .arg(&config_path)
            .arg("--no-color")
            .arg("run")
            .arg(format!("{api}/openapi.json"))
            .args(["--url", &api])
            .args(["-H", &format!("PRIVATE-TOKEN: {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", &max_examples(), "--seed", &seed()])
            .args(["--generation-database", "none"])
            .args(["--generation-with-security-parameters", "false"])
            // One worker: a deterministic order, and no spurious "AST constructor
            // recursion depth mismatch" from hypothesis parsing in two threads.
            .args(["--workers", "1"]);
        match only {
            Some(ops) => ops.iter().for_each(|op| {
                cmd.args(["--include-operation-id", op]);
            }),
            None => [FIXTURE_CHANGES, OWN_TOKEN, CREDENTIALS]
                .concat()
                .iter()
                .for_each(|op| {
                    cmd.args(["--exclude-operation-id", op]);
                }),
        }
        let out = cmd.output().expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{stdout}");
        assert!(
            out.status.success(),
            "schemathesis found problems ({}):\n{stdout}\n{stderr}\nconfig:\n{config}\nserver log tail:\n{}",
            out.status,
            tail(&berth.log(), 60)
        );
        stdout
    };
    let main = run(None);
    assert!(main.contains("Tested:"), "{main}");
    run(Some(FIXTURE_CHANGES));
    for op in OWN_TOKEN {
        run(Some(&[op]));
    }
    run(Some(CREDENTIALS));
    assert!(
        !berth.log().contains("panicked"),
        "the server panicked:\n{}",
        tail(&berth.log(), 80)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
