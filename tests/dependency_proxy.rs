//! End-to-end tests of the dependency proxy: a second Berth on loopback is the
//! upstream (token auth, a private project `library/…`), the proxy reaches it over
//! plain http (allowed explicitly) with the upstream's credentials, and real clients
//! pull through `<proxy>/<group>/dependency_proxy/containers/<image>`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, run, sha256_hex, tool, Berth, Storage, ROOT_PASSWORD};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed layers: podman and docker take them, and a test need not gzip 64 MiB.
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn skopeo(tmp: &Path) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("--tmpdir").arg(tmp);
    cmd
}

fn root_creds() -> String {
    format!("root:{ROOT_PASSWORD}")
}

/// A one-layer image layout at `dir` tagged `tag` whose layer holds `file` of `data`.
fn write_image(dir: &Path, tag: &str, file: &str, data: &[u8]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer = support::tar_layer(file, data);
    let (layer_digest, layer_size) = put(&layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/usr/bin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Push an image to the upstream as `library/<image>:<tag>`; returns the digests of
/// its manifest and layer there.
fn push_upstream(up: &Berth, tmp: &Path, image: &str, tag: &str, data: &[u8]) -> (String, String) {
    push_upstream_to(up, tmp, &format!("library/{image}"), tag, data)
}

/// Push an image to the upstream as `<repository>:<tag>`; returns the digests of its
/// manifest and layer there.
fn push_upstream_to(
    up: &Berth,
    tmp: &Path,
    repository: &str,
    tag: &str,
    data: &[u8],
) -> (String, String) {
    let image = repository.replace('/', "-");
    let dir = tmp.join(format!("src-{image}-{tag}-{}", sha256_hex(data)));
    write_image(&dir, tag, "payload.bin", data);
    run(skopeo(tmp).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &root_creds(),
        &format!("oci:{}:{tag}", dir.display()),
        &format!("docker://{}/{repository}:{tag}", up.addr),
    ]));
    // skopeo may compress the layer on the way: take the digests the upstream holds.
    let out = run(skopeo(tmp).args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &root_creds(),
        &format!("docker://{}/{repository}:{tag}", up.addr),
    ]));
    let v: Value = serde_json::from_str(&out).expect("skopeo inspect prints JSON");
    (
        v["Digest"].as_str().unwrap().to_string(),
        v["Layers"][0].as_str().unwrap().to_string(),
    )
}

/// The upstream: a Berth whose `library` group holds private projects.
fn start_upstream() -> Berth {
    let up = Berth::start();
    up.project("library/alpine", "private");
    up.project("library/big", "private");
    up.project("oss/tool", "public");
    up
}

/// The proxy in front of `up`, with group `grp` (project `grp/app`), a reporter
/// `rita` in it and an outsider `otto`.
fn start_proxy(up: &Berth) -> Berth {
    let env = proxy_env(&format!("http://{}", up.addr), "1s");
    with_group(Berth::start_with(&[], &borrowed(&env)))
}

/// The proxy's settings for the upstream at `upstream` (a URL), tags revalidated
/// every `revalidate`.
fn proxy_env(upstream: &str, revalidate: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BERTH_DEPENDENCY_PROXY_UPSTREAM_URL", upstream.to_string()),
        (
            "BERTH_DEPENDENCY_PROXY_ALLOW_INSECURE_UPSTREAMS",
            "true".into(),
        ),
        ("BERTH_DEPENDENCY_PROXY_UPSTREAM_USERNAME", "root".into()),
        (
            "BERTH_DEPENDENCY_PROXY_UPSTREAM_PASSWORD",
            ROOT_PASSWORD.into(),
        ),
        (
            "BERTH_DEPENDENCY_PROXY_MANIFEST_REVALIDATE",
            revalidate.into(),
        ),
        ("BERTH_DEPENDENCY_PROXY_TTL_INTERVAL", "1s".into()),
        ("BERTH_DEPENDENCY_PROXY_TTL_UNIT", "1s".into()),
        // A second upstream by host name, reached at the same loopback registry.
        (
            "BERTH_DEPENDENCY_PROXY_EXTRA_UPSTREAMS",
            format!("mirror.test={upstream}"),
        ),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Give `proxy` group `grp` (project `grp/app`), a reporter `rita` in it and an
/// outsider `otto`.
fn with_group(proxy: Berth) -> Berth {
    proxy.project("grp/app", "private");
    proxy.user("rita", "rita-password-1234");
    proxy.user("otto", "otto-password-1234");
    proxy.admin(&[
        "member", "add", "--group", "grp", "--user", "rita", "--role", "reporter",
    ]);
    proxy
}

fn proxied(proxy: &Berth, image: &str, tag: &str) -> String {
    format!(
        "docker://{}/grp/dependency_proxy/containers/{image}:{tag}",
        proxy.addr
    )
}

/// The digest of `image:tag` through the proxy, as skopeo sees it.
fn inspect_digest(proxy: &Berth, tmp: &Path, image: &str, tag: &str) -> String {
    inspect_digest_as(proxy, tmp, image, tag, "rita:rita-password-1234")
}

fn inspect_digest_as(proxy: &Berth, tmp: &Path, image: &str, tag: &str, creds: &str) -> String {
    let out = run(skopeo(tmp).args([
        "inspect",
        "--no-tags",
        "--tls-verify=false",
        "--creds",
        creds,
        &proxied(proxy, image, tag),
    ]));
    let v: Value = serde_json::from_str(&out).expect("skopeo inspect prints JSON");
    v["Digest"].as_str().expect("Digest").to_string()
}

/// Pull through the proxy with skopeo into a layout; returns its directory.
fn skopeo_pull(proxy: &Berth, tmp: &Path, image: &str, tag: &str, creds: &str) -> PathBuf {
    let dir = tmp.join(format!("pulled-{image}-{tag}-{}", uuid_ish()));
    run(skopeo(tmp).args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        &proxied(proxy, image, tag),
        &format!("oci:{}:{tag}", dir.display()),
    ]));
    dir
}

fn uuid_ish() -> String {
    sha256_hex(&support::random_bytes(16))[..12].to_string()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A registry token of `user` for the proxy path of `image`.
fn proxy_token(proxy: &Berth, user: &str, password: &str, image: &str) -> (Value, String) {
    let scope = format!("repository:grp/dependency_proxy/containers/{image}:pull");
    let resp = proxy.token(Some((user, password)), &[&scope]);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    (body, token)
}

/// Successful upstream GETs of `digest`'s blob, from the upstream's request log.
fn upstream_blob_gets(up: &Berth, image: &str, digest: &str) -> usize {
    let path = format!("path=/v2/library/{image}/blobs/{digest}");
    up.log()
        .lines()
        .filter(|l| l.contains(&path) && l.contains("method=GET") && l.contains("status=200"))
        .count()
}

/// `GET` a manifest through the proxy with a registry token.
fn get_manifest(
    proxy: &Berth,
    token: &str,
    image: &str,
    reference: &str,
) -> reqwest::blocking::Response {
    http()
        .get(format!(
            "{}/v2/grp/dependency_proxy/containers/{image}/manifests/{reference}",
            proxy.url
        ))
        .bearer_auth(token)
        .send()
        .unwrap()
}

fn api(proxy: &Berth, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let resp = http()
        .request(method, format!("{}/api/v4{path}", proxy.url))
        .header("PRIVATE-TOKEN", token)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn skopeo_pulls_through_the_proxy_with_caching_revalidation_single_flight_and_purges() {
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let up = start_upstream();
    let proxy = start_proxy(&up);
    let storage = Storage::of(&proxy.data_dir());

    // Pull through: the image arrives whole and with the upstream's digests.
    let (v1, v1_layer) = push_upstream(&up, tmp, "alpine", "3.20", b"first alpine");
    let dir = skopeo_pull(&proxy, tmp, "alpine", "3.20", "rita:rita-password-1234");
    assert!(dir.join("index.json").exists());
    assert_eq!(inspect_digest(&proxy, tmp, "alpine", "3.20"), v1);
    assert!(
        storage.has_blob(&v1_layer),
        "the layer is cached in the proxy's store"
    );

    // A personal access token with read_registry and a group deploy token pull too.
    let pat = proxy.admin(&[
        "token",
        "create",
        "--user",
        "rita",
        "--name",
        "pull",
        "--scopes",
        "read_registry",
    ]);
    let by_pat = inspect_digest_as(&proxy, tmp, "alpine", "3.20", &format!("rita:{pat}"));
    assert_eq!(by_pat, v1);
    let deploy = proxy.admin(&[
        "deploy-token",
        "create",
        "--group",
        "grp",
        "--name",
        "ci",
        "--scopes",
        "read_registry",
    ]);
    let (deploy_user, deploy_secret) = deploy.split_once('\n').unwrap();
    let by_deploy = inspect_digest_as(
        &proxy,
        tmp,
        "alpine",
        "3.20",
        &format!("{deploy_user}:{deploy_secret}"),
    );
    assert_eq!(by_deploy, v1);

    // What the upstream does not have: its answer, in the OCI error format.
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "alpine");
    let resp = get_manifest(&proxy, &token, "alpine", "no-such-tag");
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().unwrap();
    assert_eq!(err["errors"][0]["code"], "MANIFEST_UNKNOWN", "{err}");
    let message = err["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("upstream registry answered 404"),
        "{message}"
    );

    // An allowed extra upstream, named by its host as the image's first segment
    // (anonymous there: a public project), with no `library/` added.
    let (tool_digest, _) = push_upstream_to(&up, tmp, "oss/tool", "1", b"a public tool");
    assert_eq!(
        inspect_digest(&proxy, tmp, "mirror.test/oss/tool", "1"),
        tool_digest
    );

    // A non-member gets no grant and is refused, as the registry refuses.
    let (_, token) = proxy_token(&proxy, "otto", "otto-password-1234", "alpine");
    let resp = get_manifest(&proxy, &token, "alpine", "3.20");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("repository:grp/dependency_proxy/containers/alpine:pull"));
    let out = skopeo(tmp)
        .args([
            "inspect",
            "--no-tags",
            "--tls-verify=false",
            "--creds",
            "otto:otto-password-1234",
            &proxied(&proxy, "alpine", "3.20"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a non-member may not pull");

    // The tag moves upstream: after revalidation the proxy serves the new digest.
    let (v2, v2_layer) = push_upstream(&up, tmp, "alpine", "3.20", b"second alpine");
    assert_ne!(v1, v2);
    eventually(
        Duration::from_secs(30),
        "the moved tag through the proxy",
        || (inspect_digest(&proxy, tmp, "alpine", "3.20") == v2).then_some(()),
    );

    // Tags are revalidated with a HEAD (which Docker Hub does not count).
    assert!(up.log().lines().any(|l| l.contains("method=HEAD")
        && l.contains("path=/v2/library/alpine/manifests/3.20")
        && l.contains("status=200")));

    // Ten concurrent pulls of one uncached 64 MiB blob: one upstream GET.
    let big = support::random_bytes(64 << 20);
    let (_, big_layer) = push_upstream(&up, tmp, "big", "v1", &big);
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "big");
    let url = format!(
        "{}/v2/grp/dependency_proxy/containers/big/blobs/{big_layer}",
        proxy.url
    );
    let pulls: Vec<_> = (0..10)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let resp = http().get(url).bearer_auth(token).send().unwrap();
                assert_eq!(resp.status(), 200);
                sha256_hex(&resp.bytes().unwrap())
            })
        })
        .collect();
    for p in pulls {
        assert_eq!(format!("sha256:{}", p.join().unwrap()), big_layer);
    }
    assert_eq!(
        upstream_blob_gets(&up, "big", &big_layer),
        1,
        "ten concurrent pulls of an uncached blob make one upstream GET"
    );
    // The last bytes reach the clients as the fetch verifies them; the blob is
    // then published in the store and, after that, linked to the group's cache.
    eventually(
        Duration::from_secs(60),
        "the big blob to be published",
        || storage.has_blob(&big_layer).then_some(()),
    );

    // The purge API (owner: root) empties the group's cache and frees the bytes.
    let root = proxy.admin(&[
        "token", "create", "--user", "root", "--name", "purge", "--scopes", "api",
    ]);
    let settings = eventually(
        Duration::from_secs(60),
        "the group's cache to count the big blob",
        || {
            let (status, settings) = api(
                &proxy,
                reqwest::Method::GET,
                "/groups/grp/dependency_proxy/settings",
                &root,
            );
            assert_eq!(status, 200, "{settings}");
            (settings["size"].as_i64().unwrap() > 64 << 20).then_some(settings)
        },
    );
    assert_eq!(settings["enabled"], true);
    // The group's usage counts the cached bytes.
    let (status, group) = api(
        &proxy,
        reqwest::Method::GET,
        "/groups/grp?statistics=true",
        &root,
    );
    assert_eq!(status, 200, "{group}");
    assert_eq!(
        group["statistics"]["dependency_proxy_size"],
        settings["size"]
    );
    let (status, purged) = api(
        &proxy,
        reqwest::Method::DELETE,
        "/groups/grp/dependency_proxy/cache",
        &root,
    );
    assert_eq!(status, 202, "{purged}");
    assert!(
        purged["bytes_freed"].as_u64().unwrap() > 64 << 20,
        "{purged}"
    );
    assert!(
        !storage.has_blob(&big_layer),
        "the purge freed the big blob's bytes"
    );
    let (_, settings) = api(
        &proxy,
        reqwest::Method::GET,
        "/groups/grp/dependency_proxy/settings",
        &root,
    );
    let (_, group) = api(
        &proxy,
        reqwest::Method::GET,
        "/groups/grp?statistics=true",
        &root,
    );
    assert_eq!(group["statistics"]["dependency_proxy_size"], 0);
    assert_eq!(
        (settings["blobs_count"].clone(), settings["size"].clone()),
        (json!(0), json!(0))
    );

    // Cached again, then the upstream stops: the proxy serves its copy.
    skopeo_pull(&proxy, tmp, "alpine", "3.20", "rita:rita-password-1234");
    let cached_layers = [v2_layer.clone()];
    assert!(storage.has_blob(&v2_layer));
    drop(up);
    // Past the revalidation interval, so the proxy asks the (gone) upstream first.
    std::thread::sleep(Duration::from_millis(1100));
    skopeo_pull(&proxy, tmp, "alpine", "3.20", "rita:rita-password-1234");
    assert_eq!(inspect_digest(&proxy, tmp, "alpine", "3.20"), v2);

    // The TTL policy (a TTL "day" is 1 s here) removes what was not pulled since.
    let (status, settings) = api(
        &proxy,
        reqwest::Method::PUT,
        "/groups/grp/dependency_proxy/settings?ttl_policy_enabled=true&ttl_days=1",
        &root,
    );
    assert_eq!(status, 200, "{settings}");
    eventually(
        Duration::from_secs(30),
        "the TTL policy to empty the cache",
        || {
            let gone = cached_layers.iter().all(|d| !storage.has_blob(d));
            let (_, s) = api(
                &proxy,
                reqwest::Method::GET,
                "/groups/grp/dependency_proxy/settings",
                &root,
            );
            (gone && s["size"] == 0 && s["manifests_count"] == 0).then_some(())
        },
    );

    // A group that turned its proxy off refuses pulls, saying why.
    let (status, _) = api(
        &proxy,
        reqwest::Method::PUT,
        "/groups/grp/dependency_proxy/settings?enabled=false",
        &root,
    );
    assert_eq!(status, 200);
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "alpine");
    let resp = get_manifest(&proxy, &token, "alpine", "3.20");
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().unwrap();
    assert_eq!(err["errors"][0]["code"], "DENIED", "{err}");
}

/// `berth ci-env` prints what a CI script needs to pull through the group's proxy
/// with the job's own token: the script logs docker in and pulls
/// `$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine:…`; podman pulls too.
#[test]
fn ci_env_lets_a_docker_script_pull_through_the_proxy_and_podman_pulls_too() {
    let up = start_upstream();
    let proxy = start_proxy(&up);
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    if !tool("skopeo") {
        return;
    }
    let (digest, _) = push_upstream(&up, tmp, "alpine", "3.20", b"alpine for ci");

    let env = proxy.ci_env(&[
        "--project",
        "grp/app",
        "--user",
        "rita",
        "--registry",
        &proxy.addr,
    ]);
    let prefix = format!("{}/grp/dependency_proxy/containers", proxy.addr);
    for line in [
        format!("export CI_DEPENDENCY_PROXY_SERVER='{}'", proxy.addr),
        format!("export CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX='{prefix}'"),
        format!("export CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX='{prefix}'"),
        "export CI_DEPENDENCY_PROXY_USER='gitlab-ci-token'".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }
    assert!(
        env.contains("export CI_DEPENDENCY_PROXY_PASSWORD="),
        "{env}"
    );

    if let Some(docker) = support::dockerd::Dockerd::start() {
        let script = tmp.join("job.sh");
        std::fs::write(
            &script,
            format!(
                "set -eu\n{env}\n\
                 echo \"$CI_DEPENDENCY_PROXY_PASSWORD\" | docker login -u \"$CI_DEPENDENCY_PROXY_USER\" --password-stdin \"$CI_DEPENDENCY_PROXY_SERVER\"\n\
                 docker pull \"$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine:3.20\"\n\
                 docker image inspect --format '{{{{json .RepoDigests}}}}' \"$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine:3.20\"\n"
            ),
        )
        .unwrap();
        let out = run(Command::new("sh")
            .arg(&script)
            .env("DOCKER_HOST", &docker.host)
            .env("DOCKER_CONFIG", &docker.config));
        assert!(out.contains(&format!("{prefix}/alpine@{digest}")), "{out}");
    }

    if tool("podman") {
        let dir = tmp.join("podman");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("auth.json"), "{}").unwrap();
        let info = support::podman(&dir).arg("info").output().unwrap();
        if !info.status.success() {
            eprintln!("SKIPPED: podman cannot run here");
            return;
        }
        run(support::podman(&dir).args([
            "pull",
            "--tls-verify=false",
            "--creds",
            "rita:rita-password-1234",
            &format!("{prefix}/alpine:3.20"),
        ]));
        let digest_seen = run(support::podman(&dir).args([
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &format!("{prefix}/alpine:3.20"),
        ]));
        assert_eq!(digest_seen.trim(), digest);
    }
}

/// The group's Dependency Proxy page in a real browser: the prefix to pull with (and
/// its copy button), what the cache holds, the TTL settings, the page in Chinese, and
/// the owner's purge with its confirmation.
#[test]
fn dependency_proxy_page_in_a_real_browser() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui");
    if !(tool("chromium") && tool("node") && tool("skopeo")) {
        return;
    }
    if !ui.join("node_modules/playwright-core").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/ui/node_modules is missing: run `npm ci` in tests/ui"
        );
        eprintln!("SKIPPED: tests/ui/node_modules is missing");
        return;
    }
    let up = start_upstream();
    let proxy = start_proxy(&up);
    let tmp = tempfile::tempdir().unwrap();
    push_upstream(&up, tmp.path(), "alpine", "3.20", b"alpine for the page");
    skopeo_pull(
        &proxy,
        tmp.path(),
        "alpine",
        "3.20",
        "rita:rita-password-1234",
    );

    let out = run(Command::new("node")
        .arg(ui.join("dependency_proxy.mjs"))
        .current_dir(&ui)
        .env("BERTH_URL", &proxy.url)
        .env("BERTH_USER", "root")
        .env("BERTH_PASSWORD", ROOT_PASSWORD)
        .env("BERTH_GROUP", "grp"));
    let seen: Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect(&out);
    let prefix = format!("{}/grp/dependency_proxy/containers", proxy.addr);
    assert_eq!(seen["h1"], "Dependency Proxy");
    assert_eq!(seen["prefix"], prefix.as_str());
    assert_eq!(seen["copy_text"], prefix.as_str());
    assert_eq!(
        seen["pull_example"],
        format!("docker pull {prefix}/alpine:latest").as_str()
    );
    // A manifest, its config and its layer.
    let summary = seen["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Contains 3 cached items using "),
        "{seen}"
    );
    assert_eq!(seen["saved_notice"], "Settings saved.");
    assert_eq!(
        (seen["ttl_days"].clone(), seen["ttl_checked"].clone()),
        (json!("30"), json!(true))
    );
    assert_eq!(seen["zh_h1"], "依赖代理");
    assert!(
        seen["zh_summary"]
            .as_str()
            .unwrap()
            .starts_with("包含 3 个缓存项"),
        "{seen}"
    );
    assert!(!seen["confirm_text"].as_str().unwrap().is_empty());
    assert_eq!(seen["purged_notice"], "The cache was cleared.");
    assert_eq!(seen["summary_after"], "Contains 0 cached items using 0 B.");
}

/// The OCI error of a refused proxy request: `(status, code, message)`.
fn oci_error(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let err: Value = resp.json().expect("an OCI error body");
    let first = &err["errors"][0];
    (
        status,
        first["code"].as_str().unwrap_or_default().to_string(),
        first["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// The digest a proxy answer carries, after checking it is a 200 whose bytes hash
/// to that digest.
fn served_digest(resp: reqwest::blocking::Response) -> String {
    assert_eq!(resp.status(), 200, "the proxy answers {}", resp.status());
    let said = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.bytes().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), said);
    said
}

/// An upstream that rate-limits (429) or fails (500, 503), put in front of the real
/// upstream by a fault-injecting relay: with nothing cached the client gets the
/// upstream's answer in the OCI error format, with the upstream's reason; once the
/// tag is cached, the proxy serves its copy when the revalidation HEAD is answered
/// so, and when the upstream fails the GET of a tag that moved.
#[test]
fn an_upstream_that_rate_limits_or_fails_leaves_the_cached_copy_served() {
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let up = start_upstream();
    let front = support::faulty::Faulty::start(&up.addr);
    let env = proxy_env(&front.url, "200ms");
    let proxy = with_group(Berth::start_with(&[], &borrowed(&env)));
    let (v1, layer) = push_upstream(&up, tmp, "alpine", "3.20", b"alpine behind a flaky link");
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "alpine");

    // Nothing cached: the upstream's refusal, in OCI form, with its own words.
    for (status, ours, code) in [
        (429, 429, "TOOMANYREQUESTS"),
        (500, 502, "UNKNOWN"),
        (503, 502, "UNKNOWN"),
    ] {
        let why = format!("the front answers {status}");
        front.fail(status, None, "/manifests/", &why);
        let resp = get_manifest(&proxy, &token, "alpine", "3.20");
        if status == 429 {
            // When to ask again, as the upstream said.
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap());
            assert_eq!(retry, Some(support::faulty::RETRY_AFTER));
        }
        let (got, got_code, message) = oci_error(resp);
        assert_eq!((got, got_code.as_str()), (ours, code), "{message}");
        assert!(
            message.starts_with(&format!("upstream registry answered {status}"))
                && message.ends_with(&why),
            "{message}"
        );
    }
    front.fail(503, None, "/blobs/", "blobs are down");
    let resp = http()
        .get(format!(
            "{}/v2/grp/dependency_proxy/containers/alpine/blobs/{layer}",
            proxy.url
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let (status, code, message) = oci_error(resp);
    assert_eq!((status, code.as_str()), (502, "UNKNOWN"), "{message}");
    assert!(message.ends_with("blobs are down"), "{message}");

    // Cached whole once the upstream answers again.
    front.heal();
    skopeo_pull(&proxy, tmp, "alpine", "3.20", "rita:rita-password-1234");

    // A revalidation HEAD answered 429, 500 or 503: the cached copy is served.
    let answered = |method: &str, path: &str, status: u16| {
        front
            .seen()
            .iter()
            .filter(|(m, p, s)| m == method && p.ends_with(path) && *s == status)
            .count()
    };
    let tag_path = "/v2/library/alpine/manifests/3.20";
    for status in [429, 500, 503] {
        front.fail(status, Some("HEAD"), "/manifests/", "not now");
        let before = answered("HEAD", tag_path, status);
        eventually(
            Duration::from_secs(30),
            &format!("a revalidation HEAD answered {status}"),
            || {
                let seen = served_digest(get_manifest(&proxy, &token, "alpine", "3.20"));
                assert_eq!(
                    seen, v1,
                    "the cached copy, while the upstream answers {status}"
                );
                (answered("HEAD", tag_path, status) > before).then_some(())
            },
        );
    }
    // And the whole image pulls while every upstream request fails.
    front.fail(503, None, "/v2/", "down for maintenance");
    skopeo_pull(&proxy, tmp, "alpine", "3.20", "rita:rita-password-1234");

    // The tag moves upstream, whose HEAD says so but whose GET is rate-limited: the
    // cached copy still; the new one once the GET goes through.
    front.heal();
    let (v2, _) = push_upstream(&up, tmp, "alpine", "3.20", b"alpine moved meanwhile");
    front.fail(429, Some("GET"), tag_path, "too many pulls");
    let before = answered("GET", tag_path, 429);
    eventually(
        Duration::from_secs(30),
        "a GET of the moved tag answered 429",
        || {
            let seen = served_digest(get_manifest(&proxy, &token, "alpine", "3.20"));
            assert_eq!(seen, v1, "the cached copy while the GET is rate-limited");
            (answered("GET", tag_path, 429) > before).then_some(())
        },
    );
    assert!(answered("HEAD", tag_path, 200) > 0);
    front.heal();
    eventually(Duration::from_secs(30), "the moved tag", || {
        (served_digest(get_manifest(&proxy, &token, "alpine", "3.20")) == v2).then_some(())
    });
}

/// Three proxy nodes on one PostgreSQL database and one S3 bucket. Node 1 starts
/// fetching a large uncached blob, the upstream stops sending half-way (past the
/// first S3 part) and node 1 is SIGKILLed: its client never gets the whole blob,
/// what it left (an unfinished upload) is no cached blob for anyone, node 2 fetches
/// the blob afresh and serves the right bytes, and node 3 serves the image from the
/// shared cache without asking the upstream at all.
#[test]
fn a_blob_half_fetched_by_a_killed_node_is_never_served() {
    // Its nodes are on PostgreSQL and S3 whatever the pass, so the first pass is
    // enough: the S3 and PostgreSQL passes of scripts/test would run it unchanged.
    if support::postgres_mode() || std::env::var_os("BERTH_TEST_STORAGE").is_some() {
        eprintln!("SKIPPED: the multi-node proxy test runs in the first pass only");
        return;
    }
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let up = start_upstream();
    let front = support::faulty::Faulty::start(&up.addr);
    let env = proxy_env(&front.url, "1h");
    let Some(nodes) = Berth::start_nodes(3, &[], &borrowed(&env)) else {
        return;
    };
    let proxy = with_group(nodes);
    let storage = Storage::of(&proxy.data_dir());
    assert!(storage.is_s3());
    let big = support::random_bytes(24 << 20);
    let (image, layer) = push_upstream(&up, tmp, "big", "v1", &big);
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "big");
    let blob_on = |node: usize| {
        format!(
            "{}/v2/grp/dependency_proxy/containers/big/blobs/{layer}",
            proxy.node_url(node)
        )
    };
    let blob_gets = || {
        front
            .seen()
            .iter()
            .filter(|(m, p, s)| m == "GET" && p.ends_with(&format!("/blobs/{layer}")) && *s == 200)
            .count()
    };

    // Node 1 fetches; the upstream stops after 12 MiB (the first S3 part is 10 MiB).
    front.hold_after(12 << 20);
    let client = {
        let (url, token) = (blob_on(0), token.clone());
        std::thread::spawn(move || {
            let resp = http().get(url).bearer_auth(token).send().unwrap();
            (resp.status().as_u16(), resp.bytes().map(|b| b.len()))
        })
    };
    eventually(Duration::from_secs(30), "node 1's fetch to stall", || {
        (front.stalls() > 0).then_some(())
    });
    let left = storage.uploads();
    assert!(
        left.iter().any(|u| u.starts_with("proxy-")),
        "node 1's fetch has its upload in the store: {left:?}"
    );
    proxy.kill_node(0);
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "node 1 had started streaming");
    assert!(
        body.is_err(),
        "the client of the killed node never got a whole body: {body:?}"
    );

    // What node 1 left is no cached blob: not in the store, not in the group's cache.
    assert!(
        !storage.has_blob(&layer),
        "a half-fetched blob was published"
    );
    let root = proxy.admin(&[
        "token", "create", "--user", "root", "--name", "look", "--scopes", "api",
    ]);
    let (status, settings) = api(
        &proxy,
        reqwest::Method::GET,
        "/groups/grp/dependency_proxy/settings",
        &root,
    );
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["blobs_count"], 0, "{settings}");

    // Node 2 fetches the blob afresh and serves exactly its bytes.
    front.release();
    let resp = http().get(blob_on(1)).bearer_auth(&token).send().unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&got)), layer);
    assert_eq!(blob_gets(), 2, "node 1's fetch and node 2's");
    eventually(
        Duration::from_secs(60),
        "node 2 to publish the blob",
        || storage.has_blob(&layer).then_some(()),
    );
    let published = storage.read_blob(&layer).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&published)), layer);

    // The image pulled through node 2 is then served by node 3 from the shared
    // cache, while the upstream refuses everything; node 3 does not even ask it.
    let via = |node: usize| {
        format!(
            "docker://{}/grp/dependency_proxy/containers/big:v1",
            proxy.node_addr(node)
        )
    };
    let pull = |node: usize| {
        let dir = tmp.join(format!("pulled-node{node}"));
        run(skopeo(tmp).args([
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "rita:rita-password-1234",
            &via(node),
            &format!("oci:{}:v1", dir.display()),
        ]));
    };
    pull(1);
    front.fail(503, None, "/v2/", "the upstream is down");
    let asked = front.seen().len();
    // (skopeo checks every blob's digest as it pulls.)
    pull(2);
    assert_eq!(front.seen().len(), asked, "node 3 asked the upstream");
    let out = run(skopeo(tmp).args([
        "inspect",
        "--no-tags",
        "--tls-verify=false",
        "--creds",
        "rita:rita-password-1234",
        &via(2),
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], image.as_str());
}

/// An upstream that sends the wrong content for a blob (the right length, one byte
/// changed): the proxy's client never gets the whole body (the last byte waits for
/// the digest check, and the connection breaks instead), nothing is cached, and once
/// the upstream sends the right bytes they are served.
#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_never_reaches_a_client_whole() {
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = start_upstream();
    let front = support::faulty::Faulty::start(&up.addr);
    let env = proxy_env(&front.url, "1s");
    let proxy = with_group(Berth::start_with(&[], &borrowed(&env)));
    let storage = Storage::of(&proxy.data_dir());
    let data = support::random_bytes(2 << 20);
    let (_, layer) = push_upstream(&up, tmp.path(), "alpine", "3.20", &data);
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "alpine");
    let url = format!(
        "{}/v2/grp/dependency_proxy/containers/alpine/blobs/{layer}",
        proxy.url
    );

    front.corrupt("/blobs/");
    let resp = http().get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(resp.status(), 200, "the proxy streams as the bytes arrive");
    let body = resp.bytes();
    assert!(
        body.is_err(),
        "a client got the whole of a blob with the wrong digest"
    );
    assert!(!storage.has_blob(&layer), "wrong bytes were cached");
    assert!(proxy
        .log()
        .contains("the upstream sent content with digest"));

    front.heal();
    let resp = http().get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&got)), layer);
}

/// A fetch from an upstream slower than the upload expiry: the fetch is an upload in
/// the blob store, and while its bytes keep coming it stays live, so the expiry job
/// does not sweep it away half-way; the client gets the whole blob and it is cached.
#[test]
fn a_fetch_that_outlasts_the_upload_expiry_completes_and_is_cached() {
    if !tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let up = start_upstream();
    // 6 MiB at 1 MiB/s: three times the expiry, which is checked every second.
    let slow = support::throttle::Throttle::start_answers(&up.addr, 1024 * 1024);
    let env = proxy_env(&format!("http://{}", slow.addr), "1h");
    let proxy = with_group(Berth::start_with(
        &["--upload-expiry", "2s"],
        &borrowed(&env),
    ));
    let (_, layer) = push_upstream(&up, tmp, "big", "v1", &support::random_bytes(6 << 20));
    let (_, token) = proxy_token(&proxy, "rita", "rita-password-1234", "big");
    let resp = http()
        .get(format!(
            "{}/v2/grp/dependency_proxy/containers/big/blobs/{layer}",
            proxy.url
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().expect("the whole body");
    assert_eq!(format!("sha256:{}", sha256_hex(&got)), layer);
    let storage = Storage::of(&proxy.data_dir());
    eventually(Duration::from_secs(30), "the blob to be cached", || {
        storage.has_blob(&layer).then_some(())
    });
    // On S3 the upload's own objects are removed just after the blob is published.
    eventually(
        Duration::from_secs(30),
        "the fetch's upload to be gone once published",
        || (!storage.uploads().iter().any(|u| u.starts_with("proxy-"))).then_some(()),
    );
}
