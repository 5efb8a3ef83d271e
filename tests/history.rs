//! End-to-end tests of tag history, restore and the undo window (issue 16), with the
//! default garbage collection (untagged manifests freed after the review delay, as
//! GitLab's online GC does; the delay shortened here): the real `berth` binary, skopeo
//! for pushes and pulls, raw HTTP for the rest. Under `BERTH_TEST_DATABASE=postgres`
//! (and `BERTH_TEST_NODES=3` with S3) they run on those backends unchanged; one test
//! also starts three nodes itself. Storage is checked where its bytes live (the blob
//! files or the bucket, through `support::Storage`).

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::{json, Value};

use support::{eventually, run, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const WAIT: Duration = Duration::from_secs(90);

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// A gzip-compressed one-file layer of `len` random bytes.
fn random_layer(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "data.bin", &data[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// An image: config and layers (blobs) and its manifest.
struct Image {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    fn new(created: &str, layers: Vec<Vec<u8>>) -> Image {
        let mut salt = [0u8; 8];
        rand::rng().fill_bytes(&mut salt);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": {"Labels": {"salt": hex::encode(salt)}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": OCI_LAYER, "digest": digest_of(l), "size": l.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            digest: digest_of(&manifest),
            config,
            layers,
            manifest,
        }
    }

    fn blob_digests(&self) -> BTreeSet<String> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|b| digest_of(b))
            .collect()
    }

    /// Write it as an OCI image layout tagged `tag`, for skopeo.
    fn layout(&self, dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for b in std::iter::once(&self.config)
            .chain(&self.layers)
            .chain(std::iter::once(&self.manifest))
        {
            std::fs::write(dir.join("blobs/sha256").join(sha256_hex(b)), b).unwrap();
        }
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": self.digest, "size": self.manifest.len(),
            "annotations": {REF_NAME: tag},
        }]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// A server with root's `api` token, a project, and HTTP helpers.
struct Ctx<'a> {
    berth: &'a Berth,
    http: Client,
    pat: String,
    pid: i64,
}

impl<'a> Ctx<'a> {
    fn new(berth: &'a Berth, project: &str) -> Ctx<'a> {
        berth.project(project, "private");
        let pat = berth.admin(&[
            "token", "create", "--user", "root", "--name", "h", "--scopes", "api",
        ]);
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut ctx = Ctx {
            berth,
            http,
            pat,
            pid: 0,
        };
        ctx.pid = ctx.get(&format!("/projects/{}", project.replace('/', "%2F")))["id"]
            .as_i64()
            .unwrap();
        ctx
    }

    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v4{path}", self.berth.url))
            .header("PRIVATE-TOKEN", &self.pat)
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

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(self.api(Method::GET, path));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn repo_id(&self, path: &str) -> i64 {
        let list = self.get(&format!(
            "/projects/{}/registry/repositories?per_page=100",
            self.pid
        ));
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no repository {path} in {list}"))["id"]
            .as_i64()
            .unwrap()
    }

    fn restore(&self, rid: i64, tag: &str, query: &[(&str, &str)]) -> (u16, Value) {
        self.call(
            self.api(
                Method::POST,
                &format!(
                    "/projects/{}/registry/repositories/{rid}/tags/{tag}/restore",
                    self.pid
                ),
            )
            .query(query),
        )
    }

    fn deleted_tags(&self, rid: i64) -> Vec<Value> {
        self.get(&format!(
            "/projects/{}/registry/repositories/{rid}/deleted_tags?per_page=100",
            self.pid
        ))
        .as_array()
        .unwrap()
        .clone()
    }

    fn delete_tag(&self, rid: i64, tag: &str) {
        let (status, body) = self.call(self.api(
            Method::DELETE,
            &format!(
                "/projects/{}/registry/repositories/{rid}/tags/{tag}",
                self.pid
            ),
        ));
        assert_eq!(status, 200, "deleting {tag}: {body}");
    }

    fn bearer(&self, repo: &str) -> String {
        let resp = self.berth.token(
            Some(("root", ROOT_PASSWORD)),
            &[&format!("repository:{repo}:pull,push,delete")],
        );
        let body: Value = resp.json().unwrap();
        body["token"].as_str().expect("token").to_string()
    }

    fn v2(&self, token: &str, method: Method, repo: &str, rest: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/v2/{repo}/{rest}", self.berth.url))
            .bearer_auth(token)
    }

    /// Push an image over HTTP (monolithic blob uploads, then the manifest as `tag`).
    fn push(&self, token: &str, repo: &str, image: &Image, tag: &str) {
        for b in std::iter::once(&image.config).chain(&image.layers) {
            let (status, body) = self.call(
                self.v2(
                    token,
                    Method::POST,
                    repo,
                    &format!("blobs/uploads/?digest={}", digest_of(b)),
                )
                .header("Content-Type", "application/octet-stream")
                .body(b.clone()),
            );
            assert_eq!(status, 201, "blob upload: {body}");
        }
        self.put_manifest(token, repo, image, tag);
    }

    fn put_manifest(&self, token: &str, repo: &str, image: &Image, tag: &str) {
        let (status, body) = self.call(
            self.v2(token, Method::PUT, repo, &format!("manifests/{tag}"))
                .header("Content-Type", OCI_MANIFEST)
                .body(image.manifest.clone()),
        );
        assert_eq!(status, 201, "PUT {repo}:{tag}: {body}");
    }

    /// Status of `GET`/`HEAD /v2/<repo>/manifests/<reference>`, with its digest.
    fn manifest(&self, token: &str, method: Method, repo: &str, reference: &str) -> (u16, String) {
        let resp = self
            .v2(token, method, repo, &format!("manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .send()
            .expect("manifest request");
        let digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (resp.status().as_u16(), digest)
    }
}

fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

fn creds() -> String {
    format!("root:{ROOT_PASSWORD}")
}

fn skopeo_push(berth: &Berth, tmp: &Path, image: &Image, repo: &str, tag: &str) {
    let dir = tmp.join(format!("src-{tag}"));
    image.layout(&dir, tag);
    run(skopeo(tmp).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(),
        &format!("oci:{}:{tag}", dir.display()),
        &format!("docker://{}/{repo}:{tag}", berth.addr),
    ]));
}

/// Pull `repo:tag` with skopeo into a layout; returns the digest pulled, after
/// checking every blob arrived intact.
fn skopeo_pull(berth: &Berth, tmp: &Path, repo: &str, tag: &str) -> String {
    let dir = tmp.join(format!("pulled-{tag}-{}", rand::rng().random::<u32>()));
    run(skopeo(tmp).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/{repo}:{tag}", berth.addr),
        &format!("oci:{}:{tag}", dir.display()),
    ]));
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), name);
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The actions of a tag's history, newest first, with their digests and actors.
fn history(ctx: &Ctx, rid: i64, tag: &str) -> Vec<(String, String, String)> {
    ctx.get(&format!(
        "/projects/{}/registry/repositories/{rid}/tags/{tag}/history",
        ctx.pid
    ))
    .as_array()
    .unwrap()
    .iter()
    .map(|e| {
        (
            e["action"].as_str().unwrap().to_string(),
            e["digest"].as_str().unwrap().to_string(),
            format!(
                "{}:{}",
                e["actor"]["kind"].as_str().unwrap_or("-"),
                e["actor"]["username"].as_str().unwrap_or("-")
            ),
        )
    })
    .collect()
}

// ---------------------------------------------------------------------------
// 1. Delete, restore within the window, pull; past the window, storage freed
// ---------------------------------------------------------------------------

const WINDOW: &[(&str, &str)] = &[("BERTH_GC_REVIEW_DELAY", "6s")];

fn restore_within_the_window_then_freed_after_it(berth: &Berth) {
    if !support::tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(berth, "hist/proj");
    let repo = "hist/proj/app";
    let base = random_layer(32 * 1024);
    let a = Image::new(
        "2024-01-01T00:00:00Z",
        vec![base.clone(), random_layer(48 * 1024)],
    );
    let b = Image::new(
        "2024-01-01T00:00:00Z",
        vec![base.clone(), random_layer(40 * 1024)],
    );
    skopeo_push(berth, tmp.path(), &a, repo, "a");
    skopeo_push(berth, tmp.path(), &b, repo, "b");
    let rid = ctx.repo_id(repo);

    // Deleted through the REST API; listed as restorable; restored; pulled.
    ctx.delete_tag(rid, "a");
    let deleted = ctx.deleted_tags(rid);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["name"], "a");
    assert_eq!(deleted[0]["digest"], a.digest.as_str());
    assert_eq!(deleted[0]["deleted_by"]["username"], "root");
    assert!(deleted[0]["restorable_until"].is_string());
    let (status, body) = ctx.restore(rid, "a", &[]);
    assert_eq!(status, 201, "restore within the window: {body}");
    assert_eq!(body["digest"], a.digest.as_str(), "{body}");
    assert_eq!(body["name"], "a");
    assert_eq!(skopeo_pull(berth, tmp.path(), repo, "a"), a.digest);
    assert!(ctx.deleted_tags(rid).is_empty());

    // Deleted again, over /v2 this time (a tag delete), and left alone.
    let token = ctx.bearer(repo);
    let resp = ctx
        .v2(&token, Method::DELETE, repo, "manifests/a")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let h = history(&ctx, rid, "a");
    let actions: Vec<&str> = h.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["deleted", "restored", "deleted", "pushed"],
        "{h:?}"
    );
    assert!(h.iter().all(|(_, d, _)| *d == a.digest), "{h:?}");
    assert_eq!(
        h[0].2, "user:root",
        "a /v2 delete with root's password: {h:?}"
    );
    assert_eq!(h[1].2, "personal_access_token:root", "{h:?}");

    // Past the window: the manifest and its own layer are gone from storage; the
    // shared layer and b stay.
    let storage = support::Storage::of(&berth.data_dir());
    let own: BTreeSet<String> = a
        .blob_digests()
        .difference(&b.blob_digests())
        .cloned()
        .collect();
    assert_eq!(own.len(), 2, "a's config and top layer are its own");
    eventually(WAIT, "GC to free a's manifest and its own blobs", || {
        let (status, _) = ctx.manifest(&token, Method::GET, repo, &a.digest);
        (status == 404 && own.iter().all(|d| !storage.has_blob(d))).then_some(())
    });
    for d in b.blob_digests() {
        assert!(
            storage.has_blob(&d),
            "blob {d} of the tagged image b was freed"
        );
    }
    assert_eq!(skopeo_pull(berth, tmp.path(), repo, "b"), b.digest);
    let (status, body) = ctx.restore(rid, "a", &[]);
    assert_eq!(status, 410, "restore past the window: {body}");
    assert!(body["message"].as_str().unwrap().contains("gone"), "{body}");
    assert!(ctx.deleted_tags(rid).is_empty());
}

#[test]
fn restore_within_the_window_then_storage_freed_after_it() {
    let berth = Berth::start_with(&[], WINDOW);
    restore_within_the_window_then_freed_after_it(&berth);
}

/// One counter or gauge of `/metrics` (0 when it has not been written yet).
fn metric(ctx: &Ctx, name: &str) -> u64 {
    let text = ctx
        .http
        .get(format!("{}/metrics", ctx.berth.url))
        .send()
        .expect("metrics")
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

/// Past `tag_history.retention` (and the undo window) a deleted tag's history is
/// pruned, while a live tag keeps its rows; the GC counters count what was freed.
#[test]
fn history_past_its_retention_is_pruned_and_gc_counts_what_it_frees() {
    let berth = Berth::start_with(
        &[],
        &[
            ("BERTH_GC_REVIEW_DELAY", "4s"),
            ("BERTH_TAG_HISTORY_RETENTION", "1s"),
        ],
    );
    let ctx = Ctx::new(&berth, "prune/proj");
    let repo = "prune/proj/app";
    let token = ctx.bearer(repo);
    let a = Image::new("2024-01-01T00:00:00Z", vec![random_layer(20 * 1024)]);
    let b = Image::new("2024-01-01T00:00:00Z", vec![random_layer(10 * 1024)]);
    ctx.push(&token, repo, &a, "a");
    ctx.push(&token, repo, &b, "b");
    let rid = ctx.repo_id(repo);
    assert_eq!(metric(&ctx, "berth_gc_manifests_deleted_total"), 0);

    ctx.delete_tag(rid, "a");
    assert_eq!(history(&ctx, rid, "a").len(), 2, "pushed, then deleted");
    eventually(WAIT, "the deleted tag's history to be pruned", || {
        // A tag with no history left is unknown to the history endpoint.
        let (status, _) = ctx.call(ctx.api(
            Method::GET,
            &format!(
                "/projects/{}/registry/repositories/{rid}/tags/a/history",
                ctx.pid
            ),
        ));
        (status == 404 && ctx.deleted_tags(rid).is_empty()).then_some(())
    });
    let b_history = history(&ctx, rid, "b");
    assert_eq!(
        b_history.len(),
        1,
        "a live tag keeps its history: {b_history:?}"
    );
    assert_eq!(b_history[0].0, "pushed");

    // GC freed a's manifest, config and layer (they were a's own), and said so.
    let (status, _) = ctx.manifest(&token, Method::GET, repo, &a.digest);
    assert_eq!(status, 404);
    let own_bytes = (a.config.len() + a.layers[0].len()) as u64;
    eventually(WAIT, "the GC counters to count a's blobs", || {
        (metric(&ctx, "berth_gc_blobs_deleted_total") >= 2).then_some(())
    });
    assert!(metric(&ctx, "berth_gc_manifests_deleted_total") >= 1);
    let freed = metric(&ctx, "berth_gc_bytes_freed_total");
    assert!(
        freed >= own_bytes,
        "{freed} bytes freed, a's own blobs are {own_bytes}"
    );
    assert_eq!(ctx.manifest(&token, Method::GET, repo, "b").0, 200);
}

/// The same on three nodes sharing PostgreSQL and S3 (each node's GC reviews; the
/// undo window is in the review's query, so every node keeps it).
#[test]
fn restore_within_the_window_then_storage_freed_after_it_on_three_nodes() {
    let Some(berth) = Berth::start_nodes(3, &[], WINDOW) else {
        return;
    };
    restore_within_the_window_then_freed_after_it(&berth);
}

// ---------------------------------------------------------------------------
// 2. A cleanup run of 1,000 tags undone with one call
// ---------------------------------------------------------------------------

#[test]
fn a_cleanup_run_of_a_thousand_tags_is_undone_with_one_call() {
    let berth = Berth::start_with(
        &[],
        &[(
            "BERTH_CONTAINER_REGISTRY_CLEANUP_TAGS_SERVICE_MAX_LIST_SIZE",
            "5000",
        )],
    );
    let ctx = Ctx::new(&berth, "undo/proj");
    let repo = "undo/proj/app";
    let token = ctx.bearer(repo);
    let images: Vec<Image> = (0..4)
        .map(|_| Image::new("2024-01-01T00:00:00Z", vec![random_layer(2048)]))
        .collect();
    const N: usize = 1000;
    let names: Vec<String> = (0..N).map(|i| format!("t{i:04}")).collect();
    for (i, name) in names.iter().enumerate() {
        let image = &images[i % images.len()];
        if i < images.len() {
            ctx.push(&token, repo, image, name);
        } else {
            ctx.put_manifest(&token, repo, image, name);
        }
    }
    // Pushed last: the one tag keep_n keeps.
    ctx.put_manifest(&token, repo, &images[0], "zz-newest");
    let rid = ctx.repo_id(repo);
    let (status, body) = ctx.call(
        ctx.api(Method::PUT, &format!("/projects/{}", ctx.pid))
            .json(&json!({"container_expiration_policy_attributes": {
                "enabled": true, "cadence": "1d", "keep_n": 1, "older_than": null,
                "name_regex": ".*"}})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = ctx.call(ctx.api(
        Method::POST,
        &format!("/projects/{}/registry/cleanup_run", ctx.pid),
    ));
    assert_eq!(status, 202, "{body}");
    eventually(WAIT, "the policy run to delete the 1,000 tags", || {
        let r = ctx.get(&format!("/registry/repositories/{rid}?tags_count=true"));
        (r["tags_count"] == 1 && r["expiration_policy_cleanup_status"] == "cleanup_unscheduled")
            .then_some(())
    });
    let log = ctx.get(&format!("/projects/{}/registry/cleanup_log", ctx.pid));
    let log = log.as_array().unwrap();
    let run = log[0]["cleanup_run_id"]
        .as_i64()
        .expect("the log names the run");
    assert!(log.iter().all(|e| e["cleanup_run_id"] == run), "one run");
    let (status, _) = ctx.manifest(&token, Method::HEAD, repo, "t0000");
    assert_eq!(status, 404);

    // Someone pushes one of them again meanwhile: the undo leaves it.
    ctx.put_manifest(&token, repo, &images[3], "t0001");
    let started = Instant::now();
    let (status, body) = ctx.call(ctx.api(
        Method::POST,
        &format!("/projects/{}/registry/cleanup_runs/{run}/restore", ctx.pid),
    ));
    eprintln!("undid the run in {:?}", started.elapsed());
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["restored"], (N - 1) as u64, "{body}");
    assert_eq!(body["skipped"], 1, "{body}");
    assert_eq!(body["gone"], 0, "{body}");
    for (i, name) in names.iter().enumerate() {
        let want = if name == "t0001" {
            &images[3].digest
        } else {
            &images[i % images.len()].digest
        };
        let (status, digest) = ctx.manifest(&token, Method::HEAD, repo, name);
        assert_eq!((status, &digest), (200, want), "{name}");
    }
    let r = ctx.get(&format!("/registry/repositories/{rid}?tags_count=true"));
    assert_eq!(r["tags_count"], (N + 1) as u64);
    // An unknown run (or another project's) is not found.
    let (status, _) = ctx.call(ctx.api(
        Method::POST,
        &format!(
            "/projects/{}/registry/cleanup_runs/{}/restore",
            ctx.pid,
            run + 1000
        ),
    ));
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------------------
// 3. A restore racing the GC of the same manifest
// ---------------------------------------------------------------------------

/// Many rounds, on several repositories at once: push an image, delete its tag, and
/// restore it at a random moment around the end of a short window, while the GC
/// reviews. Every restore either succeeds (and the tag then resolves, with every blob,
/// now and after GC has gone over it again) or answers 410 (and the tag stays gone);
/// never a tag pointing at a missing manifest.
#[test]
fn restore_racing_gc_never_leaves_a_dangling_tag() {
    // Long enough that an image's blobs outlive the push of its manifest (a blob
    // nothing references yet is garbage after the delay), on PostgreSQL too.
    let berth = Berth::start_with(&[], &[("BERTH_GC_REVIEW_DELAY", "2s")]);
    let ctx = Ctx::new(&berth, "race/proj");
    const THREADS: usize = 4;
    const ROUNDS: usize = 20;
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (ctx, outcomes) = (&ctx, &outcomes);
            s.spawn(move || {
                let repo = format!("race/proj/r{t}");
                let mut token = ctx.bearer(&repo);
                let mut fetched = Instant::now();
                let mut rid = None;
                for round in 0..ROUNDS {
                    if fetched.elapsed() > Duration::from_secs(120) {
                        token = ctx.bearer(&repo);
                        fetched = Instant::now();
                    }
                    let image = Image::new("2024-01-01T00:00:00Z", vec![random_layer(1024)]);
                    let tag = format!("t{round}");
                    ctx.push(&token, &repo, &image, &tag);
                    let id = *rid.get_or_insert_with(|| ctx.repo_id(&repo));
                    ctx.delete_tag(id, &tag);
                    // Not a wait for anything: restores are spread over the window's
                    // end (2 s) and GC's rounds (1 s apart), so some meet the review
                    // of their manifest.
                    let jitter = rand::rng().random_range(1500..3000);
                    std::thread::sleep(Duration::from_millis(jitter));
                    let (status, body) = ctx.restore(id, &tag, &[]);
                    let (now, digest) = ctx.manifest(&token, Method::GET, &repo, &tag);
                    match status {
                        201 => assert_eq!((now, &digest), (200, &image.digest), "{repo}:{tag}"),
                        410 => assert_eq!(now, 404, "{repo}:{tag} after a 410"),
                        other => panic!("restore of {repo}:{tag}: {other} {body}"),
                    }
                    outcomes
                        .lock()
                        .unwrap()
                        .push((repo.clone(), tag, image, status));
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let restored = outcomes.iter().filter(|o| o.3 == 201).count();
    eprintln!(
        "{restored} restored, {} gone, of {}",
        outcomes.len() - restored,
        outcomes.len()
    );
    // Let GC go over everything again (its manifest review queue empty), then check
    // that each restored tag still resolves, with all its blobs.
    eventually(WAIT, "GC to review every queued manifest", || {
        let text = ctx
            .http
            .get(format!("{}/metrics", berth.url))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .any(|l| l.starts_with("berth_gc_review_queue_depth{queue=\"manifests\"} 0"))
            .then_some(())
    });
    let token = |repo: &str| ctx.bearer(repo);
    let storage = support::Storage::of(&berth.data_dir());
    for (repo, tag, image, status) in &outcomes {
        if *status != 201 {
            continue;
        }
        let (s, d) = ctx.manifest(&token(repo), Method::GET, repo, tag);
        assert_eq!((s, &d), (200, &image.digest), "{repo}:{tag} restored");
        for b in image.blob_digests() {
            assert!(storage.has_blob(&b), "blob {b} of restored {repo}:{tag}");
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Reproducible builds: config `created` of 1980
// ---------------------------------------------------------------------------

/// Images whose config says 1980-01-01 (ko, Bazel, Nix, buildpacks): a policy with
/// `older_than: 7d` deletes none of them (they were pushed just now), and `keep_n`
/// keeps the most recently pushed. The tags API shows both dates.
#[test]
fn a_policy_over_1980_images_deletes_by_push_time() {
    let berth = Berth::start();
    let ctx = Ctx::new(&berth, "repro/proj");
    let repo = "repro/proj/app";
    let token = ctx.bearer(repo);
    let names = ["p1", "p2", "p3", "p4", "p5"];
    for name in names {
        let image = Image::new("1980-01-01T00:00:00Z", vec![random_layer(1024)]);
        ctx.push(&token, repo, &image, name);
    }
    let rid = ctx.repo_id(repo);
    let mut pushed = Vec::new();
    for name in names {
        let t = ctx.get(&format!(
            "/projects/{}/registry/repositories/{rid}/tags/{name}",
            ctx.pid
        ));
        assert_eq!(t["created_at"], "1980-01-01T00:00:00.000Z", "{t}");
        let at = humantime::parse_rfc3339(t["pushed_at"].as_str().unwrap()).unwrap();
        assert!(
            at.elapsed().unwrap_or_default() < Duration::from_secs(600),
            "pushed just now: {t}"
        );
        pushed.push(at);
    }
    assert!(
        pushed.windows(2).all(|w| w[0] < w[1]),
        "pushed one after the other: {pushed:?}"
    );
    let preview = |query: &[(&str, &str)]| {
        let (status, body) = ctx.call(
            ctx.api(
                Method::GET,
                &format!("/projects/{}/registry/cleanup_preview", ctx.pid),
            )
            .query(query),
        );
        assert_eq!(status, 200, "{body}");
        let doomed: BTreeSet<String> = body["repositories"][0]["delete"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        doomed
    };
    assert!(
        preview(&[("name_regex", ".*"), ("keep_n", "1"), ("older_than", "7d")]).is_empty(),
        "nothing was pushed 7 days ago"
    );
    let (status, body) = ctx.call(
        ctx.api(Method::PUT, &format!("/projects/{}", ctx.pid))
            .json(&json!({"container_expiration_policy_attributes": {
                "enabled": true, "cadence": "1d", "keep_n": 1, "older_than": null,
                "name_regex": ".*"}})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = ctx.call(ctx.api(
        Method::POST,
        &format!("/projects/{}/registry/cleanup_run", ctx.pid),
    ));
    assert_eq!(status, 202, "{body}");
    let tags = eventually(WAIT, "the run to delete all but the latest push", || {
        let r = ctx.get(&format!("/registry/repositories/{rid}?tags=true"));
        let tags: BTreeSet<String> = r["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        (tags.len() == 1 && r["expiration_policy_cleanup_status"] == "cleanup_unscheduled")
            .then_some(tags)
    });
    assert_eq!(tags, BTreeSet::from(["p5".to_string()]));
}

// ---------------------------------------------------------------------------
// 5. `berth tag history|restore` for administrators
// ---------------------------------------------------------------------------

#[test]
fn berth_tag_history_and_restore_from_the_shell() {
    let berth = Berth::start();
    let ctx = Ctx::new(&berth, "cli/proj");
    let repo = "cli/proj/app";
    let token = ctx.bearer(repo);
    let image = Image::new("2024-01-01T00:00:00Z", vec![random_layer(1024)]);
    ctx.push(&token, repo, &image, "v1");
    let rid = ctx.repo_id(repo);
    ctx.delete_tag(rid, "v1");

    let out = berth.tag_cmd(&["history", repo, "v1"]);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0][1..3], ["deleted", image.digest.as_str()], "{out}");
    assert_eq!(lines[0][4], "root (personal_access_token)", "{out}");
    assert_eq!(lines[1][1..3], ["pushed", image.digest.as_str()], "{out}");
    assert_eq!(lines[1][4], "root (user)", "{out}");

    let out = berth.tag_cmd(&["restore", repo, "v1"]);
    assert!(
        out.contains(&format!("restored on {}", image.digest)),
        "{out}"
    );
    assert_eq!(ctx.manifest(&token, Method::HEAD, repo, "v1").0, 200);
    let out = berth.tag_cmd(&["history", repo, "v1"]);
    assert!(
        out.lines().next().unwrap().contains("\trestored\t"),
        "{out}"
    );
    assert!(out.lines().next().unwrap().contains("\tcommand\t"), "{out}");

    // A bulk deletion is a cleanup run; the shell undoes it by its id.
    let (status, body) = ctx.call(ctx.api(
        Method::DELETE,
        &format!(
            "/projects/{}/registry/repositories/{rid}/tags?name_regex_delete=v.%2A",
            ctx.pid
        ),
    ));
    assert_eq!(status, 202, "{body}");
    let run = eventually(WAIT, "the bulk deletion", || {
        let log = ctx.get(&format!("/projects/{}/registry/cleanup_log", ctx.pid));
        log.as_array()?.first()?["cleanup_run_id"].as_i64()
    });
    let out = berth.tag_cmd(&["restore", "--run", &run.to_string()]);
    assert!(
        out.contains(&format!("cleanup run {run}: 1 restored, 0 gone, 0 skipped")),
        "{out}"
    );
    assert_eq!(ctx.manifest(&token, Method::HEAD, repo, "v1").0, 200);
}
