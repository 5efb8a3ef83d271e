//! End-to-end tests of protection rules (issue 17): protected container
//! repositories, protected tags and immutable tags, enforced on `/v2` (skopeo, and
//! raw HTTP for deleting by tag, which skopeo does not do), on the REST API, in bulk
//! deletion and in cleanup policies; and GitLab's rules API as python-gitlab and
//! plain HTTP use it.
//!
//! The matrix: roles developer / maintainer / owner / administrator × {new tag,
//! overwrite, delete by tag, delete by digest, REST delete, bulk delete, cleanup} ×
//! {unprotected, protected (maintainer), protected (owner), immutable}. One server,
//! two images written once; each cell has a tag of its own, named
//! `<protection>-<action>-<role>`, so cells never touch each other. The expected
//! outcome of every cell is written out by hand in [`EXPECTED`].

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::{json, Value};

use support::{eventually, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const PROJECT: &str = "g/p";
const REPO: &str = "g/p/img";
const WAIT: Duration = Duration::from_secs(60);

const ROLES: [&str; 4] = ["dev", "maint", "own", "admin"];
/// Unprotected, protected (maintainer), protected (owner), immutable: the tag
/// prefixes the rules below match.
const PROTECTIONS: [&str; 4] = ["u", "m", "o", "i"];
const ACTIONS: [&str; 7] = [
    "new",
    "over",
    "deltag",
    "deldigest",
    "restdel",
    "bulk",
    "cleanup",
];

/// `Y` done; `P` refused by a protection rule (a DENIED / 403 naming the rule);
/// `R` refused by the role alone, before any rule (developers may not delete over
/// `/v2`, bulk-delete or run cleanup). Rows: developer, maintainer, owner, admin;
/// columns: unprotected, protected (maintainer), protected (owner), immutable.
const EXPECTED: [(&str, [&str; 4]); 7] = [
    // Anyone who may push creates an immutable tag; protected ones need the level.
    ("new", ["YPPY", "YYPY", "YYYY", "YYYY"]),
    // Nobody moves an immutable tag, administrators included.
    ("over", ["YPPP", "YYPP", "YYYP", "YYYP"]),
    ("deltag", ["RRRR", "YYPP", "YYYP", "YYYP"]),
    ("deldigest", ["RRRR", "YYPP", "YYYP", "YYYP"]),
    // Deleting one tag through the REST API is a developer action in GitLab.
    ("restdel", ["YPPP", "YYPP", "YYYP", "YYYP"]),
    // Bulk deletion skips what the caller may not delete.
    ("bulk", ["RRRR", "YYPP", "YYYP", "YYYP"]),
    // Cleanup acts for nobody: it never deletes a protected or immutable tag.
    ("cleanup", ["RRRR", "YPPP", "YPPP", "YPPP"]),
];

fn expected(action: &str, role: usize, protection: usize) -> char {
    let (_, rows) = EXPECTED
        .iter()
        .find(|(a, _)| *a == action)
        .expect("an action of the table");
    rows[role].as_bytes()[protection] as char
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// A one-layer OCI image layout at `dir`, tagged `tag`, whose layer holds `text`.
/// Returns the manifest's JSON.
fn write_layout(dir: &Path, tag: &str, text: &str) -> Value {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |media_type: &str, bytes: &[u8]| -> Value {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len() })
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "hello.txt", text.as_bytes())
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let layer = put(OCI_LAYER, &tar);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        // Old, so no cleanup rule keeps it for its age.
        "created": "2020-01-01T00:00:00Z",
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))] },
    });
    let config = put(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    });
    let m = put(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    let mut entry = m.clone();
    entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest
}

// ---------------------------------------------------------------------------
// The server, its people and clients
// ---------------------------------------------------------------------------

struct Ctx {
    berth: Berth,
    http: Client,
    tmp: tempfile::TempDir,
    pid: i64,
    /// Personal access tokens (`api`) by role.
    pats: Vec<String>,
    /// Image A's and image B's layouts and manifests.
    a: (std::path::PathBuf, Value),
    b: (std::path::PathBuf, Value),
}

/// `user:password` by role (the administrator is root, a member of nothing).
fn creds(role: &str) -> String {
    match role {
        "admin" => format!("root:{ROOT_PASSWORD}"),
        r => format!("{r}:{r}-password-1234"),
    }
}

impl Ctx {
    fn start() -> Ctx {
        // Bulk deletion may run once an hour per repository by default; the matrix
        // runs it once per cell.
        let berth = Berth::start_with(&[], &[("BERTH_BULK_DELETE_INTERVAL", "0s")]);
        berth.project(PROJECT, "private");
        let mut pats = Vec::new();
        for (role, level) in [
            ("dev", "developer"),
            ("maint", "maintainer"),
            ("own", "owner"),
        ] {
            let c = creds(role);
            berth.user(role, c.split_once(':').unwrap().1);
            berth.admin(&[
                "member",
                "add",
                "--project",
                PROJECT,
                "--user",
                role,
                "--role",
                level,
            ]);
            pats.push(berth.admin(&[
                "token", "create", "--user", role, "--name", "t", "--scopes", "api",
            ]));
        }
        pats.push(berth.admin(&[
            "token", "create", "--user", "root", "--name", "t", "--scopes", "api",
        ]));
        let tmp = tempfile::tempdir().unwrap();
        let a_dir = tmp.path().join("image-a");
        let b_dir = tmp.path().join("image-b");
        let a = write_layout(&a_dir, "a", "image A");
        let b = write_layout(&b_dir, "b", "image B");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut ctx = Ctx {
            berth,
            http,
            tmp,
            pid: 0,
            pats,
            a: (a_dir, a),
            b: (b_dir, b),
        };
        ctx.pid = ctx.get(3, &format!("/projects/{}", PROJECT.replace('/', "%2F")))["id"]
            .as_i64()
            .unwrap();
        ctx
    }

    fn role_index(role: &str) -> usize {
        ROLES.iter().position(|r| *r == role).unwrap()
    }

    fn api(&self, role: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v4{path}", self.berth.url))
            .header("PRIVATE-TOKEN", &self.pats[Ctx::role_index(role)])
    }

    fn call(&self, rb: RequestBuilder) -> (u16, Value) {
        let resp = rb.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, role: usize, path: &str) -> Value {
        let (status, body) = self.call(self.api(ROLES[role], Method::GET, path));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn repo_id(&self, path: &str) -> i64 {
        let list = self.get(3, &format!("/projects/{}/registry/repositories", self.pid));
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no repository {path} in {list}"))["id"]
            .as_i64()
            .unwrap()
    }

    /// The digest tag `tag` of [`REPO`] points at, if it exists.
    fn tag_digest(&self, tag: &str) -> Option<String> {
        let rid = self.repo_id(REPO);
        let (status, body) = self.call(self.api(
            "admin",
            Method::GET,
            &format!(
                "/projects/{}/registry/repositories/{rid}/tags/{tag}",
                self.pid
            ),
        ));
        match status {
            200 => Some(body["digest"].as_str().unwrap().to_string()),
            404 => None,
            s => panic!("GET tag {tag}: {s} {body}"),
        }
    }

    /// A registry token for `user:password` asking for `actions` on `repo`.
    fn bearer(&self, creds: &str, repo: &str, actions: &str) -> String {
        let (u, p) = creds.split_once(':').unwrap();
        let resp = self
            .berth
            .token(Some((u, p)), &[&format!("repository:{repo}:{actions}")]);
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().unwrap();
        format!("Bearer {}", body["token"].as_str().unwrap())
    }

    /// PUT a manifest by reference over raw HTTP; the status and body.
    fn put_manifest(&self, bearer: &str, repo: &str, reference: &str, m: &Value) -> (u16, Value) {
        self.call(
            self.http
                .put(format!(
                    "{}/v2/{repo}/manifests/{reference}",
                    self.berth.url
                ))
                .header("Authorization", bearer)
                .header("Content-Type", OCI_MANIFEST)
                .body(serde_json::to_vec(m).unwrap()),
        )
    }

    /// Upload the config and layer of a manifest written by [`write_layout`] in `dir`
    /// to `repo`, each in one monolithic POST; their statuses.
    fn upload_blobs(&self, bearer: &str, repo: &str, dir: &Path, manifest: &Value) -> Vec<u16> {
        let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap()];
        blobs.extend(
            manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap()),
        );
        blobs
            .into_iter()
            .map(|digest| {
                let bytes =
                    std::fs::read(dir.join("blobs/sha256").join(&digest["sha256:".len()..]))
                        .unwrap();
                let (status, body) = self.call(
                    self.http
                        .post(format!("{}/v2/{repo}/blobs/uploads/", self.berth.url))
                        .query(&[("digest", digest)])
                        .header("Authorization", bearer)
                        .header("Content-Type", "application/octet-stream")
                        .body(bytes),
                );
                assert!(
                    matches!(status, 201 | 403),
                    "upload {digest}: {status} {body}"
                );
                status
            })
            .collect()
    }

    /// A web page as a browser signed in with `user:password` sees it.
    fn web_page(&self, path: &str, creds: &str) -> String {
        let (username, password) = creds.split_once(':').unwrap();
        support::web_page(&self.berth, path, username, password)
    }

    fn skopeo(&self, args: &[&str]) -> Output {
        Command::new("skopeo")
            .arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(self.tmp.path())
            .args(args)
            .output()
            .expect("skopeo runs")
    }

    /// `skopeo copy` of image A or B to `repo:tag` as `creds`.
    fn skopeo_push(&self, creds: &str, image_b: bool, repo: &str, tag: &str) -> Output {
        let (dir, src) = if image_b {
            (&self.b.0, "b")
        } else {
            (&self.a.0, "a")
        };
        self.skopeo(&[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("oci:{}:{src}", dir.display()),
            &format!("docker://{}/{repo}:{tag}", self.berth.addr),
        ])
    }
}

/// Image A's manifest made unique to `cell` (an annotation), so each cell's tag has
/// a manifest of its own and deleting it by digest touches no other cell.
fn unique(manifest: &Value, cell: &str) -> Value {
    let mut m = manifest.clone();
    m["annotations"] = json!({ "cell": cell });
    m
}

fn digest_of(m: &Value) -> String {
    format!("sha256:{}", sha256_hex(&serde_json::to_vec(m).unwrap()))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Check one skopeo run against the expected outcome of its cell.
fn assert_skopeo(cell: &str, want: char, out: &Output) {
    match want {
        'Y' => assert!(
            out.status.success(),
            "{cell}: skopeo failed: {}",
            stderr(out)
        ),
        'P' => {
            assert!(!out.status.success(), "{cell}: skopeo succeeded");
            assert!(
                stderr(out).contains("protection rule"),
                "{cell}: not refused by a rule: {}",
                stderr(out)
            );
        }
        _ => {
            assert!(!out.status.success(), "{cell}: skopeo succeeded");
            assert!(
                !stderr(out).contains("protection rule"),
                "{cell}: refused by a rule, not the role: {}",
                stderr(out)
            );
        }
    }
}

/// Check a REST or raw `/v2` answer against the expected outcome of its cell.
fn assert_answer(cell: &str, want: char, ok: &[u16], status: u16, body: &Value) {
    match want {
        'Y' => assert!(ok.contains(&status), "{cell}: {status} {body}"),
        'P' => {
            assert_eq!(status, 403, "{cell}: {body}");
            assert!(
                body.to_string().contains("protection rule"),
                "{cell}: not refused by a rule: {body}"
            );
        }
        _ => {
            assert!(matches!(status, 401 | 403), "{cell}: {status} {body}");
            assert!(
                !body.to_string().contains("protection rule"),
                "{cell}: refused by a rule, not the role: {body}"
            );
        }
    }
}

fn create_rule(ctx: &Ctx, kind: &str, body: Value) -> Value {
    let (status, rule) = ctx.call(
        ctx.api(
            "admin",
            Method::POST,
            &format!("/projects/{}/registry/protection/{kind}/rules", ctx.pid),
        )
        .json(&body),
    );
    assert_eq!(status, 201, "{body}: {rule}");
    rule
}

#[test]
fn protection_matrix() {
    if !support::tool("skopeo") {
        return;
    }
    let ctx = Ctx::start();
    // Image A under a tag of root's (this also creates the repository).
    let out = ctx.skopeo_push(&creds("admin"), false, REPO, "seed");
    assert!(out.status.success(), "seed push: {}", stderr(&out));
    // A token minted before any rule exists.
    let early = ctx.bearer(&creds("maint"), REPO, "pull,push");

    let tag_rules = [
        create_rule(
            &ctx,
            "tag",
            json!({ "tag_name_pattern": "m-.*", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer" }),
        ),
        create_rule(
            &ctx,
            "tag",
            json!({ "tag_name_pattern": "o-.*", "minimum_access_level_for_push": "owner", "minimum_access_level_for_delete": "owner" }),
        ),
        create_rule(
            &ctx,
            "tag",
            json!({ "tag_name_pattern": "i-.*", "immutable": true }),
        ),
    ];
    assert_eq!(tag_rules[2]["immutable"], true);
    assert_eq!(tag_rules[2]["minimum_access_level_for_push"], Value::Null);
    let rule_of = |protection: usize| tag_rules[protection - 1]["id"].as_i64().unwrap();

    // Seed every cell but the new-tag ones: its own manifest, pushed by root.
    let root = ctx.bearer(&creds("admin"), REPO, "pull,push,delete");
    for p in PROTECTIONS {
        for action in ACTIONS.iter().filter(|a| **a != "new") {
            for role in ROLES {
                let cell = format!("{p}-{action}-{role}");
                let (status, body) = ctx.put_manifest(&root, REPO, &cell, &unique(&ctx.a.1, &cell));
                assert_eq!(status, 201, "seeding {cell}: {body}");
            }
        }
    }

    // The token minted before the rules is held to them on this request.
    let (status, body) = ctx.put_manifest(&early, REPO, "o-over-maint", &ctx.b.1);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("rule {}", rule_of(2))) && message.contains("owner role"),
        "the refusal names the rule and the level: {message}"
    );
    // It still works where no rule stands in the way.
    let (status, body) = ctx.put_manifest(&early, REPO, "u-early", &ctx.a.1);
    assert_eq!(status, 201, "{body}");

    let rid = ctx.repo_id(REPO);
    let b_digest = digest_of(&ctx.b.1);
    for (r, role) in ROLES.iter().enumerate() {
        let c = creds(role);
        for (pi, p) in PROTECTIONS.iter().enumerate() {
            // New tag, with skopeo.
            let cell = format!("{p}-new-{role}");
            let want = expected("new", r, pi);
            assert_skopeo(&cell, want, &ctx.skopeo_push(&c, false, REPO, &cell));
            assert_eq!(ctx.tag_digest(&cell).is_some(), want == 'Y', "{cell}");

            // Overwrite, with skopeo: image B over the cell's own manifest.
            let cell = format!("{p}-over-{role}");
            let want = expected("over", r, pi);
            let before = ctx.tag_digest(&cell).unwrap();
            assert_skopeo(&cell, want, &ctx.skopeo_push(&c, true, REPO, &cell));
            let after = ctx.tag_digest(&cell).unwrap();
            if want == 'Y' {
                assert_eq!(after, b_digest, "{cell}");
            } else {
                assert_eq!(after, before, "{cell} moved");
            }

            // Delete by tag over /v2 (raw HTTP: skopeo deletes by digest).
            let cell = format!("{p}-deltag-{role}");
            let want = expected("deltag", r, pi);
            let token = ctx.bearer(&c, REPO, "delete");
            let (status, body) = ctx.call(
                ctx.http
                    .delete(format!("{}/v2/{REPO}/manifests/{cell}", ctx.berth.url))
                    .header("Authorization", &token),
            );
            assert_answer(&cell, want, &[202], status, &body);
            if want == 'P' {
                assert_eq!(body["errors"][0]["code"], "DENIED", "{cell}: {body}");
            }
            assert_eq!(ctx.tag_digest(&cell).is_none(), want == 'Y', "{cell}");

            // Delete by digest, with skopeo (it resolves the tag and deletes the
            // manifest).
            let cell = format!("{p}-deldigest-{role}");
            let want = expected("deldigest", r, pi);
            let out = ctx.skopeo(&[
                "delete",
                "--tls-verify=false",
                "--creds",
                &c,
                &format!("docker://{}/{REPO}:{cell}", ctx.berth.addr),
            ]);
            assert_skopeo(&cell, want, &out);
            assert_eq!(ctx.tag_digest(&cell).is_none(), want == 'Y', "{cell}");

            // Delete one tag through the REST API.
            let cell = format!("{p}-restdel-{role}");
            let want = expected("restdel", r, pi);
            let (status, body) = ctx.call(ctx.api(
                role,
                Method::DELETE,
                &format!(
                    "/projects/{}/registry/repositories/{rid}/tags/{cell}",
                    ctx.pid
                ),
            ));
            assert_answer(&cell, want, &[200], status, &body);
            assert_eq!(ctx.tag_digest(&cell).is_none(), want == 'Y', "{cell}");

            // Bulk deletion selecting exactly this cell's tag.
            let cell = format!("{p}-bulk-{role}");
            let want = expected("bulk", r, pi);
            let (status, body) = ctx.call(
                ctx.api(
                    role,
                    Method::DELETE,
                    &format!("/projects/{}/registry/repositories/{rid}/tags", ctx.pid),
                )
                .query(&[("name_regex_delete", cell.as_str())]),
            );
            match want {
                'R' => assert_answer(&cell, want, &[], status, &body),
                _ => {
                    assert_eq!(status, 202, "{cell}: {body}");
                    let skipped = if want == 'P' { 1 } else { 0 };
                    assert_eq!(body["protected_tags_skipped"], skipped, "{cell}: {body}");
                }
            }
            if want == 'Y' {
                eventually(WAIT, &format!("bulk deletion of {cell}"), || {
                    ctx.tag_digest(&cell).is_none().then_some(())
                });
            } else {
                assert!(ctx.tag_digest(&cell).is_some(), "{cell}");
            }
        }

        // Cleanup: the role saves a policy selecting its cleanup cells and runs it.
        let policy = json!({ "container_expiration_policy_attributes": {
            "enabled": true, "cadence": "1d", "keep_n": null, "older_than": null,
            "name_regex": format!(".-cleanup-{role}"), "name_regex_keep": null,
        }});
        let (status, body) = ctx.call(
            ctx.api(role, Method::PUT, &format!("/projects/{}", ctx.pid))
                .json(&policy),
        );
        let (run, run_body) = ctx.call(ctx.api(
            role,
            Method::POST,
            &format!("/projects/{}/registry/cleanup_run", ctx.pid),
        ));
        if expected("cleanup", r, 0) == 'R' {
            assert_answer(&format!("cleanup by {role}"), 'R', &[], status, &body);
            assert_answer(&format!("cleanup run by {role}"), 'R', &[], run, &run_body);
            for p in PROTECTIONS {
                assert!(ctx.tag_digest(&format!("{p}-cleanup-{role}")).is_some());
            }
            continue;
        }
        assert_eq!(status, 200, "policy by {role}: {body}");
        assert_eq!(run, 202, "cleanup run by {role}: {run_body}");
        eventually(WAIT, &format!("cleanup of u-cleanup-{role}"), || {
            let r = ctx.get(3, &format!("/registry/repositories/{rid}"));
            (ctx.tag_digest(&format!("u-cleanup-{role}")).is_none()
                && r["expiration_policy_cleanup_status"] == "cleanup_unscheduled")
                .then_some(())
        });
        for (pi, p) in PROTECTIONS.iter().enumerate() {
            let cell = format!("{p}-cleanup-{role}");
            let want = expected("cleanup", r, pi);
            assert_eq!(ctx.tag_digest(&cell).is_none(), want == 'Y', "{cell}");
        }
        // The preview says which rule keeps each one.
        let preview = ctx.get(
            3,
            &format!("/projects/{}/registry/cleanup_preview", ctx.pid),
        );
        let keep = &preview["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == REPO)
            .unwrap()["keep"];
        for (pi, p) in PROTECTIONS.iter().enumerate().skip(1) {
            let cell = format!("{p}-cleanup-{role}");
            let entry = keep
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == cell.as_str())
                .unwrap_or_else(|| panic!("{cell} not kept in {preview}"));
            assert_eq!(
                entry["step"],
                format!("protected by rule {}", rule_of(pi)),
                "{cell}"
            );
        }
        // So does the cleanup log, beside the run's deletions.
        let log = ctx.get(3, &format!("/projects/{}/registry/cleanup_log", ctx.pid));
        let mut run_ids = Vec::new();
        for (pi, p) in PROTECTIONS.iter().enumerate() {
            let cell = format!("{p}-cleanup-{role}");
            let rows: Vec<&Value> = log
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["tag"] == cell.as_str())
                .collect();
            assert_eq!(rows.len(), 1, "{cell} logged once: {log}");
            let row = rows[0];
            assert_eq!(row["repository_path"], REPO, "{row}");
            assert_eq!(row["reason"], "policy", "{row}");
            if pi == 0 {
                assert_eq!(row["outcome"], "deleted", "{row}");
                assert_eq!(row["step"], Value::Null, "{row}");
            } else {
                assert_eq!(row["outcome"], "kept", "{row}");
                assert_eq!(row["protected_by_rule"], rule_of(pi), "{row}");
                assert_eq!(
                    row["step"],
                    format!("protected by rule {}", rule_of(pi)),
                    "{row}"
                );
            }
            run_ids.push(row["cleanup_run_id"].clone());
        }
        assert!(
            run_ids[0].is_i64() && run_ids.iter().all(|r| *r == run_ids[0]),
            "one run deleted and kept them: {run_ids:?}"
        );
    }
    assert!(
        ctx.berth.log().contains("protected by rule"),
        "the cleanup's log says which rule kept a tag"
    );
    // And so does the cleanup log on the project's settings page.
    let page = ctx.web_page("/g/p/-/settings/packages_and_registries", &creds("admin"));
    for pi in 1..PROTECTIONS.len() {
        let badge = format!("Kept: protected by rule {}", rule_of(pi));
        assert!(
            page.contains(&badge),
            "the settings page's log says {badge:?}"
        );
    }

    // A repository holding tags a caller may not delete cannot be deleted by them.
    for role in ["maint", "own"] {
        let (status, body) = ctx.call(ctx.api(
            role,
            Method::DELETE,
            &format!("/projects/{}/registry/repositories/{rid}", ctx.pid),
        ));
        assert_eq!(status, 403, "{role}: {body}");
        assert!(body.to_string().contains("protection rule"), "{body}");
    }
    assert!(ctx.tag_digest("i-new-dev").is_some());
}

#[test]
fn protected_repositories_and_rule_management() {
    if !support::tool("skopeo") {
        return;
    }
    let ctx = Ctx::start();
    let locked = "g/p/locked";
    let open = "g/p/open";
    for repo in [locked, open] {
        let out = ctx.skopeo_push(&creds("admin"), false, repo, "v1");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // An upload session a maintainer opens before any rule exists.
    let maint = ctx.bearer(&creds("maint"), locked, "pull,push");
    let opened = ctx
        .http
        .post(format!("{}/v2/{locked}/blobs/uploads/", ctx.berth.url))
        .header("Authorization", &maint)
        .send()
        .unwrap();
    assert_eq!(opened.status(), 202);
    let session = opened.headers()["location"].to_str().unwrap().to_string();
    let session = if session.starts_with('/') {
        format!("{}{session}", ctx.berth.url)
    } else {
        session
    };
    // Maintainers manage rules; developers do not even see them.
    let rules_path = format!("/projects/{}/registry/protection/repository/rules", ctx.pid);
    let (status, _) = ctx.call(ctx.api("dev", Method::GET, &rules_path));
    assert_eq!(status, 403);
    let body =
        json!({ "repository_path_pattern": "g/p/lock*", "minimum_access_level_for_push": "owner" });
    // An owner-level rule needs an owner.
    let (status, refused) = ctx.call(ctx.api("maint", Method::POST, &rules_path).json(&body));
    assert_eq!(status, 403, "{refused}");
    let (status, rule) = ctx.call(ctx.api("own", Method::POST, &rules_path).json(&body));
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["repository_path_pattern"], "g/p/lock*");
    assert_eq!(rule["minimum_access_level_for_delete"], Value::Null);
    let id = rule["id"].as_i64().unwrap();
    // Patterns stay inside the project; a rule needs a level; no duplicates.
    for (bad, status_wanted) in [
        (
            json!({ "repository_path_pattern": "other/p/*", "minimum_access_level_for_push": "maintainer" }),
            422,
        ),
        (json!({ "repository_path_pattern": "g/p/x" }), 422),
        (
            json!({ "repository_path_pattern": "g/p/x", "minimum_access_level_for_push": "developer" }),
            400,
        ),
        (body.clone(), 422),
    ] {
        let (status, answer) = ctx.call(ctx.api("own", Method::POST, &rules_path).json(&bad));
        assert_eq!(status, status_wanted, "{bad}: {answer}");
    }
    // A maintainer cannot loosen or delete an owner-level rule.
    let one = format!("{rules_path}/{id}");
    let (status, _) = ctx.call(
        ctx.api("maint", Method::PATCH, &one)
            .json(&json!({ "minimum_access_level_for_push": "maintainer" })),
    );
    assert_eq!(status, 403);
    let (status, _) = ctx.call(ctx.api("maint", Method::DELETE, &one));
    assert_eq!(status, 403);

    // Pushing into the protected repository needs an owner; others are untouched.
    let out = ctx.skopeo_push(&creds("maint"), true, locked, "v2");
    assert_skopeo("maintainer pushes to g/p/locked", 'P', &out);
    assert!(stderr(&out).contains("owner role"), "{}", stderr(&out));
    let out = ctx.skopeo_push(&creds("maint"), true, open, "v2");
    assert_skopeo("maintainer pushes to g/p/open", 'Y', &out);
    let out = ctx.skopeo_push(&creds("own"), true, locked, "v2");
    assert_skopeo("owner pushes to g/p/locked", 'Y', &out);
    // A push by digest alone is a push too.
    let (status, body) = ctx.put_manifest(&maint, locked, &digest_of(&ctx.b.1), &ctx.b.1);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");

    // So are blob uploads into it, refused on the first request: starting a session,
    // a monolithic upload, a mount from a repository the maintainer may read, and
    // continuing or finishing a session opened before the rule.
    let layer = ctx.a.1["layers"][0]["digest"].as_str().unwrap().to_string();
    let refused_upload = |what: &str, rb: RequestBuilder| {
        let (status, body) = ctx.call(rb.header("Authorization", &maint));
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["errors"][0]["code"], "DENIED", "{what}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("repository protection rule {id}"))
                && message.contains("owner role"),
            "{what}: the refusal names the rule and the level: {message}"
        );
    };
    let uploads = format!("{}/v2/{locked}/blobs/uploads/", ctx.berth.url);
    refused_upload("upload start", ctx.http.post(&uploads));
    refused_upload(
        "monolithic upload",
        ctx.http
            .post(&uploads)
            .query(&[("digest", digest_of(&json!("x")).as_str())])
            .body(serde_json::to_vec(&json!("x")).unwrap()),
    );
    refused_upload(
        "mount",
        ctx.http
            .post(&uploads)
            .query(&[("mount", layer.as_str()), ("from", open)]),
    );
    refused_upload(
        "upload chunk",
        ctx.http
            .patch(&session)
            .header("Content-Type", "application/octet-stream")
            .body("abc"),
    );
    refused_upload(
        "upload finish",
        ctx.http
            .put(&session)
            .query(&[("digest", format!("sha256:{}", sha256_hex(b"")).as_str())]),
    );
    assert_eq!(
        ctx.upload_blobs(&maint, locked, &ctx.b.0, &ctx.b.1),
        vec![403, 403]
    );
    // The owner may upload; another repository of the project is not covered.
    let owner = ctx.bearer(&creds("own"), locked, "pull,push");
    assert_eq!(
        ctx.upload_blobs(&owner, locked, &ctx.b.0, &ctx.b.1),
        vec![201, 201]
    );
    let maint_open = ctx.bearer(&creds("maint"), open, "pull,push");
    assert_eq!(
        ctx.upload_blobs(&maint_open, open, &ctx.b.0, &ctx.b.1),
        vec![201, 201]
    );

    // Deleting: the rule now also guards deletion, at owner.
    let (status, rule) = ctx.call(
        ctx.api("own", Method::PATCH, &one)
            .json(&json!({ "minimum_access_level_for_delete": "owner" })),
    );
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["minimum_access_level_for_push"], "owner");
    assert_eq!(rule["minimum_access_level_for_delete"], "owner");
    let rid = ctx.repo_id(locked);
    let (status, body) = ctx.call(ctx.api(
        "maint",
        Method::DELETE,
        &format!("/projects/{}/registry/repositories/{rid}", ctx.pid),
    ));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("rule {id}")),
        "{body}"
    );
    let list = ctx.get(1, &rules_path);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Tag rules: at most five, patterns at most 100 characters of valid RE2, and
    // immutable rules are not changed.
    let tags_path = format!("/projects/{}/registry/protection/tag/rules", ctx.pid);
    let long = "a".repeat(101);
    for bad in [
        json!({ "tag_name_pattern": long, "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer" }),
        json!({ "tag_name_pattern": "(", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer" }),
        json!({ "tag_name_pattern": "x", "immutable": true, "minimum_access_level_for_push": "maintainer" }),
    ] {
        let (status, answer) = ctx.call(ctx.api("maint", Method::POST, &tags_path).json(&bad));
        assert_eq!(status, 422, "{bad}: {answer}");
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, rule) = ctx.call(
            ctx.api("maint", Method::POST, &tags_path).json(
                &json!({
                    "tag_name_pattern": format!("t{i}.*"), "immutable": i == 0,
                })
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    if i > 0 {
                        o.insert("minimum_access_level_for_push".into(), "maintainer".into());
                        o.insert(
                            "minimum_access_level_for_delete".into(),
                            "maintainer".into(),
                        );
                    }
                    Value::Object(o)
                })
                .unwrap(),
            ),
        );
        assert_eq!(status, 201, "{rule}");
        ids.push(rule["id"].as_i64().unwrap());
    }
    let (status, sixth) = ctx.call(ctx.api("maint", Method::POST, &tags_path).json(&json!({
        "tag_name_pattern": "t5", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer",
    })));
    assert_eq!(status, 422, "{sixth}");
    let (status, answer) = ctx.call(
        ctx.api("maint", Method::PATCH, &format!("{tags_path}/{}", ids[0]))
            .json(&json!({ "tag_name_pattern": "z" })),
    );
    assert_eq!(status, 422, "{answer}");
    let (status, changed) = ctx.call(
        ctx.api("maint", Method::PATCH, &format!("{tags_path}/{}", ids[1]))
            .json(&json!({ "tag_name_pattern": "t1-[0-9]+" })),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["tag_name_pattern"], "t1-[0-9]+");
    assert_eq!(changed["immutable"], false);
    let (status, _) =
        ctx.call(ctx.api("maint", Method::DELETE, &format!("{tags_path}/{}", ids[0])));
    assert_eq!(status, 204);
    let list = ctx.get(1, &tags_path);
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    // Tag rules do not reach blobs: a developer still uploads to an unprotected
    // repository though rules protect every `t1-…` tag.
    let dev_open = ctx.bearer(&creds("dev"), open, "pull,push");
    let (status, body) = ctx.call(
        ctx.http
            .post(format!("{}/v2/{open}/blobs/uploads/", ctx.berth.url))
            .header("Authorization", &dev_open),
    );
    assert_eq!(status, 202, "{body}");

    // A project move keeps its rules, under the new path.
    let (status, moved) = ctx.call(
        ctx.api("admin", Method::PUT, &format!("/projects/{}", ctx.pid))
            .json(&json!({ "path": "q" })),
    );
    assert_eq!(status, 200, "{moved}");
    let list = ctx.get(3, &rules_path);
    assert_eq!(list[0]["repository_path_pattern"], "g/q/lock*", "{list}");
    let out = ctx.skopeo_push(&creds("maint"), false, "g/q/locked", "v3");
    assert_skopeo("maintainer pushes to the moved g/q/locked", 'P', &out);
}

/// Many pushes racing to create one new immutable tag, each with a manifest of its
/// own: the rule check and the tag write are one decision, so exactly one creates
/// it, every other is refused with DENIED naming the rule, and the tag never moves.
#[test]
fn racing_pushes_of_a_new_immutable_tag_leave_one_winner() {
    const RACERS: usize = 8;
    let ctx = Ctx::start();
    let rule = create_rule(
        &ctx,
        "tag",
        json!({ "tag_name_pattern": "r-.*", "immutable": true }),
    );
    let rule_id = rule["id"].as_i64().unwrap();
    let dev = ctx.bearer(&creds("dev"), REPO, "pull,push");
    assert_eq!(
        ctx.upload_blobs(&dev, REPO, &ctx.a.0, &ctx.a.1),
        vec![201, 201]
    );
    let race = |tag: &str, manifests: &[Value]| -> Vec<(u16, Value)> {
        let start = std::sync::Barrier::new(manifests.len());
        std::thread::scope(|s| {
            let racers: Vec<_> = manifests
                .iter()
                .map(|m| {
                    let start = &start;
                    let ctx = &ctx;
                    let dev = &dev;
                    s.spawn(move || {
                        start.wait();
                        ctx.put_manifest(dev, REPO, tag, m)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    for round in 0..4 {
        let tag = format!("r-{round}");
        let manifests: Vec<Value> = (0..RACERS)
            .map(|i| unique(&ctx.a.1, &format!("race {round} {i}")))
            .collect();
        let answers = race(&tag, &manifests);
        let winners: Vec<usize> = (0..RACERS).filter(|i| answers[*i].0 == 201).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
            assert_eq!(*status, 403, "round {round}: {body}");
            assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("immutable by tag protection rule {rule_id}")),
                "the refusal names the rule: {message}"
            );
        }
        let won = digest_of(&manifests[winners[0]]);
        assert_eq!(ctx.tag_digest(&tag), Some(won.clone()), "round {round}");
        // A late push does not move it either.
        let (status, _) = ctx.put_manifest(&dev, REPO, &tag, &manifests[(winners[0] + 1) % RACERS]);
        assert_eq!(status, 403);
        assert_eq!(ctx.tag_digest(&tag), Some(won), "round {round}");
    }
    // Racers pushing the very same manifest change nothing after the first, and all
    // succeed.
    let same = vec![unique(&ctx.a.1, "same"); RACERS];
    let answers = race("r-same", &same);
    assert!(answers.iter().all(|(s, _)| *s == 201), "{answers:?}");
    assert_eq!(ctx.tag_digest("r-same"), Some(digest_of(&same[0])));
}

/// python-gitlab's `project.registry_protection_repository_rules` unchanged, and
/// tag rules with plain HTTP calls of GitLab's documented shapes.
#[test]
fn python_gitlab_manages_repository_rules() {
    let Some(python) = support::venv_python("gitlab") else {
        return;
    };
    let ctx = Ctx::start();
    let script = r#"
import json, sys, gitlab, requests
url, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
gl = gitlab.Gitlab(url, private_token=token)
project = gl.projects.get(pid)
rules = project.registry_protection_repository_rules
rule = rules.create({"repository_path_pattern": "g/p/img*", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "owner"})
assert rule.repository_path_pattern == "g/p/img*", rule
listed = rules.list()
assert [r.id for r in listed] == [rule.id], listed
rule.minimum_access_level_for_push = "owner"
rule.save()
again = rules.list()[0]
assert again.minimum_access_level_for_push == "owner", again
assert again.minimum_access_level_for_delete == "owner", again
rules.update(rule.id, {"repository_path_pattern": "g/p/other"})
assert rules.list()[0].repository_path_pattern == "g/p/other"
rules.delete(rule.id)
assert rules.list() == []

h = {"PRIVATE-TOKEN": token}
base = f"{url}/api/v4/projects/{pid}/registry/protection/tag/rules"
r = requests.post(base, headers=h, json={"tag_name_pattern": "v.*", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer"})
assert r.status_code == 201, r.text
tag_rule = r.json()
assert set(tag_rule) == {"id", "project_id", "tag_name_pattern", "minimum_access_level_for_push", "minimum_access_level_for_delete", "immutable"}, tag_rule
r = requests.post(base, headers=h, data={"tag_name_pattern": "release-.*", "immutable": "true"})
assert r.status_code == 201 and r.json()["immutable"] is True, r.text
r = requests.patch(f"{base}/{tag_rule['id']}", headers=h, json={"minimum_access_level_for_delete": "owner"})
assert r.status_code == 200 and r.json()["minimum_access_level_for_delete"] == "owner", r.text
r = requests.get(base, headers=h)
assert [x["tag_name_pattern"] for x in r.json()] == ["v.*", "release-.*"], r.text
r = requests.delete(f"{base}/{tag_rule['id']}", headers=h)
assert r.status_code == 204, r.text
print("ok")
"#;
    let path = ctx.tmp.path().join("rules.py");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = Command::new(python)
        .arg(&path)
        .arg(&ctx.berth.url)
        .arg(&ctx.pats[3])
        .arg(ctx.pid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "python-gitlab: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}
