//! The Docker engine and containerd against the real `berth` binary: Debian's
//! `docker.io` (dockerd with the vfs storage driver, no bridge and no iptables, its own
//! data, exec and socket paths) and containerd's `ctr` with a containerd of its own
//! configuration, started and stopped by each test like any other service.
//!
//! docker is the client the seed is written for: log in with every kind of credential,
//! build with the classic builder and with BuildKit, push, pull after `rmi`, inspect
//! the manifest, log out, and read the refusals a user sees. Docker treats 127.0.0.0/8
//! as an insecure registry out of the box, so no `--insecure-registry` is needed for
//! the ephemeral port. The daemons need root; without it (or without the packages)
//! the tests are skipped loudly, and fail under CI.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::dockerd::{daemons_available, stop, Dockerd};
use support::{run, Berth, ROOT_PASSWORD};

const PROJECT: &str = "dock/app";

/// The manifest digest Berth serves for `name:tag`, asked over the registry API.
fn registry_digest(berth: &Berth, name: &str, tag: &str) -> String {
    let resp = berth.token(
        Some(("root", ROOT_PASSWORD)),
        &[&format!("repository:{name}:pull")],
    );
    let body: Value = resp.json().expect("token");
    let r = reqwest::blocking::Client::new()
        .head(format!("{}/v2/{name}/manifests/{tag}", berth.url))
        .bearer_auth(body["token"].as_str().expect("token"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{name}:{tag} is in the registry");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// A private project with a developer (alice, by password), a reporter, a personal
/// access token of alice's, a read-write deploy token and a CI job token.
struct Credentials {
    pat: String,
    deploy_user: String,
    deploy_secret: String,
    job_token: String,
}

fn set_up(berth: &Berth) -> Credentials {
    berth.project(PROJECT, "private");
    berth.user("alice", "alice-password-1");
    berth.user("rita", "rita-password-1");
    berth.admin(&[
        "member",
        "add",
        "--project",
        PROJECT,
        "--user",
        "alice",
        "--role",
        "developer",
    ]);
    berth.admin(&[
        "member",
        "add",
        "--project",
        PROJECT,
        "--user",
        "rita",
        "--role",
        "reporter",
    ]);
    let pat = berth.admin(&[
        "token",
        "create",
        "--user",
        "alice",
        "--name",
        "laptop",
        "--scopes",
        "read_registry,write_registry",
    ]);
    let deploy = berth.admin(&[
        "deploy-token",
        "create",
        "--project",
        PROJECT,
        "--name",
        "docker",
        "--scopes",
        "read_registry,write_registry",
    ]);
    let mut lines = deploy.lines();
    let deploy_user = lines.next().expect("deploy token username").to_string();
    let deploy_secret = lines.next().expect("deploy token secret").to_string();
    let env = berth.ci_env(&["--project", PROJECT, "--user", "alice"]);
    let job_token = env
        .lines()
        .find_map(|l| l.strip_prefix("export CI_JOB_TOKEN="))
        .expect("CI_JOB_TOKEN in ci-env output")
        .trim_matches('\'')
        .to_string();
    Credentials {
        pat: pat.trim().to_string(),
        deploy_user,
        deploy_secret,
        job_token,
    }
}

/// `docker login` with a password, a personal access token, a deploy token and a CI
/// job token; each pushes its own tag, and pulls it back after `rmi` with the digest
/// the registry serves.
#[test]
fn docker_logs_in_pushes_and_pulls_with_every_credential() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let berth = Berth::start();
    let creds = set_up(&berth);
    let name = format!("{PROJECT}/creds");
    let base = format!("{}/{name}:base", berth.addr);
    docker.build(&base, "every credential\n", false);
    for (user, secret, tag) in [
        ("alice", "alice-password-1", "password"),
        ("alice", creds.pat.as_str(), "pat"),
        (
            creds.deploy_user.as_str(),
            creds.deploy_secret.as_str(),
            "deploy",
        ),
        ("gitlab-ci-token", creds.job_token.as_str(), "job"),
    ] {
        docker.login(&berth.addr, user, secret);
        let image = format!("{}/{name}:{tag}", berth.addr);
        run(docker.docker().args(["tag", &base, &image]));
        let pushed = docker.push(&image);
        assert_eq!(pushed, registry_digest(&berth, &name, tag), "{tag}");
        assert_eq!(docker.repull(&image), pushed, "pulled with {tag}");
        run(docker.docker().args(["logout", &berth.addr]));
    }
}

/// Both builders, offline and `FROM scratch`: push, pull after `rmi`, and
/// `docker manifest inspect` shows what the registry holds.
#[test]
fn docker_builds_with_both_builders_and_inspects_the_manifest() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let berth = Berth::start();
    set_up(&berth);
    docker.login(&berth.addr, "alice", "alice-password-1");
    let name = format!("{PROJECT}/built");
    for (tag, buildkit) in [("classic", false), ("buildkit", true)] {
        let image = format!("{}/{name}:{tag}", berth.addr);
        docker.build(&image, &format!("built by the {tag} builder\n"), buildkit);
        let pushed = docker.push(&image);
        assert_eq!(pushed, registry_digest(&berth, &name, tag));
        assert_eq!(docker.repull(&image), pushed);
        let inspected = run(docker
            .docker()
            .args(["manifest", "inspect", "--insecure", &image]));
        let manifest: Value = serde_json::from_str(&inspected).expect("manifest JSON");
        assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "one COPY, one layer: {manifest}");
        let config = run(docker
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", &image]));
        assert_eq!(manifest["config"]["digest"], config.trim(), "{tag}");
    }
}

/// What a user sees when docker is refused: anonymous push and pull of a private
/// project, a reporter's push, a path nested too deep, a wrong password, and a
/// logged-out client.
#[test]
fn docker_refusals_say_why() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let berth = Berth::start();
    set_up(&berth);
    let name = format!("{PROJECT}/refused");
    let image = format!("{}/{name}:v1", berth.addr);
    docker.build(&image, "refused\n", false);

    // Anonymous: no credentials at all.
    let err = docker.fails(&["push", &image]);
    assert!(
        err.contains("denied: requested access to the resource is denied")
            || err.contains("unauthorized: authentication required"),
        "anonymous push: {err}"
    );

    // A reporter may pull but not push.
    docker.login(&berth.addr, "rita", "rita-password-1");
    let err = docker.fails(&["push", &image]);
    assert!(
        err.contains("denied: requested access to the resource is denied"),
        "reporter push: {err}"
    );

    // Deeper than the project path plus two segments.
    docker.login(&berth.addr, "alice", "alice-password-1");
    let deep = format!("{}/{PROJECT}/a/b/c:v1", berth.addr);
    run(docker.docker().args(["tag", &image, &deep]));
    let err = docker.fails(&["push", &deep]);
    assert!(
        err.contains(&format!(
            "image path {PROJECT}/a/b/c is too deep: at most 2 path segments may follow the project path {PROJECT}"
        )),
        "too deep: {err}"
    );

    // A wrong password is refused at login, with GitLab's words.
    let out = docker.docker_stdin(
        &["login", "-u", "alice", "--password-stdin", &berth.addr],
        "not-her-password",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unauthorized: HTTP Basic: Access denied"),
        "{err}"
    );

    // Logged out, a pull of the private project is refused.
    docker.login(&berth.addr, "alice", "alice-password-1");
    docker.push(&image);
    run(docker.docker().args(["logout", &berth.addr]));
    run(docker.docker().args(["rmi", &image]));
    let err = docker.fails(&["pull", &image]);
    assert!(
        err.contains("pull access denied") && err.contains("may require 'docker login'"),
        "logged-out pull: {err}"
    );
}

/// A containerd of this test's own (its root, state and sockets in a temp dir).
struct Containerd {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if !daemons_available(&["containerd", "ctr"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path();
        let sock = p.join("containerd.sock");
        std::fs::write(
            p.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n\
                 [ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"{}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
                p.join("root").display(),
                p.join("state").display(),
                sock.display(),
                p.join("ttrpc.sock").display(),
                p.join("debug.sock").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(p.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            child,
            sock,
            _dir: dir,
        };
        support::eventually(Duration::from_secs(60), "containerd to answer", || {
            c.ctr()
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        });
        let version = run(c.ctr().arg("version"));
        eprintln!(
            "ctr/containerd: {}",
            version.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        Some(c)
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock);
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `ctr images pull` and `push` with `--user`, over plain HTTP, through the token flow.
#[test]
fn ctr_pulls_and_pushes_with_user() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };
    let berth = Berth::start();
    let creds = set_up(&berth);
    let name = format!("{PROJECT}/ctr");
    let image = format!("{}/{name}:v1", berth.addr);
    docker.build(&image, "for containerd\n", false);
    docker.login(&berth.addr, "alice", "alice-password-1");
    let pushed = docker.push(&image);

    let user = format!("alice:{}", creds.pat);
    run(ctrd
        .ctr()
        .args(["images", "pull", "--plain-http", "--user", &user, &image]));
    let listed = run(ctrd.ctr().args(["images", "ls"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&image) && l.contains(&pushed)),
        "ctr lists {image} at {pushed}:\n{listed}"
    );

    let copy = format!("{}/{name}:from-ctr", berth.addr);
    run(ctrd.ctr().args(["images", "tag", &image, &copy]));
    run(ctrd
        .ctr()
        .args(["images", "push", "--plain-http", "--user", &user, &copy]));
    assert_eq!(registry_digest(&berth, &name, "from-ctr"), pushed);

    // A reporter's password pulls but cannot push a new tag.
    let reporter = "rita:rita-password-1";
    run(ctrd
        .ctr()
        .args(["images", "pull", "--plain-http", "--user", reporter, &copy]));
    let attempt = format!("{}/{name}:by-reporter", berth.addr);
    run(ctrd.ctr().args(["images", "tag", &copy, &attempt]));
    let out = ctrd
        .ctr()
        .args([
            "images",
            "push",
            "--plain-http",
            "--user",
            reporter,
            &attempt,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a reporter's push must fail");
    let tags = berth.token(
        Some(("root", ROOT_PASSWORD)),
        &[&format!("repository:{name}:pull")],
    );
    let token: Value = tags.json().unwrap();
    let listed: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/{name}/tags/list", berth.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listed["tags"],
        serde_json::json!(["from-ctr", "v1"]),
        "{listed}"
    );
}

/// `docker login` keeps a refresh token (its identity token) instead of the password,
/// and pushes trade it for access tokens (OAuth2 `grant_type=refresh_token`); a new
/// password ends it, and docker says why.
#[test]
fn docker_login_keeps_an_identity_token_until_the_password_changes() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let berth = Berth::start();
    set_up(&berth);
    docker.login(&berth.addr, "alice", "alice-password-1");
    let config = std::fs::read_to_string(docker.config.join("config.json")).unwrap();
    let config: Value = serde_json::from_str(&config).unwrap();
    let entry = &config["auths"][&berth.addr];
    assert!(
        entry["identitytoken"]
            .as_str()
            .is_some_and(|t| t.starts_with("brt-")),
        "docker keeps an identity token: {config}"
    );
    let name = format!("{PROJECT}/identity");
    let image = format!("{}/{name}:v1", berth.addr);
    docker.build(&image, "identity token\n", false);
    let pushed = docker.push(&image);
    assert_eq!(pushed, registry_digest(&berth, &name, "v1"));

    berth.admin_with_stdin(&["user", "set-password", "alice"], "alice-password-2");
    let again = format!("{}/{name}:v2", berth.addr);
    run(docker.docker().args(["tag", &image, &again]));
    let err = docker.fails(&["push", &again]);
    assert!(
        err.contains("unauthorized: the refresh token is invalid, expired, or its credential was revoked; sign in again"),
        "{err}"
    );
    docker.login(&berth.addr, "alice", "alice-password-2");
    assert_eq!(docker.push(&again), pushed);
}

/// A docker push slower than its tokens live (tokens last 2 s, the link carries
/// 1 MiB/s, the layer is 6 MiB): it succeeds with the digest the registry serves.
#[test]
fn docker_pushes_through_a_slow_link_outliving_its_tokens() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let berth = Berth::start_with(&[], &[("BERTH_TOKEN_EXPIRY", "2s")]);
    set_up(&berth);
    let slow = support::throttle::Throttle::start(&berth.addr, 1024 * 1024);
    docker.login(&slow.addr, "alice", "alice-password-1");
    let name = format!("{PROJECT}/slow");
    let image = format!("{}/{name}:v1", slow.addr);
    let ctx = tempfile::tempdir_in(docker.dir.path()).expect("context dir");
    let noise = support::random_bytes(6 * 1024 * 1024);
    std::fs::write(ctx.path().join("noise.bin"), &noise).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY noise.bin /noise.bin\n",
    )
    .unwrap();
    let out = docker
        .docker()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", &image])
        .arg(ctx.path())
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = docker.push(&image);
    assert_eq!(pushed, registry_digest(&berth, &name, "v1"));
}
