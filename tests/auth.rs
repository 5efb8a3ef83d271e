//! End-to-end tests of identity and permissions: the real `berth` binary, real HTTP,
//! and the real Docker token flow. Every test asks `/jwt/auth` for a token with some
//! credential (a password, a personal access token, a deploy token, a CI job token,
//! or none), checks the token's `access` claim, and then calls `/v2/...` with
//! `Authorization: Bearer`. Expectations come from MISSION.md §1–3 and the grant table
//! of shared/reference/gitlab-api.md §3.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use support::{run, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The instance administrator every test server starts with.
const ROOT: (&str, &str) = ("root", ROOT_PASSWORD);
/// The password of every other user the tests create.
const PASSWORD: &str = "correct-horse-battery-staple";

type Creds<'a> = Option<(&'a str, &'a str)>;

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
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_string())
    }

    /// A header that must be present.
    fn h(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header; {self:?}", self.what))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {self:?}", self.what))
    }

    /// Assert the status, showing the whole response when it differs.
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{}: expected {status}; got {self:?}",
            self.what
        );
        self
    }

    /// Assert an error response: the status and `errors[0].code`. Returns `errors[0]`.
    fn expect_error(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let err = self.json()["errors"][0].clone();
        assert_eq!(
            err["code"].as_str(),
            Some(code),
            "{}: expected error code {code}; got {self:?}",
            self.what
        );
        assert!(
            err["message"].is_string(),
            "{}: error without a message: {self:?}",
            self.what
        );
        err
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.text();
        if body.len() > 1500 {
            body.truncate(1500);
            body.push('…');
        }
        write!(
            f,
            "{} → {} {:?} body={:?}",
            self.what, self.status, self.headers, body
        )
    }
}

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn send(what: String, rb: RequestBuilder) -> Resp {
    let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().unwrap_or_else(|e| panic!("{what}: {e}")).to_vec();
    Resp {
        what,
        status,
        headers,
        body,
    }
}

/// An absolute URL for a path, or a `Location` (absolute or relative).
fn url(berth: &Berth, path_or_url: &str) -> String {
    if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
        path_or_url.to_string()
    } else {
        format!("{}{path_or_url}", berth.url)
    }
}

/// A registry request with an optional bearer token (manifest requests accept every
/// manifest type).
fn v2(berth: &Berth, method: Method, path: &str, token: Option<&str>) -> Resp {
    let u = url(berth, path);
    let mut rb = http().request(method.clone(), &u);
    if path.contains("/manifests/") {
        rb = rb.header("Accept", ACCEPT_MANIFESTS);
    }
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(
        format!(
            "{method} {u} ({})",
            if token.is_some() {
                "bearer"
            } else {
                "no token"
            }
        ),
        rb,
    )
}

fn get(berth: &Berth, path: &str, token: Option<&str>) -> Resp {
    v2(berth, Method::GET, path, token)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A JSON array of strings (absent or null: empty).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// The token service
// ---------------------------------------------------------------------------

/// Percent-encode everything but RFC 3986 unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /jwt/auth?<query>` with HTTP Basic credentials, or none (anonymous).
fn auth_request(berth: &Berth, creds: Creds, query: &str) -> Resp {
    let u = format!("{}/jwt/auth?{query}", berth.url);
    let mut rb = http().get(&u);
    if let Some((user, secret)) = creds {
        rb = rb.basic_auth(user, Some(secret));
    }
    send(
        format!("GET {u} as {}", creds.map_or("anonymous", |c| c.0)),
        rb,
    )
}

/// What docker sends: one `scope` parameter per scope.
fn token_resp<S: AsRef<str>>(berth: &Berth, creds: Creds, scopes: &[S]) -> Resp {
    let mut q = String::from("service=container_registry&client_id=docker&offline_token=true");
    if let Some((user, _)) = creds {
        q.push_str(&format!("&account={}", enc(user)));
    }
    for s in scopes {
        q.push_str(&format!("&scope={}", enc(s.as_ref())));
    }
    auth_request(berth, creds, &q)
}

/// A bearer token, which must be issued.
fn token<S: AsRef<str>>(berth: &Berth, creds: Creds, scopes: &[S]) -> String {
    let r = token_resp(berth, creds, scopes);
    r.expect(200);
    let body = r.json();
    let t = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {r:?}"))
        .to_string();
    assert_eq!(body["access_token"], t.as_str(), "access_token = token");
    t
}

/// The 401 `/jwt/auth` gives for bad credentials (GitLab's body).
fn assert_auth_refused(r: &Resp) {
    let err = r.expect_error(401, "UNAUTHORIZED");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("HTTP Basic: Access denied"),
        "{r:?}"
    );
    assert!(r.json().get("token").is_none(), "no token on refusal");
}

fn scope(path: &str, actions: &str) -> String {
    format!("repository:{path}:{actions}")
}

// ---------------------------------------------------------------------------
// JWTs, decoded and forged by hand
// ---------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|c| *c != b'=') {
        let v = B64URL
            .iter()
            .position(|x| *x == c)
            .unwrap_or_else(|| panic!("{c:?} is not base64url in {s:?}")) as u32;
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

fn jwt_part(token: &str, i: usize) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    serde_json::from_slice(&b64url_decode(parts[i]))
        .unwrap_or_else(|e| panic!("JWT part {i} is not JSON ({e}): {token}"))
}

fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The same token with its payload changed and its signature kept.
fn with_claims(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = jwt_claims(token);
    change(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        b64url_encode(&serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

/// The actions the token grants on repository `path`, sorted; empty when the
/// resource was dropped from the `access` claim.
fn granted(token: &str, path: &str) -> Vec<String> {
    let claims = jwt_claims(token);
    let access = claims["access"]
        .as_array()
        .unwrap_or_else(|| panic!("no access claim in {claims}"));
    let entries: Vec<&Value> = access
        .iter()
        .filter(|a| a["type"] == "repository" && a["name"] == path)
        .collect();
    assert!(entries.len() <= 1, "{path} twice in {claims}");
    let mut actions = entries
        .first()
        .map(|e| strings(&e["actions"]))
        .unwrap_or_default();
    actions.sort();
    actions
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.iter().map(|b| b ^ 0x36).collect::<Vec<_>>());
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<_>>());
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

// ---------------------------------------------------------------------------
// Refusals on /v2
// ---------------------------------------------------------------------------

/// 401 with a Bearer challenge pointing at the token service, and the error code.
fn challenge(r: &Resp) -> String {
    r.expect_error(401, "UNAUTHORIZED");
    let w = r.h("WWW-Authenticate");
    assert!(
        w.starts_with("Bearer ")
            && w.contains("/jwt/auth\"")
            && w.contains("service=\"container_registry\""),
        "{}: bad challenge {w:?}",
        r.what
    );
    w
}

/// A valid token that lacks the action: 401 `insufficient_scope`.
fn assert_insufficient_scope(r: &Resp) {
    let w = challenge(r);
    assert!(
        w.contains("error=\"insufficient_scope\""),
        "{}: expected insufficient_scope in {w:?}",
        r.what
    );
}

/// A token the registry does not trust: 401 `invalid_token`.
fn assert_invalid_token(r: &Resp) {
    let w = challenge(r);
    assert!(
        w.contains("error=\"invalid_token\""),
        "{}: expected invalid_token in {w:?}",
        r.what
    );
}

/// 403 `DENIED` whose message contains `needle`.
fn assert_denied(r: &Resp, needle: &str) {
    let err = r.expect_error(403, "DENIED");
    let msg = err["message"].as_str().unwrap().to_lowercase();
    assert!(
        msg.contains(&needle.to_lowercase()),
        "{}: message {msg:?} should say {needle:?}",
        r.what
    );
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// A one-layer OCI image whose bytes depend only on `seed`.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

impl Image {
    fn new(seed: &str) -> Image {
        let content = format!("berth auth test image {seed}\n");
        let tar = support::tar_layer("etc/berth-test", content.as_bytes());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let layer = gz.finish().expect("gzip");
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["PATH=/usr/bin:/bin"] },
            "rootfs": { "type": "layers", "diff_ids": [digest_of(&tar)] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len() },
            "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": digest_of(&layer), "size": layer.len() }],
        }))
        .unwrap();
        Image {
            config,
            layer,
            manifest,
        }
    }

    fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// Write the image as an OCI image layout tagged `tag` (for skopeo).
    fn write_layout(&self, dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for blob in [&self.config, &self.layer, &self.manifest] {
            std::fs::write(dir.join("blobs/sha256").join(sha256_hex(blob)), blob).unwrap();
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": self.digest(),
                "size": self.manifest.len(),
                "annotations": { REF_NAME: tag },
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// Push the image's blobs and manifest over raw HTTP. Returns the first response that
/// is not a success, or the manifest PUT's response.
fn push(berth: &Berth, token: Option<&str>, name: &str, tag: &str, img: &Image) -> Resp {
    for blob in [&img.config, &img.layer] {
        let start = v2(
            berth,
            Method::POST,
            &format!("/v2/{name}/blobs/uploads/"),
            token,
        );
        if start.status != 202 {
            return start;
        }
        let loc = url(berth, &start.h("Location"));
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={}", digest_of(blob));
        let mut rb = http()
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .body(blob.clone());
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let done = send(format!("PUT {put}"), rb);
        if done.status != 201 {
            return done;
        }
    }
    let u = format!("{}/v2/{name}/manifests/{tag}", berth.url);
    let mut rb = http()
        .put(&u)
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(format!("PUT {u}"), rb)
}

fn push_ok(berth: &Berth, token: &str, name: &str, tag: &str, img: &Image) {
    let r = push(berth, Some(token), name, tag, img);
    r.expect(201);
    assert_eq!(r.h("Docker-Content-Digest"), img.digest(), "{r:?}");
}

/// Pull the manifest by tag and check its bytes.
fn pull_ok(berth: &Berth, token: &str, name: &str, tag: &str, img: &Image) {
    let r = get(berth, &format!("/v2/{name}/manifests/{tag}"), Some(token));
    r.expect(200);
    assert_eq!(r.body, img.manifest, "{}: manifest bytes", r.what);
    assert_eq!(r.h("Docker-Content-Digest"), img.digest());
}

/// The tags of a repository, as root sees them.
fn root_tags(berth: &Berth, name: &str) -> Vec<String> {
    let t = token(berth, Some(ROOT), &[scope(name, "pull")]);
    let r = get(berth, &format!("/v2/{name}/tags/list"), Some(&t));
    match r.status {
        200 => strings(&r.json()["tags"]),
        404 => Vec::new(),
        _ => panic!("unexpected {r:?}"),
    }
}

// ---------------------------------------------------------------------------
// Administration
// ---------------------------------------------------------------------------

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

fn pat(berth: &Berth, user: &str, name: &str, scopes: &str, expires_at: Option<&str>) -> String {
    let mut args = vec![
        "token", "create", "--user", user, "--name", name, "--scopes", scopes,
    ];
    if let Some(d) = expires_at {
        args.extend(["--expires-at", d]);
    }
    let out = berth.admin(&args);
    assert!(out.starts_with("glpat-"), "a PAT: {out:?}");
    out
}

/// `deploy-token create`; returns (username, token).
fn deploy_token(berth: &Berth, extra: &[&str]) -> (String, String) {
    let mut args = vec!["deploy-token", "create"];
    args.extend(extra);
    let out = berth.admin(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "username and token: {out:?}");
    (lines[0].to_string(), lines[1].to_string())
}

/// Parse `export K='V'` lines.
fn ci_vars(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("K=V");
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v)
                .replace("'\\''", "'");
            (k.to_string(), v)
        })
        .collect()
}

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

fn today_utc() -> String {
    let (y, m, d) = civil(unix_now().div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
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

// ---------------------------------------------------------------------------
// 1. The view/pull permission matrix
// ---------------------------------------------------------------------------

/// MISSION.md §3, "View the registry and pull images":
/// (project visibility, registry access, anonymous, guest, reporter and up).
const PULL_TABLE: [(&str, &str, bool, bool, bool); 9] = [
    ("public", "enabled", true, true, true),
    ("public", "private", false, false, true),
    ("internal", "enabled", false, true, true),
    ("internal", "private", false, false, true),
    ("private", "enabled", false, false, true),
    ("private", "private", false, false, true),
    ("public", "disabled", false, false, false),
    ("internal", "disabled", false, false, false),
    ("private", "disabled", false, false, false),
];

/// One cell: ask for a token as `creds`, check its grant, then list tags and pull the
/// manifest (and its layer) with it. Returns what went wrong.
fn check_cell(
    berth: &Berth,
    label: &str,
    creds: Creds,
    path: &str,
    img: &Image,
    want: &[&str],
    // Refused with an explanation (403) rather than a challenge.
    disabled: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let r = token_resp(berth, creds, &[scope(path, "pull,push,delete")]);
    if r.status != 200 {
        problems.push(format!("{label}: /jwt/auth refused: {r:?}"));
        return problems;
    }
    let t = r.json()["token"].as_str().unwrap_or_default().to_string();
    let got = granted(&t, path);
    if got != owned(want) {
        problems.push(format!(
            "{label}: token grants {got:?}, expected {want:?}; claims {}",
            jwt_claims(&t)
        ));
    }
    let can_pull = want.contains(&"pull");
    let requests = [
        ("list tags", format!("/v2/{path}/tags/list")),
        ("pull manifest", format!("/v2/{path}/manifests/v1")),
        (
            "pull layer",
            format!("/v2/{path}/blobs/{}", digest_of(&img.layer)),
        ),
    ];
    for (what, p) in requests {
        let r = get(berth, &p, Some(&t));
        if can_pull {
            let ok = r.status == 200
                && match what {
                    "list tags" => serde_json::from_slice::<Value>(&r.body)
                        .map(|v| strings(&v["tags"]) == ["v1"])
                        .unwrap_or(false),
                    "pull manifest" => r.body == img.manifest,
                    _ => r.body == img.layer,
                };
            if !ok {
                problems.push(format!("{label}: {what} should succeed: {r:?}"));
            }
            continue;
        }
        if contains(&r.body, &img.manifest) || contains(&r.body, &img.layer) {
            problems.push(format!("{label}: {what} leaked image bytes: {r:?}"));
        }
        let code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(String::from));
        let www = r.header("WWW-Authenticate").unwrap_or_default();
        let right = if disabled {
            r.status == 403 && code.as_deref() == Some("DENIED")
        } else {
            r.status == 401
                && code.as_deref() == Some("UNAUTHORIZED")
                && www.contains("error=\"insufficient_scope\"")
        };
        if !right {
            problems.push(format!(
                "{label}: {what} should be refused with {}: {r:?}",
                if disabled {
                    "403 DENIED"
                } else {
                    "401 insufficient_scope"
                }
            ));
        }
    }
    problems
}

#[test]
fn pull_permission_matrix() {
    let berth = Berth::start();
    for u in ["guest", "reporter", "outsider"] {
        berth.user(u, PASSWORD);
    }
    // Every project starts private with its registry enabled; root pushes an image
    // into it, then the project gets its visibility and registry access level.
    let mut images = Vec::new();
    for (vis, access, ..) in PULL_TABLE {
        let path = format!("m/{vis}-{access}");
        berth.project(&path, "private");
        member(&berth, &path, "guest", "guest");
        member(&berth, &path, "reporter", "reporter");
        images.push((path.clone(), Image::new(&path)));
    }
    let scopes: Vec<String> = images.iter().map(|(p, _)| scope(p, "pull,push")).collect();
    let root = token(&berth, Some(ROOT), &scopes);
    for (path, img) in &images {
        assert_eq!(granted(&root, path), ["pull", "push"]);
        push_ok(&berth, &root, path, "v1", img);
    }
    for (vis, access, ..) in PULL_TABLE {
        berth.admin(&[
            "project",
            "update",
            &format!("m/{vis}-{access}"),
            "--visibility",
            vis,
            "--registry-access",
            access,
        ]);
    }
    let listed = berth.admin(&["project", "list"]);
    for (vis, access, ..) in PULL_TABLE {
        assert!(
            listed
                .lines()
                .any(|l| l.ends_with(&format!("\tm/{vis}-{access}\t{vis}\t{access}"))),
            "project list shows m/{vis}-{access} as {vis}/{access}:\n{listed}"
        );
    }

    let guest = Some(("guest", PASSWORD));
    let reporter = Some(("reporter", PASSWORD));
    let outsider = Some(("outsider", PASSWORD));
    let mut problems = Vec::new();
    let mut cells = 0;
    for ((vis, access, anon, as_guest, as_reporter), (path, img)) in PULL_TABLE.iter().zip(&images)
    {
        let disabled = *access == "disabled";
        let pull = |yes: bool| if yes { vec!["pull"] } else { vec![] };
        // The table's three columns, plus: a signed-in non-member counts like a guest
        // (MISSION.md §3, internal projects; for public and private projects the
        // guest column already is what any non-member gets), and an instance admin
        // may do everything unless the registry is disabled.
        let rows: [(&str, Creds, Vec<&str>); 5] = [
            ("anonymous", None, pull(*anon)),
            ("guest", guest, pull(*as_guest)),
            ("reporter", reporter, pull(*as_reporter)),
            ("signed-in non-member", outsider, pull(*as_guest)),
            (
                "admin",
                Some(ROOT),
                if disabled {
                    vec![]
                } else {
                    vec!["delete", "pull", "push"]
                },
            ),
        ];
        for (who, creds, want) in rows {
            let label = format!("{vis}/{access} as {who}");
            // A disabled registry is explained (403) only to those who may see the
            // project; to others it looks like any project they may not see.
            let sees = matches!(
                (*vis, who),
                ("public", _)
                    | (_, "admin" | "guest" | "reporter")
                    | ("internal", "signed-in non-member")
            );
            problems.extend(check_cell(
                &berth,
                &label,
                creds,
                path,
                img,
                &want,
                disabled && sees,
            ));
            cells += 1;
        }

        // No token at all: a challenge naming the scope (nothing to be done about a
        // disabled registry of a public project, so that is 403 at once).
        let r = get(&berth, &format!("/v2/{path}/manifests/v1"), None);
        let www = r.header("WWW-Authenticate").unwrap_or_default();
        let right = if disabled && *vis == "public" {
            r.status == 403
        } else {
            r.status == 401
                && www.contains(&format!("scope=\"repository:{path}:pull\""))
                && !www.contains("error=")
        };
        if !right || contains(&r.body, &img.manifest) {
            problems.push(format!("{vis}/{access} without a token: {r:?}"));
        }
    }
    assert_eq!(cells, 45);
    assert!(
        problems.is_empty(),
        "{} problem(s) in the permission matrix:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. Push and delete by role
// ---------------------------------------------------------------------------

#[test]
fn push_and_delete_by_role() {
    let berth = Berth::start();
    let project = "team/app";
    berth.project(project, "private");
    let roles = ["guest", "reporter", "developer", "maintainer", "owner"];
    for role in roles {
        berth.user(role, PASSWORD);
        member(&berth, project, role, role);
    }
    let base = Image::new("base");
    let root = token(&berth, Some(ROOT), &[scope(project, "pull,push,delete")]);
    assert_eq!(granted(&root, project), ["delete", "pull", "push"]);
    push_ok(&berth, &root, project, "base", &base);
    for who in roles.iter().chain(&["root"]) {
        push_ok(&berth, &root, project, &format!("del-{who}"), &base);
    }

    // (role, granted on pull,push,delete)
    let expected: [(&str, &[&str]); 5] = [
        ("guest", &[]),
        ("reporter", &["pull"]),
        ("developer", &["pull", "push"]),
        ("maintainer", &["delete", "pull", "push"]),
        ("owner", &["delete", "pull", "push"]),
    ];
    for (role, want) in expected {
        let t = token(
            &berth,
            Some((role, PASSWORD)),
            &[scope(project, "pull,push,delete")],
        );
        assert_eq!(granted(&t, project), owned(want), "{role}'s grant");
        let img = Image::new(role);

        // Push: a blob upload, then a manifest.
        if want.contains(&"push") {
            push_ok(&berth, &t, project, role, &img);
            pull_ok(&berth, &root, project, role, &img);
        } else {
            let r = push(&berth, Some(&t), project, role, &img);
            assert_insufficient_scope(&r);
            assert!(r.what.starts_with("POST"), "refused at the upload: {r:?}");
            // Nor can the manifest be put directly (its blobs exist: root pushed base).
            let r = v2(
                &berth,
                Method::PUT,
                &format!("/v2/{project}/manifests/{role}"),
                Some(&t),
            );
            assert_insufficient_scope(&r);
        }

        // The registry API's delete action (one tag): maintainer and up.
        let tag = format!("del-{role}");
        let r = v2(
            &berth,
            Method::DELETE,
            &format!("/v2/{project}/manifests/{tag}"),
            Some(&t),
        );
        if want.contains(&"delete") {
            r.expect(202);
            assert!(!root_tags(&berth, project).contains(&tag), "{tag} deleted");
        } else {
            assert_insufficient_scope(&r);
            assert!(root_tags(&berth, project).contains(&tag), "{tag} kept");
        }
    }
    let tags = root_tags(&berth, project);
    assert!(tags.contains(&"developer".into()) && !tags.contains(&"guest".into()));

    // The admin does everything.
    let img = Image::new("root");
    push_ok(&berth, &root, project, "root", &img);
    v2(
        &berth,
        Method::DELETE,
        &format!("/v2/{project}/manifests/del-root"),
        Some(&root),
    )
    .expect(202);
    v2(
        &berth,
        Method::DELETE,
        &format!("/v2/{project}/manifests/{}", img.digest()),
        Some(&root),
    )
    .expect(202);

    // A disabled registry refuses everyone, the admin included.
    let off = "team/off";
    berth.project(off, "public");
    let t = token(&berth, Some(ROOT), &[scope(off, "pull,push,delete")]);
    push_ok(&berth, &t, off, "v1", &base);
    berth.admin(&["project", "update", off, "--registry-access", "disabled"]);
    let t = token(&berth, Some(ROOT), &[scope(off, "pull,push,delete")]);
    assert!(granted(&t, off).is_empty(), "{}", jwt_claims(&t));
    assert_denied(
        &get(&berth, &format!("/v2/{off}/manifests/v1"), Some(&t)),
        "disabled",
    );
    assert_denied(
        &get(&berth, &format!("/v2/{off}/tags/list"), Some(&t)),
        "disabled",
    );
    assert_denied(&push(&berth, Some(&t), off, "v2", &img), "disabled");
    assert_denied(
        &v2(
            &berth,
            Method::DELETE,
            &format!("/v2/{off}/manifests/v1"),
            Some(&t),
        ),
        "disabled",
    );
}

// ---------------------------------------------------------------------------
// 3. Credentials
// ---------------------------------------------------------------------------

#[test]
fn personal_access_tokens_and_blocked_users() {
    let berth = Berth::start();
    let project = "c/app";
    berth.project(project, "private");
    for (user, role) in [
        ("dev", "developer"),
        ("maint", "maintainer"),
        ("rep", "reporter"),
    ] {
        berth.user(user, PASSWORD);
        member(&berth, project, user, role);
    }
    let base = Image::new("base");
    let root = token(&berth, Some(ROOT), &[scope(project, "pull,push")]);
    push_ok(&berth, &root, project, "v1", &base);
    let all = [scope(project, "pull,push,delete")];

    // read_registry: pull only.
    let read = pat(&berth, "dev", "read", "read_registry", None);
    let t = token(&berth, Some(("dev", &read)), &all);
    assert_eq!(granted(&t, project), ["pull"]);
    let claims = jwt_claims(&t);
    assert_eq!(claims["auth_type"], "personal_access_token");
    assert_eq!(claims["sub"], "dev");
    pull_ok(&berth, &t, project, "v1", &base);
    assert_insufficient_scope(&push(&berth, Some(&t), project, "r", &Image::new("r")));

    // write_registry alone: push but not pull.
    let write = pat(&berth, "dev", "write", "write_registry", None);
    let t = token(&berth, Some(("dev", &write)), &all);
    assert_eq!(granted(&t, project), ["push"]);
    let img = Image::new("write");
    push_ok(&berth, &t, project, "w", &img);
    assert_insufficient_scope(&get(
        &berth,
        &format!("/v2/{project}/manifests/v1"),
        Some(&t),
    ));
    assert_insufficient_scope(&get(&berth, &format!("/v2/{project}/tags/list"), Some(&t)));
    pull_ok(&berth, &root, project, "w", &img);

    // Both, and `api`: whatever the role allows.
    let both = pat(&berth, "dev", "both", "read_registry,write_registry", None);
    let t = token(&berth, Some(("dev", &both)), &all);
    assert_eq!(granted(&t, project), ["pull", "push"]);
    for (user, want) in [
        ("dev", &["pull", "push"][..]),
        ("maint", &["delete", "pull", "push"]),
        ("rep", &["pull"]),
    ] {
        let api = pat(&berth, user, "api", "api", None);
        let t = token(&berth, Some((user, &api)), &all);
        assert_eq!(granted(&t, project), owned(want), "{user} with an api PAT");
    }
    // The PAT works whatever login it is given with (GitLab checks PATs first).
    let api = pat(&berth, "maint", "api2", "api", None);
    let t = token(&berth, Some(("anything", &api)), &all);
    assert_eq!(granted(&t, project), ["delete", "pull", "push"]);
    assert_eq!(jwt_claims(&t)["sub"], "maint");
    v2(
        &berth,
        Method::DELETE,
        &format!("/v2/{project}/manifests/w"),
        Some(&t),
    )
    .expect(202);

    // A revoked PAT.
    let gone = pat(&berth, "dev", "gone", "api", None);
    token(&berth, Some(("dev", &gone)), &all);
    let listed = berth.admin(&["token", "list", "--user", "dev"]);
    let id = listed
        .lines()
        .find(|l| l.split('\t').nth(2) == Some("gone"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("token gone in:\n{listed}"))
        .to_string();
    berth.admin(&["token", "revoke", &id]);
    assert!(berth
        .admin(&["token", "list", "--user", "dev"])
        .lines()
        .any(|l| l.starts_with(&format!("{id}\t")) && l.ends_with("\trevoked")));
    assert_auth_refused(&token_resp(&berth, Some(("dev", &gone)), &all));

    // An expired PAT: it stops working when its expiry day begins.
    let old = pat(&berth, "dev", "old", "api", Some(&today_utc()));
    assert_auth_refused(&token_resp(&berth, Some(("dev", &old)), &all));
    // One that expires later works.
    let later = pat(&berth, "dev", "later", "api", Some("2999-12-31"));
    token(&berth, Some(("dev", &later)), &all);

    // A blocked user: neither the password nor a PAT works any more.
    berth.user("blocked", PASSWORD);
    member(&berth, project, "blocked", "developer");
    let their = pat(&berth, "blocked", "t", "api", None);
    assert_eq!(
        granted(&token(&berth, Some(("blocked", PASSWORD)), &all), project),
        ["pull", "push"]
    );
    berth.admin(&["user", "block", "blocked"]);
    assert_auth_refused(&token_resp(&berth, Some(("blocked", PASSWORD)), &all));
    assert_auth_refused(&token_resp(&berth, Some(("blocked", &their)), &all));
    berth.admin(&["user", "unblock", "blocked"]);
    token(&berth, Some(("blocked", PASSWORD)), &all);

    // A wrong password.
    assert_auth_refused(&token_resp(&berth, Some(("dev", "not-the-password")), &all));
}

/// GitLab: a credential with no registry ability at all (a PAT with only
/// `read_repository`, likewise a deploy token) gets 403 `DENIED` "access forbidden"
/// from `/jwt/auth`, not a token (reference §3, "Responses").
#[test]
fn credential_without_registry_scope_is_forbidden() {
    let berth = Berth::start();
    berth.project("c/app", "public");
    berth.user("dev", PASSWORD);
    member(&berth, "c/app", "dev", "developer");
    let pat = pat(&berth, "dev", "code", "read_repository", None);
    let (du, ds) = deploy_token(
        &berth,
        &[
            "--project",
            "c/app",
            "--name",
            "code",
            "--scopes",
            "read_repository",
        ],
    );
    let mut wrong = Vec::new();
    for (what, creds) in [
        ("a read_repository PAT", ("dev", pat.as_str())),
        ("a read_repository deploy token", (du.as_str(), ds.as_str())),
    ] {
        let r = token_resp(&berth, Some(creds), &[scope("c/app", "pull")]);
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status != 403
            || body["errors"][0]["code"] != "DENIED"
            || body["errors"][0]["message"] != "access forbidden"
        {
            wrong.push(format!("{what}: {r:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 403 DENIED \"access forbidden\":\n{}",
        wrong.join("\n")
    );
}

#[test]
fn deploy_tokens() {
    let berth = Berth::start();
    for p in ["d/app", "d/other", "dg/sub/deep", "dg/top"] {
        berth.project(p, "private");
    }
    let base = Image::new("base");
    let scopes: Vec<String> = ["d/app", "d/other", "dg/sub/deep", "dg/top"]
        .iter()
        .map(|p| scope(p, "pull,push"))
        .collect();
    let root = token(&berth, Some(ROOT), &scopes);
    for p in ["d/app", "d/other", "dg/sub/deep", "dg/top"] {
        push_ok(&berth, &root, p, "v1", &base);
    }

    // A project deploy token with both scopes: pull and push, never delete.
    let (user, secret) = deploy_token(
        &berth,
        &[
            "--project",
            "d/app",
            "--name",
            "d",
            "--scopes",
            "read_registry,write_registry",
        ],
    );
    assert!(user.starts_with("gitlab+deploy-token-"), "{user}");
    assert!(secret.starts_with("gldt-"), "{secret}");
    let t = token(
        &berth,
        Some((&user, &secret)),
        &[
            scope("d/app/img", "pull,push,delete"),
            scope("d/app", "*"),
            scope("d/other", "pull,push"),
        ],
    );
    assert_eq!(granted(&t, "d/app/img"), ["pull", "push"]);
    assert_eq!(granted(&t, "d/app"), ["pull", "push"]);
    assert!(granted(&t, "d/other").is_empty(), "{}", jwt_claims(&t));
    let claims = jwt_claims(&t);
    assert_eq!(claims["auth_type"], "deploy_token");
    assert!(
        claims["sub"].is_null(),
        "no sub for a deploy token: {claims}"
    );

    let img = Image::new("deployed");
    push_ok(&berth, &t, "d/app/img", "v1", &img);
    pull_ok(&berth, &t, "d/app/img", "v1", &img);
    pull_ok(&berth, &t, "d/app", "v1", &base);
    assert_insufficient_scope(&v2(
        &berth,
        Method::DELETE,
        "/v2/d/app/img/manifests/v1",
        Some(&t),
    ));
    assert_insufficient_scope(&push(&berth, Some(&t), "d/other", "x", &img));
    assert_insufficient_scope(&get(&berth, "/v2/d/other/manifests/v1", Some(&t)));
    assert!(!root_tags(&berth, "d/other").contains(&"x".to_string()));

    // The deploy token's secret with another username is refused.
    assert_auth_refused(&token_resp(
        &berth,
        Some(("someone-else", &secret)),
        &[scope("d/app", "pull")],
    ));

    // A read-only deploy token with a chosen username.
    let (ru, rs) = deploy_token(
        &berth,
        &[
            "--project",
            "d/app",
            "--name",
            "ro",
            "--scopes",
            "read_registry",
            "--username",
            "puller",
        ],
    );
    assert_eq!(ru, "puller");
    let t = token(
        &berth,
        Some(("puller", &rs)),
        &[scope("d/app", "pull,push")],
    );
    assert_eq!(granted(&t, "d/app"), ["pull"]);
    pull_ok(&berth, &t, "d/app", "v1", &base);
    assert_insufficient_scope(&push(&berth, Some(&t), "d/app", "ro", &img));

    // A group deploy token covers every project below its group, subgroups included.
    let (gu, gs) = deploy_token(
        &berth,
        &["--group", "dg", "--name", "g", "--scopes", "read_registry"],
    );
    let t = token(
        &berth,
        Some((&gu, &gs)),
        &[
            scope("dg/sub/deep", "pull,push"),
            scope("dg/top/img", "pull"),
            scope("d/app", "pull"),
        ],
    );
    assert_eq!(granted(&t, "dg/sub/deep"), ["pull"]);
    assert_eq!(granted(&t, "dg/top/img"), ["pull"]);
    assert!(granted(&t, "d/app").is_empty(), "{}", jwt_claims(&t));
    pull_ok(&berth, &t, "dg/sub/deep", "v1", &base);
    assert_insufficient_scope(&get(&berth, "/v2/d/app/manifests/v1", Some(&t)));
}

#[test]
fn ci_job_tokens() {
    let berth = Berth::start();
    berth.user("ci", PASSWORD);
    // The job's own project (with capitals: its registry path is lower case), a
    // project the job's user develops too, and one the user cannot see.
    berth.project("CiGrp/WebApp", "private");
    member(&berth, "CiGrp/WebApp", "ci", "developer");
    berth.project("libs/base", "private");
    member(&berth, "libs/base", "ci", "developer");
    berth.project("secret/vault", "private");
    let base = Image::new("base");
    let root = token(
        &berth,
        Some(ROOT),
        &[
            scope("libs/base", "pull,push"),
            scope("secret/vault", "push"),
        ],
    );
    push_ok(&berth, &root, "libs/base", "v1", &base);
    push_ok(&berth, &root, "secret/vault", "v1", &base);
    let (deploy_user, _) = deploy_token(
        &berth,
        &[
            "--project",
            "CiGrp/WebApp",
            "--name",
            "gitlab-deploy-token",
            "--scopes",
            "read_registry",
        ],
    );

    let out = berth.ci_env(&[
        "--project",
        "CiGrp/WebApp",
        "--user",
        "ci",
        "--registry",
        &berth.addr,
    ]);
    let vars = ci_vars(&out);
    let var = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("no {k} in:\n{out}"))
            .clone()
    };
    assert_eq!(var("CI_REGISTRY"), berth.addr);
    assert_eq!(
        var("CI_REGISTRY_IMAGE"),
        format!("{}/cigrp/webapp", berth.addr)
    );
    assert_eq!(var("CI_REGISTRY_USER"), "gitlab-ci-token");
    assert_eq!(var("CI_REGISTRY_PASSWORD"), var("CI_JOB_TOKEN"));
    assert_eq!(var("CI_PROJECT_PATH"), "CiGrp/WebApp");
    assert_eq!(var("CI_DEPLOY_USER"), deploy_user);
    let job_id = var("CI_JOB_ID");
    job_id.parse::<i64>().expect("numeric job id");
    let own = var("CI_REGISTRY_IMAGE")
        .strip_prefix(&format!("{}/", berth.addr))
        .unwrap()
        .to_string();
    let job_token = var("CI_JOB_TOKEN");
    let creds = Some(("gitlab-ci-token", job_token.as_str()));

    let t = token(
        &berth,
        creds,
        &[
            scope(&own, "pull,push"),
            scope(&format!("{own}/build"), "pull,push"),
            scope("libs/base", "pull,push"),
            scope("secret/vault", "pull"),
        ],
    );
    assert_eq!(granted(&t, &own), ["pull", "push"]);
    assert_eq!(granted(&t, &format!("{own}/build")), ["pull", "push"]);
    assert_eq!(
        granted(&t, "libs/base"),
        ["pull"],
        "other projects: pull only"
    );
    assert!(granted(&t, "secret/vault").is_empty());
    let claims = jwt_claims(&t);
    assert_eq!(claims["auth_type"], "build");
    assert_eq!(claims["sub"], "ci");

    // The job pushes to its own project, pulls another, cannot push to it.
    let img = Image::new("built");
    push_ok(&berth, &t, &own, "v1", &img);
    push_ok(&berth, &t, &format!("{own}/build"), "v1", &img);
    pull_ok(&berth, &t, &own, "v1", &img);
    pull_ok(&berth, &t, "libs/base", "v1", &base);
    assert_insufficient_scope(&push(&berth, Some(&t), "libs/base", "ci", &img));
    assert!(!root_tags(&berth, "libs/base").contains(&"ci".to_string()));
    assert_insufficient_scope(&get(&berth, "/v2/secret/vault/manifests/v1", Some(&t)));

    // CI_REGISTRY_USER / CI_REGISTRY_PASSWORD work the same way.
    let t = token(
        &berth,
        Some((&var("CI_REGISTRY_USER"), &var("CI_REGISTRY_PASSWORD"))),
        &[scope(&own, "pull,push"), scope("libs/base", "pull,push")],
    );
    assert_eq!(granted(&t, &own), ["pull", "push"]);
    assert_eq!(granted(&t, "libs/base"), ["pull"]);

    // CI_DEPLOY_USER / CI_DEPLOY_PASSWORD act as the gitlab-deploy-token.
    let deploy = (var("CI_DEPLOY_USER"), var("CI_DEPLOY_PASSWORD"));
    let t = token(
        &berth,
        Some((&deploy.0, &deploy.1)),
        &[scope(&own, "pull,push")],
    );
    assert_eq!(granted(&t, &own), ["pull"]);
    assert_eq!(jwt_claims(&t)["auth_type"], "deploy_token");

    // The job token is not a password: a job token is no PAT for another username.
    assert_auth_refused(&token_resp(
        &berth,
        Some(("ci", &job_token)),
        &[scope(&own, "pull")],
    ));

    // Once the job ends, its credentials are refused.
    berth.ci_env(&["--finish", &job_id]);
    assert_auth_refused(&token_resp(&berth, creds, &[scope(&own, "pull")]));
    assert_auth_refused(&token_resp(
        &berth,
        Some((&deploy.0, &deploy.1)),
        &[scope(&own, "pull")],
    ));

    // A job whose timeout passes stops working by itself.
    let vars = ci_vars(&berth.ci_env(&[
        "--project",
        "CiGrp/WebApp",
        "--user",
        "ci",
        "--registry",
        &berth.addr,
        "--timeout",
        "1s",
    ]));
    let short = vars["CI_JOB_TOKEN"].clone();
    support::eventually(Duration::from_secs(30), "the job to time out", || {
        let r = token_resp(
            &berth,
            Some(("gitlab-ci-token", &short)),
            &[scope(&own, "pull")],
        );
        (r.status == 401).then_some(())
    });
}

#[test]
fn revoked_and_expired_deploy_tokens_are_refused() {
    let berth = Berth::start();
    berth.project("d/app", "public");
    let scopes = [scope("d/app", "pull")];
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "--project",
            "d/app",
            "--name",
            name,
            "--scopes",
            "read_registry",
        ];
        args.extend(extra);
        deploy_token(&berth, &args)
    };
    let (user, secret) = create("soon-revoked", &[]);
    token(&berth, Some((&user, &secret)), &scopes);
    let id = user
        .strip_prefix("gitlab+deploy-token-")
        .expect("default username")
        .to_string();
    berth.admin(&["deploy-token", "revoke", &id]);
    assert_auth_refused(&token_resp(&berth, Some((&user, &secret)), &scopes));

    let (user, secret) = create("expired", &["--expires-at", &today_utc()]);
    assert_auth_refused(&token_resp(&berth, Some((&user, &secret)), &scopes));
    let (user, secret) = create("later", &["--expires-at", "2999-12-31"]);
    let t = token(&berth, Some((&user, &secret)), &scopes);
    assert_eq!(granted(&t, "d/app"), ["pull"]);
}

#[test]
fn group_memberships_are_inherited() {
    let berth = Berth::start();
    let projects = ["org/team/app", "org/other", "elsewhere/app"];
    for p in projects {
        berth.project(p, "private");
    }
    let root = token(&berth, Some(ROOT), &projects.map(|p| scope(p, "push")));
    let img = Image::new("groups");
    for p in projects {
        push_ok(&berth, &root, p, "v1", &img);
    }
    let group_member = |group: &str, user: &str, role: &str, extra: &[&str]| {
        let mut args = vec![
            "member", "add", "--group", group, "--user", user, "--role", role,
        ];
        args.extend(extra);
        berth.admin(&args);
    };
    for u in ["grp", "sub", "mixed", "upgraded", "expired"] {
        berth.user(u, PASSWORD);
    }
    group_member("org", "grp", "reporter", &[]);
    group_member("org/team", "sub", "developer", &[]);
    group_member("org", "mixed", "guest", &[]);
    member(&berth, "org/other", "mixed", "maintainer");
    group_member("org", "upgraded", "reporter", &[]);
    member(&berth, "org/team/app", "upgraded", "guest");
    let today = today_utc();
    group_member("org", "expired", "maintainer", &["--expires-at", &today]);

    // (user, grants on org/team/app, org/other, elsewhere/app)
    let expected: [(&str, [&[&str]; 3]); 5] = [
        ("grp", [&["pull"], &["pull"], &[]]),
        ("sub", [&["pull", "push"], &[], &[]]),
        ("mixed", [&[], &["delete", "pull", "push"], &[]]),
        // The highest of the direct and the inherited role counts.
        ("upgraded", [&["pull"], &["pull"], &[]]),
        // A membership ends when its expiry day begins.
        ("expired", [&[], &[], &[]]),
    ];
    for (user, wants) in expected {
        let t = token(
            &berth,
            Some((user, PASSWORD)),
            &projects.map(|p| scope(p, "pull,push,delete")),
        );
        for (p, want) in projects.iter().zip(wants) {
            assert_eq!(granted(&t, p), owned(want), "{user} on {p}");
            let r = get(&berth, &format!("/v2/{p}/manifests/v1"), Some(&t));
            if want.contains(&"pull") {
                r.expect(200);
            } else {
                assert_insufficient_scope(&r);
            }
        }
    }
}

#[test]
fn projects_do_not_share_blobs_through_the_registry() {
    let berth = Berth::start();
    berth.project("a/secret", "private");
    berth.project("b/mine", "private");
    berth.user("dev", PASSWORD);
    member(&berth, "b/mine", "dev", "developer");
    let secret = Image::new("secret");
    let root = token(&berth, Some(ROOT), &[scope("a/secret", "push")]);
    push_ok(&berth, &root, "a/secret", "v1", &secret);

    // dev may push to b/mine but not read a/secret; knowing a/secret's digests must
    // not get its bytes through b/mine.
    let t = token(
        &berth,
        Some(("dev", PASSWORD)),
        &[scope("b/mine", "pull,push"), scope("a/secret", "pull")],
    );
    assert!(granted(&t, "a/secret").is_empty());
    let layer = digest_of(&secret.layer);
    let r = get(&berth, &format!("/v2/b/mine/blobs/{layer}"), Some(&t));
    r.expect_error(404, "BLOB_UNKNOWN");
    assert!(!contains(&r.body, &secret.layer));
    assert_eq!(
        v2(
            &berth,
            Method::HEAD,
            &format!("/v2/b/mine/blobs/{layer}"),
            Some(&t)
        )
        .status,
        404
    );
    // A cross-repository mount from a repository the caller cannot read is not
    // done: the answer is an ordinary upload session.
    let r = v2(
        &berth,
        Method::POST,
        &format!("/v2/b/mine/blobs/uploads/?mount={layer}&from=a/secret"),
        Some(&t),
    );
    r.expect(202);
    assert_eq!(
        get(&berth, &format!("/v2/b/mine/blobs/{layer}"), Some(&t)).status,
        404
    );
    // Nor can a manifest in b/mine reference a/secret's blobs without uploading them.
    let u = format!("{}/v2/b/mine/manifests/stolen", berth.url);
    let r = send(
        format!("PUT {u}"),
        http()
            .put(&u)
            .bearer_auth(&t)
            .header("Content-Type", OCI_MANIFEST)
            .body(secret.manifest.clone()),
    );
    r.expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert!(root_tags(&berth, "b/mine").is_empty());
    // Nor does a mount that names no source (automatic content discovery) find it.
    let r = v2(
        &berth,
        Method::POST,
        &format!("/v2/b/mine/blobs/uploads/?mount={layer}"),
        Some(&t),
    );
    r.expect(202);
    assert_eq!(
        get(&berth, &format!("/v2/b/mine/blobs/{layer}"), Some(&t)).status,
        404
    );

    // A mount's first challenge, to a request with no token, names the source's
    // scope too (as the reference registry's does), for clients that ask once.
    let r = v2(
        &berth,
        Method::POST,
        &format!("/v2/b/mine/blobs/uploads/?mount={layer}&from=a/secret"),
        None,
    );
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("scope=\"repository:b/mine:pull,push repository:a/secret:pull\""),
        "{challenge}"
    );

    // Someone who may read both repositories can mount.
    let both = token(
        &berth,
        Some(ROOT),
        &[scope("b/mine", "pull,push"), scope("a/secret", "pull")],
    );
    let r = v2(
        &berth,
        Method::POST,
        &format!("/v2/b/mine/blobs/uploads/?mount={layer}&from=a/secret"),
        Some(&both),
    );
    r.expect(201);
    assert_eq!(
        get(&berth, &format!("/v2/b/mine/blobs/{layer}"), Some(&both)).body,
        secret.layer
    );

    // A mount that names no source finds the blob in a repository the caller may
    // read, even with a token that names only the target (OCI_AUTOMATIC_CROSSMOUNT).
    let config = digest_of(&secret.config);
    let only_target = token(&berth, Some(ROOT), &[scope("b/mine/app", "pull,push")]);
    let r = v2(
        &berth,
        Method::POST,
        &format!("/v2/b/mine/app/blobs/uploads/?mount={config}"),
        Some(&only_target),
    );
    r.expect(201);
    let location = r.header("location").unwrap_or_default();
    assert!(
        location.ends_with(&format!("/v2/b/mine/app/blobs/{config}")),
        "{location}"
    );
    assert_eq!(
        get(
            &berth,
            &format!("/v2/b/mine/app/blobs/{config}"),
            Some(&only_target)
        )
        .body,
        secret.config
    );
}

// ---------------------------------------------------------------------------
// 4. skopeo end to end
// ---------------------------------------------------------------------------

fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

/// `skopeo copy` from the layout to `dest` with `creds`; whether it worked, and stderr.
fn skopeo_push(tmp: &Path, layout: &Path, dest: &str, creds: &str) -> (bool, String) {
    let out = skopeo(tmp)
        .args([
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{dest}"),
        ])
        .output()
        .expect("run skopeo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// skopeo failed, and because the registry or the token service said no.
fn assert_auth_failure(ok: bool, stderr: &str, what: &str) {
    assert!(!ok, "{what}");
    let e = stderr.to_lowercase();
    assert!(
        [
            "unauthorized",
            "denied",
            "authentication required",
            "insufficient_scope"
        ]
        .iter()
        .any(|w| e.contains(w)),
        "{what}: skopeo failed for another reason:\n{stderr}"
    );
}

/// The raw manifest skopeo reads back with `creds`.
fn skopeo_inspect_raw(tmp: &Path, image: &str, creds: &str) -> Vec<u8> {
    let out = skopeo(tmp)
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{image}"),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn skopeo_with_pat_deploy_and_job_tokens() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = Berth::start();
    berth.user("dev", PASSWORD);
    for p in ["sk/app", "sk/other"] {
        berth.project(p, "private");
        member(&berth, p, "dev", "developer");
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = Image::new("skopeo");
    let layout = tmp.path().join("layout");
    img.write_layout(&layout, "v1");
    let host = &berth.addr;

    // A PAT: `skopeo login`, push, pull back.
    let api = pat(&berth, "dev", "skopeo", "api", None);
    let authfile = tmp.path().join("auth.json");
    run(skopeo(tmp.path()).args([
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        "-u",
        "dev",
        "-p",
        &api,
        host,
    ]));
    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/sk/app/pat:v1"),
    ]));
    let back = tmp.path().join("back");
    run(skopeo(tmp.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &format!("docker://{host}/sk/app/pat:v1"),
        &format!("oci:{}:v1", back.display()),
    ]));
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], img.digest().as_str());
    assert_eq!(
        std::fs::read(back.join("blobs/sha256").join(sha256_hex(&img.layer))).unwrap(),
        img.layer
    );

    // A read_registry PAT pulls but cannot push.
    let read = pat(&berth, "dev", "ro", "read_registry", None);
    let read_creds = format!("dev:{read}");
    assert_eq!(
        skopeo_inspect_raw(tmp.path(), &format!("{host}/sk/app/pat:v1"), &read_creds),
        img.manifest
    );
    let (ok, err) = skopeo_push(
        tmp.path(),
        &layout,
        &format!("{host}/sk/app/ro:v1"),
        &read_creds,
    );
    assert_auth_failure(ok, &err, "a read_registry PAT pushed");
    assert!(root_tags(&berth, "sk/app/ro").is_empty());

    // A deploy token of sk/app: pushes and pulls sk/app, cannot push to sk/other.
    let (du, ds) = deploy_token(
        &berth,
        &[
            "--project",
            "sk/app",
            "--name",
            "d",
            "--scopes",
            "read_registry,write_registry",
        ],
    );
    let deploy_creds = format!("{du}:{ds}");
    let (ok, err) = skopeo_push(
        tmp.path(),
        &layout,
        &format!("{host}/sk/app/deploy:v1"),
        &deploy_creds,
    );
    assert!(ok, "deploy token push: {err}");
    assert_eq!(
        skopeo_inspect_raw(
            tmp.path(),
            &format!("{host}/sk/app/deploy:v1"),
            &deploy_creds
        ),
        img.manifest
    );
    let (ok, err) = skopeo_push(
        tmp.path(),
        &layout,
        &format!("{host}/sk/other/deploy:v1"),
        &deploy_creds,
    );
    assert_auth_failure(ok, &err, "project A's deploy token pushed to project B");
    assert!(root_tags(&berth, "sk/other/deploy").is_empty());

    // A job token of sk/app: pushes to $CI_REGISTRY_IMAGE, not to sk/other (though
    // the job's user is a developer there).
    let vars =
        ci_vars(&berth.ci_env(&["--project", "sk/app", "--user", "dev", "--registry", host]));
    let job_creds = format!(
        "{}:{}",
        vars["CI_REGISTRY_USER"], vars["CI_REGISTRY_PASSWORD"]
    );
    let image = format!("{}/job:v1", vars["CI_REGISTRY_IMAGE"]);
    let (ok, err) = skopeo_push(tmp.path(), &layout, &image, &job_creds);
    assert!(ok, "job token push: {err}");
    assert_eq!(
        skopeo_inspect_raw(tmp.path(), &image, &job_creds),
        img.manifest
    );
    let (ok, err) = skopeo_push(
        tmp.path(),
        &layout,
        &format!("{host}/sk/other/job:v1"),
        &job_creds,
    );
    assert_auth_failure(ok, &err, "project A's job token pushed to project B");
    assert!(root_tags(&berth, "sk/other/job").is_empty());
    // The finished job's token no longer works.
    berth.ci_env(&["--finish", &vars["CI_JOB_ID"]]);
    let out = skopeo(tmp.path())
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &job_creds,
            &format!("docker://{image}"),
        ])
        .output()
        .unwrap();
    assert_auth_failure(
        out.status.success(),
        &String::from_utf8_lossy(&out.stderr),
        "a finished job's token still pulls",
    );
}

// ---------------------------------------------------------------------------
// 5. Tokens the registry must not trust
// ---------------------------------------------------------------------------

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let berth = Berth::start();
    let project = "j/app";
    berth.project(project, "private");
    let img = Image::new("jwt");
    let good = token(&berth, Some(ROOT), &[scope(project, "pull,push")]);
    push_ok(&berth, &good, project, "v1", &img);
    pull_ok(&berth, &good, project, "v1", &img);
    let manifest = format!("/v2/{project}/manifests/v1");
    let refused = |t: &str, what: &str| {
        for path in [manifest.as_str(), "/v2/"] {
            let r = get(&berth, path, Some(t));
            assert!(!contains(&r.body, &img.manifest), "{what}: {r:?}");
            assert_invalid_token(&r);
        }
    };

    // A reader's token with `push` (and `delete`) written into its payload.
    berth.user("reader", PASSWORD);
    member(&berth, project, "reader", "reporter");
    let reader = token(
        &berth,
        Some(("reader", PASSWORD)),
        &[scope(project, "pull,push,delete")],
    );
    assert_eq!(granted(&reader, project), ["pull"]);
    let escalated = with_claims(&reader, |c| {
        c["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    });
    assert_eq!(granted(&escalated, project), ["delete", "pull", "push"]);
    refused(&escalated, "escalated");
    assert_invalid_token(&push(
        &berth,
        Some(&escalated),
        project,
        "x",
        &Image::new("x"),
    ));
    assert_invalid_token(&v2(&berth, Method::DELETE, &manifest, Some(&escalated)));
    // Another repository's name written in.
    let renamed = with_claims(&reader, |c| c["access"][0]["name"] = json!("j/other"));
    refused(&renamed, "renamed");

    // `exp` moved: into the past (and a far future) without the key.
    let past = with_claims(&good, |c| {
        let iat = c["iat"].as_i64().unwrap();
        c["exp"] = json!(iat - 86_400);
        c["nbf"] = json!(iat - 90_000);
    });
    refused(&past, "exp in the past");
    let forever = with_claims(&good, |c| c["exp"] = json!(4_102_444_800i64));
    refused(&forever, "exp far ahead");

    // `alg: none`: a real token's payload and no signature.
    let payload = good.split('.').nth(1).unwrap();
    let none = format!(
        "{}.{payload}.",
        b64url_encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    refused(&none, "alg none");
    let kid = jwt_header(&good)["kid"].as_str().unwrap().to_string();
    let none_kid = format!(
        "{}.{payload}.",
        b64url_encode(&serde_json::to_vec(&json!({"alg":"none","typ":"JWT","kid":kid})).unwrap())
    );
    refused(&none_kid, "alg none with kid");
    // HS256, keyed with something public (the kid).
    let head =
        b64url_encode(&serde_json::to_vec(&json!({"alg":"HS256","typ":"JWT","kid":kid})).unwrap());
    let signing_input = format!("{head}.{payload}");
    let hs = format!(
        "{signing_input}.{}",
        b64url_encode(&hmac_sha256(kid.as_bytes(), signing_input.as_bytes()))
    );
    refused(&hs, "HS256");
    // The signature of another token.
    let other_sig = reader.split('.').nth(2).unwrap();
    let swapped = format!("{}.{payload}.{other_sig}", good.split('.').next().unwrap());
    refused(&swapped, "signature of another token");
    refused("not-a-jwt", "garbage");

    // A token from another Berth (same issuer and service, another key).
    let other = Berth::start();
    other.project(project, "private");
    let foreign = token(&other, Some(ROOT), &[scope(project, "pull,push")]);
    assert_eq!(granted(&foreign, project), ["pull", "push"]);
    assert_ne!(jwt_header(&foreign)["kid"], jwt_header(&good)["kid"]);
    refused(&foreign, "foreign");
    assert_invalid_token(&push(
        &berth,
        Some(&foreign),
        project,
        "x",
        &Image::new("x"),
    ));

    // The real token still works.
    pull_ok(&berth, &good, project, "v1", &img);
}

#[test]
fn token_lifetime_follows_the_setting() {
    let default = Berth::start();
    let r = token_resp(&default, Some(ROOT), &[scope("a/b", "pull")]);
    r.expect(200);
    let body = r.json();
    let c = jwt_claims(body["token"].as_str().unwrap());
    assert_eq!(body["expires_in"], 300);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        300,
        "{c}"
    );

    // An administrator changes it at run time (GitLab's application setting, in
    // minutes); new tokens follow at once.
    let pat = default.admin(&[
        "token", "create", "--user", "root", "--name", "s", "--scopes", "api",
    ]);
    let settings = |method: Method, body: Value| {
        http()
            .request(
                method,
                format!("{}/api/v4/application/settings", default.url),
            )
            .header("PRIVATE-TOKEN", &pat)
            .json(&body)
            .send()
            .unwrap()
    };
    let r = settings(Method::GET, json!({}));
    assert_eq!(
        r.json::<Value>().unwrap()["container_registry_token_expire_delay"],
        5
    );
    let r = settings(
        Method::PUT,
        json!({"container_registry_token_expire_delay": 0}),
    );
    assert_eq!(r.status(), 400, "at least a minute");
    let r = settings(
        Method::PUT,
        json!({"container_registry_token_expire_delay": 10081}),
    );
    assert_eq!(r.status(), 400, "at most a week");
    let r = settings(
        Method::PUT,
        json!({"container_registry_token_expire_delay": 2}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["container_registry_token_expire_delay"],
        2
    );
    let r = token_resp(&default, Some(ROOT), &[scope("a/b", "pull")]);
    r.expect(200);
    let body = r.json();
    let c = jwt_claims(body["token"].as_str().unwrap());
    assert_eq!(body["expires_in"], 120);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);

    let short = Berth::start_with(&[], &[("BERTH_TOKEN_EXPIRY", "1s")]);
    let r = token_resp(&short, Some(ROOT), &[scope("a/b", "pull")]);
    r.expect(200);
    let body = r.json();
    let c = jwt_claims(body["token"].as_str().unwrap());
    assert_eq!(body["expires_in"], 1);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        1,
        "{c}"
    );
}

// ---------------------------------------------------------------------------
// 6. /jwt/auth details
// ---------------------------------------------------------------------------

#[test]
fn token_service_details() {
    let berth = Berth::start();
    berth.project("t/app", "private");
    berth.user("rep", PASSWORD);
    member(&berth, "t/app", "rep", "reporter");

    let before = unix_now();
    let r = token_resp(&berth, Some(ROOT), &[scope("t/app", "pull")]);
    r.expect(200);
    let body = r.json();
    let t = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"], t);
    assert_eq!(body["expires_in"], 300);
    let header = jwt_header(t);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["typ"], "JWT", "{header}");
    let kid = header["kid"].as_str().expect("kid");
    let groups: Vec<&str> = kid.split(':').collect();
    assert_eq!(groups.len(), 12, "kid {kid}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))),
        "kid {kid} is 12 groups of 4 base32 characters"
    );
    let c = jwt_claims(t);
    let iat = c["iat"].as_i64().unwrap();
    assert!(iat >= before - 5 && iat <= unix_now() + 5, "iat {iat}");
    assert_eq!(
        body["issued_at"],
        rfc3339(iat),
        "issued_at is iat in RFC 3339"
    );
    assert_eq!(c["exp"].as_i64().unwrap(), iat + 300);
    assert_eq!(c["nbf"].as_i64().unwrap(), iat - 5);
    assert_eq!(c["aud"], "container_registry");
    assert!(c["iss"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(c["sub"], "root");
    assert_eq!(c["auth_type"], "gitlab_or_ldap");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() == 36), "{c}");
    assert_eq!(c["access"][0]["type"], "repository");
    assert_eq!(c["access"][0]["name"], "t/app");
    assert_eq!(c["access"][0]["actions"], json!(["pull"]));
    // The same key signs every token.
    let again = token(&berth, Some(ROOT), &[scope("t/app", "pull")]);
    assert_eq!(jwt_header(&again)["kid"], kid);
    assert_ne!(jwt_claims(&again)["jti"], c["jti"]);

    // Another service: 404.
    let r = auth_request(
        &berth,
        Some(ROOT),
        "service=other&scope=repository%3At%2Fapp%3Apull",
    );
    r.expect(404);
    // Anonymous without a scope: 403.
    let r = auth_request(&berth, None, "service=container_registry");
    r.expect_error(403, "DENIED");
    // Anonymous with a scope it may not have: a token without the resource.
    let t = token(&berth, None, &[scope("t/app", "pull")]);
    assert!(granted(&t, "t/app").is_empty());
    assert!(jwt_claims(&t)["sub"].is_null());
    // Signed in without a scope (`docker login`): a token with no access.
    let t = token(&berth, Some(("rep", PASSWORD)), &[] as &[&str]);
    assert_eq!(jwt_claims(&t)["access"], json!([]));
    assert_eq!(get(&berth, "/v2/", Some(&t)).status, 200);
    // A bad password.
    assert_auth_refused(&token_resp(
        &berth,
        Some(("rep", "wrong")),
        &[scope("t/app", "pull")],
    ));
    // Malformed Basic credentials.
    let r = send(
        "GET /jwt/auth with a malformed Authorization".into(),
        http()
            .get(format!("{}/jwt/auth?service=container_registry", berth.url))
            .header("Authorization", "Basic !!!not-base64"),
    );
    r.expect_error(401, "UNAUTHORIZED");

    // A partial grant is not an error.
    let t = token(
        &berth,
        Some(("rep", PASSWORD)),
        &[scope("t/app", "pull,push,delete")],
    );
    assert_eq!(granted(&t, "t/app"), ["pull"]);
    let t = token(&berth, Some(("rep", PASSWORD)), &[scope("t/app", "push")]);
    assert!(granted(&t, "t/app").is_empty());

    // registry:catalog:* is for admins only, and only as `*`.
    let rep = token(&berth, Some(("rep", PASSWORD)), &["registry:catalog:*"]);
    assert_eq!(jwt_claims(&rep)["access"], json!([]));
    let root = token(&berth, Some(ROOT), &["registry:catalog:*"]);
    assert_eq!(
        jwt_claims(&root)["access"],
        json!([{ "type": "registry", "name": "catalog", "actions": ["*"] }])
    );
    let t = token(&berth, Some(ROOT), &["registry:catalog:pull"]);
    assert_eq!(jwt_claims(&t)["access"], json!([]));

    // Several scopes in one parameter, separated by spaces, and repeated parameters.
    berth.project("t/two", "private");
    berth.project("t/three", "private");
    let q = format!(
        "service=container_registry&scope={}&scope={}",
        enc(&format!(
            "{} {}",
            scope("t/app", "pull"),
            scope("t/two", "pull,push")
        )),
        enc(&scope("t/three", "pull")),
    );
    let r = auth_request(&berth, Some(ROOT), &q);
    r.expect(200);
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(granted(&t, "t/app"), ["pull"]);
    assert_eq!(granted(&t, "t/two"), ["pull", "push"]);
    assert_eq!(granted(&t, "t/three"), ["pull"]);
    // `+` for the space, as HTML forms encode it.
    let q = format!(
        "service=container_registry&scope={}+{}",
        enc(&scope("t/app", "pull")),
        enc(&scope("t/two", "pull")),
    );
    let r = auth_request(&berth, Some(ROOT), &q);
    r.expect(200);
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(granted(&t, "t/app"), ["pull"]);
    assert_eq!(granted(&t, "t/two"), ["pull"]);
}

#[test]
fn catalog_lists_what_the_caller_may_read() {
    let berth = Berth::start();
    berth.user("rep", PASSWORD);
    // (project, visibility, registry access, rep's role)
    let projects = [
        ("cat/pub", "public", "enabled", None),
        ("cat/mine", "private", "enabled", Some("reporter")),
        ("cat/hidden", "private", "enabled", None),
        ("cat/regpriv", "public", "private", None),
        ("cat/guestonly", "private", "enabled", Some("guest")),
        ("cat/off", "public", "disabled", Some("maintainer")),
    ];
    let repos = [
        "cat/pub/img",
        "cat/mine",
        "cat/mine/sub",
        "cat/hidden/img",
        "cat/regpriv",
        "cat/guestonly",
        "cat/off",
    ];
    for (p, vis, _, role) in projects {
        berth.project(p, vis);
        if let Some(role) = role {
            member(&berth, p, "rep", role);
        }
    }
    let scopes: Vec<String> = repos.iter().map(|r| scope(r, "push")).collect();
    let root = token(&berth, Some(ROOT), &scopes);
    let img = Image::new("catalog");
    for r in repos {
        push_ok(&berth, &root, r, "v1", &img);
    }
    for (p, _, access, _) in projects {
        berth.admin(&["project", "update", p, "--registry-access", access]);
    }
    let catalog = |t: &str| {
        let r = get(&berth, "/v2/_catalog", Some(t));
        r.expect(200);
        strings(&r.json()["repositories"])
    };

    // A non-admin: only what they may pull (asking for the catalog scope changes nothing).
    let rep = token(&berth, Some(("rep", PASSWORD)), &["registry:catalog:*"]);
    assert_eq!(catalog(&rep), ["cat/mine", "cat/mine/sub", "cat/pub/img"]);
    // Anonymous: public projects with the registry enabled.
    let anon = token(&berth, None, &[scope("cat/pub/img", "pull")]);
    assert_eq!(catalog(&anon), ["cat/pub/img"]);
    // The admin with the catalog scope: everything.
    let all = token(&berth, Some(ROOT), &["registry:catalog:*"]);
    let mut want: Vec<String> = owned(&repos);
    want.sort();
    assert_eq!(catalog(&all), want);
    // No token: a challenge.
    challenge(&get(&berth, "/v2/_catalog", None));
}

// ---------------------------------------------------------------------------
// 7. Image names and projects
// ---------------------------------------------------------------------------

#[test]
fn image_paths_map_to_projects() {
    let berth = Berth::start();
    berth.project("g/p", "private");
    let img = Image::new("names");

    // No project owns the path.
    let t = token(&berth, Some(ROOT), &[scope("nowhere/x/img", "pull,push")]);
    assert!(granted(&t, "nowhere/x/img").is_empty());
    assert_denied(
        &push(&berth, Some(&t), "nowhere/x/img", "v1", &img),
        "no project owns",
    );
    assert_denied(
        &get(&berth, "/v2/nowhere/x/img/manifests/v1", Some(&t)),
        "no project owns",
    );
    // Anyone else cannot tell a missing project from a private one: the challenge.
    let r = push(&berth, None, "nowhere/x/img", "v1", &img);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!r.text().contains("no project owns"), "{r:?}");

    // The project itself and up to two more segments.
    let paths = ["g/p", "g/p/a", "g/p/a/b"];
    let scopes: Vec<String> = paths.iter().map(|p| scope(p, "pull,push")).collect();
    let t = token(&berth, Some(ROOT), &scopes);
    for p in paths {
        assert_eq!(granted(&t, p), ["pull", "push"], "{p}");
        push_ok(&berth, &t, p, "v1", &img);
        pull_ok(&berth, &t, p, "v1", &img);
        let c = jwt_claims(&t);
        let entry = c["access"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == p)
            .unwrap()
            .clone();
        assert_eq!(entry["meta"]["project_path"], "g/p", "{entry}");
    }
    // Three more is too deep.
    let deep = "g/p/a/b/c";
    let t = token(&berth, Some(ROOT), &[scope(deep, "pull,push")]);
    assert!(granted(&t, deep).is_empty());
    let r = push(&berth, Some(&t), deep, "v1", &img);
    assert_denied(&r, "too deep");
    assert!(r.text().contains("g/p"), "names the project: {r:?}");
    assert_denied(
        &get(&berth, &format!("/v2/{deep}/tags/list"), Some(&t)),
        "too deep",
    );

    // Project lookup ignores case; registry paths are lower case.
    berth.project("Grp/Proj", "private");
    berth.user("rep", PASSWORD);
    member(&berth, "Grp/Proj", "rep", "reporter");
    let t = token(&berth, Some(ROOT), &[scope("grp/proj/img", "pull,push")]);
    assert_eq!(granted(&t, "grp/proj/img"), ["pull", "push"]);
    push_ok(&berth, &t, "grp/proj/img", "v1", &img);
    let t = token(
        &berth,
        Some(("rep", PASSWORD)),
        &[scope("grp/proj/img", "pull,push")],
    );
    assert_eq!(granted(&t, "grp/proj/img"), ["pull"]);
    pull_ok(&berth, &t, "grp/proj/img", "v1", &img);
}

// ---------------------------------------------------------------------------
// 8. Brute force
// ---------------------------------------------------------------------------

#[test]
fn repeated_failed_logins_are_rate_limited() {
    let berth = Berth::start();
    berth.user("victim", PASSWORD);
    let scopes = [scope("a/b", "pull")];
    for i in 0..10 {
        let r = token_resp(&berth, Some(("victim", &format!("guess-{i}"))), &scopes);
        assert_auth_refused(&r);
    }
    // Even the right password is refused now, without being checked.
    let r = token_resp(&berth, Some(("victim", PASSWORD)), &scopes);
    r.expect_error(429, "TOOMANYREQUESTS");
    let wait: u64 = r
        .h("Retry-After")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is seconds: {r:?}"));
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(r.json().get("token").is_none());
}

// ---------------------------------------------------------------------------
// 9. First start
// ---------------------------------------------------------------------------

/// A server started by hand (the harness always sets the root password).
struct Bare {
    child: Child,
    url: String,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn first_start_writes_the_initial_root_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("BERTH_INITIAL_ROOT_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn berth");
    let url = support::listening_url(&mut child, &dir.path().join("server.log"));
    let server = Bare { child, url };

    let file = data.join("initial_root_password");
    let meta = std::fs::metadata(&file).expect("initial_root_password written");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode 0600");
    }
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 16, "a strong password: {password:?}");

    let ask = |secret: &str| {
        let u = format!(
            "{}/jwt/auth?service=container_registry&scope=registry%3Acatalog%3A%2A",
            server.url
        );
        send(
            format!("GET {u}"),
            http().get(&u).basic_auth("root", Some(secret)),
        )
    };
    let r = ask(&password);
    r.expect(200);
    let c = jwt_claims(r.json()["token"].as_str().unwrap());
    assert_eq!(c["sub"], "root");
    assert_eq!(c["access"][0]["name"], "catalog", "root is an admin: {c}");
    assert_eq!(ask("root-password-for-tests").status, 401);
}

/// `berth ci-env` names the registry as `serve` is configured to be reached (the
/// external URL from berth.toml or BERTH_EXTERNAL_URL), warns when none is set, and
/// `--finish` says which job it ended.
#[test]
fn ci_env_registry_is_the_configured_external_url() {
    let berth = Berth::start();
    berth.project("envgrp/app", "private");
    let (out, err) = berth.ci_env_with(
        &["--project", "envgrp/app", "--user", "root"],
        &[("BERTH_EXTERNAL_URL", "https://registry.example.test:8443/")],
    );
    let vars = ci_vars(&out);
    assert_eq!(vars["CI_REGISTRY"], "registry.example.test:8443", "{out}");
    assert_eq!(
        vars["CI_REGISTRY_IMAGE"],
        "registry.example.test:8443/envgrp/app"
    );
    assert!(
        !err.contains("warning"),
        "no warning with an external URL: {err}"
    );

    let (out, err) = berth.ci_env_with(&["--project", "envgrp/app", "--user", "root"], &[]);
    let vars = ci_vars(&out);
    assert!(
        err.contains("warning: no external_url is configured"),
        "a warning without an external URL: {err}"
    );
    assert_eq!(
        vars["CI_REGISTRY"], "127.0.0.1:5000",
        "the default listen address"
    );

    let (ended, _) = berth.ci_env_with(&["--finish", &vars["CI_JOB_ID"]], &[]);
    assert!(
        ended.starts_with(&format!(
            "Ended job {} of project envgrp/app (running as root)",
            vars["CI_JOB_ID"]
        )),
        "{ended}"
    );
}

/// `POST /jwt/auth` with a form, as the distribution token specification describes.
fn oauth(berth: &Berth, form: &[(&str, &str)]) -> Resp {
    send(
        format!(
            "POST /jwt/auth {:?}",
            form.iter().map(|(k, _)| k).collect::<Vec<_>>()
        ),
        http().post(format!("{}/jwt/auth", berth.url)).form(form),
    )
}

/// The OAuth2 grants of the token service: a password (or token) grant, a refresh
/// token asked for with `access_type=offline` (or `offline_token=true` on GET, as
/// docker's login does), the refresh grant, and the refusals: a bad password, a bad
/// refresh token, and refresh tokens whose credential was revoked or changed.
#[test]
fn oauth2_token_endpoint_grants_and_refresh_tokens() {
    let berth = Berth::start();
    let project = "oauth/app";
    berth.project(project, "private");
    berth.user("olga", "olga-password-1");
    member(&berth, project, "olga", "developer");
    let repo_scope = scope(&format!("{project}/img"), "pull,push");
    let service = "container_registry";

    // A password grant: an access token with the scopes granted, no refresh token
    // unless asked for.
    let r = oauth(
        &berth,
        &[
            ("grant_type", "password"),
            ("username", "olga"),
            ("password", "olga-password-1"),
            ("service", service),
            ("scope", &repo_scope),
            ("client_id", "test"),
        ],
    );
    r.expect(200);
    let body = r.json();
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(granted(access, &format!("{project}/img")), ["pull", "push"]);
    assert!(body["expires_in"].as_i64().unwrap() > 0, "{body}");
    assert!(body["issued_at"].is_string(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");

    // access_type=offline: a refresh token, which alone gets new access tokens.
    let r = oauth(
        &berth,
        &[
            ("grant_type", "password"),
            ("username", "olga"),
            ("password", "olga-password-1"),
            ("service", service),
            ("scope", &repo_scope),
            ("client_id", "test"),
            ("access_type", "offline"),
        ],
    );
    r.expect(200);
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let r = oauth(
        &berth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", service),
            ("scope", &repo_scope),
            ("client_id", "test"),
        ],
    );
    r.expect(200);
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        granted(&access, &format!("{project}/img")),
        ["pull", "push"]
    );
    assert_eq!(jwt_claims(&access)["sub"], "olga");

    // Refusals, in OAuth2's error format.
    let r = oauth(
        &berth,
        &[
            ("grant_type", "password"),
            ("username", "olga"),
            ("password", "wrong"),
            ("service", service),
        ],
    );
    r.expect(401);
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = oauth(
        &berth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "brt-nonsense"),
        ],
    );
    r.expect(400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = oauth(&berth, &[("grant_type", "client_credentials")]);
    r.expect(400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");

    // A new password ends the refresh tokens issued under the old one.
    berth.admin_with_stdin(&["user", "set-password", "olga"], "olga-password-2");
    let r = oauth(
        &berth,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    r.expect(400);

    // A personal access token's refresh token, from GET with offline_token=true (docker's
    // login), works until the token is revoked.
    let pat_secret = pat(
        &berth,
        "olga",
        "laptop",
        "read_registry,write_registry",
        None,
    );
    let r = auth_request(
        &berth,
        Some(("olga", &pat_secret)),
        &format!(
            "service={service}&scope={}&offline_token=true&client_id=docker",
            enc(&repo_scope)
        ),
    );
    r.expect(200);
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token from GET offline_token=true")
        .to_string();
    let refreshed = |berth: &Berth| {
        oauth(
            berth,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("service", service),
                ("scope", &repo_scope),
            ],
        )
    };
    refreshed(&berth).expect(200);
    let listed = berth.admin(&["token", "list", "--user", "olga"]);
    let id = listed
        .lines()
        .find(|l| l.split('\t').nth(2) == Some("laptop"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("token laptop in:\n{listed}"))
        .to_string();
    berth.admin(&["token", "revoke", &id]);
    refreshed(&berth).expect(400);

    // A deploy token's refresh token ends when the deploy token is revoked; a CI job
    // gets none.
    let (user, secret) = deploy_token(
        &berth,
        &[
            "--project",
            project,
            "--name",
            "d",
            "--scopes",
            "read_registry",
        ],
    );
    let r = oauth(
        &berth,
        &[
            ("grant_type", "password"),
            ("username", &user),
            ("password", &secret),
            ("service", service),
            ("access_type", "offline"),
            ("scope", &scope(&format!("{project}/img"), "pull")),
        ],
    );
    r.expect(200);
    let deploy_refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = oauth(
        &berth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &deploy_refresh),
        ],
    );
    r.expect(200);
    let id = user
        .strip_prefix("gitlab+deploy-token-")
        .expect("default username")
        .to_string();
    berth.admin(&["deploy-token", "revoke", &id]);
    let r = oauth(
        &berth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &deploy_refresh),
        ],
    );
    r.expect(400);
    let vars = ci_vars(&berth.ci_env(&["--project", project, "--user", "olga"]));
    let r = oauth(
        &berth,
        &[
            ("grant_type", "password"),
            ("username", "gitlab-ci-token"),
            ("password", &vars["CI_JOB_TOKEN"]),
            ("service", service),
            ("access_type", "offline"),
        ],
    );
    r.expect(200);
    assert!(
        r.json().get("refresh_token").is_none(),
        "no refresh token for a job"
    );
}

/// A chunked upload started with a token outlives it: the same principal finishes it
/// with the expired token while it still may push there (checked on each request);
/// another principal's expired token, or the same one after a demotion, is refused.
#[test]
fn an_upload_outlives_the_token_that_started_it() {
    let berth = Berth::start_with(&[], &[("BERTH_TOKEN_EXPIRY", "3s")]);
    let project = "long/app";
    let name = format!("{project}/img");
    berth.project(project, "private");
    berth.user("lena", "lena-password-1");
    berth.user("otto", "otto-password-1");
    member(&berth, project, "lena", "developer");
    member(&berth, project, "otto", "developer");
    let push = [scope(&name, "pull,push")];
    let lena = token(&berth, Some(("lena", "lena-password-1")), &push);

    let data = b"0123456789abcdef".repeat(4096);
    let (first, rest) = data.split_at(20_000);
    let start = v2(
        &berth,
        Method::POST,
        &format!("/v2/{name}/blobs/uploads/"),
        Some(&lena),
    );
    start.expect(202);
    let location = start.h("Location");
    let patch = |body: &[u8], from: usize, token: &str| {
        send(
            format!("PATCH {location} at {from}"),
            http()
                .patch(url(&berth, &location))
                .bearer_auth(token)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{from}-{}", from + body.len() - 1))
                .body(body.to_vec()),
        )
    };
    patch(first, 0, &lena).expect(202);
    let otto = token(&berth, Some(("otto", "otto-password-1")), &push);

    // Wait until the tokens no longer pass anywhere else (3 s, and the 60 s leeway
    // that clients count on).
    support::eventually(Duration::from_secs(180), "the tokens to expire", || {
        (get(&berth, "/v2/", Some(&lena)).status == 401
            && get(&berth, "/v2/", Some(&otto)).status == 401)
            .then_some(())
    });
    v2(
        &berth,
        Method::GET,
        &format!("/v2/{name}/tags/list"),
        Some(&lena),
    )
    .expect(401);

    // Another principal's expired token cannot take the session over.
    patch(rest, first.len(), &otto).expect(401);
    // Demoted, the session's own principal is stopped too.
    member(&berth, project, "lena", "reporter");
    patch(rest, first.len(), &lena).expect(401);
    member(&berth, project, "lena", "developer");
    let next = patch(rest, first.len(), &lena);
    next.expect(202);
    let digest = format!("sha256:{}", support::sha256_hex(&data));
    let done = send(
        format!("PUT {location}"),
        http()
            .put(format!(
                "{}{}digest={digest}",
                url(&berth, &next.h("Location")),
                if next.h("Location").contains('?') {
                    "&"
                } else {
                    "?"
                }
            ))
            .bearer_auth(&lena),
    );
    done.expect(201);
    let fresh = token(&berth, Some(("lena", "lena-password-1")), &push);
    let blob = v2(
        &berth,
        Method::GET,
        &format!("/v2/{name}/blobs/{digest}"),
        Some(&fresh),
    );
    blob.expect(200);
    assert_eq!(blob.body, data);
}
