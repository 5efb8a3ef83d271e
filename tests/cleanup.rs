//! End-to-end tests of cleanup policies (MISSION.md §5, the seed's "清理策略" section):
//! the real `berth` binary, real HTTP. Images are pushed through the registry API with
//! configs whose `created` time is chosen by the test; policies order and age tags by
//! their push time (as GitLab does), which no client can choose, so each tag pushed
//! with such an image is then said to have been pushed at that same time
//! ([`support::Berth::set_push_time`]), and every tag has a controlled date;
//! policies are saved through `PUT /projects/:id`
//! (`container_expiration_policy_attributes`), limits through
//! `PUT /application/settings` or `BERTH_*` variables, runs are started with Berth's
//! `POST /projects/:id/registry/cleanup_run` (or `berth cleanup`) and observed through
//! the repository JSON (`expiration_policy_cleanup_status`, `cleanup_policy_started_at`),
//! the tag lists, and the cleanup log. Every expected tag set below is worked out by
//! hand from the nine steps; none is computed by re-running the engine.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::{json, Value};

use support::{eventually, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const DAY: u64 = 24 * 3600;
/// How long any background run may take before a test gives up.
const WAIT: Duration = Duration::from_secs(60);

const CAPACITY_ENV: &str = "BERTH_CONTAINER_REGISTRY_EXPIRATION_POLICIES_WORKER_CAPACITY";
const TIMEOUT_ENV: &str = "BERTH_CONTAINER_REGISTRY_DELETE_TAGS_SERVICE_TIMEOUT";
const MAX_LIST_ENV: &str = "BERTH_CONTAINER_REGISTRY_CLEANUP_TAGS_SERVICE_MAX_LIST_SIZE";

const CAPACITY: &str = "container_registry_expiration_policies_worker_capacity";
const TIMEOUT: &str = "container_registry_delete_tags_service_timeout";
const MAX_LIST: &str = "container_registry_cleanup_tags_service_max_list_size";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A running server, root's `api` personal access token, and registry tokens.
struct Ctx {
    berth: Berth,
    http: Client,
    pat: String,
    /// Registry bearer tokens by repository, with the time they were fetched.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The config `created` time of each image built by [`Ctx::image`], by manifest
    /// digest: a tag pushed with one is said to have been pushed then.
    created: Mutex<HashMap<String, SystemTime>>,
}

fn root_pat(berth: &Berth) -> String {
    berth.admin(&[
        "token", "create", "--user", "root", "--name", "t", "--scopes", "api",
    ])
}

impl Ctx {
    fn start() -> Ctx {
        Ctx::start_with(&[])
    }

    fn start_with(envs: &[(&str, &str)]) -> Ctx {
        let berth = Berth::start_with(&[], envs);
        let pat = root_pat(&berth);
        Ctx::on(berth, pat)
    }

    fn on(berth: Berth, pat: String) -> Ctx {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");
        Ctx {
            berth,
            http,
            pat,
            tokens: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
        }
    }

    /// Kill the server (as a crash would) and start it again on the same data.
    fn restart(self, envs: &[(&str, &str)]) -> Ctx {
        let Ctx { berth, pat, .. } = self;
        let dir = berth.stop();
        Ctx::on(Berth::start_in(dir, &[], envs), pat)
    }

    // ----- REST API -----

    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v4{path}", self.berth.url))
            .header("PRIVATE-TOKEN", &self.pat)
    }

    fn call(&self, rb: RequestBuilder) -> (u16, Value) {
        let req = rb.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let resp = self
            .http
            .execute(req)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// GET that must answer 200; the body.
    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(self.api(Method::GET, path));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn project_id(&self, full_path: &str) -> i64 {
        let v = self.get(&format!("/projects/{}", full_path.replace('/', "%2F")));
        v["id"].as_i64().expect("project id")
    }

    /// Create a private project; returns its id.
    fn project(&self, full_path: &str) -> i64 {
        self.berth.project(full_path, "private");
        self.project_id(full_path)
    }

    /// `PUT /projects/:id` with `container_expiration_policy_attributes`.
    fn put_policy(&self, pid: i64, attrs: Value) -> (u16, Value) {
        self.call(
            self.api(Method::PUT, &format!("/projects/{pid}"))
                .json(&json!({ "container_expiration_policy_attributes": attrs })),
        )
    }

    fn save_policy(&self, pid: i64, attrs: Value) -> Value {
        let (status, body) = self.put_policy(pid, attrs.clone());
        assert_eq!(status, 200, "saving policy {attrs}: {body}");
        body["container_expiration_policy"].clone()
    }

    fn policy(&self, pid: i64) -> Value {
        self.get(&format!("/projects/{pid}"))["container_expiration_policy"].clone()
    }

    fn run_now(&self, pid: i64) -> (u16, Value) {
        self.call(self.api(
            Method::POST,
            &format!("/projects/{pid}/registry/cleanup_run"),
        ))
    }

    fn start_run(&self, pid: i64) {
        let (status, body) = self.run_now(pid);
        assert_eq!(status, 202, "cleanup_run of project {pid}: {body}");
    }

    fn cleanup_log(&self, pid: i64) -> Vec<Value> {
        self.get(&format!("/projects/{pid}/registry/cleanup_log"))
            .as_array()
            .expect("log is an array")
            .clone()
    }

    /// The log entries of one repository, as tag -> (digest, reason); each tag once.
    fn log_of(&self, pid: i64, rid: i64) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for e in self.cleanup_log(pid) {
            if e["repository_id"].as_i64() != Some(rid) {
                continue;
            }
            let tag = e["tag"].as_str().expect("tag").to_string();
            let entry = (
                e["digest"].as_str().expect("digest").to_string(),
                e["reason"].as_str().expect("reason").to_string(),
            );
            assert!(
                out.insert(tag.clone(), entry).is_none(),
                "tag {tag} logged twice for repository {rid}"
            );
        }
        out
    }

    fn preview(&self, pid: i64, query: &[(&str, &str)]) -> (u16, Value) {
        self.call(
            self.api(
                Method::GET,
                &format!("/projects/{pid}/registry/cleanup_preview"),
            )
            .query(query),
        )
    }

    fn settings(&self) -> Value {
        self.get("/application/settings")
    }

    fn put_settings(&self, body: Value) -> (u16, Value) {
        self.call(self.api(Method::PUT, "/application/settings").json(&body))
    }

    /// The id of repository `path` of project `pid`.
    fn repo_id(&self, pid: i64, path: &str) -> i64 {
        let list = self.get(&format!(
            "/projects/{pid}/registry/repositories?per_page=100"
        ));
        list.as_array()
            .expect("repository list")
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no repository {path} in {list}"))["id"]
            .as_i64()
            .expect("id")
    }

    /// The repository JSON with `tags_count` (no tag list).
    fn repository(&self, rid: i64) -> Value {
        self.get(&format!("/registry/repositories/{rid}?tags_count=true"))
    }

    fn tags(&self, rid: i64) -> BTreeSet<String> {
        let v = self.get(&format!("/registry/repositories/{rid}?tags=true"));
        v["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no tags in {v}"))
            .iter()
            .map(|t| t["name"].as_str().expect("tag name").to_string())
            .collect()
    }

    /// Wait until a run over `rid` is over: the status is back to
    /// `cleanup_unscheduled` and the run's start is recorded. Returns the repository.
    fn wait_done(&self, rid: i64) -> Value {
        eventually(
            WAIT,
            &format!("cleanup of repository {rid} to finish"),
            || {
                let r = self.repository(rid);
                (r["expiration_policy_cleanup_status"] == "cleanup_unscheduled"
                    && r["cleanup_policy_started_at"].is_string())
                .then_some(r)
            },
        )
    }

    // ----- registry -----

    /// A `pull,push` bearer token for `repo` from `/jwt/auth`, with root's password.
    fn bearer(&self, repo: &str) -> String {
        if let Some((t, at)) = self.tokens.lock().unwrap().get(repo) {
            if at.elapsed() < Duration::from_secs(120) {
                return t.clone();
            }
        }
        let resp = self.berth.token(
            Some(("root", ROOT_PASSWORD)),
            &[&format!("repository:{repo}:pull,push")],
        );
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("token JSON");
        assert_eq!(status, 200, "token for {repo}: {body}");
        let token = body["token"].as_str().expect("token").to_string();
        self.tokens
            .lock()
            .unwrap()
            .insert(repo.to_string(), (token.clone(), Instant::now()));
        token
    }

    fn v2(&self, method: Method, repo: &str, rest: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/v2/{repo}/{rest}", self.berth.url))
            .bearer_auth(self.bearer(repo))
    }

    /// Monolithic blob upload; returns the digest.
    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(data));
        let (status, body) = self.call(
            self.v2(
                Method::POST,
                repo,
                &format!("blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        );
        assert_eq!(status, 201, "blob upload to {repo}: {body}");
        digest
    }

    /// Push a config (with `created` = `created`) and a layer; returns the manifest
    /// (not yet pushed) and its digest.
    fn image(&self, repo: &str, created: SystemTime, seed: &str) -> (Vec<u8>, String) {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": rfc3339(created),
            "config": {"Labels": {"seed": seed}},
        }))
        .unwrap();
        let layer = format!("layer of {repo}").into_bytes();
        let c = self.push_blob(repo, &config);
        let l = self.push_blob(repo, &layer);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": l, "size": layer.len()}],
        }))
        .unwrap();
        let digest = format!("sha256:{}", sha256_hex(&manifest));
        self.created.lock().unwrap().insert(digest.clone(), created);
        (manifest, digest)
    }

    /// Push a manifest under `reference`; a tag of an image built by [`Ctx::image`]
    /// counts as pushed when that image was created.
    fn put_manifest(&self, repo: &str, reference: &str, manifest: &[u8]) {
        self.put_manifest_now(repo, reference, manifest);
        let digest = format!("sha256:{}", sha256_hex(manifest));
        let created = self.created.lock().unwrap().get(&digest).copied();
        if let Some(at) = created {
            let ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
            assert_eq!(self.berth.set_push_time(repo, reference, ms), 1);
        }
    }

    /// Push a manifest under `reference`, pushed now.
    fn put_manifest_now(&self, repo: &str, reference: &str, manifest: &[u8]) {
        let (status, body) = self.call(
            self.v2(Method::PUT, repo, &format!("manifests/{reference}"))
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.to_vec()),
        );
        assert_eq!(status, 201, "PUT {repo}:{reference}: {body}");
    }

    /// Push an image created at `created` under `tag`; returns its digest.
    fn push(&self, repo: &str, tag: &str, created: SystemTime) -> String {
        let (manifest, digest) = self.image(repo, created, tag);
        self.put_manifest(repo, tag, &manifest);
        digest
    }

    /// Push `tags` (name, age in days); the n-th tag is also n minutes older, so no
    /// two tags of one call share a creation time. Returns tag -> digest.
    fn push_aged(&self, repo: &str, tags: &[(&str, u64)]) -> BTreeMap<String, String> {
        tags.iter()
            .enumerate()
            .map(|(i, (name, days))| {
                (
                    name.to_string(),
                    self.push(repo, name, ago(*days, i as u64)),
                )
            })
            .collect()
    }

    /// `GET /v2/<repo>/manifests/<reference>`: the status.
    fn manifest_status(&self, repo: &str, reference: &str) -> u16 {
        self.call(
            self.v2(Method::GET, repo, &format!("manifests/{reference}"))
                .header("Accept", OCI_MANIFEST),
        )
        .0
    }

    /// Run `berth cleanup ARGS` against this server's data directory.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("cleanup")
            .arg("--data-dir")
            .arg(self.berth.data_dir())
            .args(args)
            .current_dir(self.berth.data.path())
            .output()
            .expect("run berth cleanup");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Now minus `days` days and `minutes` minutes.
fn ago(days: u64, minutes: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(days * DAY + minutes * 60)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse_time(v: &Value) -> SystemTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a timestamp"));
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("timestamp {s}: {e}"))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn names_of(tags: &BTreeMap<String, String>) -> BTreeSet<String> {
    tags.keys().cloned().collect()
}

/// `a` within `slack` of `b`.
fn close(a: SystemTime, b: SystemTime, slack: Duration) -> bool {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    ms(a).abs_diff(ms(b)) <= slack.as_millis()
}

/// Whether a 400 body names `field`: as a key of the `message` object (plain or
/// prefixed like `container_expiration_policy.name_regex`), or in a message string.
fn names_field(body: &Value, field: &str) -> bool {
    match &body["message"] {
        Value::Object(m) => m
            .keys()
            .any(|k| k == field || k.ends_with(&format!(".{field}"))),
        Value::String(s) => s.contains(field),
        _ => body.to_string().contains(field),
    }
}

// ---------------------------------------------------------------------------
// 1. A scheduled run, end to end
// ---------------------------------------------------------------------------

/// Tags of repository `alpha` of every project in the scheduled-run test (name, age
/// in days). `v` alone and `xv9` check anchoring: `v.+` matches neither.
const ALPHA: &[(&str, u64)] = &[
    ("latest", 200),
    ("v1", 120),
    ("v2", 100),
    ("v3", 95),
    ("v4", 60),
    ("v5", 40),
    ("v6", 20),
    ("v7", 10),
    ("v8", 1),
    ("main", 150),
    ("release-1", 130),
    ("stable", 300),
    ("xv9", 200),
    ("v", 200),
];

/// The same names in `beta`, aged differently (and `latest` young).
const BETA: &[(&str, u64)] = &[
    ("latest", 5),
    ("v1", 1),
    ("v2", 3),
    ("v3", 8),
    ("v4", 15),
    ("v5", 31),
    ("v6", 45),
    ("v7", 91),
    ("v8", 365),
    ("main", 2),
    ("release-1", 400),
    ("stable", 10),
    ("xv9", 1),
    ("v", 50),
];

struct Case {
    project: &'static str,
    policy: Value,
    /// Expected deletions in alpha and beta.
    alpha: &'static [&'static str],
    beta: &'static [&'static str],
}

#[test]
fn scheduled_run_deletes_what_the_nine_steps_say() {
    let ctx = Ctx::start();
    let cases = [
        // `v.+`: v1..v8 are candidates (not `v`, not `xv9`); `stable` does not match
        // anyway. alpha newest first: v8(1) v7(10) v6(20) v5(40) v4(60) v3(95) v2(100)
        // v1(120): keep v8, the rest are older than 7d.
        // beta: v1(1) v2(3) v3(8) v4(15) v5(31) v6(45) v7(91) v8(365): keep v1, v2 is
        // newer than 7d, v3.. go.
        Case {
            project: "case/a",
            policy: json!({"enabled": true, "cadence": "1d", "keep_n": 1,
                "older_than": "7d", "name_regex": "v.+", "name_regex_keep": "stable"}),
            alpha: &["v1", "v2", "v3", "v4", "v5", "v6", "v7"],
            beta: &["v3", "v4", "v5", "v6", "v7", "v8"],
        },
        // `.*` keeping main and stable: alpha candidates newest first v8(1) v7(10)
        // v6(20) v5(40) v4(60) | v3(95) v2(100) v1(120) release-1(130) xv9(200)
        // v(200): keep five, the rest are older than 14d. `latest` (200d) stays.
        // beta: v1(1) xv9(1, 12 minutes older) v2(3) v3(8) v4(15) | v5(31) v(50)
        // v6(45) v7(91) v8(365) release-1(400): all after the fifth older than 14d.
        Case {
            project: "case/b",
            policy: json!({"enabled": true, "cadence": "1d", "keep_n": 5,
                "older_than": "14d", "name_regex": ".*",
                "name_regex_keep": "(?:main|stable)"}),
            alpha: &["v3", "v2", "v1", "release-1", "xv9", "v"],
            beta: &["v5", "v6", "v7", "v8", "release-1", "v"],
        },
        // The seed's combined regex as the delete regex, v5..v8 kept by regex:
        // alpha candidates newest first v4(60) v3(95) v2(100) v1(120) release-1(130)
        // main(150); keep v4, all the others are older than 90d. beta: v1(1) main(2)
        // v2(3) v3(8) v4(15) release-1(400); keep v1, only release-1 is older.
        Case {
            project: "case/c",
            policy: json!({"enabled": true, "cadence": "1d", "keep_n": 1,
                "older_than": "90d", "name_regex": "(?:v.+|main|release.*)",
                "name_regex_keep": "v[5-8]"}),
            alpha: &["v1", "v2", "v3", "main", "release-1"],
            beta: &["release-1"],
        },
    ];

    // Push everything: each case project gets alpha and beta; `other/proj` gets the
    // same tags and an enabled `.*` policy that is not due.
    struct Pushed {
        pid: i64,
        repos: Vec<(String, i64, BTreeMap<String, String>)>,
    }
    let mut pushed = Vec::new();
    for project in cases.iter().map(|c| c.project).chain(["other/proj"]) {
        let pid = ctx.project(project);
        let mut repos = Vec::new();
        for (name, tags) in [("alpha", ALPHA), ("beta", BETA)] {
            let repo = format!("{project}/{name}");
            let digests = ctx.push_aged(&repo, tags);
            let rid = ctx.repo_id(pid, &repo);
            repos.push((repo, rid, digests));
        }
        pushed.push(Pushed { pid, repos });
    }
    let other = pushed.pop().unwrap();
    let saved = ctx.save_policy(
        other.pid,
        json!({"enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": ".*"}),
    );
    assert!(saved["next_run_at"].is_string(), "{saved}");

    for (case, p) in cases.iter().zip(&pushed) {
        let saved = ctx.save_policy(p.pid, case.policy.clone());
        assert_eq!(saved["enabled"], true, "{saved}");
        assert_eq!(saved["name_regex"], case.policy["name_regex"], "{saved}");
        for (_, rid, _) in &p.repos {
            let r = ctx.repository(*rid);
            assert_eq!(
                r["expiration_policy_cleanup_status"], "cleanup_unscheduled",
                "before any run: {r}"
            );
            assert!(r["cleanup_policy_started_at"].is_null(), "{r}");
        }
    }

    let before = SystemTime::now();
    for p in &pushed {
        ctx.start_run(p.pid);
    }
    let mut started = Vec::new();
    for p in &pushed {
        for (_, rid, _) in &p.repos {
            started.push(ctx.wait_done(*rid));
        }
    }
    let after = SystemTime::now();
    eprintln!(
        "the three runs took {:?}",
        after.duration_since(before).unwrap_or_default()
    );

    for r in &started {
        let at = parse_time(&r["cleanup_policy_started_at"]);
        assert!(
            at >= before - Duration::from_secs(1) && at <= after + Duration::from_secs(1),
            "cleanup_policy_started_at {} is not within the run: {r}",
            r["cleanup_policy_started_at"]
        );
    }

    for (case, p) in cases.iter().zip(&pushed) {
        // The next run is one cadence (1d) after this one.
        let policy = ctx.policy(p.pid);
        let next = parse_time(&policy["next_run_at"]);
        let started_at = parse_time(&ctx.repository(p.repos[0].1)["cleanup_policy_started_at"]);
        assert!(
            close(
                next,
                started_at + Duration::from_secs(DAY),
                Duration::from_secs(60)
            ),
            "{}: next_run_at {} is not 1d after the run started ({:?}): {policy}",
            case.project,
            policy["next_run_at"],
            humantime::format_rfc3339_millis(started_at)
        );
        assert_eq!(policy["enabled"], true);

        for ((repo, rid, digests), expected) in p.repos.iter().zip([case.alpha, case.beta]) {
            let doomed = set(expected);
            let all = names_of(digests);
            let kept: BTreeSet<String> = all.difference(&doomed).cloned().collect();
            assert!(kept.contains("latest"), "latest is never deleted");
            assert_eq!(
                ctx.tags(*rid),
                kept,
                "{repo} under {}: remaining tags",
                case.policy
            );
            // The log names every deleted tag, with its digest and reason `policy`.
            let log = ctx.log_of(p.pid, *rid);
            assert_eq!(
                log.keys().cloned().collect::<BTreeSet<_>>(),
                doomed,
                "{repo}: cleanup log"
            );
            for (tag, (digest, reason)) in &log {
                assert_eq!(reason, "policy", "{repo}:{tag}");
                assert_eq!(digest, &digests[tag], "{repo}:{tag} logged digest");
            }
            // Deleting tags deletes no manifest: every deleted tag's image is still
            // reachable by digest, but not by the tag.
            for tag in &doomed {
                assert_eq!(
                    ctx.manifest_status(repo, &digests[tag]),
                    200,
                    "{repo}@{} (was {tag})",
                    digests[tag]
                );
                assert_eq!(ctx.manifest_status(repo, tag), 404, "{repo}:{tag}");
            }
            for tag in &kept {
                assert_eq!(ctx.manifest_status(repo, tag), 200, "{repo}:{tag}");
            }
        }
    }

    // The other project's policy was not due: nothing of it was touched.
    for (repo, rid, digests) in &other.repos {
        assert_eq!(ctx.tags(*rid), names_of(digests), "{repo} untouched");
        let r = ctx.repository(*rid);
        assert_eq!(r["expiration_policy_cleanup_status"], "cleanup_unscheduled");
        assert!(r["cleanup_policy_started_at"].is_null(), "{r}");
    }
    assert!(ctx.cleanup_log(other.pid).is_empty());
    let policy = ctx.policy(other.pid);
    assert!(
        parse_time(&policy["next_run_at"]) > SystemTime::now() + Duration::from_secs(DAY - 3600),
        "{policy}"
    );
}

// ---------------------------------------------------------------------------
// 2. The seed's regex examples, through the preview
// ---------------------------------------------------------------------------

/// The preview of one repository: (tag -> step of deleted tags, tag -> step of kept).
type Preview = (BTreeMap<String, String>, BTreeMap<String, String>);

fn preview_of(body: &Value, rid: i64) -> Preview {
    let repo = body["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("no repositories in {body}"))
        .iter()
        .find(|r| r["id"].as_i64() == Some(rid))
        .unwrap_or_else(|| panic!("repository {rid} not in {body}"));
    let side = |key: &str| -> BTreeMap<String, String> {
        repo[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {repo}"))
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().expect("name").to_string(),
                    t["step"].as_str().expect("step").to_string(),
                )
            })
            .collect()
    };
    (side("delete"), side("keep"))
}

#[test]
fn preview_of_the_seed_regex_examples() {
    let ctx = Ctx::start();
    let pid = ctx.project("prev/proj");
    let repo = "prev/proj/app";
    let tags: &[(&str, u64)] = &[
        ("latest", 400),
        ("main", 100),
        ("xmain", 100),
        ("main-2", 100),
        ("v", 200),
        ("v1.0", 200),
        ("v1.1", 150),
        ("v2.0", 10),
        ("release-1", 120),
        ("release-2", 5),
        ("feature-x", 95),
        ("stable", 300),
    ];
    let digests = ctx.push_aged(repo, tags);
    let rid = ctx.repo_id(pid, repo);
    let all = names_of(&digests);

    let check = |query: &[(&str, &str)], delete: &[&str], steps: &[(&str, &str)]| {
        let (status, body) = ctx.preview(pid, query);
        assert_eq!(status, 200, "preview {query:?}: {body}");
        let (del, keep) = preview_of(&body, rid);
        assert_eq!(
            del.keys().cloned().collect::<BTreeSet<_>>(),
            set(delete),
            "preview {query:?}: deleted"
        );
        assert!(del.values().all(|s| s == "delete"), "{query:?}: {del:?}");
        let mut every: BTreeSet<String> = del.keys().cloned().collect();
        every.extend(keep.keys().cloned());
        assert_eq!(every, all, "{query:?}: every tag appears once");
        assert_eq!(del.len() + keep.len(), all.len(), "{query:?}");
        for (tag, step) in steps {
            let got = del.get(*tag).or(keep.get(*tag));
            assert_eq!(
                got.map(String::as_str),
                Some(*step),
                "{query:?}: step of {tag}"
            );
        }
        body
    };

    // Match every tag (the default): everything but `latest`.
    let every_but_latest: Vec<&str> = tags
        .iter()
        .map(|t| t.0)
        .filter(|t| *t != "latest")
        .collect();
    let body = check(
        &[("name_regex", ".*")],
        &every_but_latest,
        &[("latest", "latest"), ("stable", "delete")],
    );
    assert_eq!(body["repositories"].as_array().unwrap().len(), 1);
    // Tags starting with v: `v` alone is not matched (`.+` needs a character).
    check(
        &[("name_regex", "v.+")],
        &["v1.0", "v1.1", "v2.0"],
        &[
            ("latest", "latest"),
            ("v", "name_regex"),
            ("stable", "name_regex"),
            ("v2.0", "delete"),
        ],
    );
    // Only `main`: the regex is anchored at both ends.
    check(
        &[("name_regex", "main")],
        &["main"],
        &[("xmain", "name_regex"), ("main-2", "name_regex")],
    );
    // Named or starting with release.
    check(
        &[("name_regex", "release.*")],
        &["release-1", "release-2"],
        &[("main", "name_regex")],
    );
    // The newer parameter name works too.
    check(
        &[("name_regex_delete", "release.*")],
        &["release-1", "release-2"],
        &[],
    );
    // Everything except v-tags, main and releases (the seed's keep example).
    check(
        &[
            ("name_regex", ".*"),
            ("name_regex_keep", "(?:v.+|main|release.*)"),
        ],
        &["xmain", "main-2", "v", "feature-x", "stable"],
        &[
            ("main", "name_regex_keep"),
            ("v1.0", "name_regex_keep"),
            ("release-2", "name_regex_keep"),
            ("latest", "latest"),
        ],
    );
    // keep_n and older_than: newest first release-2(5) v2.0(10) feature-x(95)
    // main/xmain/main-2(100) ...: keep release-2, v2.0 is newer than 30d, the rest go.
    let older: Vec<&str> = every_but_latest
        .iter()
        .copied()
        .filter(|t| *t != "release-2" && *t != "v2.0")
        .collect();
    check(
        &[("name_regex", ".*"), ("keep_n", "1"), ("older_than", "30d")],
        &older,
        &[
            ("release-2", "keep_n"),
            ("v2.0", "older_than"),
            ("feature-x", "delete"),
            ("latest", "latest"),
        ],
    );
    // Without a query the saved policy is previewed: releases, keep 1, older than 7d.
    ctx.save_policy(
        pid,
        json!({"enabled": false, "name_regex": "release.*", "keep_n": 1,
            "older_than": "7d", "name_regex_keep": null}),
    );
    check(
        &[],
        &["release-1"],
        &[("release-2", "keep_n"), ("main", "name_regex")],
    );
    // A bad regex in the query is refused, naming the field.
    let (status, body) = ctx.preview(pid, &[("name_regex", ".*"), ("name_regex_keep", "[z-a]")]);
    assert_eq!(status, 400, "{body}");
    assert!(names_field(&body, "name_regex_keep"), "{body}");

    // A preview deletes nothing.
    assert_eq!(ctx.tags(rid), all);
    assert!(ctx.cleanup_log(pid).is_empty());
}

// ---------------------------------------------------------------------------
// 3. Limits: max tags per run, worker capacity
// ---------------------------------------------------------------------------

#[test]
fn limits_split_a_run_and_it_resumes() {
    let ctx = Ctx::start_with(&[(TIMEOUT_ENV, "120")]);

    // The settings API: the environment's value shows, the others are defaults.
    let s = ctx.settings();
    assert_eq!(s[TIMEOUT], 120, "{s}");
    assert!(s[CAPACITY].as_i64().is_some_and(|n| n >= 1), "{s}");
    assert!(s[MAX_LIST].as_i64().is_some_and(|n| n >= 1), "{s}");
    let (status, body) = ctx.put_settings(json!({ MAX_LIST: 10 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[MAX_LIST], 10, "{body}");
    let s = ctx.settings();
    assert_eq!(s[MAX_LIST], 10, "{s}");
    assert_eq!(s[TIMEOUT], 120, "unchanged: {s}");
    // Only administrators.
    ctx.berth.user("dev", "dev-password-1234");
    let dev = ctx.berth.admin(&[
        "token", "create", "--user", "dev", "--name", "t", "--scopes", "api",
    ]);
    let as_dev = |m: Method| {
        ctx.http
            .request(m, format!("{}/api/v4/application/settings", ctx.berth.url))
            .header("PRIVATE-TOKEN", &dev)
    };
    assert_eq!(ctx.call(as_dev(Method::GET)).0, 403);
    assert_eq!(
        ctx.call(as_dev(Method::PUT).json(&json!({ MAX_LIST: 5 })))
            .0,
        403
    );
    // Zero is refused and changes nothing.
    for key in [MAX_LIST, CAPACITY, TIMEOUT] {
        let (status, body) = ctx.put_settings(json!({ key: 0 }));
        assert_eq!(status, 400, "{key} = 0: {body}");
    }
    let s = ctx.settings();
    assert_eq!(s[MAX_LIST], 10, "{s}");
    assert_eq!(s[TIMEOUT], 120, "{s}");

    // 35 doomed tags, 10 per run: the run is split and resumed until all are gone.
    // (`doomed-new` is the newest and kept by keep_n 1; `keep-me` does not match.)
    let pid = ctx.project("lim/proj");
    let repo = "lim/proj/app";
    let (manifest, _) = ctx.image(repo, ago(30, 0), "old");
    let doomed: BTreeSet<String> = (0..35).map(|i| format!("doomed-{i:02}")).collect();
    for t in doomed
        .iter()
        .map(String::as_str)
        .chain(["latest", "keep-me"])
    {
        ctx.put_manifest(repo, t, &manifest);
    }
    ctx.push(repo, "doomed-new", ago(0, 0));
    let rid = ctx.repo_id(pid, repo);
    ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": "doomed-.*"}),
    );
    ctx.start_run(pid);

    let mut counts = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    let mut first_start = None;
    eventually(WAIT, "35 tags deleted in runs of 10", || {
        let r = ctx.repository(rid);
        let n = ctx.cleanup_log(pid).len();
        counts.insert(n);
        let status = r["expiration_policy_cleanup_status"]
            .as_str()
            .expect("status")
            .to_string();
        statuses.insert(status.clone());
        if first_start.is_none() && r["cleanup_policy_started_at"].is_string() {
            first_start = Some(r["cleanup_policy_started_at"].clone());
        }
        (n == 35 && status == "cleanup_unscheduled" && r["tags_count"] == 3).then_some(())
    });
    // Each turn deletes exactly 10 (in one transaction): the log only ever shows
    // multiples of 10, and some state between start and end was seen.
    assert!(
        counts.iter().all(|n| [0, 10, 20, 30, 35].contains(n)),
        "log sizes seen: {counts:?}"
    );
    assert!(
        counts.iter().any(|n| [10, 20, 30].contains(n)) || statuses.contains("cleanup_unfinished"),
        "the run was never seen unfinished (log sizes {counts:?}, statuses {statuses:?})"
    );
    assert_eq!(ctx.tags(rid), set(&["latest", "keep-me", "doomed-new"]));
    let log = ctx.log_of(pid, rid);
    assert_eq!(log.keys().cloned().collect::<BTreeSet<_>>(), doomed);
    assert!(log.values().all(|(_, reason)| reason == "policy"));
    // A resumed run keeps the time it started.
    let r = ctx.repository(rid);
    assert_eq!(
        Some(r["cleanup_policy_started_at"].clone()),
        first_start,
        "{r}"
    );

    // One worker, four repositories of 12 doomed tags each: all complete.
    let (status, body) = ctx.put_settings(json!({ CAPACITY: 1 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(ctx.settings()[CAPACITY], 1);
    let pid = ctx.project("many/proj");
    let mut rids = Vec::new();
    for r in 1..=4 {
        let repo = format!("many/proj/r{r}");
        let (manifest, _) = ctx.image(&repo, ago(30, 0), "old");
        for t in (0..12).map(|i| format!("old-{i}")).chain(["latest".into()]) {
            ctx.put_manifest(&repo, &t, &manifest);
        }
        ctx.push(&repo, "old-but-newest", ago(0, 0));
        rids.push(ctx.repo_id(pid, &repo));
    }
    ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "7d", "keep_n": 1, "older_than": "7d",
            "name_regex": "old-.*"}),
    );
    ctx.start_run(pid);
    for rid in &rids {
        ctx.wait_done(*rid);
        assert_eq!(
            ctx.tags(*rid),
            set(&["latest", "old-but-newest"]),
            "repository {rid}"
        );
        assert_eq!(ctx.log_of(pid, *rid).len(), 12);
    }
    assert_eq!(ctx.cleanup_log(pid).len(), 48);
    assert!(!ctx.berth.log().contains("ERROR"), "{}", ctx.berth.log());
}

// ---------------------------------------------------------------------------
// 4. Disabled policies
// ---------------------------------------------------------------------------

#[test]
fn disabled_policies_do_not_run() {
    // One worker (for the whole instance, however many nodes serve it) and two tags
    // per turn, so a big run keeps the worker busy while another project's run waits
    // in the queue.
    let ctx = Ctx::start_with(&[(CAPACITY_ENV, "1"), (MAX_LIST_ENV, "2")]);
    let s = ctx.settings();
    assert_eq!(s[CAPACITY], 1, "{s}");
    assert_eq!(s[MAX_LIST], 2, "{s}");

    // Never saved (the default policy is disabled), and saved disabled: 400.
    let pid = ctx.project("off/proj");
    ctx.push("off/proj/app", "old", ago(100, 0));
    let (status, body) = ctx.run_now(pid);
    assert_eq!(status, 400, "{body}");
    assert_eq!(ctx.policy(pid)["enabled"], false);
    ctx.save_policy(
        pid,
        json!({"enabled": false, "name_regex": ".*", "older_than": null, "keep_n": null}),
    );
    let (status, body) = ctx.run_now(pid);
    assert_eq!(status, 400, "{body}");
    // Enabled then disabled again.
    ctx.save_policy(pid, json!({"enabled": true}));
    let saved = ctx.save_policy(pid, json!({"enabled": false}));
    assert!(saved["next_run_at"].is_null(), "{saved}");
    let (status, body) = ctx.run_now(pid);
    assert_eq!(status, 400, "{body}");

    // A: a long run (30 tags, 2 per turn) that holds the only worker. `t-new` is
    // the newest and kept by keep_n 1.
    let busy = ctx.project("busy/proj");
    let (manifest, _) = ctx.image("busy/proj/app", ago(30, 0), "busy");
    for i in 0..30 {
        ctx.put_manifest("busy/proj/app", &format!("t-{i:02}"), &manifest);
    }
    ctx.push("busy/proj/app", "t-new", ago(0, 0));
    let busy_rid = ctx.repo_id(busy, "busy/proj/app");
    ctx.save_policy(
        busy,
        json!({"enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": "t-.*"}),
    );
    ctx.start_run(busy);
    eventually(WAIT, "the busy run to start", || {
        ctx.repository(busy_rid)["cleanup_policy_started_at"]
            .is_string()
            .then_some(())
    });

    // B: first a run that matches nothing, so B's repository has run once.
    let late = ctx.project("late/proj");
    let late_digests = ctx.push_aged(
        "late/proj/app",
        &[("latest", 50), ("a", 50), ("b", 50), ("c", 50), ("d", 50)],
    );
    let late_rid = ctx.repo_id(late, "late/proj/app");
    ctx.save_policy(
        late,
        json!({"enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": "nothing-matches"}),
    );
    ctx.start_run(late);
    ctx.wait_done(late_rid);
    assert!(ctx.cleanup_log(late).is_empty());
    let busy_state = ctx.repository(busy_rid);
    assert_ne!(
        busy_state["expiration_policy_cleanup_status"], "cleanup_unscheduled",
        "precondition: the busy run must still be going: {busy_state}"
    );

    // Now queue a run that would delete b, c and d (a is the newest of the
    // candidates), and disable the policy while the run waits behind A: the queue
    // serves the least recently started first, and A's run started before B's last.
    ctx.save_policy(late, json!({"name_regex": ".*"}));
    ctx.start_run(late);
    eventually(WAIT, "B's run to be queued", || {
        assert!(
            ctx.cleanup_log(late).is_empty(),
            "precondition: B's run started before it could be disabled"
        );
        (ctx.repository(late_rid)["expiration_policy_cleanup_status"] == "cleanup_scheduled")
            .then_some(())
    });
    let saved = ctx.save_policy(late, json!({"enabled": false}));
    assert_eq!(saved["enabled"], false);
    assert!(saved["next_run_at"].is_null(), "{saved}");

    // Disable A in the middle of its run too: at most the turn under way when it
    // was disabled still deletes (two tags), then the run stops.
    let saved = ctx.save_policy(busy, json!({"enabled": false}));
    assert_eq!(saved["enabled"], false);
    let at_disable = ctx.cleanup_log(busy).len();
    assert!(at_disable < 30, "precondition: A had not finished");

    // Both runs end; B's deletes nothing, A's stops.
    ctx.wait_done(busy_rid);
    eventually(WAIT, "B's queued run to end", || {
        (ctx.repository(late_rid)["expiration_policy_cleanup_status"] == "cleanup_unscheduled")
            .then_some(())
    });
    assert_eq!(ctx.tags(late_rid), names_of(&late_digests));
    assert!(
        ctx.cleanup_log(late).is_empty(),
        "{:?}",
        ctx.cleanup_log(late)
    );
    let deleted = ctx.log_of(busy, busy_rid).len();
    assert!(
        deleted <= at_disable + 2,
        "A went on deleting after it was disabled: {at_disable} deleted when disabled, {deleted} in the end"
    );
    assert_eq!(
        ctx.repository(busy_rid)["tags_count"],
        31 - deleted as i64,
        "A's remaining tags"
    );
    // Nothing more happens later either: both policies are disabled.
    assert!(ctx.policy(busy)["next_run_at"].is_null());
    assert!(ctx.policy(late)["next_run_at"].is_null());
}

// ---------------------------------------------------------------------------
// 5. Invalid policies
// ---------------------------------------------------------------------------

#[test]
fn invalid_policies_are_refused_naming_the_field() {
    let ctx = Ctx::start();
    let pid = ctx.project("val/proj");
    let good = ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "7d", "keep_n": 5, "older_than": "14d",
            "name_regex": "v.+", "name_regex_keep": "stable"}),
    );
    assert_eq!(good["cadence"], "7d");
    assert_eq!(good["keep_n"], 5);
    assert_eq!(good["older_than"], "14d");
    assert_eq!(good["name_regex"], "v.+");
    assert_eq!(good["name_regex_keep"], "stable");
    assert!(good["next_run_at"].is_string(), "{good}");
    assert_eq!(ctx.policy(pid), good);

    let bad = [
        (json!({"name_regex": ""}), "name_regex"),
        (json!({"name_regex": "(unclosed"}), "name_regex"),
        // RE2 has no look-around.
        (json!({"name_regex": "(?!v).*"}), "name_regex"),
        (json!({"name_regex_keep": "[z-a]"}), "name_regex_keep"),
        (json!({"cadence": "2d"}), "cadence"),
        (json!({"keep_n": 3}), "keep_n"),
        (json!({"older_than": "60d"}), "older_than"),
        // A valid change alongside an invalid one is not half-applied.
        (json!({"cadence": "14d", "keep_n": 3}), "keep_n"),
    ];
    for (attrs, field) in bad {
        let (status, body) = ctx.put_policy(pid, attrs.clone());
        assert_eq!(status, 400, "{attrs}: {body}");
        assert!(
            names_field(&body, field),
            "{attrs}: the refusal must name {field}: {body}"
        );
        assert_eq!(ctx.policy(pid), good, "{attrs} must change nothing");
    }
}

/// `keep_n`, `older_than` and `name_regex_keep` may be null (shared/reference/
/// gitlab-api.md §2.1: "or null"); sending null clears them, as python-gitlab does
/// when an attribute is set to `None`.
#[test]
fn null_clears_optional_policy_fields() {
    let ctx = Ctx::start();
    let pid = ctx.project("nul/proj");
    let repo = "nul/proj/app";
    ctx.push_aged(
        repo,
        &[("latest", 1), ("v1", 1), ("v2", 100), ("stable", 100)],
    );
    let rid = ctx.repo_id(pid, repo);
    let saved = ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "7d", "keep_n": 5, "older_than": "14d",
            "name_regex": ".*", "name_regex_keep": "stable"}),
    );
    assert_eq!(saved["keep_n"], 5);
    // With keep 5 nothing goes.
    let (status, body) = ctx.preview(pid, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(preview_of(&body, rid).0.is_empty(), "{body}");

    let saved = ctx.save_policy(
        pid,
        json!({"keep_n": null, "older_than": null, "name_regex_keep": null}),
    );
    for key in ["keep_n", "older_than", "name_regex_keep"] {
        assert!(
            saved[key].is_null(),
            "{key} must be cleared by null: {saved}"
        );
    }
    assert_eq!(saved["name_regex"], ".*");
    assert_eq!(saved["cadence"], "7d");
    assert_eq!(ctx.policy(pid), saved);
    // Now every tag but latest would go, whatever its age.
    let (status, body) = ctx.preview(pid, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        preview_of(&body, rid)
            .0
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&["v1", "v2", "stable"]),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// 6. The CLI
// ---------------------------------------------------------------------------

#[test]
fn cli_dry_run_then_real_run() {
    let ctx = Ctx::start();
    let pid = ctx.project("cli/proj");
    // Per repository: old-1..old-4 are 100 days old, new-1 and new-2 fresh. Policy:
    // every tag, keep 1, older than 90d: new-1 is kept (newest), new-2 is too new,
    // old-* go.
    let mut repos = Vec::new();
    for name in ["one", "two"] {
        let repo = format!("cli/proj/{name}");
        let digests = ctx.push_aged(
            &repo,
            &[
                ("new-1", 0),
                ("new-2", 0),
                ("latest", 300),
                ("old-1", 100),
                ("old-2", 100),
                ("old-3", 100),
                ("old-4", 100),
            ],
        );
        let rid = ctx.repo_id(pid, &repo);
        repos.push((repo, rid, digests));
    }
    ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "1month", "keep_n": 1, "older_than": "90d",
            "name_regex": ".*"}),
    );
    let doomed = set(&["old-1", "old-2", "old-3", "old-4"]);

    let (ok, out, err) = ctx.cli(&["--project", "cli/proj", "--dry-run"]);
    assert!(ok, "dry run failed:\n{out}\n{err}");
    let listed: BTreeSet<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("old-") || l.starts_with("new-") || *l == "latest")
        .map(str::to_string)
        .collect();
    assert_eq!(listed, doomed, "dry run output:\n{out}");
    for tag in &doomed {
        assert_eq!(
            out.lines().filter(|l| l.trim() == tag).count(),
            2,
            "{tag} listed once per repository:\n{out}"
        );
    }
    for (repo, rid, digests) in &repos {
        assert_eq!(
            ctx.tags(*rid),
            names_of(digests),
            "dry run deleted from {repo}"
        );
    }
    assert!(ctx.cleanup_log(pid).is_empty());

    let (ok, out, err) = ctx.cli(&["--project", "cli/proj"]);
    assert!(ok, "cleanup failed:\n{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("deleted") && l.split_whitespace().any(|w| w == "8")),
        "no summary line with the count (8):\n{out}"
    );
    for (repo, rid, digests) in &repos {
        let kept: BTreeSet<String> = names_of(digests).difference(&doomed).cloned().collect();
        assert_eq!(ctx.tags(*rid), kept, "{repo}");
        let log = ctx.log_of(pid, *rid);
        assert_eq!(
            log.keys().cloned().collect::<BTreeSet<_>>(),
            doomed,
            "{repo}"
        );
        for (tag, (digest, reason)) in &log {
            assert_eq!(reason, "command", "{repo}:{tag}");
            assert_eq!(digest, &digests[tag]);
        }
    }
    // A second run finds nothing to do.
    let (ok, out, err) = ctx.cli(&["--project", "cli/proj"]);
    assert!(ok, "second cleanup failed:\n{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("deleted") && l.split_whitespace().any(|w| w == "0")),
        "{out}"
    );
    assert_eq!(ctx.cleanup_log(pid).len(), 8);
    // An unknown project is an error.
    let (ok, _, err) = ctx.cli(&["--project", "no/such"]);
    assert!(!ok, "cleanup of an unknown project succeeded");
    assert!(err.contains("no/such"), "{err}");
}

// ---------------------------------------------------------------------------
// 7. A large repository
// ---------------------------------------------------------------------------

/// Tags in the large-repository test: 20,000 on SQLite; 5,000 in the PostgreSQL and
/// three-node passes, which check the same run (fifty 100-tag batches, one turn) on
/// the other backends, where pushing each tag costs more. (`bench/meta_backends.py`
/// measures PostgreSQL cleanups of 10,000 tags.)
fn large() -> usize {
    if support::postgres_mode() {
        5_000
    } else {
        20_000
    }
}

#[test]
fn large_repository_is_cleaned_in_one_run() {
    let ctx = Ctx::start();
    let (status, body) = ctx.put_settings(json!({ MAX_LIST: 100_000 }));
    assert_eq!(status, 200, "{body}");
    let pid = ctx.project("big/proj");
    let repo = "big/proj/app";
    // Ten fresh images (one minute apart) and `latest`, then large() tags on one old
    // manifest.
    for i in 0..10 {
        ctx.push(repo, &format!("keep-{i}"), ago(0, i));
    }
    let (old, old_digest) = ctx.image(repo, ago(100, 0), "old");
    ctx.put_manifest(repo, "latest", &old);
    let pushing = Instant::now();
    let large = large();
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (ctx, old) = (&ctx, &old);
            s.spawn(move || {
                for i in (t..large).step_by(threads) {
                    ctx.put_manifest_now(repo, &format!("old-{i:05}"), old);
                }
            });
        }
    });
    eprintln!("pushed {large} tags in {:?}", pushing.elapsed());
    // Pushed long ago, all at once (one statement, not one per tag).
    let old_ms = ago(100, 0).duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(ctx.berth.set_push_time(repo, "old-%", old_ms), large as u64);
    let rid = ctx.repo_id(pid, repo);
    assert_eq!(ctx.repository(rid)["tags_count"], large as i64 + 11);

    ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "1d", "keep_n": 10, "older_than": null,
            "name_regex": ".*"}),
    );
    let running = Instant::now();
    ctx.start_run(pid);
    let r = eventually(Duration::from_secs(120), "the large run to finish", || {
        let r = ctx.repository(rid);
        (r["expiration_policy_cleanup_status"] == "cleanup_unscheduled"
            && r["cleanup_policy_started_at"].is_string())
        .then_some(r)
    });
    eprintln!("cleaned {large} tags in {:?}", running.elapsed());
    assert_eq!(r["tags_count"], 11, "{r}");
    let mut kept: BTreeSet<String> = (0..10).map(|i| format!("keep-{i}")).collect();
    kept.insert("latest".into());
    assert_eq!(ctx.tags(rid), kept);
    // The log shows the latest deletions (it is capped), all by the policy.
    let log = ctx.cleanup_log(pid);
    assert!(!log.is_empty());
    for e in &log {
        assert_eq!(e["reason"], "policy", "{e}");
        assert_eq!(e["digest"], old_digest.as_str(), "{e}");
        assert!(e["tag"].as_str().unwrap().starts_with("old-"), "{e}");
    }
    assert_eq!(ctx.manifest_status(repo, &old_digest), 200);
    let log = ctx.berth.log();
    assert!(!log.contains("ERROR"), "errors in the server log:\n{log}");
}

// ---------------------------------------------------------------------------
// 8. Resume after a restart
// ---------------------------------------------------------------------------

#[test]
fn interrupted_run_resumes_after_restart() {
    let envs = [(CAPACITY_ENV, "1"), (MAX_LIST_ENV, "3")];
    let ctx = Ctx::start_with(&envs);
    let pid = ctx.project("rs/proj");
    let repo = "rs/proj/app";
    let (manifest, digest) = ctx.image(repo, ago(30, 0), "old");
    let doomed: BTreeSet<String> = (0..30).map(|i| format!("gone-{i:02}")).collect();
    for t in doomed.iter().map(String::as_str).chain(["latest", "stays"]) {
        ctx.put_manifest(repo, t, &manifest);
    }
    // The newest candidate, kept by keep_n 1.
    ctx.push(repo, "gone-new", ago(0, 0));
    let rid = ctx.repo_id(pid, repo);
    ctx.save_policy(
        pid,
        json!({"enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": "gone-.*"}),
    );
    ctx.start_run(pid);
    // Stop the server after the first turn, while the run is far from done.
    let (started_at, done) = eventually(WAIT, "the first turn", || {
        let n = ctx.cleanup_log(pid).len();
        let r = ctx.repository(rid);
        (n > 0).then(|| (r["cleanup_policy_started_at"].clone(), n))
    });
    assert!(started_at.is_string());
    let next_run_at = ctx.policy(pid)["next_run_at"].clone();
    let ctx = ctx.restart(&envs);
    let r = ctx.repository(rid);
    assert!(
        done < 30,
        "precondition: the run had not finished ({done} deleted)"
    );
    assert_ne!(
        r["expiration_policy_cleanup_status"], "cleanup_unscheduled",
        "the interrupted run must still be pending after the restart: {r}"
    );

    // A turn cut by the kill is taken up again once its claim's lease lapses (15 s).
    eventually(WAIT * 2, "the interrupted run to finish", || {
        let r = ctx.repository(rid);
        (r["expiration_policy_cleanup_status"] == "cleanup_unscheduled" && r["tags_count"] == 3)
            .then_some(())
    });
    assert_eq!(ctx.tags(rid), set(&["latest", "stays", "gone-new"]));
    let log = ctx.log_of(pid, rid);
    assert_eq!(log.keys().cloned().collect::<BTreeSet<_>>(), doomed);
    assert!(log
        .values()
        .all(|(d, reason)| reason == "policy" && *d == digest));
    let r = ctx.repository(rid);
    assert_eq!(
        r["cleanup_policy_started_at"], started_at,
        "a resumed run keeps its start"
    );
    // The restart did not start another run.
    assert_eq!(ctx.policy(pid)["next_run_at"], next_run_at);
}

// ---------------------------------------------------------------------------
// The seed's API example, time zones, permissions
// ---------------------------------------------------------------------------

/// The seed's own API example ("使用清理策略 API"), byte for byte: it sends
/// `name_regex` empty together with `name_regex_delete` `.*` (its newer name), keep
/// one tag, older than 14 days, monthly, keeping `.*-main`.
#[test]
fn the_seeds_api_example_is_accepted() {
    let ctx = Ctx::start();
    let pid = ctx.project("seed/proj");
    let body = r#"{"container_expiration_policy_attributes":{"cadence":"1month","enabled":true,"keep_n":1,"older_than":"14d","name_regex":"","name_regex_delete":".*","name_regex_keep":".*-main"}}"#;
    let (status, resp) = ctx.call(
        ctx.api(Method::PUT, &format!("/projects/{pid}"))
            .header("Content-Type", "application/json;charset=UTF-8")
            .body(body),
    );
    assert_eq!(status, 200, "the seed's example was refused: {resp}");
    let p = ctx.policy(pid);
    assert_eq!(p["cadence"], "1month", "{p}");
    assert_eq!(p["enabled"], true, "{p}");
    assert_eq!(p["keep_n"], 1, "{p}");
    assert_eq!(p["older_than"], "14d", "{p}");
    assert_eq!(p["name_regex_delete"], ".*", "{p}");
    assert_eq!(p["name_regex_keep"], ".*-main", "{p}");
    // The next run is a month away.
    let next = parse_time(&p["next_run_at"]);
    assert!(
        next > SystemTime::now() + Duration::from_secs(27 * DAY),
        "{p}"
    );
    assert!(
        next < SystemTime::now() + Duration::from_secs(32 * DAY),
        "{p}"
    );

    // And `name_regex_delete` alone sets the delete regex.
    let saved = ctx.save_policy(pid, json!({"name_regex_delete": "v.+"}));
    assert_eq!(saved["name_regex_delete"], "v.+", "{saved}");
    assert_eq!(saved["name_regex"], "v.+", "{saved}");
}

/// The image config's `created` instant is read whatever UTC offset it is written
/// with (RFC 3339 allows any) and reported as the tag's `created_at`; tags are ordered
/// by push time all the same: `east`, pushed last, is the newest though its image is
/// older.
#[test]
fn creation_times_with_utc_offsets_are_read_and_push_time_orders() {
    let ctx = Ctx::start();
    let pid = ctx.project("tz/proj");
    let repo = "tz/proj/app";
    // `utc` was created 1 day ago, written in UTC. `east` 36 hours ago, written
    // with +14:00 (local wall time 22 hours ago). `utc` is the newer one.
    let utc_at = ago(1, 0);
    let east_at = ago(1, 12 * 60);
    let east_text = rfc3339(east_at + Duration::from_secs(14 * 3600)).replace('Z', "+14:00");
    let (m, _) = ctx.image(repo, utc_at, "utc");
    ctx.put_manifest(repo, "utc", &m);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": east_text,
    }))
    .unwrap();
    let layer = format!("layer of {repo}").into_bytes();
    let c = ctx.push_blob(repo, &config);
    let l = ctx.push_blob(repo, &layer);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": l, "size": layer.len()}],
    }))
    .unwrap();
    ctx.put_manifest(repo, "east", &manifest);
    let rid = ctx.repo_id(pid, repo);

    let (status, body) = ctx.preview(pid, &[("name_regex", ".*"), ("keep_n", "1")]);
    assert_eq!(status, 200, "{body}");
    let (delete, keep) = preview_of(&body, rid);
    assert_eq!(
        keep.get("east").map(String::as_str),
        Some("keep_n"),
        "the newest push is `east` (though created at {east_text}): {body}"
    );
    assert_eq!(
        delete.get("utc").map(String::as_str),
        Some("delete"),
        "{body}"
    );
    let repo_json = &body["repositories"][0];
    let east = repo_json["delete"]
        .as_array()
        .unwrap()
        .iter()
        .chain(repo_json["keep"].as_array().unwrap())
        .find(|t| t["name"] == "east")
        .expect("east in the preview");
    assert!(
        close(
            parse_time(&east["created_at"]),
            east_at,
            Duration::from_secs(2)
        ),
        "east created {east_text} is reported as {}",
        east["created_at"]
    );
}

/// Running a policy and changing it are maintainer actions; a developer may look.
#[test]
fn only_maintainers_run_or_change_policies() {
    let ctx = Ctx::start();
    let pid = ctx.project("perm/proj");
    ctx.push("perm/proj/app", "old", ago(100, 0));
    ctx.save_policy(pid, json!({"enabled": true, "name_regex": ".*"}));
    ctx.berth.user("devel", "devel-password-1234");
    let users = ctx.get("/users?username=devel");
    let uid = users[0]["id"].as_i64().expect("user id");
    let (status, body) = ctx.call(
        ctx.api(Method::POST, &format!("/projects/{pid}/members"))
            .json(&json!({"user_id": uid, "access_level": 30})),
    );
    assert_eq!(status, 201, "{body}");
    let dev = ctx.berth.admin(&[
        "token", "create", "--user", "devel", "--name", "t", "--scopes", "api",
    ]);
    let as_dev = |m: Method, path: &str| {
        ctx.http
            .request(m, format!("{}/api/v4{path}", ctx.berth.url))
            .header("PRIVATE-TOKEN", &dev)
    };
    let (status, body) = ctx.call(as_dev(
        Method::POST,
        &format!("/projects/{pid}/registry/cleanup_run"),
    ));
    assert_eq!(status, 403, "developer ran the policy: {body}");
    let (status, body) = ctx.call(
        as_dev(Method::PUT, &format!("/projects/{pid}"))
            .json(&json!({"container_expiration_policy_attributes": {"enabled": false}})),
    );
    assert_eq!(status, 403, "developer changed the policy: {body}");
    assert_eq!(ctx.policy(pid)["enabled"], true);
    let (status, body) = ctx.call(as_dev(
        Method::GET,
        &format!("/projects/{pid}/registry/cleanup_preview"),
    ));
    assert_eq!(status, 200, "developer preview: {body}");
    let (status, body) = ctx.call(as_dev(
        Method::GET,
        &format!("/projects/{pid}/registry/cleanup_log"),
    ));
    assert_eq!(status, 200, "developer log: {body}");
    // Someone without access to the private project learns nothing.
    ctx.berth.user("stranger", "stranger-password-1234");
    let stranger = ctx.berth.admin(&[
        "token", "create", "--user", "stranger", "--name", "t", "--scopes", "api",
    ]);
    for (m, path) in [
        (Method::POST, "cleanup_run"),
        (Method::GET, "cleanup_preview"),
        (Method::GET, "cleanup_log"),
    ] {
        let (status, body) = ctx.call(
            ctx.http
                .request(
                    m,
                    format!("{}/api/v4/projects/{pid}/registry/{path}", ctx.berth.url),
                )
                .header("PRIVATE-TOKEN", &stranger),
        );
        assert_eq!(status, 404, "{path} for a stranger: {body}");
    }
}
