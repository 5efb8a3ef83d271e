//! End-to-end fault tests: what a crash, a full disk, a cancelled request or a lost
//! database connection leaves behind. Each test starts the real `berth` binary and
//! talks raw HTTP (Docker token flow) to it; the rule they check is DESIGN.md's: every
//! acknowledged write survives, nothing half-done becomes visible, and a failed write
//! leaves every connection and lock usable, so the node recovers without a restart.
//!
//! - the data directory on a small tmpfs that fills up (blobs, then the SQLite
//!   database): a clear `507` OCI error while full, writes work again once space is
//!   freed (needs root to mount; skipped loudly otherwise, a failure when `CI=true`);
//! - many requests whose clients vanish mid-request (manifest PUTs, blob PATCHes);
//! - SIGKILL of `berth serve` at chosen points of a push and after a tag delete;
//! - PostgreSQL connections terminated (`pg_terminate_backend`) mid-push: requests
//!   fail cleanly and the node recovers (needs PostgreSQL; skipped loudly unless
//!   `BERTH_TEST_REQUIRE_POSTGRES=1`);
//! - the S3 service (a moto server of the test's own, behind a TCP gate) gone
//!   mid-push: 503 with Retry-After, and recovery once it is back.
//!
//! SIGKILL during a streamed upload and during online GC is in tests/gc.rs, a cleanup
//! run cut by a restart in tests/cleanup.rs, an interrupted `berth migrate` in
//! tests/migrate.rs, a node killed mid-push in tests/multinode.rs.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use support::process::Server;
use support::{eventually, sha256_hex, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Deterministic, incompressible bytes for a label (distinct labels, distinct blobs).
fn bytes_for(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = hex::decode(sha256_hex(label.as_bytes())).unwrap();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = hex::decode(sha256_hex(&block)).unwrap();
    }
    out.truncate(len);
    out
}

fn config_for(label: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "test": label } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .unwrap()
}

#[derive(Clone, Debug)]
struct Image {
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<Vec<u8>>,
}

impl Image {
    /// An image with its own config and `layers` layers of `size` bytes; `padding`
    /// bytes of annotation make the manifest itself large (it is stored in the
    /// database, so big manifests fill the database).
    fn with_padding(label: &str, layers: usize, size: usize, padding: usize) -> Image {
        let config = config_for(label);
        let layers: Vec<Vec<u8>> = (0..layers)
            .map(|i| bytes_for(&format!("{label}/layer{i}"), size))
            .collect();
        Image::of(label, config, layers, padding)
    }

    fn unique(label: &str, layers: usize, size: usize) -> Image {
        Image::with_padding(label, layers, size, 0)
    }

    /// Another manifest over the same blobs as `base` (nothing to upload).
    fn sibling(base: &Image, label: &str, padding: usize) -> Image {
        Image::of(
            label,
            base.blobs[0].clone(),
            base.blobs[1..].to_vec(),
            padding,
        )
    }

    fn of(label: &str, config: Vec<u8>, layers: Vec<Vec<u8>>, padding: usize) -> Image {
        let descriptors: Vec<Value> = layers
            .iter()
            .map(|l| json!({ "mediaType": OCI_LAYER, "digest": digest_of(l), "size": l.len() }))
            .collect();
        let pad = hex::encode(bytes_for(&format!("{label}/padding"), padding / 2));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len() },
            "layers": descriptors,
            "annotations": { "test.label": label, "test.padding": pad },
        }))
        .unwrap();
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            digest: digest_of(&manifest),
            manifest,
            blobs,
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

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

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {self:?}", self.what))
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected {status}; got {self:?}");
        self
    }

    /// The registry's answer while its storage is full: 507 with an OCI error body
    /// whose message says so.
    #[track_caller]
    fn expect_storage_full(&self) {
        assert_eq!(
            self.status, 507,
            "expected 507 (storage full); got {self:?}"
        );
        let body = self.json();
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("storage is full"),
            "the error must say the registry's storage is full: {self:?}"
        );
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
/// cached per repository (tokens live 5 minutes; every test here is far shorter).
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
                .timeout(WAIT)
                .build()
                .expect("http client"),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn token(&self, repo: &str) -> String {
        if let Some(t) = self.tokens.lock().unwrap().get(repo) {
            return t.clone();
        }
        let scope = format!("repository:{repo}:pull,push,delete");
        let url = format!(
            "{}/jwt/auth?service=container_registry&scope={}",
            self.url,
            scope.replace(':', "%3A").replace(',', "%2C")
        );
        let resp = self
            .http
            .get(&url)
            .basic_auth("root", Some(ROOT_PASSWORD))
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("token response is JSON");
        assert_eq!(status, 200, "token for {scope}: {body}");
        let token = body["token"].as_str().expect("token").to_string();
        self.tokens
            .lock()
            .unwrap()
            .insert(repo.to_string(), token.clone());
        token
    }

    fn v2(&self, method: Method, repo: &str, rest: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/v2/{repo}/{rest}", self.url))
    }

    /// A request to a server-relative path (an upload session's Location).
    fn at(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    fn try_send(&self, repo: &str, rb: RequestBuilder) -> Result<Resp, String> {
        let req = rb.bearer_auth(self.token(repo)).build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let resp = self
            .http
            .execute(req)
            .map_err(|e| format!("{what}: {e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .map_err(|e| format!("{what}: reading the body: {e:?}"))?
            .to_vec();
        Ok(Resp {
            what,
            status,
            headers,
            body,
        })
    }

    #[track_caller]
    fn send(&self, repo: &str, rb: RequestBuilder) -> Resp {
        self.try_send(repo, rb).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Monolithic blob upload; returns the response.
    fn upload(&self, repo: &str, data: &[u8]) -> Resp {
        let digest = digest_of(data);
        self.send(
            repo,
            self.v2(
                Method::POST,
                repo,
                &format!("blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        )
    }

    fn put_manifest(&self, repo: &str, reference: &str, m: &Image) -> Resp {
        self.send(
            repo,
            self.v2(Method::PUT, repo, &format!("manifests/{reference}"))
                .header("Content-Type", OCI_MANIFEST)
                .body(m.manifest.clone()),
        )
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.send(
            repo,
            self.v2(Method::GET, repo, &format!("manifests/{reference}"))
                .header("Accept", OCI_MANIFEST),
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

    /// Upload the blobs and PUT the manifest under `tag`; every step must succeed.
    #[track_caller]
    fn push(&self, repo: &str, m: &Image, tag: &str) {
        for b in &m.blobs {
            self.upload(repo, b).expect(201);
        }
        let r = self.put_manifest(repo, tag, m);
        r.expect(201);
        assert_eq!(r.header("Docker-Content-Digest"), Some(m.digest.as_str()));
    }

    /// Pull `tag` as a client would: the manifest is `m`'s, and every blob answers 200
    /// with its bytes.
    #[track_caller]
    fn must_pull(&self, repo: &str, tag: &str, m: &Image) {
        let r = self.get_manifest(repo, tag);
        r.expect(200);
        assert_eq!(digest_of(&r.body), m.digest, "manifest of {repo}:{tag}");
        for b in &m.blobs {
            let r = self.blob(Method::GET, repo, &digest_of(b));
            r.expect(200);
            assert!(
                r.body == *b,
                "blob {} of {repo}:{tag} differs",
                digest_of(b)
            );
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

    /// Every tag listed must pull (no tag pointing at a half-written manifest).
    #[track_caller]
    fn tags_all_resolve(&self, repo: &str) -> BTreeSet<String> {
        let tags = self.tags(repo);
        for t in &tags {
            let r = self.get_manifest(repo, t);
            assert_eq!(
                r.status, 200,
                "listed tag {repo}:{t} does not resolve: {r:?}"
            );
        }
        tags
    }

    /// Start a chunked upload session; returns its server-relative Location.
    fn start_session(&self, repo: &str) -> String {
        let r = self.send(repo, self.v2(Method::POST, repo, "blobs/uploads/"));
        r.expect(202);
        path_of_location(r.header("Location").expect("Location"))
    }
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

fn with_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

// ---------------------------------------------------------------------------
// Processes and commands
// ---------------------------------------------------------------------------

/// `berth ARGS` in `root` on its data directory: (success, stdout, stderr).
fn berth_cmd(root: &Path, args: &[&str]) -> (bool, String, String) {
    let (command, rest) = args.split_first().expect("a command");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg(command)
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(rest)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .expect("running berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn create_project(root: &Path, path: &str) {
    let (ok, _, err) = berth_cmd(
        root,
        &[
            "admin",
            "project",
            "create",
            path,
            "--parents",
            "--visibility",
            "private",
        ],
    );
    assert!(ok, "creating project {path} failed: {err}");
}

fn admin_pat(root: &Path) -> String {
    let (ok, out, err) = berth_cmd(
        root,
        &[
            "admin", "token", "create", "--user", "root", "--name", "faults", "--scopes", "api",
        ],
    );
    assert!(ok, "creating a token failed: {err}");
    out.trim().to_string()
}

/// The number on a `berth gc` summary line such as `  blobs with missing bytes: 0`.
fn gc_count(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` count in berth gc output:\n{out}"))
}

/// No blob row without its bytes: what `berth gc --dry-run` reports.
#[track_caller]
fn assert_no_blob_without_bytes(root: &Path) {
    let (ok, out, err) = berth_cmd(root, &["gc", "--dry-run"]);
    assert!(ok, "berth gc --dry-run failed: {err}");
    assert_eq!(
        gc_count(&out, "blobs with missing bytes"),
        0,
        "{out}\n{err}"
    );
}

/// A REST call with root's personal access token: (status, body).
fn api(url: &str, pat: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = Client::new()
        .request(method.clone(), format!("{url}/api/v4{path}"))
        .header("PRIVATE-TOKEN", pat);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// ---------------------------------------------------------------------------
// 1. A full disk
// ---------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (`mount`'s syntax, e.g. `24m`) on `dir`; `None`, said
    /// loudly, when this is not root or the mount fails, unless `CI=true`, where the
    /// test must run and that is a failure.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                })
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the full-disk test mounts a tmpfs (needs root) and CI must run it: {why}");
        }
        eprintln!("!!! SKIPPED: the full-disk test could not mount a tmpfs (needs root): {why}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there does not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Grow `path` until the filesystem is full, then give back `leave` bytes (tmpfs
/// frees the pages of a truncated file at once).
fn fill(path: &Path, leave: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("filler file");
    let chunk = vec![0x5a_u8; 64 * KIB];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.flush();
    let len = f.metadata().expect("filler size").len();
    f.set_len(len.saturating_sub(leave))
        .expect("shrinking the filler");
}

/// The data directory (SQLite database and blob files) on a 24 MiB tmpfs. Blobs hit
/// the full disk first (a monolithic upload and a chunk of a session), then the
/// database (manifests, stored in it, until one does not fit) and a REST change. Each
/// answers 507 with a message that says the storage is full; nothing half-written
/// is visible; and once the filler file is deleted every kind of write works again
/// without a restart, the interrupted session included.
#[test]
fn full_disk_fails_clearly_and_writes_resume_when_space_returns() {
    if support::postgres_mode() || support::s3_mode() {
        eprintln!(
            "!!! SKIPPED here: the full-disk test runs on SQLite and blob files (the \
             first pass), where both share the data directory's disk"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(_tmpfs) = Tmpfs::mount(&root.join("data"), "24m") else {
        return;
    };
    // Declared after the mount, so stopped before it is unmounted.
    let server = Server::start(root, &[]);
    let data = server.data_dir();
    let filler = data.join("filler");
    create_project(root, "faults/disk");
    let pat = admin_pat(root);
    // Never used before the disk fills: its first use would record when it was used.
    let unused_pat = admin_pat(root);
    let repo = "faults/disk/app";
    let reg = Reg::new(&server.url);
    let base = Image::unique("disk base", 2, 64 * KIB);
    reg.push(repo, &base, "base");
    // Fetched now: whether the token service can answer on a full disk is not what
    // this test is about.
    reg.token(repo);

    // Blobs first: 1 MiB left, a 4 MiB blob.
    fill(&filler, MIB as u64);
    let big = bytes_for("disk big blob", 4 * MIB);
    let big_d = digest_of(&big);
    reg.upload(repo, &big).expect_storage_full();
    reg.blob(Method::HEAD, repo, &big_d).expect(404);
    // A chunk of an upload session: the session stays where it was.
    let session = reg.start_session(repo);
    let r = reg.send(
        repo,
        reg.at(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .body(big.clone()),
    );
    r.expect_storage_full();
    let r = reg.send(repo, reg.at(Method::GET, &session));
    r.expect(204);
    assert_eq!(
        r.header("Range"),
        Some("0-0"),
        "a chunk that did not fit is not counted: {r:?}"
    );

    // Then the database: no space at all, and manifests (stored in the database,
    // over blobs already there) until one does not fit.
    fill(&filler, 0);
    let mut acknowledged = BTreeSet::from(["base".to_string()]);
    let mut refused = None;
    for i in 0..200 {
        let m = Image::sibling(&base, &format!("disk manifest {i}"), 256 * KIB);
        let tag = format!("m{i}");
        let r = reg.put_manifest(repo, &tag, &m);
        if r.status == 201 {
            acknowledged.insert(tag);
            continue;
        }
        r.expect_storage_full();
        refused = Some((tag, m));
        break;
    }
    let (refused_tag, refused_m) = refused.expect("the database never filled the disk");
    assert!(
        server.log().contains("database or disk is full"),
        "the database itself must have hit the full disk"
    );
    reg.get_manifest(repo, &refused_tag).expect(404);
    // A REST change, while the disk is full.
    let (status, body) = api(
        &server.url,
        &pat,
        Method::POST,
        "/groups",
        Some(json!({"name": "full", "path": "full"})),
    );
    assert!(
        status == 507
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("storage is full")),
        "a REST write on a full disk: {status} {body}"
    );

    // Reads still work, even with a token whose last-used time cannot be written.
    let (status, body) = api(&server.url, &unused_pat, Method::GET, "/projects", None);
    assert_eq!(status, 200, "a REST read on a full disk: {body}");

    // Space again: every kind of write works, without a restart.
    std::fs::remove_file(&filler).unwrap();
    reg.put_manifest(repo, &refused_tag, &refused_m).expect(201);
    acknowledged.insert(refused_tag);
    // The interrupted session takes the whole blob now.
    let r = reg.send(
        repo,
        reg.at(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .body(big.clone()),
    );
    r.expect(202);
    let finish = path_of_location(r.header("Location").expect("Location"));
    let r = reg.send(
        repo,
        reg.at(
            Method::PUT,
            &with_query(&finish, &format!("digest={big_d}")),
        ),
    );
    r.expect(201);
    let after = Image::unique("disk after", 1, 32 * KIB);
    reg.push(repo, &after, "after");
    acknowledged.insert("after".into());
    reg.delete_manifest(repo, "m0").expect(202);
    acknowledged.remove("m0");
    let (status, body) = api(
        &server.url,
        &pat,
        Method::POST,
        "/groups",
        Some(json!({"name": "spacious", "path": "spacious"})),
    );
    assert_eq!(status, 201, "a REST write once space returned: {body}");

    // Nothing half-written is visible.
    assert_eq!(reg.tags_all_resolve(repo), acknowledged);
    reg.must_pull(repo, "base", &base);
    reg.must_pull(repo, "after", &after);
    reg.blob(Method::HEAD, repo, &big_d).expect(200);
    let (status, groups) = api(&server.url, &pat, Method::GET, "/groups?search=full", None);
    assert_eq!(status, 200, "{groups}");
    assert!(
        !groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["path"] == "full"),
        "the refused group must not exist: {groups}"
    );
    assert_no_blob_without_bytes(root);
}

// ---------------------------------------------------------------------------
// 2. Cancelled requests
// ---------------------------------------------------------------------------

/// Send a request by hand and hang up: after the whole request (the server may be
/// anywhere in its handler, mid-transaction included) or after `body_part` bytes of
/// the body.
fn send_and_hang_up(addr: &str, head: &str, body: &[u8], body_part: Option<usize>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..body_part.unwrap_or(body.len())]);
    let _ = s.flush();
    // Closing with unread data in the buffer resets the connection.
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Cancel manifest PUTs at a known point: the test holds SQLite's write lock, so the
/// server's writer sits in `BEGIN IMMEDIATE` (SQLite's busy wait) and the other PUTs
/// queue for it. Each client sends its headers with `Expect: 100-continue`, waits for
/// the server to ask for the body (its handler is running), sends the body and hangs
/// up; then the lock is released.
fn hang_up_while_the_writer_waits(root: &Path, addr: &str, token: &str, repo: &str, base: &Image) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("sqlite://{}", root.join("data/berth.db").display());
    let mut lock = rt
        .block_on(sqlx::SqliteConnection::connect(&url))
        .expect("opening the database");
    rt.block_on(sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut lock))
        .expect("taking the write lock");
    let mut threads = Vec::new();
    for i in 0..8 {
        let m = Image::sibling(base, &format!("locked {i}"), 4 * KIB);
        let head = format!(
            "PUT /v2/{repo}/manifests/locked{i} HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: {OCI_MANIFEST}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            m.manifest.len()
        );
        let addr = addr.to_string();
        threads.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).expect("connecting");
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut byte).expect("waiting for 100 Continue");
                assert_eq!(
                    n,
                    1,
                    "the server hung up: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.push(byte[0]);
            }
            let answer = String::from_utf8_lossy(&seen);
            assert!(answer.starts_with("HTTP/1.1 100"), "{answer}");
            s.write_all(&m.manifest).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Both);
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    rt.block_on(sqlx::raw_sql("ROLLBACK").execute(&mut lock))
        .expect("releasing the write lock");
    rt.block_on(lock.close()).expect("closing");
}

/// Many requests whose clients disconnect while the server works on them (manifest
/// PUTs, which write the database in one transaction; blob PATCHes cut mid-body)
/// leave the single SQLite writer (or PostgreSQL's pool) usable: pushes, tag deletes
/// and REST writes work right after, and every tag the cancelled PUTs left behind
/// resolves.
#[test]
fn cancelled_requests_leave_writes_working() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::prepare_storage(root);
    let _database = support::database_in(root);
    let server = Server::start(root, &[]);
    create_project(root, "faults/cancel");
    let pat = admin_pat(root);
    let repo = "faults/cancel/app";
    let reg = Reg::new(&server.url);
    let base = Image::unique("cancel base", 2, 16 * KIB);
    reg.push(repo, &base, "base");
    let token = reg.token(repo);
    let addr = server.url.trim_start_matches("http://").to_string();

    for round in 0..3 {
        let mut threads = Vec::new();
        for i in 0..24 {
            let m = Image::sibling(&base, &format!("cancel {round}/{i}"), 8 * KIB);
            let (head, body, part) = if i % 4 == 3 {
                // A blob PATCH cut in the middle of its body.
                let session = reg.start_session(repo);
                let body = bytes_for(&format!("cancel blob {round}/{i}"), 256 * KIB);
                let head = format!(
                    "PATCH {session} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                (head, body, Some(100 * KIB))
            } else {
                let head = format!(
                    "PUT /v2/{repo}/manifests/c{round}-{i} HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: {OCI_MANIFEST}\r\n\
                     Content-Length: {}\r\n\r\n",
                    m.manifest.len()
                );
                (head, m.manifest.clone(), None)
            };
            let addr = addr.clone();
            threads.push(std::thread::spawn(move || {
                send_and_hang_up(&addr, &head, &body, part)
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        // Writes work right after each round.
        let m = Image::unique(&format!("cancel after {round}"), 1, 8 * KIB);
        reg.push(repo, &m, &format!("after{round}"));
        reg.must_pull(repo, &format!("after{round}"), &m);
    }
    if !support::postgres_mode() {
        hang_up_while_the_writer_waits(root, &addr, &token, repo, &base);
        let m = Image::unique("cancel after the lock", 1, 8 * KIB);
        reg.push(repo, &m, "after-lock");
        reg.must_pull(repo, "after-lock", &m);
    }
    reg.delete_manifest(repo, "after0").expect(202);
    let (status, body) = api(
        &server.url,
        &pat,
        Method::POST,
        "/groups",
        Some(json!({"name": "after-cancel", "path": "after-cancel"})),
    );
    assert_eq!(
        status, 201,
        "a REST write after the cancelled requests: {body}"
    );
    let tags = reg.tags_all_resolve(repo);
    let landed = tags.iter().filter(|t| t.starts_with('c')).count();
    eprintln!("{landed} of 54 manifest PUTs whose clients hung up were stored");
    assert!(
        !tags.iter().any(|t| t.starts_with("locked")),
        "a PUT cancelled before its transaction began was stored: {tags:?}"
    );
    for t in ["base", "after1", "after2"] {
        assert!(tags.contains(t), "{t} missing from {tags:?}");
    }
    assert!(!tags.contains("after0"), "{tags:?}");
    assert_no_blob_without_bytes(root);
}

// ---------------------------------------------------------------------------
// 3. SIGKILL at chosen points
// ---------------------------------------------------------------------------

/// SIGKILL of `berth serve` after the server acknowledged, in turn: one chunk of an
/// upload session, every blob of an image (but not its manifest), a manifest PUT, and
/// a tag delete. After each restart what was acknowledged is there (the session
/// resumes from its acknowledged end; the blobs need no second upload; the tag pulls;
/// the deleted tag stays deleted) and nothing else is.
#[test]
fn sigkill_after_each_acknowledged_step_of_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::prepare_storage(root);
    // Declared before the servers, so dropped after them.
    let _database = support::database_in(root);
    let repo = "faults/kill/app";
    let server = Server::start(root, &[]);
    create_project(root, "faults/kill");
    let reg = Reg::new(&server.url);
    let first = Image::unique("kill first", 2, 16 * KIB);
    reg.push(repo, &first, "first");

    // (a) Mid-blob: one chunk acknowledged, then the crash.
    let big = bytes_for("kill chunked blob", 3 * MIB);
    let big_d = digest_of(&big);
    let session = reg.start_session(repo);
    let r = reg.send(
        repo,
        reg.at(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("0-{}", MIB - 1))
            .body(big[..MIB].to_vec()),
    );
    r.expect(202);
    let session = path_of_location(r.header("Location").expect("Location"));
    server.kill9();
    let server = Server::start(root, &[]);
    let reg = Reg::new(&server.url);
    let r = reg.send(repo, reg.at(Method::GET, &session));
    r.expect(204);
    assert_eq!(
        r.header("Range"),
        Some(format!("0-{}", MIB - 1).as_str()),
        "the acknowledged chunk survives the crash: {r:?}"
    );
    reg.blob(Method::HEAD, repo, &big_d).expect(404);
    let r = reg.send(
        repo,
        reg.at(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{MIB}-{}", big.len() - 1))
            .body(big[MIB..].to_vec()),
    );
    r.expect(202);
    let finish = path_of_location(r.header("Location").expect("Location"));
    reg.send(
        repo,
        reg.at(
            Method::PUT,
            &with_query(&finish, &format!("digest={big_d}")),
        ),
    )
    .expect(201);

    // (b) Between the blobs and the manifest.
    let second = Image::of(
        "kill second",
        config_for("kill second"),
        vec![big.clone(), bytes_for("kill second layer", 8 * KIB)],
        0,
    );
    for b in &second.blobs {
        reg.upload(repo, b).expect(201);
    }
    server.kill9();
    let server = Server::start(root, &[]);
    let reg = Reg::new(&server.url);
    for b in &second.blobs {
        reg.blob(Method::HEAD, repo, &digest_of(b)).expect(200);
    }
    assert_eq!(
        reg.tags(repo),
        BTreeSet::from(["first".to_string()]),
        "no tag before its manifest"
    );
    reg.put_manifest(repo, "second", &second).expect(201);

    // (c) Right after a manifest PUT was acknowledged.
    let third = Image::unique("kill third", 1, 8 * KIB);
    reg.push(repo, &third, "third");
    server.kill9();
    let server = Server::start(root, &[]);
    let reg = Reg::new(&server.url);
    reg.must_pull(repo, "first", &first);
    reg.must_pull(repo, "second", &second);
    reg.must_pull(repo, "third", &third);

    // (d) Right after a tag delete was acknowledged.
    reg.delete_manifest(repo, "first").expect(202);
    server.kill9();
    let server = Server::start(root, &[]);
    let reg = Reg::new(&server.url);
    reg.get_manifest(repo, "first").expect(404);
    assert_eq!(
        reg.tags_all_resolve(repo),
        BTreeSet::from(["second".to_string(), "third".to_string()])
    );
    reg.must_pull(repo, "second", &second);
    reg.must_pull(repo, "third", &third);
    // And the node takes writes as before.
    let fourth = Image::unique("kill fourth", 1, 8 * KIB);
    reg.push(repo, &fourth, "fourth");
    reg.must_pull(repo, "fourth", &fourth);
    drop(server);
    if !support::s3_mode() {
        assert_no_blob_without_bytes(root);
    }
}

// ---------------------------------------------------------------------------
// 4. PostgreSQL connections terminated
// ---------------------------------------------------------------------------

/// Terminate every connection to database `name` but our own.
fn terminate_backends(admin: &str, name: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connecting to PostgreSQL");
        let rows: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await
        .expect("terminating backends");
        let _ = conn.close().await;
        rows.iter().filter(|(ok,)| *ok).count() as u64
    })
}

/// A fresh PostgreSQL database for the instance in `root` (and its storage, per the
/// run's mode), whatever the run's database mode, and the admin URL to terminate its
/// connections with; `None` (said loudly) without PostgreSQL unless it is required.
fn postgres_for(root: &Path, what: &str) -> Option<(berth_meta::testing::TestDatabase, String)> {
    support::prepare_storage(root);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(berth_meta::testing::TestDatabase::create(what))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("berth.toml"))
        .and_then(|mut f| writeln!(f, "[database]\nurl = \"{}\"", db.url()))
        .expect("berth.toml");
    let admin = std::env::var("BERTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    Some((db, admin))
}

/// A PATCH body that sends `pause_at` bytes, says so, and waits for the word to go
/// on (the test kills the database connections in between).
struct PausingReader {
    data: Vec<u8>,
    pos: usize,
    pause_at: usize,
    reached: Option<std::sync::mpsc::Sender<()>>,
    resume: std::sync::mpsc::Receiver<()>,
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
        let n = buf.len().min(end - self.pos).min(64 * KIB);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// PostgreSQL connections terminated under a node (an administrator's
/// `pg_terminate_backend`, a failover): during a streamed blob upload and between
/// pushes. The requests in flight either succeed or fail with an OCI error (never
/// hang), and the node takes pushes, tag deletes and REST writes again without a
/// restart.
#[test]
fn postgres_connections_terminated_mid_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some((db, admin)) = postgres_for(root, "faults: PostgreSQL connections terminated") else {
        return;
    };
    let server = Server::start(root, &[]);
    create_project(root, "faults/pg");
    let pat = admin_pat(root);
    let repo = "faults/pg/app";
    let reg = Reg::new(&server.url);
    let first = Image::unique("pg first", 2, 16 * KIB);
    reg.push(repo, &first, "first");

    // Mid-push: a streamed PATCH is half sent when every connection is terminated.
    let big = bytes_for("pg streamed blob", 2 * MIB);
    let session = reg.start_session(repo);
    let (reached_tx, reached_rx) = std::sync::mpsc::channel();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel();
    let reader = PausingReader {
        data: big.clone(),
        pos: 0,
        pause_at: MIB,
        reached: Some(reached_tx),
        resume: resume_rx,
    };
    let patch = {
        let token = reg.token(repo);
        let url = format!("{}{session}", reg.url);
        let http = reg.http.clone();
        std::thread::spawn(move || {
            http.patch(url)
                .bearer_auth(token)
                .header("Content-Type", "application/octet-stream")
                .body(reqwest::blocking::Body::new(reader))
                .send()
                .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
        })
    };
    reached_rx
        .recv_timeout(WAIT)
        .expect("the upload never started");
    let killed = terminate_backends(&admin, db.name());
    assert!(killed > 0, "the node held no connection to terminate");
    resume_tx.send(()).unwrap();
    let outcome = patch.join().unwrap();
    match &outcome {
        Ok((202, _)) => {}
        Ok((status, body)) => {
            assert!(*status >= 500, "{status} {body}");
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            assert!(
                v["errors"][0]["code"].is_string(),
                "a failed request answers with an OCI error: {status} {body}"
            );
        }
        // A server that answers before it has read the whole body closes the
        // connection, and the client may see that before the answer; a hang (the
        // client's timeout) is the failure.
        Err(e) => assert!(!e.is_timeout(), "the PATCH got no answer: {e}"),
    }

    // Between pushes: the pool's connections are all dead.
    terminate_backends(&admin, db.name());
    // The node recovers without a restart: at most the first request after the
    // termination may fail (with an OCI error), and not for long.
    let second = Image::unique("pg second", 2, 16 * KIB);
    eventually(WAIT, "a push after the connections were terminated", || {
        let ok = second
            .blobs
            .iter()
            .all(|b| reg.upload(repo, b).status == 201);
        (ok && reg.put_manifest(repo, "second", &second).status == 201).then_some(())
    });
    terminate_backends(&admin, db.name());
    eventually(
        WAIT,
        "a tag delete after the connections were terminated",
        || (reg.delete_manifest(repo, "first").status == 202).then_some(()),
    );
    terminate_backends(&admin, db.name());
    eventually(
        WAIT,
        "a REST write after the connections were terminated",
        || {
            let (status, _) = api(
                &server.url,
                &pat,
                Method::POST,
                "/groups",
                Some(json!({"name": "after-pg", "path": "after-pg"})),
            );
            (status == 201).then_some(())
        },
    );
    assert_eq!(
        reg.tags_all_resolve(repo),
        BTreeSet::from(["second".to_string()])
    );
    reg.must_pull(repo, "second", &second);
    drop(server);
}

/// PostgreSQL connections terminated while a cleanup run is under way (taking three
/// tags a turn, so it needs many turns): the run goes on and finishes on the same
/// node, deleting exactly what the policy says, without a restart.
#[test]
fn postgres_connections_terminated_mid_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some((db, admin)) = postgres_for(root, "faults: PostgreSQL connections terminated") else {
        return;
    };
    let server = Server::start(
        root,
        &[
            (
                "BERTH_CONTAINER_REGISTRY_EXPIRATION_POLICIES_WORKER_CAPACITY",
                "1",
            ),
            (
                "BERTH_CONTAINER_REGISTRY_CLEANUP_TAGS_SERVICE_MAX_LIST_SIZE",
                "3",
            ),
        ],
    );
    create_project(root, "faults/pgclean");
    let pat = admin_pat(root);
    let repo = "faults/pgclean/app";
    let reg = Reg::new(&server.url);
    let get = |path: &str| {
        let (status, v) = api(&server.url, &pat, Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    };
    // One old image under many tags, and a newer one, pushed last, that keep_n 1
    // keeps (tags are ordered by push time).
    let aged = |label: &str, created: &str| {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": { "Labels": { "test": label } },
        }))
        .unwrap();
        Image::of(label, config, vec![bytes_for(label, 4 * KIB)], 0)
    };
    let old = aged("pgclean old", "2020-01-01T00:00:00Z");
    let new = aged(
        "pgclean new",
        &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    );
    reg.push(repo, &old, "latest");
    let doomed: BTreeSet<String> = (0..30).map(|i| format!("gone-{i:02}")).collect();
    for t in doomed.iter().chain([&"stays".to_string()]) {
        reg.put_manifest(repo, t, &old).expect(201);
    }
    reg.push(repo, &new, "gone-new");
    let pid = get("/projects/faults%2Fpgclean")["id"].as_i64().unwrap();
    let (status, body) = api(
        &server.url,
        &pat,
        Method::PUT,
        &format!("/projects/{pid}"),
        Some(json!({ "container_expiration_policy_attributes": {
            "enabled": true, "cadence": "1d", "keep_n": 1, "older_than": null,
            "name_regex": "gone-.*",
        }})),
    );
    assert_eq!(status, 200, "saving the policy: {body}");
    let (status, body) = api(
        &server.url,
        &pat,
        Method::POST,
        &format!("/projects/{pid}/registry/cleanup_run"),
        None,
    );
    assert_eq!(status, 202, "starting the run: {body}");
    // Terminate everything once the first turn has deleted something, and again
    // once more has gone.
    let mut deleted = 0;
    for round in 0..2 {
        // (A request may fail right after a termination; polling goes on.)
        deleted = eventually(WAIT, "a cleanup turn", || {
            let path = format!("/projects/{pid}/registry/cleanup_log");
            let (_, log) = api(&server.url, &pat, Method::GET, &path, None);
            let n = log.as_array().map(|a| a.len()).unwrap_or(0);
            (n > deleted).then_some(n)
        });
        let killed = terminate_backends(&admin, db.name());
        eprintln!("round {round}: {deleted} tags deleted, {killed} connections terminated");
    }
    assert!(
        deleted < doomed.len(),
        "precondition: the run had not finished"
    );
    let expected = BTreeSet::from([
        "latest".to_string(),
        "stays".to_string(),
        "gone-new".to_string(),
    ]);
    // A turn cut by the termination is taken up again once its claim's lease lapses.
    eventually(
        WAIT * 2,
        "the cleanup run to finish after the terminations",
        || {
            let r = reg
                .try_send(repo, reg.v2(Method::GET, repo, "tags/list?n=1000"))
                .ok()?;
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            let tags: BTreeSet<String> = v["tags"]
                .as_array()?
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            (r.status == 200 && tags == expected).then_some(())
        },
    );
    assert_eq!(reg.tags_all_resolve(repo), expected);
    reg.must_pull(repo, "gone-new", &new);
    drop(server);
}

// ---------------------------------------------------------------------------
// 5. The S3 service goes away
// ---------------------------------------------------------------------------

/// A TCP gate in front of a server: open, it forwards every connection; closed, it
/// cuts the connections it carries and refuses new ones (nothing listens on its
/// port), as a stopped service does. Reopening listens on the same port again.
struct Gate {
    addr: std::net::SocketAddr,
    target: String,
    open: Option<Serving>,
}

/// The gate's accepting thread, its stop flag and the connections it carries.
type Serving = (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<Mutex<Vec<TcpStream>>>,
    std::thread::JoinHandle<()>,
);

impl Gate {
    fn new(target: &str) -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("gate port");
        let mut gate = Gate {
            addr: listener.local_addr().unwrap(),
            target: target.to_string(),
            open: None,
        };
        gate.serve(listener);
        gate
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = self.target.clone();
        let (stop2, carried2) = (stop.clone(), carried.clone());
        let accepting = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut keep = carried2.lock().unwrap();
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        keep.push(c);
                    }
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        self.open = Some((stop, carried, accepting));
    }

    fn close(&mut self) {
        if let Some((stop, carried, accepting)) = self.open.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wake the accepting thread so that it stops and drops the listener.
            let _ = TcpStream::connect(self.addr);
            let _ = accepting.join();
            for s in carried.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn reopen(&mut self) {
        if self.open.is_none() {
            let listener = std::net::TcpListener::bind(self.addr).expect("the gate's port again");
            self.serve(listener);
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// The S3 service stops while a node serves (pushes and pulls on the way): requests
/// that need it are answered 503 with Retry-After and an OCI error body within the
/// store client's retries (no hang), nothing half-pushed is visible, and once S3 is
/// back the same node takes the interrupted upload session and new pushes again.
#[test]
fn s3_outage_answers_503_and_the_node_recovers() {
    let Some(python) = berth_store::testing::moto_python() else {
        return;
    };
    let moto = berth_store::testing::Moto::start_with(&python).expect("starting moto");
    let mut gate = Gate::new(moto.endpoint.trim_start_matches("http://"));
    let bucket = moto.fresh_bucket().expect("bucket");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("berth.toml"),
        format!(
            "[storage]\nkind = \"s3\"\n[storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\
             path_style = true\n",
            gate.url()
        ),
    )
    .unwrap();
    let _database = support::database_in(root);
    let server = Server::start(root, &[]);
    create_project(root, "faults/s3");
    let repo = "faults/s3/app";
    let reg = Reg::new(&server.url);
    let first = Image::unique("s3 first", 2, 16 * KIB);
    reg.push(repo, &first, "first");
    let session = reg.start_session(repo);

    gate.close();
    let second = Image::unique("s3 second", 1, 6 * MIB);
    let check_503 = |r: &Resp| {
        assert_eq!(r.status, 503, "expected 503 while S3 is down; got {r:?}");
        assert!(r.header("Retry-After").is_some(), "{r:?}");
        assert!(r.json()["errors"][0]["message"].is_string(), "{r:?}");
    };
    // A chunk of the session started before the outage, a monolithic upload, a pull.
    let r = reg.send(
        repo,
        reg.at(Method::PATCH, &session)
            .header("Content-Type", "application/octet-stream")
            .body(second.blobs[1].clone()),
    );
    check_503(&r);
    check_503(&reg.upload(repo, &second.blobs[0]));
    check_503(&reg.blob(Method::GET, repo, &digest_of(&first.blobs[1])));
    reg.blob(Method::HEAD, repo, &digest_of(&second.blobs[0]))
        .expect(404);

    gate.reopen();
    // The session goes on from what it holds.
    let r = reg.send(repo, reg.at(Method::GET, &session));
    r.expect(204);
    let have: usize = r
        .header("Range")
        .and_then(|v| v.strip_prefix("0-"))
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n + 1)
        .unwrap_or_else(|| panic!("bad Range: {r:?}"));
    let layer = &second.blobs[1];
    // "0-0" is what an empty session reports (the spec has no range for nothing).
    let have = if have == 1 { 0 } else { have };
    assert!(have <= layer.len(), "{r:?}");
    let mut patch = reg
        .at(Method::PATCH, &session)
        .header("Content-Type", "application/octet-stream")
        .body(layer[have..].to_vec());
    if have > 0 {
        patch = patch.header("Content-Range", format!("{have}-{}", layer.len() - 1));
    }
    let r = reg.send(repo, patch);
    r.expect(202);
    let finish = path_of_location(r.header("Location").expect("Location"));
    let layer_d = digest_of(layer);
    reg.send(
        repo,
        reg.at(
            Method::PUT,
            &with_query(&finish, &format!("digest={layer_d}")),
        ),
    )
    .expect(201);
    reg.upload(repo, &second.blobs[0]).expect(201);
    reg.put_manifest(repo, "second", &second).expect(201);
    reg.must_pull(repo, "first", &first);
    reg.must_pull(repo, "second", &second);
    assert_eq!(
        reg.tags_all_resolve(repo),
        BTreeSet::from(["first".to_string(), "second".to_string()])
    );
    drop(server);
}

// ---------------------------------------------------------------------------
// 6. SIGKILL of `berth migrate`
// ---------------------------------------------------------------------------

/// Files under `dir`, at any depth.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// `berth migrate` (SQLite and files onto PostgreSQL and another blob directory)
/// SIGKILLed while it copies blobs: the target is not usable as it is (`--verify`
/// says so), and running the same command again completes the move; the target then
/// serves every tag. (An exit in the middle of the metadata copy is in
/// tests/migrate.rs: nothing of it is committed.)
#[test]
fn sigkill_of_berth_migrate_mid_copy_then_rerun() {
    if support::postgres_mode() || support::s3_mode() {
        eprintln!("!!! SKIPPED here: berth migrate moves a SQLite and files instance (first pass)");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(berth_meta::testing::TestDatabase::create(
        "faults: berth migrate killed",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = Server::start(root, &[]);
    create_project(root, "faults/migrate");
    let repo = "faults/migrate/app";
    let reg = Reg::new(&server.url);
    let many = Image::unique("migrate many layers", 120, 64 * KIB);
    let small = Image::unique("migrate small", 1, 8 * KIB);
    reg.push(repo, &many, "many");
    reg.push(repo, &small, "small");
    drop(reg);
    server.kill9();

    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path();
    std::fs::write(
        target.join("berth.toml"),
        format!(
            "data_dir = \"{}\"\n[database]\nurl = \"{}\"\n",
            target.join("data").display(),
            db.url()
        ),
    )
    .unwrap();
    let migrate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("migrate")
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--to")
            .arg(target.join("berth.toml"))
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running berth migrate")
    };
    let mut first = migrate(&["--jobs", "1"]);
    let blobs = target.join("data/storage/blobs");
    // Watched closely, not with `eventually`'s growing pauses: the whole copy takes
    // a few hundred milliseconds, and one pause of 170 ms once let it finish first.
    let deadline = Instant::now() + WAIT;
    while files_under(&blobs) == 0 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for berth migrate to copy its first blob"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "precondition: berth migrate had not finished when it was killed"
    );
    let status = Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let _ = first.wait();
    let copied = files_under(&blobs);
    eprintln!("berth migrate killed after {copied} blob files had been copied");
    assert!(
        copied < many.blobs.len() + small.blobs.len(),
        "{copied} blobs copied"
    );

    let verify = migrate(&["--verify"]).wait_with_output().unwrap();
    assert!(
        !verify.status.success(),
        "--verify must refuse a half-moved instance:\n{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let again = migrate(&[]).wait_with_output().unwrap();
    assert!(
        again.status.success(),
        "the second run must finish:\n{}\n{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    let verify = migrate(&["--verify"]).wait_with_output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let served = Server::start(target, &[]);
    let reg = Reg::new(&served.url);
    reg.must_pull(repo, "many", &many);
    reg.must_pull(repo, "small", &small);
    assert_eq!(
        reg.tags_all_resolve(repo),
        BTreeSet::from(["many".to_string(), "small".to_string()])
    );
    drop(served);
}
