//! Browser end-to-end tests of the web UI: the real binary, images pushed with
//! skopeo, and headless Debian Chromium driven by playwright-core (never a downloaded
//! browser) through the scripts in `tests/ui/`. The scripts report what the pages
//! showed as JSON; the assertions are here.
//!
//! Needs `chromium`, `node`, `skopeo` and `tests/ui/node_modules` (`scripts/test`
//! installs them); without them the test is skipped, except under CI where it fails.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::{run, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui")
}

/// Whether the browser tools are there (under CI their absence fails the test).
fn browser_tools() -> bool {
    if !(support::tool("chromium") && support::tool("node") && support::tool("skopeo")) {
        return false;
    }
    let pw = ui_dir().join("node_modules/playwright-core");
    if !pw.exists() {
        let why = format!(
            "{} is missing: run `npm ci` in tests/ui (scripts/test does)",
            pw.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

/// Write an OCI layout at `dir` tagged `tag`: one small image per architecture, as
/// an index when there are several.
fn layout(dir: &Path, tag: &str, archs: &[&str], seed: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |media_type: &str, bytes: &[u8]| -> Value {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let mut manifests = Vec::new();
    for arch in archs {
        let mut builder = tar::Builder::new(Vec::new());
        let data = format!("{seed} {arch} {}", "x".repeat(2048));
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder
            .append_data(&mut header, "payload.txt", data.as_bytes())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = put(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gz.finish().unwrap(),
        );
        let config = json!({
            "architecture": arch, "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]},
        });
        let config = put(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let mut d = put(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
        d["platform"] = json!({"os": "linux", "architecture": arch});
        manifests.push(d);
    }
    let mut tagged = if manifests.len() == 1 {
        let mut m = manifests.remove(0);
        m.as_object_mut().unwrap().remove("platform");
        m
    } else {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        put(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    };
    tagged["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [tagged]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

fn creds() -> String {
    format!("root:{ROOT_PASSWORD}")
}

/// Push `name:tag` (an index over `archs` when there are several).
fn push(berth: &Berth, tmp: &Path, name: &str, tag: &str, archs: &[&str]) {
    let dir = tmp.join(format!("src-{}-{tag}", name.replace('/', "-")));
    layout(&dir, tag, archs, &format!("{name}:{tag}"));
    let all = if archs.len() > 1 {
        "--all"
    } else {
        "--preserve-digests"
    };
    run(skopeo(tmp).args([
        "copy",
        all,
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(),
        &format!("oci:{}:{tag}", dir.display()),
        &format!("docker://{}/{name}:{tag}", berth.addr),
    ]));
}

fn list_tags(berth: &Berth, tmp: &Path, name: &str) -> Vec<String> {
    let out = run(skopeo(tmp).args([
        "list-tags",
        "--tls-verify=false",
        "--creds",
        &creds(),
        &format!("docker://{}/{name}", berth.addr),
    ]));
    let v: Value = serde_json::from_str(&out).expect("list-tags prints JSON");
    v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Run a node script of `tests/ui` against the server; its last line is JSON.
fn node(script: &str, berth: &Berth, envs: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(ui_dir().join(script))
        .current_dir(ui_dir())
        .env("BERTH_URL", &berth.url)
        .env("BERTH_USER", "root")
        .env("BERTH_PASSWORD", ROOT_PASSWORD);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let last = out.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{out}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn web_ui_in_a_real_browser() {
    if !browser_tools() {
        return;
    }
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    berth.project("team/app", "public");
    berth.project("team/empty", "public");
    berth.user("rita", "rita-password-1");
    berth.admin(&[
        "member",
        "add",
        "--project",
        "team/app",
        "--user",
        "rita",
        "--role",
        "reporter",
    ]);
    for tag in ["v1", "v2", "v3", "latest"] {
        push(&berth, tmp.path(), "team/app/web", tag, &["amd64"]);
    }
    push(&berth, tmp.path(), "team/app/api", "1.0", &["amd64"]);
    push(
        &berth,
        tmp.path(),
        "team/app/multi",
        "1.0",
        &["amd64", "arm64"],
    );
    push(&berth, tmp.path(), "team/app", "base", &["amd64"]);

    let r = node("e2e.mjs", &berth, &[]);
    eprintln!("browser saw: {r:#}");

    // Signing in.
    assert_eq!(r["signed_in_as"], "root");
    assert!(r["bad_password_error"]
        .as_str()
        .unwrap()
        .contains("Invalid username or password"));
    // The project page lists every image with its full path and the CLI commands.
    assert_eq!(
        strings(&r["repositories"]),
        ["team/app", "team/app/api", "team/app/multi", "team/app/web"]
    );
    assert_eq!(
        r["cli_push"],
        format!("docker push {}/team/app", berth.addr)
    );
    // Search and sort live in the URL; a reload of that URL shows the same view.
    let url = r["shared_url"].as_str().unwrap();
    assert!(
        url.contains("search=a") && url.contains("order=desc"),
        "{url}"
    );
    assert_eq!(
        strings(&r["shared_rows"]),
        ["team/app/web", "team/app/multi", "team/app/api", "team/app"]
    );
    assert_eq!(r["shared_rows"], r["reloaded_rows"]);
    assert_eq!(strings(&r["searched_rows"]), ["team/app/web"]);
    assert_eq!(
        strings(&r["group_rows_by_name"]),
        ["team/app/api", "team/app/multi", "team/app", "team/app/web"]
    );
    // Tags: sorted and searchable, multi-arch shown with platforms.
    assert_eq!(strings(&r["tags_desc"]), ["v3", "v2", "v1", "latest"]);
    assert_eq!(strings(&r["tags_searched"]), ["v1"]);
    // Keyboard users choose with the arrows and apply with Enter; focus returns.
    assert_eq!(r["order_after_arrow"], "desc");
    assert_eq!(
        r["arrow_kept_page"], true,
        "an arrow key must not reload the page"
    );
    assert_eq!(r["order_applied"], "desc");
    assert_eq!(r["focus_after_reload"], "order");
    assert_eq!(r["multi_arch_badge"], "Multi-arch");
    assert_eq!(r["multi_platforms"], "linux/amd64 · linux/arm64");
    // On the index's tag page each platform links to its image: config, layers, size.
    assert_eq!(
        strings(&r["platform_links"]),
        ["#platform-1", "#platform-2"]
    );
    assert_eq!(r["platform_hash"], "#platform-2");
    let target = &r["platform_target"];
    assert_eq!(target["title"], "Image for linux/arm64");
    assert!(
        target["config"].as_str().unwrap().starts_with("sha256:"),
        "{target}"
    );
    assert_eq!(target["layers"], 1);
    assert!(!target["size"].as_str().unwrap().is_empty(), "{target}");
    assert_eq!(r["tag_detail_layers"], 1);
    // Bulk deletion of two tags, after a confirmation dialog.
    assert_eq!(
        r["confirm_text"],
        "Delete 2 selected tags? Images stay if other tags use them."
    );
    assert_eq!(
        r["confirm_focus"], "confirm-cancel",
        "Enter must not delete"
    );
    assert_eq!(
        r["confirm_buttons_inside"], true,
        "both dialog buttons visible"
    );
    assert_eq!(strings(&r["tags_after_bulk"]), ["latest", "v3"]);
    assert_eq!(r["bulk_notice"], "2 tags deleted.");
    let mut left = list_tags(&berth, tmp.path(), "team/app/web");
    left.sort();
    assert_eq!(
        left,
        ["latest", "v3"],
        "skopeo list-tags after the bulk delete"
    );
    // A reporter sees the tags but no delete buttons, and posting anyway is refused.
    assert_eq!(r["reporter_rows"], 2);
    assert_eq!(r["reporter_delete_buttons"], 0);
    assert_eq!(r["reporter_forged_delete_status"], 403);
    // Cleanup policy: an invalid regex is refused next to its field; a valid one is
    // saved and previewed.
    assert_eq!(
        r["regex_error"],
        "Invalid pattern: an opening parenthesis is never closed (at character 2)."
    );
    assert_eq!(r["regex_error_status"], 400);
    assert!(
        r["keep_regex_error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid pattern: "),
        "{}",
        r["keep_regex_error"]
    );
    assert_eq!(r["focus_after_error"], "name_regex_keep");
    assert_eq!(
        r["preview_after_error"], true,
        "the preview follows the form"
    );
    assert_eq!(r["policy_saved_notice"], "Settings saved.");
    assert_eq!(r["saved_delete_regex"], "v.*");
    assert_eq!(r["saved_preview_total"], "1 tag would be deleted now.");
    assert_eq!(strings(&r["saved_preview_tags"]), ["v3"]);
    // The preview follows the form as it is edited, before saving.
    assert_eq!(r["live_preview_total"], "2 tags would be deleted now.");
    assert_eq!(strings(&r["live_preview_tags"]), ["1.0", "1.0"]);
    // Visibility: an anonymous browser loses the registry when it becomes members-only.
    assert_eq!(r["anonymous_before"], 4);
    assert!(
        r["anonymous_after_url"]
            .as_str()
            .unwrap()
            .contains("/users/sign_in"),
        "{}",
        r["anonymous_after_url"]
    );
    // 中文: switched, remembered, and chosen from Accept-Language.
    assert_eq!(r["zh_html_lang"], "zh-CN");
    assert_eq!(r["zh_h1"], "容器镜像库");
    assert_eq!(r["zh_crumb"], "软件包与镜像库");
    assert_eq!(r["zh_settings_h1"], "软件包与镜像库设置");
    assert_eq!(r["zh_remembered_h1"], "项目和群组");
    assert_eq!(r["zh_accept_language_h1"], "项目和群组");
    assert_eq!(r["en_again_h1"], "Projects and groups");
    assert_eq!(
        r["zh_ascii_words"],
        json!([]),
        "English left on a Chinese page"
    );
    // Signing out ends the session on the server: the old cookie no longer works.
    assert_eq!(r["after_sign_out_settings_url_has_sign_in"], true);
    assert_eq!(r["old_cookie_after_sign_out"], 303);

    // Every page in both languages renders (and, with BERTH_SCREENSHOTS=1, is kept
    // under docs/screenshots/).
    let keep = std::env::var_os("BERTH_SCREENSHOTS").is_some();
    let out_dir = if keep {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        tmp.path().join("screenshots")
    };
    let shots = node(
        "screenshots.mjs",
        &berth,
        &[("SCREENSHOT_DIR", out_dir.to_str().unwrap())],
    );
    let files = strings(&shots["files"]);
    assert_eq!(files.len(), 22, "{files:?}");
    assert_eq!(
        shots["overflow"],
        json!([]),
        "pages wider than a phone screen"
    );
    for f in files {
        let len = std::fs::metadata(out_dir.join(&f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 5_000, "{f} is {len} bytes");
    }
}

/// A manifest with many layers (the 4 MiB limit holds about 38,000) shows its layers a
/// page at a time, with how many more there are and a link to the next page; a page
/// past the end shows the last one. Plain HTTP: no browser needed.
#[test]
fn tag_page_of_a_many_layer_manifest_is_paged() {
    let berth = Berth::start();
    berth.project("g/layers", "public");
    let repo = "g/layers";
    let token: Value = berth
        .token(
            Some(("root", ROOT_PASSWORD)),
            &[&format!("repository:{repo}:pull,push")],
        )
        .json()
        .unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let client = reqwest::blocking::Client::new();
    let blob = |data: &[u8]| {
        let digest = format!("sha256:{}", sha256_hex(data));
        let r = client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                berth.url
            ))
            .header("Authorization", &bearer)
            .body(data.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        digest
    };
    let layers: Vec<Value> = (0..1000)
        .map(|i| {
            let data = format!("layer {i}");
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(data.as_bytes()), "size": data.len()})
        })
        .collect();
    let config = b"{}";
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": 2},
        "layers": layers,
    });
    let r = client
        .put(format!("{}/v2/{repo}/manifests/many", berth.url))
        .header("Authorization", &bearer)
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);

    // Attribute values escape '/' as `&#x2f;`.
    let listing = client
        .get(format!("{}/g/layers/container_registry", berth.url))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .replace("&#x2f;", "/");
    let start = listing.find("/g/layers/container_registry/").unwrap() + 29;
    let rid: String = listing[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let page = |query: &str| {
        let r = client
            .get(format!(
                "{}/g/layers/container_registry/{rid}/-/tags/many{query}",
                berth.url
            ))
            .header("Accept-Language", "en")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap().replace("&#x2f;", "/")
    };
    let digest_of = |i: usize| layers[i]["digest"].as_str().unwrap().to_string();
    let shown = |html: &str| {
        (0..1000)
            .filter(|&i| html.contains(&digest_of(i)))
            .collect::<Vec<_>>()
    };

    let first = page("");
    assert!(first.contains("Layers 1–100 of 1000"), "{first}");
    assert!(first.contains("… and 900 more layers"));
    assert!(first.contains("?layers_page=2#layers"));
    assert_eq!(shown(&first), (0..100).collect::<Vec<_>>());

    let second = page("?layers_page=2");
    assert!(second.contains("Layers 101–200 of 1000"));
    assert!(second.contains("<td>101</td>"));
    assert!(second.contains("?layers_page=1#layers"));
    assert!(second.contains("?layers_page=3#layers"));
    assert_eq!(shown(&second), (100..200).collect::<Vec<_>>());

    let past = page("?layers_page=99");
    assert!(past.contains("Layers 901–1000 of 1000"));
    assert!(!past.contains("more layers"));
    assert_eq!(shown(&past), (900..1000).collect::<Vec<_>>());
}

/// Protection rules in the browser (issue 17): a maintainer manages repository and
/// tag rules in the project settings, with the live "matches N existing tags" count;
/// the repository page shows "protected" / "immutable" badges and no delete control
/// where the viewer lacks the level; both languages.
#[test]
fn protection_rules_in_a_real_browser() {
    if !browser_tools() {
        return;
    }
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    berth.project("team/prot", "private");
    for (user, role) in [("maint", "maintainer"), ("dev", "developer")] {
        berth.user(user, &format!("{user}-password-1"));
        berth.admin(&[
            "member",
            "add",
            "--project",
            "team/prot",
            "--user",
            user,
            "--role",
            role,
        ]);
    }
    for tag in ["v1", "v2", "dev1", "rel-1"] {
        push(&berth, tmp.path(), "team/prot/img", tag, &["amd64"]);
    }
    let pat = berth.admin(&[
        "token", "create", "--user", "root", "--name", "t", "--scopes", "api",
    ]);
    let repos: Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v4/projects/team%2Fprot/registry/repositories",
            berth.url
        ))
        .header("PRIVATE-TOKEN", pat)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let rid = repos[0]["id"].as_i64().unwrap();

    let r = node(
        "protection.mjs",
        &berth,
        &[
            ("PROJECT", "team/prot"),
            (
                "REPOSITORY_URL",
                &format!("/team/prot/container_registry/{rid}"),
            ),
            ("MAINT_PASSWORD", "maint-password-1"),
            ("DEV_PASSWORD", "dev-password-1"),
        ],
    );
    eprintln!("browser saw: {r:#}");
    assert_eq!(
        r["sections"],
        json!([
            "Protected container repositories",
            "Protected container tags"
        ])
    );
    // The count follows the pattern as it is typed.
    assert_eq!(r["live_tag_count"], "matches 2 existing tags");
    assert_eq!(r["live_invalid"], "not a valid pattern");
    assert_eq!(r["live_repository_count"], "matches 4 existing tags");
    assert_eq!(r["saved_notice"], "Settings saved.");
    assert_eq!(r["tag_rule_matches"], json!(["matches 2 existing tags"]));
    assert_eq!(r["immutable_badges"], 1);
    // A maintainer may not set an owner-level rule.
    assert!(
        r["owner_rule_error"].as_str().unwrap().contains("403"),
        "{}",
        r["owner_rule_error"]
    );
    assert_eq!(r["repository_rules"], json!(["team/prot/*"]));
    assert_eq!(r["edited_matches"], "matches 1 existing tags");
    assert_eq!(r["repository_rules_after_delete"], 0);
    // Badges, and delete controls only where the viewer has the level.
    assert_eq!(
        r["badges"],
        json!({ "dev1": "", "rel-1": "immutable", "v1": "protected", "v2": "" })
    );
    assert_eq!(r["dev_delete_buttons"], json!(["dev1", "v2"]));
    assert_eq!(
        r["dev_tag_page_delete_v1"], 0,
        "v1 is protected from developers"
    );
    assert_eq!(r["dev_tag_page_delete_v2"], 1);
    assert_eq!(r["maint_delete_buttons"], json!(["dev1", "v1", "v2"]));
    assert_eq!(r["maint_checkboxes"], json!(["dev1", "v1", "v2"]));
    assert_eq!(
        r["maint_delete_repository"], 0,
        "the repository holds an immutable tag"
    );
    assert_eq!(
        r["zh_sections"],
        json!(["受保护的容器仓库", "受保护的容器标签"])
    );
    assert_eq!(r["zh_badges"], json!(["不可变", "受保护"]));
}

/// Tag history in the browser: the repository page's "Recently deleted" tab restores a
/// deleted tag, the tag's page shows its history, and the cleanup log's "Restore this
/// run" (after a confirmation) puts back what a bulk deletion removed; in English and
/// Chinese.
#[test]
fn recently_deleted_history_and_restore_run_in_a_browser() {
    if !browser_tools() {
        return;
    }
    let berth = Berth::start();
    let tmp = tempfile::tempdir().unwrap();
    berth.project("team/app", "private");
    for tag in ["v1", "v2", "v3", "keep"] {
        push(&berth, tmp.path(), "team/app/web", tag, &["amd64"]);
    }
    let pat = berth.admin(&[
        "token", "create", "--user", "root", "--name", "ui", "--scopes", "api",
    ]);
    let http = reqwest::blocking::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}/api/v4{path}", berth.url))
            .header("PRIVATE-TOKEN", &pat)
    };
    let repos: Value = api(
        reqwest::Method::GET,
        "/projects/team%2Fapp/registry/repositories",
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    let rid = repos[0]["id"].as_i64().unwrap();
    // v1 deleted by hand; v2 and v3 by a bulk deletion (a cleanup run).
    let resp = api(
        reqwest::Method::DELETE,
        &format!("/projects/team%2Fapp/registry/repositories/{rid}/tags/v1"),
    )
    .send()
    .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = api(
        reqwest::Method::DELETE,
        &format!(
            "/projects/team%2Fapp/registry/repositories/{rid}/tags?name_regex_delete=v%5B23%5D"
        ),
    )
    .send()
    .unwrap();
    assert_eq!(resp.status(), 202);
    support::eventually(
        std::time::Duration::from_secs(60),
        "the bulk deletion",
        || {
            let log: Value = api(
                reqwest::Method::GET,
                "/projects/team%2Fapp/registry/cleanup_log",
            )
            .send()
            .ok()?
            .json()
            .ok()?;
            (log.as_array()?.len() == 2).then_some(())
        },
    );

    let repo_path = format!("/team/app/container_registry/{rid}");
    let settings = format!("{}/team/app/-/settings/packages_and_registries", berth.url);
    let r = node(
        "history.mjs",
        &berth,
        &[
            ("REPO_PATH", repo_path.as_str()),
            ("SETTINGS_URL", settings.as_str()),
        ],
    );
    eprintln!("browser saw: {r:#}");
    assert!(r["error"].is_null(), "{}", r["error"]);
    assert_eq!(strings(&r["tabs"]), ["Tags", "Recently deleted"]);
    assert_eq!(strings(&r["deleted_before"]), ["v1", "v2", "v3"]);
    assert_eq!(r["restore_notice"], "Tag restored.");
    assert_eq!(strings(&r["deleted_after"]), ["v2", "v3"]);
    assert_eq!(strings(&r["history"]), ["Restored", "Deleted", "Pushed"]);
    let actors = strings(&r["history_actors"]);
    assert_eq!(
        actors[0], "root (user)",
        "restored in the browser: {actors:?}"
    );
    assert_eq!(actors[1], "root (personal_access_token)", "{actors:?}");
    let runs = strings(&r["runs"]);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].starts_with("Run #"), "{runs:?}");
    assert!(
        r["run_confirm_text"]
            .as_str()
            .unwrap()
            .starts_with("Put back every tag cleanup run #"),
        "{}",
        r["run_confirm_text"]
    );
    assert!(
        !r["url_after_cancel"].as_str().unwrap().contains("notice="),
        "cancel must not restore"
    );
    assert!(
        r["run_notice"]
            .as_str()
            .unwrap()
            .contains(": 2 tags restored, 0 gone, 0 skipped"),
        "{}",
        r["run_notice"]
    );
    assert_eq!(strings(&r["deleted_after_run"]), Vec::<String>::new());
    assert_eq!(r["empty_text"], "No recently deleted tags.");
    let mut left = list_tags(&berth, tmp.path(), "team/app/web");
    left.sort();
    assert_eq!(left, ["keep", "v1", "v2", "v3"], "skopeo list-tags");
    assert_eq!(strings(&r["zh_tabs"]), ["标签", "最近删除"]);
    assert_eq!(r["zh_history_title"], "历史");
    assert_eq!(strings(&r["zh_history"]), ["恢复", "删除", "推送"]);
}

/// Skopeo with `args`, its success and what it printed (stdout, then stderr).
fn skopeo_try(tmp: &Path, args: &[&str]) -> (bool, String) {
    let out = skopeo(tmp).args(args).output().expect("skopeo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Issue 15's proof: a team runs Berth from the browser. Root makes the accounts;
/// alice creates a group and a project, adds bob as developer, creates a personal
/// access token that `skopeo login` and a push accept (also to her personal
/// namespace, alice/tools/app) and a deploy token that pulls until she revokes it;
/// bob sees the members but no management; changing a password signs out another
/// browser.
#[test]
fn self_service_in_a_real_browser() {
    if !browser_tools() {
        return;
    }
    // A short review delay, so the admin area has garbage collection to show; but
    // longer than any gap between a blob and its manifest in the pushes below on a
    // busy machine (with 2 s, a push on three nodes lost its layer to a review).
    let berth = Berth::start_with(&[], &[("BERTH_GC_REVIEW_DELAY", "10s")]);
    let tmp = tempfile::tempdir().unwrap();
    let alice_first_pw = "chosen-by-root-1";
    let alice_pw = "alice-password-1";
    let bob_pw = "bob-password-1";
    let envs = |phase: &'static str| {
        vec![
            ("PHASE", phase),
            ("ALICE_FIRST_PASSWORD", alice_first_pw),
            ("ALICE_PASSWORD", alice_pw),
            ("BOB_PASSWORD", bob_pw),
        ]
    };

    let r = node("self_service.mjs", &berth, &envs("setup"));
    eprintln!("browser saw: {r:#}");
    // Root's admin area: alice created (a short password refused first), sign-up on
    // (off, it is not there), and bob registers (a taken username refused first).
    assert_eq!(r["sign_up_status_before"], 404);
    assert_eq!(r["admin_url"], "/admin");
    assert_eq!(
        r["short_password_error"],
        "Password is too short (minimum is 8 characters)"
    );
    assert_eq!(r["user_created_notice"], "User created.");
    assert_eq!(strings(&r["admin_users"]), ["root", "alice"]);
    assert_eq!(r["settings_notice"], "Settings saved.");
    assert!(
        r["taken_username_error"]
            .as_str()
            .unwrap()
            .contains("already been taken"),
        "{}",
        r["taken_username_error"]
    );
    assert_eq!(
        r["signed_up_notice"],
        "Account created. Sign in with your new username and password."
    );
    // Root chose alice's password: the token service refuses it, saying why; her
    // first sign-in asks for her own, and until then every page and form leads
    // there; the next sign-in not.
    assert_eq!(r["expired_jwt_status"], 401);
    assert!(
        r["expired_jwt_message"]
            .as_str()
            .unwrap()
            .starts_with("Your password expired"),
        "{}",
        r["expired_jwt_message"]
    );
    assert_eq!(r["first_sign_in_url"], "/-/user_settings/password/edit");
    assert_eq!(
        r["first_sign_in_notice"],
        "Set a password of your own before you go on: the one you signed in with was chosen by an administrator or generated."
    );
    assert_eq!(
        strings(&r["gated"]),
        ["/-/user_settings/password/edit"; 4],
        "pages wait for the new password"
    );
    assert_eq!(
        r["gated_post"],
        json!([303, "/-/user_settings/password/edit"])
    );
    assert_eq!(r["second_sign_in_url"], "/");
    assert_eq!(r["signed_in_as"], "alice");
    assert_eq!(r["profile_url"], "/-/user_settings/profile");
    assert_eq!(r["profile_notice"], "Profile saved.");
    assert_eq!(r["profile_name"], "Alice Liddell");
    // The API's path rule, next to the field, with what was typed kept.
    let path_error = r["group_path_error"].as_str().unwrap();
    assert!(path_error.starts_with("Path "), "{path_error}");
    assert!(
        path_error.contains("start"),
        "the path message says why: {path_error}"
    );
    assert_eq!(r["group_path_kept"], "-team");
    assert_eq!(r["group_url"], "/groups/team");
    assert_eq!(r["group_title"], "Team");
    assert_eq!(r["project_namespace_choice"], "team/");
    assert_eq!(r["project_url"], "/team/app");
    assert_eq!(r["project_image"], format!("{}/team/app", berth.addr));
    assert_eq!(
        strings(&r["sidebar"]),
        [
            "Overview",
            "Container Registry",
            "Members",
            "General settings",
            "Repository settings",
            "Packages & Registries"
        ]
    );
    assert_eq!(r["personal_project_url"], "/alice/tools");
    // Members: an unknown user is refused next to the field; bob joins as developer.
    assert_eq!(r["unknown_member_error"], "No user with this username.");
    assert_eq!(r["member_notice"], "Member added.");
    assert_eq!(strings(&r["members"]), ["alice", "bob"]);
    assert_eq!(r["bob_role"], "30");
    assert_eq!(r["alice_source"], "Direct member");

    // The token: GitLab's default (30 days) and maximum (a year) expiry, shown once.
    let pat = r["pat"].as_str().unwrap().to_string();
    assert!(pat.starts_with("glpat-"), "{pat}");
    assert_eq!(
        r["pat_login"],
        format!(
            "echo {pat} | docker login {} -u alice --password-stdin",
            berth.addr
        )
    );
    assert_eq!(strings(&r["pat_rows"]), ["laptop"]);
    assert_eq!(r["pat_shown_after_reload"], false);
    assert!(r["pat_default_expiry"].as_str().unwrap() < r["pat_max_expiry"].as_str().unwrap());

    // The token works for `skopeo login` and a push, to the group's project and to
    // alice's personal namespace.
    let auth = tmp.path().join("auth.json");
    let auth_s = auth.to_str().unwrap();
    let (ok, out) = skopeo_try(
        tmp.path(),
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            auth_s,
            "-u",
            "alice",
            "-p",
            &pat,
            &berth.addr,
        ],
    );
    assert!(ok, "skopeo login with the browser's token: {out}");
    for name in ["team/app/web", "alice/tools/app"] {
        let dir = tmp.path().join(name.replace('/', "-"));
        layout(&dir, "v1", &["amd64"], name);
        let (ok, out) = skopeo_try(
            tmp.path(),
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-authfile",
                auth_s,
                &format!("oci:{}:v1", dir.display()),
                &format!("docker://{}/{name}:v1", berth.addr),
            ],
        );
        assert!(ok, "push {name} with the browser's token: {out}");
    }

    // The deploy token pulls.
    let deploy_user = r["deploy_username"].as_str().unwrap().to_string();
    assert!(
        deploy_user.starts_with("gitlab+deploy-token-"),
        "{deploy_user}"
    );
    assert_eq!(strings(&r["deploy_rows"]), ["puller"]);
    let deploy_creds = format!("{deploy_user}:{}", r["deploy_token"].as_str().unwrap());
    let pull = |tag: &str| {
        skopeo_try(
            tmp.path(),
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &deploy_creds,
                &format!("docker://{}/team/app/web:v1", berth.addr),
                &format!("oci:{}:{tag}", tmp.path().join("pulled").display()),
            ],
        )
    };
    let (ok, out) = pull("first");
    assert!(ok, "pull with the deploy token: {out}");

    // Bob, a developer: members listed, nothing to manage, settings and admin hidden.
    assert_eq!(strings(&r["bob_sees_members"]), ["alice", "bob"]);
    assert_eq!(r["bob_add_forms"], 0);
    assert_eq!(r["bob_role_selects"], 0);
    assert_eq!(
        strings(&r["bob_remove_buttons"]),
        ["remove-bob"],
        "bob may only leave"
    );
    assert_eq!(
        strings(&r["bob_sidebar"]),
        ["Overview", "Container Registry", "Members"]
    );
    assert_eq!(r["bob_repository_settings_status"], 404);
    assert_eq!(r["bob_forged_role_status"], 403);
    assert_eq!(r["bob_admin_status"], 404);

    // Revoked in the browser, the deploy token no longer pulls; a new password signs
    // out alice's other browser but not the one that changed it.
    let r = node("self_service.mjs", &berth, &envs("revoke"));
    eprintln!("browser saw: {r:#}");
    assert_eq!(r["deploy_revoked_notice"], "Deploy token revoked.");
    assert_eq!(r["deploy_rows_after"], json!([]));
    let (ok, out) = pull("second");
    assert!(!ok, "a revoked deploy token must not pull: {out}");
    assert_eq!(r["old_session_before"], "/-/user_settings/profile");
    assert_eq!(
        r["wrong_current_error"],
        "The current password is not correct."
    );
    assert_eq!(
        r["password_notice"],
        "Password changed. Other sessions were signed out."
    );
    assert_eq!(r["this_session_after"], "/-/user_settings/profile");
    assert_eq!(r["old_session_after"], "/users/sign_in");
    // General settings, and a path change that names the image paths it moves.
    assert_eq!(r["edit_notice"], "Settings saved.");
    assert_eq!(r["edit_description"], "Small tools");
    assert_eq!(r["edit_visibility"], "internal");
    assert_eq!(
        strings(&r["move_images"]),
        ["alice/tools/app", "alice/toolbox/app"]
    );
    assert_eq!(r["after_move_url"], "/alice/toolbox/edit");
    assert_eq!(
        r["bob_select_all"], true,
        "developers may delete tags in bulk"
    );
    let (ok, out) = skopeo_try(
        tmp.path(),
        &[
            "inspect",
            "--tls-verify=false",
            "--authfile",
            auth_s,
            &format!("docker://{}/alice/toolbox/app:v1", berth.addr),
        ],
    );
    assert!(ok, "the image moved with its project: {out}");

    // The members rules in the browser, the admin's user edit, Chinese refusals,
    // and a password reset by root: bob's password then opens only the password
    // form and is refused by the token service, while his token keeps working.
    berth.user("carol", "carol-password-1");
    let bob_pat = berth.admin(&[
        "token",
        "create",
        "--user",
        "bob",
        "--name",
        "cli",
        "--scopes",
        "read_registry",
    ]);
    let root_pat = berth.admin(&[
        "token", "create", "--user", "root", "--name", "ui", "--scopes", "api",
    ]);
    let user_id = |name: &str| -> String {
        let users: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v4/users?username={name}", berth.url))
            .header("PRIVATE-TOKEN", &root_pat)
            .send()
            .unwrap()
            .json()
            .unwrap();
        users[0]["id"].as_i64().unwrap().to_string()
    };
    let (alice_id, carol_id) = (user_id("alice"), user_id("carol"));
    // A cleanup run (a bulk deletion of one tag pushed for it) and what garbage
    // collection then frees, for the admin area to show.
    let old_dir = tmp.path().join("old");
    layout(&old_dir, "old", &["amd64"], "to-be-deleted");
    let (ok, out) = skopeo_try(
        tmp.path(),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            auth_s,
            &format!("oci:{}:old", old_dir.display()),
            &format!("docker://{}/team/app/web:old", berth.addr),
        ],
    );
    assert!(ok, "push team/app/web:old: {out}");
    let http = reqwest::blocking::Client::new();
    let root_api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}/api/v4{path}", berth.url))
            .header("PRIVATE-TOKEN", &root_pat)
    };
    let repos: Value = root_api(
        reqwest::Method::GET,
        "/projects/team%2Fapp/registry/repositories",
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    let rid = repos[0]["id"].as_i64().unwrap();
    let resp = root_api(
        reqwest::Method::DELETE,
        &format!("/projects/team%2Fapp/registry/repositories/{rid}/tags?name_regex_delete=old"),
    )
    .send()
    .unwrap();
    assert_eq!(resp.status(), 202);
    support::eventually(
        std::time::Duration::from_secs(60),
        "the bulk deletion and the garbage collection after it",
        || {
            let log: Value = root_api(
                reqwest::Method::GET,
                "/projects/team%2Fapp/registry/cleanup_log",
            )
            .send()
            .ok()?
            .json()
            .ok()?;
            let metrics = http
                .get(format!("{}/metrics", berth.url))
                .send()
                .ok()?
                .text()
                .ok()?;
            let freed = metrics
                .lines()
                .find(|l| l.starts_with("berth_gc_blobs_deleted_total"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            (log.as_array()?.len() == 1 && freed > 0.0).then_some(())
        },
    );
    let bob_reset_pw = "bob-reset-by-root-1";
    // Alice's password is the one she chose in the revoke phase.
    let rules_env = [
        ("PHASE", "rules"),
        ("ALICE_PASSWORD", "alice-new-password-2"),
        ("BOB_PASSWORD", bob_pw),
        ("ALICE_ID", alice_id.as_str()),
        ("CAROL_ID", carol_id.as_str()),
        ("BOB_RESET_PASSWORD", bob_reset_pw),
    ];
    let r = node("self_service.mjs", &berth, &rules_env);
    eprintln!("browser saw: {r:#}");
    let last_owner = "The last owner of a top-level group can be neither removed nor given another role. Make someone else an owner first.";
    assert_eq!(r["owner_alone_note"], "Last owner");
    assert_eq!(r["owner_alone_controls"], 0);
    assert_eq!(r["last_owner_demote"], json!([403, last_owner]));
    assert_eq!(r["last_owner_remove"], json!([403, last_owner]));
    assert_eq!(strings(&r["group_members"]), ["alice", "bob", "carol"]);
    // A maintainer gives roles up to Maintainer and leaves the owner alone.
    assert_eq!(
        strings(&r["maintainer_add_roles"]),
        ["10", "20", "30", "40"]
    );
    assert_eq!(
        strings(&r["maintainer_carol_roles"]),
        ["10", "20", "30", "40"]
    );
    assert_eq!(r["maintainer_owner_controls"], 0);
    assert_eq!(r["maintainer_forged_owner_demote"], 403);
    assert_eq!(r["maintainer_forged_owner_remove"], 403);
    assert_eq!(r["maintainer_forged_make_owner"], 403);
    assert_eq!(r["maintainer_change_notice"], "Role changed.");
    assert_eq!(r["carol_role_after_bob"], "20");
    // An owner manages owners; with two owners, alice has controls again.
    assert_eq!(
        strings(&r["owner_carol_roles"]),
        ["10", "20", "30", "40", "50"]
    );
    assert_eq!(r["owner_change_notice"], "Role changed.");
    assert_eq!(r["alice_controls_after"], 1);
    // Root edits bob's name and e-mail; refusals next to their field.
    assert_eq!(r["edit_user_url"], "/admin/users/bob/edit");
    assert_eq!(r["edit_user_email_error"], "Email is invalid");
    assert_eq!(r["edit_user_focus"], "edit-user-email");
    assert_eq!(r["edit_user_name_error"], "Name can't be blank");
    assert_eq!(r["edit_user_notice"], "User updated.");
    assert_eq!(r["edit_user_row"], "Bob Builder");
    assert_eq!(r["edit_user_email"], "bob@example.com");
    // Chinese pages give the API's refusals in Chinese.
    // The admin area's background work: the run, and what GC freed (the same in
    // the last day as in all).
    let run = strings(&r["admin_runs"]);
    assert_eq!(run[..2], ["team/app", "Bulk delete (API)"], "{run:?}");
    assert!(run[2].ends_with(" UTC"), "when: {run:?}");
    assert_eq!(run[3..], ["1", "Finished"], "{run:?}");
    // Storage per project and per top-level namespace (a group's projects summed).
    let mut projects = strings(&r["admin_projects"]);
    projects.sort();
    assert_eq!(projects, ["alice/toolbox", "team/app"], "{r:#}");
    let mut namespaces = strings(&r["admin_namespaces"]);
    namespaces.sort();
    assert_eq!(namespaces, ["alice", "team"], "{r:#}");
    let gc = strings(&r["admin_gc"]);
    assert_eq!(gc.len(), 8, "{gc:?}");
    assert_eq!(gc[0], "Last 24 hours");
    assert_eq!(gc[4], "All time");
    assert_eq!(gc[1..4], gc[5..8], "{gc:?}");
    assert_ne!(gc[1], "0 B", "{gc:?}");
    assert_ne!(gc[3], "0", "blobs freed: {gc:?}");
    assert_eq!(r["zh_email_error"], "电子邮箱无效。");
    assert_eq!(
        r["zh_path_error"],
        "路径 \"-crew\" 必须以字母或数字开头（不能以“-”、“_”或“.”开头）。"
    );
    assert_eq!(r["zh_member_error"], "此用户已经是成员。");
    assert_eq!(r["zh_token_error"], "过期日期必须是今天之后的日期。");
    // Root's new password for bob: only the password form, in the browser…
    assert_eq!(r["reset_notice"], "User updated.");
    assert_eq!(r["bob_reset_sign_in_url"], "/-/user_settings/password/edit");
    assert_eq!(r["bob_reset_gated"], "/-/user_settings/password/edit");
    // …refused with its reason by `skopeo login`, while bob's token still works.
    let bob_auth = tmp.path().join("bob-auth.json");
    let bob_auth_s = bob_auth.to_str().unwrap();
    let login = |secret: &str| {
        skopeo_try(
            tmp.path(),
            &[
                "login",
                "--tls-verify=false",
                "--authfile",
                bob_auth_s,
                "-u",
                "bob",
                "-p",
                secret,
                &berth.addr,
            ],
        )
    };
    let (ok, out) = login(bob_reset_pw);
    assert!(!ok, "an expired password must not log in: {out}");
    // (skopeo prints only "invalid username/password"; the token service says why.)
    let refused = berth.token(
        Some(("bob", bob_reset_pw)),
        &["repository:team/app/web:pull"],
    );
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Your password expired"),
        "{body}"
    );
    let (ok, out) = login(&bob_pat);
    assert!(ok, "bob's token keeps working: {out}");

    // axe-core over every page type, in both languages: no critical or serious
    // violation.
    // [screenshot name (new pages only), path] of every page type.
    let pages = json!([
        ["", "/"],
        ["project-overview", "/team/app"],
        ["project-settings", "/team/app/edit"],
        ["group-settings", "/groups/team/-/edit"],
        ["group-overview", "/groups/team"],
        ["user-namespace", "/alice"],
        ["", "/team/app/container_registry"],
        ["", "/groups/team/-/container_registries"],
        // The first image of the project, and its tag v1 (found by the script).
        ["", "{repository}"],
        ["", "{repository}/-/tags/v1"],
        ["", "{repository}/deleted"],
        ["", "/groups/team/-/dependency_proxy"],
        ["", "/team/app/-/settings/packages_and_registries"],
        ["project-members", "/team/app/-/project_members"],
        ["group-members", "/groups/team/-/group_members"],
        ["deploy-tokens", "/team/app/-/settings/repository"],
        ["", "/groups/team/-/settings/repository"],
        ["profile", "/-/user_settings/profile"],
        ["password", "/-/user_settings/password/edit"],
        ["access-tokens", "/-/user_settings/personal_access_tokens"],
        ["new-group", "/groups/new"],
        ["new-project", "/projects/new"],
        ["admin", "/admin"],
        ["admin-users", "/admin/users"],
        ["admin-user-edit", "/admin/users/alice/edit"],
    ]);
    // With BERTH_SCREENSHOTS=1 the new pages are kept under docs/screenshots/.
    let shots = if std::env::var_os("BERTH_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        tmp.path().join("screenshots")
    };
    let axe = node(
        "axe.mjs",
        &berth,
        &[
            ("AXE_PAGES", &pages.to_string()),
            ("SCREENSHOT_DIR", shots.to_str().unwrap()),
        ],
    );
    assert_eq!(strings(&axe["files"]).len(), 2 * 17);
    let bad: Vec<&Value> = axe["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["violations"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(axe["pages"], 2 * (3 + 25 + 1));
    assert!(
        bad.is_empty(),
        "critical or serious accessibility violations: {bad:#?}"
    );

    // Transfer in the browser: alice moves team into a new group of hers, after a
    // confirmation naming the image paths that change; the image follows.
    let mut transfer_env = envs("transfer");
    transfer_env.push(("SCREENSHOT_DIR", shots.to_str().unwrap()));
    let r = node("self_service.mjs", &berth, &transfer_env);
    eprintln!("browser saw: {r:#}");
    let zh_title = r["zh_group_transfer_title"].as_str().unwrap_or_default();
    assert!(
        zh_title.contains("crew/team") && zh_title != "Move the group to crew/team?",
        "the confirmation in Chinese: {zh_title}"
    );
    // team is top-level already: only groups alice owns outside it are offered.
    assert_eq!(strings(&r["transfer_targets"]), ["crew/"]);
    assert_eq!(r["group_transfer_title"], "Move the group to crew/team?");
    assert_eq!(
        strings(&r["group_transfer_images"]),
        ["team/app/web", "crew/team/app/web"]
    );
    assert_eq!(r["group_transfer_url"], "/groups/crew/team/-/edit");
    assert_eq!(r["group_transfer_notice"], "Settings saved.");
    let inspect = |path: &str| {
        skopeo_try(
            tmp.path(),
            &[
                "inspect",
                "--tls-verify=false",
                "--authfile",
                auth_s,
                &format!("docker://{}/{path}:v1", berth.addr),
            ],
        )
    };
    let (ok, out) = inspect("crew/team/app/web");
    assert!(ok, "the image moved with its group: {out}");

    // Delete in the browser: a project (English) and then its group (Chinese), each
    // only once its full path is typed; the images no longer pull.
    let r = node("self_service.mjs", &berth, &envs("remove"));
    eprintln!("browser saw: {r:#}");
    assert_eq!(r["delete_title"], "Delete project");
    let help = r["delete_help"].as_str().unwrap();
    assert!(
        help.contains("container images (1)") && help.contains("garbage collection"),
        "{help}"
    );
    assert_eq!(r["delete_label"], "Type crew/team/app to confirm");
    assert_eq!(
        r["delete_mismatch"],
        "Type the full path exactly as shown to confirm."
    );
    assert_eq!(
        r["delete_mismatch_focus"], "confirm-path",
        "focus on the field"
    );
    assert_eq!(r["project_deleted_url"], "/");
    assert_eq!(
        r["project_deleted_notice"],
        "Project deleted. Storage its images alone used is freed by garbage collection."
    );
    assert_eq!(r["deleted_project_status"], 404);
    let (ok, out) = inspect("crew/team/app/web");
    assert!(!ok, "a deleted project's image must not pull: {out}");
    assert_eq!(r["zh_delete_title"], "删除群组");
    let help = r["zh_delete_help"].as_str().unwrap();
    assert!(
        help.contains("子群组和项目（0 个）") && help.contains("垃圾回收"),
        "{help}"
    );
    assert_eq!(r["zh_delete_label"], "输入 crew 以确认");
    // Nowhere to move crew: its only other group is inside it.
    assert_eq!(r["zh_transfer_targets"], json!([]));
    assert_eq!(
        r["zh_delete_mismatch"],
        "请按显示内容准确输入完整路径以确认。"
    );
    assert_eq!(r["group_deleted_url"], "/");
    assert_eq!(
        r["zh_group_deleted_notice"],
        "群组已删除。仅由其镜像占用的存储空间将由垃圾回收释放。"
    );
    assert_eq!(r["status /groups/crew"], 404);
    assert_eq!(r["status /groups/crew/team"], 404);
    assert_eq!(r["status /alice/toolbox"], 200, "other projects stay");
    let (ok, out) = inspect("alice/toolbox/app");
    assert!(ok, "alice's own image still pulls: {out}");
}
