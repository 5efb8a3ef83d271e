//! A Docker engine of a test's own (Debian's `docker.io`: dockerd with the vfs
//! storage driver, no bridge and no iptables, its own data, exec and socket paths),
//! started and stopped like any other service. The daemons need root; without it (or
//! without the packages) the tests are skipped loudly, and fail under CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::run;

/// Whether the daemons can run here: as root, with the binaries installed.
pub fn daemons_available(binaries: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        let why = "the Docker engine and containerd tests need root";
        if std::env::var_os("CI").is_some() {
            panic!("{why}, and CI runs as root");
        }
        eprintln!("SKIPPED: {why}");
        return false;
    }
    binaries.iter().all(|b| super::tool(b))
}

/// Ask a daemon to stop (SIGTERM, so it stops what it started), then make sure.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Docker engines running at once in one test process, at most: each builds and
/// stores images on the vfs driver (a full copy per layer), which on two cores is
/// what a test binary can take beside its other tests.
const DAEMONS_AT_ONCE: usize = 2;

static DAEMONS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A place among the [`DAEMONS_AT_ONCE`], given back when dropped.
struct DaemonSlot;

impl DaemonSlot {
    fn take() -> DaemonSlot {
        let (count, freed) = &DAEMONS;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= DAEMONS_AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        DaemonSlot
    }
}

impl Drop for DaemonSlot {
    fn drop(&mut self) {
        let (count, freed) = &DAEMONS;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// A dockerd of this test's own, with the client configuration (`DOCKER_CONFIG`,
/// where `docker login` keeps credentials) in the same temporary directory.
pub struct Dockerd {
    child: Child,
    pub host: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    // Last: given back once the daemon has stopped (`Drop` runs before the fields).
    _slot: DaemonSlot,
}

impl Dockerd {
    pub fn start() -> Option<Dockerd> {
        if !daemons_available(&["dockerd", "docker"]) {
            return None;
        }
        let slot = DaemonSlot::take();
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log file");
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("--host")
            .arg(&host)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd {
            child,
            host,
            config: dir.path().join("config"),
            dir,
            _slot: slot,
        };
        super::eventually(Duration::from_secs(60), "dockerd to answer", || {
            d.docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        });
        let versions = run(d.docker().args([
            "version",
            "--format",
            "client {{.Client.Version}}, engine {{.Server.Version}}",
        ]));
        eprintln!("docker: {}", versions.trim());
        Some(d)
    }

    /// The docker client. Debian's `/usr/bin/docker` (the engine's own version, whose
    /// BuildKit needs no buildx plugin) when present, else whichever is on PATH.
    pub fn docker(&self) -> Command {
        let bin = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut cmd = Command::new(bin);
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_BUILDKIT");
        cmd
    }

    /// Run a docker command expected to fail; its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).output().expect("docker");
        assert!(
            !out.status.success(),
            "docker {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn login(&self, addr: &str, user: &str, secret: &str) {
        let out = self.docker_stdin(&["login", "-u", user, "--password-stdin", addr], secret);
        assert!(
            out.status.success(),
            "docker login as {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"),
            "{out:?}"
        );
    }

    pub fn docker_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .docker()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("docker")
    }

    /// Build a one-file image `FROM scratch` (offline) with the classic builder or
    /// BuildKit, tagged `tag`.
    pub fn build(&self, tag: &str, content: &str, buildkit: bool) {
        let ctx = tempfile::tempdir_in(self.dir.path()).expect("context dir");
        std::fs::write(ctx.path().join("hello.txt"), content).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL org.example.test=berth\n",
        )
        .unwrap();
        let out = self
            .docker()
            .env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
            .args(["build", "-t", tag])
            .arg(ctx.path())
            .output()
            .expect("docker build");
        assert!(
            out.status.success(),
            "docker build (buildkit: {buildkit}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker push`, returning the digest it reports.
    pub fn push(&self, image: &str) -> String {
        let out = run(self.docker().args(["push", image]));
        out.lines()
            .find_map(|l| l.split("digest: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
            .to_string()
    }

    /// Remove the local image, pull it back, and return the registry digest docker
    /// records for it.
    pub fn repull(&self, image: &str) -> String {
        run(self.docker().args(["rmi", image]));
        let gone = self
            .docker()
            .args(["image", "inspect", image])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "{image} still present after rmi");
        run(self.docker().args(["pull", image]));
        let digests = run(self.docker().args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            image,
        ]));
        let digests: Vec<String> = serde_json::from_str(digests.trim()).unwrap();
        let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
        digests
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")))
            .unwrap_or_else(|| panic!("no digest of {repo} in {digests:?}"))
            .to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
