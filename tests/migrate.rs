//! `berth migrate`: a single node (SQLite, blob files) moved onto PostgreSQL and S3
//! (moto), interrupted and resumed, verified, and then served: every image pulls back
//! with its digests and the migrated users, tokens, projects and policies work.
//!
//! The source is always SQLite with files, so these tests belong to the normal pass of
//! `scripts/test`; they create their own PostgreSQL databases and buckets. Without
//! PostgreSQL they are skipped loudly (a failure with `BERTH_TEST_REQUIRE_POSTGRES=1`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_meta::testing::TestDatabase;
use serde_json::{json, Value};
use support::{run, sha256_hex, Berth, Storage, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// The source of a migration is SQLite with files: the S3 and PostgreSQL passes of
/// the end-to-end tests would give the source server other stores.
fn plain_mode() -> bool {
    let other = std::env::var("BERTH_TEST_DATABASE").is_ok_and(|v| v == "postgres")
        || std::env::var("BERTH_TEST_STORAGE").is_ok_and(|v| v == "s3");
    if other {
        eprintln!("SKIPPED: berth migrate tests run in the SQLite/filesystem pass only");
    }
    !other
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn database(what: &str) -> Option<TestDatabase> {
    block_on(TestDatabase::create(what))
}

/// A directory holding the target's `berth.toml` (PostgreSQL `db`, and a fresh moto
/// bucket when `s3`), ready for `berth migrate --to` and then for `berth serve`.
fn target_dir(db: &TestDatabase, s3: bool) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut toml = format!(
        "data_dir = \"{}\"\n[database]\nurl = \"{}\"\n",
        dir.path().join("data").display(),
        db.url()
    );
    if s3 {
        let env: BTreeMap<String, String> = support::s3_env()?.into_iter().collect();
        toml.push_str(&format!(
            "[storage]\nkind = \"s3\"\n[storage.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\npath_style = true\n",
            env["BERTH_S3_BUCKET"], env["BERTH_S3_ENDPOINT"]
        ));
        // What `support::Storage` reads to look into the bucket.
        std::fs::write(dir.path().join("s3-bucket"), &env["BERTH_S3_BUCKET"]).unwrap();
    }
    std::fs::write(dir.path().join("berth.toml"), toml).expect("writing berth.toml");
    Some(dir)
}

// ---------------------------------------------------------------------------
// Running `berth migrate`
// ---------------------------------------------------------------------------

struct Migrate {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Migrate {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Migrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `berth migrate --data-dir <source>/data --to <target>/berth.toml ARGS`, run in the
/// source's directory as an operator would.
fn migrate(source: &Path, target: &Path, args: &[&str], envs: &[(&str, &str)]) -> Migrate {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("migrate")
        .arg("--data-dir")
        .arg(source.join("data"))
        .arg("--to")
        .arg(target.join("berth.toml"))
        .args(args)
        .current_dir(source)
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running berth migrate");
    Migrate {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The number before `label` on the output line starting with `line`, e.g. the 7 of
/// `blobs: 3 copied (1 MiB), 7 already in the target`.
fn count_in(out: &str, line: &str, label: &str) -> u64 {
    let l = out
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line starting with {line:?} in:\n{out}"));
    let before = l
        .split(label)
        .next()
        .filter(|_| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in {l:?}"));
    before
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in {l:?}"))
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// An uncompressed tar layer with one file of random bytes.
fn layer(path: &str, kib: usize) -> Vec<u8> {
    support::tar_layer(path, &support::random_bytes(kib * 1024))
}

/// An OCI layout at `dir` tagged `tag`: one image per entry of `images` (its layers),
/// under an index when there are several. Returns the tagged digest.
fn write_layout(dir: &Path, tag: &str, images: &[Vec<Vec<u8>>]) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |media_type: &str, bytes: &[u8]| -> Value {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len() })
    };
    let archs = ["amd64", "arm64", "s390x"];
    let mut manifests = Vec::new();
    for (i, layers) in images.iter().enumerate() {
        let descs: Vec<Value> = layers.iter().map(|l| put(OCI_LAYER, l)).collect();
        let config = json!({
            "architecture": archs[i],
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>() },
        });
        let config = put(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs,
        });
        let mut desc = put(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
        if images.len() > 1 {
            desc["platform"] = json!({ "architecture": archs[i], "os": "linux" });
        }
        manifests.push(desc);
    }
    let mut tagged = if images.len() > 1 {
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        put(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    } else {
        manifests.remove(0)
    };
    let digest = tagged["digest"].as_str().unwrap().to_string();
    tagged["annotations"] = json!({ REF_NAME: tag });
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [tagged] });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digest
}

/// The blobs of a layout, by hex digest, each checked against its name.
fn layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "{} hashes to its name",
            path.display()
        );
        out.insert(name, bytes);
    }
    out
}

fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

fn root_creds() -> String {
    format!("root:{ROOT_PASSWORD}")
}

/// An image pushed to the source, to pull back from the target.
struct Pushed {
    reference: String,
    layout: PathBuf,
    digest: String,
}

fn push(berth: &Berth, tmp: &Path, reference: &str, images: &[Vec<Vec<u8>>]) -> Pushed {
    static PUSHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let layout = tmp.join(format!("push-{n}"));
    let tag = reference.rsplit_once(':').unwrap().1;
    let digest = write_layout(&layout, tag, images);
    run(skopeo(tmp).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{}/{reference}", berth.addr),
    ]));
    Pushed {
        reference: reference.to_string(),
        layout,
        digest,
    }
}

/// Pull `image` from `berth` (every platform) and check the bytes and digests against
/// what was pushed.
fn pull_and_compare(berth: &Berth, tmp: &Path, image: &Pushed) {
    let out = tmp.join(format!(
        "pull-{}",
        image.layout.file_name().unwrap().to_string_lossy()
    ));
    run(skopeo(tmp).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &root_creds(),
        &format!("docker://{}/{}", berth.addr, image.reference),
        &format!("oci:{}:x", out.display()),
    ]));
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"], image.digest,
        "{} pulls back with the digest it was pushed with",
        image.reference
    );
    let pushed = layout_blobs(&image.layout);
    let pulled = layout_blobs(&out);
    assert_eq!(
        pulled.keys().collect::<Vec<_>>(),
        pushed.keys().collect::<Vec<_>>(),
        "{}: the same blobs",
        image.reference
    );
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

fn api_get(berth: &Berth, token: &str, path: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}/api/v4{path}", berth.url))
        .header("PRIVATE-TOKEN", token)
        .send()
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn tags(berth: &Berth, name: &str) -> Value {
    let token = berth.token(
        Some(("root", ROOT_PASSWORD)),
        &[&format!("repository:{name}:pull")],
    );
    assert_eq!(token.status(), 200);
    let token: Value = token.json().unwrap();
    let resp = http()
        .get(format!("{}/v2/{name}/tags/list", berth.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "tags of {name}");
    resp.json().unwrap()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn moves_a_single_node_onto_postgres_and_s3() {
    if !plain_mode() || !support::tool("skopeo") {
        return;
    }
    let Some(db) = database("berth migrate onto PostgreSQL and S3") else {
        return;
    };
    let Some(target) = target_dir(&db, true) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // A source with an organisation, images, a moved tag and a cleanup policy.
    let source = Berth::start();
    source.user("alice", "alice-password-1");
    source.project("team/app", "private");
    source.admin(&[
        "member",
        "add",
        "--project",
        "team/app",
        "--user",
        "alice",
        "--role",
        "developer",
    ]);
    let alice_pat = source.admin(&[
        "token", "create", "--user", "alice", "--name", "laptop", "--scopes", "api",
    ]);
    let root_pat = source.admin(&[
        "token", "create", "--user", "root", "--name", "admin", "--scopes", "api",
    ]);
    let deploy = source.admin(&[
        "deploy-token",
        "create",
        "--project",
        "team/app",
        "--name",
        "ci",
        "--scopes",
        "read_registry",
    ]);
    let (deploy_user, deploy_secret) = deploy.split_once('\n').expect("username and token");
    let (deploy_user, deploy_secret) = (deploy_user.trim(), deploy_secret.trim());

    let shared = layer("base.bin", 96);
    let web_v1 = push(
        &source,
        tmp.path(),
        "team/app/web:v1",
        &[vec![
            shared.clone(),
            layer("app.bin", 64),
            layer("etc.bin", 8),
        ]],
    );
    // Pushed first under v2, then v2 moves: an ended tag row and a queued review.
    push(
        &source,
        tmp.path(),
        "team/app/web:v2",
        &[vec![layer("old.bin", 16)]],
    );
    let web_v2 = push(
        &source,
        tmp.path(),
        "team/app/web:v2",
        &[vec![shared.clone(), layer("new.bin", 32)]],
    );
    let multi = push(
        &source,
        tmp.path(),
        "team/app/multi:latest",
        &[
            vec![layer("amd64.bin", 40), shared.clone()],
            vec![layer("arm64.bin", 48)],
        ],
    );
    let images = [web_v1, web_v2, multi];
    let (status, project) = api_get(&source, &root_pat, "/projects/team%2Fapp");
    assert_eq!(status, 200, "{project}");
    let pid = project["id"].as_i64().unwrap();
    let resp = http()
        .put(format!("{}/api/v4/projects/{pid}", source.url))
        .header("PRIVATE-TOKEN", &root_pat)
        .json(&json!({ "container_expiration_policy_attributes": {
            "enabled": true, "cadence": "7d", "keep_n": 5, "older_than": "14d", "name_regex": ".*"
        }}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "saving the cleanup policy");
    // A bulk tag deletion (a lease, a cleanup log entry, an ended tag), instance
    // settings, and a CI job with its deploy credentials.
    push(
        &source,
        tmp.path(),
        "team/app/web:tmp",
        &[vec![layer("tmp.bin", 8)]],
    );
    let (_, repos) = api_get(
        &source,
        &root_pat,
        &format!("/projects/{pid}/registry/repositories"),
    );
    let rid = repos
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "team/app/web")
        .unwrap_or_else(|| panic!("{repos}"))["id"]
        .as_i64()
        .unwrap();
    let resp = http()
        .delete(format!(
            "{}/api/v4/projects/{pid}/registry/repositories/{rid}/tags?name_regex_delete=tmp",
            source.url
        ))
        .header("PRIVATE-TOKEN", &root_pat)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202, "bulk tag deletion");
    support::eventually(
        std::time::Duration::from_secs(30),
        "the bulk deletion",
        || {
            let (_, log) = api_get(
                &source,
                &root_pat,
                &format!("/projects/{pid}/registry/cleanup_log"),
            );
            (log.as_array().is_some_and(|l| !l.is_empty())).then_some(())
        },
    );
    let resp = http()
        .put(format!("{}/api/v4/application/settings", source.url))
        .header("PRIVATE-TOKEN", &root_pat)
        .json(&json!({ "container_registry_cleanup_tags_service_max_list_size": 150 }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "saving settings");
    source.ci_env(&["--project", "team/app", "--user", "alice"]);
    let web_tags = tags(&source, "team/app/web");
    assert_eq!(web_tags["tags"], json!(["v1", "v2"]), "{web_tags}");
    // A registry token the old node issued (signed with its key).
    let old_token: Value = source
        .token(
            Some(("alice", "alice-password-1")),
            &["repository:team/app/web:pull"],
        )
        .json()
        .unwrap();
    let old_token = old_token["token"].as_str().unwrap().to_string();
    // An upload left open: not moved, and said so.
    let token = source.token(
        Some(("root", ROOT_PASSWORD)),
        &["repository:team/app/web:push,pull"],
    );
    let token: Value = token.json().unwrap();
    let resp = http()
        .post(format!("{}/v2/team/app/web/blobs/uploads/", source.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202, "starting an upload");
    let source_dir = source.stop();
    let src = source_dir.path();
    let tgt = target.path();

    // Before anything, verify says the target differs.
    let v = migrate(src, tgt, &["--verify"], &[]);
    assert!(!v.ok(), "verify of an empty target must fail:\n{v}");
    assert!(v.stdout.contains("DIFFERS"), "{v}");

    // Interrupted while copying blobs (one at a time, so exactly two land).
    let first = migrate(
        src,
        tgt,
        &["--jobs", "1"],
        &[("BERTH_MIGRATE_TEST_EXIT_AFTER_BLOBS", "2")],
    );
    assert_eq!(first.code, Some(3), "{first}");
    assert!(first.stderr.contains("stopping after 2 blobs"), "{first}");

    // Interrupted in the middle of the metadata: the blobs are all there, nothing of
    // the metadata is.
    let second = migrate(
        src,
        tgt,
        &[],
        &[("BERTH_MIGRATE_TEST_EXIT_AFTER_TABLE", "tags")],
    );
    assert_eq!(second.code, Some(3), "{second}");
    assert_eq!(
        count_in(&second.stdout, "blobs:", "already in the target"),
        2,
        "the second run continues after the first two blobs:\n{second}"
    );
    let copied = count_in(&second.stdout, "blobs:", "copied");
    assert!(copied >= 8, "{second}");
    assert_eq!(count_in(&second.stdout, "blobs:", "damaged"), 0, "{second}");
    let v = migrate(src, tgt, &["--verify"], &[]);
    assert!(!v.ok(), "{v}");
    let users = v
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("users "))
        .unwrap_or_else(|| panic!("no users line:\n{v}"));
    assert!(
        users.contains("DIFFERS") && users.contains("target 0 rows"),
        "an interrupted metadata copy leaves nothing behind: {users}"
    );

    // The third run finishes.
    let third = migrate(src, tgt, &[], &[]);
    eprintln!("the run that finished:\n{third}");
    assert!(third.ok(), "{third}");
    assert_eq!(
        count_in(&third.stdout, "blobs:", "already in the target"),
        copied + 2,
        "{third}"
    );
    assert_eq!(count_in(&third.stdout, "blobs:", "copied"), 0, "{third}");
    assert!(
        third.stdout.contains("row counts and checksums match"),
        "{third}"
    );
    assert_eq!(
        count_in(&third.stdout, "uploads in progress:", "not moved"),
        1,
        "{third}"
    );
    let v = migrate(src, tgt, &["--verify"], &[]);
    assert!(v.ok(), "{v}");
    assert!(!v.stdout.contains("DIFFERS"), "{v}");
    assert!(v.stdout.contains("the target matches the source"), "{v}");
    // Running again changes nothing and succeeds.
    let again = migrate(src, tgt, &[], &[]);
    assert!(again.ok(), "{again}");
    assert!(again.stdout.contains("already in the target"), "{again}");

    // Serve the target: everything is there.
    let served = Berth::start_in(target, &[], &[]);
    for image in &images {
        pull_and_compare(&served, tmp.path(), image);
    }
    assert_eq!(tags(&served, "team/app/web"), web_tags);
    assert_eq!(
        served
            .token(
                Some(("alice", "alice-password-1")),
                &["repository:team/app/web:pull"]
            )
            .status(),
        200,
        "alice signs in with her password"
    );
    assert_eq!(
        served
            .token(Some(("alice", "wrong-password")), &[])
            .status(),
        401
    );
    assert_eq!(
        served
            .token(
                Some((deploy_user, deploy_secret)),
                &["repository:team/app/web:pull"]
            )
            .status(),
        200,
        "the deploy token works"
    );
    let resp = http()
        .get(format!("{}/v2/team/app/web/tags/list", served.url))
        .bearer_auth(&old_token)
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a token of the old node is valid: the signing key moved"
    );
    let (status, me) = api_get(&served, &alice_pat, "/user");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "alice");
    let (status, projects) = api_get(&served, &root_pat, "/projects");
    assert_eq!(status, 200, "{projects}");
    let paths: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path_with_namespace"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"team/app"), "{paths:?}");
    let (_, project) = api_get(&served, &root_pat, &format!("/projects/{pid}"));
    let (_, log) = api_get(
        &served,
        &root_pat,
        &format!("/projects/{pid}/registry/cleanup_log"),
    );
    assert_eq!(log[0]["tag"], "tmp", "{log}");
    let (_, settings) = api_get(&served, &root_pat, "/application/settings");
    assert_eq!(
        settings["container_registry_cleanup_tags_service_max_list_size"], 150,
        "{settings}"
    );
    let policy = &project["container_expiration_policy"];
    assert_eq!(policy["enabled"], true, "{policy}");
    assert_eq!(policy["keep_n"], 5, "{policy}");
    assert_eq!(policy["cadence"], "7d", "{policy}");

    // New rows get fresh ids after the copied ones.
    served.user("bob", "bob-password-1");
    served.project("team/other", "private");
    push(
        &served,
        tmp.path(),
        "team/other/img:v1",
        &[vec![layer("fresh.bin", 8)]],
    );
    drop(served);
    drop(db);
}

#[test]
fn a_damaged_source_blob_is_reported_and_nothing_is_linked() {
    if !plain_mode() || !support::tool("skopeo") {
        return;
    }
    let Some(db) = database("berth migrate with a damaged blob") else {
        return;
    };
    let Some(target) = target_dir(&db, true) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let source = Berth::start();
    source.project("team/app", "private");
    let bad = layer("bad.bin", 32);
    let bad_digest = format!("sha256:{}", sha256_hex(&bad));
    push(
        &source,
        tmp.path(),
        "team/app/web:v1",
        &[vec![layer("good.bin", 32), bad.clone()]],
    );
    let data = source.data_dir();
    let source_dir = source.stop();
    // Same size, other bytes.
    let storage = Storage::of(&data);
    let mut damaged = storage.read_blob(&bad_digest).expect("the layer is stored");
    damaged[100] ^= 0xff;
    storage.write_blob(&bad_digest, &damaged);

    let out = migrate(source_dir.path(), target.path(), &[], &[]);
    assert!(!out.ok(), "{out}");
    assert_eq!(count_in(&out.stdout, "blobs:", "damaged"), 1, "{out}");
    assert!(
        out.stdout.contains(&format!("damaged: {bad_digest}"))
            && out.stdout.contains("do not match its digest"),
        "{out}"
    );
    assert!(out.stderr.contains("metadata was not copied"), "{out}");
    let target_storage = Storage::of(&target.path().join("data"));
    assert!(
        !target_storage.has_blob(&bad_digest),
        "a blob whose bytes do not match is not published"
    );
    assert_eq!(
        count_in(&out.stdout, "blobs:", "copied"),
        2,
        "the good layer and the config are copied: {out}"
    );
    assert_eq!(target_storage.blobs().len(), 2);
    let v = migrate(source_dir.path(), target.path(), &["--verify"], &[]);
    assert!(!v.ok(), "{v}");
    assert!(v.stdout.contains("target 0 rows"), "{v}");
}

#[test]
fn a_filesystem_target_and_a_database_with_other_data() {
    if !plain_mode() || !support::tool("skopeo") {
        return;
    }
    let Some(db) = database("berth migrate onto PostgreSQL with files") else {
        return;
    };
    let target = target_dir(&db, false).expect("a filesystem target");
    let tmp = tempfile::tempdir().unwrap();

    // PostgreSQL with blob files of its own.
    let source = Berth::start();
    source.project("team/app", "private");
    let image = push(
        &source,
        tmp.path(),
        "team/app/web:v1",
        &[vec![layer("a.bin", 16)]],
    );
    // Not while the server runs.
    let running = migrate(source.data.path(), target.path(), &[], &[]);
    assert!(!running.ok(), "{running}");
    assert!(
        running.stderr.contains("is open in another process"),
        "{running}"
    );
    let source_dir = source.stop();
    let out = migrate(source_dir.path(), target.path(), &[], &[]);
    assert!(out.ok(), "{out}");
    assert_eq!(count_in(&out.stdout, "blobs:", "copied"), 2, "{out}");

    // Another instance cannot be poured into the same database.
    let other = Berth::start();
    other.user("mallory", "mallory-password");
    let other_dir = other.stop();
    let refused = migrate(other_dir.path(), target.path(), &[], &[]);
    assert!(!refused.ok(), "{refused}");
    assert!(
        refused
            .stderr
            .contains("does not hold exactly this source's metadata"),
        "{refused}"
    );
    assert!(refused.stdout.contains("DIFFERS"), "{refused}");
    // The refusal changed nothing: the first source still verifies.
    let v = migrate(source_dir.path(), target.path(), &["--verify"], &[]);
    assert!(v.ok(), "{v}");

    let served = Berth::start_in(target, &[], &[]);
    pull_and_compare(&served, tmp.path(), &image);
    assert_eq!(
        served
            .token(Some(("mallory", "mallory-password")), &[])
            .status(),
        401
    );
}

/// Only the metadata moves: the target keeps blobs in the old node's data directory.
#[test]
fn postgres_only_keeps_the_blob_files_in_place() {
    if !plain_mode() || !support::tool("skopeo") {
        return;
    }
    let Some(db) = database("berth migrate onto PostgreSQL, same files") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let source = Berth::start();
    source.project("team/app", "private");
    let image = push(
        &source,
        tmp.path(),
        "team/app/web:v1",
        &[vec![layer("a.bin", 16), layer("b.bin", 4)]],
    );
    let data = source.data_dir();
    let source_dir = source.stop();
    let target = tempfile::tempdir().unwrap();
    std::fs::write(
        target.path().join("berth.toml"),
        format!(
            "data_dir = \"{}\"\n[database]\nurl = \"{}\"\n",
            data.display(),
            db.url()
        ),
    )
    .unwrap();
    let out = migrate(source_dir.path(), target.path(), &[], &[]);
    assert!(out.ok(), "{out}");
    assert_eq!(count_in(&out.stdout, "blobs:", "copied"), 0, "{out}");
    assert_eq!(
        count_in(&out.stdout, "blobs:", "already in the target"),
        3,
        "{out}"
    );

    // The old node's directory, now with its metadata in PostgreSQL.
    std::fs::write(
        source_dir.path().join("berth.toml"),
        format!("[database]\nurl = \"{}\"\n", db.url()),
    )
    .unwrap();
    let served = Berth::start_in(source_dir, &[], &[]);
    assert!(
        served.log().contains("metadata in PostgreSQL"),
        "{}",
        served.log()
    );
    pull_and_compare(&served, tmp.path(), &image);
}
