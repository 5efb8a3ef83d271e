//! A real S3-compatible server for tests: moto (`moto[server]` from
//! `tests/requirements.txt`, installed in the test venv) on an ephemeral loopback
//! port, with a fresh bucket per caller. Used by this crate's tests and by the
//! end-to-end tests (feature `testing`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::S3Config;

/// Binds port 0 so the OS picks a free port, prints it, and stops when its stdin
/// closes, so a test process that dies takes the server with it.
const SERVER: &str = r#"
import sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
sys.stdin.read()
s.stop()
"#;

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: String,
}

/// The test venv's Python when it has moto. A missing moto fails under CI (`CI` set)
/// and is reported as a skip elsewhere.
pub fn moto_python() -> Option<PathBuf> {
    let venv = std::env::var_os("BERTH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-venv"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import moto.server, flask"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(python);
    }
    let why = format!(
        "no Python venv with moto[server] at {} (make it with `python3 -m venv {0} && {0}/bin/pip install -r tests/requirements.txt`, or set BERTH_TEST_VENV); the S3 tests need it",
        venv.display()
    );
    if std::env::var_os("CI").is_some_and(|v| v != "false" && v != "0") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

impl Moto {
    /// Start a server, or `None` (with a loud skip message) when moto is missing
    /// outside CI.
    pub fn start() -> Option<Moto> {
        let python = moto_python()?;
        Some(Moto::start_with(&python).unwrap_or_else(|e| panic!("starting moto failed: {e}")))
    }

    pub fn start_with(python: &Path) -> std::io::Result<Moto> {
        let mut child = Command::new(python)
            .args(["-c", SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "moto did not report its port (said {line:?})"
            )));
        };
        let addr = format!("127.0.0.1:{port}");
        Ok(Moto {
            child,
            endpoint: format!("http://{addr}"),
            addr,
        })
    }

    /// Create a bucket with a name no other caller of this process gets.
    pub fn fresh_bucket(&self) -> std::io::Result<String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "berth-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.create_bucket(&name)?;
        Ok(name)
    }

    /// moto does not check signatures, so a bare request creates the bucket.
    pub fn create_bucket(&self, name: &str) -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect(&self.addr)?;
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        if !answer.starts_with("HTTP/1.1 200") && !answer.starts_with("HTTP/1.0 200") {
            return Err(std::io::Error::other(format!(
                "creating bucket {name} failed: {}",
                answer.lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_string(),
            access_key_id: Some("testing".to_string()),
            secret_access_key: Some("testing".to_string()),
            path_style: true,
            ..S3Config::default()
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
