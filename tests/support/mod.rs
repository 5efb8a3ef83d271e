//! Shared by the end-to-end tests: start the real `berth` binary on an ephemeral
//! port with a temporary data directory, and find the client tools the tests drive.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_meta::testing::TestDatabase;

/// Run `$body` with `$c` bound to a connection to `$berth`'s metadata database (its
/// PostgreSQL database, or the SQLite file in its data directory), on a runtime of
/// its own; the body is written once and compiled for each.
macro_rules! on_database {
    ($berth:expr, |$c:ident| $body:expr) => {{
        use sqlx::Connection;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            match &$berth.database {
                Some(db) => {
                    let mut $c = sqlx::PgConnection::connect(db.url())
                        .await
                        .expect("connect");
                    $body
                }
                None => {
                    let url = format!("sqlite://{}", $berth.data_dir().join("berth.db").display());
                    let mut $c = sqlx::SqliteConnection::connect(&url)
                        .await
                        .expect("connect");
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut $c)
                        .await
                        .expect("busy timeout");
                    $body
                }
            }
        })
    }};
}

pub mod dockerd;
pub mod faulty;
pub mod process;
mod proxy;
pub mod throttle;

/// Whether the end-to-end tests run on PostgreSQL metadata
/// (`BERTH_TEST_DATABASE=postgres`; `scripts/test` runs them once in each mode).
pub fn postgres_mode() -> bool {
    std::env::var("BERTH_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// How many `berth serve` nodes each test server is: `BERTH_TEST_NODES` (default 1).
/// Above 1, every `Berth::start*` starts that many nodes sharing one PostgreSQL
/// database and one S3 bucket behind a round-robin proxy, so the existing tests drive
/// all of them unchanged. That needs the PostgreSQL and S3 modes; asking for several
/// nodes without them is a failure, never a quiet single-node run.
pub fn nodes_mode() -> usize {
    let Ok(v) = std::env::var("BERTH_TEST_NODES") else {
        return 1;
    };
    let n: usize = v
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| panic!("BERTH_TEST_NODES={v:?} is not a node count"));
    if n > 1 && !(postgres_mode() && s3_mode()) {
        panic!(
            "!!! BERTH_TEST_NODES={n} needs shared metadata and blobs: set \
             BERTH_TEST_DATABASE=postgres and BERTH_TEST_STORAGE=s3 (moto in the test venv) too"
        );
    }
    n
}

/// Databases of stopped servers, by working directory, for `start_in` to reuse.
static STOPPED: std::sync::Mutex<Vec<(PathBuf, TestDatabase)>> = std::sync::Mutex::new(Vec::new());

/// In PostgreSQL mode, a fresh database for the `berth` commands run in `dir`: it is
/// written to `dir/berth.toml`, which `serve`, `admin`, `gc` and `cleanup` read from
/// their working directory. `None` in SQLite mode (or, loudly, without PostgreSQL).
pub fn database_in(dir: &Path) -> Option<TestDatabase> {
    if !postgres_mode() {
        return None;
    }
    create_database_in(dir)
}

/// A fresh database for `dir/berth.toml` whatever the mode; `None` (loudly, or a
/// panic under `BERTH_TEST_REQUIRE_POSTGRES=1`) without PostgreSQL.
fn create_database_in(dir: &Path) -> Option<TestDatabase> {
    let what = format!("end-to-end server in {}", dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(TestDatabase::create(&what))?;
    append_config(dir, &format!("[database]\nurl = \"{}\"\n", db.url()));
    Some(db)
}

/// Add a section to `dir/berth.toml` (the S3 and PostgreSQL modes may both write one).
fn append_config(dir: &Path, section: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("berth.toml"))
        .and_then(|mut f| f.write_all(section.as_bytes()))
        .expect("writing berth.toml");
}

/// Password of the `root` administrator every test server starts with.
pub const ROOT_PASSWORD: &str = "root-password-for-tests";

/// One `berth serve` process.
struct Node {
    /// `None` once the node was killed.
    child: std::sync::Mutex<Option<Child>>,
    addr: String,
    url: String,
    /// The directory it runs in (holding `berth.toml`, `server.log` and `data/`);
    /// `None` for the first node, whose directory is `Berth::data`.
    root: Option<tempfile::TempDir>,
}

impl Node {
    fn kill(&self) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test server: one `berth serve` process, or (`BERTH_TEST_NODES`, or
/// [`Berth::start_nodes`]) several sharing PostgreSQL and S3 behind a round-robin
/// proxy. `addr`/`url` are what clients use (the proxy's, with several nodes);
/// `data`, `admin`, `gc` and the like are the first node's.
pub struct Berth {
    nodes: Vec<Node>,
    proxy: Option<proxy::Proxy>,
    /// In PostgreSQL mode, the server's database (dropped after the server stops).
    database: Option<TestDatabase>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub data: tempfile::TempDir,
}

impl Berth {
    pub fn start() -> Berth {
        Berth::start_with(&[], &[])
    }

    /// Start with extra `serve` flags and environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Berth {
        let data = tempfile::tempdir().expect("temp dir");
        Berth::start_in(data, args, envs)
    }

    /// Start on an existing data directory (to test restarts).
    pub fn start_in(data: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Berth {
        let nodes = nodes_mode();
        prepare_storage(data.path());
        let database = take_stopped_database(data.path()).or_else(|| database_in(data.path()));
        if nodes > 1 && database.is_none() {
            panic!("!!! BERTH_TEST_NODES={nodes} needs PostgreSQL, which is unreachable");
        }
        Berth::launch(nodes, data, database, args, envs)
    }

    /// `n` nodes on one fresh PostgreSQL database and one fresh S3 bucket behind the
    /// round-robin proxy, whatever this run's modes (for the multi-node tests).
    /// `None`, said loudly, without PostgreSQL or moto, unless
    /// `BERTH_TEST_REQUIRE_POSTGRES=1`, which makes that a failure.
    pub fn start_nodes(n: usize, args: &[&str], envs: &[(&str, &str)]) -> Option<Berth> {
        let required = berth_meta::testing::postgres_required();
        let data = tempfile::tempdir().expect("temp dir");
        if moto().is_none() {
            if required {
                panic!("the multi-node tests need moto (S3) and BERTH_TEST_REQUIRE_POSTGRES=1");
            }
            eprintln!("!!! SKIPPED: the multi-node test needs moto[server] in the test venv");
            return None;
        }
        prepare_bucket(data.path());
        let database = create_database_in(data.path())?;
        Some(Berth::launch(n, data, Some(database), args, envs))
    }

    fn launch(
        n: usize,
        data: tempfile::TempDir,
        database: Option<TestDatabase>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Berth {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut proxy = None;
        if n > 1 {
            let (p, listener) = proxy::Proxy::bind();
            let own_url = args.iter().any(|a| a.starts_with("--external-url"))
                || envs.iter().any(|(k, _)| *k == "BERTH_EXTERNAL_URL");
            if !own_url {
                // Every node names the proxy in the URLs it hands out.
                args.push("--external-url".into());
                args.push(format!("http://{}", p.addr));
            }
            proxy = Some((p, listener));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, url) = spawn_node(data.path(), &args, envs);
        let addr = url.trim_start_matches("http://").to_string();
        let mut berth = Berth {
            nodes: vec![Node {
                child: std::sync::Mutex::new(Some(child)),
                addr: addr.clone(),
                url: url.clone(),
                root: None,
            }],
            proxy: None,
            database,
            addr,
            url,
            data,
        };
        for _ in 1..n {
            let root = tempfile::tempdir().expect("temp dir");
            for shared in ["berth.toml", "s3-bucket"] {
                let from = berth.data.path().join(shared);
                if from.exists() {
                    std::fs::copy(&from, root.path().join(shared)).expect("copying node config");
                }
            }
            // Nothing else is copied: the token signing key is in the database.
            let (child, url) = spawn_node(root.path(), &args, envs);
            berth.nodes.push(Node {
                child: std::sync::Mutex::new(Some(child)),
                addr: url.trim_start_matches("http://").to_string(),
                url,
                root: Some(root),
            });
        }
        if let Some((mut p, listener)) = proxy {
            let backends: Vec<std::net::SocketAddr> = berth
                .nodes
                .iter()
                .map(|n| n.addr.parse().expect("node address"))
                .collect();
            p.start(listener, &backends);
            berth.addr = p.addr.to_string();
            berth.url = format!("http://{}", p.addr);
            berth.proxy = Some(p);
        }
        berth
    }

    /// Run `berth admin ARGS` on this server's data directory; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        self.admin_with_stdin(args, "")
    }

    pub fn admin_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.berth_cmd("admin", args, stdin)
    }

    /// Run `berth tag ARGS` on this server's data directory; returns stdout.
    pub fn tag_cmd(&self, args: &[&str]) -> String {
        self.berth_cmd("tag", args, "")
    }

    /// Run `berth ci-env ARGS` on this server's data directory; returns stdout.
    pub fn ci_env(&self, args: &[&str]) -> String {
        self.berth_cmd("ci-env", args, "")
    }

    /// `berth ci-env` with extra environment variables: its standard output and error.
    pub fn ci_env_with(&self, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
        let out = self.berth_output("ci-env", args, "", envs);
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    fn berth_cmd(&self, command: &str, args: &[&str], stdin: &str) -> String {
        let out = self.berth_output(command, args, stdin, &[]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run a `berth` command on this server's data; panics when it fails.
    fn berth_output(
        &self,
        command: &str,
        args: &[&str],
        stdin: &str,
        envs: &[(&str, &str)],
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg(command)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(self.data.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("berth command");
        if !out.status.success() {
            panic!(
                "berth {command} {args:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// Create a project (and any missing groups) at `full_path`.
    pub fn project(&self, full_path: &str, visibility: &str) {
        self.admin(&[
            "project",
            "create",
            full_path,
            "--parents",
            "--visibility",
            visibility,
        ]);
    }

    /// Create a user with a password; returns nothing (the name is the handle).
    pub fn user(&self, username: &str, password: &str) {
        self.admin_with_stdin(&["user", "create", username, "--password-stdin"], password);
    }

    /// A registry bearer token from `/jwt/auth` for `scopes`, as `user:secret` or anonymous.
    pub fn token(
        &self,
        creds: Option<(&str, &str)>,
        scopes: &[&str],
    ) -> reqwest::blocking::Response {
        let mut url = format!("{}/jwt/auth?service=container_registry", self.url);
        for s in scopes {
            url.push_str("&scope=");
            url.push_str(&s.replace(':', "%3A").replace(',', "%2C"));
        }
        let client = reqwest::blocking::Client::new();
        let mut req = client.get(url);
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        req.send().expect("token request")
    }

    /// The server's log; with several nodes, every node's, one after the other.
    pub fn log(&self) -> String {
        if self.nodes.len() == 1 {
            return self.node_log(0);
        }
        let mut all = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            all.push_str(&format!("==== node {} ({}) ====\n", i + 1, n.url));
            all.push_str(&self.node_log(i));
        }
        all
    }

    /// One whole number read with `sql` from this instance's metadata database.
    pub fn query_i64(&self, sql: &str) -> i64 {
        on_database!(self, |c| sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut c)
            .await
            .expect("query"))
    }

    /// Say that tags of `repository` whose names are `LIKE names` were pushed at
    /// `at_ms` (Unix ms): what no client can choose, and what cleanup policies age and
    /// order tags by. Written straight into the server's metadata database (the SQLite
    /// file, or the PostgreSQL database of this run), as if the pushes had happened
    /// then. Returns how many tags it changed.
    pub fn set_push_time(&self, repository: &str, names: &str, at_ms: i64) -> u64 {
        const SQL: &str = "UPDATE tags SET created_at = $1 WHERE deleted_at IS NULL \
             AND name LIKE $2 AND repository_id = (SELECT id FROM repositories WHERE path = $3)";
        on_database!(self, |c| sqlx::query(SQL)
            .bind(at_ms)
            .bind(names)
            .bind(repository)
            .execute(&mut c)
            .await
            .expect("set push time")
            .rows_affected())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// How many `berth serve` processes this server is.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s own URL (`http://127.0.0.1:PORT`), bypassing the proxy.
    pub fn node_url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// Node `i`'s own `127.0.0.1:PORT`.
    pub fn node_addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    fn node_root(&self, i: usize) -> &Path {
        match &self.nodes[i].root {
            Some(dir) => dir.path(),
            None => self.data.path(),
        }
    }

    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_root(i).join("server.log")).unwrap_or_default()
    }

    /// SIGKILL node `i`; the proxy stops sending it requests first.
    pub fn kill_node(&self, i: usize) {
        if let Some(p) = &self.proxy {
            p.mark_down(i);
        }
        self.nodes[i].kill();
    }

    /// Requests the proxy sent to each node so far (empty with one node).
    pub fn served(&self) -> Vec<u64> {
        self.proxy.as_ref().map(|p| p.served()).unwrap_or_default()
    }

    /// Requests with a body (uploads) each node is busy with right now, per the proxy.
    pub fn uploading(&self) -> Vec<u64> {
        self.proxy
            .as_ref()
            .map(|p| p.uploading())
            .unwrap_or_default()
    }

    /// Stop the server and hand back its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.proxy = None;
        for n in &self.nodes {
            n.kill();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = std::mem::replace(&mut self.data, dir);
        // The metadata outlives the process, as the data directory does.
        if let Some(db) = self.database.take() {
            let mut stopped = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
            stopped.push((data.path().to_path_buf(), db));
        }
        data
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.proxy = None;
        for n in &self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            eprintln!("---- berth server log ----\n{}", self.log());
        }
    }
}

fn take_stopped_database(dir: &Path) -> Option<TestDatabase> {
    let mut stopped = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
    stopped
        .iter()
        .position(|(d, _)| d == dir)
        .map(|i| stopped.swap_remove(i).1)
}

/// Start `berth serve` in `root` (its `berth.toml`, `server.log` and `data/`) and wait
/// until it listens; returns the process and its URL.
fn spawn_node(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let log = std::fs::File::create(root.join("server.log")).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    cmd.env("BERTH_INITIAL_ROOT_PASSWORD", ROOT_PASSWORD);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if !args.contains(&"--log-level") {
        cmd.arg("--log-level").arg("info");
    }
    let mut child = cmd.spawn().expect("spawn berth");
    let url = listening_url(&mut child, &root.join("server.log"));
    (child, url)
}

/// Wait until a `berth serve` started with piped stdout says where it listens, and
/// return that URL; if it exits first, fail with its log (`log`). Its stdout is then
/// drained in the background, so the server never blocks on a full pipe.
pub fn listening_url(child: &mut Child, log: &Path) -> String {
    let stdout = child.stdout.take().expect("berth's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("berth listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("berth exited before listening; its log:\n{log}");
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    url
}

/// `len` random bytes (incompressible, unique per call).
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// An uncompressed tar layer holding one regular file `path` with `data`.
pub fn tar_layer(path: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path, data)
        .expect("tar entry");
    builder.into_inner().expect("tar archive")
}

/// Whether an external client is installed. Under CI (`CI` set) a missing tool is
/// a failure, not a skip, so CI can never pass by skipping.
pub fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is required under CI but is not installed");
        }
        eprintln!("SKIPPED: {name} is not installed; install it to run this test");
    }
    found
}

/// The test venv's Python (`$BERTH_TEST_VENV`, default `target/e2e-venv`; made by
/// `scripts/test` from `tests/requirements.txt`) when it can import `module`. Under CI
/// a missing venv fails the test; elsewhere the test is skipped with a message.
pub fn venv_python(module: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("BERTH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-venv"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(python);
    }
    let why = format!(
        "no Python venv with {module} at {} (create it with `python3 -m venv {0} && {0}/bin/pip install -r tests/requirements.txt`, or set BERTH_TEST_VENV)",
        venv.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Run a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    // Soon at first, then less often: a long wait (a token's leeway, a GC delay) asks
    // the server a few times a second, not twenty, which on two busy cores is time
    // the other tests need.
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(Duration::from_millis(500));
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).expect("read file"))
}

// ---------------------------------------------------------------------------
// Blob storage: the filesystem (default) or S3 (`BERTH_TEST_STORAGE=s3`)
// ---------------------------------------------------------------------------

/// Whether this run keeps blobs in S3 (a moto server started by the tests) instead of
/// the data directory: `BERTH_TEST_STORAGE=s3`, which `scripts/test` sets for a
/// second pass of the end-to-end tests. Without moto (and outside CI) the run says so
/// loudly and uses the filesystem.
pub fn s3_mode() -> bool {
    std::env::var("BERTH_TEST_STORAGE").is_ok_and(|v| v == "s3") && moto().is_some()
}

fn moto() -> Option<&'static berth_store::testing::Moto> {
    static MOTO: std::sync::OnceLock<Option<berth_store::testing::Moto>> =
        std::sync::OnceLock::new();
    MOTO.get_or_init(|| {
        let m = berth_store::testing::Moto::start();
        if m.is_none() {
            eprintln!(
                "SKIPPED: S3 storage mode (BERTH_TEST_STORAGE=s3) falls back to the filesystem"
            );
        }
        m
    })
    .as_ref()
}

/// Environment for a server on a fresh bucket of the test moto server, whatever
/// this run's storage mode (for tests of S3-only features); `None` (skipped loudly,
/// or a failure under CI) without moto.
pub fn s3_env() -> Option<Vec<(String, String)>> {
    let moto = moto()?;
    let bucket = moto.fresh_bucket().expect("creating a bucket");
    Some(
        [
            ("BERTH_STORAGE_KIND", "s3"),
            ("BERTH_S3_BUCKET", bucket.as_str()),
            ("BERTH_S3_ENDPOINT", moto.endpoint.as_str()),
            ("BERTH_S3_REGION", "us-east-1"),
            ("BERTH_S3_ACCESS_KEY_ID", "testing"),
            ("BERTH_S3_SECRET_ACCESS_KEY", "testing"),
            ("BERTH_S3_PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

/// Tests that look at or change the store's files directly (file ages, the
/// filesystem lock) run on the filesystem only; true (with a message) when this run
/// is on S3 and the test should return.
pub fn skip_on_s3(why: &str) -> bool {
    if s3_mode() {
        eprintln!("SKIPPED on S3 storage (filesystem only): {why}");
        return true;
    }
    false
}

/// In S3 mode, give the instance rooted at `root` (the directory that holds
/// `data/`, where every `berth` command of a test runs) its own fresh bucket through
/// `<root>/berth.toml`, so that `serve`, `gc`, `admin` and restarts all use it.
pub fn prepare_storage(root: &Path) {
    if s3_mode() {
        prepare_bucket(root);
    }
}

/// A fresh bucket of the test moto server for the instance rooted at `root`, unless
/// it has one already (moto must be running).
fn prepare_bucket(root: &Path) {
    if root.join("s3-bucket").exists() {
        return;
    }
    let moto = moto().expect("moto");
    let bucket = moto.fresh_bucket().expect("creating a bucket");
    let toml = format!(
        "[storage]\nkind = \"s3\"\n[storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\npath_style = true\n",
        moto.endpoint
    );
    append_config(root, &toml);
    std::fs::write(root.join("s3-bucket"), bucket).expect("writing s3-bucket");
}

/// The blob store of the instance whose data directory is `data_dir`, for tests that
/// check what storage holds.
pub struct Storage {
    fs: PathBuf,
    s3: Option<berth_store::S3Config>,
}

impl Storage {
    pub fn of(data_dir: &Path) -> Storage {
        let bucket = data_dir
            .parent()
            .and_then(|root| std::fs::read_to_string(root.join("s3-bucket")).ok());
        let s3 = bucket.map(|b| moto().expect("moto").config(b.trim()));
        Storage {
            fs: data_dir.join("storage"),
            s3,
        }
    }

    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    fn on_s3<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a berth_store::S3Store,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> Option<T> {
        let config = self.s3.as_ref()?;
        let store = berth_store::S3Store::open(config).expect("opening the S3 store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Some(rt.block_on(f(&store)))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("algorithm:hex");
        self.fs.join("blobs").join(alg).join(&hex[..2]).join(hex)
    }

    fn digest(digest: &str) -> berth_oci::Digest {
        berth_oci::Digest::parse(digest).expect("a digest")
    }

    /// Every published blob, as `algorithm:hex`.
    pub fn blobs(&self) -> std::collections::BTreeSet<String> {
        use berth_store::BlobStore;
        if let Some(r) = self.on_s3(|s| Box::pin(s.list())) {
            return r
                .expect("listing S3 blobs")
                .into_iter()
                .map(|d| d.to_string())
                .collect();
        }
        let mut out = std::collections::BTreeSet::new();
        for alg in ["sha256", "sha512"] {
            let Ok(prefixes) = std::fs::read_dir(self.fs.join("blobs").join(alg)) else {
                continue;
            };
            for p in prefixes {
                if let Ok(files) = std::fs::read_dir(p.unwrap().path()) {
                    for f in files {
                        out.insert(format!(
                            "{alg}:{}",
                            f.unwrap().file_name().to_string_lossy()
                        ));
                    }
                }
            }
        }
        out
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        use berth_store::BlobStore;
        let d = Self::digest(digest);
        if let Some(r) = self.on_s3(|s| Box::pin(async move { s.stat(&d).await })) {
            return r.expect("S3 HEAD").is_some();
        }
        self.blob_path(digest).exists()
    }

    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        use berth_store::BlobStore;
        use futures::TryStreamExt;
        let d = Self::digest(digest);
        if let Some(r) = self.on_s3(|s| {
            Box::pin(async move {
                match s.open(&d, None).await {
                    Ok(read) => {
                        let parts: Vec<_> = read.body.try_collect().await.expect("reading S3");
                        Some(parts.concat())
                    }
                    Err(berth_store::StoreError::NotFound) => None,
                    Err(e) => panic!("reading S3: {e}"),
                }
            })
        }) {
            return r;
        }
        std::fs::read(self.blob_path(digest)).ok()
    }

    /// Remove a blob's bytes behind the server's back.
    pub fn remove_blob(&self, digest: &str) {
        use berth_store::BlobStore;
        let d = Self::digest(digest);
        if let Some(r) = self.on_s3(|s| Box::pin(async move { s.delete(&d).await })) {
            return r.expect("deleting from S3");
        }
        std::fs::remove_file(self.blob_path(digest)).expect("removing a blob file");
    }

    /// Put bytes under a digest behind the server's back (they are not checked).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) {
        use berth_store::BlobStore;
        if self.s3.is_some() {
            let id = format!("t{}", std::process::id());
            let d = Self::digest(digest);
            let body = bytes.to_vec();
            self.on_s3(|s| {
                Box::pin(async move {
                    s.upload_create(&id).await?;
                    let stream: berth_store::ByteStream =
                        Box::pin(futures::stream::iter([Ok(body.into())]));
                    let h = berth_oci::Hasher::new(d.algorithm());
                    s.upload_append(&id, 0, stream, h.into()).await?;
                    s.upload_commit(&id, &d).await
                })
            })
            .expect("s3")
            .expect("writing to S3");
            return;
        }
        let path = self.blob_path(digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).expect("writing a blob file");
    }

    /// Start an upload in storage alone, with no session in metadata (what a crash
    /// may leave behind).
    pub fn create_stray_upload(&self, id: &str) {
        use berth_store::BlobStore;
        let owned = id.to_string();
        if let Some(r) = self.on_s3(move |s| Box::pin(async move { s.upload_create(&owned).await }))
        {
            return r.expect("creating an S3 upload");
        }
        let store = berth_store::FsStore::open(&self.fs).expect("opening the file store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(store.upload_create(id))
            .expect("creating an upload");
    }

    /// Ids of the uploads storage holds.
    pub fn uploads(&self) -> Vec<String> {
        use berth_store::BlobStore;
        if let Some(r) = self.on_s3(|s| Box::pin(s.upload_list())) {
            return r.expect("listing S3 uploads");
        }
        match std::fs::read_dir(self.fs.join("uploads")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// podman on a private vfs store under `dir`, leaving the machine's store alone, with
/// its registry credentials (`podman login`) in `dir/auth.json`.
pub fn podman(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args(["--storage-driver", "vfs", "--events-backend", "none"])
        .env("TMPDIR", dir.join("tmp"))
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"));
    cmd
}

/// The value `Set-Cookie` gives `name` on `r`.
pub fn set_cookie(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A browser's sign-in: the form's CSRF cookie, then the form posted. Returns the
/// response (a redirect on success).
pub fn web_sign_in(
    b: &Berth,
    c: &reqwest::blocking::Client,
    username: &str,
    password: &str,
    redirect_to: &str,
) -> reqwest::blocking::Response {
    let form = c
        .get(format!("{}/users/sign_in", b.url))
        .send()
        .expect("sign-in page");
    let csrf = set_cookie(&form, "berth_csrf").expect("a CSRF cookie");
    c.post(format!("{}/users/sign_in", b.url))
        .header("cookie", format!("berth_csrf={csrf}"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", username),
            ("password", password),
            ("redirect_to", redirect_to),
        ])
        .send()
        .expect("sign-in post")
}

/// A browser session cookie for `username`.
pub fn web_session(
    b: &Berth,
    c: &reqwest::blocking::Client,
    username: &str,
    password: &str,
) -> String {
    let r = web_sign_in(b, c, username, password, "/");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::SEE_OTHER,
        "signing in as {username}"
    );
    set_cookie(&r, "berth_session").expect("a session cookie")
}

/// A web page as a browser signed in as `username` sees it (status 200 asserted).
pub fn web_page(b: &Berth, path: &str, username: &str, password: &str) -> String {
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = web_session(b, &browser, username, password);
    let page = browser
        .get(format!("{}{path}", b.url))
        .header("cookie", format!("berth_session={session}"))
        .send()
        .expect("web page");
    assert_eq!(page.status(), 200, "{path}");
    page.text().expect("page text")
}
