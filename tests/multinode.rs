//! Several `berth serve` nodes on one PostgreSQL database and one S3 bucket (moto),
//! as issue 8 deploys them: one push spread over the nodes (by the round-robin proxy
//! of the test support, or by explicit per-node URLs), a node SIGKILLed in the middle
//! of a push, and two nodes' cleanup and GC workers racing over the same stores.
//!
//! These need PostgreSQL and moto; without them they are skipped loudly, unless
//! `BERTH_TEST_REQUIRE_POSTGRES=1` (as in CI), which makes that a failure.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};
use support::{
    eventually, random_bytes, run, sha256_hex, tar_layer, Berth, Storage, ROOT_PASSWORD,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(120);

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// A registry client with root's bearer tokens, talking to any base URL (the proxy's
/// or one node's).
struct Reg<'a> {
    berth: &'a Berth,
    http: Client,
    /// Tokens by repository (they last five minutes; a test takes less).
    tokens: std::cell::RefCell<BTreeMap<String, String>>,
}

impl<'a> Reg<'a> {
    fn new(berth: &'a Berth) -> Reg<'a> {
        Reg {
            berth,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(300))
                .build()
                .expect("http client"),
            tokens: Default::default(),
        }
    }

    fn bearer(&self, repo: &str) -> String {
        if let Some(t) = self.tokens.borrow().get(repo) {
            return t.clone();
        }
        let resp = self.berth.token(
            Some(("root", ROOT_PASSWORD)),
            &[&format!("repository:{repo}:pull,push,delete")],
        );
        assert_eq!(resp.status().as_u16(), 200, "token for {repo}");
        let body: Value = resp.json().expect("token JSON");
        let token = body["token"].as_str().expect("token").to_string();
        self.tokens
            .borrow_mut()
            .insert(repo.to_string(), token.clone());
        token
    }

    /// A request to `base` (`http://host:port`) for `/v2/<repo>/<rest>`.
    fn v2(&self, base: &str, method: Method, repo: &str, rest: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{base}/v2/{repo}/{rest}"))
            .bearer_auth(self.bearer(repo))
    }

    fn send(&self, rb: RequestBuilder) -> Response {
        let req = rb.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        self.http
            .execute(req)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Monolithic blob upload through `base`; returns the digest.
    fn push_blob(&self, base: &str, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let resp = self.send(
            self.v2(
                base,
                Method::POST,
                repo,
                &format!("blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        );
        assert_eq!(resp.status().as_u16(), 201, "blob upload to {repo}");
        digest
    }

    fn put_manifest(&self, base: &str, repo: &str, reference: &str, manifest: &[u8]) {
        let resp = self.send(
            self.v2(base, Method::PUT, repo, &format!("manifests/{reference}"))
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.to_vec()),
        );
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            201,
            "PUT {repo}:{reference} on {base}: {}",
            resp.text().unwrap_or_default()
        );
    }

    /// The manifest bytes of `repo:reference` from `base`, or the status.
    fn manifest(&self, base: &str, repo: &str, reference: &str) -> Result<Vec<u8>, u16> {
        let resp = self.send(
            self.v2(base, Method::GET, repo, &format!("manifests/{reference}"))
                .header("Accept", OCI_MANIFEST),
        );
        match resp.status().as_u16() {
            200 => Ok(resp.bytes().expect("manifest body").to_vec()),
            s => Err(s),
        }
    }

    fn blob(&self, base: &str, repo: &str, digest: &str) -> Vec<u8> {
        let resp = self.send(self.v2(base, Method::GET, repo, &format!("blobs/{digest}")));
        assert_eq!(resp.status().as_u16(), 200, "GET blob {digest} of {repo}");
        resp.bytes().expect("blob body").to_vec()
    }

    /// Pull `repo:tag` through `base` and check it is exactly `image`: the manifest's
    /// digest and every blob's bytes.
    fn assert_pulls(&self, base: &str, repo: &str, tag: &str, image: &PushedImage) {
        let manifest = self
            .manifest(base, repo, tag)
            .unwrap_or_else(|s| panic!("{repo}:{tag} answers {s} on {base}"));
        assert_eq!(
            digest_of(&manifest),
            image.digest,
            "manifest of {repo}:{tag}"
        );
        let m: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
        let mut wanted: Vec<&str> = vec![m["config"]["digest"].as_str().expect("config")];
        for l in m["layers"].as_array().expect("layers") {
            wanted.push(l["digest"].as_str().expect("layer digest"));
        }
        assert_eq!(
            wanted,
            image.blobs.iter().map(String::as_str).collect::<Vec<_>>()
        );
        for d in wanted {
            let bytes = self.blob(base, repo, d);
            assert_eq!(digest_of(&bytes), d, "bytes of {d} in {repo}");
        }
    }
}

/// An image: its manifest digest and its config and layer digests, in order.
#[derive(Clone, Debug)]
struct PushedImage {
    digest: String,
    blobs: Vec<String>,
}

// ---------------------------------------------------------------------------
// OCI image layouts for skopeo
// ---------------------------------------------------------------------------

/// A gzip member with stored (uncompressed) blocks around a tar holding one file of
/// random bytes: a valid layer that costs no compression time in a debug build.
fn layer_blob(name: &str, len: usize) -> Vec<u8> {
    let tar = tar_layer(name, &random_bytes(len));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Write an OCI layout at `dir` with one image of `layers` layers of `mib` MiB each,
/// tagged `tag`; returns what it holds.
fn write_layout(dir: &Path, tag: &str, layers: usize, mib: usize) -> PushedImage {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> String {
        let d = digest_of(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).expect("blob");
        d
    };
    let mut descs = Vec::new();
    let mut blobs = Vec::new();
    for i in 0..layers {
        let b = layer_blob(&format!("file{i}"), mib * MIB);
        let d = put(&b);
        descs.push(json!({"mediaType": OCI_LAYER_GZIP, "digest": d, "size": b.len()}));
        blobs.push(d);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"tag": tag, "nonce": hex::encode(random_bytes(8))}},
    }))
    .unwrap();
    let c = put(&config);
    blobs.insert(0, c.clone());
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": m, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}}],
        }))
        .unwrap(),
    )
    .unwrap();
    PushedImage { digest: m, blobs }
}

fn skopeo_copy(layout: &Path, tag: &str, dest: &str) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "copy",
        "--retry-times",
        "0",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("root:{ROOT_PASSWORD}"),
    ])
    .arg(format!("oci:{}:{tag}", layout.display()))
    .arg(dest);
    cmd
}

// ---------------------------------------------------------------------------
// (a) one push over three nodes, and a node killed in the middle of one
// ---------------------------------------------------------------------------

/// skopeo pushes through the proxy, so consecutive requests of each push go to
/// different nodes. Node 2 is SIGKILLed while a push of a large image is under way:
/// the proxy skips it from then on, every image tagged before still pulls with its
/// digests, and the push, retried through the proxy, succeeds and pulls back intact.
#[test]
fn a_push_survives_a_node_killed_mid_push() {
    if !support::tool("skopeo") {
        return;
    }
    let Some(berth) = Berth::start_nodes(3, &[], &[]) else {
        return;
    };
    berth.project("multi/app", "private");
    let work = tempfile::tempdir().unwrap();

    // Two images tagged before anything goes wrong.
    let mut before = Vec::new();
    for tag in ["v1", "v2"] {
        let dir = work.path().join(tag);
        let image = write_layout(&dir, tag, 3, 1);
        run(&mut skopeo_copy(
            &dir,
            tag,
            &format!("docker://{}/multi/app:{tag}", berth.addr),
        ));
        before.push((tag, image));
    }
    let served = berth.served();
    assert!(
        served.iter().all(|&n| n > 0),
        "every node takes part in the pushes: {served:?}"
    );

    // A large push, and node 2 killed while it runs.
    let big_dir = work.path().join("big");
    let big = write_layout(&big_dir, "big", 4, 8);
    let dest = format!("docker://{}/multi/app:big", berth.addr);
    let at_start: u64 = berth.served().iter().sum();
    let mut push = skopeo_copy(&big_dir, "big", &dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skopeo");
    // Kill node 2 while it is receiving (or storing) part of the push.
    eventually(WAIT, "node 2 to be busy with an upload of the push", || {
        (berth.served().iter().sum::<u64>() > at_start && berth.uploading()[1] > 0).then_some(())
    });
    let running = push.try_wait().expect("skopeo status").is_none();
    let node2_before = berth.served()[1];
    berth.kill_node(1);
    let out = push.wait_with_output().expect("skopeo");
    eprintln!(
        "push with node 2 killed {} it ran: {} ({})",
        if running { "while" } else { "after" },
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );

    let reg = Reg::new(&berth);
    // Everything tagged before the kill is intact, pulled through the proxy.
    for (tag, image) in &before {
        reg.assert_pulls(&berth.url, "multi/app", tag, image);
    }
    // The push, retried through the proxy, succeeds (whether or not the first try did).
    run(&mut skopeo_copy(&big_dir, "big", &dest));
    reg.assert_pulls(&berth.url, "multi/app", "big", &big);
    for (tag, image) in &before {
        reg.assert_pulls(&berth.url, "multi/app", tag, image);
    }
    assert_eq!(
        berth.served()[1],
        node2_before,
        "the proxy sent nothing to the killed node"
    );
    // The survivors each serve the result on their own.
    for node in [0, 2] {
        reg.assert_pulls(berth.node_url(node), "multi/app", "big", &big);
    }
}

/// The `Location` of an upload, as a path and query (nodes name the proxy in it).
fn location_path(resp: &Response) -> String {
    let loc = resp
        .headers()
        .get("Location")
        .expect("Location")
        .to_str()
        .unwrap()
        .to_string();
    match loc.find("/v2/") {
        Some(i) => loc[i..].to_string(),
        None => panic!("odd Location {loc}"),
    }
}

fn range_end(resp: &Response) -> u64 {
    let range = resp
        .headers()
        .get("Range")
        .expect("Range")
        .to_str()
        .unwrap();
    let end: u64 = range
        .strip_prefix("0-")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("odd Range {range}"));
    end + 1
}

/// One upload started on node 1, continued on node 2, finished on node 3 (explicit
/// node URLs); the tag it ends in is visible on every node at once.
#[test]
fn one_upload_over_three_nodes_and_tags_seen_everywhere() {
    let Some(berth) = Berth::start_nodes(3, &[], &[]) else {
        return;
    };
    berth.project("multi/raw", "private");
    let reg = Reg::new(&berth);
    let repo = "multi/raw";
    let node = |i: usize| berth.node_url(i).to_string();

    // 7 + 6 + 3 MiB: S3 parts of at least 5 MiB get written by different nodes.
    let blob = random_bytes(16 * MIB);
    let digest = digest_of(&blob);
    let (a, b) = (7 * MIB, 13 * MIB);

    let resp = reg.send(reg.v2(&node(0), Method::POST, repo, "blobs/uploads/"));
    assert_eq!(resp.status().as_u16(), 202);
    let mut at = location_path(&resp);

    let resp = reg.send(
        reg.http
            .patch(format!("{}{at}", node(1)))
            .bearer_auth(reg.bearer(repo))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("0-{}", a - 1))
            .body(blob[..a].to_vec()),
    );
    assert_eq!(resp.status().as_u16(), 202, "first PATCH on node 2");
    assert_eq!(range_end(&resp), a as u64);
    at = location_path(&resp);

    let resp = reg.send(
        reg.http
            .patch(format!("{}{at}", node(2)))
            .bearer_auth(reg.bearer(repo))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{a}-{}", b - 1))
            .body(blob[a..b].to_vec()),
    );
    assert_eq!(resp.status().as_u16(), 202, "second PATCH on node 3");
    at = location_path(&resp);

    // Node 1 sees how far the others got.
    let resp = reg.send(
        reg.http
            .get(format!("{}{at}", node(0)))
            .bearer_auth(reg.bearer(repo)),
    );
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(range_end(&resp), b as u64);

    let sep = if at.contains('?') { '&' } else { '?' };
    let resp = reg.send(
        reg.http
            .put(format!("{}{at}{sep}digest={digest}", node(2)))
            .bearer_auth(reg.bearer(repo))
            .header("Content-Type", "application/octet-stream")
            .body(blob[b..].to_vec()),
    );
    assert_eq!(resp.status().as_u16(), 201, "closing PUT on node 3");

    for i in 0..3 {
        let got = reg.blob(&node(i), repo, &digest);
        assert!(got == blob, "node {} serves the blob's bytes", i + 1);
    }

    // A tag pushed on node 1 answers on nodes 2 and 3 straight away (no polling).
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    let c = reg.push_blob(&node(1), repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": blob.len()}],
    }))
    .unwrap();
    let image = PushedImage {
        digest: digest_of(&manifest),
        blobs: vec![c, digest.clone()],
    };
    for (pushed_on, tag) in [(0, "one"), (1, "two"), (2, "three")] {
        reg.put_manifest(&node(pushed_on), repo, tag, &manifest);
        for i in 0..3 {
            let got = reg
                .manifest(&node(i), repo, tag)
                .unwrap_or_else(|s| panic!("{tag} pushed on node {pushed_on} answers {s}"));
            assert_eq!(digest_of(&got), image.digest);
        }
    }
    let resp = reg.send(reg.v2(&node(2), Method::GET, repo, "tags/list"));
    let tags: Value = resp.json().expect("tags JSON");
    assert_eq!(tags["tags"], json!(["one", "three", "two"]));

    // And a tag moved on node 3 is moved for node 1, which had it cached: within the
    // documented bound (docs/scaling.md: the NOTIFY's delivery, at most 5 s whatever
    // becomes of the listener), polled with that deadline.
    let other_cfg = serde_json::to_vec(&json!({"architecture": "arm64", "os": "linux"})).unwrap();
    let c2 = reg.push_blob(&node(2), repo, &other_cfg);
    let other = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c2, "size": other_cfg.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": blob.len()}],
    }))
    .unwrap();
    reg.put_manifest(&node(2), repo, "one", &other);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = reg.manifest(&node(0), repo, "one").expect("moved tag");
        if digest_of(&got) == digest_of(&other) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 1 still serves the old manifest of a tag moved on node 3"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    reg.assert_pulls(&berth.url, repo, "two", &image);
}

/// A PATCH cut off by SIGKILL of the node receiving it: while it streams, another
/// node refuses to write to the same upload; once the node is dead, the upload, asked
/// on another node, reports how much it holds (the dead node's claim went with it),
/// the client resumes from there on that node and finishes on a third, and the blob
/// is exact.
#[test]
fn an_upload_resumes_on_another_node_after_a_kill_mid_patch() {
    let Some(berth) = Berth::start_nodes(3, &[], &[]) else {
        return;
    };
    berth.project("multi/cut", "private");
    let reg = Reg::new(&berth);
    let repo = "multi/cut";
    let node = |b: &Berth, i: usize| b.node_url(i).to_string();

    let blob = random_bytes(20 * MIB);
    let digest = digest_of(&blob);
    let first = 6 * MIB;

    let resp = reg.send(reg.v2(&node(&berth, 0), Method::POST, repo, "blobs/uploads/"));
    assert_eq!(resp.status().as_u16(), 202);
    let at = location_path(&resp);
    let resp = reg.send(
        reg.http
            .patch(format!("{}{at}", node(&berth, 0)))
            .bearer_auth(reg.bearer(repo))
            .header("Content-Type", "application/octet-stream")
            .body(blob[..first].to_vec()),
    );
    assert_eq!(resp.status().as_u16(), 202);
    let at = location_path(&resp);

    // The next 10 MiB go to node 3, which dies after half of them.
    let rest = 10 * MIB;
    let token = reg.bearer(repo);
    let mut sock = TcpStream::connect(berth.node_addr(2)).expect("connect node 3");
    write!(
        sock,
        "PATCH {at} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Range: {first}-{}\r\n\
         Content-Length: {rest}\r\n\r\n",
        berth.node_addr(2),
        first + rest - 1
    )
    .unwrap();
    sock.write_all(&blob[first..first + rest / 2]).unwrap();
    sock.flush().unwrap();
    // Let node 3 take in what was sent before it dies.
    std::thread::sleep(Duration::from_millis(300));
    // While node 3 writes to the upload, node 2 refuses to write to it as well. (An
    // empty PATCH, which changes nothing when it does get through, asks until node
    // 3 has started.)
    let empty_patch_on_node_2 = || {
        reg.send(
            reg.http
                .patch(format!("{}{at}", node(&berth, 1)))
                .bearer_auth(reg.bearer(repo))
                .header("Content-Type", "application/octet-stream")
                .body(Vec::new()),
        )
    };
    let refusal = eventually(WAIT, "node 3 to claim the upload", || {
        let resp = empty_patch_on_node_2();
        match resp.status().as_u16() {
            202 => None,
            _ => Some((resp.status().as_u16(), resp.text().unwrap_or_default())),
        }
    });
    assert_eq!(refusal.0, 416, "{}", refusal.1);
    let refusal: Value = serde_json::from_str(&refusal.1).expect("an error body");
    assert_eq!(refusal["errors"][0]["code"], "RANGE_INVALID", "{refusal}");
    assert!(
        refusal["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("another request is writing"),
        "{refusal}"
    );
    berth.kill_node(2);
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 202"),
        "the cut PATCH was not accepted"
    );

    // The dead node's claim goes with its PostgreSQL session, which the server
    // ends once it sees the connection closed: a moment after the kill, longer on a
    // busy machine. Until then node 2 still refuses, as a client would be told.
    eventually(
        WAIT,
        "node 3's claim to go with its session",
        || match empty_patch_on_node_2().status().as_u16() {
            202 => Some(()),
            416 => None,
            other => panic!("empty PATCH on node 2 after the kill: {other}"),
        },
    );

    // Node 2 reports what the upload holds; resume there and finish on node 1.
    let resp = reg.send(
        reg.http
            .get(format!("{}{at}", node(&berth, 1)))
            .bearer_auth(reg.bearer(repo)),
    );
    assert_eq!(resp.status().as_u16(), 204);
    let held = range_end(&resp) as usize;
    assert!(
        (first..=first + rest / 2).contains(&held),
        "the upload holds {held} bytes after the cut"
    );
    let at = location_path(&resp);
    let resp = reg.send(
        reg.http
            .patch(format!("{}{at}", node(&berth, 1)))
            .bearer_auth(reg.bearer(repo))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{held}-{}", blob.len() - 1))
            .body(blob[held..].to_vec()),
    );
    assert_eq!(resp.status().as_u16(), 202, "resumed PATCH on node 2");
    let at = location_path(&resp);
    let sep = if at.contains('?') { '&' } else { '?' };
    let resp = reg.send(
        reg.http
            .put(format!("{}{at}{sep}digest={digest}", node(&berth, 0)))
            .bearer_auth(reg.bearer(repo)),
    );
    assert_eq!(resp.status().as_u16(), 201, "closing PUT on node 1");
    for i in [0, 1] {
        let got = reg.blob(&node(&berth, i), repo, &digest);
        assert!(got == blob, "node {} serves the exact blob", i + 1);
    }
    // Through the proxy too, which now skips node 3.
    let got = reg.blob(&berth.url, repo, &digest);
    assert!(got == blob);
}

// ---------------------------------------------------------------------------
// (b) two nodes' cleanup and GC workers on the same stores
// ---------------------------------------------------------------------------

fn rfc3339_days_ago(days: u64, minutes: u64) -> String {
    let t = SystemTime::now() - Duration::from_secs(days * 86400 + minutes * 60);
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Log lines naming each digest deleted from storage, over every node's log.
fn deleted_in_logs(berth: &Berth) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in 0..berth.node_count() {
        for line in berth.node_log(i).lines() {
            if !line.contains("blob bytes deleted") {
                continue;
            }
            let d = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("digest="))
                .unwrap_or_else(|| panic!("no digest in {line:?}"));
            *out.entry(d.trim_matches('"').to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Two nodes with short GC delays and small cleanup turns: policies run over many
/// repositories (started through both nodes), tags are deleted through both, and
/// both nodes' GC workers race to collect what lost its references. Every tag is
/// deleted and logged once, every unreferenced blob's bytes are deleted once (by one
/// node), nothing referenced goes missing, and the kept images pull intact.
#[test]
fn two_nodes_run_cleanup_and_gc_on_the_same_stores() {
    let envs = [
        // Long enough that no blob is reviewed between its upload and the PUT of the
        // manifest that references it, however slow the machine (a delay of 1 s let
        // a busy CI machine collect a base layer in that gap); GC then waits this
        // long after the cleanup runs.
        ("BERTH_GC_REVIEW_DELAY", "20s"),
        ("BERTH_GC_DELETE_UNTAGGED", "true"),
        (
            "BERTH_CONTAINER_REGISTRY_CLEANUP_TAGS_SERVICE_MAX_LIST_SIZE",
            "2",
        ),
        (
            "BERTH_CONTAINER_REGISTRY_EXPIRATION_POLICIES_WORKER_CAPACITY",
            "3",
        ),
    ];
    let Some(berth) = Berth::start_nodes(2, &["--log-level", "info,berth_server::gc=debug"], &envs)
    else {
        return;
    };
    let reg = Reg::new(&berth);
    let pat = berth.admin(&[
        "token", "create", "--user", "root", "--name", "t", "--scopes", "api",
    ]);
    let nodes = [berth.node_url(0).to_string(), berth.node_url(1).to_string()];
    let api = |i: usize, method: Method, path: &str| {
        reg.http
            .request(method, format!("{}/api/v4{path}", nodes[i % 2]))
            .header("PRIVATE-TOKEN", &pat)
    };

    // Every image shares one base layer; each has its own config and top layer.
    let base = random_bytes(4096);
    const PROJECTS: usize = 3;
    const REPOS: usize = 3;
    const TAGS: usize = 6;
    let mut images: BTreeMap<(String, String), PushedImage> = BTreeMap::new();
    let mut pids = Vec::new();
    let mut k = 0;
    for p in 0..PROJECTS {
        let project = format!("race/p{p}");
        berth.project(&project, "private");
        let resp = reg.send(api(p, Method::GET, &format!("/projects/race%2Fp{p}")));
        let pid = resp.json::<Value>().unwrap()["id"].as_i64().expect("id");
        pids.push(pid);
        for r in 0..REPOS {
            let repo = format!("{project}/r{r}");
            for t in 0..TAGS {
                // Spread every step over both nodes.
                let via = &nodes[k % 2];
                k += 1;
                let b = reg.push_blob(via, &repo, &base);
                let config = serde_json::to_vec(&json!({
                    "architecture": "amd64", "os": "linux",
                    // t0 is the newest.
                    "created": rfc3339_days_ago(30, t as u64),
                    "config": {"Labels": {"repo": repo, "tag": t}},
                }))
                .unwrap();
                let c = reg.push_blob(&nodes[k % 2], &repo, &config);
                let top = random_bytes(1024 + t);
                let l = reg.push_blob(via, &repo, &top);
                let manifest = serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
                    "layers": [
                        {"mediaType": OCI_LAYER_GZIP, "digest": b, "size": base.len()},
                        {"mediaType": OCI_LAYER_GZIP, "digest": l, "size": top.len()},
                    ],
                }))
                .unwrap();
                let tag = format!("t{t}");
                reg.put_manifest(&nodes[(k + 1) % 2], &repo, &tag, &manifest);
                // Pushed when its image says it was built (policies go by push time).
                let pushed = SystemTime::now() - Duration::from_secs(30 * 86400 + t as u64 * 60);
                let pushed_ms = pushed.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
                assert_eq!(berth.set_push_time(&repo, &tag, pushed_ms), 1);
                images.insert(
                    (repo.clone(), tag),
                    PushedImage {
                        digest: digest_of(&manifest),
                        blobs: vec![c, b, l],
                    },
                );
            }
        }
    }
    let storage = Storage::of(&berth.data_dir());
    let stored_before = storage.blobs();
    let all_blobs: BTreeSet<String> = images.values().flat_map(|i| i.blobs.clone()).collect();
    assert_eq!(
        stored_before, all_blobs,
        "S3 holds exactly the pushed blobs"
    );

    // Tag t1 of every r0 is deleted by hand, through alternating nodes (before the
    // runs, so that what the policies keep does not depend on timing).
    for p in 0..PROJECTS {
        let repo = format!("race/p{p}/r0");
        let resp = reg.send(reg.v2(
            &nodes[p % 2],
            Method::DELETE,
            &repo,
            &format!(
                "manifests/{}",
                images[&(repo.clone(), "t1".to_string())].digest
            ),
        ));
        assert_eq!(resp.status().as_u16(), 202, "deleting {repo}:t1");
    }

    // Policies keep the newest tag of every repository, t0.
    for (i, pid) in pids.iter().enumerate() {
        let resp = reg.send(
            api(i, Method::PUT, &format!("/projects/{pid}")).json(&json!({
                "container_expiration_policy_attributes": {
                    "enabled": true, "cadence": "1d", "keep_n": 1, "older_than": "7d",
                    "name_regex": ".*"}
            })),
        );
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            200,
            "saving a policy: {}",
            resp.text().unwrap_or_default()
        );
    }
    for (i, pid) in pids.iter().enumerate() {
        // Both nodes are woken: each run is started through the other node than
        // its policy was saved on, and the two nodes' schedulers both look.
        let resp = reg.send(api(
            i + 1,
            Method::POST,
            &format!("/projects/{pid}/registry/cleanup_run"),
        ));
        assert_eq!(resp.status().as_u16(), 202, "cleanup_run");
    }
    // What must remain: t0 of every repository.
    let in_r0 = |repo: &str| repo.ends_with("/r0");
    let kept: BTreeMap<(String, String), PushedImage> = images
        .iter()
        .filter(|((_, tag), _)| tag == "t0")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let kept_blobs: BTreeSet<String> = kept.values().flat_map(|i| i.blobs.clone()).collect();
    let gone: BTreeSet<String> = all_blobs.difference(&kept_blobs).cloned().collect();
    assert!(gone.len() >= PROJECTS * REPOS * 3 * 2);

    // Every repository's run finishes with the tags the policy keeps.
    for (p, pid) in pids.iter().enumerate() {
        let resp = reg.send(api(
            p,
            Method::GET,
            &format!("/projects/{pid}/registry/repositories?per_page=100"),
        ));
        let repos: Value = resp.json().unwrap();
        let repos = repos.as_array().expect("repositories").clone();
        assert_eq!(repos.len(), REPOS);
        for r in &repos {
            let rid = r["id"].as_i64().unwrap();
            let path = r["path"].as_str().unwrap().to_string();
            let want: BTreeSet<String> = kept
                .keys()
                .filter(|(repo, _)| *repo == path)
                .map(|(_, t)| t.clone())
                .collect();
            eventually(WAIT, &format!("cleanup of {path}"), || {
                let resp = reg.send(api(
                    rid as usize,
                    Method::GET,
                    &format!("/registry/repositories/{rid}?tags=true"),
                ));
                let v: Value = resp.json().unwrap();
                let tags: BTreeSet<String> = v["tags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|t| t["name"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                (v["expiration_policy_cleanup_status"] == "cleanup_unscheduled"
                    && v["cleanup_policy_started_at"].is_string()
                    && tags == want)
                    .then_some(())
            });
        }
        // The cleanup log names each tag the runs deleted once: t1..t5, or t2..t5
        // in r0 (whose t1 was deleted by hand).
        let resp = reg.send(api(
            p + 1,
            Method::GET,
            &format!("/projects/{pid}/registry/cleanup_log"),
        ));
        let log: Value = resp.json().unwrap();
        let mut logged: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in log.as_array().expect("cleanup log") {
            let rid = e["repository_id"].as_i64().unwrap();
            let path = repos
                .iter()
                .find(|r| r["id"].as_i64() == Some(rid))
                .map(|r| r["path"].as_str().unwrap().to_string())
                .expect("a repository of the project");
            *logged
                .entry((path, e["tag"].as_str().unwrap().to_string()))
                .or_insert(0) += 1;
        }
        let twice: Vec<_> = logged.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "tags logged more than once: {twice:?}");
        let expected: BTreeSet<(String, String)> = images
            .keys()
            .filter(|(repo, tag)| {
                repo.starts_with(&format!("race/p{p}/"))
                    && !kept.contains_key(&(repo.clone(), tag.clone()))
                    && !(in_r0(repo) && tag == "t1")
            })
            .cloned()
            .collect();
        assert_eq!(logged.keys().cloned().collect::<BTreeSet<_>>(), expected);
    }

    // GC on both nodes: storage ends with exactly what the kept images reference.
    eventually(
        WAIT,
        "garbage collection to remove every unreferenced blob",
        || (storage.blobs() == kept_blobs).then_some(()),
    );
    // Each removed blob's bytes were deleted once, by one of the nodes.
    let deleted = eventually(WAIT, "every deletion to be logged", || {
        let d = deleted_in_logs(&berth);
        (d.keys().cloned().collect::<BTreeSet<_>>() == gone).then_some(d)
    });
    let twice: Vec<_> = deleted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "bytes deleted more than once: {twice:?}");
    let by_node: Vec<usize> = (0..2)
        .map(|i| berth.node_log(i).matches("blob bytes deleted").count())
        .collect();
    eprintln!("blob deletions by node: {by_node:?}");
    // Each policy run started once, by one node.
    let starts = berth.log().matches("cleanup policy run started").count();
    assert_eq!(starts, PROJECTS, "policy runs started");
    for i in 0..2 {
        let log = berth.node_log(i);
        for bad in ["ERROR", "missing", "deadlock"] {
            assert!(!log.contains(bad), "node {} logged {bad:?}:\n{log}", i + 1);
        }
    }
    for ((repo, tag), image) in &kept {
        reg.assert_pulls(&berth.url, repo, tag, image);
    }
}
