//! End-to-end tests that drive real registry clients (skopeo, podman, the ORAS Python
//! SDK) against the real `berth` binary. The images are generated here as OCI image
//! layouts, so no test touches the network; every test asserts digests and bytes,
//! not just exit codes.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::RngCore;
use serde_json::{json, Value};
use support::{podman, run, sha256_file, sha256_hex, Berth, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------
// Generated OCI image layouts
// ---------------------------------------------------------------------------

/// A content descriptor, as it appears in manifests, indexes and `index.json`.
#[derive(Clone, Debug)]
struct Desc {
    media_type: String,
    digest: String,
    size: usize,
}

impl Desc {
    fn json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// One gzip-compressed image layer.
struct Layer {
    /// The uncompressed tar archive.
    tar: Vec<u8>,
    /// `tar`, gzip-compressed: the blob that is pushed.
    gz: Vec<u8>,
    /// `sha256:` of the uncompressed tar, as `rootfs.diff_ids` wants it.
    diff_id: String,
}

/// Build a layer holding regular files `(path, contents)`, with fixed owners and
/// times so the archive depends only on its entries.
fn layer(entries: &[(&str, &[u8])]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, *data)
            .expect("append tar entry");
    }
    let tar = builder.into_inner().expect("finish tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip layer");
    let gz = gz.finish().expect("finish gzip");
    Layer {
        diff_id: format!("sha256:{}", sha256_hex(&tar)),
        tar,
        gz,
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// A layer with one file of `kib` KiB of random bytes (so it does not compress).
fn random_layer(path: &str, kib: usize) -> Layer {
    layer(&[(path, &random_bytes(kib * 1024))])
}

/// A single-platform image to put into a layout.
struct Image {
    arch: &'static str,
    layers: Vec<Layer>,
}

/// What `write_layout` wrote.
struct Written {
    /// The entry `index.json` tags: the image manifest, or the image index.
    tagged: Desc,
    /// The image manifests, in the order of the `images` given.
    manifests: Vec<Desc>,
    /// Each image's `(config, layers)`, in the same order.
    contents: Vec<(Desc, Vec<Desc>)>,
}

/// Write an OCI image layout at `dir` holding `images`, tagged `tag`. With
/// `as_index`, the tagged entry is an image index over the images (with platforms);
/// otherwise there must be exactly one image and its manifest is the tagged entry.
fn write_layout(dir: &Path, tag: &str, images: &[Image], as_index: bool) -> Written {
    assert!(
        as_index || images.len() == 1,
        "a plain image layout holds one image"
    );
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let put = |media_type: &str, bytes: &[u8]| -> Desc {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).expect("write blob");
        Desc {
            media_type: media_type.to_string(),
            digest: format!("sha256:{hex}"),
            size: bytes.len(),
        }
    };

    let mut manifests = Vec::new();
    let mut contents = Vec::new();
    for image in images {
        let layers: Vec<Desc> = image
            .layers
            .iter()
            .map(|l| put(OCI_LAYER_GZIP, &l.gz))
            .collect();
        let config = json!({
            "architecture": image.arch,
            "os": "linux",
            "config": { "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] },
            "rootfs": {
                "type": "layers",
                "diff_ids": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": image.layers.iter().map(|_| json!({ "created_by": "berth e2e test" })).collect::<Vec<_>>(),
        });
        let config = put(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
        });
        manifests.push(put(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()));
        contents.push((config, layers));
    }

    let tagged = if as_index {
        let entries: Vec<Value> = manifests
            .iter()
            .zip(images)
            .map(|(m, image)| {
                let mut e = m.json();
                e["platform"] = json!({ "architecture": image.arch, "os": "linux" });
                e
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        put(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    } else {
        manifests[0].clone()
    };
    let mut entry = tagged.json();
    entry["annotations"] = json!({ REF_NAME: tag });
    let index_json = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index_json).unwrap(),
    )
    .expect("write index.json");
    Written {
        tagged,
        manifests,
        contents,
    }
}

/// The blobs of a layout, by digest hex, after checking each hashes to its name.
fn layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut blobs = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).expect("read blobs dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("read blob");
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "blob {} does not hash to its name",
            path.display()
        );
        blobs.insert(name, bytes);
    }
    blobs
}

/// The digest of the manifest that `index.json` of a layout names `tag`.
fn layout_tagged_digest(dir: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let entries = index["manifests"].as_array().expect("index.json manifests");
    let entry = entries
        .iter()
        .find(|e| e["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("no entry tagged {tag} in {index}"));
    entry["digest"].as_str().expect("digest").to_string()
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

// ---------------------------------------------------------------------------
// The server, its project and credentials
// ---------------------------------------------------------------------------

/// The project every test pushes to (its images are `group/project/<image>`).
const PROJECT: &str = "group/project";

/// Start a server with the project the tests push to.
fn start_berth() -> Berth {
    let berth = Berth::start();
    berth.project(PROJECT, "private");
    berth
}

/// `root:<password>`: the instance administrator's credentials, as skopeo takes them.
fn root_creds() -> String {
    format!("root:{ROOT_PASSWORD}")
}

/// A personal access token of root with the `api` scope (push and pull everywhere).
fn root_personal_token(berth: &Berth, name: &str) -> String {
    let token = berth.admin(&[
        "token", "create", "--user", "root", "--name", name, "--scopes", "api",
    ]);
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "token create printed {token:?}"
    );
    token
}

/// A registry token for `repository:<name>:<actions>`, for the raw HTTP checks.
fn bearer(berth: &Berth, name: &str, actions: &str) -> String {
    let resp = berth.token(
        Some(("root", ROOT_PASSWORD)),
        &[&format!("repository:{name}:{actions}")],
    );
    assert_eq!(resp.status(), 200, "token for {name}");
    let body: Value = resp.json().expect("token response is JSON");
    format!("Bearer {}", body["token"].as_str().expect("token"))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// skopeo with the signature policy off, so the tests do not depend on the
/// machine's `/etc/containers/policy.json`.
fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("http client")
}

const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `GET /v2/<name>/manifests/<reference>`: (Content-Type, Docker-Content-Digest, body).
fn get_manifest(
    berth: &Berth,
    name: &str,
    reference: &str,
    accept: &str,
) -> (String, String, Vec<u8>) {
    let resp = http()
        .get(format!("{}/v2/{name}/manifests/{reference}", berth.url))
        .header("Accept", accept)
        .header("Authorization", bearer(berth, name, "pull"))
        .send()
        .expect("GET manifest");
    assert_eq!(resp.status(), 200, "GET manifest {name}:{reference}");
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .unwrap_or_else(|| panic!("GET manifest has no {h} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (content_type, digest) = (header("Content-Type"), header("Docker-Content-Digest"));
    (
        content_type,
        digest,
        resp.bytes().expect("manifest body").to_vec(),
    )
}

fn tags_list(berth: &Berth, name: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}/v2/{name}/tags/list", berth.url))
        .header("Authorization", bearer(berth, name, "pull"))
        .send()
        .expect("GET tags list");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A JSON array of strings (absent or null: empty), e.g. a tags list's `tags`.
fn strings(array: &Value) -> Vec<String> {
    array
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Push a small one-layer image with skopeo; returns what its layout holds.
fn skopeo_push_small(berth: &Berth, tmp: &Path, name: &str, tag: &str) -> Written {
    let dir = tmp.join(format!("src-{}", name.replace('/', "-")));
    let written = write_layout(
        &dir,
        tag,
        &[Image {
            arch: "amd64",
            layers: vec![random_layer("data/payload.bin", 64)],
        }],
        false,
    );
    run(skopeo(tmp).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:{tag}", dir.display()),
        &format!("docker://{}/{name}:{tag}", berth.addr),
    ]));
    written
}

// ---------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------

/// A push slower than its tokens live: tokens last 2 s, the link carries 1 MiB/s and
/// the layer is 6 MiB, so the upload outlives the token that started it, and the
/// push still succeeds with the digest written.
#[test]
fn skopeo_pushes_through_a_slow_link_outliving_its_tokens() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = Berth::start_with(&[], &[("BERTH_TOKEN_EXPIRY", "2s")]);
    berth.project(PROJECT, "private");
    let slow = support::throttle::Throttle::start(&berth.addr, 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("slow-layout");
    let written = write_layout(
        &dir,
        "v1",
        &[Image {
            arch: "amd64",
            layers: vec![random_layer("data/big.bin", 6 * 1024)],
        }],
        false,
    );
    let name = "group/project/slow";
    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:v1", dir.display()),
        &format!("docker://{}/{name}:v1", slow.addr),
    ]));
    let (_, digest, _) = get_manifest(&berth, name, "v1", ACCEPT_ALL_MANIFESTS);
    assert_eq!(digest, written.tagged.digest);
}

/// With `storage.s3.redirect_blobs`, blob GETs are answered with a redirect to a
/// pre-signed URL of the object (HEAD is still answered by Berth), and skopeo pulls
/// through it, from the S3 server.
#[test]
fn skopeo_pulls_blobs_through_presigned_redirects() {
    if !support::tool("skopeo") {
        return;
    }
    let Some(mut envs) = support::s3_env() else {
        return;
    };
    envs.push(("BERTH_S3_REDIRECT_BLOBS".into(), "true".into()));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let berth = Berth::start_with(&[], &envs);
    berth.project(PROJECT, "private");
    let tmp = tempfile::tempdir().unwrap();
    let name = "group/project/redirected";
    let written = skopeo_push_small(&berth, tmp.path(), name, "v1");
    let (_, layers) = &written.contents[0];
    let layer = &layers[0];
    let pushed = layout_blobs(&tmp.path().join("src-group-project-redirected"));
    let layer_bytes = &pushed[hex_of(&layer.digest)];

    let no_follow = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let auth = bearer(&berth, name, "pull");
    let url = format!("{}/v2/{name}/blobs/{}", berth.url, layer.digest);
    let r = no_follow
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let s3 = envs
        .iter()
        .find(|(k, _)| *k == "BERTH_S3_ENDPOINT")
        .unwrap()
        .1;
    assert!(
        location.starts_with(s3) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let head = no_follow
        .head(&url)
        .header("Authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    // The pre-signed URL needs no other credentials, and serves ranges.
    let ranged = no_follow
        .get(&location)
        .header("Range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(&ranged.bytes().unwrap()[..], &layer_bytes[..10]);

    let dst = tmp.path().join("dst");
    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &root_creds(),
        &format!("docker://{}/{name}:v1", berth.addr),
        &format!("oci:{}:v1", dst.display()),
    ]));
    assert_eq!(layout_tagged_digest(&dst, "v1"), written.tagged.digest);
    let pulled = layout_blobs(&dst);
    assert!(
        pulled[hex_of(&layer.digest)] == *layer_bytes,
        "layer differs"
    );
    // The bytes came from S3: Berth's own log shows the redirects.
    assert!(berth.log().contains("status=307"), "no redirect in the log");
}

#[test]
fn skopeo_round_trip_multi_layer() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = start_berth();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let written = write_layout(
        &src,
        "v1",
        &[Image {
            arch: "amd64",
            layers: vec![
                random_layer("opt/app/one.bin", 300),
                random_layer("opt/app/two.bin", 200),
                layer(&[
                    ("etc/app.conf", b"answer = 42\n"),
                    ("opt/app/three.bin", &random_bytes(400 * 1024)),
                ]),
            ],
        }],
        false,
    );
    let manifest = &written.tagged;
    let (config, layers) = &written.contents[0];
    let name = "group/project/app";
    let remote = format!("docker://{}/{name}", berth.addr);

    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:v1", src.display()),
        &format!("{remote}:v1"),
    ]));

    // The registry serves back exactly the manifest bytes we generated.
    let raw = run(skopeo(tmp.path()).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &format!("{remote}:v1"),
    ]));
    let original = std::fs::read(src.join("blobs/sha256").join(hex_of(&manifest.digest))).unwrap();
    assert_eq!(
        raw.as_bytes(),
        &original[..],
        "skopeo inspect --raw returns the pushed manifest"
    );
    let (content_type, digest, body) = get_manifest(&berth, name, "v1", ACCEPT_ALL_MANIFESTS);
    assert_eq!(content_type, OCI_MANIFEST);
    assert_eq!(digest, manifest.digest);
    assert_eq!(body, original);

    let inspect: Value = serde_json::from_str(&run(skopeo(tmp.path()).args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &format!("{remote}:v1"),
    ])))
    .expect("skopeo inspect prints JSON");
    assert_eq!(inspect["Digest"], manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(strings(&inspect["RepoTags"]), ["v1"]);
    let inspected_layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let layer_digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(inspected_layers, layer_digests);

    // Registry to registry: skopeo finds every blob already there and adds a tag.
    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &root_creds(),
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("{remote}:v1"),
        &format!("{remote}:v2"),
    ]));
    let tags: Value = serde_json::from_str(&run(skopeo(tmp.path()).args([
        "list-tags",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &remote,
    ])))
    .expect("skopeo list-tags prints JSON");
    let mut listed = strings(&tags["Tags"]);
    listed.sort();
    assert_eq!(listed, ["v1", "v2"]);
    assert_eq!(
        get_manifest(&berth, name, "v2", ACCEPT_ALL_MANIFESTS).1,
        manifest.digest
    );

    // Pull into a fresh layout: same manifest digest, byte-identical blobs.
    let dst = tmp.path().join("dst");
    run(skopeo(tmp.path()).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &root_creds(),
        &format!("{remote}:v1"),
        &format!("oci:{}:v1", dst.display()),
    ]));
    assert_eq!(layout_tagged_digest(&dst, "v1"), manifest.digest);
    let pushed = layout_blobs(&src);
    let pulled = layout_blobs(&dst);
    assert_eq!(
        pulled.keys().collect::<Vec<_>>(),
        pushed.keys().collect::<Vec<_>>(),
        "the pulled layout holds exactly the pushed blobs"
    );
    assert_eq!(pulled.len(), 5, "manifest, config and three layers");
    for (hex, bytes) in &pulled {
        assert!(
            pushed[hex] == *bytes,
            "blob {hex} differs after the round trip"
        );
    }
    assert!(pulled.contains_key(hex_of(&config.digest)));
}

#[test]
fn skopeo_multi_arch_index() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = start_berth();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let written = write_layout(
        &src,
        "multi",
        &[
            Image {
                arch: "amd64",
                layers: vec![
                    random_layer("bin/amd64.bin", 200),
                    random_layer("share/a.bin", 50),
                ],
            },
            Image {
                arch: "arm64",
                layers: vec![random_layer("bin/arm64.bin", 180)],
            },
        ],
        true,
    );
    let name = "group/project/multi";
    let remote = format!("docker://{}/{name}:v1", berth.addr);

    run(skopeo(tmp.path()).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:multi", src.display()),
        &remote,
    ]));

    let (content_type, digest, body) = get_manifest(&berth, name, "v1", OCI_INDEX);
    assert_eq!(content_type, OCI_INDEX);
    assert_eq!(digest, written.tagged.digest);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&body)),
        written.tagged.digest
    );
    // The children are there by digest too.
    for child in &written.manifests {
        let (ct, d, b) = get_manifest(&berth, name, &child.digest, ACCEPT_ALL_MANIFESTS);
        assert_eq!(
            (ct.as_str(), d.as_str()),
            (OCI_MANIFEST, child.digest.as_str())
        );
        assert_eq!(b.len(), child.size);
    }

    let pushed = layout_blobs(&src);
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let out = tmp.path().join(format!("out-{arch}"));
        run(skopeo(tmp.path()).args([
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--src-creds",
            &root_creds(),
            &remote,
            &format!("oci:{}:x", out.display()),
        ]));
        assert_eq!(
            layout_tagged_digest(&out, "x"),
            written.manifests[i].digest,
            "skopeo picked the {arch} child"
        );
        let pulled = layout_blobs(&out);
        let (config, layers) = &written.contents[i];
        let mut expected: Vec<&str> = layers.iter().map(|l| hex_of(&l.digest)).collect();
        expected.push(hex_of(&config.digest));
        expected.push(hex_of(&written.manifests[i].digest));
        expected.sort();
        assert_eq!(
            pulled.keys().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
        for (hex, bytes) in &pulled {
            assert!(
                pushed[hex] == *bytes,
                "{arch} blob {hex} differs after the round trip"
            );
        }
    }
}

#[test]
fn docker_schema2_via_skopeo() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = start_berth();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let written = write_layout(
        &src,
        "v1",
        &[Image {
            arch: "amd64",
            layers: vec![random_layer("a.bin", 120), random_layer("b.bin", 80)],
        }],
        false,
    );
    let name = "group/project/docker";
    let remote = format!("docker://{}/{name}:v1", berth.addr);
    run(skopeo(tmp.path()).args([
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:v1", src.display()),
        &remote,
    ]));

    let (content_type, digest, body) = get_manifest(&berth, name, "v1", ACCEPT_ALL_MANIFESTS);
    assert_eq!(content_type, DOCKER_MANIFEST);
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&body)));
    let manifest: Value = serde_json::from_slice(&body).expect("manifest is JSON");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["schemaVersion"], 2);
    // Conversion changes media types, not bytes: the gzip layers are pushed as they were.
    let (_, layers) = &written.contents[0];
    let pushed_layers: Vec<(&str, u64)> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"],
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            );
            (l["digest"].as_str().unwrap(), l["size"].as_u64().unwrap())
        })
        .collect();
    let expected: Vec<(&str, u64)> = layers
        .iter()
        .map(|l| (l.digest.as_str(), l.size as u64))
        .collect();
    assert_eq!(pushed_layers, expected);

    let raw = run(skopeo(tmp.path()).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &remote,
    ]));
    assert_eq!(raw.as_bytes(), &body[..]);
    // And it pulls back as the same schema 2 manifest.
    let dst = tmp.path().join("dst");
    run(skopeo(tmp.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &root_creds(),
        &remote,
        &format!("dir:{}", dst.display()),
    ]));
    assert_eq!(std::fs::read(dst.join("manifest.json")).unwrap(), body);
    for l in layers {
        assert_eq!(sha256_file(&dst.join(hex_of(&l.digest))), hex_of(&l.digest));
    }
}

#[test]
fn skopeo_delete() {
    if !support::tool("skopeo") {
        return;
    }
    let berth = start_berth();
    let tmp = tempfile::tempdir().unwrap();
    let name = "group/project/app";
    let written = skopeo_push_small(&berth, tmp.path(), name, "v1");
    let remote = format!("docker://{}/{name}:v1", berth.addr);
    let (_, digest, _) = get_manifest(&berth, name, "v1", ACCEPT_ALL_MANIFESTS);
    assert_eq!(digest, written.tagged.digest);
    let (status, list) = tags_list(&berth, name);
    assert_eq!(
        (status, strings(&list["tags"])),
        (200, vec!["v1".to_string()])
    );

    run(skopeo(tmp.path()).args([
        "delete",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &remote,
    ]));

    let out = skopeo(tmp.path())
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &root_creds(),
            &remote,
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "skopeo inspect still finds {remote} after delete"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("manifest unknown"),
        "skopeo inspect should fail with manifest unknown, got:\n{stderr}"
    );
    let resp = http()
        .get(format!(
            "{}/v2/{name}/manifests/{}",
            berth.url, written.tagged.digest
        ))
        .header("Accept", ACCEPT_ALL_MANIFESTS)
        .header("Authorization", bearer(&berth, name, "pull"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404, "the manifest is gone by digest too");
    // An emptied repository may answer 200 with no tags or 404 NAME_UNKNOWN; never v1.
    let (status, list) = tags_list(&berth, name);
    assert!(
        status == 200 || status == 404,
        "tags list answered {status}: {list}"
    );
    assert!(
        !strings(&list["tags"]).contains(&"v1".to_string()),
        "v1 still listed: {list}"
    );
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

#[test]
fn podman_push_pull() {
    if !support::tool("podman") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let info = podman(dir).arg("info").output().expect("run podman info");
    if !info.status.success() {
        // Under CI too: podman needs kernel features a sandbox may lack, and that is
        // a property of the machine, not of Berth.
        eprintln!(
            "SKIPPED: podman cannot run here; `podman info` failed ({}):\n{}{}",
            info.status,
            String::from_utf8_lossy(&info.stdout),
            String::from_utf8_lossy(&info.stderr)
        );
        return;
    }
    let berth = start_berth();
    let name = "group/project/pod";
    let image = format!("{}/{name}:v1", berth.addr);

    let payload = random_bytes(256 * 1024);
    let rootfs = layer(&[
        ("app/payload.bin", &payload),
        ("app/hello.txt", b"hello from podman\n"),
    ]);
    let tarball = dir.join("rootfs.tar");
    std::fs::write(&tarball, &rootfs.tar).unwrap();
    run(podman(dir).arg("import").arg(&tarball).arg(&image));

    // Log in with a personal access token, as `docker login` users do.
    let token = root_personal_token(&berth, "podman");
    run(podman(dir).args([
        "login",
        "--tls-verify=false",
        "-u",
        "root",
        "-p",
        &token,
        &berth.addr,
    ]));

    let digestfile = dir.join("digest");
    run(podman(dir)
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .arg(&image));
    let pushed_digest = std::fs::read_to_string(&digestfile)
        .unwrap()
        .trim()
        .to_string();

    let resp = http()
        .head(format!("{}/v2/{name}/manifests/v1", berth.url))
        .header("Accept", ACCEPT_ALL_MANIFESTS)
        .header("Authorization", bearer(&berth, name, "pull"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let registry_digest = resp.headers()["Docker-Content-Digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        registry_digest, pushed_digest,
        "podman's --digestfile and the registry agree"
    );

    // The layer podman streamed holds our files, byte for byte.
    let (_, _, body) = get_manifest(&berth, name, "v1", ACCEPT_ALL_MANIFESTS);
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), registry_digest);
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer_digest = layers[0]["digest"].as_str().unwrap();
    let media_type = layers[0]["mediaType"].as_str().unwrap();
    assert!(
        media_type.ends_with("gzip"),
        "podman pushed a {media_type} layer"
    );
    let blob = http()
        .get(format!("{}/v2/{name}/blobs/{layer_digest}", berth.url))
        .header("Authorization", bearer(&berth, name, "pull"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&blob)), layer_digest);
    assert_eq!(blob.len() as u64, layers[0]["size"].as_u64().unwrap());
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path.trim_start_matches("./").to_string(), data);
    }
    assert!(
        files.get("app/payload.bin") == Some(&payload),
        "payload differs in the pushed layer"
    );
    assert_eq!(
        files.get("app/hello.txt").map(Vec::as_slice),
        Some(&b"hello from podman\n"[..])
    );

    // Remove it locally, pull it back, and podman sees the registry's digest.
    run(podman(dir).args(["rmi", &image]));
    let left = run(podman(dir).args(["images", "--quiet"]));
    assert!(left.trim().is_empty(), "images left after rmi: {left}");
    run(podman(dir).args(["pull", "--tls-verify=false", &image]));
    let pulled_digest = run(podman(dir).args(["inspect", "--format", "{{.Digest}}", &image]));
    assert_eq!(pulled_digest.trim(), registry_digest);

    // A deploy token and a CI job token log in, push and pull the same way.
    let deploy = berth.admin(&[
        "deploy-token",
        "create",
        "--project",
        "group/project",
        "--name",
        "podman",
        "--scopes",
        "read_registry,write_registry",
    ]);
    let mut lines = deploy.lines();
    let deploy_user = lines.next().expect("deploy token username").to_string();
    let deploy_secret = lines.next().expect("deploy token secret").to_string();
    let env = berth.ci_env(&["--project", "group/project", "--user", "root"]);
    let job_token = env
        .lines()
        .find_map(|l| l.strip_prefix("export CI_JOB_TOKEN="))
        .expect("CI_JOB_TOKEN in ci-env output")
        .trim_matches('\'')
        .to_string();
    for (user, secret, tag) in [
        (deploy_user.as_str(), deploy_secret.as_str(), "deploy"),
        ("gitlab-ci-token", job_token.as_str(), "job"),
    ] {
        run(podman(dir).args(["logout", "--all"]));
        run(podman(dir).args([
            "login",
            "--tls-verify=false",
            "-u",
            user,
            "-p",
            secret,
            &berth.addr,
        ]));
        let target = format!("{}/{name}:{tag}", berth.addr);
        run(podman(dir).args(["tag", &image, &target]));
        run(podman(dir).args(["push", "--tls-verify=false", &target]));
        run(podman(dir).args(["rmi", &target]));
        run(podman(dir).args(["pull", "--tls-verify=false", &target]));
        let digest = run(podman(dir).args(["inspect", "--format", "{{.Digest}}", &target]));
        assert_eq!(
            digest.trim(),
            registry_digest,
            "pushed and pulled with {user}"
        );
    }
}

// ---------------------------------------------------------------------------
// ORAS (the oras-py SDK)
// ---------------------------------------------------------------------------

/// The Python venv with `oras` installed (see `tests/requirements.txt`).
fn oras_python() -> Option<PathBuf> {
    support::venv_python("oras.client")
}

/// Drives oras-py: `push REGISTRY REPO WORKDIR SUBJECT_MEDIA_TYPE SUBJECT_DIGEST
/// SUBJECT_SIZE` pushes two referrers of the subject and prints their digests;
/// `pull REGISTRY REPO TAG OUTDIR` pulls an artifact's files and prints their paths.
/// It logs in first as `$BERTH_USER` with `$BERTH_SECRET`, keeping the credentials in
/// the docker config file `$BERTH_DOCKER_CONFIG`.
const ORAS_SCRIPT: &str = r#"
import json, os, sys
from dataclasses import asdict
import oras.auth.utils, oras.client, oras.defaults, oras.oci

mode, registry, repo = sys.argv[1:4]
client = oras.client.OrasClient(hostname=registry, insecure=True)
# The SDK's login: basic credentials for the token service, remembered in a docker
# config file of our own (not the user's ~/.docker/config.json).
client.login(
    username=os.environ["BERTH_USER"],
    password=os.environ["BERTH_SECRET"],
    hostname=registry,
    config_path=os.environ["BERTH_DOCKER_CONFIG"],
)

def ok(resp):
    if resp.status_code not in (200, 201, 202):
        sys.exit(f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}")
    return resp

if mode == "push":
    workdir, media_type, digest, size = sys.argv[4:8]
    # oras-py 0.2 holds one bearer token per client and fetches a new one only after a
    # 403, but a token lacking a scope is answered 401 insufficient_scope (the token
    # spec; distribution does the same). A push starts with a HEAD, whose challenge
    # asks for pull only, so ask the token service for pull,push up front, as docker
    # does for a push, through the SDK's own token auth.
    challenge = client.session.get(f"http://{registry}/v2/").headers["WWW-Authenticate"]
    wanted = oras.auth.utils.parse_auth_header(challenge)
    wanted.scope = f"repository:{repo}:pull,push"
    token = client.auth.request_token(wanted)
    if not token:
        sys.exit(f"no token for {wanted}")
    client.auth.set_token_auth(token)
    os.chdir(workdir)  # oras-py pushes only files below the working directory
    subject = oras.oci.Subject(mediaType=media_type, digest=digest, size=int(size))

    # The SDK's push: files become layers, the config media type names the
    # artifact; chunked, so the blob goes up as several PATCHes with Content-Range.
    sbom = ok(client.push(
        target=f"{registry}/{repo}:sbom",
        files=["sbom.spdx.json:application/spdx+json"],
        manifest_config="sbom-config.json:application/vnd.example.sbom",
        subject=subject,
        do_chunked=True,
        chunk_size=64 * 1024,
        quiet=True,
    ))

    # An OCI 1.1 artifact with an explicit artifactType and the empty config,
    # through the SDK's lower-level blob and manifest calls.
    container = client.get_container(f"{registry}/{repo}:sig")
    layer = oras.oci.NewLayer("signature.bin", media_type="application/vnd.example.signature.v1")
    ok(client.upload_blob("signature.bin", container, layer))
    with open("empty.json", "w") as f:
        f.write("{}")
    empty = {"mediaType": "application/vnd.oci.empty.v1+json",
             "digest": oras.defaults.blank_config_hash, "size": 2}
    ok(client.upload_blob("empty.json", container, empty))
    manifest = oras.oci.NewManifest()
    del manifest["annotations"]
    manifest.update(artifactType="application/vnd.example.signature",
                    config=empty, layers=[layer], subject=asdict(subject))
    sig = ok(client.upload_manifest(manifest, container))

    print(json.dumps({"sbom": sbom.headers.get("Docker-Content-Digest"),
                      "sig": sig.headers.get("Docker-Content-Digest")}))
elif mode == "pull":
    tag, outdir = sys.argv[4:6]
    print(json.dumps(client.pull(target=f"{registry}/{repo}:{tag}", outdir=outdir)))
else:
    sys.exit(f"unknown mode {mode}")
"#;

#[test]
fn oras_artifact_with_subject() {
    if !support::tool("skopeo") {
        return;
    }
    let Some(python) = oras_python() else {
        return;
    };
    let berth = start_berth();
    let tmp = tempfile::tempdir().unwrap();
    let name = "group/project/app";

    // The subject: an image pushed by skopeo.
    let subject = skopeo_push_small(&berth, tmp.path(), name, "v1").tagged;

    let work = tmp.path().join("artifact");
    std::fs::create_dir_all(&work).unwrap();
    let mut sbom =
        br#"{"spdxVersion":"SPDX-2.3","name":"berth-e2e","packages":[],"padding":""#.to_vec();
    sbom.extend(hex::encode(random_bytes(100 * 1024)).as_bytes());
    sbom.extend(br#""}"#);
    std::fs::write(work.join("sbom.spdx.json"), &sbom).unwrap();
    std::fs::write(
        work.join("sbom-config.json"),
        br#"{"generator":"berth e2e"}"#,
    )
    .unwrap();
    let signature = random_bytes(512);
    std::fs::write(work.join("signature.bin"), &signature).unwrap();

    // oras-py signs in with a personal access token of root.
    let token = root_personal_token(&berth, "oras");
    let oras = || {
        let mut cmd = Command::new(&python);
        cmd.env("BERTH_USER", "root")
            .env("BERTH_SECRET", &token)
            .env("BERTH_DOCKER_CONFIG", tmp.path().join("docker-config.json"))
            .arg("-c")
            .arg(ORAS_SCRIPT);
        cmd
    };
    let out = run(oras().args(["push", &berth.addr, name]).arg(&work).args([
        subject.media_type.as_str(),
        &subject.digest,
        &subject.size.to_string(),
    ]));
    let pushed: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras push printed {out:?}: {e}"));

    // The tags the SDK pushed resolve to the digests the registry answered with.
    let mut artifacts = BTreeMap::new();
    for (tag, artifact_type) in [
        ("sbom", "application/vnd.example.sbom"),
        ("sig", "application/vnd.example.signature"),
    ] {
        let (content_type, digest, body) = get_manifest(&berth, name, tag, ACCEPT_ALL_MANIFESTS);
        assert_eq!(content_type, OCI_MANIFEST);
        assert_eq!(
            pushed[tag],
            digest.as_str(),
            "PUT manifest answered another digest for {tag}"
        );
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(manifest["subject"]["digest"], subject.digest.as_str());
        artifacts.insert(digest, (artifact_type, body.len()));
    }

    let referrers_url = format!("{}/v2/{name}/referrers/{}", berth.url, subject.digest);
    let resp = http()
        .get(&referrers_url)
        .header("Authorization", bearer(&berth, name, "pull"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["Content-Type"], OCI_INDEX);
    let index: Value = resp.json().unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let listed: BTreeMap<String, (String, usize)> = index["manifests"]
        .as_array()
        .expect("referrers manifests")
        .iter()
        .map(|d| {
            assert_eq!(d["mediaType"], OCI_MANIFEST, "{d}");
            (
                d["digest"].as_str().unwrap().to_string(),
                (
                    d["artifactType"].as_str().unwrap_or_default().to_string(),
                    d["size"].as_u64().unwrap() as usize,
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, usize)> = artifacts
        .iter()
        .map(|(d, (t, s))| (d.clone(), (t.to_string(), *s)))
        .collect();
    assert_eq!(listed, expected, "referrers of {}", subject.digest);

    let resp = http()
        .get(format!(
            "{referrers_url}?artifactType=application/vnd.example.sbom"
        ))
        .header("Authorization", bearer(&berth, name, "pull"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["OCI-Filters-Applied"], "artifactType");
    let filtered: Value = resp.json().unwrap();
    let filtered = filtered["manifests"].as_array().unwrap();
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0]["artifactType"], "application/vnd.example.sbom");

    // Pull the SBOM back with the SDK.
    let outdir = tmp.path().join("pulled");
    let out = run(oras()
        .args(["pull", &berth.addr, name, "sbom"])
        .arg(&outdir));
    let files: Vec<String> = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras pull printed {out:?}: {e}"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(Path::new(&files[0]), outdir.join("sbom.spdx.json"));
    assert!(
        std::fs::read(&files[0]).unwrap() == sbom,
        "the pulled SBOM differs"
    );
}
