//! End-to-end tests of the container registry REST API (`/api/v4/.../registry/...`),
//! cleanup policy attributes and project/group moves, driven by python-gitlab 8.6.0
//! exactly as shared/reference/gitlab-api.md §7 lists its calls, against the real
//! `berth` binary. Images are pushed over the registry API (`/v2`) with root's
//! credentials; raw HTTP checks cover what python-gitlab does not show (status codes,
//! pagination headers, exact error bodies). Expectations: gitlab-api.md §1, §2.1, §6,
//! §7 and MISSION.md §4–§5.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use support::{run, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

const ROOT: (&str, &str) = ("root", ROOT_PASSWORD);
/// The password of every other user the tests create.
const PASSWORD: &str = "correct-horse-battery-staple";

/// GitLab's answer to a second bulk delete within the hour (gitlab-api.md §1.4).
const BULK_ALREADY: &str = "This request has already been made. You can run this at most once an hour for a given container repository";
/// GitLab's refusals of moves while registry tags exist (gitlab-api.md §2.1).
const RENAME_REFUSED: &str = "Cannot rename project because it contains container registry tags!";
const TRANSFER_REFUSED: &str = "Failed to transfer project {:base=>[\"Project cannot be transferred, because tags are present in its container registry\"]}";
const GROUP_PATH_REFUSED: &str = "Cannot update the path because there are projects under this group that contain Docker images in their Container Registry. Please remove the images from your projects first and try again.";

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A fully read response; the body as JSON when it is JSON, else as a string.
struct Resp {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn send(what: String, rb: RequestBuilder) -> Resp {
        let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().unwrap_or_else(|e| panic!("{what}: {e}"));
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            what,
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// A header that must be present.
    fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header; {self:?}", self.what))
    }

    /// Assert the status and hand back the body.
    fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}; got {self:?}",
            self.what
        );
        self.body
    }

    /// The URL of `rel` in the `Link` header.
    fn link(&self, rel: &str) -> Option<String> {
        let want = format!("rel=\"{rel}\"");
        self.header("link")?.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            params.contains(&want).then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.body.to_string();
        if body.len() > 1500 {
            body.truncate(1500);
            body.push('…');
        }
        write!(
            f,
            "{} → {} {:?} body={body}",
            self.what, self.status, self.headers
        )
    }
}

/// The REST API of one server, with a `PRIVATE-TOKEN` or anonymously.
struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn new(berth: &Berth) -> Api {
        Api {
            base: format!("{}/api/v4", berth.url),
            http: http(),
        }
    }

    fn send(&self, method: Method, path: &str, token: Option<&str>) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        // python-gitlab sends this header on every request, GET and DELETE included.
        let mut rb = self
            .http
            .request(method.clone(), &url)
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            rb = rb.header("PRIVATE-TOKEN", t);
        }
        Resp::send(format!("{method} {url}"), rb)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token)
    }

    fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::DELETE, path, token)
    }

    fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        let url = format!("{}{path}", self.base);
        let rb = self
            .http
            .post(&url)
            .header("PRIVATE-TOKEN", token)
            .json(&body);
        Resp::send(format!("POST {url}"), rb)
    }
}

/// An `api` personal access token of `user`, from the CLI.
fn pat(berth: &Berth, user: &str) -> String {
    let t = berth.admin(&[
        "token", "create", "--user", user, "--name", "t", "--scopes", "api",
    ]);
    assert!(t.starts_with("glpat-"), "a PAT: {t:?}");
    t
}

fn member(berth: &Berth, project: &str, user: &str, role: &str) {
    berth.admin(&[
        "member",
        "add",
        "--project",
        project,
        "--user",
        user,
        "--role",
        role,
    ]);
}

fn group(berth: &Berth, full_path: &str, visibility: &str) {
    berth.admin(&[
        "group",
        "create",
        full_path,
        "--parents",
        "--visibility",
        visibility,
    ]);
}

/// Percent-encode a full path for `:id` (python-gitlab: `quote(safe="")`).
fn enc(s: &str) -> String {
    s.replace('/', "%2F")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|x| {
            x[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {x}"))
                .to_string()
        })
        .collect()
}

fn set<S: AsRef<str>>(items: &[S]) -> BTreeSet<String> {
    items.iter().map(|s| s.as_ref().to_string()).collect()
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------
// Images and the registry API
// ---------------------------------------------------------------------------

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// A gzipped tar layer with one file whose content depends on `seed`, and its diff_id.
fn layer(seed: &str) -> (Vec<u8>, String) {
    let content = format!("berth registry api test layer {seed}\n").repeat(20);
    let tar = support::tar_layer(&format!("etc/{seed}"), content.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), digest_of(&tar))
}

/// An OCI image: a config with `created`, and layers.
struct Image {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(created: &str, layers: &[(Vec<u8>, String)]) -> Image {
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["PATH=/usr/bin:/bin"] },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len() },
            "layers": layers.iter().map(|(l, _)| json!({
                "mediaType": OCI_LAYER_GZIP, "digest": digest_of(l), "size": l.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            config,
            layers: layers.iter().map(|(l, _)| l.clone()).collect(),
            manifest,
        }
    }

    /// A one-layer image whose layer depends on `seed`.
    fn simple(seed: &str, created: &str) -> Image {
        Image::new(created, &[layer(seed)])
    }

    fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// `revision` in GitLab's TagDetails: the config digest's hex.
    fn revision(&self) -> String {
        sha256_hex(&self.config)
    }

    fn layers_size(&self) -> usize {
        self.layers.iter().map(Vec::len).sum()
    }
}

/// `/jwt/auth` tokens and `/v2` requests.
struct Registry<'a> {
    berth: &'a Berth,
    http: Client,
    /// Push tokens by path (root's, fetched once per path).
    push_tokens: RefCell<HashMap<String, String>>,
}

impl<'a> Registry<'a> {
    fn new(berth: &'a Berth) -> Registry<'a> {
        Registry {
            berth,
            http: http(),
            push_tokens: RefCell::new(HashMap::new()),
        }
    }

    /// A bearer token for `repository:<path>:<actions>` (fresh every time).
    fn token(&self, creds: Option<(&str, &str)>, path: &str, actions: &str) -> String {
        let r = self
            .berth
            .token(creds, &[&format!("repository:{path}:{actions}")]);
        assert_eq!(
            r.status().as_u16(),
            200,
            "/jwt/auth for {path} as {creds:?}"
        );
        let v: Value = r.json().expect("token JSON");
        v["token"].as_str().expect("token").to_string()
    }

    fn v2(&self, method: Method, path: &str, token: &str) -> Resp {
        let url = format!("{}{path}", self.berth.url);
        let mut rb = self.http.request(method.clone(), &url).bearer_auth(token);
        if path.contains("/manifests/") {
            rb = rb.header("Accept", ACCEPT_MANIFESTS);
        }
        Resp::send(format!("{method} {url}"), rb)
    }

    /// Push `img` to `path` as root and tag it with every name in `tags`.
    fn push(&self, path: &str, img: &Image, tags: &[&str]) {
        let token = self
            .push_tokens
            .borrow_mut()
            .entry(path.to_string())
            .or_insert_with(|| self.token(Some(ROOT), path, "pull,push"))
            .clone();
        for blob in std::iter::once(&img.config).chain(&img.layers) {
            let url = format!(
                "{}/v2/{path}/blobs/uploads/?digest={}",
                self.berth.url,
                digest_of(blob)
            );
            let rb = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .header("Content-Type", "application/octet-stream")
                .body(blob.clone());
            Resp::send(format!("POST {url}"), rb).expect(201);
        }
        for tag in tags {
            let url = format!("{}/v2/{path}/manifests/{tag}", self.berth.url);
            let rb = self
                .http
                .put(&url)
                .bearer_auth(&token)
                .header("Content-Type", OCI_MANIFEST)
                .body(img.manifest.clone());
            let r = Resp::send(format!("PUT {url}"), rb);
            assert_eq!(r.status, 201, "{r:?}");
            assert_eq!(r.h("Docker-Content-Digest"), img.digest(), "{r:?}");
        }
    }

    /// The tags of `path` as root sees them over `/v2`; `None` when the repository is
    /// unknown (404).
    fn tags(&self, path: &str) -> Option<Vec<String>> {
        let t = self.token(Some(ROOT), path, "pull");
        let r = self.v2(Method::GET, &format!("/v2/{path}/tags/list?n=1000"), &t);
        match r.status {
            200 => Some(match &r.body["tags"] {
                Value::Null => Vec::new(),
                tags => strings(tags),
            }),
            404 => None,
            _ => panic!("unexpected {r:?}"),
        }
    }

    /// GET a manifest with a fresh token of `creds` for pull.
    fn manifest(&self, creds: Option<(&str, &str)>, path: &str, reference: &str) -> Resp {
        let t = self.token(creds, path, "pull");
        self.v2(
            Method::GET,
            &format!("/v2/{path}/manifests/{reference}"),
            &t,
        )
    }

    /// The manifest pulls as root, byte for byte.
    fn assert_pulls(&self, path: &str, reference: &str, img: &Image) {
        let r = self.manifest(Some(ROOT), path, reference);
        assert_eq!(r.status, 200, "pull {path}:{reference}: {r:?}");
        assert_eq!(r.h("Docker-Content-Digest"), img.digest(), "{r:?}");
    }

    /// The path does not resolve any more: no manifest there, whatever the reason
    /// (404 unknown, 401/403 no project behind the path).
    fn assert_gone(&self, path: &str, reference: &str) {
        let r = self.manifest(Some(ROOT), path, reference);
        assert!(
            [401, 403, 404].contains(&r.status),
            "{path}:{reference} should no longer resolve: {r:?}"
        );
    }

    /// Poll until the bulk delete on `path` has run, then assert exactly which tags
    /// remain. Deletion only ever removes tags, so once the count is down to the
    /// expected count the run has done at least that much.
    fn wait_for_tags(&self, path: &str, remain: &[&str]) {
        let want = set(remain);
        let got = support::eventually(
            Duration::from_secs(30),
            &format!("the bulk delete on {path} to leave {want:?}"),
            || {
                let tags = self.tags(path).unwrap_or_default();
                (tags.len() <= want.len()).then_some(tags)
            },
        );
        assert_eq!(set(&got), want, "tags left in {path}");
    }
}

/// `access` of a registry token: the actions granted on `path`.
fn granted(token: &str, path: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&b64url_decode(payload)).expect("JWT claims");
    claims["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "repository" && a["name"] == path)
        .flat_map(|a| strings(&a["actions"]))
        .collect()
}

fn b64url_decode(s: &str) -> Vec<u8> {
    const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|c| *c != b'=') {
        let v = B64URL.iter().position(|x| *x == c).expect("base64url") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// python-gitlab
// ---------------------------------------------------------------------------

/// The venv's Python with python-gitlab (see `tests/requirements.txt`); under CI a
/// missing venv fails the test, elsewhere the test is skipped.
fn gitlab_python() -> Option<PathBuf> {
    support::venv_python("gitlab")
}

/// Runs before every snippet: `gl` (a client with the given token, or anonymous),
/// `args` (JSON from the test), `calls` (every response's method, status and URL),
/// `fails(fn, exc, code)` (the call must raise `exc` with that status) and `result`
/// (printed as JSON at the end).
const PRELUDE: &str = r#"
import sys, json, warnings, datetime
import gitlab
from gitlab import exceptions as gexc
warnings.simplefilter("error", UserWarning)  # e.g. a Link header whose base URL differs
url, tok, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
gl = gitlab.Gitlab(url, private_token=tok or None)
calls = []
gl.session.hooks["response"].append(
    lambda r, *a, **k: calls.append((r.request.method, r.status_code, r.request.url)))

def last_status(method):
    return [c[1] for c in calls if c[0] == method][-1]

def fails(fn, exc, code):
    try:
        fn()
    except exc as e:
        assert e.response_code == code, f"expected {exc.__name__} {code}, got {e.response_code}: {e}"
        return e
    raise AssertionError(f"expected {exc.__name__} {code}, but the call succeeded; calls: {calls}")

result = None
"#;

struct Py {
    python: PathBuf,
    url: String,
}

impl Py {
    fn new(berth: &Berth) -> Option<Py> {
        Some(Py {
            python: gitlab_python()?,
            url: berth.url.clone(),
        })
    }

    /// Run `body` after the prelude as the holder of `token` ("" = anonymous); returns
    /// what the snippet put in `result`.
    fn run(&self, token: &str, args: Value, body: &str) -> Value {
        let script = format!("{PRELUDE}\n{body}\nprint('RESULT ' + json.dumps(result))\n");
        let out = run(Command::new(&self.python)
            .args(["-c", &script, &self.url, token, &args.to_string()])
            .env("PYTHONWARNINGS", "ignore::DeprecationWarning"));
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no RESULT line in:\n{out}"));
        serde_json::from_str(line).expect("RESULT JSON")
    }
}

// ---------------------------------------------------------------------------
// 1, 2, 11: repositories of a project, of a group (with subgroups), by id
// ---------------------------------------------------------------------------

const LIST_REPOSITORIES: &str = r#"
p = gl.projects.get("top/app")
listed = p.repositories.list(get_all=True)
full = p.repositories.list(tags=True, tags_count=True)
app = [r for r in listed if r.name == "app"][0]
one = gl.registry_repositories.get(app.id, tags=True, tags_count=True, size=True)
grp = gl.groups.get("top").registry_repositories.list(get_all=True)
# The tags manager of a listed repository uses project_id from its JSON.
tag_names = [t.name for t in app.tags.list(get_all=True)]
sent = [c[2] for c in calls if "tags_count" in c[2]]
# Once v2 is untagged its own layer no longer counts.
app.tags.delete("v2")
size_untagged = gl.registry_repositories.get(app.id, size=True).size
result = {
    "size_untagged": size_untagged,
    "project_id": p.id,
    "listed": [r.asdict() for r in listed],
    "full": [r.asdict() for r in full],
    "one": one.asdict(),
    "group": [r.asdict() for r in grp],
    "tag_names": tag_names,
    "sent": sent,
}
"#;

const OUTSIDER_REPOSITORIES: &str = r#"
grp = gl.groups.get("top").registry_repositories.list(get_all=True)
e = fails(lambda: gl.projects.get("top/secret", lazy=True).repositories.list(get_all=True),
          gexc.GitlabListError, 404)
assert e.error_message == "404 Project Not Found", e
e = fails(lambda: gl.projects.get("top/secret"), gexc.GitlabGetError, 404)
e = fails(lambda: gl.registry_repositories.get(args["secret_id"]), gexc.GitlabGetError,
          args["secret_code"])
own = gl.projects.get("top/app").repositories.list(get_all=True)
result = {"group": [r.asdict() for r in grp], "project": [r.asdict() for r in own]}
"#;

#[test]
fn repositories_of_projects_groups_and_by_id() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.user("outsider", PASSWORD);
    let outsider = pat(&berth, "outsider");

    group(&berth, "top/sub", "public");
    berth.project("top/app", "public");
    berth.project("top/sub/svc", "internal");
    berth.project("top/secret", "private");

    // Two images sharing layer L1: v1 = [L1, L2], v2 = [L1, L3].
    let (l1, l2, l3) = (layer("shared"), layer("only-v1"), layer("only-v2"));
    let created = "2023-05-06T07:08:09Z";
    let v1 = Image::new(created, &[l1.clone(), l2.clone()]);
    let v2 = Image::new(created, &[l1.clone(), l3.clone()]);
    reg.push("top/app", &v1, &["v1"]);
    reg.push("top/app/app", &v1, &["v1", "v1-again"]);
    reg.push("top/app/app", &v2, &["v2"]);
    reg.push("top/sub/svc", &v1, &["latest"]);
    reg.push("top/secret", &v1, &["v1"]);

    let out = py.run(&root, json!({}), LIST_REPOSITORIES);
    let pid = out["project_id"].as_i64().unwrap();
    let host = &berth.addr;

    // p.repositories.list(get_all=True): the root image ("") and "app".
    let listed = &out["listed"];
    let mut by_name: HashMap<String, Value> = HashMap::new();
    for r in listed.as_array().unwrap() {
        by_name.insert(r["name"].as_str().unwrap().to_string(), r.clone());
    }
    assert_eq!(
        set(&by_name.keys().collect::<Vec<_>>()),
        set(&["", "app"]),
        "{listed}"
    );
    for (name, path) in [("", "top/app"), ("app", "top/app/app")] {
        let r = &by_name[name];
        assert_eq!(r["path"], path, "{r}");
        assert_eq!(r["project_id"], pid, "{r}");
        assert_eq!(r["location"], format!("{host}/{path}"), "{r}");
        assert!(r["id"].is_i64(), "{r}");
        assert!(r["created_at"].is_string(), "{r}");
        assert!(r.get("status").is_some(), "status is always present: {r}");
        assert_eq!(r["status"], Value::Null, "{r}");
        for absent in ["tags", "tags_count", "size"] {
            assert!(r.get(absent).is_none(), "{absent} only when asked: {r}");
        }
        // Root (an admin) may delete the repository.
        assert_eq!(
            r["delete_api_path"],
            format!(
                "{}/api/v4/projects/{pid}/registry/repositories/{}",
                berth.url, r["id"]
            ),
            "{r}"
        );
    }

    // p.repositories.list(tags=True, tags_count=True): python-gitlab sends True.
    assert!(
        strings(&out["sent"])
            .iter()
            .any(|u| u.contains("tags=True") && u.contains("tags_count=True")),
        "{}",
        out["sent"]
    );
    let full = &out["full"];
    let app = full
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "app")
        .unwrap_or_else(|| panic!("no app in {full}"));
    assert_eq!(app["tags_count"], 3, "{app}");
    let tags = app["tags"].as_array().expect("tags");
    assert_eq!(
        names(&app["tags"], "name"),
        ["v1", "v1-again", "v2"],
        "{app}"
    );
    for t in tags {
        let n = t["name"].as_str().unwrap();
        assert_eq!(t["path"], format!("top/app/app:{n}"), "{t}");
        assert_eq!(t["location"], format!("{host}/top/app/app:{n}"), "{t}");
    }
    let root_image = full
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "")
        .unwrap_or_else(|| panic!("no root image in {full}"));
    assert_eq!(root_image["tags_count"], 1, "{root_image}");
    assert_eq!(names(&root_image["tags"], "path"), ["top/app:v1"]);
    assert_eq!(
        strings(&out["tag_names"]),
        ["v1", "v1-again", "v2"],
        "repo.tags.list()"
    );

    // gl.registry_repositories.get(id, tags=True, tags_count=True, size=True).
    let one = &out["one"];
    assert_eq!(one["id"], by_name["app"]["id"], "{one}");
    assert_eq!(one["path"], "top/app/app", "{one}");
    assert_eq!(one["project_id"], pid, "{one}");
    assert_eq!(one["tags_count"], 3, "{one}");
    assert_eq!(names(&one["tags"], "name"), ["v1", "v1-again", "v2"]);
    // Checked at the end: the size with v2 tagged, and after untagging v2.
    let sizes = (one["size"].as_u64(), out["size_untagged"].as_u64());
    let one_seen = one.to_string();
    // The group's repositories include subgroups' projects; root (an admin) sees all.
    let group_paths = set(&names(&out["group"], "path"));
    assert_eq!(
        group_paths,
        set(&["top/app", "top/app/app", "top/secret", "top/sub/svc"]),
        "{}",
        out["group"]
    );
    for r in out["group"].as_array().unwrap() {
        assert!(r["project_id"].is_i64(), "{r}");
        // GitLab presents group listings without a user, so never with
        // delete_api_path (API::GroupContainerRepositories).
        assert!(r.get("delete_api_path").is_none(), "{r}");
    }

    // An outsider sees the public and internal projects' repositories, not the
    // private project's, and gets 404 for the private project.
    let secret_id = names(&out["group"], "path")
        .iter()
        .position(|p| p == "top/secret")
        .map(|i| out["group"][i]["id"].as_i64().unwrap())
        .unwrap();
    // GitLab answers 403 (authorize! on the repository); 404 hides it as well.
    let secret_code = api.get(
        &format!("/registry/repositories/{secret_id}"),
        Some(&outsider),
    );
    assert!(
        [403, 404].contains(&secret_code.status),
        "outsider reading a private project's repository by id: {secret_code:?}"
    );
    assert!(
        !secret_code.body.to_string().contains("top/secret"),
        "{secret_code:?}"
    );
    let out = py.run(
        &outsider,
        json!({"secret_id": secret_id, "secret_code": secret_code.status}),
        OUTSIDER_REPOSITORIES,
    );
    assert_eq!(
        set(&names(&out["group"], "path")),
        set(&["top/app", "top/app/app", "top/sub/svc"]),
        "{}",
        out["group"]
    );
    assert_eq!(
        set(&names(&out["project"], "path")),
        set(&["top/app", "top/app/app"])
    );
    for r in out["project"].as_array().unwrap() {
        assert!(
            r.get("delete_api_path").is_none(),
            "an outsider may not delete: {r}"
        );
    }

    // A member of the private project sees it in the group's list too (the group
    // page decides every project's readability from one roles query).
    berth.user("insider", PASSWORD);
    member(&berth, "top/secret", "insider", "reporter");
    let insider = pat(&berth, "insider");
    let r = api.get(
        "/groups/top/registry/repositories?per_page=100",
        Some(&insider),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        set(&names(&r.body, "path")),
        set(&["top/app", "top/app/app", "top/secret", "top/sub/svc"]),
        "{r:?}"
    );

    // Bad input (raw): unknown repository ids, a private project for an outsider.
    let r = api.get("/registry/repositories/999999", Some(&root));
    assert_eq!(
        r.expect(404),
        json!({"message": "404 Repository Not Found"})
    );
    let r = api.get(
        &format!("/projects/{pid}/registry/repositories/999999/tags"),
        Some(&root),
    );
    assert_eq!(
        r.expect(404),
        json!({"message": "404 Repository Not Found"})
    );
    // Another project's repository id under this project is unknown here.
    let r = api.get(
        &format!("/projects/{pid}/registry/repositories/{secret_id}/tags"),
        Some(&root),
    );
    assert_eq!(
        r.expect(404),
        json!({"message": "404 Repository Not Found"})
    );
    let r = api.get(
        &format!("/projects/{}/registry/repositories", enc("top/secret")),
        Some(&outsider),
    );
    assert_eq!(r.expect(404), json!({"message": "404 Project Not Found"}));

    // Deduplicated: every distinct layer referenced by a tagged manifest, once
    // (GitLab's registry: the sum of the unique layers of tagged manifests; configs
    // and manifests are not layers). Untagging v2 drops L3.
    let (s1, s2, s3) = (l1.0.len() as u64, l2.0.len() as u64, l3.0.len() as u64);
    let configs = v1.config.len() + v2.config.len();
    let manifests = v1.manifest.len() + v2.manifest.len();
    assert_eq!(
        sizes,
        (Some(s1 + s2 + s3), Some(s1 + s2)),
        "size (with v2 tagged, then untagged): expected the distinct layers L1 {s1} \
         (shared by v1 and v2) + L2 {s2} + L3 {s3}, then L1 + L2; not counted: configs \
         {configs} B, manifests {manifests} B, L1 a second time; got {one_seen}"
    );
}

// ---------------------------------------------------------------------------
// 3: 250 tags, offset and keyset pagination
// ---------------------------------------------------------------------------

const PAGE_TAGS: &str = r#"
repo = gl.projects.get("pg/app").repositories.list(get_all=True)[0]
offset = [t.name for t in repo.tags.list(get_all=True)]
pages = repo.tags.list(per_page=100, iterator=True)
asc = [t.name for t in repo.tags.list(pagination="keyset", order_by="name", sort="asc",
                                      per_page=100, get_all=True)]
desc = [t.name for t in repo.tags.list(pagination="keyset", order_by="name", sort="desc",
                                       per_page=100, get_all=True)]
result = {"pid": repo.project_id, "rid": repo.id, "offset": offset, "asc": asc, "desc": desc,
          "total": pages.total, "total_pages": pages.total_pages}
"#;

#[test]
fn tags_page_by_offset_and_keyset() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.project("pg/app", "private");

    let all: Vec<String> = (0..250).map(|i| format!("t{i:03}")).collect();
    // Pushed newest name first: the listing order is by name, not by push.
    let pushed: Vec<&str> = all.iter().rev().map(String::as_str).collect();
    reg.push(
        "pg/app",
        &Image::simple("paged", "2024-01-01T00:00:00Z"),
        &pushed,
    );

    let out = py.run(&root, json!({}), PAGE_TAGS);
    assert_eq!(strings(&out["offset"]), all, "repo.tags.list(get_all=True)");
    assert_eq!(
        (out["total"].as_i64(), out["total_pages"].as_i64()),
        (Some(250), Some(3)),
        "python-gitlab reads X-Total and X-Total-Pages"
    );
    assert_eq!(
        strings(&out["asc"]),
        all,
        "keyset asc through python-gitlab"
    );
    let reversed: Vec<String> = all.iter().rev().cloned().collect();
    assert_eq!(
        strings(&out["desc"]),
        reversed,
        "keyset desc through python-gitlab"
    );

    let (pid, rid) = (out["pid"].as_i64().unwrap(), out["rid"].as_i64().unwrap());
    let tags_url = format!("/projects/{pid}/registry/repositories/{rid}/tags");

    // Offset pages of 100, following Link rel="next".
    let mut url = format!("{tags_url}?per_page=100");
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = api.get(&url, Some(&root));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.h("x-total"), "250", "{r:?}");
        assert_eq!(r.h("x-total-pages"), "3", "{r:?}");
        assert_eq!(r.h("x-page"), page.to_string(), "{r:?}");
        assert_eq!(r.h("x-per-page"), "100", "{r:?}");
        let next = if page < 3 {
            (page + 1).to_string()
        } else {
            String::new()
        };
        assert_eq!(r.h("x-next-page"), next, "{r:?}");
        let prev = if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        };
        assert_eq!(r.h("x-prev-page"), prev, "{r:?}");
        let first = r
            .link("first")
            .unwrap_or_else(|| panic!("rel=first: {r:?}"));
        let last = r.link("last").unwrap_or_else(|| panic!("rel=last: {r:?}"));
        for l in [&first, &last] {
            assert!(
                l.starts_with(&format!("{}/api/v4{tags_url}?", berth.url)),
                "absolute: {l}"
            );
            assert!(l.contains("per_page=100"), "{l}");
        }
        assert!(first.contains("page=1"), "{first}");
        assert!(last.contains("page=3"), "{last}");
        let page_names = names(&r.body, "name");
        assert_eq!(page_names.len(), if page < 3 { 100 } else { 50 }, "{r:?}");
        seen.extend(page_names);
        match r.link("next") {
            Some(n) => {
                assert!(page < 3, "no next after the last page: {r:?}");
                assert!(n.contains(&format!("page={}", page + 1)), "{n}");
                url = n;
            }
            None => assert_eq!(page, 3, "rel=next on page {page}: {r:?}"),
        }
    }
    assert_eq!(seen, all, "offset pages");

    // Keyset, both directions: only Link rel="next", no X-* headers.
    for (sort, want) in [("asc", &all), ("desc", &reversed)] {
        let mut url =
            format!("{tags_url}?pagination=keyset&order_by=name&sort={sort}&per_page=100");
        let mut seen = Vec::new();
        for page in 1.. {
            assert!(page <= 3, "keyset {sort}: more than 3 pages");
            let r = api.get(&url, Some(&root));
            assert_eq!(r.status, 200, "{r:?}");
            for h in ["x-total", "x-total-pages", "x-page", "x-next-page"] {
                assert!(r.header(h).is_none(), "keyset has no {h}: {r:?}");
            }
            assert!(
                r.link("first").is_none() && r.link("last").is_none(),
                "keyset links are rel=next only: {r:?}"
            );
            seen.extend(names(&r.body, "name"));
            match r.link("next") {
                Some(n) => {
                    assert!(n.starts_with(&berth.url), "absolute: {n}");
                    url = n;
                }
                None => break,
            }
        }
        assert_eq!(&seen, want, "keyset {sort}");
    }
}

// ---------------------------------------------------------------------------
// 4, 5, 11: tag details, deleting one tag, who may delete
// ---------------------------------------------------------------------------

const TAG_DETAILS: &str = r#"
p = gl.projects.get("td/app")
repo = p.repositories.list(get_all=True)[0]
t = repo.tags.get("v1")
created = datetime.datetime.fromisoformat(t.created_at.replace("Z", "+00:00"))
assert created == datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc), t.created_at
e = fails(lambda: repo.tags.get("nope"), gexc.GitlabGetError, 404)
assert e.error_message == "404 Tag Not Found", e
assert str(e) == "404: 404 Tag Not Found", str(e)
repo.tags.delete("v1")
assert last_status("DELETE") == 200, calls
assert "v1" not in [x.name for x in repo.tags.list(get_all=True)]
result = {"tag": t.asdict(), "pid": p.id, "rid": repo.id}
"#;

const REPORTER_DELETES: &str = r#"
repo = gl.projects.get("td/app").repositories.list(get_all=True)[0]
fails(lambda: repo.tags.delete("v2"), gexc.GitlabDeleteError, 403)
assert "v2" in [x.name for x in repo.tags.list(get_all=True)]
"#;

const DEVELOPER_DELETES: &str = r#"
p = gl.projects.get("td/app")
repo = p.repositories.list(get_all=True)[0]
fails(lambda: repo.tags.delete_in_bulk(name_regex_delete=".*"), gexc.GitlabDeleteError, 403)
fails(lambda: p.repositories.delete(repo.id), gexc.GitlabDeleteError, 403)
repo.tags.delete("v2")
assert last_status("DELETE") == 200, calls
"#;

#[test]
fn tag_details_single_delete_and_roles() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.project("td/app", "private");
    for (user, role) in [("rep", "reporter"), ("dev", "developer")] {
        berth.user(user, PASSWORD);
        member(&berth, "td/app", user, role);
    }
    let (rep, dev) = (pat(&berth, "rep"), pat(&berth, "dev"));

    let a = Image::new("2021-03-04T05:06:07Z", &[layer("td-a"), layer("td-b")]);
    let b = Image::simple("td-c", "2022-01-01T00:00:00Z");
    reg.push("td/app", &a, &["v1", "v1-copy"]);
    reg.push("td/app", &b, &["v2", "v3"]);

    let out = py.run(&root, json!({}), TAG_DETAILS);
    let t = &out["tag"];
    let host = &berth.addr;
    assert_eq!(t["name"], "v1", "{t}");
    assert_eq!(t["path"], "td/app:v1", "{t}");
    assert_eq!(t["location"], format!("{host}/td/app:v1"), "{t}");
    assert_eq!(
        t["revision"],
        a.revision(),
        "revision = config digest hex: {t}"
    );
    assert_eq!(t["short_revision"], a.revision()[..9], "{t}");
    assert_eq!(t["digest"], a.digest(), "{t}");
    assert_eq!(
        t["total_size"].as_u64(),
        Some(a.layers_size() as u64),
        "total_size = sum of the layers: {t}"
    );

    // The tag is gone; the other tag on the same manifest still pulls.
    let left = reg.tags("td/app").expect("repository");
    assert_eq!(set(&left), set(&["v1-copy", "v2", "v3"]), "/v2 tags/list");
    reg.assert_pulls("td/app", "v1-copy", &a);
    reg.assert_pulls("td/app", &a.digest(), &a);
    let r = reg.manifest(Some(ROOT), "td/app", "v1");
    assert_eq!(r.status, 404, "{r:?}");

    let (pid, rid) = (out["pid"].as_i64().unwrap(), out["rid"].as_i64().unwrap());
    let r = api.delete(
        &format!("/projects/{pid}/registry/repositories/{rid}/tags/nope"),
        Some(&root),
    );
    assert_eq!(r.expect(404), json!({"message": "404 Tag Not Found"}));

    // A reporter may not delete a tag; a developer may delete one but not in bulk.
    py.run(&rep, json!({}), REPORTER_DELETES);
    let r = api.delete(
        &format!("/projects/{pid}/registry/repositories/{rid}/tags/v3"),
        Some(&rep),
    );
    assert_eq!(r.expect(403), json!({"message": "403 Forbidden"}));
    py.run(&dev, json!({}), DEVELOPER_DELETES);
    let r = api.delete(
        &format!("/projects/{pid}/registry/repositories/{rid}/tags?name_regex_delete=.%2A"),
        Some(&dev),
    );
    assert_eq!(r.expect(403), json!({"message": "403 Forbidden"}));
    assert_eq!(
        set(&reg.tags("td/app").expect("repository")),
        set(&["v1-copy", "v3"])
    );
    reg.assert_pulls("td/app", "v3", &b);
    let r = api.delete(
        &format!("/projects/{pid}/registry/repositories/{rid}/tags/v3"),
        Some(&dev),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(reg.tags("td/app").expect("repository"), ["v1-copy"]);
}

// ---------------------------------------------------------------------------
// 6: bulk delete
// ---------------------------------------------------------------------------

const BULK: &str = r#"
p = gl.projects.get("bulk/app")
repos = {r.name: r for r in p.repositories.list(get_all=True)}
repos["all"].tags.delete_in_bulk(name_regex_delete=".*")
repos["vtags"].tags.delete_in_bulk(name_regex_delete="v.+")
repos["keepn"].tags.delete_in_bulk(name_regex_delete=".*", keep_n=5)
repos["keepre"].tags.delete_in_bulk(name_regex_delete=".*", name_regex_keep="stable.*")
repos["older"].tags.delete_in_bulk(name_regex_delete=".*", older_than="1d")
deletes = [c for c in calls if c[0] == "DELETE"]
assert [c[1] for c in deletes] == [202] * 5, deletes
# At most once an hour per repository.
e = fails(lambda: repos["all"].tags.delete_in_bulk(name_regex_delete=".*"),
          gexc.GitlabDeleteError, 400)
assert e.error_message == args["already"], e
result = {"pid": p.id, "ids": {k: r.id for k, r in repos.items()},
          "sent": [c[2] for c in deletes]}
"#;

const BULK_INVALID: &str = r#"
repo = [r for r in gl.projects.get("bulk/app").repositories.list(get_all=True) if r.name == "bad"][0]
bad_delete = fails(lambda: repo.tags.delete_in_bulk(name_regex_delete="(unclosed"),
                   gexc.GitlabDeleteError, 400)
bad_keep = fails(lambda: repo.tags.delete_in_bulk(name_regex_delete=".*", name_regex_keep="["),
                 gexc.GitlabDeleteError, 400)
# Refused calls do not use up the hourly call.
repo.tags.delete_in_bulk(name_regex_delete="v1")
assert last_status("DELETE") == 202, calls
result = {"name_regex_delete": str(bad_delete), "name_regex_keep": str(bad_keep)}
"#;

#[test]
fn bulk_delete_rules_rate_limit_and_validation() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.project("bulk/app", "private");
    let now = unix_now();
    let day = |d: i64| rfc3339(1_600_000_000 + d * DAY);

    // name_regex_delete='.*': everything but `latest`.
    for (i, tag) in ["latest", "v1", "v2", "foo"].iter().enumerate() {
        reg.push("bulk/app/all", &Image::simple(tag, &day(i as i64)), &[tag]);
    }
    // name_regex_delete='v.+' is anchored: `xv1` and `v` stay.
    for (i, tag) in ["v", "v1", "v2", "v10", "xv1", "stable", "latest"]
        .iter()
        .enumerate()
    {
        reg.push(
            "bulk/app/vtags",
            &Image::simple(tag, &day(i as i64)),
            &[tag],
        );
    }
    // keep_n=5 keeps the five most recently pushed, whatever the names and the order
    // the test pushes them in: each tag is said to have been pushed on day `d` (as
    // its image says it was built), b(8) f(7) d(6) g(5) h(4) stay, a(3) e(2) c(1) go.
    for (tag, d) in [
        ("a", 3),
        ("b", 8),
        ("c", 1),
        ("d", 6),
        ("e", 2),
        ("f", 7),
        ("g", 5),
        ("h", 4),
        ("latest", 0),
    ] {
        reg.push("bulk/app/keepn", &Image::simple(tag, &day(d)), &[tag]);
        let pushed_ms = (1_600_000_000 + d * DAY) * 1000;
        assert_eq!(berth.set_push_time("bulk/app/keepn", tag, pushed_ms), 1);
    }
    // name_regex_keep='stable.*' (anchored: `xstable` goes).
    for (i, tag) in ["stable", "stable-1", "xstable", "v1", "dev", "latest"]
        .iter()
        .enumerate()
    {
        reg.push(
            "bulk/app/keepre",
            &Image::simple(tag, &day(i as i64)),
            &[tag],
        );
    }
    // older_than='1d': tags pushed ten days ago go, those pushed now stay.
    let ten_days_ago = rfc3339(now - 10 * DAY);
    let just_now = rfc3339(now);
    for (tag, created) in [
        ("old1", &ten_days_ago),
        ("old2", &ten_days_ago),
        ("new1", &just_now),
        ("new2", &just_now),
        ("latest", &ten_days_ago),
    ] {
        reg.push(
            "bulk/app/older",
            &Image::simple(&format!("older-{tag}"), created),
            &[tag],
        );
        if created == &ten_days_ago {
            let pushed_ms = (now - 10 * DAY) * 1000;
            assert_eq!(berth.set_push_time("bulk/app/older", tag, pushed_ms), 1);
        }
    }
    reg.push(
        "bulk/app/bad",
        &Image::simple("bad", &day(0)),
        &["v1", "latest"],
    );

    let out = py.run(&root, json!({"already": BULK_ALREADY}), BULK);
    let sent = strings(&out["sent"]);
    assert!(
        sent[2].contains("name_regex_delete=.%2A") && sent[2].contains("keep_n=5"),
        "python-gitlab sends the rules as a query string: {sent:?}"
    );

    reg.wait_for_tags("bulk/app/all", &["latest"]);
    reg.wait_for_tags("bulk/app/vtags", &["v", "xv1", "stable", "latest"]);
    reg.wait_for_tags("bulk/app/keepn", &["b", "d", "f", "g", "h", "latest"]);
    reg.wait_for_tags("bulk/app/keepre", &["stable", "stable-1", "latest"]);
    reg.wait_for_tags("bulk/app/older", &["new1", "new2", "latest"]);

    // The second call within the hour, raw: GitLab's exact body.
    let pid = out["pid"].as_i64().unwrap();
    let id = |name: &str| out["ids"][name].as_i64().unwrap();
    let bulk_url = |name: &str, q: &str| {
        format!(
            "/projects/{pid}/registry/repositories/{}/tags?{q}",
            id(name)
        )
    };
    let r = api.delete(&bulk_url("vtags", "name_regex_delete=.%2A"), Some(&root));
    assert_eq!(r.expect(400), json!({"message": BULK_ALREADY}));

    // Bad parameters: 400 naming the field, and they do not use up the hourly call.
    let bad_delete = api.delete(
        &bulk_url("bad", "name_regex_delete=%28unclosed"),
        Some(&root),
    );
    let bad_keep = api.delete(
        &bulk_url("bad", "name_regex_delete=.%2A&name_regex_keep=%5B"),
        Some(&root),
    );
    let r = api.delete(&bulk_url("bad", "keep_n=5"), Some(&root));
    assert_eq!(
        r.expect(400),
        json!({"error": "name_regex, name_regex_delete are missing, at least one parameter must be provided"})
    );
    let py_errors = py.run(&root, json!({}), BULK_INVALID);
    reg.wait_for_tags("bulk/app/bad", &["latest"]);
    for (field, r) in [
        ("name_regex_delete", &bad_delete),
        ("name_regex_keep", &bad_keep),
    ] {
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.body.to_string().contains(field),
            "the refusal should name {field}: {r:?}"
        );
        let through_python = py_errors[field].as_str().unwrap();
        assert!(
            through_python.contains(field),
            "python-gitlab's error should name {field}: {through_python}"
        );
    }
}

// ---------------------------------------------------------------------------
// 7: deleting a repository
// ---------------------------------------------------------------------------

const DELETE_REPOSITORY: &str = r#"
p = gl.projects.get("del/app")
repos = {r.name: r for r in p.repositories.list(get_all=True)}
gone = repos["gone"]
p.repositories.delete(gone.id)
assert last_status("DELETE") == 202, calls
assert [r.name for r in p.repositories.list(get_all=True)] == [""], "gone from the project's list at once"
assert [r.path for r in gl.groups.get("del").registry_repositories.list(get_all=True)] == ["del/app"]
result = {"pid": p.id, "gone": gone.id, "kept": repos[""].id}
"#;

const DELETED_REPOSITORY: &str = r#"
e = fails(lambda: gl.registry_repositories.get(args["gone"]), gexc.GitlabGetError, 404)
p = gl.projects.get("del/app")
fails(lambda: p.repositories.delete(args["gone"]), gexc.GitlabDeleteError, 404)
assert gl.registry_repositories.get(args["kept"], tags=True).tags[0]["name"] == "v1"
"#;

#[test]
fn repository_delete_is_accepted_and_runs_in_the_background() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.project("del/app", "private");
    let kept = Image::simple("kept", "2024-02-02T00:00:00Z");
    let gone = Image::simple("gone", "2024-02-02T00:00:00Z");
    reg.push("del/app", &kept, &["v1"]);
    reg.push("del/app/gone", &gone, &["v1", "v2"]);

    let out = py.run(&root, json!({}), DELETE_REPOSITORY);
    let gone_id = out["gone"].as_i64().unwrap();
    support::eventually(
        Duration::from_secs(30),
        "the deleted repository to be gone by id and over /v2",
        || {
            let by_id = api.get(&format!("/registry/repositories/{gone_id}"), Some(&root));
            if by_id.status == 200 {
                // Until the job has run: scheduled (or in progress), never listed.
                let status = by_id.body["status"].as_str().unwrap_or_default();
                assert!(
                    ["delete_scheduled", "delete_ongoing"].contains(&status),
                    "{by_id:?}"
                );
                return None;
            }
            assert_eq!(by_id.status, 404, "{by_id:?}");
            reg.tags("del/app/gone").is_none().then_some(())
        },
    );
    let r = api.get(&format!("/registry/repositories/{gone_id}"), Some(&root));
    assert_eq!(
        r.expect(404),
        json!({"message": "404 Repository Not Found"})
    );
    let t = reg.token(Some(ROOT), "del/app/gone", "pull");
    let r = reg.v2(Method::GET, "/v2/del/app/gone/tags/list", &t);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body["errors"][0]["code"], "NAME_UNKNOWN", "{r:?}");
    py.run(&root, out.clone(), DELETED_REPOSITORY);
    reg.assert_pulls("del/app", "v1", &kept);
}

// ---------------------------------------------------------------------------
// 8: cleanup policy through project.save()
// ---------------------------------------------------------------------------

const POLICY: &str = r#"
p = gl.projects.get("pol/app")
d = p.container_expiration_policy
want = {"enabled": False, "cadence": "1d", "keep_n": 10, "older_than": "90d", "name_regex": ".*"}
assert {k: d.get(k) for k in want} == want, d

p.container_expiration_policy_attributes = {
    "enabled": True, "cadence": "7d", "keep_n": 5, "older_than": "14d",
    "name_regex": "v.+", "name_regex_keep": "stable"}
before = datetime.datetime.now(datetime.timezone.utc)
p.save()
after = datetime.datetime.now(datetime.timezone.utc)
put = [c for c in calls if c[0] == "PUT"]
assert [c[1] for c in put] == [200], put
want = {"enabled": True, "cadence": "7d", "keep_n": 5, "older_than": "14d",
        "name_regex": "v.+", "name_regex_keep": "stable"}
assert {k: p.container_expiration_policy.get(k) for k in want} == want, p.container_expiration_policy
got = gl.projects.get("pol/app").container_expiration_policy
assert {k: got.get(k) for k in want} == want, got
nxt = datetime.datetime.fromisoformat(got["next_run_at"].replace("Z", "+00:00"))
week, minute = datetime.timedelta(days=7), datetime.timedelta(minutes=1)
assert before + week - minute <= nxt <= after + week + minute, (before, got["next_run_at"])

errors = {}
for field, value in [("cadence", "2d"), ("keep_n", 3), ("older_than", "60d"),
                     ("name_regex", "(unclosed"), ("name_regex", ""),
                     ("name_regex_keep", "[")]:
    q = gl.projects.get("pol/app")
    q.container_expiration_policy_attributes = {field: value}
    e = fails(q.save, gexc.GitlabUpdateError, 400)
    assert field in str(e.error_message), (field, value, e)
    errors[f"{field}={value!r}"] = str(e.error_message)
assert gl.projects.get("pol/app").container_expiration_policy == got, "refused updates change nothing"
result = {"policy": got, "errors": errors}
"#;

#[test]
fn cleanup_policy_through_project_save() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let root = pat(&berth, "root");
    berth.project("pol/app", "private");
    let out = py.run(&root, json!({}), POLICY);
    assert_eq!(out["policy"]["enabled"], true, "{out}");
}

// ---------------------------------------------------------------------------
// 9: registry visibility through project.save()
// ---------------------------------------------------------------------------

const SET_ACCESS: &str = r#"
p = gl.projects.get("vis/app")
p.container_registry_access_level = args["level"]
p.save()
assert gl.projects.get("vis/app").container_registry_access_level == args["level"]
"#;

/// Whether `creds` may pull `vis/app:v1`: the token grants pull and the pull works
/// (or neither).
fn may_pull(reg: &Registry, creds: Option<(&str, &str)>) -> bool {
    let t = reg.token(creds, "vis/app", "pull");
    let grant = granted(&t, "vis/app").contains(&"pull".to_string());
    let r = reg.v2(Method::GET, "/v2/vis/app/manifests/v1", &t);
    if grant {
        assert_eq!(r.status, 200, "{creds:?} was granted pull: {r:?}");
    } else {
        assert!(
            [401, 403].contains(&r.status),
            "{creds:?} was not granted pull: {r:?}"
        );
    }
    grant
}

#[test]
fn registry_access_level_through_project_save() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    berth.project("vis/app", "public");
    for (user, role) in [("guest", "guest"), ("reporter", "reporter")] {
        berth.user(user, PASSWORD);
        member(&berth, "vis/app", user, role);
    }
    reg.push(
        "vis/app",
        &Image::simple("vis", "2024-03-03T00:00:00Z"),
        &["v1"],
    );
    let guest = Some(("guest", PASSWORD));
    let reporter = Some(("reporter", PASSWORD));

    let who = |label: &str| -> Vec<(String, bool)> {
        [
            ("anonymous", None),
            ("guest", guest),
            ("reporter", reporter),
            ("root", Some(ROOT)),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), may_pull(&reg, c)))
        .inspect(|(n, ok)| eprintln!("{label}: {n} may pull: {ok}"))
        .collect()
    };
    let expect = |label: &str, want: [bool; 4]| {
        let got = who(label);
        let names = ["anonymous", "guest", "reporter", "root"];
        let want: Vec<(String, bool)> = names
            .iter()
            .zip(want)
            .map(|(n, w)| (n.to_string(), w))
            .collect();
        assert_eq!(got, want, "who may pull with the registry {label}");
    };

    expect("enabled", [true, true, true, true]);
    py.run(&root, json!({"level": "private"}), SET_ACCESS);
    expect("private", [false, false, true, true]);
    py.run(&root, json!({"level": "disabled"}), SET_ACCESS);
    expect("disabled", [false, false, false, false]);
    let r = api.get(
        &format!("/projects/{}/registry/repositories", enc("vis/app")),
        Some(&root),
    );
    assert_eq!(r.expect(403), json!({"message": "403 Forbidden"}));
    py.run(&root, json!({"level": "enabled"}), SET_ACCESS);
    expect("enabled again", [true, true, true, true]);
}

// ---------------------------------------------------------------------------
// 10: transfers and renames move the repositories
// ---------------------------------------------------------------------------

const TRANSFER_PROJECT: &str = r#"
p = gl.projects.get("src/app")
p.transfer("other-group")
assert last_status("PUT") == 200, calls
q = gl.projects.get("other-group/app")
assert q.id == p.id and q.path_with_namespace == "other-group/app", q.path_with_namespace
fails(lambda: gl.projects.get("src/app"), gexc.GitlabGetError, 404)
repos = q.repositories.list(tags=True)
assert sorted(r.path for r in repos) == ["other-group/app", "other-group/app/worker"], repos
for r in repos:
    assert r.location == args["host"] + "/" + r.path, r
    # `r.tags` is python-gitlab's tag manager; the JSON list is in asdict().
    assert all(t["path"].startswith("other-group/app") for t in r.asdict()["tags"]), r
"#;

const RENAME_PROJECT: &str = r#"
p = gl.projects.get("other-group/app")
p.path = "renamed"
p.save()
assert p.path_with_namespace == "other-group/renamed", p.path_with_namespace
q = gl.projects.get("other-group/renamed")
repos = {r.name: r for r in q.repositories.list(get_all=True)}
assert sorted(r.path for r in repos.values()) == ["other-group/renamed", "other-group/renamed/worker"]
t = repos[""].tags.get("v1")
assert t.path == "other-group/renamed:v1" and t.location == args["host"] + "/other-group/renamed:v1", t
"#;

const TRANSFER_GROUP: &str = r#"
g = gl.groups.get("gtop/gsub")
np = gl.groups.get("newparent")
g.transfer(np.id)
assert gl.groups.get(g.id).full_path == "newparent/gsub"
paths = sorted(r.path for r in np.registry_repositories.list(get_all=True))
assert paths == ["newparent/gsub/proj", "newparent/gsub/proj/img"], paths
assert gl.groups.get("gtop").registry_repositories.list(get_all=True) == []
"#;

const RENAME_GROUP: &str = r#"
g = gl.groups.get("newparent/gsub")
g.path = "gsub2"
g.save()
assert gl.groups.get(g.id).full_path == "newparent/gsub2"
p = gl.projects.get("newparent/gsub2/proj")
paths = sorted(r.path for r in p.repositories.list(get_all=True))
assert paths == ["newparent/gsub2/proj", "newparent/gsub2/proj/img"], paths
"#;

#[test]
fn transfers_and_renames_move_repositories() {
    let berth = Berth::start();
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    let args = json!({"host": berth.addr});
    group(&berth, "other-group", "private");
    berth.project("src/app", "private");
    let app = Image::simple("moving-app", "2024-04-04T00:00:00Z");
    let worker = Image::simple("moving-worker", "2024-04-04T00:00:00Z");
    reg.push("src/app", &app, &["v1"]);
    reg.push("src/app/worker", &worker, &["v1"]);

    // project.transfer('other-group')
    py.run(&root, args.clone(), TRANSFER_PROJECT);
    reg.assert_pulls("other-group/app", "v1", &app);
    reg.assert_pulls("other-group/app/worker", "v1", &worker);
    reg.assert_gone("src/app", "v1");
    reg.assert_gone("src/app/worker", "v1");
    if support::tool("skopeo") {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("pulled");
        run(Command::new("skopeo")
            .arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(tmp.path())
            .args([
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &format!("root:{ROOT_PASSWORD}"),
                &format!("docker://{}/other-group/app:v1", berth.addr),
                &format!("dir:{}", dir.display()),
            ]));
        let manifest = std::fs::read(dir.join("manifest.json")).expect("pulled manifest");
        assert_eq!(
            digest_of(&manifest),
            app.digest(),
            "same digest after the move"
        );
        let layer = std::fs::read(dir.join(sha256_hex(&app.layers[0]))).expect("pulled layer");
        assert_eq!(layer, app.layers[0]);
        let out = Command::new("skopeo")
            .arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(tmp.path())
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &format!("root:{ROOT_PASSWORD}"),
                &format!("docker://{}/src/app:v1", berth.addr),
            ])
            .output()
            .expect("run skopeo");
        assert!(
            !out.status.success(),
            "the old path still resolves: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // p.path = 'renamed'; p.save()
    py.run(&root, args.clone(), RENAME_PROJECT);
    reg.assert_pulls("other-group/renamed", "v1", &app);
    reg.assert_pulls("other-group/renamed/worker", "v1", &worker);
    reg.assert_gone("other-group/app", "v1");
    reg.assert_gone("other-group/app/worker", "v1");

    // group.transfer(new_parent_id), then a group path change.
    group(&berth, "newparent", "private");
    berth.project("gtop/gsub/proj", "private");
    let proj = Image::simple("moving-proj", "2024-04-04T00:00:00Z");
    reg.push("gtop/gsub/proj", &proj, &["v1"]);
    reg.push("gtop/gsub/proj/img", &worker, &["w1"]);
    py.run(&root, args.clone(), TRANSFER_GROUP);
    reg.assert_pulls("newparent/gsub/proj", "v1", &proj);
    reg.assert_pulls("newparent/gsub/proj/img", "w1", &worker);
    reg.assert_gone("gtop/gsub/proj", "v1");
    reg.assert_gone("gtop/gsub/proj/img", "w1");
    py.run(&root, args.clone(), RENAME_GROUP);
    reg.assert_pulls("newparent/gsub2/proj", "v1", &proj);
    reg.assert_pulls("newparent/gsub2/proj/img", "w1", &worker);
    reg.assert_gone("newparent/gsub/proj", "v1");
    // Pushing to the new path keeps working.
    reg.push("newparent/gsub2/proj", &app, &["v2"]);
    reg.assert_pulls("newparent/gsub2/proj", "v2", &app);
}

const REFUSED_MOVES: &str = r#"
p = gl.projects.get("rg/app")
p.path = "renamed"
e = fails(p.save, gexc.GitlabUpdateError, 400)
assert e.error_message == args["rename"], e
p = gl.projects.get("rg/app")
e = fails(lambda: p.transfer("dest"), gexc.GitlabTransferProjectError, 400)
assert e.error_message == args["transfer"], e
g = gl.groups.get("rg")
g.path = "rg2"
e = fails(g.save, gexc.GitlabUpdateError, 400)
# A plain message or a validation hash ({"base": [...]}); the text is GitLab's.
msg = e.error_message
if isinstance(msg, dict):
    msg = msg.get("base", [""])[0]
assert msg == args["group_path"], e
g = gl.groups.get("rg")
e = fails(lambda: g.transfer(gl.groups.get("dest").id), gexc.GitlabGroupTransferError, 400)
group_transfer = e
# Nothing moved.
assert gl.projects.get("rg/app").path_with_namespace == "rg/app"
assert gl.groups.get("rg").full_path == "rg"
# A project without tags moves freely.
q = gl.projects.get("rg/empty")
q.path = "empty2"
q.save()
assert gl.projects.get(q.id).path_with_namespace == "rg/empty2"
gl.projects.get("rg/empty2").transfer("dest")
assert gl.projects.get(q.id).path_with_namespace == "dest/empty2"
# Once the tags are gone, the project may be renamed.
repo = gl.projects.get("rg/app").repositories.list(get_all=True)[0]
repo.tags.delete("v1")
p = gl.projects.get("rg/app")
p.path = "renamed"
p.save()
assert gl.projects.get(p.id).path_with_namespace == "rg/renamed"
result = {"group_transfer": group_transfer.error_message}
"#;

#[test]
fn moves_are_refused_while_tags_exist_when_configured() {
    let berth = Berth::start_with(&[], &[("BERTH_REFUSE_MOVES_WITH_TAGS", "true")]);
    let Some(py) = Py::new(&berth) else {
        return;
    };
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    group(&berth, "dest", "private");
    berth.project("rg/app", "private");
    berth.project("rg/empty", "private");
    let img = Image::simple("refused", "2024-05-05T00:00:00Z");
    reg.push("rg/app", &img, &["v1"]);

    let out = py.run(
        &root,
        json!({
            "rename": RENAME_REFUSED,
            "transfer": TRANSFER_REFUSED,
            "group_path": GROUP_PATH_REFUSED,
        }),
        REFUSED_MOVES,
    );
    // The manifest (untagged now) moved with the renamed project.
    reg.assert_pulls("rg/renamed", &img.digest(), &img);
    reg.assert_gone("rg/app", &img.digest());
    // A group transfer with images below: Groups::TransferService answers
    // "Transfer failed: " and its group_contains_images text, the same text as the
    // path change (gitlab-api.md §2.1).
    assert_eq!(
        out["group_transfer"],
        format!("Transfer failed: {GROUP_PATH_REFUSED}"),
        "POST /groups/:id/transfer with images below"
    );
}

// ---------------------------------------------------------------------------
// 11: deleting a project or a group (skopeo pushes and pulls)
// ---------------------------------------------------------------------------

/// `img` as skopeo's `dir:` layout in `dir`.
fn write_dir_image(dir: &std::path::Path, img: &Image) {
    std::fs::create_dir_all(dir).expect("image dir");
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").expect("version");
    std::fs::write(dir.join("manifest.json"), &img.manifest).expect("manifest");
    for blob in std::iter::once(&img.config).chain(&img.layers) {
        std::fs::write(dir.join(sha256_hex(blob)), blob).expect("blob");
    }
}

fn skopeo(tmp: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .arg("--tmpdir")
        .arg(tmp)
        .args(args)
        .output()
        .expect("run skopeo")
}

/// What a pull of `path:v1` answers on `/v2` (status, error code), with root's token.
fn pull_answer(reg: &Registry, path: &str) -> (u16, Value) {
    let r = reg.manifest(Some(ROOT), path, "v1");
    (r.status, r.body["errors"][0]["code"].clone())
}

#[test]
fn deleting_projects_and_groups_frees_their_images() {
    if !support::tool("skopeo") {
        return;
    }
    // Online GC reviews within a few rounds, so the freed bytes show soon; but not
    // before a push's manifest follows its blobs (on S3 and on several nodes a
    // push's requests take longer: there 300 ms took a layer before its manifest,
    // and so it did on SQLite with the suite's binaries running beside this one).
    let delay = if support::s3_mode() { "3s" } else { "1500ms" };
    let berth = Berth::start_with(&[], &[("BERTH_GC_REVIEW_DELAY", delay)]);
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    let creds = format!("root:{ROOT_PASSWORD}");
    berth.project("doomed/app", "private");
    berth.project("team/sub/lib", "private");
    berth.project("team/tool", "private");
    berth.project("keep/app", "private");
    berth.project("py/app", "private");
    let tmp = tempfile::tempdir().expect("temp dir");
    let shared = layer("deleted-and-kept");
    let doomed = Image::new(
        "2024-05-05T00:00:00Z",
        &[layer("only-doomed"), shared.clone()],
    );
    let lib = Image::simple("only-lib", "2024-05-05T00:00:00Z");
    let tool = Image::simple("only-tool", "2024-05-05T00:00:00Z");
    let kept = Image::new("2024-05-05T00:00:00Z", std::slice::from_ref(&shared));
    for (path, img) in [
        ("doomed/app", &doomed),
        ("doomed/app/worker", &doomed),
        ("team/sub/lib", &lib),
        ("team/tool/cli", &tool),
        ("keep/app", &kept),
    ] {
        let dir = tmp.path().join(path.replace('/', "-"));
        write_dir_image(&dir, img);
        let out = skopeo(
            tmp.path(),
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &format!("dir:{}", dir.display()),
                &format!("docker://{}/{path}:v1", berth.addr),
            ],
        );
        assert!(
            out.status.success(),
            "push {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let storage = support::Storage::of(&berth.data_dir());
    let only_doomed = digest_of(&doomed.layers[0]);
    let shared_digest = digest_of(&shared.0);
    assert!(storage.has_blob(&only_doomed) && storage.has_blob(&shared_digest));
    // A pull of a path that never existed: what a deleted one must answer too.
    let never = pull_answer(&reg, "never/was");

    // Only owners delete a project; a maintainer is refused, as in GitLab.
    berth.user("maint", PASSWORD);
    member(&berth, "doomed/app", "maint", "maintainer");
    let maint = pat(&berth, "maint");
    let r = api.delete(&format!("/projects/{}", enc("doomed/app")), Some(&maint));
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, json!({"message": "403 Forbidden"}), "{r:?}");
    // Owners neither, while a tag there is protected from them (only admins delete v*).
    berth.user("own", PASSWORD);
    member(&berth, "doomed/app", "own", "owner");
    let own = pat(&berth, "own");
    let p = api
        .get(&format!("/projects/{}", enc("doomed/app")), Some(&root))
        .expect(200);
    let rule = api
        .post(
            &format!("/projects/{}/registry/protection/tag/rules", p["id"]),
            &root,
            json!({"tag_name_pattern": "v.*", "minimum_access_level_for_push": "maintainer",
                   "minimum_access_level_for_delete": "admin"}),
        )
        .expect(201);
    let r = api.delete(&format!("/projects/{}", p["id"]), Some(&own));
    assert_eq!(r.status, 403, "{r:?}");
    let msg = r.body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("403 Forbidden - ") && msg.contains("v1"),
        "{r:?}"
    );
    reg.assert_pulls("doomed/app", "v1", &doomed);
    api.delete(
        &format!(
            "/projects/{}/registry/protection/tag/rules/{}",
            p["id"], rule["id"]
        ),
        Some(&root),
    )
    .expect(204);

    // The owner deletes it: GitLab's 202, and the project and its images are gone.
    let r = api.delete(&format!("/projects/{}", enc("doomed/app")), Some(&own));
    assert_eq!(r.expect(202), json!({"message": "202 Accepted"}));
    assert_eq!(
        api.get(&format!("/projects/{}", p["id"]), Some(&root))
            .expect(404),
        json!({"message": "404 Project Not Found"})
    );
    for path in ["doomed/app", "doomed/app/worker"] {
        assert_eq!(
            pull_answer(&reg, path),
            never,
            "{path} answers as a missing one"
        );
        let out = skopeo(
            tmp.path(),
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &creds,
                &format!("docker://{}/{path}:v1", berth.addr),
            ],
        );
        assert!(!out.status.success(), "{path} still pulls");
    }
    // GC frees what only the project held, and keeps the layer another image has.
    support::eventually(
        Duration::from_secs(30),
        "GC to free the deleted project's layer",
        || (!storage.has_blob(&only_doomed)).then_some(()),
    );
    assert!(storage.has_blob(&shared_digest));
    reg.assert_pulls("keep/app", "v1", &kept);

    // A group: its subgroups and projects go, and then their bytes.
    let r = api.delete(&format!("/groups/{}", enc("team")), Some(&own));
    assert_eq!(r.status, 404, "not visible to a non-member: {r:?}");
    let r = api.delete(&format!("/groups/{}", enc("team")), Some(&root));
    assert_eq!(r.expect(202), json!({"message": "202 Accepted"}));
    for g in ["team", "team/sub"] {
        api.get(&format!("/groups/{}", enc(g)), Some(&root))
            .expect(404);
    }
    for p in ["team/sub/lib", "team/tool"] {
        api.get(&format!("/projects/{}", enc(p)), Some(&root))
            .expect(404);
    }
    for path in ["team/sub/lib", "team/tool/cli"] {
        assert_eq!(
            pull_answer(&reg, path),
            never,
            "{path} answers as a missing one"
        );
    }
    for img in [&lib, &tool] {
        let d = digest_of(&img.layers[0]);
        support::eventually(
            Duration::from_secs(30),
            "GC to free the group's layers",
            || (!storage.has_blob(&d)).then_some(()),
        );
    }
    reg.assert_pulls("keep/app", "v1", &kept);

    // python-gitlab deletes both the same way.
    if let Some(py) = Py::new(&berth) {
        py.run(&root, json!({}), PY_DELETES);
    }
}

const PY_DELETES: &str = r#"
gl.projects.delete("py/app")
assert last_status("DELETE") == 202, calls
fails(lambda: gl.projects.get("py/app"), gexc.GitlabGetError, 404)
gl.groups.get("py").delete()
assert last_status("DELETE") == 202, calls
fails(lambda: gl.groups.get("py"), gexc.GitlabGetError, 404)
result = {}
"#;

/// The `data-repository` attributes of a web registry page's rows, in order.
fn listed_rows(html: &str) -> Vec<String> {
    html.split("<tr data-repository=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        // (minijinja escapes `/` in attributes)
        .map(|v| v.replace("&#x2f;", "/"))
        .collect()
}

/// The web UI's group registry page lists, filters and sorts a group's images (in the
/// database: a group may hold 100,000), and sums their storage only for groups of up
/// to 100 projects.
#[test]
fn web_group_registry_page_lists_filters_and_sorts() {
    let berth = Berth::start();
    let api = Api::new(&berth);
    let reg = Registry::new(&berth);
    let root = pat(&berth, "root");
    group(&berth, "big", "public");
    let gid = api.get("/groups/big", Some(&root)).expect(200)["id"].clone();
    for i in 0..101 {
        let path = format!("p{i:03}");
        api.post(
            "/projects",
            &root,
            json!({ "name": path, "path": path, "namespace_id": gid, "visibility": "public" }),
        )
        .expect(201);
    }
    berth.project("small/app", "public");
    // Pushed in this order; shown as `alpha`, `beta` and (a project's root image) its
    // whole path.
    let pushed = ["big/p001/beta", "big/p000/alpha", "big/p002", "small/app"];
    for (i, path) in pushed.iter().enumerate() {
        let img = Image::simple(&format!("web list {i}"), "2024-01-02T03:04:05Z");
        reg.push(path, &img, &["v1"]);
        // Creation times in milliseconds: keep them apart.
        std::thread::sleep(Duration::from_millis(5));
    }

    let page = |path: &str| support::web_page(&berth, path, "root", ROOT_PASSWORD);
    let big = "/groups/big/-/container_registries";
    let html = page(big);
    assert_eq!(
        listed_rows(&html),
        ["big/p000/alpha", "big/p001/beta", "big/p002"],
        "by shown name"
    );
    assert!(
        html.contains("shown for groups of up to 100 projects"),
        "no storage total for 101 projects: {html}"
    );
    assert_eq!(
        listed_rows(&page(&format!("{big}?search=BETA"))),
        ["big/p001/beta"]
    );
    assert_eq!(
        listed_rows(&page(&format!("{big}?sort=created&order=desc"))),
        ["big/p002", "big/p000/alpha", "big/p001/beta"]
    );
    assert_eq!(
        listed_rows(&page(&format!(
            "{big}?sort=name&order=desc&per_page=50&page=1"
        ))),
        ["big/p002", "big/p001/beta", "big/p000/alpha"]
    );
    assert!(listed_rows(&page(&format!("{big}?filter=empty"))).is_empty());
    // A search that finds nothing still knows the group has images (no first-push help).
    let none = page(&format!("{big}?search=nothing-like-this"));
    assert!(listed_rows(&none).is_empty());
    assert!(!none.contains("data-test=\"empty-state\""), "{none}");
    // A group without images says so.
    group(&berth, "bare", "public");
    let bare = page("/groups/bare/-/container_registries?search=x");
    assert!(bare.contains("data-test=\"empty-state\""), "{bare}");

    let small = page("/groups/small/-/container_registries");
    assert_eq!(listed_rows(&small), ["small/app"]);
    assert!(
        small.contains("of images, deduplicated"),
        "a storage total for one project: {small}"
    );
}
