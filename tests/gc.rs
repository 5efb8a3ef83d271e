//! End-to-end tests of garbage collection: the online reviewer inside `berth serve`
//! (review queues filled by metadata triggers, a review delay, postponement on reads,
//! uploads and mounts), the offline `berth gc` command (orphan bytes, metadata without
//! bytes, `--dry-run`, `-m`, `--grace`), storage accounting (`berth admin usage` and
//! the REST `size`), and crash safety (SIGKILL during a push and during GC).
//! Everything runs against the real binary over raw HTTP. Besides the APIs the tests
//! look only at the published blobs (the blob directory
//! `<data>/storage/blobs/sha256/<2 hex>/<hex>`, or the bucket when the run is on S3
//! storage, `BERTH_TEST_STORAGE=s3`), which must converge to exactly the blobs
//! reachable from the tags the test believes exist, and (in one filesystem-only crash
//! test) take the store's `storage/gc.lock` shared, as a publishing upload does, to
//! stop GC between removing metadata and removing bytes.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::blocking::{Body, Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use support::process::Server;
use support::{eventually, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIG_TYPE: &str = "application/vnd.example.signature.v1";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long any background work (GC rounds, queue draining) may take.
const WAIT: Duration = Duration::from_secs(60);
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Online GC that acts almost at once: tags deleted, manifests and blobs reviewed
/// within a few 200 ms rounds. Only the stress test uses it (on SQLite): a push that
/// loses a blob to a review before its manifest arrives is an outcome it expects.
const STRESS_GC: &[(&str, &str)] = &[
    ("BERTH_GC_REVIEW_DELAY", "200ms"),
    ("BERTH_GC_DELETE_UNTAGGED", "true"),
];
/// On S3 storage (moto) one blob upload takes a few hundred milliseconds, so a
/// 200 ms review would collect the first blob of an image before its manifest
/// arrives, every time.
const ON_S3: &[(&str, &str)] = &[
    ("BERTH_GC_REVIEW_DELAY", "3s"),
    ("BERTH_GC_DELETE_UNTAGGED", "true"),
];
/// A push's requests on a busy machine: on PostgreSQL a 200 ms review took an
/// image's blobs before its manifest five times in a row, and with the suite's
/// binaries running beside each other SQLite is as busy.
const ONE_SECOND: &[(&str, &str)] = &[
    ("BERTH_GC_REVIEW_DELAY", "1s"),
    ("BERTH_GC_DELETE_UNTAGGED", "true"),
];

/// A review delay that each round of a test's reads, mounts or uploads must beat:
/// 2 s, or 8 s on S3 storage, where a round takes several moto requests.
fn short_review() -> &'static [(&'static str, &'static str)] {
    if support::s3_mode() {
        &[("BERTH_GC_REVIEW_DELAY", "8s")]
    } else {
        &[("BERTH_GC_REVIEW_DELAY", "2s")]
    }
}

/// Online GC soon after a delete, never before a push's manifest follows its blobs.
fn fast_gc() -> &'static [(&'static str, &'static str)] {
    if support::s3_mode() {
        ON_S3
    } else {
        ONE_SECOND
    }
}

/// [`STRESS_GC`] where pushes are quick enough for it to race them (SQLite with
/// local files), else as [`fast_gc`].
fn stress_gc() -> &'static [(&'static str, &'static str)] {
    if support::s3_mode() || support::postgres_mode() {
        fast_gc()
    } else {
        STRESS_GC
    }
}

// ---------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Deterministic bytes for a label (distinct labels give distinct blobs).
fn bytes_for(label: &str, len: usize) -> Vec<u8> {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&hex::decode(sha256_hex(label.as_bytes())).unwrap());
    let mut rng = StdRng::from_seed(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

fn config_for(label: &str, arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": { "Labels": { "test": label } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .unwrap()
}

/// A manifest (image, artifact or index) with the blobs it needs (config first).
#[derive(Clone, Debug)]
struct Image {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<Vec<u8>>,
    /// For an index: the children it lists (which must be pushed first).
    children: Vec<Image>,
}

impl Image {
    fn new(config: Vec<u8>, layers: Vec<Vec<u8>>) -> Image {
        let descriptors: Vec<Value> = layers
            .iter()
            .map(|l| json!({ "mediaType": OCI_LAYER, "digest": digest_of(l), "size": l.len() }))
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len() },
            "layers": descriptors,
        }))
        .unwrap();
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            media_type: OCI_MANIFEST,
            digest: digest_of(&manifest),
            manifest,
            blobs,
            children: Vec::new(),
        }
    }

    /// An image with its own config and `layers` extra layers of `size` bytes, all
    /// derived from `label`.
    fn unique(label: &str, layers: usize, size: usize) -> Image {
        Image::new(
            config_for(label, "amd64"),
            (0..layers)
                .map(|i| bytes_for(&format!("{label}/layer{i}"), size))
                .collect(),
        )
    }

    /// A signature artifact whose subject is `subject`.
    fn signature(subject: &Image, label: &str) -> Image {
        let empty = b"{}".to_vec();
        let sig = bytes_for(&format!("signature of {label}"), 512);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIG_TYPE,
            "config": { "mediaType": OCI_EMPTY, "digest": digest_of(&empty), "size": 2 },
            "layers": [{ "mediaType": SIG_TYPE, "digest": digest_of(&sig), "size": sig.len() }],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.manifest.len(),
            },
        }))
        .unwrap();
        Image {
            media_type: OCI_MANIFEST,
            digest: digest_of(&manifest),
            manifest,
            blobs: vec![empty, sig],
            children: Vec::new(),
        }
    }

    /// A multi-platform index over `children` (architecture, image).
    fn index(children: &[(&str, &Image)]) -> Image {
        let list: Vec<Value> = children
            .iter()
            .map(|(arch, m)| {
                json!({
                    "mediaType": m.media_type,
                    "digest": m.digest,
                    "size": m.manifest.len(),
                    "platform": { "architecture": arch, "os": "linux" },
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": list,
        }))
        .unwrap();
        Image {
            media_type: OCI_INDEX,
            digest: digest_of(&manifest),
            manifest,
            blobs: Vec::new(),
            children: children.iter().map(|(_, m)| (*m).clone()).collect(),
        }
    }

    /// Every blob digest this manifest (and its children) needs.
    fn blob_digests(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.blobs.iter().map(|b| digest_of(b)).collect();
        for c in &self.children {
            out.extend(c.blob_digests());
        }
        out
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A fully read response.
struct Resp {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `errors[0].code` of a registry error body.
    fn code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_string)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {self:?}", self.what))
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected {status}; got {self:?}");
        self
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = String::from_utf8_lossy(&self.body).into_owned();
        if body.len() > 600 {
            let mut cut = 600;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        write!(f, "{} → {} body={body:?}", self.what, self.status)
    }
}

/// A registry client: bearer tokens from `/jwt/auth` with root's Basic credentials,
/// cached per scope set (tokens live 5 minutes; every test is far shorter).
struct Reg {
    url: String,
    http: Client,
    tokens: Mutex<HashMap<String, String>>,
}

impl Reg {
    fn new(url: &str) -> Reg {
        Reg {
            url: url.to_string(),
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn token(&self, scopes: &[String]) -> String {
        let key = scopes.join(" ");
        if let Some(t) = self.tokens.lock().unwrap().get(&key) {
            return t.clone();
        }
        let mut url = format!("{}/jwt/auth?service=container_registry", self.url);
        for s in scopes {
            url.push_str("&scope=");
            url.push_str(&s.replace(':', "%3A").replace(',', "%2C"));
        }
        let resp = self
            .http
            .get(&url)
            .basic_auth("root", Some(ROOT_PASSWORD))
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("token response is JSON");
        assert_eq!(status, 200, "token for {scopes:?}: {body}");
        let token = body["token"].as_str().expect("token").to_string();
        self.tokens.lock().unwrap().insert(key, token.clone());
        token
    }

    fn scopes(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull,push,delete")]
    }

    fn exchange(&self, rb: RequestBuilder, scopes: &[String]) -> Resp {
        let req = rb.bearer_auth(self.token(scopes)).build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let resp = self
            .http
            .execute(req)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e:?}"))
            .to_vec();
        Resp {
            what,
            status,
            headers,
            body,
        }
    }

    fn v2(&self, method: Method, repo: &str, rest: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/v2/{repo}/{rest}", self.url))
    }

    fn send(&self, repo: &str, rb: RequestBuilder) -> Resp {
        self.exchange(rb, &Reg::scopes(repo))
    }

    /// Monolithic upload; must succeed.
    fn upload(&self, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let r = self.send(
            repo,
            self.v2(
                Method::POST,
                repo,
                &format!("blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        );
        r.expect(201);
        assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
        digest
    }

    fn put_manifest(&self, repo: &str, reference: &str, m: &Image) -> Resp {
        self.send(
            repo,
            self.v2(Method::PUT, repo, &format!("manifests/{reference}"))
                .header("Content-Type", m.media_type)
                .body(m.manifest.clone()),
        )
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.send(
            repo,
            self.v2(Method::GET, repo, &format!("manifests/{reference}"))
                .header("Accept", ACCEPT),
        )
    }

    fn delete_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.send(
            repo,
            self.v2(Method::DELETE, repo, &format!("manifests/{reference}")),
        )
    }

    fn blob(&self, method: Method, repo: &str, digest: &str) -> Resp {
        self.send(repo, self.v2(method, repo, &format!("blobs/{digest}")))
    }

    /// Upload a manifest's blobs (children first for an index) and PUT it under
    /// `reference` (a tag or its digest). Returns the manifest PUT's response.
    fn push_once(&self, repo: &str, m: &Image, reference: &str) -> Resp {
        for c in &m.children {
            let r = self.push_once(repo, c, &c.digest);
            if r.status != 201 {
                return r;
            }
        }
        for b in &m.blobs {
            self.upload(repo, b);
        }
        self.put_manifest(repo, reference, m)
    }

    /// Push, starting over when online GC took an uploaded blob before the manifest
    /// referenced it (MANIFEST_BLOB_UNKNOWN: what a client is told to do then).
    fn push(&self, repo: &str, m: &Image, tag: Option<&str>) {
        let reference = tag.unwrap_or(&m.digest).to_string();
        for _ in 0..5 {
            let r = self.push_once(repo, m, &reference);
            if r.status == 201 {
                assert_eq!(r.header("Docker-Content-Digest"), Some(m.digest.as_str()));
                return;
            }
            assert_eq!(
                r.code().as_deref(),
                Some("MANIFEST_BLOB_UNKNOWN"),
                "pushing {repo}:{reference}: {r:?}"
            );
        }
        panic!("pushing {repo}:{reference}: its blobs kept disappearing");
    }

    /// Pull `reference` as a client would and check everything: the manifest is
    /// `expect` (by header and by hash), every blob (of every child, for an index)
    /// answers 200 with bytes that hash to its digest and have its size. Returns the
    /// blob digests seen.
    fn pull(&self, repo: &str, reference: &str, expect: &str) -> Result<BTreeSet<String>, String> {
        let r = self.get_manifest(repo, reference);
        if r.status != 200 {
            return Err(format!("manifest {repo}:{reference}: {r:?}"));
        }
        let actual = digest_of(&r.body);
        if actual != expect || r.header("Docker-Content-Digest") != Some(expect) {
            return Err(format!(
                "manifest {repo}:{reference}: expected {expect}, body hashes to {actual}, \
                 header {:?}",
                r.header("Docker-Content-Digest")
            ));
        }
        let v = r.json();
        let mut seen = BTreeSet::new();
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                let d = c["digest"].as_str().expect("child digest");
                seen.extend(self.pull(repo, d, d)?);
            }
        }
        let descriptors = v["config"]
            .is_object()
            .then(|| v["config"].clone())
            .into_iter()
            .chain(v["layers"].as_array().cloned().unwrap_or_default());
        for desc in descriptors {
            let d = desc["digest"].as_str().expect("blob digest");
            let b = self.blob(Method::GET, repo, d);
            if b.status != 200 {
                return Err(format!("blob {d} of {repo}:{reference}: {b:?}"));
            }
            if digest_of(&b.body) != d || Some(b.body.len() as u64) != desc["size"].as_u64() {
                return Err(format!(
                    "blob {d} of {repo}:{reference}: {} bytes hashing to {}",
                    b.body.len(),
                    digest_of(&b.body)
                ));
            }
            seen.insert(d.to_string());
        }
        Ok(seen)
    }

    #[track_caller]
    fn must_pull(&self, repo: &str, reference: &str, expect: &str) {
        if let Err(e) = self.pull(repo, reference, expect) {
            panic!("pulling {repo}:{reference}: {e}");
        }
    }

    fn tags(&self, repo: &str) -> BTreeSet<String> {
        let r = self.send(repo, self.v2(Method::GET, repo, "tags/list?n=10000"));
        r.expect(200);
        r.json()["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Storage, polling, commands
// ---------------------------------------------------------------------------

fn blob_path(data_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    data_dir
        .join("storage/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// The digests of every blob in storage (files, or objects on S3).
fn blob_files(data_dir: &Path) -> BTreeSet<String> {
    support::Storage::of(data_dir).blobs()
}

/// Describe how the blob files differ from `expected`.
fn storage_diff(data_dir: &Path, expected: &BTreeSet<String>) -> Result<(), String> {
    let files = blob_files(data_dir);
    if &files == expected {
        return Ok(());
    }
    let extra: Vec<_> = files.difference(expected).collect();
    let missing: Vec<_> = expected.difference(&files).collect();
    Err(format!(
        "{} files on disk; unreferenced files present: {extra:?}; reachable blobs without \
         a file: {missing:?}",
        files.len()
    ))
}

/// Poll `check` (via `support::eventually`) until it succeeds; on timeout, fail with
/// the last thing it reported.
fn wait_for<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    wait_within(WAIT, what, check)
}

fn wait_within<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut last = String::from("(never checked)");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(timeout, what, || match check() {
            Ok(v) => Some(v),
            Err(e) => {
                last = e;
                None
            }
        })
    }));
    match outcome {
        Ok(v) => v,
        Err(panic) if started.elapsed() < timeout => std::panic::resume_unwind(panic),
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}; last state: {last}"),
    }
}

/// Run `berth <args>` on a data directory; (success, stdout, stderr).
fn berth_cmd(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let (command, rest) = args.split_first().expect("a command");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg(command)
        .arg("--data-dir")
        .arg(data_dir)
        .args(rest)
        .current_dir(data_dir.parent().expect("data dir parent"))
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `berth gc ARGS`: (success, stdout); stderr is shown on failure by the callers.
fn gc(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    let (ok, out, err) = berth_cmd(data_dir, &all, envs);
    (ok, format!("{out}\n[stderr]\n{err}"))
}

/// The number on a `berth gc` summary line such as `  blobs deleted:   2 (freed 1.0 KiB)`.
fn gc_count(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` count in berth gc output:\n{out}"))
}

fn admin_pat(data_dir: &Path) -> String {
    let (ok, out, err) = berth_cmd(
        data_dir,
        &[
            "admin", "token", "create", "--user", "root", "--name", "gc", "--scopes", "api",
        ],
        &[],
    );
    assert!(ok, "creating a token failed: {err}");
    out.trim().to_string()
}

fn create_project(data_dir: &Path, path: &str) {
    let (ok, _, err) = berth_cmd(
        data_dir,
        &[
            "admin",
            "project",
            "create",
            path,
            "--parents",
            "--visibility",
            "private",
        ],
        &[],
    );
    assert!(ok, "creating project {path} failed: {err}");
}

fn union_of<'a>(images: impl IntoIterator<Item = &'a Image>) -> BTreeSet<String> {
    images.into_iter().flat_map(|m| m.blob_digests()).collect()
}

// ---------------------------------------------------------------------------
// 1. Concurrency
// ---------------------------------------------------------------------------

const STRESS_REPOS: [&str; 2] = ["gc/stress/app", "gc/stress/tools"];
const STRESS_THREADS: usize = 4;
const STRESS_OPS: usize = 40;

#[derive(Default, Debug)]
struct Stats {
    pushed: u32,
    push_refused: u32,
    retagged: u32,
    retag_refused: u32,
    deleted: u32,
    pulled_own: u32,
    pulled_other: u32,
    pulled_other_gone: u32,
    /// Why PUTs were refused (the blob GC took, and whether it was the shared base).
    refusals: Vec<String>,
}

struct Stress {
    reg: Reg,
    base: Vec<u8>,
    /// What the test believes: (repository, tag) → manifest. Each tag belongs to one
    /// thread (its name says which), and only that thread changes it, so the belief
    /// is exact even though threads race.
    model: Mutex<BTreeMap<(String, String), Arc<Image>>>,
    stats: Mutex<Stats>,
}

impl Stress {
    fn own_tags(&self, repo: &str, prefix: &str) -> Vec<String> {
        self.model
            .lock()
            .unwrap()
            .keys()
            .filter(|(r, t)| r == repo && t.starts_with(prefix))
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn believed(&self, repo: &str, tag: &str) -> Option<Arc<Image>> {
        self.model
            .lock()
            .unwrap()
            .get(&(repo.to_string(), tag.to_string()))
            .cloned()
    }

    /// PUT `m` under `tag`: 201 makes the tag believed; MANIFEST_BLOB_UNKNOWN (GC took
    /// a blob between its upload and this PUT, or the manifest being retagged was
    /// collected) leaves the belief unchanged. Anything else fails the test.
    fn put(
        &self,
        who: &str,
        repo: &str,
        tag: &str,
        m: Arc<Image>,
        uploaded: Option<&HashMap<String, Instant>>,
    ) -> bool {
        let r = self.reg.put_manifest(repo, tag, &m);
        if r.status == 201 {
            assert_eq!(
                r.header("Docker-Content-Digest"),
                Some(m.digest.as_str()),
                "{who}: {r:?}"
            );
            self.model
                .lock()
                .unwrap()
                .insert((repo.to_string(), tag.to_string()), m);
            return true;
        }
        assert_eq!(
            r.code().as_deref(),
            Some("MANIFEST_BLOB_UNKNOWN"),
            "{who}: PUT {repo}:{tag} refused without a clear reason: {r:?}"
        );
        assert!(r.status >= 400 && r.status < 500, "{who}: {r:?}");
        let v = r.json();
        let missing = v["errors"][0]["detail"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let role = if missing == digest_of(&self.base) {
            "the shared base layer (already linked; uploaded again)"
        } else if missing == digest_of(&m.blobs[0]) {
            "this image's new config"
        } else {
            "this image's new unique layer"
        };
        let age = uploaded
            .and_then(|u| u.get(&missing))
            .map(|t| {
                format!(
                    ", {} ms after its upload was answered 201",
                    t.elapsed().as_millis()
                )
            })
            .unwrap_or_default();
        self.stats.lock().unwrap().refusals.push(format!(
            "{who}: PUT {repo}:{tag} → {} MANIFEST_BLOB_UNKNOWN {missing}: {role}{age}",
            r.status
        ));
        false
    }

    fn worker(&self, t: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let repo = STRESS_REPOS[t % STRESS_REPOS.len()];
        let prefix = format!("w{t}-");
        let mut next_tag = 0;
        for op in 0..STRESS_OPS {
            let who = format!("thread {t} op {op} (seed {seed})");
            let own = self.own_tags(repo, &prefix);
            let mut tag_for_write = |rng: &mut StdRng| {
                if !own.is_empty() && rng.random_bool(0.4) {
                    own[rng.random_range(0..own.len())].clone()
                } else {
                    next_tag += 1;
                    format!("{prefix}{next_tag}")
                }
            };
            let roll = rng.random_range(0..100);
            let sources: Vec<Arc<Image>> = self
                .model
                .lock()
                .unwrap()
                .iter()
                .filter(|((r, _), _)| r == repo)
                .map(|(_, m)| m.clone())
                .collect();
            if roll < 35 || (roll < 55 && sources.is_empty()) || (roll < 75 && own.is_empty()) {
                // Push a new image: the shared base layer plus a unique one.
                let mut unique = vec![0u8; rng.random_range(KIB..8 * KIB)];
                rng.fill_bytes(&mut unique);
                let m = Arc::new(Image::new(
                    config_for(&format!("{repo} t{t} op{op}"), "amd64"),
                    vec![self.base.clone(), unique],
                ));
                let mut uploaded = HashMap::new();
                for b in &m.blobs {
                    uploaded.insert(self.reg.upload(repo, b), Instant::now());
                }
                let tag = tag_for_write(&mut rng);
                let ok = self.put(&who, repo, &tag, m, Some(&uploaded));
                let mut s = self.stats.lock().unwrap();
                if ok {
                    s.pushed += 1;
                } else {
                    s.push_refused += 1;
                }
            } else if roll < 55 {
                // Retag: the same manifest bytes under one of our tags (new or moved).
                let m = sources[rng.random_range(0..sources.len())].clone();
                let tag = tag_for_write(&mut rng);
                let ok = self.put(&who, repo, &tag, m, None);
                let mut s = self.stats.lock().unwrap();
                if ok {
                    s.retagged += 1;
                } else {
                    s.retag_refused += 1;
                }
            } else if roll < 75 {
                let tag = &own[rng.random_range(0..own.len())];
                let r = self.reg.delete_manifest(repo, tag);
                assert_eq!(r.status, 202, "{who}: deleting tag {repo}:{tag}: {r:?}");
                self.model
                    .lock()
                    .unwrap()
                    .remove(&(repo.to_string(), tag.clone()));
                self.stats.lock().unwrap().deleted += 1;
            } else if !own.is_empty() && rng.random_bool(0.6) {
                // Our own tag: nobody else may change it, so it must pull exactly.
                let tag = &own[rng.random_range(0..own.len())];
                let m = self.believed(repo, tag).expect("own tag believed");
                if let Err(e) = self.reg.pull(repo, tag, &m.digest) {
                    panic!("{who}: pulling own tag {repo}:{tag}: {e}");
                }
                self.stats.lock().unwrap().pulled_own += 1;
            } else {
                self.pull_other(&who, &mut rng);
            }
        }
    }

    /// Pull some other thread's tag, which may be deleted or moved meanwhile (and its
    /// blobs collected): whatever is served must be intact, and anything missing must
    /// be reported as unknown.
    fn pull_other(&self, who: &str, rng: &mut StdRng) {
        let all: Vec<(String, String)> = self.model.lock().unwrap().keys().cloned().collect();
        if all.is_empty() {
            return;
        }
        let (repo, tag) = &all[rng.random_range(0..all.len())];
        let r = self.reg.get_manifest(repo, tag);
        if r.status == 404 {
            assert_eq!(
                r.code().as_deref(),
                Some("MANIFEST_UNKNOWN"),
                "{who}: {r:?}"
            );
            self.stats.lock().unwrap().pulled_other_gone += 1;
            return;
        }
        r.expect(200);
        let d = digest_of(&r.body);
        assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()), "{who}");
        let v = r.json();
        let descriptors = std::iter::once(v["config"].clone())
            .chain(v["layers"].as_array().cloned().unwrap_or_default());
        for desc in descriptors {
            let bd = desc["digest"].as_str().expect("digest");
            let b = self.reg.blob(Method::GET, repo, bd);
            match b.status {
                200 => assert_eq!(
                    digest_of(&b.body),
                    bd,
                    "{who}: blob {bd} of {repo}:{tag} served corrupt ({} bytes)",
                    b.body.len()
                ),
                404 => assert_eq!(b.code().as_deref(), Some("BLOB_UNKNOWN"), "{who}: {b:?}"),
                _ => panic!("{who}: {b:?}"),
            }
        }
        self.stats.lock().unwrap().pulled_other += 1;
    }
}

/// Several clients push, retag, delete tags and pull while online GC runs with a
/// near-zero review delay and deletes untagged manifests. Afterwards every tag the
/// test believes in pulls with the right digests, the tag lists are exactly the
/// believed ones, and once the queues drain storage holds exactly the reachable blobs
/// (and offline GC finds nothing more to do).
#[test]
fn concurrent_push_retag_delete_pull_under_gc() {
    let berth = Berth::start_with(&[], stress_gc());
    berth.project("gc/stress", "private");
    let stress = Arc::new(Stress {
        reg: Reg::new(&berth.url),
        base: bytes_for("shared base layer", 64 * KIB),
        model: Mutex::new(BTreeMap::new()),
        stats: Mutex::new(Stats::default()),
    });
    let seed: u64 = std::env::var("GC_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("concurrency seed: {seed} (set GC_STRESS_SEED to replay the same op mix)");
    let workers: Vec<_> = (0..STRESS_THREADS)
        .map(|t| {
            let s = stress.clone();
            std::thread::spawn(move || s.worker(t, seed.wrapping_add(t as u64)))
        })
        .collect();
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let stats = std::mem::take(&mut *stress.stats.lock().unwrap());
    eprintln!("concurrency stats: {stats:?}");
    assert!(
        stats.pushed > 0 && stats.deleted > 0,
        "the mix exercised too little: {stats:?}"
    );

    let reg = &stress.reg;
    let model = stress.model.lock().unwrap().clone();
    for repo in STRESS_REPOS {
        let believed: BTreeSet<String> = model
            .keys()
            .filter(|(r, _)| r == repo)
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(reg.tags(repo), believed, "tags of {repo}");
    }
    for ((repo, tag), m) in &model {
        reg.must_pull(repo, tag, &m.digest);
    }
    let reachable = union_of(model.values().map(|m| m.as_ref()));
    let data = berth.data_dir();
    wait_for("storage to hold exactly the reachable blobs", || {
        storage_diff(&data, &reachable)
    });
    // Pulls postpone reviews but change nothing: everything still pulls.
    for ((repo, tag), m) in &model {
        reg.must_pull(repo, tag, &m.digest);
    }
    let uploads = support::Storage::of(&data).uploads();
    assert!(
        uploads.is_empty(),
        "uploads left behind in storage: {uploads:?}"
    );
    // Metadata agrees with storage: a full offline mark and sweep finds nothing.
    let (ok, out) = gc(&data, &["--dry-run", "--grace", "0s", "-m"], &[]);
    assert!(ok, "berth gc --dry-run failed:\n{out}");
    assert_eq!(gc_count(&out, "manifests deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "orphaned files deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "blobs with missing bytes"), 0, "{out}");
}

// ---------------------------------------------------------------------------
// 2. Multi-arch index
// ---------------------------------------------------------------------------

/// Push an image under a tag, delete the tag, and wait until online GC removed its
/// blob files: proof that GC ran at least two rounds (manifest, then blobs) after
/// anything queued before this call.
fn gc_ran(reg: &Reg, data_dir: &Path, repo: &str, label: &str) {
    let junk = Image::unique(label, 2, 3 * KIB);
    reg.push(repo, &junk, Some("junk"));
    reg.delete_manifest(repo, "junk").expect(202);
    let digests = junk.blob_digests();
    wait_for(&format!("GC to collect the blobs of {label}"), || {
        let left: Vec<_> = digests
            .iter()
            .filter(|d| support::Storage::of(data_dir).has_blob(d))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still on disk: {left:?}"))
        }
    });
    reg.get_manifest(repo, &junk.digest).expect(404);
}

/// A multi-arch index tagged once with untagged children: GC (deleting untagged
/// manifests) keeps the children, even after they were reviewed; deleting the index
/// tag lets GC free the index, every child and all their blobs.
#[test]
fn multi_arch_children_kept_then_freed() {
    let berth = Berth::start_with(&[], fast_gc());
    berth.project("gc/multi", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/multi/app";
    let amd = Image::new(
        config_for("multi amd64", "amd64"),
        vec![
            bytes_for("multi amd64 layer 1", 4 * KIB),
            bytes_for("multi amd64 layer 2", 2 * KIB),
        ],
    );
    let arm = Image::new(
        config_for("multi arm64", "arm64"),
        vec![bytes_for("multi arm64 layer 1", 3 * KIB)],
    );
    // The children are tagged only while the index is pushed; removing those tags
    // puts them in the review queue while the index references them.
    reg.push(repo, &amd, Some("tmp-amd64"));
    reg.push(repo, &arm, Some("tmp-arm64"));
    let index = Image::index(&[("amd64", &amd), ("arm64", &arm)]);
    reg.put_manifest(repo, "multi", &index).expect(201);
    reg.delete_manifest(repo, "tmp-amd64").expect(202);
    reg.delete_manifest(repo, "tmp-arm64").expect(202);
    gc_ran(&reg, &data, repo, "multi junk");

    assert_eq!(reg.tags(repo), BTreeSet::from(["multi".to_string()]));
    reg.must_pull(repo, "multi", &index.digest);
    for child in [&amd, &arm] {
        reg.must_pull(repo, &child.digest, &child.digest);
    }
    let reachable = index.blob_digests();
    storage_diff(&data, &reachable).expect("children's blobs kept");

    reg.delete_manifest(repo, "multi").expect(202);
    wait_for("GC to free the index, its children and their blobs", || {
        for m in [&index, &amd, &arm] {
            let r = reg.get_manifest(repo, &m.digest);
            if r.status != 404 {
                return Err(format!("manifest {} still there: {r:?}", m.digest));
            }
        }
        storage_diff(&data, &BTreeSet::new())
    });
    for d in &reachable {
        let r = reg.blob(Method::HEAD, repo, d);
        assert_eq!(r.status, 404, "blob {d} still known: {r:?}");
    }
}

// ---------------------------------------------------------------------------
// 3. Referrers
// ---------------------------------------------------------------------------

/// A signature (an untagged referrer) of a tagged manifest survives review; deleting
/// the subject by digest lets GC remove the signature and every blob.
#[test]
fn referrers_kept_with_subject() {
    let berth = Berth::start_with(&[], fast_gc());
    berth.project("gc/refs", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/refs/app";
    let subject = Image::unique("refs subject", 2, 2 * KIB);
    reg.push(repo, &subject, Some("v1"));
    let sig = Image::signature(&subject, "refs subject");
    // Tagged only briefly, so the signature is queued for review while its subject lives.
    reg.push(repo, &sig, Some("sig-tmp"));
    reg.delete_manifest(repo, "sig-tmp").expect(202);
    gc_ran(&reg, &data, repo, "refs junk");

    reg.must_pull(repo, &sig.digest, &sig.digest);
    reg.must_pull(repo, "v1", &subject.digest);
    let r = reg.send(
        repo,
        reg.v2(Method::GET, repo, &format!("referrers/{}", subject.digest)),
    );
    r.expect(200);
    let listed: Vec<String> = r.json()["manifests"]
        .as_array()
        .expect("referrers list")
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![sig.digest.clone()], "{r:?}");
    storage_diff(&data, &union_of([&subject, &sig])).expect("subject and signature kept");

    reg.delete_manifest(repo, &subject.digest).expect(202);
    wait_for("GC to remove the signature of the deleted subject", || {
        let r = reg.get_manifest(repo, &sig.digest);
        if r.status != 404 {
            return Err(format!("signature still there: {r:?}"));
        }
        storage_diff(&data, &BTreeSet::new())
    });
}

// ---------------------------------------------------------------------------
// 4. Untagged manifests kept; postponement
// ---------------------------------------------------------------------------

/// With delete_untagged off (`BERTH_GC_DELETE_UNTAGGED=false`; on by default, as in
/// GitLab): an untagged manifest and its blobs stay; a blob uploaded but never
/// referenced is collected after the delay; a blob that keeps being read (HEAD/GET)
/// or mounted is not collected while that goes on, and is collected one delay after
/// it stops.
#[test]
fn untagged_kept_when_delete_untagged_is_off() {
    let mut envs = short_review().to_vec();
    envs.push(("BERTH_GC_DELETE_UNTAGGED", "false"));
    let berth = Berth::start_with(&[], &envs);
    berth.project("gc/keep", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/keep/app";
    let untagged = Image::unique("keep untagged", 2, 2 * KIB);
    reg.push(repo, &untagged, Some("a"));
    reg.delete_manifest(repo, "a").expect(202);

    let read = bytes_for("keep read before review", 3 * KIB);
    let mounted = bytes_for("keep mounted before review", 3 * KIB);
    let control = bytes_for("keep never referenced", 3 * KIB);
    let read_d = reg.upload(repo, &read);
    let mounted_d = reg.upload(repo, &mounted);
    // Uploaded last, so due last of the three if nothing postponed the others.
    let control_d = reg.upload(repo, &control);

    // Keep reading one blob and mounting the other into fresh repositories until GC
    // has collected the control blob.
    let mut round = 0;
    wait_for("GC to collect the never-referenced blob", || {
        round += 1;
        let method = if round % 2 == 0 {
            Method::HEAD
        } else {
            Method::GET
        };
        let r = reg.blob(method, repo, &read_d);
        assert_eq!(r.status, 200, "a blob being read was collected: {r:?}");
        let target = format!("gc/keep/mount{round}");
        let scopes = vec![
            format!("repository:{target}:pull,push"),
            format!("repository:{repo}:pull"),
        ];
        let m = reg.exchange(
            reg.v2(
                Method::POST,
                &target,
                &format!("blobs/uploads/?mount={mounted_d}&from={repo}"),
            ),
            &scopes,
        );
        assert_eq!(m.status, 201, "mounting a live blob: {m:?}");
        if support::Storage::of(&data).has_blob(&control_d) {
            Err("the control blob is still on disk".into())
        } else {
            Ok(())
        }
    });
    reg.blob(Method::HEAD, repo, &control_d).expect(404);
    for d in [&read_d, &mounted_d] {
        assert!(
            support::Storage::of(&data).has_blob(d),
            "blob {d}, read or mounted within every review delay, was collected \
             together with (or before) a blob uploaded after it"
        );
    }
    // GC ran after the tag was deleted: the untagged manifest is kept whole.
    reg.get_manifest(repo, "a").expect(404);
    reg.must_pull(repo, &untagged.digest, &untagged.digest);
    for d in untagged.blob_digests() {
        assert!(
            support::Storage::of(&data).has_blob(&d),
            "blob {d} of the untagged manifest"
        );
    }

    // Once nobody touches them, the postponed blobs go too.
    wait_for(
        "GC to collect the blobs once reads and mounts stopped",
        || {
            let left: Vec<_> = [&read_d, &mounted_d]
                .into_iter()
                .filter(|d| support::Storage::of(&data).has_blob(d))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still on disk: {left:?}"))
            }
        },
    );
    reg.blob(Method::HEAD, repo, &read_d).expect(404);
    storage_diff(&data, &untagged.blob_digests()).expect("only the untagged image's blobs");
    reg.must_pull(repo, &untagged.digest, &untagged.digest);
}

/// With delete_untagged on, a manifest pushed by digest that no tag, index or subject
/// ever references is garbage like an unreferenced blob: online GC must review it
/// after the delay (GitLab queues every manifest upload) and remove it and its blobs.
#[test]
fn untagged_manifest_pushed_by_digest_is_collected() {
    let berth = Berth::start_with(&[], fast_gc());
    berth.project("gc/bydigest", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/bydigest/app";
    let kept = Image::unique("bydigest kept", 1, 2 * KIB);
    reg.push(repo, &kept, Some("v1"));
    let orphan = Image::unique("bydigest never tagged", 2, 2 * KIB);
    reg.push(repo, &orphan, None);
    gc_ran(&reg, &data, repo, "bydigest junk");
    wait_within(
        Duration::from_secs(10),
        "GC to remove the never-tagged manifest and its blobs",
        || {
            let r = reg.get_manifest(repo, &orphan.digest);
            if r.status != 404 {
                return Err(format!("manifest pushed by digest still served: {r:?}"));
            }
            storage_diff(&data, &kept.blob_digests())
        },
    );
    reg.must_pull(repo, "v1", &kept.digest);
}

/// The review delay restarts whenever a client shows it is about to use a blob: an
/// upload of it finished again, or it was mounted again into a repository that
/// already links it. Each is repeated within every delay until a blob uploaded after
/// both (and never touched again) has been collected; they must still be there.
#[test]
fn reupload_and_mount_again_postpone_review() {
    let berth = Berth::start_with(&[], short_review());
    berth.project("gc/again", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let (repo, other) = ("gc/again/app", "gc/again/other");
    let reuploaded = bytes_for("again re-uploaded", 3 * KIB);
    let remounted = bytes_for("again re-mounted", 3 * KIB);
    let control = bytes_for("again control", 3 * KIB);
    let reuploaded_d = reg.upload(repo, &reuploaded);
    let remounted_d = reg.upload(repo, &remounted);
    reg.upload(other, &remounted);
    let control_d = reg.upload(repo, &control);
    let scopes = vec![
        format!("repository:{other}:pull,push"),
        format!("repository:{repo}:pull"),
    ];
    // What was found collected: checked by looking at the files only (a read would
    // postpone the review itself), always before touching the blob again (a new
    // upload after a collection would simply bring it back).
    let mut lost: BTreeSet<String> = BTreeSet::new();
    wait_for("GC to collect the control blob", || {
        let control_gone = !support::Storage::of(&data).has_blob(&control_d);
        for (what, d) in [
            ("re-uploaded", &reuploaded_d),
            ("mounted again", &remounted_d),
        ] {
            if !support::Storage::of(&data).has_blob(d) {
                lost.insert(format!("{what} blob {d}: file gone"));
            }
        }
        if control_gone {
            return Ok(());
        }
        if !lost.iter().any(|l| l.starts_with("re-uploaded")) {
            reg.upload(repo, &reuploaded);
        }
        if !lost.iter().any(|l| l.starts_with("mounted again")) {
            let m = reg.exchange(
                reg.v2(
                    Method::POST,
                    other,
                    &format!("blobs/uploads/?mount={remounted_d}&from={repo}"),
                ),
                &scopes,
            );
            match m.status {
                201 => {}
                // Not mountable any more: the source no longer has it.
                202 => {
                    lost.insert(format!(
                        "mounted again blob {remounted_d}: the mount found it gone ({m:?})"
                    ));
                }
                _ => panic!("mounting: {m:?}"),
            }
        }
        Err("the control blob is still on disk".into())
    });
    assert!(
        lost.is_empty(),
        "blobs collected although, within every review delay, their upload finished \
         again (201) or they were mounted again (201) into a repository already linking \
         them: {lost:#?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Offline GC
// ---------------------------------------------------------------------------

/// Write a file into blob storage under its own digest, with the given age.
fn plant_orphan(data_dir: &Path, label: &str, age: Duration) -> (String, PathBuf) {
    let bytes = bytes_for(label, 5 * KIB);
    let d = digest_of(&bytes);
    let path = blob_path(data_dir, &d);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    (d, path)
}

/// Untagged manifests are deleted by default (as GitLab's online GC does); this turns
/// that off, for `berth gc` without `-m`.
const KEEP_UNTAGGED: &[(&str, &str)] = &[("BERTH_GC_DELETE_UNTAGGED", "false")];

/// `berth gc` (the server running, online GC out of the way with the default 24h
/// delay): orphan files old enough are removed and counted, young ones kept; a blob
/// whose file was removed by hand is reported and makes the command fail;
/// `--dry-run` changes nothing; `-m` (or the default `gc.delete_untagged`) deletes
/// untagged manifests but keeps index children and referrers of kept manifests.
#[test]
fn offline_gc_finds_orphans_and_missing() {
    if support::skip_on_s3("plants orphan files with chosen modification times") {
        return;
    }
    let berth = Berth::start();
    berth.project("gc/offline", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/offline/app";

    let kept = Image::unique("offline kept", 2, 4 * KIB);
    reg.push(repo, &kept, Some("keep"));
    let sig = Image::signature(&kept, "offline kept");
    reg.push(repo, &sig, None);
    let amd = Image::unique("offline amd64", 1, 2 * KIB);
    let arm = Image::unique("offline arm64", 1, 2 * KIB);
    let index = Image::index(&[("amd64", &amd), ("arm64", &arm)]);
    reg.push(repo, &index, Some("multi"));
    let untagged = Image::unique("offline untagged", 1, 6 * KIB);
    reg.push(repo, &untagged, None);
    let stray = bytes_for("offline stray upload", 7 * KIB);
    let stray_d = reg.upload(repo, &stray);

    let (old_orphan, old_path) =
        plant_orphan(&data, "offline old orphan", Duration::from_secs(3 * 3600));
    let (_, young_path) = plant_orphan(&data, "offline young orphan", Duration::from_secs(0));
    // A referenced blob's bytes vanish (disk trouble, a bad restore).
    let lost = &kept.blobs[1];
    let lost_d = digest_of(lost);
    std::fs::remove_file(blob_path(&data, &lost_d)).unwrap();

    let everything: BTreeSet<String> = blob_files(&data);

    // Dry run: reports, deletes nothing, and still fails on the missing bytes.
    let (ok, out) = gc(&data, &["--dry-run", "--grace", "0s"], KEEP_UNTAGGED);
    assert!(!ok, "missing bytes must make berth gc fail:\n{out}");
    assert!(out.contains("(dry run)"), "{out}");
    assert_eq!(gc_count(&out, "manifests deleted"), 0, "{out}");
    assert_eq!(
        gc_count(&out, "blobs deleted"),
        1,
        "the stray upload:\n{out}"
    );
    assert_eq!(gc_count(&out, "orphaned files deleted"), 2, "{out}");
    assert_eq!(gc_count(&out, "blobs with missing bytes"), 1, "{out}");
    assert!(out.contains(&lost_d), "the missing blob is named:\n{out}");
    assert_eq!(blob_files(&data), everything, "a dry run deleted files");
    reg.blob(Method::HEAD, repo, &stray_d).expect(200);

    // Default grace (1h): only the old orphan goes; the stray blob and the young
    // orphan may belong to a push in flight.
    let (ok, out) = gc(&data, &[], KEEP_UNTAGGED);
    assert!(!ok, "missing bytes must make berth gc fail:\n{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "orphaned files deleted"), 1, "{out}");
    assert_eq!(gc_count(&out, "blobs with missing bytes"), 1, "{out}");
    assert!(out.contains(&lost_d), "{out}");
    assert!(!old_path.exists(), "old orphan {old_orphan} kept");
    assert!(
        young_path.exists(),
        "young orphan deleted despite the grace period"
    );
    reg.blob(Method::HEAD, repo, &stray_d).expect(200);

    // No grace: the stray blob and the young orphan go too.
    let (ok, out) = gc(&data, &["--grace", "0s"], KEEP_UNTAGGED);
    assert!(!ok, "{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 1, "{out}");
    assert_eq!(gc_count(&out, "orphaned files deleted"), 1, "{out}");
    assert_eq!(gc_count(&out, "blobs with missing bytes"), 1, "{out}");
    assert!(!young_path.exists());
    assert!(!support::Storage::of(&data).has_blob(&stray_d));
    reg.blob(Method::HEAD, repo, &stray_d).expect(404);

    // The lost bytes come back; now -m: the untagged manifest goes, the index
    // children and the signature of a tagged manifest stay.
    std::fs::write(blob_path(&data, &lost_d), lost).unwrap();
    let (ok, out) = gc(&data, &["--dry-run", "-m", "--grace", "0s"], &[]);
    assert!(ok, "{out}");
    assert_eq!(gc_count(&out, "manifests deleted"), 1, "{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 2, "{out}");
    assert_eq!(gc_count(&out, "blobs with missing bytes"), 0, "{out}");
    reg.must_pull(repo, &untagged.digest, &untagged.digest);

    let (ok, out) = gc(&data, &["-m", "--grace", "0s"], &[]);
    assert!(ok, "{out}");
    assert_eq!(gc_count(&out, "manifests deleted"), 1, "{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 2, "{out}");
    assert_eq!(gc_count(&out, "orphaned files deleted"), 0, "{out}");
    reg.get_manifest(repo, &untagged.digest).expect(404);
    reg.must_pull(repo, "keep", &kept.digest);
    reg.must_pull(repo, &sig.digest, &sig.digest);
    reg.must_pull(repo, "multi", &index.digest);
    storage_diff(&data, &union_of([&kept, &sig, &index])).expect("exactly the kept blobs");
    // What the offline runs freed is counted where the admin area reads it.
    let freed = |column: &str| {
        berth.query_i64(&format!(
            "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM gc_freed"
        ))
    };
    assert!(freed("manifests") >= 1, "manifests freed by berth gc");
    assert!(freed("blobs") >= 2, "blobs freed by berth gc");
    assert!(freed("bytes") > 0, "bytes freed by berth gc");

    // Nothing left to do.
    let (ok, out) = gc(&data, &["-m", "--grace", "0s"], &[]);
    assert!(ok, "{out}");
    assert_eq!(gc_count(&out, "manifests deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "blobs deleted"), 0, "{out}");
    assert_eq!(gc_count(&out, "orphaned files deleted"), 0, "{out}");
}

/// `berth gc -m` runs while the server serves (it says it is safe then, and its grace
/// period exists "so pushes in flight keep theirs"): the platform manifests of a
/// multi-arch push in flight (pushed by digest a moment ago, the index not yet) must
/// survive it, so the index push that follows succeeds.
#[test]
fn offline_gc_m_spares_a_multi_arch_push_in_flight() {
    let berth = Berth::start();
    berth.project("gc/inflight", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let repo = "gc/inflight/app";
    let amd = Image::unique("inflight amd64", 1, 2 * KIB);
    let arm = Image::unique("inflight arm64", 1, 2 * KIB);
    reg.push(repo, &amd, None);
    reg.push(repo, &arm, None);
    let (ok, out) = gc(&data, &["-m"], &[]);
    assert!(ok, "{out}");
    let index = Image::index(&[("amd64", &amd), ("arm64", &arm)]);
    let r = reg.put_manifest(repo, "multi", &index);
    assert_eq!(
        r.status, 201,
        "the index of a push in flight was refused after `berth gc -m` (default grace 1h) \
         ran: {r:?}\nberth gc output:\n{out}"
    );
    reg.must_pull(repo, "multi", &index.digest);
}

// ---------------------------------------------------------------------------
// 6. Storage accounting
// ---------------------------------------------------------------------------

/// `berth admin usage` as (path → bytes), projects and repositories alike.
fn usage(data_dir: &Path) -> BTreeMap<String, u64> {
    let (ok, out, err) = berth_cmd(data_dir, &["admin", "usage"], &[]);
    assert!(ok, "berth admin usage failed: {err}");
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let (path, bytes) = l.trim().split_once('\t')?;
            Some((path.to_string(), bytes.trim().parse().ok()?))
        })
        .collect()
}

struct Api {
    http: Client,
    base: String,
    pat: String,
}

impl Api {
    fn new(url: &str, data_dir: &Path) -> Api {
        Api {
            http: Client::new(),
            base: format!("{url}/api/v4"),
            pat: admin_pat(data_dir),
        }
    }

    fn call(&self, method: Method, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("PRIVATE-TOKEN", &self.pat)
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::GET, path);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    fn project_id(&self, path: &str) -> i64 {
        self.get(&format!("/projects/{}", path.replace('/', "%2F")))["id"]
            .as_i64()
            .expect("project id")
    }

    /// Repository path → id.
    fn repositories(&self, project: i64) -> BTreeMap<String, i64> {
        self.get(&format!("/projects/{project}/registry/repositories"))
            .as_array()
            .expect("repository list")
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_string(),
                    r["id"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn size(&self, repository: i64) -> u64 {
        self.get(&format!("/registry/repositories/{repository}?size=true"))["size"]
            .as_u64()
            .expect("size")
    }

    /// A project's registry size (`statistics.container_registry_size`).
    fn project_size(&self, project: &str) -> u64 {
        let id = project.replace('/', "%2F");
        self.get(&format!("/projects/{id}?statistics=true"))["statistics"]
            ["container_registry_size"]
            .as_u64()
            .expect("statistics.container_registry_size")
    }
}

/// GitLab's measure: the distinct layers (not configs, not manifests) of the tagged
/// images.
fn expected_size(images: &[&Image]) -> u64 {
    let mut layers: BTreeMap<String, u64> = BTreeMap::new();
    for m in images {
        for b in &m.blobs[1..] {
            layers.insert(digest_of(b), b.len() as u64);
        }
    }
    layers.values().sum()
}

/// Two repositories of one project share a layer (and two images of one repository
/// share it too): the REST `size` and `berth admin usage` count it once per
/// repository and once for the project; an untagged image does not count; after a
/// tag is deleted the numbers drop by exactly that image's own layers, and GC frees
/// its files.
#[test]
fn usage_is_deduplicated() {
    let berth = Berth::start_with(&[], fast_gc());
    berth.project("gc/usage", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let api = Api::new(&berth.url, &data);
    let shared = bytes_for("usage shared layer", 100 * KIB);
    let image = |label: &str, unique: usize| {
        Image::new(
            config_for(label, "amd64"),
            vec![shared.clone(), bytes_for(label, unique)],
        )
    };
    let (one, two) = ("gc/usage/one", "gc/usage/two");
    let one_a = image("usage one a", 10 * KIB);
    let one_b = image("usage one b", 20 * KIB);
    let two_a = image("usage two a", 30 * KIB);
    reg.push(one, &one_a, Some("a"));
    reg.push(one, &one_b, Some("b"));
    reg.push(two, &two_a, Some("a"));
    let untagged = image("usage two untagged", 40 * KIB);
    reg.push(two, &untagged, None);

    let pid = api.project_id("gc/usage");
    let repos = api.repositories(pid);
    let (rid_one, rid_two) = (repos[one], repos[two]);
    let check = |one_images: &[&Image]| -> Result<(), String> {
        let want_one = expected_size(one_images);
        let want_two = expected_size(&[&two_a]);
        let mut all = one_images.to_vec();
        all.push(&two_a);
        let want_project = expected_size(&all);
        let got = (api.size(rid_one), api.size(rid_two));
        if got != (want_one, want_two) {
            return Err(format!(
                "REST sizes {got:?}, expected {:?}",
                (want_one, want_two)
            ));
        }
        let project = api.project_size("gc/usage");
        if project != want_project {
            return Err(format!(
                "REST project size {project}, expected {want_project}"
            ));
        }
        let u = usage(&data);
        let got = (
            u.get("gc/usage").copied(),
            u.get(one).copied(),
            u.get(two).copied(),
        );
        let want = (Some(want_project), Some(want_one), Some(want_two));
        if got != want {
            return Err(format!(
                "berth admin usage {u:?}: got {got:?}, expected {want:?}"
            ));
        }
        Ok(())
    };
    check(&[&one_a, &one_b]).unwrap();

    reg.delete_manifest(one, "b").expect(202);
    wait_for("usage to drop after one:b was untagged", || {
        check(&[&one_a])
    });
    // With delete_untagged on, GC may already have taken the untagged manifest (how
    // soon depends on the machine and the metadata backend); gone either way.
    let r = reg.delete_manifest(two, &untagged.digest);
    assert!(
        matches!(r.status, 202 | 404),
        "deleting the untagged manifest: {r:?}"
    );
    let live = union_of([&one_a, &two_a]);
    wait_for("GC to free the files of one:b", || {
        storage_diff(&data, &live)
    });
    check(&[&one_a]).unwrap();
}

// ---------------------------------------------------------------------------
// 7. Crash safety
// ---------------------------------------------------------------------------

/// A body reader that pauses after `pause_at` bytes: it reports through `reached`
/// and waits on `resume` (the server gets killed in between), then goes on.
struct PausingReader {
    data: Arc<Vec<u8>>,
    pos: usize,
    pause_at: usize,
    reached: Option<mpsc::Sender<()>>,
    resume: mpsc::Receiver<()>,
}

impl Read for PausingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.pause_at {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(());
                let _ = self.resume.recv();
            }
        }
        let end = if self.pos < self.pause_at {
            self.pause_at
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.pos).min(256 * KIB);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// SIGKILL in the middle of a 64 MiB streamed upload, then again while online GC
/// (near-zero delay) works through many deleted tags: after each restart every
/// tagged image pulls, the interrupted upload resumes and completes, and the GC
/// work left in the queues completes (storage converges to the reachable blobs).
#[test]
fn kill_during_push_and_gc_keeps_tagged_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Declared before the servers, so dropped after them.
    let _database = support::database_in(root);
    let repo = "gc/crash/app";
    support::prepare_storage(root);
    let server = Server::start(root, &[]);
    let data = server.data_dir();
    create_project(&data, "gc/crash");
    let reg = Reg::new(&server.url);
    let mut tagged: BTreeMap<String, Image> = BTreeMap::new();
    for i in 0..3 {
        let m = Image::unique(&format!("crash before {i}"), 2, 8 * KIB);
        reg.push(repo, &m, Some(&format!("v{i}")));
        tagged.insert(format!("v{i}"), m);
    }

    // A 64 MiB streamed PATCH; the server dies after it got 16 MiB.
    let big = Arc::new(bytes_for("crash big layer", 64 * MIB));
    let big_d = digest_of(&big);
    let r = reg.send(repo, reg.v2(Method::POST, repo, "blobs/uploads/"));
    r.expect(202);
    let session = path_of_location(r.header("Location").expect("Location"));
    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let reader = PausingReader {
        data: big.clone(),
        pos: 0,
        pause_at: 16 * MIB,
        reached: Some(reached_tx),
        resume: resume_rx,
    };
    let patch = {
        let token = reg.token(&Reg::scopes(repo));
        let url = format!("{}{session}", reg.url);
        let http = reg.http.clone();
        std::thread::spawn(move || {
            http.patch(url)
                .bearer_auth(token)
                .header("Content-Type", "application/octet-stream")
                .body(Body::new(reader))
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    reached_rx
        .recv_timeout(WAIT)
        .expect("the upload never sent 16 MiB");
    // The crash comes once the server has stored part of it: at once on the
    // filesystem, after a whole multipart part (and its saved state) on S3.
    wait_for("the server to store part of the upload", || {
        let r = reg.send(repo, reg.v2_path(Method::GET, &session));
        match r.header("Range") {
            Some(range) if range != "0-0" => Ok(()),
            other => Err(format!("Range {other:?}")),
        }
    });
    server.kill9();
    resume_tx.send(()).unwrap();
    let outcome = patch.join().unwrap();
    assert!(
        !matches!(outcome, Ok(s) if s < 300),
        "the PATCH succeeded although the server was killed: {outcome:?}"
    );

    support::prepare_storage(root);
    let server = Server::start(root, &[]);
    let reg = Reg::new(&server.url);
    for (tag, m) in &tagged {
        reg.must_pull(repo, tag, &m.digest);
    }
    // The interrupted upload resumes where the server's copy ends.
    let r = reg.send(repo, reg.v2_path(Method::GET, &session));
    r.expect(204);
    let range = r.header("Range").expect("Range").to_string();
    let have: usize = range
        .strip_prefix("0-")
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n + 1)
        .unwrap_or_else(|| panic!("bad Range {range:?}"));
    assert!(
        have <= 16 * MIB,
        "the server holds {have} bytes of the first 16 MiB"
    );
    let r = reg.send(
        repo,
        reg.v2_path(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{have}-{}", big.len() - 1))
            .body(big[have..].to_vec()),
    );
    r.expect(202);
    assert_eq!(
        r.header("Range"),
        Some(format!("0-{}", big.len() - 1).as_str()),
        "{r:?}"
    );
    let finish = path_of_location(r.header("Location").expect("Location"));
    let sep = if finish.contains('?') { '&' } else { '?' };
    let r = reg.send(
        repo,
        reg.v2_path(Method::PUT, &format!("{finish}{sep}digest={big_d}"))
            .header("Content-Length", "0"),
    );
    r.expect(201);
    let with_big = Image::new(config_for("crash big image", "amd64"), vec![big.to_vec()]);
    // The big layer is in place; only the config is left to upload.
    reg.upload(repo, &with_big.blobs[0]);
    reg.put_manifest(repo, "big", &with_big).expect(201);
    reg.must_pull(repo, "big", &with_big.digest);
    tagged.insert("big".into(), with_big);

    // Many images, then GC with a near-zero delay: delete most tags at once and
    // kill the server as soon as GC deleted the first manifest.
    let mut doomed = Vec::new();
    for i in 0..30 {
        let m = Image::unique(&format!("crash gc {i}"), 2, 16 * KIB);
        let tag = format!("g{i}");
        reg.push(repo, &m, Some(&tag));
        if i % 5 == 0 {
            tagged.insert(tag, m);
        } else {
            doomed.push((tag, m));
        }
    }
    server.kill9();
    let gc_env = [
        ("BERTH_GC_REVIEW_DELAY", "1ms"),
        ("BERTH_GC_DELETE_UNTAGGED", "true"),
    ];
    support::prepare_storage(root);
    let server = Server::start(root, &gc_env);
    let reg = Reg::new(&server.url);
    for (tag, _) in &doomed {
        reg.delete_manifest(repo, tag).expect(202);
    }
    let first = &doomed[0].1.digest;
    wait_for("GC to delete the first untagged manifest", || {
        let r = reg.get_manifest(repo, first);
        if r.status == 404 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    server.kill9();

    support::prepare_storage(root);
    let server = Server::start(root, &gc_env);
    let reg = Reg::new(&server.url);
    for (tag, m) in &tagged {
        reg.must_pull(repo, tag, &m.digest);
    }
    let reachable = union_of(tagged.values());
    wait_for(
        "storage to hold exactly the reachable blobs after the restart",
        || storage_diff(&data, &reachable),
    );
    for (tag, m) in &tagged {
        reg.must_pull(repo, tag, &m.digest);
    }
    let believed: BTreeSet<String> = tagged.keys().cloned().collect();
    assert_eq!(reg.tags(repo), believed);
}

fn path_of_location(location: &str) -> String {
    if location.starts_with('/') {
        location.to_string()
    } else {
        let u = reqwest::Url::parse(location).expect("Location");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }
}

impl Reg {
    /// A request to a server-relative path (an upload session's Location).
    fn v2_path(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }
}

/// Online GC removes a blob's metadata first and its bytes afterwards, under the
/// store's exclusive lock. A publishing upload holds that lock shared (here: the test
/// holds it, as a long fsync would), so GC waits between the two steps; SIGKILL it
/// there. After the restart every tag pulls, and once the queues drained no
/// unreferenced file may remain: the interrupted deletion must complete.
#[test]
fn kill_between_gc_metadata_and_byte_deletion_leaves_no_orphans() {
    if support::skip_on_s3("holds the filesystem store's gc.lock from the test process") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Declared before the servers, so dropped after them.
    let _database = support::database_in(root);
    let repo = "gc/window/app";
    support::prepare_storage(root);
    let server = Server::start(root, &[]);
    let data = server.data_dir();
    create_project(&data, "gc/window");
    let reg = Reg::new(&server.url);
    let kept = Image::unique("window kept", 2, 4 * KIB);
    reg.push(repo, &kept, Some("kept"));
    let doomed: Vec<Image> = (0..5)
        .map(|i| Image::unique(&format!("window doomed {i}"), 2, 4 * KIB))
        .collect();
    for (i, m) in doomed.iter().enumerate() {
        reg.push(repo, m, Some(&format!("d{i}")));
    }
    server.kill9();

    let gc_env = [
        ("BERTH_GC_REVIEW_DELAY", "1ms"),
        ("BERTH_GC_DELETE_UNTAGGED", "true"),
    ];
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join("storage/gc.lock"))
        .unwrap();
    lock.lock_shared().unwrap();
    support::prepare_storage(root);
    let server = Server::start(root, &gc_env);
    let reg = Reg::new(&server.url);
    for i in 0..doomed.len() {
        reg.delete_manifest(repo, &format!("d{i}")).expect(202);
    }
    // `berth gc --dry-run` reports files whose metadata is gone: GC reviewed blobs
    // and now waits for the lock to delete their bytes.
    let pending = wait_for("GC to remove blob metadata and wait for the lock", || {
        let (_, out) = gc(&data, &["--dry-run", "--grace", "0s"], &gc_env);
        match gc_count(&out, "orphaned files deleted") {
            0 => Err(out),
            n => Ok(n),
        }
    });
    assert_eq!(
        storage_diff(&data, &union_of(doomed.iter().chain([&kept]))),
        Ok(()),
        "no file may go while the lock is held"
    );
    server.kill9();
    drop(lock);
    eprintln!("killed with {pending} blob files whose metadata GC had already removed");

    support::prepare_storage(root);
    let server = Server::start(root, &gc_env);
    let reg = Reg::new(&server.url);
    reg.must_pull(repo, "kept", &kept.digest);
    // Rounds come every 200 ms: far less than this once the queues drained.
    wait_within(
        Duration::from_secs(20),
        "storage to hold exactly the reachable blobs after the restart",
        || storage_diff(&data, &kept.blob_digests()),
    );
    reg.must_pull(repo, "kept", &kept.digest);
}

// ---------------------------------------------------------------------------
// 8. Repository deletion
// ---------------------------------------------------------------------------

/// Deleting a repository (REST API) lets GC free the blobs only it used; a layer a
/// second repository shares stays, and that repository still pulls.
#[test]
fn repository_delete_frees_only_unshared_blobs() {
    let berth = Berth::start_with(&[], fast_gc());
    berth.project("gc/repodel", "private");
    let reg = Reg::new(&berth.url);
    let data = berth.data_dir();
    let api = Api::new(&berth.url, &data);
    let shared = bytes_for("repodel shared", 16 * KIB);
    let gone = Image::new(
        config_for("repodel gone", "amd64"),
        vec![shared.clone(), bytes_for("repodel gone layer", 4 * KIB)],
    );
    let stays = Image::new(
        config_for("repodel stays", "amd64"),
        vec![shared.clone(), bytes_for("repodel stays layer", 4 * KIB)],
    );
    reg.push("gc/repodel/gone", &gone, Some("v1"));
    reg.push("gc/repodel/stays", &stays, Some("v1"));
    let pid = api.project_id("gc/repodel");
    let rid = api.repositories(pid)["gc/repodel/gone"];
    let (status, body) = api.call(
        Method::DELETE,
        &format!("/projects/{pid}/registry/repositories/{rid}"),
    );
    assert_eq!(status, 202, "{body}");
    wait_for("GC to free the deleted repository's own blobs", || {
        storage_diff(&data, &stays.blob_digests())
    });
    reg.must_pull("gc/repodel/stays", "v1", &stays.digest);
    let r = reg.get_manifest("gc/repodel/gone", "v1");
    assert_eq!(r.status, 404, "{r:?}");
}
