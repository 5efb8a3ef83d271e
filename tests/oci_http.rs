//! End-to-end tests of the OCI Distribution API over raw HTTP: each test starts the
//! real `berth` binary on an ephemeral port and checks status codes, headers, error
//! codes and bytes against the distribution spec (v1.1) and Docker's behaviour.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Client, RequestBuilder};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest as _;

use support::{eventually, sha256_hex, Berth};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fully read response.
struct Resp {
    method: Method,
    url: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// A header that must be present.
    fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{} {}: no {name} header; {self:?}", self.method, self.url))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {self:?}",
                self.method, self.url
            )
        })
    }

    /// Assert the status, showing the whole response when it differs.
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{} {}: expected {status}; got {self:?}",
            self.method, self.url
        );
        self
    }

    /// Assert an error response: the status and `errors[0].code`. Returns `errors[0]`.
    fn expect_error(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let body = self.json();
        let err = body["errors"][0].clone();
        assert_eq!(
            err["code"].as_str(),
            Some(code),
            "{} {}: expected error code {code}; got {self:?}",
            self.method,
            self.url
        );
        assert!(
            err["message"].is_string(),
            "error without a message: {self:?}"
        );
        err
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.text();
        if body.len() > 2000 {
            body.truncate(2000);
            body.push('…');
        }
        write!(
            f,
            "{} {} → {} {:?} body={:?}",
            self.method, self.url, self.status, self.headers, body
        )
    }
}

/// A running server and a client that does not follow redirects. It authenticates as
/// real clients do: a request that names a repository carries a bearer token for that
/// repository (and for the `from` repository of a mount), fetched from `/jwt/auth` with
/// root's credentials and cached per scope; any other request that is answered 401 with
/// a Bearer challenge is retried once with a token for the challenged scope. Projects
/// owning the repositories a test uses are created on first use (the project is the
/// first two segments of the repository name).
struct Reg {
    berth: Berth,
    http: Client,
    /// Projects known to exist.
    projects: Mutex<HashSet<String>>,
    /// Tokens by their space-separated scopes, with the time they were fetched.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// How long a cached token is used (the server's default lifetime is 5 minutes).
const TOKEN_REUSE: Duration = Duration::from_secs(120);

impl Reg {
    fn start() -> Reg {
        Reg::on(Berth::start())
    }

    fn on(berth: Berth) -> Reg {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        // A restarted server keeps the projects it had.
        let projects = berth
            .admin(&["project", "list"])
            .lines()
            .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
            .collect();
        Reg {
            berth,
            http,
            projects: Mutex::new(projects),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// An absolute URL for a path, or a `Location` (absolute or relative) resolved
    /// against the server.
    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            assert!(
                path_or_url.starts_with('/'),
                "unexpected relative URL {path_or_url}"
            );
            format!("{}{}", self.berth.url, path_or_url)
        }
    }

    fn req(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        self.http.request(method, self.url(path_or_url))
    }

    /// Create the project owning `repository` unless it exists.
    fn ensure_project(&self, repository: &str) {
        let segments: Vec<&str> = repository.split('/').collect();
        assert!(
            segments.len() >= 2,
            "test repository {repository:?} needs at least two segments (project = first two)"
        );
        let project = segments[..2].join("/");
        let mut known = self.projects.lock().unwrap();
        if !known.contains(&project) {
            self.berth.project(&project, "private");
            known.insert(project);
        }
    }

    /// A bearer token for `scopes` (none: a token granting nothing), fetched with root's
    /// password and cached.
    fn token(&self, scopes: &[String]) -> String {
        let key = scopes.join(" ");
        if let Some((t, at)) = self.tokens.lock().unwrap().get(&key) {
            if at.elapsed() < TOKEN_REUSE {
                return t.clone();
            }
        }
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let resp = self
            .berth
            .token(Some(("root", support::ROOT_PASSWORD)), &scopes);
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("token response is JSON");
        assert_eq!(status, 200, "token for {scopes:?}: {body}");
        let token = body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_string();
        self.tokens
            .lock()
            .unwrap()
            .insert(key, (token.clone(), Instant::now()));
        token
    }

    /// The scopes a request needs, when it names repositories (or the catalog):
    /// `pull` to read, `pull,push` to write, `delete` to delete manifests and blobs,
    /// plus `pull` on a mount's source. Only what the request needs: the token service
    /// creates the repository when it grants push (as GitLab does), so asking for push
    /// on a read would make unknown repositories known. Invalid names get none: the
    /// server must refuse them before it looks at credentials.
    fn scopes_for(&self, method: &Method, url: &reqwest::Url) -> Option<Vec<String>> {
        if url.as_str().starts_with(&format!("{}/", self.berth.url)) {
            let rest = url.path().strip_prefix("/v2/")?;
            if rest == "_catalog" {
                return Some(vec!["registry:catalog:*".to_string()]);
            }
            let (name, upload) = repository_of(rest)?;
            if !plausible_name(name) {
                return None;
            }
            let actions = match *method {
                Method::GET | Method::HEAD => "pull",
                Method::DELETE if !upload => "delete",
                _ => "pull,push",
            };
            self.ensure_project(name);
            let mut scopes = vec![format!("repository:{name}:{actions}")];
            if let Some((_, from)) = url.query_pairs().find(|(k, _)| k == "from") {
                if plausible_name(&from) && from != name {
                    self.ensure_project(&from);
                    scopes.push(format!("repository:{from}:pull"));
                }
            }
            Some(scopes)
        } else {
            None
        }
    }

    /// `Bearer <token>` for a request to `path_or_url`, for requests sent by hand.
    fn authorization(&self, method: Method, path_or_url: &str) -> String {
        let url = reqwest::Url::parse(&self.url(path_or_url)).expect("URL");
        let scopes = self
            .scopes_for(&method, &url)
            .unwrap_or_else(|| panic!("{url} names no repository"));
        format!("Bearer {}", self.token(&scopes))
    }

    /// Send and read the whole response, authenticating as described on [`Reg`].
    /// Every `/v2` response must carry the distribution API version header.
    fn send(&self, rb: RequestBuilder) -> Resp {
        let mut req = rb.build().expect("request");
        if let Some(scopes) = self.scopes_for(req.method(), req.url()) {
            let value = format!("Bearer {}", self.token(&scopes));
            req.headers_mut()
                .insert(AUTHORIZATION, value.parse().expect("header value"));
        }
        let retry = req.try_clone();
        let r = self.exchange(req);
        let challenge = match r.header("WWW-Authenticate") {
            Some(c) if r.status == 401 && c.starts_with("Bearer ") => c.to_string(),
            _ => return r,
        };
        let Some(mut retry) = retry else {
            return r;
        };
        let scopes: Vec<String> = challenge_param(&challenge, "scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default();
        let value = format!("Bearer {}", self.token(&scopes));
        retry
            .headers_mut()
            .insert(AUTHORIZATION, value.parse().expect("header value"));
        self.exchange(retry)
    }

    /// Send without any credentials.
    fn send_anonymous(&self, rb: RequestBuilder) -> Resp {
        self.exchange(rb.build().expect("request"))
    }

    fn exchange(&self, req: reqwest::blocking::Request) -> Resp {
        let method = req.method().clone();
        let url = req.url().to_string();
        let is_v2 = req.url().path() == "/v2" || req.url().path().starts_with("/v2/");
        let resp = self
            .http
            .execute(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().expect("response body").to_vec();
        let r = Resp {
            method,
            url,
            status,
            headers,
            body,
        };
        if is_v2 {
            assert_eq!(
                r.header("Docker-Distribution-API-Version"),
                Some("registry/2.0"),
                "missing API version header: {r:?}"
            );
        }
        r
    }

    fn get(&self, path: &str) -> Resp {
        self.send(self.req(Method::GET, path))
    }

    fn head(&self, path: &str) -> Resp {
        self.send(self.req(Method::HEAD, path))
    }

    fn delete(&self, path: &str) -> Resp {
        self.send(self.req(Method::DELETE, path))
    }

    /// Monolithic upload; returns the digest.
    fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(data));
        self.send(
            self.req(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        )
        .expect(201);
        digest
    }

    /// `POST /v2/<name>/blobs/uploads/`, asserting 202; returns the response.
    fn start_upload(&self, name: &str) -> Resp {
        let r = self.send(self.req(Method::POST, &format!("/v2/{name}/blobs/uploads/")));
        r.expect(202);
        r
    }

    fn patch(&self, location: &str, range: Option<(usize, usize)>, data: &[u8]) -> Resp {
        let mut rb = self
            .req(Method::PATCH, location)
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec());
        if let Some((a, b)) = range {
            rb = rb.header("Content-Range", format!("{a}-{b}"));
        }
        self.send(rb)
    }

    /// `PUT <location>?digest=<d>` with an optional final chunk.
    fn finish(&self, location: &str, digest: &str, data: &[u8]) -> Resp {
        self.send(
            self.req(
                Method::PUT,
                &with_query(location, &format!("digest={digest}")),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        )
    }

    fn put_manifest(&self, name: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.send(
            self.req(Method::PUT, &format!("/v2/{name}/manifests/{reference}"))
                .header("Content-Type", media_type)
                .body(body.to_vec()),
        )
    }

    /// Push a manifest, asserting 201 and the digest header; returns the digest.
    fn push_manifest(&self, name: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let r = self.put_manifest(name, reference, media_type, body);
        r.expect(201);
        let digest = format!("sha256:{}", sha256_hex(body));
        assert_eq!(r.h("Docker-Content-Digest"), digest, "{r:?}");
        digest
    }

    /// Push a config and a layer and return an OCI image manifest referencing them
    /// (not yet pushed).
    fn oci_image(&self, name: &str, seed: &str) -> Vec<u8> {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = bytes(&format!("layer-{seed}"), 3000);
        let c = self.push_blob(name, config.as_bytes());
        let l = self.push_blob(name, &layer);
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": l, "size": layer.len()}],
        }))
        .unwrap()
    }

    /// Push an OCI image under `reference`; returns (digest, manifest bytes).
    fn push_image(&self, name: &str, reference: &str, seed: &str) -> (String, Vec<u8>) {
        let m = self.oci_image(name, seed);
        let d = self.push_manifest(name, reference, OCI_MANIFEST, &m);
        (d, m)
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.berth.data_dir()
    }
}

/// Deterministic pseudo-random bytes (SHA-256 in counter mode).
fn bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i: u64 = 0;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(seed.as_bytes());
        h.update(i.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

fn with_query(location: &str, q: &str) -> String {
    if location.contains('?') {
        format!("{location}&{q}")
    } else {
        format!("{location}?{q}")
    }
}

/// The repository a `/v2/` path (without the `/v2/` prefix) names, and whether it is an
/// upload URL.
fn repository_of(rest: &str) -> Option<(&str, bool)> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some((name, false));
    }
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
        return Some((name, true));
    }
    let (head, _) = rest.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some((name, true));
    }
    let (name, kind) = head.rsplit_once('/')?;
    matches!(kind, "manifests" | "blobs" | "referrers").then_some((name, false))
}

/// Whether every segment of `name` matches the distribution spec's path-component
/// grammar `[a-z0-9]+((\.|_|__|[-]+)[a-z0-9]+)*`.
fn plausible_name(name: &str) -> bool {
    name.split('/').all(|seg| {
        let b = seg.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        // Separators: runs of '-' of any length, or '.', '_', '__'.
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &seg[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
                return false;
            }
        }
        true
    })
}

/// The value of `key="value"` in a `WWW-Authenticate` challenge.
fn challenge_param(challenge: &str, key: &str) -> Option<String> {
    let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let len = challenge[start..].find('"')?;
    Some(challenge[start..start + len].to_string())
}

/// The URL inside `Link: <url>; rel="next"`.
fn link_next(r: &Resp) -> Option<String> {
    let link = r.header("Link")?;
    assert!(
        link.ends_with(r#">; rel="next""#),
        "odd Link header {link:?}"
    );
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    Some(link[start..end].to_string())
}

fn tags_of(r: &Resp) -> Vec<String> {
    let body = r.json();
    match &body["tags"] {
        Value::Null => Vec::new(),
        v => v
            .as_array()
            .unwrap_or_else(|| panic!("tags is not an array: {r:?}"))
            .iter()
            .map(|t| t.as_str().expect("tag string").to_string())
            .collect(),
    }
}

/// `GET <path>` (a tags list), asserting 200; the tags.
fn list_tags(reg: &Reg, path: &str) -> Vec<String> {
    let r = reg.get(path);
    r.expect(200);
    tags_of(&r)
}

/// The `<end>` of a `Range: 0-<end>` header.
fn range_end(r: &Resp) -> u64 {
    let range = r.h("Range");
    let (a, b) = range
        .split_once('-')
        .unwrap_or_else(|| panic!("bad Range {range:?}"));
    assert_eq!(a, "0", "Range must start at 0: {range:?}");
    b.parse().unwrap_or_else(|_| panic!("bad Range {range:?}"))
}

// ---------------------------------------------------------------------------
// Base
// ---------------------------------------------------------------------------

#[test]
fn base_endpoint_answers_200_with_and_without_slash() {
    let reg = Reg::start();
    for path in ["/v2/", "/v2"] {
        // Without a token: a challenge that sends the client to the token service.
        let r = reg.send_anonymous(reg.req(Method::GET, path));
        r.expect_error(401, "UNAUTHORIZED");
        let challenge = r.h("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer "), "{r:?}");
        assert_eq!(
            challenge_param(challenge, "realm"),
            Some(format!("{}/jwt/auth", reg.berth.url)),
            "{r:?}"
        );
        assert_eq!(
            challenge_param(challenge, "service").as_deref(),
            Some("container_registry"),
            "{r:?}"
        );
        // With one (fetched after that challenge): 200. Every answer under /v2 says
        // which API it speaks (clients such as docker check it on the base endpoint).
        let ok = reg.get(path);
        ok.expect(200);
        for r in [&r, &ok] {
            assert_eq!(
                r.h("Docker-Distribution-Api-Version"),
                "registry/2.0",
                "{r:?}"
            );
        }
    }
    let r = reg.get("/v2/no/such/endpoint/here");
    assert_eq!(
        r.h("Docker-Distribution-Api-Version"),
        "registry/2.0",
        "{r:?}"
    );
    // The rest of the site does not.
    let r = reg.send_anonymous(reg.req(Method::GET, "/users/sign_in"));
    assert_eq!(r.header("Docker-Distribution-Api-Version"), None, "{r:?}");
}

// ---------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------

#[test]
fn monolithic_upload_creates_blob() {
    let reg = Reg::start();
    let data = bytes("mono", 1234);
    let d = digest_of(&data);
    let r = reg.send(
        reg.req(
            Method::POST,
            &format!("/v2/lib/mono/blobs/uploads/?digest={d}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.clone()),
    );
    r.expect(201);
    assert!(
        r.h("Location")
            .ends_with(&format!("/v2/lib/mono/blobs/{d}")),
        "{r:?}"
    );
    assert_eq!(r.h("Docker-Content-Digest"), d);
    let got = reg.get(&format!("/v2/lib/mono/blobs/{d}"));
    got.expect(200);
    assert_eq!(got.body, data);
}

#[test]
fn two_step_upload_post_then_put() {
    let reg = Reg::start();
    let r = reg.start_upload("lib/two");
    assert!(!r.h("Docker-Upload-UUID").is_empty());
    assert_eq!(r.h("Range"), "0-0");
    assert_eq!(r.h("Content-Length"), "0");
    assert!(r.body.is_empty());
    let location = r.h("Location").to_string();
    assert!(location.contains("/v2/lib/two/blobs/uploads/"), "{r:?}");

    let data = bytes("two", 777);
    let d = digest_of(&data);
    let done = reg.finish(&location, &d, &data);
    done.expect(201);
    assert!(done
        .h("Location")
        .ends_with(&format!("/v2/lib/two/blobs/{d}")));
    assert_eq!(done.h("Docker-Content-Digest"), d);
    assert_eq!(
        reg.get(&format!("/v2/lib/two/blobs/{d}")).expect(200).body,
        data
    );
}

#[test]
fn chunked_upload_follows_locations() {
    let reg = Reg::start();
    let data = bytes("chunks", 20);
    let d = digest_of(&data);
    let r = reg.start_upload("lib/chunked");
    let uuid = r.h("Docker-Upload-UUID").to_string();

    let r = reg.patch(r.h("Location"), Some((0, 9)), &data[..10]);
    r.expect(202);
    assert_eq!(r.h("Range"), "0-9");
    assert_eq!(r.h("Docker-Upload-UUID"), uuid);

    let r = reg.patch(r.h("Location"), Some((10, 19)), &data[10..]);
    r.expect(202);
    assert_eq!(r.h("Range"), "0-19");

    let done = reg.finish(r.h("Location"), &d, b"");
    done.expect(201);
    assert_eq!(done.h("Docker-Content-Digest"), d);

    let got = reg.get(&format!("/v2/lib/chunked/blobs/{d}"));
    got.expect(200);
    assert_eq!(got.body, data);
    assert_eq!(got.h("Content-Length"), "20");
}

#[test]
fn out_of_order_chunk_is_416_and_upload_stays_usable() {
    let reg = Reg::start();
    let data = bytes("ooo", 30);
    let d = digest_of(&data);
    let r = reg.start_upload("lib/ooo");
    let r = reg.patch(r.h("Location"), Some((0, 9)), &data[..10]);
    r.expect(202);
    let location = r.h("Location").to_string();

    let bad = reg.patch(&location, Some((20, 29)), &data[20..]);
    bad.expect_error(416, "RANGE_INVALID");
    assert_eq!(bad.h("Range"), "0-9", "{bad:?}");

    let status = reg.get(&location);
    status.expect(204);
    assert_eq!(status.h("Range"), "0-9");

    let r = reg.patch(&location, Some((10, 29)), &data[10..]);
    r.expect(202);
    assert_eq!(r.h("Range"), "0-29");
    reg.finish(r.h("Location"), &d, b"").expect(201);
    assert_eq!(
        reg.get(&format!("/v2/lib/ooo/blobs/{d}")).expect(200).body,
        data
    );
}

/// A reader whose length nobody knows, so reqwest sends a chunked body.
struct Unsized(std::io::Cursor<Vec<u8>>);

impl Read for Unsized {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Small reads make several chunks.
        let n = buf.len().min(7000);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn streamed_patch_without_content_range_is_accepted() {
    let reg = Reg::start();
    let data = bytes("stream", 100_000);
    let d = digest_of(&data);
    let r = reg.start_upload("lib/stream");
    let r = reg.send(
        reg.req(Method::PATCH, r.h("Location"))
            .header("Content-Type", "application/octet-stream")
            .body(Body::new(Unsized(std::io::Cursor::new(data.clone())))),
    );
    r.expect(202);
    assert_eq!(r.h("Range"), format!("0-{}", data.len() - 1));
    reg.finish(r.h("Location"), &d, b"").expect(201);
    assert_eq!(
        reg.get(&format!("/v2/lib/stream/blobs/{d}"))
            .expect(200)
            .body,
        data
    );
}

#[test]
fn upload_status_reports_range_and_uuid() {
    let reg = Reg::start();
    let r = reg.start_upload("lib/status");
    let uuid = r.h("Docker-Upload-UUID").to_string();
    let location = r.h("Location").to_string();

    let s = reg.get(&location);
    s.expect(204);
    assert_eq!(s.h("Range"), "0-0");
    assert_eq!(s.h("Docker-Upload-UUID"), uuid);
    assert!(s.body.is_empty());

    let p = reg.patch(&location, Some((0, 4)), b"hello");
    p.expect(202);
    let s = reg.get(p.h("Location"));
    s.expect(204);
    assert_eq!(s.h("Range"), "0-4");
    assert_eq!(s.h("Docker-Upload-UUID"), uuid);
    assert!(s.h("Location").contains(&uuid));
}

#[test]
fn cancelled_upload_is_gone() {
    let reg = Reg::start();
    let r = reg.start_upload("lib/cancel");
    let location = r.h("Location").to_string();
    reg.patch(&location, Some((0, 2)), b"abc").expect(202);

    let del = reg.delete(&location);
    del.expect(204);

    reg.get(&location).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.patch(&location, Some((3, 5)), b"def")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn unknown_upload_id_is_blob_upload_unknown() {
    let reg = Reg::start();
    let id = "3b0c2bd4-5f2a-4bd1-9a8b-6b7a1c3d9e01";
    reg.get(&format!("/v2/lib/x/blobs/uploads/{id}"))
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.patch(&format!("/v2/lib/x/blobs/uploads/{id}"), None, b"abc")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.finish(
        &format!("/v2/lib/x/blobs/uploads/{id}"),
        &digest_of(b"abc"),
        b"abc",
    )
    .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn upload_id_under_another_repository_is_unknown() {
    let reg = Reg::start();
    let r = reg.start_upload("lib/owner");
    let uuid = r.h("Docker-Upload-UUID").to_string();
    let elsewhere = format!("/v2/lib/intruder/blobs/uploads/{uuid}");
    reg.get(&elsewhere).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.patch(&elsewhere, None, b"abc")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.finish(&elsewhere, &digest_of(b""), b"")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.delete(&elsewhere)
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // The owner's session is untouched.
    reg.get(r.h("Location")).expect(204);
}

#[test]
fn wrong_digest_on_put_is_rejected_and_nothing_is_visible() {
    let reg = Reg::start();
    let data = bytes("real", 500);
    let real = digest_of(&data);
    let claimed = digest_of(b"something else entirely");
    let r = reg.start_upload("lib/wrong");
    reg.finish(r.h("Location"), &claimed, &data)
        .expect_error(400, "DIGEST_INVALID");
    reg.head(&format!("/v2/lib/wrong/blobs/{claimed}"))
        .expect(404);
    reg.head(&format!("/v2/lib/wrong/blobs/{real}")).expect(404);
    reg.get(&format!("/v2/lib/wrong/blobs/{real}"))
        .expect_error(404, "BLOB_UNKNOWN");

    // Monolithic with a wrong digest: the same.
    reg.send(
        reg.req(
            Method::POST,
            &format!("/v2/lib/wrong/blobs/uploads/?digest={claimed}"),
        )
        .body(data.clone()),
    )
    .expect_error(400, "DIGEST_INVALID");
    reg.head(&format!("/v2/lib/wrong/blobs/{claimed}"))
        .expect(404);
    reg.head(&format!("/v2/lib/wrong/blobs/{real}")).expect(404);
}

#[test]
fn malformed_or_missing_digest_is_digest_invalid() {
    let reg = Reg::start();
    for bad in [
        "sha256:xyz",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:abcd",
        "nocolon",
    ] {
        let r = reg.start_upload("lib/malformed");
        reg.finish(r.h("Location"), bad, b"abc")
            .expect_error(400, "DIGEST_INVALID");
        reg.send(
            reg.req(
                Method::POST,
                &format!("/v2/lib/malformed/blobs/uploads/?digest={bad}"),
            )
            .body(b"abc".to_vec()),
        )
        .expect_error(400, "DIGEST_INVALID");
    }
    // PUT without any digest.
    let r = reg.start_upload("lib/malformed");
    reg.send(reg.req(Method::PUT, r.h("Location")).body(b"abc".to_vec()))
        .expect_error(400, "DIGEST_INVALID");
}

#[test]
fn sha512_monolithic_upload() {
    let reg = Reg::start();
    let data = bytes("sha512", 4096);
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));
    let r = reg.send(
        reg.req(
            Method::POST,
            &format!("/v2/lib/sha512/blobs/uploads/?digest={d}"),
        )
        .body(data.clone()),
    );
    r.expect(201);
    assert_eq!(r.h("Docker-Content-Digest"), d);
    let got = reg.get(&format!("/v2/lib/sha512/blobs/{d}"));
    got.expect(200);
    assert_eq!(got.h("Docker-Content-Digest"), d);
    assert_eq!(got.body, data);
}

#[test]
fn upload_resumes_after_dropped_connection() {
    let reg = Reg::start();
    let data = bytes("resume", 3 * MIB);
    let d = digest_of(&data);
    let r = reg.start_upload("lib/resume");
    let r = reg.patch(r.h("Location"), Some((0, MIB - 1)), &data[..MIB]);
    r.expect(202);
    assert_eq!(r.h("Range"), format!("0-{}", MIB - 1));
    let location = r.h("Location").to_string();
    let path = reqwest::Url::parse(&reg.url(&location)).unwrap();
    let path = match path.query() {
        Some(q) => format!("{}?{q}", path.path()),
        None => path.path().to_string(),
    };

    // A PATCH that promises 1 MiB but delivers only part of it, then the client goes away.
    let partial = 300_000;
    let mut sock = TcpStream::connect(&reg.berth.addr).expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n\r\n",
        reg.berth.addr,
        reg.authorization(Method::PATCH, &location),
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&data[MIB..MIB + partial]).unwrap();
    sock.flush().unwrap();
    sock.shutdown(Shutdown::Both).unwrap();
    drop(sock);

    // The server notices the broken body on its own time; the status then shows
    // every byte that arrived.
    let end = eventually(
        Duration::from_secs(30),
        "the upload to hold the partial chunk",
        || {
            let s = reg.get(&location);
            s.expect(204);
            let end = range_end(&s);
            (end as usize + 1 == MIB + partial).then_some(end)
        },
    );
    assert!(end as usize >= MIB - 1);

    let offset = end as usize + 1;
    let r = reg.patch(&location, Some((offset, data.len() - 1)), &data[offset..]);
    r.expect(202);
    assert_eq!(r.h("Range"), format!("0-{}", data.len() - 1));
    let done = reg.finish(r.h("Location"), &d, b"");
    done.expect(201);
    let got = reg.get(&format!("/v2/lib/resume/blobs/{d}"));
    got.expect(200);
    assert!(got.body == data, "blob content differs after resume");
}

#[test]
fn stale_uploads_expire_with_their_bytes() {
    let reg = Reg::on(Berth::start_with(&["--upload-expiry", "2s"], &[]));
    let r = reg.start_upload("lib/stale");
    let uuid = r.h("Docker-Upload-UUID").to_string();
    let location = r.h("Location").to_string();
    reg.patch(&location, Some((0, 9)), b"0123456789")
        .expect(202);
    let storage = support::Storage::of(&reg.data_dir());
    // Upload data with no session at all (left by an interrupted removal) goes too.
    let stray = "0b7c6a52-5d3e-4f7a-9a4e-3f0e8d1c2b1a";
    storage.create_stray_upload(stray);
    assert!(
        storage.uploads().contains(&uuid),
        "upload not found in storage: {:?}",
        storage.uploads()
    );

    eventually(
        Duration::from_secs(30),
        "the stale upload to expire",
        || {
            let s = reg.get(&location);
            (s.status == 404).then_some(s)
        },
    )
    .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    let left = storage.uploads();
    assert!(
        !left.contains(&uuid),
        "upload left behind in storage: {left:?}"
    );
    eventually(
        Duration::from_secs(30),
        "upload data without a session to be removed",
        || (!storage.uploads().iter().any(|u| u == stray)).then_some(()),
    );
}

// ---------------------------------------------------------------------------
// Blob reads and deletes
// ---------------------------------------------------------------------------

#[test]
fn blob_head_has_length_and_digest_but_no_body() {
    let reg = Reg::start();
    let data = bytes("head", 321);
    let d = reg.push_blob("lib/head", &data);
    let r = reg.head(&format!("/v2/lib/head/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.h("Content-Length"), "321");
    assert_eq!(r.h("Docker-Content-Digest"), d);
    assert!(r.body.is_empty());
}

#[test]
fn blob_range_requests() {
    let reg = Reg::start();
    let data = b"0123456789".to_vec();
    let d = reg.push_blob("lib/range", &data);
    let url = format!("/v2/lib/range/blobs/{d}");

    let r = reg.send(reg.req(Method::GET, &url).header("Range", "bytes=2-5"));
    r.expect(206);
    assert_eq!(r.h("Content-Range"), "bytes 2-5/10");
    assert_eq!(r.body, b"2345");

    let r = reg.send(reg.req(Method::GET, &url).header("Range", "bytes=-3"));
    r.expect(206);
    assert_eq!(r.h("Content-Range"), "bytes 7-9/10");
    assert_eq!(r.body, b"789");

    let r = reg.send(reg.req(Method::GET, &url).header("Range", "bytes=20-30"));
    r.expect_error(416, "RANGE_INVALID");
    assert_eq!(r.h("Content-Range"), "bytes */10");

    // A last position past the end is satisfiable: what there is (RFC 9110 §14.1.2).
    for past in [
        "bytes=0-10",
        "bytes=0-99999999999",
        "bytes=0-18446744073709551615",
    ] {
        let r = reg.send(reg.req(Method::GET, &url).header("Range", past));
        r.expect(206);
        assert_eq!(r.h("Content-Range"), "bytes 0-9/10", "{past}");
        assert_eq!(r.h("Content-Length"), "10");
        assert_eq!(r.body, data);
    }
    let r = reg.send(reg.req(Method::GET, &url).header("Range", "bytes=4-"));
    r.expect(206);
    assert_eq!(r.body, b"456789");

    // Positions are digits only; an unparsable range is refused, not misread.
    for bad in [
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=18446744073709551616-",
        "bytes=-0",
    ] {
        let r = reg.send(reg.req(Method::GET, &url).header("Range", bad));
        r.expect_error(416, "RANGE_INVALID");
    }
}

#[test]
fn upload_chunk_with_a_huge_content_range_is_refused() {
    let reg = Reg::start();
    let start = reg.start_upload("lib/huge-range");
    let location = start.h("Location");
    // Its length does not fit in 64 bits: no Content-Length can match it.
    let r = reg.send(
        reg.req(Method::PATCH, location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-18446744073709551615")
            .body(b"abc".to_vec()),
    );
    r.expect_error(416, "RANGE_INVALID");
    // The upload is still usable.
    reg.patch(location, Some((0, 2)), b"abc").expect(202);
}

#[test]
fn unknown_blob_is_blob_unknown() {
    let reg = Reg::start();
    reg.push_blob("lib/known", b"x");
    let d = digest_of(b"never pushed");
    reg.get(&format!("/v2/lib/known/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    reg.head(&format!("/v2/lib/known/blobs/{d}")).expect(404);
}

#[test]
fn blob_of_one_repository_is_not_readable_through_another() {
    let reg = Reg::start();
    let secret = reg.push_blob("team/a", b"only for a");
    reg.push_blob("team/b", b"b's own blob");
    reg.get(&format!("/v2/team/b/blobs/{secret}"))
        .expect_error(404, "BLOB_UNKNOWN");
    reg.head(&format!("/v2/team/b/blobs/{secret}")).expect(404);
    // A repository that does not exist at all reads nothing either.
    reg.get(&format!("/v2/team/c/blobs/{secret}"))
        .expect_error(404, "BLOB_UNKNOWN");
    reg.get(&format!("/v2/team/a/blobs/{secret}")).expect(200);
}

#[test]
fn blob_delete_then_gone() {
    let reg = Reg::start();
    let d = reg.push_blob("lib/del", b"delete me");
    let url = format!("/v2/lib/del/blobs/{d}");
    reg.delete(&url).expect(202);
    reg.head(&url).expect(404);
    reg.get(&url).expect_error(404, "BLOB_UNKNOWN");
    reg.delete(&url).expect_error(404, "BLOB_UNKNOWN");
}

#[test]
fn cross_repository_mount() {
    let reg = Reg::start();
    let data = bytes("mount", 2048);
    let d = reg.push_blob("a/src", &data);
    let r = reg.send(reg.req(
        Method::POST,
        &format!("/v2/a/dst/blobs/uploads/?mount={d}&from=a/src"),
    ));
    r.expect(201);
    assert!(
        r.h("Location").ends_with(&format!("/v2/a/dst/blobs/{d}")),
        "{r:?}"
    );
    // The request's log line names its caller once, though two repositories were
    // authorized.
    let line = support::eventually(Duration::from_secs(10), "the mount's log line", || {
        reg.berth
            .log()
            .lines()
            .find(|l| l.contains("method=POST path=/v2/a/dst/blobs/uploads/"))
            .map(str::to_string)
    });
    assert_eq!(line.matches("principal=").count(), 1, "{line}");
    assert_eq!(r.h("Docker-Content-Digest"), d);
    let h = reg.head(&format!("/v2/a/dst/blobs/{d}"));
    h.expect(200);
    assert_eq!(h.h("Content-Length"), "2048");
    assert_eq!(
        reg.get(&format!("/v2/a/dst/blobs/{d}")).expect(200).body,
        data
    );
}

/// A mount whose token lacks pull on the source is challenged for both scopes (as the
/// reference registry does), so the client asks for them and mounts; a caller who
/// may not read the source gets an ordinary upload and learns nothing about it.
#[test]
fn mount_without_the_source_scope_is_challenged_for_it() {
    let berth = Berth::start();
    berth.project("mnt/src", "private");
    berth.project("mnt/dst", "private");
    berth.user("dev", "dev-password-1");
    berth.user("outsider", "outsider-password-1");
    for (project, user) in [
        ("mnt/src", "dev"),
        ("mnt/dst", "dev"),
        ("mnt/dst", "outsider"),
    ] {
        berth.admin(&[
            "member",
            "add",
            "--project",
            project,
            "--user",
            user,
            "--role",
            "developer",
        ]);
    }
    let token = |user: &str, password: &str, scopes: &[&str]| -> String {
        let r = berth.token(Some((user, password)), scopes);
        assert_eq!(r.status(), 200);
        let body: Value = r.json().unwrap();
        body["token"].as_str().unwrap().to_string()
    };
    let http = Client::new();
    let data = bytes("mount-scope", 512);
    let d = digest_of(&data);
    let root = token(
        "root",
        support::ROOT_PASSWORD,
        &["repository:mnt/src:push,pull"],
    );
    let r = http
        .post(format!(
            "{}/v2/mnt/src/blobs/uploads/?digest={d}",
            berth.url
        ))
        .bearer_auth(&root)
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);

    let mount = format!(
        "{}/v2/mnt/dst/blobs/uploads/?mount={d}&from=mnt/src",
        berth.url
    );
    let only_target = token("dev", "dev-password-1", &["repository:mnt/dst:pull,push"]);
    let r = http.post(&mount).bearer_auth(&only_target).send().unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains(r#"scope="repository:mnt/dst:pull,push repository:mnt/src:pull""#)
            && challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    let both = token(
        "dev",
        "dev-password-1",
        &["repository:mnt/dst:pull,push", "repository:mnt/src:pull"],
    );
    let r = http.post(&mount).bearer_auth(&both).send().unwrap();
    assert_eq!(r.status(), 201, "mounted once the token covers the source");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    // Someone who may not read the source: an upload session, nothing said about it.
    let outsider = token(
        "outsider",
        "outsider-password-1",
        &["repository:mnt/dst:pull,push", "repository:mnt/src:pull"],
    );
    let r = http
        .post(format!(
            "{}/v2/mnt/dst/blobs/uploads/?mount={d}&from=mnt/src",
            berth.url
        ))
        .bearer_auth(&outsider)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("www-authenticate").is_none());
}

#[test]
fn mount_of_missing_blob_falls_back_to_upload_session() {
    let reg = Reg::start();
    reg.push_blob("a/src", b"something");
    let data = bytes("not-in-src", 99);
    let d = digest_of(&data);
    let r = reg.send(reg.req(
        Method::POST,
        &format!("/v2/a/dst/blobs/uploads/?mount={d}&from=a/src"),
    ));
    r.expect(202);
    assert!(!r.h("Docker-Upload-UUID").is_empty());
    assert_eq!(r.h("Range"), "0-0");
    reg.head(&format!("/v2/a/dst/blobs/{d}")).expect(404);
    let done = reg.finish(r.h("Location"), &d, &data);
    done.expect(201);
    assert_eq!(
        reg.get(&format!("/v2/a/dst/blobs/{d}")).expect(200).body,
        data
    );
}

#[test]
fn same_blob_in_two_repositories_is_stored_once() {
    let reg = Reg::start();
    let data = bytes("dedup", 10_000);
    let d1 = reg.push_blob("dedup/one", &data);
    let d2 = reg.push_blob("dedup/two", &data);
    assert_eq!(d1, d2);
    let hex = d1.trim_start_matches("sha256:");
    // Content-addressed: one object under the digest, whichever repository asked.
    let storage = support::Storage::of(&reg.data_dir());
    let copies: Vec<_> = storage
        .blobs()
        .into_iter()
        .filter(|d| d.contains(hex))
        .collect();
    assert_eq!(copies, vec![d1.clone()]);
    assert_eq!(storage.read_blob(&d1).unwrap(), data);
    reg.get(&format!("/v2/dedup/one/blobs/{d1}")).expect(200);
    reg.get(&format!("/v2/dedup/two/blobs/{d1}")).expect(200);
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

#[test]
fn oci_manifest_round_trip_is_byte_exact() {
    let reg = Reg::start();
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = bytes("exact-layer", 5000);
    let c = reg.push_blob("lib/exact", config);
    let l = reg.push_blob("lib/exact", &layer);
    // Odd key order, tabs, spaces and a trailing newline: stored and served as-is.
    let manifest = format!(
        "{{\n\t\"layers\" : [ {{ \"size\":{ls},  \"digest\" : \"{l}\", \"mediaType\":\"{OCI_LAYER}\" }} ],\n   \
         \"config\":{{\"size\": {cs},\"mediaType\": \"{OCI_CONFIG}\",\"digest\":\"{c}\"}} ,\n\
         \"schemaVersion\":   2,\"mediaType\" :\"{OCI_MANIFEST}\",\n  \"annotations\": {{\"z\":\"1\",\"a\":\"2\"}}\n}}\n\n",
        ls = layer.len(),
        cs = config.len(),
    );
    let manifest = manifest.into_bytes();
    let expected = digest_of(&manifest);

    let r = reg.put_manifest("lib/exact", "v1", OCI_MANIFEST, &manifest);
    r.expect(201);
    assert_eq!(r.h("Docker-Content-Digest"), expected);
    assert!(
        r.h("Location").contains("/v2/lib/exact/manifests/"),
        "{r:?}"
    );

    for reference in ["v1", expected.as_str()] {
        let url = format!("/v2/lib/exact/manifests/{reference}");
        let g = reg.send(reg.req(Method::GET, &url).header("Accept", OCI_MANIFEST));
        g.expect(200);
        assert_eq!(g.h("Content-Type"), OCI_MANIFEST);
        assert_eq!(g.h("Docker-Content-Digest"), expected);
        assert!(g.body == manifest, "manifest bytes differ: {g:?}");

        let h = reg.send(reg.req(Method::HEAD, &url).header("Accept", OCI_MANIFEST));
        h.expect(200);
        assert_eq!(h.h("Content-Type"), OCI_MANIFEST);
        assert_eq!(h.h("Docker-Content-Digest"), expected);
        assert_eq!(h.h("Content-Length"), manifest.len().to_string());
        assert!(h.body.is_empty());
    }
}

#[test]
fn docker_schema2_manifest_round_trip() {
    let reg = Reg::start();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = bytes("docker-layer", 4000);
    let c = reg.push_blob("lib/docker", config);
    let l = reg.push_blob("lib/docker", &layer);
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": c},
        "layers": [{"mediaType": DOCKER_LAYER, "size": layer.len(), "digest": l}],
    }))
    .unwrap();
    let d = reg.push_manifest("lib/docker", "latest", DOCKER_MANIFEST, &manifest);
    let g = reg.send(
        reg.req(Method::GET, "/v2/lib/docker/manifests/latest")
            .header("Accept", format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}")),
    );
    g.expect(200);
    assert_eq!(g.h("Content-Type"), DOCKER_MANIFEST);
    assert_eq!(g.h("Docker-Content-Digest"), d);
    assert_eq!(g.body, manifest);
}

#[test]
fn docker_manifest_list_and_oci_index() {
    let reg = Reg::start();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let m = reg.oci_image("lib/multi", arch);
        let d = reg.push_manifest("lib/multi", &digest_of(&m), OCI_MANIFEST, &m);
        children.push((d, m.len(), arch));
    }
    let entries = |media: &str| -> Vec<Value> {
        children
            .iter()
            .map(|(d, size, arch)| {
                json!({"mediaType": media, "digest": d, "size": size,
                       "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect()
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries(OCI_MANIFEST),
    }))
    .unwrap();
    let di = reg.push_manifest("lib/multi", "index", OCI_INDEX, &index);
    let g = reg.get("/v2/lib/multi/manifests/index");
    g.expect(200);
    assert_eq!(g.h("Content-Type"), OCI_INDEX);
    assert_eq!(g.h("Docker-Content-Digest"), di);
    assert_eq!(g.body, index);

    // A Docker manifest list over Docker schema 2 children.
    let mut docker_children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let c = reg.push_blob("lib/multi", config.as_bytes());
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": c},
            "layers": [],
        }))
        .unwrap();
        let d = reg.push_manifest("lib/multi", &format!("docker-{arch}"), DOCKER_MANIFEST, &m);
        docker_children.push(
            json!({"mediaType": DOCKER_MANIFEST, "digest": d, "size": m.len(),
                                    "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": docker_children,
    }))
    .unwrap();
    let dl = reg.push_manifest("lib/multi", "list", DOCKER_LIST, &list);
    let g = reg.get("/v2/lib/multi/manifests/list");
    g.expect(200);
    assert_eq!(g.h("Content-Type"), DOCKER_LIST);
    assert_eq!(g.h("Docker-Content-Digest"), dl);
    assert_eq!(g.body, list);
}

#[test]
fn index_with_unknown_child_is_manifest_blob_unknown() {
    let reg = Reg::start();
    let (known, m) = reg.push_image("lib/idx", "a", "known");
    let missing = digest_of(b"a manifest that was never pushed");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": known, "size": m.len()},
            {"mediaType": OCI_MANIFEST, "digest": missing, "size": 123},
        ],
    }))
    .unwrap();
    reg.put_manifest("lib/idx", "index", OCI_INDEX, &index)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    reg.get("/v2/lib/idx/manifests/index")
        .expect_error(404, "MANIFEST_UNKNOWN");

    // A child that exists only in another repository does not count either.
    let (other, om) = reg.push_image("lib/other", "a", "other");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": other, "size": om.len()}],
    }))
    .unwrap();
    reg.put_manifest("lib/idx", "index", OCI_INDEX, &index)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn manifest_with_missing_layer_is_manifest_blob_unknown() {
    let reg = Reg::start();
    let config = b"{}";
    let c = reg.push_blob("lib/missing", config);
    let layer = digest_of(b"layer never pushed");
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 18}],
    }))
    .unwrap();
    reg.put_manifest("lib/missing", "v1", OCI_MANIFEST, &m)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    reg.get("/v2/lib/missing/manifests/v1")
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn manifest_with_blob_only_in_another_repository_is_manifest_blob_unknown() {
    let reg = Reg::start();
    let config = br#"{"os":"linux"}"#;
    let c = reg.push_blob("lib/mine", config);
    let layer = bytes("theirs", 600);
    let l = reg.push_blob("lib/theirs", &layer);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": l, "size": layer.len()}],
    }))
    .unwrap();
    reg.put_manifest("lib/mine", "v1", OCI_MANIFEST, &m)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn invalid_manifests_are_manifest_invalid() {
    let reg = Reg::start();
    let name = "lib/invalid";

    // Not JSON.
    reg.put_manifest(name, "v1", OCI_MANIFEST, b"this is { not json")
        .expect_error(400, "MANIFEST_INVALID");

    // Schema 1, by body and by Content-Type.
    let schema1 = serde_json::to_vec(&json!({
        "schemaVersion": 1, "name": name, "tag": "v1", "architecture": "amd64",
        "fsLayers": [{"blobSum": digest_of(b"x")}],
        "history": [{"v1Compatibility": "{}"}],
    }))
    .unwrap();
    for ct in [
        SCHEMA1_SIGNED,
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        let err = reg
            .put_manifest(name, "v1", ct, &schema1)
            .expect_error(400, "MANIFEST_INVALID");
        let msg = err["message"].as_str().unwrap().to_lowercase();
        assert!(
            msg.contains("schema 1"),
            "message does not mention schema 1: {msg:?}"
        );
    }

    // Content-Type disagreeing with the body's mediaType.
    let m = reg.oci_image(name, "ct");
    reg.put_manifest(name, "v1", DOCKER_MANIFEST, &m)
        .expect_error(400, "MANIFEST_INVALID");

    // An OCI image manifest without config.
    let no_config = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
    }))
    .unwrap();
    reg.put_manifest(name, "v1", OCI_MANIFEST, &no_config)
        .expect_error(400, "MANIFEST_INVALID");

    reg.get(&format!("/v2/{name}/manifests/v1"))
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn oversized_manifest_is_413() {
    let reg = Reg::start();
    let config = b"{}";
    let c = reg.push_blob("lib/big", config);
    // Valid JSON, just too big: a long annotation.
    let padding = "x".repeat(4 * MIB + 10);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": 2},
        "layers": [],
        "annotations": {"padding": padding},
    }))
    .unwrap();
    assert!(m.len() > 4 * MIB);
    reg.put_manifest("lib/big", "v1", OCI_MANIFEST, &m)
        .expect_error(413, "MANIFEST_INVALID");
    reg.get("/v2/lib/big/manifests/v1")
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn put_manifest_by_digest() {
    let reg = Reg::start();
    let m = reg.oci_image("lib/bydigest", "d");
    let d = digest_of(&m);
    let wrong = digest_of(b"not this manifest");
    reg.put_manifest("lib/bydigest", &wrong, OCI_MANIFEST, &m)
        .expect_error(400, "DIGEST_INVALID");
    reg.get(&format!("/v2/lib/bydigest/manifests/{wrong}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    reg.get(&format!("/v2/lib/bydigest/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");

    let r = reg.put_manifest("lib/bydigest", &d, OCI_MANIFEST, &m);
    r.expect(201);
    assert_eq!(r.h("Docker-Content-Digest"), d);
    assert!(r
        .h("Location")
        .ends_with(&format!("/v2/lib/bydigest/manifests/{d}")));
    assert_eq!(
        reg.get(&format!("/v2/lib/bydigest/manifests/{d}"))
            .expect(200)
            .body,
        m
    );
    let tags = reg.get("/v2/lib/bydigest/tags/list");
    tags.expect(200);
    assert!(tags_of(&tags).is_empty(), "a tag was created: {tags:?}");
}

#[test]
fn invalid_tag_is_tag_invalid() {
    let reg = Reg::start();
    let m = reg.oci_image("lib/tags", "t");
    let long = "a".repeat(129);
    for bad in [".bad", "-bad", long.as_str(), "bad+tag"] {
        reg.put_manifest("lib/tags", bad, OCI_MANIFEST, &m)
            .expect_error(400, "TAG_INVALID");
    }
    // 128 characters is the limit, and allowed.
    let ok = "a".repeat(128);
    reg.push_manifest("lib/tags", &ok, OCI_MANIFEST, &m);
}

#[test]
fn unknown_manifest_is_manifest_unknown() {
    let reg = Reg::start();
    reg.push_image("lib/unknown", "exists", "u");
    reg.get("/v2/lib/unknown/manifests/nope")
        .expect_error(404, "MANIFEST_UNKNOWN");
    reg.head("/v2/lib/unknown/manifests/nope").expect(404);
    let d = digest_of(b"no such manifest");
    reg.get(&format!("/v2/lib/unknown/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    reg.head(&format!("/v2/lib/unknown/manifests/{d}"))
        .expect(404);
}

#[test]
fn delete_by_tag_removes_only_that_tag() {
    let reg = Reg::start();
    let (d, m) = reg.push_image("lib/deltag", "one", "x");
    reg.push_manifest("lib/deltag", "two", OCI_MANIFEST, &m);
    reg.delete("/v2/lib/deltag/manifests/one").expect(202);
    reg.get("/v2/lib/deltag/manifests/one")
        .expect_error(404, "MANIFEST_UNKNOWN");
    let two = reg.get("/v2/lib/deltag/manifests/two");
    two.expect(200);
    assert_eq!(two.h("Docker-Content-Digest"), d);
    assert_eq!(
        reg.get(&format!("/v2/lib/deltag/manifests/{d}"))
            .expect(200)
            .body,
        m
    );
    assert_eq!(list_tags(&reg, "/v2/lib/deltag/tags/list"), ["two"]);
    // Deleting the tag again: it no longer exists.
    reg.delete("/v2/lib/deltag/manifests/one")
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn delete_by_digest_removes_manifest_and_its_tags() {
    let reg = Reg::start();
    let (d, m) = reg.push_image("lib/deldigest", "one", "y");
    reg.push_manifest("lib/deldigest", "two", OCI_MANIFEST, &m);
    let (_, _) = reg.push_image("lib/deldigest", "keep", "other");
    reg.delete(&format!("/v2/lib/deldigest/manifests/{d}"))
        .expect(202);
    for t in ["one", "two"] {
        reg.get(&format!("/v2/lib/deldigest/manifests/{t}"))
            .expect_error(404, "MANIFEST_UNKNOWN");
    }
    reg.get(&format!("/v2/lib/deldigest/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    let tags = reg.get("/v2/lib/deldigest/tags/list");
    tags.expect(200);
    assert_eq!(tags_of(&tags), ["keep"]);
    reg.delete(&format!("/v2/lib/deldigest/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn delete_unknown_manifest_is_manifest_unknown() {
    let reg = Reg::start();
    reg.push_image("lib/delunknown", "v1", "z");
    reg.delete("/v2/lib/delunknown/manifests/nope")
        .expect_error(404, "MANIFEST_UNKNOWN");
    reg.delete(&format!(
        "/v2/lib/delunknown/manifests/{}",
        digest_of(b"nope")
    ))
    .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn pushing_a_tag_again_moves_it() {
    let reg = Reg::start();
    let (da, _) = reg.push_image("lib/move", "t", "A");
    let (db, mb) = reg.push_image("lib/move", "t", "B");
    assert_ne!(da, db);
    let g = reg.get("/v2/lib/move/manifests/t");
    g.expect(200);
    assert_eq!(g.h("Docker-Content-Digest"), db);
    assert_eq!(g.body, mb);
    // The old manifest is still there by digest.
    reg.get(&format!("/v2/lib/move/manifests/{da}")).expect(200);
    assert_eq!(list_tags(&reg, "/v2/lib/move/tags/list"), ["t"]);
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

#[test]
fn tags_list_is_sorted_and_paged() {
    let reg = Reg::start();
    let name = "lib/paged";
    let m = reg.oci_image(name, "p");
    for t in ["b", "a", "c", "A", "1"] {
        reg.push_manifest(name, t, OCI_MANIFEST, &m);
    }
    let all = reg.get(&format!("/v2/{name}/tags/list"));
    all.expect(200);
    assert_eq!(all.json()["name"], name);
    assert_eq!(tags_of(&all), ["1", "A", "a", "b", "c"]);
    assert!(all.header("Link").is_none(), "{all:?}");

    let p1 = reg.get(&format!("/v2/{name}/tags/list?n=2"));
    p1.expect(200);
    assert_eq!(tags_of(&p1), ["1", "A"]);
    let next = link_next(&p1).expect("Link on the first page");
    assert!(
        next.contains(&format!("/v2/{name}/tags/list?n=2&last=A")),
        "Link {next:?}"
    );
    let p2 = reg.get(&next);
    p2.expect(200);
    assert_eq!(tags_of(&p2), ["a", "b"]);
    let next = link_next(&p2).expect("Link on the second page");
    assert!(
        next.contains(&format!("/v2/{name}/tags/list?n=2&last=b")),
        "Link {next:?}"
    );
    let p3 = reg.get(&next);
    p3.expect(200);
    assert_eq!(tags_of(&p3), ["c"]);
    assert!(p3.header("Link").is_none(), "last page has a Link: {p3:?}");
}

#[test]
fn tags_list_n_zero_last_and_bad_n() {
    let reg = Reg::start();
    let name = "lib/tagq";
    let m = reg.oci_image(name, "q");
    for t in ["b", "a", "c"] {
        reg.push_manifest(name, t, OCI_MANIFEST, &m);
    }
    let z = reg.get(&format!("/v2/{name}/tags/list?n=0"));
    z.expect(200);
    assert!(tags_of(&z).is_empty(), "{z:?}");
    assert!(z.header("Link").is_none(), "{z:?}");

    let after = reg.get(&format!("/v2/{name}/tags/list?last=b"));
    after.expect(200);
    assert_eq!(tags_of(&after), ["c"]);

    reg.get(&format!("/v2/{name}/tags/list?n=abc"))
        .expect_error(400, "PAGINATION_NUMBER_INVALID");
    reg.get(&format!("/v2/{name}/tags/list?n=-1"))
        .expect_error(400, "PAGINATION_NUMBER_INVALID");
}

#[test]
fn tags_list_of_unknown_repository_is_name_unknown() {
    let reg = Reg::start();
    reg.get("/v2/no/such/repo/tags/list")
        .expect_error(404, "NAME_UNKNOWN");
}

#[test]
fn catalog_is_sorted_and_paged() {
    let reg = Reg::start();
    let repos = [
        "zeta/img",
        "alpha/img",
        "cat/b",
        "cat/a",
        "cat/a/deeper",
        "mid/img",
    ];
    for r in repos {
        reg.push_blob(r, r.as_bytes());
    }
    let mut expected: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    expected.sort();

    let all = reg.get("/v2/_catalog");
    all.expect(200);
    let got: Vec<String> = serde_json::from_value(all.json()["repositories"].clone()).unwrap();
    assert_eq!(got, expected);

    let mut pages = Vec::new();
    let mut url = "/v2/_catalog?n=2".to_string();
    loop {
        let p = reg.get(&url);
        p.expect(200);
        let items: Vec<String> = serde_json::from_value(p.json()["repositories"].clone()).unwrap();
        assert!(items.len() <= 2, "{p:?}");
        match link_next(&p) {
            Some(next) => {
                assert!(next.contains("/v2/_catalog?n=2&last="), "Link {next:?}");
                pages.push(items);
                url = next;
            }
            None => {
                pages.push(items);
                break;
            }
        }
        assert!(pages.len() < 10, "catalog paging does not end");
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), expected);

    let z = reg.get("/v2/_catalog?n=0");
    z.expect(200);
    assert!(z.json()["repositories"].as_array().unwrap().is_empty());
    assert!(z.header("Link").is_none());
    reg.get("/v2/_catalog?n=many")
        .expect_error(400, "PAGINATION_NUMBER_INVALID");
}

// ---------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------

/// Push image X and a signature referring to it; returns (X digest, sig digest, sig bytes).
fn push_signature(reg: &Reg, name: &str) -> (String, String, Vec<u8>) {
    let (x, xm) = reg.push_image(name, "v1", "subject");
    let empty = reg.push_blob(name, b"{}");
    assert_eq!(empty, EMPTY_DIGEST);
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": x, "size": xm.len()},
        "annotations": {"org.example.signer": "alice", "org.opencontainers.image.created": "2024-05-01T00:00:00Z"},
    }))
    .unwrap();
    let sd = digest_of(&sig);
    let r = reg.put_manifest(name, &sd, OCI_MANIFEST, &sig);
    r.expect(201);
    assert_eq!(r.h("OCI-Subject"), x, "{r:?}");
    assert_eq!(r.h("Docker-Content-Digest"), sd);
    (x, sd, sig)
}

#[test]
fn referrers_list_artifacts_referring_to_a_manifest() {
    let reg = Reg::start();
    let (x, sd, sig) = push_signature(&reg, "lib/ref");
    let r = reg.get(&format!("/v2/lib/ref/referrers/{x}"));
    r.expect(200);
    assert_eq!(r.h("Content-Type"), OCI_INDEX);
    assert!(r.header("OCI-Filters-Applied").is_none());
    let body = r.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().expect("manifests array");
    assert_eq!(list.len(), 1, "{body}");
    let e = &list[0];
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(e["digest"], sd.as_str());
    assert_eq!(e["size"], sig.len());
    assert_eq!(e["artifactType"], "application/vnd.example.sig");
    assert_eq!(
        e["annotations"],
        json!({"org.example.signer": "alice", "org.opencontainers.image.created": "2024-05-01T00:00:00Z"})
    );
}

#[test]
fn referrers_filter_by_artifact_type() {
    let reg = Reg::start();
    let (x, sd, _) = push_signature(&reg, "lib/reff");
    let r = reg.get(&format!(
        "/v2/lib/reff/referrers/{x}?artifactType=application/vnd.example.sig"
    ));
    r.expect(200);
    assert_eq!(r.h("OCI-Filters-Applied"), "artifactType");
    assert_eq!(r.h("Content-Type"), OCI_INDEX);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sd.as_str());

    let r = reg.get(&format!("/v2/lib/reff/referrers/{x}?artifactType=other"));
    r.expect(200);
    assert_eq!(r.h("OCI-Filters-Applied"), "artifactType");
    assert_eq!(r.json()["manifests"], json!([]));
}

#[test]
fn referrer_artifact_type_falls_back_to_config_media_type() {
    let reg = Reg::start();
    let name = "lib/reffb";
    let (x, _, _) = push_signature(&reg, name);
    let xm = reg
        .get(&format!("/v2/{name}/manifests/{x}"))
        .expect(200)
        .body
        .clone();
    let sbom_config = br#"{"format":"spdx"}"#;
    let c = reg.push_blob(name, sbom_config);
    let sbom = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.sbom.config", "digest": c, "size": sbom_config.len()},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": x, "size": xm.len()},
    }))
    .unwrap();
    let sbd = reg.push_manifest(name, &digest_of(&sbom), OCI_MANIFEST, &sbom);

    let r = reg.get(&format!("/v2/{name}/referrers/{x}"));
    r.expect(200);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let e = list
        .iter()
        .find(|e| e["digest"] == sbd.as_str())
        .expect("the sbom is listed");
    assert_eq!(e["artifactType"], "application/vnd.example.sbom.config");
    assert_eq!(e["size"], sbom.len());

    let r = reg.get(&format!(
        "/v2/{name}/referrers/{x}?artifactType=application/vnd.example.sbom.config"
    ));
    r.expect(200);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sbd.as_str());
}

#[test]
fn referrers_of_unknown_or_malformed_digest() {
    let reg = Reg::start();
    reg.push_image("lib/refu", "v1", "u");
    let r = reg.get(&format!("/v2/lib/refu/referrers/{}", digest_of(b"unknown")));
    r.expect(200);
    assert_eq!(r.h("Content-Type"), OCI_INDEX);
    assert_eq!(r.json()["manifests"], json!([]));
    reg.get("/v2/lib/refu/referrers/sha256:nothex")
        .expect_error(400, "DIGEST_INVALID");
}

#[test]
fn manifest_with_missing_subject_is_accepted() {
    let reg = Reg::start();
    let name = "lib/orphan";
    reg.push_blob(name, b"{}");
    let ghost = digest_of(b"subject not in the registry");
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": ghost, "size": 1234},
    }))
    .unwrap();
    let r = reg.put_manifest(name, &digest_of(&sig), OCI_MANIFEST, &sig);
    r.expect(201);
    assert_eq!(r.h("OCI-Subject"), ghost);
    let list = reg.get(&format!("/v2/{name}/referrers/{ghost}"));
    list.expect(200);
    assert_eq!(
        list.json()["manifests"][0]["digest"],
        digest_of(&sig).as_str()
    );
}

// ---------------------------------------------------------------------------
// Names, methods
// ---------------------------------------------------------------------------

#[test]
fn invalid_repository_names_are_name_invalid() {
    let reg = Reg::start();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [],
    }))
    .unwrap();
    for (name, segment) in [
        ("group/_bad/img", "_bad"),
        ("group/bad-/img", "bad-"),
        ("group/Upper/img", "Upper"),
    ] {
        let err = reg
            .send(reg.req(Method::POST, &format!("/v2/{name}/blobs/uploads/")))
            .expect_error(400, "NAME_INVALID");
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.contains(segment),
            "message {msg:?} does not name {segment:?}"
        );

        let err = reg
            .put_manifest(name, "v1", OCI_MANIFEST, &m)
            .expect_error(400, "NAME_INVALID");
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.contains(segment),
            "message {msg:?} does not name {segment:?}"
        );
    }
}

#[test]
fn unsupported_methods_are_405() {
    let reg = Reg::start();
    reg.push_image("lib/methods", "x", "m");
    reg.send(reg.req(Method::PATCH, "/v2/lib/methods/manifests/x"))
        .expect_error(405, "UNSUPPORTED");
    reg.send(reg.req(Method::POST, "/v2/lib/methods/tags/list"))
        .expect_error(405, "UNSUPPORTED");
    reg.send(reg.req(Method::PUT, "/v2/_catalog"))
        .expect_error(405, "UNSUPPORTED");
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

#[test]
fn metadata_survives_restart() {
    let reg = Reg::start();
    let data = bytes("persist", 4321);
    let blob = reg.push_blob("lib/persist", &data);
    let (d, m) = reg.push_image("lib/persist", "stable", "persist");
    let Reg { berth, .. } = reg;
    let dir = berth.stop();

    let reg = Reg::on(Berth::start_in(dir, &[], &[]));
    let g = reg.get("/v2/lib/persist/manifests/stable");
    g.expect(200);
    assert_eq!(g.h("Docker-Content-Digest"), d);
    assert_eq!(g.body, m);
    assert_eq!(
        reg.get(&format!("/v2/lib/persist/blobs/{blob}"))
            .expect(200)
            .body,
        data
    );
    assert_eq!(list_tags(&reg, "/v2/lib/persist/tags/list"), ["stable"]);
}

#[test]
fn metrics_count_requests_by_route() {
    let reg = Reg::start();
    reg.push_image("lib/metrics", "v1", "m");
    reg.get("/v2/lib/metrics/manifests/v1").expect(200);
    // Each node counts what it served (with several, the GET went to one of them).
    let mut count = 0.0;
    for i in 0..reg.berth.node_count() {
        let r = reqwest::blocking::get(format!("{}/metrics", reg.berth.node_url(i)))
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().expect("metrics text");
        assert!(
            text.contains("berth_http_requests_total{"),
            "no request counters in:\n{text}"
        );
        count += text
            .lines()
            .filter(|l| {
                l.starts_with("berth_http_requests_total{") && l.contains(r#"route="manifest_get""#)
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>();
    }
    assert!(count >= 1.0, "no manifest_get request counted");
}

#[test]
fn external_url_is_used_in_locations() {
    let reg = Reg::on(Berth::start_with(
        &["--external-url", "https://registry.example.com"],
        &[],
    ));
    let r = reg.start_upload("lib/ext");
    assert!(
        r.h("Location")
            .starts_with("https://registry.example.com/v2/lib/ext/blobs/uploads/"),
        "{r:?}"
    );
    let d = reg.push_blob("lib/ext", b"ext");
    let r = reg.send(reg.req(
        Method::POST,
        &format!("/v2/lib/ext2/blobs/uploads/?mount={d}&from=lib/ext"),
    ));
    r.expect(201);
    assert_eq!(
        r.h("Location"),
        format!("https://registry.example.com/v2/lib/ext2/blobs/{d}")
    );
}

#[test]
fn index_child_cannot_be_deleted_while_the_index_exists() {
    let reg = Reg::start();
    let m = reg.oci_image("lib/kids", "amd64");
    let child = reg.push_manifest("lib/kids", &digest_of(&m), OCI_MANIFEST, &m);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": m.len()}],
    }))
    .unwrap();
    let idx = reg.push_manifest("lib/kids", "multi", OCI_INDEX, &index);
    let err = reg
        .delete(&format!("/v2/lib/kids/manifests/{child}"))
        .expect_error(409, "MANIFEST_REFERENCED");
    assert!(err["message"].as_str().unwrap().contains(&idx), "{err}");
    reg.get(&format!("/v2/lib/kids/manifests/{child}"))
        .expect(200);
    reg.delete(&format!("/v2/lib/kids/manifests/{idx}"))
        .expect(202);
    reg.delete(&format!("/v2/lib/kids/manifests/{child}"))
        .expect(202);
}
